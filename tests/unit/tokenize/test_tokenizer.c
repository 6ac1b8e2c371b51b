/* Unit tests of the tokenizer layer on small hand-built files whose ids are worked out by hand here:
 * BPE merge order, Unigram's best segmentation and unknowns, added-token splitting, the per-pipeline
 * prompt rules, a SentencePiece protobuf written byte by byte, GPT-2's byte map, and the errors bad
 * files and texts get. Real tokenizers are checked in tests/conformance/test_tokenizer_real.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "tokenize/tokenizer.h"
#include "tokenize/tokenizer_internal.h"

static qd_tokenizer *open_text(const char *json) {
    qd_tokenizer *t = NULL;
    qd_status st = qd_tokenizer_open_json_buffer("test/tokenizer.json", json, strlen(json), &t);
    if (st) fprintf(stderr, "open failed: %s\n", qd_last_error());
    assert_int_equal(st, QD_OK);
    return t;
}

static void expect_ids(const qd_tokenizer *t, const char *text, bool special, const int32_t *want, size_t n_want) {
    int32_t *ids;
    size_t n;
    assert_int_equal(qd_tokenizer_encode(t, text, strlen(text), special, &ids, &n), QD_OK);
    if (n != n_want) fprintf(stderr, "\"%s\": %zu ids, expected %zu\n", text, n, n_want);
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], want[i]);
    free(ids);
}

static void expect_error(qd_status got, qd_status want, const char *a, const char *b) {
    assert_int_equal(got, want);
    const char *m = qd_last_error();
    if ((a && !strstr(m, a)) || (b && !strstr(m, b))) fprintf(stderr, "message \"%s\" lacks \"%s\" / \"%s\"\n", m, a ? a : "", b ? b : "");
    if (a) assert_non_null(strstr(m, a));
    if (b) assert_non_null(strstr(m, b));
}

/* Ranks: (b,c)=0, (a,b)=1, (a,bc)=2. */
static const char *BPE =
    "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5,\"<s>\":6,\"</s>\":7,\"<pad>\":8},"
    "\"merges\":[\"b c\",\"a b\",[\"a\",\"bc\"]]},"
    "\"added_tokens\":[{\"id\":6,\"content\":\"<s>\",\"special\":true},{\"id\":7,\"content\":\"</s>\",\"special\":true,\"lstrip\":true,\"rstrip\":true},"
    "{\"id\":8,\"content\":\"<pad>\",\"special\":true}],"
    "\"pre_tokenizer\":{\"type\":\"WhitespaceSplit\"},"
    "\"post_processor\":{\"type\":\"RobertaProcessing\",\"cls\":[\"<s>\",6],\"sep\":[\"</s>\",7]},"
    "\"padding\":{\"pad_id\":8}}";

static void test_bpe_merge_order(void **state) {
    (void)state;
    qd_tokenizer *t = open_text(BPE);
    expect_ids(t, "abc", false, (int32_t[]){5}, 1);          /* a|bc first (rank 0), then abc */
    expect_ids(t, "abab", false, (int32_t[]){3, 3}, 2);      /* both (a,b) pairs */
    expect_ids(t, "cab ca", false, (int32_t[]){2, 3, 2, 0}, 4);
    expect_ids(t, "abc", true, (int32_t[]){6, 5, 7}, 3);     /* RobertaProcessing around it */
    expect_ids(t, "ab  </s>   c", false, (int32_t[]){3, 7, 2}, 3); /* lstrip/rstrip take the spaces */
    expect_ids(t, "", true, (int32_t[]){6, 7}, 2);
    char *text;
    assert_int_equal(qd_tokenizer_decode(t, (int32_t[]){6, 5, 3, 7}, 4, true, &text), QD_OK);
    assert_string_equal(text, "abcab");
    free(text);
    assert_int_equal(qd_tokenizer_token_id(t, "bc"), 4);
    assert_int_equal(qd_tokenizer_token_id(t, "zz"), -1);
    qd_tokenizer_close(t);
}

static void test_prompt_truncate_pad(void **state) {
    (void)state;
    qd_tokenizer *t = open_text(BPE);
    qd_prompt_opts o = qd_prompt_defaults(QD_PROMPT_CLIP);
    o.max_length = 4;
    qd_token_ids p;
    assert_int_equal(qd_tokenize_prompt(t, &o, "ab ab ab", &p), QD_OK); /* 3 words → 2 kept + BOS/EOS */
    int32_t want[] = {6, 3, 3, 7};
    assert_int_equal(p.n, 4);
    for (size_t i = 0; i < 4; i++) assert_int_equal(p.ids[i], want[i]), assert_int_equal(p.mask[i], 1);
    qd_token_ids_free(&p);
    o.max_length = 6;
    assert_int_equal(qd_tokenize_prompt(t, &o, "c", &p), QD_OK);
    int32_t want2[] = {6, 2, 7, 8, 8, 8};
    uint8_t mask2[] = {1, 1, 1, 0, 0, 0};
    assert_int_equal(p.n, 6);
    for (size_t i = 0; i < 6; i++) assert_int_equal(p.ids[i], want2[i]), assert_int_equal(p.mask[i], mask2[i]);
    qd_token_ids_free(&p);
    o.max_length = 1; /* no room for a token between BOS and EOS */
    expect_error(qd_tokenize_prompt(t, &o, "c", &p), QD_EINVAL, "max_length", NULL);
    qd_tokenizer_close(t);
}

/* Scores: a −1, b −1, ab −1.5, c −2, abc −4. "abc": a+b+c −4, ab+c −3.5, abc −4 → ab c. An unknown
 * character costs min score (−4) − 10. */
static const char *UNIGRAM =
    "{\"model\":{\"type\":\"Unigram\",\"unk_id\":5,\"vocab\":[[\"a\",-1],[\"b\",-1],[\"ab\",-1.5],[\"c\",-2],[\"abc\",-4],[\"<unk>\",0]]}}";

static void test_unigram_viterbi(void **state) {
    (void)state;
    qd_tokenizer *t = open_text(UNIGRAM);
    expect_ids(t, "abc", false, (int32_t[]){2, 3}, 2);
    expect_ids(t, "abxyc", false, (int32_t[]){2, 5, 3}, 3);   /* x y fuse into one unknown */
    expect_ids(t, "cab", false, (int32_t[]){3, 2}, 2);
    qd_tokenizer_close(t);
}

/* A SentencePiece ModelProto written field by field. */
typedef struct {
    uint8_t b[512];
    size_t n;
} pb;
static void pb_varint(pb *p, uint64_t v) {
    do {
        p->b[p->n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
        v >>= 7;
    } while (v);
}
static void pb_bytes(pb *p, uint32_t field, const void *d, size_t n) {
    pb_varint(p, (uint64_t)field << 3 | 2);
    pb_varint(p, n);
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
static void pb_piece(pb *p, const char *s, float score, int type) {
    pb inner = {.n = 0};
    pb_bytes(&inner, 1, s, strlen(s));
    pb_varint(&inner, 2 << 3 | 5);
    memcpy(inner.b + inner.n, &score, 4);
    inner.n += 4;
    pb_varint(&inner, 3 << 3 | 0);
    pb_varint(&inner, (uint64_t)type);
    pb_bytes(p, 1, inner.b, inner.n);
}

static void build_spiece(pb *p, int model_type) {
    p->n = 0;
    pb_piece(p, "<unk>", 0, 2);
    pb_piece(p, "</s>", 0, 3);
    pb_piece(p, "\xe2\x96\x81" "a", -1, 1);
    pb_piece(p, "\xe2\x96\x81" "b", -2, 1);
    pb_piece(p, "\xe2\x96\x81", -3, 1);
    pb_piece(p, "a", -4, 1);
    pb_piece(p, "b", -4, 1);
    pb trainer = {.n = 0};
    pb_varint(&trainer, 3 << 3), pb_varint(&trainer, (uint64_t)model_type);
    pb_varint(&trainer, 40 << 3), pb_varint(&trainer, 0);  /* unk_id */
    pb_varint(&trainer, 42 << 3), pb_varint(&trainer, 1);  /* eos_id */
    pb_bytes(p, 2, trainer.b, trainer.n);
    pb norm = {.n = 0};
    pb_bytes(&norm, 1, "identity", 8);
    pb_bytes(p, 3, norm.b, norm.n);
}

static void test_spiece_protobuf(void **state) {
    (void)state;
    pb p;
    build_spiece(&p, 1);
    qd_tokenizer *t;
    assert_int_equal(qd_tokenizer_open_spiece_buffer("test/spiece.model", p.b, p.n, &t), QD_OK);
    /* "  a  b ab " → leading/trailing/extra spaces removed, dummy prefix: ▁a▁b▁ab */
    expect_ids(t, "  a  b ab ", false, (int32_t[]){2, 3, 2, 6}, 4);
    expect_ids(t, "b", true, (int32_t[]){3, 1}, 2);          /* </s> appended */
    expect_ids(t, "   ", false, NULL, 0);
    char *text;
    assert_int_equal(qd_tokenizer_decode(t, (int32_t[]){2, 3, 1}, 3, true, &text), QD_OK);
    assert_string_equal(text, "a b");
    free(text);
    qd_tokenizer_close(t);

    /* A cut inside a field is refused; one between fields is a shorter valid model. Either way
     * nothing past the cut is read (ASan builds check that). */
    for (size_t cut = 1; cut < p.n; cut++) {
        if (qd_tokenizer_open_spiece_buffer("test/spiece.model", p.b, cut, &t) != QD_OK) continue;
        int32_t *ids;
        size_t n;
        assert_int_equal(qd_tokenizer_encode(t, "ab", 2, true, &ids, &n), QD_OK);
        free(ids);
        qd_tokenizer_close(t);
    }
    expect_error(qd_tokenizer_open_spiece_buffer("test/spiece.model", p.b, p.n - 1, &t), QD_EFORMAT, "test/spiece.model", "truncated");
    build_spiece(&p, 2);
    expect_error(qd_tokenizer_open_spiece_buffer("test/bpe.model", p.b, p.n, &t), QD_EUNSUPPORTED, "test/bpe.model", "model_type");
}

static void test_byte_map(void **state) {
    (void)state;
    assert_int_equal(tk_byte_to_cp(' '), 0x120);   /* Ġ */
    assert_int_equal(tk_byte_to_cp('\n'), 0x10A);  /* Ċ */
    assert_int_equal(tk_byte_to_cp(0), 0x100);
    assert_int_equal(tk_byte_to_cp('!'), '!');
    assert_int_equal(tk_byte_to_cp(0xAD), 0x143);  /* the soft hyphen, the last unprintable byte */
    assert_int_equal(tk_byte_to_cp(0xFF), 0xFF);
    for (int b = 0; b < 256; b++) assert_int_equal(tk_cp_to_byte(tk_byte_to_cp((uint8_t)b)), b);
    assert_int_equal(tk_cp_to_byte(0x144), -1);
    assert_int_equal(tk_cp_to_byte(0xAD), -1);
}

static void test_bad_input(void **state) {
    (void)state;
    qd_tokenizer *t;
    expect_error(qd_tokenizer_open_json_buffer("x/tokenizer.json", "{\"model\":", 9, &t), QD_EFORMAT, "x/tokenizer.json", "line");
    const char *wp = "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}";
    expect_error(qd_tokenizer_open_json_buffer("x/tokenizer.json", wp, strlen(wp), &t), QD_EUNSUPPORTED, "model.type", "WordPiece");
    const char *bn = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"normalizer\":{\"type\":\"BertNormalizer\"}}";
    expect_error(qd_tokenizer_open_json_buffer("x/tokenizer.json", bn, strlen(bn), &t), QD_EUNSUPPORTED, "normalizer", "BertNormalizer");
    const char *mg = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a q\"]}}";
    expect_error(qd_tokenizer_open_json_buffer("x/tokenizer.json", mg, strlen(mg), &t), QD_EFORMAT, "model.merges", "\"q\"");
    const char *dup = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0],[\"a\",-1]]}}";
    expect_error(qd_tokenizer_open_json_buffer("x/tokenizer.json", dup, strlen(dup), &t), QD_EFORMAT, "model.vocab", "two ids");
    const char *rx = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}";
    expect_error(qd_tokenizer_open_json_buffer("x/tokenizer.json", rx, strlen(rx), &t), QD_EFORMAT, "pre_tokenizer", "regex");
    const char *pp = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"post_processor\":{\"type\":\"RobertaProcessing\",\"cls\":[\"<s>\",9],\"sep\":[\"</s>\",10]}}";
    expect_error(qd_tokenizer_open_json_buffer("x/tokenizer.json", pp, strlen(pp), &t), QD_EFORMAT, "post_processor", "9");

    char *dir = qt_mkdtemp("tok");
    expect_error(qd_tokenizer_open(dir, &t), QD_ENOTFOUND, dir, "spiece.model");
    char *vocab = qt_path(dir, "vocab.json");
    qt_write_text(vocab, "{\"a\":0}");
    expect_error(qd_tokenizer_open(dir, &t), QD_ENOTFOUND, "merges.txt", NULL);
    char *merges = qt_path(dir, "merges.txt");
    qt_write_text(merges, "#version: 0.2\na b c\n");
    expect_error(qd_tokenizer_open(dir, &t), QD_EFORMAT, "merges.txt", "line 2");
    char *missing = qt_path(dir, "nope");
    expect_error(qd_tokenizer_open(missing, &t), QD_ENOTFOUND, "nope", NULL);
    qt_rmtree(dir);
    free(vocab), free(merges), free(missing), free(dir);

    t = open_text(BPE);
    int32_t *ids;
    size_t n;
    expect_error(qd_tokenizer_encode(t, "ab\xc3(", 4, false, &ids, &n), QD_EINVAL, "UTF-8", "byte 2");
    char *text;
    expect_error(qd_tokenizer_decode(t, (int32_t[]){99}, 1, false, &text), QD_EINVAL, "99", NULL);
    qd_tokenizer_close(t);
}

/* qdit tokenize on a folder holding the hand-built BPE file. */
static void test_cli(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("tokcli"), *json = qt_path(dir, "tokenizer.json"), *out = NULL, *err = NULL;
    qt_write_text(json, BPE);
    assert_int_equal(qt_run_qdit(&out, &err, "tokenize", "--model", dir, "--prompt", "abc cab", NULL), 0);
    assert_string_equal(out, "6 5 2 3 7\n");
    free(out), free(err);
    assert_int_equal(qt_run_qdit(&out, &err, "tokenize", "--model", dir, "--prompt", "c", "--style", "clip", "--max-length", "5", NULL), 0);
    assert_string_equal(out, "6 2 7 8 8\n");
    free(out), free(err);
    assert_int_equal(qt_run_qdit(&out, &err, "tokenize", "--model", dir, "--prompt", "c", "--style", "gpt", NULL), 2);
    assert_non_null(strstr(err, "--style"));
    free(out), free(err);
    assert_int_equal(qt_run_qdit(&out, &err, "tokenize", "--model", json, NULL), 2);
    free(out), free(err);
    qt_rmtree(dir);
    free(json), free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bpe_merge_order), cmocka_unit_test(test_prompt_truncate_pad),
        cmocka_unit_test(test_unigram_viterbi), cmocka_unit_test(test_spiece_protobuf),
        cmocka_unit_test(test_byte_map),        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
