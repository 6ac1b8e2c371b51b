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
 * on CUDA cores; a tensor-core (wgmma) flash kernel or cuDNN's fused SDPA is the fast path to come. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.cuh"

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
    if (D > MAXD || Dv > MAXD) return qd_fail(QD_EUNSUPPORTED, "cuda attention: head dims above %d (D %lld, Dv %lld)", MAXD, (long long)D, (long long)Dv);
    if (a->bias && (a->bias->dtype != QD_DTYPE_F32 || qd_tensor_elements(a->bias) != H * Lq * Lk))
        return qd_fail(QD_EINVAL, "cuda attention: bias must be F32 [H, Lq, Lk]");
    if (!B || !Lq || !H) return QD_OK;
    qd_cuda *c = qd_cuda_of(b);
    uint8_t *keyok = NULL;
    if (a->mask) {
        qd_status s = mask_bytes(b, a->mask, B, Lk, &keyok);
        if (s) return s;
    }
    const size_t smem = sizeof(float) * (size_t)(TK * (D + 1) + TK * Dv + QW * D);
    static bool raised;
    if (!raised) {
        cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 * 1024);
        raised = true;
    }
    const float scale = a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)D);
    dim3 grid((unsigned)((Lq + QW - 1) / QW), (unsigned)H, (unsigned)B);
    attention_kernel<<<grid, QW * 32, smem, c->stream>>>(q->data, k->data, v->data, q->dtype, keyok, a->bias ? (const float *)a->bias->data : NULL,
                                                         a->causal, scale, out->data, out->dtype, Lq, Lk, (int)H, (int)Hkv, (int)D, (int)Dv);
    cudaError_t e = cudaGetLastError();
    if (keyok) qd_cuda_scratch_free(c, keyok);
    if (e != cudaSuccess) return qd_cuda_fail(e, "attention");
    return QD_OK;
}
