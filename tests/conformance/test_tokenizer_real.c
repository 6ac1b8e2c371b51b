/* Real-data tokenizer check: token ids from qdit's tokenizers against references made by independent
 * implementations on real tokenizer files (tools/tokenizer-ref/make_refs.js: the official Hugging Face
 * `tokenizers` binding, Hugging Face's Jinja port rendering Qwen3's chat template, Debian's
 * SentencePiece, and a port of OpenAI's CLIP tokenizer). The references are written at test setup
 * (ctest fixture tokenizer_refs) into $QDIT_TOKENIZER_REFS; a missing reference set is a failure. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "io/fs.h"
#include "test_util.h"
#include "tokenize/tokenizer.h"

static qd_status open_path(const char *p, qd_tokenizer **t) {
    if (qd_is_dir(p)) return qd_tokenizer_open(p, t);
    if (qd_path_has_suffix(p, ".json")) return qd_tokenizer_open_json(p, t);
    return qd_tokenizer_open_spiece(p, t);
}

static qd_prompt_style style_of(const char *s) {
    if (!strcmp(s, "clip")) return QD_PROMPT_CLIP;
    if (!strcmp(s, "t5")) return QD_PROMPT_T5;
    if (!strcmp(s, "qwen3")) return QD_PROMPT_QWEN3_CHAT;
    return QD_PROMPT_PLAIN;
}

static void print_ids(const char *label, const int32_t *v, size_t n, size_t from) {
    fprintf(stderr, "      %s (%zu ids) from %zu:", label, n, from);
    for (size_t i = from; i < n && i < from + 12; i++) fprintf(stderr, " %d", v[i]);
    fprintf(stderr, "\n");
}

/* Compare one reference set; returns the number of prompts that differ. */
static size_t check_set(json_t *set, size_t *checked) {
    const char *name = json_string_value(json_object_get(set, "name"));
    const char *open = json_string_value(json_object_get(set, "open"));
    const char *style = json_string_value(json_object_get(set, "style"));
    json_t *cases = json_object_get(set, "cases");
    assert_non_null(name), assert_non_null(open), assert_non_null(style), assert_true(json_is_array(cases));
    qd_tokenizer *t;
    if (open_path(open, &t) != QD_OK) {
        fprintf(stderr, "  %s: cannot open %s: %s\n", name, open, qd_last_error());
        return json_array_size(cases);
    }
    qd_prompt_opts o = qd_prompt_defaults(style_of(style));
    json_t *v;
    if ((v = json_object_get(set, "pad"))) o.pad = json_is_true(v);
    if ((v = json_object_get(set, "max_length"))) o.max_length = (size_t)json_integer_value(v);
    if ((v = json_object_get(set, "enable_thinking"))) o.enable_thinking = json_is_true(v);
    bool add_special = !json_is_false(json_object_get(set, "add_special"));
    size_t bad = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i), *ref = json_object_get(c, "ids"), *mask = json_object_get(c, "mask");
        const char *prompt = json_string_value(json_object_get(c, "prompt"));
        qd_token_ids got = {0};
        qd_status st;
        if (!add_special) {
            st = qd_tokenizer_encode(t, prompt, strlen(prompt), false, &got.ids, &got.n);
            if (!st) {
                got.mask = malloc(got.n + 1);
                memset(got.mask, 1, got.n);
            }
        } else {
            st = qd_tokenize_prompt(t, &o, prompt, &got);
        }
        bool same = st == QD_OK && got.n == json_array_size(ref);
        size_t first = 0;
        for (size_t k = 0; same && k < got.n; k++) {
            if (got.ids[k] != (int32_t)json_integer_value(json_array_get(ref, k)) ||
                (mask && got.mask[k] != (uint8_t)json_integer_value(json_array_get(mask, k)))) {
                same = false;
                first = k;
            }
        }
        if (!same) {
            bad++;
            fprintf(stderr, "  %s: prompt %zu \"%.60s\" differs%s%s\n", name, i, prompt, st ? ": " : "", st ? qd_last_error() : "");
            if (!st) {
                int32_t *r = malloc((json_array_size(ref) + 1) * sizeof *r);
                for (size_t k = 0; k < json_array_size(ref); k++) r[k] = (int32_t)json_integer_value(json_array_get(ref, k));
                while (first > 0 && first < got.n && first < json_array_size(ref) && got.ids[first] == r[first]) first++;
                for (size_t k = 0; k < got.n && k < json_array_size(ref); k++)
                    if (got.ids[k] != r[k]) { first = k; break; }
                print_ids("reference", r, json_array_size(ref), first > 3 ? first - 3 : 0);
                print_ids("qdit     ", got.ids, got.n, first > 3 ? first - 3 : 0);
                free(r);
            }
        }
        /* Byte-level BPE is lossless: decoding gives the NFC form of the prompt back. */
        if (same && strstr(name, "qwen3 plain")) {
            char *back = NULL;
            utf8proc_uint8_t *nfc = utf8proc_NFC((const utf8proc_uint8_t *)prompt);
            assert_int_equal(qd_tokenizer_decode(t, got.ids, got.n, false, &back), QD_OK);
            if (strcmp(back, (const char *)nfc) != 0) {
                fprintf(stderr, "  %s: prompt %zu does not decode back to itself: \"%.60s\"\n", name, i, back);
                bad++;
            }
            free(back);
            free(nfc);
        }
        qd_token_ids_free(&got);
    }
    printf("  %-52s %3zu/%zu prompts identical  (%s)\n", name, json_array_size(cases) - bad, json_array_size(cases),
           json_string_value(json_object_get(set, "source")));
    *checked += json_array_size(cases);
    qd_tokenizer_close(t);
    return bad;
}

static void test_real_tokenizers(void **state) {
    (void)state;
    const char *dir = getenv("QDIT_TOKENIZER_REFS");
    assert_non_null(dir);
    char *path = qt_path(dir, "refs.json");
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) fprintf(stderr, "cannot read %s: %s (the tokenizer_refs setup test makes it)\n", path, err.text);
    assert_non_null(root);
    json_t *sets = json_object_get(root, "sets");
    assert_true(json_array_size(sets) >= 10);
    size_t bad = 0, checked = 0;
    for (size_t i = 0; i < json_array_size(sets); i++) bad += check_set(json_array_get(sets, i), &checked);
    printf("  %zu prompt encodings checked, %zu differ\n", checked, bad);
    json_decref(root);
    free(path);
    assert_int_equal(bad, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_real_tokenizers)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
