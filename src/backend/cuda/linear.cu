/* Linears on the GPU: y[M, N] = x[M, K]·Wᵀ + b through cuBLASLt.
 *
 *   dense  BF16/F16 W with BF16/F16 x: one cuBLASLt matmul (f32 accumulation), the effective bias in its
 *          epilogue. F32 activations or F32 weights (the reference precision mode): both operands widened
 *          to f32 in scratch and an f32 matmul (CUBLAS_COMPUTE_32F, no TF32), so an f32 run stays f32.
 *   fp8    E4M3 W [N, K] with its scale per tensor or per output channel; activations quantized here to
 *          E4M3 per token (dynamic), per tensor (dynamic), or with the checkpoint's static input_scale,
 *          by the rules of the CPU file (linear_fp8.c: s = max(amax/448, 1/(448·512)), q = e4m3(x/s),
 *          RNE, saturating). cuBLASLt applies the scales inside the matmul (outer-vector scaling: s_w per
 *          output channel, s_x per token) and the bias in its epilogue (BF16 for a BF16 output, as cuBLASLt
 *          requires there), writing y directly; where it has no such algorithm, the matmul writes f32
 *          with unit scales and one epilogue kernel applies s_x[m]·s_w[n] and the f32 bias.
 *   fp8_block  128×128 weight blocks with 1×128 dynamic activation groups (DeepSeek-style
 *          weight_scale_inv): cuBLASLt's block scaling modes (BLK128x128 for W, VEC128 for x).
 * Operand order: cuBLASLt is column-major, so W [N, K] row-major is its K×N matrix taken transposed (A,
 * "T") and x [M, K] its K×M matrix (B, "N"); D = Aᵀ·B is N×M column-major, which is y [M, N] row-major —
 * the TN form FP8 matmuls require.
 *
 * Output activation (qd_linear.out_act, e.g. FLUX's MLP inputs): GELU-tanh goes into cuBLASLt's GELU epilogue
 * (GELU_BIAS with a bias) on the BF16/F16 dense and the FP8 matmuls, so the activation costs no pass over y and
 * y is rounded once; elsewhere (F32 route, SiLU, no algorithm with the epilogue, QDIT_CUDA_GELU_EPILOGUE=0) the
 * activation kernel runs on y right after the matmul, as the CPU backend does. cuBLASLt's GELU is the tanh
 * form: NVIDIA's documentation says only "GELU point-wise transform", but PyTorch's addmm_activation(use_gelu)
 * runs it for gelu(approximate='tanh') and falls back to gelu_(…, "tanh") without it, XLA fuses only its
 * approximate (tanh) GELU into it, and SGLang's FLUX Linear+GELU path uses it for tanh-GELU ("close but not bit
 * exact"); the op harness checks it against the f64 tanh form.
 *
 * Few rows (M ≤ GEMV_ROWS: modulation and embedder linears) of the dense and FP8 schemes: linear_gemv.cu, kernels
 * that stream the weight once (same quantization, f32 sums), unless QDIT_CUDA_NO_GEMV is set.
 * int8/int4 (msModelSlim W8A8, W8A8_DYNAMIC, W4A4_DYNAMIC): linear_int8.cu, on cuBLASLt's int8 matmul.
 * NVFP4, MXFP4, MXFP8, SVDQuant (W4A8 on the FP8 matmul) and AWQ (W4A16): linear_w4.cu.
 * A scheme without a kernel fails with a message naming the layer and the scheme, logged once per scheme —
 * never an upcast copy. */
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "backend/cuda/linear_internal.cuh"
#include "backend/cuda/mma.cuh"

static const char cuda_linear_tag = 0; /* prepared_for */

static void cuda_linear_free(void *p) {
    cuda_linear *d = (cuda_linear *)p;
    if (!d) return;
    if (!d->host_copy) cudaFree(d->mem); /* else its memory belongs to its offload group (offload.cu) */
    free(d);
}

cuda_linear *qd_cuda_linear_of(const qd_linear *l) { return l->prepared_for == &cuda_linear_tag ? (cuda_linear *)l->prepared : NULL; }

size_t qd_cuda_arena_add(cuda_arena *a, const void *src, size_t bytes) {
    const size_t off = (a->bytes + 255) / 256 * 256;
    if (off + bytes > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < off + bytes) cap *= 2;
        uint8_t *h = (uint8_t *)realloc(a->host, cap);
        if (!h) return SIZE_MAX;
        a->host = h, a->cap = cap;
    }
    memset(a->host + a->bytes, 0, off - a->bytes);
    if (src) memcpy(a->host + off, src, bytes);
    else memset(a->host + off, 0, bytes);
    a->bytes = off + bytes;
    return off;
}

qd_status qd_cuda_arena_finish(cuda_arena *a, cuda_linear *d, const char *layer) {
    qd_status s = QD_OK;
    cudaError_t e = cudaMalloc(&d->mem, a->bytes ? a->bytes : 1);
    if (e == cudaSuccess) e = cudaMemcpy(d->mem, a->host, a->bytes, cudaMemcpyHostToDevice);
    /* from pageable memory cudaMemcpy returns once the bytes are staged, before the DMA lands, and the backend's
       stream (non-blocking) is not ordered after the legacy stream that copies: wait for it, or the layer's first
       kernels may read part of the old contents (seen in the op harness, which runs a layer right after preparing
       it) */
    if (e == cudaSuccess) e = cudaStreamSynchronize(cudaStreamLegacy);
    if (e != cudaSuccess) {
        cudaGetLastError();
        s = qd_fail(QD_ENOMEM, "layer '%s': cannot place its %zu bytes of weights on the GPU (%s)", layer, a->bytes, cudaGetErrorString(e));
    }
    d->mem_bytes = a->bytes;
    free(a->host);
    a->host = NULL, a->bytes = a->cap = 0;
    return s;
}

/* every buffer pointer of the prepared form, for rebasing */
#define LINEAR_PTRS(d)                                                                                                          \
    (void **)&(d)->w, (void **)&(d)->bias, (void **)&(d)->bias16, (void **)&(d)->wscale, (void **)&(d)->wscale_vec,                \
        (void **)&(d)->wblock, (void **)&(d)->dual, (void **)&(d)->row_exp, (void **)&(d)->smooth, (void **)&(d)->lora_down,        \
        (void **)&(d)->lora_up, (void **)&(d)->lora_up8, (void **)&(d)->awq_zeros, (void **)&(d)->int_scale,                                                \
        (void **)&(d)->int_zero, (void **)&(d)->int_qbias, (void **)&(d)->static_scales

/* while a scheme's prepare fills the arena, the pointer fields hold offsets into it (QD_ARENA_PTR); absent
   buffers hold UINTPTR_MAX. Once the arena is on the device, bind turns offsets into addresses. */
static void ptrs_unset(cuda_linear *d) {
    void **ptrs[] = {LINEAR_PTRS(d)};
    for (size_t i = 0; i < sizeof ptrs / sizeof *ptrs; i++) *ptrs[i] = (void *)UINTPTR_MAX;
}

static void ptrs_bind(cuda_linear *d) {
    void **ptrs[] = {LINEAR_PTRS(d)};
    for (size_t i = 0; i < sizeof ptrs / sizeof *ptrs; i++)
        *ptrs[i] = *ptrs[i] == (void *)UINTPTR_MAX || !d->mem ? NULL : (uint8_t *)d->mem + (uintptr_t)*ptrs[i];
}

void qd_cuda_linear_rebase(cuda_linear *d, void *new_base) {
    void **ptrs[] = {LINEAR_PTRS(d)};
    for (size_t i = 0; i < sizeof ptrs / sizeof *ptrs; i++)
        if (*ptrs[i]) *ptrs[i] = (uint8_t *)new_base + ((uint8_t *)*ptrs[i] - (uint8_t *)d->mem);
    d->mem = new_base;
}

static qd_status unsupported(const qd_linear *l) {
    qd_log_once_key(l->scheme_name, QD_LOG_WARN, "cuda: no kernel for scheme %s yet (issue 9); layers in it cannot run on the GPU",
                    l->scheme_name);
    return qd_fail(QD_EUNSUPPORTED, "layer '%s': the CUDA backend has no kernel for scheme %s yet", l->name ? l->name : "linear",
                   l->scheme_name);
}

static qd_status prepare_float_parts(qd_linear *l, cuda_linear *d, cuda_arena *a, bool fp8, bool block, size_t *offs);

/* dense and fp8: the weight (fp8 rows padded to Kp, zero rows up to Np), biases and scales into the arena */
static qd_status prepare_float(qd_linear *l, cuda_linear *d, cuda_arena *a, bool fp8, bool block) {
    size_t offs[5] = {SIZE_MAX, SIZE_MAX, SIZE_MAX, SIZE_MAX, SIZE_MAX}; /* weight, bias, bias16, wscale, wscale_vec */
    qd_status s = prepare_float_parts(l, d, a, fp8, block, offs);
    d->w = QD_ARENA_PTR(offs[0]), d->bias = (float *)QD_ARENA_PTR(offs[1]), d->bias16 = QD_ARENA_PTR(offs[2]);
    d->wscale = (float *)QD_ARENA_PTR(offs[3]), d->wscale_vec = (float *)QD_ARENA_PTR(offs[4]);
    return s;
}

static qd_status prepare_float_parts(qd_linear *l, cuda_linear *d, cuda_arena *a, bool fp8, bool block, size_t *offs) {
    const int64_t n = l->out_features, k = l->in_features;
    d->wt = l->weight.dtype;
    /* FP8 rows padded with zero codes: to a multiple of 16 (cuBLASLt's FP8 matmuls), of 128 with 128×128 blocks
       (a last, partial block of K: its zero columns add nothing, and its activation group's maximum is the real
       columns', as on the CPU) */
    d->kp = block ? (k + 127) / 128 * 128 : fp8 ? (k + 15) / 16 * 16 : k;
    d->np = fp8 ? (n + 15) / 16 * 16 : n;
    const int64_t np = d->np, kp = d->kp;
    const size_t es = (size_t)qd_dtype_bits(d->wt) / 8;
    offs[0] = qd_cuda_arena_add(a, kp == k && np == n ? l->weight.data : NULL, (size_t)(np * kp) * es);
    if (offs[0] == SIZE_MAX) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", l->name);
    if (kp != k || np != n) /* rows of K codes into rows of Kp, the tail and rows past N zero (no contribution) */
        for (int64_t r = 0; r < n; r++)
            memcpy((uint8_t *)qd_cuda_arena_at(a, offs[0]) + (size_t)(r * kp) * es, (const uint8_t *)l->weight.data + (size_t)(r * k) * es, (size_t)k * es);
    if (l->bias.data) {
        /* the effective bias in f32, and in BF16 for matmuls writing BF16 (padded to Np with zeros) */
        offs[1] = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)np);
        offs[2] = qd_cuda_arena_add(a, NULL, 2 * (size_t)np);
        if (offs[1] == SIZE_MAX || offs[2] == SIZE_MAX) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", l->name);
        float *hb = (float *)qd_cuda_arena_at(a, offs[1]);
        qd_linear_bias_f32(l, hb);
        uint16_t *b16 = (uint16_t *)qd_cuda_arena_at(a, offs[2]);
        for (int64_t i = 0; i < np; i++) {
            __nv_bfloat16 v = __float2bfloat16_rn(hb[i]);
            memcpy(&b16[i], &v, 2);
        }
    }
    if (!fp8) return QD_OK;
    const int64_t ns = qd_view_elements(&l->scale), want_block = ((n + 127) / 128) * (kp / 128);
    d->block = block;
    d->wscale_per_channel = !block && ns == n && n > 1;
    if (block ? ns != want_block : (ns != 1 && ns != n))
        return qd_fail(QD_EINVAL, "layer '%s': fp8 weight scale of %lld values for N = %lld", l->name, (long long)ns, (long long)n);
    /* block scales [⌈N/128⌉][⌈K/128⌉] with their rows padded to a multiple of 4 floats: cuBLASLt reads them as rows of
       16-byte multiples (with K/128 = 2 or 3 and more than one row of blocks, unpadded rows gave wrong results) */
    const int64_t kb = kp / 128, kbs = block ? qd_cuda_block_scale_ld(kp) : 0, rows = block ? (n + 127) / 128 : 0;
    offs[3] = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)(block ? rows * kbs : ns));
    if (!block) offs[4] = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)np);
    if (offs[3] == SIZE_MAX || (!block && offs[4] == SIZE_MAX)) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", l->name);
    float *hs = (float *)qd_cuda_arena_at(a, offs[3]);
    for (int64_t i = 0; i < ns; i++) hs[block ? i / kb * kbs + i % kb : i] = qd_view_get_flat(&l->scale, i);
    if (!block) {
        float *hv = (float *)qd_cuda_arena_at(a, offs[4]);
        for (int64_t i = 0; i < np; i++) hv[i] = i < n ? hs[d->wscale_per_channel ? i : 0] : 0.0f;
    }
    if (l->act == QD_ACT_STATIC_TENSOR) {
        d->input_scale = l->input_scale.data ? qd_view_get(&l->input_scale, 0, 0) : 0.0f;
        if (!(d->input_scale > 0.0f)) return qd_fail(QD_EINVAL, "layer '%s': static fp8 needs a positive input_scale", l->name);
        const size_t off = qd_cuda_arena_add(a, NULL, 2 * sizeof(float));
        if (off == SIZE_MAX) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", l->name);
        float *ss = (float *)qd_cuda_arena_at(a, off);
        ss[0] = d->input_scale, ss[1] = 1.0f / d->input_scale;
        d->static_scales = (float *)QD_ARENA_PTR(off);
    }
    return QD_OK;
}

static qd_status prepare(qd_linear *l) {
    if (l->prepared && l->prepared_for == &cuda_linear_tag) return QD_OK;
    if (l->prepared) return qd_fail(QD_EINVAL, "layer '%s': already prepared by another backend", l->name ? l->name : "linear");
    const bool block = l->scheme == QD_SCHEME_FP8 && l->block_n == 128 && l->block_k == 128 && l->act == QD_ACT_DYNAMIC_GROUP &&
                       l->act_group == 128;
    const bool fp8 = l->scheme == QD_SCHEME_FP8 && (!l->block_n || block);
    const bool w4 = qd_cuda_w4_covers(l), i8 = qd_cuda_int8_covers(l);
    if (l->scheme != QD_SCHEME_DENSE && !fp8 && !w4 && !i8) return unsupported(l);
    if (l->stored_released || !l->weight.data) return qd_fail(QD_EINVAL, "layer '%s': no stored weight to upload", l->name ? l->name : "linear");
    cuda_linear *d = (cuda_linear *)calloc(1, sizeof *d);
    if (!d) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", l->name);
    cuda_arena a = {};
    ptrs_unset(d);
    qd_status s = w4 ? qd_cuda_w4_prepare(l, d, &a) : i8 ? qd_cuda_int8_prepare(l, d, &a) : prepare_float(l, d, &a, fp8, block);
    if (!s) s = qd_cuda_arena_finish(&a, d, l->name ? l->name : "linear");
    free(a.host);
    ptrs_bind(d);
    if (s) {
        cuda_linear_free(d);
        return s;
    }
    l->prepared = d;
    l->prepared_free = cuda_linear_free;
    l->prepared_for = &cuda_linear_tag;
    l->device_bytes = d->mem_bytes;
    return QD_OK;
}

/* At load (the vtable op): upload, then give the host's stored weight and scale back — the GPU copy is
 * the one the model runs on. First use from linear() uploads without releasing, so references built on
 * the stored form still work. */
extern "C" qd_status qd_cuda_prepare_linear(qd_backend *b, qd_linear *l) {
    (void)b;
    const bool had = l->prepared != NULL;
    qd_status s = prepare(l);
    if (!s && !had) qd_linear_release_stored(l);
    return s;
}


/* A matmul plan: the descriptors and the algorithm cuBLASLt's heuristic chose for one shape and type
 * combination (the heuristic costs tens of microseconds of host time; a model step has hundreds of
 * linears of a dozen shapes). Pointers (bias, scales) are set per call. `none`: no algorithm exists. */
typedef struct {
    int64_t m, n, k, lda;
    cudaDataType_t at, bt, dt, bias_type;
    bool bias, a_scale, b_scale, gelu, accumulate, fast_accum, d_scale, none;
    int a_mode, b_mode;
    int64_t ldd, ldb;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc, ld; /* lc: C's own layout (BF16) where D is E4M3, else NULL (C is D) */
    cublasLtMatmulAlgo_t algo;
    cublasLtMatmulAlgo_t cand[8]; /* the heuristic's candidates, timed on the first call */
    int ncand;
    bool tuned;
} lt_plan;

#define LT_PLANS 256
typedef struct {
    lt_plan p[LT_PLANS];
    int n, next;
} lt_cache;

static void plan_free(lt_plan *p) {
    if (p->ld) cublasLtMatrixLayoutDestroy(p->ld);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

extern "C" void qd_cuda_plans_free(qd_cuda *c) {
    lt_cache *lc = (lt_cache *)c->lt_plans;
    if (!lc) return;
    for (int i = 0; i < lc->n; i++) plan_free(&lc->p[i]);
    free(lc);
    c->lt_plans = NULL;
}

static lt_plan *plan_get(qd_cuda *c, const lt_plan *key) {
    lt_cache *lc = (lt_cache *)c->lt_plans;
    if (!lc && !(lc = (lt_cache *)calloc(1, sizeof *lc))) return NULL;
    c->lt_plans = lc;
    for (int i = 0; i < lc->n; i++) {
        const lt_plan *p = &lc->p[i];
        if (p->m == key->m && p->n == key->n && p->k == key->k && p->at == key->at && p->bt == key->bt && p->dt == key->dt &&
            p->bias == key->bias && p->bias_type == key->bias_type && p->a_scale == key->a_scale && p->b_scale == key->b_scale && p->gelu == key->gelu && p->accumulate == key->accumulate &&
            p->fast_accum == key->fast_accum && p->lda == key->lda && p->d_scale == key->d_scale && p->ldd == key->ldd && p->ldb == key->ldb &&
            p->a_mode == key->a_mode && p->b_mode == key->b_mode)
            return &lc->p[i];
    }
    /* a new plan: descriptors, layouts and the heuristic's first algorithm */
    lt_plan *p;
    if (lc->n < LT_PLANS) p = &lc->p[lc->n++];
    else {
        p = &lc->p[lc->next];
        lc->next = (lc->next + 1) % LT_PLANS;
        plan_free(p);
    }
    *p = *key;
    p->op = NULL, p->la = p->lb = p->lc = p->ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    /* int8 operands (linear_int8.cu): exact int32 accumulation, int32 alpha/beta, int32 D (IMMA; `at` is in the key) */
    const bool i8 = p->at == CUDA_R_8I;
    cublasStatus_t st = cublasLtMatmulDescCreate(&p->op, i8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F, i8 ? CUDA_R_32I : CUDA_R_32F);
    const cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
    if (!st) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T);
    if (!st) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &N, sizeof N);
    if (!st && (p->bias || p->gelu)) {
        const cublasLtEpilogue_t e = !p->gelu ? CUBLASLT_EPILOGUE_BIAS : p->bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
        st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e);
        if (!st && p->bias) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &p->bias_type, sizeof p->bias_type);
    }
    if (!st && p->a_scale) {
        const int32_t mode = p->a_mode;
        st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode);
    }
    if (!st && p->b_scale) {
        const int32_t mode = p->b_mode;
        st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode);
    }
    /* the heuristic must see the pointers' attributes present: dummies that the calls replace. Aligned
       like cudaMalloc's pointers (256 bytes): the heuristic reads the alignment off them, and a 4-byte
       aligned dummy made it choose algorithms 40% slower over a FLUX step (measured on an H200). */
    alignas(256) static const float dummy[64] = {0};
    const void *dp = dummy;
    if (!st && p->bias) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &dp, sizeof dp);
    if (!st && p->a_scale) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dp, sizeof dp);
    if (!st && p->b_scale) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dp, sizeof dp);
    if (!st && p->d_scale) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, &dp, sizeof dp);
    if (!st && p->fast_accum) {
        const int8_t on = 1;
        st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &on, sizeof on);
    }
    if (!st) st = cublasLtMatrixLayoutCreate(&p->la, p->at, (uint64_t)p->k, (uint64_t)p->n, p->lda ? p->lda : p->k);
    if (!st) st = cublasLtMatrixLayoutCreate(&p->lb, p->bt, (uint64_t)p->k, (uint64_t)p->m, p->ldb ? p->ldb : p->k);
    if (!st) st = cublasLtMatrixLayoutCreate(&p->ld, p->dt, (uint64_t)p->n, (uint64_t)p->m, p->ldd ? p->ldd : p->n);
    /* an E4M3 D: C is BF16 (cuBLASLt's FP8 outputs take a 16-bit C), never read (beta = 0) */
    if (!st && p->dt == CUDA_R_8F_E4M3) st = cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_16BF, (uint64_t)p->n, (uint64_t)p->m, p->n);
    if (!st) st = cublasLtMatmulPreferenceCreate(&pref);
    if (!st) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_workspace_bytes,
                                                       sizeof c->lt_workspace_bytes);
    cublasLtMatmulHeuristicResult_t h[8] = {};
    int found = 0;
    if (!st) st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->la, p->lb, p->lc ? p->lc : p->ld, p->ld, pref, 8, h, &found);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    p->none = st || !found;
    p->ncand = 0;
    for (int i = 0; !p->none && i < found; i++)
        if (h[i].state == CUBLAS_STATUS_SUCCESS) p->cand[p->ncand++] = h[i].algo;
    if (!p->ncand) p->none = true;
    else p->algo = p->cand[0];
    p->tuned = p->ncand == 1;
    return p;
}

/* D[N, M] (col-major) = A[K, N]ᵀ·B[K, M] (+ bias) through cuBLASLt; types as given. QD_EUNSUPPORTED when
 * cuBLASLt has no algorithm for the combination (callers may fall back). */
qd_status qd_cuda_lt_matmul(qd_cuda *c, const char *name, int64_t m, int64_t n, int64_t k, const void *a, cudaDataType_t at, const void *bm,
                             cudaDataType_t bt, void *d, cudaDataType_t dt, const void *bias, const lt_extra *x) {
    lt_plan key = {};
    key.m = m, key.n = n, key.k = k, key.at = at, key.bt = bt, key.dt = dt;
    key.bias = bias != NULL, key.bias_type = bias ? (x ? x->bias_type : CUDA_R_32F) : CUDA_R_32F;
    key.a_scale = x && x->a_scale, key.b_scale = x && x->b_scale;
    key.a_mode = key.a_scale ? x->a_mode : 0, key.b_mode = key.b_scale ? x->b_mode : 0;
    key.gelu = x && x->gelu;
    key.accumulate = x && x->accumulate;
    key.lda = x && x->lda != k ? x->lda : 0;
    key.d_scale = x && x->d_scale;
    key.ldd = x && x->ldd != n ? x->ldd : 0;
    key.ldb = x && x->ldb != k ? x->ldb : 0;
    /* FP8 with per-tensor / per-channel / per-token scales: the tensor cores' own FP8 accumulation, as SGLang's FP8
       GEMMs on Hopper run it (sgl-kernel's fp8_scaled_mm dispatches CUTLASS's FP8FastAccum schedules on SM90), 6-13%
       faster than cuBLASLt's default, which promotes the partial sums to f32 (kernel lab, 2026-11-30). Block-scaled
       FP8 keeps the promotion its per-block scales need; QDIT_CUDA_FP8_PRECISE=1 promotes everywhere. */
    key.fast_accum = at == CUDA_R_8F_E4M3 && !c->fp8_precise && key.a_mode != CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    lt_plan *p = plan_get(c, &key);
    if (!p) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate a matmul plan", name);
    if (p->none)
        return qd_fail(QD_EUNSUPPORTED, "layer '%s': cuBLASLt has no matmul for M %lld, N %lld, K %lld in these types", name, (long long)m,
                       (long long)n, (long long)k);
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    if (bias) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    if (!st && key.a_scale) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &x->a_scale, sizeof x->a_scale);
    if (!st && key.b_scale) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x->b_scale, sizeof x->b_scale);
    if (!st && key.d_scale) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, &x->d_scale, sizeof x->d_scale);
    /* an E4M3 D: no C (beta = 0; cuBLASLt takes C = D only with C's layout equal to D's) */
    cublasLtMatrixLayout_t lc = p->lc ? p->lc : p->ld;
    const void *cp = p->lc ? NULL : d;
    const float onef = 1.0f, betaf = key.accumulate ? 1.0f : 0.0f;
    const int32_t onei = 1, betai = key.accumulate ? 1 : 0; /* int8 matmuls' scale type is int32 */
    const bool i8 = at == CUDA_R_8I;
    const void *one = i8 ? (const void *)&onei : &onef, *beta = i8 ? (const void *)&betai : &betaf;
    if (!st && !p->tuned) {
        /* first call of this plan: time the heuristic's candidates on the real operands (the heuristic's
           first pick can be far off, e.g. for M = 1 modulation GEMVs) and keep the fastest. A matmul that
           accumulates into D is timed into a scratch D instead (timing would add to D several times). */
        void *td = d;
        if (key.accumulate) {
            const size_t es = dt == CUDA_R_32F || dt == CUDA_R_32I ? 4 : dt == CUDA_R_8F_E4M3 ? 1 : 2;
            if (qd_cuda_scratch(c, es * (size_t)(m * n), &td)) td = NULL;
        }
        cudaEvent_t e0, e1;
        float best = 1e30f;
        int pick = 0;
        if (td && cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess) {
            for (int i = 0; i < p->ncand; i++) {
                float ms = 0;
                bool ok = true;
                for (int r = 0; r < 3 && ok; r++) {
                    if (r == 1) cudaEventRecord(e0, c->stream);
                    ok = cublasLtMatmul(c->lt, p->op, one, a, p->la, bm, p->lb, beta, p->lc ? NULL : td, lc, td, p->ld, &p->cand[i], c->lt_workspace,
                                        c->lt_workspace_bytes, c->stream) == CUBLAS_STATUS_SUCCESS;
                }
                cudaEventRecord(e1, c->stream);
                if (ok && cudaEventSynchronize(e1) == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && ms < best) {
                    best = ms;
                    pick = i;
                }
            }
            cudaEventDestroy(e0), cudaEventDestroy(e1);
        }
        cudaGetLastError();
        if (td != d) qd_cuda_scratch_free(c, td);
        p->algo = p->cand[pick];
        p->tuned = true;
        if (best == 1e30f && td) { /* every candidate the heuristic offered failed to run: as if it had offered none */
            p->none = true;
            return qd_fail(QD_EUNSUPPORTED, "layer '%s': none of cuBLASLt's matmuls for M %lld, N %lld, K %lld in these types ran", name,
                           (long long)m, (long long)n, (long long)k);
        }
    }
    if (!st) st = cublasLtMatmul(c->lt, p->op, one, a, p->la, bm, p->lb, beta, cp, lc, d, p->ld, &p->algo, c->lt_workspace,
                                 c->lt_workspace_bytes, c->stream);
    if (st) return qd_fail(QD_EDEVICE, "layer '%s': cuBLASLt matmul failed (status %d)", name, (int)st);
    return QD_OK;
}

static qd_status lt_matmul(qd_cuda *c, const char *name, int64_t m, int64_t n, int64_t k, const void *a, cudaDataType_t at, const void *bm,
                           cudaDataType_t bt, void *d, cudaDataType_t dt, const float *bias) {
    return qd_cuda_lt_matmul(c, name, m, n, k, a, at, bm, bt, d, dt, bias, NULL);
}

/* lt_matmul_x with the GELU epilogue when *gelu; where cuBLASLt has no algorithm with it, the plain matmul,
 * *gelu cleared (the caller then runs the activation kernel) */
qd_status qd_cuda_lt_matmul_gelu(qd_cuda *c, const char *name, int64_t m, int64_t n, int64_t k, const void *a, cudaDataType_t at, const void *bm,
                                cudaDataType_t bt, void *d, cudaDataType_t dt, const void *bias, lt_extra ex, bool *gelu) {
    ex.gelu = *gelu;
    qd_status s = qd_cuda_lt_matmul(c, name, m, n, k, a, at, bm, bt, d, dt, bias, &ex);
    if (s == QD_EUNSUPPORTED && *gelu) {
        *gelu = ex.gelu = false;
        s = qd_cuda_lt_matmul(c, name, m, n, k, a, at, bm, bt, d, dt, bias, &ex);
    }
    return s;
}

__global__ void widen_kernel(const void *src, int st, float *dst, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) dst[i] = qd_ld(src, st, i);
}

__global__ void narrow_kernel(const float *src, void *dst, int dt, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) qd_st(dst, dt, i, src[i]);
}

static qd_status widen(qd_cuda *c, const void *src, qd_dtype st, int64_t n, float **out) {
    qd_status s = qd_cuda_scratch(c, sizeof(float) * (size_t)n, (void **)out);
    if (s) return s;
    widen_kernel<<<qd_cuda_blocks(n, 256), 256, 0, c->stream>>>(src, st, *out, n);
    QD_CUDA_LAUNCHED("widen");
    return QD_OK;
}

/* *gelu in: the layer wants GELU-tanh on its output; out: whether the matmul's epilogue applied it */
qd_status qd_cuda_dense_matmul(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const void *w, qd_dtype wt, const qd_tensor *x, qd_tensor *y,
                               int64_t m, bool *gelu) {
    const int64_t n = l->out_features, k = l->in_features;
    const bool half_w = wt == QD_DTYPE_BF16 || wt == QD_DTYPE_F16;
    if (half_w && x->dtype == wt && y->dtype != QD_DTYPE_F16) {
        const lt_extra f32_bias = {NULL, NULL, 0, 0, CUDA_R_32F, false, false, 0, NULL, 0, 0};
        qd_status s = qd_cuda_lt_matmul_gelu(c, l->name, m, n, k, w, qd_cuda_lt_type(wt), x->data, qd_cuda_lt_type(x->dtype), y->data, qd_cuda_lt_type(y->dtype), d->bias,
                                     f32_bias, gelu);
        if (s == QD_EUNSUPPORTED && y->dtype == QD_DTYPE_BF16 && d->bias16) {
            /* measured on an H200: cuBLASLt's f32-bias epilogue into BF16 is as fast as no bias where it exists,
               its BF16-bias algorithms were 40% slower over a FLUX step, so they are only the second choice */
            const lt_extra ex = {NULL, NULL, 0, 0, CUDA_R_16BF, false, false, 0, NULL, 0, 0};
            s = qd_cuda_lt_matmul_gelu(c, l->name, m, n, k, w, qd_cuda_lt_type(wt), x->data, qd_cuda_lt_type(x->dtype), y->data, CUDA_R_16BF, d->bias16, ex, gelu);
        }
        if (s != QD_EUNSUPPORTED || !d->bias) return s;
        /* no algorithm with an f32 bias into a 16-bit output for this shape: f32 output, bias, one rounding */
        float *yf = NULL;
        if ((s = qd_cuda_scratch(c, sizeof(float) * (size_t)(m * n), (void **)&yf))) return s;
        s = qd_cuda_lt_matmul_gelu(c, l->name, m, n, k, w, qd_cuda_lt_type(wt), x->data, qd_cuda_lt_type(x->dtype), yf, CUDA_R_32F, d->bias, f32_bias, gelu);
        if (!s) {
            narrow_kernel<<<qd_cuda_blocks(m * n, 256), 256, 0, c->stream>>>(yf, y->data, y->dtype, m * n);
            cudaError_t e = cudaGetLastError();
            if (e != cudaSuccess) s = qd_cuda_fail(e, "narrow");
        }
        qd_cuda_scratch_free(c, yf);
        return s;
    }
    /* the f32 route: widen what is not f32, f32 matmul into f32, narrow into y (the reference precision mode:
       its activation comes from the kernel, in f32 throughout) */
    *gelu = false;
    float *wf = NULL, *xf = NULL, *yf = NULL;
    qd_status s = QD_OK;
    const float *wp = (const float *)w, *xp = (const float *)x->data;
    if (wt != QD_DTYPE_F32 && !(s = widen(c, w, wt, n * k, &wf))) wp = wf;
    if (!s && x->dtype != QD_DTYPE_F32 && !(s = widen(c, x->data, x->dtype, m * k, &xf))) xp = xf;
    float *yp = (float *)y->data;
    if (!s && y->dtype != QD_DTYPE_F32 && !(s = qd_cuda_scratch(c, sizeof(float) * (size_t)(m * n), (void **)&yf))) yp = yf;
    if (!s) s = lt_matmul(c, l->name, m, n, k, wp, CUDA_R_32F, xp, CUDA_R_32F, yp, CUDA_R_32F, d->bias);
    if (!s && yf) {
        narrow_kernel<<<qd_cuda_blocks(m * n, 256), 256, 0, c->stream>>>(yf, y->data, y->dtype, m * n);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) s = qd_cuda_fail(e, "narrow");
    }
    qd_cuda_scratch_free(c, wf), qd_cuda_scratch_free(c, xf), qd_cuda_scratch_free(c, yf);
    return s;
}

/* An activation code: E4M3 (RNE, saturating), or — for the GEMV kernels (linear_gemv.cu), which take their
 * operands in f32 — the same code's value in BF16, which holds every E4M3 value exactly. */
template <typename Q> __device__ __forceinline__ Q fp8_code(float v);
template <> __device__ __forceinline__ __nv_fp8_e4m3 fp8_code<__nv_fp8_e4m3>(float v) { return __nv_fp8_e4m3(v); }
template <> __device__ __forceinline__ __nv_bfloat16 fp8_code<__nv_bfloat16>(float v) { return __float2bfloat16_rn((float)__nv_fp8_e4m3(v)); }

/* per-row amax → s = max(amax/448, floor) → e4m3(x/s); one block per row. For per-tensor modes the
 * row scale comes in (`fixed` > 0) instead. */
template <typename Q>
__global__ void fp8_quant_rows_kernel(const void *x, int xt, int64_t k, int64_t kp, float fixed, Q *q, float *row_scale) {
    __shared__ float red[32];
    const int64_t base = blockIdx.x * k;
    float s = fixed;
    if (!(s > 0.0f)) {
        float amax = 0.0f;
        for (int64_t i = threadIdx.x; i < k; i += blockDim.x) amax = fmaxf(amax, fabsf(qd_ld(x, xt, base + i)));
        amax = qd_block_max(amax, red);
        s = fmaxf(amax / 448.0f, QD_TOKEN_MIN_SCALE);
    }
    if (threadIdx.x == 0) row_scale[blockIdx.x] = s;
    for (int64_t i = threadIdx.x; i < kp; i += blockDim.x) q[blockIdx.x * kp + i] = fp8_code<Q>(i < k ? qd_ld(x, xt, base + i) / s : 0.0f);
}

/* the same for BF16 rows with K % 8 == 0, 8 values per 16-byte load (the common case: a model's bf16
 * activations); the row is read twice, the second time from L2. WARP: a warp per row, blockDim.x / 32 rows per block
 * (fp8_quant_parts_kernel says why); else a block per row. */
template <typename Q, bool WARP>
__global__ void fp8_quant_rows_bf16x8_kernel(const __nv_bfloat16 *x, int64_t rows, int64_t k, float fixed, int batch, bool div, Q *q, float *row_scale) {
    /* 8 codes in one store: 8 bytes of E4M3, 16 of BF16 */
    typedef typename std::conditional<sizeof(Q) == 1, uint2, uint4>::type vec8;
    __shared__ float red[32];
    const int tid = WARP ? (int)(threadIdx.x & 31) : (int)threadIdx.x, nthr = WARP ? 32 : (int)blockDim.x;
    const int64_t row = WARP ? (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5) : (int64_t)blockIdx.x;
    if (WARP && row >= rows) return;
    const uint4 *xr = (const uint4 *)(x + row * k);
    const int64_t n8 = k / 8;
    float s = fixed;
    if (!(s > 0.0f)) {
        float amax = 0.0f;
        qd_row_words_by(xr, n8, batch, tid, nthr, [&](int64_t, const uint4 &u) {
            float v[8];
            qd_bf16x8_f32(u, v);
#pragma unroll
            for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(v[j]));
        });
        amax = WARP ? qd_warp_max(amax) : qd_block_max(amax, red);
        s = fmaxf(amax / 448.0f, QD_TOKEN_MIN_SCALE);
    }
    if (tid == 0) row_scale[row] = s;
    vec8 *qr = (vec8 *)(q + row * k);
    const float inv = 1.0f / s;
    const bool ieee = div || !isfinite(s); /* qd_div_by needs a finite s */
    qd_row_words_by(xr, n8, batch, tid, nthr, [&](int64_t i, const uint4 &u) {
        float v[8];
        qd_bf16x8_f32(u, v);
        if (sizeof(Q) == 1) {
            const uint2 w = qd_fp8x8_div(v, s, inv, ieee);
            qr[i] = *(const vec8 *)&w;
        } else {
            alignas(16) Q o[8];
#pragma unroll
            for (int j = 0; j < 8; j++) o[j] = fp8_code<Q>(ieee ? v[j] / s : qd_div_by(v[j], s, inv));
            qr[i] = *(const vec8 *)o;
        }
    });
}

/* max |x| over the tensor into *amax (as an int: non-negative floats order like their bits) */
__global__ void amax_kernel(const void *x, int xt, int64_t n, int *amax) {
    __shared__ float red[32];
    float a = 0.0f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) a = fmaxf(a, fabsf(qd_ld(x, xt, i)));
    a = qd_block_max(a, red);
    if (threadIdx.x == 0) atomicMax(amax, __float_as_int(a));
}

__global__ void tensor_scale_kernel(const int *amax, float *s) { *s = fmaxf(__int_as_float(*amax) / 448.0f, QD_TOKEN_MIN_SCALE); }

/* n = M·Kp codes; column c ≥ K of a row is padding (zero) */
template <typename Q>
__global__ void fp8_quant_fixed_kernel(const void *x, int xt, int64_t k, int64_t kp, int64_t n, const float *scale, Q *q, float *row_scale) {
    const float s = *scale;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / kp, c = i % kp;
        q[i] = fp8_code<Q>(c < k ? qd_ld(x, xt, r * k + c) / s : 0.0f);
        if (c == 0) row_scale[r] = s;
    }
}

/* y[m, n] = D[m, n]·s_x[m]·s_w[n] + bias[n] */
__global__ void fp8_epilogue_kernel(const float *dacc, int64_t ld, const float *sx, const float *sw, const float *bias, void *y, int yt, int64_t m,
                                    int64_t n, bool add) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < m * n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / n, c = i % n;
        float v = dacc[r * ld + c] * sx[r] * sw[c];
        if (bias) v += bias[c];
        if (add) v += qd_ld(y, yt, i);
        qd_st(y, yt, i, v);
    }
}

/* 1×128 groups: s = max(groupamax, 1e-10)/448, q = e4m3(x/s); one block of 128 threads per row of
 * the Mp-row (padded) operand [Mp, Kp], rows past M and columns past K zero (a partial last group's maximum over
 * its real columns). Scales are stored [Kp/128][Mp], tokens contiguous: the layout cuBLASLt's VEC128 scaling
 * reads on Hopper. */
template <typename Q>
__global__ void fp8_quant_groups_kernel(const void *x, int xt, int64_t m, int64_t mp, int64_t k, int64_t kp, Q *q, float *scales) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x, kb = kp / 128;
    for (int64_t gi = 0; gi < kb; gi++) {
        const int64_t col = gi * 128 + threadIdx.x;
        const float v = row < m && col < k ? qd_ld(x, xt, row * k + col) : 0.0f;
        const float amax = qd_block_max(fabsf(v), red);
        const float s = fmaxf(amax, 1e-10f) / 448.0f;
        q[row * kp + col] = fp8_code<Q>(v / s);
        if (threadIdx.x == 0) scales[gi * mp + row] = s;
    }
}

/* the E4M3 codes of 8 consecutive values of a row (column col of the concatenated row) under the row's scale s (inv = 1/s):
   FP8 layers v/s correctly rounded (qd_fp8x8_div; ieee: by division), the W4A8 schemes (v·mult[col..])·inv, as their
   recipes quantize (linear_w4.cu). The codes loop of the per-token quantizations that read BF16 words. */
template <bool W4>
__device__ __forceinline__ uint2 quant_codes8(float (&v)[8], const float *mult, int64_t col, float s, float inv, bool ieee) {
    if (!W4) return qd_fp8x8_div(v, s, inv, ieee);
    if (mult) qd_mul8(v, mult, col);
    alignas(8) __nv_fp8_e4m3 o[8];
#pragma unroll
    for (int t = 0; t < 8; t++) o[t] = __nv_fp8_e4m3(v[t] * inv);
    return *(const uint2 *)o;
}

/* fp8_quant_parts_kernel's block-per-row form (FP8, and the W4A8 schemes without a folded branch) with the row staged
 * in shared memory: the parts' rows land there by cp.async in 16-byte pieces, and the row max and the codes both read
 * it there. The other forms read the row twice from global memory, the second time hoping for L2; at FLUX.1's
 * proj_out (rows of 15360 BF16, 16 blocks of 128 per SM: 63 MB of rows in flight across the GPU, more than its L2) the
 * second read went back to DRAM: Nsight Compute counted 225 MB read per call for 142 MB of rows (docs/benchmarks.md,
 * nineteenth pass). The same arithmetic in the same order (a max does not depend on it), so the same codes and scales.
 * Rows of at most QUANT_SMEM_K values (48 KB: every model's widest input, FLUX.1's 15360, fits).
 * linear_fused's inputs only (qd_cuda_fp8_quant_parts, qd_cuda_w4_quant_parts): traced in a FLUX.1 FP8 step it took
 * 72.2 µs against 76.6 after the attention (to_out, proj_out) and 25.8 against 30.6 after a matmul (the text stream's
 * to_out, the MLPs' outputs), but a plain FP8 linear's input that a small producer had just left in L2 took it 2x
 * longer (3072 x 3072 in bench_cuda_ops' paths: 0.095 against 0.080 ms with the matmul), so those keep the two reads. */
#define QUANT_SMEM_K 24576
template <bool W4>
__global__ void fp8_quant_parts_smem_kernel(fused_parts p, int64_t rows, int64_t k, const float *mult, int64_t per, int64_t stride, bool div,
                                            __nv_fp8_e4m3 *q, float *row_scale) {
    extern __shared__ uint4 row_words[]; /* the concatenated row, k / 8 words */
    __shared__ float red[32];
    const int tid = (int)threadIdx.x, nthr = (int)blockDim.x;
    const int64_t row = blockIdx.x, n8 = k / 8;
    if (row >= rows) { /* the blocks after the rows: linear_fused's per-channel vectors (fused_vectors_kernel's statements) */
        for (int64_t c = (row - rows) * nthr + tid; c < p.vj_n; c += (int64_t)(gridDim.x - rows) * nthr) {
            const float gv = p.vj_g ? qd_ld(p.vj_g, p.vj_gt, c) : 1.0f;
            p.vj_gs[c] = gv * (p.vj_scale ? p.vj_scale[c] : 1.0f);
            if (p.vj_bias) qd_st(p.vj_gb, p.vj_gbt, c, gv * p.vj_bias[c]);
        }
        return;
    }
    for (int j = 0, w0 = 0; j < p.n; w0 += (int)(p.k[j] / 8), j++) {
        const uint4 *src = (const uint4 *)p.x[j] + row * (p.k[j] / 8);
        for (int64_t i = tid; i < p.k[j] / 8; i += nthr) cp_async16(&row_words[w0 + i], src + i, true);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    float amax = 0.0f;
    for (int64_t i = tid; i < n8; i += nthr) {
        float v[8];
        qd_bf16x8_f32(row_words[i], v);
        if (W4 && mult) qd_mul8(v, mult, 8 * i);
#pragma unroll
        for (int t = 0; t < 8; t++) amax = fmaxf(amax, fabsf(v[t]));
    }
    amax = qd_block_max(amax, red);
    const float s = fmaxf(amax / 448.0f, QD_TOKEN_MIN_SCALE);
    if (tid == 0) row_scale[row / per * stride + row % per] = s;
    const float inv = 1.0f / s;
    const bool ieee = div || !isfinite(s);
    uint2 *qr = (uint2 *)(q + row * k);
    for (int64_t i = tid; i < n8; i += nthr) {
        float v[8];
        qd_bf16x8_f32(row_words[i], v);
        qr[i] = quant_codes8<W4>(v, mult, 8 * i, s, inv, ieee);
    }
}

/* whether the staged form takes these parts: BF16 parts of widths % 8 == 0 at 16-byte aligned rows that make up the
   whole row of k (no folded tail), per-token scales (a static one reads the row once anyway), at most QUANT_SMEM_K wide,
   and not switched off (QDIT_CUDA_QUANT_SMEM=0, or QDIT_CUDA_QUANT_WARP=1 asking for the warp form) */
static bool quant_smem_takes(const qd_cuda *c, const fused_parts *p, int64_t k, float fixed) {
    if (!c->quant_smem || c->quant_warp == 1 || fixed > 0.0f || p->xt != QD_DTYPE_BF16 || p->tail || p->amax || k > QUANT_SMEM_K) return false;
    int64_t sum = 0;
    for (int j = 0; j < p->n; j++) {
        if (p->k[j] % 8 || !qd_cuda_aligned16(p->x[j])) return false;
        sum += p->k[j];
    }
    return sum == k;
}

template <bool W4>
static void quant_smem_launch(qd_cuda *c, const fused_parts *p, int64_t rows, int64_t k, const float *mult, int64_t per, int64_t stride, bool div,
                              __nv_fp8_e4m3 *q, float *sx) {
    /* 128 threads, 256 past 1536 words (FLUX.1's proj_out, 15360: 7.5 words a thread, 7 rows per SM by shared memory) */
    const unsigned threads = c->quant_threads ? (unsigned)c->quant_threads : k / 8 > 1536 ? 256 : 128;
    /* all of the SM's configurable memory as shared memory: the rows in flight are what the kernel's speed is made of,
       and the matmuls around it take that configuration too (none to switch between them) */
    static bool carved = false;
    if (!carved) cudaFuncSetAttribute(fp8_quant_parts_smem_kernel<W4>, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    carved = true;
    const int64_t vblocks = p->vj_gs ? (p->vj_n + threads - 1) / threads : 0; /* linear_fused's vectors, after the rows */
    fp8_quant_parts_smem_kernel<W4><<<(unsigned)(rows + vblocks), threads, (size_t)k * 2, c->stream>>>(*p, rows, k, mult, per, stride, div, q, sx);
    if (vblocks && p->vj_done) *p->vj_done = true;
}

/* An FP8 layer's activations quantized as its scheme says, into scratch (freed by the caller with
 * qd_cuda_scratch_free): the codes *q and scales *sx.
 *   block (128×128 weights): q [Mp, Kp] (rows past M, columns past K zero), sx [Kp/128][Mp] (1×128 groups);
 *   otherwise: q [M, Kp] (columns past K zero), sx [M] — per token (dynamic), one amax over the input
 *   (per tensor, dynamic), or the static input_scale. */
template <typename Q>
static qd_status fp8_quantize(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, int64_t m, int64_t mp, Q **q, float **sx) {
    const int64_t k = l->in_features, kp = d->kp;
    *q = NULL, *sx = NULL;
    if (!d->block && l->act != QD_ACT_DYNAMIC_TOKEN && l->act != QD_ACT_DYNAMIC_TENSOR && l->act != QD_ACT_STATIC_TENSOR) return unsupported(l);
    const int64_t rows = d->block ? mp : m;
    qd_status s = qd_cuda_scratch(c, sizeof(Q) * (size_t)(rows * kp), (void **)q);
    if (!s) s = qd_cuda_scratch(c, sizeof(float) * (size_t)(d->block ? rows * (kp / 128) : rows), (void **)sx);
    if (!s && d->block) {
        fp8_quant_groups_kernel<Q><<<(unsigned)mp, 128, 0, c->stream>>>(x->data, x->dtype, m, mp, k, kp, *q, *sx);
    } else if (!s && l->act != QD_ACT_DYNAMIC_TENSOR) {
        const float fixed = l->act == QD_ACT_STATIC_TENSOR ? d->input_scale : 0.0f;
        const __nv_bfloat16 *xb = (const __nv_bfloat16 *)x->data;
        if (x->dtype == QD_DTYPE_BF16 && k % 8 == 0 && kp == k && c->quant_warp == 1)
            fp8_quant_rows_bf16x8_kernel<Q, true><<<(unsigned)((m + 7) / 8), 256, 0, c->stream>>>(xb, m, k, fixed, c->quant_batch, c->quant_div, *q, *sx);
        else if (x->dtype == QD_DTYPE_BF16 && k % 8 == 0 && kp == k)
            fp8_quant_rows_bf16x8_kernel<Q, false><<<(unsigned)m, qd_cuda_quant_threads(c, 128), 0, c->stream>>>(xb, m, k, fixed, c->quant_batch, c->quant_div,
                                                                                                            *q, *sx);
        else fp8_quant_rows_kernel<Q><<<(unsigned)m, 256, 0, c->stream>>>(x->data, x->dtype, k, kp, fixed, *q, *sx);
    } else if (!s) {
        int *amax = NULL;
        s = qd_cuda_scratch(c, sizeof(int) + sizeof(float), (void **)&amax);
        if (!s) {
            float *ts = (float *)(amax + 1);
            cudaMemsetAsync(amax, 0, sizeof(int), c->stream);
            amax_kernel<<<qd_cuda_blocks(m * k, 256) > 1024 ? 1024 : qd_cuda_blocks(m * k, 256), 256, 0, c->stream>>>(x->data, x->dtype, m * k, amax);
            tensor_scale_kernel<<<1, 1, 0, c->stream>>>(amax, ts);
            fp8_quant_fixed_kernel<Q><<<qd_cuda_blocks(m * kp, 256), 256, 0, c->stream>>>(x->data, x->dtype, k, kp, m * kp, ts, *q, *sx);
        }
        qd_cuda_scratch_free(c, amax); /* stream-ordered: after the kernels that read it */
    }
    if (!s) {
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) s = qd_cuda_fail(e, "fp8 activation quantization");
    }
    if (s) {
        qd_cuda_scratch_free(c, *q), qd_cuda_scratch_free(c, *sx);
        *q = NULL, *sx = NULL;
    }
    return s;
}

qd_status qd_cuda_fp8_act_bf16(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, int64_t m, __nv_bfloat16 **q, float **sx) {
    return fp8_quantize<__nv_bfloat16>(c, l, d, x, m, m, q, sx);
}

/* *gelu as in dense() */
static qd_status fp8(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu) {
    const int64_t n = l->out_features, kp = d->kp;
    __nv_fp8_e4m3 *q = NULL;
    float *sx = NULL;
    if (d->block) {
        /* 128×128 weight blocks and 1×128 activation groups, both applied inside cuBLASLt's matmul */
        /* cuBLASLt's block-scaled matmuls want M a multiple of 16: pad the quantized operand with zero rows
           and write the first M rows of the result (a row-major prefix). Padded to 64: at M = 16 with N = 256 / 384
           (K 256 / 384) its algorithm wrote wrong results on an H200 (cuBLASLt 13.0, op harness 2026-11-30) */
        /* N padded to a multiple of 16 as well (zero weight rows), the first N columns copied out */
        const int64_t mp = (m + 63) / 64 * 64, np = d->np;
        const size_t es = (size_t)qd_dtype_bits(y->dtype) / 8;
        void *yp = y->data;
        qd_status s = fp8_quantize(c, l, d, x, m, mp, &q, &sx);
        if (!s && (mp != m || np != n)) s = qd_cuda_scratch(c, es * (size_t)(mp * np), &yp);
        const bool b16 = y->dtype == QD_DTYPE_BF16;
        const lt_extra ex = {d->wscale, sx, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
                             b16 ? CUDA_R_16BF : CUDA_R_32F, false, false, 0, NULL, 0, 0};
        if (!s) s = qd_cuda_lt_matmul_gelu(c, l->name, mp, np, kp, d->w, CUDA_R_8F_E4M3, q, CUDA_R_8F_E4M3, yp, qd_cuda_lt_type(y->dtype),
                                   b16 ? d->bias16 : d->bias, ex, gelu);
        if (!s && yp != y->data) {
            cudaError_t e = cudaMemcpy2DAsync(y->data, es * (size_t)n, yp, es * (size_t)np, es * (size_t)n, (size_t)m, cudaMemcpyDeviceToDevice,
                                              c->stream);
            if (e != cudaSuccess) s = qd_cuda_fail(e, "fp8 block output");
        }
        qd_cuda_scratch_free(c, q), qd_cuda_scratch_free(c, sx);
        if (yp != y->data) qd_cuda_scratch_free(c, yp);
        return s;
    }
    qd_status s = fp8_quantize(c, l, d, x, m, m, &q, &sx);
    if (!s) s = qd_cuda_fp8_matmul(c, l, d, d->w, q, sx, y, m, gelu, false);
    qd_cuda_scratch_free(c, q), qd_cuda_scratch_free(c, sx);
    return s;
}

qd_status qd_cuda_fp8_matmul(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const void *w, const __nv_fp8_e4m3 *q, const float *sx,
                             qd_tensor *y, int64_t m, bool *gelu, bool accumulate) {
    const int64_t n = l->out_features, kp = d->kp, np = d->np;
    qd_status s = QD_OK;
    if (accumulate && np != n)
        return qd_fail(QD_EINVAL, "layer '%s': an FP8 matmul that adds into its output needs N (%lld) a multiple of 16", l->name ? l->name : "linear",
                       (long long)n);
    /* fused: per-channel and per-token scales as cuBLASLt outer vectors, the bias in its epilogue, written
       straight into y; where cuBLASLt has no such algorithm, f32 out and our epilogue kernel */
    bool fused = false;
    if ((y->dtype == QD_DTYPE_BF16 || y->dtype == QD_DTYPE_F32) && !c->fp8_unfused) {
        const bool b16 = y->dtype == QD_DTYPE_BF16;
        const size_t es = b16 ? 2 : 4;
        void *yp = y->data; /* a padded N writes [M, Np] in scratch, then the first N columns into y */
        qd_status f = np == n ? QD_OK : qd_cuda_scratch(c, es * (size_t)(m * np), &yp);
        const lt_extra ex = {d->wscale_vec, sx, CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F, CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F,
                             b16 ? CUDA_R_16BF : CUDA_R_32F, false, accumulate, 0, NULL, 0, 0};
        if (!f) f = qd_cuda_lt_matmul_gelu(c, l->name, m, np, kp, w, CUDA_R_8F_E4M3, q, CUDA_R_8F_E4M3, yp, qd_cuda_lt_type(y->dtype),
                                           b16 ? d->bias16 : d->bias, ex, gelu);
        if (!f && yp != y->data) {
            cudaError_t e = cudaMemcpy2DAsync(y->data, es * (size_t)n, yp, es * (size_t)np, es * (size_t)n, (size_t)m, cudaMemcpyDeviceToDevice, c->stream);
            if (e != cudaSuccess) f = qd_cuda_fail(e, "fp8 output");
        }
        if (yp != y->data) qd_cuda_scratch_free(c, yp);
        if (f == QD_OK) fused = true;
        else if (f != QD_EUNSUPPORTED) s = f;
    }
    if (fused || s) return s;
    *gelu = false; /* our epilogue kernel below applies no activation */
    float *acc = NULL;
    s = qd_cuda_scratch(c, sizeof(float) * (size_t)(m * np), (void **)&acc);
    if (!s) s = lt_matmul(c, l->name, m, np, kp, w, CUDA_R_8F_E4M3, q, CUDA_R_8F_E4M3, acc, CUDA_R_32F, NULL);
    if (!s) {
        fp8_epilogue_kernel<<<qd_cuda_blocks(m * n, 256), 256, 0, c->stream>>>(acc, np, sx, d->wscale_vec, d->bias, y->data, y->dtype, m, n, accumulate);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) s = qd_cuda_fail(e, "fp8 epilogue");
    }
    qd_cuda_scratch_free(c, acc);
    return s;
}

/* the layer prepared here and its weights on the device, or why not */
static qd_status ready(qd_linear *l, const cuda_linear **out) {
    const char *name = l->name ? l->name : "linear";
    if (!l->prepared) {
        qd_status s = prepare(l);
        if (s) return s;
    }
    if (l->prepared_for != &cuda_linear_tag) return qd_fail(QD_EINVAL, "layer '%s': prepared by another backend", name);
    const cuda_linear *d = (const cuda_linear *)l->prepared;
    if (!d->mem) return qd_fail(QD_EINVAL, "layer '%s': its weights were released with their offload group", name);
    if (d->host_copy && d->mem == d->host_copy)
        return qd_fail(QD_EINVAL, "layer '%s': its weights are offloaded to host memory and were not fetched before it ran", name);
    *out = d;
    return QD_OK;
}

qd_status qd_cuda_linear_ready(qd_linear *l, const cuda_linear **out) { return ready(l, out); }

extern "C" qd_status qd_cuda_linear(qd_backend *b, qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    if (x->rank < 1 || y->rank != x->rank || x->shape[x->rank - 1] != l->in_features || y->shape[y->rank - 1] != l->out_features)
        return qd_fail(QD_EINVAL, "layer '%s': linear of a [..., %lld] input into [..., %lld] needs in/out features %lld/%lld", name,
                       (long long)(x->rank ? x->shape[x->rank - 1] : 0), (long long)(y->rank ? y->shape[y->rank - 1] : 0),
                       (long long)l->in_features, (long long)l->out_features);
    if (!qd_cuda_float_dtype(x->dtype) || !qd_cuda_float_dtype(y->dtype)) return qd_fail(QD_EUNSUPPORTED, "layer '%s': activations must be F32/BF16/F16", name);
    const cuda_linear *d = NULL;
    qd_status rs = ready(l, &d);
    if (rs) return rs;
    qd_act_kind kind = QD_ACT_GELU_TANH;
    const bool act = qd_linear_out_kind(l, &kind);
    if (!act && l->out_act != QD_OUT_ACT_NONE) return qd_fail(QD_EINVAL, "layer '%s': unknown output activation %d", name, (int)l->out_act);
    const int64_t m = qd_tensor_elements(x) / l->in_features;
    if (m == 0) return QD_OK;
    qd_cuda *c = qd_cuda_of(b);
    bool gelu = act && kind == QD_ACT_GELU_TANH && c->gelu_epilogue; /* cleared where the matmul could not apply it */
    if (m <= GEMV_ROWS && !c->no_gemv && qd_cuda_gemv_covers(l, d, x)) { /* few rows: read the weight once (linear_gemv.cu) */
        qd_status s = qd_cuda_gemv_linear(c, l, d, x, y, m, &gelu);
        if (!s && act && !gelu) s = qd_cuda_activation(b, kind, y, y);
        return s;
    }
    qd_status s = l->scheme == QD_SCHEME_DENSE ? qd_cuda_dense_matmul(c, l, d, d->w, d->wt, x, y, m, &gelu)
                  : l->scheme == QD_SCHEME_FP8 ? fp8(c, l, d, x, y, m, &gelu)
                  : qd_cuda_w4_covers(l)       ? qd_cuda_w4_linear(c, l, d, x, y, m, &gelu)
                                               : qd_cuda_int8_linear(c, l, d, x, y, m, &gelu);
    if (!s && act && !gelu) s = qd_cuda_activation(b, kind, y, y);
    return s;
}

/* An FP8 layer's input already quantized (norm_modulate_fp8 made the codes and scales its own quantization would
   make: per token, or with its static input scale in every row): the matmul only. */
extern "C" bool qd_cuda_takes_fp8_tokens(qd_backend *b, const qd_linear *l, float *static_scale) {
    (void)b;
    *static_scale = 0.0f;
    static int off = -1; /* QDIT_CUDA_FP8_TOKENS=0: every FP8 linear quantizes its own input (side-by-side timing) */
    if (off < 0) off = getenv("QDIT_CUDA_FP8_TOKENS") && !strcmp(getenv("QDIT_CUDA_FP8_TOKENS"), "0");
    if (off || !l->prepared || l->prepared_for != &cuda_linear_tag) return false;
    const cuda_linear *d = (const cuda_linear *)l->prepared;
    if (qd_cuda_w4_covers(l)) return qd_cuda_w4_takes_tokens(l, d); /* W4A8: the same per-token E4M3 codes */
    if (l->scheme != QD_SCHEME_FP8 || d->block || d->kp != l->in_features) return false;
    if (l->act == QD_ACT_STATIC_TENSOR) *static_scale = d->input_scale; /* ModelOpt FP8, static offline fp8 */
    return l->act == QD_ACT_DYNAMIC_TOKEN || l->act == QD_ACT_STATIC_TENSOR;
}

extern "C" qd_status qd_cuda_linear_fp8_tokens(qd_backend *b, qd_linear *l, const qd_tensor *codes, const qd_tensor *row_scale, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    const int64_t k = l->in_features, m = codes->rank ? qd_tensor_elements(codes) / (k ? k : 1) : 0;
    float fixed = 0.0f; /* a static layer: the codes were made with its input scale, every row scale that one (the caller's word) */
    if (!qd_cuda_takes_fp8_tokens(b, l, &fixed))
        return qd_fail(QD_EUNSUPPORTED, "layer '%s' (%s): takes no FP8 tokens (a per-token dynamic or static FP8 layer prepared on the GPU does)",
                       name, l->scheme_name);
    if (codes->dtype != QD_DTYPE_F8_E4M3 || codes->rank < 1 || codes->shape[codes->rank - 1] != k || row_scale->dtype != QD_DTYPE_F32 ||
        qd_tensor_elements(row_scale) != m || y->rank != codes->rank || y->shape[y->rank - 1] != l->out_features || !qd_cuda_float_dtype(y->dtype) ||
        qd_tensor_elements(y) != m * l->out_features)
        return qd_fail(QD_EINVAL, "layer '%s': FP8 tokens [..., %lld] with %lld row scales into [..., %lld]", name, (long long)k, (long long)m,
                       (long long)l->out_features);
    const cuda_linear *d = NULL;
    qd_status s = ready(l, &d);
    if (s || m == 0) return s;
    qd_act_kind kind = QD_ACT_GELU_TANH;
    const bool act = qd_linear_out_kind(l, &kind);
    qd_cuda *c = qd_cuda_of(b);
    bool gelu = act && kind == QD_ACT_GELU_TANH && c->gelu_epilogue;
    const __nv_fp8_e4m3 *q = (const __nv_fp8_e4m3 *)codes->data;
    s = qd_cuda_w4_covers(l) ? qd_cuda_w4_linear_tokens(c, l, d, q, (const float *)row_scale->data, y, m, &gelu)
                             : qd_cuda_fp8_matmul(c, l, d, d->w, q, (const float *)row_scale->data, y, m, &gelu, false);
    if (!s && act && !gelu) s = qd_cuda_activation(b, kind, y, y);
    return s;
}

/* ------------------------------------------------------------------------------------------ linear_fused ---- */

/* The parts of a column-concatenated input (linear_fused): row r of part j is xs[j] + r·k[j] (fused_parts,
   linear_internal.cuh). */

/* a value of the folded low-rank tail (the sum of its partial sums, in order), rounded through its 16-bit type, times
   its multiplier */
__device__ __forceinline__ float tail_value(const fused_parts &p, int64_t row, int64_t i) {
    float v = 0.0f;
    for (int sp = 0; sp < p.tail_splits; sp++) v += p.tail[(sp * p.tail_rows + row) * p.tail_k + i];
    return (p.tail_round == QD_DTYPE_BF16 ? __bfloat162float(__float2bfloat16(v)) : __half2float(__float2half(v))) * p.tail_mult;
}

/* FP8 activation codes of the concatenated row, as the layer's own quantization makes them from the concatenation
 * (one per-token scale over the whole row, or the static `fixed` one), read from the parts where they are; one block
 * per row. FP8 layers: q = e4m3(x / s) as fp8_quant_rows_kernel; W4A8 layers (W4): q = e4m3(x·mult[c]·(1/s)) as
 * linear_w4.cu's quant_rows_mult_kernel (mult: the smoothing multiplier, or NULL). VEC: BF16 parts with widths % 8
 * == 0, 8 values per 16-byte load. */
template <bool VEC, bool W4, bool WARP>
__global__ void fp8_quant_parts_kernel(fused_parts p, int64_t rows, int64_t k, float fixed, const float *mult, int64_t per, int64_t stride, int batch,
                                       bool div, __nv_fp8_e4m3 *q, float *row_scale) {
    __shared__ float red[32];
    /* WARP: a warp per row, blockDim.x / 32 rows per block, no block barriers (rows ≫ the SMs' block slots: at M 4608 a
       block of 128 per row ran 2.2 waves of 16 blocks per SM, the last a fifth full); else a block per row */
    const int tid = WARP ? (int)(threadIdx.x & 31) : (int)threadIdx.x, nthr = WARP ? 32 : (int)blockDim.x;
    const int64_t row = WARP ? (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5) : (int64_t)blockIdx.x;
    if (WARP && row >= rows) return;
    float s = fixed;
    if (!(s > 0.0f)) {
        float amax = 0.0f;
        int64_t c0 = 0; /* the part's first column in the concatenated row */
        if (W4 && p.amax) /* taken by lr_down_kernel while it read x: the parts are not read twice */
            for (int sp = tid; sp < p.tail_splits; sp += nthr) amax = fmaxf(amax, p.amax[sp * p.tail_rows + row]);
        for (int j = 0; j < (W4 && p.amax ? 0 : p.n); j++) {
            if (VEC) {
                qd_row_words_by((const uint4 *)p.x[j] + row * (p.k[j] / 8), p.k[j] / 8, batch, tid, nthr, [&](int64_t i, const uint4 &u) {
                    float v[8];
                    qd_bf16x8_f32(u, v);
                    if (W4 && mult) qd_mul8(v, mult, c0 + 8 * i);
#pragma unroll
                    for (int t = 0; t < 8; t++) amax = fmaxf(amax, fabsf(v[t]));
                });
            } else {
                for (int64_t i = tid; i < p.k[j]; i += nthr) {
                    const float v = qd_ld(p.x[j], p.xt, row * p.k[j] + i);
                    amax = fmaxf(amax, fabsf(W4 && mult ? v * mult[c0 + i] : v));
                }
            }
            c0 += p.k[j];
        }
        if (W4 && p.tail)
            for (int64_t i = tid; i < p.tail_k; i += nthr) amax = fmaxf(amax, fabsf(tail_value(p, row, i)));
        amax = WARP ? qd_warp_max(amax) : qd_block_max(amax, red);
        s = fmaxf(amax / 448.0f, QD_TOKEN_MIN_SCALE);
    }
    if (tid == 0) row_scale[row / per * stride + row % per] = s; /* batch element row / per's scales at its offset */
    const float inv = 1.0f / s;
    const bool ieee = div || !isfinite(s); /* FP8 layers: v/s by qd_div_by, which needs a finite s */
    __nv_fp8_e4m3 *qr = q + row * k;
    int64_t c0 = 0;
    for (int j = 0; j < p.n; j++) {
        if (VEC) {
            qd_row_words_by((const uint4 *)p.x[j] + row * (p.k[j] / 8), p.k[j] / 8, batch, tid, nthr, [&](int64_t i, const uint4 &u) {
                float v[8];
                qd_bf16x8_f32(u, v);
                ((uint2 *)(qr + c0))[i] = quant_codes8<W4>(v, mult, c0 + 8 * i, s, inv, ieee);
            });
        } else {
            for (int64_t i = tid; i < p.k[j]; i += nthr) {
                const float v = qd_ld(p.x[j], p.xt, row * p.k[j] + i);
                qr[c0 + i] = __nv_fp8_e4m3(W4 ? (mult ? v * mult[c0 + i] : v) * inv : v / s);
            }
        }
        c0 += p.k[j];
    }
    /* the tail as hi + lo: hi·(u_hi + u_lo) + lo·u_hi carries the branch to ~2^-8 relative, about BF16's 2^-9 */
    if (W4 && p.tail)
        for (int64_t i = tid; i < p.tail_k; i += nthr) {
            const float v = tail_value(p, row, i) * inv;
            const __nv_fp8_e4m3 hi(v);
            const __nv_fp8_e4m3 lo(v - (float)hi);
            qr[c0 + i] = hi, qr[c0 + p.tail_k + i] = hi, qr[c0 + 2 * p.tail_k + i] = lo;
            if (p.tail_terms == 4) qr[c0 + 3 * p.tail_k + i] = lo;
        }
}

qd_status qd_cuda_fp8_quant_parts(qd_cuda *c, const fused_parts *p, int64_t rows, int64_t k, float fixed, int64_t per, int64_t stride,
                                  __nv_fp8_e4m3 *q, float *sx) {
    bool vec = p->xt == QD_DTYPE_BF16;
    for (int j = 0; j < p->n; j++) vec = vec && p->k[j] % 8 == 0 && qd_cuda_aligned16(p->x[j]);
    if (quant_smem_takes(c, p, k, fixed)) quant_smem_launch<false>(c, p, rows, k, NULL, per, stride, c->quant_div, q, sx);
    else if (vec && c->quant_warp == 1)
        fp8_quant_parts_kernel<true, false, true><<<(unsigned)((rows + 7) / 8), 256, 0, c->stream>>>(*p, rows, k, fixed, NULL, per, stride, c->quant_batch,
                                                                                                 c->quant_div, q, sx);
    else if (vec)
        fp8_quant_parts_kernel<true, false, false><<<(unsigned)rows, qd_cuda_quant_threads(c, 128), 0, c->stream>>>(*p, rows, k, fixed, NULL, per, stride,
                                                                                                                 c->quant_batch, c->quant_div, q, sx);
    else fp8_quant_parts_kernel<false, false, false><<<(unsigned)rows, 256, 0, c->stream>>>(*p, rows, k, fixed, NULL, per, stride, 1, true, q, sx);
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? QD_OK : qd_cuda_fail(e, "fp8 activation quantization");
}

qd_status qd_cuda_w4_quant_parts(qd_cuda *c, const fused_parts *p, int64_t rows, int64_t kq, const float *mult, int64_t per, int64_t stride,
                                 __nv_fp8_e4m3 *q, float *sx) {
    bool vec = p->xt == QD_DTYPE_BF16;
    for (int j = 0; j < p->n; j++) vec = vec && p->k[j] % 8 == 0 && qd_cuda_aligned16(p->x[j]);
    /* SVDQuant's folded rows: a warp per row (eighteenth pass: 0.115 against 0.119 ms at 3072 x 3072); in the block form
       (QDIT_CUDA_QUANT_WARP=0) blocks of 64 threads (FLUX.1 SVDQuant step on an H200, side by side: 94.4 ms with 64 or
       96, 95.3 with 128, 98.0 with 256, 105.8 with 512), which QDIT_CUDA_SVDQ_QUANT_THREADS chooses */
    const unsigned threads = !p->tail ? qd_cuda_quant_threads(c, 128) : c->svdq_quant_threads ? (unsigned)c->svdq_quant_threads : 64;
    if (quant_smem_takes(c, p, kq, 0.0f)) quant_smem_launch<true>(c, p, rows, kq, mult, per, stride, false, q, sx);
    else if (vec && (c->quant_warp == 1 || (c->quant_warp < 0 && p->tail)))
        fp8_quant_parts_kernel<true, true, true><<<(unsigned)((rows + 7) / 8), 256, 0, c->stream>>>(*p, rows, kq, 0.0f, mult, per, stride, c->quant_batch,
                                                                                                false, q, sx);
    else if (vec) fp8_quant_parts_kernel<true, true, false><<<(unsigned)rows, threads, 0, c->stream>>>(*p, rows, kq, 0.0f, mult, per, stride, c->quant_batch, false, q, sx);
    else fp8_quant_parts_kernel<false, true, false><<<(unsigned)rows, 256, 0, c->stream>>>(*p, rows, kq, 0.0f, mult, per, stride, 1, false, q, sx);
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? QD_OK : qd_cuda_fail(e, "w4a8 activation quantization");
}

/* batch bi's per-channel vectors: gs[c] = g[bi, c] (1 without a gate) · (scale ? scale[c] : 1), and the bias the
 * epilogue adds, gb[c] = g[bi, c]·bias[c] in type gbt (cuBLASLt adds the bias after alpha and the scales) */
__global__ void fused_vectors_kernel(const void *g, int gt, int64_t bi, int64_t n, const float *scale, const float *bias, float *gs, void *gb,
                                     int gbt) {
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < n; c += (int64_t)gridDim.x * blockDim.x) {
        const float gv = g ? qd_ld(g, gt, bi * n + c) : 1.0f;
        gs[c] = gv * (scale ? scale[c] : 1.0f);
        if (bias) qd_st(gb, gbt, c, gv * bias[c]);
    }
}

__global__ void fill_f32_kernel(float *p, int64_t n, float v) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) p[i] = v;
}

static qd_status fill_f32(qd_cuda *c, float *p, int64_t n, float v) {
    fill_f32_kernel<<<qd_cuda_blocks(n, 256), 256, 0, c->stream>>>(p, n, v);
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? QD_OK : qd_cuda_fail(e, "fill");
}

/* The matmuls of linear_fused over its quantized input q [rows, kq] (w: E4M3 [N, kq]; sx: row scales, batch element
 * bi's at sx + bi·stride): per batch element, the gate folded into the weight's per-channel scale (gs) and its bias
 * (gb), the residual already in y entering as C (accumulate). QD_EUNSUPPORTED (nothing written) when cuBLASLt has
 * no such algorithm. */
static qd_status fused_matmuls(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const void *w, const __nv_fp8_e4m3 *q, int64_t kq, const float *sx,
                               int64_t stride, int64_t B, const qd_tensor *gate, bool accumulate, float *gs, void *gb, bool vectors_made, qd_tensor *y) {
    const int64_t N = l->out_features, per = qd_tensor_elements(y) / N / B;
    const void *bias = d->bias16; /* cuBLASLt's FP8 epilogue into BF16 takes a BF16 bias */
    qd_status s = QD_OK;
    for (int64_t bi = 0; !s && bi < B; bi++) {
        if (!(bi == 0 && vectors_made)) /* (made by the quantization's extra blocks: qd_cuda_fp8_quant_parts) */
            fused_vectors_kernel<<<qd_cuda_blocks(N, 256), 256, 0, c->stream>>>(gate ? gate->data : NULL, gate ? gate->dtype : 0, bi, N, d->wscale_vec,
                                                                                 gate ? d->bias : NULL, gs, gb, QD_DTYPE_BF16);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) s = qd_cuda_fail(e, "linear_fused vectors");
        char *yb = (char *)y->data + (size_t)(bi * per * N) * 2;
        const lt_extra ex = {gs, sx + bi * stride, CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F, CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F,
                             CUDA_R_16BF, false, accumulate, 0, NULL, 0, 0};
        if (!s) s = qd_cuda_lt_matmul(c, l->name ? l->name : "linear", per, N, kq, w, CUDA_R_8F_E4M3, q + bi * per * kq, CUDA_R_8F_E4M3, yb,
                                      CUDA_R_16BF, gate && bias ? (const void *)gb : bias, &ex);
        if (s == QD_EUNSUPPORTED && bi > 0) s = qd_fail(QD_EDEVICE, "layer '%s': cuBLASLt's matmul failed after the first batch element", l->name);
    }
    return s;
}

/* linear_fused (backend.h): FP8 with per-token or static per-tensor activations, and the W4A8 schemes without a
 * low-rank branch (their weights expanded to E4M3 as their linear does), as one quantization over the input parts
 * and one FP8 matmul, the gate folded into the weight's per-channel scale and the residual entering as C (beta = 1;
 * y copied from r first unless y is r). Other layers, dense BF16 among them, the composition: cuBLASLt's BF16
 * matmuls with a per-channel alpha vector and beta = 1 ran 1-4% slower than the plain matmul and gated_add together
 * (FLUX shapes, H200, 2026-11-30), and the concatenation they would save costs less than that. */
extern "C" qd_status qd_cuda_linear_fused(qd_backend *b, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate, const qd_tensor *r,
                                          qd_tensor *y) {
    const cuda_linear *d = NULL;
    qd_status s = ready(l, &d);
    if (s) return s;
    qd_cuda *c = qd_cuda_of(b);
    const int64_t N = l->out_features, K = l->in_features, rows = qd_tensor_elements(y) / N;
    const int64_t B = gate ? gate->shape[0] : 1;
    bool same_x = true;
    for (int j = 0; j < n; j++) same_x = same_x && xs[j]->dtype == xs[0]->dtype;
    const qd_dtype xt = xs[0]->dtype;
    const bool out_ok = y->dtype == QD_DTYPE_BF16 && (!r || r->dtype == y->dtype) && same_x && qd_cuda_float_dtype(xt) && rows > 0 &&
                        (!gate || (qd_tensor_elements(gate) == B * N && y->shape[0] == B && rows % B == 0));
    const bool fp8 = out_ok && l->scheme == QD_SCHEME_FP8 && !d->block && (l->act == QD_ACT_DYNAMIC_TOKEN || l->act == QD_ACT_STATIC_TENSOR) &&
                     d->kp == K && d->np == N && !c->fp8_unfused;
    bool w4 = out_ok && !fp8 && qd_cuda_w4_fusable(l, d, rows, c);
    for (int j = 0; w4 && d->lr_fold && j < n; j++) w4 = xs[j]->shape[xs[j]->rank - 1] % 8 == 0; /* D's column slices 16-byte aligned */
    if ((!fp8 && !w4) || c->linear_unfused) return qd_linear_fused_composed(b, l, xs, n, gate, r, y);
    const int64_t KQ = w4 ? K + d->lr_fold : K; /* SVDQuant folded: the low-rank columns after K */
    if (r && r->data != y->data) {
        const cudaError_t e = cudaMemcpyAsync(y->data, r->data, qd_tensor_bytes(y), cudaMemcpyDeviceToDevice, c->stream);
        if (e != cudaSuccess) return qd_cuda_fail(e, "linear_fused residual");
    }
    const int64_t per = rows / B;                /* rows of one batch element (one gate row) */
    const int64_t stride = (per + 63) / 64 * 64; /* its row scales start 256-byte aligned, as cuBLASLt wants */
    float *gs = NULL, *gb = NULL, *sx = NULL, *lr = NULL;
    __nv_fp8_e4m3 *q = NULL;
    void *w8 = NULL; /* W4A8: the weights expanded to E4M3 */
    s = qd_cuda_scratch(c, sizeof(float) * (size_t)N, (void **)&gs);
    if (!s && gate && d->bias16) s = qd_cuda_scratch(c, 2 * (size_t)N, (void **)&gb);
    if (!s && w4) s = qd_cuda_w4_expand(c, l, d, &w8);
    if (!s) s = qd_cuda_scratch(c, (size_t)(rows * KQ), (void **)&q);
    if (!s) s = qd_cuda_scratch(c, sizeof(float) * (size_t)(B * stride), (void **)&sx);
    fused_parts p = {};
    bool vec = xt == QD_DTYPE_BF16;
    for (int j = 0; j < n; j++) p.x[j] = xs[j]->data, p.k[j] = xs[j]->shape[xs[j]->rank - 1], vec = vec && p.k[j] % 8 == 0;
    p.n = n, p.xt = xt;
    bool vectors_made = false;
    if (B == 1) { /* the per-channel vectors by the quantization's extra blocks where it can (fused_matmuls' kernel otherwise) */
        p.vj_g = gate ? gate->data : NULL, p.vj_gt = gate ? gate->dtype : 0, p.vj_n = N, p.vj_scale = d->wscale_vec;
        p.vj_bias = gate ? d->bias : NULL, p.vj_gs = gs, p.vj_gb = gb, p.vj_gbt = QD_DTYPE_BF16, p.vj_done = &vectors_made;
    }
    if (!s && w4 && d->lr_fold) { /* the low-rank branch's input, x·Dᵀ, becomes the activations' last columns */
        s = qd_cuda_svdq_lr_down(c, l, d, &p, rows);
        lr = (float *)p.tail;
    }
    if (!s && w4) s = qd_cuda_w4_quant_parts(c, &p, rows, KQ, d->smooth, per, stride, q, sx);
    else if (!s) {
        const float fixed = l->act == QD_ACT_STATIC_TENSOR ? d->input_scale : 0.0f;
        s = qd_cuda_fp8_quant_parts(c, &p, rows, K, fixed, per, stride, q, sx);
    }
    qd_cuda_scratch_free(c, lr);
    if (!s) s = fused_matmuls(c, l, d, w4 ? w8 : d->w, q, KQ, sx, stride, B, gate, r != NULL, gs, gb, vectors_made, y);
    qd_cuda_scratch_free(c, gs), qd_cuda_scratch_free(c, gb), qd_cuda_scratch_free(c, q), qd_cuda_scratch_free(c, sx), qd_cuda_scratch_free(c, w8);
    /* cuBLASLt has no such algorithm: nothing was written yet (the first matmul is where its plan is made), y holds
       r — the composition from there */
    if (s == QD_EUNSUPPORTED) return qd_linear_fused_composed(b, l, xs, n, gate, r ? y : NULL, y);
    return s;
}

/* ---------------------------------------------------------------------- FP8 codes between two layers ---- */

/* The pair producer → consumer where the consumer has a static input scale (ModelOpt FP8's pairs: FLUX.1's
 * ff.net.0.proj → ff.net.2, proj_mlp → proj_out): the producer's matmul writes E4M3 codes of its GELU output divided
 * by that scale (cuBLASLt's FP8 D with a D scale of 1/input_scale), straight into the consumer's input, so the 12288
 * wide MLP activations are written once in a byte and never read back in BF16 to be quantized. Without the BF16
 * rounding in between, a value within BF16's rounding of an E4M3 midpoint may land on the other code: one E4M3 step,
 * nearer the exact value (op harness: run_fp8_codes_out). QDIT_CUDA_FP8_CODES=0 turns it off (side-by-side timing). */

/* l is a static FP8 layer prepared here whose matmul takes its codes as they are: its device form, else NULL */
static const cuda_linear *static_fp8(const qd_linear *l) {
    const cuda_linear *d = qd_cuda_linear_of(l);
    return d && l->scheme == QD_SCHEME_FP8 && l->act == QD_ACT_STATIC_TENSOR && !d->block && d->kp == l->in_features && d->np == l->out_features &&
                   d->static_scales
               ? d
               : NULL;
}

extern "C" bool qd_cuda_fp8_codes_between(qd_backend *b, const qd_linear *producer, const qd_linear *consumer) {
    static int off = -1;
    if (off < 0) off = getenv("QDIT_CUDA_FP8_CODES") && !strcmp(getenv("QDIT_CUDA_FP8_CODES"), "0");
    float fixed = 0.0f;
    if (off || producer->scheme != QD_SCHEME_FP8 || qd_cuda_w4_covers(producer) || !qd_cuda_takes_fp8_tokens(b, producer, &fixed)) return false;
    qd_act_kind kind = QD_ACT_GELU_TANH;
    if (qd_linear_out_kind(producer, &kind) && (kind != QD_ACT_GELU_TANH || !qd_cuda_of(b)->gelu_epilogue)) return false;
    const cuda_linear *d = qd_cuda_linear_of(producer);
    return d && d->np == producer->out_features && static_fp8(consumer) != NULL && !qd_cuda_of(b)->fp8_unfused;
}

/* codes[r·ld + col + i] = e4m3(x[r, i] / s) for x [rows, k]; V: BF16 x with k % 8 == 0, ld and col % 8 == 0, 8 values
 * per thread (16 bytes in, 8 out) */
template <bool V>
__global__ void fp8_codes_cols_kernel(const void *x, int xt, int64_t rows, int64_t k, float s, __nv_fp8_e4m3 *q, int64_t ld, int64_t col) {
    const int64_t per = V ? k / 8 : k;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * per; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / per, j = i % per;
        if (V) {
            float v[8];
            qd_bf16x8_f32(((const uint4 *)x)[i], v);
            alignas(8) __nv_fp8_e4m3 o[8];
#pragma unroll
            for (int t = 0; t < 8; t++) o[t] = __nv_fp8_e4m3(v[t] / s);
            *(uint2 *)(q + r * ld + col + 8 * j) = *(const uint2 *)o;
        } else {
            q[r * ld + col + j] = __nv_fp8_e4m3(qd_ld(x, xt, i) / s);
        }
    }
}

static qd_status codes_cols(qd_cuda *c, const void *x, qd_dtype xt, int64_t rows, int64_t k, float s, __nv_fp8_e4m3 *q, int64_t ld, int64_t col) {
    const bool v = xt == QD_DTYPE_BF16 && k % 8 == 0 && ld % 8 == 0 && col % 8 == 0 && qd_cuda_aligned16(x) && qd_cuda_aligned16(q);
    const int64_t work = v ? rows * k / 8 : rows * k;
    if (v) fp8_codes_cols_kernel<true><<<qd_cuda_blocks(work, 256), 256, 0, c->stream>>>(x, xt, rows, k, s, q, ld, col);
    else fp8_codes_cols_kernel<false><<<qd_cuda_blocks(work, 256), 256, 0, c->stream>>>(x, xt, rows, k, s, q, ld, col);
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? QD_OK : qd_cuda_fail(e, "fp8 codes into columns");
}

extern "C" qd_status qd_cuda_linear_fp8_codes(qd_backend *b, qd_linear *l, const qd_tensor *codes, const qd_tensor *row_scale, const qd_linear *consumer,
                                              qd_tensor *out, int64_t col) {
    const char *name = l->name ? l->name : "linear", *cname = consumer->name ? consumer->name : "linear";
    if (!qd_cuda_fp8_codes_between(b, l, consumer))
        return qd_fail(QD_EUNSUPPORTED, "layer '%s' → '%s': no FP8 codes between them (fp8_codes_between)", name, cname);
    const int64_t k = l->in_features, n = l->out_features, m = codes->rank ? qd_tensor_elements(codes) / (k ? k : 1) : 0;
    const int64_t w = out->rank ? out->shape[out->rank - 1] : 0;
    if (codes->dtype != QD_DTYPE_F8_E4M3 || codes->rank < 1 || codes->shape[codes->rank - 1] != k || row_scale->dtype != QD_DTYPE_F32 ||
        qd_tensor_elements(row_scale) != m || out->dtype != QD_DTYPE_F8_E4M3 || col < 0 || col + n > w || qd_tensor_elements(out) != m * w ||
        col % 16 || w % 16)
        return qd_fail(QD_EINVAL, "layer '%s': FP8 tokens [..., %lld] with %lld row scales into columns %lld..%lld of F8_E4M3 rows of %lld (multiples of 16)",
                       name, (long long)k, (long long)m, (long long)col, (long long)(col + n), (long long)w);
    const cuda_linear *d = NULL;
    qd_status s = ready(l, &d);
    if (s || m == 0) return s;
    const cuda_linear *dc = static_fp8(consumer);
    qd_cuda *c = qd_cuda_of(b);
    qd_act_kind kind = QD_ACT_GELU_TANH;
    bool gelu = qd_linear_out_kind(l, &kind);
    float fixed = 0.0f;
    qd_cuda_takes_fp8_tokens(b, l, &fixed);
    __nv_fp8_e4m3 *dst = (__nv_fp8_e4m3 *)out->data + col;
    /* per-tensor scales as scalars (the row scales of a static layer's codes are all its input scale) */
    const int vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F, scalar = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
    lt_extra ex = {};
    ex.a_scale = d->wscale_per_channel ? (const void *)d->wscale_vec : (const void *)d->wscale, ex.a_mode = d->wscale_per_channel ? vec : scalar;
    ex.b_scale = row_scale->data, ex.b_mode = fixed > 0.0f ? scalar : vec;
    ex.bias_type = CUDA_R_16BF, ex.gelu = gelu, ex.d_scale = dc->static_scales + 1, ex.ldd = w;
    /* QDIT_CUDA_FP8_CODES_FALLBACK=1: the fallbacks below, as where cuBLASLt has no algorithm (for checks) */
    s = c->fp8_codes_fallback ? QD_EUNSUPPORTED
                              : qd_cuda_lt_matmul(c, name, m, n, k, d->w, CUDA_R_8F_E4M3, codes->data, CUDA_R_8F_E4M3, dst, CUDA_R_8F_E4M3, d->bias16, &ex);
    static bool told = false;
    if (!s && !told) qd_log(QD_LOG_INFO, "cuda: layer '%s' writes its output as FP8 codes of '%s' (and other such pairs)", name, cname);
    told = told || !s;
    if (s != QD_EUNSUPPORTED) return s;
    /* no cuBLASLt algorithm writes E4M3 for this one: its BF16 output, then the consumer's quantization */
    static bool logged = false;
    if (!logged) qd_log(QD_LOG_INFO, "cuda: layer '%s': no FP8-output matmul in cuBLASLt (or QDIT_CUDA_FP8_CODES_FALLBACK): its BF16 output quantized as FP8 codes of '%s'", name, cname);
    logged = true;
    void *yb = NULL;
    if ((s = qd_cuda_scratch(c, 2 * (size_t)(m * n), &yb))) return s;
    qd_tensor y = {};
    y.dtype = QD_DTYPE_BF16, y.rank = 2, y.shape[0] = m, y.shape[1] = n, y.data = yb;
    s = qd_cuda_fp8_matmul(c, l, d, d->w, (const __nv_fp8_e4m3 *)codes->data, (const float *)row_scale->data, &y, m, &gelu, false);
    if (!s && !gelu && qd_linear_out_kind(l, &kind)) s = qd_cuda_activation(b, kind, &y, &y);
    if (!s) s = codes_cols(c, yb, QD_DTYPE_BF16, m, n, dc->input_scale, (__nv_fp8_e4m3 *)out->data, w, col);
    qd_cuda_scratch_free(c, yb);
    return s;
}

extern "C" qd_status qd_cuda_linear_fused_codes(qd_backend *b, qd_linear *l, qd_tensor *codes, const qd_tensor *const *xs, const int64_t *cols, int n,
                                                const qd_tensor *gate, const qd_tensor *r, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    const cuda_linear *d = NULL;
    qd_status s = ready(l, &d);
    if (s) return s;
    if (!static_fp8(l)) return qd_fail(QD_EUNSUPPORTED, "layer '%s' (%s): linear_fused_codes takes static FP8 layers only", name, l->scheme_name);
    qd_cuda *c = qd_cuda_of(b);
    const int64_t N = l->out_features, K = l->in_features, rows = qd_tensor_elements(y) / N;
    const int64_t B = gate ? gate->shape[0] : 1;
    bool ok = codes->dtype == QD_DTYPE_F8_E4M3 && codes->rank >= 1 && codes->shape[codes->rank - 1] == K && qd_tensor_elements(codes) == rows * K &&
              y->dtype == QD_DTYPE_BF16 && y->shape[y->rank - 1] == N && (!r || (r->dtype == y->dtype && qd_tensor_elements(r) == rows * N)) &&
              (!gate || (qd_tensor_elements(gate) == B * N && y->shape[0] == B && rows % B == 0)) && n >= 0 && n <= QD_FUSED_INPUTS;
    for (int j = 0; ok && j < n; j++) {
        const int64_t kj = xs[j]->shape[xs[j]->rank - 1];
        ok = qd_cuda_float_dtype(xs[j]->dtype) && qd_tensor_elements(xs[j]) == rows * kj && cols[j] >= 0 && cols[j] + kj <= K;
    }
    if (!ok || rows == 0)
        return qd_fail(QD_EINVAL, "layer '%s': linear_fused_codes of F8_E4M3 codes [..., %lld] and %d BF16 parts into BF16 [..., %lld] (rows %lld)", name,
                       (long long)K, n, (long long)N, (long long)rows);
    for (int j = 0; !s && j < n; j++)
        s = codes_cols(c, xs[j]->data, xs[j]->dtype, rows, xs[j]->shape[xs[j]->rank - 1], d->input_scale, (__nv_fp8_e4m3 *)codes->data, K, cols[j]);
    if (!s && r && r->data != y->data) {
        const cudaError_t e = cudaMemcpyAsync(y->data, r->data, qd_tensor_bytes(y), cudaMemcpyDeviceToDevice, c->stream);
        if (e != cudaSuccess) s = qd_cuda_fail(e, "linear_fused_codes residual");
    }
    const int64_t per = rows / B, stride = (per + 63) / 64 * 64; /* as linear_fused lays out its row scales */
    float *gs = NULL, *sx = NULL;
    void *gb = NULL;
    if (!s) s = qd_cuda_scratch(c, sizeof(float) * (size_t)N, (void **)&gs);
    if (!s && gate && d->bias16) s = qd_cuda_scratch(c, 2 * (size_t)N, &gb);
    if (!s) s = qd_cuda_scratch(c, sizeof(float) * (size_t)(B * stride), (void **)&sx);
    if (!s) s = fill_f32(c, sx, B * stride, d->input_scale);
    if (!s) s = c->fp8_codes_fallback ? QD_EUNSUPPORTED
                                      : fused_matmuls(c, l, d, d->w, (const __nv_fp8_e4m3 *)codes->data, K, sx, stride, B, gate, r != NULL, gs, gb, false, y);
    qd_cuda_scratch_free(c, gs), qd_cuda_scratch_free(c, gb), qd_cuda_scratch_free(c, sx);
    if (s != QD_EUNSUPPORTED) return s;
    /* no fused matmul for this shape: the codes' matmul into scratch, then the gate and the residual (y holds r, or
       zeros without one) */
    void *yb = NULL;
    float *rs = NULL;
    if (!r) {
        const cudaError_t e = cudaMemsetAsync(y->data, 0, qd_tensor_bytes(y), c->stream);
        if (e != cudaSuccess) return qd_cuda_fail(e, "linear_fused_codes output");
    }
    if ((s = qd_cuda_scratch(c, 2 * (size_t)(rows * N), &yb))) return s;
    if (!(s = qd_cuda_scratch(c, sizeof(float) * (size_t)rows, (void **)&rs))) s = fill_f32(c, rs, rows, d->input_scale);
    qd_tensor t = *y;
    t.data = yb, t.backend = NULL;
    bool gelu = false;
    if (!s) s = qd_cuda_fp8_matmul(c, l, d, d->w, (const __nv_fp8_e4m3 *)codes->data, rs, &t, rows, &gelu, false);
    if (!s) s = qd_cuda_gated_add(b, y, &t, gate, y);
    qd_cuda_scratch_free(c, yb), qd_cuda_scratch_free(c, rs);
    return s;
}
