/* `qdit bench` end to end on small models: the embedded tiny-shapes pipeline (Z-Image, BF16 weights) and the
 * tiny FLUX.1 pipeline tools/tiny-pipeline writes (F32 weights). The JSON parses and holds the asked step
 * count with positive times, a median that is the middle of them, and the token counts the resolution and
 * --text give; the stored bytes of the linears equal an independent count from the checkpoint's safetensors
 * header (read here with jansson, not with the library: the bytes of every rank-2 `.weight` and its
 * `.bias`), and for random weights Σ (N·K + N) BF16 values over the same shapes; fp8 and nvfp4 runs report
 * their formats' sizes (bounds from the bits per weight) and less than BF16. --pipeline reports each
 * stage. --device cuda without a GPU is an error naming --device, not a crash; bad flags are named. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "test_util.h"

#define TINY_SHAPES QDIT_SOURCE_DIR "/models/tiny-shapes"
#define TINY_SHAPES_WEIGHTS TINY_SHAPES "/transformer/diffusion_pytorch_model.safetensors"

/* The linears of a checkpoint as its header lists them: every rank-2 `.weight` [N, K] with its `.bias`. */
typedef struct {
    uint64_t bytes;      /* stored bytes of those weights and biases */
    uint64_t nk, n;      /* Σ N·K, Σ N */
    uint64_t bias_bytes; /* stored bytes of the biases */
    int64_t layers;
} header_count;

static header_count count_linears(const char *path) {
    size_t len = 0;
    unsigned char *raw = qt_read_file(path, &len);
    assert_true(len >= 8);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)raw[i] << (8 * i);
    assert_true(8 + hl <= len);
    json_error_t je;
    json_t *h = json_loadb((const char *)raw + 8, (size_t)hl, 0, &je);
    if (!h) fail_msg("%s: header: %s", path, je.text);
    header_count c = {0};
    const char *name;
    json_t *t;
    json_object_foreach(h, name, t) {
        size_t nl = strlen(name);
        json_t *shape = json_object_get(t, "shape");
        if (nl < 8 || strcmp(name + nl - 7, ".weight") || json_array_size(shape) != 2) continue;
        json_t *off = json_object_get(t, "data_offsets");
        c.bytes += (uint64_t)(json_integer_value(json_array_get(off, 1)) - json_integer_value(json_array_get(off, 0)));
        const uint64_t N = (uint64_t)json_integer_value(json_array_get(shape, 0)), K = (uint64_t)json_integer_value(json_array_get(shape, 1));
        c.nk += N * K, c.n += N, c.layers++;
        char bias[512];
        snprintf(bias, sizeof bias, "%.*s.bias", (int)(nl - 7), name);
        json_t *b = json_object_get(h, bias);
        if (b) {
            json_t *bo = json_object_get(b, "data_offsets");
            uint64_t bb = (uint64_t)(json_integer_value(json_array_get(bo, 1)) - json_integer_value(json_array_get(bo, 0)));
            c.bytes += bb, c.bias_bytes += bb;
        }
    }
    json_decref(h);
    free(raw);
    assert_true(c.layers > 0);
    return c;
}

/* Run qdit bench with the given arguments (NULL-terminated) and --json; parse stdout. */
static json_t *bench_json(const char *first, ...) {
    char *args[40] = {"bench"};
    int n = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 38; a = va_arg(ap, const char *)) args[n++] = (char *)a;
    va_end(ap);
    args[n++] = "--json";
    char *out = NULL, *err = NULL;
#define A(i) (i < n ? args[i] : NULL)
    int rc = qt_run_qdit(&out, &err, A(0), A(1), A(2), A(3), A(4), A(5), A(6), A(7), A(8), A(9), A(10), A(11), A(12), A(13), A(14), A(15),
                         A(16), A(17), A(18), A(19), A(20), NULL);
#undef A
    if (rc) fail_msg("qdit bench %s … exit %d: %s", first, rc, err);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (!j) fail_msg("qdit bench --json printed no JSON (%s):\n%s", je.text, out);
    free(out), free(err);
    return j;
}

static double num(const json_t *j, const char *key) {
    json_t *v = json_object_get(j, key);
    if (!json_is_number(v)) fail_msg("bench JSON: '%s' is missing or not a number", key);
    return json_number_value(v);
}

static const char *str(const json_t *j, const char *key) {
    json_t *v = json_object_get(j, key);
    if (!json_is_string(v)) fail_msg("bench JSON: '%s' is missing or not a string", key);
    return json_string_value(v);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The step fields every run has: counts as asked, positive finite times, median the middle of step_s. */
static void check_steps(const json_t *j, int steps, int warmup, int64_t res, int64_t text) {
    assert_string_equal(str(j, "mode"), "step");
    assert_int_equal((int64_t)num(j, "steps"), steps);
    assert_int_equal((int64_t)num(j, "warmup"), warmup);
    assert_int_equal((int64_t)num(j, "res"), res);
    assert_int_equal((int64_t)num(j, "image_tokens"), (res / 16) * (res / 16));
    assert_int_equal((int64_t)num(j, "text_tokens"), text);
    json_t *s = json_object_get(j, "step_s"), *w = json_object_get(j, "warmup_s");
    assert_int_equal(json_array_size(s), (size_t)steps);
    assert_int_equal(json_array_size(w), (size_t)warmup);
    double v[64], sum = 0;
    for (int i = 0; i < steps; i++) {
        v[i] = json_number_value(json_array_get(s, (size_t)i));
        assert_true(isfinite(v[i]) && v[i] > 0);
        sum += v[i];
    }
    for (int i = 0; i < warmup; i++) assert_true(json_number_value(json_array_get(w, (size_t)i)) > 0);
    qsort(v, (size_t)steps, sizeof *v, cmp_double);
    const double median = steps % 2 ? v[steps / 2] : 0.5 * (v[steps / 2 - 1] + v[steps / 2]);
    assert_true(fabs(num(j, "median_s") - median) <= 1e-5 * median + 1e-9);
    assert_true(fabs(num(j, "mean_s") - sum / steps) <= 1e-5 * sum / steps + 1e-9);
    assert_true(fabs(num(j, "min_s") - v[0]) <= 1e-5 * v[0] + 1e-9);
    assert_true(num(j, "load_s") >= 0);
    assert_true(num(j, "rss_loaded_bytes") > 0 && num(j, "rss_peak_bytes") >= num(j, "rss_loaded_bytes"));
    assert_true(json_is_null(json_object_get(j, "gpu_used_bytes")));
    assert_true(json_is_null(json_object_get(j, "gpu_used_loaded_bytes")));
    /* every step gets the same inputs and the CPU is deterministic: later steps reproduce the first exactly
       (the step io's copies in and out, the cached RoPE tables) */
    assert_true(json_is_number(json_object_get(j, "rerun_max_diff")));
    if (warmup + steps > 1) assert_true(num(j, "rerun_max_diff") == 0.0);
    const char *h = str(j, "output_hash");
    assert_int_equal(strlen(h), 16);
    assert_int_equal(strspn(h, "0123456789abcdef"), 16);
}

typedef struct {
    uint64_t seed;
    int64_t res, text;
    int steps;
    char res_s[16], text_s[16], steps_s[16];
} draw;

static draw draw_sizes(void) {
    uint64_t r = qt_seed();
    draw d = {.seed = r};
    d.res = 16 * (int64_t)(2 + qt_rand_u64(&r) % 3); /* 32, 48, 64 */
    d.text = 1 + (int64_t)(qt_rand_u64(&r) % 24);
    d.steps = 2 + (int)(qt_rand_u64(&r) % 3);
    snprintf(d.res_s, sizeof d.res_s, "%lld", (long long)d.res);
    snprintf(d.text_s, sizeof d.text_s, "%lld", (long long)d.text);
    snprintf(d.steps_s, sizeof d.steps_s, "%d", d.steps);
    return d;
}

/* tiny-shapes (Z-Image, BF16): checkpoint, random and quantized stored bytes against the header */
static void test_zimage_stored_bytes(void **state) {
    (void)state;
    draw d = draw_sizes();
    const header_count h = count_linears(TINY_SHAPES_WEIGHTS);
    json_t *j = bench_json("--model", TINY_SHAPES, "--res", d.res_s, "--text", d.text_s, "--steps", d.steps_s, "--warmup", "1", NULL);
    check_steps(j, d.steps, 1, d.res, d.text);
    assert_string_equal(str(j, "class"), "ZImageTransformer2DModel");
    assert_string_equal(str(j, "weights"), "checkpoint");
    assert_string_equal(str(j, "quantization"), "none");
    assert_int_equal((int64_t)num(j, "linear_layers"), h.layers);
    assert_int_equal((uint64_t)num(j, "linear_bytes"), h.bytes);
    json_decref(j);

    /* random weights: every linear drawn as BF16 [N, K] with a BF16 bias [N] */
    j = bench_json("--model", TINY_SHAPES "/transformer", "--random-weights", "--res", d.res_s, "--text", d.text_s, "--steps", "1", NULL);
    check_steps(j, 1, 0, d.res, d.text);
    assert_string_equal(str(j, "weights"), "random");
    assert_int_equal((int64_t)num(j, "linear_layers"), h.layers);
    assert_int_equal((uint64_t)num(j, "linear_bytes"), 2 * (h.nk + h.n));
    json_decref(j);
    /* random weights as a ModelOpt FP8 export stores them: an E4M3 byte a weight, the BF16 bias, and the per-tensor
       weight_scale and input_scale (two F32 scalars) per layer — bound as stored, not drawn as BF16 */
    j = bench_json("--model", TINY_SHAPES "/transformer", "--random-weights", "--quantization", "modelopt_fp8", "--res", d.res_s, "--text", d.text_s,
                   "--steps", "1", NULL);
    check_steps(j, 1, 0, d.res, d.text);
    assert_string_equal(str(j, "quantization"), "modelopt_fp8");
    assert_int_equal((uint64_t)num(j, "linear_bytes"), h.nk + 2 * h.n + 8 * (uint64_t)h.layers);
    json_decref(j);

    /* fp8: one byte a weight, at most an F32 scale per output channel and a few per-layer scalars; nvfp4:
       half a byte a weight and an E4M3 scale per 16, plus per-layer scalars (every K here is a multiple of 16) */
    j = bench_json("--model", TINY_SHAPES, "--quantization", "fp8", "--res", d.res_s, "--text", d.text_s, "--steps", "1", NULL);
    const uint64_t fp8 = (uint64_t)num(j, "linear_bytes");
    assert_string_equal(str(j, "quantization"), "fp8");
    json_decref(j);
    j = bench_json("--model", TINY_SHAPES, "--quantization", "nvfp4", "--res", d.res_s, "--text", d.text_s, "--steps", "1", NULL);
    const uint64_t nvfp4 = (uint64_t)num(j, "linear_bytes");
    assert_string_equal(str(j, "quantization"), "nvfp4");
    json_decref(j);
    printf("stored linear bytes: bf16 %llu, fp8 %llu, nvfp4 %llu (%lld layers)\n", (unsigned long long)h.bytes, (unsigned long long)fp8,
           (unsigned long long)nvfp4, (long long)h.layers);
    assert_true(fp8 >= h.nk + h.bias_bytes && fp8 <= h.nk + h.bias_bytes + 4 * h.n + 16 * (uint64_t)h.layers);
    assert_true(nvfp4 >= h.nk / 2 + h.nk / 16 + h.bias_bytes && nvfp4 <= h.nk / 2 + h.nk / 16 + h.bias_bytes + 16 * (uint64_t)h.layers);
    assert_true(nvfp4 < fp8 && fp8 < h.bytes);
}

/* the tiny FLUX.1 pipeline (F32 weights, fused q/k/v in qdit's load) */
static void test_flux_stored_bytes(void **state) {
    (void)state;
    const char *pipes = getenv("QDIT_TINY_PIPELINES");
    if (!pipes) fail_msg("QDIT_TINY_PIPELINES is not set (ctest sets it after tiny_pipelines_generate)");
    char *flux = qt_path(pipes, "flux"), *weights = qt_path(flux, "transformer/diffusion_pytorch_model.safetensors");
    draw d = draw_sizes();
    const header_count h = count_linears(weights);
    json_t *j = bench_json("--model", flux, "--res", d.res_s, "--text", d.text_s, "--steps", d.steps_s, "--precision", "f32", NULL);
    check_steps(j, d.steps, 0, d.res, d.text);
    assert_string_equal(str(j, "class"), "FluxTransformer2DModel");
    assert_string_equal(str(j, "precision"), "f32");
    assert_int_equal((uint64_t)num(j, "linear_bytes"), h.bytes);
    json_decref(j);
    free(flux), free(weights);
}

/* --pipeline on the embedded model: each stage timed, the steps asked */
static void test_pipeline_stages(void **state) {
    (void)state;
    json_t *j = bench_json("--pipeline", "--res", "32", "--steps", "3", NULL);
    assert_string_equal(str(j, "mode"), "pipeline");
    assert_string_equal(str(j, "pipeline"), "ZImagePipeline");
    assert_int_equal((int64_t)num(j, "steps"), 3);
    assert_int_equal((int64_t)num(j, "res"), 32);
    const double enc = num(j, "encode_s"), den = num(j, "denoise_s"), loop = num(j, "loop_s"), dec = num(j, "decode_s");
    assert_true(enc > 0 && den > 0 && loop > 0 && dec > 0 && loop <= den);
    assert_true(fabs(num(j, "total_s") - (enc + den + dec)) <= 1e-5 * (enc + den + dec));
    assert_true(fabs(num(j, "step_s") - loop / 3) <= 1e-5 * loop);
    assert_true(fabs(num(j, "transformer_load_s") - (den - loop)) <= 1e-5 * den);
    json_decref(j);
}

/* the default output: a table with a line per step and the median */
static void test_table(void **state) {
    (void)state;
    char *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "bench", "--model", TINY_SHAPES, "--res", "32", "--text", "8", "--steps", "3", NULL);
    if (rc) fail_msg("qdit bench exit %d: %s", rc, err);
    assert_non_null(strstr(out, "step 1 "));
    assert_non_null(strstr(out, "step 3 "));
    assert_null(strstr(out, "step 4 "));
    assert_non_null(strstr(out, "median "));
    assert_non_null(strstr(out, "linears "));
    free(out), free(err);
}

/* SGLang's offload flags reach the transformer: on the CPU backend there is nothing to offload (its weights
   are host memory), so the run is the plain one and says so in the JSON */
static void test_offload_flags_on_cpu(void **state) {
    (void)state;
    json_t *j = bench_json("--model", TINY_SHAPES, "--res", "32", "--text", "8", "--steps", "2", "--dit-layerwise-offload", "--dit-cpu-offload",
                           "true", NULL);
    check_steps(j, 2, 0, 32, 8);
    assert_string_equal(str(j, "offload"), "none");
    assert_int_equal((int64_t)num(j, "offload_groups"), 0);
    assert_int_equal((int64_t)num(j, "offload_host_bytes"), 0);
    assert_true(json_is_null(json_object_get(j, "gpu_weights_bytes")));
    json_decref(j);
}

/* exit status and a message naming the flag */
static void expect_error(const char *flag, int status, const char *a1, const char *a2, const char *a3, const char *a4, const char *a5,
                         const char *a6) {
    char *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "bench", a1, a2, a3, a4, a5, a6, NULL);
    if (rc != status || !strstr(err, flag)) fail_msg("qdit bench %s %s %s %s: exit %d (expected %d), stderr '%s' (expected to name %s)",
                                                     a1, a2 ? a2 : "", a3 ? a3 : "", a4 ? a4 : "", rc, status, err, flag);
    assert_true(out == NULL || !strchr(out, '{')); /* no JSON for a failed run */
    free(out), free(err);
}

static void test_bad_flags(void **state) {
    (void)state;
    const char *m = TINY_SHAPES;
    expect_error("--model", 2, "--res", "64", NULL, NULL, NULL, NULL);
    expect_error("--res", 2, "--model", m, "--res", "100", NULL, NULL);
    expect_error("--res", 2, "--model", m, "--res", "abc", NULL, NULL);
    expect_error("--steps", 2, "--model", m, "--steps", "0", NULL, NULL);
    expect_error("--warmup", 2, "--model", m, "--warmup", "-1", NULL, NULL);
    expect_error("--text", 2, "--model", m, "--text", "0", NULL, NULL);
    expect_error("--precision", 2, "--model", m, "--precision", "f16", NULL, NULL);
    expect_error("--device", 2, "--model", m, "--device", "tpu", NULL, NULL);
    expect_error("--frobnicate", 2, "--model", m, "--frobnicate", NULL, NULL, NULL);
    expect_error("--steps", 2, "--model", m, "--steps", NULL, NULL, NULL);
    expect_error("--quantization", 2, "--model", "flux.1-dev", "--quantization", "bogus", NULL, NULL);
    expect_error("--quantization", 2, "--model", m, "--quantization", "bogus", NULL, NULL);
    /* methods that only read checkpoints quantized that way, on random weights */
    expect_error("--quantization nvfp4", 2, "--model", "z-image-turbo", "--quantization", "modelopt_fp4", NULL, NULL);
    expect_error("msModelSlim", 2, "--model", m, "--random-weights", "--quantization", "modelslim", NULL);
    expect_error("--model z-image-turbo", 2, "--model", "z-image-turbo", "--transformer-weights-path", m, NULL, NULL);
    expect_error("--weights-on-disk", 2, "--model", m, "--weights-on-disk", "/tmp", NULL, NULL);
    expect_error("--model /nonexistent/qdit-bench", 1, "--model", "/nonexistent/qdit-bench", NULL, NULL, NULL, NULL);
    expect_error("--text", 2, "--pipeline", "--text", "5", NULL, NULL, NULL);
    expect_error("--model flux.1-dev", 2, "--pipeline", "--model", "flux.1-dev", NULL, NULL, NULL);
    expect_error("--dit-layerwise-offload", 2, "--model", m, "--dit-layerwise-offload=perhaps", NULL, NULL, NULL);
}

/* a transformer folder with config.json only: an error pointing at --random-weights, which then runs it */
static void test_config_only(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("bench"), *cfg = qt_path(dir, "config.json");
    size_t n = 0;
    void *text = qt_read_file(TINY_SHAPES "/transformer/config.json", &n);
    qt_write_file(cfg, text, n);
    expect_error("--random-weights", 1, "--model", dir, "--res", "32", NULL, NULL);
    json_t *j = bench_json("--model", dir, "--random-weights", "--res", "32", "--text", "4", "--steps", "1", NULL);
    check_steps(j, 1, 0, 32, 4);
    const header_count h = count_linears(TINY_SHAPES_WEIGHTS); /* the same config's shapes */
    assert_int_equal((uint64_t)num(j, "linear_bytes"), 2 * (h.nk + h.n));
    json_decref(j);
    free(text), free(cfg);
    qt_rmtree(dir);
    free(dir);
}

/* --device cuda: without a GPU (or a CUDA build) a clear error naming --device, before anything loads */
static void test_cuda_device(void **state) {
    (void)state;
    char *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "bench", "--model", TINY_SHAPES, "--device", "cuda", "--res", "32", "--text", "8", "--steps", "1", "--json",
                         NULL);
    if (rc == 0) { /* a GPU is present: the run reports it */
        json_t *j = json_loads(out, 0, NULL);
        assert_non_null(j);
        assert_string_equal(str(j, "device"), "cuda");
        assert_true(num(j, "gpu_total_bytes") > 0);
        assert_string_equal(str(j, "offload"), "none"); /* the tiny model fits: the auto rule leaves it resident */
        json_decref(j);
        /* streamed block by block: every block a group, the slots on the GPU, and replayed steps (graphs with
           their copies) equal to the first, op-by-op step */
        j = bench_json("--model", TINY_SHAPES, "--device", "cuda", "--res", "32", "--text", "8", "--steps", "4", "--dit-layerwise-offload", NULL);
        assert_string_equal(str(j, "offload"), "layerwise");
        assert_int_equal((int64_t)num(j, "offload_groups"), 10); /* 2 + 2 refiners, 6 layers */
        assert_true(num(j, "offload_host_bytes") > 0 && num(j, "offload_device_bytes") > 0);
        assert_true(num(j, "offload_device_bytes") < num(j, "offload_host_bytes"));
        assert_true(num(j, "rerun_max_diff") == 0.0);
        json_decref(j);
    } else {
        assert_int_equal(rc, 1);
        assert_non_null(strstr(err, "--device cuda"));
        assert_true(strstr(err, "GPU") || strstr(err, "CUDA"));
    }
    free(out), free(err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zimage_stored_bytes), cmocka_unit_test(test_flux_stored_bytes), cmocka_unit_test(test_pipeline_stages),
        cmocka_unit_test(test_table),               cmocka_unit_test(test_bad_flags),         cmocka_unit_test(test_cuda_device), cmocka_unit_test(test_config_only),
        cmocka_unit_test(test_offload_flags_on_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
