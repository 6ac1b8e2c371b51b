/* Attention for head dims the flash kernels do not hold (D or Dv above 256: the VAE decoders' mid-block
 * attention, one head of 512 channels over every latent position; Wan's VAE, 384). Per (b, head) and per chunk
 * of query rows, in three steps that keep the model's tensors where they lie:
 *   S = Q·Kᵀ             cuBLASLt, q's type in, f32 out (q and k read in place: their rows are H·D wide);
 *   P = softmax(S·scale + bias) over the visible keys (key mask, causal band), a row kernel, rounded to q's type
 *                          as the flash kernels round P before their P·V;
 *   O = P·V              cuBLASLt, into out's rows in place (V transposed once per (b, kv head)).
 * S of a chunk is at most QD_WIDE_ELEMS floats (128 MiB), so the memory stays bounded at any image size; at a
 * 1024² FLUX image (16384 positions, D 512) that is 2048 query rows per chunk (QDIT_CUDA_WIDE_ROWS=n: at most n,
 * for the checks). */
#include <math.h>
#include <stdlib.h>

#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/linear_internal.cuh"

#define QD_WIDE_ELEMS ((int64_t)32 << 20)

/* Vt[d][j] = v[j][d] for a head's [Lk, Dv] slice with rows `row` elements apart; Vt rows `ldt` apart (the padding
   columns j ≥ Lk are never read: the matmul's K is Lk) */
template <typename T>
__global__ void wide_transpose_kernel(const T *v, int64_t row, int64_t Lk, int Dv, T *vt, int64_t ldt) {
    __shared__ T tile[32][33];
    const int64_t j0 = (int64_t)blockIdx.x * 32;
    const int d0 = blockIdx.y * 32;
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
        const int64_t j = j0 + r;
        const int d = d0 + threadIdx.x;
        if (j < Lk && d < Dv) tile[r][threadIdx.x] = v[j * row + d];
    }
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
        const int d = d0 + r;
        const int64_t j = j0 + threadIdx.x;
        if (j < Lk && d < Dv) vt[(int64_t)d * ldt + j] = tile[threadIdx.x][r];
    }
}

__device__ __forceinline__ void wide_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void wide_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void wide_store(__half *p, float v) { *p = __float2half_rn(v); }

/* one block per query row of the chunk: the row's maximum, then its sum of exponentials, then P (0 where the key is
   not visible; a row with no visible key is all 0, so its output is 0, as the other attention kernels give) */
template <typename T>
__global__ void wide_softmax_kernel(const float *S, int64_t ld, int64_t Lk, int64_t q0, int64_t Lq, const uint8_t *keyok,
                                    const float *bias, bool causal, float scale, T *P) {
    __shared__ float red[32];
    const int64_t i = q0 + blockIdx.x; /* the query */
    const float *s = S + (int64_t)blockIdx.x * ld;
    T *p = P + (int64_t)blockIdx.x * ld;
    const float *br = bias ? bias + i * Lk : NULL;
    const int64_t limit = causal ? i + (Lk - Lq) : Lk - 1;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x)
        if (j <= limit && (!keyok || keyok[j])) m = fmaxf(m, s[j] * scale + (br ? br[j] : 0.0f));
    m = qd_block_max(m, red);
    float l = 0.0f;
    if (m != -INFINITY)
        for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x)
            if (j <= limit && (!keyok || keyok[j])) l += expf(s[j] * scale + (br ? br[j] : 0.0f) - m);
    l = qd_block_sum(l, red);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x) {
        const bool vis = j <= limit && (!keyok || keyok[j]) && inv > 0.0f;
        wide_store(p + j, vis ? expf(s[j] * scale + (br ? br[j] : 0.0f) - m) * inv : 0.0f);
    }
}

template <typename T> static void launch_transpose(const void *v, int64_t row, int64_t Lk, int Dv, void *vt, int64_t ldt, cudaStream_t st) {
    dim3 grid((unsigned)((Lk + 31) / 32), (unsigned)((Dv + 31) / 32)), block(32, 8);
    wide_transpose_kernel<T><<<grid, block, 0, st>>>((const T *)v, row, Lk, Dv, (T *)vt, ldt);
}

template <typename T>
static void launch_softmax(const float *S, int64_t ld, int64_t Lk, int64_t q0, int64_t rows, int64_t Lq, const uint8_t *keyok,
                           const float *bias, bool causal, float scale, void *P, cudaStream_t st) {
    wide_softmax_kernel<T><<<(unsigned)rows, 256, 0, st>>>(S, ld, Lk, q0, Lq, keyok, bias, causal, scale, (T *)P);
}

qd_status qd_cuda_attention_wide(qd_backend *b, const qd_attn_args *a, const uint8_t *keyok, float scale, qd_tensor *out) {
    qd_cuda *c = qd_cuda_of(b);
    const qd_tensor *q = a->q, *k = a->k, *v = a->v;
    const int64_t B = q->shape[0], Lq = q->shape[1], H = q->shape[2], D = q->shape[3];
    const int64_t Lk = k->shape[1], Hkv = k->shape[2], Dv = v->shape[3];
    const int64_t vrow = a->v_row ? a->v_row : Hkv * Dv;
    const qd_dtype t = q->dtype;
    const size_t es = (size_t)qd_dtype_bits(t) / 8;
    const cudaDataType_t lt = qd_cuda_lt_type(t);
    if (!Lk) { /* no keys: every row sees nothing, its output is 0 (as the other kernels give) */
        const cudaError_t e = cudaMemsetAsync(out->data, 0, qd_tensor_bytes(out), c->stream);
        return e == cudaSuccess ? QD_OK : qd_cuda_fail(e, "attention (wide heads): no keys");
    }
    const int64_t ld = (Lk + 7) / 8 * 8; /* S, P and Vt rows: 16-byte aligned for cuBLASLt's vector loads */
    int64_t rows = QD_WIDE_ELEMS / ld;
    if (rows < 1) rows = 1;
    const char *env = getenv("QDIT_CUDA_WIDE_ROWS"); /* (checks: more, smaller chunks) */
    if (env && atoll(env) > 0 && atoll(env) < rows) rows = atoll(env);
    if (rows > Lq) rows = Lq;
    float *S = NULL;
    void *P = NULL, *Vt = NULL;
    qd_status s = qd_cuda_scratch(c, sizeof(float) * (size_t)(rows * ld), (void **)&S);
    if (!s) s = qd_cuda_scratch(c, es * (size_t)(rows * ld), &P);
    if (!s) s = qd_cuda_scratch(c, es * (size_t)(Dv * ld), &Vt);
    for (int64_t bb = 0; bb < B && !s; bb++)
        for (int64_t hk = 0; hk < Hkv && !s; hk++) {
            const char *vb = (const char *)v->data + es * (size_t)(bb * Lk * vrow + hk * Dv);
            if (es == 4) launch_transpose<float>(vb, vrow, Lk, (int)Dv, Vt, ld, c->stream);
            else launch_transpose<uint16_t>(vb, vrow, Lk, (int)Dv, Vt, ld, c->stream);
            cudaError_t e = cudaGetLastError();
            if (e != cudaSuccess) s = qd_cuda_fail(e, "attention (wide heads): v transposed");
            const char *kb = (const char *)k->data + es * (size_t)((bb * Lk * Hkv + hk) * D);
            for (int64_t h = hk * (H / Hkv); h < (hk + 1) * (H / Hkv) && !s; h++)
                for (int64_t q0 = 0; q0 < Lq && !s; q0 += rows) {
                    const int64_t n = Lq - q0 < rows ? Lq - q0 : rows;
                    const char *qb = (const char *)q->data + es * (size_t)(((bb * Lq + q0) * H + h) * D);
                    lt_extra xs = {};
                    xs.lda = Hkv * D, xs.ldb = H * D, xs.ldd = ld;
                    s = qd_cuda_lt_matmul(c, "attention (wide heads) Q·Kᵀ", n, Lk, D, kb, lt, qb, lt, S, CUDA_R_32F, NULL, &xs);
                    if (s) break;
                    const float *bias = a->bias ? (const float *)a->bias->data + h * Lq * Lk : NULL;
                    const uint8_t *ko = keyok ? keyok + bb * Lk : NULL;
                    if (t == QD_DTYPE_BF16) launch_softmax<__nv_bfloat16>(S, ld, Lk, q0, n, Lq, ko, bias, a->causal, scale, P, c->stream);
                    else if (t == QD_DTYPE_F16) launch_softmax<__half>(S, ld, Lk, q0, n, Lq, ko, bias, a->causal, scale, P, c->stream);
                    else launch_softmax<float>(S, ld, Lk, q0, n, Lq, ko, bias, a->causal, scale, P, c->stream);
                    cudaError_t e2 = cudaGetLastError();
                    if (e2 != cudaSuccess) s = qd_cuda_fail(e2, "attention (wide heads): softmax");
                    if (s) break;
                    char *ob = (char *)out->data + (size_t)(qd_dtype_bits(out->dtype) / 8) * (size_t)(((bb * Lq + q0) * H + h) * Dv);
                    lt_extra xo = {};
                    xo.lda = ld, xo.ldb = ld, xo.ldd = H * Dv;
                    s = qd_cuda_lt_matmul(c, "attention (wide heads) P·V", n, Dv, Lk, Vt, lt, P, lt, ob, qd_cuda_lt_type(out->dtype), NULL, &xo);
                }
        }
    qd_cuda_scratch_free(c, S), qd_cuda_scratch_free(c, P), qd_cuda_scratch_free(c, Vt);
    return s;
}
