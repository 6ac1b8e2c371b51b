/* qdit convert activation-ranges on the embedded tiny model (models/tiny-shapes), two calibration prompts:
 *   - the file: format, version, prompts, steps, size; one entry per linear of the transformer (every 2-D
 *     `.weight` of its safetensors file, read here), each with finite min ≤ max and amax = max(|min|, |max|)
 *     exactly (no sign of min or max is assumed);
 *   - against `qdit convert modelopt-fp8 --calibrate` with the same prompts and settings, an independent
 *     consumer of the same calibration: every layer it gives an input_scale has input_scale·448 = amax
 *     within two f32 roundings (input_scale = amax/448 in f32);
 *   - against a known input: with one step, the Z-Image x_embedder sees only the initial latents (torch's
 *     randn with seed = prompt index, cast to bf16), so its min and max are those of the two noises;
 *   - bad input (missing --output / --calibrate, an unreadable prompts file, an existing output without
 *     --overwrite, --overwrite over a file that is not an earlier output) exits with a message naming the
 *     flag or file, and leaves no file behind. */
#include "test_util.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/codec.h"
#include "io/safetensors.h"
#include "pipeline/generate.h"

#define ST "diffusion_pytorch_model.safetensors"

static char *model_dir, *transformer, *tmp, *prompts;

static int setup(void **state) {
    (void)state;
    model_dir = qt_path(QDIT_SOURCE_DIR, "models/tiny-shapes");
    transformer = qt_path(model_dir, "transformer");
    tmp = qt_mkdtemp("activation-ranges");
    prompts = qt_path(tmp, "prompts.txt");
    /* the first two calibration prompts of the tiny model (tools/tiny-model/calibration_prompts.txt) */
    char *calib = qt_path(QDIT_SOURCE_DIR, "tools/tiny-model/calibration_prompts.txt");
    size_t n = 0;
    char *text = qt_read_file(calib, &n);
    char *second = strchr(text, '\n');
    assert_non_null(second);
    char *end = strchr(second + 1, '\n');
    assert_non_null(end);
    end[1] = 0;
    qt_write_text(prompts, text);
    free(text), free(calib);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    qt_rmtree(tmp);
    free(model_dir), free(transformer), free(tmp), free(prompts);
    return 0;
}

/* `qdit convert activation-ranges` on the tiny model with the two prompts; the parsed file. */
static json_t *ranges(const char *out, const char *steps) {
    char *o = NULL, *e = NULL;
    int rc = qt_run_qdit(&o, &e, "convert", "activation-ranges", "--model-dir", transformer, "--calibrate", prompts, "--calib-steps", steps,
                         "--calib-size", "64", "--output", out, NULL);
    if (rc) fail_msg("activation-ranges: exit %d: %s", rc, e);
    free(o), free(e);
    json_error_t err;
    json_t *doc = json_load_file(out, 0, &err);
    if (!doc) fail_msg("%s: %s (line %d)", out, err.text, err.line);
    return doc;
}

static double num(const json_t *e, const char *layer, const char *key) {
    const json_t *v = json_object_get(e, key);
    if (!json_is_number(v)) fail_msg("'%s': \"%s\" is missing or not a number", layer, key);
    return json_number_value(v);
}

static void test_file(void **state) {
    (void)state;
    char *out = qt_path(tmp, "ranges.json");
    json_t *doc = ranges(out, "2");
    assert_string_equal(json_string_value(json_object_get(doc, "format")), "qdit-activation-ranges");
    assert_int_equal(json_integer_value(json_object_get(doc, "version")), 1);
    assert_string_equal(json_string_value(json_object_get(doc, "prompts")), prompts);
    assert_int_equal(json_integer_value(json_object_get(doc, "steps")), 2);
    assert_int_equal(json_integer_value(json_object_get(doc, "size")), 64);
    json_t *layers = json_object_get(doc, "layers");
    assert_true(json_is_object(layers));

    /* every linear of the transformer, and nothing else */
    char *st = qt_path(transformer, ST);
    qd_st_file *f = NULL;
    if (qd_st_open(st, &f)) fail_msg("%s: %s", st, qd_last_error());
    size_t linears = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const qd_st_tensor *t = &f->tensors[i];
        const size_t n = strlen(t->name);
        if (t->rank != 2 || n < 7 || strcmp(t->name + n - 7, ".weight")) continue;
        char layer[256];
        snprintf(layer, sizeof layer, "%.*s", (int)(n - 7), t->name);
        if (!json_object_get(layers, layer)) fail_msg("linear '%s' is not in the file", layer);
        linears++;
    }
    qd_st_close(f);
    assert_int_equal(json_object_size(layers), linears);
    assert_int_equal(linears, 84);

    const char *name;
    json_t *e;
    int signs[3] = {0};
    json_object_foreach(layers, name, e) {
        const double lo = num(e, name, "min"), hi = num(e, name, "max"), amax = num(e, name, "amax");
        if (!isfinite(lo) || !isfinite(hi) || !(lo <= hi)) fail_msg("'%s': min %.9g, max %.9g", name, lo, hi);
        if (amax != fmax(fabs(lo), fabs(hi))) fail_msg("'%s': amax %.17g, expected max(|%.17g|, |%.17g|)", name, amax, lo, hi);
        if ((double)(float)lo != lo || (double)(float)hi != hi) fail_msg("'%s': min %.17g / max %.17g are not f32 values", name, lo, hi);
        signs[lo >= 0 ? 0 : hi <= 0 ? 1 : 2]++;
    }
    printf("%zu layers: %d with min >= 0, %d with max <= 0, %d spanning 0\n", linears, signs[0], signs[1], signs[2]);

    /* the same calibration through modelopt-fp8: input_scale = amax / 448 */
    char *save = qt_path(tmp, "modelopt"), *o = NULL, *err = NULL;
    int rc = qt_run_qdit(&o, &err, "convert", "modelopt-fp8", "--model-dir", transformer, "--save-dir", save, "--calibrate", prompts, "--calib-steps", "2",
                         "--calib-size", "64", NULL);
    if (rc) fail_msg("modelopt-fp8: exit %d: %s", rc, err);
    free(o), free(err);
    char *mst = qt_path(save, ST);
    if (qd_st_open(mst, &f)) fail_msg("%s: %s", mst, qd_last_error());
    int checked = 0;
    json_object_foreach(layers, name, e) {
        char key[300];
        snprintf(key, sizeof key, "%s.input_scale", name);
        const qd_st_tensor *t = qd_st_find(f, key);
        if (!t) continue;
        assert_int_equal(t->dtype, QD_DTYPE_F32);
        float is;
        memcpy(&is, qd_st_data(f, t), 4);
        const double amax = num(e, name, "amax"), back = (double)is * 448.0;
        if (!(fabs(back - amax) <= 0x1p-22 * amax)) fail_msg("'%s': modelopt-fp8 input_scale·448 = %.9g, activation-ranges amax %.9g", name, back, amax);
        checked++;
    }
    qd_st_close(f);
    printf("%d layers' amax equal modelopt-fp8's input_scale·448\n", checked);
    assert_true(checked >= 50); /* the zimage preset keeps the embedders, adaLN and final layer BF16 */
    json_decref(doc);
    free(mst), free(save), free(st), free(out);
}

static void test_known_input(void **state) {
    (void)state;
    char *out = qt_path(tmp, "ranges-1step.json");
    json_t *doc = ranges(out, "1");
    /* 64² pixels: 16 latent channels of 8×8, torch.randn in f32 with seed = prompt index */
    float noise[16 * 8 * 8], lo = INFINITY, hi = -INFINITY;
    for (uint64_t seed = 0; seed < 2; seed++) {
        assert_int_equal(qd_generate_noise(seed, false, 16 * 8 * 8, noise), QD_OK);
        for (int i = 0; i < 16 * 8 * 8; i++) lo = fminf(lo, noise[i]), hi = fmaxf(hi, noise[i]);
    }
    lo = qd_bf16_to_f32(qd_f32_to_bf16(lo)), hi = qd_bf16_to_f32(qd_f32_to_bf16(hi)); /* the codec's RNE (test_codec) */
    const json_t *e = json_object_get(json_object_get(doc, "layers"), "all_x_embedder.2-1");
    assert_non_null(e);
    const double got_lo = num(e, "all_x_embedder.2-1", "min"), got_hi = num(e, "all_x_embedder.2-1", "max");
    printf("x_embedder: min %.9g max %.9g, the noises' %.9g %.9g\n", got_lo, got_hi, lo, hi);
    if (got_lo != lo || got_hi != hi) fail_msg("x_embedder range [%.9g, %.9g], expected the initial latents' [%.9g, %.9g]", got_lo, got_hi, lo, hi);
    json_decref(doc);
    free(out);
}

static void expect_error(const char *tag, const char *want1, const char *want2, ...) {
    va_list ap;
    va_start(ap, want2);
    const char *argv[16] = {0};
    int n = 0;
    for (const char *a; n < 15 && (a = va_arg(ap, const char *));) argv[n++] = a;
    va_end(ap);
    char *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "convert", "activation-ranges", argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6], argv[7], argv[8],
                         argv[9], NULL);
    if (rc != 1 && rc != 2) fail_msg("%s: exit %d, expected an error (stderr: %s)", tag, rc, err);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2)))
        fail_msg("%s: the message '%s' does not name '%s'%s%s", tag, err, want1, want2 ? " and " : "", want2 ? want2 : "");
    free(out), free(err);
}

/* How many entries the folder has besides . and .. */
static int entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void test_bad_inputs(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("activation-ranges-bad");
    char *out = qt_path(dir, "r.json"), *missing = qt_path(dir, "no-such-prompts.txt"), *nodir = qt_path(dir, "no/such/dir.json");
    expect_error("no output", "--output", NULL, "--model-dir", transformer, "--calibrate", prompts, NULL);
    expect_error("no prompts", "--calibrate", NULL, "--model-dir", transformer, "--output", out, NULL);
    expect_error("no model dir", "--model-dir", NULL, "--calibrate", prompts, "--output", out, NULL);
    expect_error("model dir missing", "--model-dir", "no such folder", "--model-dir", missing, "--calibrate", prompts, "--output", out, NULL);
    expect_error("unreadable prompts", "--calibrate", missing, "--model-dir", transformer, "--calibrate", missing, "--output", out, NULL);
    expect_error("output folder missing", "--output", "does not exist", "--model-dir", transformer, "--calibrate", prompts, "--output", nodir, NULL);
    expect_error("bad steps", "--calib-steps", NULL, "--model-dir", transformer, "--calibrate", prompts, "--calib-steps", "0", "--output", out, NULL);
    expect_error("output is a folder", "--output", "folder", "--model-dir", transformer, "--calibrate", prompts, "--output", dir, NULL);
    assert_int_equal(entries(dir), 0); /* none of these wrote anything */

    /* an existing file: refused without --overwrite and left as it was; a foreign one even with it */
    qt_write_text(out, "{\"mine\": true}\n");
    expect_error("exists", "--output", "--overwrite", "--model-dir", transformer, "--calibrate", prompts, "--output", out, NULL);
    expect_error("foreign file", out, "qdit-activation-ranges", "--model-dir", transformer, "--calibrate", prompts, "--output", out, "--overwrite", NULL);
    size_t n = 0;
    char *text = qt_read_file(out, &n);
    assert_string_equal(text, "{\"mine\": true}\n");
    free(text);
    assert_int_equal(entries(dir), 1);

    /* an earlier output is replaced with --overwrite, in place, nothing left beside it */
    char *o = NULL, *err = NULL;
    remove(out);
    const char *args[] = {"convert", "activation-ranges", "--model-dir", transformer, "--calibrate", prompts, "--calib-steps", "1", "--calib-size", "32", "--output", out};
    assert_int_equal(qt_run_qdit(&o, &err, args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], args[10], args[11], NULL), 0);
    free(o), free(err);
    assert_int_equal(qt_run_qdit(&o, &err, args[0], args[1], args[2], args[3], args[4], args[5], args[6], "2", args[8], args[9], args[10], args[11], "--overwrite", NULL), 0);
    free(o), free(err);
    json_t *doc = json_load_file(out, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "steps")), 2);
    json_decref(doc);
    assert_int_equal(entries(dir), 1);
    qt_rmtree(dir);
    free(dir), free(out), free(missing), free(nodir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_file), cmocka_unit_test(test_known_input), cmocka_unit_test(test_bad_inputs)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
