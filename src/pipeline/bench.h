/* Benchmarks (`qdit bench`, bench/bench_dit_step): how long one denoising step of a diffusion transformer
 * takes and what memory it needs, or how long each stage of a whole `generate` run takes. The options' weight
 * offload flags (--dit-layerwise-offload, --dit-cpu-offload) apply to the transformer.
 *
 * Step mode: the transformer is built from a configuration — FLUX.1-dev or Z-Image-Turbo at their
 * published sizes (random weights), or a pipeline / transformer folder (its weights, or weights drawn from
 * its config.json) — under the model and quantization flags; then `warmup` untimed and `steps` timed
 * forwards run on random inputs shaped as the pipeline makes them at res × res (latents res/8, 2×2 patches;
 * `text` caption tokens). One step = one transformer forward (FLUX.1's guidance is embedded; no CFG), done
 * when its output is read back (a GPU runs asynchronously).
 *
 * Pipeline mode: qd_generate_run on a pipeline folder (the embedded tiny-shapes model by default), whose
 * report gives text encoding, denoising and decoding seconds, each with its models' loading. */
#ifndef QD_PIPELINE_BENCH_H
#define QD_PIPELINE_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "qdit.h"

#define QD_BENCH_MAX_STEPS 1000
#define QD_BENCH_MAX_TEXT 4096

typedef struct qd_bench_report qd_bench_report;

/* Called after the load (r->n_done 0) and after each timed step, so long runs print as they go. */
typedef void (*qd_bench_progress)(void *user, const qd_bench_report *r);

typedef struct {
    /* "flux.1-dev" or "z-image-turbo" (published configurations, random weights), or a pipeline or
       transformer folder / cached hub repo id; NULL: the model flags' --model-path */
    const char *model;
    const char *device;          /* cpu (default), cuda, cuda:N */
    const char *precision;       /* activations: bf16 (default) or f32 */
    int64_t res;                 /* image side in pixels, a multiple of 16 (0: 512) */
    int steps;                   /* timed steps (0: 2) */
    int warmup;                  /* untimed steps before them */
    int64_t text;                /* caption tokens (0: 512) */
    bool random_weights;         /* a folder: weights drawn from its config.json (the named configs always draw) */
    uint64_t random_seed;        /* the draw's seed (0: 1) */
    const char *weights_on_disk; /* draw the weights into unlinked files here (models/random_weights.h) */
    bool svdq_diffusers_names;   /* --enable-svdquant on flux.1-dev: blocks under diffusers names (separate q, k, v
                                    layers, each with its own smoothing and low-rank branch) instead of Nunchaku's layout */
    qd_bench_progress progress;
    void *progress_user;
} qd_bench_args;

struct qd_bench_report {
    char model[4096];          /* as given (the named configuration or the path) */
    char cls[64];             /* FluxTransformer2DModel | ZImageTransformer2DModel */
    char quantization[32];    /* "none" or the method */
    bool random_weights;
    char device[32], precision[8], isa[32];
    int64_t res, text, image_tokens;
    double load_s;
    uint64_t linear_bytes;    /* what the linears hold as stored (qd_linear_stored_bytes summed) */
    int64_t linears;
    uint64_t rss_start, rss_loaded, rss_peak; /* bytes: before the load, after it, peak of the process */
    uint64_t gpu_used, gpu_total;             /* bytes, at the end (0 on the CPU) */
    uint64_t gpu_used_empty, gpu_used_loaded; /* in use with the backend made (context, workspaces) and after the load */
    char offload[16];                         /* "none", "layerwise" or "component" (--dit-layerwise-offload,
                                                 --dit-cpu-offload, or the auto rule: models/offload.h) */
    int offload_groups;                       /* the blocks (and, component offload, the rest) offloaded */
    uint64_t offload_host_bytes;              /* their weights in pinned host memory */
    uint64_t offload_device_bytes;            /* what offload holds on the GPU at the end: the two streaming
                                                 slots, or the whole-component buffer */
    uint64_t gpu_weights;                     /* GPU memory held by weights: what the load left in use (resident
                                                 layers, parameters) plus offload_device_bytes */
    int warmup, steps, n_done;
    double warmup_s[QD_BENCH_MAX_STEPS], step_s[QD_BENCH_MAX_STEPS];
    double median_s, mean_s, min_s;
    double rerun_max_diff; /* largest |output of a later step − output of the first| (same inputs every step: a
                              step replayed from a graph must equal the first, op-by-op one) */
    uint64_t output_hash;  /* FNV-1a (64-bit) of the last step's output bytes: two runs of one model and inputs that
                              must agree bit for bit (say, a backend switch on and off) compare this */
};

/* Step mode. Argument errors (QD_EINVAL) name the flag. */
qd_status qd_bench_step(const qd_options *o, const qd_bench_args *a, qd_bench_report *r);

typedef struct {
    char model[4096];
    char pipeline[64];        /* FluxPipeline | ZImagePipeline */
    char device[32], precision[8];
    int64_t res;
    int steps, warmup;
    double encode_s, denoise_s, loop_s, decode_s, total_s; /* the timed run (after `warmup` untimed ones) */
    double step_s;            /* loop_s / steps */
    uint64_t rss_peak;
} qd_bench_pipeline_report;

/* Pipeline mode: o->model_path (NULL: the embedded default model) at res (0: the default model's side, else
 * 1024), steps (0: the pipeline's default) and a fixed prompt; the image is written to a temporary file and
 * removed. */
qd_status qd_bench_pipeline(const qd_options *o, const qd_bench_args *a, qd_bench_pipeline_report *r);

/* The median of n values (sorted in a copy). */
double qd_bench_median(const double *v, int n);

#endif
