/* Tests for quant/scheme_svdq.c: binding Nunchaku SVDQuant W4A4 (int4 / nvfp4) and AWQ W4A16 layers into
 * the canonical qd_linear layout, and their f32 dequantization (formats.md §5.2–§5.6, quant-sglang.md
 * §4.9).
 *
 * Evidence, each independent of the binder's own arithmetic:
 *  - synthetic layers: random logical tensors (codes, scales, smooth, low-rank, bias, wcscales, wtscale)
 *    are packed with quant/packing.h (tested on its own in test_packing.c), written with the library's
 *    safetensors writer under real module names, opened as a checkpoint and bound. The canonical views
 *    must equal the logical inputs bit for bit; the dequantized weight must equal the formula evaluated
 *    here in double; and the layer's output computed the way the runtime does it (main GEMM on x/smooth,
 *    then α·wcscales, low-rank on the raw x, bias) must equal x·W_effᵀ + b. Fresh data every run (seed
 *    printed; replay with QDIT_TEST_SEED);
 *  - ../shared/fixtures/nunchaku_packing, written by Nunchaku's real packer: the bound `packed` module
 *    must reproduce the `plain.*` tensors (padding cropped) and dequantize to the formula on them;
 *  - error cases: each malformed layer fails with a message that names the tensor at fault. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "io/ckpt.h"
#include "io/safetensors.h"
#include "quant/config.h"
#include "quant/linear.h"
#include "quant/packing.h"
#include "quant/schemes.h"
#include "qdit.h"

#define FIXTURES QDIT_SHARED_DIR "/fixtures/nunchaku_packing/"

static uint64_t rng;

static int64_t rand_between(int64_t lo, int64_t hi) { /* inclusive */
    return lo + (int64_t)(qt_rand_u64(&rng) % (uint64_t)(hi - lo + 1));
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static void *xcalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    assert_non_null(p);
    return p;
}

static uint16_t enc16(qd_dtype t, float v) { return t == QD_DTYPE_BF16 ? qd_f32_to_bf16(v) : qd_f32_to_f16(v); }
static double dec16(qd_dtype t, uint16_t h) { return t == QD_DTYPE_BF16 ? qd_bf16_to_f32(h) : qd_f16_to_f32(h); }

static uint16_t *random16(qd_dtype t, int64_t n, float lo, float hi) {
    uint16_t *p = xmalloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) p[i] = enc16(t, qt_rand_uniform(&rng, lo, hi));
    return p;
}

/* E2M1 by its definition (formats.md §2.1), not the codec: bit 3 sign, bits 0..2 index the magnitudes. */
static double e2m1_value(uint8_t code) {
    static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    return (code & 8 ? -1 : 1) * mag[code & 7];
}

static double int4_value(uint8_t code) { return code < 8 ? code : (double)code - 16; }

/* The nibble of element (n, k) of a lo-first packed [N][K/2] weight, read here by its definition. */
static uint8_t nibble_at(const qd_view *w, int64_t n, int64_t k, int64_t k_total) {
    const uint8_t byte = ((const uint8_t *)w->data)[n * (k_total / 2) + k / 2];
    return (uint8_t)(k % 2 ? byte >> 4 : byte & 0x0F);
}

static void expect_view(const qd_view *v, qd_dtype dtype, int rank, int64_t d0, int64_t d1) {
    assert_non_null(v->data);
    assert_non_null(v->owned);
    if (v->dtype != dtype) fail_msg("view dtype %s, expected %s", qd_dtype_name(v->dtype), qd_dtype_name(dtype));
    assert_int_equal(v->rank, rank);
    assert_int_equal(v->shape[0], d0);
    if (rank == 2) assert_int_equal(v->shape[1], d1);
}

/* ======================= a list of tensors written with the library's writer ======================= */

typedef struct {
    char name[200];
    qd_dtype dtype;
    int rank;
    int64_t shape[2];
    void *data; /* owned */
    size_t bytes;
} wt_tensor;

typedef struct {
    char module[128];
    wt_tensor t[24];
    int n;
} wt_list;

static size_t dtype_bytes(qd_dtype dtype, int rank, const int64_t *shape) {
    uint64_t elems = 1, bytes;
    for (int i = 0; i < rank; i++) elems *= (uint64_t)shape[i];
    assert_true(qd_dtype_storage_bytes(dtype, elems, &bytes));
    return (size_t)bytes;
}

static wt_tensor *list_find(wt_list *l, const char *suffix) {
    char name[200];
    snprintf(name, sizeof name, "%s.%s", l->module, suffix);
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->t[i].name, name)) return &l->t[i];
    return NULL;
}

/* Adds `<module>.<suffix>` taking ownership of `data` (NULL: zero-filled). Replaces an existing entry. */
static void list_put(wt_list *l, const char *suffix, qd_dtype dtype, int rank, int64_t d0, int64_t d1, void *data) {
    wt_tensor *t = list_find(l, suffix);
    if (t) free(t->data);
    else {
        assert_true(l->n < 24);
        t = &l->t[l->n++];
    }
    snprintf(t->name, sizeof t->name, "%s.%s", l->module, suffix);
    t->dtype = dtype;
    t->rank = rank;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->bytes = dtype_bytes(dtype, rank, t->shape);
    t->data = data ? data : xcalloc(t->bytes);
}

static void list_remove(wt_list *l, const char *suffix) {
    wt_tensor *t = list_find(l, suffix);
    assert_non_null(t);
    free(t->data);
    *t = l->t[--l->n];
}

static void list_free(wt_list *l) {
    for (int i = 0; i < l->n; i++) free(l->t[i].data);
    l->n = 0;
}

static void list_write(const wt_list *l, const char *path) {
    qd_st_writer *w;
    assert_int_equal(qd_st_writer_create(path, &w), QD_OK);
    for (int i = 0; i < l->n; i++)
        assert_int_equal(qd_st_writer_add(w, l->t[i].name, l->t[i].dtype, l->t[i].rank, l->t[i].shape), QD_OK);
    assert_int_equal(qd_st_writer_begin(w), QD_OK);
    for (int i = 0; i < l->n; i++) assert_int_equal(qd_st_writer_put(w, l->t[i].name, l->t[i].data, l->t[i].bytes), QD_OK);
    assert_int_equal(qd_st_writer_finish(w), QD_OK);
}

/* Writes the list to a fresh file, opens it and binds `module` with `cfg`. Returns the bind status; on
 * success *ck and *lin are live (the caller closes and frees them). */
static qd_status write_and_bind(const wt_list *l, const qd_quant_config *cfg, bool awq, qd_ckpt **ck, qd_linear *lin) {
    char *dir = qt_mkdtemp("svdq");
    char *path = qt_path(dir, "layer.safetensors");
    list_write(l, path);
    const char *paths[1] = {path};
    assert_int_equal(qd_ckpt_open_files(paths, 1, ck), QD_OK);
    /* the mapping stays valid after the file is unlinked */
    qt_rmtree(dir);
    free(dir), free(path);
    memset(lin, 0, sizeof *lin);
    lin->name = strdup(l->module);
    qd_bind_ctx ctx = {.cfg = cfg, .ck = *ck, .module = l->module, .layer_type = NULL};
    qd_status s = awq ? qd_bind_awq(&ctx, lin) : qd_bind_svdq(&ctx, lin);
    if (s) {
        qd_linear_free(lin);
        qd_ckpt_close(*ck);
        *ck = NULL;
    }
    return s;
}

static void expect_bind_error(const wt_list *l, const qd_quant_config *cfg, bool awq, const char *needle1,
                              const char *needle2) {
    qd_ckpt *ck;
    qd_linear lin;
    qd_status s = write_and_bind(l, cfg, awq, &ck, &lin);
    if (s == QD_OK) {
        qd_linear_free(&lin);
        qd_ckpt_close(ck);
        fail_msg("bind of '%s' succeeded; expected an error about %s", l->module, needle1);
    }
    assert_int_equal(s, QD_EFORMAT);
    const char *msg = qd_last_error();
    if (!strstr(msg, needle1) || (needle2 && !strstr(msg, needle2)))
        fail_msg("message \"%s\" lacks \"%s\"%s%s", msg, needle1, needle2 ? " or " : "", needle2 ? needle2 : "");
    print_message("[ error    ] %s\n", msg);
}

/* ================================ synthetic SVDQuant layers ================================ */

typedef struct {
    bool nvfp4;
    qd_dtype t;          /* the model dtype of the 16-bit tensors */
    bool legacy_names;   /* lora_down / lora_up / smooth / smooth_orig instead of the v1 names */
    bool bias, wcscales, wtscale;
    qd_dtype wtscale_dtype;
    bool zero_smooth_pad; /* the last 16 inputs are padding with smooth 0 (nunchaku's packer) */
} svdq_variant;

typedef struct {
    svdq_variant v;
    int64_t np, kp, rank, group;
    uint8_t *codes;            /* [np][kp], 4-bit codes */
    void *scales;              /* int4: u16 [np][kp/64]; nvfp4: u8 E4M3 [np][kp/16] */
    uint16_t *smooth, *down, *up, *bias, *wcs; /* [kp], [rank][kp], [np][rank], [np], [np] */
    float wts;
} svdq_layer;

static void svdq_layer_make(svdq_layer *L, const svdq_variant *v) {
    memset(L, 0, sizeof *L);
    L->v = *v;
    L->np = 128 * rand_between(1, 3);
    L->kp = 128 * rand_between(1, 3);
    L->rank = 16 * rand_between(1, 3);
    L->group = v->nvfp4 ? 16 : 64;
    const int64_t np = L->np, kp = L->kp, g = kp / L->group;
    L->codes = xmalloc((size_t)(np * kp));
    for (int64_t i = 0; i < np * kp; i++) L->codes[i] = (uint8_t)(qt_rand_u64(&rng) & 0x0F);
    if (v->nvfp4) {
        uint8_t *s = xmalloc((size_t)(np * g));
        for (int64_t i = 0; i < np * g; i++) s[i] = qd_f32_to_e4m3(qt_rand_uniform(&rng, 0.02f, 8.0f));
        L->scales = s;
    } else {
        L->scales = random16(v->t, np * g, 1e-3f, 0.05f);
    }
    L->smooth = random16(v->t, kp, 0.25f, 4.0f);
    L->down = random16(v->t, L->rank * kp, -0.1f, 0.1f);
    L->up = random16(v->t, np * L->rank, -0.1f, 0.1f);
    if (v->zero_smooth_pad) {
        for (int64_t k = kp - 16; k < kp; k++) {
            L->smooth[k] = 0;
            for (int64_t n = 0; n < np; n++) L->codes[n * kp + k] = v->nvfp4 && (n & 1) ? 8 : 0; /* ±0 */
            for (int64_t r = 0; r < L->rank; r++) L->down[r * kp + k] = 0;
        }
    }
    if (v->bias) L->bias = random16(v->t, np, -1.0f, 1.0f);
    if (v->wcscales) L->wcs = random16(v->t, np, 0.5f, 2.0f);
    L->wts = 1.0f;
    if (v->wtscale) {
        L->wts = qt_rand_uniform(&rng, 1e-3f, 1e-2f);
        if (v->wtscale_dtype != QD_DTYPE_F32) L->wts = (float)dec16(v->wtscale_dtype, enc16(v->wtscale_dtype, L->wts));
    }
}

static void svdq_layer_free(svdq_layer *L) {
    free(L->codes), free(L->scales), free(L->smooth), free(L->down), free(L->up), free(L->bias), free(L->wcs);
}

static void *pack16_vector(const uint16_t *v, int64_t len) {
    void *p = xmalloc((size_t)len * 2);
    assert_int_equal(qd_svdq_vector_pack(v, len, p), QD_OK);
    return p;
}

/* The stored (packed) form of a layer, as a Nunchaku file holds it (formats.md §5.2). */
static void svdq_layer_list(const svdq_layer *L, const char *module, wt_list *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->module, sizeof out->module, "%s", module);
    const int64_t np = L->np, kp = L->kp, rank = L->rank, g = kp / L->group;
    const qd_dtype t = L->v.t;
    const bool legacy = L->v.legacy_names;

    uint8_t *qw = xmalloc((size_t)(np * kp / 2));
    assert_int_equal(qd_svdq_qweight_pack(L->codes, np, kp, qw), QD_OK);
    list_put(out, "qweight", QD_DTYPE_I8, 2, np, kp / 2, qw);
    if (L->v.nvfp4) {
        uint8_t *ws = xmalloc((size_t)(np * g));
        assert_int_equal(qd_svdq_wscales_fp4_pack(L->scales, np, kp, ws), QD_OK);
        list_put(out, "wscales", QD_DTYPE_F8_E4M3, 2, g, np, ws);
    } else {
        void *ws = xmalloc((size_t)(np * g) * 2);
        assert_int_equal(qd_svdq_wscales_int4_pack(L->scales, np, kp, ws), QD_OK);
        list_put(out, "wscales", t, 2, g, np, ws);
    }
    list_put(out, legacy ? "smooth" : "smooth_factor", t, 1, kp, 0, pack16_vector(L->smooth, kp));
    /* smooth_orig is never read at run time; random contents prove it */
    uint16_t *orig = random16(t, kp, 0.1f, 9.0f);
    list_put(out, legacy ? "smooth_orig" : "smooth_factor_orig", t, 1, kp, 0, pack16_vector(orig, kp));
    free(orig);
    void *down = xmalloc((size_t)(rank * kp) * 2), *up = xmalloc((size_t)(np * rank) * 2);
    assert_int_equal(qd_svdq_lowrank_down_pack(L->down, rank, kp, down), QD_OK);
    assert_int_equal(qd_svdq_lowrank_up_pack(L->up, np, rank, up), QD_OK);
    list_put(out, legacy ? "lora_down" : "proj_down", t, 2, kp, rank, down);
    list_put(out, legacy ? "lora_up" : "proj_up", t, 2, np, rank, up);
    if (L->bias) list_put(out, "bias", t, 1, np, 0, pack16_vector(L->bias, np));
    if (L->wcs) list_put(out, "wcscales", t, 1, np, 0, pack16_vector(L->wcs, np));
    if (L->v.wtscale) {
        void *p = xmalloc(4);
        if (L->v.wtscale_dtype == QD_DTYPE_F32) memcpy(p, &L->wts, 4);
        else {
            const uint16_t h = enc16(L->v.wtscale_dtype, L->wts);
            memcpy(p, &h, 2);
        }
        list_put(out, "wtscale", L->v.wtscale_dtype, 1, 1, 0, p);
    }
}

static double svdq_scale_at(const svdq_layer *L, int64_t n, int64_t k) {
    const int64_t g = L->kp / L->group, i = n * g + k / L->group;
    return L->v.nvfp4 ? qd_e4m3_to_f32(((const uint8_t *)L->scales)[i]) : dec16(L->v.t, ((const uint16_t *)L->scales)[i]);
}

/* deq(code)·scale: the main 4-bit weight before α, wcscales and smoothing. */
static double svdq_main_at(const svdq_layer *L, int64_t n, int64_t k) {
    const uint8_t c = L->codes[n * L->kp + k];
    return (L->v.nvfp4 ? e2m1_value(c) : int4_value(c)) * svdq_scale_at(L, n, k);
}

static double svdq_wcs_at(const svdq_layer *L, int64_t n) { return L->wcs ? dec16(L->v.t, L->wcs[n]) : 1.0; }

/* W_eff[n][k] from the formula (see qd_dequantize_svdq), term by term in double; *mag gets the sum of
 * the magnitudes of the terms, the scale of the rounding error. */
static double svdq_weff(const svdq_layer *L, int64_t n, int64_t k, double *mag) {
    const double sm = dec16(L->v.t, L->smooth[k]);
    double main = svdq_main_at(L, n, k);
    main = sm == 0 ? 0 : main * (double)L->wts * svdq_wcs_at(L, n) / sm;
    double w = main, m = fabs(main);
    for (int64_t r = 0; r < L->rank; r++) {
        const double t = dec16(L->v.t, L->up[n * L->rank + r]) * dec16(L->v.t, L->down[r * L->kp + k]);
        w += t;
        m += fabs(t);
    }
    *mag = m;
    return w;
}

static void check_svdq_bound(const svdq_layer *L, const qd_quant_config *cfg, const qd_linear *l) {
    const int64_t np = L->np, kp = L->kp, rank = L->rank, g = kp / L->group;
    const qd_dtype t = L->v.t;
    assert_int_equal(l->scheme, L->v.nvfp4 ? QD_SCHEME_SVDQ_NVFP4 : QD_SCHEME_SVDQ_INT4);
    assert_string_equal(l->scheme_name, L->v.nvfp4 ? "svdq_nvfp4" : "svdq_int4");
    assert_int_equal(l->out_features, np);
    assert_int_equal(l->in_features, kp);
    assert_int_equal(l->act, QD_ACT_DYNAMIC_GROUP);
    assert_int_equal(l->act_group, L->group);
    assert_int_equal(l->block_k, L->group);
    assert_int_equal(l->act_unsigned, cfg->svdq_act_unsigned);
    assert_true(l->alpha == L->wts);

    expect_view(&l->weight, QD_DTYPE_U8, 2, np, kp / 2);
    for (int64_t n = 0; n < np; n++)
        for (int64_t k = 0; k < kp; k++)
            if (nibble_at(&l->weight, n, k, kp) != L->codes[n * kp + k])
                fail_msg("weight code (%lld, %lld) = %u, expected %u", (long long)n, (long long)k,
                         nibble_at(&l->weight, n, k, kp), L->codes[n * kp + k]);
    expect_view(&l->scale, L->v.nvfp4 ? QD_DTYPE_F8_E4M3 : t, 2, np, g);
    assert_memory_equal(l->scale.data, L->scales, (size_t)(np * g) * (L->v.nvfp4 ? 1 : 2));
    expect_view(&l->smooth, t, 1, kp, 0);
    assert_memory_equal(l->smooth.data, L->smooth, (size_t)kp * 2);
    expect_view(&l->lora_down, t, 2, rank, kp);
    assert_memory_equal(l->lora_down.data, L->down, (size_t)(rank * kp) * 2);
    expect_view(&l->lora_up, t, 2, np, rank);
    assert_memory_equal(l->lora_up.data, L->up, (size_t)(np * rank) * 2);
    if (L->bias) {
        expect_view(&l->bias, t, 1, np, 0);
        assert_memory_equal(l->bias.data, L->bias, (size_t)np * 2);
    } else {
        assert_null(l->bias.data);
    }
    if (L->wcs) {
        expect_view(&l->scale2, t, 1, np, 0);
        assert_memory_equal(l->scale2.data, L->wcs, (size_t)np * 2);
    } else {
        assert_null(l->scale2.data);
    }
    assert_null(l->zeros.data);

    /* dequantize == the formula, to f32 rounding */
    float *w = xmalloc(sizeof(float) * (size_t)(np * kp));
    assert_int_equal(qd_linear_dequantize(l, w), QD_OK);
    double worst = 0;
    for (int64_t n = 0; n < np; n++)
        for (int64_t k = 0; k < kp; k++) {
            double mag;
            const double want = svdq_weff(L, n, k, &mag), got = w[n * kp + k];
            const double err = fabs(got - want);
            if (err > 1e-6 * fabs(want) + 1e-12 * mag)
                fail_msg("W_eff(%lld, %lld) = %.9g, expected %.12g", (long long)n, (long long)k, got, want);
            if (want != 0) worst = fmax(worst, err / fabs(want));
        }

    /* The runtime's order of operations (formats.md §5.4) against x·W_effᵀ + b, for a few rows of x. */
    const int64_t m_rows = 3;
    double *x = xmalloc(sizeof(double) * (size_t)(m_rows * kp));
    for (int64_t i = 0; i < m_rows * kp; i++) x[i] = qt_rand_uniform(&rng, -2.0f, 2.0f);
    double worst_y = 0;
    for (int64_t m = 0; m < m_rows; m++) {
        double *xr = x + m * kp;
        for (int64_t k = 0; k < kp; k++)
            if (dec16(t, L->smooth[k]) == 0) xr[k] = 0; /* padded inputs are zero */
        double *act = xmalloc(sizeof(double) * (size_t)rank);
        for (int64_t r = 0; r < rank; r++) { /* 1. low-rank down on the raw x */
            act[r] = 0;
            for (int64_t k = 0; k < kp; k++) act[r] += xr[k] * dec16(t, L->down[r * kp + k]);
        }
        for (int64_t n = 0; n < np; n++) {
            double main = 0, ref = 0, mag = 0;
            for (int64_t k = 0; k < kp; k++) { /* 2–4. main GEMM on x / smooth */
                const double sm = dec16(t, L->smooth[k]);
                const double xs = sm == 0 ? 0 : xr[k] / sm;
                main += xs * svdq_main_at(L, n, k);
                ref += xr[k] * (double)w[n * kp + k];
                mag += fabs(xr[k] * (double)w[n * kp + k]);
            }
            const double b = L->bias ? dec16(t, L->bias[n]) : 0;
            double y = main * (double)L->wts * svdq_wcs_at(L, n) + b; /* 5. α, wcscales, then bias */
            for (int64_t r = 0; r < rank; r++) y += act[r] * dec16(t, L->up[n * rank + r]); /* 6. low-rank up */
            ref += b;
            mag += fabs(b);
            if (fabs(y - ref) > 1e-6 * mag + 1e-12)
                fail_msg("row %lld output %lld: runtime order %.12g, x·W_effᵀ + b %.12g", (long long)m, (long long)n, y,
                         ref);
            if (mag > 0) worst_y = fmax(worst_y, fabs(y - ref) / mag);
        }
        free(act);
    }
    print_message("[ svdq     ] %s %s %lldx%lld r%lld%s%s%s: W_eff max rel err %.2e, output err/Σ|terms| %.2e\n",
                  L->v.nvfp4 ? "nvfp4" : "int4", qd_dtype_name(t), (long long)np, (long long)kp, (long long)rank,
                  L->v.legacy_names ? " legacy" : "", L->wcs ? " wcscales" : "", L->v.wtscale ? " wtscale" : "", worst,
                  worst_y);
    free(x);
    free(w);
}

static void test_svdq_synthetic(void **state) {
    (void)state;
    const svdq_variant variants[] = {
        {.nvfp4 = false, .t = QD_DTYPE_BF16, .bias = true},
        {.nvfp4 = false, .t = QD_DTYPE_F16, .legacy_names = true, .zero_smooth_pad = true},
        {.nvfp4 = true, .t = QD_DTYPE_BF16, .bias = true, .wtscale = true, .wtscale_dtype = QD_DTYPE_BF16},
        {.nvfp4 = true, .t = QD_DTYPE_F16, .legacy_names = true, .bias = true, .wcscales = true, .wtscale = true,
         .wtscale_dtype = QD_DTYPE_F32, .zero_smooth_pad = true},
        {.nvfp4 = true, .t = QD_DTYPE_BF16, .bias = true, .wcscales = true},
        {.nvfp4 = true, .t = QD_DTYPE_F16},
    };
    const char *modules[] = {"transformer_blocks.0.attn.to_qkv", "single_transformer_blocks.3.proj_mlp",
                             "transformer_blocks.1.ff.net.2"};
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) {
        svdq_layer L;
        svdq_layer_make(&L, &variants[i]);
        wt_list list;
        svdq_layer_list(&L, modules[i % 3], &list);
        qd_quant_config cfg;
        qd_quant_config_init(&cfg);
        cfg.method = QD_QM_SVDQUANT;
        cfg.svdq_nvfp4 = L.v.nvfp4;
        cfg.svdq_rank = i % 2 ? (int)L.rank : 0; /* set and agreeing, or unset */
        cfg.svdq_act_unsigned = !L.v.nvfp4 && i % 2 == 0;
        qd_ckpt *ck;
        qd_linear lin;
        qd_status s = write_and_bind(&list, &cfg, false, &ck, &lin);
        if (s) fail_msg("bind failed: %s", qd_last_error());
        check_svdq_bound(&L, &cfg, &lin);
        qd_linear_free(&lin);
        qd_ckpt_close(ck);
        list_free(&list);
        svdq_layer_free(&L);
    }
}

/* ================================ synthetic AWQ W4A16 layers ================================ */

static void test_awq_synthetic(void **state) {
    (void)state;
    for (int iter = 0; iter < 4; iter++) {
        const qd_dtype t = iter % 2 ? QD_DTYPE_F16 : QD_DTYPE_BF16;
        const int64_t n = 4 * rand_between(1, 64), k = 64 * rand_between(1, 5), g = k / 64;
        const int64_t gp = iter < 2 ? (g + 15) / 16 * 16 : g; /* converter padding, or the C++ loader's size */
        uint8_t *codes = xmalloc((size_t)(n * k));
        for (int64_t i = 0; i < n * k; i++) codes[i] = (uint8_t)(qt_rand_u64(&rng) & 0x0F);
        /* stored [G][N]; padding rows hold junk so that reading them would show */
        uint16_t *ws = random16(t, gp * n, 1e-3f, 0.1f), *wz = random16(t, gp * n, -0.7f, 0.0f);
        uint16_t *bias = random16(t, n, -1.0f, 1.0f);
        wt_list list = {0};
        snprintf(list.module, sizeof list.module, "transformer_blocks.%d.norm1.linear", iter);
        uint8_t *qw = xmalloc((size_t)(n * k / 2));
        assert_int_equal(qd_awq_qweight_pack(codes, n, k, qw), QD_OK);
        list_put(&list, "qweight", QD_DTYPE_I32, 2, n / 4, k / 2, qw);
        uint16_t *ws_copy = xmalloc((size_t)(gp * n) * 2), *wz_copy = xmalloc((size_t)(gp * n) * 2);
        memcpy(ws_copy, ws, (size_t)(gp * n) * 2);
        memcpy(wz_copy, wz, (size_t)(gp * n) * 2);
        list_put(&list, "wscales", t, 2, gp, n, ws_copy);
        list_put(&list, "wzeros", t, 2, gp, n, wz_copy);
        const bool with_bias = iter != 3;
        if (with_bias) {
            uint16_t *b = xmalloc((size_t)n * 2);
            memcpy(b, bias, (size_t)n * 2);
            list_put(&list, "bias", t, 1, n, 0, b);
        }
        qd_quant_config cfg;
        qd_quant_config_init(&cfg);
        cfg.method = QD_QM_SVDQUANT;
        qd_ckpt *ck;
        qd_linear l;
        if (write_and_bind(&list, &cfg, true, &ck, &l)) fail_msg("bind failed: %s", qd_last_error());
        assert_int_equal(l.scheme, QD_SCHEME_AWQ_W4A16);
        assert_string_equal(l.scheme_name, "awq_w4a16");
        assert_int_equal(l.act, QD_ACT_NONE);
        assert_int_equal(l.block_k, 64);
        assert_int_equal(l.out_features, n);
        assert_int_equal(l.in_features, k);
        assert_true(l.alpha == 1.0f);
        expect_view(&l.weight, QD_DTYPE_U8, 2, n, k / 2);
        expect_view(&l.scale, t, 2, n, g);
        expect_view(&l.zeros, t, 2, n, g);
        const uint16_t *sv = l.scale.data, *zv = l.zeros.data;
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < k; j++) assert_int_equal(nibble_at(&l.weight, i, j, k), codes[i * k + j]);
            for (int64_t j = 0; j < g; j++) {
                assert_int_equal(sv[i * g + j], ws[j * n + i]);
                assert_int_equal(zv[i * g + j], wz[j * n + i]);
            }
        }
        if (with_bias) {
            assert_int_equal(l.bias.dtype, t);
            assert_memory_equal(l.bias.data, bias, (size_t)n * 2);
        } else {
            assert_null(l.bias.data);
        }
        float *w = xmalloc(sizeof(float) * (size_t)(n * k));
        assert_int_equal(qd_linear_dequantize(&l, w), QD_OK);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < k; j++) {
                const double want = codes[i * k + j] * dec16(t, ws[(j / 64) * n + i]) + dec16(t, wz[(j / 64) * n + i]);
                if (fabs(w[i * k + j] - want) > 1e-6 * fabs(want) + 1e-30)
                    fail_msg("W(%lld, %lld) = %.9g, expected %.12g", (long long)i, (long long)j, (double)w[i * k + j],
                             want);
            }
        free(w), free(codes), free(ws), free(wz), free(bias);
        qd_linear_free(&l);
        qd_ckpt_close(ck);
        list_free(&list);
    }
}

/* ================================ fixtures: Nunchaku's own packer ================================ */

/* A private aligned copy of a fixture tensor, checked for dtype and element count. */
static void *plain_tensor(const qd_ckpt *ck, const char *name, qd_dtype dtype, int64_t elements) {
    const qd_ckpt_entry *e = qd_ckpt_find(ck, name);
    if (!e) fail_msg("fixture lacks %s", name);
    if (e->tensor->dtype != dtype)
        fail_msg("%s: dtype %s, expected %s", name, qd_dtype_name(e->tensor->dtype), qd_dtype_name(dtype));
    assert_int_equal(e->tensor->elements, (uint64_t)elements);
    const size_t n = (size_t)(e->tensor->end - e->tensor->begin);
    void *copy = xmalloc(n);
    memcpy(copy, qd_st_data(e->file, e->tensor), n);
    return copy;
}

static qd_ckpt *open_fixture(const char *file) {
    qd_ckpt *ck;
    const char *paths[1] = {file};
    if (qd_ckpt_open_files(paths, 1, &ck)) fail_msg("%s", qd_last_error());
    return ck;
}

static qd_status bind_fixture(const qd_ckpt *ck, const qd_quant_config *cfg, bool awq, qd_linear *l) {
    memset(l, 0, sizeof *l);
    l->name = strdup("packed");
    qd_bind_ctx ctx = {.cfg = cfg, .ck = ck, .module = "packed", .layer_type = NULL};
    return awq ? qd_bind_awq(&ctx, l) : qd_bind_svdq(&ctx, l);
}

/* Both SVDQ fixtures: the logical sizes n × k inside the padded np × kp of the bound layer. */
typedef struct {
    int64_t n, k, np, kp, rank, group;
    bool nvfp4;
    const void *codes;  /* int4: I8 values [n][k]; nvfp4: U8 E2M1 codes [n][k] */
    const void *scales; /* [n][k/group], BF16 or E4M3 */
    const uint16_t *bias, *smooth, *down, *up; /* BF16: [n], [k], [rank][k], [n][rank] */
    float wtscale;
} svdq_plain;

static void check_svdq_fixture(const svdq_plain *P, const qd_linear *l) {
    const int64_t n = P->n, k = P->k, np = P->np, kp = P->kp, rank = P->rank, g = k / P->group, gp = kp / P->group;
    assert_int_equal(l->out_features, np);
    assert_int_equal(l->in_features, kp);
    assert_true(l->alpha == P->wtscale);
    assert_null(l->scale2.data);
    expect_view(&l->weight, QD_DTYPE_U8, 2, np, kp / 2);
    for (int64_t i = 0; i < np; i++)
        for (int64_t j = 0; j < kp; j++) {
            const uint8_t c = nibble_at(&l->weight, i, j, kp);
            uint8_t want = 0; /* padding codes are 0 (formats.md §5.3) */
            if (i < n && j < k)
                want = P->nvfp4 ? ((const uint8_t *)P->codes)[i * k + j]
                                : (uint8_t)(((const int8_t *)P->codes)[i * k + j] & 0x0F);
            if (c != want)
                fail_msg("weight code (%lld, %lld) = 0x%x, plain 0x%x", (long long)i, (long long)j, c, want);
        }
    expect_view(&l->scale, P->nvfp4 ? QD_DTYPE_F8_E4M3 : QD_DTYPE_BF16, 2, np, gp);
    const size_t es = P->nvfp4 ? 1 : 2;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < g; j++)
            if (memcmp((const uint8_t *)l->scale.data + es * (size_t)(i * gp + j),
                       (const uint8_t *)P->scales + es * (size_t)(i * g + j), es))
                fail_msg("scale (%lld, %lld) differs from plain.wscales", (long long)i, (long long)j);
    expect_view(&l->bias, QD_DTYPE_BF16, 1, np, 0);
    assert_memory_equal(l->bias.data, P->bias, (size_t)n * 2);
    expect_view(&l->smooth, QD_DTYPE_BF16, 1, kp, 0);
    assert_memory_equal(l->smooth.data, P->smooth, (size_t)k * 2);
    expect_view(&l->lora_down, QD_DTYPE_BF16, 2, rank, kp);
    expect_view(&l->lora_up, QD_DTYPE_BF16, 2, np, rank);
    const uint16_t *dv = l->lora_down.data, *uv = l->lora_up.data;
    for (int64_t r = 0; r < rank; r++)
        for (int64_t j = 0; j < kp; j++) assert_int_equal(dv[r * kp + j], j < k ? P->down[r * k + j] : 0);
    for (int64_t i = 0; i < np; i++)
        for (int64_t r = 0; r < rank; r++) assert_int_equal(uv[i * rank + r], i < n ? P->up[i * rank + r] : 0);

    float *w = xmalloc(sizeof(float) * (size_t)(np * kp));
    assert_int_equal(qd_linear_dequantize(l, w), QD_OK);
    double worst = 0;
    for (int64_t i = 0; i < np; i++)
        for (int64_t j = 0; j < kp; j++) {
            const float got = w[i * kp + j];
            if (i >= n || j >= k) { /* zero codes and zero low-rank entries: nothing leaks into the padding */
                if (got != 0.0f) fail_msg("padding W_eff(%lld, %lld) = %g", (long long)i, (long long)j, (double)got);
                continue;
            }
            double q, s;
            if (P->nvfp4) {
                q = e2m1_value(((const uint8_t *)P->codes)[i * k + j]);
                s = qd_e4m3_to_f32(((const uint8_t *)P->scales)[i * g + j / 16]);
            } else {
                q = ((const int8_t *)P->codes)[i * k + j];
                s = qd_bf16_to_f32(((const uint16_t *)P->scales)[i * g + j / 64]);
            }
            double want = q * s * (double)P->wtscale / qd_bf16_to_f32(P->smooth[j]), mag = fabs(want);
            for (int64_t r = 0; r < rank; r++) {
                const double t = (double)qd_bf16_to_f32(P->up[i * rank + r]) * qd_bf16_to_f32(P->down[r * k + j]);
                want += t;
                mag += fabs(t);
            }
            if (fabs(got - want) > 1e-6 * fabs(want) + 1e-12 * mag)
                fail_msg("W_eff(%lld, %lld) = %.9g, expected %.12g", (long long)i, (long long)j, (double)got, want);
            if (want != 0) worst = fmax(worst, fabs(got - want) / fabs(want));
        }
    print_message("[ fixture  ] %s: W_eff max rel err %.2e\n", P->nvfp4 ? "svdq_fp4_a" : "svdq_int4_a", worst);
    free(w);
}

static void test_fixture_svdq_int4(void **state) {
    (void)state;
    qd_ckpt *ck = open_fixture(FIXTURES "svdq_int4_a.safetensors");
    svdq_plain P = {.n = 200, .k = 320, .np = 256, .kp = 384, .rank = 32, .group = 64, .nvfp4 = false, .wtscale = 1};
    P.codes = plain_tensor(ck, "plain.q", QD_DTYPE_I8, P.n * P.k);
    P.scales = plain_tensor(ck, "plain.wscales", QD_DTYPE_BF16, P.n * (P.k / 64));
    P.bias = plain_tensor(ck, "plain.bias", QD_DTYPE_BF16, P.n);
    P.smooth = plain_tensor(ck, "plain.smooth", QD_DTYPE_BF16, P.k);
    P.down = plain_tensor(ck, "plain.proj_down", QD_DTYPE_BF16, P.rank * P.k);
    P.up = plain_tensor(ck, "plain.proj_up", QD_DTYPE_BF16, P.n * P.rank);
    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    cfg.method = QD_QM_SVDQUANT;
    cfg.svdq_rank = 32;
    qd_linear l;
    if (bind_fixture(ck, &cfg, false, &l)) fail_msg("%s", qd_last_error());
    assert_int_equal(l.scheme, QD_SCHEME_SVDQ_INT4);
    assert_string_equal(l.scheme_name, "svdq_int4");
    check_svdq_fixture(&P, &l);
    qd_linear_free(&l);

    /* the same file read as nvfp4 is refused: its wscales are BF16 */
    cfg.svdq_nvfp4 = true;
    assert_int_equal(bind_fixture(ck, &cfg, false, &l), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "packed.wscales"));
    qd_linear_free(&l);
    free((void *)P.codes), free((void *)P.scales), free((void *)P.bias), free((void *)P.smooth);
    free((void *)P.down), free((void *)P.up);
    qd_ckpt_close(ck);
}

static void test_fixture_svdq_fp4(void **state) {
    (void)state;
    qd_ckpt *ck = open_fixture(FIXTURES "svdq_fp4_a.safetensors");
    svdq_plain P = {.n = 256, .k = 256, .np = 256, .kp = 256, .rank = 32, .group = 16, .nvfp4 = true};
    P.codes = plain_tensor(ck, "plain.codes", QD_DTYPE_U8, P.n * P.k);
    P.scales = plain_tensor(ck, "plain.wscales", QD_DTYPE_F8_E4M3, P.n * (P.k / 16));
    P.bias = plain_tensor(ck, "plain.bias", QD_DTYPE_BF16, P.n);
    P.smooth = plain_tensor(ck, "plain.smooth", QD_DTYPE_BF16, P.k);
    P.down = plain_tensor(ck, "plain.proj_down", QD_DTYPE_BF16, P.rank * P.k);
    P.up = plain_tensor(ck, "plain.proj_up", QD_DTYPE_BF16, P.n * P.rank);
    float *wt = plain_tensor(ck, "plain.wtscale", QD_DTYPE_F32, 1);
    P.wtscale = wt[0];
    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    cfg.method = QD_QM_SVDQUANT;
    cfg.svdq_nvfp4 = true;
    qd_linear l;
    if (bind_fixture(ck, &cfg, false, &l)) fail_msg("%s", qd_last_error());
    assert_int_equal(l.scheme, QD_SCHEME_SVDQ_NVFP4);
    assert_string_equal(l.scheme_name, "svdq_nvfp4");
    assert_int_equal(l.act_group, 16);
    check_svdq_fixture(&P, &l);
    qd_linear_free(&l);

    /* read as int4 it is refused: F8_E4M3 wscales mean nvfp4 */
    cfg.svdq_nvfp4 = false;
    assert_int_equal(bind_fixture(ck, &cfg, false, &l), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "packed.wscales"));
    qd_linear_free(&l);
    free((void *)P.codes), free((void *)P.scales), free((void *)P.bias), free((void *)P.smooth);
    free((void *)P.down), free((void *)P.up), free(wt);
    qd_ckpt_close(ck);
}

/* awq_w4a16_a: a single-block modulation layer (3 chunks), N = 384, K = 256. The binder keeps the stored
 * row order (stored row i·3 + c = original row c·128 + i, formats.md §5.6) and the stored bias, whose
 * scale chunk carries the converter's +1. */
static void test_fixture_awq(void **state) {
    (void)state;
    qd_ckpt *ck = open_fixture(FIXTURES "awq_w4a16_a.safetensors");
    const int64_t n = 384, k = 256, g = k / 64, chunks = 3, per = n / chunks;
    uint8_t *q = plain_tensor(ck, "plain.q_u4_zero7", QD_DTYPE_U8, n * k);
    uint16_t *ws = plain_tensor(ck, "plain.wscales", QD_DTYPE_BF16, n * g);
    uint16_t *bias = plain_tensor(ck, "plain.bias", QD_DTYPE_BF16, n);
    uint16_t *stored_bias = plain_tensor(ck, "packed.bias", QD_DTYPE_BF16, n);
    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    cfg.method = QD_QM_SVDQUANT;
    qd_linear l;
    if (bind_fixture(ck, &cfg, true, &l)) fail_msg("%s", qd_last_error());
    assert_int_equal(l.scheme, QD_SCHEME_AWQ_W4A16);
    assert_int_equal(l.out_features, n);
    assert_int_equal(l.in_features, k);
    expect_view(&l.weight, QD_DTYPE_U8, 2, n, k / 2);
    expect_view(&l.scale, QD_DTYPE_BF16, 2, n, g); /* the 16-row padded group axis is cropped to K/64 */
    expect_view(&l.zeros, QD_DTYPE_BF16, 2, n, g);
    assert_int_equal(l.bias.dtype, QD_DTYPE_BF16);
    assert_memory_equal(l.bias.data, stored_bias, (size_t)n * 2); /* as stored */
    const uint16_t *sv = l.scale.data, *zv = l.zeros.data, *bv = stored_bias;
    float *w = xmalloc(sizeof(float) * (size_t)(n * k));
    assert_int_equal(qd_linear_dequantize(&l, w), QD_OK);
    for (int64_t i = 0; i < per; i++)
        for (int64_t c = 0; c < chunks; c++) {
            const int64_t row = i * chunks + c, orig = c * per + i;
            for (int64_t j = 0; j < k; j++) assert_int_equal(nibble_at(&l.weight, row, j, k), q[orig * k + j]);
            for (int64_t j = 0; j < g; j++) {
                const float s = qd_bf16_to_f32(ws[orig * g + j]);
                assert_int_equal(sv[row * g + j], ws[orig * g + j]);
                assert_int_equal(zv[row * g + j], qd_f32_to_bf16(-7.0f * s)); /* zero point 7, pre-scaled */
            }
            const float b = qd_bf16_to_f32(bias[orig]);
            assert_int_equal(bv[row], c == 1 ? qd_f32_to_bf16(b + 1.0f) : bias[orig]);
            for (int64_t j = 0; j < k; j++) {
                const double s = qd_bf16_to_f32(ws[orig * g + j / 64]);
                const double want = q[orig * k + j] * s + qd_bf16_to_f32(qd_f32_to_bf16((float)(-7.0 * s)));
                if ((double)w[row * k + j] != want)
                    fail_msg("W(%lld, %lld) = %.9g, expected %.12g", (long long)row, (long long)j,
                             (double)w[row * k + j], want);
            }
        }
    free(w), free(q), free(ws), free(bias), free(stored_bias);
    qd_linear_free(&l);
    qd_ckpt_close(ck);
}

/* ================================ errors ================================ */

/* A small valid int4 (or nvfp4) layer as a tensor list, for the error cases to break. */
static void base_layer(bool nvfp4, wt_list *list, svdq_layer *L) {
    svdq_variant v = {.nvfp4 = nvfp4, .t = QD_DTYPE_BF16, .bias = true};
    svdq_layer_make(L, &v);
    svdq_layer_list(L, "transformer_blocks.0.attn.to_qkv", list);
}

static void test_errors(void **state) {
    (void)state;
    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    cfg.method = QD_QM_SVDQUANT;
    wt_list list;
    svdq_layer L;

    /* wscales dtype against the precision, both ways */
    base_layer(false, &list, &L);
    cfg.svdq_nvfp4 = true;
    expect_bind_error(&list, &cfg, false, "to_qkv.wscales' is BF16", "F8_E4M3");
    cfg.svdq_nvfp4 = false;
    list_free(&list), svdq_layer_free(&L);
    base_layer(true, &list, &L);
    expect_bind_error(&list, &cfg, false, "to_qkv.wscales' is F8_E4M3", "int4");
    cfg.svdq_nvfp4 = true;
    /* a 16-bit wscales of the right shape is still refused for nvfp4 */
    list_put(&list, "wscales", QD_DTYPE_BF16, 2, L.kp / 16, L.np, NULL);
    expect_bind_error(&list, &cfg, false, "wscales' is BF16", "F8_E4M3");
    cfg.svdq_nvfp4 = false;
    list_free(&list), svdq_layer_free(&L);

    /* rank not a multiple of 16 */
    base_layer(false, &list, &L);
    list_put(&list, "proj_down", QD_DTYPE_BF16, 2, L.kp, 24, NULL);
    list_put(&list, "proj_up", QD_DTYPE_BF16, 2, L.np, 24, NULL);
    expect_bind_error(&list, &cfg, false, "to_qkv.proj_down' has rank 24", "multiple of 16");
    list_free(&list), svdq_layer_free(&L);

    /* the config's rank disagrees with the file's */
    base_layer(false, &list, &L);
    cfg.svdq_rank = (int)L.rank + 16;
    char want_file[64], want_cfg[64];
    snprintf(want_file, sizeof want_file, "has rank %lld", (long long)L.rank);
    snprintf(want_cfg, sizeof want_cfg, "config says rank %lld", (long long)L.rank + 16);
    expect_bind_error(&list, &cfg, false, want_file, want_cfg);
    cfg.svdq_rank = 0;

    /* proj_up missing (neither name) */
    list_remove(&list, "proj_up");
    expect_bind_error(&list, &cfg, false, "missing tensor 'transformer_blocks.0.attn.to_qkv.proj_up'", "lora_up");
    list_free(&list), svdq_layer_free(&L);

    /* proj_up with the wrong rank */
    base_layer(false, &list, &L);
    list_put(&list, "proj_up", QD_DTYPE_BF16, 2, L.np, L.rank + 16, NULL);
    expect_bind_error(&list, &cfg, false, "to_qkv.proj_up' must be BF16", "low-rank up");
    list_free(&list), svdq_layer_free(&L);

    /* sizes that are not multiples of 128: Np = 192, then Kp = 192 */
    base_layer(false, &list, &L);
    list_put(&list, "qweight", QD_DTYPE_I8, 2, 192, L.kp / 2, NULL);
    expect_bind_error(&list, &cfg, false, "Np = 192", "multiples of 128");
    list_put(&list, "qweight", QD_DTYPE_I8, 2, L.np, 96, NULL);
    expect_bind_error(&list, &cfg, false, "Kp = 192", "multiples of 128");
    list_free(&list), svdq_layer_free(&L);

    /* qweight of the wrong dtype; wscales of the wrong shape; a vector of the wrong length */
    base_layer(false, &list, &L);
    list_put(&list, "qweight", QD_DTYPE_U8, 2, L.np, L.kp / 2, NULL);
    expect_bind_error(&list, &cfg, false, "qweight' must be I8", "got U8");
    list_free(&list), svdq_layer_free(&L);
    base_layer(false, &list, &L);
    list_put(&list, "wscales", QD_DTYPE_BF16, 2, L.np, L.kp / 64, NULL); /* transposed */
    expect_bind_error(&list, &cfg, false, "wscales' must be BF16", "[Kp/64, Np]");
    list_free(&list), svdq_layer_free(&L);
    base_layer(false, &list, &L);
    list_put(&list, "bias", QD_DTYPE_BF16, 1, L.np + 128, 0, NULL);
    expect_bind_error(&list, &cfg, false, "to_qkv.bias' must be BF16", NULL);
    list_free(&list), svdq_layer_free(&L);

    /* both the v1 and the legacy name of one tensor */
    base_layer(false, &list, &L);
    list_put(&list, "smooth", QD_DTYPE_BF16, 1, L.kp, 0, NULL);
    expect_bind_error(&list, &cfg, false, "both 'transformer_blocks.0.attn.to_qkv.smooth_factor'", "smooth'");
    list_free(&list), svdq_layer_free(&L);

    /* mixed 16-bit dtypes */
    base_layer(false, &list, &L);
    list_put(&list, "proj_down", QD_DTYPE_F16, 2, L.kp, L.rank, NULL);
    expect_bind_error(&list, &cfg, false, "proj_down' must be BF16", "got F16");
    list_free(&list), svdq_layer_free(&L);

    /* nvfp4-only tensors on an int4 layer */
    base_layer(false, &list, &L);
    list_put(&list, "wtscale", QD_DTYPE_F32, 1, 1, 0, NULL);
    expect_bind_error(&list, &cfg, false, "wtscale' is only meaningful for an nvfp4 layer", NULL);
    list_free(&list), svdq_layer_free(&L);

    /* a zero smoothing divisor on a column with live codes */
    base_layer(false, &list, &L);
    L.smooth[5] = 0;
    L.codes[3 * L.kp + 5] = 1;
    list_put(&list, "smooth_factor", QD_DTYPE_BF16, 1, L.kp, 0, pack16_vector(L.smooth, L.kp));
    {
        uint8_t *qw = xmalloc((size_t)(L.np * L.kp / 2));
        assert_int_equal(qd_svdq_qweight_pack(L.codes, L.np, L.kp, qw), QD_OK);
        list_put(&list, "qweight", QD_DTYPE_I8, 2, L.np, L.kp / 2, qw);
    }
    expect_bind_error(&list, &cfg, false, "smooth_factor'[5] is 0", "only valid for padding");
    list_free(&list), svdq_layer_free(&L);

    /* a NaN block scale */
    base_layer(true, &list, &L);
    cfg.svdq_nvfp4 = true;
    ((uint8_t *)L.scales)[7] = 0x7F;
    {
        uint8_t *ws = xmalloc((size_t)(L.np * L.kp / 16));
        assert_int_equal(qd_svdq_wscales_fp4_pack(L.scales, L.np, L.kp, ws), QD_OK);
        list_put(&list, "wscales", QD_DTYPE_F8_E4M3, 2, L.kp / 16, L.np, ws);
    }
    expect_bind_error(&list, &cfg, false, "wscales' has nan for output 0, group 7", "finite");
    cfg.svdq_nvfp4 = false;
    list_free(&list), svdq_layer_free(&L);

    /* AWQ: too few group rows, qweight not I32, missing wzeros */
    memset(&list, 0, sizeof list);
    snprintf(list.module, sizeof list.module, "single_transformer_blocks.0.norm.linear");
    list_put(&list, "qweight", QD_DTYPE_I32, 2, 96, 128, NULL); /* N = 384, K = 256: 4 groups */
    list_put(&list, "wscales", QD_DTYPE_BF16, 2, 3, 384, NULL);
    list_put(&list, "wzeros", QD_DTYPE_BF16, 2, 16, 384, NULL);
    expect_bind_error(&list, &cfg, true, "norm.linear.wscales' must be BF16 [G, 384] with G ≥ K/64 = 4", "[3, 384]");
    list_put(&list, "wscales", QD_DTYPE_BF16, 2, 16, 384, NULL);
    list_put(&list, "qweight", QD_DTYPE_I8, 2, 96, 512, NULL);
    expect_bind_error(&list, &cfg, true, "qweight' must be I32", "got I8");
    list_put(&list, "qweight", QD_DTYPE_I32, 2, 96, 128, NULL);
    list_remove(&list, "wzeros");
    expect_bind_error(&list, &cfg, true, "missing tensor 'single_transformer_blocks.0.norm.linear.wzeros'", NULL);
    list_free(&list);
}

static int setup_rng(void **state) {
    (void)state;
    rng = qt_seed();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_svdq_synthetic),
        cmocka_unit_test(test_awq_synthetic),
        cmocka_unit_test(test_fixture_svdq_int4),
        cmocka_unit_test(test_fixture_svdq_fp4),
        cmocka_unit_test(test_fixture_awq),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup_rng, NULL);
}
