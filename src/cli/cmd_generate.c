/* qdit generate --model-path PIPELINE --prompt TEXT --output FILE.png [generation options] [model and
 * quantization flags] — text to image with FLUX.1 or Z-Image (docs/cli.md). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_options.h"
#include "core/status.h"
#include "pipeline/default_model.h"
#include "pipeline/generate.h"

static void generate_usage(FILE *to) {
    fprintf(to,
            "usage: qdit generate [--model-path PIPELINE] --prompt TEXT --output FILE.png [options] [model and quantization flags]\n"
            "\n"
            "Text to image with a diffusers FluxPipeline (FLUX.1) or ZImagePipeline (Z-Image) folder; the PNG carries the\n"
            "generation parameters in its \"parameters\" text chunk. Without --model-path: qdit's embedded %s model\n"
            "(coloured shapes, e.g. \"a large red circle at the top left on a blue background\"; %dx%d, %d steps,\n"
            "guidance %g unless given).\n"
            "  --prompt TEXT               what to draw (FLUX: at most 512 T5 tokens; Z-Image: 512 Qwen3 tokens)\n"
            "  --negative-prompt TEXT      Z-Image with --guidance-scale > 0 only (classifier-free guidance)\n"
            "  --height N, --width N       image size in pixels, multiples of 16 up to %d (default 1024)\n"
            "  --num-inference-steps N     denoising steps (default: FLUX.1 28, Z-Image-Turbo 8)\n"
            "  --guidance-scale G          FLUX.1: embedded guidance (default 3.5); Z-Image: CFG scale, 0 = off (default 0)\n"
            "  --seed N                    initial noise as torch.Generator(\"cpu\").manual_seed(N) draws it (default 0)\n"
            "  --output FILE.png           where to write the image\n"
            "  --device cpu|cuda[:N]       where to run (default cpu)\n"
            "  --precision bf16|f32        activation dtype (default bf16, as diffusers runs these models)\n"
            "  --quiet                     no progress bar and no timing summary\n"
            "  --random-weights            components need only config.json: weights drawn in memory (full-size\n"
            "                              benchmarks; --quantization quantizes the transformer's draw at load)\n"
            "\n%s",
            QD_DEFAULT_MODEL_NAME, QD_DEFAULT_MODEL_SIDE, QD_DEFAULT_MODEL_SIDE, QD_DEFAULT_MODEL_STEPS, QD_DEFAULT_MODEL_GUIDANCE,
            QD_GENERATE_MAX_SIDE, qd_cli_model_flags_help());
}

/* A whole number in [lo, hi] for a flag, or an error naming it. */
static int parse_int(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "qdit generate: %s %s: expected a whole number from %lld to %lld\n", flag, v, lo, hi);
        return 2;
    }
    *out = x;
    return 0;
}

typedef struct {
    double last_draw;
} progress_state;

/* step n/N, it/s and the time left, redrawn in place on stderr */
static void draw_progress(void *user, int step, int total, double elapsed) {
    progress_state *p = user;
    if (step < total && elapsed - p->last_draw < 0.1) return;
    p->last_draw = elapsed;
    double rate = elapsed > 0 ? step / elapsed : 0, left = rate > 0 ? (total - step) / rate : 0;
    int width = 30, done = total ? width * step / total : width;
    char bar[31];
    for (int i = 0; i < width; i++) bar[i] = i < done ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\rdenoising [%s] %d/%d  %.2f it/s  %.0fs left ", bar, step, total, rate, left);
    if (step == total) fputc('\n', stderr);
    fflush(stderr);
}

int qd_cmd_generate(int argc, char **argv) {
    qd_options opts;
    char **rest;
    int n;
    const int begun = qd_cli_begin("generate", argc, argv, &opts, &rest, &n);
    if (begun) return begun;
    qd_generate_args a = {.guidance = -1};
    bool quiet = false;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const char *f = rest[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            generate_usage(stdout);
            free(rest);
            return 0;
        }
        if (!strcmp(f, "--quiet") || !strcmp(f, "-q")) {
            quiet = true;
            continue;
        }
        if (!strcmp(f, "--random-weights")) {
            a.random_weights = true;
            a.random_seed = 1;
            continue;
        }
        static const char *const known[] = {"--prompt", "--negative-prompt", "--height", "--width", "--num-inference-steps",
                                            "--guidance-scale", "--seed", "--output", "--device", "--precision"};
        bool is_known = false;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++) is_known |= !strcmp(f, known[k]);
        if (!is_known) {
            fprintf(stderr, "qdit generate: unknown argument '%s' (see qdit generate --help)\n", f);
            rc = 2;
            break;
        }
        if (i + 1 >= n) {
            fprintf(stderr, "qdit generate: %s needs a value\n", f);
            rc = 2;
            break;
        }
        const char *v = rest[++i];
        long long x = 0;
        if (!strcmp(f, "--prompt")) a.prompt = v;
        else if (!strcmp(f, "--negative-prompt")) a.negative_prompt = v;
        else if (!strcmp(f, "--output")) a.output = v;
        else if (!strcmp(f, "--device")) a.device = v;
        else if (!strcmp(f, "--precision")) a.precision = v;
        else if (!strcmp(f, "--height") || !strcmp(f, "--width")) {
            if (!(rc = parse_int(f, v, 1, 1LL << 30, &x))) *(f[2] == 'h' ? &a.height : &a.width) = x;
        } else if (!strcmp(f, "--num-inference-steps")) {
            if (!(rc = parse_int(f, v, 1, QD_GENERATE_MAX_STEPS, &x))) a.steps = (int)x;
        } else if (!strcmp(f, "--seed")) {
            char *end = NULL;
            errno = 0;
            unsigned long long u = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "qdit generate: --seed %s: expected a whole number from 0 to 2^64 - 1\n", v);
                rc = 2;
            }
            a.seed = u;
        } else {
            char *end = NULL;
            double g = strtod(v, &end);
            if (end == v || *end || !isfinite(g) || g < 0) {
                fprintf(stderr, "qdit generate: --guidance-scale %s: expected a number ≥ 0\n", v);
                rc = 2;
            }
            a.guidance = g;
        }
    }
    free(rest);
    if (rc) return rc;
    if (!a.prompt || !a.output) {
        fprintf(stderr, "qdit generate: %s is required\n\n", !a.prompt ? "--prompt" : "--output");
        generate_usage(stderr);
        return 2;
    }
    char embedded[4096];
    if (!opts.model_path) { /* the embedded default, at the settings it was trained and evaluated for */
        if (qd_default_model_dir(embedded, sizeof embedded)) {
            fprintf(stderr, "qdit generate: no --model-path given, and %s\n", qd_last_error());
            return 2;
        }
        opts.model_path = embedded;
        if (!a.height) a.height = QD_DEFAULT_MODEL_SIDE;
        if (!a.width) a.width = QD_DEFAULT_MODEL_SIDE;
        if (!a.steps) a.steps = QD_DEFAULT_MODEL_STEPS;
        if (a.guidance < 0) a.guidance = QD_DEFAULT_MODEL_GUIDANCE;
        if (!quiet) {
            fprintf(stderr, "qdit generate: no --model-path: using the embedded %s model (%s), %lldx%lld, %d steps, guidance %g\n",
                    QD_DEFAULT_MODEL_NAME, embedded, (long long)a.width, (long long)a.height, a.steps, a.guidance);
        }
    }
    progress_state ps = {.last_draw = -1};
    if (!quiet && isatty(STDERR_FILENO)) a.progress = draw_progress, a.progress_user = &ps;
    qd_generate_report r;
    qd_status s = qd_generate_run(&opts, &a, &r);
    if (s) {
        fprintf(stderr, "qdit generate: %s\n", qd_last_error());
        return s == QD_EINVAL ? 2 : 1; /* 2: the arguments, as for flag errors */
    }
    if (!quiet) {
        fprintf(stderr, "wrote %s (%lldx%lld, %d steps)\n", a.output, (long long)r.width, (long long)r.height, r.steps);
        fprintf(stderr, "time: text encoding %.2fs, denoising %.2fs (transformer load %.2fs, %.2f s/step), decoding %.2fs, total %.2fs "
                        "(each stage with its models' loading)\n",
                r.encode_s, r.denoise_s, r.denoise_s - r.loop_s, r.steps ? r.loop_s / r.steps : 0.0, r.decode_s,
                r.encode_s + r.denoise_s + r.decode_s);
    }
    return 0;
}
