/* qdit convert svdquant: BF16 transformer → one Nunchaku SVDQuant file, checked against the spec and the
 * independent numpy route (tools/quant-fixtures --unpack-nunchaku, its own Nunchaku unpackers):
 *   - structure: the file holds exactly the tensors formats.md §5.2 / §5.7 give for every Nunchaku layer
 *     (names, dtypes, padded shapes: Np = ⌈N/128⌉·128, Kp likewise, rank padded to 16) plus every other
 *     source tensor in BF16 under its (Nunchaku) name, and nothing else; metadata config (_class_name),
 *     model_class, quantization_config (method, dtypes, group size, rank);
 *   - detection: qdit resolves it as svdquant and the plan makes exactly the Nunchaku modules SVDQ (or AWQ);
 *   - packing: the numpy unpacking of the file gives, bit for bit, the codes, scales, smoothing factors and
 *     low-rank factors that the converter's quantizer produces for the same source layer;
 *   - values: the effective weight (numpy: residual/smooth + up·down) is within the 4-bit bound of the
 *     source weight, and `qdit forward --no-act-quant` on the file within a bound of the BF16 model;
 *   - the low-rank branch helps: on weights built as low rank + noise (the lead's Z-Image shapes, K = 192
 *     and 512), rank 32 leaves far less error than rank 0; K = 64 and 128 quantize too;
 *   - a failing conversion leaves nothing behind; --overwrite rules; bad inputs name what is wrong.
 * Bounds. Weight: int4 with scale amax/7 per 64 inputs errs by at most amax/14 per element; for
 * Gaussian-like groups (amax ≈ 2.5σ) that is ≈ 0.1σ rms, so a relative Frobenius error of ~0.1 at
 * rank 0; E2M1 with an E4M3 block scale is comparable. BOUND_W = 0.15 leaves room for small layers.
 * Measured (rank 32, random fixtures): 0.04–0.09 per layer. Model: the residual blocks carry the
 * per-layer weight error through without amplification (Z-Image's sandwich norms rescale it, which is
 * why the fixture tool's own dequantized Z-Image lies 5–6e-2 from the fixture), so BOUND_FWD = 0.15;
 * measured: FLUX int4 1.3e-2, nvfp4 (rank 16) 1.4e-2, Z-Image int4 6.2e-2, nvfp4 5.6e-2. */
#include "test_util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

#include "convert/svdq_layer.h"
#include "core/codec.h"
#include "io/ckpt.h"
#include "io/safetensors.h"
#include "load/sources.h"
#include "pipeline/generate.h"
#include "quant/config.h"
#include "quant/plan.h"
#include "quant/resolve.h"

#define FIX QDIT_SHARED_DIR "/fixtures"
#define TOOL QDIT_SOURCE_DIR "/tools/quant-fixtures/make_quant_fixtures.py"
#define BOUND_W 0.15
#define BOUND_FWD 0.15
#define FLOOR 1e-3

static int64_t rup(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ---- the Nunchaku layouts, written from formats.md §5.7 ---- */

typedef struct {
    char module[160];   /* stored */
    char parts[3][160]; /* diffusers modules, rows stacked */
    int n_parts;
    int col_part;       /* -1, or FLUX single proj_out: 0 = columns [0, D), 1 = [D, K) */
    bool awq, after_gelu;
    int chunks;
} layer;

static int add(layer *v, int n, const char *block, const char *stored, const char *parts, bool awq, int chunks, bool gelu, int col) {
    layer *l = &v[n];
    memset(l, 0, sizeof *l);
    snprintf(l->module, sizeof l->module, "%s.%s", block, stored);
    for (const char *c = parts; *c;) {
        size_t len = strcspn(c, "|");
        snprintf(l->parts[l->n_parts++], sizeof l->parts[0], "%s.%.*s", block, (int)len, c);
        c += len + (c[len] == '|');
    }
    l->awq = awq, l->chunks = chunks, l->after_gelu = gelu, l->col_part = col;
    return n + 1;
}

static int zimage_layers(layer *v, int n_layers, int n_refiner) {
    int n = 0;
    char b[64];
    const char *groups[] = {"layers", "noise_refiner", "context_refiner"};
    for (int g = 0; g < 3; g++)
        for (int i = 0; i < (g ? n_refiner : n_layers); i++) {
            snprintf(b, sizeof b, "%s.%d", groups[g], i);
            n = add(v, n, b, "attention.to_qkv", "attention.to_q|attention.to_k|attention.to_v", false, 0, false, -1);
            n = add(v, n, b, "attention.to_out.0", "attention.to_out.0", false, 0, false, -1);
            n = add(v, n, b, "feed_forward.net.0.proj", "feed_forward.w3|feed_forward.w1", false, 0, false, -1);
            n = add(v, n, b, "feed_forward.net.2", "feed_forward.w2", false, 0, false, -1);
        }
    return n;
}

static int flux_layers(layer *v, int joint, int single) {
    int n = 0;
    char b[64];
    for (int i = 0; i < joint; i++) {
        snprintf(b, sizeof b, "transformer_blocks.%d", i);
        n = add(v, n, b, "norm1.linear", "norm1.linear", true, 6, false, -1);
        n = add(v, n, b, "norm1_context.linear", "norm1_context.linear", true, 6, false, -1);
        n = add(v, n, b, "qkv_proj", "attn.to_q|attn.to_k|attn.to_v", false, 0, false, -1);
        n = add(v, n, b, "qkv_proj_context", "attn.add_q_proj|attn.add_k_proj|attn.add_v_proj", false, 0, false, -1);
        n = add(v, n, b, "out_proj", "attn.to_out.0", false, 0, false, -1);
        n = add(v, n, b, "out_proj_context", "attn.to_add_out", false, 0, false, -1);
        n = add(v, n, b, "mlp_fc1", "ff.net.0.proj", false, 0, false, -1);
        n = add(v, n, b, "mlp_fc2", "ff.net.2", false, 0, true, -1);
        n = add(v, n, b, "mlp_context_fc1", "ff_context.net.0.proj", false, 0, false, -1);
        n = add(v, n, b, "mlp_context_fc2", "ff_context.net.2", false, 0, true, -1);
    }
    for (int i = 0; i < single; i++) {
        snprintf(b, sizeof b, "single_transformer_blocks.%d", i);
        n = add(v, n, b, "norm.linear", "norm.linear", true, 3, false, -1);
        n = add(v, n, b, "qkv_proj", "attn.to_q|attn.to_k|attn.to_v", false, 0, false, -1);
        n = add(v, n, b, "mlp_fc1", "proj_mlp", false, 0, false, -1);
        n = add(v, n, b, "out_proj", "proj_out", false, 0, false, 0);
        n = add(v, n, b, "mlp_fc2", "proj_out", false, 0, true, 1);
    }
    return n;
}

/* FLUX keeps the per-head norms under the block: attn.norm_q.weight → norm_q.weight (§5.7) */
static void flux_rename(const char *name, char *out, size_t n) {
    const char *p = strstr(name, ".attn.norm_");
    if (p && (!strncmp(name, "transformer_blocks.", 19) || !strncmp(name, "single_transformer_blocks.", 26)))
        snprintf(out, n, "%.*s.%s", (int)(p - name), name, p + 6);
    else
        snprintf(out, n, "%s", name);
}

/* ---- reading ---- */

static float *read_f32(const qd_st_file *f, const char *name, int64_t *rows, int64_t *cols) {
    const qd_st_tensor *t = qd_st_find(f, name);
    if (!t) return NULL;
    *rows = t->shape[0], *cols = t->rank == 2 ? t->shape[1] : 1;
    float *v = malloc(sizeof *v * (size_t)t->elements);
    assert_int_equal(qd_decode_row(t->dtype, qd_st_data(f, t), v, (size_t)t->elements), 0);
    return v;
}

/* The layer's source weight [n][k] and bias [n], as §5.7 assembles it (dim = FLUX inner dim). */
static float *layer_weight(const qd_st_file *src, const layer *l, int64_t dim, int64_t *n, int64_t *k, float **bias, bool *has_bias) {
    float *w = NULL;
    *n = 0, *has_bias = false;
    *bias = NULL;
    for (int p = 0; p < l->n_parts; p++) {
        char nm[200];
        int64_t r = 0, c = 0, br = 0, bc = 0;
        snprintf(nm, sizeof nm, "%s.weight", l->parts[p]);
        float *pw = read_f32(src, nm, &r, &c);
        assert_non_null(pw);
        int64_t c0 = 0, cw = c;
        if (l->col_part >= 0) c0 = l->col_part ? dim : 0, cw = l->col_part ? c - dim : dim;
        w = realloc(w, sizeof *w * (size_t)((*n + r) * cw));
        *bias = realloc(*bias, sizeof **bias * (size_t)(*n + r));
        for (int64_t i = 0; i < r; i++) memcpy(w + (*n + i) * cw, pw + i * c + c0, sizeof *w * (size_t)cw);
        snprintf(nm, sizeof nm, "%s.bias", l->parts[p]);
        float *pb = l->col_part == 0 ? NULL : read_f32(src, nm, &br, &bc);
        for (int64_t i = 0; i < r; i++) (*bias)[*n + i] = pb ? pb[i] : 0.0f;
        *has_bias |= pb != NULL;
        free(pw), free(pb);
        *n += r, *k = cw;
    }
    return w;
}

static void python_unpack(const char *file, const char *out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' --unpack-nunchaku '%s' --out '%s'", TOOL, file, out);
    if (system(cmd) != 0) fail_msg("the independent route failed: %s", cmd);
}

static bool bytes_equal(const qd_st_file *f, const char *name, const void *want, size_t n) {
    const qd_st_tensor *t = qd_st_find(f, name);
    if (!t) fail_msg("the unpacked file lacks '%s'", name);
    if (t->end - t->begin != n) fail_msg("'%s': %llu bytes unpacked, %zu expected", name, (unsigned long long)(t->end - t->begin), n);
    return !memcmp(qd_st_data(f, t), want, n);
}

static void expect_tensor(const qd_st_file *f, const char *name, qd_dtype dt, int rank, int64_t d0, int64_t d1) {
    const qd_st_tensor *t = qd_st_find(f, name);
    if (!t) fail_msg("missing tensor '%s'", name);
    if (t->dtype != dt || t->rank != rank || t->shape[0] != d0 || (rank == 2 && t->shape[1] != d1))
        fail_msg("'%s': %s rank %d [%lld, %lld], expected %s [%lld, %lld]", name, qd_dtype_name(t->dtype), t->rank, (long long)t->shape[0],
                 (long long)(t->rank == 2 ? t->shape[1] : 0), qd_dtype_name(dt), (long long)d0, (long long)d1);
}

/* ---- one whole case ---- */

typedef struct {
    const char *src_dir;   /* transformer folder */
    const char *io;        /* forward inputs / reference output, or NULL */
    bool flux, nvfp4;
    int joint, single, layers, refiner; /* block counts */
    int64_t dim;
    int rank;
} conv_case;

static char *convert(const conv_case *c, const char *dir, const char *name) {
    char *save = qt_path(dir, name), *out = NULL, *err = NULL, rank[16];
    snprintf(rank, sizeof rank, "%d", c->rank);
    int rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", c->src_dir, "--save-dir", save, "--precision", c->nvfp4 ? "nvfp4" : "int4",
                         "--rank", rank, "--name", "m", NULL);
    if (rc) fail_msg("convert svdquant failed (%d): %s", rc, err);
    print_message("%s", out);
    char file[64];
    snprintf(file, sizeof file, "svdq-%s_r%d-m.safetensors", c->nvfp4 ? "fp4" : "int4", c->rank);
    char *path = qt_path(save, file);
    struct stat st;
    if (stat(path, &st)) fail_msg("%s was not written", path);
    free(out), free(err), free(save);
    return path;
}

static void check_structure(const conv_case *c, const qd_st_file *src, const qd_st_file *q, const layer *ls, int nl) {
    const int64_t rs = rup(c->rank, 16);
    size_t expected = 0;
    bool *consumed = calloc(src->n_tensors, sizeof *consumed);
    for (int i = 0; i < nl; i++) {
        const layer *l = &ls[i];
        int64_t n = 0, k = 0;
        bool src_bias = false;
        for (int p = 0; p < l->n_parts; p++) {
            char nm[200];
            snprintf(nm, sizeof nm, "%s.weight", l->parts[p]);
            const qd_st_tensor *t = qd_st_find(src, nm);
            assert_non_null(t);
            consumed[t - src->tensors] = true;
            n += t->shape[0], k = l->col_part < 0 ? t->shape[1] : l->col_part ? t->shape[1] - c->dim : c->dim;
            snprintf(nm, sizeof nm, "%s.bias", l->parts[p]);
            const qd_st_tensor *b = qd_st_find(src, nm);
            if (b) consumed[b - src->tensors] = true, src_bias = true;
        }
        char nm[240];
#define T(suffix, ...) (snprintf(nm, sizeof nm, "%s.%s", l->module, suffix), expect_tensor(q, nm, __VA_ARGS__), expected++)
        if (l->awq) { /* §5.6 */
            const int64_t gp = ((k / 64 + 7) / 8 + 1) / 2 * 2 * 8;
            T("qweight", QD_DTYPE_I32, 2, n / 4, k / 2);
            T("wscales", QD_DTYPE_BF16, 2, gp, n);
            T("wzeros", QD_DTYPE_BF16, 2, gp, n);
            T("bias", QD_DTYPE_BF16, 1, n, 0);
            continue;
        }
        const int64_t np = rup(n, 128), kp = rup(k, 128); /* §5.2 */
        const bool v1 = !c->flux;
        T("qweight", QD_DTYPE_I8, 2, np, kp / 2);
        if (c->nvfp4) {
            T("wscales", QD_DTYPE_F8_E4M3, 2, kp / 16, np);
            if (l->n_parts > 1) T("wcscales", QD_DTYPE_BF16, 1, np, 0); /* fused: per-channel first-level scale */
            else T("wtscale", QD_DTYPE_BF16, 1, 1, 0);
        } else {
            T("wscales", QD_DTYPE_BF16, 2, kp / 64, np);
        }
        T(v1 ? "smooth_factor" : "smooth", QD_DTYPE_BF16, 1, kp, 0);
        T(v1 ? "smooth_factor_orig" : "smooth_orig", QD_DTYPE_BF16, 1, kp, 0);
        T(v1 ? "proj_down" : "lora_down", QD_DTYPE_BF16, 2, kp, rs);
        T(v1 ? "proj_up" : "lora_up", QD_DTYPE_BF16, 2, np, rs);
        if (c->flux || src_bias) T("bias", QD_DTYPE_BF16, 1, np, 0); /* deepcompressor: FLUX always; v1 only with one */
#undef T
    }
    for (size_t i = 0; i < src->n_tensors; i++) {
        if (consumed[i]) continue;
        char nm[240];
        if (c->flux) flux_rename(src->tensors[i].name, nm, sizeof nm);
        else snprintf(nm, sizeof nm, "%s", src->tensors[i].name);
        expect_tensor(q, nm, QD_DTYPE_BF16, src->tensors[i].rank, src->tensors[i].shape[0], src->tensors[i].rank == 2 ? src->tensors[i].shape[1] : 0);
        expected++;
    }
    assert_int_equal(q->n_tensors, expected); /* and nothing else */
    free(consumed);

    /* metadata (§5.1) */
    json_t *cfg = json_loads(qd_st_meta_get(q, "config"), 0, NULL), *qc = json_loads(qd_st_meta_get(q, "quantization_config"), 0, NULL);
    assert_non_null(cfg), assert_non_null(qc);
    assert_string_equal(json_string_value(json_object_get(cfg, "_class_name")), c->flux ? "FluxTransformer2DModel" : "ZImageTransformer2DModel");
    assert_string_equal(qd_st_meta_get(q, "model_class"), c->flux ? "NunchakuFluxTransformer2dModel" : "NunchakuZImageTransformer2DModel");
    assert_string_equal(json_string_value(json_object_get(qc, "method")), "svdquant");
    json_t *wq = json_object_get(qc, "weight");
    assert_string_equal(json_string_value(json_object_get(wq, "dtype")), c->nvfp4 ? "fp4_e2m1_all" : "int4");
    assert_int_equal(json_integer_value(json_object_get(wq, "group_size")), c->nvfp4 ? 16 : 64);
    assert_int_equal(json_integer_value(json_object_get(qc, "rank")), c->rank);
    json_decref(cfg), json_decref(qc);
}

/* qdit detects the file as SVDQuant and plans exactly the Nunchaku modules quantized */
static void check_plan(const conv_case *c, const char *file, const layer *ls, int nl) {
    qd_options o;
    qd_options_init(&o);
    o.transformer_weights_path = file;
    qd_component_source cs;
    if (qd_component_source_resolve(&o, "transformer", NULL, &cs)) fail_msg("%s", qd_last_error());
    qd_ckpt *ck;
    if (qd_weight_set_open(&cs.weights, &ck)) fail_msg("%s", qd_last_error());
    qd_quant_config cfg;
    if (qd_quant_resolve(&o, &cs, ck, c->flux ? "FluxTransformer2DModel" : "ZImageTransformer2DModel", &cfg)) fail_msg("resolve: %s", qd_last_error());
    assert_int_equal(cfg.method, QD_QM_SVDQUANT);
    assert_int_equal(cfg.svdq_nvfp4, c->nvfp4);
    assert_int_equal(cfg.svdq_rank, c->rank);
    char **mods;
    size_t nm, quantized = 0;
    assert_int_equal(qd_plan_candidates(ck, &mods, &nm), QD_OK);
    for (size_t i = 0; i < nm; i++) {
        const char *shard[1] = {mods[i]};
        qd_linear l;
        if (qd_linear_plan(&cfg, ck, mods[i], shard, 1, &l)) fail_msg("plan %s: %s", mods[i], qd_last_error());
        const layer *want = NULL;
        for (int j = 0; j < nl; j++)
            if (!strcmp(ls[j].module, mods[i])) want = &ls[j];
        const char *expect = !want ? "dense" : want->awq ? "awq_w4a16" : c->nvfp4 ? "svdq_nvfp4" : "svdq_int4";
        if (want ? strcmp(l.scheme_name, expect) != 0 : l.scheme != QD_SCHEME_DENSE)
            fail_msg("the plan makes %s %s, expected %s", mods[i], l.scheme_name, expect);
        quantized += want != NULL;
        qd_linear_free(&l);
        free(mods[i]);
    }
    free(mods);
    assert_int_equal(quantized, (size_t)nl);
    qd_quant_config_free(&cfg);
    qd_ckpt_close(ck);
    qd_component_source_free(&cs);
}

/* the numpy unpacking equals the converter's quantization of each layer, bit for bit; the effective
 * weight is within BOUND_W of the source */
static double check_layers(const conv_case *c, const qd_st_file *src, const qd_st_file *u, const layer *ls, int nl) {
    double worst = 0;
    for (int i = 0; i < nl; i++) {
        const layer *l = &ls[i];
        int64_t n, k;
        float *bias;
        bool has_bias;
        float *w = layer_weight(src, l, c->dim, &n, &k, &bias, &has_bias);
        char nm[240];
        int64_t er = 0, ec = 0;
        snprintf(nm, sizeof nm, "%s.w_eff", l->module);
        float *we = read_f32(u, nm, &er, &ec);
        assert_non_null(we);
        if (l->awq) {
            qd_awq_layer a;
            assert_int_equal(qd_awq_quantize(l->module, w, has_bias ? bias : NULL, n, k, l->chunks, &a), QD_OK);
            snprintf(nm, sizeof nm, "%s.codes", l->module);
            if (!bytes_equal(u, nm, a.codes, (size_t)(n * k))) fail_msg("%s: AWQ codes differ between the file and the quantizer", l->module);
            qd_awq_layer_free(&a);
            /* w_eff is in the stored (interleaved) row order: stored row i·C + c = row c·(N/C) + i */
            double num = 0, den = 0;
            for (int64_t r = 0; r < n; r++)
                for (int64_t x = 0; x < k; x++) {
                    const int64_t orig = (r % l->chunks) * (n / l->chunks) + r / l->chunks;
                    const double d = we[r * ec + x] - w[orig * k + x];
                    num += d * d, den += (double)w[orig * k + x] * w[orig * k + x];
                }
            const double e = sqrt(num / den);
            worst = e > worst ? e : worst;
            if (!(e <= BOUND_W)) fail_msg("%s: AWQ effective weight relative error %.3e > %.2g", l->module, e, BOUND_W);
        } else {
            qd_svdq_opts o = {.nvfp4 = c->nvfp4, .rank = c->rank, .after_gelu = l->after_gelu, .bias = c->flux || has_bias, .v1_names = !c->flux,
                              .seed = qd_svdq_layer_seed(l->module)};
            if (l->n_parts > 1) {
                o.n_shards = l->n_parts;
                for (int p = 0; p < l->n_parts; p++) {
                    char pn[200];
                    snprintf(pn, sizeof pn, "%s.weight", l->parts[p]);
                    o.shard_rows[p] = qd_st_find(src, pn)->shape[0];
                }
            }
            qd_svdq_layer q;
            assert_int_equal(qd_svdq_quantize(l->module, w, has_bias ? bias : NULL, n, k, NULL, &o, &q), QD_OK);
            const size_t np = (size_t)q.np, kp = (size_t)q.kp, rs = (size_t)q.rank;
            struct {
                const char *suffix;
                const void *data;
                size_t bytes;
            } parts[] = {{"codes", q.codes, np * kp},
                         {"wscales", c->nvfp4 ? (const void *)q.wscales8 : (const void *)q.wscales, c->nvfp4 ? np * (kp / 16) : np * (kp / 64) * 2},
                         {"smooth", q.smooth, kp * 2},
                         {"smooth_orig", q.smooth, kp * 2},
                         {"down", q.down, rs * kp * 2},
                         {"up", q.up, np * rs * 2},
                         {"bias", q.bias_v, q.bias_v ? np * 2 : 0},
                         {"wcscales", q.wcscales, q.wcscales ? np * 2 : 0},
                         {"wtscale", &q.wtscale, c->nvfp4 && !q.wcscales ? 2 : 0}};
            for (size_t p = 0; p < sizeof parts / sizeof *parts; p++) {
                if (!parts[p].bytes) continue;
                snprintf(nm, sizeof nm, "%s.%s", l->module, parts[p].suffix);
                if (!bytes_equal(u, nm, parts[p].data, parts[p].bytes)) fail_msg("%s: %s differ between the file and the quantizer", l->module, parts[p].suffix);
            }
            double num = 0, den = 0;
            for (int64_t r = 0; r < n; r++)
                for (int64_t x = 0; x < k; x++) {
                    const double d = we[r * ec + x] - w[r * k + x];
                    num += d * d, den += (double)w[r * k + x] * w[r * k + x];
                }
            const double e = sqrt(num / den);
            worst = e > worst ? e : worst;
            if (!(e <= BOUND_W)) fail_msg("%s: effective weight relative error %.3e > %.2g", l->module, e, BOUND_W);
            /* the padding (§5.3): codes 0 beyond N and K */
            for (int64_t r = 0; r < q.np; r++)
                for (int64_t x = r < n ? k : 0; x < q.kp; x++)
                    if (q.codes[r * q.kp + x]) fail_msg("%s: padding code at (%lld, %lld) is not 0", l->module, (long long)r, (long long)x);
            qd_svdq_layer_free(&q);
        }
        free(w), free(bias), free(we);
    }
    return worst;
}

static void run_case(const conv_case *c) {
    char *dir = qt_mkdtemp("convert-svdquant");
    layer *ls = calloc(512, sizeof *ls);
    const int nl = c->flux ? flux_layers(ls, c->joint, c->single) : zimage_layers(ls, c->layers, c->refiner);
    char *file = convert(c, dir, "out");
    char srcp[600], *unp = qt_path(dir, "unpacked.safetensors");
    snprintf(srcp, sizeof srcp, "%s/diffusion_pytorch_model.safetensors", c->src_dir);
    qd_st_file *src, *q, *u;
    assert_int_equal(qd_st_open(srcp, &src), QD_OK);
    assert_int_equal(qd_st_open(file, &q), QD_OK);
    check_structure(c, src, q, ls, nl);
    check_plan(c, file, ls, nl);
    python_unpack(file, unp);
    assert_int_equal(qd_st_open(unp, &u), QD_OK);
    const double worst = check_layers(c, src, u, ls, nl);
    print_message("%d layers: packing bit-exact, worst effective-weight error %.3e (bound %.2g)\n", nl, worst, BOUND_W);
    if (c->io) {
        char *o1 = qt_path(dir, "q.safetensors"), *o2 = qt_path(dir, "ref.safetensors"), *out = NULL, *err = NULL;
        int rc = qt_run_qdit(&out, &err, "forward", "--component", c->src_dir, "--transformer-weights-path", file, "--inputs", c->io, "--output", o1,
                             "--precision", "f32", "--no-act-quant", NULL);
        if (rc) fail_msg("forward on the converted file: %s", err);
        free(out), free(err);
        rc = qt_run_qdit(&out, &err, "forward", "--component", c->src_dir, "--inputs", c->io, "--output", o2, "--precision", "f32", NULL);
        if (rc) fail_msg("forward on the source: %s", err);
        const double e = qt_rel_l2(o1, "output", o2, "output");
        print_message("forward --no-act-quant vs the BF16 model: relative L2 %.3e (bound %.2g, floor %.0e)\n", e, BOUND_FWD, FLOOR);
        if (!(e <= BOUND_FWD && e >= FLOOR)) fail_msg("forward relative L2 %.3e outside [%.0e, %.2g]", e, FLOOR, BOUND_FWD);
        free(out), free(err), free(o1), free(o2);
    }
    qd_st_close(src), qd_st_close(q), qd_st_close(u);
    free(ls), free(file), free(unp);
    qt_rmtree(dir);
    free(dir);
}

static void test_zimage_int4(void **state) {
    (void)state;
    conv_case c = {FIX "/zimage_tiny_a/transformer", FIX "/zimage_tiny_a/io.safetensors", false, false, 0, 0, 2, 1, 64, 32};
    run_case(&c);
}

static void test_zimage_nvfp4(void **state) {
    (void)state;
    conv_case c = {FIX "/zimage_tiny_a/transformer", FIX "/zimage_tiny_a/io.safetensors", false, true, 0, 0, 2, 1, 64, 32};
    run_case(&c);
}

static void test_flux_int4(void **state) {
    (void)state;
    conv_case c = {FIX "/flux_tiny_a/transformer", FIX "/flux_tiny_a/io.safetensors", true, false, 2, 2, 0, 0, 128, 32};
    run_case(&c);
}

static void test_flux_nvfp4(void **state) {
    (void)state;
    conv_case c = {FIX "/flux_tiny_a/transformer", FIX "/flux_tiny_a/io.safetensors", true, true, 2, 2, 0, 0, 128, 16};
    run_case(&c);
}

/* ---- a Z-Image transformer at the lead's sizes, with low-rank-plus-noise block weights ---- */

typedef struct {
    qd_st_writer *w;
    int pass;
    uint64_t rng;
    const char *nan_in; /* a weight to poison with one NaN */
} gen;

static void put(gen *g, const char *name, int rank, int64_t d0, int64_t d1, bool structured) {
    const int64_t n = d0 * (rank == 2 ? d1 : 1);
    if (g->pass == 0) {
        assert_int_equal(qd_st_writer_add(g->w, name, QD_DTYPE_BF16, rank, (int64_t[]){d0, d1}), QD_OK);
        return;
    }
    float *v = malloc(sizeof *v * (size_t)n);
    uint16_t *h = malloc(sizeof *h * (size_t)n);
    if (structured) { /* 4 strong directions (outlier structure) + noise: what the low-rank branch is for */
        float a[4][1024], b[4][1024];
        for (int r = 0; r < 4; r++) {
            for (int64_t i = 0; i < d0; i++) a[r][i] = qt_rand_uniform(&g->rng, -1, 1);
            for (int64_t j = 0; j < d1; j++) b[r][j] = qt_rand_uniform(&g->rng, -1, 1) * (j % 37 == 0 ? 8.0f : 1.0f);
        }
        for (int64_t i = 0; i < d0; i++)
            for (int64_t j = 0; j < d1; j++) {
                float s = 0;
                for (int r = 0; r < 4; r++) s += a[r][i] * b[r][j];
                v[i * d1 + j] = 0.05f * s + qt_rand_uniform(&g->rng, -0.02f, 0.02f);
            }
    } else {
        for (int64_t i = 0; i < n; i++) v[i] = rank == 1 && strstr(name, "norm") ? 1.0f + qt_rand_uniform(&g->rng, -0.1f, 0.1f) : qt_rand_uniform(&g->rng, -0.05f, 0.05f);
    }
    if (g->nan_in && !strcmp(g->nan_in, name)) v[n / 2] = NAN;
    qd_encode_row(QD_DTYPE_BF16, v, h, (size_t)n);
    assert_int_equal(qd_st_writer_put(g->w, name, h, 2 * (uint64_t)n), QD_OK);
    free(v), free(h);
}

static void write_zimage(const char *dir, uint64_t seed, const char *nan_in) {
    const int64_t D = 192, heads = 3, hd = 64, ffn = 512, cap = 128, ad = 192;
    mkdir(dir, 0777);
    char *cfgp = qt_path(dir, "config.json"), *wp = qt_path(dir, "diffusion_pytorch_model.safetensors");
    json_t *cfg = json_pack("{s:s, s:[i], s:[i], s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:b, s:i, s:f, s:f, s:[i,i,i], s:[i,i,i]}", "_class_name", "ZImageTransformer2DModel",
                            "all_patch_size", 2, "all_f_patch_size", 1, "in_channels", 16, "dim", (int)D, "n_layers", 2, "n_refiner_layers", 1, "n_heads", (int)heads,
                            "n_kv_heads", (int)heads, "norm_eps", 1e-5, "qk_norm", 1, "cap_feat_dim", (int)cap, "rope_theta", 256.0, "t_scale", 1000.0, "axes_dims", 16, 24,
                            24, "axes_lens", 1024, 512, 512);
    assert_int_equal(json_dump_file(cfg, cfgp, 0), 0);
    json_decref(cfg);
    gen g = {.rng = seed, .nan_in = nan_in};
    assert_int_equal(qd_st_writer_create(wp, &g.w), QD_OK);
    for (g.pass = 0; g.pass < 2; g.pass++) {
        if (g.pass == 1) assert_int_equal(qd_st_writer_begin(g.w), QD_OK);
        g.rng = seed;
        put(&g, "all_x_embedder.2-1.weight", 2, D, 64, false);
        put(&g, "all_x_embedder.2-1.bias", 1, D, 0, false);
        put(&g, "all_final_layer.2-1.adaLN_modulation.1.weight", 2, D, ad, false);
        put(&g, "all_final_layer.2-1.adaLN_modulation.1.bias", 1, D, 0, false);
        put(&g, "all_final_layer.2-1.linear.weight", 2, 64, D, false);
        put(&g, "all_final_layer.2-1.linear.bias", 1, 64, 0, false);
        put(&g, "cap_embedder.0.weight", 1, cap, 0, false);
        put(&g, "cap_embedder.1.weight", 2, D, cap, false);
        put(&g, "cap_embedder.1.bias", 1, D, 0, false);
        put(&g, "cap_pad_token", 2, 1, D, false);
        put(&g, "x_pad_token", 2, 1, D, false);
        put(&g, "t_embedder.mlp.0.weight", 2, 1024, 256, false);
        put(&g, "t_embedder.mlp.0.bias", 1, 1024, 0, false);
        put(&g, "t_embedder.mlp.2.weight", 2, ad, 1024, false);
        put(&g, "t_embedder.mlp.2.bias", 1, ad, 0, false);
        const char *blocks[] = {"layers.0", "layers.1", "noise_refiner.0", "context_refiner.0"};
        for (int b = 0; b < 4; b++) {
            char n[128];
#define P(suffix, ...) (snprintf(n, sizeof n, "%s.%s", blocks[b], suffix), put(&g, n, __VA_ARGS__))
            if (b < 3) P("adaLN_modulation.0.weight", 2, 4 * D, ad, false), P("adaLN_modulation.0.bias", 1, 4 * D, 0, false);
            P("attention.to_q.weight", 2, D, D, true);
            P("attention.to_k.weight", 2, D, D, true);
            P("attention.to_v.weight", 2, D, D, true);
            P("attention.to_out.0.weight", 2, D, D, true);
            P("attention.norm_q.weight", 1, hd, 0, false);
            P("attention.norm_k.weight", 1, hd, 0, false);
            P("attention_norm1.weight", 1, D, 0, false);
            P("attention_norm2.weight", 1, D, 0, false);
            P("ffn_norm1.weight", 1, D, 0, false);
            P("ffn_norm2.weight", 1, D, 0, false);
            P("feed_forward.w1.weight", 2, ffn, D, true);
            P("feed_forward.w2.weight", 2, D, ffn, true);
            P("feed_forward.w3.weight", 2, ffn, D, true);
#undef P
        }
    }
    assert_int_equal(qd_st_writer_finish(g.w), QD_OK);
    free(cfgp), free(wp);
}

/* The lead's shapes (dim 192, head dim 64, FFN 512: K = 192 and 512 in the file), low rank + noise: the
 * whole path, and rank 32 against rank 0 layer by layer (rank 0 from the quantizer itself: a Nunchaku file
 * cannot hold rank 0). */
static void test_lowrank_helps_lead_shapes(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("convert-svdquant-lead"), *src_dir = qt_path(dir, "transformer");
    const uint64_t seed = qt_seed();
    write_zimage(src_dir, seed, NULL);
    conv_case c = {src_dir, NULL, false, false, 0, 0, 2, 1, 192, 32};
    run_case(&c);
    /* rank 32 vs rank 0 on each quantized layer */
    layer ls[16];
    const int nl = zimage_layers(ls, 2, 1);
    char srcp[600];
    snprintf(srcp, sizeof srcp, "%s/diffusion_pytorch_model.safetensors", src_dir);
    qd_st_file *src;
    assert_int_equal(qd_st_open(srcp, &src), QD_OK);
    for (int i = 0; i < nl; i++) {
        int64_t n, k;
        float *bias;
        bool hb;
        float *w = layer_weight(src, &ls[i], 192, &n, &k, &bias, &hb);
        qd_svdq_opts o = {.rank = 32, .v1_names = true, .seed = 1};
        qd_svdq_layer a, b;
        assert_int_equal(qd_svdq_quantize(ls[i].module, w, NULL, n, k, NULL, &o, &a), QD_OK);
        o.rank = 0;
        assert_int_equal(qd_svdq_quantize(ls[i].module, w, NULL, n, k, NULL, &o, &b), QD_OK);
        print_message("%-40s K %3lld: rank 32 %.3e, rank 0 %.3e\n", ls[i].module, (long long)k, a.rel_err, b.rel_err);
        if (!(a.rel_err < 0.5 * b.rel_err)) fail_msg("%s: rank 32 leaves %.3e, not below half of rank 0's %.3e", ls[i].module, a.rel_err, b.rel_err);
        qd_svdq_layer_free(&a), qd_svdq_layer_free(&b);
        free(w), free(bias);
    }
    qd_st_close(src);
    /* K = 64 and 128 (the lead's x_embedder and cap_embedder widths) quantize with group 64 too, padded */
    for (int64_t k = 64; k <= 128; k += 64) {
        float *w = malloc(sizeof *w * (size_t)(96 * k));
        uint64_t r = seed + (uint64_t)k;
        for (int64_t i = 0; i < 96 * k; i++) w[i] = qt_rand_uniform(&r, -1, 1);
        qd_svdq_opts o = {.rank = 32, .seed = 2};
        qd_svdq_layer a;
        assert_int_equal(qd_svdq_quantize("k-test", w, NULL, 96, k, NULL, &o, &a), QD_OK);
        assert_int_equal(a.kp, 128), assert_int_equal(a.np, 128);
        print_message("K %lld: relative error %.3e\n", (long long)k, a.rel_err);
        assert_true(a.rel_err < BOUND_W);
        qd_svdq_layer_free(&a);
        free(w);
    }
    qt_rmtree(dir);
    free(dir), free(src_dir);
}

static bool has_staging_leftovers(const char *parent) {
    DIR *d = opendir(parent);
    bool found = false;
    struct dirent *e;
    while (d && (e = readdir(d))) found |= strstr(e->d_name, ".qdit-") != NULL;
    if (d) closedir(d);
    return found;
}

/* A conversion that fails on its last layers leaves no output and no temporary folder; an existing output
 * is kept without --overwrite and replaced with it; bad inputs are named. */
static void test_failures(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("convert-svdquant-fail"), *src_dir = qt_path(dir, "bad"), *save = qt_path(dir, "out"), *out = NULL, *err = NULL;
    write_zimage(src_dir, qt_seed(), "context_refiner.0.feed_forward.w2.weight");
    int rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", src_dir, "--save-dir", save, NULL);
    assert_int_not_equal(rc, 0);
    print_message("error: %s", err);
    assert_non_null(strstr(err, "context_refiner.0.feed_forward.net.2"));
    struct stat st;
    assert_int_not_equal(stat(save, &st), 0);
    assert_false(has_staging_leftovers(dir));
    free(out), free(err);

    /* an existing non-empty folder: refused without --overwrite, untouched */
    mkdir(save, 0777);
    char *keep = qt_path(save, "notes.txt");
    qt_write_text(keep, "mine");
    rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", FIX "/zimage_tiny_a/transformer", "--save-dir", save, NULL);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, "--overwrite"));
    free(out), free(err);
    /* with --overwrite, still refused: it does not look like an earlier svdquant output */
    rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", FIX "/zimage_tiny_a/transformer", "--save-dir", save, "--overwrite", NULL);
    assert_int_not_equal(rc, 0);
    assert_int_equal(stat(keep, &st), 0);
    free(out), free(err);
    qt_rmtree(save);
    /* an earlier output is replaced with --overwrite */
    rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", FIX "/zimage_tiny_a/transformer", "--save-dir", save, "--rank", "16", NULL);
    assert_int_equal(rc, 0);
    free(out), free(err);
    rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", FIX "/zimage_tiny_a/transformer", "--save-dir", save, NULL);
    assert_int_not_equal(rc, 0);
    free(out), free(err);
    rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", FIX "/zimage_tiny_a/transformer", "--save-dir", save, "--overwrite", NULL);
    assert_int_equal(rc, 0);
    free(out), free(err);
    char *old = qt_path(save, "svdq-int4_r16-zimage_tiny_a.safetensors"), *now = qt_path(save, "svdq-int4_r32-zimage_tiny_a.safetensors");
    assert_int_not_equal(stat(old, &st), 0);
    assert_int_equal(stat(now, &st), 0);
    const mode_t mask = umask(0);
    umask(mask);
    assert_int_equal(stat(save, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0777 & ~mask); /* a plain mkdir's mode, not mkdtemp's 0700 */
    assert_false(has_staging_leftovers(dir));

    /* bad inputs: a class without a Nunchaku layout, a bad precision, a bad rank */
    char *wan = qt_path(dir, "wan"), *wan_cfg = qt_path(wan, "config.json"), *wan_w = qt_path(wan, "diffusion_pytorch_model.safetensors");
    mkdir(wan, 0777);
    qt_write_text(wan_cfg, "{\"_class_name\": \"WanTransformer3DModel\"}");
    assert_int_equal(symlink(FIX "/zimage_tiny_a/transformer/diffusion_pytorch_model.safetensors", wan_w), 0);
    const struct {
        const char *model, *flag, *value, *want;
    } bad[] = {
        {FIX "/zimage_tiny_a/transformer", "--precision", "int8", "--precision int8"},
        {wan, "--rank", "32", "WanTransformer3DModel"},
        {FIX "/flux_tiny_a/transformer", "--rank", "0", "--rank 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *o2 = qt_path(dir, "never");
        rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", bad[i].model, "--save-dir", o2, bad[i].flag, bad[i].value, NULL);
        print_message("error: %s", err);
        assert_int_not_equal(rc, 0);
        assert_non_null(strstr(err, bad[i].want));
        assert_int_not_equal(stat(o2, &st), 0);
        free(out), free(err), free(o2);
    }
    free(keep), free(old), free(now), free(wan), free(wan_cfg), free(wan_w);
    qt_rmtree(dir);
    free(dir), free(src_dir), free(save);
}

/* --amax: a layer with activation maxima gets smooth[k] = sqrt(amax_x[k] / max_n |W[n][k]|) (bf16), the
 * others stay 1; the effective weight still approximates the source. */
static void test_amax_smoothing(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("convert-svdquant-amax"), *amax = qt_path(dir, "amax.safetensors"), *save = qt_path(dir, "out");
    char *unp = qt_path(dir, "u.safetensors"), *out = NULL, *err = NULL;
#define SRC_DIR FIX "/zimage_tiny_a/transformer"
    const char *src_dir = SRC_DIR;
    uint64_t rng = qt_seed();
    float a[64];
    for (int i = 0; i < 64; i++) a[i] = qt_rand_uniform(&rng, 0.1f, 20.0f);
    qd_st_writer *w;
    assert_int_equal(qd_st_writer_create(amax, &w), QD_OK);
    assert_int_equal(qd_st_writer_add(w, "layers.0.attention.to_q.input_amax", QD_DTYPE_F32, 1, (int64_t[]){64}), QD_OK);
    assert_int_equal(qd_st_writer_begin(w), QD_OK);
    assert_int_equal(qd_st_writer_put(w, "layers.0.attention.to_q.input_amax", a, sizeof a), QD_OK);
    assert_int_equal(qd_st_writer_finish(w), QD_OK);
    int rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", src_dir, "--save-dir", save, "--amax", amax, "--name", "m", NULL);
    if (rc) fail_msg("convert --amax: %s", err);
    char *file = qt_path(save, "svdq-int4_r32-m.safetensors");
    python_unpack(file, unp);
    qd_st_file *src, *u;
    assert_int_equal(qd_st_open(SRC_DIR "/diffusion_pytorch_model.safetensors", &src), QD_OK);
    assert_int_equal(qd_st_open(unp, &u), QD_OK);
    layer ls[16];
    zimage_layers(ls, 2, 1);
    int64_t n = 0, k = 0, r = 0, c = 0;
    float *bias;
    bool hb;
    float *wt = layer_weight(src, &ls[0], 64, &n, &k, &bias, &hb); /* layers.0.attention.to_qkv */
    float *sm = read_f32(u, "layers.0.attention.to_qkv.smooth", &r, &c), *we = read_f32(u, "layers.0.attention.to_qkv.w_eff", &r, &c);
    for (int64_t x = 0; x < k; x++) {
        float wmax = 0;
        for (int64_t i = 0; i < n; i++) wmax = fmaxf(wmax, fabsf(wt[i * k + x]));
        const float want = qd_bf16_to_f32(qd_f32_to_bf16(sqrtf(a[x] / wmax)));
        if (sm[x] != want) fail_msg("smooth[%lld] = %g, expected %g", (long long)x, (double)sm[x], (double)want);
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t x = 0; x < k; x++) num += pow(we[i * c + x] - wt[i * k + x], 2), den += (double)wt[i * k + x] * wt[i * k + x];
    print_message("smoothed to_qkv: effective weight relative error %.3e\n", sqrt(num / den));
    assert_true(sqrt(num / den) <= BOUND_W);
    float *other = read_f32(u, "layers.1.attention.to_qkv.smooth", &r, &c);
    for (int64_t x = 0; x < r; x++) assert_true(other[x] == 1.0f);
    free(wt), free(bias), free(sm), free(we), free(other), free(file), free(out), free(err);
    qd_st_close(src), qd_st_close(u);
    qt_rmtree(dir);
    free(dir), free(amax), free(save), free(unp);
}

/* ---- --calibrate ---- */

/* The test's own record of what each linear saw: per input channel, the largest |x| over every call. */
typedef struct {
    char name[160];
    int64_t k;
    float *m;
} seen_layer;
typedef struct {
    seen_layer v[128];
    int n;
} seen;

static void see(void *user, qd_backend *be, const qd_linear *l, const qd_tensor *x) {
    seen *s = user;
    const int64_t k = x->shape[x->rank - 1], rows = qd_tensor_elements(x) / k;
    float *f = malloc(sizeof *f * (size_t)(rows * k));
    qd_tensor t = {0};
    assert_int_equal(qd_tensor_new(be, &t, QD_DTYPE_F32, x->rank, x->shape), QD_OK);
    assert_int_equal(be->ops->copy(be, x, &t), QD_OK);
    assert_int_equal(be->ops->download(be, &t, f), QD_OK);
    qd_tensor_free(&t);
    int i = 0;
    while (i < s->n && strcmp(s->v[i].name, l->name)) i++;
    if (i == s->n) {
        assert_true(s->n < 128);
        snprintf(s->v[i].name, sizeof s->v[i].name, "%s", l->name);
        s->v[i].k = k, s->v[i].m = calloc((size_t)k, sizeof(float));
        s->n++;
    }
    assert_int_equal(s->v[i].k, k);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < k; c++)
            if (fabsf(f[r * k + c]) > s->v[i].m[c]) s->v[i].m[c] = fabsf(f[r * k + c]);
    free(f);
}

/* --calibrate on the tiny Z-Image pipeline (the tiny FLUX one, dim 32, is below Nunchaku AWQ's K ≥ 64):
 * every SVDQ layer's smoothing factors are bf16(sqrt(amax_x[k] / amax_w[k])) with amax_x observed by
 * this test while it generates the same prompt (seed 0, 1 step, 64×64) and amax_w the source weight's
 * column maxima. Bad calibration inputs are named. */
static void test_calibrate(void **state) {
    (void)state;
    const char *pipes = getenv("QDIT_TINY_PIPELINES");
    if (!pipes) fail_msg("QDIT_TINY_PIPELINES is not set (ctest sets it after tiny_pipelines_generate)");
    char *dir = qt_mkdtemp("convert-svdquant-calib"), *prompts = qt_path(dir, "prompts.txt");
    qt_write_text(prompts, "a red cube on a wooden table\n");
    {
        char *pipe = qt_path(pipes, "zimage"), *src_dir = qt_path(pipe, "transformer");
        char *save = qt_path(dir, "z"), *unp = qt_path(dir, "uz.safetensors");
        char *out = NULL, *err = NULL;
        int rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", src_dir, "--save-dir", save, "--name", "m", "--calibrate", prompts,
                             "--calib-steps", "1", "--calib-size", "64", NULL);
        if (rc) fail_msg("convert --calibrate: %s", err);
        free(out), free(err);
        /* the independent observation */
        seen obs = {0};
        qd_options o;
        qd_options_init(&o);
        o.model_path = pipe;
        qd_generate_args g = {.prompt = "a red cube on a wooden table", .steps = 1, .height = 64, .width = 64, .guidance = -1, .seed = 0,
                              .observe = see, .observe_user = &obs, .no_image = true};
        qd_generate_report rep;
        assert_int_equal(qd_generate_run(&o, &g, &rep), QD_OK);
        char *file = qt_path(save, "svdq-int4_r32-m.safetensors");
        python_unpack(file, unp);
        char srcp[600];
        snprintf(srcp, sizeof srcp, "%s/diffusion_pytorch_model.safetensors", src_dir);
        qd_st_file *src, *u;
        assert_int_equal(qd_st_open(srcp, &src), QD_OK);
        assert_int_equal(qd_st_open(unp, &u), QD_OK);
        layer ls[64];
        const int nl = zimage_layers(ls, 1, 1);
        int checked = 0, not_one = 0;
        for (int i = 0; i < nl; i++) {
            const layer *l = &ls[i];
            int j = 0;
            while (j < obs.n && strcmp(obs.v[j].name, l->parts[0])) j++;
            if (j == obs.n) fail_msg("the pipeline never ran '%s'", l->parts[0]);
            int64_t n = 0, k = 0, r = 0, c = 0;
            float *bias;
            bool hb;
            float *w = layer_weight(src, l, 32, &n, &k, &bias, &hb);
            char nm[200];
            snprintf(nm, sizeof nm, "%s.smooth", l->module);
            float *sm = read_f32(u, nm, &r, &c);
            assert_non_null(sm);
            assert_int_equal(obs.v[j].k, k);
            for (int64_t x = 0; x < k; x++) {
                float wmax = 0;
                for (int64_t y = 0; y < n; y++) wmax = fmaxf(wmax, fabsf(w[y * k + x]));
                const float ax = obs.v[j].m[x];
                const float want = ax > 0 && wmax > 0 ? qd_bf16_to_f32(qd_f32_to_bf16(sqrtf(ax / wmax))) : 1.0f;
                if (sm[x] != want) fail_msg("%s smooth[%lld] = %.9g, expected bf16(sqrt(%.9g / %.9g)) = %.9g", l->module, (long long)x, (double)sm[x], (double)ax, (double)wmax, (double)want);
                not_one += want != 1.0f;
            }
            checked++;
            free(w), free(bias), free(sm);
        }
        print_message("%d calibrated SVDQ layers, %d smoothing factors other than 1, all equal to bf16(sqrt(amax_x / amax_w))\n", checked, not_one);
        assert_true(checked > 0 && not_one > 0);
        for (int j = 0; j < obs.n; j++) free(obs.v[j].m);
        qd_st_close(src), qd_st_close(u);
        free(pipe), free(src_dir), free(save), free(unp), free(file);
    }
    /* bad inputs: both sources of maxima, calibration flags alone, no pipeline, an empty prompts file, a bad size */
    char *zsrc = qt_path(pipes, "zimage/transformer"), *never = qt_path(dir, "never"), *empty = qt_path(dir, "empty.txt");
    qt_write_text(empty, "\n  \n");
    const struct {
        const char *model, *f1, *v1, *f2, *v2, *want;
    } bad[] = {
        {zsrc, "--calibrate", prompts, "--amax", prompts, "not both"},
        {zsrc, "--pipeline", dir, "--rank", "32", "only used with --calibrate"},
        {FIX "/zimage_tiny_a/transformer", "--calibrate", prompts, "--rank", "32", "--pipeline DIR"},
        {zsrc, "--calibrate", empty, "--rank", "32", "no prompts"},
        {zsrc, "--calibrate", prompts, "--calib-size", "50", "--calib-size 50"},
        {zsrc, "--calibrate", prompts, "--pipeline", dir, "no model_index.json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *out = NULL, *err = NULL;
        int rc = qt_run_qdit(&out, &err, "convert", "svdquant", "--model-dir", bad[i].model, "--save-dir", never, bad[i].f1, bad[i].v1, bad[i].f2, bad[i].v2, NULL);
        print_message("error: %s", err);
        assert_int_not_equal(rc, 0);
        if (!strstr(err, bad[i].want)) fail_msg("case %zu: '%s' not in: %s", i, bad[i].want, err);
        struct stat st;
        assert_int_not_equal(stat(never, &st), 0);
        free(out), free(err);
    }
    qt_rmtree(dir);
    free(dir), free(prompts), free(zsrc), free(never), free(empty);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zimage_int4), cmocka_unit_test(test_zimage_nvfp4), cmocka_unit_test(test_flux_int4), cmocka_unit_test(test_flux_nvfp4),
        cmocka_unit_test(test_lowrank_helps_lead_shapes), cmocka_unit_test(test_failures), cmocka_unit_test(test_amax_smoothing), cmocka_unit_test(test_calibrate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
