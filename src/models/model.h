/* What every model shares: the context a model is loaded in (backend, checkpoint, quantization,
 * activation dtype), binding its linears and loading its small parameters by diffusers name, and the
 * host-side tables (sinusoidal timestep embeddings, RoPE angles) that models.md §1 defines exactly. */
#ifndef QD_MODELS_MODEL_H
#define QD_MODELS_MODEL_H

#include <jansson.h>

#include "backend/backend.h"
#include "io/ckpt.h"
#include "quant/config.h"
#include "quant/linear.h"

/* How scalar conditioning (timestep, guidance) is rounded before the model's ×1000 (models.md §11.2).
 * diffusers casts it to the activation dtype and multiplies in that dtype, so a bf16 run embeds
 * bf16(bf16(σ)·1000): the default, to match diffusers' own bf16 runs. EXACT keeps f32 (to compare a
 * bf16 run's compute with an f32 reference); BF16 rounds even with f32 activations. */
typedef enum { QD_SCALARS_AS_ACTIVATIONS = 0, QD_SCALARS_EXACT, QD_SCALARS_BF16 } qd_scalar_rounding;

/* Where a transformer's weights live between steps (models/offload.h; --dit-layerwise-offload, --dit-cpu-offload):
 * resident on the device; streamed block by block from host memory; or kept in host memory and uploaded whole
 * for the steps. */
typedef enum { QD_OFFLOAD_MODE_NONE = 0, QD_OFFLOAD_MODE_LAYERWISE, QD_OFFLOAD_MODE_COMPONENT } qd_offload_mode;

/* Called with each linear's input just before the linear runs (calibration records input amax per layer,
 * convert/calibrate.c); off, and free, when NULL. */
typedef void (*qd_linear_observer)(void *user, qd_backend *be, const qd_linear *l, const qd_tensor *x);

/* What a model's linears hold as stored (benchmarks): qd_model_prepare adds each layer it prepares. */
typedef struct {
    uint64_t bytes; /* qd_linear_stored_bytes summed */
    int64_t layers;
} qd_linear_tally;

typedef struct {
    qd_backend *backend;
    const qd_ckpt *ck;
    const qd_quant_config *quant;
    qd_dtype act; /* activation dtype: F32 (reference precision) or BF16 */
    qd_scalar_rounding scalars;
    bool random_weights;  /* no checkpoint (ck NULL): weights drawn in memory (models/random_weights.h) */
    bool reference_linears; /* every linear runs as its f32 reference: W and b as qd_linear_dequantize and
                               qd_linear_bias_f32 give them, activations not quantized (forward --no-act-quant) */
    uint64_t random_seed;
    bool random_nunchaku; /* random weights: FLUX block layers under Nunchaku's names and fused layout, as the
                             svdq-int4_r32 files have them (qd_random_has) */
    qd_linear_observer observe; /* NULL: no observer */
    void *observe_user;
    qd_linear_tally *tally; /* NULL: not counted */
    qd_offload_mode offload; /* transformers: where their blocks' weights live (models/offload.h) */
    uint64_t offload_budget; /* layerwise: device bytes the blocks may keep resident, slots included (0: none) */
} qd_model_ctx;

/* A scalar conditioning value (σ or guidance) as the model's ×1000 embedder sees it. */
float qd_model_scalar_x1000(const qd_model_ctx *m, float v);

/* Bind the linear `name` from the checkpoint, or draw it (random weights; in/out give the shape), with no
 * shape check and no backend preparation: for model code that adjusts a layer before preparing it. */
qd_status qd_model_bind(const qd_model_ctx *m, const char *name, int64_t in, int64_t out, qd_linear *l);
/* Bind the linear `name` (its module prefix) and check its shape when `in`/`out` are > 0. */
qd_status qd_model_linear(const qd_model_ctx *m, const char *name, int64_t in, int64_t out, qd_linear *l);
/* The n projections `names` of one input (FLUX's to_q, to_k, to_v), each `in` → outs[i]. Where the backend asks
 * for fused projections (backend ops' fuse_projections) and the parts can be joined exactly (same scheme, activations
 * quantized per call or not at all, no per-part static scale or smoothing), *fused gets one prepared linear of their
 * rows in order (fused->n_shards = n) and parts are left empty; otherwise fused is left empty and each part is
 * bound and prepared as qd_model_linear does. */
qd_status qd_model_projections(const qd_model_ctx *m, const char *const *names, int n, int64_t in, const int64_t *outs, const char *fused_name,
                               qd_linear *parts, qd_linear *fused);
/* Make a bound linear ready to run: its f32 reference when the context asks for it, then the backend's
 * preparation. Frees l on failure. */
qd_status qd_model_prepare(const qd_model_ctx *m, qd_linear *l);
/* A small parameter (norm weights, biases, tables) as an F32 backend tensor of the expected shape. */
qd_status qd_model_param(const qd_model_ctx *m, const char *name, int rank, const int64_t *shape, qd_tensor *t);
/* A large lookup table (token embeddings) kept in its stored dtype when that is BF16 or F16 — half the
 * memory of F32 for a 150k-token vocabulary, and exact either way, since lookups only copy rows. Random
 * weights draw it directly as BF16 (qd_random_table_bf16). */
qd_status qd_model_table(const qd_model_ctx *m, const char *name, int64_t rows, int64_t cols, qd_tensor *t);
/* Does the checkpoint hold `name`? */
bool qd_model_has(const qd_model_ctx *m, const char *name);

/* Config lookups with defaults; a present key of the wrong type is an error naming it. */
qd_status qd_config_int(const char *label, const json_t *cfg, const char *key, int64_t def, int64_t *out);
qd_status qd_config_float(const char *label, const json_t *cfg, const char *key, double def, double *out);
qd_status qd_config_bool(const char *label, const json_t *cfg, const char *key, bool def, bool *out);
/* A size in 1..max (def < 0: the key is required), so products of sizes cannot overflow. */
qd_status qd_config_size(const char *label, const json_t *cfg, const char *key, int64_t def, int64_t max, int64_t *out);
/* A norm epsilon: finite, in (0, 1). */
qd_status qd_config_eps(const char *label, const json_t *cfg, const char *key, double def, double *out);

/* get_timestep_embedding (models.md §1.1): [cos | sin] when flip_sin_to_cos, freq_i =
 * exp(−ln(10000)·i/(half − shift)), in f32. out is [n, dim]. */
void qd_timestep_embedding(const float *t, int n, int dim, bool flip_sin_to_cos, float downscale_freq_shift, float scale,
                           float *out);

/* How a model computes its RoPE angles (models.md §1.2, §11.4). */
typedef enum {
    QD_ROPE_ANGLES_F32,      /* inv_freq and pos·inv_freq in f32 (Qwen-Image, HunyuanVideo) */
    QD_ROPE_ANGLES_F64,      /* angles and cos/sin in float64, cast to f32 (FLUX.1, FLUX.2, Wan) */
    QD_ROPE_ANGLES_F64_TO_F32 /* angles in float64 cast to f32, then polar in f32 (Z-Image) */
} qd_rope_angles;

/* RoPE tables for multi-axis positions: ids [n, axes] (positions as floats), axis a takes dims[a] of the
 * head dim, angle = pos·θ^(−2j/d); cos/sin [n, Σdims/2] in f32, axes concatenated in order. */
void qd_rope_table(const float *ids, int64_t n, int axes, const int *dims, double theta, qd_rope_angles mode,
                   float *cos_out, float *sin_out);

#endif
