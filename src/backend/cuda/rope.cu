/* RoPE on the GPU: x [B, L, H, D] rotated by cos/sin [L, D/2] (F32), interleaved pairs (x[2i], x[2i+1])
 * for the DiTs or rotate-half pairs (x[i], x[i+D/2]) for the text encoders (rope.c has the formulas).
 * One thread per pair; both members are read before either is written, so in place is safe. Also the
 * fused per-head RMSNorm + RoPE of the DiTs' q and k (rms_norm_rope). */
#include "backend/cuda/cuda_internal.cuh"

template <typename I>
__global__ void rope_kernel(const void *x, int xt, const float *cs, const float *sn, bool interleaved, void *y, int yt, int64_t pairs,
                            int64_t L_, int64_t H_, int64_t D_) {
    const I L = (I)L_, H = (I)H_, D = (I)D_, h2 = D / 2;
    for (I p = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; p < (I)pairs; p += (I)gridDim.x * (I)blockDim.x) {
        const I i = p % h2, row = p / h2; /* row = (b, l, h) */
        const I l = (row / H) % L;
        const I a = row * D + (interleaved ? 2 * i : i), c = row * D + (interleaved ? 2 * i + 1 : i + h2);
        const float xa = qd_ld(x, xt, a), xb = qd_ld(x, xt, c), co = cs[l * h2 + i], si = sn[l * h2 + i];
        qd_st(y, yt, a, xa * co - xb * si);
        qd_st(y, yt, c, xb * co + xa * si);
    }
}

extern "C" qd_status qd_cuda_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *cos, const qd_tensor *sin, qd_rope_mode mode,
                                  qd_tensor *y) {
    if (!qd_cuda_float_dtype(x->dtype) || !qd_cuda_float_dtype(y->dtype) || x->rank != 4 || y->rank != 4)
        return qd_fail(QD_EINVAL, "cuda rope: x and y must be F32/BF16/F16 [B, L, H, D]");
    for (int i = 0; i < 4; i++)
        if (x->shape[i] != y->shape[i]) return qd_fail(QD_EINVAL, "cuda rope: x and y shapes differ");
    const int64_t L = x->shape[1], H = x->shape[2], D = x->shape[3];
    if (D % 2 || cos->dtype != QD_DTYPE_F32 || sin->dtype != QD_DTYPE_F32 || qd_tensor_elements(cos) != L * (D / 2) ||
        qd_tensor_elements(sin) != L * (D / 2))
        return qd_fail(QD_EINVAL, "cuda rope: cos and sin must be F32 [L, D/2] = [%lld, %lld] (D even)", (long long)L, (long long)(D / 2));
    const int64_t pairs = qd_tensor_elements(x) / 2;
    if (!pairs) return QD_OK;
    if (2 * pairs < ((int64_t)1 << 31))
        rope_kernel<int32_t><<<qd_cuda_blocks(pairs, 256), 256, 0, qd_cuda_of(b)->stream>>>(x->data, x->dtype, (const float *)cos->data,
                                                                                            (const float *)sin->data, mode == QD_ROPE_INTERLEAVED,
                                                                                            y->data, y->dtype, pairs, L, H, D);
    else rope_kernel<int64_t><<<qd_cuda_blocks(pairs, 256), 256, 0, qd_cuda_of(b)->stream>>>(x->data, x->dtype, (const float *)cos->data,
                                                                               (const float *)sin->data, mode == QD_ROPE_INTERLEAVED,
                                                                               y->data, y->dtype, pairs, L, H, D);
    QD_CUDA_LAUNCHED("rope");
    return QD_OK;
}

/* ---- rms_norm_rope: y = rope(rms_norm(x, w)) per head (backend.h), the normalised value rounded to y's dtype
   before the rotation as the two ops in y's dtype did. ---- */

/* BF16 heads with D % 8 == 0 and D ≤ 256: G lanes per head (a power of two ≥ D/8), 8 values per lane in one
   16-byte load; the sum of squares reduced over the G lanes by shuffles. Interleaved pairs lie within a lane;
   rotate-half pairs (D % 16 == 0) are D/2 apart, in the lane D/16 away, whose values come by shuffle. A thread
   takes HP heads of one position (H % HP == 0): their cos and sin are read once instead of once per head (they
   came from L2 at twice x's bytes), and its HP loads of x are in flight together. */
template <int G, int HP>
__global__ void rms_rope_bf16_kernel(const __nv_bfloat16 *x, int64_t xrow, const void *w, int wt, float eps, const float *cs, const float *sn,
                                     bool interleaved, __nv_bfloat16 *y, int rows, int L, int H, int d) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x, grp = t / G, k = t & (G - 1), nv = d / 8, gph = H / HP;
    const int row0 = grp * HP; /* the group's first head: position row0 / H, heads row0 % H .. + HP − 1 */
    const bool on = row0 < rows && k < nv;
    const int pos = on ? row0 / H : 0, l = pos % L, h2 = d / 2;
    const int64_t xat = (int64_t)pos * xrow + (int64_t)(grp % gph) * HP * d + 8 * k;
    float4 ic = {}, is = {}; /* interleaved pairs' cos and sin, read with x rather than after the reduction */
    if (interleaved && on) ic = *(const float4 *)(cs + (int64_t)l * h2 + 4 * k), is = *(const float4 *)(sn + (int64_t)l * h2 + 4 * k);
    float4 c0 = {}, c1 = {}, s0 = {}, s1 = {}; /* rotate-half: lane k's cos and sin (those of the pairs' first half) */
    const int half = nv / 2, lo = k < half, j = lo ? k : k - half;
    if (!interleaved && on) {
        const float *cr = cs + (int64_t)l * h2 + 8 * j, *sr = sn + (int64_t)l * h2 + 8 * j;
        c0 = *(const float4 *)cr, c1 = *(const float4 *)(cr + 4), s0 = *(const float4 *)sr, s1 = *(const float4 *)(sr + 4);
    }
    uint4 u[HP];
#pragma unroll
    for (int hp = 0; hp < HP; hp++) u[hp] = on ? *(const uint4 *)(x + xat + (int64_t)hp * d) : make_uint4(0, 0, 0, 0);
    float wv[8];
    if (w && on) qd_ld8(w, wt, 8 * k, wv);
    const bool round_w = w && wt != QD_DTYPE_F32;
#pragma unroll
    for (int hp = 0; hp < HP; hp++) {
        float v[8];
        qd_bf16x8_f32(u[hp], v);
        float ss = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) ss += v[e] * v[e];
#pragma unroll
        for (int o = G / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        const float r = rsqrtf(ss / (float)d + eps);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float n = v[e] * r;
            if (w && on) n = (round_w ? qd_round_to(wt, n) : n) * wv[e];
            v[e] = qd_round_to(QD_DTYPE_BF16, n);
        }
        float o[8];
        if (interleaved) {
            const float cc[4] = {ic.x, ic.y, ic.z, ic.w}, ssn[4] = {is.x, is.y, is.z, is.w};
#pragma unroll
            for (int q = 0; q < 4; q++) {
                o[2 * q] = v[2 * q] * cc[q] - v[2 * q + 1] * ssn[q];
                o[2 * q + 1] = v[2 * q + 1] * cc[q] + v[2 * q] * ssn[q];
            }
        } else {
            const int partner = (threadIdx.x & 31 & ~(G - 1)) + (lo ? k + half : k - half);
            float p[8];
#pragma unroll
            for (int e = 0; e < 8; e++) p[e] = __shfl_sync(0xffffffffu, v[e], partner);
            const float cc[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w}, ssn[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
#pragma unroll
            for (int e = 0; e < 8; e++) o[e] = lo ? v[e] * cc[e] - p[e] * ssn[e] : v[e] * cc[e] + p[e] * ssn[e];
        }
        if (on) *(uint4 *)(y + (int64_t)(row0 + hp) * d + 8 * k) = qd_pack_bf16x8(o);
    }
}

/* any dtypes and even D: a block per head, the squares summed over the block, then one thread per pair
   (both members read before either is written: in place is safe) */
__global__ void rms_rope_kernel(const void *x, int xt, int64_t xrow, const void *w, int wt, float eps, const float *cs, const float *sn, bool interleaved,
                                void *y, int yt, int64_t L, int64_t H, int64_t d) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x, base = row * d, xbase = (row / H) * xrow + (row % H) * d, h2 = d / 2, l = (row / H) % L;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = qd_ld(x, xt, xbase + i);
        ss += v * v;
    }
    const float r = rsqrtf(qd_block_sum(ss, red) / (float)d + eps);
    const bool round_w = w && wt != QD_DTYPE_F32;
    for (int64_t p = threadIdx.x; p < h2; p += blockDim.x) {
        const int64_t a = interleaved ? 2 * p : p, c = interleaved ? 2 * p + 1 : p + h2;
        float na = qd_ld(x, xt, xbase + a) * r, nb = qd_ld(x, xt, xbase + c) * r;
        if (w) {
            na = (round_w ? qd_round_to(wt, na) : na) * qd_ld(w, wt, a);
            nb = (round_w ? qd_round_to(wt, nb) : nb) * qd_ld(w, wt, c);
        }
        na = qd_round_to(yt, na), nb = qd_round_to(yt, nb);
        const float co = cs[l * h2 + p], si = sn[l * h2 + p];
        qd_st(y, yt, base + a, na * co - nb * si);
        qd_st(y, yt, base + c, nb * co + na * si);
    }
}

/* y's heads from x, whose position rows are xrow values apart with the heads from x_data's start (rms_norm_rope:
   x is y-shaped; rms_norm_rope_cols: a column range of a wider row) */
static qd_status launch_rms_rope(qd_backend *b, const void *x_data, qd_dtype xdt, int64_t xrow, const qd_tensor *w, float eps, const qd_tensor *cos,
                                 const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y, const char *op) {
    if (mode != QD_ROPE_INTERLEAVED && mode != QD_ROPE_HALF) return qd_fail(QD_EINVAL, "cuda %s: unknown mode %d", op, (int)mode);
    const int64_t L = y->shape[1], H = y->shape[2], D = y->shape[3];
    if (D % 2 || !cos || !sin || cos->dtype != QD_DTYPE_F32 || sin->dtype != QD_DTYPE_F32 || qd_tensor_elements(cos) != L * (D / 2) ||
        qd_tensor_elements(sin) != L * (D / 2))
        return qd_fail(QD_EINVAL, "cuda %s: cos and sin must be F32 [L, D/2] = [%lld, %lld] (D even)", op, (long long)L, (long long)(D / 2));
    if (w && (!qd_cuda_float_dtype(w->dtype) || !w->data || qd_tensor_elements(w) != D))
        return qd_fail(QD_EINVAL, "cuda %s: weight must be an F32/BF16/F16 device tensor of D = %lld values", op, (long long)D);
    const int64_t rows = D ? qd_tensor_elements(y) / D : 0;
    if (!rows) return QD_OK;
    if (rows > INT32_MAX) return qd_fail(QD_EUNSUPPORTED, "cuda %s: %lld heads", op, (long long)rows);
    cudaStream_t stream = qd_cuda_of(b)->stream;
    const bool il = mode == QD_ROPE_INTERLEAVED;
    const void *wd = w ? w->data : NULL;
    const int wt = w ? w->dtype : 0;
    const int64_t nv = D / 8;
    int g = 1;
    while (g < nv) g *= 2;
    const bool fast = xdt == QD_DTYPE_BF16 && y->dtype == QD_DTYPE_BF16 && D % (il ? 8 : 16) == 0 && nv <= 32 && rows * g < INT32_MAX &&
                      xrow % 8 == 0 && qd_cuda_aligned16(x_data) && qd_cuda_aligned16(y->data) && qd_cuda_aligned16(cos->data) &&
                      qd_cuda_aligned16(sin->data) && (!w || qd_cuda_aligned16(wd));
    if (fast) {
        /* heads per thread: 4 where H allows, else 2, else 1 (QDIT_CUDA_ROPE_HEADS=1|2|4 asks, where H allows) */
        const int want = qd_cuda_of(b)->rope_heads;
        const int hp = want ? (H % want == 0 ? want : 1) : H % 4 == 0 ? 4 : H % 2 == 0 ? 2 : 1;
        const unsigned blocks = (unsigned)((rows / hp * g + 255) / 256);
        const __nv_bfloat16 *xp = (const __nv_bfloat16 *)x_data;
        __nv_bfloat16 *yp = (__nv_bfloat16 *)y->data;
        const float *cp = (const float *)cos->data, *sp = (const float *)sin->data;
#define RR(G, HP) rms_rope_bf16_kernel<G, HP><<<blocks, 256, 0, stream>>>(xp, xrow, wd, wt, eps, cp, sp, il, yp, (int)rows, (int)L, (int)H, (int)D)
#define RRH(G) (hp == 4 ? RR(G, 4) : hp == 2 ? RR(G, 2) : RR(G, 1))
        switch (g) {
        case 1: RRH(1); break;
        case 2: RRH(2); break;
        case 4: RRH(4); break;
        case 8: RRH(8); break;
        case 16: RRH(16); break;
        default: RRH(32); break;
        }
#undef RRH
#undef RR
    } else {
        rms_rope_kernel<<<(unsigned)rows, 64, 0, stream>>>(x_data, xdt, xrow, wd, wt, eps, (const float *)cos->data, (const float *)sin->data, il,
                                                           y->data, y->dtype, L, H, D);
    }
    QD_CUDA_LAUNCHED(op);
    return QD_OK;
}

extern "C" qd_status qd_cuda_rms_norm_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *cos,
                                           const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y) {
    if (!qd_cuda_float_dtype(x->dtype) || !qd_cuda_float_dtype(y->dtype) || !x->data || !y->data || x->rank != 4 || !qd_cuda_same_shape(x, y))
        return qd_fail(QD_EINVAL, "cuda rms_norm_rope: x and y must be F32/BF16/F16 device tensors [B, L, H, D] of one shape");
    return launch_rms_rope(b, x->data, x->dtype, x->shape[2] * x->shape[3], w, eps, cos, sin, mode, y, "rms_norm_rope");
}

extern "C" qd_status qd_cuda_rms_norm_rope_cols(qd_backend *b, const qd_tensor *x, int64_t col, const qd_tensor *w, float eps, const qd_tensor *cos,
                                                const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y) {
    if (!qd_cuda_float_dtype(x->dtype) || !qd_cuda_float_dtype(y->dtype) || !x->data || !y->data || y->rank != 4 || x->rank != 3 ||
        x->shape[0] != y->shape[0] || x->shape[1] != y->shape[1] || col < 0 || col + y->shape[2] * y->shape[3] > x->shape[2] || x->data == y->data)
        return qd_fail(QD_EINVAL, "cuda rms_norm_rope_cols: x [B, L, W] must hold y [B, L, H, D]'s H·D values at column %lld of each row (F32/BF16/F16 "
                       "device tensors, x not y)", (long long)col);
    const void *xd = (const char *)x->data + (size_t)col * (size_t)(qd_dtype_bits(x->dtype) / 8);
    return launch_rms_rope(b, xd, x->dtype, x->shape[2], w, eps, cos, sin, mode, y, "rms_norm_rope_cols");
}
