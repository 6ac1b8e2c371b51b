/* CPU linears with FP8 E4M3 weights and activations: QD_SCHEME_FP8 (fp8_tensor / fp8_channel / fp8_block)
 * and QD_SCHEME_MXFP8 (OCP MX, E8M0 per 32). Weights are read in their stored form (linear.h); the
 * activations are quantized on the fly exactly as the spec says, and the product runs on exact values:
 *
 *   activations (formats.md §1.2–§1.3, §4.3; quant-sglang.md §4.2–§4.7):
 *     QD_ACT_STATIC_TENSOR   q = e4m3(x / input_scale)                        (ModelOpt / static fp8)
 *     QD_ACT_DYNAMIC_TOKEN   s_m = max(rowamax/448, 1/(448·512)), q = e4m3(x / s_m)   (vLLM per-token)
 *     QD_ACT_DYNAMIC_TENSOR  as per-token with one amax over the whole input (same floor)
 *     QD_ACT_DYNAMIC_GROUP   fp8_block: s = max(groupamax, 1e-10)/448 per 1×block_k group, q = e4m3(x / s)
 *                            mxfp8: e = clamp(floor(log2 groupamax) − 8, ±127) per 32, q = e4m3(x·2^−e)
 *     e4m3() is the saturating round-to-nearest-even encoder of core/codec.h; the `smooth` slot (msModelSlim
 *     mul_scale) multiplies x first.
 *   product: E4M3 values are exact in bf16 and so is every product of two of them in f32, so the engine's
 *     AVX512-BF16 microkernel (gemm_bf16.h) returns Σ q_x·q_w up to f32 additions. Scales are applied where
 *     they are constant: per row / column / tensor in the epilogue, y = Σ·s_x[m]·s_w[n] + b (§4.2, §4.7);
 *     per 128-K block on the partial sums, y = Σ_kb (Σ_{k∈kb} q_x·q_w)·s_x[m,kb]·s_w[n/128,kb] (§4.3);
 *     MXFP8's power-of-two scales are folded into the bf16 operands during packing (exact), so its product
 *     is one plain sum of (q_x·2^e_x)(q_w·2^e_w) (§4.6).
 *   The only departures from exact arithmetic besides f32 summation: vdpbf16ps treats bf16 operands below
 *   2^−126 as zero, so an MX block whose scaled values fall there (amax < ~2^−117) contributes zero.
 *
 * Tolerance against the f32 reference (qd_linear_dequantize + f32 GEMM on the unquantized activations):
 *   NMSE ≤ 2e-3 for fp8_tensor / fp8_channel / fp8_block, NMSE ≤ 2e-2 for MXFP8. The weights are those of
 *   the reference, so the error is the activation rounding alone. E4M3 keeps 3 mantissa bits: relative
 *   error ≤ 2^−4 per element, spread uniformly, so E[δ²] ≈ 2^−8/3·E[1/u²] ≈ 6e-4 of each term's energy for
 *   per-token / per-tensor scales (values below 2^−6 of the scale fall on the coarser subnormal grid and
 *   add a little; measured ≤ 1.1e-3 on outlier-heavy activations), less for 1×128 groups (≤ 5e-4).
 *   MXFP8's floor rule (formats.md §4.3) maps a block's amax into [256, 512) and saturates it at 448, so
 *   the largest element of ~1 block in 8 loses up to 12.5%; when a few outliers carry most of a row's
 *   energy that dominates (measured ≤ 1.3e-2 with 1000× channel spreads and mul_scale factors).
 *   Against an exact emulation (same quantization, products summed in double) the result agrees to f32
 *   summation error (≲ 1e-5 of the output scale), plus one bf16 rounding for a BF16 output. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/linear_kernels.h"
#include "core/codec.h"
#include "core/status.h"
#include "core/threads.h"

typedef enum { A_STATIC, A_TOKEN, A_GROUP, A_MX } act_kind;

typedef struct {
    const qd_linear *l;
    const void *x;   /* [M, K] */
    qd_dtype x_dtype;
    int64_t k;
    act_kind act;
    float in_scale;  /* A_STATIC: the divisor of every element */
    float *row_scale; /* A_TOKEN: s_m, written by a_row */
    float *a_gscale;  /* A_GROUP: s[g, m] (group-major), written by a_row */
    int64_t groups, rows;
    int group;        /* A_GROUP / A_MX: elements per group */
    float *smooth;    /* K multipliers, or NULL */
    bool fast;
} fp8_ctx;

/* The per-token floor (vLLM min_scaling_factor) and the block-quant eps. */
#define TOKEN_MIN_SCALE (1.0f / (448.0f * 512.0f))
#define GROUP_EPS 1e-10f

/* The E4M3 value nearest to v (RNE, saturating to ±448, NaN kept) as an f32. */
static float e4m3_round(float v) { return qd_e4m3_to_f32(qd_f32_to_e4m3(v)); }

/* bf16 bits of an f32 that has at most 8 significant bits (exact: truncation drops only zeros) */
static uint16_t bf16_exact(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

/* The MX shared exponent of a block (formats.md §4.3, OCP floor rule for E4M3, emax 8): floor(log2 amax) − 8
 * clamped to [−127, 127]; zero and f32-subnormal amax give −127. Read off the exponent bits, so that the
 * vector path computes the identical value. */
static int mx_exponent(float amax) {
    uint32_t u;
    memcpy(&u, &amax, 4);
    const int biased = (int)((u >> 23) & 0xFF);
    if (biased == 0) return -127;
    const int e = biased - 127 - 8;
    return e < -127 ? -127 : e > 127 ? 127 : e;
}

static float x_at(const fp8_ctx *c, const uint8_t *row, int64_t k) {
    float v = c->x_dtype == QD_DTYPE_F32 ? ((const float *)(const void *)row)[k] : qd_bf16_to_f32(((const uint16_t *)(const void *)row)[k]);
    return c->smooth ? v * c->smooth[k] : v;
}

/* ---- activation rows, generic ---- */

static void a_row_generic(const fp8_ctx *c, int64_t m, uint16_t *dst) {
    const int64_t k = c->k;
    const uint8_t *row = (const uint8_t *)c->x + m * k * (c->x_dtype == QD_DTYPE_F32 ? 4 : 2);
    if (c->act == A_STATIC || c->act == A_TOKEN) {
        float s = c->in_scale;
        if (c->act == A_TOKEN) {
            float amax = 0;
            for (int64_t i = 0; i < k; i++) amax = fmaxf(amax, fabsf(x_at(c, row, i)));
            s = fmaxf(amax / 448.0f, TOKEN_MIN_SCALE);
            c->row_scale[m] = s;
        }
        for (int64_t i = 0; i < k; i++) dst[i] = bf16_exact(e4m3_round(x_at(c, row, i) / s));
        return;
    }
    for (int64_t g0 = 0, g = 0; g0 < k; g0 += c->group, g++) {
        const int64_t g1 = g0 + c->group < k ? g0 + c->group : k;
        float amax = 0;
        for (int64_t i = g0; i < g1; i++) amax = fmaxf(amax, fabsf(x_at(c, row, i)));
        if (c->act == A_GROUP) {
            const float s = fmaxf(amax, GROUP_EPS) / 448.0f;
            c->a_gscale[g * c->rows + m] = s;
            for (int64_t i = g0; i < g1; i++) dst[i] = bf16_exact(e4m3_round(x_at(c, row, i) / s));
        } else {
            const int e = mx_exponent(amax);
            const float down = ldexpf(1.0f, -e), up = ldexpf(1.0f, e);
            for (int64_t i = g0; i < g1; i++) dst[i] = bf16_exact(e4m3_round(x_at(c, row, i) * down) * up);
        }
    }
}

/* ---- weight rows, generic ---- */

static void b_row_fp8_generic(const qd_linear *l, int64_t n, int64_t k0, int64_t kc, uint16_t *dst) {
    const uint8_t *q = (const uint8_t *)l->weight.data + n * l->in_features + k0;
    for (int64_t i = 0; i < kc; i++) dst[i] = bf16_exact(qd_e4m3_to_f32(q[i]));
}

static void b_row_mx_generic(const qd_linear *l, int64_t n, int64_t k0, int64_t kc, uint16_t *dst) {
    const int64_t k = l->in_features;
    const uint8_t *q = (const uint8_t *)l->weight.data + n * k, *e = (const uint8_t *)l->scale.data + n * (k / 32);
    for (int64_t i = k0; i < k0 + kc; i++) dst[i - k0] = bf16_exact(qd_e4m3_to_f32(q[i]) * qd_e8m0_to_f32(e[i / 32]));
}

#if defined(__x86_64__)

/* 16 activations from element k of a row (F32 or BF16), times the smooth factors; lanes outside `m` are 0 */
static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 __m512 load_x16(const fp8_ctx *c, const uint8_t *row,
                                                                                 int64_t k, __mmask16 m) {
    __m512 v;
    if (c->x_dtype == QD_DTYPE_F32) {
        v = _mm512_maskz_loadu_ps(m, (const float *)(const void *)row + k);
    } else {
        const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)(const void *)row + k);
        v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    if (c->smooth) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, c->smooth + k));
    return v;
}

/* The E4M3 value nearest to each lane (RNE; saturate to ±448; NaN stays NaN), as f32: 3 mantissa bits by
 * integer rounding for |v| ≥ 2^−6, multiples of 2^−9 (the subnormal step) by an add/subtract of 2^14
 * below. Bit-identical to qd_e4m3_to_f32(qd_f32_to_e4m3(v)). */
static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 __m512 e4m3_round16(__m512 v) {
    const __m512 av = _mm512_abs_ps(v);
    const __m512i u = _mm512_castps_si512(av);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 20), _mm512_set1_epi32(1));
    const __m512i nrm = _mm512_and_si512(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFFF))),
                                         _mm512_set1_epi32((int)0xFFF00000u));
    const __m512 sub = _mm512_sub_ps(_mm512_add_ps(av, _mm512_set1_ps(16384.0f)), _mm512_set1_ps(16384.0f));
    const __mmask16 small = _mm512_cmp_ps_mask(av, _mm512_set1_ps(0x1p-6f), _CMP_LT_OQ);
    __m512 r = _mm512_mask_blend_ps(small, _mm512_castsi512_ps(nrm), sub);
    r = _mm512_min_ps(_mm512_set1_ps(448.0f), r); /* second operand returned for NaN: NaN stays */
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), sign));
}

/* store 16 exact-bf16 lanes (truncation: the values have ≤ 4 significant bits) */
static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 void store_bf16_16(uint16_t *dst, __mmask16 m, __m512 v) {
    _mm256_mask_storeu_epi16(dst, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16)));
}

static inline __attribute__((always_inline)) __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* max |v| over [k0, k1); meanwhile the same span of the next row is prefetched (rows are packed in order,
 * and this first pass is where a row comes in from memory) */
static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 float amax_range(const fp8_ctx *c, const uint8_t *row,
                                                                                int64_t k0, int64_t k1) {
    const int64_t es = c->x_dtype == QD_DTYPE_F32 ? 4 : 2;
    const uint8_t *next = row + c->k * es;
    __m512 mx = _mm512_setzero_ps();
    for (int64_t i = k0; i < k1; i += 16) {
        if ((i * es) % 64 == 0) _mm_prefetch((const char *)(next + i * es), _MM_HINT_T1);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(load_x16(c, row, i, tail_mask(k1 - i))));
    }
    return _mm512_reduce_max_ps(mx);
}

/* q = e4m3(x / s) (div) or e4m3(x·s)·up (mul, power-of-two factors), over [k0, k1); with `prefetch` (a
 * single-pass row) the next row is fetched meanwhile */
static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 void quant_range(const fp8_ctx *c, const uint8_t *row,
                                                                                int64_t k0, int64_t k1, float s, bool div,
                                                                                float up, bool prefetch, uint16_t *dst) {
    const int64_t es = c->x_dtype == QD_DTYPE_F32 ? 4 : 2;
    const __m512 vs = _mm512_set1_ps(s), vu = _mm512_set1_ps(up);
    for (int64_t i = k0; i < k1; i += 16) {
        if (prefetch && (i * es) % 64 == 0) _mm_prefetch((const char *)(row + (c->k + i) * es), _MM_HINT_T1);
        const __mmask16 m = tail_mask(k1 - i);
        const __m512 v = load_x16(c, row, i, m);
        __m512 q = e4m3_round16(div ? _mm512_div_ps(v, vs) : _mm512_mul_ps(v, vs));
        if (!div) q = _mm512_mul_ps(q, vu);
        store_bf16_16(dst + i, m, q);
    }
}

static QD_TARGET_AVX512BF16 void a_row_avx512(const fp8_ctx *c, int64_t m, uint16_t *dst) {
    const int64_t k = c->k;
    const uint8_t *row = (const uint8_t *)c->x + m * k * (c->x_dtype == QD_DTYPE_F32 ? 4 : 2);
    if (c->act == A_STATIC || c->act == A_TOKEN) {
        float s = c->in_scale;
        if (c->act == A_TOKEN) {
            s = fmaxf(amax_range(c, row, 0, k) / 448.0f, TOKEN_MIN_SCALE);
            c->row_scale[m] = s;
        }
        quant_range(c, row, 0, k, s, true, 1.0f, c->act == A_STATIC, dst);
        return;
    }
    for (int64_t g0 = 0, g = 0; g0 < k; g0 += c->group, g++) {
        const int64_t g1 = g0 + c->group < k ? g0 + c->group : k;
        const float amax = amax_range(c, row, g0, g1);
        if (c->act == A_GROUP) {
            const float s = fmaxf(amax, GROUP_EPS) / 448.0f;
            c->a_gscale[g * c->rows + m] = s;
            quant_range(c, row, g0, g1, s, true, 1.0f, false, dst);
        } else {
            const int e = mx_exponent(amax);
            quant_range(c, row, g0, g1, ldexpf(1.0f, -e), false, ldexpf(1.0f, e), false, dst);
        }
    }
}

/* 32 E4M3 codes → their exact bf16 bits: normal codes by re-biasing the exponent (e + 120) and moving the
 * mantissa; the 7 subnormal codes m·2^−9 from a table; 0x7F/0xFF → NaN. */
static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 __m512i e4m3_to_bf16_32(const uint8_t *q) {
    static const uint16_t sub_table[32] = {0, 0x3B00, 0x3B80, 0x3BC0, 0x3C00, 0x3C20, 0x3C40, 0x3C60};
    const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)q));
    const __m512i mag = _mm512_and_si512(w, _mm512_set1_epi16(0x7F));
    __m512i r = _mm512_add_epi16(_mm512_slli_epi16(mag, 4), _mm512_set1_epi16(0x3C00));
    const __mmask32 sub = _mm512_cmplt_epu16_mask(mag, _mm512_set1_epi16(8));
    r = _mm512_mask_permutexvar_epi16(r, sub, mag, _mm512_loadu_si512(sub_table));
    r = _mm512_mask_mov_epi16(r, _mm512_cmpeq_epi16_mask(mag, _mm512_set1_epi16(0x7F)), _mm512_set1_epi16(0x7FC0));
    return _mm512_or_si512(r, _mm512_slli_epi16(_mm512_and_si512(w, _mm512_set1_epi16(0x80)), 8));
}

static QD_TARGET_AVX512BF16 void b_row_fp8_avx512(const qd_linear *l, int64_t n, int64_t k0, int64_t kc, uint16_t *dst) {
    const uint8_t *q = (const uint8_t *)l->weight.data + n * l->in_features + k0;
    int64_t i = 0;
    for (; i + 32 <= kc; i += 32) _mm512_storeu_si512(dst + i, e4m3_to_bf16_32(q + i));
    for (; i < kc; i++) dst[i] = bf16_exact(qd_e4m3_to_f32(q[i]));
}

/* MXFP8 weights with the block's power of two folded in: adding (E − 127) to the bf16 exponent field is
 * exact while the result stays a normal number, which holds for every E4M3 magnitude (2^−9..448) when
 * 10 ≤ E ≤ 246; other blocks (and NaN scales) take the scalar path. */
static QD_TARGET_AVX512BF16 void b_row_mx_avx512(const qd_linear *l, int64_t n, int64_t k0, int64_t kc, uint16_t *dst) {
    const int64_t k = l->in_features;
    const uint8_t *q = (const uint8_t *)l->weight.data + n * k, *e = (const uint8_t *)l->scale.data + n * (k / 32);
    for (int64_t i = k0; i < k0 + kc; i += 32) { /* k0, kc: multiples of 32 (K is) */
        const int E = e[i / 32];
        if (E < 10 || E > 246) {
            for (int j = 0; j < 32; j++) dst[i - k0 + j] = bf16_exact(qd_e4m3_to_f32(q[i + j]) * qd_e8m0_to_f32((uint8_t)E));
            continue;
        }
        const __m512i t = e4m3_to_bf16_32(q + i);
        const __m512i mag = _mm512_and_si512(t, _mm512_set1_epi16(0x7FFF));
        const __mmask32 live = _mm512_cmpneq_epi16_mask(mag, _mm512_setzero_si512()) &
                               _mm512_cmpneq_epi16_mask(mag, _mm512_set1_epi16(0x7FC0));
        const __m512i r = _mm512_mask_add_epi16(t, live, t, _mm512_set1_epi16((short)((E - 127) * 128)));
        _mm512_storeu_si512(dst + i - k0, r);
    }
}

#endif /* __x86_64__ */

static void fp8_a_row(const void *ctx, int64_t m, void *dst) {
    const fp8_ctx *c = ctx;
#if defined(__x86_64__)
    if (c->fast && (c->act == A_STATIC || c->act == A_TOKEN || c->group % 16 == 0)) {
        a_row_avx512(c, m, dst);
        return;
    }
#endif
    a_row_generic(c, m, dst);
}

static void fp8_b_row(const void *ctx, int64_t n, int64_t k0, int64_t kc, void *dst) {
    const fp8_ctx *c = ctx;
#if defined(__x86_64__)
    if (c->fast) {
        if (c->l->scheme == QD_SCHEME_MXFP8) b_row_mx_avx512(c->l, n, k0, kc, dst);
        else b_row_fp8_avx512(c->l, n, k0, kc, dst);
        return;
    }
#endif
    if (c->l->scheme == QD_SCHEME_MXFP8) b_row_mx_generic(c->l, n, k0, kc, dst);
    else b_row_fp8_generic(c->l, n, k0, kc, dst);
}

/* one amax over the whole input (QD_ACT_DYNAMIC_TENSOR) */
static float tensor_amax(const fp8_ctx *c, int64_t m) {
    float amax = 0;
    const int64_t n = m * c->k;
#pragma omp parallel for reduction(max : amax) schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    for (int64_t i = 0; i < n; i++) {
        const float v = c->x_dtype == QD_DTYPE_F32 ? ((const float *)c->x)[i] : qd_bf16_to_f32(((const uint16_t *)c->x)[i]);
        const float a = fabsf(c->smooth ? v * c->smooth[i % c->k] : v);
        if (a > amax) amax = a;
    }
    return amax;
}

static float *view_to_f32(const qd_view *v, int64_t n) {
    float *out = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (out)
        for (int64_t i = 0; i < n; i++) out[i] = qd_view_get_flat(v, i);
    return out;
}

qd_status qd_cpu_linear_fp8(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    const int64_t m = x->shape[0], k = l->in_features, n = l->out_features;
    const bool mx = l->scheme == QD_SCHEME_MXFP8;
    if ((l->scheme != QD_SCHEME_FP8 && !mx) || l->weight.dtype != QD_DTYPE_F8_E4M3 || !l->weight.data || !l->scale.data ||
        qd_view_elements(&l->weight) != n * k) {
        return qd_fail(QD_EINVAL, "layer '%s': not a bound FP8 / MXFP8 layer (F8_E4M3 [%lld, %lld] weight with scales)", name,
                       (long long)n, (long long)k);
    }
    fp8_ctx c = {.l = l, .x = x->data, .x_dtype = x->dtype, .k = k, .in_scale = 1.0f, .fast = qd_gemm_fast(QD_GEMM_BF16)};
    qd_gemm_args g = {.type = QD_GEMM_BF16, .m = m, .n = n, .k = k, .ctx = &c, .a_row = fp8_a_row, .b_row = fp8_b_row,
                      .alpha = 1.0f, .y = y->data, .y_dtype = y->dtype, .ldy = n};
    float *wscale = NULL, *bias = NULL, *smooth = NULL;
    qd_status s = QD_OK;
    if (l->bias.data) {
        if (!(bias = malloc(sizeof(float) * (size_t)n))) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", name);
        qd_linear_bias_f32(l, bias);
        g.bias = bias;
    }
    if (l->smooth.data) {
        if (qd_view_elements(&l->smooth) != k) {
            s = qd_fail(QD_EINVAL, "layer '%s': smooth factors must have %lld elements", name, (long long)k);
            goto done;
        }
        if (!(smooth = view_to_f32(&l->smooth, k))) goto nomem;
        c.smooth = smooth;
    }
    if (mx) {
        if (k % 32 || (l->scale.dtype != QD_DTYPE_U8 && l->scale.dtype != QD_DTYPE_F8_E8M0) ||
            qd_view_elements(&l->scale) != n * (k / 32) || l->scale2.data) {
            s = qd_fail(QD_EINVAL, "layer '%s': MXFP8 needs K %% 32 == 0 and U8 E8M0 scales [%lld, %lld]", name, (long long)n,
                        (long long)(k / 32));
            goto done;
        }
        c.act = A_MX;
        c.group = 32;
    } else if (l->block_n > 0) {
        const int64_t gn = (n + l->block_n - 1) / l->block_n, gk = (k + l->block_k - 1) / l->block_k;
        const int group = l->act_group > 0 ? l->act_group : l->block_k;
        if (l->act != QD_ACT_DYNAMIC_GROUP || group != l->block_k || l->block_k % 2 || qd_view_elements(&l->scale) != gn * gk) {
            s = qd_fail(QD_EUNSUPPORTED, "layer '%s': block FP8 needs per-token-group activations with the weight's block_k "
                                         "(%d) and [%lld, %lld] scales",
                        name, l->block_k, (long long)gn, (long long)gk);
            goto done;
        }
        if (!(wscale = view_to_f32(&l->scale, gn * gk))) goto nomem;
        if (!(c.a_gscale = malloc(sizeof(float) * (size_t)(m * gk > 0 ? m * gk : 1)))) goto nomem;
        c.act = A_GROUP;
        c.group = group;
        c.groups = gk;
        c.rows = m;
        g.group_k = l->block_k;
        g.group_n = l->block_n;
        g.a_gscale = c.a_gscale;
        g.a_gstride = m;
        g.b_gscale = wscale;
        g.b_gstride = gk;
    } else {
        const int64_t se = qd_view_elements(&l->scale);
        if (se != 1 && se != n) {
            s = qd_fail(QD_EINVAL, "layer '%s': FP8 weight scale has %lld elements (1 or %lld expected)", name, (long long)se,
                        (long long)n);
            goto done;
        }
        /* the weight scale always as a per-column vector (a per-tensor one repeated), with the activations' scalar
           folded into it below: a layer fused from per-tensor shards (qd_linear_concat stacks their scales) then gives
           the same bits as its shards, y = acc·(s_w·s_x) or (acc·s_x[m])·s_w, whichever form it was stored in */
        if (!(wscale = view_to_f32(&l->scale, se))) goto nomem;
        if (se == 1 && n > 1) {
            float *all = realloc(wscale, sizeof *all * (size_t)n);
            if (!all) goto nomem;
            wscale = all;
            for (int64_t j = 1; j < n; j++) wscale[j] = wscale[0];
        }
        g.col_scale = wscale;
        switch (l->act) {
        case QD_ACT_STATIC_TENSOR: {
            const float is = l->input_scale.data ? qd_view_get(&l->input_scale, 0, 0) : 0.0f;
            if (!(is > 0) || !isfinite(is)) {
                s = qd_fail(QD_EINVAL, "layer '%s': static FP8 activations need a positive input_scale", name);
                goto done;
            }
            c.act = A_STATIC;
            c.in_scale = is;
            g.alpha *= is;
            break;
        }
        case QD_ACT_DYNAMIC_TENSOR:
            c.act = A_STATIC;
            c.in_scale = fmaxf(tensor_amax(&c, m) / 448.0f, TOKEN_MIN_SCALE);
            g.alpha *= c.in_scale;
            break;
        case QD_ACT_DYNAMIC_TOKEN:
            if (!(c.row_scale = malloc(sizeof(float) * (size_t)(m > 0 ? m : 1)))) goto nomem;
            c.act = A_TOKEN;
            g.row_scale = c.row_scale;
            break;
        default:
            s = qd_fail(QD_EUNSUPPORTED, "layer '%s': FP8 with per-channel/tensor weight scales takes static, per-tensor or "
                                         "per-token activations",
                        name);
            goto done;
        }
    }
    if (g.alpha != 1.0f) { /* a per-tensor activation scale: into the columns' (see above) */
        for (int64_t j = 0; j < n; j++) wscale[j] *= g.alpha;
        g.alpha = 1.0f;
    }
    s = qd_gemm_run(&g);
    goto done;
nomem:
    s = qd_fail(QD_ENOMEM, "layer '%s': cannot allocate FP8 scratch (%lld rows)", name, (long long)m);
done:
    free(wscale), free(bias), free(smooth), free(c.row_scale), free(c.a_gscale);
    return s;
}
