/* qd_cpu_rope — rotary position embedding applied to x [B, L, H, D] with per-position angles given
 * as cos/sin [L, D/2] (F32; the caller computes them in the precision each model needs, models.md
 * §1.2 and §11.4).
 *  - QD_ROPE_INTERLEAVED: pairs (x[2i], x[2i+1]) — every DiT here (FLUX, FLUX.2, Qwen-Image, Z-Image,
 *    Wan, HunyuanVideo): out[2i] = x[2i]·c_i − x[2i+1]·s_i, out[2i+1] = x[2i+1]·c_i + x[2i]·s_i.
 *  - QD_ROPE_HALF: rotate_half pairs (x[i], x[i+D/2]) — Llama/Qwen text encoders:
 *    out[i] = x[i]·c_i − x[i+D/2]·s_i, out[i+D/2] = x[i+D/2]·c_i + x[i]·s_i.
 * Math in f32, one rounding to y's dtype (the spec: "apply in fp32, then cast back"). In place allowed.
 * rms_norm_rope is the DiTs' per-head RMSNorm of q and k followed by this rotation, one pass: each head goes
 * through rms_norm's row kernel (norm.c), is rounded to y's dtype, then rotated by the same row kernels, so
 * its output is bit for bit that of rms_norm into y followed by rope on y.
 *
 * Fast path (AVX-512): per position the cos row is expanded once to the lane pattern the rotation
 * needs ([c0,c0,c1,c1,…] and [−s0,s0,−s1,s1,…] for interleaved pairs), then every head of that
 * position is one multiply, one in-lane pair swap and one FMA per 16 values. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops_internal.h"
#include "core/threads.h"

/* one head row, generic: reads both members of a pair before writing either (in place is safe) */
static void rope_row_generic(qd_rope_mode mode, const float *x, const float *c, const float *s, int64_t D, float *out) {
    int64_t h = D / 2;
    for (int64_t i = 0; i < h; i++) {
        int64_t a = mode == QD_ROPE_INTERLEAVED ? 2 * i : i, b = mode == QD_ROPE_INTERLEAVED ? 2 * i + 1 : i + h;
        float xa = x[a], xb = x[b];
        out[a] = xa * c[i] - xb * s[i];
        out[b] = xb * c[i] + xa * s[i];
    }
}

#if defined(__x86_64__)
/* interleaved: cd = [c0,c0,c1,c1,…] (D), ss = [−s0,s0,−s1,s1,…] (D); out = x·cd + swap_pairs(x)·ss */
static QD_TARGET_AVX512 void rope_interleaved_avx512(const float *x, const float *cd, const float *ss, int64_t D, float *out) {
    for (int64_t i = 0; i < D; i += 16) {
        __mmask16 m = D - i >= 16 ? 0xffff : (__mmask16)((1u << (D - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 sw = _mm512_permute_ps(v, 0xB1); /* (x1, x0, x3, x2, …) within each 128-bit lane */
        __m512 r = _mm512_fmadd_ps(sw, _mm512_maskz_loadu_ps(m, ss + i), _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, cd + i)));
        _mm512_mask_storeu_ps(out + i, m, r);
    }
}

static QD_TARGET_AVX512 void rope_half_avx512(const float *x, const float *c, const float *s, int64_t D, float *out) {
    int64_t h = D / 2;
    for (int64_t i = 0; i < h; i += 16) {
        __mmask16 m = h - i >= 16 ? 0xffff : (__mmask16)((1u << (h - i)) - 1);
        __m512 a = _mm512_maskz_loadu_ps(m, x + i), b = _mm512_maskz_loadu_ps(m, x + h + i);
        __m512 cv = _mm512_maskz_loadu_ps(m, c + i), sv = _mm512_maskz_loadu_ps(m, s + i);
        __m512 ra = _mm512_fnmadd_ps(b, sv, _mm512_mul_ps(a, cv));
        __m512 rb = _mm512_fmadd_ps(a, sv, _mm512_mul_ps(b, cv));
        _mm512_mask_storeu_ps(out + i, m, ra);
        _mm512_mask_storeu_ps(out + h + i, m, rb);
    }
}
#endif

void qd_cpu_rope_heads(bool avx, qd_rope_mode mode, const float *in, const float *c, const float *sn, int64_t H, int64_t D,
                       float *ex, float *out) {
#if defined(__x86_64__)
    if (avx && mode == QD_ROPE_INTERLEAVED) {
        for (int64_t i = 0; i < D / 2; i++) {
            ex[2 * i] = ex[2 * i + 1] = c[i];
            ex[D + 2 * i] = -sn[i];
            ex[D + 2 * i + 1] = sn[i];
        }
        for (int64_t h = 0; h < H; h++) rope_interleaved_avx512(in + h * D, ex, ex + D, D, out + h * D);
        return;
    }
    if (avx) {
        for (int64_t h = 0; h < H; h++) rope_half_avx512(in + h * D, c, sn, D, out + h * D);
        return;
    }
#endif
    (void)avx, (void)ex;
    for (int64_t h = 0; h < H; h++) rope_row_generic(mode, in + h * D, c, sn, D, out + h * D);
}

/* The checks rope and rms_norm_rope share: x and y [B, L, H, D] with D even, cos/sin F32 [L, D/2]. */
static qd_status check_rope(const char *op, const qd_tensor *x, const qd_tensor *cos, const qd_tensor *sin, qd_rope_mode mode,
                            const qd_tensor *y) {
    qd_status s;
    if ((s = qd_cpu_check_float(op, "x", x)) || (s = qd_cpu_check_float(op, "y", y)) || (s = qd_cpu_check_same_shape(op, "x", x, "y", y)) ||
        (s = qd_cpu_check_inplace(op, x, y))) {
        return s;
    }
    char sx[128], sc[128];
    if (mode != QD_ROPE_INTERLEAVED && mode != QD_ROPE_HALF) return qd_fail(QD_EINVAL, "cpu %s: unknown mode %d", op, (int)mode);
    if (x->rank != 4 || x->shape[3] % 2 != 0) {
        return qd_fail(QD_EINVAL, "cpu %s: x must be [B, L, H, D] with D even, got %s", op, qd_cpu_shape_str(x, sx, sizeof sx));
    }
    int64_t L = x->shape[1], D = x->shape[3];
    const qd_tensor *cs[2] = {cos, sin};
    for (int k = 0; k < 2; k++) {
        const char *what = k ? "sin" : "cos";
        const qd_tensor *t = cs[k];
        if (!t) return qd_fail(QD_EINVAL, "cpu %s: %s is required", op, what);
        if (t->dtype != QD_DTYPE_F32) return qd_fail(QD_EUNSUPPORTED, "cpu %s: %s must be F32, got %s", op, what, qd_dtype_name(t->dtype));
        if (t->rank != 2 || t->shape[0] != L || t->shape[1] != D / 2 || (!t->data && L * D > 0)) {
            return qd_fail(QD_EINVAL, "cpu %s: %s must be [L, D/2] = [%lld, %lld] for x %s, got %s", op, what, (long long)L,
                           (long long)(D / 2), qd_cpu_shape_str(x, sx, sizeof sx), qd_cpu_shape_str(t, sc, sizeof sc));
        }
    }
    return QD_OK;
}

/* Both ops, one position (H heads) at a time; rms_norm_rope (norm) first normalises each head into a
 * scratch row rounded to y's dtype, exactly what rms_norm into y then rope from y compute. */
static qd_status rope_rows(const char *op, const qd_tensor *x, int64_t xrow, int64_t xcol, const float *wf, qd_dtype wt, float eps, bool norm,
                           const qd_tensor *cos, const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y) {
    int64_t B = y->shape[0], L = y->shape[1], H = y->shape[2], D = y->shape[3];
    int64_t rows = B * L, n = rows * H * D;
    if (n == 0) return QD_OK;
    const float *cf = cos->data, *sf = sin->data;
    bool avx = qd_cpu_has_avx512();
    int failed = 0;
#pragma omp parallel num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    {
        /* row buffers: x and y for one position (H·D), the normalised heads (H·D), the expanded cos/sin (2·D) */
        float *bi = malloc(sizeof(float) * (size_t)(H * D)), *bo = malloc(sizeof(float) * (size_t)(H * D));
        float *bn = norm ? malloc(sizeof(float) * (size_t)(H * D)) : NULL, *ex = malloc(sizeof(float) * (size_t)(2 * D));
        bool ok = bi && bo && ex && (bn || !norm);
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!ok) continue;
            int64_t l = r % L;
            const float *in = qd_cpu_in_f32(x, r * xrow + xcol, H * D, bi);
            float *out = qd_cpu_out_f32(y, r * H * D, bo);
            if (norm) {
                for (int64_t h = 0; h < H; h++) qd_cpu_rms_row(avx, in + h * D, D, eps, wf, wt, bn + h * D);
                qd_cpu_round_rows(y->dtype, bn, H * D);
                in = bn;
            }
            qd_cpu_rope_heads(avx, mode, in, cf + l * (D / 2), sf + l * (D / 2), H, D, ex, out);
            qd_cpu_out_commit(y, r * H * D, H * D, out);
        }
        free(bi), free(bo), free(bn), free(ex);
    }
    if (failed) return qd_fail(QD_ENOMEM, "cpu %s: cannot allocate row buffers", op);
    return QD_OK;
}

qd_status qd_cpu_rope(qd_backend *be, const qd_tensor *x, const qd_tensor *cos, const qd_tensor *sin, qd_rope_mode mode,
                      qd_tensor *y) {
    (void)be;
    qd_status s = check_rope("rope", x, cos, sin, mode, y);
    return s ? s : rope_rows("rope", x, x->shape[2] * x->shape[3], 0, NULL, QD_DTYPE_F32, 0.0f, false, cos, sin, mode, y);
}

/* rms_norm_rope of y's heads read from columns [col, col + H·D) of x's rows (x [B, L, W] or x = y's shape) */
static qd_status norm_rope(const char *op, const qd_tensor *x, int64_t xrow, int64_t col, const qd_tensor *w, float eps, const qd_tensor *cos,
                           const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y) {
    qd_status s;
    if (!(eps >= 0.0f) || !isfinite(eps)) return qd_fail(QD_EINVAL, "cpu %s: eps must be finite and ≥ 0, got %g", op, (double)eps);
    int64_t D = y->shape[3];
    float *wf = NULL;
    if (w) {
        char sw[128];
        if ((s = qd_cpu_check_float(op, "weight", w))) return s;
        if (w->rank != 1 || w->shape[0] != D) {
            return qd_fail(QD_EINVAL, "cpu %s: weight must be [D] = [%lld], got %s", op, (long long)D, qd_cpu_shape_str(w, sw, sizeof sw));
        }
        wf = malloc(sizeof(float) * (size_t)(D > 0 ? D : 1));
        if (!wf) return qd_fail(QD_ENOMEM, "cpu %s: cannot allocate the weight", op);
        qd_cpu_to_f32(w, 0, D, wf);
    }
    s = rope_rows(op, x, xrow, col, wf, w ? w->dtype : QD_DTYPE_F32, eps, true, cos, sin, mode, y);
    free(wf);
    return s;
}

qd_status qd_cpu_rms_norm_rope(qd_backend *be, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *cos,
                               const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y) {
    (void)be;
    qd_status s = check_rope("rms_norm_rope", x, cos, sin, mode, y);
    return s ? s : norm_rope("rms_norm_rope", x, x->shape[2] * x->shape[3], 0, w, eps, cos, sin, mode, y);
}

qd_status qd_cpu_rms_norm_rope_cols(qd_backend *be, const qd_tensor *x, int64_t col, const qd_tensor *w, float eps, const qd_tensor *cos,
                                    const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y) {
    (void)be;
    const char *op = "rms_norm_rope_cols";
    qd_status s = check_rope(op, y, cos, sin, mode, y);
    if (!s) s = qd_cpu_check_float(op, "x", x);
    if (s) return s;
    char sx[128], sy[128];
    const int64_t hd = y->shape[2] * y->shape[3];
    if (x->rank != 3 || x->shape[0] != y->shape[0] || x->shape[1] != y->shape[1] || col < 0 || col + hd > x->shape[2] || x->data == y->data)
        return qd_fail(QD_EINVAL, "cpu %s: x must be [B, L, W] holding y %s's H·D = %lld values at column %lld of each row (and not be y), got %s", op,
                       qd_cpu_shape_str(y, sy, sizeof sy), (long long)hd, (long long)col, qd_cpu_shape_str(x, sx, sizeof sx));
    return norm_rope(op, x, x->shape[2], col, w, eps, cos, sin, mode, y);
}
