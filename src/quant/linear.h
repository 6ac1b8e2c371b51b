/* qd_linear — one logical linear layer, y = x·Wᵀ + b, in the form its scheme keeps it: the weights
 * stay quantized at their stored size, normalised at load to one canonical layout per scheme so that
 * every backend reads the same thing (DESIGN.md "Core abstractions"):
 *
 *   scheme        weight                         scale                    scale2 / extra
 *   dense         BF16/F16/F32 [N,K]             —                        —
 *   fp8           F8_E4M3 [N,K]                  F32 [1] | [N] | [N/bn,K/bk]   input_scale F32 [1] (static)
 *   nvfp4         U8 [N,K/2] E2M1, lo-first      F8_E4M3 [N,K/16] linear  scale2 F32 [1] or [N] (global);
 *                                                                         smooth = pre_quant_scale [K] (x·s)
 *   mxfp4         U8 [N,K/2] E2M1, lo-first      U8 E8M0 [N,K/32]         scale2 F32 [N,K/512] (dual-scale);
 *                                                                         smooth = mul_scale [K] (x·s)
 *   mxfp8         F8_E4M3 [N,K]                  U8 E8M0 [N,K/32]         —
 *   svdq_int4     U8 [N,K/2] int4, lo-first      BF16/F16 [N,K/64]        smooth [K], lora_down [r,K],
 *   svdq_nvfp4    U8 [N,K/2] E2M1, lo-first      F8_E4M3 [N,K/16]         lora_up [N,r]; alpha = wtscale,
 *                                                                         scale2 = wcscales [N] (optional)
 *   awq_w4a16     U8 [N,K/2] uint4, lo-first     BF16/F16 [N,K/64]        zeros [N,K/64] (W = q·s + z)
 *   int8          I8 [N,K]                       F32 [N] or [N,1]         W8A8 static: input_scale/offset,
 *                                                                         scale2 = deq_scale [N], zeros =
 *                                                                         quant_bias I32 [N]; dynamic: zeros =
 *                                                                         weight_offset
 *   int4          I8 [N,K], one value per byte   F32 [N] or [N,K/g]       —
 *
 * Views point into the mapped checkpoint when the stored bytes are already canonical, or own a copy
 * when load had to reorder them (unswizzle, nibble swap, Nunchaku's tile permutation, fused shards). */
#ifndef QD_QUANT_LINEAR_H
#define QD_QUANT_LINEAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "qdit.h"

typedef struct {
    qd_dtype dtype;
    int rank;
    int64_t shape[4];
    const void *data; /* NULL: absent */
    void *owned;      /* set when the view owns its bytes */
    size_t owned_map; /* > 0: `owned` is a file mapping of this many bytes (munmap, not free) */
    bool file_mapped; /* data lies in a checkpoint's read-only file mapping (pages can be given back) */
} qd_view;

typedef enum {
    QD_SCHEME_DENSE,
    QD_SCHEME_FP8,
    QD_SCHEME_NVFP4,
    QD_SCHEME_MXFP4,
    QD_SCHEME_MXFP8,
    QD_SCHEME_SVDQ_INT4,
    QD_SCHEME_SVDQ_NVFP4,
    QD_SCHEME_AWQ_W4A16,
    QD_SCHEME_INT8,
    QD_SCHEME_INT4,
    QD_SCHEME_COUNT
} qd_scheme_id;

/* How activations are quantized when the layer runs. */
typedef enum {
    QD_ACT_NONE,           /* full precision (dense, weight-only schemes) */
    QD_ACT_DYNAMIC_TOKEN,  /* one scale per row, computed per call */
    QD_ACT_DYNAMIC_TENSOR, /* one scale per call */
    QD_ACT_STATIC_TENSOR,  /* input_scale (and input_offset) from the checkpoint */
    QD_ACT_DYNAMIC_GROUP,  /* one scale per row per `act_group` elements along K */
} qd_act_mode;

/* What a linear applies to its own output, after the bias (an epilogue): nothing by default, or an
 * activation the model would otherwise run as a separate op right after the layer (FLUX's GELU-tanh MLP
 * inputs, Z-Image's SiLU w1). Every backend's linear applies it; backend.h's qd_linear_out_kind maps it to
 * the activation op's kind. */
typedef enum {
    QD_OUT_ACT_NONE,
    QD_OUT_ACT_GELU_TANH,
    QD_OUT_ACT_SILU,
} qd_out_act;

typedef struct qd_linear {
    char *name;             /* runtime name, e.g. "transformer_blocks.0.attn.to_qkv" */
    int64_t out_features;   /* N */
    int64_t in_features;    /* K */
    qd_scheme_id scheme;
    char scheme_name[32];   /* "bf16", "fp8_tensor", "fp8_channel", "fp8_block", "nvfp4", … */
    qd_act_mode act;
    qd_out_act out_act;     /* activation of the output (set by the model at load; NONE for a plain layer) */
    int act_group;          /* group along K for QD_ACT_DYNAMIC_GROUP */
    int block_n, block_k;   /* fp8 block scales; group size along K for 4-bit schemes (block_k) */
    bool act_unsigned;      /* SVDQuant int4: activations after GELU quantized unsigned */
    float alpha;            /* a per-layer scalar folded in by load (e.g. SVDQuant wtscale), 1 if none */
    qd_view weight, scale, scale2, input_scale, input_offset, bias;
    qd_view smooth, lora_down, lora_up, zeros;
    int n_shards;           /* > 1 for fused layers (to_qkv = to_q, to_k, to_v) */
    int64_t shard_out[4];   /* output rows of each shard */
    /* a backend's prepared form of the weights (repacked for its kernels, or uploaded), made by its
       prepare_linear op or on first use; freed with the layer */
    void *prepared;
    void (*prepared_free)(void *prepared);
    const void *prepared_for; /* the backend that made it */
    uint64_t device_bytes;    /* what the prepared form holds in the backend's device memory (0: host memory) */
    /* the prepared form replaced the stored weight and scale (qd_linear_release_stored): their data is
       NULL (dtype and shape kept), and the reference paths below refuse the layer */
    bool stored_released;
} qd_linear;

const char *qd_scheme_family_name(qd_scheme_id s);

/* Element (r, c) of a 2-D view (a rank-1 view is indexed by r; a one-element view gives its value
 * for every r, c) as f32, for any dtype with an f32 decode. */
float qd_view_get(const qd_view *v, int64_t r, int64_t c);
/* Element i of the view in row-major order, as f32. */
float qd_view_get_flat(const qd_view *v, int64_t i);
int64_t qd_view_elements(const qd_view *v);
/* The bytes a layer holds in its stored form: every present view (weight, scales, bias, smoothing,
 * low-rank factors, zeros) at its dtype's storage size — the weights' quantized size, what benchmarks
 * report. 0 for a layer whose stored form was released. */
uint64_t qd_linear_stored_bytes(const qd_linear *l);
void qd_view_free(qd_view *v);
/* Make v own its bytes: a copy of them when it points into memory something else owns or maps (a view that owns
 * its bytes, or an empty one, is left as it is). */
qd_status qd_view_own(qd_view *v);
void qd_linear_free(qd_linear *l);
/* Drop the stored weight and scale once a backend's prepared form holds the same values: owned copies
 * are freed, views into a mapped checkpoint are returned to the page cache (madvise), so a loaded model
 * keeps one copy of its weights (DESIGN.md "weights stay at their stored size"). Called by a backend's
 * prepare_linear, never by lazy first-use preparation, so tests can still compare against the stored form. */
void qd_linear_release_stored(qd_linear *l);

/* The reference: the effective W as f32 [N][K] (out must hold N·K floats), such that the layer computes
 * x·Wᵀ + b in full precision: the scheme's dequantization rule with any smoothing vector folded in
 * (pre_quant_scale / mul_scale multiply column k, SVDQuant's smooth divides it). Every fast path is
 * tested against this. */
qd_status qd_linear_dequantize(const qd_linear *l, float *out);
/* The layer's effective bias as f32 [N] (zeros when there is none): the stored bias plus what a stored form
 * moved out of it (msModelSlim's quant_bias/offset, SVDQuant's unsigned shift compensation). Those two
 * need the stored weight: on a layer whose stored form was released they give NaN (and log why). */
void qd_linear_bias_f32(const qd_linear *l, float *out);

#endif
