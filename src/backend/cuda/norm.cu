/* Normalisation on the GPU: RMSNorm and LayerNorm over the last dim (one block per row), GroupNorm over
 * [N, C, spatial…] (one block per (n, group)). The cast points are the CPU file's (norm.c): statistics
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

extern "C" qd_status qd_cuda_rms_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, qd_tensor *y) {
    int64_t rows = 0, d = 0;
    qd_status s = rows_of("rms_norm", x, y, w, &rows, &d);
    if (s || !rows) return s;
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

/* one block per (n, g): the group is cpg channels × S spatial elements, contiguous */
__global__ void group_kernel(const void *x, int xt, const void *w, int wt, const void *bb, int bt, float eps, void *y, int yt,
                             int64_t cpg, int64_t S, int groups) {
    __shared__ float red[32];
    const int64_t len = cpg * S, base = blockIdx.x * len;
    const int g = blockIdx.x % groups;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) s += qd_ld(x, xt, base + i);
    const float mean = qd_block_sum(s, red) / (float)len;
    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
        const float v = qd_ld(x, xt, base + i) - mean;
        q += v * v;
    }
    const float rstd = rsqrtf(qd_block_sum(q, red) / (float)len + eps);
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
        const int64_t c = g * cpg + i / S;
        const float a = rstd * (w ? qd_ld(w, wt, c) : 1.0f), beta = bb ? qd_ld(bb, bt, c) : 0.0f;
        qd_st(y, yt, base + i, (qd_ld(x, xt, base + i) - mean) * a + beta);
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
    group_kernel<<<(unsigned)(N * groups), 512, 0, qd_cuda_of(b)->stream>>>(x->data, x->dtype, w ? w->data : NULL, w ? w->dtype : 0,
                                                                            bias ? bias->data : NULL, bias ? bias->dtype : 0, eps,
                                                                            y->data, y->dtype, C / groups, S, groups);
    QD_CUDA_LAUNCHED("group_norm");
    return QD_OK;
}
