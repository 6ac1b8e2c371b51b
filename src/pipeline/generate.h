/* Text-to-image generation (`qdit generate`): the FLUX.1 (FluxPipeline) and Z-Image (ZImagePipeline)
 * pipelines of ../shared/spec/models.md §2.4–2.6 and §3.4, read from a diffusers folder's
 * model_index.json and scheduler config, with each component loaded under SGLang's model and
 * quantization flags (the transformer takes --quantization…; text encoders and VAE load as stored).
 *   1. tokenize (errors for prompts past the pipeline's limit: FLUX's T5 and Z-Image's Qwen3 take 512
 *      tokens; CLIP's 77 truncate silently, as diffusers does);
 *   2. encode, then free each text encoder;
 *   3. initial latents from PyTorch's CPU generator with the seed, exactly as diffusers draws them
 *      (bf16 for a FLUX bf16 run, f32 for Z-Image);
 *   4. scheduler sigmas (FLUX: dynamic shift, mu from the image token count; Z-Image: static shift), the
 *      denoising loop (FLUX: embedded guidance; Z-Image: 1 − σ as timestep, negated output, CFG when
 *      guidance > 0), then free the transformer;
 *   5. VAE decode of latents/scaling + shift, image as diffusers' image processor makes it
 *      (round((x/2 + 0.5).clamp(0, 1)·255)), written as an RGB PNG with the parameters in a text chunk. */
#ifndef QD_PIPELINE_GENERATE_H
#define QD_PIPELINE_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "models/model.h"
#include "qdit.h"

#define QD_GENERATE_MAX_SIDE 4096
#define QD_GENERATE_MAX_STEPS 1000

/* After each denoising step: step (1-based) of total, seconds since the loop began. */
typedef void (*qd_generate_progress)(void *user, int step, int total, double elapsed_s);

typedef struct {
    const char *prompt;
    const char *negative_prompt;  /* Z-Image with guidance > 0 only (NULL: "") */
    int64_t height, width;        /* 0: 1024 */
    int steps;                    /* 0: the pipeline's default (FLUX.1 28, Z-Image-Turbo 8) */
    double guidance;              /* < 0: the pipeline's default (FLUX.1 3.5, Z-Image-Turbo 0) */
    uint64_t seed;
    const char *output;           /* the PNG */
    const char *device;           /* cpu (default), cuda, cuda:N */
    const char *precision;        /* bf16 (default, as diffusers runs these models) or f32 */
    bool random_weights;          /* configs only: every component's weights drawn (benchmarks of full sizes) */
    uint64_t random_seed;         /* the draw's seed */
    qd_generate_progress progress;
    void *progress_user;
    qd_linear_observer observe;   /* sees every transformer linear's input (calibration); NULL: none */
    void *observe_user;
    bool no_image;                /* stop after denoising: no VAE decode, no PNG (output not needed) */
} qd_generate_args;

typedef struct {
    double encode_s, denoise_s, decode_s; /* each with its models' loading */
    double loop_s;                        /* the denoising steps alone (denoise_s less the transformer's load) */
    int steps;
    int64_t height, width;
} qd_generate_report;

qd_status qd_generate_run(const qd_options *o, const qd_generate_args *a, qd_generate_report *report);

/* The pieces with their own tests. */
/* torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed), dtype=bf16 ? bfloat16 : float32), as f32. */
qd_status qd_generate_noise(uint64_t seed, bool bf16, int64_t n, float *out);
/* FLUX's _pack_latents of one [C, h, w] latent into [(h/2)(w/2), 4C] tokens (feature c·4 + ph·2 + pw), and back. */
void qd_flux_pack_latents(const float *x, int64_t C, int64_t h, int64_t w, float *out);
void qd_flux_unpack_latents(const float *packed, int64_t C, int64_t h, int64_t w, float *out);
/* A decoded [3, h, w] image to interleaved RGB8 as diffusers' postprocess does (the denormalisation in
 * bf16 when the VAE ran in bf16). */
void qd_image_to_rgb8(const float *chw, int64_t h, int64_t w, bool bf16, uint8_t *rgb);

#endif
