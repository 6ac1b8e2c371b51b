/* `qdit generate` end to end on the tiny FLUX.1 and Z-Image pipelines that tools/tiny-pipeline writes
 * (random weights, dimensions that chain, tokenizers that fit): the PNG reads back through libpng's own
 * reader with the asked size, RGB8, and a "parameters" text chunk holding the settings; the same seed
 * gives the same bytes and another seed another image; a CFG run differs from a plain one; a quantized
 * transformer runs. Both pipelines' images equal the pipeline composed by hand from models.md with each
 * module run alone through `qdit forward` (2 steps; FLUX in f32 and bf16 with its roundings, Z-Image in f32 with CFG). The pieces: initial latents against the values torch drew
 * (tests/fixtures/torch_randn.safetensors), FLUX's latent packing against hand-worked indices, and the
 * image conversion against hand-computed bytes. Bad inputs each get an error naming the flag or
 * component, exit status 2 for arguments, and no output file. */
#include <math.h>
#include <stdbool.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/codec.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "pipeline/generate.h"
#include "tokenize/tokenizer.h"
#include "test_util.h"

#define RANDN_REF QDIT_SOURCE_DIR "/tests/fixtures/torch_randn.safetensors"

typedef struct {
    char *dir;
    const char *pipes; /* $QDIT_TINY_PIPELINES: flux/, zimage/ */
    uint64_t seed;
} env;

static int setup(void **state) {
    env *e = calloc(1, sizeof *e);
    e->dir = qt_mkdtemp("generate");
    e->pipes = getenv("QDIT_TINY_PIPELINES");
    uint64_t r = qt_seed();
    e->seed = qt_rand_u64(&r) % 1000000;
    *state = e;
    return 0;
}

static int teardown(void **state) {
    env *e = *state;
    qt_rmtree(e->dir);
    free(e->dir);
    free(e);
    return 0;
}

static char *pipe_dir(const env *e, const char *name) {
    if (!e->pipes) fail_msg("QDIT_TINY_PIPELINES is not set (ctest sets it after tiny_pipelines_generate)");
    return qt_path(e->pipes, name);
}

typedef struct {
    uint32_t w, h;
    uint8_t *rgb;
    char *params;
} png_read;

static png_read read_png(const char *path) {
    png_read r = {0};
    int w, h;
    r.rgb = qt_read_png_rgb(path, &w, &h, &r.params);
    r.w = (uint32_t)w, r.h = (uint32_t)h;
    return r;
}

static void png_free_read(png_read *r) { free(r->rgb), free(r->params); }

static void expect_param(const png_read *r, const char *line) {
    if (!r->params || !strstr(r->params, line)) fail_msg("parameters lack \"%s\":\n%s", line, r->params ? r->params : "(none)");
}

/* generate with the arguments after "generate" (NULL-terminated, at most 24) */
static int generate(char **err, ...) {
    va_list ap;
    char *args[32] = {"generate"};
    int n = 1;
    va_start(ap, err);
    for (const char *a; n < 31 && (a = va_arg(ap, const char *));) args[n++] = (char *)a;
    va_end(ap);
    char *out = NULL;
#define A(i) args[i]
    int rc = qt_run_qdit(&out, err, A(0), A(1), A(2), A(3), A(4), A(5), A(6), A(7), A(8), A(9), A(10), A(11), A(12), A(13), A(14),
                         A(15), A(16), A(17), A(18), A(19), A(20), A(21), A(22), A(23), A(24), NULL);
#undef A
    if (rc) fprintf(stderr, "qdit generate exit %d: %s\n", rc, *err);
    free(out);
    return rc;
}

static double mean_abs_diff(const png_read *a, const png_read *b) {
    double d = 0;
    for (size_t i = 0; i < (size_t)a->w * a->h * 3; i++) d += fabs((double)a->rgb[i] - (double)b->rgb[i]);
    return d / ((double)a->w * a->h * 3);
}

static void expect_not_flat(const png_read *r) {
    int lo = 255, hi = 0;
    for (size_t i = 0; i < (size_t)r->w * r->h * 3; i++) lo = r->rgb[i] < lo ? r->rgb[i] : lo, hi = r->rgb[i] > hi ? r->rgb[i] : hi;
    if (hi - lo < 16) fail_msg("the image is flat (%d..%d)", lo, hi);
}

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    void *da = qt_read_file(a, &na), *db = qt_read_file(b, &nb);
    bool same = na == nb && !memcmp(da, db, na);
    free(da), free(db);
    return same;
}

static void run_pipeline(env *e, const char *name, const char *pipeline, const char *h, const char *w, const char *guidance_line) {
    char *model = pipe_dir(e, name), *p1 = qt_path(e->dir, "a.png"), *p2 = qt_path(e->dir, "b.png"), *p3 = qt_path(e->dir, "c.png");
    char seed[32], seed2[32], *err = NULL;
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)e->seed);
    snprintf(seed2, sizeof seed2, "%llu", (unsigned long long)e->seed + 1);
    const char *prompt = "a red cat on the mat, photo";
    assert_int_equal(generate(&err, "--model-path", model, "--prompt", prompt, "--height", h, "--width", w, "--num-inference-steps", "2",
                              "--seed", seed, "--output", p1, NULL), 0);
    /* not a terminal: no progress bar, but the timing summary */
    assert_null(strstr(err, "denoising ["));
    assert_non_null(strstr(err, "text encoding"));
    free(err);
    png_read a = read_png(p1);
    assert_int_equal(a.h, atoi(h));
    assert_int_equal(a.w, atoi(w));
    char line[256];
    snprintf(line, sizeof line, "prompt: %s\n", prompt);
    expect_param(&a, line);
    snprintf(line, sizeof line, "seed: %s\n", seed);
    expect_param(&a, line);
    snprintf(line, sizeof line, "size: %sx%s\n", w, h);
    expect_param(&a, line);
    snprintf(line, sizeof line, "pipeline: %s\n", pipeline);
    expect_param(&a, line);
    expect_param(&a, "steps: 2\n");
    expect_param(&a, guidance_line);
    expect_param(&a, "quantization: none\n");
    expect_not_flat(&a);
    /* same seed: the same file; --quiet prints nothing */
    assert_int_equal(generate(&err, "--model-path", model, "--prompt", prompt, "--height", h, "--width", w, "--num-inference-steps", "2",
                              "--seed", seed, "--output", p2, "--quiet", NULL), 0);
    assert_string_equal(err, "");
    free(err);
    assert_true(same_file(p1, p2));
    /* another seed: another image */
    assert_int_equal(generate(&err, "--model-path", model, "--prompt", prompt, "--height", h, "--width", w, "--num-inference-steps", "2",
                              "--seed", seed2, "--output", p3, "--quiet", NULL), 0);
    free(err);
    png_read c = read_png(p3);
    double d = mean_abs_diff(&a, &c);
    printf("  %s: seed %s vs %s, mean |Δ| = %.2f levels\n", name, seed, seed2, d);
    assert_true(d > 1.0);
    png_free_read(&a), png_free_read(&c);
    free(model), free(p1), free(p2), free(p3);
}

static void test_flux_end_to_end(void **state) { run_pipeline(*state, "flux", "FluxPipeline", "64", "64", "guidance_scale: 3.5\n"); }

static void test_zimage_end_to_end(void **state) { run_pipeline(*state, "zimage", "ZImagePipeline", "128", "64", "guidance_scale: 0\n"); }

/* Z-Image with classifier-free guidance: a second (negative) pass changes the image */
static void test_zimage_cfg(void **state) {
    env *e = *state;
    char *model = pipe_dir(e, "zimage"), *p1 = qt_path(e->dir, "plain.png"), *p2 = qt_path(e->dir, "cfg.png"), *err = NULL;
    assert_int_equal(generate(&err, "--model-path", model, "--prompt", "a cat", "--height", "64", "--width", "64", "--num-inference-steps",
                              "2", "--seed", "3", "--output", p1, "--quiet", NULL), 0);
    free(err);
    assert_int_equal(generate(&err, "--model-path", model, "--prompt", "a cat", "--negative-prompt", "dog", "--guidance-scale", "4",
                              "--height", "64", "--width", "64", "--num-inference-steps", "2", "--seed", "3", "--output", p2, "--quiet", NULL), 0);
    free(err);
    png_read a = read_png(p1), b = read_png(p2);
    expect_param(&b, "negative_prompt: dog\n");
    expect_param(&b, "guidance_scale: 4\n");
    double d = mean_abs_diff(&a, &b);
    printf("  zimage: CFG 4 vs none, mean |Δ| = %.2f levels\n", d);
    assert_true(d > 1.0);
    png_free_read(&a), png_free_read(&b);
    free(model), free(p1), free(p2);
}

/* --quantization on the transformer (online FP8) runs through and is recorded */
static void test_flux_quantized(void **state) {
    env *e = *state;
    char *model = pipe_dir(e, "flux"), *p = qt_path(e->dir, "fp8.png"), *err = NULL;
    assert_int_equal(generate(&err, "--model-path", model, "--prompt", "a cat", "--height", "64", "--width", "64", "--num-inference-steps",
                              "1", "--output", p, "--quantization", "fp8", "--precision", "f32", "--quiet", NULL), 0);
    free(err);
    png_read a = read_png(p);
    expect_param(&a, "quantization: fp8\n");
    expect_param(&a, "precision: f32\n");
    expect_not_flat(&a);
    png_free_read(&a);
    free(model), free(p);
}


/* Copy every file of folder `from` into `to` (created), or only config.json when `config_only`. */
static void copy_folder(const char *from, const char *to, bool config_only) {
    assert_int_equal(mkdir(to, 0777), 0);
    char **names = NULL;
    size_t n = 0;
    assert_int_equal(qd_list_files(from, "", &names, &n), 0);
    for (size_t i = 0; i < n; i++) {
        if (config_only && strcmp(names[i], "config.json")) continue;
        char *a = qt_path(from, names[i]), *b = qt_path(to, names[i]);
        size_t len = 0;
        void *data = qt_read_file(a, &len);
        qt_write_file(b, data, len);
        free(data), free(a), free(b);
    }
    qd_free_names(names, n);
}

/* --random-weights: the tiny FLUX pipeline with its model folders reduced to config.json runs, draws the
 * same weights twice (identical PNG bytes), and without the flag the missing weights are an error. */
static void test_random_weights(void **state) {
    env *e = *state;
    char *src = pipe_dir(e, "flux"), *dst = qt_path(e->dir, "configs");
    assert_int_equal(mkdir(dst, 0777), 0);
    static const char *const parts[][2] = {{"scheduler", "all"}, {"tokenizer", "all"}, {"tokenizer_2", "all"}, {"text_encoder", "config"},
                                           {"text_encoder_2", "config"}, {"transformer", "config"}, {"vae", "config"}};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        char *a = qt_path(src, parts[i][0]), *b = qt_path(dst, parts[i][0]);
        copy_folder(a, b, !strcmp(parts[i][1], "config"));
        free(a), free(b);
    }
    char *mi = qt_path(src, "model_index.json"), *mo = qt_path(dst, "model_index.json");
    size_t len = 0;
    void *data = qt_read_file(mi, &len);
    qt_write_file(mo, data, len);
    free(data);
    char *p1 = qt_path(e->dir, "r1.png"), *p2 = qt_path(e->dir, "r2.png"), *err = NULL;
    for (int k = 0; k < 2; k++) {
        assert_int_equal(generate(&err, "--model-path", dst, "--prompt", "a cat", "--height", "64", "--width", "64", "--num-inference-steps",
                                  "1", "--output", k ? p2 : p1, "--random-weights", "--quiet", NULL),
                         0);
        free(err);
    }
    size_t l1 = 0, l2 = 0;
    void *b1 = qt_read_file(p1, &l1), *b2 = qt_read_file(p2, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    png_read a = read_png(p1);
    expect_not_flat(&a);
    png_free_read(&a);
    assert_int_not_equal(generate(&err, "--model-path", dst, "--prompt", "a cat", "--height", "64", "--width", "64", "--output", p1, "--quiet",
                                  NULL),
                         0);
    assert_non_null(strstr(err, "no weights"));
    free(err);
    free(b1), free(b2), free(src), free(dst), free(mi), free(mo), free(p1), free(p2);
}

/* The initial latents of a 512×512 image: what torch drew for the seed, in bf16 (FLUX bf16 runs) bit for
 * bit and in f32 (Z-Image) within the 4 ulp of tests/unit/pipeline/test_torch_randn.c. */
static void test_initial_latents(void **state) {
    (void)state;
    qd_st_file *f = NULL;
    assert_int_equal(qd_st_open(RANDN_REF, &f), QD_OK);
    const int64_t n = 16 * 64 * 64;
    float *got = malloc(sizeof *got * (size_t)n);
    static const uint64_t seeds[] = {0, 1, 12345};
    for (size_t k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "seed%llu_1x16x64x64_bf16", (unsigned long long)seeds[k]);
        const qd_st_tensor *t = qd_st_find(f, name);
        assert_non_null(t);
        assert_int_equal(qd_generate_noise(seeds[k], true, n, got), QD_OK);
        const uint16_t *ref = qd_st_data(f, t);
        for (int64_t i = 0; i < n; i++) {
            uint16_t r;
            memcpy(&r, ref + i, 2);
            float want;
            uint32_t bits = (uint32_t)r << 16;
            memcpy(&want, &bits, 4);
            if (got[i] != want) fail_msg("%s[%lld]: %g, torch %g", name, (long long)i, got[i], want);
        }
        snprintf(name, sizeof name, "seed%llu_1x16x64x64_f32", (unsigned long long)seeds[k]);
        t = qd_st_find(f, name);
        assert_non_null(t);
        assert_int_equal(qd_generate_noise(seeds[k], false, n, got), QD_OK);
        const float *rf = qd_st_data(f, t);
        for (int64_t i = 0; i < n; i++) {
            float want;
            memcpy(&want, rf + i, 4);
            if (fabsf(got[i] - want) > 4 * fabsf(nextafterf(want, INFINITY) - want)) fail_msg("%s[%lld]: %.9g, torch %.9g", name, (long long)i, got[i], want);
        }
    }
    free(got);
    qd_st_close(f);
}

/* _pack_latents: token (i, j) holds x[c, 2i + ph, 2j + pw] at feature c·4 + ph·2 + pw */
static void test_flux_packing(void **state) {
    (void)state;
    /* C = 2, h = 2, w = 4: x[c][y][x] = 100c + 10y + x */
    float x[16], p[16], back[16];
    for (int c = 0; c < 2; c++)
        for (int y = 0; y < 2; y++)
            for (int xx = 0; xx < 4; xx++) x[(c * 2 + y) * 4 + xx] = (float)(100 * c + 10 * y + xx);
    qd_flux_pack_latents(x, 2, 2, 4, p);
    const float want[16] = {0, 1, 10, 11, 100, 101, 110, 111, 2, 3, 12, 13, 102, 103, 112, 113};
    for (int i = 0; i < 16; i++) assert_float_equal(p[i], want[i], 0);
    qd_flux_unpack_latents(p, 2, 2, 4, back);
    for (int i = 0; i < 16; i++) assert_float_equal(back[i], x[i], 0);
}

/* round((x/2 + 0.5).clamp(0, 1)·255), half to even, the denormalisation rounded to bf16 in a bf16 run */
static void test_image_bytes(void **state) {
    (void)state;
    /* one pixel per channel plane: [3, 1, 1] */
    const float cases[][2] = {{-1.0f, 0}, {1.0f, 255}, {0.0f, 128 /* 127.5 → even */}, {0.2f, 153}, {-3.0f, 0}, {7.0f, 255}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        float img[3] = {cases[i][0], cases[i][0], cases[i][0]};
        uint8_t rgb[3];
        qd_image_to_rgb8(img, 1, 1, false, rgb);
        assert_int_equal(rgb[0], (int)cases[i][1]);
        assert_int_equal(rgb[2], (int)cases[i][1]);
    }
    /* 0.3: f32 0.65·255 = 165.75 → 166; bf16: 0.15 → 0.150390625, + 0.5 = 0.650390625 → bf16 0.6484375 (tie to
       even), ·255 = 165.35 → 165 */
    float img[3] = {0.3f, 0.3f, 0.3f};
    uint8_t rgb[3];
    qd_image_to_rgb8(img, 1, 1, false, rgb);
    assert_int_equal(rgb[0], 166);
    qd_image_to_rgb8(img, 1, 1, true, rgb);
    assert_int_equal(rgb[0], 165);
}

/* a pipeline folder with every entry of `from` but `skip` linked; drop_entry also removes skip from
 * model_index.json (else the index still names it) */
static char *without(const env *e, const char *from, const char *skip, bool drop_entry) {
    char *dst = qt_path(e->dir, "partial");
    qt_rmtree(dst);
    static const char *const entries[] = {"scheduler", "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "transformer", "vae"};
    char *src_index = qt_path(from, "model_index.json"), *dst_index = qt_path(dst, "model_index.json");
    json_error_t je;
    json_t *index = json_load_file(src_index, 0, &je);
    assert_non_null(index);
    if (drop_entry) json_object_del(index, skip);
    char *text = json_dumps(index, JSON_INDENT(2));
    qt_write_text(dst_index, text);
    free(text);
    json_decref(index);
    for (size_t i = 0; i < sizeof entries / sizeof *entries; i++) {
        if (!strcmp(entries[i], skip)) continue;
        char *a = qt_path(from, entries[i]), *b = qt_path(dst, entries[i]);
        if (access(a, F_OK) == 0) assert_int_equal(symlink(a, b), 0);
        free(a), free(b);
    }
    free(src_index), free(dst_index);
    return dst;
}

static void expect_failure(const char *a, const char *b, const char *err) {
    if ((a && !strstr(err, a)) || (b && !strstr(err, b))) fail_msg("error \"%s\" lacks \"%s\" / \"%s\"", err, a ? a : "", b ? b : "");
}

static void test_bad_inputs(void **state) {
    env *e = *state;
    char *flux = pipe_dir(e, "flux"), *zimage = pipe_dir(e, "zimage"), *out = qt_path(e->dir, "bad.png"), *err = NULL;
    struct {
        const char *flag, *value, *expect1, *expect2;
    } cases[] = {
        {"--height", "0", "--height 0", "from 1"},
        {"--width", "8192", "--width 8192", "4096"},
        {"--height", "100", "--height 100", "multiple of 16"},
        {"--width", "8", "--width 8", "at least 16"},
        {"--num-inference-steps", "0", "--num-inference-steps 0", NULL},
        {"--guidance-scale", "-1", "--guidance-scale -1", NULL},
        {"--seed", "x1", "--seed x1", NULL},
        {"--precision", "f16", "--precision f16", "bf16 or f32"},
        {"--device", "tpu", "--device tpu", "cpu, cuda or cuda:N"},
        {"--negative-prompt", "dog", "--negative-prompt", "FluxPipeline"},
        {"--frobnicate", "1", "unknown argument '--frobnicate'", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = generate(&err, "--model-path", flux, "--prompt", "a cat", "--height", "64", "--width", "64", "--num-inference-steps", "1",
                          "--output", out, cases[i].flag, cases[i].value, NULL);
        printf("  %s %s → %d: %s", cases[i].flag, cases[i].value, rc, err);
        assert_int_equal(rc, 2);
        expect_failure(cases[i].expect1, cases[i].expect2, err);
        assert_int_not_equal(access(out, F_OK), 0);
        free(err);
    }
    /* Z-Image: a negative prompt without guidance */
    assert_int_equal(generate(&err, "--model-path", zimage, "--prompt", "a cat", "--negative-prompt", "dog", "--output", out, NULL), 2);
    expect_failure("--negative-prompt", "--guidance-scale", err);
    free(err);
    /* prompts past 512 tokens: FLUX's T5, Z-Image's Qwen3 */
    size_t n = 700 * 4 + 1;
    char *longp = malloc(n);
    for (size_t i = 0; i < 700; i++) memcpy(longp + 4 * i, "cat ", 4);
    longp[n - 1] = '\0';
    assert_int_equal(generate(&err, "--model-path", flux, "--prompt", longp, "--output", out, "--height", "64", "--width", "64", NULL), 2);
    expect_failure("--prompt", "limit of 512", err);
    expect_failure("tokenizer_2", NULL, err);
    free(err);
    assert_int_equal(generate(&err, "--model-path", zimage, "--prompt", longp, "--output", out, "--height", "64", "--width", "64", NULL), 2);
    expect_failure("--prompt", "limit of 512", err);
    free(err);
    free(longp);
    /* a missing component, named with the flag that would supply it … */
    char *partial = without(e, flux, "text_encoder_2", true);
    assert_int_equal(generate(&err, "--model-path", partial, "--prompt", "a cat", "--output", out, "--height", "64", "--width", "64", NULL), 1);
    expect_failure("'text_encoder_2'", "--text-encoder-2-path", err);
    free(err);
    /* … and supplied by that flag */
    char *te2 = qt_path(flux, "text_encoder_2");
    assert_int_equal(generate(&err, "--model-path", partial, "--text-encoder-2-path", te2, "--prompt", "a cat", "--output", out, "--height",
                              "64", "--width", "64", "--num-inference-steps", "1", "--quiet", NULL), 0);
    free(err);
    assert_int_equal(access(out, F_OK), 0);
    unlink(out);
    free(partial);
    /* a component model_index.json names whose folder is missing */
    partial = without(e, flux, "vae", false);
    assert_int_equal(generate(&err, "--model-path", partial, "--prompt", "a cat", "--output", out, NULL), 1);
    expect_failure("'vae'", "is missing", err);
    free(err);
    free(partial);
    partial = without(e, zimage, "tokenizer", true);
    assert_int_equal(generate(&err, "--model-path", partial, "--prompt", "a cat", "--output", out, NULL), 1);
    expect_failure("'tokenizer'", "--tokenizer-path", err);
    free(err);
    /* no pipeline */
    char *te = qt_path(flux, "transformer");
    assert_int_equal(generate(&err, "--model-path", te, "--prompt", "a cat", "--output", out, NULL), 2);
    expect_failure("not a diffusers pipeline", NULL, err);
    free(err);
    assert_int_not_equal(access(out, F_OK), 0);
    free(te), free(te2), free(partial), free(flux), free(zimage), free(out);
}

/* ---- the FLUX.1 pipeline composed by hand from `qdit forward` runs of its modules ---- */

typedef struct {
    const char *name, *dtype;
    int rank;
    int64_t shape[4];
    const void *data;
    size_t bytes;
} st_in;

static void write_inputs(const char *path, const st_in *in, int n) {
    char header[4096];
    size_t off = 0, total = 0;
    int k = snprintf(header, sizeof header, "{");
    for (int i = 0; i < n; i++) {
        k += snprintf(header + k, sizeof header - (size_t)k, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", in[i].name, in[i].dtype);
        for (int d = 0; d < in[i].rank; d++) k += snprintf(header + k, sizeof header - (size_t)k, "%s%lld", d ? "," : "", (long long)in[i].shape[d]);
        k += snprintf(header + k, sizeof header - (size_t)k, "],\"data_offsets\":[%zu,%zu]}", off, off + in[i].bytes);
        off += in[i].bytes;
    }
    snprintf(header + k, sizeof header - (size_t)k, "}");
    total = off;
    uint8_t *data = malloc(total + 1);
    off = 0;
    for (int i = 0; i < n; i++) memcpy(data + off, in[i].data, in[i].bytes), off += in[i].bytes;
    qt_write_raw_safetensors(path, header, data, total);
    free(data);
}

/* an F32 output of a `qdit forward` run, copied */
static float *read_output(const char *path, const char *name, int64_t want) {
    qd_st_file *f = NULL;
    if (qd_st_open(path, &f)) fail_msg("%s: %s", path, qd_last_error());
    const qd_st_tensor *t = qd_st_find(f, name);
    if (!t || t->dtype != QD_DTYPE_F32 || (int64_t)t->elements != want) fail_msg("%s: no F32 '%s' of %lld values", path, name, (long long)want);
    float *v = malloc(sizeof *v * (size_t)want);
    memcpy(v, qd_st_data(f, t), sizeof *v * (size_t)want);
    qd_st_close(f);
    return v;
}

static void forward_in(const char *component, const char *in, const char *out, const char *precision) {
    char *so = NULL, *se = NULL;
    int rc = qt_run_qdit(&so, &se, "forward", "--component", component, "--inputs", in, "--output", out, "--precision", precision, NULL);
    if (rc) fail_msg("qdit forward %s: %s", component, se);
    free(so), free(se);
}

static void forward(const char *component, const char *in, const char *out) { forward_in(component, in, out, "f32"); }

static float bf16r(float x) { return qd_bf16_to_f32(qd_f32_to_bf16(x)); }

static int64_t *token_ids(const char *dir, qd_prompt_style style, const char *prompt, int64_t *n) {
    qd_tokenizer *t = NULL;
    assert_int_equal(qd_tokenizer_open(dir, &t), QD_OK);
    qd_prompt_opts o = qd_prompt_defaults(style);
    qd_token_ids ids;
    assert_int_equal(qd_tokenize_prompt(t, &o, prompt, &ids), QD_OK);
    int64_t *v = malloc(sizeof *v * ids.n);
    for (size_t i = 0; i < ids.n; i++) v[i] = ids.ids[i];
    *n = (int64_t)ids.n;
    qd_token_ids_free(&ids);
    qd_tokenizer_close(t);
    return v;
}

/* Two steps at 64×64 rebuilt from models.md §2.4–2.6 with each module run alone through `qdit
 * forward`: CLIP pooled and T5 states of the tokenized prompt; noise from torch's generator, packed 2×2
 * (feature c·4 + ph·2 + pw); sigmas linspace(1, 1/2, 2) shifted by e^mu/(e^mu + 1/σ − 1), mu from 16
 * image tokens, computed here in double; Euler steps; unpacked, /0.3611 + 0.1159, decoded; bytes as
 * diffusers' image processor. `qdit generate` must give the same picture. In bf16 (§11.2–11.3): the noise
 * drawn in bf16, the timestep cast to bf16 before /1000 in bf16, the latents cast back to bf16 after each
 * step, the VAE input and the image's denormalisation in bf16. */
static void flux_composed(env *e, bool bf16) {
    const char *prec = bf16 ? "bf16" : "f32";
    char *model = pipe_dir(e, "flux"), *png = qt_path(e->dir, "gen.png"), *err = NULL;
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)e->seed);
    const char *prompt = "a photo of the red cat";
    assert_int_equal(generate(&err, "--model-path", model, "--prompt", prompt, "--height", "64", "--width", "64", "--num-inference-steps",
                              "2", "--guidance-scale", "2.5", "--seed", seed, "--precision", prec, "--output", png, "--quiet", NULL), 0);
    free(err);
    char *tok = qt_path(model, "tokenizer"), *tok2 = qt_path(model, "tokenizer_2"), *te = qt_path(model, "text_encoder"),
         *te2 = qt_path(model, "text_encoder_2"), *tr = qt_path(model, "transformer"), *vae = qt_path(model, "vae");
    char *in = qt_path(e->dir, "in.safetensors"), *out = qt_path(e->dir, "out.safetensors");
    int64_t L1, L2;
    int64_t *ids1 = token_ids(tok, QD_PROMPT_CLIP, prompt, &L1), *ids2 = token_ids(tok2, QD_PROMPT_T5, prompt, &L2);
    assert_int_equal(L1, 77);
    assert_int_equal(L2, 512);
    write_inputs(in, (st_in[]){{"input_ids", "I64", 2, {1, L1}, ids1, sizeof *ids1 * (size_t)L1}}, 1);
    forward_in(te, in, out, prec);
    float *pooled = read_output(out, "pooler_output", 32);
    write_inputs(in, (st_in[]){{"input_ids", "I64", 2, {1, L2}, ids2, sizeof *ids2 * (size_t)L2}}, 1);
    forward_in(te2, in, out, prec);
    float *enc = read_output(out, "last_hidden_state", L2 * 32);
    /* latents [16, 8, 8] → 16 tokens of 64 */
    const int64_t C = 16, h = 8, w = 8, N = 16;
    float noise[16 * 8 * 8], x[16 * 64], img_ids[16 * 3], *txt_ids = calloc((size_t)L2 * 3, sizeof(float));
    assert_int_equal(qd_generate_noise(e->seed, bf16, C * h * w, noise), QD_OK);
    for (int64_t i = 0; i < h / 2; i++)
        for (int64_t j = 0; j < w / 2; j++) {
            img_ids[(i * 4 + j) * 3] = 0, img_ids[(i * 4 + j) * 3 + 1] = (float)i, img_ids[(i * 4 + j) * 3 + 2] = (float)j;
            for (int64_t c = 0; c < C; c++)
                for (int p = 0; p < 4; p++) x[(i * 4 + j) * 64 + c * 4 + p] = noise[(c * h + 2 * i + p / 2) * w + 2 * j + p % 2];
        }
    const double m = (1.15 - 0.5) / (4096 - 256), mu = N * m + (0.5 - 256 * m);
    const float sigmas[3] = {1.0f, (float)(exp(mu) / (exp(mu) + (1.0 / 0.5 - 1.0))), 0.0f};
    const float guidance = 2.5f;
    for (int step = 0; step < 2; step++) {
        float t = sigmas[step] * 1000.0f, sigma = bf16 ? bf16r(bf16r(t) / 1000.0f) : t / 1000.0f;
        write_inputs(in, (st_in[]){{"hidden_states", "F32", 3, {1, N, 64}, x, sizeof x},
                                   {"encoder_hidden_states", "F32", 3, {1, L2, 32}, enc, sizeof(float) * (size_t)(L2 * 32)},
                                   {"pooled_projections", "F32", 2, {1, 32}, pooled, sizeof(float) * 32},
                                   {"timestep", "F32", 1, {1}, &sigma, 4},
                                   {"guidance", "F32", 1, {1}, &guidance, 4},
                                   {"img_ids", "F32", 2, {N, 3}, img_ids, sizeof img_ids},
                                   {"txt_ids", "F32", 2, {L2, 3}, txt_ids, sizeof(float) * (size_t)(L2 * 3)}},
                     7);
        forward_in(tr, in, out, prec);
        float *v = read_output(out, "output", N * 64);
        for (int64_t k = 0; k < N * 64; k++) {
            x[k] += (sigmas[step + 1] - sigmas[step]) * v[k];
            if (bf16) x[k] = bf16r(x[k]);
        }
        free(v);
    }
    float z[16 * 8 * 8];
    for (int64_t i = 0; i < h / 2; i++)
        for (int64_t j = 0; j < w / 2; j++)
            for (int64_t c = 0; c < C; c++)
                for (int p = 0; p < 4; p++)
                    z[(c * h + 2 * i + p / 2) * w + 2 * j + p % 2] =
                        bf16 ? bf16r(bf16r(x[(i * 4 + j) * 64 + c * 4 + p] / 0.3611f) + 0.1159f) : x[(i * 4 + j) * 64 + c * 4 + p] / 0.3611f + 0.1159f;
    write_inputs(in, (st_in[]){{"z", "F32", 4, {1, C, h, w}, z, sizeof z}}, 1);
    forward_in(vae, in, out, prec);
    float *image = read_output(out, "output", 3 * 64 * 64);
    png_read got = read_png(png);
    int worst = 0;
    long off = 0;
    for (int64_t c = 0; c < 3; c++)
        for (int64_t p = 0; p < 64 * 64; p++) {
            float v = bf16 ? bf16r(bf16r(image[c * 4096 + p] / 2.0f) + 0.5f) : image[c * 4096 + p] / 2.0f + 0.5f;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            int want = (int)nearbyintf(v * 255.0f), d = abs(want - got.rgb[p * 3 + c]);
            worst = d > worst ? d : worst;
            off += d > 0;
        }
    printf("  flux composed (%s): %ld of %d bytes differ, worst %d levels\n", prec, off, 3 * 4096, worst);
    assert_true(worst <= 1);
    assert_true(off <= 3 * 4096 / 100);
    png_free_read(&got);
    free(image), free(pooled), free(enc), free(txt_ids), free(ids1), free(ids2);
    free(tok), free(tok2), free(te), free(te2), free(tr), free(vae), free(in), free(out), free(model), free(png);
}

static void test_flux_composed(void **state) { flux_composed(*state, false); }

static void test_flux_composed_bf16(void **state) { flux_composed(*state, true); }

/* hidden_states[-2] of the Qwen3 encoder for a prompt: [L, 32] */
static float *zimage_caption(const env *e, const char *model, const char *prompt, int64_t *L) {
    char *tok = qt_path(model, "tokenizer"), *te = qt_path(model, "text_encoder"), *in = qt_path(e->dir, "te_in.safetensors"),
         *out = qt_path(e->dir, "te_out.safetensors");
    qd_tokenizer *t = NULL;
    assert_int_equal(qd_tokenizer_open(tok, &t), QD_OK);
    qd_prompt_opts o = qd_prompt_defaults(QD_PROMPT_QWEN3_CHAT);
    o.pad = false;
    qd_token_ids ids;
    assert_int_equal(qd_tokenize_prompt(t, &o, prompt, &ids), QD_OK);
    *L = (int64_t)ids.n;
    int64_t *v = malloc(sizeof *v * ids.n), *mask = malloc(sizeof *mask * ids.n);
    for (size_t i = 0; i < ids.n; i++) v[i] = ids.ids[i], mask[i] = 1;
    write_inputs(in, (st_in[]){{"input_ids", "I64", 2, {1, *L}, v, sizeof *v * ids.n}, {"attention_mask", "I64", 2, {1, *L}, mask, sizeof *mask * ids.n}}, 2);
    forward(te, in, out);
    float *cap = read_output(out, "hidden_states_minus2", *L * 32);
    qd_token_ids_free(&ids);
    qd_tokenizer_close(t);
    free(v), free(mask), free(tok), free(te), free(in), free(out);
    return cap;
}

/* Z-Image the same way (models.md §3.4), with CFG 2 and a negative prompt: sigmas linspace(1, 1/2, 2)
 * shifted statically 3σ/(1 + 2σ); the model gets (1000 − 1000σ)/1000; pred = −(pos + 2(pos − neg)). */
static void test_zimage_composed(void **state) {
    env *e = *state;
    char *model = pipe_dir(e, "zimage"), *png = qt_path(e->dir, "gen.png"), *err = NULL;
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)e->seed);
    assert_int_equal(generate(&err, "--model-path", model, "--prompt", "a cat on the mat", "--negative-prompt", "dog", "--guidance-scale",
                              "2", "--height", "64", "--width", "64", "--num-inference-steps", "2", "--seed", seed, "--precision", "f32",
                              "--output", png, "--quiet", NULL), 0);
    free(err);
    int64_t Lp, Ln;
    float *pos = zimage_caption(e, model, "a cat on the mat", &Lp), *neg = zimage_caption(e, model, "dog", &Ln);
    char *tr = qt_path(model, "transformer"), *vae = qt_path(model, "vae"), *in = qt_path(e->dir, "in.safetensors"),
         *out = qt_path(e->dir, "out.safetensors");
    const int64_t n = 16 * 8 * 8;
    float x[16 * 8 * 8];
    assert_int_equal(qd_generate_noise(e->seed, false, n, x), QD_OK);
    const float sigmas[3] = {1.0f, (float)(3 * 0.5 / (1 + 2 * 0.5)), 0.0f};
    for (int step = 0; step < 2; step++) {
        float t = (1000.0f - sigmas[step] * 1000.0f) / 1000.0f, *v[2];
        for (int k = 0; k < 2; k++) {
            int64_t L = k ? Ln : Lp;
            write_inputs(in, (st_in[]){{"x", "F32", 4, {16, 1, 8, 8}, x, sizeof x}, {"cap_feats", "F32", 2, {L, 32}, k ? neg : pos, sizeof(float) * (size_t)(L * 32)},
                                       {"t", "F32", 1, {1}, &t, 4}}, 3);
            forward(tr, in, out);
            v[k] = read_output(out, "output", n);
        }
        for (int64_t k = 0; k < n; k++) x[k] += (sigmas[step + 1] - sigmas[step]) * -(v[0][k] + 2.0f * (v[0][k] - v[1][k]));
        free(v[0]), free(v[1]);
    }
    for (int64_t k = 0; k < n; k++) x[k] = x[k] / 0.3611f + 0.1159f;
    write_inputs(in, (st_in[]){{"z", "F32", 4, {1, 16, 8, 8}, x, sizeof x}}, 1);
    forward(vae, in, out);
    float *image = read_output(out, "output", 3 * 64 * 64);
    png_read got = read_png(png);
    int worst = 0;
    long off = 0;
    for (int64_t c = 0; c < 3; c++)
        for (int64_t p = 0; p < 64 * 64; p++) {
            float v = image[c * 4096 + p] / 2.0f + 0.5f;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            int want = (int)nearbyintf(v * 255.0f), d = abs(want - got.rgb[p * 3 + c]);
            worst = d > worst ? d : worst;
            off += d > 0;
        }
    printf("  zimage composed: %ld of %d bytes differ, worst %d levels\n", off, 3 * 4096, worst);
    assert_true(worst <= 1);
    assert_true(off <= 3 * 4096 / 100);
    png_free_read(&got);
    free(image), free(pos), free(neg), free(tr), free(vae), free(in), free(out), free(model), free(png);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initial_latents),
        cmocka_unit_test(test_flux_packing),
        cmocka_unit_test(test_image_bytes),
        cmocka_unit_test_setup_teardown(test_flux_end_to_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zimage_end_to_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zimage_cfg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flux_quantized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_weights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flux_composed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flux_composed_bf16, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zimage_composed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_inputs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
