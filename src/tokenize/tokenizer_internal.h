/* The tokenizer's parts, shared by the files of src/tokenize/ only: normalizers, pre-tokenizers,
 * the BPE and Unigram models, and the loaders that fill them from each file kind. */
#ifndef QD_TOKENIZE_INTERNAL_H
#define QD_TOKENIZE_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/strmap.h"
#include "tokenize/tokenizer.h"

/* Bounds on outside input (every size that comes from a file or a prompt is checked against these). */
#define TK_MAX_TOKEN_BYTES 1024        /* one vocabulary entry */
#define TK_MAX_VOCAB (4u << 20)        /* ids */
#define TK_MAX_TEXT (64u << 20)        /* bytes of one text to encode */

/* A growable byte string and a list of them. */
typedef struct {
    char *s;
    size_t n, cap;
} tk_buf;
typedef struct {
    tk_buf *v;
    size_t n, cap;
} tk_list;

bool tk_buf_add(tk_buf *b, const char *s, size_t n);
bool tk_buf_addc(tk_buf *b, char c);
void tk_buf_free(tk_buf *b);
typedef struct {
    int32_t *v;
    size_t n, cap;
} tk_ids;
bool tk_ids_add(tk_ids *x, int32_t id);
bool tk_list_add(tk_list *l, const char *s, size_t n);
void tk_list_free(tk_list *l);

/* UTF-8: length of the sequence starting at s[0] (1..4), or 0 if it is not valid UTF-8 there. */
size_t tk_utf8_len(const char *s, size_t n);
size_t tk_utf8_put(uint32_t cp, char *out); /* writes 1..4 bytes */
uint32_t tk_utf8_get(const char *s, size_t len_of_seq);

/* ---- normalizers (tokenizer.json "normalizer") ---- */
typedef enum {
    TK_NORM_NFC,
    TK_NORM_NFD,
    TK_NORM_NFKC,
    TK_NORM_NFKD,
    TK_NORM_LOWERCASE,
    TK_NORM_REPLACE,      /* String or Regex pattern → content */
    TK_NORM_PRECOMPILED,  /* SentencePiece's charsmap, HF's grapheme-wise use of it */
    TK_NORM_STRIP,
    TK_NORM_PREPEND
} tk_norm_kind;

/* SentencePiece's precompiled charsmap: a darts-clone double-array trie over byte strings whose
 * values are offsets into a pool of NUL-terminated replacements. */
typedef struct {
    uint8_t *blob;      /* owned copy */
    const uint32_t *units;
    size_t n_units;
    const char *pool;
    size_t pool_len;
} tk_charsmap;

typedef struct {
    tk_norm_kind kind;
    pcre2_code *re;     /* REPLACE with a Regex pattern */
    char *pattern;      /* REPLACE with a String pattern */
    size_t pattern_len;
    char *content;      /* REPLACE / PREPEND */
    size_t content_len;
    bool left, right;   /* STRIP */
    tk_charsmap map;    /* PRECOMPILED */
} tk_normalizer;

/* ---- pre-tokenizers (tokenizer.json "pre_tokenizer") ---- */
typedef enum {
    TK_PRE_SPLIT,
    TK_PRE_BYTELEVEL,
    TK_PRE_METASPACE,
    TK_PRE_WHITESPACE_SPLIT,
    TK_PRE_WHITESPACE,
    TK_PRE_DIGITS
} tk_pre_kind;

typedef enum { TK_SPLIT_REMOVED, TK_SPLIT_ISOLATED, TK_SPLIT_MERGED_PREV, TK_SPLIT_MERGED_NEXT, TK_SPLIT_CONTIGUOUS } tk_split_behavior;
typedef enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER } tk_prepend_scheme;

typedef struct {
    tk_pre_kind kind;
    pcre2_code *re;            /* SPLIT, BYTELEVEL with use_regex, WHITESPACE */
    char *literal;             /* SPLIT with a String pattern */
    size_t literal_len;
    tk_split_behavior behavior;
    bool invert;
    bool add_prefix_space;     /* BYTELEVEL */
    char replacement[8];       /* METASPACE, UTF-8 */
    tk_prepend_scheme prepend;
    bool split;                /* METASPACE */
    bool individual_digits;    /* DIGITS */
} tk_pretok;

/* Regex compiled with UTF + UCP (Unicode classes for \s \w \d, as Oniguruma in HF tokenizers). */
pcre2_code *tk_regex_compile(const char *pattern, size_t len, char *err, size_t err_len);

/* ---- models ---- */
typedef enum { TK_MODEL_BPE, TK_MODEL_UNIGRAM } tk_model_kind;

/* SentencePiece piece types (sentencepiece_model.proto). */
enum { TK_PIECE_NORMAL = 1, TK_PIECE_UNKNOWN = 2, TK_PIECE_CONTROL = 3, TK_PIECE_USER = 4, TK_PIECE_UNUSED = 5, TK_PIECE_BYTE = 6 };

typedef struct {
    uint64_t key;    /* (left id << 32) | right id, + 1 so 0 marks an empty slot */
    int32_t rank, id;
} tk_merge_slot;

typedef struct {
    tk_model_kind kind;
    qd_strmap vocab;     /* token → id; keys are tokens[id] */
    char **tokens;       /* id → token (NULL for holes) */
    size_t n_tokens;
    int32_t unk_id;      /* -1 if none */
    bool byte_fallback;
    int32_t byte_ids[256];
    /* BPE */
    tk_merge_slot *merges;
    size_t merge_cap, n_merges;
    char *eow_suffix;    /* CLIP's "</w>", or NULL */
    bool fuse_unk, ignore_merges;
    /* Unigram */
    double *scores;
    uint8_t *types;
    size_t max_piece_bytes;
    double min_score;
    double max_score;
    bool spm_float;      /* accumulate path scores in float, as SentencePiece does */
} tk_model;

/* ---- added tokens and post-processing ---- */
typedef struct {
    char *content;
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip, single_word;
    bool normalized;  /* matched on the normalized text (HF's default for non-special tokens) */
} tk_added;

/* SentencePiece's own normalization (spiece.model), used instead of normalizers + pre-tokenizers. */
typedef struct {
    bool on;
    bool add_dummy_prefix, remove_extra_ws, escape_ws;
    tk_charsmap map;  /* empty: identity */
} tk_spm_norm;

typedef enum { TK_DECODE_BYTELEVEL, TK_DECODE_METASPACE, TK_DECODE_PLAIN } tk_decoder;

struct qd_tokenizer {
    char *source;                /* the file, for messages */
    tk_model model;
    tk_normalizer *norms;
    size_t n_norms;
    tk_pretok *pres;
    size_t n_pres;
    tk_added *added;
    size_t n_added;
    int32_t prefix_ids[4], suffix_ids[4];  /* what the post-processor adds around one sequence */
    size_t n_prefix, n_suffix;
    tk_spm_norm spm;
    tk_decoder decoder;
    int32_t pad_id;
};

qd_tokenizer *tk_new(const char *source);
/* Register id ↔ token in the model's tables (grows them). Duplicate tokens / ids are format errors. */
qd_status tk_model_set_token(qd_tokenizer *t, int32_t id, const char *tok, size_t len, const char *field);
qd_status tk_model_reserve(qd_tokenizer *t, size_t n_tokens);
int32_t tk_model_id(const tk_model *m, const char *tok, size_t len);
qd_status tk_bpe_add_merge(qd_tokenizer *t, size_t rank, const char *a, size_t na, const char *b, size_t nb,
                           const char *field);
qd_status tk_model_finish(qd_tokenizer *t); /* byte ids, min score, … after the vocabulary is in */
void tk_model_free(tk_model *m);

/* Encode one pre-tokenized word (UTF-8) with the model, appending ids. */
qd_status tk_bpe_word(const tk_model *m, const char *w, size_t n, tk_ids *ids_out);
qd_status tk_unigram_word(const tk_model *m, const char *w, size_t n, tk_ids *ids_out);

/* Normalize in place (the normalizer sequence of the tokenizer). */
qd_status tk_normalize(const qd_tokenizer *t, tk_buf *s);
/* SentencePiece normalization of one piece of text. */
qd_status tk_spm_normalize(const qd_tokenizer *t, const char *s, size_t n, tk_buf *out);
qd_status tk_charsmap_init(tk_charsmap *m, const uint8_t *blob, size_t len, const char *label);
void tk_charsmap_free(tk_charsmap *m);
/* Pre-tokenize one piece of text into words; `first` says whether it begins the whole input. */
qd_status tk_pretokenize(const qd_tokenizer *t, const char *s, size_t n, bool first, tk_list *words);
void tk_normalizer_free(tk_normalizer *x);
void tk_pretok_free(tk_pretok *x);
/* The GPT-2 byte ↔ printable-character map. */
uint32_t tk_byte_to_cp(uint8_t b);
int tk_cp_to_byte(uint32_t cp); /* -1 if cp is not one of the 256 */

/* Loaders (tokenizer_json.c, vocab_merges.c, spiece.c) fill a fresh tokenizer. */
qd_status tk_load_json(qd_tokenizer *t, const char *buf, size_t len);
qd_status tk_load_vocab_merges(qd_tokenizer *t, const char *vocab_path, const char *merges_path);
qd_status tk_load_spiece(qd_tokenizer *t, const uint8_t *buf, size_t len);

#endif
