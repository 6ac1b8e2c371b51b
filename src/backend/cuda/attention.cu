/* Attention on the GPU — the correct baseline: softmax(q·kᵀ·scale + bias, masked)·v in f32 with an
 * online softmax, q [B, Lq, H, D], k [B, Lk, Hkv, D], v [B, Lk, Hkv, Dv] (grouped-query when H > Hkv),
 * optional key mask [B, Lk] (nonzero = attend; float masks must hold 0/1 only, as on the CPU), optional
 * F32 bias [H, Lq, Lk], causal (key j visible to query i when j ≤ i + Lk − Lq). Rows that see no key
 * give zeros (attention.c says why).
 *
 * Layout of the work: a block of QW warps shares one (b, h) and QW consecutive queries; each tile of
 * TK keys is staged in shared memory as f32 (rows padded by one word so that lane j reading key j's
 * column d hits its own bank); a warp scores its query against the tile with one key per lane, updates
 * the running max / sum, and accumulates the output with each lane owning D/32 output dims. This runs
 * on CUDA cores. The tensor-core flash kernel below takes BF16 at D = 128; cuDNN's fused SDPA
 * (cudnn.cu), where it is loaded and covers the case, takes precedence over both. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/mma.cuh"

#define QW 4      /* queries (warps) per block */
#define TK 32     /* keys per tile: one per lane */
#define MAXD 256  /* head dims per lane-owned slice: D/32 ≤ 8 */

__global__ void attention_kernel(const void *q, const void *k, const void *v, int dt, const uint8_t *keyok, const float *bias, bool causal,
                                 float scale, void *o, int ot, int64_t Lq, int64_t Lk, int H, int Hkv, int D, int Dv) {
    extern __shared__ float sm[];
    float *ks = sm;                      /* [TK][D + 1] */
    float *vs = ks + TK * (D + 1);       /* [TK][Dv] */
    float *qs = vs + TK * Dv;            /* [QW][D] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int h = blockIdx.y, bb = blockIdx.z, hk = h / (H / Hkv);
    const int64_t i = (int64_t)blockIdx.x * QW + warp; /* this warp's query */
    const bool live = i < Lq;
    if (live)
        for (int d = lane; d < D; d += 32) qs[warp * D + d] = qd_ld(q, dt, ((bb * Lq + i) * H + h) * (int64_t)D + d);
    float acc[MAXD / 32];
    for (int t = 0; t < MAXD / 32; t++) acc[t] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int64_t limit = causal ? i + (Lk - Lq) : Lk - 1; /* last visible key of this query */
    /* the block's furthest visible key bounds the tiles it loads */
    const int64_t last_q = min((int64_t)blockIdx.x * QW + QW - 1, Lq - 1);
    const int64_t block_limit = causal ? min(last_q + (Lk - Lq), Lk - 1) : Lk - 1;
    for (int64_t j0 = 0; j0 <= block_limit; j0 += TK) {
        __syncthreads();
        for (int e = threadIdx.x; e < TK * D; e += blockDim.x) {
            const int r = e / D, c = e % D;
            const int64_t j = j0 + r;
            ks[r * (D + 1) + c] = j < Lk ? qd_ld(k, dt, ((bb * Lk + j) * Hkv + hk) * (int64_t)D + c) : 0.0f;
        }
        for (int e = threadIdx.x; e < TK * Dv; e += blockDim.x) {
            const int r = e / Dv, c = e % Dv;
            const int64_t j = j0 + r;
            vs[r * Dv + c] = j < Lk ? qd_ld(v, dt, ((bb * Lk + j) * Hkv + hk) * (int64_t)Dv + c) : 0.0f;
        }
        __syncthreads();
        if (!live) continue;
        const int64_t j = j0 + lane;
        bool vis = j < Lk && j <= limit && (!keyok || keyok[bb * Lk + j]);
        float s = -INFINITY;
        if (vis) {
            float dot = 0.0f;
            const float *kr = ks + lane * (D + 1), *qr = qs + warp * D;
            for (int d = 0; d < D; d++) dot = fmaf(qr[d], kr[d], dot);
            s = dot * scale;
            if (bias) s += bias[((int64_t)h * Lq + i) * Lk + j];
        }
        float tmax = s;
        for (int off = 16; off > 0; off >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, off));
        if (tmax == -INFINITY) continue; /* nothing visible in this tile */
        const float mn = fmaxf(m, tmax);
        const float alpha = m == -INFINITY ? 0.0f : expf(m - mn);
        const float p = vis ? expf(s - mn) : 0.0f;
        float psum = p;
        for (int off = 16; off > 0; off >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, off);
        l = l * alpha + psum;
        m = mn;
#pragma unroll
        for (int t = 0; t < MAXD / 32; t++) acc[t] *= alpha;
        for (int r = 0; r < TK; r++) {
            const float pr = __shfl_sync(0xffffffffu, p, r);
            if (pr == 0.0f) continue;
#pragma unroll
            for (int t = 0; t < MAXD / 32; t++) {
                const int d = lane + 32 * t;
                if (d < Dv) acc[t] = fmaf(pr, vs[r * Dv + d], acc[t]);
            }
        }
    }
    if (!live) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int t = 0; t < MAXD / 32; t++) {
        const int d = lane + 32 * t;
        if (d < Dv) qd_st(o, ot, ((bb * Lq + i) * H + h) * (int64_t)Dv + d, acc[t] * inv);
    }
}


/* ------------------------------------------------------------------------------------------------ */
/* The tensor-core path: BF16 q/k/v with D = Dv = 128 and no score bias (every DiT here), FlashAttention-2
 * style on mma.sync m16n8k16 (bf16 in, f32 accumulate). A block of 8 warps takes 128 queries of one
 * (b, h); each warp owns 16 query rows and keeps their Q fragments, scores S (16×64) and output O
 * (16×128) in registers. Per tile of 64 keys: K and V are staged row-major in shared memory (rows padded
 * by 8 elements so that ldmatrix's 8 rows fall in distinct banks) and read as mma fragments with
 * ldmatrix (V with .trans, which gives the key-pairs the B operand wants), S = Q·Kᵀ, masking (keys past Lk, key mask, causal) to −inf, the online softmax in base 2 on
 * the accumulator layout, and O += P·V with P re-used from the accumulators as A fragments (the
 * m16n8 C layout of two adjacent key tiles is the m16n8k16 A layout). */

#define FA_BR 128 /* queries per block: 8 warps × 16 rows share each K/V tile */
#define FA_BC 64
#define FA_THREADS (FA_BR / 16 * 32)
#define FA_D 128
#define FA_QS (FA_D + 8)  /* Q, K and V row stride (bf16): 272 bytes, so 8 rows of 16 bytes hit 32 banks */

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); /* 2^x, ~2 ulp; 2^−inf = +0 */
    return y;
}

__global__ void __launch_bounds__(FA_THREADS) flash_kernel(const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                                    const uint8_t *keyok, bool causal, float scale_log2, void *o, int ot,
                                                    int64_t Lq, int64_t Lk, int H, int Hkv) {
    extern __shared__ __align__(16) unsigned char fa_smem[];
    __nv_bfloat16 *qs = (__nv_bfloat16 *)fa_smem;   /* [128][136] */
    __nv_bfloat16 *kbuf = qs + FA_BR * FA_QS;        /* two stages of K [64][136] then V [64][136] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, bb = blockIdx.z, hk = h / (H / Hkv);
    const int64_t q0 = (int64_t)blockIdx.x * FA_BR;
    const int64_t qstride = (int64_t)H * FA_D, kstride = (int64_t)Hkv * FA_D;
    const __nv_bfloat16 *qb = q + ((int64_t)bb * Lq * H + h) * FA_D;
    const __nv_bfloat16 *kb = k + ((int64_t)bb * Lk * Hkv + hk) * FA_D;
    const __nv_bfloat16 *vb = v + ((int64_t)bb * Lk * Hkv + hk) * FA_D;

    /* Q tile → shared (16-byte loads; rows past Lq are zeros) → fragments */
    for (int e = threadIdx.x; e < FA_BR * FA_D / 8; e += FA_THREADS) {
        const int r = e / (FA_D / 8), c = (e % (FA_D / 8)) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (q0 + r < Lq) val = *(const uint4 *)(qb + (q0 + r) * qstride + c);
        *(uint4 *)(qs + r * FA_QS + c) = val;
    }
    __syncthreads();
    uint32_t qa[FA_D / 16][4];
    const int r0 = warp * 16;
#pragma unroll
    for (int kk = 0; kk < FA_D / 16; kk++) {
        qa[kk][0] = *(const uint32_t *)(qs + (r0 + g) * FA_QS + kk * 16 + 2 * t);
        qa[kk][1] = *(const uint32_t *)(qs + (r0 + g + 8) * FA_QS + kk * 16 + 2 * t);
        qa[kk][2] = *(const uint32_t *)(qs + (r0 + g) * FA_QS + kk * 16 + 2 * t + 8);
        qa[kk][3] = *(const uint32_t *)(qs + (r0 + g + 8) * FA_QS + kk * 16 + 2 * t + 8);
    }
    float oacc[FA_D / 8][4];
#pragma unroll
    for (int n = 0; n < FA_D / 8; n++) oacc[n][0] = oacc[n][1] = oacc[n][2] = oacc[n][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
    const int64_t qi[2] = {q0 + r0 + g, q0 + r0 + g + 8};
    const int64_t shift = Lk - Lq;
    const int64_t last_q = min(q0 + FA_BR - 1, Lq - 1);
    const int64_t kend = causal ? min(last_q + shift + 1, Lk) : Lk;

    /* K/V tiles are double-buffered: tile i+1 is in flight (cp.async) while tile i is computed */
    auto load_tile = [&](int64_t j0, int stage) {
        __nv_bfloat16 *kd = kbuf + stage * 2 * FA_BC * FA_QS, *vd = kd + FA_BC * FA_QS;
        for (int e = threadIdx.x; e < FA_BC * FA_D / 8; e += FA_THREADS) {
            const int r = e / (FA_D / 8), c = (e % (FA_D / 8)) * 8;
            const bool ok = j0 + r < Lk;
            const int64_t jr = ok ? j0 + r : 0;
            cp_async16(kd + r * FA_QS + c, kb + jr * kstride + c, ok);
            cp_async16(vd + r * FA_QS + c, vb + jr * kstride + c, ok);
        }
        cp_async_commit();
    };
    if (kend > 0) load_tile(0, 0);
    int stage = 0;
    for (int64_t j0 = 0; j0 < kend; j0 += FA_BC, stage ^= 1) {
        if (j0 + FA_BC < kend) {
            load_tile(j0 + FA_BC, stage ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const __nv_bfloat16 *ks = kbuf + stage * 2 * FA_BC * FA_QS, *vs = ks + FA_BC * FA_QS;
        float sacc[FA_BC / 8][4];
#pragma unroll
        for (int n = 0; n < FA_BC / 8; n++) {
            sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < FA_D / 16; kk += 2) {
                /* keys n·8.. +7, dims kk·16 + {0, 8, 16, 24}: b0, b1 of step kk and of step kk + 1 */
                uint32_t bf[4];
                ldsm_x4(bf, ks + (n * 8 + (lane & 7)) * FA_QS + kk * 16 + (lane >> 3) * 8);
                mma_bf16(sacc[n], qa[kk], bf[0], bf[1]);
                mma_bf16(sacc[n], qa[kk + 1], bf[2], bf[3]);
            }
        }
        /* scale into base 2, mask, and the tile's row maxima (rows g and g + 8 of this warp) */
        float tmax[2] = {-INFINITY, -INFINITY};
        const bool check = j0 + FA_BC > Lk || keyok || causal; /* a tile with nothing to mask skips the tests */
#pragma unroll
        for (int n = 0; n < FA_BC / 8; n++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int ri = c >> 1;
                float sv = sacc[n][c] * scale_log2;
                if (check) {
                    const int64_t j = j0 + n * 8 + 2 * t + (c & 1);
                    if (!(j < Lk && (!keyok || keyok[(int64_t)bb * Lk + j]) && (!causal || j <= qi[ri] + shift))) sv = -INFINITY;
                }
                sacc[n][c] = sv;
                tmax[ri] = fmaxf(tmax[ri], sv);
            }
        float alpha[2];
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            tmax[ri] = fmaxf(tmax[ri], __shfl_xor_sync(0xffffffffu, tmax[ri], 1));
            tmax[ri] = fmaxf(tmax[ri], __shfl_xor_sync(0xffffffffu, tmax[ri], 2));
            const float mn = fmaxf(mrow[ri], tmax[ri]);
            alpha[ri] = mn == -INFINITY ? 1.0f : fast_exp2(mrow[ri] - mn); /* mrow −inf, mn finite → 0 */
            mrow[ri] = mn;
            lrow[ri] *= alpha[ri];
        }
#pragma unroll
        for (int n = 0; n < FA_BC / 8; n++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int ri = c >> 1;
                const float p = mrow[ri] == -INFINITY ? 0.0f : fast_exp2(sacc[n][c] - mrow[ri]);
                sacc[n][c] = p;
                lrow[ri] += p;
            }
#pragma unroll
        for (int n = 0; n < FA_D / 8; n++) {
            oacc[n][0] *= alpha[0], oacc[n][1] *= alpha[0];
            oacc[n][2] *= alpha[1], oacc[n][3] *= alpha[1];
        }
        /* O += P·V, 16 keys per step */
#pragma unroll
        for (int kk = 0; kk < FA_BC / 16; kk++) {
            uint32_t pa[4] = {pack_bf16(sacc[2 * kk][0], sacc[2 * kk][1]), pack_bf16(sacc[2 * kk][2], sacc[2 * kk][3]),
                              pack_bf16(sacc[2 * kk + 1][0], sacc[2 * kk + 1][1]), pack_bf16(sacc[2 * kk + 1][2], sacc[2 * kk + 1][3])};
#pragma unroll
            for (int n = 0; n < FA_D / 8; n += 2) {
                /* keys kk·16 + {0..7, 8..15} × dims n·8 + {0..7, 8..15}, transposed: b0, b1 of n and of n + 1 */
                uint32_t bf[4];
                ldsm_x4_t(bf, vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * FA_QS + n * 8 + (lane >> 4) * 8);
                mma_bf16(oacc[n], pa, bf[0], bf[1]);
                mma_bf16(oacc[n + 1], pa, bf[2], bf[3]);
            }
        }
        __syncthreads(); /* the next iteration's prefetch overwrites this stage */
    }
    /* the row sums live spread over the 4 lanes of a quad */
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        lrow[ri] += __shfl_xor_sync(0xffffffffu, lrow[ri], 1);
        lrow[ri] += __shfl_xor_sync(0xffffffffu, lrow[ri], 2);
    }
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        if (qi[ri] >= Lq) continue;
        const float inv = lrow[ri] > 0.0f ? 1.0f / lrow[ri] : 0.0f;
        const int64_t base = ((int64_t)bb * Lq + qi[ri]) * qstride + (int64_t)h * FA_D;
#pragma unroll
        for (int n = 0; n < FA_D / 8; n++) {
            qd_st(o, ot, base + n * 8 + 2 * t, oacc[n][2 * ri] * inv);
            qd_st(o, ot, base + n * 8 + 2 * t + 1, oacc[n][2 * ri + 1] * inv);
        }
    }
}

/* the key mask as one byte per key (1 = attend), checked on the host like the CPU's */
static qd_status mask_bytes(qd_backend *b, const qd_tensor *mask, int64_t B, int64_t Lk, uint8_t **dev) {
    *dev = NULL;
    if (qd_tensor_elements(mask) != B * Lk) return qd_fail(QD_EINVAL, "cuda attention: mask must be [B, Lk] = [%lld, %lld]", (long long)B, (long long)Lk);
    const size_t bytes = qd_tensor_bytes(mask);
    uint8_t *host = (uint8_t *)malloc(bytes ? bytes : 1), *ok = (uint8_t *)malloc((size_t)(B * Lk) + 1);
    qd_status s = host && ok ? b->ops->download(b, mask, host) : qd_fail(QD_ENOMEM, "cuda attention: cannot allocate");
    for (int64_t i = 0; !s && i < B * Lk; i++) {
        double v;
        switch (mask->dtype) {
        case QD_DTYPE_BOOL:
        case QD_DTYPE_U8: v = host[i]; break;
        case QD_DTYPE_I32: v = ((const int32_t *)host)[i]; break;
        case QD_DTYPE_I64: v = (double)((const int64_t *)host)[i]; break;
        case QD_DTYPE_F32: v = ((const float *)host)[i]; break;
        case QD_DTYPE_BF16: {
            uint32_t u = (uint32_t)((const uint16_t *)host)[i] << 16;
            float f;
            memcpy(&f, &u, 4);
            v = f;
            break;
        }
        default: s = qd_fail(QD_EUNSUPPORTED, "cuda attention: a %s key mask", qd_dtype_name(mask->dtype)); continue;
        }
        if ((mask->dtype == QD_DTYPE_F32 || mask->dtype == QD_DTYPE_BF16) && v != 0.0 && v != 1.0)
            s = qd_fail(QD_EINVAL, "cuda attention: a float key mask must hold only 0 and 1 (1 = attend), found %g: an additive mask?", v);
        ok[i] = v != 0.0;
    }
    qd_cuda *c = qd_cuda_of(b);
    if (!s) s = qd_cuda_scratch(c, (size_t)(B * Lk), (void **)dev);
    if (!s) {
        cudaError_t e = cudaMemcpyAsync(*dev, ok, (size_t)(B * Lk), cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream); /* ok is freed below */
        if (e != cudaSuccess) s = qd_cuda_fail(e, "attention mask upload");
    }
    free(host), free(ok);
    if (s && *dev) qd_cuda_scratch_free(c, *dev), *dev = NULL;
    return s;
}

extern "C" qd_status qd_cuda_attention(qd_backend *b, const qd_attn_args *a, qd_tensor *out) {
    const qd_tensor *q = a->q, *k = a->k, *v = a->v;
    if (q->rank != 4 || k->rank != 4 || v->rank != 4 || out->rank != 4)
        return qd_fail(QD_EINVAL, "cuda attention: q, k, v and out must be [B, L, H, D]");
    const int64_t B = q->shape[0], Lq = q->shape[1], H = q->shape[2], D = q->shape[3];
    const int64_t Lk = k->shape[1], Hkv = k->shape[2], Dv = v->shape[3];
    if (k->shape[0] != B || v->shape[0] != B || k->shape[3] != D || v->shape[1] != Lk || v->shape[2] != Hkv || Hkv < 1 || H % Hkv ||
        out->shape[0] != B || out->shape[1] != Lq || out->shape[2] != H || out->shape[3] != Dv)
        return qd_fail(QD_EINVAL, "cuda attention: shapes do not agree (q [B, Lq, H, D], k [B, Lk, Hkv, D], v [B, Lk, Hkv, Dv], out [B, Lq, H, Dv], H %% Hkv == 0)");
    if (q->dtype != k->dtype || q->dtype != v->dtype || !qd_cuda_float_dtype(q->dtype) || !qd_cuda_float_dtype(out->dtype))
        return qd_fail(QD_EINVAL, "cuda attention: q, k and v must share one float dtype");
    if (a->bias && (a->bias->dtype != QD_DTYPE_F32 || qd_tensor_elements(a->bias) != H * Lq * Lk))
        return qd_fail(QD_EINVAL, "cuda attention: bias must be F32 [H, Lq, Lk]");
    if (a->v_row && a->v_row < Hkv * Dv)
        return qd_fail(QD_EINVAL, "cuda attention: v's row of %lld elements is narrower than its %lld × %lld values", (long long)a->v_row,
                       (long long)Hkv, (long long)Dv);
    if (!B || !Lq || !H) return QD_OK;
    qd_status dnn_status;
    if (qd_cudnn_sdpa(b, a, out, &dnn_status)) return dnn_status;
    qd_cuda *c = qd_cuda_of(b);
    const float scale = a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)D);
    if (D > MAXD || Dv > MAXD) { /* heads wider than the kernels below hold (VAE mid-blocks): two matmuls and a softmax */
        uint8_t *keyok = NULL;
        qd_status s = a->mask ? mask_bytes(b, a->mask, B, Lk, &keyok) : QD_OK;
        if (!s) s = qd_cuda_attention_wide(b, a, keyok, scale, out);
        if (keyok) qd_cuda_scratch_free(c, keyok);
        return s;
    }
    if (a->v_row && a->v_row != Hkv * Dv) { /* our kernels read v packed: copy its columns out first */
        qd_tensor wide = *v, vp = *v;
        const int64_t wide_shape[2] = {B * Lk, a->v_row}, packed_shape[2] = {B * Lk, Hkv * Dv};
        qd_tensor_shape(&wide, v->dtype, 2, wide_shape); /* ends past v's last row: only its first columns are read */
        void *buf = NULL;
        qd_status s = qd_cuda_scratch(c, (size_t)(B * Lk * Hkv * Dv) * (size_t)(qd_dtype_bits(v->dtype) / 8), &buf);
        if (s) return s;
        vp.data = buf;
        qd_tensor vp2 = vp;
        qd_tensor_shape(&vp2, v->dtype, 2, packed_shape);
        s = qd_cuda_slice(b, &wide, 1, 0, Hkv * Dv, &vp2);
        qd_attn_args packed = *a;
        packed.v = &vp, packed.v_row = 0;
        if (!s) s = qd_cuda_attention(b, &packed, out);
        qd_cuda_scratch_free(c, buf);
        return s;
    }
    uint8_t *keyok = NULL;
    if (a->mask) {
        qd_status s = mask_bytes(b, a->mask, B, Lk, &keyok);
        if (s) return s;
    }
    if (q->dtype == QD_DTYPE_BF16 && D == FA_D && Dv == FA_D && !a->bias && !getenv("QDIT_CUDA_ATTENTION_SIMPLE")) {
        const size_t fsm = sizeof(__nv_bfloat16) * (size_t)((FA_BR + 4 * FA_BC) * FA_QS);
        static bool fa_raised;
        if (!fa_raised) {
            cudaFuncSetAttribute(flash_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)fsm);
            fa_raised = true;
        }
        dim3 fgrid((unsigned)((Lq + FA_BR - 1) / FA_BR), (unsigned)H, (unsigned)B);
        flash_kernel<<<fgrid, FA_THREADS, fsm, c->stream>>>((const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)k->data,
                                                     (const __nv_bfloat16 *)v->data, keyok, a->causal, scale * 1.4426950408889634f,
                                                     out->data, out->dtype, Lq, Lk, (int)H, (int)Hkv);
        cudaError_t fe = cudaGetLastError();
        if (keyok) qd_cuda_scratch_free(c, keyok);
        if (fe != cudaSuccess) return qd_cuda_fail(fe, "attention (tensor cores)");
        return QD_OK;
    }
    const size_t smem = sizeof(float) * (size_t)(TK * (D + 1) + TK * Dv + QW * D);
    static bool raised;
    if (!raised) {
        cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 * 1024);
        raised = true;
    }
    dim3 grid((unsigned)((Lq + QW - 1) / QW), (unsigned)H, (unsigned)B);
    attention_kernel<<<grid, QW * 32, smem, c->stream>>>(q->data, k->data, v->data, q->dtype, keyok, a->bias ? (const float *)a->bias->data : NULL,
                                                         a->causal, scale, out->data, out->dtype, Lq, Lk, (int)H, (int)Hkv, (int)D, (int)Dv);
    cudaError_t e = cudaGetLastError();
    if (keyok) qd_cuda_scratch_free(c, keyok);
    if (e != cudaSuccess) return qd_cuda_fail(e, "attention");
    return QD_OK;
}
