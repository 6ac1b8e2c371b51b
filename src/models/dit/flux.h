/* FLUX.1 transformer (FluxTransformer2DModel), ../shared/spec/models.md §2: 19 double-stream blocks over
 * [text, image], 38 single-stream blocks, AdaLN-Zero modulation, RMSNorm'd q/k with 3-axis RoPE, embedded
 * guidance. Every linear runs in its planned scheme (quant/plan.h), so every quantized family loads. */
#ifndef QD_MODELS_DIT_FLUX_H
#define QD_MODELS_DIT_FLUX_H

#include <jansson.h>

#include "models/model.h"

typedef struct qd_flux qd_flux;

typedef struct {
    int64_t in_channels, out_channels, num_layers, num_single_layers, head_dim, heads, joint_attention_dim,
        pooled_projection_dim, inner_dim;
    bool guidance_embeds;
    int axes_dims[3];
} qd_flux_config;

qd_status qd_flux_config_parse(const char *label, const json_t *cfg, qd_flux_config *c);

qd_status qd_flux_load(const qd_model_ctx *ctx, const qd_flux_config *c, qd_flux **out);
void qd_flux_free(qd_flux *m);

/* How this checkpoint stores the model's diffusers linears (models/layout.h): empty for diffusers names,
 * the Nunchaku legacy layout's fused and renamed layers otherwise. */
struct qd_layout;
qd_status qd_flux_layout(const qd_model_ctx *ctx, const qd_flux_config *c, struct qd_layout *out);

/* The arguments of diffusers' forward (timestep is σ, the model multiplies by 1000 itself): hidden
 * [B, N, in], encoder [B, T, joint], pooled [B, pooled], timestep/guidance [B] (host), img_ids [N, 3],
 * txt_ids [T, 3] (host). Output [B, N, out] in the context's activation dtype. */
typedef struct {
    const qd_tensor *hidden, *encoder, *pooled;
    const float *timestep, *guidance;
    const float *img_ids, *txt_ids;
} qd_flux_inputs;

qd_status qd_flux_forward(qd_flux *m, const qd_flux_inputs *in, qd_tensor *out);

/* After the last step for a while (--dit-cpu-offload, --dit-layerwise-offload): the weights back in host memory
 * only, the device buffers and recorded steps freed; the next forward uploads again. No-op without offload. */
qd_status qd_flux_offload_end(qd_flux *m);

#endif
