/* Z-Image transformer (ZImageTransformer2DModel), ../shared/spec/models.md §3: single-stream blocks with
 * sandwich RMSNorms and tanh-gated, scale-only modulation; image tokens refined by modulated
 * noise_refiner blocks and caption tokens by unmodulated context_refiner blocks, then joined as
 * [image, caption] for the main layers; 3-axis RoPE with θ from the config; SwiGLU FFN. */
#ifndef QD_MODELS_DIT_ZIMAGE_H
#define QD_MODELS_DIT_ZIMAGE_H

#include <jansson.h>

#include "models/model.h"

typedef struct qd_zimage qd_zimage;

typedef struct {
    int64_t dim, heads, kv_heads, head_dim, layers, refiner_layers, in_channels, cap_feat_dim, patch, f_patch, ffn_hidden,
        adaln_dim;
    double norm_eps, rope_theta, t_scale;
    int axes_dims[3];
} qd_zimage_config;

qd_status qd_zimage_config_parse(const char *label, const json_t *cfg, qd_zimage_config *c);
qd_status qd_zimage_load(const qd_model_ctx *ctx, const qd_zimage_config *c, qd_zimage **out);
void qd_zimage_free(qd_zimage *m);

/* How this checkpoint stores the model's diffusers linears (models/layout.h): Nunchaku's fused blocks
 * (to_qkv, net.0.proj = [w3; w1], net.2 = w2) and padded to_out.0. */
struct qd_layout;
qd_status qd_zimage_layout(const qd_model_ctx *ctx, const qd_zimage_config *c, struct qd_layout *out);

/* One latent x [C, F, H, W] (F = 1), t (the model multiplies by t_scale), caption features [L, cap]
 * (host f32, the valid tokens only). Output [C, F, H, W] in the activation dtype. */
qd_status qd_zimage_forward(qd_zimage *m, const qd_tensor *x, float t, const qd_tensor *cap, qd_tensor *out);

/* After the last step for a while (--dit-cpu-offload, --dit-layerwise-offload): the weights back in host memory
 * only, the device buffers and recorded steps freed; the next forward uploads again. No-op without offload. */
qd_status qd_zimage_offload_end(qd_zimage *m);

#endif
