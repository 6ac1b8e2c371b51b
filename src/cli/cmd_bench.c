/* qdit bench --model flux.1-dev|z-image-turbo|PATH [--res N] [--steps N] [--warmup N] [--text N] [--device D]
 * [--precision P] [--json] [--weights-on-disk DIR] [--random-weights] [--pipeline] [model and quantization
 * flags] — seconds per denoising step and memory, or per pipeline stage (docs/cli.md, pipeline/bench.h). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_options.h"
#include "core/status.h"
#include "pipeline/bench.h"

static void bench_usage(FILE *to) {
    fprintf(to,
            "usage: qdit bench --model flux.1-dev|z-image-turbo|PATH [options] [model and quantization flags]\n"
            "       qdit bench --pipeline [--model PATH] [options]\n"
            "\n"
            "Seconds per denoising step of a diffusion transformer and the memory it takes: FLUX.1-dev or Z-Image-Turbo\n"
            "at their published sizes with random weights, or the transformer of a pipeline folder / a transformer\n"
            "folder (its weights, or --random-weights). One step = one transformer forward on random inputs shaped as\n"
            "the pipeline makes them at --res (FLUX.1's guidance embedded, no CFG).\n"
            "  --model NAME|PATH       flux.1-dev, z-image-turbo, or a pipeline / transformer folder or cached repo id\n"
            "                          (--model-path PATH works too)\n"
            "  --quantization METHOD   quantize at load (random weights: online, e.g. fp8, nvfp4, mxfp4, mxfp8, int8)\n"
            "  --res N                 image side in pixels, a multiple of 16 (default 512)\n"
            "  --steps N               timed steps (default 2)\n"
            "  --warmup N              untimed steps before them (default 0)\n"
            "  --text N                caption tokens (default 512)\n"
            "  --device cpu|cuda[:N]   where to run (default cpu)\n"
            "  --precision bf16|f32    activation dtype (default bf16)\n"
            "  --random-weights        PATH needs only config.json: weights drawn in memory\n"
            "  --weights-on-disk DIR   random weights drawn into unlinked files in DIR, mapped like a checkpoint\n"
            "                          (models larger than memory)\n"
            "  --json                  one JSON object on stdout instead of the table (schema in docs/cli.md)\n"
            "  --pipeline              time a whole `qdit generate` run per stage instead (text encoding, denoising,\n"
            "                          decoding): --model PATH a pipeline folder, default the embedded tiny-shapes model;\n"
            "                          --steps is then the denoising steps, --warmup the untimed runs before\n"
            "\n%s",
            qd_cli_model_flags_help());
}

static int parse_int(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "qdit bench: %s %s: expected a whole number from %lld to %lld\n", flag, v, lo, hi);
        return 2;
    }
    *out = x;
    return 0;
}

static double gib(uint64_t b) { return (double)b / 1073741824.0; }

/* table mode: the load line, then each step as it finishes (full-size steps take minutes) */
static void print_progress(void *user, const qd_bench_report *r) {
    (void)user;
    if (r->n_done == 0) {
        printf("model        %s (%s), %s weights, quantization %s\n", r->model, r->cls, r->random_weights ? "random" : "checkpoint",
               r->quantization);
        printf("run          %s, %s activations, ISA %s, %lldx%lld: %lld image + %lld text tokens\n", r->device, r->precision, r->isa,
               (long long)r->res, (long long)r->res, (long long)r->image_tokens, (long long)r->text);
        printf("load         %.2f s\n", r->load_s);
        printf("linears      %lld layers, %.3f GiB stored (%llu bytes)\n", (long long)r->linears, gib(r->linear_bytes),
               (unsigned long long)r->linear_bytes);
        printf("resident     %.2f GiB after load (+%.2f GiB over the empty process)\n", gib(r->rss_loaded),
               gib(r->rss_loaded) - gib(r->rss_start));
    } else {
        printf("step %-7d %.4f s\n", r->n_done, r->step_s[r->n_done - 1]);
    }
    fflush(stdout);
}

static json_t *array_of(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static int print_json(json_t *j) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(j);
    if (!text) return 1;
    printf("%s\n", text);
    free(text);
    return 0;
}

static int step_json(const qd_bench_report *r) {
    json_t *j = json_object();
    json_object_set_new(j, "mode", json_string("step"));
    json_object_set_new(j, "model", json_string(r->model));
    json_object_set_new(j, "class", json_string(r->cls));
    json_object_set_new(j, "weights", json_string(r->random_weights ? "random" : "checkpoint"));
    json_object_set_new(j, "quantization", json_string(r->quantization));
    json_object_set_new(j, "device", json_string(r->device));
    json_object_set_new(j, "precision", json_string(r->precision));
    json_object_set_new(j, "cpu_isa", json_string(r->isa));
    json_object_set_new(j, "res", json_integer(r->res));
    json_object_set_new(j, "image_tokens", json_integer(r->image_tokens));
    json_object_set_new(j, "text_tokens", json_integer(r->text));
    json_object_set_new(j, "load_s", json_real(r->load_s));
    json_object_set_new(j, "linear_layers", json_integer(r->linears));
    json_object_set_new(j, "linear_bytes", json_integer((json_int_t)r->linear_bytes));
    json_object_set_new(j, "rss_start_bytes", json_integer((json_int_t)r->rss_start));
    json_object_set_new(j, "rss_loaded_bytes", json_integer((json_int_t)r->rss_loaded));
    json_object_set_new(j, "rss_peak_bytes", json_integer((json_int_t)r->rss_peak));
    json_object_set_new(j, "gpu_used_bytes", r->gpu_total ? json_integer((json_int_t)r->gpu_used) : json_null());
    json_object_set_new(j, "gpu_total_bytes", r->gpu_total ? json_integer((json_int_t)r->gpu_total) : json_null());
    json_object_set_new(j, "gpu_used_empty_bytes", r->gpu_total ? json_integer((json_int_t)r->gpu_used_empty) : json_null());
    json_object_set_new(j, "gpu_used_loaded_bytes", r->gpu_total ? json_integer((json_int_t)r->gpu_used_loaded) : json_null());
    json_object_set_new(j, "gpu_weights_bytes", r->gpu_total ? json_integer((json_int_t)r->gpu_weights) : json_null());
    json_object_set_new(j, "offload", json_string(r->offload));
    json_object_set_new(j, "offload_groups", json_integer(r->offload_groups));
    json_object_set_new(j, "offload_host_bytes", json_integer((json_int_t)r->offload_host_bytes));
    json_object_set_new(j, "offload_device_bytes", json_integer((json_int_t)r->offload_device_bytes));
    json_object_set_new(j, "rerun_max_diff", json_real(r->rerun_max_diff));
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)r->output_hash);
    json_object_set_new(j, "output_hash", json_string(hash));
    json_object_set_new(j, "warmup", json_integer(r->warmup));
    json_object_set_new(j, "warmup_s", array_of(r->warmup_s, r->warmup));
    json_object_set_new(j, "steps", json_integer(r->steps));
    json_object_set_new(j, "step_s", array_of(r->step_s, r->steps));
    json_object_set_new(j, "median_s", json_real(r->median_s));
    json_object_set_new(j, "mean_s", json_real(r->mean_s));
    json_object_set_new(j, "min_s", json_real(r->min_s));
    return print_json(j);
}

static int pipeline_out(const qd_bench_pipeline_report *r, bool as_json) {
    if (!as_json) {
        printf("pipeline     %s (%s), %s, %s activations, %lldx%lld, %d steps (after %d untimed runs)\n", r->model, r->pipeline, r->device,
               r->precision, (long long)r->res, (long long)r->res, r->steps, r->warmup);
        printf("text         %.3f s (encoders' load included)\n", r->encode_s);
        printf("denoising    %.3f s: transformer load %.3f s, %d steps %.3f s, %.4f s/step\n", r->denoise_s, r->denoise_s - r->loop_s,
               r->steps, r->loop_s, r->step_s);
        printf("decoding     %.3f s (VAE load and PNG included)\n", r->decode_s);
        printf("total        %.3f s; peak resident %.2f GiB\n", r->total_s, gib(r->rss_peak));
        return 0;
    }
    json_t *j = json_object();
    json_object_set_new(j, "mode", json_string("pipeline"));
    json_object_set_new(j, "model", json_string(r->model));
    json_object_set_new(j, "pipeline", json_string(r->pipeline));
    json_object_set_new(j, "device", json_string(r->device));
    json_object_set_new(j, "precision", json_string(r->precision));
    json_object_set_new(j, "res", json_integer(r->res));
    json_object_set_new(j, "steps", json_integer(r->steps));
    json_object_set_new(j, "warmup", json_integer(r->warmup));
    json_object_set_new(j, "encode_s", json_real(r->encode_s));
    json_object_set_new(j, "denoise_s", json_real(r->denoise_s));
    json_object_set_new(j, "transformer_load_s", json_real(r->denoise_s - r->loop_s));
    json_object_set_new(j, "loop_s", json_real(r->loop_s));
    json_object_set_new(j, "step_s", json_real(r->step_s));
    json_object_set_new(j, "decode_s", json_real(r->decode_s));
    json_object_set_new(j, "total_s", json_real(r->total_s));
    json_object_set_new(j, "rss_peak_bytes", json_integer((json_int_t)r->rss_peak));
    return print_json(j);
}

int qd_cmd_bench(int argc, char **argv) {
    qd_options opts;
    char **rest;
    int n;
    const int begun = qd_cli_begin("bench", argc, argv, &opts, &rest, &n);
    if (begun) return begun;
    qd_bench_args a = {0};
    bool as_json = false, pipeline = false;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const char *f = rest[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            bench_usage(stdout);
            free(rest);
            return 0;
        }
        if (!strcmp(f, "--json") || !strcmp(f, "--pipeline") || !strcmp(f, "--random-weights")) {
            *(f[2] == 'j' ? &as_json : f[2] == 'p' ? &pipeline : &a.random_weights) = true;
            continue;
        }
        static const char *const known[] = {"--model", "--res", "--steps", "--warmup", "--text", "--device", "--precision", "--weights-on-disk"};
        bool is_known = false;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++) is_known |= !strcmp(f, known[k]);
        if (!is_known) {
            fprintf(stderr, "qdit bench: unknown argument '%s' (see qdit bench --help)\n", f);
            rc = 2;
            break;
        }
        if (i + 1 >= n) {
            fprintf(stderr, "qdit bench: %s needs a value\n", f);
            rc = 2;
            break;
        }
        const char *v = rest[++i];
        long long x = 0;
        if (!strcmp(f, "--model")) a.model = v;
        else if (!strcmp(f, "--device")) a.device = v;
        else if (!strcmp(f, "--precision")) a.precision = v;
        else if (!strcmp(f, "--weights-on-disk")) a.weights_on_disk = v;
        else if (!strcmp(f, "--res")) {
            if (!(rc = parse_int(f, v, 16, 4096, &x))) a.res = x;
        } else if (!strcmp(f, "--text")) {
            if (!(rc = parse_int(f, v, 1, QD_BENCH_MAX_TEXT, &x))) a.text = x;
        } else if (!(rc = parse_int(f, v, !strcmp(f, "--warmup") ? 0 : 1, QD_BENCH_MAX_STEPS, &x))) {
            *(!strcmp(f, "--warmup") ? &a.warmup : &a.steps) = (int)x;
        }
    }
    free(rest);
    if (rc) return rc;
    if (!pipeline && !a.model && !opts.model_path) {
        fprintf(stderr, "qdit bench: --model is required (flux.1-dev, z-image-turbo, or a pipeline or transformer folder)\n\n");
        bench_usage(stderr);
        return 2;
    }
    qd_status s;
    if (pipeline) {
        qd_bench_pipeline_report r;
        if (!(s = qd_bench_pipeline(&opts, &a, &r))) return pipeline_out(&r, as_json);
    } else {
        qd_bench_report *r = malloc(sizeof *r); /* two step-time arrays: not for the stack */
        if (!r) return 1;
        if (!as_json) a.progress = print_progress;
        s = qd_bench_step(&opts, &a, r);
        if (!s && as_json) rc = step_json(r);
        else if (!s) {
            printf("median       %.4f s/step (mean %.4f, min %.4f; %d steps after %d warm-up)\n", r->median_s, r->mean_s, r->min_s, r->steps,
                   r->warmup);
            printf("peak         %.2f GiB resident\n", gib(r->rss_peak));
            if (r->gpu_total) {
                printf("GPU memory   %.2f GiB in use at the end (of %.1f): %.2f GiB context and workspaces, %.2f GiB weights, "
                       "%.2f GiB steps (activations, plans, graphs)\n", gib(r->gpu_used), gib(r->gpu_total), gib(r->gpu_used_empty),
                       gib(r->gpu_weights), gib(r->gpu_used - r->gpu_used_empty - r->gpu_weights));
            }
            if (r->offload_groups)
                printf("offload      %s: %d groups, %.2f GiB in pinned host memory, %.2f GiB of it on the GPU at the end (%s)\n", r->offload,
                       r->offload_groups, gib(r->offload_host_bytes), gib(r->offload_device_bytes),
                       strcmp(r->offload, "layerwise") ? "the whole-component buffer" : "the two streaming slots");
            if (r->warmup + r->steps > 1) printf("reruns       largest |output − first step's| %.3g (same inputs every step)\n", r->rerun_max_diff);
            printf("output hash  %016llx (FNV-1a of the last step's output bytes)\n", (unsigned long long)r->output_hash);
        }
        free(r);
        if (!s) return rc;
    }
    fprintf(stderr, "qdit bench: %s\n", qd_last_error());
    return s == QD_EINVAL ? 2 : 1;
}
