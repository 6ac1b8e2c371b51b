/* Element-wise CPU ops: activations (models.md §11.8: GELU tanh for FLUX/Qwen/Hunyuan/Wan, SiLU,
 * CLIP's quick_gelu, ReLU), gated MLP halves (SwiGLU / GEGLU), AdaLN modulation (§1.4), gated residual
 * adds, broadcast add/mul, tanh (Z-Image's gates), and softmax over the last dim — plus the f32 row converters every CPU op
 * file shares (ops_internal.h).
 *
 * Every op works on chunks of CH elements: the inputs are viewed as f32 (F32 tensors in place, BF16/F16
 * decoded into an L1-sized buffer), the math runs in f32, and each result is rounded once to the
 * output dtype — PyTorch's bf16 kernels do the same per op (backend.h). Where PyTorch would round
 * between two ops that are fused here (gated: act(gate) then ·value; modulate: 1+scale, ·, +shift),
 * this rounds once, which is closer to the f32 result. Any mix of F32/BF16/F16 inputs and outputs
 * is accepted; in place (y sharing x's buffer) needs equal dtypes.
 *
 * Fast path (AVX-512, chosen at run time): exp by Cody–Waite range reduction, a degree-7 polynomial
 * and vscalefps (≤ 2 ulp), sigmoid-form activations (silu = x/(1+e^-x); GELU-tanh uses the exact
 * identity ½(1+tanh u) = 1/(1+e^-2u), which avoids tanh's cancellation), erfc by the Chebyshev fit
 * of Numerical Recipes' erfcc (fractional error < 1.2e-7) for exact GELU, and bf16 conversions in
 * registers. The generic path uses libm (expf, erfcf, tanhf) in the same cancellation-free forms. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/ops_internal.h"
#include "core/codec.h"
#include "core/threads.h"

#define CH 2048 /* elements per chunk: a few 8 KiB f32 buffers per thread, L1-resident */

#define AI static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------------------------ */
/* row conversions                                                                                   */

#if defined(__x86_64__)
static QD_TARGET_AVX512 void bf16_to_f32_avx512(const uint16_t *s, float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
        _mm512_storeu_ps(d + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, s + i));
        _mm512_mask_storeu_ps(d + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
}

AI QD_TARGET_AVX512 __m256i f32_to_bf16_vec(__m512 v) { return _mm512_cvtepi32_epi16(qd_cpu_bf16_bits_avx512(v)); }

static QD_TARGET_AVX512 void f32_to_bf16_avx512(const float *s, uint16_t *d, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(d + i), f32_to_bf16_vec(_mm512_loadu_ps(s + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(d + i, m, f32_to_bf16_vec(_mm512_maskz_loadu_ps(m, s + i)));
    }
}
#endif

const float *qd_cpu_in_f32(const qd_tensor *t, int64_t off, int64_t n, float *buf) {
    if (t->dtype == QD_DTYPE_F32) return (const float *)t->data + off;
#if defined(__x86_64__)
    if (t->dtype == QD_DTYPE_BF16 && qd_cpu_has_avx512()) {
        bf16_to_f32_avx512((const uint16_t *)t->data + off, buf, n);
        return buf;
    }
#endif
    qd_cpu_to_f32(t, off, n, buf);
    return buf;
}

float *qd_cpu_out_f32(qd_tensor *t, int64_t off, float *buf) {
    return t->dtype == QD_DTYPE_F32 ? (float *)t->data + off : buf;
}

void qd_cpu_out_commit(qd_tensor *t, int64_t off, int64_t n, const float *vals) {
    if (t->dtype == QD_DTYPE_F32) {
        float *dst = (float *)t->data + off;
        if (dst != vals) memmove(dst, vals, (size_t)n * sizeof(float));
        return;
    }
#if defined(__x86_64__)
    if (t->dtype == QD_DTYPE_BF16 && qd_cpu_has_avx512()) {
        f32_to_bf16_avx512(vals, (uint16_t *)t->data + off, n);
        return;
    }
#endif
    qd_cpu_from_f32(t, off, n, vals);
}

/* ------------------------------------------------------------------------------------------------ */
/* f32 kernels                                                                                       */

#define SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_COEF 0.044715f

static float act_scalar(qd_act_kind k, float x) {
    switch (k) {
    /* ½(1 + tanh u) = 1/(1 + e^−2u) and 1 + erf(z) = erfc(−z): the same functions without the
       cancellation of 1 + (≈ −1) for negative x, which costs PyTorch's literal forms up to 1e-3 */
    case QD_ACT_GELU_TANH: return x / (1.0f + expf(-2.0f * SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x)));
    case QD_ACT_GELU_ERF: return 0.5f * x * erfcf(x * -0.70710678118654752f);
    case QD_ACT_SILU: return x / (1.0f + expf(-x));
    case QD_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    case QD_ACT_RELU: return x < 0.0f ? 0.0f : x; /* NaN stays NaN, as torch.relu */
    case QD_ACT_TANH: return tanhf(x);
    }
    return x;
}

static void act_generic(qd_act_kind k, const float *in, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = act_scalar(k, in[i]);
}

#if defined(__x86_64__)
/* e^x: n = round(x·log2 e), r = x − n·ln2 in two parts (Cody–Waite), e^r by its Taylor series to
 * degree 7 (|r| ≤ ln2/2: error < 1e-9), times 2^n by vscalefps. x is clamped to [−104, 100] so that
 * ±inf inputs give 0 / inf, not NaN, while everything past 88.73 still overflows to inf (1/(1+e^x)
 * forms then give the right ±0). */
AI QD_TARGET_AVX512 __m512 exp_avx512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(100.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606820309417232e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* erfc(z) for any z (Numerical Recipes' erfcc Chebyshev fit, fractional error < 1.2e-7): with
 * t = 1/(1 + |z|/2), erfc(|z|) = t·exp(−z² + poly(t)); erfc(−|z|) = 2 − erfc(|z|). */
AI QD_TARGET_AVX512 __m512 erfc_avx512(__m512 z) {
    __m512 a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(a, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    __m512 e = _mm512_mul_ps(t, exp_avx512(_mm512_fnmadd_ps(a, a, p)));
    __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_sub_ps(e, neg, _mm512_set1_ps(2.0f), e);
}

/* tanh: for |x| ≥ 0.3, sign(x)·(1 − e)/(1 + e) with e = e^(−2|x|) (no cancellation worth a bit there);
 * below, the odd Taylor series to x^11 (relative error < 3e-9), where 1 − e would cancel. */
AI QD_TARGET_AVX512 __m512 tanh_avx512(__m512 x) {
    __m512 a = _mm512_abs_ps(x);
    __m512 e = exp_avx512(_mm512_mul_ps(a, _mm512_set1_ps(-2.0f)));
    __m512 big = _mm512_div_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(-1382.0f / 155925.0f);
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(62.0f / 2835.0f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-17.0f / 315.0f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.0f / 15.0f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.0f / 3.0f));
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, x2), x, x);
    __mmask16 is_small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.3f), _CMP_LT_OQ);
    /* copy x's sign onto the large-|x| branch (NaN inputs stay NaN through the division) */
    big = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(big),
                                              _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u))));
    return _mm512_mask_blend_ps(is_small, big, small);
}

AI QD_TARGET_AVX512 __m512 act_vec(qd_act_kind k, __m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    switch (k) {
    case QD_ACT_GELU_TANH: {
        __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        __m512 u = _mm512_mul_ps(_mm512_fmadd_ps(x3, _mm512_set1_ps(GELU_COEF), x), _mm512_set1_ps(-2.0f * SQRT_2_OVER_PI));
        return _mm512_div_ps(x, _mm512_add_ps(one, exp_avx512(u)));
    }
    case QD_ACT_GELU_ERF: /* ½·x·(1 + erf(x/√2)) = ½·x·erfc(−x/√2) */
        return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x),
                             erfc_avx512(_mm512_mul_ps(x, _mm512_set1_ps(-0.70710678118654752f))));
    case QD_ACT_SILU: return _mm512_div_ps(x, _mm512_add_ps(one, exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    case QD_ACT_QUICK_GELU:
        return _mm512_div_ps(x, _mm512_add_ps(one, exp_avx512(_mm512_mul_ps(x, _mm512_set1_ps(-1.702f)))));
    case QD_ACT_RELU: return _mm512_max_ps(_mm512_setzero_ps(), x); /* max returns its 2nd operand on NaN */
    case QD_ACT_TANH: return tanh_avx512(x);
    }
    return x;
}

/* out = act(in) [· mul], 16 lanes at a time, the tail masked */
AI QD_TARGET_AVX512 void act_avx512_k(qd_act_kind k, const float *in, const float *mul, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 y = act_vec(k, _mm512_loadu_ps(in + i));
        if (mul) y = _mm512_mul_ps(y, _mm512_loadu_ps(mul + i));
        _mm512_storeu_ps(out + i, y);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 y = act_vec(k, _mm512_maskz_loadu_ps(m, in + i));
        if (mul) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, mul + i));
        _mm512_mask_storeu_ps(out + i, m, y);
    }
}

/* one instance per kind, so the switch in act_vec folds away inside the loop */
static QD_TARGET_AVX512 void act_avx512(qd_act_kind k, const float *in, const float *mul, float *out, int64_t n) {
    switch (k) {
    case QD_ACT_GELU_TANH: act_avx512_k(QD_ACT_GELU_TANH, in, mul, out, n); break;
    case QD_ACT_GELU_ERF: act_avx512_k(QD_ACT_GELU_ERF, in, mul, out, n); break;
    case QD_ACT_SILU: act_avx512_k(QD_ACT_SILU, in, mul, out, n); break;
    case QD_ACT_QUICK_GELU: act_avx512_k(QD_ACT_QUICK_GELU, in, mul, out, n); break;
    case QD_ACT_RELU: act_avx512_k(QD_ACT_RELU, in, mul, out, n); break;
    case QD_ACT_TANH: act_avx512_k(QD_ACT_TANH, in, mul, out, n); break;
    }
}
#endif

/* out = act(in) · mul (mul may be NULL; may alias out elementwise) */
static void act_rows(qd_act_kind k, const float *in, const float *mul, float *out, int64_t n) {
#if defined(__x86_64__)
    if (qd_cpu_has_avx512()) {
        act_avx512(k, in, mul, out, n);
        return;
    }
#endif
    if (mul) {
        for (int64_t i = 0; i < n; i++) out[i] = act_scalar(k, in[i]) * mul[i];
    } else {
        act_generic(k, in, out, n);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* checks                                                                                            */

static qd_status check_act_kind(const char *op, qd_act_kind k) {
    switch (k) {
    case QD_ACT_GELU_TANH:
    case QD_ACT_GELU_ERF:
    case QD_ACT_SILU:
    case QD_ACT_QUICK_GELU:
    case QD_ACT_RELU:
    case QD_ACT_TANH: return QD_OK;
    }
    return qd_fail(QD_EINVAL, "cpu %s: unknown activation kind %d", op, (int)k);
}

/* ------------------------------------------------------------------------------------------------ */
/* activation                                                                                        */

qd_status qd_cpu_activation(qd_backend *b, qd_act_kind kind, const qd_tensor *x, qd_tensor *y) {
    (void)b;
    qd_status s;
    if ((s = check_act_kind("activation", kind)) || (s = qd_cpu_check_float("activation", "x", x)) ||
        (s = qd_cpu_check_float("activation", "y", y)) || (s = qd_cpu_check_same_shape("activation", "x", x, "y", y)) ||
        (s = qd_cpu_check_inplace("activation", x, y))) {
        return s;
    }
    int64_t n = qd_tensor_elements(x), nch = (n + CH - 1) / CH;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    for (int64_t c = 0; c < nch; c++) {
        float bi[CH], bo[CH];
        int64_t off = c * CH, m = n - off < CH ? n - off : CH;
        const float *in = qd_cpu_in_f32(x, off, m, bi);
        float *out = qd_cpu_out_f32(y, off, bo);
        act_rows(kind, in, NULL, out, m);
        qd_cpu_out_commit(y, off, m, out);
    }
    return QD_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* gated: y = value · act(gate)                                                                      */

static void gated_chunk(qd_act_kind kind, bool gate_first, const qd_tensor *x, qd_tensor *y, int64_t N, int64_t row,
                        int64_t c0, int64_t m) {
    float bg[CH], bv[CH], bo[CH];
    int64_t xo = row * 2 * N + c0;
    const float *g = qd_cpu_in_f32(x, xo + (gate_first ? 0 : N), m, bg);
    const float *v = qd_cpu_in_f32(x, xo + (gate_first ? N : 0), m, bv);
    float *out = qd_cpu_out_f32(y, row * N + c0, bo);
    act_rows(kind, g, v, out, m);
    qd_cpu_out_commit(y, row * N + c0, m, out);
}

qd_status qd_cpu_gated(qd_backend *b, qd_act_kind kind, bool gate_first, const qd_tensor *x, qd_tensor *y) {
    (void)b;
    qd_status s;
    if ((s = check_act_kind("gated", kind)) || (s = qd_cpu_check_float("gated", "x", x)) ||
        (s = qd_cpu_check_float("gated", "y", y)) || (s = qd_cpu_check_inplace("gated", x, y))) {
        return s;
    }
    char sx[128], sy[128];
    bool ok = x->rank >= 1 && y->rank == x->rank && x->shape[x->rank - 1] % 2 == 0 &&
              y->shape[y->rank - 1] * 2 == x->shape[x->rank - 1];
    for (int i = 0; ok && i + 1 < x->rank; i++) ok = x->shape[i] == y->shape[i];
    if (!ok) {
        return qd_fail(QD_EINVAL, "cpu gated: x must be [..., 2N] and y [..., N] with the same leading dims, got x %s, y %s",
                       qd_cpu_shape_str(x, sx, sizeof sx), qd_cpu_shape_str(y, sy, sizeof sy));
    }
    int64_t N = y->shape[y->rank - 1];
    if (N == 0) return QD_OK;
    int64_t rows = qd_tensor_elements(y) / N, cpr = (N + CH - 1) / CH, units = rows * cpr;
    if (x->data == y->data) {
        /* y is the front of x's buffer: rows in order, each chunk read before written, so nothing
           is overwritten before it is read (row r writes [rN, rN+N), below row r+1's 2(r+1)N) */
        for (int64_t u = 0; u < units; u++) {
            int64_t c0 = (u % cpr) * CH;
            gated_chunk(kind, gate_first, x, y, N, u / cpr, c0, N - c0 < CH ? N - c0 : CH);
        }
        return QD_OK;
    }
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(rows * N, QD_GRAIN_ELEMS))
    for (int64_t u = 0; u < units; u++) {
        int64_t c0 = (u % cpr) * CH;
        gated_chunk(kind, gate_first, x, y, N, u / cpr, c0, N - c0 < CH ? N - c0 : CH);
    }
    return QD_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* modulate and gated_add: per-batch [B, D] vectors broadcast over the tokens                        */

qd_status qd_cpu_load_batch_vec(const char *op, const char *what, const qd_tensor *t, int64_t B, int64_t D, float **out) {
    qd_status s = qd_cpu_check_float(op, what, t);
    if (s) return s;
    bool ok = (t->rank == 2 && t->shape[0] == B && t->shape[1] == D) ||
              (t->rank == 3 && t->shape[0] == B && t->shape[1] == 1 && t->shape[2] == D);
    if (!ok) {
        char st[128];
        return qd_fail(QD_EINVAL, "cpu %s: %s must be [B, D] = [%lld, %lld], got %s", op, what, (long long)B, (long long)D,
                       qd_cpu_shape_str(t, st, sizeof st));
    }
    *out = malloc(sizeof(float) * (size_t)(B * D > 0 ? B * D : 1));
    if (!*out) return qd_fail(QD_ENOMEM, "cpu %s: cannot allocate %s", op, what);
    qd_cpu_to_f32(t, 0, B * D, *out);
    return QD_OK;
}

static qd_status check_bld(const char *op, const char *what, const qd_tensor *x) {
    if (x->rank < 2) {
        char sx[128];
        return qd_fail(QD_EINVAL, "cpu %s: %s must be [B, L, D], got %s", op, what, qd_cpu_shape_str(x, sx, sizeof sx));
    }
    return QD_OK;
}

#if defined(__x86_64__)
/* out = x·(1+s) + h  (h may be NULL) */
static QD_TARGET_AVX512 void modulate_avx512(const float *x, const float *sc, const float *sh, float *out, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 a = _mm512_add_ps(one, _mm512_loadu_ps(sc + i));
        __m512 h = sh ? _mm512_loadu_ps(sh + i) : _mm512_setzero_ps();
        _mm512_storeu_ps(out + i, _mm512_fmadd_ps(_mm512_loadu_ps(x + i), a, h));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 a = _mm512_add_ps(one, _mm512_maskz_loadu_ps(m, sc + i));
        __m512 h = sh ? _mm512_maskz_loadu_ps(m, sh + i) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(out + i, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), a, h));
    }
}

/* out = r + g·x  (g may be NULL) */
static QD_TARGET_AVX512 void gated_add_avx512(const float *r, const float *x, const float *g, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 xv = _mm512_loadu_ps(x + i), rv = _mm512_loadu_ps(r + i);
        _mm512_storeu_ps(out + i, g ? _mm512_fmadd_ps(_mm512_loadu_ps(g + i), xv, rv) : _mm512_add_ps(rv, xv));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i), rv = _mm512_maskz_loadu_ps(m, r + i);
        _mm512_mask_storeu_ps(out + i, m, g ? _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g + i), xv, rv) : _mm512_add_ps(rv, xv));
    }
}
#endif

void qd_cpu_modulate_rows(const float *x, const float *sc, const float *sh, float *out, int64_t n) {
#if defined(__x86_64__)
    if (qd_cpu_has_avx512()) {
        modulate_avx512(x, sc, sh, out, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * (1.0f + sc[i]) + (sh ? sh[i] : 0.0f);
}

#if defined(__x86_64__)
static QD_TARGET_AVX512 void round_bf16_avx512(float *v, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(v + i, m, qd_cpu_bf16_round_avx512(_mm512_maskz_loadu_ps(m, v + i)));
    }
}
#endif

void qd_cpu_round_rows(qd_dtype t, float *v, int64_t n) {
    if (t == QD_DTYPE_F32) return;
#if defined(__x86_64__)
    if (t == QD_DTYPE_BF16 && qd_cpu_has_avx512()) {
        round_bf16_avx512(v, n);
        return;
    }
#endif
    if (t == QD_DTYPE_BF16) {
        for (int64_t i = 0; i < n; i++) v[i] = qd_bf16_to_f32(qd_f32_to_bf16(v[i]));
    } else {
        for (int64_t i = 0; i < n; i++) v[i] = qd_f16_to_f32(qd_f32_to_f16(v[i]));
    }
}

static void gated_add_rows(const float *r, const float *x, const float *g, float *out, int64_t n) {
#if defined(__x86_64__)
    if (qd_cpu_has_avx512()) {
        gated_add_avx512(r, x, g, out, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) out[i] = r[i] + (g ? g[i] * x[i] : x[i]);
}

qd_status qd_cpu_modulate(qd_backend *b, const qd_tensor *x, const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y) {
    (void)b;
    qd_status s;
    if ((s = qd_cpu_check_float("modulate", "x", x)) || (s = qd_cpu_check_float("modulate", "y", y)) ||
        (s = check_bld("modulate", "x", x)) || (s = qd_cpu_check_same_shape("modulate", "x", x, "y", y)) ||
        (s = qd_cpu_check_inplace("modulate", x, y))) {
        return s;
    }
    int64_t B = x->shape[0], D = x->shape[x->rank - 1];
    float *sc = NULL, *sh = NULL;
    if ((s = qd_cpu_load_batch_vec("modulate", "scale", scale, B, D, &sc))) return s;
    if (shift && (s = qd_cpu_load_batch_vec("modulate", "shift", shift, B, D, &sh))) {
        free(sc);
        return s;
    }
    int64_t n = qd_tensor_elements(x);
    if (n == 0) goto done;
    int64_t rows = n / D, rpb = rows / B, cpr = (D + CH - 1) / CH, units = rows * cpr;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    for (int64_t u = 0; u < units; u++) {
        float bx[CH], bo[CH];
        int64_t row = u / cpr, c0 = (u % cpr) * CH, m = D - c0 < CH ? D - c0 : CH, bi = row / rpb;
        int64_t off = row * D + c0;
        const float *in = qd_cpu_in_f32(x, off, m, bx);
        float *out = qd_cpu_out_f32(y, off, bo);
        qd_cpu_modulate_rows(in, sc + bi * D + c0, sh ? sh + bi * D + c0 : NULL, out, m);
        qd_cpu_out_commit(y, off, m, out);
    }
done:
    free(sc);
    free(sh);
    return QD_OK;
}

qd_status qd_cpu_gated_add(qd_backend *b, const qd_tensor *r, const qd_tensor *x, const qd_tensor *gate, qd_tensor *y) {
    (void)b;
    qd_status s;
    if ((s = qd_cpu_check_float("gated_add", "r", r)) || (s = qd_cpu_check_float("gated_add", "x", x)) ||
        (s = qd_cpu_check_float("gated_add", "y", y)) || (s = check_bld("gated_add", "x", x)) ||
        (s = qd_cpu_check_same_shape("gated_add", "r", r, "x", x)) ||
        (s = qd_cpu_check_same_shape("gated_add", "x", x, "y", y)) || (s = qd_cpu_check_inplace("gated_add", r, y)) ||
        (s = qd_cpu_check_inplace("gated_add", x, y))) {
        return s;
    }
    int64_t B = x->shape[0], D = x->shape[x->rank - 1];
    float *g = NULL;
    if (gate && (s = qd_cpu_load_batch_vec("gated_add", "gate", gate, B, D, &g))) return s;
    int64_t n = qd_tensor_elements(x);
    if (n > 0) {
        int64_t rows = n / D, rpb = rows / B, cpr = (D + CH - 1) / CH, units = rows * cpr;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
        for (int64_t u = 0; u < units; u++) {
            float br[CH], bx[CH], bo[CH];
            int64_t row = u / cpr, c0 = (u % cpr) * CH, m = D - c0 < CH ? D - c0 : CH, bi = row / rpb;
            int64_t off = row * D + c0;
            const float *rv = qd_cpu_in_f32(r, off, m, br);
            const float *xv = qd_cpu_in_f32(x, off, m, bx);
            float *out = qd_cpu_out_f32(y, off, bo);
            gated_add_rows(rv, xv, g ? g + bi * D + c0 : NULL, out, m);
            qd_cpu_out_commit(y, off, m, out);
        }
    }
    free(g);
    return QD_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* add / mul with c broadcast over a's leading dims                                                  */

#if defined(__x86_64__)
static QD_TARGET_AVX512 void binary_avx512(bool mul, const float *a, const float *c, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 av = _mm512_loadu_ps(a + i), cv = _mm512_loadu_ps(c + i);
        _mm512_storeu_ps(out + i, mul ? _mm512_mul_ps(av, cv) : _mm512_add_ps(av, cv));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 av = _mm512_maskz_loadu_ps(m, a + i), cv = _mm512_maskz_loadu_ps(m, c + i);
        _mm512_mask_storeu_ps(out + i, m, mul ? _mm512_mul_ps(av, cv) : _mm512_add_ps(av, cv));
    }
}
#endif

static void binary_rows(bool mul, const float *a, const float *c, float *out, int64_t n) {
#if defined(__x86_64__)
    if (qd_cpu_has_avx512()) {
        binary_avx512(mul, a, c, out, n);
        return;
    }
#endif
    if (mul) {
        for (int64_t i = 0; i < n; i++) out[i] = a[i] * c[i];
    } else {
        for (int64_t i = 0; i < n; i++) out[i] = a[i] + c[i];
    }
}

static qd_status binary_op(const char *op, bool mul, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) {
    qd_status s;
    if ((s = qd_cpu_check_float(op, "a", a)) || (s = qd_cpu_check_float(op, "c", c)) || (s = qd_cpu_check_float(op, "y", y)) ||
        (s = qd_cpu_check_same_shape(op, "a", a, "y", y)) || (s = qd_cpu_check_inplace(op, a, y))) {
        return s;
    }
    /* c's shape, leading 1s dropped, must be a suffix of a's */
    int lead = 0;
    while (lead < c->rank && c->shape[lead] == 1) lead++;
    int cr = c->rank - lead;
    bool ok = cr <= a->rank;
    for (int i = 0; ok && i < cr; i++) ok = c->shape[lead + i] == a->shape[a->rank - cr + i];
    if (!ok) {
        char sa[128], sc[128];
        return qd_fail(QD_EINVAL, "cpu %s: c %s must be a suffix of a's shape %s (broadcast over a's leading dims)", op,
                       qd_cpu_shape_str(c, sc, sizeof sc), qd_cpu_shape_str(a, sa, sizeof sa));
    }
    if (c->data == y->data && c->data != a->data && qd_tensor_elements(c) != qd_tensor_elements(y)) {
        return qd_fail(QD_EINVAL, "cpu %s: y may share a's buffer, not the broadcast operand's", op);
    }
    if (c->data == y->data && c->dtype != y->dtype) return qd_fail(QD_EINVAL, "cpu %s: in place needs equal dtypes", op);
    int64_t n = qd_tensor_elements(a), nc = qd_tensor_elements(c);
    if (n == 0) return QD_OK;
    /* Short rows (c smaller than a chunk): c is read to f32 once, repeated to a whole number of rows
       of at least CH elements, so every chunk of a lines up with it. Long rows: each chunk of a reads
       its own piece of c, in parallel (residual adds of two [L, D] tensors come this way). */
    int64_t rep = nc >= CH ? 1 : CH / nc, span = nc * rep;
    float *cf = NULL;
    if (nc < CH) {
        cf = malloc(sizeof(float) * (size_t)span);
        if (!cf) return qd_fail(QD_ENOMEM, "cpu %s: cannot allocate %lld floats", op, (long long)span);
        qd_cpu_to_f32(c, 0, nc, cf);
        for (int64_t k = 1; k < rep; k++) memcpy(cf + k * nc, cf, sizeof(float) * (size_t)nc);
    }
    /* units: (span of a, chunk within the span) */
    int64_t spans = (n + span - 1) / span, cps = (span + CH - 1) / CH, units = spans * cps;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    for (int64_t u = 0; u < units; u++) {
        float ba[CH], bc[CH], bo[CH];
        int64_t sp = u / cps, c0 = (u % cps) * CH, off = sp * span + c0;
        if (off >= n) continue;
        int64_t m = span - c0 < CH ? span - c0 : CH;
        if (m > n - off) m = n - off;
        const float *av = qd_cpu_in_f32(a, off, m, ba);
        const float *cv = cf ? cf + c0 : qd_cpu_in_f32(c, c0, m, bc);
        float *out = qd_cpu_out_f32(y, off, bo);
        binary_rows(mul, av, cv, out, m);
        qd_cpu_out_commit(y, off, m, out);
    }
    free(cf);
    return QD_OK;
}

qd_status qd_cpu_add(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) {
    (void)b;
    return binary_op("add", false, a, c, y);
}

qd_status qd_cpu_mul(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) {
    (void)b;
    return binary_op("mul", true, a, c, y);
}

/* ------------------------------------------------------------------------------------------------ */
/* softmax over the last dim                                                                         */

#if defined(__x86_64__)
/* out = e^(in − max) / Σ; returns false for a row with no finite maximum (all −inf) */
static QD_TARGET_AVX512 bool softmax_row_avx512(const float *in, float *out, int64_t n) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(in + i));
    __mmask16 tm = (__mmask16)((1u << (n - i)) - 1);
    if (i < n) mx = _mm512_mask_max_ps(mx, tm, mx, _mm512_maskz_loadu_ps(tm, in + i));
    float m = _mm512_reduce_max_ps(mx);
    if (m == -INFINITY) return false;
    __m512 vm = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(in + i), vm));
        sum = _mm512_add_ps(sum, e);
        _mm512_storeu_ps(out + i, e);
    }
    if (i < n) {
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tm, in + i), vm));
        sum = _mm512_mask_add_ps(sum, tm, sum, e);
        _mm512_mask_storeu_ps(out + i, tm, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_loadu_ps(out + i), inv));
    if (i < n) _mm512_mask_storeu_ps(out + i, tm, _mm512_mul_ps(_mm512_maskz_loadu_ps(tm, out + i), inv));
    return true;
}
#endif

static bool softmax_row_generic(const float *in, float *out, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = in[i] > m ? in[i] : m;
    if (m == -INFINITY) return false;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += out[i] = expf(in[i] - m);
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++) out[i] *= inv;
    return true;
}

/* A row that is all −inf (fully masked) gives zeros rather than PyTorch's NaN, as attention does. */
qd_status qd_cpu_softmax(qd_backend *b, const qd_tensor *x, qd_tensor *y) {
    (void)b;
    qd_status s;
    if ((s = qd_cpu_check_float("softmax", "x", x)) || (s = qd_cpu_check_float("softmax", "y", y)) ||
        (s = qd_cpu_check_same_shape("softmax", "x", x, "y", y)) || (s = qd_cpu_check_inplace("softmax", x, y))) {
        return s;
    }
    if (x->rank < 1) return qd_fail(QD_EINVAL, "cpu softmax: x must have at least one dim");
    int64_t D = x->shape[x->rank - 1], n = qd_tensor_elements(x);
    if (n == 0) return QD_OK;
    int64_t rows = n / D;
    bool avx = qd_cpu_has_avx512();
    int failed = 0;
#pragma omp parallel num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    {
        float *bi = malloc(sizeof(float) * (size_t)D), *bo = malloc(sizeof(float) * (size_t)D);
        if (!bi || !bo) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!bi || !bo) continue;
            const float *in = qd_cpu_in_f32(x, r * D, D, bi);
            float *out = qd_cpu_out_f32(y, r * D, bo);
            bool ok;
#if defined(__x86_64__)
            ok = avx ? softmax_row_avx512(in, out, D) : softmax_row_generic(in, out, D);
#else
            (void)avx;
            ok = softmax_row_generic(in, out, D);
#endif
            if (!ok) memset(out, 0, sizeof(float) * (size_t)D);
            qd_cpu_out_commit(y, r * D, D, out);
        }
        free(bi);
        free(bo);
    }
    if (failed) return qd_fail(QD_ENOMEM, "cpu softmax: cannot allocate row buffers of %lld floats", (long long)D);
    return QD_OK;
}
