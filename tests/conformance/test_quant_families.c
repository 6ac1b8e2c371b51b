/* Every quantization family, loaded from checkpoints written by an independent route:
 * tools/quant-fixtures/make_quant_fixtures.py (numpy, following the specs, never the C code) turns the
 * shared BF16 fixtures (FLUX.1 and Z-Image transformers) into each family's on-disk form, with the
 * exact dequantized weights and a manifest (CTest runs it first; see tests/CMakeLists.txt).
 * For each family this test checks that
 *   - detection resolves to the manifest's method (the SGLang reading it names);
 *   - every quantized layer binds, with its scheme family, and dequantizes to the expected weights
 *     (tolerance: 2^-20 of the layer's largest weight — the expected values are f64 products rounded
 *     once, ours are f32 products), and effective biases match where the manifest gives them;
 *   - the plan quantizes exactly the modules the manifest says, and `qdit inspect --json` reports that
 *     method and that many quantized linears;
 *   - the generator found every layer within its format's error bound of the BF16 source (the
 *     manifest's bound_ok), so the weights qdit reproduces are the source's within that bound. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_options.h"
#include "io/ckpt.h"
#include "io/fs.h"
#include "load/sources.h"
#include "quant/plan.h"
#include "quant/resolve.h"
#include "quant_manifest.h"
#include "test_util.h"

static const char *fixtures_root(void) {
    const char *r = getenv("QDIT_QUANT_FIXTURES");
    return r ? r : "quant-fixtures";
}

/* The method names qdit reports for a manifest's SGLang reading. */
static bool method_matches(const char *want, const char *alt, const char *got) {
    if (!strcmp(want, got) || (alt && !strcmp(alt, got))) return true;
    /* the convert_hf_to_fp8 channel export writes a compressed-tensors config: qdit reads it as fp8 */
    if (!strcmp(want, "compressed-tensors") && !strcmp(got, "fp8")) return true;
    /* _quantization_metadata.layers is read as Comfy markers first by current SGLang (§4.11) */
    if (!strcmp(want, "fp8") && !strcmp(got, "comfy_fp8")) return true;
    return false;
}

static const float *expected_tensor(const qd_st_file *f, const char *name, int64_t *n) {
    const qd_st_tensor *t = qd_st_find(f, name);
    if (!t) return NULL;
    assert_int_equal(t->dtype, QD_DTYPE_F32);
    *n = (int64_t)t->elements;
    return qd_st_data(f, t);
}

typedef struct {
    int layers, biases;
    double worst; /* largest |ours − expected| / max|expected| seen */
} tally;

static void compare(const char *what, const float *got, const float *want, int64_t count, tally *t) {
    double scale = 0, worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < count; i++) scale = fmax(scale, fabs(want[i]));
    for (int64_t i = 0; i < count; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (e > worst) {
            worst = e;
            at = i;
        }
    }
    double rel = scale > 0 ? worst / scale : worst;
    if (rel > 0x1p-20) fail_msg("%s: element %lld is %.9g, expected %.9g (%.3g of the largest)", what, (long long)at, got[at], want[at], rel);
    if (rel > t->worst) t->worst = rel;
}

static void check_layer(const qd_quant_config *cfg, const qd_ckpt *ck, const qd_st_file *expected, json_t *layer,
                        const char *family, tally *t) {
    const char *name = json_string_value(json_object_get(layer, "name"));
    int64_t n_out = json_integer_value(json_object_get(layer, "out_features"));
    int64_t k_in = json_integer_value(json_object_get(layer, "in_features"));
    char key[600], what[800];
    snprintf(key, sizeof key, "%s.weight", name);
    snprintf(what, sizeof what, "%s: %s", family, name);
    int64_t count = 0;
    const float *want = expected_tensor(expected, key, &count);
    if (!want) fail_msg("%s: expected/dequant.safetensors has no %s", family, key);
    assert_int_equal(count, n_out * k_in);
    float *got = calloc((size_t)count, sizeof *got);
    float *bias_got = calloc((size_t)n_out, sizeof *bias_got);
    /* the GELU shift of unsigned-activation fc2 layers lives in the bias; the model code sets it */
    bool bias_known;
    qt_manifest_reference(cfg, ck, layer, false, got, bias_got, &bias_known);
    compare(what, got, want, count, t);
    t->layers++;
    snprintf(key, sizeof key, "%s.bias", name);
    const float *want_bias = expected_tensor(expected, key, &count);
    if (want_bias && bias_known) {
        snprintf(what, sizeof what, "%s: %s bias", family, name);
        compare(what, bias_got, want_bias, n_out, t);
        t->biases++;
    }
    free(got);
    free(bias_got);
}

static void check_family(const char *src, const char *dir) {
    char *mpath = qt_path(dir, "expected/manifest.json");
    json_t *m = json_load_file(mpath, 0, NULL);
    assert_non_null(m);
    const char *family = json_string_value(json_object_get(m, "family"));
    const char *want_method = json_string_value(json_object_get(m, "expected_method"));
    const char *alt = json_string_value(json_object_get(m, "alt_method"));
    /* Nunchaku files are weights overrides; the rest are component folders */
    qd_options o;
    qd_options_init(&o);
    char *weights = NULL;
    json_t *files = json_object_get(m, "files");
    for (size_t i = 0; i < json_array_size(files); i++) {
        const char *f = json_string_value(json_array_get(files, i));
        if (!strncmp(f, "svdq-", 5)) weights = qt_path(dir, f);
    }
    o.transformer_weights_path = weights;
    qd_component_source cs;
    if (qd_component_source_resolve(&o, "transformer", weights ? NULL : dir, &cs)) fail_msg("%s/%s: %s", src, family, qd_last_error());
    qd_ckpt *ck;
    if (qd_weight_set_open(&cs.weights, &ck)) fail_msg("%s/%s: %s", src, family, qd_last_error());
    qd_quant_config cfg;
    const char *cls = strstr(src, "flux") ? "FluxTransformer2DModel" : "ZImageTransformer2DModel";
    if (qd_quant_resolve(&o, &cs, ck, cls, &cfg)) fail_msg("%s/%s: resolve: %s", src, family, qd_last_error());
    if (!method_matches(want_method, alt, qd_quant_method_name(cfg.method))) {
        fail_msg("%s/%s: resolved %s (%s), the manifest expects %s", src, family, qd_quant_method_name(cfg.method), cfg.source,
                 want_method);
    }
    char *epath = qt_path(dir, "expected/dequant.safetensors");
    qd_st_file *expected;
    assert_int_equal(qd_st_open(epath, &expected), QD_OK);
    tally t = {0};
    json_t *layers = json_object_get(m, "quantized_layers");
    for (size_t i = 0; i < json_array_size(layers); i++) {
        json_t *l = json_array_get(layers, i);
        if (!json_is_true(json_object_get(l, "bound_ok"))) {
            fail_msg("%s/%s: the generator reports %s outside its format's error bound", src, family,
                     json_string_value(json_object_get(l, "name")));
        }
        check_layer(&cfg, ck, expected, l, family, &t);
    }

    /* the plan quantizes exactly the manifest's checkpoint modules */
    json_t *quantized = json_object();
    for (size_t i = 0; i < json_array_size(layers); i++) {
        json_t *l = json_array_get(layers, i), *parts = json_object_get(l, "parts");
        for (size_t p = 0; p < (parts ? json_array_size(parts) : 1); p++)
            json_object_set_new(quantized, json_string_value(json_object_get(parts ? json_array_get(parts, p) : l, "checkpoint_prefix")),
                                json_true());
    }
    char **mods;
    size_t nm;
    assert_int_equal(qd_plan_candidates(ck, &mods, &nm), QD_OK);
    size_t planned_quantized = 0;
    for (size_t i = 0; i < nm; i++) {
        const char *shard[1] = {mods[i]};
        qd_linear l;
        if (qd_linear_plan(&cfg, ck, mods[i], shard, 1, &l)) fail_msg("%s/%s: plan %s: %s", src, family, mods[i], qd_last_error());
        bool q = l.scheme != QD_SCHEME_DENSE;
        if (q != (json_object_get(quantized, mods[i]) != NULL)) {
            fail_msg("%s/%s: the plan makes %s %s, the manifest says %s", src, family, mods[i], l.scheme_name,
                     q ? "unquantized" : "quantized");
        }
        planned_quantized += q;
        qd_linear_free(&l);
        free(mods[i]);
    }
    free(mods);
    assert_int_equal(planned_quantized, json_object_size(quantized));

    /* the same through the command line */
    char *out, *err;
    int rc = qt_run_qdit(&out, &err, "inspect", weights ? weights : dir, "--json", NULL);
    if (rc != 0) fail_msg("%s/%s: qdit inspect: rc %d: %s", src, family, rc, err);
    json_t *doc = json_loads(out, 0, NULL);
    json_t *q = json_object_get(json_array_get(json_object_get(doc, "components"), 0), "quantization");
    const char *cli_method = json_string_value(json_object_get(q, "method"));
    if (!cli_method || !method_matches(want_method, alt, cli_method)) fail_msg("%s/%s: inspect says %s", src, family, cli_method);
    size_t cli_quantized = 0;
    json_t *cli_layers = json_object_get(q, "layers");
    for (size_t i = 0; i < json_array_size(cli_layers); i++) {
        const char *sch = json_string_value(json_object_get(json_array_get(cli_layers, i), "scheme"));
        cli_quantized += strcmp(sch, "bf16") && strcmp(sch, "f16") && strcmp(sch, "f32");
    }
    assert_int_equal(cli_quantized, planned_quantized);
    json_decref(doc);
    free(out);
    free(err);
    print_message("%-13s %-31s %-13s %3d layers %3d biases, worst %.2e of max|W|; %zu quantized modules planned\n", src, family,
                  qd_quant_method_name(cfg.method), t.layers, t.biases, t.worst, planned_quantized);
    json_decref(quantized);
    qd_st_close(expected);
    qd_quant_config_free(&cfg);
    qd_ckpt_close(ck);
    qd_component_source_free(&cs);
    json_decref(m);
    free(weights);
    free(epath);
    free(mpath);
}

static void test_families(void **state) {
    (void)state;
    const char *sources[] = {"flux_tiny_a", "zimage_tiny_a"};
    size_t families = 0;
    for (int s = 0; s < 2; s++) {
        char *root = qt_path(fixtures_root(), sources[s]);
        char **dirs;
        size_t n;
        if (qd_list_dirs(root, &dirs, &n) != 0 || n == 0) fail_msg("no generated fixtures in %s", root);
        for (size_t i = 0; i < n; i++) {
            char *d = qt_path(root, dirs[i]);
            check_family(sources[s], d);
            families++;
            free(d);
        }
        qd_free_names(dirs, n);
        free(root);
    }
    assert_true(families >= 40);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_families)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
