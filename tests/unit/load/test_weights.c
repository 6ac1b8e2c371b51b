/* SGLang's weight-file selection for a component folder (quant-sglang.md §2.2): index filtering,
 * -mixed preference, dropping precision variants, and the name rules behind them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fs.h"
#include "load/weights.h"
#include "test_util.h"

static const char *ONE = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";

static void make(const char *dir, const char *name) {
    char *p = qt_path(dir, name);
    qt_write_raw_safetensors(p, ONE, "abcd", 4);
    free(p);
}

/* Select in a folder holding `names` and compare the chosen basenames with `want` (NULL-terminated). */
static void expect_selection(const char *const *names, const char *const *want, const char *index_text) {
    char *dir = qt_mkdtemp("sel");
    for (const char *const *n = names; *n; n++) make(dir, *n);
    if (index_text) {
        char *p = qt_path(dir, "diffusion_pytorch_model.safetensors.index.json");
        qt_write_text(p, index_text);
        free(p);
    }
    qd_weight_set w;
    assert_int_equal(qd_select_weight_files(dir, &w), QD_OK);
    size_t nw = 0;
    while (want[nw]) nw++;
    if (w.n_files != nw) {
        for (size_t i = 0; i < w.n_files; i++) print_message("selected %s\n", w.files[i]);
        fail_msg("selected %zu files, want %zu", w.n_files, nw);
    }
    for (size_t i = 0; i < nw; i++) {
        char *base = qd_path_basename(w.files[i]);
        assert_string_equal(base, want[i]);
        free(base);
    }
    assert_true((w.index_path != NULL) == (index_text != NULL));
    qd_weight_set_free(&w);
    qt_rmtree(dir);
    free(dir);
}

static void test_name_rules(void **state) {
    (void)state;
    assert_true(qd_weight_name_is_mixed("flux2-dev-nvfp4-mixed.safetensors"));
    assert_true(qd_weight_name_is_mixed("x-mixed-00001-of-00003.safetensors"));
    assert_false(qd_weight_name_is_mixed("x-mixedup.safetensors"));
    assert_false(qd_weight_name_is_mixed("x-mixed.bin"));
    bool prec;
    char *f = qd_weight_name_family("diffusion_pytorch_model.fp16-00001-of-00002.safetensors", &prec);
    assert_string_equal(f, "diffusion_pytorch_model");
    assert_true(prec);
    free(f);
    f = qd_weight_name_family("diffusion_pytorch_model-00002-of-00002.safetensors", &prec);
    assert_string_equal(f, "diffusion_pytorch_model");
    assert_false(prec);
    free(f);
    f = qd_weight_name_family("model.bf16.safetensors", &prec);
    assert_string_equal(f, "model");
    assert_true(prec);
    free(f);
    /* "-of-" without digits on both sides is not a shard suffix */
    f = qd_weight_name_family("a-of-b.safetensors", &prec);
    assert_string_equal(f, "a-of-b");
    free(f);
}

static void test_variants_dropped(void **state) {
    (void)state;
    const char *names[] = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                           "diffusion_pytorch_model.bf16.safetensors", NULL};
    const char *want[] = {"diffusion_pytorch_model.safetensors", NULL};
    expect_selection(names, want, NULL);
}

static void test_precision_only_family_kept(void **state) {
    (void)state;
    const char *names[] = {"diffusion_pytorch_model.fp16.safetensors", NULL};
    const char *want[] = {"diffusion_pytorch_model.fp16.safetensors", NULL};
    expect_selection(names, want, NULL);
}

static void test_sharded_variants(void **state) {
    (void)state;
    const char *names[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.fp16-00001-of-00002.safetensors", "model.fp16-00002-of-00002.safetensors", NULL};
    const char *want[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", NULL};
    expect_selection(names, want, NULL);
}

static void test_mixed_preferred(void **state) {
    (void)state;
    const char *names[] = {"flux2-dev-nvfp4.safetensors", "flux2-dev-nvfp4-mixed.safetensors", NULL};
    const char *want[] = {"flux2-dev-nvfp4-mixed.safetensors", NULL};
    expect_selection(names, want, NULL);
    /* all mixed: nothing to prefer, keep all */
    const char *all[] = {"a-mixed-00001-of-00002.safetensors", "a-mixed-00002-of-00002.safetensors", NULL};
    expect_selection(all, all, NULL);
}

static void test_index_decides(void **state) {
    (void)state;
    const char *names[] = {"diffusion_pytorch_model-00001-of-00002.safetensors",
                           "diffusion_pytorch_model-00002-of-00002.safetensors", "stray.safetensors", NULL};
    const char *want[] = {"diffusion_pytorch_model-00001-of-00002.safetensors",
                          "diffusion_pytorch_model-00002-of-00002.safetensors", NULL};
    expect_selection(names, want,
                     "{\"weight_map\":{\"w\":\"diffusion_pytorch_model-00002-of-00002.safetensors\","
                     "\"v\":\"diffusion_pytorch_model-00001-of-00002.safetensors\"}}");
}

static void test_no_weights(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("none");
    qd_weight_set w;
    assert_int_equal(qd_select_weight_files(dir, &w), QD_ENOTFOUND);
    assert_non_null(strstr(qd_last_error(), "no .safetensors weights found"));
    assert_non_null(strstr(qd_last_error(), dir));
    qt_rmtree(dir);
    free(dir);
}

static void test_several_indexes(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("idx");
    char *a = qt_path(dir, "a.safetensors.index.json"), *b = qt_path(dir, "b.safetensors.index.json");
    qt_write_text(a, "{\"weight_map\":{}}");
    qt_write_text(b, "{\"weight_map\":{}}");
    qd_weight_set w;
    assert_int_equal(qd_select_weight_files(dir, &w), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "several weight-map indexes"));
    /* a precision-variant index beside its canonical one is not ambiguous */
    remove(b);
    char *c = qt_path(dir, "a.fp16.safetensors.index.json");
    qt_write_text(c, "{\"weight_map\":{\"w\":\"a.fp16.safetensors\"}}");
    qt_write_text(a, "{\"weight_map\":{\"w\":\"a.safetensors\"}}");
    assert_int_equal(qd_select_weight_files(dir, &w), QD_OK);
    assert_non_null(strstr(w.index_path, "/a.safetensors.index.json"));
    qd_weight_set_free(&w);
    free(a);
    free(b);
    free(c);
    qt_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_rules),         cmocka_unit_test(test_variants_dropped),
        cmocka_unit_test(test_precision_only_family_kept), cmocka_unit_test(test_sharded_variants),
        cmocka_unit_test(test_mixed_preferred),    cmocka_unit_test(test_index_decides),
        cmocka_unit_test(test_no_weights),         cmocka_unit_test(test_several_indexes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
