/* qdit inspect on real data: every fixture component folder and the bundled example pipeline. The
 * expected totals are computed here from the files with a separate header read (jansson only), not
 * by the library under test. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "io/fs.h"
#include "qdit.h"
#include "test_util.h"

typedef struct {
    long long tensors, elements, bytes;
    json_t *dtypes; /* name → count */
} totals;

/* Add one safetensors file's header to `t`, independently of the library. */
static void add_file(const char *path, totals *t) {
    size_t n;
    unsigned char *raw = qt_read_file(path, &n);
    unsigned long long hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    json_t *h = json_loadb((const char *)raw + 8, hl, 0, NULL);
    assert_non_null(h);
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        long long el = 1;
        json_t *shape = json_object_get(v, "shape");
        for (size_t d = 0; d < json_array_size(shape); d++) el *= json_integer_value(json_array_get(shape, d));
        json_t *off = json_object_get(v, "data_offsets");
        t->tensors++;
        t->elements += el;
        t->bytes += json_integer_value(json_array_get(off, 1)) - json_integer_value(json_array_get(off, 0));
        const char *dt = json_string_value(json_object_get(v, "dtype"));
        json_object_set_new(t->dtypes, dt, json_integer(json_integer_value(json_object_get(t->dtypes, dt)) + 1));
    }
    json_decref(h);
    free(raw);
}

static json_t *inspect_json(const char *path) {
    char *out, *err;
    int rc = qt_run_qdit(&out, &err, "inspect", path, "--json", NULL);
    if (rc != 0) fail_msg("qdit inspect %s: rc=%d: %s", path, rc, err);
    assert_string_equal(err, "");
    json_t *doc = json_loads(out, 0, NULL);
    assert_non_null(doc);
    free(out);
    free(err);
    return doc;
}

/* One component folder of the fixtures: compare its report with the independent totals. */
static void check_component(const char *rel, const char *file, const char *cls, long long want_tensors) {
    char *dir = qt_path(QDIT_SHARED_DIR "/fixtures", rel);
    char *path = qt_path(dir, file);
    totals t = {0, 0, 0, json_object()};
    add_file(path, &t);
    if (want_tensors) assert_int_equal(t.tensors, want_tensors);
    json_t *doc = inspect_json(dir);
    assert_string_equal(json_string_value(json_object_get(doc, "path")), dir);
    json_t *comps = json_object_get(doc, "components");
    assert_int_equal(json_array_size(comps), 1);
    json_t *c = json_array_get(comps, 0);
    char *base = qd_path_basename(dir);
    assert_string_equal(json_string_value(json_object_get(c, "name")), base);
    assert_string_equal(json_string_value(json_object_get(c, "class")), cls);
    assert_string_equal(json_string_value(json_array_get(json_object_get(c, "files"), 0)), file);
    assert_int_equal(json_integer_value(json_object_get(c, "tensors")), t.tensors);
    assert_int_equal(json_integer_value(json_object_get(c, "elements")), t.elements);
    assert_int_equal(json_integer_value(json_object_get(c, "bytes")), t.bytes);
    assert_true(json_equal(json_object_get(c, "dtypes"), t.dtypes));
    print_message("%-28s %-24s tensors %lld elements %lld bytes %lld\n", rel, cls, t.tensors, t.elements, t.bytes);
    json_decref(doc);
    json_decref(t.dtypes);
    free(base);
    free(path);
    free(dir);
}

static void test_fixture_components(void **state) {
    (void)state;
    /* 112 is the stated count for the FLUX fixture; the rest come from the files themselves */
    check_component("flux_tiny_a/transformer", "diffusion_pytorch_model.safetensors", "FluxTransformer2DModel", 112);
    check_component("zimage_tiny_a/transformer", "diffusion_pytorch_model.safetensors", "ZImageTransformer2DModel", 0);
    check_component("vae_kl_tiny_a/vae", "diffusion_pytorch_model.safetensors", "AutoencoderKL", 0);
    check_component("clip_tiny_a/text_encoder", "model.safetensors", "CLIPTextModel", 0);
    check_component("t5_tiny_a/text_encoder", "model.safetensors", "T5EncoderModel", 0);
    check_component("qwen3_tiny_a/text_encoder", "model.safetensors", "Qwen3Model", 0);
}

/* Whole fixture folders (component sub-folder + io.safetensors) and the packing fixtures. */
static void test_fixture_folders(void **state) {
    (void)state;
    const char *folders[] = {"flux_tiny_a", "zimage_tiny_a", "vae_kl_tiny_a", "clip_tiny_a", "t5_tiny_a", "qwen3_tiny_a"};
    for (size_t i = 0; i < sizeof folders / sizeof *folders; i++) {
        char *dir = qt_path(QDIT_SHARED_DIR "/fixtures", folders[i]);
        json_t *doc = inspect_json(dir);
        assert_string_equal(json_string_value(json_object_get(doc, "layout")), "folder");
        json_t *comps = json_object_get(doc, "components");
        assert_true(json_array_size(comps) >= 2);
        for (size_t k = 0; k < json_array_size(comps); k++) {
            json_t *c = json_array_get(comps, k);
            totals t = {0, 0, 0, json_object()};
            const char *name = json_string_value(json_object_get(c, "name"));
            json_t *files = json_object_get(c, "files");
            for (size_t f = 0; f < json_array_size(files); f++) {
                /* a sub-folder component's files are relative to it; loose files to the folder */
                char *sub = strstr(name, ".safetensors") ? strdup(dir) : qt_path(dir, name);
                char *p = qt_path(sub, json_string_value(json_array_get(files, f)));
                add_file(p, &t);
                free(p);
                free(sub);
            }
            assert_int_equal(json_integer_value(json_object_get(c, "tensors")), t.tensors);
            assert_int_equal(json_integer_value(json_object_get(c, "bytes")), t.bytes);
            assert_int_equal(json_integer_value(json_object_get(c, "elements")), t.elements);
            assert_true(json_equal(json_object_get(c, "dtypes"), t.dtypes));
            json_decref(t.dtypes);
        }
        json_decref(doc);
        free(dir);
    }
}

/* Nunchaku layers are quantized: inspecting them without SVDQuant enabled says how to enable it, and with
 * it the file's layer is planned (the packing fixtures hold one packed layer each). */
static void test_nunchaku_files(void **state) {
    (void)state;
    const char *dir = QDIT_SHARED_DIR "/fixtures/nunchaku_packing";
    char *out, *err;
    assert_int_equal(qt_run_qdit(&out, &err, "inspect", dir, NULL), 1);
    assert_non_null(strstr(err, "these are Nunchaku SVDQuant layers"));
    free(out);
    free(err);
    struct {
        const char *file, *precision, *scheme;
    } cases[] = {{"svdq_int4_a.safetensors", "int4", "svdq_int4"}, {"svdq_fp4_a.safetensors", "nvfp4", "svdq_nvfp4"}};
    for (int i = 0; i < 2; i++) {
        char *p = qt_path(dir, cases[i].file);
        assert_int_equal(qt_run_qdit(&out, &err, "inspect", p, "--json", "--enable-svdquant", "--quantization-precision",
                                     cases[i].precision, NULL),
                         0);
        json_t *doc = json_loads(out, 0, NULL);
        json_t *q = json_object_get(json_array_get(json_object_get(doc, "components"), 0), "quantization");
        assert_string_equal(json_string_value(json_object_get(q, "method")), "svdquant");
        json_t *layer = json_array_get(json_object_get(q, "layers"), 0);
        assert_string_equal(json_string_value(json_object_get(layer, "name")), "packed");
        assert_string_equal(json_string_value(json_object_get(layer, "scheme")), cases[i].scheme);
        json_decref(doc);
        free(out);
        free(err);
        /* the wrong precision is caught from the tensors */
        assert_int_equal(qt_run_qdit(&out, &err, "inspect", p, "--enable-svdquant", "--quantization-precision",
                                     i ? "int4" : "nvfp4", NULL),
                         1);
        assert_non_null(strstr(err, i ? "holds nvfp4 SVDQuant layers" : "is not an nvfp4 SVDQuant file"));
        free(out);
        free(err);
        free(p);
    }
}

static void test_example_pipeline(void **state) {
    (void)state;
    const char *dir = QDIT_SOURCE_DIR "/examples/tiny-flux";
    json_t *doc = inspect_json(dir);
    assert_string_equal(json_string_value(json_object_get(doc, "layout")), "pipeline");
    assert_string_equal(json_string_value(json_object_get(doc, "pipeline_class")), "FluxPipeline");
    json_t *comps = json_object_get(doc, "components");
    assert_int_equal(json_array_size(comps), 2); /* text_encoder is [null, null] */
    json_t *sched = json_array_get(comps, 0), *tr = json_array_get(comps, 1);
    assert_string_equal(json_string_value(json_object_get(sched, "name")), "scheduler");
    assert_int_equal(json_integer_value(json_object_get(sched, "tensors")), 0);
    assert_string_equal(json_string_value(json_object_get(tr, "class")), "FluxTransformer2DModel");
    totals t = {0, 0, 0, json_object()};
    json_t *files = json_object_get(tr, "files");
    assert_int_equal(json_array_size(files), 2);
    for (size_t f = 0; f < 2; f++) {
        char *p = qt_path(dir, "transformer");
        char *q = qt_path(p, json_string_value(json_array_get(files, f)));
        add_file(q, &t);
        free(p);
        free(q);
    }
    assert_int_equal(json_integer_value(json_object_get(tr, "tensors")), t.tensors);
    assert_int_equal(json_integer_value(json_object_get(tr, "bytes")), t.bytes);
    assert_true(json_equal(json_object_get(tr, "dtypes"), t.dtypes));
    assert_non_null(json_object_get(json_object_get(tr, "dtypes"), "F8_E4M3"));
    json_decref(t.dtypes);
    json_decref(doc);

    /* the readable summary names the classes, files and dtypes */
    char *out, *err;
    assert_int_equal(qt_run_qdit(&out, &err, "inspect", dir, NULL), 0);
    assert_non_null(strstr(out, "pipeline FluxPipeline, 2 components"));
    assert_non_null(strstr(out, "FluxTransformer2DModel"));
    assert_non_null(strstr(out, "diffusion_pytorch_model-00002-of-00002.safetensors"));
    assert_non_null(strstr(out, "F8_E4M3"));
    assert_non_null(strstr(out, "metadata  format"));
    free(out);
    free(err);
}

static void test_library_matches_cli(void **state) {
    (void)state;
    const char *dir = QDIT_SHARED_DIR "/fixtures/flux_tiny_a/transformer";
    char *lib;
    assert_int_equal(qd_inspect_json(dir, &lib), QD_OK);
    json_t *a = json_loads(lib, 0, NULL), *b = inspect_json(dir);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    free(lib);
}

static void test_usage_errors(void **state) {
    (void)state;
    char *out, *err;
    assert_int_equal(qt_run_qdit(&out, &err, "inspect", NULL), 2);
    assert_non_null(strstr(err, "usage: qdit inspect"));
    free(out);
    free(err);
    assert_int_equal(qt_run_qdit(&out, &err, "inspect", "x", "--yaml", NULL), 2);
    assert_non_null(strstr(err, "unknown option '--yaml'"));
    free(out);
    free(err);
    assert_int_equal(qt_run_qdit(&out, &err, "frobnicate", NULL), 2);
    assert_non_null(strstr(err, "unknown command 'frobnicate'"));
    free(out);
    free(err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_components), cmocka_unit_test(test_fixture_folders),
        cmocka_unit_test(test_example_pipeline),   cmocka_unit_test(test_library_matches_cli),
        cmocka_unit_test(test_usage_errors),       cmocka_unit_test(test_nunchaku_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
