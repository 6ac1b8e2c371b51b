/* What the CUDA linear files share: a layer's prepared form on the GPU, the arena that builds it, and the
 * cuBLASLt matmul entry (linear.cu). Every scheme's buffers live in ONE device allocation per layer (`mem`),
 * so that a layer can be moved as a whole (offload.cu streams blocks of layers from pinned host memory)
 * and re-pointed with qd_cuda_linear_rebase. */
#ifndef QD_BACKEND_CUDA_LINEAR_INTERNAL_CUH
#define QD_BACKEND_CUDA_LINEAR_INTERNAL_CUH

#include "backend/cuda/cuda_internal.cuh"

typedef struct {
    void *mem;        /* the one device allocation holding every buffer below; in an offload group, where they
                         are now: a slot or buffer of the group's, or host_copy while not resident (NULL once the
                         group is released) */
    size_t mem_bytes;
    void *host_copy;  /* offload.cu: the layer's bytes in its group's pinned host buffer (owned by the group), or
                         NULL for a layer that owns mem */

    void *w;          /* weight: BF16/F16/F32 or E4M3 [Np, Kp]; 4-bit schemes: packed U8 [N, K/2] lo-first;
                         mxfp8: E4M3 [N, K] */
    qd_dtype wt;
    float *bias;      /* effective bias f32 [Np] or NULL */
    void *bias16;     /* the bias in BF16 for matmuls writing BF16 (cuBLASLt wants the output's type) */
    float *wscale;    /* fp8: [1] or [N]; fp8_block: [N/128][K/128] */
    bool wscale_per_channel;
    float *wscale_vec; /* the weight's per-output-channel scale as an [Np] vector (cuBLASLt's outer-vector
                          scaling); for the W4A8 schemes the row's power of two and global scale */
    bool block;        /* fp8_block: 128×128 weight blocks, 1×128 activation groups */
    int64_t kp, np;    /* K and N padded to multiples of 16 (cuBLASLt's FP8 matmuls need them) */
    float input_scale; /* fp8 / nvfp4 static */
    float *static_scales; /* fp8 static: [input_scale, 1/input_scale] on the device (the scalar scale of matmuls that take
                             this layer's codes, and the D scale of those that write them: linear_fp8_codes) */

    /* W4A8 (linear_w4.cu): block scales as stored, their group along K, the row exponent, smoothing */
    void *wblock;      /* NVFP4/SVDQ-nvfp4 E4M3 [N, K/16], MX E8M0 [N, K/32], SVDQ-int4/AWQ BF16/F16 [N, K/64] */
    qd_dtype wblock_t;
    int group;
    float *dual;       /* dual-scale MXFP4: F32 [N, K/512] */
    int *row_exp;      /* per output row: the power of two the expanded E4M3 row is stored under */
    float *smooth;     /* activation multiplier [K] (NVFP4 pre_quant_scale, MXFP4 mul_scale, 1/SVDQ smooth) */
    float act_shift;   /* SVDQ int4 unsigned activations: added before smoothing */
    void *lora_down, *lora_up; /* SVDQ low-rank factors, in the model dtype ([R, K], [N, R]); lora_up NULL when folded */
    qd_dtype lora_t;
    int64_t rank;
    /* SVDQ with its low-rank branch folded into the FP8 matmul along K (linear_w4.cu, svdq_fold_exp): lr_fold = TR
       more columns (T = 4 terms, or 3; else 0), kp = K + TR. lora_up8: E4M3 [Np, TR], each row [hi(u) | lo(u) | hi(u)
       (| lo(u))] of u = U·2^t / wscale_vec[n]; the activations' tail [hi(v) | hi(v) | lo(v) (| lo(v))] of
       v = (x·Dᵀ)·lr_mult / sx, lr_mult = 2^−t */
    void *lora_up8;
    int64_t lr_fold;
    float lr_mult;
    void *awq_zeros;   /* AWQ: zeros [N, K/64] in wblock's dtype */

    /* int8 / int4 (linear_int8.cu): codes in w (I8 [Np, Kp]), the float bias (dynamic) in bias */
    float *int_scale;   /* per channel: [Np] (dynamic weight_scale, static deq_scale); per group: [N, int_groups] */
    float *int_zero;    /* weight_offset term s_w·z, shaped like int_scale; NULL when every offset is 0 */
    int32_t *int_qbias; /* static W8A8: quant_bias [Np] */
    int int_groups;     /* scale groups along K (1: per channel, the cuBLASLt path) */
    bool int4_act;      /* int4 activations (rowamax/7, codes −8..7) */
    float input_offset; /* static W8A8 (with input_scale) */

    bool expanded;      /* W4A8: expanded to E4M3 for a matmul before (many rows): linears_ahead expands it ahead */
} cuda_linear;

/* fp8_block: the row stride of the weight's [N/128][K/128] block scales as stored on the device (K/128 padded to a
   multiple of 4 floats: cuBLASLt reads rows of 16-byte multiples) */
static inline int64_t qd_cuda_block_scale_ld(int64_t k) { return (k / 128 + 3) / 4 * 4; }

/* Building a layer's prepared form: pieces appended to a host staging buffer at 256-byte aligned offsets,
 * then uploaded in one copy into one device allocation. */
typedef struct {
    uint8_t *host;
    size_t bytes, cap;
} cuda_arena;

/* append `bytes` (copied from src, or zeros when src is NULL); returns the offset, or SIZE_MAX when out of
 * memory */
size_t qd_cuda_arena_add(cuda_arena *a, const void *src, size_t bytes);
/* the staging bytes at `off` (valid until the next add) */
static inline void *qd_cuda_arena_at(cuda_arena *a, size_t off) { return a->host + off; }
/* allocate d->mem and upload the staging buffer (freed here, also on failure); called by linear.cu */
qd_status qd_cuda_arena_finish(cuda_arena *a, cuda_linear *d, const char *layer);
/* A scheme's prepare sets each pointer field of cuda_linear to QD_ARENA_PTR(offset of its piece) (fields it
 * leaves alone are absent); linear.cu turns them into device addresses once the arena is uploaded. Every
 * pointer field must be listed in linear.cu's LINEAR_PTRS. */
#define QD_ARENA_PTR(off) ((void *)(uintptr_t)(off))

/* Move every buffer pointer of d from d->mem to new_base (same layout); d->mem becomes new_base. */
void qd_cuda_linear_rebase(cuda_linear *d, void *new_base);

/* The prepared form of l made by the CUDA backend, or NULL. */
cuda_linear *qd_cuda_linear_of(const qd_linear *l);

/* Optional parts of a cuBLASLt matmul: scale factors of A (the weight) and B (the activations) with their
 * cuBLASLt scale modes, the bias vector's type, the GELU epilogue, and accumulation into D (beta = 1). */
typedef struct {
    const void *a_scale, *b_scale;
    int a_mode, b_mode; /* cublasLtMatmulMatrixScale_t */
    cudaDataType_t bias_type;
    bool gelu;
    bool accumulate;
    int64_t lda; /* A's leading dimension when it is a slice of wider rows (0: K, packed) */
    const void *d_scale; /* E4M3 D: the scale D is multiplied by before its rounding (device f32) */
    int64_t ldd;         /* D's leading dimension when it is a column range of wider rows (0: N) */
    int64_t ldb;         /* B's leading dimension when its rows are a slice of wider rows (0: K, packed) */
} lt_extra;

/* a tensor dtype as cuBLASLt's (F32 for anything else) */
static inline cudaDataType_t qd_cuda_lt_type(qd_dtype t) {
    switch (t) {
    case QD_DTYPE_BF16: return CUDA_R_16BF;
    case QD_DTYPE_F16: return CUDA_R_16F;
    case QD_DTYPE_F8_E4M3: return CUDA_R_8F_E4M3;
    default: return CUDA_R_32F;
    }
}

/* D[N, M] (col-major) = A[K, N]ᵀ·B[K, M] (+ bias) through cuBLASLt; QD_EUNSUPPORTED when cuBLASLt has no
 * algorithm for the combination (callers may fall back). */
qd_status qd_cuda_lt_matmul(qd_cuda *c, const char *name, int64_t m, int64_t n, int64_t k, const void *a, cudaDataType_t at, const void *bm,
                            cudaDataType_t bt, void *d, cudaDataType_t dt, const void *bias, const lt_extra *x);
/* the same with the GELU epilogue when *gelu; where cuBLASLt has none, the plain matmul and *gelu cleared */
qd_status qd_cuda_lt_matmul_gelu(qd_cuda *c, const char *name, int64_t m, int64_t n, int64_t k, const void *a, cudaDataType_t at,
                                 const void *bm, cudaDataType_t bt, void *d, cudaDataType_t dt, const void *bias, lt_extra ex, bool *gelu);

/* y[M, N] = x·wᵀ + d's bias for a BF16/F16/F32 weight w [N, K] of type wt (the dense path; AWQ's expanded weight):
 * cuBLASLt in the activations' 16-bit type, or the f32 route; the GELU epilogue as for qd_cuda_fp8_matmul. */
qd_status qd_cuda_dense_matmul(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const void *w, qd_dtype wt, const qd_tensor *x, qd_tensor *y,
                               int64_t m, bool *gelu);

/* The FP8 matmul of every FP8-tensor-core scheme: y[M, N] = (q[M, Kp]·w[Np, Kp]ᵀ)·sx[m]·d->wscale_vec[n] + bias
 * (+ y's values when accumulate: N == Np only), q the activations' E4M3 codes with per-row scales sx, w E4M3 (d->w,
 * or an expanded copy), the GELU epilogue — of the whole sum — when *gelu (cleared where not applied). */
qd_status qd_cuda_fp8_matmul(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const void *w, const __nv_fp8_e4m3 *q, const float *sx,
                             qd_tensor *y, int64_t m, bool *gelu, bool accumulate);

/* An FP8 layer's activations quantized as its scheme says (per token, per tensor, static, or 1×128 groups for
 * 128×128 weight blocks: the same scales and E4M3 codes as the matmul path), each code stored as its exact value
 * in BF16, into scratch the caller frees: q [M, Kp] and sx [M], or for the block scheme q [M, K] and sx
 * [K/128][M]. */
qd_status qd_cuda_fp8_act_bf16(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, int64_t m, __nv_bfloat16 **q, float **sx);

/* Few rows (M ≤ GEMV_ROWS: modulation and time-embedding linears, CFG pairs) go to kernels that read the weight
 * once instead of matmuls built for many rows: linear_gemv.cu (dense, FP8) and linear_w4.cu (4-bit, MX). */
#define GEMV_ROWS 8

/* The activation rows an FP8 matmul reads, made from up to QD_FUSED_INPUTS parts laid side by side (linear_fused's
 * inputs) and, for SVDQuant with its low-rank branch folded (lr_fold), a tail: x·Dᵀ as f32 [rows, tail_k], each
 * value rounded to tail_round (the factors' 16-bit type, as Nunchaku rounds the branch's intermediate), times
 * tail_mult, and written as tail_terms columns [hi | hi | lo (| lo)] (cuda_linear.lora_up8). */
typedef struct {
    const void *x[QD_FUSED_INPUTS];
    int64_t k[QD_FUSED_INPUTS];
    int n, xt;
    const float *tail; /* [tail_splits][tail_rows][tail_k] partial sums */
    int64_t tail_k, tail_rows;
    int tail_splits;
    int tail_terms; /* 3: [hi | hi | lo], 4: [hi | hi | lo | lo] */
    int tail_round;
    float tail_mult;
    const float *amax; /* [tail_splits][tail_rows] maxima of |x·mult| over the parts (lr_down_kernel), or NULL: the
                          quantization takes them itself */
    /* linear_fused with one batch element: its per-channel vectors gs[c] = g[c]·scale[c], gb[c] = g[c]·bias[c] (type
       vj_gbt; g NULL: 1, scale NULL: 1, bias NULL: no gb), made by extra blocks of the staged quantization where that
       runs (it then sets *vj_done), so that they cost no launch of their own; vj_gs NULL: none asked */
    const void *vj_g;
    int vj_gt, vj_gbt;
    int64_t vj_n;
    const float *vj_scale, *vj_bias;
    float *vj_gs;
    void *vj_gb;
    bool *vj_done;
} fused_parts;

/* E4M3 codes of an FP8 layer's activations over the concatenated parts: per row s = max(amax/448, floor), or `fixed`
 * (> 0: a static input scale), q = e4m3(x/s) with the division's bits, k columns; the row scales as below */
qd_status qd_cuda_fp8_quant_parts(qd_cuda *c, const fused_parts *p, int64_t rows, int64_t k, float fixed, int64_t per, int64_t stride,
                                  __nv_fp8_e4m3 *q, float *sx);

/* E4M3 codes of the W4A8 schemes' activations: per row, s = max(amax(v·mult)/448, floor), q = e4m3(v·mult/s) over
 * the concatenated parts (mult: K entries, or NULL) and the tail (its values' amax counted alike), kq columns in all,
 * the row scales at sx[row / per · stride + row % per] (one 256-byte aligned run per batch element) */
qd_status qd_cuda_w4_quant_parts(qd_cuda *c, const fused_parts *p, int64_t rows, int64_t kq, const float *mult, int64_t per, int64_t stride,
                                 __nv_fp8_e4m3 *q, float *sx);

/* SVDQuant folded: x·Dᵀ over p's parts (x_j against D's columns c0_j .. c0_j + k_j) as p's tail — f32 partial sums in
 * scratch the caller frees (p->tail) — with its rounding type and multiplier */
qd_status qd_cuda_svdq_lr_down(qd_cuda *c, const qd_linear *l, const cuda_linear *d, fused_parts *p, int64_t rows);

/* 16 bytes of a weight row, read once: not kept in L1 (the GEMV kernels' weight loads, so that the activations,
   which every block reads, stay there) */
__device__ __forceinline__ uint4 ld_stream(const uint8_t *p) {
    uint4 u;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(u.x), "=r"(u.y), "=r"(u.z), "=r"(u.w) : "l"(p));
    return u;
}

/* the scheme files' entry points: prepare (fill d's buffers) and run */
qd_status qd_cuda_w4_prepare(qd_linear *l, cuda_linear *d, cuda_arena *a);
qd_status qd_cuda_w4_linear(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu);
bool qd_cuda_w4_covers(const qd_linear *l);
bool qd_cuda_w4_takes_tokens(const qd_linear *l, const cuda_linear *d);
qd_status qd_cuda_w4_linear_tokens(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const __nv_fp8_e4m3 *q, const float *sx, qd_tensor *y,
                                   int64_t m, bool *gelu);
/* linear_fused of a W4A8 layer (linear.cu): whether its M rows run the expansion + FP8 matmul path without a low-rank
   branch, and the expansion of its weights into an E4M3 scratch copy [Np, K] (freed by the caller) */
bool qd_cuda_w4_fusable(const qd_linear *l, const cuda_linear *d, int64_t m, const qd_cuda *c);
qd_status qd_cuda_w4_expand(qd_cuda *c, const qd_linear *l, const cuda_linear *d, void **w8);
/* the expansion itself (ahead.cu runs it on its side stream): its bytes, whether a layer's is made ahead (4-bit and
   MX layers expanded for a matmul before), and the launch into w8 on stream st */
size_t qd_cuda_w4_expand_bytes(const qd_linear *l, const cuda_linear *d);
bool qd_cuda_w4_ahead(const qd_linear *l, const cuda_linear *d);
qd_status qd_cuda_w4_expand_into(const qd_cuda *c, const qd_linear *l, const cuda_linear *d, void *w8, cudaStream_t st);
/* ahead.cu: the layer's E4M3 copy made ahead by linears_ahead, the backend's stream ordered after it; the caller
   owns it (frees it with qd_cuda_scratch_free after its matmul). NULL: none, expand as usual. */
void *qd_cuda_ahead_take(qd_cuda *c, const cuda_linear *d);
qd_status qd_cuda_int8_prepare(qd_linear *l, cuda_linear *d, cuda_arena *a);
qd_status qd_cuda_int8_linear(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu);
bool qd_cuda_int8_covers(const qd_linear *l);
/* the layer prepared here (preparing it on first use) and its weights on the device, or an error naming why not */
qd_status qd_cuda_linear_ready(qd_linear *l, const cuda_linear **out);
/* linear_gemv.cu: whether its kernels take this layer and input (else the matmul path), and the run */
bool qd_cuda_gemv_covers(const qd_linear *l, const cuda_linear *d, const qd_tensor *x);
qd_status qd_cuda_gemv_linear(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu);

#endif
