/* libFuzzer target: prompt text through fixed tokenizers (qd_tokenizer_encode / qd_tokenize_prompt /
 * qd_tokenizer_decode, tokenize/tokenizer.h). The input is the text itself, any bytes.
 *
 * Tokenizers: a byte-level BPE built here over all 256 byte characters with Qwen's split pattern and
 * NFC (so it can spell any text), and from the other corpora the CLIP-style BPE, the T5-layout
 * Unigram with byte fallback, and a SentencePiece model with a full nmt_nfkc charsmap.
 * Invariants: text is accepted exactly when it is valid UTF-8 (checked with utf8proc, not qdit's own
 * decoder); every id names a vocabulary entry; decoding succeeds; prompts respect max_length; and the
 * byte-level BPE is lossless: decoding gives back the NFC form of the text. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/status.h"
#include "fuzz_tokenizer.h"
#include "tokenize/tokenizer_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static qd_tokenizer *byte_bpe, *others[3];

/* {"model":{"type":"BPE","vocab":{<256 byte characters>, "Ġt":256, "he":257, "Ġthe":258}, ...}} */
static qd_tokenizer *build_byte_bpe(void) {
    static char json[16384];
    size_t o = 0;
    o += (size_t)snprintf(json + o, sizeof json - o, "{\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
        "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
        "\"added_tokens\":[{\"id\":259,\"content\":\"<|endoftext|>\",\"special\":true},{\"id\":260,\"content\":\"<|im_start|>\",\"special\":true}],"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        char ch[5] = {0};
        tk_utf8_put(tk_byte_to_cp((uint8_t)b), ch);
        const char *esc = (ch[0] == '"' || ch[0] == '\\') ? "\\" : "";
        o += (size_t)snprintf(json + o, sizeof json - o, "\"%s%s\":%d,", esc, ch, b);
    }
    o += (size_t)snprintf(json + o, sizeof json - o, "\"\xc4\xa0t\":256,\"he\":257,\"\xc4\xa0the\":258},\"merges\":[\"\xc4\xa0 t\",\"h e\",\"\xc4\xa0t he\"]}}");
    qd_tokenizer *t = NULL;
    CHECK(qd_tokenizer_open_json_buffer("fuzz/byte_bpe.json", json, o, &t) == QD_OK);
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    byte_bpe = build_byte_bpe();
    const char *dir = QDIT_FUZZ_CORPUS_DIR;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_json/clip_bpe.json", dir);
    CHECK(qd_tokenizer_open_json(path, &others[0]) == QD_OK);
    snprintf(path, sizeof path, "%s/tokenizer_json/unigram_t5.json", dir);
    CHECK(qd_tokenizer_open_json(path, &others[1]) == QD_OK);
    snprintf(path, sizeof path, "%s/spiece/nmt_nfkc_charsmap.model", dir);
    CHECK(qd_tokenizer_open_spiece(path, &others[2]) == QD_OK);
    return 0;
}

static bool valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (l <= 0) return false;
        i += (size_t)l;
    }
    return true;
}

static void check_text(const qd_tokenizer *t, const char *text, size_t n, bool valid, bool lossless) {
    int32_t *ids = NULL;
    size_t k = 0;
    qd_status st = qd_tokenizer_encode(t, text, n, true, &ids, &k);
    if (!valid) {
        CHECK(st == QD_EINVAL);
        return;
    }
    CHECK(st == QD_OK);
    for (size_t i = 0; i < k; i++) CHECK(qd_tokenizer_token(t, ids[i]) != NULL);
    char *back = NULL;
    CHECK(qd_tokenizer_decode(t, ids, k, false, &back) == QD_OK);
    if (lossless) {
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        CHECK(m >= 0);
        CHECK(strlen(back) <= (size_t)m && memcmp(back, nfc, strlen(back)) == 0);
        CHECK(memchr(text, '\0', n) || strlen(back) == (size_t)m); /* a NUL byte ends the C string early */
        free(nfc);
    }
    free(back);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    bool valid = valid_utf8(data, size);
    check_text(byte_bpe, text, size, valid, true);
    for (size_t i = 0; i < 3; i++) check_text(others[i], text, size, valid, false);
    if (!valid || memchr(data, '\0', size)) return 0;
    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = '\0';
    for (int style = 0; style < 4; style++) {
        qd_prompt_opts o = qd_prompt_defaults((qd_prompt_style)style);
        o.max_length = 8 + size % 24;
        qd_token_ids p;
        const qd_tokenizer *t = style == QD_PROMPT_T5 ? others[1] : style == QD_PROMPT_CLIP ? others[0] : byte_bpe;
        if (qd_tokenize_prompt(t, &o, z, &p) == QD_OK) {
            CHECK(p.n <= o.max_length);
            CHECK(!o.pad || p.n == o.max_length);
            for (size_t i = 0; i < p.n; i++) CHECK(qd_tokenizer_token(t, p.ids[i]) != NULL);
            qd_token_ids_free(&p);
        } else {
            CHECK(qd_last_error()[0] != '\0');
        }
    }
    free(z);
    return 0;
}
