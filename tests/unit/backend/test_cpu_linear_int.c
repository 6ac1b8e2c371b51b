/* Tests for the CPU integer-path linears: linear_int.c (int8 W8A8 static / dynamic, int4 W4A4 per
 * channel and per group), linear_fp4.c (NVFP4, MXFP4, dual-scale MXFP4, smoothing slots),
 * linear_svdq.c (SVDQuant int4 signed / unsigned, nvfp4) and their shared activation quantizers
 * (act_quant_int.c).
 *
 * Every case builds a fresh random layer (the library's online quantizers for int8 / NVFP4 / MXFP4; by
 * hand, in the canonical layout of linear.h, for static W8A8, W4A4 and SVDQuant), fresh random
 * activations (Gaussian with sparse outliers; F32 or BF16), odd M / N / K where the format allows, and
 * sizes that cross the kernel's K chunks and row blocks. It then checks the kernel's output
 *  (a) against an EXACT emulation written here from the spec, independent of act_quant_int.c: the same
 *      activation quantization done naively with the codec's scalar encoders, and a double-precision
 *      GEMM of the dequantized codes. Integer sums are exact on both sides, so the only difference is
 *      the kernel's f32 rounding of scale products and block accumulation: the bound is 1e-5 of the
 *      element's magnitude Σ|terms| (plus half a bf16 ulp for BF16 outputs);
 *  (b) against the f32 reference (qd_linear_dequantize + a GEMM with UNquantized activations) within
 *      the NMSE bound each kernel file states.
 * Both the AVX-512 VNNI path (when the machine has it) and the generic C path (forced through the
 * internal hook) run every case. Seeds are printed; replay with QDIT_TEST_SEED. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/act_quant_int.h"
#include "backend/cpu/cpu.h"
#include "core/codec.h"
#include "quant/linear.h"
#include "quant/schemes.h"

static uint64_t rng;
static bool generic_path;

/* ------------------------------------------------------------------ helpers ------------------- */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static float gauss(void) {
    float u1 = qt_rand_uniform(&rng, 1e-7f, 1.0f), u2 = qt_rand_uniform(&rng, 0.0f, 1.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* N(0,1) with a fraction `often` of the elements multiplied by `outlier` */
static float draw(float outlier, int often) {
    float v = gauss();
    if (often && qt_rand_u64(&rng) % (uint64_t)often == 0) v *= outlier;
    return v;
}

static float *random_weight(int64_t n, int64_t k, float scale) {
    float *w = xmalloc(sizeof *w * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++) w[i] = draw(4.0f, 97) * scale;
    return w;
}

static qd_view f32_view(int rank, int64_t d0, int64_t d1, float *data) {
    return (qd_view){.dtype = QD_DTYPE_F32, .rank = rank, .shape = {d0, d1}, .data = data, .owned = data};
}

static qd_view view_of(qd_dtype t, int rank, int64_t d0, int64_t d1, void *data) {
    return (qd_view){.dtype = t, .rank = rank, .shape = {d0, d1}, .data = data, .owned = data};
}

static float gelu_tanh(float v) { return 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v))); }

/* ------------------------------------------------------------------ exact emulations ---------- */

/* Each fills xq[m][k] (double) with the dequantized activation the kernel is meant to use and
 * returns extra per-element terms through `post` (bias, low-rank, ...). y_emu = Σ_k xq·W + post. */

typedef struct {
    double *xq;   /* [m][k] dequantized activations of the main GEMM */
    double *wq;   /* [n][k] weights of the main GEMM */
    double *post; /* [m][n] added after (bias, low-rank branch) */
    double *colf; /* [n] factor on the main GEMM (NULL: 1) */
    double *postmag;
} emu;

static double *wq_from_dequant(const qd_linear *l) {
    const int64_t n = l->out_features, k = l->in_features;
    float *w = xmalloc(sizeof *w * (size_t)(n * k));
    assert_int_equal(qd_linear_dequantize(l, w), QD_OK);
    double *d = xmalloc(sizeof *d * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++) d[i] = w[i];
    free(w);
    return d;
}

static void bias_post(const qd_linear *l, int64_t m, emu *e) {
    const int64_t n = l->out_features;
    float *b = xmalloc(sizeof *b * (size_t)n);
    qd_linear_bias_f32(l, b);
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++) e->post[r * n + c] = b[c], e->postmag[r * n + c] = fabs(b[c]);
    free(b);
}

static void emu_int(const qd_linear *l, const float *x, int64_t m, emu *e) {
    const int64_t k = l->in_features;
    const bool stat = l->act == QD_ACT_STATIC_TENSOR, i4 = l->scheme == QD_SCHEME_INT4;
    e->wq = wq_from_dequant(l); /* (q − z)·s: exact in f32 for these scales within 1 ulp */
    if (stat) {
        /* y = deq·(Σ q_x·q_w + qb) = Σ_k (q_x − io)·is·W + bias_f32, with W = q·deq/is */
        const float is = qd_view_get(&l->input_scale, 0, 0), io = qd_view_get(&l->input_offset, 0, 0);
        for (int64_t r = 0; r < m; r++)
            for (int64_t j = 0; j < k; j++) {
                float v = nearbyintf(x[r * k + j] / is + io);
                v = v < -128 ? -128 : v > 127 ? 127 : v;
                e->xq[r * k + j] = ((double)v - io) * is;
            }
    } else {
        for (int64_t r = 0; r < m; r++) {
            float amax = 0;
            for (int64_t j = 0; j < k; j++) amax = fmaxf(amax, fabsf(x[r * k + j]));
            const float s = amax / (i4 ? 7.0f : 127.0f);
            for (int64_t j = 0; j < k; j++) {
                float v = s > 0 ? nearbyintf(x[r * k + j] / s) : 0.0f;
                v = v < (i4 ? -8 : -128) ? (i4 ? -8 : -128) : v > (i4 ? 7 : 127) ? (i4 ? 7 : 127) : v;
                e->xq[r * k + j] = (double)v * s;
            }
        }
    }
    bias_post(l, m, e);
}

/* 2^(floor(log2 amax) − 2), clamped, by the OCP rule written independently of the kernel */
static int ocp_exponent(float amax) {
    if (amax <= 0) return -127;
    int e = (int)floor(log2((double)amax)) - 2;
    return e < -127 ? -127 : e > 127 ? 127 : e;
}

static void emu_fp4(const qd_linear *l, const float *x, int64_t m, emu *e) {
    const int64_t k = l->in_features;
    const bool nv = l->scheme == QD_SCHEME_NVFP4;
    /* the stored weight alone: the reference folds the smoothing vector into W, the kernel applies it to x */
    qd_linear stored = *l;
    stored.smooth = (qd_view){0};
    e->wq = wq_from_dequant(&stored);
    float *xs = xmalloc(sizeof *xs * (size_t)(m * k));
    for (int64_t r = 0; r < m; r++)
        for (int64_t j = 0; j < k; j++) xs[r * k + j] = x[r * k + j] * (l->smooth.data ? qd_view_get(&l->smooth, j, 0) : 1.0f);
    float inv_gs = 1.0f;
    if (nv) {
        if (l->input_scale.data) {
            inv_gs = qd_view_get(&l->input_scale, 0, 0);
        } else {
            float amax = 0;
            for (int64_t i = 0; i < m * k; i++) amax = fmaxf(amax, fabsf(xs[i]));
            inv_gs = amax > 0 ? amax / 2688.0f : 1.0f;
        }
    }
    const float gs = 1.0f / inv_gs;
    const int bs = nv ? 16 : 32;
    for (int64_t r = 0; r < m; r++)
        for (int64_t b = 0; b < k / bs; b++) {
            const float *xb = xs + r * k + b * bs;
            float amax = 0;
            for (int i = 0; i < bs; i++) amax = fmaxf(amax, fabsf(xb[i]));
            double step;
            float mul;
            if (nv) {
                const float sf = qd_e4m3_to_f32(qd_f32_to_e4m3(gs * (amax * (1.0f / 6.0f))));
                mul = sf != 0.0f ? 1.0f / (sf * inv_gs) : 0.0f;
                step = (double)sf * inv_gs;
            } else {
                const int ex = ocp_exponent(amax);
                mul = ldexpf(1.0f, -ex);
                step = ldexp(1.0, ex);
            }
            for (int i = 0; i < bs; i++) e->xq[r * k + b * bs + i] = qd_e2m1_to_f32(qd_f32_to_e2m1(xb[i] * mul)) * step;
        }
    free(xs);
    bias_post(l, m, e);
}

/* SVDQuant, formats.md §5.4 steps 1–6 written out; the main GEMM on canonical codes and scales. */
static double svdq_shift(const qd_linear *l) { return l->scheme == QD_SCHEME_SVDQ_INT4 && l->act_unsigned ? 0.171875 : 0.0; }

static float round_t(qd_dtype t, float v) {
    return t == QD_DTYPE_BF16 ? qd_bf16_to_f32(qd_f32_to_bf16(v)) : t == QD_DTYPE_F16 ? qd_f16_to_f32(qd_f32_to_f16(v)) : v;
}

static void emu_svdq(const qd_linear *l, const float *x, int64_t m, emu *e) {
    const int64_t n = l->out_features, k = l->in_features, rank = l->lora_down.shape[0];
    const bool nv = l->scheme == QD_SCHEME_SVDQ_NVFP4, uns = !nv && l->act_unsigned;
    const int g = nv ? 16 : 64;
    const qd_dtype t = l->smooth.dtype;
    const uint8_t *w = l->weight.data;
    for (int64_t c = 0; c < n; c++) {
        for (int64_t j = 0; j < k; j++) {
            const uint8_t code = (uint8_t)((w[(c * k + j) / 2] >> (4 * (j & 1))) & 15);
            const double q = nv ? qd_e2m1_to_f32(code) : (double)(code < 8 ? code : (int)code - 16);
            e->wq[c * k + j] = q * qd_view_get(&l->scale, c, j / g);
        }
        e->colf[c] = (nv ? l->alpha : 1.0) * (l->scale2.data ? qd_view_get(&l->scale2, c, 0) : 1.0);
    }
    for (int64_t r = 0; r < m; r++) {
        const float *xr = x + r * k;
        float *xs = xmalloc(sizeof *xs * (size_t)k);
        for (int64_t j = 0; j < k; j++) {
            const float sm = qd_view_get(&l->smooth, j, 0);
            xs[j] = sm != 0.0f ? round_t(t, (xr[j] + (float)svdq_shift(l)) / sm) : 0.0f;
        }
        for (int64_t b = 0; b < k / g; b++) {
            float amax = 0;
            for (int i = 0; i < g; i++) amax = fmaxf(amax, fabsf(xs[b * g + i]));
            for (int i = 0; i < g; i++) {
                const float v = xs[b * g + i];
                double a;
                if (nv) {
                    const float scale = fminf(amax / 6.0f, 448.0f);
                    const float kept = qd_e4m3_to_f32(qd_f32_to_e4m3(scale));
                    a = scale > 0 ? qd_e2m1_to_f32(qd_f32_to_e2m1(v * (1.0f / scale))) * (double)kept : 0.0;
                } else {
                    const float scale = amax * (uns ? 1.0f / 15.0f : 1.0f / 7.0f);
                    const float kept = round_t(t, scale);
                    float q = scale > 0 ? nearbyintf(v * (1.0f / scale)) : 0.0f;
                    const float lo = uns ? 0.0f : -8.0f, hi = uns ? 15.0f : 7.0f;
                    q = q < lo ? lo : q > hi ? hi : q;
                    a = (double)q * kept;
                }
                e->xq[r * k + b * g + i] = a;
            }
        }
        free(xs);
        /* the low-rank branch on the raw rows, and the bias */
        double *act = xmalloc(sizeof *act * (size_t)rank);
        double *amag = xmalloc(sizeof *amag * (size_t)rank);
        for (int64_t q = 0; q < rank; q++) {
            act[q] = amag[q] = 0;
            for (int64_t j = 0; j < k; j++) {
                const double d = (double)xr[j] * qd_view_get(&l->lora_down, q, j);
                act[q] += d, amag[q] += fabs(d);
            }
        }
        for (int64_t c = 0; c < n; c++) {
            double v = l->bias.data ? qd_view_get(&l->bias, c, 0) : 0.0, mag = fabs(v);
            for (int64_t q = 0; q < rank; q++) {
                const double u = qd_view_get(&l->lora_up, c, q);
                v += act[q] * u, mag += amag[q] * fabs(u);
            }
            e->post[r * n + c] = v, e->postmag[r * n + c] = mag;
        }
        free(act), free(amag);
    }
}

/* ------------------------------------------------------------------ one case ------------------ */

typedef void (*emu_fn)(const qd_linear *l, const float *x, int64_t m, emu *e);

typedef struct {
    float outlier; /* activation outlier factor (0: none) */
    int often;     /* one element in `often` */
    bool gelu;     /* activations through GELU (SVDQuant unsigned) */
    float xscale;
} act_data;

static const act_data ACT_DEFAULT = {6.0f, 200, false, 1.0f};

static void run_case(const char *label, qd_linear *l, int64_t m, qd_dtype xdt, qd_dtype ydt, act_data ad, double nmse_bound,
                     emu_fn emulate) {
    const int64_t n = l->out_features, k = l->in_features;
    /* activations */
    float *xv = xmalloc(sizeof *xv * (size_t)(m * k));
    for (int64_t i = 0; i < m * k; i++) {
        float v = draw(ad.outlier, ad.often) * ad.xscale;
        xv[i] = ad.gelu ? gelu_tanh(v) : v;
    }
    qd_tensor x = {0}, y = {0};
    qd_tensor_shape(&x, xdt, 2, (int64_t[]){m, k});
    qd_tensor_shape(&y, ydt, 2, (int64_t[]){m, n});
    x.data = xmalloc(qd_tensor_bytes(&x));
    y.data = xmalloc(qd_tensor_bytes(&y));
    qd_cpu_from_f32(&x, 0, m * k, xv);
    qd_cpu_to_f32(&x, 0, m * k, xv); /* the values the kernel sees */
    assert_int_equal(qd_cpu_linear(NULL, l, &x, &y), QD_OK);
    float *yv = xmalloc(sizeof *yv * (size_t)(m * n));
    qd_cpu_to_f32(&y, 0, m * n, yv);

    /* a second call runs on the prepared form made by the first: bit-identical */
    float *yv2 = xmalloc(sizeof *yv2 * (size_t)(m * n));
    assert_non_null(l->prepared);
    assert_int_equal(qd_cpu_linear(NULL, l, &x, &y), QD_OK);
    qd_cpu_to_f32(&y, 0, m * n, yv2);
    assert_memory_equal(yv, yv2, sizeof *yv * (size_t)(m * n));

    /* (a) exact emulation */
    emu e = {.xq = xmalloc(sizeof(double) * (size_t)(m * k)),
             .wq = NULL,
             .post = xmalloc(sizeof(double) * (size_t)(m * n)),
             .postmag = xmalloc(sizeof(double) * (size_t)(m * n)),
             .colf = NULL};
    if (emulate == emu_svdq) {
        e.wq = xmalloc(sizeof(double) * (size_t)(n * k));
        e.colf = xmalloc(sizeof(double) * (size_t)n);
    }
    emulate(l, xv, m, &e);
    double worst = 0, worst_rel = 0;
    int64_t bad = -1;
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++) {
            double acc = 0, mag = 0;
            const double *xr = e.xq + r * k, *wr = e.wq + c * k;
            for (int64_t j = 0; j < k; j++) acc += xr[j] * wr[j], mag += fabs(xr[j] * wr[j]);
            const double f = e.colf ? e.colf[c] : 1.0;
            const double ref = acc * f + e.post[r * n + c];
            mag = mag * fabs(f) + e.postmag[r * n + c];
            double tol = 1e-5 * mag + 1e-30;
            if (ydt == QD_DTYPE_BF16) tol += fmax(fabs(ref), fabs(yv[r * n + c])) * 0x1p-8; /* one rounding to bf16 */
            const double err = fabs(yv[r * n + c] - ref);
            if (err / tol > worst) worst = err / tol, bad = r * n + c;
            if (mag > 0 && err / mag > worst_rel && ydt == QD_DTYPE_F32) worst_rel = err / mag;
        }
    if (worst > 1.0) {
        fail_msg("%s: element (%lld, %lld) differs from the exact emulation by %.3g of its tolerance", label,
                 (long long)(bad / n), (long long)(bad % n), worst);
    }

    /* (b) against the f32 reference with unquantized activations */
    float *w = xmalloc(sizeof *w * (size_t)(n * k)), *b = xmalloc(sizeof *b * (size_t)n);
    assert_int_equal(qd_linear_dequantize(l, w), QD_OK);
    qd_linear_bias_f32(l, b);
    /* the reference is the layer's function: smoothing vectors are folded into W, SVDQuant's unsigned
       shift compensation into the bias (qd_linear_dequantize / qd_linear_bias_f32) */
    double num = 0, den = 0;
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++) {
            double acc = b[c];
            for (int64_t j = 0; j < k; j++) acc += (double)xv[r * k + j] * w[c * k + j];
            const double d = yv[r * n + c] - acc;
            num += d * d, den += acc * acc;
        }
    const double nmse = den > 0 ? num / den : num;
    print_message("[ %-7s ] %-44s M=%-4lld K=%-5lld N=%-4lld x %s y %s: exact %.2e of tol (max rel %.1e), NMSE %.2e (bound %.0e)\n",
                  generic_path ? "generic" : "vnni", label, (long long)m, (long long)k, (long long)n, qd_dtype_name(xdt),
                  qd_dtype_name(ydt), worst, worst_rel, nmse, nmse_bound);
    if (!(nmse <= nmse_bound)) fail_msg("%s: NMSE %.3g against the f32 reference exceeds %.1g", label, nmse, nmse_bound);

    free(w), free(b), free(e.xq), free(e.wq), free(e.post), free(e.postmag), free(e.colf);
    free(xv), free(yv), free(yv2), free(x.data), free(y.data);
}

/* ------------------------------------------------------------------ layers -------------------- */

static void add_bias(qd_linear *l, qd_dtype t) {
    const int64_t n = l->out_features;
    if (t == QD_DTYPE_F32) {
        float *b = xmalloc(sizeof *b * (size_t)n);
        for (int64_t i = 0; i < n; i++) b[i] = qt_rand_uniform(&rng, -0.5f, 0.5f);
        l->bias = f32_view(1, n, 0, b);
    } else {
        uint16_t *b = xmalloc(2 * (size_t)n);
        for (int64_t i = 0; i < n; i++) b[i] = qd_f32_to_bf16(qt_rand_uniform(&rng, -0.5f, 0.5f));
        l->bias = view_of(QD_DTYPE_BF16, 1, n, 0, b);
    }
}

static void make_int8_dynamic(qd_linear *l, int64_t n, int64_t k, bool offsets) {
    float *w = random_weight(n, k, 0.05f);
    memset(l, 0, sizeof *l);
    assert_int_equal(qd_quantize_int8(w, n, k, l), QD_OK);
    free(w);
    l->name = strdup("int8");
    add_bias(l, QD_DTYPE_F32);
    if (offsets) {
        /* msModelSlim's weight_offset slot (normally zeros): W = (q − z)·s with integer z */
        float *z = xmalloc(sizeof *z * (size_t)n);
        for (int64_t i = 0; i < n; i++) z[i] = (float)((int)(qt_rand_u64(&rng) % 7) - 3);
        l->zeros = f32_view(2, n, 1, z);
    }
}

static void make_w8a8_static(qd_linear *l, int64_t n, int64_t k) {
    memset(l, 0, sizeof *l);
    int8_t *q = xmalloc((size_t)(n * k));
    float *ws = xmalloc(4 * (size_t)n), *deq = xmalloc(4 * (size_t)n), *is = xmalloc(4), *io = xmalloc(4);
    int32_t *qb = xmalloc(4 * (size_t)n);
    *is = 12.0f / 127.0f; /* calibrated: the activations stay within about ±12 */
    *io = 3.0f;
    for (int64_t r = 0; r < n; r++) {
        ws[r] = qt_rand_uniform(&rng, 0.0002f, 0.0006f);
        deq[r] = *is * ws[r];
        qb[r] = (int32_t)(qt_rand_u64(&rng) % 4001) - 2000;
        for (int64_t c = 0; c < k; c++) q[r * k + c] = (int8_t)((int)(qt_rand_u64(&rng) % 256) - 128);
    }
    l->name = strdup("w8a8_static");
    l->scheme = QD_SCHEME_INT8;
    snprintf(l->scheme_name, sizeof l->scheme_name, "w8a8_static");
    l->out_features = n, l->in_features = k;
    l->act = QD_ACT_STATIC_TENSOR;
    l->alpha = 1.0f;
    l->weight = view_of(QD_DTYPE_I8, 2, n, k, q);
    l->scale = f32_view(1, n, 0, ws);
    l->scale2 = f32_view(1, n, 0, deq);
    l->input_scale = f32_view(1, 1, 0, is);
    l->input_offset = f32_view(1, 1, 0, io);
    l->zeros = view_of(QD_DTYPE_I32, 1, n, 0, qb);
}

static void make_w4a4(qd_linear *l, int64_t n, int64_t k, int64_t groups, bool offsets) {
    memset(l, 0, sizeof *l);
    int8_t *q = xmalloc((size_t)(n * k));
    float *sc = xmalloc(4 * (size_t)(n * groups)), *z = offsets ? xmalloc(4 * (size_t)(n * groups)) : NULL;
    for (int64_t i = 0; i < n * groups; i++) {
        sc[i] = qt_rand_uniform(&rng, 0.005f, 0.01f);
        if (z) z[i] = (float)((int)(qt_rand_u64(&rng) % 5) - 2);
    }
    for (int64_t i = 0; i < n * k; i++) q[i] = (int8_t)((int)(qt_rand_u64(&rng) % 16) - 8);
    l->name = strdup("w4a4");
    l->scheme = QD_SCHEME_INT4;
    snprintf(l->scheme_name, sizeof l->scheme_name, "w4a4_dynamic");
    l->out_features = n, l->in_features = k;
    l->act = QD_ACT_DYNAMIC_TOKEN;
    l->alpha = 1.0f;
    l->block_k = groups > 1 ? (int)(k / groups) : 0;
    l->weight = view_of(QD_DTYPE_I8, 2, n, k, q);
    l->scale = f32_view(2, n, groups, sc);
    if (z) l->zeros = f32_view(2, n, groups, z);
    add_bias(l, QD_DTYPE_F32);
}

static void make_nvfp4(qd_linear *l, int64_t n, int64_t k, bool input_scale, bool smooth, bool per_row_global) {
    float *w = random_weight(n, k, 0.05f);
    memset(l, 0, sizeof *l);
    assert_int_equal(qd_quantize_nvfp4(w, n, k, l), QD_OK);
    free(w);
    l->name = strdup("nvfp4");
    add_bias(l, QD_DTYPE_BF16);
    if (input_scale) {
        float *is = xmalloc(4);
        *is = 40.0f / 2688.0f; /* calibrated at amax 40 (x·s, outliers included); beyond 6·448·is codes saturate */
        l->input_scale = f32_view(1, 1, 0, is);
    }
    if (smooth) {
        uint16_t *s = xmalloc(2 * (size_t)k);
        for (int64_t j = 0; j < k; j++) s[j] = qd_f32_to_bf16(qt_rand_uniform(&rng, 0.5f, 2.0f));
        l->smooth = view_of(QD_DTYPE_BF16, 1, k, 0, s);
    }
    if (per_row_global) {
        /* fused shards: one weight_scale_2 per output row */
        const float g0 = qd_view_get(&l->scale2, 0, 0);
        qd_view_free(&l->scale2);
        float *g = xmalloc(4 * (size_t)n);
        for (int64_t r = 0; r < n; r++) g[r] = g0 * qt_rand_uniform(&rng, 0.5f, 2.0f);
        l->scale2 = f32_view(1, n, 0, g);
    }
}

static void make_mxfp4(qd_linear *l, int64_t n, int64_t k, bool dual, bool smooth) {
    float *w = random_weight(n, k, 0.05f);
    memset(l, 0, sizeof *l);
    assert_int_equal(qd_quantize_mx(w, n, k, true, l), QD_OK);
    free(w);
    l->name = strdup("mxfp4");
    add_bias(l, QD_DTYPE_F32);
    if (dual) {
        float *d = xmalloc(4 * (size_t)(n * (k / 512)));
        for (int64_t i = 0; i < n * (k / 512); i++) d[i] = qt_rand_uniform(&rng, 0.25f, 4.0f);
        l->scale2 = f32_view(2, n, k / 512, d);
        snprintf(l->scheme_name, sizeof l->scheme_name, "mxfp4_dualscale");
    }
    if (smooth) {
        float *s = xmalloc(4 * (size_t)k);
        for (int64_t j = 0; j < k; j++) s[j] = qt_rand_uniform(&rng, 0.5f, 2.0f);
        l->smooth = f32_view(1, k, 0, s);
    }
}

/* SVDQuant in canonical form (what scheme_svdq.c binds): fresh codes and scales, smoothing, rank-R
 * factors; the last 64 input columns are padding (smooth 0, zero codes, zero low-rank entries). */
static void make_svdq(qd_linear *l, int64_t n, int64_t k, int64_t rank, bool nv, bool uns, qd_dtype t) {
    memset(l, 0, sizeof *l);
    const int64_t g = nv ? 16 : 64, pad = 64;
    uint8_t *codes = xmalloc((size_t)(n * k)), *w = xmalloc((size_t)(n * k / 2));
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j++) codes[r * k + j] = j >= k - pad ? 0 : (uint8_t)(qt_rand_u64(&rng) % 16);
    qd_pack_uint4(codes, (size_t)(n * k), w);
    free(codes);
    void *sc = xmalloc((size_t)(n * (k / g)) * (nv ? 1 : 2));
    for (int64_t i = 0; i < n * (k / g); i++) {
        if (nv) ((uint8_t *)sc)[i] = qd_f32_to_e4m3(qt_rand_uniform(&rng, 0.5f, 2.0f));
        else ((uint16_t *)sc)[i] = t == QD_DTYPE_BF16 ? qd_f32_to_bf16(qt_rand_uniform(&rng, 0.002f, 0.006f))
                                                      : qd_f32_to_f16(qt_rand_uniform(&rng, 0.002f, 0.006f));
    }
    uint16_t *sm = xmalloc(2 * (size_t)k), *dn = xmalloc(2 * (size_t)(rank * k)), *up = xmalloc(2 * (size_t)(n * rank));
    uint16_t *bias = xmalloc(2 * (size_t)n), *wcs = nv ? xmalloc(2 * (size_t)n) : NULL;
#define ENC(v) (t == QD_DTYPE_BF16 ? qd_f32_to_bf16(v) : qd_f32_to_f16(v))
    for (int64_t j = 0; j < k; j++) sm[j] = j >= k - pad ? 0 : ENC(qt_rand_uniform(&rng, 0.5f, 2.0f));
    for (int64_t q = 0; q < rank; q++)
        for (int64_t j = 0; j < k; j++) dn[q * k + j] = j >= k - pad ? 0 : ENC(draw(4.0f, 50) * 0.02f);
    for (int64_t i = 0; i < n * rank; i++) up[i] = ENC(draw(4.0f, 50) * 0.02f);
    for (int64_t i = 0; i < n; i++) {
        bias[i] = ENC(qt_rand_uniform(&rng, -0.5f, 0.5f));
        if (wcs) wcs[i] = ENC(qt_rand_uniform(&rng, 0.5f, 2.0f));
    }
#undef ENC
    l->name = strdup(nv ? "svdq_nvfp4" : "svdq_int4");
    l->scheme = nv ? QD_SCHEME_SVDQ_NVFP4 : QD_SCHEME_SVDQ_INT4;
    snprintf(l->scheme_name, sizeof l->scheme_name, nv ? "svdq_nvfp4" : "svdq_int4");
    l->out_features = n, l->in_features = k;
    l->act = QD_ACT_DYNAMIC_GROUP;
    l->act_group = l->block_k = (int)g;
    l->act_unsigned = uns;
    l->alpha = nv ? 0.003f : 1.0f;
    l->weight = view_of(QD_DTYPE_U8, 2, n, k / 2, w);
    l->scale = view_of(nv ? QD_DTYPE_F8_E4M3 : t, 2, n, k / g, sc);
    l->smooth = view_of(t, 1, k, 0, sm);
    l->lora_down = view_of(t, 2, rank, k, dn);
    l->lora_up = view_of(t, 2, n, rank, up);
    l->bias = view_of(t, 1, n, 0, bias);
    if (wcs) l->scale2 = view_of(t, 1, n, 0, wcs);
}

/* ------------------------------------------------------------------ cases --------------------- */

/* Each case runs on both paths. */
#define BOTH_PATHS(...)                                                                                                      \
    do {                                                                                                                     \
        for (int path = 0; path < 2; path++) {                                                                               \
            generic_path = path == 1;                                                                                        \
            if (!generic_path && !qd_iq_use_vnni()) continue;                                                                \
            qd_iq_force_generic(generic_path);                                                                               \
            __VA_ARGS__;                                                                                                     \
        }                                                                                                                    \
        qd_iq_force_generic(false);                                                                                          \
    } while (0)

static void test_int8_dynamic(void **state) {
    (void)state;
    BOTH_PATHS({
        qd_linear l;
        make_int8_dynamic(&l, 45, 67, false); /* odd N, odd K (padded to 68 inside) */
        run_case("int8 per token, odd sizes", &l, 13, QD_DTYPE_F32, QD_DTYPE_F32, ACT_DEFAULT, 1e-3, emu_int);
        run_case("int8 per token, odd sizes", &l, 1, QD_DTYPE_BF16, QD_DTYPE_BF16, ACT_DEFAULT, 1e-3, emu_int);
        qd_linear_free(&l);
        /* K across two chunks (1024) and M across two row blocks (768) */
        make_int8_dynamic(&l, 40, 1100, false);
        run_case("int8 per token, chunks and row blocks", &l, 775, QD_DTYPE_BF16, QD_DTYPE_F32, ACT_DEFAULT, 1e-3, emu_int);
        qd_linear_free(&l);
        make_int8_dynamic(&l, 33, 96, true);
        run_case("int8 per token, weight offsets", &l, 7, QD_DTYPE_F32, QD_DTYPE_BF16, ACT_DEFAULT, 1e-3, emu_int);
        qd_linear_free(&l);
    });
}

static void test_w8a8_static(void **state) {
    (void)state;
    BOTH_PATHS({
        qd_linear l;
        make_w8a8_static(&l, 37, 75);
        const act_data ad = {1.5f, 100, false, 2.0f}; /* within the calibrated ±12 but for rare clipped outliers */
        run_case("w8a8 static", &l, 11, QD_DTYPE_F32, QD_DTYPE_F32, ad, 1e-3, emu_int);
        run_case("w8a8 static", &l, 6, QD_DTYPE_BF16, QD_DTYPE_BF16, ad, 1e-3, emu_int);
        qd_linear_free(&l);
    });
}

static void test_w4a4(void **state) {
    (void)state;
    /* per-token int4 is coarse; activations with mild outliers keep amax ≈ 4-6 rms */
    const act_data ad = {1.5f, 100, false, 1.0f};
    BOTH_PATHS({
        qd_linear l;
        make_w4a4(&l, 35, 73, 1, false);
        run_case("w4a4 per channel", &l, 9, QD_DTYPE_F32, QD_DTYPE_F32, ad, 5e-2, emu_int);
        qd_linear_free(&l);
        make_w4a4(&l, 35, 256, 1, true);
        run_case("w4a4 per channel, offsets", &l, 5, QD_DTYPE_BF16, QD_DTYPE_F32, ad, 5e-2, emu_int);
        qd_linear_free(&l);
        make_w4a4(&l, 50, 384, 3, false); /* groups of 128 */
        run_case("w4a4 per group", &l, 8, QD_DTYPE_F32, QD_DTYPE_BF16, ad, 5e-2, emu_int);
        qd_linear_free(&l);
        make_w4a4(&l, 50, 2304, 18, true); /* groups of 128 across chunks, with offsets */
        run_case("w4a4 per group, offsets, chunks", &l, 14, QD_DTYPE_BF16, QD_DTYPE_F32, ad, 5e-2, emu_int);
        qd_linear_free(&l);
    });
}

static void test_nvfp4(void **state) {
    (void)state;
    BOTH_PATHS({
        qd_linear l;
        make_nvfp4(&l, 33, 80, false, false, false);
        run_case("nvfp4 online (global scale per call)", &l, 7, QD_DTYPE_F32, QD_DTYPE_F32, ACT_DEFAULT, 5e-2, emu_fp4);
        run_case("nvfp4 online (global scale per call)", &l, 1, QD_DTYPE_BF16, QD_DTYPE_BF16, ACT_DEFAULT, 5e-2, emu_fp4);
        qd_linear_free(&l);
        make_nvfp4(&l, 64, 2048, true, true, true);
        run_case("nvfp4 input_scale, pre_quant_scale, per-row global", &l, 781, QD_DTYPE_BF16, QD_DTYPE_F32, ACT_DEFAULT, 5e-2,
                 emu_fp4);
        qd_linear_free(&l);
    });
}

static void test_mxfp4(void **state) {
    (void)state;
    BOTH_PATHS({
        qd_linear l;
        make_mxfp4(&l, 31, 96, false, false);
        run_case("mxfp4", &l, 5, QD_DTYPE_F32, QD_DTYPE_BF16, ACT_DEFAULT, 6e-2, emu_fp4);
        qd_linear_free(&l);
        make_mxfp4(&l, 40, 1536, true, true);
        run_case("mxfp4 dual scale, mul_scale", &l, 19, QD_DTYPE_BF16, QD_DTYPE_F32, ACT_DEFAULT, 6e-2, emu_fp4);
        qd_linear_free(&l);
    });
}

static void test_svdq(void **state) {
    (void)state;
    BOTH_PATHS({
        qd_linear l;
        make_svdq(&l, 128, 384, 32, false, false, QD_DTYPE_BF16);
        run_case("svdq int4 signed", &l, 13, QD_DTYPE_BF16, QD_DTYPE_BF16, ACT_DEFAULT, 5e-2, emu_svdq);
        run_case("svdq int4 signed", &l, 4, QD_DTYPE_F32, QD_DTYPE_F32, ACT_DEFAULT, 5e-2, emu_svdq);
        qd_linear_free(&l);
        make_svdq(&l, 256, 256, 48, false, true, QD_DTYPE_F16);
        const act_data gelu = {3.0f, 200, true, 1.5f};
        run_case("svdq int4 unsigned after GELU, fp16, rank 48", &l, 9, QD_DTYPE_F32, QD_DTYPE_F32, gelu, 5e-2, emu_svdq);
        qd_linear_free(&l);
        make_svdq(&l, 128, 1152, 32, true, false, QD_DTYPE_BF16);
        run_case("svdq nvfp4 (alpha, wcscales)", &l, 11, QD_DTYPE_BF16, QD_DTYPE_F32, ACT_DEFAULT, 5e-2, emu_svdq);
        qd_linear_free(&l);
    });
}

/* A layer already holding another backend's prepared form: the kernel must not touch it. */
static void free_counter(void *p) { (*(int *)p)++; }

static void test_foreign_prepared(void **state) {
    (void)state;
    qd_linear l;
    make_int8_dynamic(&l, 20, 64, false);
    static int freed, other;
    l.prepared = &freed;
    l.prepared_free = free_counter;
    l.prepared_for = &other;
    qd_tensor x = {0}, y1 = {0}, y2 = {0};
    qd_tensor_shape(&x, QD_DTYPE_F32, 2, (int64_t[]){3, 64});
    qd_tensor_shape(&y1, QD_DTYPE_F32, 2, (int64_t[]){3, 20});
    y2 = y1;
    x.data = xmalloc(qd_tensor_bytes(&x));
    y1.data = xmalloc(qd_tensor_bytes(&y1));
    y2.data = xmalloc(qd_tensor_bytes(&y2));
    for (int i = 0; i < 3 * 64; i++) ((float *)x.data)[i] = draw(6.0f, 50);
    assert_int_equal(qd_cpu_linear(NULL, &l, &x, &y1), QD_OK);
    assert_ptr_equal(l.prepared, &freed);
    assert_int_equal(freed, 0);
    l.prepared = NULL, l.prepared_free = NULL, l.prepared_for = NULL;
    assert_int_equal(qd_cpu_linear(NULL, &l, &x, &y2), QD_OK);
    assert_memory_equal(y1.data, y2.data, qd_tensor_bytes(&y1));
    qd_linear_free(&l);
    free(x.data), free(y1.data), free(y2.data);
}

/* prepare_linear makes the prepared form at load and drops the stored weight and scale (one copy of the
 * weights in memory): the layer computes exactly what a lazily prepared twin computes, and the
 * reference paths that need the stored form refuse it with a message naming the layer. */
static void check_prepare_replaces(qd_linear *lazy, qd_linear *loaded, int64_t m) {
    const int64_t k = lazy->in_features, n = lazy->out_features;
    assert_int_equal(qd_cpu_prepare_linear(NULL, loaded), QD_OK);
    assert_true(loaded->stored_released);
    assert_null(loaded->weight.data);
    assert_null(loaded->scale.data);
    assert_int_equal(loaded->weight.shape[0], n); /* shape and dtype stay for printing */
    float *w = xmalloc(sizeof *w * (size_t)(n * k));
    assert_int_equal(qd_linear_dequantize(loaded, w), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), loaded->name));
    assert_non_null(strstr(qd_last_error(), "released"));
    free(w);
    qd_tensor x = {0}, y1 = {0}, y2 = {0};
    qd_tensor_shape(&x, QD_DTYPE_F32, 2, (int64_t[]){m, k});
    qd_tensor_shape(&y1, QD_DTYPE_F32, 2, (int64_t[]){m, n});
    y2 = y1;
    x.data = xmalloc(qd_tensor_bytes(&x));
    y1.data = xmalloc(qd_tensor_bytes(&y1));
    y2.data = xmalloc(qd_tensor_bytes(&y2));
    for (int64_t i = 0; i < m * k; i++) ((float *)x.data)[i] = draw(6.0f, 50);
    assert_int_equal(qd_cpu_linear(NULL, lazy, &x, &y1), QD_OK);
    assert_int_equal(qd_cpu_linear(NULL, loaded, &x, &y2), QD_OK);
    assert_memory_equal(y1.data, y2.data, qd_tensor_bytes(&y1));
    assert_non_null(lazy->weight.data); /* lazy preparation keeps the stored form */
    assert_false(lazy->stored_released);
    free(x.data), free(y1.data), free(y2.data);
}

static void test_prepare_replaces_stored(void **state) {
    (void)state;
    const uint64_t seed = rng;
    qd_linear a, b;
    make_int8_dynamic(&a, 40, 96, true);
    rng = seed;
    make_int8_dynamic(&b, 40, 96, true);
    check_prepare_replaces(&a, &b, 5);
    qd_linear_free(&a), qd_linear_free(&b);
    rng = seed;
    make_nvfp4(&a, 48, 256, true, true, false);
    rng = seed;
    make_nvfp4(&b, 48, 256, true, true, false);
    check_prepare_replaces(&a, &b, 9);
    qd_linear_free(&a), qd_linear_free(&b);
    rng = seed;
    make_svdq(&a, 64, 256, 16, false, true, QD_DTYPE_BF16);
    rng = seed;
    make_svdq(&b, 64, 256, 16, false, true, QD_DTYPE_BF16);
    check_prepare_replaces(&a, &b, 7);
    /* the unsigned layer's effective bias needs the stored weight: NaN (loud), never a silent wrong value */
    float *bias = xmalloc(sizeof *bias * 64);
    qd_linear_bias_f32(&b, bias);
    assert_true(isnan(bias[0]));
    free(bias);
    qd_linear_free(&a), qd_linear_free(&b);
}

/* The scalar rounding rules against the codec (the generic and AVX-512 paths both follow them). */
static void test_rounding_rules(void **state) {
    (void)state;
    for (int i = 0; i < 200000; i++) {
        float v = ldexpf(qt_rand_uniform(&rng, 1.0f, 2.0f), (int)(qt_rand_u64(&rng) % 40) - 22);
        if (i < 256) v = qd_e4m3_to_f32((uint8_t)i) * (i & 1 ? 1.0f : 1.0000001f); /* on and near the grid */
        if (v < 0 || v != v) continue;
        assert_true(qd_iq_e4m3_round(v) == qd_e4m3_to_f32(qd_f32_to_e4m3(v)));
        const float u = qt_rand_uniform(&rng, -8.0f, 8.0f);
        assert_int_equal(qd_iq_e2m1x2(u), (int)(2 * qd_e2m1_to_f32(qd_f32_to_e2m1(u))));
    }
    const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, -0.25f, -2.5f, 7.0f, 1e30f};
    for (size_t i = 0; i < sizeof ties / sizeof *ties; i++)
        assert_int_equal(qd_iq_e2m1x2(ties[i]), (int)(2 * qd_e2m1_to_f32(qd_f32_to_e2m1(ties[i]))));
}

int main(void) {
    rng = qt_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounding_rules), cmocka_unit_test(test_int8_dynamic), cmocka_unit_test(test_w8a8_static),
        cmocka_unit_test(test_w4a4),           cmocka_unit_test(test_nvfp4),        cmocka_unit_test(test_mxfp4),
        cmocka_unit_test(test_svdq),           cmocka_unit_test(test_foreign_prepared), cmocka_unit_test(test_prepare_replaces_stored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
