/* What the CUDA backend's op files share: the backend state, error checks, dtype loads/stores in
 * kernels, and launch helpers. C++ only (nvcc); the entry points are extern "C" for the vtable. */
#ifndef QD_BACKEND_CUDA_INTERNAL_CUH
#define QD_BACKEND_CUDA_INTERNAL_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend/backend.h"
#include "core/log.h"
#include "core/status.h"
#include "backend/cuda/cuda.h"
}

typedef struct {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    int sm_count;
    int cc_major, cc_minor;
    char name[256];
    bool ops_owned; /* b->ops is a copy (QDIT_CUDA_PROFILE) */
    void *lt_plans; /* linear.cu's cache of cuBLASLt matmul plans */
    bool use_cudnn; /* attention may go to cuDNN's fused SDPA (QDIT_CUDNN=0 says no, read at creation) */
    bool gelu_epilogue; /* linears fuse GELU-tanh into cuBLASLt's epilogue (QDIT_CUDA_GELU_EPILOGUE=0 says no) */
    /* check switches for the linears' fallback paths, read at creation (docs/cuda.md "Switches") */
    bool fp8_unfused;   /* QDIT_CUDA_FP8_UNFUSED: FP8 scales in our epilogue kernel, not cuBLASLt's */
    bool w4_no_gemv;    /* QDIT_CUDA_W4_NO_GEMV: few-row 4-bit linears through the expansion too */
    bool no_gemv;       /* QDIT_CUDA_NO_GEMV: few-row dense and FP8 linears through cuBLASLt too */
    bool int8_cores;    /* QDIT_CUDA_INT8_CORES: per-channel int8 on the CUDA-core kernel */
    bool int8_lt;       /* QDIT_CUDA_INT8_LT: per-channel int8 on cuBLASLt's int8 matmul + the epilogue kernel, not our wgmma kernel */
    bool int8_coop;     /* QDIT_CUDA_INT8_COOP: the int8 wgmma kernel's cooperative form (128×256 tiles shared by both consumers) */
    bool linear_unfused; /* QDIT_CUDA_LINEAR_UNFUSED: linear_fused composed of concat, linear and gated_add */
    bool fp8_codes_fallback; /* QDIT_CUDA_FP8_CODES_FALLBACK: linear_fp8_codes / linear_fused_codes take their fallbacks */
    bool fp8_precise;    /* QDIT_CUDA_FP8_PRECISE: FP8 matmuls promote partial sums to f32 (cuBLASLt's default) */
    void *cudnn;    /* cudnn.cu's handle, plans and workspace */
    bool use_graphs; /* steps may be recorded into CUDA graphs (QDIT_CUDA_GRAPH=0 and profiling say no) */
    void *offload;   /* offload.cu's weight groups, streaming slots and copy stream (NULL until a group is made) */
    void *ahead;     /* ahead.cu's side stream and the copies made ahead (NULL until linears_ahead first runs) */
    bool no_ahead;   /* QDIT_CUDA_NO_AHEAD: linears_ahead does nothing (every expansion right before its matmul) */
    bool expand_ref; /* QDIT_CUDA_EXPAND_REF: the 4-bit weight expansion by its reference kernel (linear_w4.cu) */
    int svdq_quant_threads; /* QDIT_CUDA_SVDQ_QUANT_THREADS (64..1024, multiple of 32): the folded SVDQuant rows' quantization block
                               (0: the default, 64; linear.cu) */
    bool svdq_lr_lt; /* QDIT_CUDA_SVDQ_LR_LT: SVDQuant's low-rank input x·Dᵀ through cuBLASLt instead of lr_down_kernel */
    int quant_threads; /* QDIT_CUDA_QUANT_THREADS (64..1024, multiple of 32): the per-token activation quantizations' blocks (one
                          row each) for FP8 and the W4A8 schemes without a folded branch (0: each kernel's default) */
    int quant_batch; /* QDIT_CUDA_QUANT_BATCH (1..QD_ROW_BATCH): loads in flight per thread in the per-token quantizations */
    int rope_heads;  /* QDIT_CUDA_ROPE_HEADS (1, 2 or 4): heads per thread in rms_norm_rope's BF16 kernel (0: 4, 2 or 1 as H allows) */
    int quant_warp; /* QDIT_CUDA_QUANT_WARP=1|0: the linears' BF16 per-token quantizations take a warp per row, or a block per row;
                       unset (-1): a warp for SVDQuant's folded rows, where it measured faster (docs/benchmarks.md), a block elsewhere */
    bool no_many;    /* QDIT_CUDA_NO_MANY: linear_many runs its layers one by one (for side-by-side timing) */
    bool w4_gemv_pf; /* QDIT_CUDA_W4_GEMV_PF: the one-row W4A16 GEMV prefetches each thread's next chunk, as before the
                        twenty-first pass (linear_w4.cu; the same bits) */
    bool quant_smem; /* linear_fused's per-token quantizations of BF16 rows stage each row in shared memory (QDIT_CUDA_QUANT_SMEM=0: they
                        read it twice from global memory, as before the nineteenth pass; the same bits). Plain linears always read twice */
    bool quant_div;  /* QDIT_CUDA_QUANT_DIV: the FP8 linears' own quantizations divide (IEEE) instead of qd_div_by's reciprocal and FMAs
                        (the same bits: the op case "fp8 per-token codes … against a host division" holds both to the host) */
    int lrd_per_sm;  /* QDIT_CUDA_SVDQ_LRD_PER_SM (1..16): lr_down_kernel's blocks per SM that its K slices aim for (4) */
    bool svdq_amax_pass; /* QDIT_CUDA_SVDQ_AMAX_PASS: the folded rows' maxima by a pass of the quantization over x, not by
                            lr_down_kernel */
} qd_cuda;

/* threads per row of a per-token quantization kernel: QDIT_CUDA_QUANT_THREADS, else the kernel's default */
static inline unsigned qd_cuda_quant_threads(const qd_cuda *c, unsigned dflt) { return c->quant_threads ? (unsigned)c->quant_threads : dflt; }

extern "C" void qd_cuda_plans_free(qd_cuda *c);
/* cudnn.cu: run the attention through cuDNN when it covers the case (true; *st says how it went),
   or leave it to the caller (false: not covered, or cuDNN absent) */
/* attention with D or Dv above the kernels' 256 (attention_wide.cu); keyok: the key mask as bytes, or NULL */
qd_status qd_cuda_attention_wide(qd_backend *b, const qd_attn_args *a, const uint8_t *keyok, float scale, qd_tensor *out);
/* cudnn.cu: a convolution through cuDNN (true when it ran; *st says how it went; false: not covered, or no cuDNN).
   w is packed [O, C, (kt,) kh, kw] in x's type; no bias (conv.cu adds it). */
typedef struct {
    const void *x, *w;
    void *y;
    int xt, yt; /* qd_dtype */
    int nd;     /* spatial dims: 2 or 3 (T = kt = st = 1, pt0 = pt1 = 0 for 2) */
    int64_t N, C, O, T, H, W, kt, kh, kw, To, Ho, Wo, st, sh, sw, pt0, pt1, ph, pw;
} qd_cudnn_conv_args;
extern "C" bool qd_cudnn_conv(qd_cuda *c, const qd_cudnn_conv_args *a, qd_status *st);
extern "C" bool qd_cudnn_sdpa(qd_backend *b, const qd_attn_args *a, qd_tensor *out, qd_status *st);
extern "C" void qd_cudnn_free(qd_cuda *c);
/* offload.cu: weight offload (backend.h weights_*), and its state freed with the backend */
extern "C" {
qd_status qd_cuda_weights_group(qd_backend *b, qd_linear *const *layers, int n, int *group_id);
qd_status qd_cuda_weights_fetch(qd_backend *b, int group_id);
qd_status qd_cuda_weights_fetch_all(qd_backend *b);
qd_status qd_cuda_weights_evict_all(qd_backend *b);
void qd_cuda_weights_release(qd_backend *b);
qd_status qd_cuda_memory_info(qd_backend *b, qd_memory_info *out);
void qd_cuda_offload_free(qd_cuda *c);
/* graph_begin / graph_end tell offload.cu that a recording starts, and whether it made a graph */
void qd_cuda_offload_recording_begin(qd_cuda *c);
void qd_cuda_offload_recording_end(qd_cuda *c, bool recorded);
/* ahead.cu: backend.h linears_ahead; graph_begin / graph_end settle it (before the capture starts, before it ends) */
qd_status qd_cuda_linears_ahead(qd_backend *b, qd_linear *const *layers, int n);
qd_status qd_cuda_ahead_recording_begin(qd_cuda *c);
qd_status qd_cuda_ahead_recording_end(qd_cuda *c);
void qd_cuda_ahead_free(qd_cuda *c);
}

static inline qd_cuda *qd_cuda_of(qd_backend *b) { return (qd_cuda *)b->impl; }

/* A failed CUDA call or launch as a qd_status naming the op and the CUDA error. */
qd_status qd_cuda_fail(cudaError_t e, const char *what);
#define QD_CUDA_TRY(call, what)                                                                                \
    do {                                                                                                       \
        cudaError_t e_ = (call);                                                                               \
        if (e_ != cudaSuccess) return qd_cuda_fail(e_, what);                                                  \
    } while (0)
/* after a launch: the launch error (bad configuration), without synchronising */
#define QD_CUDA_LAUNCHED(what) QD_CUDA_TRY(cudaGetLastError(), what)

/* device scratch of `bytes` on the backend's stream (stream-ordered; freed with qd_cuda_scratch_free) */
qd_status qd_cuda_scratch(qd_cuda *c, size_t bytes, void **out);
void qd_cuda_scratch_free(qd_cuda *c, void *p);

/* -------------------------------------------------------------- element access in kernels ------ */

/* the float dtypes an op's tensors may have (backend.h: F32 / BF16 / F16) */
__device__ __forceinline__ float qd_ld(const void *p, int dt, int64_t i) {
    switch (dt) {
    case QD_DTYPE_BF16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case QD_DTYPE_F16: return __half2float(((const __half *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

__device__ __forceinline__ void qd_st(void *p, int dt, int64_t i, float v) {
    switch (dt) {
    case QD_DTYPE_BF16: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v); break;
    case QD_DTYPE_F16: ((__half *)p)[i] = __float2half_rn(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

/* round v as a store to dtype dt would (for ops that reproduce an intermediate cast) */
__device__ __forceinline__ float qd_round_to(int dt, float v) {
    switch (dt) {
    case QD_DTYPE_BF16: return __bfloat162float(__float2bfloat16_rn(v));
    case QD_DTYPE_F16: return __half2float(__float2half_rn(v));
    default: return v;
    }
}

/* SiLU, x·sigmoid(x) as x / (1 + e^−x) (the activation op's, and swiglu's, which must round as it does), with the
 * fast exponential and division (≤ 2 ulp each, below BF16's rounding; large negative x gives −0 once 1 + e^−x
 * reaches ∞): swiglu_fp8 was bound by the accurate forms' instructions, not by memory */
__device__ __forceinline__ float qd_silu(float x) { return __fdividef(x, 1.0f + __expf(-x)); }

/* GELU, tanh form: 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))) written as x·sigmoid(2·…) (the activation op's, and
 * linear epilogues' that apply it themselves) */
__device__ __forceinline__ float qd_gelu_tanh(float x) { return x / (1.0f + expf(-2.0f * 0.7978845608028654f * (x + 0.044715f * x * x * x))); }

/* 8 consecutive values of a 16-byte aligned F32/BF16/F16 array from element i (a multiple of 8): one 16-byte
 * load for BF16, two for F32 (the fused norm kernels' weights, scales and shifts) */
__device__ __forceinline__ void qd_ld8(const void *p, int dt, int64_t i, float *o) {
    if (dt == QD_DTYPE_BF16) {
        const uint4 u = *(const uint4 *)((const __nv_bfloat16 *)p + i);
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float2 f = __bfloat1622float2(h[j]);
            o[2 * j] = f.x, o[2 * j + 1] = f.y;
        }
    } else if (dt == QD_DTYPE_F32) {
        const float4 a = *(const float4 *)((const float *)p + i), b = *(const float4 *)((const float *)p + i + 4);
        o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) o[j] = qd_ld(p, dt, i + j);
    }
}

/* v[0..7] *= m[i..i+7] for a 16-byte aligned f32 vector (i % 4 == 0): two 16-byte loads, so that a warp's 32 threads
   read 1 KB in eight 128-byte pieces instead of touching each piece eight times with 4-byte loads */
__device__ __forceinline__ void qd_mul8(float *v, const float *m, int64_t i) {
    const float4 a = *(const float4 *)(m + i), b = *(const float4 *)(m + i + 4);
    v[0] *= a.x, v[1] *= a.y, v[2] *= a.z, v[3] *= a.w, v[4] *= b.x, v[5] *= b.y, v[6] *= b.z, v[7] *= b.w;
}

/* 8 BF16 values of one 16-byte word as floats */
__device__ __forceinline__ void qd_bf16x8_f32(const uint4 &u, float *o) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 f = __bfloat1622float2(h[j]);
        o[2 * j] = f.x, o[2 * j + 1] = f.y;
    }
}

/* f(i, u) for each 16-byte word u = xr[i] of a row of n16 words, the block's threads striding over it with up to
 * `batch` (1..QD_ROW_BATCH) loads of each thread in flight before the first f: the per-token quantizations (one block
 * per row, a store after each load) ran at ~1.5 TB/s with one load at a time (Nsight Compute, H200) */
#define QD_ROW_BATCH 4
template <typename F> __device__ __forceinline__ void qd_row_words_by(const uint4 *xr, int64_t n16, int batch, int tid, int nthr, F f) {
    for (int64_t i0 = tid; i0 < n16; i0 += (int64_t)batch * nthr) {
        uint4 u[QD_ROW_BATCH];
#pragma unroll
        for (int t = 0; t < QD_ROW_BATCH; t++) {
            const int64_t i = i0 + (int64_t)t * nthr;
            if (t < batch && i < n16) u[t] = __ldg(xr + i);
        }
#pragma unroll
        for (int t = 0; t < QD_ROW_BATCH; t++) {
            const int64_t i = i0 + (int64_t)t * nthr;
            if (t < batch && i < n16) f(i, u[t]);
        }
    }
}
template <typename F> __device__ __forceinline__ void qd_row_words(const uint4 *xr, int64_t n16, int batch, F f) {
    qd_row_words_by(xr, n16, batch, (int)threadIdx.x, (int)blockDim.x, f);
}

/* 8 floats as 8 BF16 values in one 16-byte word (round to nearest even) */
__device__ __forceinline__ uint4 qd_pack_bf16x8(const float *v) {
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int j = 0; j < 4; j++) h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
    return u;
}

static inline bool qd_cuda_aligned16(const void *p) { return (uintptr_t)p % 16 == 0; }

static inline bool qd_cuda_float_dtype(qd_dtype t) { return t == QD_DTYPE_F32 || t == QD_DTYPE_BF16 || t == QD_DTYPE_F16; }

/* op argument checks shared by the op files */
static inline qd_status qd_cuda_check_float(const char *op, const char *what, const qd_tensor *t) {
    if (!t->data || !qd_cuda_float_dtype(t->dtype)) return qd_fail(QD_EINVAL, "cuda %s: %s must be an F32/BF16/F16 device tensor", op, what);
    return QD_OK;
}

static inline bool qd_cuda_same_shape(const qd_tensor *a, const qd_tensor *b) {
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

/* blocks for n elements at `threads` per block, capped for grid-stride loops */
static inline unsigned qd_cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    return (unsigned)(b > 65535 * 16 ? 65535 * 16 : b);
}

/* block-wide sum of v (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result */
__device__ __forceinline__ float qd_block_sum(float v, float *smem32) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) smem32[warp] = v;
    __syncthreads();
    v = lane < nw ? smem32[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float qd_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float qd_block_max(float v, float *smem32) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) smem32[warp] = v;
    __syncthreads();
    v = lane < nw ? smem32[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The smallest per-token FP8 scale (an all-zero row's): every per-token E4M3 quantization uses it, so that a row
 * quantized by its producer gets the codes the linear's own quantization would make. */
#define QD_TOKEN_MIN_SCALE (1.0f / (448.0f * 512.0f))

/* v / s, correctly rounded (the division's bits), from inv = 1/s correctly rounded, in a multiply and two FMAs:
 * q = v·inv is within an ulp of v/s, and q + (v − s·q)·inv is then v/s rounded to nearest (Markstein's theorem;
 * Muller et al., Handbook of Floating-Point Arithmetic, §4.7), barring overflow, which |v| ≤ 448·s rules out, and
 * results below 2^−126, which every E4M3 code rounds to 0 either way. s must be finite. The IEEE division it
 * replaces took ~9 instructions per value with its range check, and bound the row kernels' FP8 tails. */
__device__ __forceinline__ float qd_div_by(float v, float s, float inv) {
    const float q = v * inv;
    return fmaf(fmaf(-q, s, v), inv, q);
}

/* 8 E4M3 codes of v/s (RNE, saturating), two per conversion: by qd_div_by where `ieee` is false (s finite), else by
 * the IEEE division (an infinite s, or QDIT_CUDA_QUANT_DIV) — the same bits either way */
__device__ __forceinline__ uint2 qd_fp8x8_div(const float *v, float s, float inv, bool ieee) {
    uint32_t w[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float t[4];
#pragma unroll
        for (int e = 0; e < 4; e++) t[e] = ieee ? v[4 * h + e] / s : qd_div_by(v[4 * h + e], s, inv);
        const __nv_fp8x2_storage_t lo = __nv_cvt_float2_to_fp8x2(make_float2(t[0], t[1]), __NV_SATFINITE, __NV_E4M3);
        const __nv_fp8x2_storage_t hi = __nv_cvt_float2_to_fp8x2(make_float2(t[2], t[3]), __NV_SATFINITE, __NV_E4M3);
        w[h] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
    return make_uint2(w[0], w[1]);
}

/* The per-token FP8 tail of the row kernels that hold their row in registers (norm_modulate_fp8, swiglu_fp8,
 * rms_norm_gated_add): the block's row max amax → s = max(amax/448, QD_TOKEN_MIN_SCALE), or a static layer's input
 * scale (fixed > 0), then e4m3(v/s) — linear.cu's quantization to the bit. v[j] holds the row's 16-byte word
 * threadIdx.x + j·blockDim.x (of nv). */
template <int NV>
__device__ __forceinline__ void qd_row_fp8_codes(const float (&v)[NV][8], int nv, float amax, float *red, __nv_fp8_e4m3 *q8_row, float *scale_out,
                                                 float fixed) {
    const float ts = fixed > 0.0f ? fixed : fmaxf(qd_block_max(amax, red) / 448.0f, QD_TOKEN_MIN_SCALE);
    if (threadIdx.x == 0) *scale_out = ts;
    const float inv = 1.0f / ts;
    const bool exact = isfinite(ts); /* an infinite row max: the plain division (finite / ∞ = 0, where the FMAs make NaN) */
    uint2 *qr = (uint2 *)q8_row;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int k = threadIdx.x + j * blockDim.x;
        if (k < nv) qr[k] = qd_fp8x8_div(v[j], ts, inv, !exact);
    }
}

/* the op entry points, one file each */
extern "C" {
qd_status qd_cuda_copy(qd_backend *b, const qd_tensor *src, qd_tensor *dst);
qd_status qd_cuda_prepare_linear(qd_backend *b, qd_linear *l);
qd_status qd_cuda_linear(qd_backend *b, qd_linear *l, const qd_tensor *x, qd_tensor *y);
qd_status qd_cuda_linear_many(qd_backend *b, qd_linear *const *ls, int n, const qd_tensor *x, qd_tensor *const *ys);
qd_status qd_cuda_linear_fused(qd_backend *b, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate, const qd_tensor *r,
                               qd_tensor *y);
qd_status qd_cuda_attention(qd_backend *b, const qd_attn_args *a, qd_tensor *out);
qd_status qd_cuda_rms_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, qd_tensor *y);
qd_status qd_cuda_layer_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, float eps,
                             qd_tensor *y);
qd_status qd_cuda_group_norm(qd_backend *b, const qd_tensor *x, int groups, const qd_tensor *w, const qd_tensor *bias,
                             float eps, qd_tensor *y);
qd_status qd_cuda_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *cos, const qd_tensor *sin, qd_rope_mode mode,
                       qd_tensor *y);
qd_status qd_cuda_norm_modulate(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps,
                                const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y);
qd_status qd_cuda_norm_modulate_fp8(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps,
                                    const qd_tensor *scale, const qd_tensor *shift, float fixed_scale, qd_tensor *codes, qd_tensor *row_scale);
bool qd_cuda_takes_fp8_tokens(qd_backend *b, const qd_linear *l, float *static_scale);
qd_status qd_cuda_linear_fp8_tokens(qd_backend *b, qd_linear *l, const qd_tensor *codes, const qd_tensor *row_scale, qd_tensor *y);
bool qd_cuda_fp8_codes_between(qd_backend *b, const qd_linear *producer, const qd_linear *consumer);
qd_status qd_cuda_linear_fp8_codes(qd_backend *b, qd_linear *l, const qd_tensor *codes, const qd_tensor *row_scale, const qd_linear *consumer,
                                   qd_tensor *out, int64_t col);
qd_status qd_cuda_linear_fused_codes(qd_backend *b, qd_linear *l, qd_tensor *codes, const qd_tensor *const *xs, const int64_t *cols, int n,
                                     const qd_tensor *gate, const qd_tensor *r, qd_tensor *y);
qd_status qd_cuda_rms_norm_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *cos,
                                const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y);
qd_status qd_cuda_rms_norm_rope_cols(qd_backend *b, const qd_tensor *x, int64_t col, const qd_tensor *w, float eps, const qd_tensor *cos,
                                     const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y);
qd_status qd_cuda_activation(qd_backend *b, qd_act_kind kind, const qd_tensor *x, qd_tensor *y);
qd_status qd_cuda_gated(qd_backend *b, qd_act_kind kind, bool gate_first, const qd_tensor *x, qd_tensor *y);
qd_status qd_cuda_rms_norm_gated_add(qd_backend *b, const qd_tensor *o, const qd_tensor *w, float eps, const qd_tensor *gate, qd_tensor *x,
                                     const qd_tensor *next_w, const qd_tensor *next_scale, qd_tensor *next_y, float fixed_scale, qd_tensor *codes,
                                     qd_tensor *row_scale);
qd_status qd_cuda_swiglu(qd_backend *b, const qd_tensor *x, int64_t gate_col, int64_t value_col, qd_tensor *y);
qd_status qd_cuda_swiglu_fp8(qd_backend *b, const qd_tensor *x, int64_t gate_col, int64_t value_col, float fixed_scale, qd_tensor *codes,
                             qd_tensor *row_scale);
qd_status qd_cuda_modulate(qd_backend *b, const qd_tensor *x, const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y);
qd_status qd_cuda_gated_add(qd_backend *b, const qd_tensor *r, const qd_tensor *x, const qd_tensor *gate, qd_tensor *y);
qd_status qd_cuda_add(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y);
qd_status qd_cuda_mul(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y);
qd_status qd_cuda_softmax(qd_backend *b, const qd_tensor *x, qd_tensor *y);
qd_status qd_cuda_conv2d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                         qd_tensor *y);
qd_status qd_cuda_conv3d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                         qd_tensor *y);
qd_status qd_cuda_upsample_nearest(qd_backend *b, const qd_tensor *x, int factor, qd_tensor *y);
qd_status qd_cuda_permute(qd_backend *b, const qd_tensor *x, const int *perm, qd_tensor *y);
qd_status qd_cuda_concat(qd_backend *b, const qd_tensor *const *xs, int n, int dim, qd_tensor *y);
qd_status qd_cuda_slice(qd_backend *b, const qd_tensor *x, int dim, int64_t start, int64_t len, qd_tensor *y);
qd_status qd_cuda_embedding(qd_backend *b, const qd_tensor *table, const qd_tensor *ids, qd_tensor *y);
}

#endif
