/* One Nunchaku layer made from a dense weight — what `qdit convert svdquant` writes per linear
 * (formats.md §5.2–5.6, quant-sglang.md §4.9):
 *
 *   SVDQ W4A4   smooth[k] (1 without calibration, bf16), the top-`rank` SVD of W·diag(smooth) as
 *               up = bf16(U·√Σ) [N, r] and down = bf16(bf16(√Σ·Vᵀ) / smooth) [r, K] (stored unsmoothed,
 *               so the runtime applies it to the raw input, §5.3), and the residual
 *               R_s = (W − up·down)·diag(smooth) in 4 bits:
 *                 int4   per 64 inputs: wscale = bf16(amax/7) (0 → 1), q = RNE(R_s/wscale) ∈ [−8, 7];
 *                 nvfp4  s1 = bf16(amax(R_s)/(6·448)) per tensor (wtscale) or per fused shard (wcscales),
 *                        per 16 inputs: s2 = E4M3(amax_b/(6·s1)) (0 → 1), code = E2M1_RNE(R_s/s1/s2);
 *               N and K padded to 128 (zero codes, scale-like vectors padded with 1), rank to 16 (zeros).
 *               An int4 fc2 after a GELU (FLUX) runs unsigned with x + 0.171875 (§5.4): its stored bias
 *               is b − 0.171875·Σ_k q·wscale/smooth[k], which makes the shifted layer compute x·Wᵀ + b.
 *   AWQ W4A16   (FLUX modulation linears, §5.6) rows interleaved over C chunks, per 64 inputs
 *               wscale = bf16(amax/7), wzero = −bf16(7·wscale), q = RNE((w + 7·wscale)/wscale) ∈ [0, 15],
 *               group rows zero-padded to the converter's count, +1 added to the scale chunks' bias.
 *
 * A layer is quantized into its logical (unpacked) values first — what the tests compare with an
 * independent unpacking of the file — and packed into Nunchaku's MMA layouts (quant/packing.h) only
 * when put into the writer. Layers are deterministic: the SVD start block is drawn from `seed`. */
#ifndef QD_CONVERT_SVDQ_LAYER_H
#define QD_CONVERT_SVDQ_LAYER_H

#include <stdbool.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "qdit.h"

#define QD_SVDQ_MAX_SHARDS 4

typedef struct {
    bool nvfp4;
    int rank;                                 /* requested; stored padded to a multiple of 16 (0: no branch) */
    int n_shards;                             /* > 1: fused rows; nvfp4 then scales per shard (wcscales) */
    int64_t shard_rows[QD_SVDQ_MAX_SHARDS];
    bool after_gelu;                          /* int4 fc2 after GELU: unsigned activations, shifted bias */
    bool bias;                                /* write a bias (zeros when the source has none) */
    bool v1_names;                            /* smooth_factor / proj_down / proj_up (else smooth / lora_*) */
    uint64_t seed;
} qd_svdq_opts;

typedef struct {
    int64_t n, k, np, kp, rank; /* logical N, K; padded Np, Kp; stored rank */
    bool nvfp4, after_gelu, bias, v1_names, per_channel;
    /* logical values (row-major, padded sizes) */
    uint8_t *codes;     /* [np][kp] 4-bit codes, one per byte (int4: two's complement nibble) */
    uint16_t *wscales;  /* int4: bf16 [np][kp/64] */
    uint8_t *wscales8;  /* nvfp4: E4M3 [np][kp/16] */
    uint16_t *smooth;   /* bf16 [kp] */
    uint16_t *down;     /* bf16 [rank][kp] */
    uint16_t *up;       /* bf16 [np][rank] */
    uint16_t *bias_v;   /* bf16 [np] (NULL without a bias) */
    uint16_t *wcscales; /* bf16 [np] (nvfp4, fused) */
    uint16_t wtscale;   /* bf16 (nvfp4, single) */
    double rel_err;     /* ‖W − W_eff‖_F / ‖W‖_F, W_eff = q·scales/smooth + up·down */
} qd_svdq_layer;

/* The SVD seed `qdit convert svdquant` uses for a stored module (a hash of its name). */
uint64_t qd_svdq_layer_seed(const char *module);

/* w [n][k], bias [n] or NULL, smooth [k] (> 0) or NULL for ones. `name` names the layer in messages. */
qd_status qd_svdq_quantize(const char *name, const float *w, const float *bias, int64_t n, int64_t k, const float *smooth,
                           const qd_svdq_opts *o, qd_svdq_layer *out);
void qd_svdq_layer_free(qd_svdq_layer *l);

/* The layer's stored tensors `<module>.<name>` with their Nunchaku dtypes and shapes (no data needed:
 * n, k and the options decide them), then their packed bytes. */
qd_status qd_svdq_declare(qd_st_writer *w, const char *module, int64_t n, int64_t k, const qd_svdq_opts *o);
qd_status qd_svdq_put(qd_st_writer *w, const char *module, const qd_svdq_layer *l);
/* The effective dense weight W_eff [n][k] (logical, cropped) of a quantized layer, in double. */
qd_status qd_svdq_effective(const qd_svdq_layer *l, double *w_eff);

typedef struct {
    int64_t n, k, groups_padded;
    int chunks;
    uint8_t *codes;     /* [n][k] unsigned codes in STORED (interleaved) row order */
    uint16_t *wscales;  /* bf16 [groups_padded][n] */
    uint16_t *wzeros;   /* bf16 [groups_padded][n] */
    uint16_t *bias_v;   /* bf16 [n], stored order, +1 on the scale chunks */
    double rel_err;
} qd_awq_layer;

/* w [n][k] in the diffusers row order, bias [n] or NULL; n a multiple of 4·chunks, k of 64. */
qd_status qd_awq_quantize(const char *name, const float *w, const float *bias, int64_t n, int64_t k, int chunks, qd_awq_layer *out);
void qd_awq_layer_free(qd_awq_layer *l);
qd_status qd_awq_declare(qd_st_writer *w, const char *module, int64_t n, int64_t k);
qd_status qd_awq_put(qd_st_writer *w, const char *module, const qd_awq_layer *l);

#endif
