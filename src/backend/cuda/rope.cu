/* RoPE on the GPU: x [B, L, H, D] rotated by cos/sin [L, D/2] (F32), interleaved pairs (x[2i], x[2i+1])
 * for the DiTs or rotate-half pairs (x[i], x[i+D/2]) for the text encoders (rope.c has the formulas).
 * One thread per pair; both members are read before either is written, so in place is safe. */
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
