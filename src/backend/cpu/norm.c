/* Normalisation ops: RMSNorm and LayerNorm over the last dim, GroupNorm over [N, C, spatial…]
 * (models.md §1.3 for the DiT norms and their cast points, §9 for the VAE's GroupNorm), and
 * norm_modulate, the DiT blocks' norm followed by AdaLN's ·(1 + scale) + shift in one pass: each normalised
 * row is rounded to y's dtype and modulated with modulate's own row kernel, so its output is bit for bit
 * that of the norm op into y followed by modulate on y.
 *
 * Statistics are always f32 over an f32 view of the row (two passes over an L1-resident row: mean,
 * then the sum of squared deviations — no E[x²]−μ² cancellation). Cast points for BF16/F16:
 *  - rms_norm: x̂ = x·rsqrt(mean(x²)+eps) in f32. When the weight is BF16/F16, x̂ is rounded to the
 *    weight's dtype before the multiply, and the product rounded to y's dtype — diffusers RMSNorm's
 *    order ("to(weight.dtype) then ·weight"), and torch.nn.RMSNorm's too whenever x and the weight
 *    share a dtype (it casts to x's dtype, then multiplies): the two orders models.md §1.3 names agree
 *    in every model here. With an F32 weight (or none), x̂·w is rounded once.
 *  - layer_norm: ((x−μ)·rstd)·w + b entirely in f32, one rounding at the end: PyTorch's LayerNorm
 *    kernels and diffusers' FP32LayerNorm (Wan) both do this.
 *  - group_norm: (x − μ)·a + β per channel with a = rstd·γ, in f32, one rounding. (PyTorch's CPU
 *    kernel folds μ into the shift, y = a·x + (β − μ·a), which cancels badly when a group's spread
 *    is tiny next to its mean; subtracting first costs nothing in a memory-bound op.)
 * GroupNorm groups can hold millions of elements (a VAE at 1024²): each chunk's mean and squared
 * deviations are computed in f32 in L1, and chunks are merged in double (Chan et al.'s parallel
 * variance), so one pass over memory gives exact-as-two-pass statistics, in parallel over chunks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops_internal.h"
#include "core/codec.h"
#include "core/threads.h"

#define CH 4096
#define AI static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------------------------ */
/* row kernels                                                                                       */

static float sum_generic(const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return (float)s;
}

/* Σ (x − m)² */
static float sqdev_generic(const float *x, int64_t n, float m) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float d = x[i] - m;
        s += (double)(d * d);
    }
    return (float)s;
}

/* out = ((x − m)·a)·w + b + c (w, b optional): subtracting the mean first keeps the full relative
 * precision of x − m even when the mean dwarfs the spread */
static void affine_generic(const float *x, int64_t n, float m, float a, const float *w, const float *b, float c, float *out) {
    for (int64_t i = 0; i < n; i++) {
        float v = (x[i] - m) * a + c;
        if (w) v *= w[i];
        if (b) v += b[i];
        out[i] = v;
    }
}

#if defined(__x86_64__)
static QD_TARGET_AVX512 float sum_avx512(const float *x, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(x + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(x + i + 48));
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m, x + i));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static QD_TARGET_AVX512 float sqdev_avx512(const float *x, int64_t n, float mean) {
    __m512 vm = _mm512_set1_ps(mean);
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), vm), d1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), vm);
        __m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 32), vm), d3 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 48), vm);
        s0 = _mm512_fmadd_ps(d0, d0, s0);
        s1 = _mm512_fmadd_ps(d1, d1, s1);
        s2 = _mm512_fmadd_ps(d2, d2, s2);
        s3 = _mm512_fmadd_ps(d3, d3, s3);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), vm);
        s0 = _mm512_fmadd_ps(d, d, s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static QD_TARGET_AVX512 void affine_avx512(const float *x, int64_t n, float mean, float a, const float *w, const float *b,
                                           float c, float *out) {
    __m512 vm = _mm512_set1_ps(mean), va = _mm512_set1_ps(a), vc = _mm512_set1_ps(c);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm), va, vc);
        if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
        if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(out + i, m, v);
    }
}

/* out = bf16(x·a)·w: the RMSNorm cast point with a BF16 weight */
static QD_TARGET_AVX512 void scale_round_mul_avx512(const float *x, int64_t n, float a, const float *w, float *out) {
    __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = qd_cpu_bf16_round_avx512(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), va));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i)));
    }
}
#endif

static float row_sum(bool avx, const float *x, int64_t n) {
#if defined(__x86_64__)
    if (avx) return sum_avx512(x, n);
#endif
    (void)avx;
    return sum_generic(x, n);
}

static float row_sqdev(bool avx, const float *x, int64_t n, float m) {
#if defined(__x86_64__)
    if (avx) return sqdev_avx512(x, n, m);
#endif
    (void)avx;
    return sqdev_generic(x, n, m);
}

static void row_affine(bool avx, const float *x, int64_t n, float m, float a, const float *w, const float *b, float c,
                       float *out) {
#if defined(__x86_64__)
    if (avx) {
        affine_avx512(x, n, m, a, w, b, c, out);
        return;
    }
#endif
    (void)avx;
    affine_generic(x, n, m, a, w, b, c, out);
}

/* f32 value rounded to dtype t (BF16/F16) and back */
static float round_to(qd_dtype t, float v) {
    return t == QD_DTYPE_BF16 ? qd_bf16_to_f32(qd_f32_to_bf16(v)) : qd_f16_to_f32(qd_f32_to_f16(v));
}

/* ------------------------------------------------------------------------------------------------ */
/* argument checks                                                                                   */

/* An optional per-channel vector of `n` elements, read to f32 (*out NULL when t is NULL). */
static qd_status load_vec(const char *op, const char *what, const qd_tensor *t, int64_t n, float **out) {
    *out = NULL;
    if (!t) return QD_OK;
    qd_status s = qd_cpu_check_float(op, what, t);
    if (s) return s;
    if (t->rank != 1 || t->shape[0] != n) {
        char st[128];
        return qd_fail(QD_EINVAL, "cpu %s: %s must be [%lld], got %s", op, what, (long long)n, qd_cpu_shape_str(t, st, sizeof st));
    }
    *out = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!*out) return qd_fail(QD_ENOMEM, "cpu %s: cannot allocate %s", op, what);
    qd_cpu_to_f32(t, 0, n, *out);
    return QD_OK;
}

static qd_status check_eps(const char *op, float eps) {
    if (!(eps >= 0.0f) || !isfinite(eps)) return qd_fail(QD_EINVAL, "cpu %s: eps must be finite and ≥ 0, got %g", op, (double)eps);
    return QD_OK;
}

static qd_status check_xy(const char *op, const qd_tensor *x, const qd_tensor *y) {
    qd_status s;
    if ((s = qd_cpu_check_float(op, "x", x)) || (s = qd_cpu_check_float(op, "y", y)) ||
        (s = qd_cpu_check_same_shape(op, "x", x, "y", y)) || (s = qd_cpu_check_inplace(op, x, y))) {
        return s;
    }
    if (x->rank < 1) return qd_fail(QD_EINVAL, "cpu %s: x must have at least one dim", op);
    return QD_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* rms_norm, layer_norm and norm_modulate: one row per iteration                                     */

/* One row of rms_norm: x·rr, rounded to a BF16/F16 weight's dtype before ·w (see the top). */
void qd_cpu_rms_row(bool avx, const float *in, int64_t D, float eps, const float *w, qd_dtype wt, float *out) {
    float rr = 1.0f / sqrtf(row_sqdev(avx, in, D, 0.0f) / (float)D + eps);
    if (!w || wt == QD_DTYPE_F32) {
        row_affine(avx, in, D, 0.0f, rr, w, NULL, 0.0f, out);
#if defined(__x86_64__)
    } else if (avx && wt == QD_DTYPE_BF16) {
        scale_round_mul_avx512(in, D, rr, w, out);
#endif
    } else {
        for (int64_t i = 0; i < D; i++) out[i] = round_to(wt, in[i] * rr) * w[i];
    }
}

typedef enum { ROW_RMS, ROW_LAYER } row_norm_kind;

/* The norm of every row of x into y, then (sc non-NULL: norm_modulate) the normalised row rounded to y's
 * dtype — what storing it would do — and modulated by its batch's sc/sh rows, as modulate would. */
static qd_status row_norm(const char *op, row_norm_kind kind, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias,
                          float eps, const float *sc, const float *sh, qd_tensor *y) {
    qd_status s;
    if ((s = check_xy(op, x, y)) || (s = check_eps(op, eps))) return s;
    int64_t D = x->shape[x->rank - 1], n = qd_tensor_elements(x);
    float *wf = NULL, *bf = NULL;
    if ((s = load_vec(op, "weight", w, D, &wf))) return s;
    if ((s = load_vec(op, "bias", bias, D, &bf))) {
        free(wf);
        return s;
    }
    if (n == 0 || D == 0) goto done;
    bool avx = qd_cpu_has_avx512();
    int64_t rows_per_batch = sc ? n / D / x->shape[0] : 1;
    /* short rows (q/k heads of 128) are taken G at a time, so conversions and calls are per ~2K
       elements rather than per row */
    int64_t rows = n / D, G = D >= 2048 ? 1 : 2048 / D, units = (rows + G - 1) / G;
    int failed = 0;
#pragma omp parallel num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    {
        float *bi = malloc(sizeof(float) * (size_t)(G * D)), *bo = malloc(sizeof(float) * (size_t)(G * D));
        if (!bi || !bo) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t u = 0; u < units; u++) {
            if (!bi || !bo) continue;
            int64_t r0 = u * G, nr = rows - r0 < G ? rows - r0 : G;
            const float *in0 = qd_cpu_in_f32(x, r0 * D, nr * D, bi);
            float *out0 = qd_cpu_out_f32(y, r0 * D, bo);
            for (int64_t k = 0; k < nr; k++) {
                const float *in = in0 + k * D;
                float *out = out0 + k * D;
                if (kind == ROW_LAYER) {
                    float mean = row_sum(avx, in, D) / (float)D;
                    float rstd = 1.0f / sqrtf(row_sqdev(avx, in, D, mean) / (float)D + eps);
                    row_affine(avx, in, D, mean, rstd, wf, bf, 0.0f, out);
                } else {
                    qd_cpu_rms_row(avx, in, D, eps, wf, w ? w->dtype : QD_DTYPE_F32, out);
                }
                if (sc) {
                    int64_t batch = (r0 + k) / rows_per_batch;
                    qd_cpu_round_rows(y->dtype, out, D);
                    qd_cpu_modulate_rows(out, sc + batch * D, sh ? sh + batch * D : NULL, out, D);
                }
            }
            qd_cpu_out_commit(y, r0 * D, nr * D, out0);
        }
        free(bi);
        free(bo);
    }
    if (failed) {
        free(wf);
        free(bf);
        return qd_fail(QD_ENOMEM, "cpu %s: cannot allocate row buffers of %lld floats", op, (long long)D);
    }
done:
    free(wf);
    free(bf);
    return QD_OK;
}

qd_status qd_cpu_rms_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, qd_tensor *y) {
    (void)b;
    return row_norm("rms_norm", ROW_RMS, x, w, NULL, eps, NULL, NULL, y);
}

qd_status qd_cpu_layer_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, float eps,
                            qd_tensor *y) {
    (void)b;
    return row_norm("layer_norm", ROW_LAYER, x, w, bias, eps, NULL, NULL, y);
}

qd_status qd_cpu_norm_modulate(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps,
                               const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y) {
    (void)b;
    const char *op = "norm_modulate";
    qd_status s;
    if (kind != QD_NORM_LAYER && kind != QD_NORM_RMS) return qd_fail(QD_EINVAL, "cpu norm_modulate: unknown norm kind %d", (int)kind);
    if (kind == QD_NORM_LAYER && w) return qd_fail(QD_EINVAL, "cpu norm_modulate: LayerNorm here has no affine weight (w must be NULL)");
    if ((s = check_xy(op, x, y))) return s;
    if (x->rank < 2) {
        char sx[128];
        return qd_fail(QD_EINVAL, "cpu norm_modulate: x must be [B, L, D], got %s", qd_cpu_shape_str(x, sx, sizeof sx));
    }
    int64_t B = x->shape[0], D = x->shape[x->rank - 1];
    float *sc = NULL, *sh = NULL;
    if ((s = qd_cpu_load_batch_vec(op, "scale", scale, B, D, &sc))) return s;
    if (shift && (s = qd_cpu_load_batch_vec(op, "shift", shift, B, D, &sh))) {
        free(sc);
        return s;
    }
    s = row_norm(op, kind == QD_NORM_LAYER ? ROW_LAYER : ROW_RMS, x, w, NULL, eps, sc, sh, y);
    free(sc);
    free(sh);
    return s;
}

/* ------------------------------------------------------------------------------------------------ */
/* group_norm                                                                                        */

typedef struct {
    double n, mean, m2;
} moments;

/* Chan et al.: merge the count, mean and sum of squared deviations of two disjoint sets */
static moments merge(moments a, moments b) {
    if (a.n == 0) return b;
    double n = a.n + b.n, d = b.mean - a.mean;
    moments r = {n, a.mean + d * b.n / n, a.m2 + b.m2 + d * d * a.n * b.n / n};
    return r;
}

qd_status qd_cpu_group_norm(qd_backend *be, const qd_tensor *x, int groups, const qd_tensor *w, const qd_tensor *bias,
                            float eps, qd_tensor *y) {
    (void)be;
    const char *op = "group_norm";
    qd_status s;
    if ((s = check_xy(op, x, y)) || (s = check_eps(op, eps))) return s;
    char sx[128];
    if (x->rank < 2) {
        return qd_fail(QD_EINVAL, "cpu group_norm: x must be [N, C, spatial...], got %s", qd_cpu_shape_str(x, sx, sizeof sx));
    }
    int64_t N = x->shape[0], C = x->shape[1];
    if (groups < 1 || C % groups != 0) {
        return qd_fail(QD_EINVAL, "cpu group_norm: %d groups must divide the %lld channels of x %s", groups, (long long)C,
                       qd_cpu_shape_str(x, sx, sizeof sx));
    }
    float *wf = NULL, *bf = NULL;
    if ((s = load_vec(op, "weight", w, C, &wf))) return s;
    if ((s = load_vec(op, "bias", bias, C, &bf))) {
        free(wf);
        return s;
    }
    int64_t n = qd_tensor_elements(x);
    if (n == 0) {
        free(wf);
        free(bf);
        return QD_OK;
    }
    int64_t S = n / (N * C), G = groups, gsize = (C / G) * S;
    int64_t cpg = (gsize + CH - 1) / CH, nunits = N * G * cpg;
    moments *part = malloc(sizeof(moments) * (size_t)nunits);
    float *ab = malloc(sizeof(float) * 3 * (size_t)(N * C)); /* per (n, c): mean, a = rstd·γ, β */
    if (!part || !ab) {
        free(part), free(ab), free(wf), free(bf);
        return qd_fail(QD_ENOMEM, "cpu group_norm: cannot allocate statistics for x %s", qd_cpu_shape_str(x, sx, sizeof sx));
    }
    bool avx = qd_cpu_has_avx512();
    /* pass 1: per-chunk moments, every chunk one L1-sized piece of one group (groups are contiguous) */
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    for (int64_t u = 0; u < nunits; u++) {
        float buf[CH];
        int64_t g = u / cpg, c0 = (u % cpg) * CH, m = gsize - c0 < CH ? gsize - c0 : CH;
        const float *in = qd_cpu_in_f32(x, g * gsize + c0, m, buf);
        float mean = row_sum(avx, in, m) / (float)m;
        part[u] = (moments){(double)m, mean, row_sqdev(avx, in, m, mean)};
    }
    /* per (n, c): the group's mean, a = rstd·γ and β (applied as (x − μ)·a + β) */
    for (int64_t g = 0; g < N * G; g++) {
        moments t = {0, 0, 0};
        for (int64_t k = 0; k < cpg; k++) t = merge(t, part[g * cpg + k]);
        double rstd = 1.0 / sqrt(t.m2 / t.n + (double)eps);
        for (int64_t c = 0; c < C / G; c++) {
            int64_t ch = (g % G) * (C / G) + c, nc = (g / G) * C + ch;
            ab[3 * nc] = (float)t.mean;
            ab[3 * nc + 1] = (float)rstd * (wf ? wf[ch] : 1.0f);
            ab[3 * nc + 2] = bf ? bf[ch] : 0.0f;
        }
    }
    /* pass 2: y = (x − μ)·a + β per (n, c) plane */
    int64_t cps = (S + CH - 1) / CH, units2 = N * C * cps;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    for (int64_t u = 0; u < units2; u++) {
        float bi[CH], bo[CH];
        int64_t nc = u / cps, c0 = (u % cps) * CH, m = S - c0 < CH ? S - c0 : CH, off = nc * S + c0;
        const float *in = qd_cpu_in_f32(x, off, m, bi);
        float *out = qd_cpu_out_f32(y, off, bo);
        row_affine(avx, in, m, ab[3 * nc], ab[3 * nc + 1], NULL, NULL, ab[3 * nc + 2], out);
        qd_cpu_out_commit(y, off, m, out);
    }
    free(part), free(ab), free(wf), free(bf);
    return QD_OK;
}
