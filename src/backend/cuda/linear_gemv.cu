/* Dense and FP8 linears with few rows on the GPU (M ≤ GEMV_ROWS): FLUX's modulation linears (M = 1, silu(temb)
 * into 6·3072 or 3·3072 shifts, scales and gates, ~57 per step), the time / guidance / pooled-text embedders,
 * CFG pairs. cuBLASLt's matmuls read such a weight well below HBM bandwidth (measured on the H200 at M = 1:
 * BF16 ~2.7 TB/s, FP8 ~1.2 TB/s, of ~4.8); these kernels stream every weight byte once, with 16-byte loads,
 * and take the few dot products on CUDA cores in f32.
 *
 *   dense  BF16 / F16 / F32 weights, F32 / BF16 / F16 activations: y = Σ_k x·w + bias, f32 accumulation. Every
 *          product is the one the matmul path forms (two 16-bit values: exact in f32; with an f32 operand the
 *          f32 FMA), so the result differs from cuBLASLt's by the order of the f32 additions only.
 *   fp8    E4M3 weights with a per-channel or per-tensor scale: the activations quantized by the matmul path's
 *          own kernels (linear.cu: per token, per tensor, static input_scale — same scales, same codes), each
 *          code handed over as its exact BF16 value; y = (Σ_k q_x·q_w)·s_x[m]·s_w[n] + bias, every product exact
 *          in f32 (two 4-bit significands).
 *   fp8 128×128 blocks: 1×128 activation groups (the same kernel as the matmul path), and
 *          y = Σ_g (Σ_{k∈g} q_x·q_w)·s_x[m,g]·s_w[n/128,g] + bias, the scales applied to partial sums of 8.
 * The bias is the f32 effective bias (cuBLASLt's FP8 epilogue into BF16 adds a BF16 copy of it instead), and
 * GELU-tanh, when the layer asks for it and the caller lets the epilogue apply it (*gelu), is applied before
 * the one rounding into y.
 *
 * Work split: a block of 4 warps owns GEMV_OUT = 4 consecutive output rows (4608 blocks for N = 18432: a short
 * last wave). Its 128 threads stride along K in 16-byte chunks of all 4 rows — the next chunk of each row is
 * loaded before the current one is used, so 8 loads per thread are in flight — and keep f32 sums for every
 * (input row, output row) pair; shuffles reduce them across a warp, shared memory across the 4 warps, in a fixed
 * order (the result does not depend on timing). Weights are loaded with L1::no_allocate, read once, so that the
 * activations, which every block reads, stay in L1. Nothing allocates or synchronises: dense layers are one
 * kernel, FP8 ones the quantization kernel(s) on stream-ordered scratch and this kernel, all recordable into a
 * step graph.
 * linear_many's layers of one input (FLUX.1's modulations of every block) run as one gemv_group_kernel launch over
 * all their weights (see the end of this file).
 * What the kernels assume, checked by qd_cuda_gemv_covers (else the matmul path runs): weight rows of a multiple
 * of 16 bytes (dense: K·size % 16 == 0, so BF16 K % 8 and F32 K % 4; FP8 rows are stored padded to Kp), 16-byte
 * aligned weights and dense inputs. QDIT_CUDA_NO_GEMV sends every layer to the matmul path (for checks). */
#include "backend/cuda/linear_internal.cuh"

#define GEMV_OUT 4       /* output rows per block */
#define GEMV_THREADS 128 /* threads per block, all along K */

typedef struct {
    const uint8_t *w; /* weight rows of w_ld bytes, `chunks` 16-byte chunks each */
    int64_t w_ld, chunks;
    const void *x;    /* activations (FP8: the codes' BF16 values), rows of x_ld elements */
    int64_t x_ld;
    int m;
    int64_t n;
    const float *sx;  /* FP8: activation scales, [M] (per row) or [K/128][M] (groups) */
    const float *sw;  /* FP8: weight scales, [Np] (per channel; a per-tensor scale repeated) or [N/128][kb] */
    int64_t kb;       /* FP8 blocks: the block scales' row stride (K/128 padded, qd_cuda_block_scale_ld) */
    const float *bias;
    bool gelu;
    void *y;
    int yt;
} gemv_args;

/* the values in one 16-byte weight chunk (V) and how many the inner loop takes at once (S: 8, one 16-byte load
 * of 16-bit activations) */
template <int WT> struct gemv_w {
    static constexpr int V = WT == QD_DTYPE_F32 ? 4 : WT == QD_DTYPE_F8_E4M3 ? 16 : 8;
    static constexpr int S = V < 8 ? V : 8;
};

/* chunk c of each of the R rows (zeros past the row's end) */
template <int R> __device__ __forceinline__ void load_rows(const uint8_t *const *wr, int64_t c, int64_t chunks, uint4 *u) {
    if (c < chunks) {
#pragma unroll
        for (int r = 0; r < R; r++) u[r] = ld_stream(wr[r] + c * 16);
    } else {
#pragma unroll
        for (int r = 0; r < R; r++) u[r] = make_uint4(0, 0, 0, 0);
    }
}

/* values [h·S, h·S + S) of a weight chunk as f32, exactly */
template <int WT> __device__ __forceinline__ void decode_w(const uint4 &u, int h, float *v) {
    const uint32_t wd[4] = {u.x, u.y, u.z, u.w};
    if constexpr (WT == QD_DTYPE_F32) {
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = __uint_as_float(wd[j]);
    } else if constexpr (WT == QD_DTYPE_BF16) {
#pragma unroll
        for (int j = 0; j < 4; j++) v[2 * j] = __uint_as_float(wd[j] << 16), v[2 * j + 1] = __uint_as_float(wd[j] & 0xffff0000u);
    } else if constexpr (WT == QD_DTYPE_F16) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float2 f = __half22float2(*(const __half2 *)&wd[j]);
            v[2 * j] = f.x, v[2 * j + 1] = f.y;
        }
    } else { /* E4M3: bytes 8h .. 8h + 7, two at a time to F16 (every E4M3 value is exact there), then f32 */
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(wd[2 * h + j / 2] >> (16 * (j % 2))), __NV_E4M3);
            const float2 f = __half22float2(__half2(r));
            v[2 * j] = f.x, v[2 * j + 1] = f.y;
        }
    }
}

/* S consecutive activations from element i as f32 (i a multiple of S, the row base 16-byte aligned) */
template <int XT, int S> __device__ __forceinline__ void load_x(const void *x, int64_t i, float *v) {
    if constexpr (XT == QD_DTYPE_F32) {
        const float4 *p = (const float4 *)((const float *)x + i);
#pragma unroll
        for (int q = 0; q < S / 4; q++) {
            const float4 f = p[q];
            v[4 * q] = f.x, v[4 * q + 1] = f.y, v[4 * q + 2] = f.z, v[4 * q + 3] = f.w;
        }
    } else {
        const uint16_t *p = (const uint16_t *)x + i;
        uint32_t u[S / 2];
        if constexpr (S == 8) {
            const uint4 t = *(const uint4 *)p;
            u[0] = t.x, u[1] = t.y, u[2] = t.z, u[3] = t.w;
        } else {
            const uint2 t = *(const uint2 *)p;
            u[0] = t.x, u[1] = t.y;
        }
#pragma unroll
        for (int j = 0; j < S / 2; j++) {
            if constexpr (XT == QD_DTYPE_BF16) {
                v[2 * j] = __uint_as_float(u[j] << 16), v[2 * j + 1] = __uint_as_float(u[j] & 0xffff0000u);
            } else {
                const float2 f = __half22float2(*(const __half2 *)&u[j]);
                v[2 * j] = f.x, v[2 * j + 1] = f.y;
            }
        }
    }
}

/* MT: rows of x the sums are kept for (m ≤ MT; rows past m repeat row m − 1 and are not stored); blk: the block's
   group of GEMV_OUT output rows */
template <int WT, int XT, int MT, bool BLOCK> __device__ __forceinline__ void gemv_rows(const gemv_args &a, int64_t blk) {
    constexpr int V = gemv_w<WT>::V, S = gemv_w<WT>::S, R = GEMV_OUT;
    __shared__ float red[GEMV_THREADS / 32][MT * R];
    const int64_t r0 = blk * R;
    const uint8_t *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = a.w + (r0 + r < a.n ? r0 + r : a.n - 1) * a.w_ld; /* past N: the last row again, not stored */
    int64_t xo[MT];
#pragma unroll
    for (int i = 0; i < MT; i++) xo[i] = (int64_t)(i < a.m ? i : a.m - 1) * a.x_ld;
    float acc[MT][R];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[i][r] = 0.0f;
    int64_t c = threadIdx.x;
    uint4 cur[R];
    load_rows<R>(wr, c, a.chunks, cur);
    for (; c < a.chunks; c += GEMV_THREADS) {
        uint4 nxt[R];
        load_rows<R>(wr, c + GEMV_THREADS, a.chunks, nxt);
        float gs[MT]; /* blocks: s_x[m, g]·s_w[n/128, g] of this chunk's 128-column group g */
        if constexpr (BLOCK) {
            const int64_t g = c * V / 128;
            const float swg = a.sw[(r0 / 128) * a.kb + g];
#pragma unroll
            for (int i = 0; i < MT; i++) gs[i] = a.sx[g * a.m + (i < a.m ? i : a.m - 1)] * swg;
        }
#pragma unroll
        for (int h = 0; h < V / S; h++) {
            float wv[R][S];
#pragma unroll
            for (int r = 0; r < R; r++) decode_w<WT>(cur[r], h, wv[r]);
#pragma unroll
            for (int i = 0; i < MT; i++) {
                float xv[S];
                load_x<XT, S>(a.x, xo[i] + c * V + h * S, xv);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    if constexpr (BLOCK) {
                        float t = 0.0f;
#pragma unroll
                        for (int j = 0; j < S; j++) t = fmaf(wv[r][j], xv[j], t);
                        acc[i][r] = fmaf(t, gs[i], acc[i][r]);
                    } else {
#pragma unroll
                        for (int j = 0; j < S; j++) acc[i][r] = fmaf(wv[r][j], xv[j], acc[i][r]);
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) cur[r] = nxt[r];
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
    for (int w = 0; w < GEMV_THREADS / 32; w++) v += red[w][t];
    if constexpr (WT == QD_DTYPE_F8_E4M3 && !BLOCK) v = v * a.sx[i] * a.sw[row];
    if (a.bias) v += a.bias[row];
    if (a.gelu) v = qd_gelu_tanh(v);
    qd_st(a.y, a.yt, i * a.n + row, v);
}

template <int WT, int XT, int MT, bool BLOCK> __global__ void __launch_bounds__(GEMV_THREADS) gemv_kernel(const gemv_args a) {
    gemv_rows<WT, XT, MT, BLOCK>(a, blockIdx.x);
}

/* linear_many's layers in one launch: what they share (x, its scales, K, the output dtype) in a, and per layer its
   weight, weight scales, bias, output and N, with the first block of its rows. The table travels as the kernel's
   parameter (__grid_constant__: read where it lies, not copied per thread), up to QD_LINEAR_MANY layers (6 KB). */
typedef struct {
    const uint8_t *w;
    const float *sw, *bias;
    void *y;
    int64_t n, block0;
} gemv_seg;
typedef struct {
    gemv_args a;
    int nseg;
    gemv_seg seg[QD_LINEAR_MANY];
} gemv_group;

template <int WT, int XT, int MT> __global__ void __launch_bounds__(GEMV_THREADS) gemv_group_kernel(const __grid_constant__ gemv_group g) {
    int lo = 0, hi = g.nseg - 1; /* the last layer whose rows start at or before this block */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (g.seg[mid].block0 <= (int64_t)blockIdx.x) lo = mid;
        else hi = mid - 1;
    }
    gemv_args a = g.a;
    a.w = g.seg[lo].w, a.sw = g.seg[lo].sw, a.bias = g.seg[lo].bias, a.y = g.seg[lo].y, a.n = g.seg[lo].n;
    gemv_rows<WT, XT, MT, false>(a, (int64_t)blockIdx.x - g.seg[lo].block0);
}

template <int WT, int XT, bool BLOCK> static void launch(qd_cuda *c, const gemv_args &a) {
    const unsigned blocks = (unsigned)((a.n + GEMV_OUT - 1) / GEMV_OUT);
    if (a.m == 1) gemv_kernel<WT, XT, 1, BLOCK><<<blocks, GEMV_THREADS, 0, c->stream>>>(a);
    else if (a.m == 2) gemv_kernel<WT, XT, 2, BLOCK><<<blocks, GEMV_THREADS, 0, c->stream>>>(a);
    else if (a.m <= 4) gemv_kernel<WT, XT, 4, BLOCK><<<blocks, GEMV_THREADS, 0, c->stream>>>(a);
    else gemv_kernel<WT, XT, GEMV_ROWS, BLOCK><<<blocks, GEMV_THREADS, 0, c->stream>>>(a);
}

template <int WT> static void launch_dense(qd_cuda *c, const gemv_args &a, qd_dtype xt) {
    if (xt == QD_DTYPE_BF16) launch<WT, QD_DTYPE_BF16, false>(c, a);
    else if (xt == QD_DTYPE_F16) launch<WT, QD_DTYPE_F16, false>(c, a);
    else launch<WT, QD_DTYPE_F32, false>(c, a);
}

static bool fp8_act_covered(const qd_linear *l) {
    return l->act == QD_ACT_DYNAMIC_TOKEN || l->act == QD_ACT_DYNAMIC_TENSOR || l->act == QD_ACT_STATIC_TENSOR;
}

bool qd_cuda_gemv_covers(const qd_linear *l, const cuda_linear *d, const qd_tensor *x) {
    if (!qd_cuda_aligned16(d->w)) return false;
    if (l->scheme == QD_SCHEME_DENSE) {
        if (d->wt != QD_DTYPE_BF16 && d->wt != QD_DTYPE_F16 && d->wt != QD_DTYPE_F32) return false;
        return qd_cuda_aligned16(x->data) && l->in_features * (qd_dtype_bits(d->wt) / 8) % 16 == 0;
    }
    if (l->scheme == QD_SCHEME_FP8)
        return d->wt == QD_DTYPE_F8_E4M3 && (d->block || fp8_act_covered(l)) && d->kp % 16 == 0;
    return false;
}

/* *gelu in: apply GELU-tanh to the output; out: unchanged (the kernel applied it, or it was not asked for) */
qd_status qd_cuda_gemv_linear(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu) {
    gemv_args a = {};
    a.m = (int)m, a.n = l->out_features;
    a.w = (const uint8_t *)d->w;
    a.bias = d->bias, a.gelu = *gelu;
    a.y = y->data, a.yt = y->dtype;
    if (l->scheme == QD_SCHEME_DENSE) {
        a.w_ld = l->in_features * (qd_dtype_bits(d->wt) / 8), a.chunks = a.w_ld / 16;
        a.x = x->data, a.x_ld = l->in_features;
        if (d->wt == QD_DTYPE_BF16) launch_dense<QD_DTYPE_BF16>(c, a, x->dtype);
        else if (d->wt == QD_DTYPE_F16) launch_dense<QD_DTYPE_F16>(c, a, x->dtype);
        else launch_dense<QD_DTYPE_F32>(c, a, x->dtype);
        QD_CUDA_LAUNCHED("dense gemv");
        return QD_OK;
    }
    __nv_bfloat16 *q = NULL;
    float *sx = NULL;
    qd_status s = qd_cuda_fp8_act_bf16(c, l, d, x, m, &q, &sx);
    if (s) return s;
    a.w_ld = d->kp, a.chunks = d->kp / 16;
    a.x = q, a.x_ld = d->kp;
    a.sx = sx;
    if (d->block) {
        a.sw = d->wscale, a.kb = qd_cuda_block_scale_ld(d->kp); /* the scales' row stride on the device */
        launch<QD_DTYPE_F8_E4M3, QD_DTYPE_BF16, true>(c, a);
    } else {
        a.sw = d->wscale_vec;
        launch<QD_DTYPE_F8_E4M3, QD_DTYPE_BF16, false>(c, a);
    }
    cudaError_t e = cudaGetLastError();
    qd_cuda_scratch_free(c, q), qd_cuda_scratch_free(c, sx);
    return e == cudaSuccess ? QD_OK : qd_cuda_fail(e, "fp8 gemv");
}

/* ---- linear_many (backend.h): the layers' GEMVs in one kernel ----
   Where every layer is a GEMV of the same kind — dense with one weight dtype, or FP8 per channel / per tensor with
   per-token activations — over the same K, with no output activation and outputs of one dtype, x is quantized once
   (FP8: every layer would make the same codes and scales from it) and one gemv_group_kernel launch reads every
   weight: FLUX.1's 76 modulation linears (3.2 GB in FP8) in one pass instead of 76 launches of 1-2 waves each and
   their quantizations. Each output row is computed by the same statements as gemv_kernel's, so the results equal the
   separate calls' bit for bit. Otherwise the layers run one by one. */
static bool group_kind(const qd_linear *l, const cuda_linear *d, const qd_linear *l0, const cuda_linear *d0, const qd_tensor *x, const qd_tensor *y,
                       const qd_tensor *y0) {
    if (!qd_cuda_gemv_covers(l, d, x) || l->out_act != QD_OUT_ACT_NONE || l->in_features != l0->in_features || l->scheme != l0->scheme ||
        y->dtype != y0->dtype || qd_tensor_elements(y) != qd_tensor_elements(x) / l->in_features * l->out_features)
        return false;
    if (l->scheme == QD_SCHEME_DENSE) return d->wt == d0->wt;
    return !d->block && l->act == QD_ACT_DYNAMIC_TOKEN && l0->act == QD_ACT_DYNAMIC_TOKEN && d->kp == d0->kp;
}

template <int WT, int XT> static void launch_group(qd_cuda *c, const gemv_group &g, int64_t blocks) {
    if (g.a.m == 1) gemv_group_kernel<WT, XT, 1><<<(unsigned)blocks, GEMV_THREADS, 0, c->stream>>>(g);
    else if (g.a.m == 2) gemv_group_kernel<WT, XT, 2><<<(unsigned)blocks, GEMV_THREADS, 0, c->stream>>>(g);
    else if (g.a.m <= 4) gemv_group_kernel<WT, XT, 4><<<(unsigned)blocks, GEMV_THREADS, 0, c->stream>>>(g);
    else gemv_group_kernel<WT, XT, GEMV_ROWS><<<(unsigned)blocks, GEMV_THREADS, 0, c->stream>>>(g);
}

extern "C" qd_status qd_cuda_linear_many(qd_backend *b, qd_linear *const *ls, int n, const qd_tensor *x, qd_tensor *const *ys) {
    qd_cuda *c = qd_cuda_of(b);
    const int64_t k = n > 0 ? ls[0]->in_features : 0, m = k > 0 && x->rank >= 1 && x->shape[x->rank - 1] == k ? qd_tensor_elements(x) / k : 0;
    const cuda_linear *d[QD_LINEAR_MANY];
    bool one = n >= 2 && n <= QD_LINEAR_MANY && m >= 1 && m <= GEMV_ROWS && !c->no_gemv && !c->no_many && qd_cuda_float_dtype(x->dtype);
    for (int i = 0; one && i < n; i++)
        one = !qd_cuda_linear_ready(ls[i], &d[i]) && qd_cuda_float_dtype(ys[i]->dtype) && group_kind(ls[i], d[i], ls[0], d[0], x, ys[i], ys[0]);
    if (!one) {
        qd_status s = QD_OK;
        for (int i = 0; i < n && !s; i++) s = qd_cuda_linear(b, ls[i], x, ys[i]);
        return s;
    }
    gemv_group g = {};
    g.a.m = (int)m, g.a.yt = ys[0]->dtype;
    int64_t blocks = 0;
    for (int i = 0; i < n; i++) {
        g.seg[i].w = (const uint8_t *)d[i]->w, g.seg[i].bias = d[i]->bias, g.seg[i].y = ys[i]->data, g.seg[i].n = ls[i]->out_features;
        g.seg[i].sw = ls[i]->scheme == QD_SCHEME_FP8 ? d[i]->wscale_vec : NULL;
        g.seg[i].block0 = blocks;
        blocks += (ls[i]->out_features + GEMV_OUT - 1) / GEMV_OUT;
    }
    g.nseg = n;
    if (ls[0]->scheme == QD_SCHEME_DENSE) {
        g.a.w_ld = k * (qd_dtype_bits(d[0]->wt) / 8), g.a.chunks = g.a.w_ld / 16;
        g.a.x = x->data, g.a.x_ld = k;
#define LG(WT)                                                                                                            \
    (x->dtype == QD_DTYPE_BF16 ? launch_group<WT, QD_DTYPE_BF16>(c, g, blocks)                                           \
     : x->dtype == QD_DTYPE_F16 ? launch_group<WT, QD_DTYPE_F16>(c, g, blocks)                                            \
                                : launch_group<WT, QD_DTYPE_F32>(c, g, blocks))
        if (d[0]->wt == QD_DTYPE_BF16) LG(QD_DTYPE_BF16);
        else if (d[0]->wt == QD_DTYPE_F16) LG(QD_DTYPE_F16);
        else LG(QD_DTYPE_F32);
#undef LG
        QD_CUDA_LAUNCHED("dense gemv (many layers)");
        return QD_OK;
    }
    __nv_bfloat16 *q = NULL;
    float *sx = NULL;
    qd_status s = qd_cuda_fp8_act_bf16(c, ls[0], d[0], x, m, &q, &sx); /* the codes and scales every layer would make */
    if (s) return s;
    g.a.w_ld = d[0]->kp, g.a.chunks = d[0]->kp / 16;
    g.a.x = q, g.a.x_ld = d[0]->kp;
    g.a.sx = sx;
    launch_group<QD_DTYPE_F8_E4M3, QD_DTYPE_BF16>(c, g, blocks);
    cudaError_t e = cudaGetLastError();
    qd_cuda_scratch_free(c, q), qd_cuda_scratch_free(c, sx);
    return e == cudaSuccess ? QD_OK : qd_cuda_fail(e, "fp8 gemv (many layers)");
}
