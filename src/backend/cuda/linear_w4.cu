/* The 4-bit and MX schemes on the GPU: NVFP4, MXFP4 (with msModelSlim's dual scale), MXFP8, Nunchaku SVDQuant
 * (int4 and nvfp4, with its smoothing and low-rank branch) as W4A8 on FP8 tensor cores, and AWQ as W4A16.
 *
 * Hopper has no FP4 tensor cores, but every E2M1 value and every int4 value is exact in E4M3, so the weights can
 * run on FP8 matmuls (../shared/spec/peers.md §4.4). Per call, a layer's weights are expanded from their stored
 * 4-bit form into an E4M3 copy in scratch (one pass: 0.5 byte read, 1 byte written per weight) and cuBLASLt's FP8
 * matmul runs on it, with the activations quantized to E4M3 per token (smoothing folded into that pass) — the
 * same matmul, scales and epilogues as the FP8 schemes (linear.cu). The weights stay 4-bit in memory; the E4M3
 * copy lives for one matmul. At FLUX shapes (M = 4608) the expansion is a few percent of the matmul's time.
 *
 * What the E4M3 copy holds: each weight's dequantized value without its per-output-channel factor,
 *   v[n][k] = code · block_scale[n][k/g] (· dual[n][k/512] for dual-scale MXFP4),
 * multiplied by 2^−e[n], the power of two that brings the row's largest possible value (largest code magnitude
 * × largest block scale) to at most 448. 2^e[n] and the channel factor (NVFP4's global scale, SVDQuant's
 * wtscale·wcscales) go into the matmul's per-channel scale vector. Exactness:
 *   MXFP4 / MXFP8: code · 2^E is exact in E4M3 unless the block lies so far below the row's largest that it
 *          falls into E4M3's subnormals (more than ~2^6 below for E2M1): those round, RNE;
 *   NVFP4, SVDQuant: code · block_scale has up to 5–8 significant bits (E2M1 × E4M3, int4 × BF16): it rounds to
 *          E4M3's 4, a relative error ≤ 2^−4 per weight where it is not exact.
 * Against the checkpoint's W4A4 recipe (the CPU backend computes it exactly) this path quantizes the
 * activations to 8 bits instead of 4, so its error against the f32 reference is several times smaller than the
 * recipe's own; the op harness holds it to each scheme's bound against the f32 reference.
 *
 * SVDQuant: y = FP8(x/smooth)·W4ᵀ·α·wcs + bias + (x·Dᵀ)·Uᵀ; the low-rank branch runs as two small matmuls in the
 * factors' 16-bit type, the second accumulating into y. The unsigned-activation shift of int4 fc2 layers is not
 * needed (FP8 is signed): the effective bias (stored bias + the shift's compensation) is used instead.
 * AWQ (W = q·s + z) is weight-only: expanded to the activations' dtype and run as a dense matmul.
 *
 * A few rows (M ≤ 8: modulation GEMVs, CFG pairs) skip the expansion: a W4A16 GEMV (w4_gemv_kernel, laid out as
 * linear_gemv.cu's: 4 output rows per 128-thread block, 16-byte streaming loads (of the next chunk before the current
 * one is used, or with one row of x as each chunk starts and more blocks per SM), each activation loaded once for the
 * 4 rows, codes decoded two at a time through f16) reads the
 * stored weights once and dequantizes them exactly (QDIT_CUDA_W4_NO_GEMV=1 sends them through the expansion too). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/codec.h"
}
#include "backend/cuda/linear_internal.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/w4_codes.h"

bool qd_cuda_w4_covers(const qd_linear *l) {
    switch (l->scheme) {
    case QD_SCHEME_NVFP4:
    case QD_SCHEME_MXFP4:
    case QD_SCHEME_MXFP8:
    case QD_SCHEME_SVDQ_INT4:
    case QD_SCHEME_SVDQ_NVFP4:
    case QD_SCHEME_AWQ_W4A16: return true;
    default: return false;
    }
}

/* the code format of the stored weight */
enum { CODE_E2M1, CODE_INT4, CODE_UINT4, CODE_E4M3 };

static int code_kind(const qd_linear *l) {
    switch (l->scheme) {
    case QD_SCHEME_SVDQ_INT4: return CODE_INT4;
    case QD_SCHEME_AWQ_W4A16: return CODE_UINT4;
    case QD_SCHEME_MXFP8: return CODE_E4M3;
    default: return CODE_E2M1;
    }
}

static int group_of(const qd_linear *l) {
    switch (l->scheme) {
    case QD_SCHEME_NVFP4: return 16;
    case QD_SCHEME_MXFP4:
    case QD_SCHEME_MXFP8: return 32;
    default: return l->block_k;
    }
}

/* a block scale as f32, on the host (from the stored bytes) */
static float block_scale_host(qd_dtype t, const uint8_t *p, int64_t i) {
    switch (t) {
    case QD_DTYPE_F8_E4M3: return qd_e4m3_to_f32(p[i]);
    case QD_DTYPE_U8: return qd_e8m0_to_f32(p[i]);
    case QD_DTYPE_BF16: return qd_bf16_to_f32(((const uint16_t *)p)[i]);
    case QD_DTYPE_F16: return qd_f16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* SVDQuant's low-rank branch folded into the FP8 matmul along K: with u = U·2^t / vec[n] and v = (x·Dᵀ)·2^−t / sx[m],
 *   y = [q | hi(v) hi(v) lo(v) lo(v)]·[w8 | hi(u) lo(u) hi(u) lo(u)]ᵀ·sx[m]·vec[n],  hi(a) = e4m3(a), lo(a) = e4m3(a − hi(a)),
 * so that the tail gives (hi(v) + lo(v))·(hi(u) + lo(u)): v and u each to ~2^−8 relative, about the BF16 rounding of
 * the branch's intermediate that Nunchaku itself makes (the op case svdq_int4_branch, where the branch carries ~97% of
 * y's energy: 4–8e-5 NMSE on an H200). The branch costs 4R more columns of K (4% at K = 3072; 3R without lo·lo where
 * that keeps K a multiple of 128, cuBLASLt's FP8 K tile; QDIT_CUDA_SVDQ_TERMS=3|4 chooses) instead of a second matmul
 * that writes y and an FP8 matmul that reads it back; the gate, bias and residual of linear_fused then apply to it as
 * to the rest. t puts the largest |U/vec| at 448; the per-token scale sx covers v's values as well as
 * x's (E4M3 keeps its 3 mantissa bits under any power-of-two scale). Returns t, or INT32_MIN where the branch stays a
 * 16-bit side matmul: QDIT_CUDA_SVDQ_LR16=1, R or K not a multiple of 32, a row with a nonzero U but no finite
 * channel scale. */
static int svdq_fold_exp(const qd_linear *l, const float *vec, int64_t rank) {
    const int64_t n = l->out_features, k = l->in_features;
    if (getenv("QDIT_CUDA_SVDQ_LR16") || rank % 32 || k % 32) return INT32_MIN;
    float ratio = 0.0f;
    for (int64_t r = 0; r < n; r++) {
        float umax = 0.0f;
        for (int64_t j = 0; j < rank; j++) umax = fmaxf(umax, fabsf(qd_view_get(&l->lora_up, r, j)));
        if (!isfinite(umax)) return INT32_MIN;
        if (umax == 0.0f) continue;
        const float v = fabsf(vec[r]);
        if (!(v > 0.0f) || !isfinite(v) || !isfinite(umax / v)) return INT32_MIN;
        ratio = fmaxf(ratio, umax / v);
    }
    if (ratio == 0.0f) return 0;
    int t = (int)floorf(log2f(448.0f / ratio));
    while (t > -120 && ratio * ldexpf(1.0f, t) > 448.0f) t--; /* log2f may round */
    return t < -120 ? -120 : t > 120 ? 120 : t;
}

qd_status qd_cuda_w4_prepare(qd_linear *l, cuda_linear *d, cuda_arena *a) {
    const char *name = l->name ? l->name : "linear";
    const int64_t n = l->out_features, k = l->in_features;
    const int g = group_of(l), kind = code_kind(l);
    const qd_dtype st = l->scale.dtype;
    const bool st_ok = st == QD_DTYPE_F8_E4M3 || st == QD_DTYPE_U8 || st == QD_DTYPE_BF16 || st == QD_DTYPE_F16;
    if (g <= 0 || k % g || k % 16 || !l->scale.data || !st_ok || qd_view_elements(&l->scale) != n * (k / g))
        return qd_fail(QD_EINVAL, "layer '%s': a %s layer needs K (%lld) a multiple of its group %d and of 16, and block scales [%lld, %lld] "
                       "(E4M3, E8M0, BF16 or F16)", name, l->scheme_name, (long long)k, g, (long long)n, (long long)(k / (g > 0 ? g : 1)));
    const bool svdq = l->scheme == QD_SCHEME_SVDQ_INT4 || l->scheme == QD_SCHEME_SVDQ_NVFP4;
    const bool dual = l->scheme == QD_SCHEME_MXFP4 && l->scale2.data;
    if (dual && (k % 512 || qd_view_elements(&l->scale2) != n * (k / 512)))
        return qd_fail(QD_EINVAL, "layer '%s': dual-scale MXFP4 needs K %% 512 == 0 and a [%lld, %lld] second scale", name, (long long)n,
                       (long long)(k / 512));
    if (svdq && (!l->smooth.data || qd_view_elements(&l->smooth) != k))
        return qd_fail(QD_EINVAL, "layer '%s': an SVDQuant layer needs its smoothing vector of %lld values", name, (long long)k);
    if (l->scheme == QD_SCHEME_AWQ_W4A16 && (!l->zeros.data || l->zeros.dtype != st || qd_view_elements(&l->zeros) != n * (k / g)))
        return qd_fail(QD_EINVAL, "layer '%s': an AWQ layer needs zeros [%lld, %lld] in its scales' dtype", name, (long long)n, (long long)(k / g));
    const int64_t rank = svdq && l->lora_down.data ? l->lora_down.shape[0] : 0;
    if (rank && (!l->lora_up.data || l->lora_down.dtype != l->lora_up.dtype || qd_view_elements(&l->lora_down) != rank * k ||
                 qd_view_elements(&l->lora_up) != n * rank || (l->lora_down.dtype != QD_DTYPE_BF16 && l->lora_down.dtype != QD_DTYPE_F16)))
        return qd_fail(QD_EINVAL, "layer '%s': SVDQuant low-rank factors must be BF16/F16 [%lld, %lld] and [%lld, %lld]", name, (long long)rank,
                       (long long)k, (long long)n, (long long)rank);
    if (g != 16 && g != 32 && g != 64 && g != 128)
        return qd_fail(QD_EINVAL, "layer '%s': %s group size %d: the GPU kernels take groups of 16, 32, 64 or 128", name, l->scheme_name, g);
    if ((n + 15) / 16 * 16 > 65535) return qd_fail(QD_EINVAL, "layer '%s': %lld output features: the GPU expansion takes at most 65520", name, (long long)n);
    d->group = g;
    d->wblock_t = st;
    d->kp = k;
    d->np = (n + 15) / 16 * 16;
    d->rank = rank;
    d->lora_t = rank ? l->lora_down.dtype : QD_DTYPE_BF16;
    const int64_t np = d->np, kg = k / g;
    /* per row: the channel factor and the power of two that keeps the expanded row within E4M3's ±448 */
    const float code_max = kind == CODE_E4M3 ? 448.0f : kind == CODE_INT4 ? 8.0f : kind == CODE_UINT4 ? 15.0f : 6.0f;
    int *re = (int *)calloc((size_t)np, sizeof(int));
    float *vec = (float *)calloc((size_t)np, sizeof(float));
    if (!re || !vec) {
        free(re), free(vec);
        return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its row scales", name);
    }
    const uint8_t *sp = (const uint8_t *)l->scale.data;
    for (int64_t r = 0; r < n; r++) {
        float smax = 0.0f;
        for (int64_t j = 0; j < kg; j++) {
            float v = fabsf(block_scale_host(st, sp, r * kg + j));
            if (dual) v *= fabsf(qd_view_get(&l->scale2, r, j * g / 512));
            smax = fmaxf(smax, v);
        }
        int e = 0;
        if (smax > 0.0f && isfinite(smax)) e = (int)ceilf(log2f(code_max * smax / 448.0f));
        while (e > -126 && code_max * smax * ldexpf(1.0f, -(e - 1)) <= 448.0f && smax > 0.0f) e--; /* log2f may round up */
        while (code_max * smax * ldexpf(1.0f, -e) > 448.0f && e < 126) e++;
        e = e < -126 ? -126 : e; /* 2^−e stays a normal f32 (the kernel builds it from its exponent bits) */
        re[r] = e;
        float ch = 1.0f;
        if (l->scheme == QD_SCHEME_NVFP4) ch = qd_view_get(&l->scale2, r, 0);
        if (svdq) ch = l->alpha * (l->scale2.data ? qd_view_get(&l->scale2, r, 0) : 1.0f);
        vec[r] = ch * ldexpf(1.0f, e);
    }
    const int t = rank ? svdq_fold_exp(l, vec, rank) : INT32_MIN;
    /* 4 terms (lo·lo too) where that keeps K a multiple of 128, cuBLASLt's FP8 K tile; QDIT_CUDA_SVDQ_TERMS overrides */
    const char *terms_env = getenv("QDIT_CUDA_SVDQ_TERMS");
    const int terms = terms_env ? (atoi(terms_env) == 4 ? 4 : 3) : (k + 4 * rank) % 128 == 0 ? 4 : 3;
    d->lr_fold = t != INT32_MIN ? terms * rank : 0;
    d->lr_mult = d->lr_fold ? ldexpf(1.0f, -t) : 0.0f;
    d->kp = k + d->lr_fold;
    const size_t wbytes = kind == CODE_E4M3 ? (size_t)(n * k) : (size_t)(n * k / 2);
    const size_t sbytes = (size_t)(n * kg) * (size_t)(qd_dtype_bits(st) / 8);
    size_t o_w = qd_cuda_arena_add(a, l->weight.data, wbytes), o_s = qd_cuda_arena_add(a, l->scale.data, sbytes);
    size_t o_e = qd_cuda_arena_add(a, NULL, sizeof(int) * (size_t)np), o_v = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)np);
    size_t o_b = SIZE_MAX, o_b16 = SIZE_MAX, o_d = SIZE_MAX, o_sm = SIZE_MAX, o_ld = SIZE_MAX, o_lu = SIZE_MAX, o_z = SIZE_MAX;
    if (dual) o_d = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)(n * (k / 512)));
    if (l->smooth.data) o_sm = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)k);
    if (rank) {
        o_ld = qd_cuda_arena_add(a, l->lora_down.data, 2 * (size_t)(rank * k));
        o_lu = qd_cuda_arena_add(a, NULL, d->lr_fold ? (size_t)(np * d->lr_fold) : 2 * (size_t)(n * rank)); /* E4M3 [Np, 3R] or as stored */
    }
    if (l->scheme == QD_SCHEME_AWQ_W4A16) o_z = qd_cuda_arena_add(a, l->zeros.data, sbytes);
    bool has_bias = l->bias.data != NULL || (l->scheme == QD_SCHEME_SVDQ_INT4 && l->act_unsigned);
    if (has_bias) o_b = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)np), o_b16 = qd_cuda_arena_add(a, NULL, 2 * (size_t)np);
    if (o_w == SIZE_MAX || o_s == SIZE_MAX || o_e == SIZE_MAX || o_v == SIZE_MAX || (dual && o_d == SIZE_MAX) || (l->smooth.data && o_sm == SIZE_MAX) ||
        (rank && (o_ld == SIZE_MAX || o_lu == SIZE_MAX)) || (l->scheme == QD_SCHEME_AWQ_W4A16 && o_z == SIZE_MAX) ||
        (has_bias && (o_b == SIZE_MAX || o_b16 == SIZE_MAX))) {
        free(re), free(vec);
        return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its staging copy", name);
    }
    memcpy(qd_cuda_arena_at(a, o_e), re, sizeof(int) * (size_t)np);
    memcpy(qd_cuda_arena_at(a, o_v), vec, sizeof(float) * (size_t)np);
    if (rank && d->lr_fold) {
        uint8_t *u8 = (uint8_t *)qd_cuda_arena_at(a, o_lu);
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < rank; j++) {
                const float u = qd_view_get(&l->lora_up, r, j), v = u == 0.0f ? 0.0f : u * ldexpf(1.0f, t) / vec[r];
                const uint8_t hi = qd_f32_to_e4m3(v), lo = qd_f32_to_e4m3(v - qd_e4m3_to_f32(hi));
                uint8_t *row = u8 + r * d->lr_fold;
                row[j] = hi, row[rank + j] = lo, row[2 * rank + j] = hi;
                if (d->lr_fold == 4 * rank) row[3 * rank + j] = lo;
            }
    } else if (rank)
        memcpy(qd_cuda_arena_at(a, o_lu), l->lora_up.data, 2 * (size_t)(n * rank));
    free(re), free(vec);
    float *dl = dual ? (float *)qd_cuda_arena_at(a, o_d) : NULL;
    if (dual)
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < k / 512; j++) dl[r * (k / 512) + j] = qd_view_get(&l->scale2, r, j);
    if (l->smooth.data) {
        float *sm = (float *)qd_cuda_arena_at(a, o_sm);
        for (int64_t j = 0; j < k; j++) {
            const float v = qd_view_get_flat(&l->smooth, j);
            sm[j] = !svdq ? v : v != 0.0f ? 1.0f / v : 0.0f; /* SVDQuant divides by smooth; zero marks a padded column */
        }
    }
    if (has_bias) {
        float *hb = (float *)qd_cuda_arena_at(a, o_b);
        qd_linear_bias_f32(l, hb);
        uint16_t *b16 = (uint16_t *)qd_cuda_arena_at(a, o_b16);
        for (int64_t i = 0; i < np; i++) b16[i] = qd_f32_to_bf16(hb[i]);
    }
    d->w = QD_ARENA_PTR(o_w), d->wblock = QD_ARENA_PTR(o_s), d->row_exp = (int *)QD_ARENA_PTR(o_e), d->wscale_vec = (float *)QD_ARENA_PTR(o_v);
    d->dual = (float *)QD_ARENA_PTR(o_d), d->smooth = (float *)QD_ARENA_PTR(o_sm), d->lora_down = QD_ARENA_PTR(o_ld);
    if (d->lr_fold) d->lora_up8 = QD_ARENA_PTR(o_lu);
    else d->lora_up = QD_ARENA_PTR(o_lu);
    d->awq_zeros = QD_ARENA_PTR(o_z), d->bias = (float *)QD_ARENA_PTR(o_b), d->bias16 = QD_ARENA_PTR(o_b16);
    d->wt = kind == CODE_E4M3 ? QD_DTYPE_F8_E4M3 : QD_DTYPE_U8;
    return QD_OK;
}

/* ------------------------------------------------------------------------------------------------ kernels -- */

/* a block scale's stored bits (E4M3 / E8M0: one byte, BF16 / F16: two), and their value as f32 */
__device__ __forceinline__ uint32_t scale_bits(int t, const void *p, int64_t i) {
    return t == QD_DTYPE_F8_E4M3 || t == QD_DTYPE_U8 ? ((const uint8_t *)p)[i] : ((const uint16_t *)p)[i];
}

__device__ __forceinline__ float scale_value(int t, uint32_t b) {
    switch (t) {
    case QD_DTYPE_F8_E4M3: {
        __nv_fp8_e4m3 v;
        v.__x = (uint8_t)b;
        return (float)v;
    }
    case QD_DTYPE_U8: return b == 255 ? __int_as_float(0x7fc00000) : b == 0 ? __int_as_float(0x00400000) : __int_as_float((int)b << 23);
    case QD_DTYPE_BF16: return __uint_as_float(b << 16);
    default: return __half2float(__ushort_as_half((unsigned short)b)); /* F16 */
    }
}

/* block scale i (E4M3, E8M0, BF16 or F16: qd_cuda_w4_prepare admits no other) */
__device__ __forceinline__ float block_scale(int t, const void *p, int64_t i) { return scale_value(t, scale_bits(t, p, i)); }

__device__ __forceinline__ float decode_code(int kind, uint32_t c) {
    switch (kind) {
    case CODE_E2M1: {
        /* s e1 e0 m: e = 0 gives m·0.5, else (1 + m/2)·2^(e−1) — built from the bits (a lookup table in constant
           memory serialises a warp's different codes) */
        const uint32_t e = (c >> 1) & 3, m = c & 1;
        const float mag = e ? __uint_as_float(((e + 126u) << 23) | (m << 22)) : 0.5f * (float)m;
        return (c & 8) ? -mag : mag;
    }
    case CODE_INT4: return (float)((int)(c & 15) - ((c & 8) ? 16 : 0));
    case CODE_UINT4: return (float)(c & 15);
    default: {
        __nv_fp8_e4m3 v;
        v.__x = (uint8_t)c;
        return (float)v;
    }
    }
}

/* the 16 weights of row r from column c0 (a multiple of 16): code·s, or code·s + z (AWQ's zero) when HAS_Z */
template <int KIND, bool HAS_Z>
__device__ __forceinline__ void decode16(const uint8_t *w, int64_t r, int64_t k, int64_t c0, float s, float z, float *v) {
    if (KIND == CODE_E4M3) {
        const uint4 u = *(const uint4 *)(w + r * k + c0);
        const uint32_t wd[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int j = 0; j < 16; j++) v[j] = decode_code(KIND, (wd[j / 4] >> (8 * (j % 4))) & 255) * s;
    } else {
        const uint2 u = *(const uint2 *)(w + ((r * k + c0) >> 1));
        const uint32_t wd[2] = {u.x, u.y};
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const float code = decode_code(KIND, wd[j / 8] >> (4 * (j % 8)));
            v[j] = HAS_Z ? fmaf(code, s, z) : code * s;
        }
    }
}

/* 16 consecutive weights of one row per thread (K % 16 == 0): codes → v·2^−e[n] → E4M3 (RNE, saturating), one
 * 16-byte store. Grid: x over the row's 16-weight chunks, y over the Np rows; rows n ≥ N are written as zeros.
 * The group size is a power of two (LG = log2): no integer division in the index math. */
template <int KIND, int LG>
__global__ void expand_e4m3_kernel(const uint8_t *w, const void *bs, int bst, const float *dual, const int *row_exp, int64_t n, int64_t k, int64_t ld16,
                                   uint4 *out) {
    const int64_t chunk = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, r = blockIdx.y, c0 = chunk * 16;
    if (c0 >= k) return;
    uint4 o = make_uint4(0, 0, 0, 0);
    if (r < n) {
        float s = block_scale(bst, bs, r * (k >> LG) + (c0 >> LG)) * __int_as_float((127 - row_exp[r]) << 23);
        if (dual) s *= dual[r * (k >> 9) + (c0 >> 9)];
        float v[16];
        decode16<KIND, false>(w, r, k, c0, s, 0.0f, v);
        uint32_t ow[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const __nv_fp8x2_storage_t lo = __nv_cvt_float2_to_fp8x2(make_float2(v[4 * j], v[4 * j + 1]), __NV_SATFINITE, __NV_E4M3);
            const __nv_fp8x2_storage_t hi = __nv_cvt_float2_to_fp8x2(make_float2(v[4 * j + 2], v[4 * j + 3]), __NV_SATFINITE, __NV_E4M3);
            ow[j] = (uint32_t)lo | ((uint32_t)hi << 16);
        }
        o = make_uint4(ow[0], ow[1], ow[2], ow[3]);
    }
    out[r * ld16 + chunk] = o;
}

/* the reference expansion's tail: row r's R bytes of E4M3 after its K codes (rows of ld16 16-byte pieces) */
__global__ void expand_tail_kernel(const uint4 *tail, int64_t np, int64_t t16, int64_t k16, int64_t ld16, uint4 *out) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < np * t16; i += (int64_t)gridDim.x * blockDim.x)
        out[(i / t16) * ld16 + k16 + i % t16] = tail[i];
}

/* The same expansion for the 4-bit codes (E2M1, int4) with K % 32 == 0, built for bandwidth: each thread streams
 * two 16-byte chunks of 32 codes (both loads in flight before either is used) and writes 2 × 32 bytes. Per group the
 * 16 possible results e4m3(code · s) are made once (two 8-byte tables: codes 0–7, 8–15) and each code looked up
 * with a byte permute, four at a time, the table picked per byte by the code's bit 3: the same rounding of the same
 * product as expand_e4m3_kernel, so the same bytes (QDIT_CUDA_EXPAND_REF=1 runs that kernel instead; bench_cuda_ops
 * compares the two byte for byte). */

/* e4m3(code · s) for codes base .. base + 7, little-endian in 8 bytes */
template <int KIND> __device__ __forceinline__ uint2 e4m3_table8(float s, int base) {
    uint32_t wd[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int c = base + 4 * h;
        const __nv_fp8x2_storage_t lo = __nv_cvt_float2_to_fp8x2(make_float2(decode_code(KIND, c) * s, decode_code(KIND, c + 1) * s), __NV_SATFINITE, __NV_E4M3);
        const __nv_fp8x2_storage_t hi = __nv_cvt_float2_to_fp8x2(make_float2(decode_code(KIND, c + 2) * s, decode_code(KIND, c + 3) * s), __NV_SATFINITE, __NV_E4M3);
        wd[h] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
    return make_uint2(wd[0], wd[1]);
}

/* four codes (the nibbles of h, lowest first) → their four E4M3 bytes from the tables lo (codes 0–7), hi (8–15) */
__device__ __forceinline__ uint32_t e4m3_lookup4(uint32_t h, uint2 lo, uint2 hi) {
    const uint32_t sel = h & 0x7777u; /* the code's low 3 bits pick the byte within a table */
    const uint32_t a = __byte_perm(lo.x, lo.y, sel), b = __byte_perm(hi.x, hi.y, sel);
    /* bit 3 of code j to bit 7 of byte j: bytes [h0, h0, h1, h1], the low nibbles' bit 3 shifted up by 4 */
    const uint32_t y = __byte_perm(h, 0, 0x1100), z = (y & 0xFF00FF00u) | ((y << 4) & 0x00FF00FFu);
    const uint32_t m = ((z >> 7) & 0x01010101u) * 0xFFu;
    return (a & ~m) | (b & m);
}

__device__ __forceinline__ uint4 ld_stream16(const void *p) {
    uint4 u;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(u.x), "=r"(u.y), "=r"(u.z), "=r"(u.w) : "l"(p));
    return u;
}

#define EXPAND_THREADS 256
#define EXPAND_UNROLL 2

/* Output chunk i (32 bytes) of an expanded row of K + 32·tpr bytes: row r = i / (cpr + tpr), the row's chunk cc.
 * Chunks cc < cpr expand 32 codes of the stored row (16 bytes at w + r·cpr + cc); the tpr chunks after them copy the
 * row's tail (SVDQuant's folded E4M3 up factor, [Np, 32·tpr]). */
template <int KIND, int LG>
__global__ void __launch_bounds__(EXPAND_THREADS) expand_lut_kernel(const uint4 *w, const void *bs, int bst, const float *dual, const int *row_exp,
                                                                  uint32_t n, uint32_t cpr, uint32_t tpr, const uint4 *tail, uint32_t total,
                                                                  int64_t k, uint4 *out) {
    const uint32_t first = blockIdx.x * (EXPAND_THREADS * EXPAND_UNROLL) + threadIdx.x, opr = cpr + tpr;
    uint4 u[EXPAND_UNROLL];
#pragma unroll
    for (int j = 0; j < EXPAND_UNROLL; j++) {
        const uint32_t i = first + j * EXPAND_THREADS, r = i / opr, cc = i - r * opr;
        u[j] = i < total && r < n && cc < cpr ? ld_stream16(w + r * cpr + cc) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int j = 0; j < EXPAND_UNROLL; j++) {
        const uint32_t i = first + j * EXPAND_THREADS;
        if (i >= total) break;
        const uint32_t r = i / opr, cc = i - r * opr;
        if (cc >= cpr) {
            const uint32_t t = r * tpr + (cc - cpr);
            out[2 * (int64_t)i] = tail[2 * t], out[2 * (int64_t)i + 1] = tail[2 * t + 1];
            continue;
        }
        uint4 o0 = make_uint4(0, 0, 0, 0), o1 = o0;
        if (r < n) {
            const int64_t c0 = (int64_t)cc * 32;
            float rs = __int_as_float((127 - row_exp[r]) << 23);
            if (dual) rs *= dual[r * (k >> 9) + (c0 >> 9)];
            const uint32_t wd[4] = {u[j].x, u[j].y, u[j].z, u[j].w};
            uint32_t ow[8];
            uint2 lo = make_uint2(0, 0), hi = lo;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                if (q == 0 || (LG == 4 && q == 2)) { /* a new group: its tables */
                    const float sc = block_scale(bst, bs, (int64_t)r * (k >> LG) + ((c0 + 8 * q) >> LG)) * rs;
                    lo = e4m3_table8<KIND>(sc, 0), hi = e4m3_table8<KIND>(sc, 8);
                }
                ow[2 * q] = e4m3_lookup4(wd[q] & 0xFFFFu, lo, hi);
                ow[2 * q + 1] = e4m3_lookup4(wd[q] >> 16, lo, hi);
            }
            o0 = make_uint4(ow[0], ow[1], ow[2], ow[3]), o1 = make_uint4(ow[4], ow[5], ow[6], ow[7]);
        }
        out[2 * (int64_t)i] = o0, out[2 * (int64_t)i + 1] = o1;
    }
}

template <int KIND>
static void expand_e4m3(cudaStream_t st, const cuda_linear *d, int64_t n, int64_t k, uint4 *out) {
    const dim3 grid((unsigned)((k / 16 + 127) / 128), (unsigned)d->np);
    const uint8_t *w = (const uint8_t *)d->w;
    const int64_t ld16 = d->kp / 16; /* K + the folded tail */
    switch (d->group) {
    case 16: expand_e4m3_kernel<KIND, 4><<<grid, 128, 0, st>>>(w, d->wblock, d->wblock_t, d->dual, d->row_exp, n, k, ld16, out); break;
    case 32: expand_e4m3_kernel<KIND, 5><<<grid, 128, 0, st>>>(w, d->wblock, d->wblock_t, d->dual, d->row_exp, n, k, ld16, out); break;
    case 64: expand_e4m3_kernel<KIND, 6><<<grid, 128, 0, st>>>(w, d->wblock, d->wblock_t, d->dual, d->row_exp, n, k, ld16, out); break;
    default: expand_e4m3_kernel<KIND, 7><<<grid, 128, 0, st>>>(w, d->wblock, d->wblock_t, d->dual, d->row_exp, n, k, ld16, out); break;
    }
    if (d->lr_fold)
        expand_tail_kernel<<<qd_cuda_blocks(d->np * (d->lr_fold / 16), 256), 256, 0, st>>>((const uint4 *)d->lora_up8, d->np, d->lr_fold / 16, k / 16,
                                                                                        ld16, out);
}

/* AWQ: W = q·s + z into the activations' dtype (BF16/F16/F32), 16 weights per thread */
__global__ void expand_awq_kernel(const uint8_t *w, const void *bs, const void *zs, int st, int g, int64_t n, int64_t k, void *out, int ot) {
    const int64_t per_row = k / 16, total = n * per_row;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / per_row, c0 = (i % per_row) * 16;
        const float s = block_scale(st, bs, r * (k / g) + c0 / g), z = block_scale(st, zs, r * (k / g) + c0 / g);
        const uint2 u = *(const uint2 *)(w + (r * k + c0) / 2);
        const uint32_t wd[2] = {u.x, u.y};
#pragma unroll
        for (int j = 0; j < 16; j++) qd_st(out, ot, r * k + c0 + j, fmaf((float)((wd[j / 8] >> (4 * (j % 8))) & 15), s, z));
    }
}

/* W4A16 for a few rows (M ≤ GEMV_ROWS: modulation GEMVs, CFG pairs, tiny latents), where expanding the whole
 * weight would cost more than the product. The stored weight is read once and dequantized exactly in f32:
 *   y[i][n] = ch[n]·Σ_groups s[n][g]·Σ_{k∈g} code[n][k]·x[i][k]·mult[k]   (+ z[n][g]·Σ_{k∈g} x[i][k]·mult[k] for
 *   AWQ's zero) + bias[n],
 * s the block scale (· the dual scale of dual-scale MXFP4), ch the channel factor (wscale_vec·2^−row_exp; 1 for
 * AWQ), mult the smoothing multiplier (NULL: none). Codes are exact small floats, so each code·x is exact in f32
 * and only the f32 additions round.
 *
 * Work split as gemv_kernel's (linear_gemv.cu): a block of 4 warps owns W4_OUT = 4 consecutive output rows (rows
 * past N repeat row N − 1 and are not stored); its threads stride along the rows in 16-byte chunks (4-bit: 32
 * codes, E4M3: 16) with streaming loads, the next chunk of all 4 rows — and its block scales, zeros and dual
 * scales — loaded before the current one is used (one row of x: as each chunk starts, see PF below). Per sub-chunk of
 * 8 codes (one group: groups are ≥ 16) each x
 * row's 8 activations are loaded once and serve the 4 weight rows; codes decode two at a time through f16
 * (w4_codes.h), E4M3 through the FP8 → f16x2 conversion. Sums are reduced by shuffles within a warp and shared
 * memory across the 4 warps in a fixed order. Needs weight rows of a multiple of 16 bytes (4-bit: K % 32,
 * E4M3: K % 16) and 16-byte aligned weights and activations; otherwise w4_gemv_rows_kernel (one warp per row,
 * 16 codes per lane) runs, which takes K % 16. */

#define W4_OUT 4       /* output rows per block */
#define W4_THREADS 128 /* threads per block, all along K */

typedef struct {
    const uint8_t *w;  /* rows of `chunks` 16-byte chunks: 4-bit codes [N, K/2] lo-first, or E4M3 [N, K] */
    int64_t chunks;
    const void *bs;    /* block scales [N, K/g] of type bst; AWQ zeros zs alike */
    int bst;
    const void *zs;
    const float *dual; /* dual-scale MXFP4: [N, K/512], else NULL */
    const float *vec;  /* channel factor · 2^row_exp [N] (NULL: 1) */
    const int *row_exp;
    const float *mult; /* smoothing multiplier [K] or NULL */
    const void *x;     /* [M, K] of type xt */
    int xt, m;
    int64_t n, k;
    const float *bias;
    void *y; /* [M, N] of type yt */
    int yt;
} w4_args;

/* codes 8h .. 8h + 7 of a 16-byte chunk as f32, exactly */
template <int KIND> __device__ __forceinline__ void decode8(const uint4 &u, int h, float *v) {
    const uint32_t wd[4] = {u.x, u.y, u.z, u.w};
    if constexpr (KIND == CODE_E4M3) { /* bytes 8h .. 8h + 7, two at a time to F16 (every E4M3 value is exact there) */
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(wd[2 * h + j / 2] >> (16 * (j % 2))), __NV_E4M3);
            const float2 f = __half22float2(__half2(r));
            v[2 * j] = f.x, v[2 * j + 1] = f.y;
        }
    } else { /* word h: codes j and j + 4 per f16x2 */
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t b;
            if constexpr (KIND == CODE_E2M1) b = qd_w4_e2m1_pair(wd[h], j);
            else if constexpr (KIND == CODE_INT4) b = qd_w4_int4_pair(wd[h], j);
            else b = qd_w4_uint4_pair(wd[h], j);
            __half2 p = *(const __half2 *)&b;
            if constexpr (KIND == CODE_E2M1) p = __hmul2(p, __halves2half2(__ushort_as_half(QD_W4_F16_2P14), __ushort_as_half(QD_W4_F16_2P14)));
            else if constexpr (KIND == CODE_INT4) p = __hsub2(p, __halves2half2(__ushort_as_half(QD_W4_F16_1032), __ushort_as_half(QD_W4_F16_1032)));
            else p = __hsub2(p, __halves2half2(__ushort_as_half(QD_W4_F16_1024), __ushort_as_half(QD_W4_F16_1024)));
            const float2 f = __half22float2(p);
            v[j] = f.x, v[j + 4] = f.y;
        }
    }
}

/* chunk c of the R rows with what it needs: the raw bits of its GPC block scales (and AWQ zeros) per row, and the
 * row's dual scale (1 without); zeros past the rows' end (never used: the loop ends) */
template <int KIND, int LG, int R, int GPC>
__device__ __forceinline__ void load_chunk(const w4_args &a, const int64_t *rows, int64_t c, uint4 *u, uint32_t (*sb)[GPC], uint32_t (*zb)[GPC],
                                           float *d) {
    constexpr int CODES = KIND == CODE_E4M3 ? 16 : 32;
    if (c >= a.chunks) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            u[r] = make_uint4(0, 0, 0, 0), d[r] = 0.0f;
#pragma unroll
            for (int q = 0; q < GPC; q++) sb[r][q] = zb[r][q] = 0;
        }
        return;
    }
    const int64_t col = c * CODES, kg = a.k >> LG, g0 = col >> LG;
#pragma unroll
    for (int r = 0; r < R; r++) {
        u[r] = ld_stream(a.w + (rows[r] * a.chunks + c) * 16);
#pragma unroll
        for (int q = 0; q < GPC; q++) {
            sb[r][q] = scale_bits(a.bst, a.bs, rows[r] * kg + g0 + q);
            zb[r][q] = KIND == CODE_UINT4 ? scale_bits(a.bst, a.zs, rows[r] * kg + g0 + q) : 0;
        }
        d[r] = a.dual ? a.dual[rows[r] * (a.k >> 9) + (col >> 9)] : 1.0f;
    }
}

/* MT: rows of x the sums are kept for (m ≤ MT; rows past m repeat row m − 1 and are not stored). PF: each thread loads
   its next chunk while it works on the current one (two chunks of registers: 116–167 registers, 4 blocks per SM);
   without, it loads each chunk as it starts on it and more warps hide the wait: MINB blocks per SM, which the
   registers are held to. One row of x (the modulation GEMVs) takes the second form with 5 blocks: FLUX.1's 76 NVFP4
   modulations in 1.41 ms against 1.96 ms prefetching (H200, docs/benchmarks.md twenty-first pass; 6, 7 and 8 blocks
   spill more and took 1.49, 1.51 and 1.59 ms). The arithmetic is the same in both forms, so are the bits. */
template <int KIND, int LG, int MT, bool PF, int MINB = 4>
__global__ void __launch_bounds__(W4_THREADS, MINB) w4_gemv_kernel(const w4_args a) {
    constexpr int R = W4_OUT, CODES = KIND == CODE_E4M3 ? 16 : 32, SUB = CODES / 8;
    constexpr int GPC = (CODES >> LG) > 0 ? CODES >> LG : 1; /* groups one chunk touches (2: 4-bit codes in groups of 16) */
    constexpr bool AWQ = KIND == CODE_UINT4;
    __shared__ float red[W4_THREADS / 32][MT * R];
    const int64_t r0 = (int64_t)blockIdx.x * R;
    int64_t rows[R];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r] = r0 + r < a.n ? r0 + r : a.n - 1;
    int64_t xo[MT];
#pragma unroll
    for (int i = 0; i < MT; i++) xo[i] = (int64_t)(i < a.m ? i : a.m - 1) * a.k;
    float acc[MT][R];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[i][r] = 0.0f;
    int64_t c = threadIdx.x;
    uint4 cur[R];
    uint32_t scur[R][GPC], zcur[R][GPC];
    float dcur[R];
    if (PF) load_chunk<KIND, LG, R, GPC>(a, rows, c, cur, scur, zcur, dcur);
    for (; c < a.chunks; c += W4_THREADS) {
        uint4 nxt[R];
        uint32_t snxt[R][GPC], znxt[R][GPC];
        float dnxt[R];
        if (PF) load_chunk<KIND, LG, R, GPC>(a, rows, c + W4_THREADS, nxt, snxt, znxt, dnxt);
        else load_chunk<KIND, LG, R, GPC>(a, rows, c, cur, scur, zcur, dcur);
#pragma unroll
        for (int h = 0; h < SUB; h++) {
            const int64_t col = c * CODES + 8 * h;
            const int q = (8 * h) >> LG; /* the sub-chunk's group within the chunk's GPC */
            /* each x row's 8 activations (× mult), and their sum for AWQ's zero term, shared by the R rows */
            float mv[8], xv[MT][8], sx[MT];
            if (a.mult) qd_ld8(a.mult, QD_DTYPE_F32, col, mv);
#pragma unroll
            for (int i = 0; i < MT; i++) {
                qd_ld8(a.x, a.xt, xo[i] + col, xv[i]);
                sx[i] = 0.0f;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    if (a.mult) xv[i][j] *= mv[j];
                    if (AWQ) sx[i] += xv[i][j];
                }
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float s = scale_value(a.bst, scur[r][q]) * dcur[r];
                float wv[8];
                decode8<KIND>(cur[r], h, wv);
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    float t = 0.0f;
#pragma unroll
                    for (int j = 0; j < 8; j++) t = fmaf(wv[j], xv[i][j], t);
                    acc[i][r] = fmaf(t, s, acc[i][r]);
                    if (AWQ) acc[i][r] = fmaf(scale_value(a.bst, zcur[r][q]), sx[i], acc[i][r]);
                }
            }
        }
        if (PF)
#pragma unroll
            for (int r = 0; r < R; r++) {
                cur[r] = nxt[r], dcur[r] = dnxt[r];
#pragma unroll
                for (int g = 0; g < GPC; g++) scur[r][g] = snxt[r][g], zcur[r][g] = znxt[r][g];
            }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int r = 0; r < R; r++) {
            float v = acc[i][r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0) red[warp][i * R + r] = v;
        }
    __syncthreads();
    const int t = threadIdx.x, i = t / R;
    const int64_t row = r0 + t % R;
    if (t >= MT * R || i >= a.m || row >= a.n) return;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < W4_THREADS / 32; w++) v += red[w][t];
    const float ch = a.vec ? a.vec[row] * __int_as_float((127 - a.row_exp[row]) << 23) : 1.0f;
    qd_st(a.y, a.yt, i * a.n + row, v * ch + (a.bias ? a.bias[row] : 0.0f));
}

/* the fallback for rows of 16·odd bytes (4-bit K = 16·odd): one warp per output row, 16 codes per lane */
template <int KIND, int LG>
__global__ void w4_gemv_rows_kernel(const w4_args a) {
    const int lane = threadIdx.x & 31;
    const int64_t r = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5), k = a.k;
    if (r >= a.n) return;
    float acc[GEMV_ROWS];
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) acc[i] = 0.0f;
    for (int64_t c0 = (int64_t)lane * 16; c0 < k; c0 += 32 * 16) {
        float s = block_scale(a.bst, a.bs, r * (k >> LG) + (c0 >> LG)), z = 0.0f;
        if (a.dual) s *= a.dual[r * (k >> 9) + (c0 >> 9)];
        if (a.zs) z = block_scale(a.bst, a.zs, r * (k >> LG) + (c0 >> LG));
        float wv[16];
        decode16<KIND, true>(a.w, r, k, c0, s, z, wv);
        if (a.mult)
#pragma unroll
            for (int j = 0; j < 16; j++) wv[j] *= a.mult[c0 + j];
#pragma unroll
        for (int i = 0; i < GEMV_ROWS; i++) {
            if (i >= a.m) break;
            float xv[16];
            qd_ld8(a.x, a.xt, i * k + c0, xv), qd_ld8(a.x, a.xt, i * k + c0 + 8, xv + 8);
#pragma unroll
            for (int j = 0; j < 16; j++) acc[i] = fmaf(wv[j], xv[j], acc[i]);
        }
    }
    const float ch = a.vec ? a.vec[r] * __int_as_float((127 - a.row_exp[r]) << 23) : 1.0f;
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) {
        if (i >= a.m) break;
        float v = acc[i];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) qd_st(a.y, a.yt, i * a.n + r, v * ch + (a.bias ? a.bias[r] : 0.0f));
    }
}

template <int KIND, int LG> static void w4_launch(qd_cuda *c, const w4_args &a, bool rows16) {
    const unsigned blocks = (unsigned)((a.n + W4_OUT - 1) / W4_OUT);
    if (!rows16) w4_gemv_rows_kernel<KIND, LG><<<blocks, 128, 0, c->stream>>>(a); /* 4 rows (warps) per block */
    else if (a.m == 1 && c->w4_gemv_pf) w4_gemv_kernel<KIND, LG, 1, true><<<blocks, W4_THREADS, 0, c->stream>>>(a);
    else if (a.m == 1) w4_gemv_kernel<KIND, LG, 1, false, 5><<<blocks, W4_THREADS, 0, c->stream>>>(a);
    else if (a.m == 2) w4_gemv_kernel<KIND, LG, 2, true><<<blocks, W4_THREADS, 0, c->stream>>>(a);
    else if (a.m <= 4) w4_gemv_kernel<KIND, LG, 4, true><<<blocks, W4_THREADS, 0, c->stream>>>(a);
    else w4_gemv_kernel<KIND, LG, GEMV_ROWS, true><<<blocks, W4_THREADS, 0, c->stream>>>(a);
}

template <int KIND>
static void w4_gemv(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int m) {
    const int64_t row_bytes = KIND == CODE_E4M3 ? l->in_features : l->in_features / 2;
    w4_args a = {};
    a.w = (const uint8_t *)d->w, a.chunks = row_bytes / 16;
    a.bs = d->wblock, a.bst = d->wblock_t, a.zs = d->awq_zeros, a.dual = d->dual;
    a.vec = l->scheme == QD_SCHEME_AWQ_W4A16 ? NULL : d->wscale_vec, a.row_exp = d->row_exp, a.mult = d->smooth;
    a.x = x->data, a.xt = x->dtype, a.m = m, a.n = l->out_features, a.k = l->in_features;
    a.bias = d->bias, a.y = y->data, a.yt = y->dtype;
    const bool rows16 = row_bytes % 16 == 0 && qd_cuda_aligned16(d->w) && qd_cuda_aligned16(x->data);
    if constexpr (KIND == CODE_E4M3) w4_launch<KIND, 5>(c, a, rows16); /* MXFP8: groups of 32 */
    else switch (d->group) {
        case 16: w4_launch<KIND, 4>(c, a, rows16); break;
        case 32: w4_launch<KIND, 5>(c, a, rows16); break;
        case 64: w4_launch<KIND, 6>(c, a, rows16); break;
        default: w4_launch<KIND, 7>(c, a, rows16); break;
        }
}

/* per token: xs = x·mult[k] (mult NULL: x), s = max(amax(xs)/448, floor), q = e4m3(xs/s); one block per row,
 * the row read twice (the second time from L2). Without mult the codes are an FP8 linear's to the bit (x/s, not
 * x·(1/s)): norm_modulate_fp8 makes them for both (linear_fp8_tokens) */
__global__ void quant_rows_mult_kernel(const void *x, int xt, int64_t k, const float *mult, int batch, __nv_fp8_e4m3 *q, float *row_scale) {
    __shared__ float red[32];
    const int64_t base = blockIdx.x * k;
    const bool vec = xt == QD_DTYPE_BF16 && k % 8 == 0;
    const uint4 *xr = (const uint4 *)((const __nv_bfloat16 *)x + base);
    float amax = 0.0f;
    if (vec) {
        qd_row_words(xr, k / 8, batch, [&](int64_t i, const uint4 &u) {
            float v[8];
            qd_bf16x8_f32(u, v);
            if (mult) qd_mul8(v, mult, 8 * i);
#pragma unroll
            for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(v[j]));
        });
    } else {
        for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
            const float v = qd_ld(x, xt, base + i);
            amax = fmaxf(amax, fabsf(mult ? v * mult[i] : v));
        }
    }
    amax = qd_block_max(amax, red);
    const float s = fmaxf(amax / 448.0f, QD_TOKEN_MIN_SCALE);
    if (threadIdx.x == 0) row_scale[blockIdx.x] = s;
    const float inv = 1.0f / s;
    if (vec) {
        qd_row_words(xr, k / 8, batch, [&](int64_t i, const uint4 &u) {
            float v[8];
            qd_bf16x8_f32(u, v);
            if (mult) qd_mul8(v, mult, 8 * i);
            uint32_t ow[2];
#pragma unroll
            for (int j = 0; j < 2; j++) {
                float t[4];
#pragma unroll
                for (int h = 0; h < 4; h++) t[h] = mult ? v[4 * j + h] * inv : v[4 * j + h] / s;
                const __nv_fp8x2_storage_t lo = __nv_cvt_float2_to_fp8x2(make_float2(t[0], t[1]), __NV_SATFINITE, __NV_E4M3);
                const __nv_fp8x2_storage_t hi = __nv_cvt_float2_to_fp8x2(make_float2(t[2], t[3]), __NV_SATFINITE, __NV_E4M3);
                ow[j] = (uint32_t)lo | ((uint32_t)hi << 16);
            }
            *(uint2 *)(q + base + 8 * i) = make_uint2(ow[0], ow[1]);
        });
    } else {
        for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
            const float v = qd_ld(x, xt, base + i);
            q[base + i] = __nv_fp8_e4m3(mult ? v * mult[i] * inv : v / s);
        }
    }
}

__global__ void to_dtype_kernel(const void *src, int st, void *dst, int dt, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) qd_st(dst, dt, i, qd_ld(src, st, i));
}

/* y[m][n] += acc[m][n] (f32), for outputs the low-rank matmul cannot accumulate into directly */
__global__ void add_f32_kernel(const float *acc, void *y, int yt, int64_t count) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        qd_st(y, yt, i, qd_ld(y, yt, i) + acc[i]);
}

/* a folded layer's up factor back in its 16-bit type t: U[n][j] = (hi + lo)·vec[n]·2^−t from its row [hi | lo | hi (| lo)] */
__global__ void up_from_e4m3_kernel(const uint8_t *u8, const float *vec, float mult, int64_t n, int64_t r, int terms, void *out, int t) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * r; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / r, j = i % r;
        __nv_fp8_e4m3 hi, lo;
        hi.__x = u8[row * terms * r + j], lo.__x = u8[row * terms * r + r + j];
        qd_st(out, t, i, ((float)hi + (float)lo) * vec[row] * mult);
    }
}

/* ------------------------------------------------------------------------------------------------ the op -- */

static qd_status launched(const char *what) {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? QD_OK : qd_cuda_fail(e, what);
}

/* SVDQuant's low-rank branch: y += (x·Dᵀ)·Uᵀ (add), or y = (x·Dᵀ)·Uᵀ, both matmuls in the factors' 16-bit type T
 * (x converted to T when it is not; the [M, R] intermediate rounded to T, as Nunchaku does), the second written or
 * accumulated into y when y is BF16 (T BF16) or F32; otherwise (add only) into f32 scratch added by a kernel */
static bool lora_direct(const cuda_linear *d, const qd_tensor *y) { return y->dtype == QD_DTYPE_F32 || y->dtype == d->lora_t; }

static qd_status lora(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool add) {
    const int64_t n = l->out_features, k = l->in_features, r = d->rank;
    const qd_dtype t = d->lora_t;
    const size_t es = 2;
    void *xt = x->data, *act = NULL, *up = d->lora_up;
    float *acc = NULL;
    qd_status s = QD_OK;
    if (d->lr_fold) { /* folded layers keep U only as E4M3 (few rows come here): the same values in T */
        s = qd_cuda_scratch(c, es * (size_t)(n * r), &up);
        if (!s) {
            up_from_e4m3_kernel<<<qd_cuda_blocks(n * r, 256), 256, 0, c->stream>>>((const uint8_t *)d->lora_up8, d->wscale_vec, d->lr_mult, n, r,
                                                                             (int)(d->lr_fold / r), up, t);
            s = launched("svdquant up factor");
        }
    }
    if (x->dtype != t) {
        s = qd_cuda_scratch(c, es * (size_t)(m * k), &xt);
        if (!s) {
            to_dtype_kernel<<<qd_cuda_blocks(m * k, 256), 256, 0, c->stream>>>(x->data, x->dtype, xt, t, m * k);
            s = launched("svdquant low-rank input");
        }
    }
    if (!s) s = qd_cuda_scratch(c, es * (size_t)(m * r), &act);
    if (!s) s = qd_cuda_lt_matmul(c, l->name, m, r, k, d->lora_down, qd_cuda_lt_type(t), xt, qd_cuda_lt_type(t), act, qd_cuda_lt_type(t), NULL, NULL);
    const bool direct = lora_direct(d, y);
    if (!add && !direct) s = s ? s : qd_fail(QD_EINVAL, "layer '%s': the low-rank branch written into a %s output", l->name, qd_dtype_name(y->dtype));
    lt_extra ex = {};
    ex.accumulate = add;
    if (!s && direct) s = qd_cuda_lt_matmul(c, l->name, m, n, r, up, qd_cuda_lt_type(t), act, qd_cuda_lt_type(t), y->data, qd_cuda_lt_type(y->dtype), NULL, &ex);
    if (!s && !direct) {
        s = qd_cuda_scratch(c, sizeof(float) * (size_t)(m * n), (void **)&acc);
        if (!s) s = qd_cuda_lt_matmul(c, l->name, m, n, r, up, qd_cuda_lt_type(t), act, qd_cuda_lt_type(t), acc, CUDA_R_32F, NULL, NULL);
        if (!s) {
            add_f32_kernel<<<qd_cuda_blocks(m * n, 256), 256, 0, c->stream>>>(acc, y->data, y->dtype, m * n);
            s = launched("svdquant low-rank add");
        }
    }
    if (xt != x->data) qd_cuda_scratch_free(c, xt);
    if (up != d->lora_up) qd_cuda_scratch_free(c, up);
    qd_cuda_scratch_free(c, act), qd_cuda_scratch_free(c, acc);
    return s;
}

/* SVDQuant's low-rank input for R = 32 from BF16 activations: part[s][m][j] = Σ_{c in slice s} x[m][c]·D[j][c0 + c].
 * The product is x's one read (x·Dᵀ has 32 columns: a matmul library's tiles leave most SMs idle on it, 0.6–0.8 TB/s
 * measured; this kernel splits K as well as M). 64 rows per block, 16 per warp; the block's slice of K in chunks of
 * 64 columns through a 3-stage cp.async ring (rows padded to 72 values so that ldmatrix's 8 rows hit distinct banks);
 * BF16 mma.sync into f32 accumulators. Grid (ceil(M/64), slices); each slice writes its own partial sums, which the
 * activation quantization adds in a fixed order (no atomics: a step gives the same bits every time).
 * With amax set, the slice's row maxima of |x·mult| too (mult NULL: 1), taken from the A fragments already in registers,
 * so that the quantization after it reads x once instead of twice (the maxima are exact: max does not depend on order). */
#define LRD_ROWS 64
#define LRD_CHUNK 64
#define LRD_STAGES 3
#define LRD_LD (LRD_CHUNK + 8)

__global__ void __launch_bounds__(128) lr_down_kernel(const __nv_bfloat16 *x, int64_t m, int64_t kx, const __nv_bfloat16 *dn, int64_t kd, int64_t c0,
                                                      int chunks, float *part, const float *mult, float *amax) {
    __shared__ __align__(16) __nv_bfloat16 xs[LRD_STAGES][LRD_ROWS][LRD_LD];
    __shared__ __align__(16) __nv_bfloat16 ds[LRD_STAGES][32][LRD_LD];
    __shared__ __align__(16) float ms[LRD_STAGES][LRD_CHUNK]; /* the chunk's multipliers (amax with mult) */
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int64_t r0 = blockIdx.x * (int64_t)LRD_ROWS, k0 = (int64_t)blockIdx.y * chunks * LRD_CHUNK;
    auto load = [&](int ci, int st) {
        const int64_t kc = k0 + (int64_t)ci * LRD_CHUNK;
        for (int i = tid; i < LRD_ROWS * 8; i += 128) {
            const int r = i / 8, piece = i % 8;
            const bool ok = r0 + r < m; /* rows past M: zeros */
            cp_async16(&xs[st][r][piece * 8], x + (ok ? r0 + r : 0) * kx + kc + piece * 8, ok);
        }
        for (int i = tid; i < 32 * 8; i += 128) {
            const int r = i / 8, piece = i % 8;
            cp_async16(&ds[st][r][piece * 8], dn + r * kd + c0 + kc + piece * 8, true);
        }
        if (amax && mult && tid < LRD_CHUNK / 4) cp_async16(&ms[st][tid * 4], mult + c0 + kc + tid * 4, true);
    };
    float acc[4][4] = {};
    const int g = lane / 4, c = lane % 4;
    float am0 = 0.0f, am1 = 0.0f; /* |x·mult| maxima of rows g and g + 8 of the warp's 16, over this thread's columns */
#pragma unroll
    for (int st = 0; st < LRD_STAGES - 1; st++) {
        if (st < chunks) load(st, st);
        cp_async_commit();
    }
    for (int ci = 0; ci < chunks; ci++) {
        cp_async_wait<LRD_STAGES - 2>(); /* chunk ci has landed */
        __syncthreads();                  /* and every warp is done with chunk ci − 1, whose stage the prefetch reuses */
        if (ci + LRD_STAGES - 1 < chunks) load(ci + LRD_STAGES - 1, (ci + LRD_STAGES - 1) % LRD_STAGES);
        cp_async_commit();
        const int st = ci % LRD_STAGES;
#pragma unroll
        for (int kk = 0; kk < LRD_CHUNK; kk += 16) {
            uint32_t a[4], b[2][4];
            ldsm_x4(a, &xs[st][warp * 16 + lane % 8 + 8 * ((lane / 8) % 2)][kk + 8 * (lane / 16)]);
#pragma unroll
            for (int h = 0; h < 2; h++) ldsm_x4(b[h], &ds[st][h * 16 + 8 * (lane / 16) + lane % 8][kk + 8 * ((lane / 8) % 2)]);
#pragma unroll
            for (int nt = 0; nt < 4; nt++) mma_bf16(acc[nt], a, b[nt / 2][(nt % 2) * 2], b[nt / 2][(nt % 2) * 2 + 1]);
            if (amax) { /* a[0], a[2]: row g, columns 2c, 2c + 1 and 8 + 2c, 9 + 2c of the 16; a[1], a[3]: row g + 8 */
                const float2 m0 = mult ? *(const float2 *)&ms[st][kk + 2 * c] : make_float2(1.0f, 1.0f);
                const float2 m1 = mult ? *(const float2 *)&ms[st][kk + 8 + 2 * c] : make_float2(1.0f, 1.0f);
                const float2 v0 = __bfloat1622float2(*(const __nv_bfloat162 *)&a[0]), v1 = __bfloat1622float2(*(const __nv_bfloat162 *)&a[1]);
                const float2 v2 = __bfloat1622float2(*(const __nv_bfloat162 *)&a[2]), v3 = __bfloat1622float2(*(const __nv_bfloat162 *)&a[3]);
                am0 = fmaxf(am0, fmaxf(fmaxf(fabsf(v0.x * m0.x), fabsf(v0.y * m0.y)), fmaxf(fabsf(v2.x * m1.x), fabsf(v2.y * m1.y))));
                am1 = fmaxf(am1, fmaxf(fmaxf(fabsf(v1.x * m0.x), fabsf(v1.y * m0.y)), fmaxf(fabsf(v3.x * m1.x), fabsf(v3.y * m1.y))));
            }
        }
    }
    cp_async_wait<0>();
    if (amax) { /* the quad's four threads hold the row's columns between them */
#pragma unroll
        for (int o = 1; o < 4; o *= 2) am0 = fmaxf(am0, __shfl_xor_sync(0xffffffffu, am0, o)), am1 = fmaxf(am1, __shfl_xor_sync(0xffffffffu, am1, o));
        const int64_t row = r0 + warp * 16 + g;
        if (c == 0 && row < m) amax[blockIdx.y * m + row] = am0;
        if (c == 0 && row + 8 < m) amax[blockIdx.y * m + row + 8] = am1;
    }
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t row = r0 + warp * 16 + g + 8 * h;
            if (row < m) *(float2 *)(part + (blockIdx.y * m + row) * 32 + nt * 8 + 2 * c) = make_float2(acc[nt][2 * h], acc[nt][2 * h + 1]);
        }
}

/* slices of K for one part: about lrd_per_sm blocks per SM over the M blocks, dividing its chunks evenly (4 unless
   QDIT_CUDA_SVDQ_LRD_PER_SM says: 18.8 µs at M 4608, K 3072 against 21.8 with 2 and 19.8 with 8; 60.7 against 75.7 and
   62.4 at K 12288; Nsight Compute, caches warm, H200) */
static int lr_down_slices(const qd_cuda *c, int64_t rows, int64_t k) {
    const int64_t blocks = (rows + LRD_ROWS - 1) / LRD_ROWS, chunks = k / LRD_CHUNK;
    int64_t sl = (c->lrd_per_sm * (int64_t)(c->sm_count > 0 ? c->sm_count : 132) + blocks - 1) / blocks;
    sl = sl < 1 ? 1 : sl > 16 ? 16 : sl > chunks ? chunks : sl;
    while (chunks % sl) sl--;
    return (int)sl;
}

qd_status qd_cuda_svdq_lr_down(qd_cuda *c, const qd_linear *l, const cuda_linear *d, fused_parts *p, int64_t rows) {
    const int64_t k = l->in_features, r = d->rank;
    const qd_dtype t = d->lora_t;
    bool own = p->xt == QD_DTYPE_BF16 && t == QD_DTYPE_BF16 && r == 32 && qd_cuda_aligned16(d->lora_down) && !c->svdq_lr_lt;
    int splits = 0;
    for (int j = 0; j < p->n; j++) {
        own = own && p->k[j] % LRD_CHUNK == 0 && qd_cuda_aligned16(p->x[j]);
        splits += own ? lr_down_slices(c, rows, p->k[j]) : 0;
    }
    if (!own) splits = 1;
    float *lr = NULL;
    const bool amax = own && !c->svdq_amax_pass; /* lr_down_kernel takes the rows' maxima for the quantization too */
    qd_status s = qd_cuda_scratch(c, sizeof(float) * (size_t)(splits * rows * (r + (amax ? 1 : 0))), (void **)&lr);
    p->tail = lr, p->tail_k = r, p->tail_splits = splits, p->tail_rows = rows, p->tail_round = t, p->tail_mult = d->lr_mult;
    p->tail_terms = (int)(d->lr_fold / r);
    p->amax = amax && lr ? lr + (size_t)(splits * rows * r) : NULL; /* [splits][rows], after the partial sums (one scratch) */
    int64_t c0 = 0;
    for (int j = 0, base = 0; !s && own && j < p->n; c0 += p->k[j], j++) {
        const int sl = lr_down_slices(c, rows, p->k[j]);
        const dim3 grid((unsigned)((rows + LRD_ROWS - 1) / LRD_ROWS), (unsigned)sl);
        lr_down_kernel<<<grid, 128, 0, c->stream>>>((const __nv_bfloat16 *)p->x[j], rows, p->k[j], (const __nv_bfloat16 *)d->lora_down, k, c0,
                                                    (int)(p->k[j] / LRD_CHUNK / sl), lr + (size_t)base * (size_t)(rows * r), d->smooth,
                                                    p->amax ? (float *)p->amax + (size_t)base * (size_t)rows : NULL);
        s = launched("svdquant low-rank input");
        base += sl;
    }
    /* otherwise cuBLASLt, one f32 sum: each part (in the factors' type) against its columns of D */
    for (int j = 0; !s && !own && j < p->n; c0 += p->k[j], j++) {
        const void *xj = p->x[j];
        void *conv = NULL;
        if (p->xt != t) {
            s = qd_cuda_scratch(c, 2 * (size_t)(rows * p->k[j]), &conv);
            if (!s) {
                to_dtype_kernel<<<qd_cuda_blocks(rows * p->k[j], 256), 256, 0, c->stream>>>(xj, p->xt, conv, t, rows * p->k[j]);
                s = launched("svdquant low-rank input");
            }
            xj = conv;
        }
        lt_extra ex = {};
        ex.accumulate = j > 0, ex.lda = k; /* part j meets D's columns c0 .. c0 + k_j */
        if (!s) s = qd_cuda_lt_matmul(c, l->name, rows, r, p->k[j], (const uint8_t *)d->lora_down + 2 * c0, qd_cuda_lt_type(t), xj, qd_cuda_lt_type(t), lr, CUDA_R_32F, NULL, &ex);
        qd_cuda_scratch_free(c, conv);
    }
    return s;
}

static qd_status awq(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu) {
    const int64_t n = l->out_features, k = l->in_features;
    const qd_dtype wt = x->dtype;
    void *w = NULL;
    qd_status s = qd_cuda_scratch(c, (size_t)(n * k) * (size_t)(qd_dtype_bits(wt) / 8), &w);
    if (!s) {
        expand_awq_kernel<<<qd_cuda_blocks(n * k / 16, 256), 256, 0, c->stream>>>((const uint8_t *)d->w, d->wblock, d->awq_zeros, d->wblock_t,
                                                                                  d->group, n, k, w, wt);
        s = launched("awq expansion");
    }
    if (!s) s = qd_cuda_dense_matmul(c, l, d, w, wt, x, y, m, gelu);
    qd_cuda_scratch_free(c, w);
    return s;
}

/* few rows: the W4A16 product straight from the stored weights (+ SVDQuant's low-rank branch); the activation,
 * if any, is left to the caller */
static qd_status small_m(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu) {
    *gelu = false;
    const int kind = code_kind(l);
    if (kind == CODE_E2M1) w4_gemv<CODE_E2M1>(c, l, d, x, y, (int)m);
    else if (kind == CODE_INT4) w4_gemv<CODE_INT4>(c, l, d, x, y, (int)m);
    else if (kind == CODE_UINT4) w4_gemv<CODE_UINT4>(c, l, d, x, y, (int)m);
    else w4_gemv<CODE_E4M3>(c, l, d, x, y, (int)m);
    qd_status s = launched("w4a16 gemv");
    if (!s && d->rank) s = lora(c, l, d, x, y, m, true);
    return s;
}

bool qd_cuda_w4_fusable(const qd_linear *l, const cuda_linear *d, int64_t m, const qd_cuda *c) {
    return qd_cuda_w4_covers(l) && l->scheme != QD_SCHEME_AWQ_W4A16 && (!d->rank || d->lr_fold) && (m > GEMV_ROWS || c->w4_no_gemv) &&
           d->np == l->out_features;
}

size_t qd_cuda_w4_expand_bytes(const qd_linear *l, const cuda_linear *d) { return (size_t)(d->np * (l->in_features + d->lr_fold)); }

bool qd_cuda_w4_ahead(const qd_linear *l, const cuda_linear *d) {
    return qd_cuda_w4_covers(l) && l->scheme != QD_SCHEME_AWQ_W4A16 && d->expanded;
}

/* the 4-bit codes through expand_lut_kernel; false where it does not apply (E4M3 codes, K % 32, sizes past 32 bits) */
template <int KIND> static bool expand_lut(cudaStream_t st, const cuda_linear *d, int64_t n, int64_t k, uint4 *out) {
    const int64_t total = d->np * (d->kp / 32); /* K + the folded tail (both multiples of 32 where it applies) */
    if (k % 32 || d->kp % 32 || total >= (int64_t)1 << 31) return false;
    const unsigned grid = (unsigned)((total + EXPAND_THREADS * EXPAND_UNROLL - 1) / (EXPAND_THREADS * EXPAND_UNROLL));
    const uint4 *w = (const uint4 *)d->w;
    const uint32_t tpr = (uint32_t)(d->lr_fold / 32);
#define LUT(LG)                                                                                                                            \
    expand_lut_kernel<KIND, LG><<<grid, EXPAND_THREADS, 0, st>>>(w, d->wblock, d->wblock_t, d->dual, d->row_exp, (uint32_t)n, (uint32_t)(k / 32), tpr, \
                                                               (const uint4 *)d->lora_up8, (uint32_t)total, k, out)
    switch (d->group) {
    case 16: LUT(4); break;
    case 32: LUT(5); break;
    case 64: LUT(6); break;
    default: LUT(7); break;
    }
#undef LUT
    return true;
}

static qd_status expand_with(const qd_linear *l, const cuda_linear *d, void *w8, cudaStream_t st, bool ref) {
    const int64_t n = l->out_features, k = l->in_features;
    const int kind = code_kind(l);
    if (!ref && kind == CODE_E2M1 && expand_lut<CODE_E2M1>(st, d, n, k, (uint4 *)w8)) return launched("weight expansion to e4m3");
    if (!ref && kind == CODE_INT4 && expand_lut<CODE_INT4>(st, d, n, k, (uint4 *)w8)) return launched("weight expansion to e4m3");
    if (kind == CODE_E2M1) expand_e4m3<CODE_E2M1>(st, d, n, k, (uint4 *)w8);
    else if (kind == CODE_INT4) expand_e4m3<CODE_INT4>(st, d, n, k, (uint4 *)w8);
    else expand_e4m3<CODE_E4M3>(st, d, n, k, (uint4 *)w8);
    return launched("weight expansion to e4m3");
}

qd_status qd_cuda_w4_expand_into(const qd_cuda *c, const qd_linear *l, const cuda_linear *d, void *w8, cudaStream_t st) {
    return expand_with(l, d, w8, st, c->expand_ref);
}

__global__ void count_differing_kernel(const uint4 *a, const uint4 *b, int64_t n16, unsigned long long *count) {
    unsigned long long c = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n16; i += (int64_t)gridDim.x * blockDim.x) {
        const uint4 x = a[i], y = b[i];
        const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
        for (int j = 0; j < 4; j++)
            for (int byte = 0; byte < 4; byte++) c += ((xs[j] >> (8 * byte)) & 255) != ((ys[j] >> (8 * byte)) & 255);
    }
    if (c) atomicAdd(count, c);
}

extern "C" qd_status qd_backend_cuda_w4_expand_check(qd_backend *b, const qd_linear *l, int64_t *differing, double *ms_fast, double *ms_ref) {
    qd_cuda *c = qd_cuda_of(b);
    const cuda_linear *d = qd_cuda_linear_of(l);
    if (!d || !qd_cuda_w4_covers(l) || l->scheme == QD_SCHEME_AWQ_W4A16)
        return qd_fail(QD_EINVAL, "layer '%s': not a W4A8 layer prepared on the GPU", l->name ? l->name : "?");
    const size_t bytes = qd_cuda_w4_expand_bytes(l, d);
    void *x = NULL, *y = NULL;
    unsigned long long *cnt = NULL, host = 0;
    cudaEvent_t e0 = NULL, e1 = NULL, e2 = NULL;
    qd_status s = QD_OK;
    if (cudaMalloc(&x, bytes) != cudaSuccess || cudaMalloc(&y, bytes) != cudaSuccess || cudaMalloc((void **)&cnt, sizeof *cnt) != cudaSuccess ||
        cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess || cudaEventCreate(&e2) != cudaSuccess)
        s = qd_cuda_fail(cudaGetLastError(), "expansion check buffers");
    const int reps = 20;
    if (!s) s = expand_with(l, d, x, c->stream, false);
    if (!s) s = expand_with(l, d, y, c->stream, true);
    if (!s && cudaEventRecord(e0, c->stream) != cudaSuccess) s = qd_cuda_fail(cudaGetLastError(), "expansion check");
    for (int i = 0; !s && i < reps; i++) s = expand_with(l, d, x, c->stream, false);
    if (!s && cudaEventRecord(e1, c->stream) != cudaSuccess) s = qd_cuda_fail(cudaGetLastError(), "expansion check");
    for (int i = 0; !s && i < reps; i++) s = expand_with(l, d, y, c->stream, true);
    if (!s && cudaEventRecord(e2, c->stream) != cudaSuccess) s = qd_cuda_fail(cudaGetLastError(), "expansion check");
    if (!s) {
        cudaMemsetAsync(cnt, 0, sizeof *cnt, c->stream);
        count_differing_kernel<<<1024, 256, 0, c->stream>>>((const uint4 *)x, (const uint4 *)y, (int64_t)(bytes / 16), cnt);
        s = launched("expansion check compare");
    }
    float t1 = 0, t2 = 0;
    /* the backend's stream does not synchronise with the legacy stream's cudaMemcpy: wait for it first */
    if (!s && cudaStreamSynchronize(c->stream) != cudaSuccess) s = qd_cuda_fail(cudaGetLastError(), "expansion check");
    if (!s && (cudaMemcpy(&host, cnt, sizeof host, cudaMemcpyDeviceToHost) != cudaSuccess || cudaEventElapsedTime(&t1, e0, e1) != cudaSuccess ||
               cudaEventElapsedTime(&t2, e1, e2) != cudaSuccess))
        s = qd_cuda_fail(cudaGetLastError(), "expansion check result");
    *differing = (int64_t)host, *ms_fast = t1 / reps, *ms_ref = t2 / reps;
    if (x) cudaFree(x);
    if (y) cudaFree(y);
    if (cnt) cudaFree(cnt);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (e2) cudaEventDestroy(e2);
    return s;
}

qd_status qd_cuda_w4_expand(qd_cuda *c, const qd_linear *l, const cuda_linear *d, void **w8) {
    if ((*w8 = qd_cuda_ahead_take(c, d))) return QD_OK; /* made ahead on the side stream (ahead.cu) */
    ((cuda_linear *)d)->expanded = true; /* from now on linears_ahead makes its copy ahead */
    qd_status s = qd_cuda_scratch(c, qd_cuda_w4_expand_bytes(l, d), w8);
    return s ? s : qd_cuda_w4_expand_into(c, l, d, *w8, c->stream);
}

/* a W4A8 layer without smoothing or low-rank branch on activations already quantized per token (linear_fp8_tokens) */
bool qd_cuda_w4_takes_tokens(const qd_linear *l, const cuda_linear *d) {
    return qd_cuda_w4_covers(l) && l->scheme != QD_SCHEME_AWQ_W4A16 && !d->smooth && !d->rank && d->kp == l->in_features;
}

qd_status qd_cuda_w4_linear_tokens(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const __nv_fp8_e4m3 *q, const float *sx, qd_tensor *y,
                                   int64_t m, bool *gelu) {
    void *w8 = NULL;
    qd_status s = qd_cuda_w4_expand(c, l, d, &w8);
    if (!s) s = qd_cuda_fp8_matmul(c, l, d, w8, q, sx, y, m, gelu, false);
    qd_cuda_scratch_free(c, w8);
    return s;
}

qd_status qd_cuda_w4_linear(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu) {
    if (m <= GEMV_ROWS && !c->w4_no_gemv) return small_m(c, l, d, x, y, m, gelu);
    if (l->scheme == QD_SCHEME_AWQ_W4A16) return awq(c, l, d, x, y, m, gelu);
    const int64_t k = l->in_features;
    __nv_fp8_e4m3 *q = NULL;
    float *sx = NULL;
    void *w8 = NULL;
    qd_status s = qd_cuda_w4_expand(c, l, d, &w8);
    if (!s && d->lr_fold) { /* the low-rank branch inside the matmul: x·Dᵀ quantized as the activations' last R columns */
        fused_parts p = {};
        p.x[0] = x->data, p.k[0] = k, p.n = 1, p.xt = x->dtype;
        s = qd_cuda_scratch(c, (size_t)(m * d->kp), (void **)&q);
        if (!s) s = qd_cuda_scratch(c, sizeof(float) * (size_t)m, (void **)&sx);
        if (!s) s = qd_cuda_svdq_lr_down(c, l, d, &p, m);
        if (!s) s = qd_cuda_w4_quant_parts(c, &p, m, d->kp, d->smooth, m, m, q, sx);
        qd_cuda_scratch_free(c, (void *)p.tail);
        if (!s) s = qd_cuda_fp8_matmul(c, l, d, w8, q, sx, y, m, gelu, false);
        qd_cuda_scratch_free(c, w8), qd_cuda_scratch_free(c, q), qd_cuda_scratch_free(c, sx);
        return s;
    }
    if (!s) s = qd_cuda_scratch(c, (size_t)(m * k), (void **)&q);
    if (!s) s = qd_cuda_scratch(c, sizeof(float) * (size_t)m, (void **)&sx);
    if (!s && c->quant_warp == 1 && x->dtype == QD_DTYPE_BF16 && k % 8 == 0 && qd_cuda_aligned16(x->data)) {
        /* a warp per row (linear.cu): with the smoothing multiplier the W4A8 codes e4m3(x·mult·(1/s)), without it an FP8
           linear's e4m3(x/s), each the kernel below's to the bit */
        fused_parts p = {};
        p.x[0] = x->data, p.k[0] = k, p.n = 1, p.xt = x->dtype;
        s = d->smooth ? qd_cuda_w4_quant_parts(c, &p, m, k, d->smooth, m, m, q, sx) : qd_cuda_fp8_quant_parts(c, &p, m, k, 0.0f, m, m, q, sx);
    } else if (!s) {
        quant_rows_mult_kernel<<<(unsigned)m, qd_cuda_quant_threads(c, 256), 0, c->stream>>>(x->data, x->dtype, k, d->smooth, c->quant_batch, q, sx);
        s = launched("fp8 activation quantization");
    }
    /* SVDQuant: the low-rank branch first, written into y, and the matmul adds into it (cuBLASLt's C operand), its
       epilogue applying the activation to the whole sum; where that cannot be (a padded N, an F16 output, our own FP8
       epilogue) the matmul first and the branch accumulated after it, the activation left to the caller */
    const bool lr_first = d->rank && d->np == l->out_features && lora_direct(d, y) && !c->fp8_unfused;
    bool g = *gelu && (!d->rank || lr_first);
    if (!s && lr_first) s = lora(c, l, d, x, y, m, false);
    if (!s) s = qd_cuda_fp8_matmul(c, l, d, w8, q, sx, y, m, &g, lr_first);
    if (!s && d->rank && !lr_first) s = lora(c, l, d, x, y, m, true);
    *gelu = g;
    qd_cuda_scratch_free(c, w8), qd_cuda_scratch_free(c, q), qd_cuda_scratch_free(c, sx);
    return s;
}
