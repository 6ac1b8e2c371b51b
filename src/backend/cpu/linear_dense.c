/* CPU linears with full-precision weights (QD_SCHEME_DENSE: BF16 / F16 / F32 [N, K], linear.h), y = x·Wᵀ + b.
 *
 *   W BF16, x BF16  → oneDNN bf16 matmul (f32 accumulation, f32 bias in the epilogue) reading the stored
 *                     weight as it is ([N, K] seen as a transposed [K, N]); primitives are cached per
 *                     layer for a few (M, x, y dtype) keys. Why not oneDNN's own blocked layout: it is a
 *                     second copy of every weight (a loaded bf16 model would need twice its size; the
 *                     stored form is also what a mapped checkpoint provides for free), and at M = 4096
 *                     the plain layout costs oneDNN only a few percent (docs/benchmarks.md).
 *   W F32,  x F32   → oneDNN f32 matmul, likewise.
 *   W BF16/F16, x F32 (the reference precision mode), W F32 with x BF16, W F16 with x BF16
 *                   → the backend's own engine (gemm_bf16.h), converting weight tiles while it packs them:
 *                     f32 FMA kernel on exact f32 copies of the bf16/f16 weights for F32 math, or the bf16
 *                     kernel for F16 weights under BF16 activations (f16 → bf16 RNE: the weight a BF16
 *                     model holds in SGLang). Why not oneDNN f32 there: it would need an f32 copy of the
 *                     weight — twice the bf16 size, e.g. 151 MB for a 12288×3072 layer — either kept
 *                     (forbidden: weights stay at their stored size) or rewritten on every call; the
 *                     engine's scratch is one NC-column weight block per thread plus an activation chunk.
 *   QDIT_CPU_ISA=generic → the engine's plain C path for everything (oneDNN is skipped), as is any
 *                     combination oneDNN declines to implement on the machine.
 *
 * Tolerance against the f32 reference (qd_linear_dequantize + f32 GEMM on the same activations):
 *   NMSE ≤ 1e-5 with a BF16 output (one bf16 rounding per element, relative ≤ 2^−9, uniform: NMSE ≈
 *   2^−18/3 ≈ 1.3e-6); ≤ 3e-5 for F16 weights under BF16 activations (the weights are rounded to bf16 too:
 *   the same 1.3e-6 per term, but weighted by the products, which heavy-tailed activations make uneven);
 *   ≤ 1e-9 otherwise (exact operands, f32 sums in another order: ~K·2^−48 relative). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <oneapi/dnnl/dnnl.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/linear_kernels.h"
#include "core/codec.h"
#include "core/status.h"
#include "core/threads.h"

/* ================================ oneDNN path ================================ */

#define DENSE_CACHE 6 /* primitives kept per layer: (M, x dtype, y dtype) */

typedef struct {
    int64_t m;
    qd_dtype xt, yt;
    dnnl_primitive_t prim;
    uint64_t used;
} dense_prim;

typedef struct {
    pthread_mutex_t mu;
    bool no_dnnl; /* oneDNN cannot run this layer here: use the engine */
    float *bias;  /* f32 [N] or NULL */
    dense_prim cache[DENSE_CACHE];
    uint64_t tick;
} dense_prep;

static const char dense_tag = 0; /* prepared_for: made by this file */

static dnnl_engine_t dnnl_cpu_engine;
static dnnl_status_t dnnl_engine_status = dnnl_runtime_error;
static pthread_once_t dnnl_once = PTHREAD_ONCE_INIT;
static void dnnl_init(void) { dnnl_engine_status = dnnl_engine_create(&dnnl_cpu_engine, dnnl_cpu, 0); }

/* one in-order stream per thread (a stream is not meant to be shared between threads) */
static _Thread_local dnnl_stream_t dnnl_thread_stream;

static void dense_prep_free(void *p) {
    dense_prep *d = p;
    if (!d) return;
    for (int i = 0; i < DENSE_CACHE; i++)
        if (d->cache[i].prim) dnnl_primitive_destroy(d->cache[i].prim);
    free(d->bias);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static pthread_mutex_t prep_mu = PTHREAD_MUTEX_INITIALIZER;

/* the layer's prepared state, made on first use; NULL when another backend prepared the layer */
static dense_prep *dense_prep_get(qd_linear *l) {
    pthread_mutex_lock(&prep_mu);
    dense_prep *d = NULL;
    if (!l->prepared) {
        d = calloc(1, sizeof *d);
        if (d) {
            pthread_mutex_init(&d->mu, NULL);
            if (l->bias.data && (d->bias = malloc(sizeof(float) * (size_t)l->out_features))) qd_linear_bias_f32(l, d->bias);
            if (l->bias.data && !d->bias) {
                free(d);
                d = NULL;
            } else {
                l->prepared = d;
                l->prepared_free = dense_prep_free;
                l->prepared_for = &dense_tag;
            }
        }
    } else if (l->prepared_for == &dense_tag) {
        d = l->prepared;
    }
    pthread_mutex_unlock(&prep_mu);
    return d;
}

static dnnl_data_type_t dnnl_type(qd_dtype t) { return t == QD_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32; }

/* Build (and cache) the primitive for this (M, x, y); the first one also fixes and fills the weight layout.
 * Called with d->mu held. */
static const dense_prim *dense_prim_get(qd_linear *l, dense_prep *d, int64_t m, qd_dtype xt, qd_dtype yt) {
    for (int i = 0; i < DENSE_CACHE; i++) {
        if (d->cache[i].prim && d->cache[i].m == m && d->cache[i].xt == xt && d->cache[i].yt == yt) {
            d->cache[i].used = ++d->tick;
            return &d->cache[i];
        }
    }
    const int64_t n = l->out_features, k = l->in_features;
    dnnl_memory_desc_t src, dst, bias, plain;
    const dnnl_dims_t sd = {m, k}, dd = {m, n}, wd = {k, n}, bd = {1, n}, ws = {1, k};
    if (dnnl_memory_desc_init_by_tag(&src, 2, sd, dnnl_type(xt), dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&dst, 2, dd, dnnl_type(yt), dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&bias, 2, bd, dnnl_f32, dnnl_ab) ||
        dnnl_memory_desc_init_by_strides(&plain, 2, wd, dnnl_type(l->weight.dtype), ws)) { /* W [N, K] seen as [K, N] */
        return NULL;
    }
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_matmul_desc_init(&md, &src, &plain, d->bias ? &bias : NULL, &dst) ||
        dnnl_primitive_desc_create(&pd, &md, NULL, dnnl_cpu_engine, NULL)) {
        return NULL;
    }
    dnnl_primitive_t prim = NULL;
    const dnnl_status_t st = dnnl_primitive_create(&prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (st) return NULL;
    int slot = 0;
    for (int i = 1; i < DENSE_CACHE; i++)
        if (!d->cache[i].prim || (d->cache[slot].prim && d->cache[i].used < d->cache[slot].used)) slot = i;
    if (d->cache[slot].prim) dnnl_primitive_destroy(d->cache[slot].prim);
    d->cache[slot] = (dense_prim){.m = m, .xt = xt, .yt = yt, .prim = prim, .used = ++d->tick};
    return &d->cache[slot];
}

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* QD_OK when oneDNN ran it; QD_EUNSUPPORTED when the engine should. */
static qd_status dense_dnnl(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    pthread_once(&dnnl_once, dnnl_init);
    if (dnnl_engine_status) return QD_EUNSUPPORTED;
    if (!dnnl_thread_stream && dnnl_stream_create(&dnnl_thread_stream, dnnl_cpu_engine, dnnl_stream_default_flags)) {
        dnnl_thread_stream = NULL;
        return QD_EUNSUPPORTED;
    }
    dense_prep *d = dense_prep_get(l);
    if (!d) return QD_EUNSUPPORTED;
    const int64_t m = x->shape[0], n = l->out_features, k = l->in_features;
    /* oneDNN opens its OpenMP regions with omp_get_max_threads() threads: cap it like our own regions
       (core/threads.h) for the primitive's creation and run. The cap is a function of m for this layer, so
       the (m, …) cache key also keys the thread count a primitive was made for. */
    const int nth = qd_threads_for(m * n * k, QD_GRAIN_MACS), saved = qd_cpu_threads();
    if (nth != saved) set_threads(nth);
    pthread_mutex_lock(&d->mu);
    const dense_prim *e = d->no_dnnl ? NULL : dense_prim_get(l, d, m, x->dtype, y->dtype);
    if (!e) d->no_dnnl = true; /* this layer takes the engine from now on */
    const dnnl_primitive_t prim = e ? e->prim : NULL;
    pthread_mutex_unlock(&d->mu);
    if (!prim) {
        if (nth != saved) set_threads(saved);
        return QD_EUNSUPPORTED;
    }

    dnnl_memory_desc_t src, dst, bias, plain_md;
    const dnnl_dims_t sd = {m, k}, dd = {m, n}, wd = {k, n}, bd = {1, n}, ws = {1, k};
    dnnl_memory_desc_init_by_tag(&src, 2, sd, dnnl_type(x->dtype), dnnl_ab);
    dnnl_memory_desc_init_by_tag(&dst, 2, dd, dnnl_type(y->dtype), dnnl_ab);
    dnnl_memory_desc_init_by_tag(&bias, 2, bd, dnnl_f32, dnnl_ab);
    dnnl_memory_desc_init_by_strides(&plain_md, 2, wd, dnnl_type(l->weight.dtype), ws);
    dnnl_memory_t ms = NULL, mw = NULL, mb = NULL, md = NULL;
    bool ok = !dnnl_memory_create(&ms, &src, dnnl_cpu_engine, x->data) &&
              !dnnl_memory_create(&mw, &plain_md, dnnl_cpu_engine, (void *)l->weight.data) &&
              !dnnl_memory_create(&md, &dst, dnnl_cpu_engine, y->data) &&
              (!d->bias || !dnnl_memory_create(&mb, &bias, dnnl_cpu_engine, d->bias));
    if (ok) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}, {DNNL_ARG_BIAS, mb}};
        ok = !dnnl_primitive_execute(prim, dnnl_thread_stream, d->bias ? 4 : 3, args) && !dnnl_stream_wait(dnnl_thread_stream);
    }
    if (ms) dnnl_memory_destroy(ms);
    if (mw) dnnl_memory_destroy(mw);
    if (mb) dnnl_memory_destroy(mb);
    if (md) dnnl_memory_destroy(md);
    if (nth != saved) set_threads(saved);
    return ok ? QD_OK : qd_fail(QD_EDEVICE, "layer '%s': oneDNN matmul failed", l->name ? l->name : "linear");
}

/* ================================ engine path ================================ */

typedef struct {
    const qd_linear *l;
    const void *x;
    qd_dtype x_dtype;
    int64_t k;
    bool to_bf16; /* engine type */
    bool fast;
} dense_ctx;

#if defined(__x86_64__)
/* f32 → bf16 bits, RNE, 16 lanes (NaN quiet) */
static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 __m256i bf16_rne16(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

/* n elements of `src` (BF16 / F16 / F32) into `dst` as f32 or as bf16 (F16 rounded RNE) */
static QD_TARGET_AVX512BF16 void convert_avx512(qd_dtype from, const void *src, bool to_bf16, void *dst, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 v;
        if (from == QD_DTYPE_F32) {
            v = _mm512_maskz_loadu_ps(m, (const float *)src + i);
        } else {
            const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)src + i);
            v = from == QD_DTYPE_F16 ? _mm512_cvtph_ps(h) : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        }
        if (to_bf16) _mm256_mask_storeu_epi16((uint16_t *)dst + i, m, bf16_rne16(v));
        else _mm512_mask_storeu_ps((float *)dst + i, m, v);
    }
}
#endif

static void convert(bool fast, qd_dtype from, const void *src, bool to_bf16, void *dst, int64_t n) {
    if ((from == QD_DTYPE_BF16 && to_bf16) || (from == QD_DTYPE_F32 && !to_bf16)) {
        memcpy(dst, src, (size_t)n * (to_bf16 ? 2 : 4));
        return;
    }
#if defined(__x86_64__)
    if (fast) {
        convert_avx512(from, src, to_bf16, dst, n);
        return;
    }
#endif
    float buf[256];
    for (int64_t i = 0; i < n; i += 256) {
        const int64_t c = n - i < 256 ? n - i : 256;
        qd_decode_row(from, (const uint8_t *)src + i * (from == QD_DTYPE_F32 ? 4 : 2), buf, (size_t)c);
        if (to_bf16) qd_encode_row(QD_DTYPE_BF16, buf, (uint16_t *)dst + i, (size_t)c);
        else memcpy((float *)dst + i, buf, (size_t)c * 4);
    }
}

static void dense_a_row(const void *ctx, int64_t m, void *dst) {
    const dense_ctx *c = ctx;
    const size_t es = c->x_dtype == QD_DTYPE_F32 ? 4 : 2;
    convert(c->fast, c->x_dtype, (const uint8_t *)c->x + (size_t)(m * c->k) * es, c->to_bf16, dst, c->k);
}

static void dense_b_row(const void *ctx, int64_t n, int64_t k0, int64_t kc, void *dst) {
    const dense_ctx *c = ctx;
    const qd_dtype t = c->l->weight.dtype;
    const size_t es = t == QD_DTYPE_F32 ? 4 : 2;
    convert(c->fast, t, (const uint8_t *)c->l->weight.data + (size_t)(n * c->k + k0) * es, c->to_bf16, dst, kc);
}

qd_status qd_cpu_linear_dense(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    const int64_t m = x->shape[0], k = l->in_features, n = l->out_features;
    const qd_dtype wt = l->weight.dtype;
    if (l->scheme != QD_SCHEME_DENSE || !l->weight.data || qd_view_elements(&l->weight) != n * k ||
        (wt != QD_DTYPE_BF16 && wt != QD_DTYPE_F16 && wt != QD_DTYPE_F32)) {
        return qd_fail(QD_EINVAL, "layer '%s': not a bound dense layer (BF16/F16/F32 [%lld, %lld] weight)", name, (long long)n,
                       (long long)k);
    }
    if (m == 0) return QD_OK;
    const bool generic = !strcmp(qd_cpu_isa_get()->level, "generic");
    if (!generic && ((wt == QD_DTYPE_BF16 && x->dtype == QD_DTYPE_BF16) || (wt == QD_DTYPE_F32 && x->dtype == QD_DTYPE_F32))) {
        const qd_status s = dense_dnnl(l, x, y);
        if (s != QD_EUNSUPPORTED) return s;
    }
    const bool to_bf16 = x->dtype == QD_DTYPE_BF16 && wt != QD_DTYPE_F32;
    dense_ctx c = {.l = l, .x = x->data, .x_dtype = x->dtype, .k = k, .to_bf16 = to_bf16,
                   .fast = qd_gemm_fast(to_bf16 ? QD_GEMM_BF16 : QD_GEMM_F32) && qd_gemm_fast(QD_GEMM_BF16)};
    float *bias = NULL;
    if (l->bias.data) {
        if (!(bias = malloc(sizeof(float) * (size_t)n))) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", name);
        qd_linear_bias_f32(l, bias);
    }
    qd_gemm_args g = {.type = to_bf16 ? QD_GEMM_BF16 : QD_GEMM_F32, .m = m, .n = n, .k = k, .ctx = &c, .a_row = dense_a_row,
                      .b_row = dense_b_row, .alpha = 1.0f, .bias = bias, .y = y->data, .y_dtype = y->dtype, .ldy = n};
    const qd_status s = qd_gemm_run(&g);
    free(bias);
    return s;
}
