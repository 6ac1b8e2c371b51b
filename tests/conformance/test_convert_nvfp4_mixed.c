/* qdit convert nvfp4-mixed (SGLang's build_modelopt_nvfp4_transformer) on the ModelOpt NVFP4 exports that
 * the independent numpy writer makes from the FLUX.1 and Z-Image fixtures, with the BF16 fixtures as base:
 *   - every tensor of a module matching a pattern (the flux1-nvfp4 preset, --keep-bf16-pattern) is the
 *     base's, byte for byte, and the module's scale tensors are gone; every other tensor is the export's,
 *     byte for byte; `_quantizer.` tensors dropped;
 *   - config: the patterns appended to quantization_config.ignore once each, quant_type kept or set,
 *     swap_weight_nibbles as asked; shard metadata carries the config (quantization_config and
 *     _quantization_metadata); the index names every tensor;
 *   - the folder loads: `qdit forward` runs it within the 4-bit bound of test_forward_quantized (0.45) of
 *     the fixture reference — and far from it with --swap-weight-nibbles, which the loader honours;
 * the glob rule itself, and bad inputs naming their flag or file. */
#include "test_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert/nvfp4_mixed.h"
#include "io/safetensors.h"

#define FIX QDIT_SHARED_DIR "/fixtures"

static const char *module_suffixes[] = {".weight_scale_2", ".weight_scale", ".input_scale", ".weight", ".bias"};

static void module_of(const char *name, char *out, size_t n) {
    snprintf(out, n, "%s", name);
    const size_t l = strlen(out);
    for (size_t i = 0; i < sizeof module_suffixes / sizeof *module_suffixes; i++) {
        const size_t sl = strlen(module_suffixes[i]);
        if (l > sl && !strcmp(out + l - sl, module_suffixes[i])) {
            out[l - sl] = 0;
            return;
        }
    }
}

static bool same_bytes(const qd_st_file *a, const qd_st_tensor *x, const qd_st_file *b, const qd_st_tensor *y) {
    return x->dtype == y->dtype && x->rank == y->rank && x->end - x->begin == y->end - y->begin &&
           !memcmp(qd_st_data(a, x), qd_st_data(b, y), x->end - x->begin);
}

static void run_case(const char *fixture, bool swap) {
    const char *qf = getenv("QDIT_QUANT_FIXTURES");
    if (!qf) fail_msg("QDIT_QUANT_FIXTURES is not set (ctest sets it after quant_fixtures_generate)");
    char export_dir[512], base_dir[512], io[512], tag[128];
    snprintf(export_dir, sizeof export_dir, "%s/%s/modelopt_nvfp4", qf, fixture);
    snprintf(base_dir, sizeof base_dir, "%s/%s/transformer", FIX, fixture);
    snprintf(io, sizeof io, "%s/%s/io.safetensors", FIX, fixture);
    snprintf(tag, sizeof tag, "%s%s", fixture, swap ? " (swap)" : "");
    char *dir = qt_mkdtemp("nvfp4-mixed");
    char *outdir = qt_path(dir, "out");
    /* the preset (FLUX's names) plus a pattern that hits NVFP4 layers of both models */
    const char *pattern = !strcmp(fixture, "flux_tiny_a") ? "transformer_blocks.*.attn.to_q" : "layers.*.attention.to_q";
    char *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "convert", "nvfp4-mixed", "--base-transformer-dir", base_dir, "--modelopt-hf-dir", export_dir,
                         "--output-dir", outdir, "--pattern-preset", "flux1-nvfp4", "--keep-bf16-pattern", pattern,
                         swap ? "--swap-weight-nibbles" : "--no-swap-weight-nibbles", NULL);
    if (rc) fail_msg("%s: convert failed: %s", tag, err);
    assert_non_null(strstr(out, "\"replaced_tensors\""));
    free(out), free(err);
    char *sp = qt_path(export_dir, "diffusion_pytorch_model.safetensors"), *bp = qt_path(base_dir, "diffusion_pytorch_model.safetensors");
    char *op = qt_path(outdir, "diffusion_pytorch_model.safetensors");
    qd_st_file *src = NULL, *base = NULL, *dst = NULL;
    assert_int_equal(qd_st_open(sp, &src), QD_OK);
    assert_int_equal(qd_st_open(bp, &base), QD_OK);
    assert_int_equal(qd_st_open(op, &dst), QD_OK);
    const char *preset[] = {"transformer_blocks.*.norm1.linear*",         "transformer_blocks.*.norm1_context.linear*",
                            "transformer_blocks.*.ff.net.0.proj*",        "transformer_blocks.*.ff.net.2*",
                            "transformer_blocks.*.ff_context.net.0.proj*", "transformer_blocks.*.ff_context.net.2*",
                            "single_transformer_blocks.*.norm.linear*",   "single_transformer_blocks.*.proj_mlp*"};
    int replaced = 0, dropped = 0, kept = 0;
    for (size_t i = 0; i < src->n_tensors; i++) {
        const qd_st_tensor *t = &src->tensors[i];
        const qd_st_tensor *o = qd_st_find(dst, t->name);
        char mod[300];
        module_of(t->name, mod, sizeof mod);
        bool match = qd_nvfp4_mixed_glob(pattern, mod);
        for (size_t p = 0; p < sizeof preset / sizeof *preset; p++) match = match || qd_nvfp4_mixed_glob(preset[p], mod);
        /* a fallback module needs the base to hold one of its tensors: the module's weight */
        char wname[320];
        snprintf(wname, sizeof wname, "%s.weight", mod);
        match = match && qd_st_find(base, wname);
        const qd_st_tensor *b = qd_st_find(base, t->name);
        if (strstr(t->name, "_quantizer.") || (match && !b)) {
            if (o) fail_msg("%s: '%s' should be dropped", tag, t->name);
            dropped++;
        } else if (match) {
            if (!o || !same_bytes(dst, o, base, b)) fail_msg("%s: '%s' should be the base's tensor", tag, t->name);
            replaced++;
        } else {
            if (!o || !same_bytes(dst, o, src, t)) fail_msg("%s: '%s' should be the export's tensor", tag, t->name);
            kept++;
        }
    }
    printf("  %-22s %d replaced by the base, %d dropped, %d kept\n", tag, replaced, dropped, kept);
    assert_true(replaced > 0 && dropped > 0 && kept > 0);
    /* metadata and config */
    const char *m1 = qd_st_meta_get(dst, "quantization_config"), *m2 = qd_st_meta_get(dst, "_quantization_metadata");
    assert_non_null(m1);
    assert_non_null(m2);
    assert_string_equal(m1, m2);
    assert_string_equal(qd_st_meta_get(dst, "format"), "pt");
    char *cp = qt_path(outdir, "config.json");
    json_error_t je;
    json_t *cfg = json_load_file(cp, 0, &je), *meta = json_loads(m1, 0, &je);
    assert_non_null(cfg);
    assert_non_null(meta);
    json_t *qc = json_object_get(cfg, "quantization_config");
    assert_true(json_equal(qc, meta));
    assert_true(json_is_boolean(json_object_get(qc, "swap_weight_nibbles")) && json_boolean_value(json_object_get(qc, "swap_weight_nibbles")) == swap);
    assert_non_null(json_object_get(qc, "quant_type"));
    json_t *ignore = json_object_get(qc, "ignore");
    int seen = 0;
    size_t j;
    json_t *v;
    json_array_foreach(ignore, j, v) seen += !strcmp(json_string_value(v), pattern);
    assert_int_equal(seen, 1);
    /* index */
    char *ip = qt_path(outdir, "diffusion_pytorch_model.safetensors.index.json");
    json_t *idx = json_load_file(ip, 0, &je);
    assert_non_null(idx);
    assert_int_equal(json_object_size(json_object_get(idx, "weight_map")), dst->n_tensors);
    /* qdit runs it */
    char *res = qt_path(dir, "out.safetensors");
    rc = qt_run_qdit(&out, &err, "forward", "--component", outdir, "--inputs", io, "--output", res, NULL);
    if (rc) fail_msg("%s: forward failed: %s", tag, err);
    free(out), free(err);
    const double e = qt_rel_l2(res, "output", io, "output");
    printf("  %-22s output vs reference %.2e\n", tag, e);
    /* with --swap-weight-nibbles the loader swaps the export's (unswapped) nibbles: the flag must reach it,
       so that run is far off */
    if (swap && !(e > 0.45)) fail_msg("%s: relative L2 %.3g: the loader did not honour swap_weight_nibbles", tag, e);
    if (!swap && !(e <= 0.45 && e > 1e-4)) fail_msg("%s: relative L2 %.3g (expected in (1e-4, 0.45])", tag, e);
    json_decref(cfg), json_decref(meta), json_decref(idx);
    qd_st_close(src), qd_st_close(base), qd_st_close(dst);
    free(sp), free(bp), free(op), free(cp), free(ip), free(res), free(outdir);
    qt_rmtree(dir);
    free(dir);
}

static void test_flux(void **state) {
    (void)state;
    run_case("flux_tiny_a", false);
    run_case("flux_tiny_a", true);
}

static void test_zimage(void **state) {
    (void)state;
    run_case("zimage_tiny_a", false);
}

static void test_glob(void **state) {
    (void)state;
    assert_true(qd_nvfp4_mixed_glob("transformer_blocks.*.norm1.linear*", "transformer_blocks.12.norm1.linear"));
    assert_true(qd_nvfp4_mixed_glob("transformer_blocks.*.ff.net.2*", "transformer_blocks.0.ff.net.2"));
    assert_false(qd_nvfp4_mixed_glob("transformer_blocks.*.attn.to_q", "single_transformer_blocks.0.attn.to_q")); /* whole name */
    assert_false(qd_nvfp4_mixed_glob("transformer_blocks.*.attn.to_q", "transformer_blocks.0.attn.to_qkv"));
    assert_true(qd_nvfp4_mixed_glob("*", "anything.at.all"));
    assert_false(qd_nvfp4_mixed_glob("a.b", "aXb")); /* '.' is literal */
}

static void expect_fail(const char *needle, const char *a1, const char *a2, const char *a3, const char *a4, const char *a5, const char *a6,
                        const char *a7, const char *a8) {
    char *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "convert", "nvfp4-mixed", a1, a2, a3, a4, a5, a6, a7, a8, NULL);
    if (!rc) fail_msg("expected a failure naming '%s'", needle);
    if (!err || !strstr(err, needle)) fail_msg("the message should name '%s', got: %s", needle, err ? err : "(none)");
    free(out), free(err);
}

static void test_bad_inputs(void **state) {
    (void)state;
    const char *qf = getenv("QDIT_QUANT_FIXTURES");
    if (!qf) fail_msg("QDIT_QUANT_FIXTURES is not set");
    char nv[512], fp8[512];
    snprintf(nv, sizeof nv, "%s/flux_tiny_a/modelopt_nvfp4", qf);
    snprintf(fp8, sizeof fp8, "%s/flux_tiny_a/fp8_channel", qf);
    char *dir = qt_mkdtemp("nvfp4-mixed-bad");
    char *o = qt_path(dir, "o"), *busy = qt_path(dir, "busy"), *note = qt_path(busy, "n.txt");
    assert_int_equal(mkdir(busy, 0777), 0);
    qt_write_text(note, "x");
    const char *base = FIX "/flux_tiny_a/transformer";
    expect_fail("--base-transformer-dir", "--modelopt-hf-dir", nv, "--output-dir", o, NULL, NULL, NULL, NULL);
    expect_fail("--modelopt-hf-dir", "--base-transformer-dir", base, "--output-dir", o, NULL, NULL, NULL, NULL);
    expect_fail("--output-dir", "--base-transformer-dir", base, "--modelopt-hf-dir", nv, NULL, NULL, NULL, NULL);
    expect_fail("--pattern-preset", "--base-transformer-dir", base, "--modelopt-hf-dir", nv, "--output-dir", o, "--pattern-preset", "flux2");
    expect_fail("modelopt", "--base-transformer-dir", base, "--modelopt-hf-dir", fp8, "--output-dir", o, NULL, NULL);
    expect_fail("--modelopt-hf-dir /nonexistent", "--base-transformer-dir", base, "--modelopt-hf-dir", "/nonexistent", "--output-dir", o, NULL, NULL);
    expect_fail("not empty", "--base-transformer-dir", base, "--modelopt-hf-dir", nv, "--output-dir", busy, NULL, NULL);
    expect_fail("--bogus", "--bogus", NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    qt_rmtree(dir);
    free(dir), free(o), free(busy), free(note);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_glob), cmocka_unit_test(test_flux), cmocka_unit_test(test_zimage),
                                       cmocka_unit_test(test_bad_inputs)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
