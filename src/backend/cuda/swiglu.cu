/* SwiGLU out of a joined [gate | value] projection (backend.h swiglu / swiglu_fp8): y = silu(gate)·value per row,
 * the SiLU rounded to y's dtype before the product as the composition (activation, then mul) rounds it. With
 * swiglu_fp8 the product is quantized per token for the next linear instead of stored: Z-Image's w2 input, one
 * read of [w1 | w3]'s output and a byte written per value, where the composition made four BF16 passes (SiLU in
 * place, mul, and the quantization's two reads). */
#include <stdlib.h>

#include "backend/cuda/cuda_internal.cuh"

/* BF16 rows, N % 8 == 0, 16-byte aligned columns: a block per row, each thread up to NV 16-byte words of the
 * output, held in registers between the row max and the codes (q8) */
template <int NV>
__global__ void swiglu_bf16_kernel(const __nv_bfloat16 *x, int64_t w, int gate_col, int value_col, int n, __nv_bfloat16 *y, __nv_fp8_e4m3 *q8,
                                   float *row_scale, float fixed) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x;
    const uint4 *gr = (const uint4 *)(x + row * w + gate_col), *vr = (const uint4 *)(x + row * w + value_col);
    const int nv = n / 8;
    /* every load issued before the arithmetic: 2·NV 16-byte reads in flight per thread */
    uint4 gw[NV], vw[NV];
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int k = threadIdx.x + j * blockDim.x;
        if (k < nv) gw[j] = __ldg(gr + k), vw[j] = __ldg(vr + k);
    }
    float o[NV][8];
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int k = threadIdx.x + j * blockDim.x;
        if (k >= nv) continue;
        float g[8], v[8];
        qd_bf16x8_f32(gw[j], g);
        qd_bf16x8_f32(vw[j], v);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            o[j][e] = qd_round_to(QD_DTYPE_BF16, qd_round_to(QD_DTYPE_BF16, qd_silu(g[e])) * v[e]);
            amax = fmaxf(amax, fabsf(o[j][e]));
        }
        if (!q8) ((uint4 *)(y + row * n))[k] = qd_pack_bf16x8(o[j]);
    }
    if (q8) qd_row_fp8_codes<NV>(o, nv, amax, red, q8 + row * n, row_scale + row, fixed);
}

/* any float dtypes and shapes: a block per row; with q8 the row's products are made twice (max, then codes) */
__global__ void swiglu_kernel(const void *x, int xt, int64_t w, int64_t gate_col, int64_t value_col, int64_t n, void *y, int yt, __nv_fp8_e4m3 *q8,
                              float *row_scale, float fixed) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x, base = row * w;
    const int ot = q8 ? QD_DTYPE_BF16 : yt;
    float amax = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float o = qd_round_to(ot, qd_round_to(ot, qd_silu(qd_ld(x, xt, base + gate_col + i))) * qd_ld(x, xt, base + value_col + i));
        if (q8) amax = fmaxf(amax, fabsf(o));
        else qd_st(y, yt, row * n + i, o);
    }
    if (!q8) return;
    const float ts = fixed > 0.0f ? fixed : fmaxf(qd_block_max(amax, red) / 448.0f, QD_TOKEN_MIN_SCALE);
    if (threadIdx.x == 0) row_scale[row] = ts;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float o = qd_round_to(ot, qd_round_to(ot, qd_silu(qd_ld(x, xt, base + gate_col + i))) * qd_ld(x, xt, base + value_col + i));
        q8[row * n + i] = __nv_fp8_e4m3(o / ts);
    }
}

static qd_status swiglu_run(qd_backend *b, const char *op, const qd_tensor *x, int64_t gate_col, int64_t value_col, qd_tensor *y, qd_tensor *codes,
                            qd_tensor *row_scale, float fixed) {
    qd_status s = qd_cuda_check_float(op, "x", x);
    if (s || (y && (s = qd_cuda_check_float(op, "y", y)))) return s;
    const qd_tensor *out = y ? y : codes;
    bool ok = x->rank >= 1 && out->rank == x->rank;
    for (int i = 0; ok && i + 1 < x->rank; i++) ok = x->shape[i] == out->shape[i];
    if (!ok) return qd_fail(QD_EINVAL, "cuda %s: x [..., W] and the output [..., N] must have the same leading dims", op);
    const int64_t w = x->shape[x->rank - 1], n = out->shape[out->rank - 1], rows = w ? qd_tensor_elements(x) / w : 0;
    if (gate_col < 0 || value_col < 0 || gate_col + n > w || value_col + n > w)
        return qd_fail(QD_EINVAL, "cuda %s: gate columns [%lld, %lld) and value columns [%lld, %lld) must lie in x's %lld", op, (long long)gate_col,
                       (long long)(gate_col + n), (long long)value_col, (long long)(value_col + n), (long long)w);
    if (codes) {
        if (x->dtype != QD_DTYPE_BF16 || codes->dtype != QD_DTYPE_F8_E4M3 || row_scale->dtype != QD_DTYPE_F32 || qd_tensor_elements(row_scale) != rows)
            return qd_fail(QD_EINVAL, "cuda %s: BF16 x into codes [..., N] (F8_E4M3) and %lld row scales (F32)", op, (long long)rows);
    }
    if (!rows || !n) return QD_OK;
    const cudaStream_t stream = qd_cuda_of(b)->stream;
    __nv_fp8_e4m3 *q8 = codes ? (__nv_fp8_e4m3 *)codes->data : NULL;
    float *rs = codes ? (float *)row_scale->data : NULL;
    const int64_t nv = n / 8;
    const bool vec = x->dtype == QD_DTYPE_BF16 && (codes || y->dtype == QD_DTYPE_BF16) && n % 8 == 0 && w % 8 == 0 && gate_col % 8 == 0 &&
                     value_col % 8 == 0 && nv <= 8192 && qd_cuda_aligned16(x->data) && qd_cuda_aligned16(out->data);
    if (vec) {
        /* at most 4 16-byte words of the output per thread: at Z-Image's 10240, 320 threads of 4 words ran swiglu_fp8
           in 0.102 ms against 0.120 for 160 threads of 8 (fewer registers, more warps per SM; bench_cuda_ops
           BENCH_ONLY=zimage, H200, before the fast SiLU and code division took it to 0.060). QDIT_CUDA_SWIGLU_WORDS=N
           (1, 2, 4 or 8) sets it, for side-by-side timing */
        static int most = 0;
        if (!most) {
            const char *e = getenv("QDIT_CUDA_SWIGLU_WORDS");
            most = e ? atoi(e) : 4;
            if (most != 1 && most != 2 && most != 8) most = 4;
        }
        int per = nv <= 256 ? 1 : nv <= 512 ? 2 : nv <= 1024 ? 4 : 8;
        while (per < 8 && (nv + per - 1) / per > 1024) per *= 2; /* at most 1024 threads */
        if (per > most && (nv + most - 1) / most <= 1024) per = most;
        const int threads = (int)((nv + per - 1) / per + 31) / 32 * 32;
        const __nv_bfloat16 *xp = (const __nv_bfloat16 *)x->data;
        __nv_bfloat16 *yp = codes ? NULL : (__nv_bfloat16 *)y->data;
#define SW(P) swiglu_bf16_kernel<P><<<(unsigned)rows, threads, 0, stream>>>(xp, w, (int)gate_col, (int)value_col, (int)n, yp, q8, rs, fixed)
        if (per == 1) SW(1);
        else if (per == 2) SW(2);
        else if (per == 4) SW(4);
        else SW(8);
#undef SW
    } else {
        swiglu_kernel<<<(unsigned)rows, 256, 0, stream>>>(x->data, x->dtype, w, gate_col, value_col, n, y ? y->data : NULL, y ? y->dtype : 0, q8, rs, fixed);
    }
    QD_CUDA_LAUNCHED(op);
    return QD_OK;
}

extern "C" qd_status qd_cuda_swiglu(qd_backend *b, const qd_tensor *x, int64_t gate_col, int64_t value_col, qd_tensor *y) {
    return swiglu_run(b, "swiglu", x, gate_col, value_col, y, NULL, NULL, 0.0f);
}

extern "C" qd_status qd_cuda_swiglu_fp8(qd_backend *b, const qd_tensor *x, int64_t gate_col, int64_t value_col, float fixed_scale, qd_tensor *codes,
                                        qd_tensor *row_scale) {
    return swiglu_run(b, "swiglu_fp8", x, gate_col, value_col, NULL, codes, row_scale, fixed_scale);
}
