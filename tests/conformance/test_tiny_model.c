/* The embedded default model (models/tiny-shapes, trained by tools/tiny-model): the scene checker against
 * rendered scenes, then `qdit generate` on the fixed held-out prompts (never shown in training) in bf16
 * and through every quantization family, each image judged by the checker. Issue 10's targets are bf16
 * ≥ 90% accepted and each family ≥ 85%; the model in the tree meets all of them on the CI-class machine
 * (docs/tiny-model.md has the table). Each family's floor is its issue target where the measured rate is
 * at least 3 images above it, else the measurement less 3 images (a borderline image can flip with the last
 * bits of the arithmetic on another CPU); plus a floor on each family's mean PSNR against the bf16 images
 * about 2 dB under the measurement. Each line of output says whether the target is met.
 * Families: online fp8 / mxfp4 / mxfp8 / nvfp4 (--quantization), ModelOpt FP8 and NVFP4 (calibrated) and
 * SVDQuant int4 r32 written by `qdit convert`, msModelSlim W8A8 written by the independent numpy fixture
 * writer (tools/quant-fixtures; the static family from activation ranges `qdit convert activation-ranges`
 * records on the calibration prompts). $QDIT_TINY_MODEL_PROMPTS < 60 (the sanitizer build) runs the first N
 * prompts only, checking that every image is made and read back, without the acceptance bounds.
 * Validation mode (how the steps and guidance were chosen without looking at the held-out set):
 * $QDIT_TINY_MODEL_PROMPT_FILE, _STEPS, _GUIDANCE, _PRECISION and _FAMILIES (comma-separated names) override the
 * defaults and only print. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/generate.h"
#include "scene_check.h"
#include "test_util.h"

#define RES 128
#define MAX_PROMPTS 60

static int steps = 20;         /* the embedded model's defaults (src/pipeline/default_model.h) */
static double guidance = 2.0;
static bool validation_mode;
static const char *precision; /* NULL: bf16 */

static char *source_path(const char *rel) { return qt_path(QDIT_SOURCE_DIR, rel); }

static int read_prompts(char prompts[MAX_PROMPTS][256]) {
    const char *alt = getenv("QDIT_TINY_MODEL_PROMPT_FILE");
    char *path = alt ? strdup(alt) : source_path("tools/tiny-model/heldout_prompts.txt");
    size_t n = 0;
    char *text = qt_read_file(path, &n);
    int k = 0;
    for (char *line = strtok(text, "\n"); line && k < MAX_PROMPTS; line = strtok(NULL, "\n")) snprintf(prompts[k++], 256, "%s", line);
    free(text), free(path);
    return k;
}

static int prompt_count(void) {
    const char *e = getenv("QDIT_TINY_MODEL_PROMPTS");
    int n = e ? atoi(e) : MAX_PROMPTS;
    return n < 1 ? 1 : n > MAX_PROMPTS ? MAX_PROMPTS : n;
}

/* ---- the checker ---- */

static void random_scene(uint64_t *st, qs_scene *s) {
    s->background = (int)(qt_rand_u64(st) % QS_COLORS);
    s->n = 1 + (int)(qt_rand_u64(st) % 2);
    for (;;) {
        for (int i = 0; i < s->n; i++) {
            qs_object *o = &s->obj[i];
            o->size = (int)(qt_rand_u64(st) % QS_SIZES);
            do o->color = (int)(qt_rand_u64(st) % QS_COLORS);
            while (o->color == s->background);
            o->shape = (int)(qt_rand_u64(st) % QS_SHAPES);
            o->position = (int)(qt_rand_u64(st) % QS_POSITIONS);
        }
        if (s->n == 1 || qs_compatible(&s->obj[0], &s->obj[1])) return;
    }
}

/* One attribute of one object (or the background) changed to another value. */
static void perturb(uint64_t *st, qs_scene *s) {
    int which = (int)(qt_rand_u64(st) % 5), i = (int)(qt_rand_u64(st) % s->n);
    qs_object *o = &s->obj[i];
    switch (which) {
    case 0: o->size = 1 - o->size; break;
    case 1: { /* another colour, not the background's */
        int c;
        do c = (int)(qt_rand_u64(st) % QS_COLORS);
        while (c == o->color || c == s->background);
        o->color = c;
        break;
    }
    case 2: o->shape = (o->shape + 1 + (int)(qt_rand_u64(st) % (QS_SHAPES - 1))) % QS_SHAPES; break;
    case 3: o->position = (o->position + 1 + (int)(qt_rand_u64(st) % (QS_POSITIONS - 1))) % QS_POSITIONS; break;
    default:
        do s->background = (s->background + 1) % QS_COLORS;
        while (s->background == s->obj[0].color || (s->n == 2 && s->background == s->obj[1].color));
    }
}

static void test_checker_on_rendered_scenes(void **state) {
    (void)state;
    uint64_t st = qt_seed();
    uint8_t *rgb = malloc(RES * RES * 3);
    int accepted = 0, rejected = 0;
    const int n = 300;
    for (int t = 0; t < n; t++) {
        qs_scene s, p;
        random_scene(&st, &s);
        float jitter[2][2];
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 2; k++) jitter[i][k] = qt_rand_uniform(&st, -2.0f, 2.0f);
        qs_render(&s, jitter, RES, rgb);
        char cap[256], why[256];
        qs_caption(&s, cap, sizeof cap);
        bool ok = qs_check(rgb, RES, RES, cap, why, sizeof why);
        if (!ok) printf("rendered scene rejected: %s: %s\n", cap, why);
        accepted += ok;
        /* the same image against a caption with one attribute changed */
        p = s;
        perturb(&st, &p);
        qs_caption(&p, cap, sizeof cap);
        bool wrong = qs_check(rgb, RES, RES, cap, why, sizeof why);
        if (wrong) printf("perturbed caption accepted: %s\n", cap);
        rejected += !wrong;
    }
    printf("checker: %d/%d rendered scenes accepted, %d/%d perturbed captions rejected\n", accepted, n, rejected, n);
    assert_int_equal(accepted, n);
    assert_int_equal(rejected, n);
    free(rgb);
}

static void test_heldout_prompts_parse(void **state) {
    (void)state;
    char prompts[MAX_PROMPTS][256];
    int n = read_prompts(prompts), two = 0;
    assert_int_equal(n, MAX_PROMPTS);
    for (int i = 0; i < n; i++) {
        qs_scene s;
        char err[256], back[256];
        if (qs_parse(prompts[i], &s, err, sizeof err)) fail_msg("held-out prompt %d: %s", i, err);
        qs_caption(&s, back, sizeof back);
        assert_string_equal(back, prompts[i]);
        two += s.n == 2;
        for (int j = 0; j < i; j++) assert_string_not_equal(prompts[i], prompts[j]);
    }
    if (!getenv("QDIT_TINY_MODEL_PROMPT_FILE")) assert_int_equal(two, 16); /* the held-out set's own count */
    char err[256];
    qs_scene s;
    assert_int_equal(qs_parse("a huge red circle at the top on a blue background", &s, err, sizeof err), -1);
    assert_int_equal(qs_parse("a small red circle at the top", &s, err, sizeof err), -1);
}

/* ---- the families ---- */

typedef struct {
    const char *name;
    double floor;    /* regression floor on the accepted fraction (issue 10's targets: 0.90 bf16, 0.85 families) */
    double min_psnr; /* floor on the mean PSNR against the bf16 images, dB */
} family;

static char *tmp_dir;
static uint8_t *bf16_images[MAX_PROMPTS];

/* Generate the prompts with options o; the images and the accepted count; bf16 images kept for PSNR. */
static int run_family(const char *name, const qd_options *o, int n, char prompts[MAX_PROMPTS][256], uint8_t **images) {
    int accepted = 0;
    for (int i = 0; i < n; i++) {
        char file[64];
        snprintf(file, sizeof file, "%s_%02d.png", name, i);
        char *out = qt_path(tmp_dir, file);
        qd_generate_args a = {.prompt = prompts[i], .height = RES, .width = RES, .steps = steps, .guidance = guidance, .seed = (uint64_t)i,
                              .output = out, .precision = precision};
        qd_generate_report r;
        if (qd_generate_run(o, &a, &r)) fail_msg("%s, prompt %d: %s", name, i, qd_last_error());
        int w, h;
        images[i] = qt_read_png_rgb(out, &w, &h, NULL);
        assert_int_equal(w, RES);
        assert_int_equal(h, RES);
        char why[256];
        bool ok = qs_check(images[i], w, h, prompts[i], why, sizeof why);
        if (!ok) printf("  %s rejected %02d: %s: %s\n", name, i, prompts[i], why);
        accepted += ok;
        remove(out);
        free(out);
    }
    return accepted;
}

static double psnr(const uint8_t *a, const uint8_t *b) {
    double se = 0;
    for (int i = 0; i < RES * RES * 3; i++) se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    double mse = se / (RES * RES * 3);
    return mse < 1e-10 ? 100.0 : 10 * log10(255.0 * 255.0 / mse);
}

static char failures[4096];

static void report(const char *name, int accepted, int n, uint8_t **images, double floor, double min_psnr, bool bounded) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += images == bf16_images ? 0 : psnr(images[i], bf16_images[i]);
    double mean = images == bf16_images ? INFINITY : sum / n;
    double target = images == bf16_images ? 0.90 : 0.85;
    printf("family %-22s accepted %2d/%d (%5.1f%%)  mean PSNR vs bf16 %6.2f dB  issue target %.0f%%: %s\n", name, accepted, n,
           100.0 * accepted / n, mean, 100 * target, accepted >= target * n ? "met" : "missed");
    fflush(stdout);
    if (!bounded || validation_mode) return;
    size_t k = strlen(failures);
    if (accepted < floor * n) snprintf(failures + k, sizeof failures - k, "%s: %d/%d accepted, below its floor %.0f%%\n", name, accepted, n, floor * 100);
    k = strlen(failures);
    if (images != bf16_images && mean < min_psnr) snprintf(failures + k, sizeof failures - k, "%s: mean PSNR %.2f dB below its bound %.1f dB\n", name, mean, min_psnr);
}

static char *model_dir;

static bool wanted(const char *name) {
    const char *f = getenv("QDIT_TINY_MODEL_FAMILIES");
    if (!f) return true;
    size_t n = strlen(name);
    for (const char *p = strstr(f, name); p; p = strstr(p + 1, name))
        if ((p == f || p[-1] == ',') && (p[n] == ',' || !p[n])) return true;
    return false;
}

static void test_families(void **state) {
    (void)state;
    char prompts[MAX_PROMPTS][256];
    read_prompts(prompts);
    const int n = prompt_count();
    const bool bounded = n == MAX_PROMPTS;
    tmp_dir = qt_mkdtemp("tiny-model");
    model_dir = source_path("models/tiny-shapes");
    char *transformer = qt_path(model_dir, "transformer");

    const char *e;
    if ((e = getenv("QDIT_TINY_MODEL_STEPS"))) steps = atoi(e), validation_mode = true;
    if ((e = getenv("QDIT_TINY_MODEL_GUIDANCE"))) guidance = atof(e), validation_mode = true;
    if ((e = getenv("QDIT_TINY_MODEL_PRECISION"))) precision = e, validation_mode = true;
    if (getenv("QDIT_TINY_MODEL_PROMPT_FILE") || getenv("QDIT_TINY_MODEL_FAMILIES")) validation_mode = true;
    printf("%d prompts, %d steps, guidance %g%s\n", n, steps, guidance, validation_mode ? " (validation mode: no bounds)" : "");
    qd_options base;
    qd_options_init(&base);
    base.model_path = model_dir;
    int acc = run_family("bf16", &base, n, prompts, bf16_images);
    report("bf16", acc, n, bf16_images, 0.90, 0, bounded); /* measured 59/60 */

    uint8_t *imgs[MAX_PROMPTS];
    /* measured 59/60 36.2 dB, 59/60 34.2 dB, 54/60 27.9 dB, 54/60 27.5 dB */
    static const family online[] = {{"fp8", 0.85, 34.0}, {"mxfp8", 0.85, 32.0}, {"mxfp4", 0.85, 26.0}, {"nvfp4", 0.85, 25.5}};
    for (size_t f = 0; f < sizeof online / sizeof *online; f++) {
        if (!wanted(online[f].name)) continue;
        qd_options o = base;
        o.quantization = online[f].name;
        char label[32];
        snprintf(label, sizeof label, "online-%s", online[f].name);
        acc = run_family(label, &o, n, prompts, imgs);
        report(label, acc, n, imgs, online[f].floor, online[f].min_psnr, bounded);
        for (int i = 0; i < n; i++) free(imgs[i]);
    }

    /* checkpoints written by qdit convert (ModelOpt calibrated on prompts that are not held out) */
    char *calib = source_path("tools/tiny-model/calibration_prompts.txt");
    /* measured 56/60 35.9 dB and 52/60 27.5 dB (floor 49/60) */
    static const family written[] = {{"modelopt-fp8", 0.85, 33.5}, {"modelopt-nvfp4", 0.81, 25.5}};
    for (size_t f = 0; f < sizeof written / sizeof *written; f++) {
        if (!wanted(written[f].name)) continue;
        char *save = qt_path(tmp_dir, written[f].name);
        char *out = NULL, *err = NULL;
        int rc = qt_run_qdit(&out, &err, "convert", written[f].name, "--model-dir", transformer, "--save-dir", save, "--calibrate", calib,
                             "--pipeline", model_dir, "--calib-size", "128", NULL);
        if (rc) fail_msg("convert %s: rc %d: %s", written[f].name, rc, err);
        free(out), free(err);
        qd_options o = base;
        o.component_paths[0] = (qd_component_path){"transformer", save};
        o.n_component_paths = 1;
        acc = run_family(written[f].name, &o, n, prompts, imgs);
        report(written[f].name, acc, n, imgs, written[f].floor, written[f].min_psnr, bounded);
        for (int i = 0; i < n; i++) free(imgs[i]);
        free(save);
    }
    if (wanted("svdquant")) {
        char *save = qt_path(tmp_dir, "svdquant");
        char *out = NULL, *err = NULL;
        int rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", transformer, "--save-dir", save, "--precision", "int4", "--rank",
                             "32", "--name", "tiny-shapes", "--calibrate", calib, "--pipeline", model_dir, "--calib-size", "128", NULL);
        if (rc) fail_msg("convert svdquant: rc %d: %s", rc, err);
        free(out), free(err);
        char *file = qt_path(save, "svdq-int4_r32-tiny-shapes.safetensors");
        qd_options o = base;
        o.transformer_weights_path = file;
        acc = run_family("svdquant-int4-r32", &o, n, prompts, imgs);
        report("svdquant-int4-r32", acc, n, imgs, 0.83, 27.0, bounded); /* measured 53/60, 29.2 dB (floor 50/60) */
        for (int i = 0; i < n; i++) free(imgs[i]);
        free(file), free(save);
    }
    /* msModelSlim W8A8 from the independent numpy writer: static (per-tensor input scale and offset, with
       quant_bias, from each layer's real input range recorded by `qdit convert activation-ranges` on the
       calibration prompts, as the ModelOpt families are calibrated; with the writer's synthetic N(0.3, 1)
       ranges it was 30/60 at 24.6 dB, most activations clipped) and dynamic (per-token activation scales) */
    /* measured 58/60 37.3 dB and 59/60 43.9 dB */
    static const family modelslim[] = {{"modelslim_w8a8", 0.85, 35.0}, {"modelslim_w8a8_dynamic", 0.85, 41.5}};
    for (size_t f = 0; f < sizeof modelslim / sizeof *modelslim; f++) {
        if (!wanted(modelslim[f].name)) continue;
        char *save = qt_path(tmp_dir, modelslim[f].name), *ranges = NULL;
        char *tool = source_path("tools/quant-fixtures/make_quant_fixtures.py");
        char cmd[4096], ranges_flag[2048] = "";
        if (!strcmp(modelslim[f].name, "modelslim_w8a8")) { /* static: the real input ranges, calibrated as ModelOpt's */
            ranges = qt_path(tmp_dir, "activation-ranges.json");
            char *out = NULL, *err = NULL;
            int rc = qt_run_qdit(&out, &err, "convert", "activation-ranges", "--model-dir", transformer, "--calibrate", calib, "--pipeline", model_dir,
                                 "--calib-size", "128", "--output", ranges, NULL);
            if (rc) fail_msg("convert activation-ranges: rc %d: %s", rc, err);
            free(out), free(err);
            snprintf(ranges_flag, sizeof ranges_flag, " --activation-ranges '%s'", ranges);
        }
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' --quiet --src '%s' --family %s --out '%s'%s", tool, transformer, modelslim[f].name, save, ranges_flag);
        if (system(cmd)) fail_msg("the fixture writer failed: %s", cmd);
        qd_options o = base;
        o.component_paths[0] = (qd_component_path){"transformer", save};
        o.n_component_paths = 1;
        acc = run_family(modelslim[f].name, &o, n, prompts, imgs);
        report(modelslim[f].name, acc, n, imgs, modelslim[f].floor, modelslim[f].min_psnr, bounded);
        for (int i = 0; i < n; i++) free(imgs[i]);
        free(tool), free(save), free(ranges);
    }
    for (int i = 0; i < n; i++) free(bf16_images[i]);
    free(calib), free(transformer), free(model_dir);
    qt_rmtree(tmp_dir);
    free(tmp_dir);
    if (failures[0]) fail_msg("%s", failures);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_on_rendered_scenes),
        cmocka_unit_test(test_heldout_prompts_parse),
        cmocka_unit_test(test_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
