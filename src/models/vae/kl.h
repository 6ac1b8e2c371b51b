/* AutoencoderKL decoder (FLUX / Z-Image / SD configuration), ../shared/spec/models.md §2.6: conv_in, a mid
 * block (resnet, single-head spatial attention, resnet), up blocks of ResnetBlock2D with nearest-2× +
 * conv upsamplers, GroupNorm, SiLU, conv_out. decode() takes the already un-scaled latent
 * (z = latents/scaling_factor + shift_factor is the pipeline's job). */
#ifndef QD_MODELS_VAE_KL_H
#define QD_MODELS_VAE_KL_H

#include <jansson.h>

#include "models/model.h"

typedef struct qd_vae_kl qd_vae_kl;

typedef struct {
    int64_t latent_channels, out_channels, groups, layers_per_block, n_blocks;
    int64_t block_out[8];
    bool mid_attention;
    double scaling_factor, shift_factor;
    int64_t sample_size; /* image tile side for tiled decoding (config "sample_size"; first entry of a list) */
} qd_vae_kl_config;

qd_status qd_vae_kl_config_parse(const char *label, const json_t *cfg, qd_vae_kl_config *c);
qd_status qd_vae_kl_load(const qd_model_ctx *ctx, const qd_vae_kl_config *c, qd_vae_kl **out);
void qd_vae_kl_free(qd_vae_kl *m);

/* z [B, latent, h, w] → image [B, out, 2^(n−1)·h, 2^(n−1)·w] in the activation dtype (values ≈ [−1, 1]). */
qd_status qd_vae_kl_decode(qd_vae_kl *m, const qd_tensor *z, qd_tensor *out);

/* The same in tiles, as diffusers' enable_tiling() does, so memory is bounded by one tile whatever the
 * image size: latent tiles of sample_size/2^(n−1) with 25% overlap, each decoded alone, then the
 * overlaps blended linearly (above, then left) and each tile cropped to its stride. Not identical to
 * decode(): the mid attention sees one tile. z no larger than one tile decodes untiled. */
qd_status qd_vae_kl_decode_tiled(qd_vae_kl *m, const qd_tensor *z, qd_tensor *out);

#endif
