/* Normalisation on the GPU: RMSNorm and LayerNorm over the last dim (one block per row), GroupNorm over
 * [N, C, spatial…] (one block per (n, group)), and the fused norm + AdaLN modulation of the DiT blocks. The cast points are the CPU file's (norm.c): statistics
 * in f32 with two passes (mean, then squared deviations), RMSNorm rounds x̂ to a BF16/F16 weight's
 * dtype before the multiply, LayerNorm and GroupNorm round once. */
#include "backend/cuda/cuda_internal.cuh"

__global__ void rms_kernel(const void *x, int xt, const void *w, int wt, float eps, void *y, int yt, int64_t d) {
    __shared__ float red[32];
    const int64_t base = blockIdx.x * d;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = qd_ld(x, xt, base + i);
        ss += v * v;
    }
    ss = qd_block_sum(ss, red);
    const float r = rsqrtf(ss / (float)d + eps);
    const bool round_first = w && wt != QD_DTYPE_F32;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float v = qd_ld(x, xt, base + i) * r;
        if (round_first) v = qd_round_to(wt, v);
        if (w) v *= qd_ld(w, wt, i);
        qd_st(y, yt, base + i, v);
    }
}

__global__ void layer_kernel(const void *x, int xt, const void *w, int wt, const void *bb, int bt, float eps, void *y, int yt, int64_t d) {
    __shared__ float red[32];
    const int64_t base = blockIdx.x * d;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) s += qd_ld(x, xt, base + i);
    const float mean = qd_block_sum(s, red) / (float)d;
    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = qd_ld(x, xt, base + i) - mean;
        q += v * v;
    }
    const float rstd = rsqrtf(qd_block_sum(q, red) / (float)d + eps);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float v = (qd_ld(x, xt, base + i) - mean) * rstd;
        if (w) v *= qd_ld(w, wt, i);
        if (bb) v += qd_ld(bb, bt, i);
        qd_st(y, yt, base + i, v);
    }
}

static qd_status rows_of(const char *op, const qd_tensor *x, const qd_tensor *y, const qd_tensor *w, int64_t *rows, int64_t *d) {
    qd_status s;
    if ((s = qd_cuda_check_float(op, "x", x)) || (s = qd_cuda_check_float(op, "y", y)) || (w && (s = qd_cuda_check_float(op, "weight", w)))) return s;
    if (x->rank < 1 || !qd_cuda_same_shape(x, y)) return qd_fail(QD_EINVAL, "cuda %s: x and y shapes differ", op);
    *d = x->shape[x->rank - 1];
    *rows = *d ? qd_tensor_elements(x) / *d : 0;
    if (w && qd_tensor_elements(w) != *d) return qd_fail(QD_EINVAL, "cuda %s: weight must have %lld elements", op, (long long)*d);
    if (*rows > INT32_MAX) return qd_fail(QD_EUNSUPPORTED, "cuda %s: %lld rows", op, (long long)*rows);
    return QD_OK;
}

/* rows of at most 1024: one warp per row (per-head q/k norms are rows of 128 — a block per row would
 * leave most of its threads idle and pay two block barriers per row) */
__global__ void rms_warp_kernel(const void *x, int xt, const void *w, int wt, float eps, void *y, int yt, int64_t rows, int d) {
    const int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int64_t base = row * d;
    float v[32];
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int i = lane + 32 * j;
        v[j] = i < d ? qd_ld(x, xt, base + i) : 0.0f;
        ss += v[j] * v[j];
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float r = rsqrtf(ss / (float)d + eps);
    const bool round_first = w && wt != QD_DTYPE_F32;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int i = lane + 32 * j;
        if (i >= d) break;
        float o = v[j] * r;
        if (round_first) o = qd_round_to(wt, o);
        if (w) o *= qd_ld(w, wt, i);
        qd_st(y, yt, base + i, o);
    }
}

template <int NV>
__global__ void norm_mod_bf16_kernel(bool layer, const __nv_bfloat16 *x, const void *w, int wt, float eps, const void *sc, int st,
                                     const void *sh, int ht, __nv_bfloat16 *y, int d, int rows_per_batch, __nv_fp8_e4m3 *q8 = nullptr,
                                     float *row_scale = nullptr, float fixed = 0.0f);
static bool norm_bf16_rows(qd_backend *b, bool layer, const qd_tensor *x, const qd_tensor *w, float eps, const void *sc, int st,
                           const void *sh, int ht, qd_tensor *y, int64_t rows, int64_t d, int64_t rpb, __nv_fp8_e4m3 *q8, float *rs,
                           float fixed = 0.0f);

extern "C" qd_status qd_cuda_rms_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, qd_tensor *y) {
    int64_t rows = 0, d = 0;
    qd_status s = rows_of("rms_norm", x, y, w, &rows, &d);
    if (s || !rows) return s;
    /* wide BF16 rows (Z-Image's 3840): the vectorised row kernel of norm_modulate, without a modulation */
    if (d > 1024 && norm_bf16_rows(b, false, x, w, eps, NULL, 0, NULL, 0, y, rows, d, rows, NULL, NULL)) {
        QD_CUDA_LAUNCHED("rms_norm");
        return QD_OK;
    }
    if (d <= 1024) {
        rms_warp_kernel<<<(unsigned)((rows + 7) / 8), 256, 0, qd_cuda_of(b)->stream>>>(x->data, x->dtype, w ? w->data : NULL,
                                                                                      w ? w->dtype : 0, eps, y->data, y->dtype, rows, (int)d);
        QD_CUDA_LAUNCHED("rms_norm");
        return QD_OK;
    }
    rms_kernel<<<(unsigned)rows, 256, 0, qd_cuda_of(b)->stream>>>(x->data, x->dtype, w ? w->data : NULL, w ? w->dtype : 0, eps,
                                                                  y->data, y->dtype, d);
    QD_CUDA_LAUNCHED("rms_norm");
    return QD_OK;
}

extern "C" qd_status qd_cuda_layer_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, float eps,
                                        qd_tensor *y) {
    int64_t rows = 0, d = 0;
    qd_status s = rows_of("layer_norm", x, y, w, &rows, &d);
    if (!s && bias && ((s = qd_cuda_check_float("layer_norm", "bias", bias)) || qd_tensor_elements(bias) != d))
        s = s ? s : qd_fail(QD_EINVAL, "cuda layer_norm: bias must have %lld elements", (long long)d);
    if (s || !rows) return s;
    layer_kernel<<<(unsigned)rows, 256, 0, qd_cuda_of(b)->stream>>>(x->data, x->dtype, w ? w->data : NULL, w ? w->dtype : 0,
                                                                    bias ? bias->data : NULL, bias ? bias->dtype : 0, eps, y->data,
                                                                    y->dtype, d);
    QD_CUDA_LAUNCHED("layer_norm");
    return QD_OK;
}

/* GroupNorm over [N, C, S]: a group is cpg channels × S spatial elements, contiguous (len = cpg·S; 4 M values per
   group in a VAE's 1024² layers). Each group is split over `parts` blocks so that every SM has work, in three kernels:
   each block takes its slice's mean and sum of squared deviations (two reads of the slice, the second from cache);
   one thread per group combines its parts in double (Chan's pairwise formula, in part order); each block normalises
   its slice, y = (x − mean)·rstd·w[c] + b[c]. BF16 x and y with S % 8 == 0 (every VAE layer) go 8 values per 16-byte
   word, a word never straddling two channels. */
#define GN_SLICE 16384 /* values per block */

__device__ __forceinline__ void gn_unpack(uint4 u, float (&v)[8]) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        const float2 f = __bfloat1622float2(h[e]);
        v[2 * e] = f.x, v[2 * e + 1] = f.y;
    }
}

/* the slice [lo, hi) of part `part` of a group of len units (values, or 8-value words) */
__device__ __forceinline__ void gn_slice(int64_t len, int parts, int64_t part, int64_t *lo, int64_t *hi) {
    *lo = part * len / parts, *hi = (part + 1) * len / parts;
}

__global__ void group_stats_kernel(const void *x, int xt, bool x8, int64_t len, int parts, float *pmean, float *pm2) {
    __shared__ float red[32];
    const int64_t grp = blockIdx.x / parts, part = blockIdx.x % parts;
    int64_t lo, hi;
    gn_slice(x8 ? len / 8 : len, parts, part, &lo, &hi);
    const int64_t count = (hi - lo) * (x8 ? 8 : 1);
    float s = 0.0f;
    if (x8) {
        const uint4 *xw = (const uint4 *)x + grp * (len / 8);
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            float v[8];
            gn_unpack(xw[i], v);
#pragma unroll
            for (int e = 0; e < 8; e++) s += v[e];
        }
    } else {
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s += qd_ld(x, xt, grp * len + i);
    }
    const float mean = count ? qd_block_sum(s, red) / (float)count : 0.0f;
    float q = 0.0f;
    if (x8) {
        const uint4 *xw = (const uint4 *)x + grp * (len / 8);
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            float v[8];
            gn_unpack(xw[i], v);
#pragma unroll
            for (int e = 0; e < 8; e++) q += (v[e] - mean) * (v[e] - mean);
        }
    } else {
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            const float v = qd_ld(x, xt, grp * len + i) - mean;
            q += v * v;
        }
    }
    q = qd_block_sum(q, red);
    if (threadIdx.x == 0) pmean[blockIdx.x] = mean, pm2[blockIdx.x] = q;
}

/* one thread per group: its parts combined in order into (mean, rstd) */
__global__ void group_combine_kernel(bool x8, int64_t len, int parts, int64_t n_groups, float eps, const float *pmean, const float *pm2,
                                     float *stat) {
    const int64_t grp = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (grp >= n_groups) return;
    const int64_t units = x8 ? len / 8 : len;
    double n = 0, mean = 0, m2 = 0;
    for (int p = 0; p < parts; p++) {
        int64_t lo, hi;
        gn_slice(units, parts, p, &lo, &hi);
        const double nb = (double)((hi - lo) * (x8 ? 8 : 1));
        if (nb == 0) continue;
        const double mb = pmean[grp * parts + p], d = mb - mean, nn = n + nb;
        mean += d * nb / nn;
        m2 += pm2[grp * parts + p] + d * d * n * nb / nn;
        n = nn;
    }
    stat[2 * grp] = (float)mean, stat[2 * grp + 1] = (float)(1.0 / sqrt(m2 / (double)len + (double)eps));
}

__global__ void group_apply_kernel(const void *x, int xt, bool x8, const void *w, int wt, const void *bb, int bt, void *y, int yt, int64_t cpg,
                                   int64_t S, int groups, int parts, const float *stat) {
    const int64_t len = cpg * S, grp = blockIdx.x / parts, part = blockIdx.x % parts;
    const int g = (int)(grp % groups);
    const float mean = stat[2 * grp], rstd = stat[2 * grp + 1];
    int64_t lo, hi;
    if (x8) {
        gn_slice(len / 8, parts, part, &lo, &hi);
        const uint4 *xw = (const uint4 *)x + grp * (len / 8);
        uint4 *yw = (uint4 *)y + grp * (len / 8);
        const unsigned S8 = (unsigned)(S / 8);
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            const int64_t c = g * cpg + (unsigned)i / S8;
            const float a = rstd * (w ? qd_ld(w, wt, c) : 1.0f), beta = bb ? qd_ld(bb, bt, c) : 0.0f;
            float v[8];
            gn_unpack(xw[i], v);
            uint4 o;
            __nv_bfloat162 *h = (__nv_bfloat162 *)&o;
#pragma unroll
            for (int e = 0; e < 4; e++) h[e] = __floats2bfloat162_rn((v[2 * e] - mean) * a + beta, (v[2 * e + 1] - mean) * a + beta);
            yw[i] = o;
        }
        return;
    }
    gn_slice(len, parts, part, &lo, &hi);
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const int64_t c = g * cpg + i / S;
        const float a = rstd * (w ? qd_ld(w, wt, c) : 1.0f), beta = bb ? qd_ld(bb, bt, c) : 0.0f;
        qd_st(y, yt, grp * len + i, (qd_ld(x, xt, grp * len + i) - mean) * a + beta);
    }
}

extern "C" qd_status qd_cuda_group_norm(qd_backend *b, const qd_tensor *x, int groups, const qd_tensor *w, const qd_tensor *bias,
                                        float eps, qd_tensor *y) {
    qd_status s;
    if ((s = qd_cuda_check_float("group_norm", "x", x)) || (s = qd_cuda_check_float("group_norm", "y", y))) return s;
    if (x->rank < 2 || !qd_cuda_same_shape(x, y)) return qd_fail(QD_EINVAL, "cuda group_norm: x must be [N, C, ...] and y its shape");
    const int64_t N = x->shape[0], C = x->shape[1];
    if (groups < 1 || C % groups) return qd_fail(QD_EINVAL, "cuda group_norm: %lld channels in %d groups", (long long)C, groups);
    if ((w && qd_tensor_elements(w) != C) || (bias && qd_tensor_elements(bias) != C))
        return qd_fail(QD_EINVAL, "cuda group_norm: weight and bias must have C = %lld elements", (long long)C);
    const int64_t S = (N > 0 && C > 0) ? qd_tensor_elements(x) / (N * C) : 0;
    if (!N || !S) return QD_OK;
    qd_cuda *c = qd_cuda_of(b);
    const int64_t len = C / groups * S, n_groups = N * groups;
    const bool x8 = x->dtype == QD_DTYPE_BF16 && y->dtype == QD_DTYPE_BF16 && S % 8 == 0 && S / 8 < ((int64_t)1 << 31) &&
                    qd_cuda_aligned16(x->data) && qd_cuda_aligned16(y->data);
    int64_t parts = (len + GN_SLICE - 1) / GN_SLICE;
    if (parts > 1024) parts = 1024;
    float *st = NULL;
    if ((s = qd_cuda_scratch(c, sizeof(float) * 2 * (size_t)(n_groups * parts + n_groups), (void **)&st))) return s;
    float *pmean = st, *pm2 = st + n_groups * parts, *stat = st + 2 * n_groups * parts;
    const unsigned blocks = (unsigned)(n_groups * parts);
    group_stats_kernel<<<blocks, 256, 0, c->stream>>>(x->data, x->dtype, x8, len, (int)parts, pmean, pm2);
    group_combine_kernel<<<(unsigned)((n_groups + 127) / 128), 128, 0, c->stream>>>(x8, len, (int)parts, n_groups, eps, pmean, pm2, stat);
    group_apply_kernel<<<blocks, 256, 0, c->stream>>>(x->data, x->dtype, x8, w ? w->data : NULL, w ? w->dtype : 0, bias ? bias->data : NULL,
                                                      bias ? bias->dtype : 0, y->data, y->dtype, C / groups, S, groups, (int)parts, stat);
    qd_cuda_scratch_free(c, st);
    QD_CUDA_LAUNCHED("group_norm");
    return QD_OK;
}

/* ---- norm_modulate: y = norm(x)·(1 + scale) + shift, one pass (backend.h). The normalised value is rounded to
   y's dtype before the modulation, as the two ops in y's dtype did. ---- */

/* BF16 rows with D % 8 == 0: a block per row, each thread holding NV 16-byte vectors of the row in registers
   (one read of x, one write of y); weights, scales and shifts read 8 at a time (qd_ld8). Without a scale
   (sc NULL) it is the plain norm: the rounding to BF16 before a ·1 + 0 is the store's own. */
/* FP8 (q non-NULL): the BF16 output is not stored but quantized per token as an FP8 linear quantizes it
   (linear.cu's fp8_quant_rows_bf16x8_kernel: s = max(amax/448, QD_TOKEN_MIN_SCALE), e4m3(v/s)): the same codes and
   scale, from the row in registers. */
/* 1/sqrt(mean((v − mean)²) + eps) of a row held in registers as the row kernels hold it (v[j]: the thread's word
   threadIdx.x + j·blockDim.x of nv), in their summation order */
template <int NV> __device__ __forceinline__ float row_rstd(const float (&v)[NV][8], int nv, int d, float mean, float eps, float *red) {
    float q = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int k = threadIdx.x + j * blockDim.x;
        if (k >= nv) continue;
#pragma unroll
        for (int e = 0; e < 8; e++) q += (v[j][e] - mean) * (v[j][e] - mean);
    }
    return rsqrtf(qd_block_sum(q, red) / (float)d + eps);
}

template <int NV>
__global__ void norm_mod_bf16_kernel(bool layer, const __nv_bfloat16 *x, const void *w, int wt, float eps, const void *sc, int st,
                                     const void *sh, int ht, __nv_bfloat16 *y, int d, int rows_per_batch, __nv_fp8_e4m3 *q8,
                                     float *row_scale, float fixed) {
    __shared__ float red[32];
    const int row = blockIdx.x, nv = d / 8;
    const int64_t bd = (int64_t)(row / rows_per_batch) * d;
    const uint4 *xr = (const uint4 *)(x + (int64_t)row * d);
    float v[NV][8];
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int k = threadIdx.x + j * blockDim.x;
        if (k < nv) {
            const uint4 u = xr[k];
            const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float2 f = __bfloat1622float2(h[e]);
                v[j][2 * e] = f.x, v[j][2 * e + 1] = f.y;
                s += f.x + f.y;
            }
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) v[j][e] = 0.0f;
        }
    }
    const float mean = layer ? qd_block_sum(s, red) / (float)d : 0.0f;
    const float r = row_rstd<NV>(v, nv, d, mean, eps, red);
    const bool round_w = w && wt != QD_DTYPE_F32;
    uint4 *yr = q8 ? nullptr : (uint4 *)(y + (int64_t)row * d);
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int k = threadIdx.x + j * blockDim.x;
        if (k >= nv) continue;
        float wv[8], a[8], b[8], o[8];
        if (w) qd_ld8(w, wt, 8 * k, wv);
        if (sc) qd_ld8(sc, st, bd + 8 * k, a);
        else
            for (int e = 0; e < 8; e++) a[e] = 0.0f; /* plain RMSNorm (qd_cuda_rms_norm's wide rows) */
        if (sh) qd_ld8(sh, ht, bd + 8 * k, b);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float n = (v[j][e] - mean) * r;
            if (w) n = (round_w ? qd_round_to(wt, n) : n) * wv[e];
            n = qd_round_to(QD_DTYPE_BF16, n);
            o[e] = n * (1.0f + a[e]) + (sh ? b[e] : 0.0f);
        }
        if (!q8) {
            yr[k] = qd_pack_bf16x8(o);
            continue;
        }
#pragma unroll
        for (int e = 0; e < 8; e++) v[j][e] = qd_round_to(QD_DTYPE_BF16, o[e]), amax = fmaxf(amax, fabsf(v[j][e])); /* y as stored */
    }
    if (q8) qd_row_fp8_codes<NV>(v, nv, amax, red, q8 + (int64_t)row * d, row_scale + row, fixed);
}

/* any dtypes and D: a block per row, x read three times (the second and third from L1/L2) */
__global__ void norm_mod_kernel(bool layer, const void *x, int xt, const void *w, int wt, float eps, const void *sc, int st, const void *sh,
                                int ht, void *y, int yt, int64_t d, int64_t rows_per_batch) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x, base = row * d, bd = (row / rows_per_batch) * d;
    float s = 0.0f;
    if (layer)
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) s += qd_ld(x, xt, base + i);
    const float mean = layer ? qd_block_sum(s, red) / (float)d : 0.0f;
    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = qd_ld(x, xt, base + i) - mean;
        q += v * v;
    }
    const float r = rsqrtf(qd_block_sum(q, red) / (float)d + eps);
    const bool round_w = w && wt != QD_DTYPE_F32;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float n = (qd_ld(x, xt, base + i) - mean) * r;
        if (w) n = (round_w ? qd_round_to(wt, n) : n) * qd_ld(w, wt, i);
        n = qd_round_to(yt, n);
        float o = n * (1.0f + qd_ld(sc, st, bd + i));
        if (sh) o += qd_ld(sh, ht, bd + i);
        qd_st(y, yt, base + i, o);
    }
}

/* the vectorised row kernel when the tensors allow it (BF16 x and y, D % 8 == 0 up to 16384, 16-byte aligned
   rows and vectors); false: the caller runs the generic one. q8 non-NULL: FP8 codes and row scales rs instead of y
   (y NULL), per token or with a static scale (fixed > 0) */
static bool norm_bf16_rows(qd_backend *b, bool layer, const qd_tensor *x, const qd_tensor *w, float eps, const void *sc, int st,
                           const void *sh, int ht, qd_tensor *y, int64_t rows, int64_t d, int64_t rpb, __nv_fp8_e4m3 *q8, float *rs,
                           float fixed) {
    const int64_t nv = d / 8;
    const void *wd = w ? w->data : NULL;
    const bool out_ok = q8 ? qd_cuda_aligned16(q8) : y->dtype == QD_DTYPE_BF16 && qd_cuda_aligned16(y->data);
    if (x->dtype != QD_DTYPE_BF16 || !out_ok || d % 8 || nv > 2048 || !qd_cuda_aligned16(x->data) || (w && !qd_cuda_aligned16(wd)) ||
        (sh && !qd_cuda_aligned16(sh)))
        return false;
    const int per = nv <= 256 ? 1 : nv <= 512 ? 2 : nv <= 1024 ? 4 : 8;
    const int threads = (int)((nv + per - 1) / per + 31) / 32 * 32;
    const __nv_bfloat16 *xp = (const __nv_bfloat16 *)x->data;
    __nv_bfloat16 *yp = q8 ? NULL : (__nv_bfloat16 *)y->data;
    const int wt = w ? w->dtype : 0;
    cudaStream_t stream = qd_cuda_of(b)->stream;
#define NM(P) norm_mod_bf16_kernel<P><<<(unsigned)rows, threads, 0, stream>>>(layer, xp, wd, wt, eps, sc, st, sh, ht, yp, (int)d, (int)rpb, q8, rs, fixed)
    if (per == 1) NM(1);
    else if (per == 2) NM(2);
    else if (per == 4) NM(4);
    else NM(8);
#undef NM
    return true;
}

/* ---- rms_norm_gated_add (backend.h): x += gate·rms_norm(o, w) with the next norm of x out of the same pass. The
   statements are norm_mod_bf16_kernel's (same per-thread layout, sums and roundings, launched with norm_bf16_rows'
   threads), so that o's norm, the add (gated_add_bf16x8_kernel's arithmetic) and the next norm equal the three ops
   to the bit. ---- */

/* at most 64 registers for rows of up to 2 words a thread: 4 blocks of 256 threads per SM (67 without the bound) */
template <int NV>
__global__ void __launch_bounds__(256, NV <= 2 ? 4 : 1) norm_add_bf16_kernel(const __nv_bfloat16 *o, const void *w, int wt, float eps, const void *g, int gt, __nv_bfloat16 *x, int d,
                                     int rows_per_batch, const void *w2, int w2t, const void *sc2, int sc2t, __nv_bfloat16 *y2,
                                     __nv_fp8_e4m3 *q8, float *row_scale, float fixed) {
    __shared__ float red[32];
    const int row = blockIdx.x, nv = d / 8;
    const int64_t bd = (int64_t)(row / rows_per_batch) * d;
    const uint4 *orow = (const uint4 *)(o + (int64_t)row * d);
    uint4 *xrow = (uint4 *)(x + (int64_t)row * d);
    float v[NV][8];
    uint4 xw[NV]; /* x's words, read with o's before the reduction rather than after it */
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int k = threadIdx.x + j * blockDim.x;
        if (k < nv) {
            const uint4 ow = orow[k];
            xw[j] = xrow[k];
            qd_bf16x8_f32(ow, v[j]);
        } else
#pragma unroll
            for (int e = 0; e < 8; e++) v[j][e] = 0.0f;
    }
    const float r = row_rstd<NV>(v, nv, d, 0.0f, eps, red);
    const bool round_w = w && wt != QD_DTYPE_F32;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int k = threadIdx.x + j * blockDim.x;
        if (k >= nv) continue;
        float wv[8], gv[8], xv[8], on[8];
        if (w) qd_ld8(w, wt, 8 * k, wv);
        if (g) qd_ld8(g, gt, bd + 8 * k, gv);
        qd_bf16x8_f32(xw[j], xv);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float n = (v[j][e] - 0.0f) * r; /* rms_norm's x̂, rounded to BF16 as it stores it */
            if (w) n = (round_w ? qd_round_to(wt, n) : n) * wv[e];
            n = qd_round_to(QD_DTYPE_BF16, n);
            on[e] = n * (1.0f + 0.0f) + 0.0f;
            float a = on[e];
            if (g) a *= gv[e];
            v[j][e] = qd_round_to(QD_DTYPE_BF16, xv[e] + a); /* the residual as gated_add stores it */
        }
        xrow[k] = qd_pack_bf16x8(v[j]);
    }
    if (!sc2) return;
    /* the next norm, norm_modulate(RMS, x, w2, eps, sc2, NULL), of the row just written */
    const float r2 = row_rstd<NV>(v, nv, d, 0.0f, eps, red);
    const bool round_w2 = w2 && w2t != QD_DTYPE_F32;
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int k = threadIdx.x + j * blockDim.x;
        if (k >= nv) continue;
        float wv[8], a[8], out[8];
        if (w2) qd_ld8(w2, w2t, 8 * k, wv);
        qd_ld8(sc2, sc2t, bd + 8 * k, a);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float n = (v[j][e] - 0.0f) * r2;
            if (w2) n = (round_w2 ? qd_round_to(w2t, n) : n) * wv[e];
            n = qd_round_to(QD_DTYPE_BF16, n);
            out[e] = n * (1.0f + a[e]) + 0.0f;
        }
        if (!q8) {
            ((uint4 *)(y2 + (int64_t)row * d))[k] = qd_pack_bf16x8(out);
            continue;
        }
#pragma unroll
        for (int e = 0; e < 8; e++) v[j][e] = qd_round_to(QD_DTYPE_BF16, out[e]), amax = fmaxf(amax, fabsf(v[j][e]));
    }
    if (q8) qd_row_fp8_codes<NV>(v, nv, amax, red, q8 + (int64_t)row * d, row_scale + row, fixed);
}

extern "C" qd_status qd_cuda_rms_norm_gated_add(qd_backend *b, const qd_tensor *o, const qd_tensor *w, float eps, const qd_tensor *gate, qd_tensor *x,
                                                const qd_tensor *next_w, const qd_tensor *next_scale, qd_tensor *next_y, float fixed_scale,
                                                qd_tensor *codes, qd_tensor *row_scale) {
    const char *op = "rms_norm_gated_add";
    qd_status s = QD_OK;
    if ((s = qd_cuda_check_float(op, "o", o)) || (s = qd_cuda_check_float(op, "x", x)) || (w && (s = qd_cuda_check_float(op, "w", w))) ||
        (gate && (s = qd_cuda_check_float(op, "gate", gate))) || (next_w && (s = qd_cuda_check_float(op, "next_w", next_w))) ||
        (next_scale && (s = qd_cuda_check_float(op, "next_scale", next_scale))))
        return s;
    if (o->rank < 2 || !qd_cuda_same_shape(o, x)) return qd_fail(QD_EINVAL, "cuda %s: o and x must be [B, ..., D] of one shape", op);
    const int64_t d = x->shape[x->rank - 1], rows = d ? qd_tensor_elements(x) / d : 0, B = x->shape[0];
    if ((w && qd_tensor_elements(w) != d) || (next_w && qd_tensor_elements(next_w) != d))
        return qd_fail(QD_EINVAL, "cuda %s: the norm weights must hold D = %lld values", op, (long long)d);
    if ((gate && qd_tensor_elements(gate) != B * d) || (next_scale && qd_tensor_elements(next_scale) != B * d))
        return qd_fail(QD_EINVAL, "cuda %s: gate and next_scale must hold [B, D] = [%lld, %lld] values", op, (long long)B, (long long)d);
    if (next_scale && !next_y && !codes) return qd_fail(QD_EINVAL, "cuda %s: a next norm needs an output (next_y, or codes and row scales)", op);
    if (codes && (x->dtype != QD_DTYPE_BF16 || codes->dtype != QD_DTYPE_F8_E4M3 || !row_scale || row_scale->dtype != QD_DTYPE_F32 ||
                  qd_tensor_elements(codes) != rows * d || qd_tensor_elements(row_scale) != rows))
        return qd_fail(QD_EINVAL, "cuda %s: BF16 x's next norm into codes of x's shape (F8_E4M3) and %lld row scales (F32)", op, (long long)rows);
    if (next_y && !codes && (!qd_cuda_same_shape(next_y, x) || (s = qd_cuda_check_float(op, "next_y", next_y))))
        return s ? s : qd_fail(QD_EINVAL, "cuda %s: next_y must have x's shape", op);
    if (!rows) return QD_OK;
    const int64_t nv = d / 8;
    const bool ok16 = [&] {
        const void *p[] = {o->data, x->data, w ? w->data : NULL, gate ? gate->data : NULL, next_w ? next_w->data : NULL,
                           next_scale ? next_scale->data : NULL, codes ? codes->data : next_y ? next_y->data : NULL};
        for (const void *q : p)
            if (q && !qd_cuda_aligned16(q)) return false;
        return true;
    }();
    /* the row kernel only where rms_norm runs norm_bf16_rows too (D > 1024): its rows of at most 1024 take rms_warp_kernel,
       whose sums of squares are in another order, and the op must equal the composition bit for bit (the op harness
       found a code and an x value apart at D 512 on an H200) */
    const bool vec = o->dtype == QD_DTYPE_BF16 && x->dtype == QD_DTYPE_BF16 && (codes || !next_y || next_y->dtype == QD_DTYPE_BF16) && d % 8 == 0 &&
                     d > 1024 && nv <= 2048 && ok16;
    if (!vec) { /* the composition: rms_norm into scratch, gated_add, the next norm */
        qd_tensor on = *o;
        on.backend = NULL;
        if ((s = qd_cuda_scratch(qd_cuda_of(b), qd_tensor_bytes(o), &on.data))) return s;
        s = qd_cuda_rms_norm(b, o, w, eps, &on);
        if (!s) s = qd_cuda_gated_add(b, x, &on, gate, x);
        qd_cuda_scratch_free(qd_cuda_of(b), on.data);
        if (!s && next_scale)
            s = codes ? qd_cuda_norm_modulate_fp8(b, QD_NORM_RMS, x, next_w, eps, next_scale, NULL, fixed_scale, codes, row_scale)
                      : qd_cuda_norm_modulate(b, QD_NORM_RMS, x, next_w, eps, next_scale, NULL, next_y);
        return s;
    }
    const int per = nv <= 256 ? 1 : nv <= 512 ? 2 : nv <= 1024 ? 4 : 8; /* norm_bf16_rows' layout: the same sums */
    const int threads = (int)((nv + per - 1) / per + 31) / 32 * 32;
    const cudaStream_t stream = qd_cuda_of(b)->stream;
    const __nv_bfloat16 *op_ = (const __nv_bfloat16 *)o->data;
    __nv_bfloat16 *xp = (__nv_bfloat16 *)x->data, *yp = next_scale && !codes ? (__nv_bfloat16 *)next_y->data : NULL;
    __nv_fp8_e4m3 *q8 = next_scale && codes ? (__nv_fp8_e4m3 *)codes->data : NULL;
    float *rs = q8 ? (float *)row_scale->data : NULL;
#define NA(P)                                                                                                                              \
    norm_add_bf16_kernel<P><<<(unsigned)rows, threads, 0, stream>>>(op_, w ? w->data : NULL, w ? w->dtype : 0, eps, gate ? gate->data : NULL,  \
                                                                  gate ? gate->dtype : 0, xp, (int)d, (int)(rows / B), next_w ? next_w->data : NULL, \
                                                                  next_w ? next_w->dtype : 0, next_scale ? next_scale->data : NULL,            \
                                                                  next_scale ? next_scale->dtype : 0, yp, q8, rs, fixed_scale)
    if (per == 1) NA(1);
    else if (per == 2) NA(2);
    else if (per == 4) NA(4);
    else NA(8);
#undef NA
    QD_CUDA_LAUNCHED(op);
    return QD_OK;
}

/* norm_modulate quantized for an FP8 linear (backend.h norm_modulate_fp8): the vectorised row kernel only */
extern "C" qd_status qd_cuda_norm_modulate_fp8(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps,
                                               const qd_tensor *scale, const qd_tensor *shift, float fixed_scale, qd_tensor *codes,
                                               qd_tensor *row_scale) {
    const char *op = "norm_modulate_fp8";
    if (kind != QD_NORM_LAYER && kind != QD_NORM_RMS) return qd_fail(QD_EINVAL, "cuda %s: unknown norm kind %d", op, (int)kind);
    if (kind == QD_NORM_LAYER && w) return qd_fail(QD_EINVAL, "cuda %s: LayerNorm here has no affine weight (w must be NULL)", op);
    if (x->rank < 2 || x->dtype != QD_DTYPE_BF16 || codes->dtype != QD_DTYPE_F8_E4M3 || row_scale->dtype != QD_DTYPE_F32 ||
        qd_tensor_elements(codes) != qd_tensor_elements(x))
        return qd_fail(QD_EINVAL, "cuda %s: x [B, L, D] BF16 into codes of its shape (F8_E4M3) and row scales (F32)", op);
    const int64_t d = x->shape[x->rank - 1], rows = qd_tensor_elements(x) / (d ? d : 1), B = x->shape[0];
    if (qd_tensor_elements(row_scale) != rows) return qd_fail(QD_EINVAL, "cuda %s: %lld row scales for %lld rows", op, (long long)qd_tensor_elements(row_scale), (long long)rows);
    qd_status s = QD_OK;
    if ((s = qd_cuda_check_float(op, "scale", scale)) || (shift && (s = qd_cuda_check_float(op, "shift", shift)))) return s;
    if (qd_tensor_elements(scale) != B * d || (shift && qd_tensor_elements(shift) != B * d))
        return qd_fail(QD_EINVAL, "cuda %s: scale and shift must hold [B, D] = [%lld, %lld] values", op, (long long)B, (long long)d);
    if (!rows) return QD_OK;
    const void *hd = shift ? shift->data : NULL;
    const int ht = shift ? shift->dtype : 0;
    if (!qd_cuda_aligned16(scale->data) || !norm_bf16_rows(b, kind == QD_NORM_LAYER, x, w, eps, scale->data, scale->dtype, hd, ht, NULL, rows, d,
                                                           rows / B, (__nv_fp8_e4m3 *)codes->data, (float *)row_scale->data, fixed_scale))
        return qd_fail(QD_EUNSUPPORTED, "cuda %s: rows of D %% 8 == 0 up to 16384, 16-byte aligned", op);
    QD_CUDA_LAUNCHED("norm_modulate_fp8");
    return QD_OK;
}

extern "C" qd_status qd_cuda_norm_modulate(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps,
                                           const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y) {
    const char *op = "norm_modulate";
    if (kind != QD_NORM_LAYER && kind != QD_NORM_RMS) return qd_fail(QD_EINVAL, "cuda norm_modulate: unknown norm kind %d", (int)kind);
    if (kind == QD_NORM_LAYER && w) return qd_fail(QD_EINVAL, "cuda norm_modulate: LayerNorm here has no affine weight (w must be NULL)");
    int64_t rows = 0, d = 0;
    qd_status s = rows_of(op, x, y, w, &rows, &d);
    if (s) return s;
    if (x->rank < 2) return qd_fail(QD_EINVAL, "cuda norm_modulate: x must be [B, L, D]");
    const int64_t B = x->shape[0];
    if ((s = qd_cuda_check_float(op, "scale", scale)) || (shift && (s = qd_cuda_check_float(op, "shift", shift)))) return s;
    if (qd_tensor_elements(scale) != B * d || (shift && qd_tensor_elements(shift) != B * d))
        return qd_fail(QD_EINVAL, "cuda norm_modulate: scale and shift must hold [B, D] = [%lld, %lld] values", (long long)B, (long long)d);
    if (!rows) return QD_OK;
    const bool layer = kind == QD_NORM_LAYER;
    const int64_t rpb = rows / B;
    cudaStream_t stream = qd_cuda_of(b)->stream;
    const void *wd = w ? w->data : NULL, *hd = shift ? shift->data : NULL;
    const int wt = w ? w->dtype : 0, ht = shift ? shift->dtype : 0;
    if (!qd_cuda_aligned16(scale->data) || !norm_bf16_rows(b, layer, x, w, eps, scale->data, scale->dtype, hd, ht, y, rows, d, rpb, NULL, NULL)) {
        norm_mod_kernel<<<(unsigned)rows, 256, 0, stream>>>(layer, x->data, x->dtype, wd, wt, eps, scale->data, scale->dtype, hd, ht, y->data,
                                                            y->dtype, d, rpb);
    }
    QD_CUDA_LAUNCHED("norm_modulate");
    return QD_OK;
}
