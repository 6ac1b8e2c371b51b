/* CPU backend ops (attention, norms, rope, element-wise, conv, layout) against naive double-precision
 * references written here, independently of src/backend/cpu: plain loops over the decoded inputs,
 * no tiling, no online softmax, no polynomial exp. Inputs are fresh random values on every run
 * (seed printed; replay with QDIT_TEST_SEED), at odd sizes and at real model sizes (D = 128, H = 24),
 * in F32, BF16 and F16 and mixes of them. Every op is called through the backend's vtable, so the
 * test also proves the real ops are the ones linked.
 *
 * Tolerances (relative L2 error ‖y − ref‖/‖ref‖):
 *  - 1e-5 when the output is F32 and the op computes in f32: f32 rounding (6e-8) accumulated over
 *    sums of up to a few thousand terms stays well below it, and any real bug (a wrong index, a
 *    missing scale, a dropped term) is orders of magnitude above it.
 *  - 1e-2 when the output is BF16/F16, or attention on BF16 inputs: one bf16 rounding of the result
 *    is up to 2^-9 ≈ 2e-3 relative per element, and bf16 attention also rounds the probabilities to
 *    bf16 before P·V (as PyTorch's and flash-attention's bf16 kernels do), another ~2^-9 per term.
 *
 * Both code paths are checked: the suite runs once with the detected ISA (AVX-512 / AVX512-BF16
 * kernels, oneDNN convolutions), then main() re-executes this binary with QDIT_CPU_ISA=generic and
 * the same seed (qd_cpu_isa_get() caches the ISA per process, so a second process is the simple
 * robust way to reach the plain-C kernels through the same public entry points).
 * QT_VERBOSE=1 prints every measured error, to see the margins. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/cpu/cpu.h"
#include "core/codec.h"
#include "core/status.h"
#include "test_util.h"

#define TOL_F32 1e-5
#define TOL_HALF 1e-2

static uint64_t rng;
static qd_backend *be;

/* ------------------------------------------------------------------------------------------------ */
/* helpers                                                                                           */

static qd_tensor mk(qd_dtype dt, int rank, const int64_t *shape) {
    qd_tensor t;
    assert_int_equal(qd_tensor_new(be, &t, dt, rank, shape), QD_OK);
    return t;
}

/* decode element i as double — bf16 by its bit layout, f16 through the core codec */
static double get(const qd_tensor *t, int64_t i) {
    switch (t->dtype) {
    case QD_DTYPE_F32: return ((const float *)t->data)[i];
    case QD_DTYPE_BF16: {
        uint32_t u = (uint32_t)((const uint16_t *)t->data)[i] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    case QD_DTYPE_F16: return qd_f16_to_f32(((const uint16_t *)t->data)[i]);
    default: fail_msg("get: dtype %s", qd_dtype_name(t->dtype));
    }
    return 0;
}

static void put(qd_tensor *t, int64_t i, float v) {
    switch (t->dtype) {
    case QD_DTYPE_F32: ((float *)t->data)[i] = v; break;
    case QD_DTYPE_BF16: ((uint16_t *)t->data)[i] = qd_f32_to_bf16(v); break;
    case QD_DTYPE_F16: ((uint16_t *)t->data)[i] = qd_f32_to_f16(v); break;
    default: fail_msg("put: dtype %s", qd_dtype_name(t->dtype));
    }
}

static void fill(qd_tensor *t, float lo, float hi) {
    int64_t n = qd_tensor_elements(t);
    for (int64_t i = 0; i < n; i++) put(t, i, qt_rand_uniform(&rng, lo, hi));
}

static qd_tensor rnd(qd_dtype dt, int rank, const int64_t *shape, float lo, float hi) {
    qd_tensor t = mk(dt, rank, shape);
    fill(&t, lo, hi);
    return t;
}

static double *dvec(int64_t n) {
    double *d = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    assert_non_null(d);
    return d;
}

/* bf16 rounding done with frexp/nearbyint (round to nearest even in the default mode): 8 significant
 * bits — independent of the codec's integer trick */
static double round_bf16(double v) {
    if (v == 0 || !isfinite(v)) return v;
    int e;
    double m = frexp(v, &e);
    return ldexp(nearbyint(ldexp(m, 8)), e - 8);
}

static double tol_for(qd_dtype out) { return out == QD_DTYPE_F32 ? TOL_F32 : TOL_HALF; }

/* relative L2 error over n elements of y (from element off) against ref; fails on NaN/inf */
static void expect_close_at(const char *what, const qd_tensor *y, int64_t off, const double *ref, int64_t n, double tol) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = get(y, off + i);
        if (!isfinite(g) && isfinite(ref[i])) fail_msg("%s: element %lld is %g, expected %g", what, (long long)(off + i), g, ref[i]);
        num += (g - ref[i]) * (g - ref[i]);
        den += ref[i] * ref[i];
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    if (getenv("QT_VERBOSE")) print_message("  %-40s rel L2 %.3g\n", what, rel);
    if (!(rel <= tol)) fail_msg("%s: relative L2 error %.3g > %.1g", what, rel, tol);
}

static void expect_close(const char *what, const qd_tensor *y, const double *ref, double tol) {
    expect_close_at(what, y, 0, ref, qd_tensor_elements(y), tol);
}

static void expect_fail(qd_status s, const char *needle) {
    assert_int_not_equal(s, QD_OK);
    const char *msg = qd_last_error();
    if (!strstr(msg, needle)) fail_msg("error message '%s' does not mention '%s'", msg, needle);
}

static void freet(qd_tensor *t) { qd_tensor_free(t); }

/* ------------------------------------------------------------------------------------------------ */
/* attention                                                                                         */

typedef struct {
    int64_t B, Lq, Lk, H, Hkv, D, Dv;
    qd_dtype qdt, kdt, vdt, odt;
    int mask;          /* 0 none; else the mask dtype + 1 (see attn_case) */
    qd_dtype mask_dt;
    bool bias, causal;
    int frame;         /* with bias: frame-causal −inf pattern over frames of this many tokens */
    float scale;
    int sample_rows;   /* 0: check every row; else this many random (b, i, h) rows */
} attn_case;

/* one output row, in double: softmax over the visible keys of scale·q·k + bias, times v */
static void attn_ref_row(const attn_case *c, const qd_tensor *q, const qd_tensor *k, const qd_tensor *v, const uint8_t *ok,
                         const qd_tensor *bias, int64_t b, int64_t i, int64_t h, double *out) {
    double scale = c->scale != 0 ? c->scale : 1.0 / sqrt((double)c->D);
    int64_t hk = h / (c->H / c->Hkv);
    double *s = dvec(c->Lk);
    double mx = -INFINITY;
    for (int64_t j = 0; j < c->Lk; j++) {
        bool vis = (!ok || ok[b * c->Lk + j]) && (!c->causal || j <= i + c->Lk - c->Lq);
        if (!vis) {
            s[j] = -INFINITY;
            continue;
        }
        double d = 0;
        for (int64_t e = 0; e < c->D; e++) {
            d += get(q, ((b * c->Lq + i) * c->H + h) * c->D + e) * get(k, ((b * c->Lk + j) * c->Hkv + hk) * c->D + e);
        }
        s[j] = d * scale + (bias ? get(bias, (h * c->Lq + i) * c->Lk + j) : 0.0);
        if (s[j] > mx) mx = s[j];
    }
    for (int64_t e = 0; e < c->Dv; e++) out[e] = 0;
    if (mx == -INFINITY) {
        free(s);
        return; /* no visible key: zeros */
    }
    double sum = 0;
    for (int64_t j = 0; j < c->Lk; j++) sum += s[j] == -INFINITY ? 0 : exp(s[j] - mx);
    for (int64_t j = 0; j < c->Lk; j++) {
        if (s[j] == -INFINITY) continue;
        double p = exp(s[j] - mx) / sum;
        for (int64_t e = 0; e < c->Dv; e++) out[e] += p * get(v, ((b * c->Lk + j) * c->Hkv + hk) * c->Dv + e);
    }
    free(s);
}

static void run_attn(const char *name, const attn_case *c) {
    qd_tensor q = rnd(c->qdt, 4, (int64_t[]){c->B, c->Lq, c->H, c->D}, -1.5f, 1.5f);
    qd_tensor k = rnd(c->kdt, 4, (int64_t[]){c->B, c->Lk, c->Hkv, c->D}, -1.5f, 1.5f);
    qd_tensor v = rnd(c->vdt, 4, (int64_t[]){c->B, c->Lk, c->Hkv, c->Dv}, -1, 1);
    qd_tensor o = mk(c->odt, 4, (int64_t[]){c->B, c->Lq, c->H, c->Dv});
    qd_tensor m = {0}, bias = {0};
    uint8_t *ok = NULL;
    qd_attn_args a = {.q = &q, .k = &k, .v = &v, .causal = c->causal, .scale = c->scale};
    if (c->mask) {
        m = mk(c->mask_dt, 2, (int64_t[]){c->B, c->Lk});
        ok = malloc((size_t)(c->B * c->Lk));
        for (int64_t b = 0; b < c->B; b++) {
            /* batch 0: random keys; batch 1: fully masked (must give zeros); then padded tails */
            int64_t keep = c->Lk - (b * 37) % (c->Lk > 1 ? c->Lk : 1);
            for (int64_t j = 0; j < c->Lk; j++) {
                bool on = b == 0 ? qt_rand_u64(&rng) % 3 != 0 : b == 1 ? false : j < keep;
                ok[b * c->Lk + j] = on;
                int64_t idx = b * c->Lk + j;
                switch (c->mask_dt) {
                case QD_DTYPE_BOOL:
                case QD_DTYPE_U8: ((uint8_t *)m.data)[idx] = on ? (uint8_t)(1 + qt_rand_u64(&rng) % 200) : 0; break;
                case QD_DTYPE_I32: ((int32_t *)m.data)[idx] = on ? (int32_t)(1 + qt_rand_u64(&rng) % 5) : 0; break;
                case QD_DTYPE_I64: ((int64_t *)m.data)[idx] = on ? 1 : 0; break;
                default: put(&m, idx, on ? 1.0f : 0.0f); break;
                }
            }
        }
        a.mask = &m;
    }
    if (c->bias) {
        bias = rnd(QD_DTYPE_F32, 3, (int64_t[]){c->H, c->Lq, c->Lk}, -3, 3);
        if (c->frame) {
            /* HunyuanVideo's VAE mid attention: a token sees the frames up to its own, expressed
               as −inf bias; plus one query row (head 0, row 1) that sees nothing */
            for (int64_t h = 0; h < c->H; h++)
                for (int64_t i = 0; i < c->Lq; i++)
                    for (int64_t j = 0; j < c->Lk; j++) {
                        if (j / c->frame > i / c->frame || (h == 0 && i == 1)) put(&bias, (h * c->Lq + i) * c->Lk + j, -INFINITY);
                    }
        }
        a.bias = &bias;
    }
    qd_status st = be->ops->attention(be, &a, &o);
    if (st != QD_OK) fail_msg("%s: %s", name, qd_last_error());
    bool half = c->odt != QD_DTYPE_F32 || (c->qdt == QD_DTYPE_BF16 && c->kdt == QD_DTYPE_BF16 && c->vdt == QD_DTYPE_BF16) ||
                c->qdt == QD_DTYPE_F16 || c->kdt == QD_DTYPE_F16 || c->vdt == QD_DTYPE_F16;
    double tol = half ? TOL_HALF : TOL_F32;
    int64_t rows = c->B * c->Lq * c->H, nchk = c->sample_rows ? c->sample_rows : rows;
    double *ref = dvec(nchk * c->Dv), *got = dvec(nchk * c->Dv);
    for (int64_t r = 0; r < nchk; r++) {
        int64_t row = c->sample_rows ? (int64_t)(qt_rand_u64(&rng) % (uint64_t)rows) : r;
        int64_t h = row % c->H, i = (row / c->H) % c->Lq, b = row / (c->H * c->Lq);
        attn_ref_row(c, &q, &k, &v, ok, c->bias ? &bias : NULL, b, i, h, ref + r * c->Dv);
        for (int64_t e = 0; e < c->Dv; e++) {
            got[r * c->Dv + e] = get(&o, row * c->Dv + e);
            if (!isfinite(got[r * c->Dv + e])) fail_msg("%s: non-finite output at row %lld", name, (long long)row);
        }
        /* rows with no visible key must be exact zeros */
        bool allzero = true;
        for (int64_t e = 0; e < c->Dv; e++) allzero = allzero && ref[r * c->Dv + e] == 0;
        if (allzero) {
            for (int64_t e = 0; e < c->Dv; e++) {
                if (got[r * c->Dv + e] != 0) fail_msg("%s: row %lld sees no key but output is %g", name, (long long)row, got[r * c->Dv + e]);
            }
        }
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < nchk * c->Dv; i++) num += (got[i] - ref[i]) * (got[i] - ref[i]), den += ref[i] * ref[i];
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    if (!(rel <= tol)) fail_msg("%s: relative L2 error %.3g > %.1g", name, rel, tol);
    free(ref), free(got), free(ok);
    freet(&q), freet(&k), freet(&v), freet(&o);
    if (c->mask) freet(&m);
    if (c->bias) freet(&bias);
}

/* designated, so the optional fields after it default to zero without a warning */
#define AC(B_, Lq_, Lk_, H_, Hkv_, D_, Dv_, q_, k_, v_, o_)                                                            \
    .B = B_, .Lq = Lq_, .Lk = Lk_, .H = H_, .Hkv = Hkv_, .D = D_, .Dv = Dv_, .qdt = q_, .kdt = k_, .vdt = v_, .odt = o_
#define F32 QD_DTYPE_F32
#define BF16 QD_DTYPE_BF16
#define F16 QD_DTYPE_F16

static void test_attention_basic(void **state) {
    (void)state;
    /* odd sizes, Dv ≠ D, Lq ≠ Lk */
    run_attn("f32 odd", &(attn_case){AC(2, 37, 53, 3, 3, 40, 24, F32, F32, F32, F32)});
    run_attn("bf16 odd", &(attn_case){AC(2, 37, 53, 3, 3, 40, 24, BF16, BF16, BF16, BF16)});
    run_attn("bf16 in f32 out", &(attn_case){AC(1, 61, 200, 2, 2, 64, 64, BF16, BF16, BF16, F32)});
    /* odd head dim: bf16 pairs padded */
    run_attn("bf16 D odd", &(attn_case){AC(1, 19, 41, 2, 1, 33, 20, BF16, BF16, BF16, BF16)});
    run_attn("f32 D odd", &(attn_case){AC(1, 19, 41, 2, 1, 33, 20, F32, F32, F32, F32)});
    /* custom scale; single key; single query */
    run_attn("scale 0.3", &(attn_case){AC(1, 10, 77, 2, 2, 16, 16, F32, F32, F32, F32), .scale = 0.3f});
    run_attn("Lk 1", &(attn_case){AC(2, 5, 1, 2, 2, 8, 8, F32, F32, F32, F32)});
    run_attn("Lq 1", &(attn_case){AC(2, 1, 300, 4, 4, 64, 64, BF16, BF16, BF16, F32)});
    /* mixed and f16 inputs go through the f32 kernels */
    run_attn("mixed dtypes", &(attn_case){AC(2, 29, 45, 4, 2, 32, 32, BF16, F32, BF16, F32)});
    run_attn("f16", &(attn_case){AC(1, 33, 47, 2, 2, 32, 32, F16, F16, F16, F16)});
}

static void test_attention_model_sizes(void **state) {
    (void)state;
    /* FLUX-like: H = 24, D = 128, joint sequence of a few hundred tokens; rows sampled for the reference */
    run_attn("flux bf16", &(attn_case){AC(1, 192, 192, 24, 24, 128, 128, BF16, BF16, BF16, BF16), .sample_rows = 96});
    run_attn("flux f32", &(attn_case){AC(1, 160, 160, 24, 24, 128, 128, F32, F32, F32, F32), .sample_rows = 96});
    /* Wan cross-attention: queries over 512 text keys */
    run_attn("cross bf16", &(attn_case){AC(1, 130, 512, 4, 4, 128, 128, BF16, BF16, BF16, BF16), .sample_rows = 64});
    /* VAE mid attention: a single head of 384 (Wan) */
    run_attn("vae head 384", &(attn_case){AC(1, 70, 70, 1, 1, 384, 384, BF16, BF16, BF16, F32)});
}

static void test_attention_gqa(void **state) {
    (void)state;
    run_attn("gqa f32", &(attn_case){AC(2, 70, 130, 8, 2, 64, 64, F32, F32, F32, F32)});
    run_attn("gqa bf16", &(attn_case){AC(2, 70, 130, 8, 2, 64, 64, BF16, BF16, BF16, BF16)});
    run_attn("mqa bf16", &(attn_case){AC(1, 50, 90, 6, 1, 128, 128, BF16, BF16, BF16, F32)});
}

static void test_attention_masks(void **state) {
    (void)state;
    qd_dtype mdts[] = {QD_DTYPE_U8, QD_DTYPE_BOOL, QD_DTYPE_I32, QD_DTYPE_I64, QD_DTYPE_F32, QD_DTYPE_BF16};
    for (size_t i = 0; i < sizeof mdts / sizeof mdts[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "mask %s f32", qd_dtype_name(mdts[i]));
        run_attn(name, &(attn_case){AC(3, 50, 140, 4, 2, 32, 32, F32, F32, F32, F32), .mask = 1, .mask_dt = mdts[i]});
        snprintf(name, sizeof name, "mask %s bf16", qd_dtype_name(mdts[i]));
        run_attn(name, &(attn_case){AC(3, 50, 140, 4, 2, 32, 32, BF16, BF16, BF16, BF16), .mask = 1, .mask_dt = mdts[i]});
    }
    /* many key blocks, some fully masked in batch 2's padded tail */
    run_attn("mask long", &(attn_case){AC(3, 40, 700, 2, 2, 64, 64, BF16, BF16, BF16, F32), .mask = 1, .mask_dt = QD_DTYPE_U8});
}

static void test_attention_bias_causal(void **state) {
    (void)state;
    run_attn("bias f32", &(attn_case){AC(2, 33, 45, 4, 4, 16, 16, F32, F32, F32, F32), .bias = true, .scale = 1.0f});
    run_attn("bias bf16", &(attn_case){AC(2, 33, 145, 4, 4, 64, 64, BF16, BF16, BF16, F32), .bias = true, .scale = 1.0f});
    run_attn("frame-causal bias bf16", &(attn_case){AC(1, 150, 150, 1, 1, 64, 64, BF16, BF16, BF16, BF16), .bias = true, .frame = 50});
    run_attn("frame-causal bias f32", &(attn_case){AC(1, 150, 150, 2, 1, 64, 64, F32, F32, F32, F32), .bias = true, .frame = 37});
    run_attn("causal square f32", &(attn_case){AC(2, 100, 100, 2, 2, 32, 32, F32, F32, F32, F32), .causal = true});
    run_attn("causal square bf16", &(attn_case){AC(1, 300, 300, 2, 1, 64, 64, BF16, BF16, BF16, BF16), .causal = true});
    run_attn("causal Lq<Lk", &(attn_case){AC(2, 30, 170, 2, 2, 32, 32, F32, F32, F32, F32), .causal = true});
    /* Lq > Lk: the first Lq − Lk queries see no key and must be zeros */
    run_attn("causal Lq>Lk f32", &(attn_case){AC(2, 90, 40, 2, 2, 32, 32, F32, F32, F32, F32), .causal = true});
    run_attn("causal Lq>Lk bf16", &(attn_case){AC(2, 90, 40, 2, 2, 32, 32, BF16, BF16, BF16, BF16), .causal = true});
    run_attn("everything", &(attn_case){AC(3, 57, 203, 6, 3, 48, 40, BF16, BF16, BF16, F32), .mask = 1, .mask_dt = QD_DTYPE_U8,
                                        .bias = true, .causal = true, .scale = 0.2f});
    run_attn("everything f32", &(attn_case){AC(3, 57, 203, 6, 3, 48, 40, F32, F32, F32, F32), .mask = 1, .mask_dt = QD_DTYPE_I64,
                                            .bias = true, .causal = true});
}

static void test_attention_errors(void **state) {
    (void)state;
    qd_tensor q = rnd(F32, 4, (int64_t[]){1, 4, 6, 8}, -1, 1), k = rnd(F32, 4, (int64_t[]){1, 5, 4, 8}, -1, 1);
    qd_tensor v = rnd(F32, 4, (int64_t[]){1, 5, 4, 8}, -1, 1), o = mk(F32, 4, (int64_t[]){1, 4, 6, 8});
    qd_attn_args a = {.q = &q, .k = &k, .v = &v};
    expect_fail(be->ops->attention(be, &a, &o), "multiple of kv heads"); /* 6 % 4 */
    qd_tensor k2 = rnd(F32, 4, (int64_t[]){1, 5, 3, 7}, -1, 1), v2 = rnd(F32, 4, (int64_t[]){1, 5, 3, 8}, -1, 1);
    a.k = &k2, a.v = &v2;
    expect_fail(be->ops->attention(be, &a, &o), "do not match");
    qd_tensor k3 = rnd(F32, 4, (int64_t[]){1, 5, 3, 8}, -1, 1);
    a.k = &k3;
    qd_tensor m = mk(F32, 2, (int64_t[]){1, 5});
    for (int j = 0; j < 5; j++) put(&m, j, j == 2 ? -INFINITY : 0.0f); /* an additive mask */
    a.mask = &m;
    expect_fail(be->ops->attention(be, &a, &o), "only 0 and 1");
    qd_tensor m2 = mk(QD_DTYPE_I16, 2, (int64_t[]){1, 5});
    a.mask = &m2;
    expect_fail(be->ops->attention(be, &a, &o), "mask must be");
    a.mask = NULL;
    qd_tensor bias = rnd(F32, 3, (int64_t[]){6, 4, 4}, -1, 1);
    a.bias = &bias;
    expect_fail(be->ops->attention(be, &a, &o), "bias must be [H, Lq, Lk]");
    a.bias = NULL;
    qd_tensor o2 = mk(F32, 4, (int64_t[]){1, 4, 6, 9});
    expect_fail(be->ops->attention(be, &a, &o2), "out must be");
    qd_tensor qi = mk(QD_DTYPE_I32, 4, (int64_t[]){1, 4, 6, 8});
    a.q = &qi;
    expect_fail(be->ops->attention(be, &a, &o), "q must be F32, BF16 or F16");
    freet(&q), freet(&k), freet(&v), freet(&o), freet(&k2), freet(&v2), freet(&k3), freet(&m), freet(&m2), freet(&bias),
        freet(&o2), freet(&qi);
}

/* ------------------------------------------------------------------------------------------------ */
/* norms                                                                                             */

static void run_rms(int rank, const int64_t *shape, qd_dtype xdt, qd_dtype wdt, bool has_w, qd_dtype ydt, float eps,
                    bool inplace) {
    qd_tensor x = rnd(xdt, rank, shape, -3, 3);
    int64_t D = shape[rank - 1], n = qd_tensor_elements(&x);
    qd_tensor w = has_w ? rnd(wdt, 1, &D, 0.5f, 1.5f) : (qd_tensor){0};
    qd_tensor y = inplace ? x : mk(ydt, rank, shape);
    double *ref = dvec(n);
    for (int64_t r = 0; r < n / D; r++) {
        double ms = 0;
        for (int64_t i = 0; i < D; i++) ms += get(&x, r * D + i) * get(&x, r * D + i);
        double rr = 1.0 / sqrt(ms / (double)D + eps);
        for (int64_t i = 0; i < D; i++) {
            double xn = get(&x, r * D + i) * rr;
            /* the cast point: normalised value rounded to the weight's dtype before the multiply */
            if (has_w && wdt == BF16) xn = round_bf16(xn);
            if (has_w && wdt == F16) xn = qd_f16_to_f32(qd_f32_to_f16((float)xn));
            ref[r * D + i] = has_w ? xn * get(&w, i) : xn;
        }
    }
    qd_status s = be->ops->rms_norm(be, &x, has_w ? &w : NULL, eps, &y);
    if (s) fail_msg("rms_norm: %s", qd_last_error());
    if (has_w && wdt != F32 && y.dtype == F32) {
        /* An F32 output behind a half-precision weight: x̂ is rounded to the weight's dtype inside the
           op. Where x̂ sits on a rounding midpoint, the op's f32 x̂ and the reference's double x̂ may
           round to neighbouring bf16 values (an honest 2^-8 difference), so a relative L2 bound
           would either be loose or flaky. Check the cast point itself: almost every element must
           equal the reference to f32 precision (an op that skipped the rounding would miss on
           nearly all), and the rest must be within one bf16 step. */
        int64_t miss = 0;
        for (int64_t i = 0; i < n; i++) {
            double g = get(&y, i), d = fabs(g - ref[i]);
            if (d > 1e-6 * fabs(ref[i]) + 1e-30) miss++;
            if (d > 1e-2 * fabs(ref[i]) + 1e-30) fail_msg("rms_norm: element %lld is %g, expected %g", (long long)i, g, ref[i]);
        }
        if (miss > n / 50) fail_msg("rms_norm: %lld of %lld elements miss the weight-dtype cast point", (long long)miss, (long long)n);
    } else {
        expect_close("rms_norm", &y, ref, tol_for(y.dtype));
    }
    free(ref);
    freet(&x);
    if (has_w) freet(&w);
    if (!inplace) freet(&y);
}

static void test_rms_norm(void **state) {
    (void)state;
    run_rms(3, (int64_t[]){3, 7, 37}, F32, F32, true, F32, 1e-6f, false);
    run_rms(3, (int64_t[]){3, 7, 37}, F32, F32, false, F32, 1e-5f, false);
    /* FLUX qk-norm: [B, L, H, 128] bf16 with a bf16 weight */
    run_rms(4, (int64_t[]){1, 100, 24, 128}, BF16, BF16, true, BF16, 1e-6f, false);
    run_rms(4, (int64_t[]){1, 100, 24, 128}, BF16, BF16, true, BF16, 1e-6f, true);
    /* Wan: across all heads, D = 3072 */
    run_rms(3, (int64_t[]){2, 9, 3072}, BF16, BF16, true, F32, 1e-6f, false);
    run_rms(2, (int64_t[]){5, 77}, F32, BF16, true, F32, 1e-6f, false);
    run_rms(2, (int64_t[]){5, 77}, F16, F16, true, F16, 1e-6f, false);
    run_rms(2, (int64_t[]){64, 130}, F32, F32, true, F32, 1e-6f, true);
}

static void run_ln(int rank, const int64_t *shape, qd_dtype xdt, bool has_w, bool has_b, qd_dtype ydt, float offset,
                   bool inplace) {
    qd_tensor x = rnd(xdt, rank, shape, offset - 2, offset + 2);
    int64_t D = shape[rank - 1], n = qd_tensor_elements(&x);
    qd_tensor w = has_w ? rnd(xdt, 1, &D, 0.5f, 1.5f) : (qd_tensor){0};
    qd_tensor bb = has_b ? rnd(xdt, 1, &D, -1, 1) : (qd_tensor){0};
    qd_tensor y = inplace ? x : mk(ydt, rank, shape);
    double *ref = dvec(n);
    float eps = 1e-6f;
    for (int64_t r = 0; r < n / D; r++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < D; i++) mean += get(&x, r * D + i);
        mean /= (double)D;
        for (int64_t i = 0; i < D; i++) var += (get(&x, r * D + i) - mean) * (get(&x, r * D + i) - mean);
        double rs = 1.0 / sqrt(var / (double)D + eps);
        for (int64_t i = 0; i < D; i++) {
            ref[r * D + i] = (get(&x, r * D + i) - mean) * rs * (has_w ? get(&w, i) : 1.0) + (has_b ? get(&bb, i) : 0.0);
        }
    }
    qd_status s = be->ops->layer_norm(be, &x, has_w ? &w : NULL, has_b ? &bb : NULL, eps, &y);
    if (s) fail_msg("layer_norm: %s", qd_last_error());
    expect_close("layer_norm", &y, ref, tol_for(y.dtype));
    free(ref);
    freet(&x);
    if (has_w) freet(&w);
    if (has_b) freet(&bb);
    if (!inplace) freet(&y);
}

static void test_layer_norm(void **state) {
    (void)state;
    run_ln(3, (int64_t[]){3, 5, 77}, F32, false, false, F32, 0, false);
    run_ln(3, (int64_t[]){3, 5, 77}, F32, true, true, F32, 4, false); /* offset mean: no E[x²]−μ² cancellation */
    run_ln(3, (int64_t[]){2, 33, 3072}, BF16, false, false, BF16, 0, false); /* FLUX pre-modulation norm */
    run_ln(3, (int64_t[]){2, 33, 3072}, BF16, true, true, F32, 1, false);
    run_ln(2, (int64_t[]){17, 5120}, F32, true, false, BF16, 0, true);
    run_ln(2, (int64_t[]){17, 200}, BF16, false, true, BF16, 0, true);
}

static void run_gn(int rank, const int64_t *shape, int groups, qd_dtype xdt, bool affine, qd_dtype ydt, float offset) {
    qd_tensor x = rnd(xdt, rank, shape, offset - 1, offset + 1);
    int64_t N = shape[0], C = shape[1], n = qd_tensor_elements(&x), S = n / (N * C), cg = C / groups;
    qd_tensor w = affine ? rnd(xdt, 1, &C, 0.5f, 1.5f) : (qd_tensor){0}, bb = affine ? rnd(xdt, 1, &C, -1, 1) : (qd_tensor){0};
    qd_tensor y = mk(ydt, rank, shape);
    double *ref = dvec(n);
    float eps = 1e-6f;
    for (int64_t b = 0; b < N; b++) {
        for (int64_t g = 0; g < groups; g++) {
            int64_t o = (b * C + g * cg) * S, m = cg * S;
            double mean = 0, var = 0;
            for (int64_t i = 0; i < m; i++) mean += get(&x, o + i);
            mean /= (double)m;
            for (int64_t i = 0; i < m; i++) var += (get(&x, o + i) - mean) * (get(&x, o + i) - mean);
            double rs = 1.0 / sqrt(var / (double)m + eps);
            for (int64_t i = 0; i < m; i++) {
                int64_t c = g * cg + i / S;
                ref[o + i] = (get(&x, o + i) - mean) * rs * (affine ? get(&w, c) : 1.0) + (affine ? get(&bb, c) : 0.0);
            }
        }
    }
    qd_status s = be->ops->group_norm(be, &x, groups, affine ? &w : NULL, affine ? &bb : NULL, eps, &y);
    if (s) fail_msg("group_norm: %s", qd_last_error());
    expect_close("group_norm", &y, ref, tol_for(y.dtype));
    free(ref);
    freet(&x), freet(&y);
    if (affine) freet(&w), freet(&bb);
}

static void test_group_norm(void **state) {
    (void)state;
    run_gn(4, (int64_t[]){2, 64, 9, 11}, 32, F32, true, F32, 0);
    run_gn(5, (int64_t[]){1, 32, 3, 5, 7}, 8, F32, false, F32, 0);
    run_gn(4, (int64_t[]){1, 128, 16, 16}, 32, BF16, true, BF16, 0); /* a VAE block */
    run_gn(4, (int64_t[]){1, 4, 100, 100}, 2, F32, true, F32, 3);    /* groups of 20000: chunks merged */
    run_gn(4, (int64_t[]){2, 6, 5, 3}, 6, BF16, false, F32, 0);
    run_gn(3, (int64_t[]){3, 10, 1}, 5, F32, true, F32, 0);
    /* errors */
    qd_tensor x = rnd(F32, 4, (int64_t[]){1, 10, 2, 2}, -1, 1), y = mk(F32, 4, (int64_t[]){1, 10, 2, 2});
    expect_fail(be->ops->group_norm(be, &x, 3, NULL, NULL, 1e-6f, &y), "groups must divide");
    qd_tensor w = rnd(F32, 1, (int64_t[]){9}, -1, 1);
    expect_fail(be->ops->group_norm(be, &x, 5, &w, NULL, 1e-6f, &y), "weight must be [10]");
    freet(&x), freet(&y), freet(&w);
}

static void test_norm_errors(void **state) {
    (void)state;
    qd_tensor x = rnd(F32, 2, (int64_t[]){3, 8}, -1, 1), y = mk(F32, 2, (int64_t[]){3, 9}), w = rnd(F32, 1, (int64_t[]){7}, -1, 1);
    expect_fail(be->ops->rms_norm(be, &x, NULL, 1e-6f, &y), "cpu rms_norm");
    freet(&y);
    y = mk(F32, 2, (int64_t[]){3, 8});
    expect_fail(be->ops->rms_norm(be, &x, &w, 1e-6f, &y), "weight must be [8]");
    expect_fail(be->ops->layer_norm(be, &x, NULL, &w, 1e-6f, &y), "bias must be [8]");
    expect_fail(be->ops->layer_norm(be, &x, NULL, NULL, -1.0f, &y), "eps");
    qd_tensor yb = x;
    yb.dtype = BF16; /* same buffer, another dtype */
    expect_fail(be->ops->rms_norm(be, &x, NULL, 1e-6f, &yb), "in place");
    freet(&x), freet(&y), freet(&w);
}

/* ------------------------------------------------------------------------------------------------ */
/* rope                                                                                              */

static void run_rope(int64_t B, int64_t L, int64_t H, int64_t D, qd_rope_mode mode, qd_dtype xdt, qd_dtype ydt, bool inplace) {
    qd_tensor x = rnd(xdt, 4, (int64_t[]){B, L, H, D}, -2, 2);
    qd_tensor cs = mk(F32, 2, (int64_t[]){L, D / 2}), sn = mk(F32, 2, (int64_t[]){L, D / 2});
    for (int64_t i = 0; i < L * (D / 2); i++) {
        float ang = qt_rand_uniform(&rng, -7, 7);
        ((float *)cs.data)[i] = cosf(ang);
        ((float *)sn.data)[i] = sinf(ang);
    }
    int64_t n = B * L * H * D;
    double *ref = dvec(n);
    for (int64_t r = 0; r < B * L * H; r++) {
        int64_t l = (r / H) % L;
        for (int64_t i = 0; i < D / 2; i++) {
            int64_t a = mode == QD_ROPE_INTERLEAVED ? 2 * i : i, b = mode == QD_ROPE_INTERLEAVED ? 2 * i + 1 : i + D / 2;
            double c = ((float *)cs.data)[l * (D / 2) + i], s = ((float *)sn.data)[l * (D / 2) + i];
            double xa = get(&x, r * D + a), xb = get(&x, r * D + b);
            ref[r * D + a] = xa * c - xb * s;
            ref[r * D + b] = xb * c + xa * s;
        }
    }
    qd_tensor y = inplace ? x : mk(ydt, 4, (int64_t[]){B, L, H, D});
    qd_status s = be->ops->rope(be, &x, &cs, &sn, mode, &y);
    if (s) fail_msg("rope: %s", qd_last_error());
    expect_close(mode == QD_ROPE_INTERLEAVED ? "rope interleaved" : "rope half", &y, ref, tol_for(y.dtype));
    free(ref);
    freet(&x), freet(&cs), freet(&sn);
    if (!inplace) freet(&y);
}

static void test_rope(void **state) {
    (void)state;
    qd_rope_mode modes[2] = {QD_ROPE_INTERLEAVED, QD_ROPE_HALF};
    for (int m = 0; m < 2; m++) {
        run_rope(2, 37, 3, 64, modes[m], F32, F32, false);
        run_rope(2, 11, 5, 22, modes[m], F32, F32, true); /* D/2 odd, tails of 16-lane vectors */
        run_rope(1, 128, 24, 128, modes[m], BF16, BF16, false);
        run_rope(1, 50, 24, 128, modes[m], BF16, BF16, true);
        run_rope(2, 9, 2, 2, modes[m], BF16, F32, false);
        run_rope(1, 7, 3, 56, modes[m], F16, F32, false);
    }
    qd_tensor x = rnd(F32, 4, (int64_t[]){1, 4, 2, 8}, -1, 1), c = mk(F32, 2, (int64_t[]){4, 3}), y = mk(F32, 4, (int64_t[]){1, 4, 2, 8});
    expect_fail(be->ops->rope(be, &x, &c, &c, QD_ROPE_HALF, &y), "cos must be [L, D/2] = [4, 4]");
    qd_tensor cb = mk(BF16, 2, (int64_t[]){4, 4});
    expect_fail(be->ops->rope(be, &x, &cb, &cb, QD_ROPE_HALF, &y), "must be F32");
    freet(&x), freet(&c), freet(&y), freet(&cb);
}

/* ------------------------------------------------------------------------------------------------ */
/* element-wise                                                                                      */

static double act_ref(qd_act_kind k, double x) {
    switch (k) {
    case QD_ACT_GELU_TANH: return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case QD_ACT_GELU_ERF: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case QD_ACT_SILU: return x / (1 + exp(-x));
    case QD_ACT_QUICK_GELU: return x / (1 + exp(-1.702 * x));
    case QD_ACT_RELU: return x > 0 ? x : 0;
    case QD_ACT_TANH: return tanh(x);
    }
    return NAN;
}

static const qd_act_kind all_acts[] = {QD_ACT_GELU_TANH, QD_ACT_GELU_ERF, QD_ACT_SILU, QD_ACT_QUICK_GELU, QD_ACT_RELU, QD_ACT_TANH};

static void test_activation(void **state) {
    (void)state;
    struct {
        qd_dtype x, y;
        bool inplace;
        int64_t n;
    } cfg[] = {{F32, F32, false, 1003}, {F32, F32, true, 4099}, {BF16, BF16, false, 20011}, {BF16, BF16, true, 517},
               {BF16, F32, false, 333}, {F32, BF16, false, 129},  {F16, F16, false, 77}};
    for (size_t a = 0; a < sizeof all_acts / sizeof all_acts[0]; a++) {
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
            qd_tensor x = rnd(cfg[c].x, 1, &cfg[c].n, -6, 6);
            /* a few large magnitudes: the exp-based forms must saturate, not overflow to NaN */
            put(&x, 0, 95.0f), put(&x, 1, -95.0f), put(&x, 2, 1e-3f), put(&x, 3, -2e-4f);
            double *ref = dvec(cfg[c].n);
            for (int64_t i = 0; i < cfg[c].n; i++) ref[i] = act_ref(all_acts[a], get(&x, i));
            qd_tensor y = cfg[c].inplace ? x : mk(cfg[c].y, 1, &cfg[c].n);
            qd_status s = be->ops->activation(be, all_acts[a], &x, &y);
            if (s) fail_msg("activation: %s", qd_last_error());
            char name[64];
            snprintf(name, sizeof name, "activation %d %s→%s", (int)all_acts[a], qd_dtype_name(cfg[c].x), qd_dtype_name(cfg[c].y));
            expect_close(name, &y, ref, y.dtype == F32 ? 1e-6 : TOL_HALF);
            /* f32 outputs: every element to 1e-5 of its own size, tails and near-zero arguments
               included (both paths use cancellation-free forms; what remains is the f32 rounding of
               the exponent's argument, ≤ |arg|·2^-23 ≈ 3e-6 at |x| = 6), and 1e-6 in L2 (measured
               ≤ 5e-8) — tight enough that a wrong constant (0.0447 for 0.044715) shows */
            if (y.dtype == F32) {
                double worst = 0;
                for (int64_t i = 0; i < cfg[c].n; i++) {
                    double r = ref[i], g = get(&y, i), e = fabs(g - r) / (fabs(r) + 1e-30);
                    if (fabs(g - r) > 1e-30 && e > worst) worst = e;
                    if (fabs(g - r) > 1e-5 * fabs(r) + 1e-30) fail_msg("%s: x = %.9g gives %.9g, expected %.9g", name, get(&x, i), g, r);
                }
                if (getenv("QT_VERBOSE")) print_message("  %-40s worst element %.3g\n", name, worst);
            }
            free(ref);
            freet(&x);
            if (!cfg[c].inplace) freet(&y);
        }
    }
    qd_tensor x = rnd(F32, 1, (int64_t[]){5}, -1, 1), y = mk(F32, 1, (int64_t[]){6});
    expect_fail(be->ops->activation(be, QD_ACT_SILU, &x, &y), "same shape");
    expect_fail(be->ops->activation(be, (qd_act_kind)99, &x, &x), "unknown activation");
    freet(&x), freet(&y);
}

static void run_gated(qd_act_kind k, bool gate_first, int rank, const int64_t *yshape, qd_dtype xdt, qd_dtype ydt, bool inplace) {
    int64_t xshape[QD_MAX_RANK];
    memcpy(xshape, yshape, sizeof(int64_t) * (size_t)rank);
    int64_t N = yshape[rank - 1];
    xshape[rank - 1] = 2 * N;
    qd_tensor x = rnd(xdt, rank, xshape, -4, 4);
    int64_t n = qd_tensor_elements(&x) / 2;
    double *ref = dvec(n);
    for (int64_t r = 0; r < n / N; r++) {
        for (int64_t i = 0; i < N; i++) {
            double a = get(&x, r * 2 * N + i), b = get(&x, r * 2 * N + N + i);
            ref[r * N + i] = gate_first ? act_ref(k, a) * b : a * act_ref(k, b);
        }
    }
    qd_tensor y;
    if (inplace) {
        y = x;
        qd_tensor_shape(&y, xdt, rank, yshape);
    } else {
        y = mk(ydt, rank, yshape);
    }
    qd_status s = be->ops->gated(be, k, gate_first, &x, &y);
    if (s) fail_msg("gated: %s", qd_last_error());
    expect_close(gate_first ? "gated (gate first)" : "gated (gate second)", &y, ref, tol_for(y.dtype));
    free(ref);
    freet(&x);
    if (!inplace) freet(&y);
}

static void test_gated(void **state) {
    (void)state;
    for (int gf = 0; gf < 2; gf++) {
        run_gated(QD_ACT_SILU, gf, 3, (int64_t[]){3, 5, 77}, F32, F32, false);
        run_gated(QD_ACT_GELU_TANH, gf, 3, (int64_t[]){3, 5, 77}, F32, F32, false);
        run_gated(QD_ACT_GELU_ERF, gf, 2, (int64_t[]){4, 300}, BF16, BF16, false);
        run_gated(QD_ACT_SILU, gf, 3, (int64_t[]){1, 64, 3072}, BF16, BF16, false); /* FLUX.2 / Z-Image MLP rows */
        run_gated(QD_ACT_SILU, gf, 2, (int64_t[]){33, 2500}, BF16, BF16, true);    /* in place, rows > one chunk */
        run_gated(QD_ACT_QUICK_GELU, gf, 2, (int64_t[]){7, 19}, F32, F32, true);
        run_gated(QD_ACT_RELU, gf, 2, (int64_t[]){7, 19}, BF16, F32, false);
    }
    qd_tensor x = rnd(F32, 2, (int64_t[]){3, 9}, -1, 1), y = mk(F32, 2, (int64_t[]){3, 4});
    expect_fail(be->ops->gated(be, QD_ACT_SILU, true, &x, &y), "[..., 2N]");
    freet(&x), freet(&y);
}

static void test_modulate_gated_add(void **state) {
    (void)state;
    struct {
        int64_t B, L, D;
        qd_dtype x, s, y;
        bool shift, rank3, inplace;
    } cfg[] = {{2, 37, 96, F32, F32, F32, true, false, false},   {2, 37, 96, F32, F32, F32, false, false, true},
               {1, 300, 3072, BF16, BF16, BF16, true, true, false}, {3, 5, 2500, BF16, F32, F32, true, false, false},
               {2, 9, 33, F16, BF16, BF16, true, false, true}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        int64_t B = cfg[c].B, L = cfg[c].L, D = cfg[c].D, n = B * L * D;
        qd_tensor x = rnd(cfg[c].x, 3, (int64_t[]){B, L, D}, -3, 3);
        int64_t vs3[3] = {B, 1, D};
        qd_tensor sc = cfg[c].rank3 ? rnd(cfg[c].s, 3, vs3, -1, 1) : rnd(cfg[c].s, 2, (int64_t[]){B, D}, -1, 1);
        qd_tensor sh = cfg[c].rank3 ? rnd(cfg[c].s, 3, vs3, -1, 1) : rnd(cfg[c].s, 2, (int64_t[]){B, D}, -1, 1);
        double *ref = dvec(n);
        for (int64_t i = 0; i < n; i++) {
            int64_t b = i / (L * D), d = i % D;
            ref[i] = get(&x, i) * (1 + get(&sc, b * D + d)) + (cfg[c].shift ? get(&sh, b * D + d) : 0);
        }
        qd_tensor y = cfg[c].inplace ? x : mk(cfg[c].y, 3, (int64_t[]){B, L, D});
        qd_status s = be->ops->modulate(be, &x, &sc, cfg[c].shift ? &sh : NULL, &y);
        if (s) fail_msg("modulate: %s", qd_last_error());
        expect_close("modulate", &y, ref, tol_for(y.dtype));

        /* gated_add: y = r + gate·x, with and without the gate; y shares r's buffer in the in-place cases */
        for (int withg = 0; withg < 2; withg++) {
            qd_tensor r = rnd(cfg[c].x, 3, (int64_t[]){B, L, D}, -5, 5), xx = rnd(cfg[c].x, 3, (int64_t[]){B, L, D}, -2, 2);
            for (int64_t i = 0; i < n; i++) {
                int64_t b = i / (L * D), d = i % D;
                ref[i] = get(&r, i) + (withg ? get(&sc, b * D + d) : 1.0) * get(&xx, i);
            }
            qd_tensor yy = cfg[c].inplace ? r : mk(cfg[c].y, 3, (int64_t[]){B, L, D});
            s = be->ops->gated_add(be, &r, &xx, withg ? &sc : NULL, &yy);
            if (s) fail_msg("gated_add: %s", qd_last_error());
            expect_close("gated_add", &yy, ref, tol_for(yy.dtype));
            freet(&r), freet(&xx);
            if (!cfg[c].inplace) freet(&yy);
        }
        free(ref);
        freet(&x), freet(&sc), freet(&sh);
        if (!cfg[c].inplace) freet(&y);
    }
    qd_tensor x = rnd(F32, 3, (int64_t[]){2, 3, 4}, -1, 1), y = mk(F32, 3, (int64_t[]){2, 3, 4}), sc = rnd(F32, 2, (int64_t[]){2, 5}, -1, 1);
    expect_fail(be->ops->modulate(be, &x, &sc, NULL, &y), "scale must be [B, D] = [2, 4]");
    expect_fail(be->ops->gated_add(be, &x, &x, &sc, &y), "gate must be [B, D]");
    freet(&x), freet(&y), freet(&sc);
}

/* ------------------------------------------------------------------------------------------------ */
/* fused ops: norm_modulate and rms_norm_rope are, bit for bit, the two ops they replace (norm into y,
   then modulate / rope on y) — the promise that lets the models switch without changing an output. The
   two-op compositions are checked against double references above; here every byte is compared.     */

static void expect_same_bytes(const char *what, const qd_tensor *a, const qd_tensor *b) {
    size_t n = qd_tensor_bytes(a);
    assert_int_equal(n, qd_tensor_bytes(b));
    if (memcmp(a->data, b->data, n)) {
        int64_t i = 0, e = qd_tensor_elements(a);
        while (i < e && get(a, i) == get(b, i)) i++;
        fail_msg("%s: differs from the two-op composition, first at element %lld (%.9g vs %.9g)", what, (long long)i,
                 i < e ? get(a, i) : 0.0, i < e ? get(b, i) : 0.0);
    }
}

static void test_norm_modulate(void **state) {
    (void)state;
    struct {
        bool layer;
        int64_t B, L, D;
        qd_dtype x, w, s, y; /* w: 0 for none */
        bool shift, inplace;
    } cfg[] = {
        {true, 1, 37, 3072, BF16, 0, BF16, BF16, true, false},  {true, 2, 9, 96, F32, 0, F32, F32, true, true},
        {true, 3, 5, 1031, BF16, 0, F32, BF16, false, false},   {true, 2, 4, 77, F16, 0, F16, F16, true, true},
        {false, 1, 17, 3840, BF16, F32, BF16, BF16, false, false}, {false, 2, 6, 200, F32, 0, F32, F32, true, false},
        {false, 3, 7, 96, BF16, BF16, BF16, BF16, true, true},  {false, 2, 5, 130, F16, F16, F32, F16, true, false},
        {true, 2, 3, 40, BF16, 0, BF16, F32, true, false}, /* bf16 in, f32 out: the intermediate is f32 */
        {false, 4, 1, 64, F32, F32, F32, BF16, true, false},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        int64_t B = cfg[c].B, L = cfg[c].L, D = cfg[c].D;
        qd_tensor x = rnd(cfg[c].x, 3, (int64_t[]){B, L, D}, -3, 3), sc = rnd(cfg[c].s, 2, (int64_t[]){B, D}, -1, 1);
        qd_tensor sh = rnd(cfg[c].s, 2, (int64_t[]){B, D}, -1, 1), w = {0};
        if (cfg[c].w) w = rnd(cfg[c].w, 1, (int64_t[]){D}, 0.5f, 1.5f);
        const qd_tensor *wp = cfg[c].w ? &w : NULL, *shp = cfg[c].shift ? &sh : NULL;
        /* the composition: the norm into y, then modulate on y in place (as flux.c / zimage.c did) */
        qd_tensor want = mk(cfg[c].y, 3, (int64_t[]){B, L, D});
        qd_status s = cfg[c].layer ? be->ops->layer_norm(be, &x, NULL, NULL, 1e-6f, &want) : be->ops->rms_norm(be, &x, wp, 1e-6f, &want);
        if (!s) s = be->ops->modulate(be, &want, &sc, shp, &want);
        if (s) fail_msg("composition: %s", qd_last_error());
        qd_tensor y = cfg[c].inplace ? x : mk(cfg[c].y, 3, (int64_t[]){B, L, D});
        s = be->ops->norm_modulate(be, cfg[c].layer ? QD_NORM_LAYER : QD_NORM_RMS, &x, wp, 1e-6f, &sc, shp, &y);
        if (s) fail_msg("norm_modulate: %s", qd_last_error());
        char what[96];
        snprintf(what, sizeof what, "norm_modulate case %zu", c);
        expect_same_bytes(what, &y, &want);
        freet(&x), freet(&sc), freet(&sh), freet(&w), freet(&want);
        if (!cfg[c].inplace) freet(&y);
    }
    /* errors name the op and what was expected */
    qd_tensor x = rnd(F32, 3, (int64_t[]){2, 3, 8}, -1, 1), y = mk(F32, 3, (int64_t[]){2, 3, 8}), w = rnd(F32, 1, (int64_t[]){8}, -1, 1);
    qd_tensor sc = rnd(F32, 2, (int64_t[]){2, 8}, -1, 1), bad = rnd(F32, 2, (int64_t[]){2, 7}, -1, 1), v = rnd(F32, 1, (int64_t[]){8}, -1, 1);
    qd_tensor vy = mk(F32, 1, (int64_t[]){8}), w7 = rnd(F32, 1, (int64_t[]){7}, -1, 1);
    expect_fail(be->ops->norm_modulate(be, QD_NORM_LAYER, &x, &w, 1e-6f, &sc, NULL, &y), "w must be NULL");
    expect_fail(be->ops->norm_modulate(be, (qd_norm_kind)7, &x, NULL, 1e-6f, &sc, NULL, &y), "unknown norm kind 7");
    expect_fail(be->ops->norm_modulate(be, QD_NORM_RMS, &x, NULL, 1e-6f, &bad, NULL, &y), "scale must be [B, D] = [2, 8]");
    expect_fail(be->ops->norm_modulate(be, QD_NORM_RMS, &x, NULL, 1e-6f, &sc, &bad, &y), "shift must be [B, D] = [2, 8]");
    expect_fail(be->ops->norm_modulate(be, QD_NORM_RMS, &x, &w7, 1e-6f, &sc, NULL, &y), "weight must be [8]");
    expect_fail(be->ops->norm_modulate(be, QD_NORM_RMS, &v, NULL, 1e-6f, &sc, NULL, &vy), "x must be [B, L, D]");
    expect_fail(be->ops->norm_modulate(be, QD_NORM_RMS, &x, NULL, -1.0f, &sc, NULL, &y), "eps");
    expect_fail(be->ops->norm_modulate(be, QD_NORM_RMS, &x, NULL, 1e-6f, NULL, NULL, &y), "scale is required");
    freet(&x), freet(&y), freet(&w), freet(&sc), freet(&bad), freet(&v), freet(&vy), freet(&w7);
}

static void test_rms_norm_rope(void **state) {
    (void)state;
    struct {
        int64_t B, L, H, D;
        qd_rope_mode mode;
        qd_dtype x, w, y; /* w: 0 for none */
        bool inplace;
    } cfg[] = {
        {1, 37, 24, 128, QD_ROPE_INTERLEAVED, BF16, F32, BF16, true}, /* FLUX / Z-Image q, k as the models call it */
        {2, 9, 3, 128, QD_ROPE_HALF, BF16, BF16, BF16, false},        {2, 11, 5, 22, QD_ROPE_INTERLEAVED, F32, F32, F32, true},
        {3, 4, 2, 30, QD_ROPE_HALF, F32, 0, F32, false},              {1, 7, 3, 56, QD_ROPE_INTERLEAVED, F16, F16, F16, true},
        {2, 5, 4, 64, QD_ROPE_INTERLEAVED, BF16, F32, F32, false},    {1, 3, 2, 2, QD_ROPE_HALF, F32, F32, BF16, false},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        int64_t B = cfg[c].B, L = cfg[c].L, H = cfg[c].H, D = cfg[c].D;
        qd_tensor x = rnd(cfg[c].x, 4, (int64_t[]){B, L, H, D}, -3, 3), w = {0};
        if (cfg[c].w) w = rnd(cfg[c].w, 1, (int64_t[]){D}, 0.5f, 1.5f);
        qd_tensor cs = mk(F32, 2, (int64_t[]){L, D / 2}), sn = mk(F32, 2, (int64_t[]){L, D / 2});
        for (int64_t i = 0; i < L * (D / 2); i++) {
            float ang = qt_rand_uniform(&rng, -7, 7);
            ((float *)cs.data)[i] = cosf(ang);
            ((float *)sn.data)[i] = sinf(ang);
        }
        const qd_tensor *wp = cfg[c].w ? &w : NULL;
        qd_tensor want = mk(cfg[c].y, 4, (int64_t[]){B, L, H, D});
        qd_status s = be->ops->rms_norm(be, &x, wp, 1e-6f, &want);
        if (!s) s = be->ops->rope(be, &want, &cs, &sn, cfg[c].mode, &want);
        if (s) fail_msg("composition: %s", qd_last_error());
        qd_tensor y = cfg[c].inplace ? x : mk(cfg[c].y, 4, (int64_t[]){B, L, H, D});
        s = be->ops->rms_norm_rope(be, &x, wp, 1e-6f, &cs, &sn, cfg[c].mode, &y);
        if (s) fail_msg("rms_norm_rope: %s", qd_last_error());
        char what[96];
        snprintf(what, sizeof what, "rms_norm_rope case %zu", c);
        expect_same_bytes(what, &y, &want);
        freet(&x), freet(&w), freet(&cs), freet(&sn), freet(&want);
        if (!cfg[c].inplace) freet(&y);
    }
    qd_tensor x = rnd(F32, 4, (int64_t[]){1, 3, 2, 8}, -1, 1), y = mk(F32, 4, (int64_t[]){1, 3, 2, 8});
    qd_tensor cs = rnd(F32, 2, (int64_t[]){3, 4}, -1, 1), cb = rnd(F32, 2, (int64_t[]){3, 5}, -1, 1), w7 = rnd(F32, 1, (int64_t[]){7}, -1, 1);
    qd_tensor x3 = rnd(F32, 3, (int64_t[]){3, 2, 8}, -1, 1), y3 = mk(F32, 3, (int64_t[]){3, 2, 8});
    expect_fail(be->ops->rms_norm_rope(be, &x, &w7, 1e-6f, &cs, &cs, QD_ROPE_INTERLEAVED, &y), "weight must be [D] = [8]");
    expect_fail(be->ops->rms_norm_rope(be, &x, NULL, 1e-6f, &cb, &cs, QD_ROPE_INTERLEAVED, &y), "cos must be [L, D/2] = [3, 4]");
    expect_fail(be->ops->rms_norm_rope(be, &x, NULL, 1e-6f, &cs, NULL, QD_ROPE_INTERLEAVED, &y), "sin is required");
    expect_fail(be->ops->rms_norm_rope(be, &x3, NULL, 1e-6f, &cs, &cs, QD_ROPE_INTERLEAVED, &y3), "[B, L, H, D]");
    expect_fail(be->ops->rms_norm_rope(be, &x, NULL, 1e-6f, &cs, &cs, (qd_rope_mode)5, &y), "unknown mode 5");
    expect_fail(be->ops->rms_norm_rope(be, &x, NULL, NAN, &cs, &cs, QD_ROPE_INTERLEAVED, &y), "eps");
    freet(&x), freet(&y), freet(&cs), freet(&cb), freet(&w7), freet(&x3), freet(&y3);
}

static void test_add_mul(void **state) {
    (void)state;
    struct {
        int ra, rc;
        int64_t a[4], c[4];
        qd_dtype at, ct, yt;
        bool inplace;
    } cfg[] = {
        {3, 1, {2, 37, 96}, {96}, F32, F32, F32, false},
        {3, 3, {2, 37, 96}, {2, 37, 96}, BF16, BF16, BF16, false},
        {3, 2, {2, 37, 96}, {37, 96}, F32, BF16, F32, true},
        {3, 2, {4, 700, 5}, {1, 5}, BF16, F32, BF16, false}, /* leading 1 dropped; tiny rows */
        {2, 1, {3, 3000}, {3000}, F32, F32, BF16, false},
        {2, 1, {9, 7}, {1}, F32, F32, F32, true},
        {4, 3, {2, 3, 40, 40}, {3, 40, 40}, F16, F32, F32, false},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        for (int mul = 0; mul < 2; mul++) {
            qd_tensor a = rnd(cfg[c].at, cfg[c].ra, cfg[c].a, -3, 3), cc = rnd(cfg[c].ct, cfg[c].rc, cfg[c].c, -2, 2);
            int64_t n = qd_tensor_elements(&a), nc = qd_tensor_elements(&cc);
            double *ref = dvec(n);
            for (int64_t i = 0; i < n; i++) ref[i] = mul ? get(&a, i) * get(&cc, i % nc) : get(&a, i) + get(&cc, i % nc);
            qd_tensor y = cfg[c].inplace ? a : mk(cfg[c].yt, cfg[c].ra, cfg[c].a);
            qd_status s = mul ? be->ops->mul(be, &a, &cc, &y) : be->ops->add(be, &a, &cc, &y);
            if (s) fail_msg("%s: %s", mul ? "mul" : "add", qd_last_error());
            expect_close(mul ? "mul" : "add", &y, ref, tol_for(y.dtype));
            free(ref);
            freet(&a), freet(&cc);
            if (!cfg[c].inplace) freet(&y);
        }
    }
    qd_tensor a = rnd(F32, 2, (int64_t[]){3, 4}, -1, 1), c = rnd(F32, 1, (int64_t[]){3}, -1, 1), y = mk(F32, 2, (int64_t[]){3, 4});
    expect_fail(be->ops->add(be, &a, &c, &y), "must be a suffix");
    freet(&a), freet(&c), freet(&y);
}

static void test_softmax(void **state) {
    (void)state;
    struct {
        int64_t rows, D;
        qd_dtype x, y;
        bool inplace;
    } cfg[] = {{7, 33, F32, F32, false}, {3, 1000, F32, F32, true}, {50, 4096, BF16, BF16, false}, {5, 17, BF16, F32, false},
               {6, 300, F16, F16, true}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        int64_t R = cfg[c].rows, D = cfg[c].D;
        qd_tensor x = rnd(cfg[c].x, 2, (int64_t[]){R, D}, -8, 8);
        /* row 1: all −inf (a fully masked row gives zeros); row 2: some −inf */
        for (int64_t i = 0; i < D; i++) put(&x, D + i, -INFINITY);
        for (int64_t i = 0; i < D; i += 3) put(&x, 2 * D + i, -INFINITY);
        double *ref = dvec(R * D);
        for (int64_t r = 0; r < R; r++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t i = 0; i < D; i++) mx = fmax(mx, get(&x, r * D + i));
            if (mx == -INFINITY) continue;
            for (int64_t i = 0; i < D; i++) sum += exp(get(&x, r * D + i) - mx);
            for (int64_t i = 0; i < D; i++) ref[r * D + i] = exp(get(&x, r * D + i) - mx) / sum;
        }
        qd_tensor y = cfg[c].inplace ? x : mk(cfg[c].y, 2, (int64_t[]){R, D});
        qd_status s = be->ops->softmax(be, &x, &y);
        if (s) fail_msg("softmax: %s", qd_last_error());
        expect_close("softmax", &y, ref, tol_for(y.dtype));
        for (int64_t i = 0; i < D; i++) {
            if (get(&y, D + i) != 0) fail_msg("softmax: a row of −inf must give zeros");
        }
        free(ref);
        freet(&x);
        if (!cfg[c].inplace) freet(&y);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* conv and upsample                                                                                 */

typedef struct {
    int64_t N, C, T, H, W, O, kt, kh, kw, st, sh, sw, pt, ph, pw;
    bool causal, bias;
    qd_dtype x, w, y;
} conv_case;

static void run_conv(const char *name, const conv_case *c, bool is3d) {
    int rank = is3d ? 5 : 4;
    int64_t T = is3d ? c->T : 1, kt = is3d ? c->kt : 1;
    int64_t xs5[5] = {c->N, c->C, T, c->H, c->W}, ws5[5] = {c->O, c->C, kt, c->kh, c->kw};
    int64_t xs4[4] = {c->N, c->C, c->H, c->W}, ws4[4] = {c->O, c->C, c->kh, c->kw};
    qd_tensor x = rnd(c->x, rank, is3d ? xs5 : xs4, -1, 1), w = rnd(c->w, rank, is3d ? ws5 : ws4, -0.5f, 0.5f);
    qd_tensor bias = c->bias ? rnd(F32, 1, &c->O, -1, 1) : (qd_tensor){0};
    int64_t pt0 = is3d ? (c->causal ? kt - 1 : c->pt) : 0, pt1 = is3d ? (c->causal ? 0 : c->pt) : 0;
    int64_t st = is3d ? c->st : 1;
    int64_t To = (T + pt0 + pt1 - kt) / st + 1, Ho = (c->H + 2 * c->ph - c->kh) / c->sh + 1, Wo = (c->W + 2 * c->pw - c->kw) / c->sw + 1;
    int64_t ys5[5] = {c->N, c->O, To, Ho, Wo}, ys4[4] = {c->N, c->O, Ho, Wo};
    qd_tensor y = mk(c->y, rank, is3d ? ys5 : ys4);
    int64_t n = qd_tensor_elements(&y);
    double *ref = dvec(n);
    for (int64_t b = 0; b < c->N; b++)
        for (int64_t o = 0; o < c->O; o++)
            for (int64_t to = 0; to < To; to++)
                for (int64_t ho = 0; ho < Ho; ho++)
                    for (int64_t wo = 0; wo < Wo; wo++) {
                        double acc = c->bias ? get(&bias, o) : 0;
                        for (int64_t ci = 0; ci < c->C; ci++)
                            for (int64_t dt = 0; dt < kt; dt++)
                                for (int64_t dh = 0; dh < c->kh; dh++)
                                    for (int64_t dw = 0; dw < c->kw; dw++) {
                                        int64_t t = to * st - pt0 + dt, h = ho * c->sh - c->ph + dh, ww = wo * c->sw - c->pw + dw;
                                        if (t < 0 || t >= T || h < 0 || h >= c->H || ww < 0 || ww >= c->W) continue;
                                        acc += get(&x, (((b * c->C + ci) * T + t) * c->H + h) * c->W + ww) *
                                               get(&w, (((o * c->C + ci) * kt + dt) * c->kh + dh) * c->kw + dw);
                                    }
                        ref[(((b * c->O + o) * To + to) * Ho + ho) * Wo + wo] = acc;
                    }
    qd_conv_args args = {.stride = {st, c->sh, c->sw}, .pad = {c->causal ? (kt - 1) / 2 : c->pt, c->ph, c->pw}, .causal_time = c->causal};
    qd_status s = is3d ? be->ops->conv3d(be, &x, &w, c->bias ? &bias : NULL, &args, &y)
                       : be->ops->conv2d(be, &x, &w, c->bias ? &bias : NULL, &args, &y);
    if (s) fail_msg("%s: %s", name, qd_last_error());
    /* bf16 × bf16 convs accumulate in f32 but their output is bf16 or f32: f32 output only rounds once */
    expect_close(name, &y, ref, tol_for(y.dtype));
    free(ref);
    freet(&x), freet(&w), freet(&y);
    if (c->bias) freet(&bias);
}

static void test_conv2d(void **state) {
    (void)state;
    run_conv("conv2d 3x3", &(conv_case){.N = 2, .C = 5, .H = 13, .W = 11, .O = 7, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1,
                                        .pw = 1, .bias = true, .x = F32, .w = F32, .y = F32}, false);
    run_conv("conv2d stride 2", &(conv_case){.N = 1, .C = 6, .H = 15, .W = 12, .O = 4, .kh = 3, .kw = 3, .sh = 2, .sw = 2, .ph = 0,
                                             .pw = 1, .x = F32, .w = F32, .y = F32}, false);
    run_conv("conv2d 1x1 bf16", &(conv_case){.N = 1, .C = 16, .H = 9, .W = 10, .O = 12, .kh = 1, .kw = 1, .sh = 1, .sw = 1,
                                             .bias = true, .x = BF16, .w = BF16, .y = BF16}, false);
    run_conv("conv2d bf16→f32", &(conv_case){.N = 1, .C = 32, .H = 16, .W = 16, .O = 32, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                                             .ph = 1, .pw = 1, .bias = true, .x = BF16, .w = BF16, .y = F32}, false);
    run_conv("conv2d mixed", &(conv_case){.N = 2, .C = 3, .H = 8, .W = 7, .O = 5, .kh = 2, .kw = 4, .sh = 1, .sw = 3, .ph = 2,
                                          .pw = 0, .x = F32, .w = BF16, .y = BF16}, false);
    /* a VAE-sized layer: 64 → 64 channels, 3×3 at 32×32 */
    run_conv("conv2d vae", &(conv_case){.N = 1, .C = 64, .H = 32, .W = 32, .O = 64, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1,
                                        .pw = 1, .bias = true, .x = BF16, .w = BF16, .y = BF16}, false);
    run_conv("conv2d wide", &(conv_case){.N = 1, .C = 3, .H = 4, .W = 150, .O = 8, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1,
                                         .pw = 1, .bias = true, .x = F16, .w = F32, .y = F32}, false);
    /* errors */
    qd_tensor x = rnd(F32, 4, (int64_t[]){1, 3, 8, 8}, -1, 1), w = rnd(F32, 4, (int64_t[]){4, 3, 3, 3}, -1, 1);
    qd_tensor y = mk(F32, 4, (int64_t[]){1, 4, 8, 7});
    qd_conv_args a = {.stride = {1, 1, 1}, .pad = {0, 1, 1}};
    expect_fail(be->ops->conv2d(be, &x, &w, NULL, &a, &y), "y must be [1, 4, 8, 8]");
    qd_tensor w2 = rnd(F32, 4, (int64_t[]){4, 2, 3, 3}, -1, 1);
    expect_fail(be->ops->conv2d(be, &x, &w2, NULL, &a, &y), "same C");
    a.stride[2] = 0;
    expect_fail(be->ops->conv2d(be, &x, &w, NULL, &a, &y), "strides must be");
    freet(&x), freet(&w), freet(&y), freet(&w2);
}

static void test_conv3d(void **state) {
    (void)state;
    run_conv("conv3d causal", &(conv_case){.N = 1, .C = 4, .T = 5, .H = 9, .W = 8, .O = 6, .kt = 3, .kh = 3, .kw = 3, .st = 1,
                                           .sh = 1, .sw = 1, .ph = 1, .pw = 1, .causal = true, .bias = true, .x = F32, .w = F32,
                                           .y = F32}, true);
    run_conv("conv3d causal bf16", &(conv_case){.N = 2, .C = 8, .T = 4, .H = 6, .W = 7, .O = 8, .kt = 3, .kh = 3, .kw = 3,
                                                .st = 1, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .causal = true, .bias = true,
                                                .x = BF16, .w = BF16, .y = BF16}, true);
    run_conv("conv3d symmetric", &(conv_case){.N = 1, .C = 3, .T = 6, .H = 7, .W = 5, .O = 4, .kt = 3, .kh = 1, .kw = 3,
                                              .st = 2, .sh = 1, .sw = 2, .pt = 1, .ph = 0, .pw = 1, .x = F32, .w = F32,
                                              .y = F32}, true);
    /* Wan's time_conv: (3, 1, 1) causal, C → 2C */
    run_conv("conv3d time_conv", &(conv_case){.N = 1, .C = 8, .T = 3, .H = 5, .W = 5, .O = 16, .kt = 3, .kh = 1, .kw = 1,
                                              .st = 1, .sh = 1, .sw = 1, .causal = true, .bias = true, .x = BF16, .w = BF16,
                                              .y = F32}, true);

    /* models.md §9.2: on a single frame a 3×3×3 causal conv is exactly the 2-D conv with the last temporal tap */
    qd_tensor x = rnd(F32, 5, (int64_t[]){1, 6, 1, 7, 9}, -1, 1), w = rnd(F32, 5, (int64_t[]){5, 6, 3, 3, 3}, -1, 1);
    qd_tensor y = mk(F32, 5, (int64_t[]){1, 5, 1, 7, 9});
    qd_conv_args a = {.stride = {1, 1, 1}, .pad = {1, 1, 1}, .causal_time = true};
    assert_int_equal(be->ops->conv3d(be, &x, &w, NULL, &a, &y), QD_OK);
    qd_tensor x2 = x, w2 = mk(F32, 4, (int64_t[]){5, 6, 3, 3}), y2 = mk(F32, 4, (int64_t[]){1, 5, 7, 9});
    qd_tensor_shape(&x2, F32, 4, (int64_t[]){1, 6, 7, 9});
    for (int64_t oc = 0; oc < 30; oc++) memcpy((float *)w2.data + oc * 9, (float *)w.data + oc * 27 + 18, 9 * sizeof(float));
    assert_int_equal(be->ops->conv2d(be, &x2, &w2, NULL, &a, &y2), QD_OK);
    double *ref = dvec(5 * 63);
    for (int64_t i = 0; i < 5 * 63; i++) ref[i] = get(&y2, i);
    expect_close("causal single frame = 2-D conv of tap 2", &y, ref, TOL_F32);
    free(ref);
    a.pad[0] = 2;
    expect_fail(be->ops->conv3d(be, &x, &w, NULL, &a, &y), "causal_time");
    freet(&x), freet(&w), freet(&y), freet(&w2), freet(&y2);
}

static void test_upsample(void **state) {
    (void)state;
    struct {
        int rank;
        int64_t s[5];
        int f;
        qd_dtype x, y;
    } cfg[] = {{4, {2, 3, 5, 7}, 2, F32, F32}, {4, {1, 4, 9, 6}, 2, BF16, BF16}, {5, {1, 2, 3, 4, 5}, 3, BF16, F32},
               {3, {3, 1, 1}, 4, F32, BF16}, {2, {3, 5}, 1, F16, F16}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        qd_tensor x = rnd(cfg[c].x, cfg[c].rank, cfg[c].s, -4, 4);
        int64_t ys[5];
        memcpy(ys, cfg[c].s, sizeof ys);
        int r = cfg[c].rank, f = cfg[c].f;
        ys[r - 2] *= f, ys[r - 1] *= f;
        qd_tensor y = mk(cfg[c].y, r, ys);
        assert_int_equal(be->ops->upsample_nearest(be, &x, f, &y), QD_OK);
        int64_t H = cfg[c].s[r - 2], W = cfg[c].s[r - 1], n = qd_tensor_elements(&y);
        for (int64_t i = 0; i < n; i++) {
            int64_t wj = i % (W * f), hi = (i / (W * f)) % (H * f), pl = i / (W * f * H * f);
            double want = get(&x, (pl * H + hi / f) * W + wj / f);
            if (cfg[c].y == BF16 && cfg[c].x != BF16) want = round_bf16(want);
            if (get(&y, i) != want) fail_msg("upsample: element %lld is %g, expected %g", (long long)i, get(&y, i), want);
        }
        freet(&x), freet(&y);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* layout                                                                                            */

static void run_permute(int r, const int64_t *xs, const int *perm, qd_dtype dt) {
    qd_tensor x = mk(dt, r, xs);
    int64_t n = qd_tensor_elements(&x);
    size_t esz = (size_t)qd_dtype_bits(dt) / 8;
    unsigned char *xb = x.data;
    for (size_t i = 0; i < (size_t)n * esz; i++) xb[i] = (unsigned char)qt_rand_u64(&rng);
    int64_t ysh[QD_MAX_RANK];
    for (int i = 0; i < r; i++) ysh[i] = xs[perm[i]];
    qd_tensor y = mk(dt, r, ysh);
    qd_status s = be->ops->permute(be, &x, perm, &y);
    if (s) fail_msg("permute: %s", qd_last_error());
    int64_t xst[QD_MAX_RANK], idx[QD_MAX_RANK] = {0};
    for (int i = r - 1, acc = 1; i >= 0; i--) xst[i] = acc, acc *= (int)xs[i];
    for (int64_t e = 0; e < n; e++) {
        int64_t rem = e, src = 0;
        for (int i = r - 1; i >= 0; i--) idx[i] = rem % ysh[i], rem /= ysh[i];
        for (int i = 0; i < r; i++) src += idx[i] * xst[perm[i]];
        if (memcmp((char *)y.data + (size_t)e * esz, xb + (size_t)src * esz, esz) != 0) {
            fail_msg("permute: element %lld differs (rank %d)", (long long)e, r);
        }
    }
    freet(&x), freet(&y);
}

static void test_permute(void **state) {
    (void)state;
    run_permute(4, (int64_t[]){2, 37, 24, 128}, (int[]){0, 2, 1, 3}, BF16);       /* [B, L, H, D] → [B, H, L, D] */
    run_permute(3, (int64_t[]){2, 64, 1000}, (int[]){0, 2, 1}, F32);              /* VAE: [N, C, HW] → [N, HW, C] */
    run_permute(3, (int64_t[]){2, 1000, 64}, (int[]){0, 2, 1}, BF16);
    run_permute(5, (int64_t[]){2, 3, 5, 7, 11}, (int[]){4, 2, 0, 3, 1}, F32);
    run_permute(5, (int64_t[]){1, 3, 1, 7, 2}, (int[]){3, 0, 4, 2, 1}, QD_DTYPE_I64);
    run_permute(2, (int64_t[]){33, 65}, (int[]){1, 0}, QD_DTYPE_U8);
    run_permute(3, (int64_t[]){4, 5, 6}, (int[]){0, 1, 2}, F32);                  /* identity */
    run_permute(4, (int64_t[]){3, 4, 5, 1}, (int[]){3, 2, 0, 1}, BF16);           /* innermost of size 1 */
    run_permute(1, (int64_t[]){17}, (int[]){0}, F32);
    /* random permutations of random small shapes */
    for (int t = 0; t < 40; t++) {
        int r = 1 + (int)(qt_rand_u64(&rng) % 5), perm[5];
        int64_t xs[5];
        for (int i = 0; i < r; i++) xs[i] = 1 + (int64_t)(qt_rand_u64(&rng) % 9), perm[i] = i;
        for (int i = r - 1; i > 0; i--) {
            int j = (int)(qt_rand_u64(&rng) % (uint64_t)(i + 1)), tmp = perm[i];
            perm[i] = perm[j], perm[j] = tmp;
        }
        run_permute(r, xs, perm, t % 2 ? F32 : BF16);
    }
    qd_tensor x = mk(F32, 2, (int64_t[]){3, 4}), y = mk(F32, 2, (int64_t[]){3, 4});
    expect_fail(be->ops->permute(be, &x, (int[]){1, 1}, &y), "permutation");
    expect_fail(be->ops->permute(be, &x, (int[]){1, 0}, &y), "perm[0]");
    freet(&x), freet(&y);
}

static void test_concat(void **state) {
    (void)state;
    for (int dim = -1; dim < 3; dim++) {
        int64_t base[3] = {3, 4, 5};
        int d = dim < 0 ? 2 : dim;
        int64_t sizes[3] = {2, 1, 7};
        qd_tensor xs[3];
        const qd_tensor *xp[3];
        int64_t total = 0;
        for (int k = 0; k < 3; k++) {
            int64_t sh[3] = {base[0], base[1], base[2]};
            sh[d] = sizes[k];
            xs[k] = rnd(k == 1 ? BF16 : BF16, 3, sh, -1, 1);
            xp[k] = &xs[k];
            total += sizes[k];
        }
        int64_t ysh[3] = {base[0], base[1], base[2]};
        ysh[d] = total;
        qd_tensor y = mk(BF16, 3, ysh);
        qd_status s = be->ops->concat(be, xp, 3, dim, &y);
        if (s) fail_msg("concat: %s", qd_last_error());
        int64_t n = qd_tensor_elements(&y);
        for (int64_t e = 0; e < n; e++) {
            int64_t i0 = e / (ysh[1] * ysh[2]), i1 = (e / ysh[2]) % ysh[1], i2 = e % ysh[2];
            int64_t idx[3] = {i0, i1, i2}, k = 0, at = idx[d];
            while (at >= sizes[k]) at -= sizes[k], k++;
            idx[d] = at;
            int64_t sh1 = d == 1 ? sizes[k] : base[1], sh2 = d == 2 ? sizes[k] : base[2];
            int64_t src = (idx[0] * sh1 + idx[1]) * sh2 + idx[2];
            if (((uint16_t *)y.data)[e] != ((uint16_t *)xs[k].data)[src]) fail_msg("concat dim %d: element %lld", dim, (long long)e);
        }
        for (int k = 0; k < 3; k++) freet(&xs[k]);
        freet(&y);
    }
    qd_tensor a = mk(F32, 2, (int64_t[]){2, 3}), b = mk(BF16, 2, (int64_t[]){2, 3}), y = mk(F32, 2, (int64_t[]){4, 3});
    const qd_tensor *ab[2] = {&a, &b};
    expect_fail(be->ops->concat(be, ab, 2, 0, &y), "input 1");
    ab[1] = &a;
    expect_fail(be->ops->concat(be, ab, 2, 1, &y), "input 0");
    expect_fail(be->ops->concat(be, ab, 2, 5, &y), "out of range");
    freet(&a), freet(&b), freet(&y);
}

static void test_embedding(void **state) {
    (void)state;
    qd_dtype tdts[] = {F32, BF16, F16}, ydts[] = {F32, BF16};
    for (int ti = 0; ti < 3; ti++) {
        for (int yi = 0; yi < 2; yi++) {
            for (int ii = 0; ii < 2; ii++) {
                int64_t V = 1000, D = 77;
                qd_tensor table = rnd(tdts[ti], 2, (int64_t[]){V, D}, -1, 1);
                qd_dtype idt = ii ? QD_DTYPE_I64 : QD_DTYPE_I32;
                qd_tensor ids = mk(idt, 2, (int64_t[]){3, 11});
                for (int64_t i = 0; i < 33; i++) {
                    int64_t id = (int64_t)(qt_rand_u64(&rng) % (uint64_t)V);
                    if (i == 0) id = V - 1;
                    if (i == 1) id = 0;
                    if (ii) ((int64_t *)ids.data)[i] = id;
                    else ((int32_t *)ids.data)[i] = (int32_t)id;
                }
                qd_tensor y = mk(ydts[yi], 3, (int64_t[]){3, 11, D});
                qd_status s = be->ops->embedding(be, &table, &ids, &y);
                if (s) fail_msg("embedding: %s", qd_last_error());
                for (int64_t i = 0; i < 33; i++) {
                    int64_t id = ii ? ((int64_t *)ids.data)[i] : ((int32_t *)ids.data)[i];
                    for (int64_t d = 0; d < D; d++) {
                        double want = get(&table, id * D + d);
                        if (ydts[yi] == BF16 && tdts[ti] != BF16) want = round_bf16(want);
                        if (get(&y, i * D + d) != want) fail_msg("embedding: row %lld col %lld", (long long)i, (long long)d);
                    }
                }
                if (ii) ((int64_t *)ids.data)[5] = V;
                else ((int32_t *)ids.data)[5] = -3;
                expect_fail(be->ops->embedding(be, &table, &ids, &y), ii ? "id 1000 at position 5" : "id -3 at position 5");
                expect_fail(be->ops->embedding(be, &table, &ids, &y), "V = 1000");
                freet(&table), freet(&ids), freet(&y);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------ */

static int setup(void **state) {
    (void)state;
    return qd_backend_cpu_create(&be) == QD_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    be->ops->destroy(be);
    return 0;
}

int main(int argc, char **argv) {
    (void)argc;
    uint64_t seed = qt_seed();
    rng = seed;
    const char *isa_env = getenv("QDIT_CPU_ISA");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_basic),    cmocka_unit_test(test_attention_model_sizes),
        cmocka_unit_test(test_attention_gqa),      cmocka_unit_test(test_attention_masks),
        cmocka_unit_test(test_attention_bias_causal), cmocka_unit_test(test_attention_errors),
        cmocka_unit_test(test_rms_norm),           cmocka_unit_test(test_layer_norm),
        cmocka_unit_test(test_group_norm),         cmocka_unit_test(test_norm_errors),
        cmocka_unit_test(test_rope),               cmocka_unit_test(test_activation),
        cmocka_unit_test(test_gated),              cmocka_unit_test(test_modulate_gated_add),
        cmocka_unit_test(test_norm_modulate),      cmocka_unit_test(test_rms_norm_rope),
        cmocka_unit_test(test_add_mul),            cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_conv2d),             cmocka_unit_test(test_conv3d),
        cmocka_unit_test(test_upsample),           cmocka_unit_test(test_permute),
        cmocka_unit_test(test_concat),             cmocka_unit_test(test_embedding),
    };
    char group[96];
    snprintf(group, sizeof group, "cpu_ops (ISA %s%s)", isa_env ? "capped at " : "", isa_env ? isa_env : "as detected");
    int rc = _cmocka_run_group_tests(group, tests, sizeof tests / sizeof tests[0], setup, teardown);
    if (isa_env) return rc;
    /* second run: the plain-C paths, same seed, in a fresh process (the ISA is cached per process) */
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork failed; the generic path was not tested\n");
        return 1;
    }
    if (pid == 0) {
        char s[32];
        snprintf(s, sizeof s, "%llu", (unsigned long long)seed);
        setenv("QDIT_CPU_ISA", "generic", 1);
        setenv("QDIT_TEST_SEED", s, 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the QDIT_CPU_ISA=generic run failed (status %d)\n", status);
        return 1;
    }
    return rc;
}
