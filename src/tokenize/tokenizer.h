/* Text tokenizers as the published repositories ship them (DESIGN.md "src/tokenize/"): Hugging Face
 * tokenizer.json (BPE with byte-level or CLIP-style pre-tokenization, Unigram with Metaspace and T5's
 * normalizers), the older vocab.json + merges.txt pair, and SentencePiece spiece.model. On top of plain
 * encoding, qd_tokenize_prompt applies what each pipeline does (spec/models.md §2.4, §3.4, §8): CLIP's
 * BOS/EOS and padding to 77, T5's EOS and padding to 512, Qwen3's chat template. */
#ifndef QD_TOKENIZE_TOKENIZER_H
#define QD_TOKENIZE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qdit.h"

typedef struct qd_tokenizer qd_tokenizer;

/* Open the tokenizer of a component folder: tokenizer.json if present, else vocab.json + merges.txt,
 * else spiece.model (or tokenizer.model). A missing folder or file set is QD_ENOTFOUND naming what
 * was looked for. special_tokens_map.json / tokenizer_config.json, when present, give the pad token. */
qd_status qd_tokenizer_open(const char *dir, qd_tokenizer **out);
/* One file of each kind. `label` names the source in messages (the buffer forms are for fuzzing). */
qd_status qd_tokenizer_open_json(const char *path, qd_tokenizer **out);
qd_status qd_tokenizer_open_json_buffer(const char *label, const char *buf, size_t len, qd_tokenizer **out);
qd_status qd_tokenizer_open_vocab_merges(const char *vocab_path, const char *merges_path, qd_tokenizer **out);
qd_status qd_tokenizer_open_spiece(const char *path, qd_tokenizer **out);
qd_status qd_tokenizer_open_spiece_buffer(const char *label, const uint8_t *buf, size_t len, qd_tokenizer **out);
void qd_tokenizer_close(qd_tokenizer *t);

/* Encode `len` bytes of UTF-8 text (need not be NUL-terminated). add_special adds what the file's
 * post-processor adds (CLIP: BOS…EOS; T5: …</s>; Qwen3: nothing). *ids is malloc'd (caller frees);
 * an empty result gives *n = 0 and a valid pointer. Invalid UTF-8 is an error. */
qd_status qd_tokenizer_encode(const qd_tokenizer *t, const char *text, size_t len, bool add_special,
                              int32_t **ids, size_t *n);
/* ids → text (special tokens dropped when skip_special). Caller frees *text. */
qd_status qd_tokenizer_decode(const qd_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                              char **text);

/* The id of a token string (vocabulary or added token), or -1. */
int32_t qd_tokenizer_token_id(const qd_tokenizer *t, const char *token);
/* The string of an id (NULL if out of range). */
const char *qd_tokenizer_token(const qd_tokenizer *t, int32_t id);
/* 1 + the largest id. */
size_t qd_tokenizer_vocab_size(const qd_tokenizer *t);
/* The pad id (from the padding section, special_tokens_map.json or the model's conventions), or -1. */
int32_t qd_tokenizer_pad_id(const qd_tokenizer *t);

/* ---- prompts the way each pipeline tokenizes them ---- */
typedef enum {
    QD_PROMPT_PLAIN = 0,  /* the file's own special tokens, no template */
    QD_PROMPT_CLIP,       /* CLIPTokenizer: <|startoftext|> … <|endoftext|>, truncate, pad (max 77) */
    QD_PROMPT_T5,         /* T5TokenizerFast: … </s>, truncate, pad with <pad> (max 512), no mask use */
    QD_PROMPT_QWEN3_CHAT  /* Qwen3 chat template, one user turn + generation prompt (spec §3.4) */
} qd_prompt_style;

typedef struct {
    qd_prompt_style style;
    size_t max_length;     /* 0: the style's default (77, 512, 512; no limit for PLAIN) */
    bool pad;              /* pad up to max_length with the pad id (mask 0 there) */
    bool enable_thinking;  /* QWEN3_CHAT: Z-Image passes True (no empty think block is added) */
} qd_prompt_opts;

typedef struct {
    int32_t *ids;
    uint8_t *mask;  /* 1 = real token, 0 = padding */
    size_t n;
} qd_token_ids;

/* Default options of a style (pad on for CLIP, T5 and Qwen3; enable_thinking on). */
qd_prompt_opts qd_prompt_defaults(qd_prompt_style style);
/* Tokenize a NUL-terminated prompt. Truncation keeps the start (right side cut), and the special
 * tokens the style adds are kept inside max_length, as HF does. */
qd_status qd_tokenize_prompt(const qd_tokenizer *t, const qd_prompt_opts *o, const char *prompt,
                             qd_token_ids *out);
void qd_token_ids_free(qd_token_ids *ids);

#endif
