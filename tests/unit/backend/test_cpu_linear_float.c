/* Tests for the CPU float-path linears (src/backend/cpu/linear_dense.c, linear_fp8.c, linear_awq.c and the
 * engine in gemm_bf16.c), through the backend dispatcher qd_cpu_linear:
 *   (a) against an exact emulation written here — the activations quantized by a naive re-implementation
 *       of the spec's rule (formats.md §1.3, §4.3) with the codec, the weights decoded element by element,
 *       products summed in double — to f32 summation error (plus one bf16 rounding for a BF16 output);
 *   (b) against the f32 reference (qd_linear_dequantize + a GEMM on the unquantized activations) within
 *       the NMSE bound each kernel file states.
 * Fresh random weights and activations with outliers, odd sizes, F32 / BF16 activations and outputs, sizes
 * on both the small-M and the large-M driver; rows with exact rounding ties and saturating values.
 * The whole suite runs twice: natively, then re-executed with QDIT_CPU_ISA=generic for the plain C path. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu/cpu.h"
#include "core/codec.h"
#include "quant/schemes.h"
#include "test_util.h"

static uint64_t rng;

static float urand(float lo, float hi) { return qt_rand_uniform(&rng, lo, hi); }
static int irand(int lo, int hi) { return lo + (int)(qt_rand_u64(&rng) % (uint64_t)(hi - lo + 1)); }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) fail_msg("out of memory");
    return p;
}

/* weights with a heavy-ish tail, as trained weights have */
static float *random_weight(int64_t n, int64_t k, float scale) {
    float *w = xmalloc(sizeof *w * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++) {
        float u = urand(-1, 1);
        if (qt_rand_u64(&rng) % 97 == 0) u *= 12;
        w[i] = u * scale;
    }
    return w;
}

/* activations: a per-column spread (some channels far larger, as in DiT activations), sparse outliers,
 * no zeros */
static float *random_x(int64_t m, int64_t k) {
    float *col = xmalloc(sizeof *col * (size_t)k), *x = xmalloc(sizeof *x * (size_t)(m * k));
    for (int64_t j = 0; j < k; j++) col[j] = qt_rand_u64(&rng) % 23 == 0 ? urand(4, 16) : urand(0.3f, 1.5f);
    for (int64_t i = 0; i < m * k; i++) {
        float u = urand(0.02f, 1.0f) * (qt_rand_u64(&rng) & 1 ? 1.0f : -1.0f);
        if (qt_rand_u64(&rng) % 211 == 0) u *= 30;
        x[i] = u * col[i % k];
    }
    free(col);
    return x;
}

/* ---------------------------------------------------------------- activation tensors */

typedef struct {
    qd_tensor t;
    float *f; /* the values as f32 (what the kernel sees) */
} act;

static act make_act(const float *x, int64_t m, int64_t k, qd_dtype dt) {
    act a = {.f = xmalloc(sizeof(float) * (size_t)(m * k))};
    a.t.dtype = dt;
    a.t.rank = 2;
    a.t.shape[0] = m;
    a.t.shape[1] = k;
    if (dt == QD_DTYPE_F32) {
        a.t.data = xmalloc(sizeof(float) * (size_t)(m * k));
        memcpy(a.t.data, x, sizeof(float) * (size_t)(m * k));
        memcpy(a.f, x, sizeof(float) * (size_t)(m * k));
    } else {
        uint16_t *h = xmalloc(2 * (size_t)(m * k));
        for (int64_t i = 0; i < m * k; i++) {
            h[i] = qd_f32_to_bf16(x[i]);
            a.f[i] = qd_bf16_to_f32(h[i]);
        }
        a.t.data = h;
    }
    return a;
}

static void act_free(act *a) {
    free(a->t.data);
    free(a->f);
}

/* ---------------------------------------------------------------- layers */

static qd_view owned(qd_dtype dt, int rank, int64_t s0, int64_t s1, void *data) {
    qd_view v = {.dtype = dt, .rank = rank, .shape = {s0, s1}, .data = data, .owned = data};
    return v;
}

static void add_bias(qd_linear *l, int64_t n, int kind) {
    if (kind == 0) return;
    if (kind == 1) {
        float *b = xmalloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++) b[i] = urand(-2, 2);
        l->bias = owned(QD_DTYPE_F32, 1, n, 0, b);
    } else {
        uint16_t *b = xmalloc(2 * (size_t)n);
        for (int64_t i = 0; i < n; i++) b[i] = qd_f32_to_bf16(urand(-2, 2));
        l->bias = owned(QD_DTYPE_BF16, 1, n, 0, b);
    }
}

static void dense_layer(qd_linear *l, int64_t n, int64_t k, qd_dtype wt) {
    memset(l, 0, sizeof *l);
    float *w = random_weight(n, k, 0.05f);
    void *data;
    if (wt == QD_DTYPE_F32) {
        data = w;
        w = NULL;
    } else {
        uint16_t *h = xmalloc(2 * (size_t)(n * k));
        for (int64_t i = 0; i < n * k; i++) h[i] = wt == QD_DTYPE_BF16 ? qd_f32_to_bf16(w[i]) : qd_f32_to_f16(w[i]);
        data = h;
    }
    free(w);
    l->scheme = QD_SCHEME_DENSE;
    snprintf(l->scheme_name, sizeof l->scheme_name, "%s", qd_dtype_name(wt));
    l->out_features = n;
    l->in_features = k;
    l->alpha = 1.0f;
    l->weight = owned(wt, 2, n, k, data);
}

typedef enum { FP8_CHANNEL, FP8_TENSOR, FP8_STATIC, FP8_STATIC_CHANNEL, FP8_DYN_TENSOR, FP8_BLOCK, MXFP8, MXFP8_SMOOTH } fp8_kind;
static const char *const fp8_names[] = {"fp8_channel/token", "fp8_tensor/token", "fp8_tensor/static", "fp8_channel/static",
                                        "fp8_channel/dyn-tensor", "fp8_block", "mxfp8", "mxfp8+mul_scale"};

/* bn×bk block-scaled weights (DeepSeek's 128×128 and odd blocks), built by hand as the serialized
 * checkpoints store them (§1.3) */
static int block_n = 128, block_k = 128;
static void fp8_block_layer(qd_linear *l, const float *w, int64_t n, int64_t k) {
    const int bn_ = block_n, bk_ = block_k;
    const int64_t gn = (n + bn_ - 1) / bn_, gk = (k + bk_ - 1) / bk_;
    uint8_t *q = xmalloc((size_t)(n * k));
    float *s = xmalloc(sizeof(float) * (size_t)(gn * gk));
    for (int64_t bn = 0; bn < gn; bn++)
        for (int64_t bk = 0; bk < gk; bk++) {
            float amax = 0;
            for (int64_t r = bn * bn_; r < n && r < (bn + 1) * bn_; r++)
                for (int64_t c = bk * bk_; c < k && c < (bk + 1) * bk_; c++) amax = fmaxf(amax, fabsf(w[r * k + c]));
            const float sc = fmaxf(amax / 448.0f, 1e-12f);
            s[bn * gk + bk] = sc;
            for (int64_t r = bn * bn_; r < n && r < (bn + 1) * bn_; r++)
                for (int64_t c = bk * bk_; c < k && c < (bk + 1) * bk_; c++) q[r * k + c] = qd_f32_to_e4m3(w[r * k + c] / sc);
        }
    l->scheme = QD_SCHEME_FP8;
    snprintf(l->scheme_name, sizeof l->scheme_name, "fp8_block");
    l->out_features = n;
    l->in_features = k;
    l->block_n = bn_;
    l->block_k = bk_;
    l->act = QD_ACT_DYNAMIC_GROUP;
    l->act_group = bk_;
    l->weight = owned(QD_DTYPE_F8_E4M3, 2, n, k, q);
    l->scale = owned(QD_DTYPE_F32, 2, gn, gk, s);
}

/* static_scale: the input_scale of FP8_STATIC_CHANNEL (a power of two, so planted ties stay exact) */
static void fp8_layer(qd_linear *l, fp8_kind kind, int64_t n, int64_t k, const float *x, int64_t m, float static_scale) {
    memset(l, 0, sizeof *l);
    float *w = random_weight(n, k, 0.05f);
    switch (kind) {
    case FP8_BLOCK: fp8_block_layer(l, w, n, k); break;
    case MXFP8:
    case MXFP8_SMOOTH: assert_int_equal(qd_quantize_mx(w, n, k, false, l), QD_OK); break;
    default: assert_int_equal(qd_quantize_fp8(w, n, k, kind == FP8_TENSOR || kind == FP8_STATIC, l), QD_OK); break;
    }
    free(w);
    l->alpha = 1.0f;
    if (kind == FP8_STATIC || kind == FP8_STATIC_CHANNEL) {
        /* a calibrated scale: the tensor's amax/448, or (channel case) a power of two so the tie rows are exact */
        float amax = 0;
        for (int64_t i = 0; i < m * k; i++) amax = fmaxf(amax, fabsf(x[i]));
        float *is = xmalloc(sizeof(float));
        *is = kind == FP8_STATIC ? amax / 448.0f : static_scale;
        l->input_scale = owned(QD_DTYPE_F32, 1, 1, 0, is);
        l->act = QD_ACT_STATIC_TENSOR;
    }
    if (kind == FP8_DYN_TENSOR) l->act = QD_ACT_DYNAMIC_TENSOR;
    if (kind == MXFP8_SMOOTH) {
        float *s = xmalloc(sizeof(float) * (size_t)k);
        for (int64_t j = 0; j < k; j++) s[j] = urand(0.25f, 4.0f);
        l->smooth = owned(QD_DTYPE_F32, 1, k, 0, s);
    }
}

static void awq_layer(qd_linear *l, int64_t n, int64_t k, qd_dtype st) {
    memset(l, 0, sizeof *l);
    const int64_t g = k / 64;
    uint8_t *q = xmalloc((size_t)(n * k / 2));
    for (int64_t i = 0; i < n * k / 2; i++) q[i] = (uint8_t)(qt_rand_u64(&rng) & 0xFF);
    uint16_t *s = xmalloc(2 * (size_t)(n * g)), *z = xmalloc(2 * (size_t)(n * g));
    for (int64_t i = 0; i < n * g; i++) {
        const float sc = urand(0.002f, 0.02f), zr = (qt_rand_u64(&rng) & 1) ? -7.0f * sc : urand(-0.2f, 0.0f);
        s[i] = st == QD_DTYPE_BF16 ? qd_f32_to_bf16(sc) : qd_f32_to_f16(sc);
        const float sd = st == QD_DTYPE_BF16 ? qd_bf16_to_f32(s[i]) : qd_f16_to_f32(s[i]);
        const float zv = zr == -7.0f * sc ? -7.0f * sd : zr;
        z[i] = st == QD_DTYPE_BF16 ? qd_f32_to_bf16(zv) : qd_f32_to_f16(zv);
    }
    l->scheme = QD_SCHEME_AWQ_W4A16;
    snprintf(l->scheme_name, sizeof l->scheme_name, "awq_w4a16");
    l->out_features = n;
    l->in_features = k;
    l->block_k = 64;
    l->alpha = 1.0f;
    l->weight = owned(QD_DTYPE_U8, 2, n, k / 2, q);
    l->scale = owned(st, 2, n, g, s);
    l->zeros = owned(st, 2, n, g, z);
}

/* ---------------------------------------------------------------- exact emulation */

static float e4m3(float v) { return qd_e4m3_to_f32(qd_f32_to_e4m3(v)); }

/* floor(log2 amax) − 8, clamped, −127 for 0 (OCP floor rule, formats.md §4.3) */
static int mx_exp(float amax) {
    if (!(amax > 0)) return -127;
    int e;
    frexpf(amax, &e);
    e = e - 1 - 8;
    return e < -127 ? -127 : e > 127 ? 127 : e;
}

/* The activations as the kernel must quantize them, dequantized, and the per-row / per-group factors that the
 * emulated sum is multiplied by (xs[m·G + g], one group when the layer has no K-groups). */
static void emulate_act(const qd_linear *l, const float *x, int64_t m, int64_t k, double *xq, double *xs, int64_t groups) {
    const float *smooth = l->smooth.data;
    float tensor_amax = 0; /* QD_ACT_DYNAMIC_TENSOR: one scale for the whole input */
    for (int64_t i = 0; i < m * k; i++) tensor_amax = fmaxf(tensor_amax, fabsf(smooth ? x[i] * smooth[i % k] : x[i]));
    for (int64_t r = 0; r < m; r++) {
        const float *row = x + r * k;
        float *v = xmalloc(sizeof(float) * (size_t)k);
        for (int64_t j = 0; j < k; j++) v[j] = smooth ? row[j] * smooth[j] : row[j];
        if (l->scheme == QD_SCHEME_MXFP8) {
            for (int64_t g0 = 0; g0 < k; g0 += 32) {
                float amax = 0;
                for (int64_t j = g0; j < g0 + 32; j++) amax = fmaxf(amax, fabsf(v[j]));
                const int e = mx_exp(amax);
                for (int64_t j = g0; j < g0 + 32; j++) xq[r * k + j] = ldexp(e4m3(ldexpf(v[j], -e)), e);
            }
            xs[r] = 1;
        } else if (l->block_n) {
            const int64_t bk = l->block_k;
            for (int64_t g = 0; g < groups; g++) {
                float amax = 0;
                for (int64_t j = g * bk; j < k && j < (g + 1) * bk; j++) amax = fmaxf(amax, fabsf(v[j]));
                const float s = fmaxf(amax, 1e-10f) / 448.0f;
                xs[r * groups + g] = s;
                for (int64_t j = g * bk; j < k && j < (g + 1) * bk; j++) xq[r * k + j] = e4m3(v[j] / s);
            }
        } else {
            float s;
            if (l->act == QD_ACT_STATIC_TENSOR) {
                s = ((const float *)l->input_scale.data)[0];
            } else if (l->act == QD_ACT_DYNAMIC_TENSOR) {
                s = fmaxf(tensor_amax / 448.0f, 1.0f / (448.0f * 512.0f));
            } else {
                float amax = 0;
                for (int64_t j = 0; j < k; j++) amax = fmaxf(amax, fabsf(v[j]));
                s = fmaxf(amax / 448.0f, 1.0f / (448.0f * 512.0f));
            }
            for (int64_t j = 0; j < k; j++) xq[r * k + j] = e4m3(v[j] / s);
            xs[r] = s;
        }
        free(v);
    }
}

/* The weights exactly as the kernel multiplies them (before block / channel scales for FP8). */
static double *emulate_weight(const qd_linear *l, qd_dtype x_dtype) {
    const int64_t n = l->out_features, k = l->in_features;
    double *w = xmalloc(sizeof(double) * (size_t)(n * k));
    const uint8_t *q = l->weight.data;
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j++) {
            const int64_t i = r * k + j;
            double v = 0;
            switch (l->scheme) {
            case QD_SCHEME_DENSE: {
                const float f = qd_view_get_flat(&l->weight, i);
                /* F16 weights meet BF16 activations as bf16 (RNE) */
                v = (l->weight.dtype == QD_DTYPE_F16 && x_dtype == QD_DTYPE_BF16) ? qd_bf16_to_f32(qd_f32_to_bf16(f)) : f;
                break;
            }
            case QD_SCHEME_FP8: v = qd_e4m3_to_f32(q[i]); break;
            case QD_SCHEME_MXFP8: v = ldexp(qd_e4m3_to_f32(q[i]), ((const uint8_t *)l->scale.data)[r * (k / 32) + j / 32] - 127); break;
            case QD_SCHEME_AWQ_W4A16: {
                const int code = (q[i / 2] >> (4 * (i & 1))) & 15;
                const float f = fmaf((float)code, qd_view_get(&l->scale, r, j / 64), qd_view_get(&l->zeros, r, j / 64));
                v = x_dtype == QD_DTYPE_BF16 ? qd_bf16_to_f32(qd_f32_to_bf16(f)) : f;
                break;
            }
            default: fail_msg("scheme");
            }
            w[i] = v;
        }
    return w;
}

/* y_emu [m, n] in double */
static double *emulate(const qd_linear *l, const act *x) {
    const int64_t m = x->t.shape[0], k = l->in_features, n = l->out_features;
    const bool quant = l->scheme == QD_SCHEME_FP8 || l->scheme == QD_SCHEME_MXFP8;
    const int64_t groups = l->block_n ? (k + l->block_k - 1) / l->block_k : 1;
    double *xq = xmalloc(sizeof(double) * (size_t)(m * k)), *xs = xmalloc(sizeof(double) * (size_t)(m * groups));
    if (quant) emulate_act(l, x->f, m, k, xq, xs, groups);
    else
        for (int64_t i = 0; i < m * k; i++) xq[i] = x->f[i], xs[i / k] = 1;
    double *w = emulate_weight(l, x->t.dtype), *y = xmalloc(sizeof(double) * (size_t)(m * n));
    float *bias = xmalloc(sizeof(float) * (size_t)n);
    qd_linear_bias_f32(l, bias);
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++) {
            double acc = 0;
            if (l->scheme == QD_SCHEME_FP8 && l->block_n) {
                for (int64_t g = 0; g < groups; g++) {
                    double part = 0;
                    for (int64_t j = g * l->block_k; j < k && j < (g + 1) * l->block_k; j++) part += xq[r * k + j] * w[c * k + j];
                    acc += part * xs[r * groups + g] * qd_view_get(&l->scale, c / l->block_n, g);
                }
            } else {
                for (int64_t j = 0; j < k; j++) acc += xq[r * k + j] * w[c * k + j];
                if (l->scheme == QD_SCHEME_FP8) {
                    const double ws = qd_view_elements(&l->scale) == 1 ? qd_view_get_flat(&l->scale, 0) : qd_view_get_flat(&l->scale, c);
                    acc *= xs[r] * ws;
                }
            }
            y[r * n + c] = acc + bias[c];
        }
    free(xq), free(xs), free(w), free(bias);
    return y;
}

/* the f32 reference: dequantized weights (for MX with mul_scale, W[n,k]·mul_scale[k]), unquantized
 * activations */
static double *reference(const qd_linear *l, const act *x) {
    const int64_t m = x->t.shape[0], k = l->in_features, n = l->out_features;
    float *w = xmalloc(sizeof(float) * (size_t)(n * k)), *bias = xmalloc(sizeof(float) * (size_t)n);
    assert_int_equal(qd_linear_dequantize(l, w), QD_OK);
    qd_linear_bias_f32(l, bias);
    double *y = xmalloc(sizeof(double) * (size_t)(m * n));
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++) {
            double acc = 0;
            for (int64_t j = 0; j < k; j++) acc += (double)x->f[r * k + j] * w[c * k + j];
            y[r * n + c] = acc + bias[c];
        }
    free(w), free(bias);
    return y;
}

/* ---------------------------------------------------------------- the check */

typedef struct {
    double emu_rel; /* max |y − emu| / max |emu| beyond the output rounding */
    double nmse;    /* vs the f32 reference */
} result;

static result run_and_check(qd_linear *l, const act *x, qd_dtype y_dtype, double tol_nmse, const char *what) {
    const int64_t m = x->t.shape[0], n = l->out_features;
    qd_tensor y = {.dtype = y_dtype, .rank = 2, .shape = {m, n}};
    y.data = xmalloc((size_t)(m * n) * (y_dtype == QD_DTYPE_F32 ? 4 : 2));
    const qd_status s = qd_cpu_linear(NULL, l, &x->t, &y);
    if (s != QD_OK) fail_msg("%s: %s", what, qd_last_error());
    double *emu = emulate(l, x), *ref = reference(l, x);
    double emax = 0;
    for (int64_t i = 0; i < m * n; i++) emax = fmax(emax, fabs(emu[i]));
    result res = {0, 0};
    double num = 0, den = 0;
    for (int64_t i = 0; i < m * n; i++) {
        const double v = qd_cpu_load(&y, i);
        if (!isfinite(v)) fail_msg("%s: y[%lld] = %g", what, (long long)i, v);
        /* a BF16 output may differ by its own rounding (half an ulp: 2^−9 relative) */
        const double slack = y_dtype == QD_DTYPE_BF16 ? fabs(emu[i]) * 0x1p-8 : 0;
        const double e = fmax(0, fabs(v - emu[i]) - slack) / (emax > 0 ? emax : 1);
        if (e > res.emu_rel) res.emu_rel = e;
        num += (v - ref[i]) * (v - ref[i]);
        den += ref[i] * ref[i];
    }
    res.nmse = den > 0 ? num / den : num;
    if (res.emu_rel > 1e-5) fail_msg("%s: differs from the exact emulation by %.3g of max|y|", what, res.emu_rel);
    if (res.nmse > tol_nmse) fail_msg("%s: NMSE %.3g vs the f32 reference, bound %.3g", what, res.nmse, tol_nmse);
    free(emu), free(ref), free(y.data);
    return res;
}

/* (M, K, N): small-M path, large-M path (M > 64), several K chunks (K > 256), odd sizes */
typedef struct {
    int64_t m, k, n;
} shape;

static shape pick_shape(int i, int kmul) {
    static const shape base[] = {{1, 96, 40}, {5, 300, 77}, {23, 520, 33}, {70, 300, 130}, {97, 1100, 66}, {131, 257, 530}};
    shape s = base[i % 6];
    s.k = (s.k + kmul - 1) / kmul * kmul;
    return s;
}

static void test_dense(void **state) {
    (void)state;
    const qd_dtype wts[] = {QD_DTYPE_BF16, QD_DTYPE_F16, QD_DTYPE_F32};
    for (int i = 0; i < 6; i++) {
        const shape sh = pick_shape(i, 1);
        const qd_dtype wt = wts[i % 3];
        for (int xd = 0; xd < 2; xd++)
            for (int yd = 0; yd < 2; yd++) {
                const qd_dtype xt = xd ? QD_DTYPE_BF16 : QD_DTYPE_F32, yt = yd ? QD_DTYPE_BF16 : QD_DTYPE_F32;
                qd_linear l;
                dense_layer(&l, sh.n, sh.k, wt);
                add_bias(&l, sh.n, (i + xd + yd) % 3);
                float *xf = random_x(sh.m, sh.k);
                act x = make_act(xf, sh.m, sh.k, xt);
                /* bounds of linear_dense.c: one bf16 rounding of y, or F16 weights rounded to bf16 */
                const double tol = (wt == QD_DTYPE_F16 && xt == QD_DTYPE_BF16) ? 3e-5 : yt == QD_DTYPE_BF16 ? 1e-5 : 1e-9;
                char what[128];
                snprintf(what, sizeof what, "dense %s W, %s x, %s y, M=%lld K=%lld N=%lld", qd_dtype_name(wt), qd_dtype_name(xt),
                         qd_dtype_name(yt), (long long)sh.m, (long long)sh.k, (long long)sh.n);
                run_and_check(&l, &x, yt, tol, what);
                /* a second call reuses the cached primitive / prepared weight */
                run_and_check(&l, &x, yt, tol, what);
                act_free(&x);
                free(xf);
                qd_linear_free(&l);
            }
    }
}

/* Replace a few activations per row by exact rounding ties and saturating values of the E4M3 grid under
 * the given power-of-two scale (static) or as whole MX blocks with amax 464 (→ 448). */
static void plant_ties(float *x, int64_t m, int64_t k, fp8_kind kind, float static_scale) {
    static const float ties[] = {1.0625f, 1.1875f, -1.3125f, 17.0f, 0x1.8p-9f, -0x1.8p-8f, 460.0f, 464.0f, -500.0f, 3.5f};
    for (int64_t r = 0; r < m; r++) {
        if (kind == FP8_STATIC_CHANNEL) {
            for (int t = 0; t < 10; t++) x[r * k + irand(0, (int)k - 1)] = ties[t] * static_scale;
        } else if ((kind == MXFP8) && k >= 32) {
            const int64_t b = irand(0, (int)(k / 32) - 1) * 32;
            for (int j = 0; j < 32; j++) x[r * k + b + j] = ties[j % 10] * (j % 10 == 7 ? 1.0f : 0.5f);
            x[r * k + b + 7] = 464.0f; /* the block's amax: exponent 0, saturates to 448 */
            x[r * k + b + 17] = -464.0f;
        }
    }
}

static void test_fp8(void **state) {
    (void)state;
    for (int kind = FP8_CHANNEL; kind <= MXFP8_SMOOTH; kind++) {
        for (int i = 0; i < 6; i++) {
            const bool mx = kind == MXFP8 || kind == MXFP8_SMOOTH;
            const shape sh = pick_shape(i + kind, mx ? 32 : 1);
            const qd_dtype xt = (i + kind) % 2 ? QD_DTYPE_BF16 : QD_DTYPE_F32, yt = (i / 2 + kind) % 2 ? QD_DTYPE_BF16 : QD_DTYPE_F32;
            float *xf = random_x(sh.m, sh.k);
            float amax = 0;
            for (int64_t j = 0; j < sh.m * sh.k; j++) amax = fmaxf(amax, fabsf(xf[j]));
            const float pow2 = exp2f(ceilf(log2f(amax / 448.0f)));
            if (xt == QD_DTYPE_F32) plant_ties(xf, sh.m, sh.k, (fp8_kind)kind, pow2);
            qd_linear l;
            fp8_layer(&l, (fp8_kind)kind, sh.n, sh.k, xf, sh.m, pow2);
            add_bias(&l, sh.n, i % 3);
            act x = make_act(xf, sh.m, sh.k, xt);
            char what[128];
            snprintf(what, sizeof what, "%s, %s x, %s y, M=%lld K=%lld N=%lld", fp8_names[kind], qd_dtype_name(xt),
                     qd_dtype_name(yt), (long long)sh.m, (long long)sh.k, (long long)sh.n);
            /* rows with planted saturating values (460, 464, 500 on the grid) lose up to 12% on their largest
               elements by design; the stated bound is for activations that do not saturate */
            const bool planted = xt == QD_DTYPE_F32 && (kind == FP8_STATIC_CHANNEL || kind == MXFP8);
            /* a static per-tensor scale is set by the largest row, so rows with a smaller amax use fewer of
               E4M3's levels (some fall on its subnormal grid): over 60 seeds NMSE reached 1.6e-3 and one seed
               (QDIT_TEST_SEED=1883226662525395, M = 5) 2.35e-3. Dynamic scales at M = 1, K = 96 leave the NMSE
               a ratio of sums over 40 outputs, heavy-tailed: over 150 seeds it reached 1.56e-3, and one CI seed
               (QDIT_TEST_SEED=1883264223571923, fp8_channel/token) 2.33e-3 — hence 4e-3 for every per-tensor or
               per-token kind. The kernel itself is held to the exact emulation (1e-5 of max|y|) above. */
            const double tol = planted ? 5e-2 : mx ? 2e-2 : 4e-3;
            const result r = run_and_check(&l, &x, yt, tol, what);
            if (getenv("QDIT_TEST_VERBOSE")) fprintf(stderr, "  %-60s NMSE %.3g emu %.3g\n", what, r.nmse, r.emu_rel);
            /* the quantization must be visible against the f32 reference, or the test compares nothing */
            if (r.nmse < 1e-7) fail_msg("%s: NMSE %.3g, suspiciously exact", what, r.nmse);
            act_free(&x);
            free(xf);
            qd_linear_free(&l);
        }
    }
}

static void test_awq(void **state) {
    (void)state;
    for (int i = 0; i < 6; i++) {
        const shape sh = pick_shape(i, 64);
        for (int xd = 0; xd < 2; xd++) {
            const qd_dtype xt = xd ? QD_DTYPE_BF16 : QD_DTYPE_F32, yt = (i + xd) % 2 ? QD_DTYPE_BF16 : QD_DTYPE_F32;
            qd_linear l;
            awq_layer(&l, sh.n, sh.k, i % 2 ? QD_DTYPE_F16 : QD_DTYPE_BF16);
            add_bias(&l, sh.n, (i + 1) % 3);
            float *xf = random_x(sh.m, sh.k);
            act x = make_act(xf, sh.m, sh.k, xt);
            char what[128];
            snprintf(what, sizeof what, "awq, %s x, %s y, M=%lld K=%lld N=%lld", qd_dtype_name(xt), qd_dtype_name(yt),
                     (long long)sh.m, (long long)sh.k, (long long)sh.n);
            /* bounds of linear_awq.c: weights rounded to bf16 under BF16 activations; one rounding of a BF16 y */
            run_and_check(&l, &x, yt, xt == QD_DTYPE_BF16 ? 3e-5 : yt == QD_DTYPE_BF16 ? 1e-5 : 1e-9, what);
            act_free(&x);
            free(xf);
            qd_linear_free(&l);
        }
    }
}

/* blocks other than 128×128: the per-column group-scale path (block_n not a multiple of the 32-column tile)
 * and K-groups that do not tile the 256-deep chunks */
static void test_fp8_odd_blocks(void **state) {
    (void)state;
    const int blocks[3][2] = {{48, 64}, {128, 96}, {16, 16}};
    for (int b = 0; b < 3; b++) {
        block_n = blocks[b][0];
        block_k = blocks[b][1];
        for (int i = 0; i < 4; i++) {
            const shape sh = pick_shape(i + 2 * b, 1);
            const qd_dtype xt = (i + b) % 2 ? QD_DTYPE_BF16 : QD_DTYPE_F32, yt = i / 2 ? QD_DTYPE_BF16 : QD_DTYPE_F32;
            float *xf = random_x(sh.m, sh.k);
            qd_linear l;
            fp8_layer(&l, FP8_BLOCK, sh.n, sh.k, xf, sh.m, 0);
            add_bias(&l, sh.n, i % 3);
            act x = make_act(xf, sh.m, sh.k, xt);
            char what[128];
            snprintf(what, sizeof what, "fp8_block %dx%d, %s x, %s y, M=%lld K=%lld N=%lld", block_n, block_k, qd_dtype_name(xt),
                     qd_dtype_name(yt), (long long)sh.m, (long long)sh.k, (long long)sh.n);
            run_and_check(&l, &x, yt, 2e-3, what);
            act_free(&x);
            free(xf);
            qd_linear_free(&l);
        }
    }
    block_n = block_k = 128;
}

/* every E4M3 code (incl. subnormals and NaN-free extremes) through the weight conversion, MX scales near the
 * edges of the exponent-add fast path */
static void test_all_codes(void **state) {
    (void)state;
    const int64_t n = 3, k = 256, m = 4;
    for (int mx = 0; mx < 2; mx++) {
        qd_linear l;
        memset(&l, 0, sizeof l);
        uint8_t *q = xmalloc((size_t)(n * k));
        for (int64_t i = 0; i < n * k; i++) q[i] = (uint8_t)(i % 256 == 0x7F || i % 256 == 0xFF ? 0x7E : i % 256);
        l.out_features = n;
        l.in_features = k;
        l.alpha = 1.0f;
        l.weight = owned(QD_DTYPE_F8_E4M3, 2, n, k, q);
        if (mx) {
            uint8_t *e = xmalloc((size_t)(n * k / 32));
            const uint8_t pick[] = {127, 120, 10, 9, 200, 60, 140, 100}; /* 9: the scalar path */
            for (int64_t i = 0; i < n * k / 32; i++) e[i] = pick[i % 8];
            l.scheme = QD_SCHEME_MXFP8;
            l.block_k = 32;
            l.act = QD_ACT_DYNAMIC_GROUP;
            l.act_group = 32;
            l.scale = owned(QD_DTYPE_U8, 2, n, k / 32, e);
        } else {
            float *s = xmalloc(sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++) s[i] = urand(0.001f, 0.01f);
            l.scheme = QD_SCHEME_FP8;
            l.act = QD_ACT_DYNAMIC_TOKEN;
            l.scale = owned(QD_DTYPE_F32, 1, n, 0, s);
        }
        float *xf = random_x(m, k);
        act x = make_act(xf, m, k, QD_DTYPE_F32);
        /* a few huge-scale blocks dominate these outputs, so only the exact emulation is meaningful here */
        run_and_check(&l, &x, QD_DTYPE_F32, 1.0, mx ? "mxfp8 all codes" : "fp8 all codes");
        act_free(&x);
        free(xf);
        qd_linear_free(&l);
    }
}

/* A layer's output activation (qd_linear.out_act) is, bit for bit, the activation op run on the layer's
 * stored output — what the models did before the layers applied it themselves — on every scheme family
 * here, F32 and BF16 outputs; an unknown value is an error naming the layer. */
static void test_out_act(void **state) {
    (void)state;
    const qd_out_act acts[] = {QD_OUT_ACT_GELU_TANH, QD_OUT_ACT_SILU};
    const qd_act_kind kinds[] = {QD_ACT_GELU_TANH, QD_ACT_SILU};
    for (int i = 0; i < 8; i++) {
        const shape sh = pick_shape(i, 64);
        const qd_dtype xt = i & 1 ? QD_DTYPE_BF16 : QD_DTYPE_F32, yt = i & 2 ? QD_DTYPE_BF16 : QD_DTYPE_F32;
        float *xf = random_x(sh.m, sh.k);
        act x = make_act(xf, sh.m, sh.k, xt);
        qd_linear l;
        if (i % 3 == 0) dense_layer(&l, sh.n, sh.k, QD_DTYPE_BF16);
        else if (i % 3 == 1) fp8_layer(&l, FP8_CHANNEL, sh.n, sh.k, NULL, 0, 0);
        else awq_layer(&l, sh.n, sh.k, QD_DTYPE_BF16);
        add_bias(&l, sh.n, i % 3);
        const size_t es = yt == QD_DTYPE_F32 ? 4 : 2;
        void *want = xmalloc(es * (size_t)(sh.m * sh.n)), *got = xmalloc(es * (size_t)(sh.m * sh.n));
        qd_tensor yw = {.dtype = yt, .rank = 2, .shape = {sh.m, sh.n}, .data = want}, yg = yw;
        yg.data = got;
        l.out_act = acts[i % 2];
        assert_int_equal(qd_cpu_linear(NULL, &l, &x.t, &yg), QD_OK);
        l.out_act = QD_OUT_ACT_NONE;
        assert_int_equal(qd_cpu_linear(NULL, &l, &x.t, &yw), QD_OK);
        assert_int_equal(qd_cpu_activation(NULL, kinds[i % 2], &yw, &yw), QD_OK);
        if (memcmp(want, got, es * (size_t)(sh.m * sh.n)))
            fail_msg("%s with out_act %d: not the activation op on its output (M=%lld K=%lld N=%lld)", l.scheme_name, (int)acts[i % 2],
                     (long long)sh.m, (long long)sh.k, (long long)sh.n);
        /* and the activation really ran: GELU/SiLU change every value but exact zeros */
        bool changed = false;
        for (int64_t j = 0; j < sh.m * sh.n && !changed; j++)
            changed = yt == QD_DTYPE_F32 ? ((float *)got)[j] != 0 : ((uint16_t *)got)[j] != 0;
        assert_true(changed);
        l.out_act = (qd_out_act)9;
        assert_int_equal(qd_cpu_linear(NULL, &l, &x.t, &yg), QD_EINVAL);
        if (!strstr(qd_last_error(), "unknown output activation 9")) fail_msg("error: %s", qd_last_error());
        free(want), free(got), free(xf);
        act_free(&x);
        qd_linear_free(&l);
    }
}

/* a 3-D activation through the dispatcher, and the errors for layers the kernels cannot run */
static void test_shapes_and_errors(void **state) {
    (void)state;
    qd_linear l;
    fp8_layer(&l, FP8_CHANNEL, 48, 64, NULL, 0, 0);
    float *xf = random_x(6, 64);
    qd_tensor x = {.dtype = QD_DTYPE_F32, .rank = 3, .shape = {2, 3, 64}, .data = xf};
    float *yv = xmalloc(sizeof(float) * 6 * 48);
    qd_tensor y = {.dtype = QD_DTYPE_F32, .rank = 3, .shape = {2, 3, 48}, .data = yv};
    assert_int_equal(qd_cpu_linear(NULL, &l, &x, &y), QD_OK);
    act x2 = make_act(xf, 6, 64, QD_DTYPE_F32);
    double *emu = emulate(&l, &x2);
    for (int i = 0; i < 6 * 48; i++) assert_true(fabs(yv[i] - emu[i]) <= 1e-5 * (1 + fabs(emu[i])));
    free(emu);
    act_free(&x2);
    /* static activations without an input_scale */
    l.act = QD_ACT_STATIC_TENSOR;
    assert_int_equal(qd_cpu_linear(NULL, &l, &x, &y), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "input_scale"));
    qd_linear_free(&l);
    /* block FP8 with per-token activations */
    fp8_layer(&l, FP8_BLOCK, 48, 64, NULL, 0, 0);
    l.act = QD_ACT_DYNAMIC_TOKEN;
    assert_int_equal(qd_cpu_linear(NULL, &l, &x, &y), QD_EUNSUPPORTED);
    qd_linear_free(&l);
    free(xf);
    free(yv);
}

int main(int argc, char **argv) {
    (void)argc;
    rng = qt_seed();
    const char *isa = getenv("QDIT_CPU_ISA");
    fprintf(stderr, "[ isa      ] %s (QDIT_CPU_ISA=%s)\n", qd_cpu_isa_get()->level, isa ? isa : "");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense), cmocka_unit_test(test_fp8), cmocka_unit_test(test_fp8_odd_blocks), cmocka_unit_test(test_awq),
        cmocka_unit_test(test_all_codes), cmocka_unit_test(test_shapes_and_errors), cmocka_unit_test(test_out_act),
    };
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed || isa) return failed;
    /* again on the plain C path: the ISA is chosen once per process, so re-execute this binary */
    setenv("QDIT_CPU_ISA", "generic", 1);
    execv("/proc/self/exe", argv);
    perror("execv");
    return 1;
}
