/* qdit convert modelopt-fp8 / modelopt-nvfp4 on the FLUX.1 and Z-Image fixtures' BF16 transformers and on
 * the tiny pipelines (calibration):
 *   (a) the folder resolves in qdit as the spec says (modelopt_fp8 with static activations when calibrated,
 *       SGLang's dynamic fp8 form without; modelopt_fp4) and every linear binds to the expected scheme:
 *       quantized unless the preset (written out here from quant-sglang.md §5.1/§5.2 and docs/cli.md's
 *       Z-Image choice, by plain string rules) or a pattern keeps it;
 *   (b) each bound layer dequantizes to the BF16 source within the format's bound, computed here with
 *       straight float math: FP8 |d − w| ≤ 2⁻⁴|w| + 2⁻¹⁰·s, the scale exactly amax/448; NVFP4 per block
 *       step = sf·ws2 with ws2 exactly amax/2688, sf within E4M3 rounding of block amax/(6·ws2) and
 *       |d − w| ≤ step · halfgap_E2M1(|w|/step); and the quantized tensors are byte-identical to what
 *       the independent numpy writer (tools/quant-fixtures) makes for the same layers;
 *   (c) structure: exact tensor names, dtypes and shapes per layer, every other tensor byte-identical,
 *       quantization_config keys and values, ignore = the unquantized modules, shard metadata, index;
 *   (d) bad inputs with messages naming the flag, file or tensor, and a failing conversion leaving nothing;
 *   (e) --calibrate: the x_embedder's input_scale equals the largest |x| of its known input (the initial
 *       latents of a one-step run, drawn here with the pipeline's seed) / 448, or / 2688 for NVFP4. */
#include "test_util.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "load/sources.h"
#include "load/weights.h"
#include "pipeline/generate.h"
#include "io/safetensors.h"
#include "quant/plan.h"
#include "quant/resolve.h"

#define FIX QDIT_SHARED_DIR "/fixtures"
#define ST "diffusion_pytorch_model.safetensors"

/* ---- independent little codecs ---- */

static float bf16_bits_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float round_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static double e4m3_value(uint8_t b) {
    const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    const double v = e ? (1 + m / 8.0) * ldexp(1, e - 7) : m / 8.0 * ldexp(1, -6);
    return s ? -v : v;
}

static float source_value(const qd_st_file *f, const qd_st_tensor *t, uint64_t i) {
    const uint8_t *p = (const uint8_t *)qd_st_data(f, t);
    if (t->dtype == QD_DTYPE_BF16) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return bf16_bits_to_f32(h);
    }
    float v;
    memcpy(&v, p + 4 * i, 4);
    return v;
}

/* ---- which modules the presets keep (plain string rules, from the spec's lists) ---- */

/* "prefix.N.rest" → rest, else NULL */
static const char *after_block(const char *m, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(m, prefix, n)) return NULL;
    const char *p = m + n;
    if (*p < '0' || *p > '9') return NULL;
    while (*p >= '0' && *p <= '9') p++;
    return *p == '.' ? p + 1 : NULL;
}

static bool kept_flux(const char *m, bool nv) {
    if (!strcmp(m, "x_embedder") || !strcmp(m, "context_embedder") || !strcmp(m, "norm_out.linear") || !strncmp(m, "time_text_embed.", 16))
        return true;
    const char *r = after_block(m, "transformer_blocks.");
    if (r) {
        static const char *const k[] = {"norm1.linear", "norm1_context.linear", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"};
        for (size_t i = 0; i < 6; i++)
            if (!strcmp(r, k[i])) return true;
    }
    r = after_block(m, "single_transformer_blocks.");
    return r && (!strcmp(r, "norm.linear") || (nv && !strcmp(r, "proj_mlp")));
}

static bool kept_zimage(const char *m, bool nv) {
    (void)nv;
    static const char *const pre[] = {"t_embedder.", "cap_embedder.", "all_x_embedder.", "all_final_layer."};
    for (size_t i = 0; i < 4; i++)
        if (!strncmp(m, pre[i], strlen(pre[i]))) return true;
    const char *suf = ".adaLN_modulation.0";
    return strlen(m) > strlen(suf) && !strcmp(m + strlen(m) - strlen(suf), suf);
}

static bool kept_none(const char *m, bool nv) {
    (void)m, (void)nv;
    return false;
}

typedef struct {
    const char *src_dir, *cls;
    bool nv, calibrated;
    bool (*kept)(const char *module, bool nv);
    const char *extra_suffix; /* a --keep-bf16-pattern that keeps modules ending so */
    const char *numpy_family; /* the tools/quant-fixtures folder to compare bytes with (NULL: none) */
} expect;

static bool ends(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static bool is_quantized(const expect *e, const qd_st_tensor *t, char *module, size_t cap) {
    if (t->rank != 2 || !ends(t->name, ".weight")) return false;
    snprintf(module, cap, "%.*s", (int)(strlen(t->name) - 7), t->name);
    return !e->kept(module, e->nv) && !(e->extra_suffix && ends(module, e->extra_suffix));
}

static const qd_st_tensor *need(const char *tag, const qd_st_file *f, const char *module, const char *suffix, qd_dtype dt, int rank,
                                int64_t d0, int64_t d1) {
    char n[400];
    snprintf(n, sizeof n, "%s.%s", module, suffix);
    const qd_st_tensor *t = qd_st_find(f, n);
    if (!t) fail_msg("%s: '%s' missing", tag, n);
    if (t->dtype != dt || t->rank != rank || (rank > 0 && t->shape[0] != d0) || (rank > 1 && t->shape[1] != d1))
        fail_msg("%s: '%s' is %s rank %d [%lld, %lld], expected %s rank %d [%lld, %lld]", tag, n, qd_dtype_name(t->dtype), t->rank,
                 (long long)(t->rank > 0 ? t->shape[0] : 0), (long long)(t->rank > 1 ? t->shape[1] : 0), qd_dtype_name(dt), rank, (long long)d0,
                 (long long)d1);
    return t;
}

static float f32_of(const qd_st_file *f, const qd_st_tensor *t) {
    float v;
    memcpy(&v, qd_st_data(f, t), 4);
    return v;
}

/* (b) one quantized layer's stored values against its source, and through the loader */
static void check_values(const char *tag, const expect *e, const qd_st_file *src, const qd_st_tensor *t, const qd_st_file *out, const char *m,
                         const qd_linear *l) {
    const int64_t n = t->shape[0], k = t->shape[1];
    float *w = malloc(sizeof *w * (size_t)(n * k)), *d = malloc(sizeof *d * (size_t)(n * k));
    assert_non_null(w);
    assert_non_null(d);
    float amax = 0;
    for (int64_t i = 0; i < n * k; i++) w[i] = source_value(src, t, (uint64_t)i), amax = fmaxf(amax, fabsf(w[i]));
    if (qd_linear_dequantize(l, d)) fail_msg("%s: '%s' dequantize: %s", tag, m, qd_last_error());
    if (!e->nv) {
        const float s = f32_of(out, need(tag, out, m, "weight_scale", QD_DTYPE_F32, 1, 1, 0));
        if (s != amax / 448.0f) fail_msg("%s: '%s' weight_scale %.9g, expected amax/448 = %.9g", tag, m, s, amax / 448.0f);
        for (int64_t i = 0; i < n * k; i++)
            if (!(fabsf(d[i] - w[i]) <= 0.0625f * fabsf(w[i]) + s * 0x1p-10f + 1e-7f * fabsf(w[i])))
                fail_msg("%s: '%s'[%lld] dequantizes to %g, source %g (scale %g): past the FP8 bound", tag, m, (long long)i, d[i], w[i], s);
    } else {
        const float ws2 = f32_of(out, need(tag, out, m, "weight_scale_2", QD_DTYPE_F32, 0, 0, 0));
        if (ws2 != amax / 2688.0f) fail_msg("%s: '%s' weight_scale_2 %.9g, expected amax/2688 = %.9g", tag, m, ws2, amax / 2688.0f);
        const uint8_t *sf = qd_st_data(out, need(tag, out, m, "weight_scale", QD_DTYPE_F8_E4M3, 2, n, k / 16));
        for (int64_t r = 0; r < n; r++)
            for (int64_t b = 0; b < k / 16; b++) {
                float bmax = 0;
                for (int j = 0; j < 16; j++) bmax = fmaxf(bmax, fabsf(w[r * k + b * 16 + j]));
                const double want = bmax / (6.0 * ws2), got = e4m3_value(sf[r * (k / 16) + b]);
                if (bmax == 0 ? got != 1.0 : fabs(got - want) > 0.0625 * want + 0x1p-10)
                    fail_msg("%s: '%s' block [%lld, %lld] scale %g, expected e4m3(%g)", tag, m, (long long)r, (long long)b, got, want);
                const double step = got * ws2;
                for (int j = 0; j < 16; j++) {
                    const int64_t i = r * k + b * 16 + j;
                    const double v = fabs(w[i]) / step;
                    const double hg = v > 6 ? v - 6 : v <= 2 ? 0.25 : v <= 4 ? 0.5 : 1.0;
                    if (!(fabs((double)d[i] - w[i]) <= step * hg * (1 + 1e-6) + 1e-6 * fabs(w[i])))
                        fail_msg("%s: '%s'[%lld] dequantizes to %g, source %g (step %g): past the NVFP4 bound", tag, m, (long long)i, d[i], w[i], step);
                }
            }
    }
    free(w), free(d);
}

static json_t *load_json(const char *dir, const char *name) {
    char *p = qt_path(dir, name);
    json_error_t err;
    json_t *j = json_load_file(p, 0, &err);
    if (!j) fail_msg("%s: %s", p, err.text);
    free(p);
    return j;
}

static void check_keys(const char *tag, const json_t *obj, const char *const *keys) {
    size_t n = 0;
    for (; keys[n]; n++)
        if (!json_object_get(obj, keys[n])) fail_msg("%s: quantization_config lacks '%s'", tag, keys[n]);
    if (json_object_size(obj) != n) fail_msg("%s: quantization_config has %zu keys, expected %zu", tag, json_object_size(obj), n);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* (a)–(c) for one converted folder */
static void check_output(const char *tag, const expect *e, const char *out_dir) {
    char *sp = qt_path(e->src_dir, ST), *op = qt_path(out_dir, ST);
    qd_st_file *src = NULL, *out = NULL;
    if (qd_st_open(sp, &src) || qd_st_open(op, &out)) fail_msg("%s: %s", tag, qd_last_error());
    /* config */
    json_t *scfg = load_json(e->src_dir, "config.json"), *ocfg = load_json(out_dir, "config.json");
    json_t *qc = json_incref(json_object_get(ocfg, "quantization_config"));
    if (!json_is_object(qc)) fail_msg("%s: config.json has no quantization_config", tag);
    json_object_del(ocfg, "quantization_config");
    if (!json_equal(ocfg, scfg)) fail_msg("%s: config.json is not the source's plus quantization_config", tag);
    json_object_set(ocfg, "quantization_config", qc);
    const char *ignore_key = "ignore";
    if (e->nv) {
        static const char *const keys[] = {"config_groups", "group_size", "ignore", "producer", "quant_algo", "quant_method", "quant_type", "swap_weight_nibbles", NULL};
        check_keys(tag, qc, keys);
        assert_string_equal(json_string_value(json_object_get(qc, "quant_algo")), "NVFP4");
        assert_string_equal(json_string_value(json_object_get(qc, "quant_type")), "NVFP4");
        assert_int_equal(json_integer_value(json_object_get(qc, "group_size")), 16);
        assert_true(json_is_false(json_object_get(qc, "swap_weight_nibbles")));
        json_t *g = json_object_get(json_object_get(qc, "config_groups"), "group_0");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(g, "weights"), "group_size")), 16);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(g, "weights"), "num_bits")), 4);
    } else if (e->calibrated) {
        static const char *const keys[] = {"config_groups", "ignore", "producer", "quant_algo", "quant_method", "quant_type", NULL};
        check_keys(tag, qc, keys);
        assert_string_equal(json_string_value(json_object_get(qc, "quant_algo")), "FP8");
        assert_string_equal(json_string_value(json_object_get(qc, "quant_type")), "FP8");
        json_t *g = json_object_get(json_object_get(qc, "config_groups"), "group_0");
        assert_true(json_is_false(json_object_get(json_object_get(g, "input_activations"), "dynamic")));
        assert_int_equal(json_integer_value(json_object_get(json_object_get(g, "weights"), "num_bits")), 8);
    } else {
        static const char *const keys[] = {"activation_scheme", "ignored_layers", "quant_method", NULL};
        check_keys(tag, qc, keys);
        assert_string_equal(json_string_value(json_object_get(qc, "quant_method")), "fp8");
        assert_string_equal(json_string_value(json_object_get(qc, "activation_scheme")), "dynamic");
        ignore_key = "ignored_layers";
    }
    if (e->nv || e->calibrated) assert_string_equal(json_string_value(json_object_get(qc, "quant_method")), "modelopt");
    /* metadata of the shard */
    assert_string_equal(qd_st_meta_get(out, "format"), "pt");
    assert_string_equal(qd_st_meta_get(out, "_class_name"), e->cls);
    json_t *mc = json_loads(qd_st_meta_get(out, "config"), 0, NULL), *mq = json_loads(qd_st_meta_get(out, "quantization_config"), 0, NULL);
    json_t *mq2 = json_loads(qd_st_meta_get(out, "_quantization_metadata"), 0, NULL);
    if (!json_equal(mc, ocfg) || !json_equal(mq, qc) || !json_equal(mq2, qc)) fail_msg("%s: shard metadata config / quantization_config differ from config.json", tag);
    if (!strstr(qd_st_meta_get(out, "quantization_config"), "\", \"")) fail_msg("%s: metadata JSON not in Python's json.dumps form", tag);
    json_decref(mc), json_decref(mq), json_decref(mq2);

    /* resolve and bind through qdit */
    qd_options opt;
    qd_options_init(&opt);
    qd_component_source cs;
    qd_ckpt *ck = NULL;
    qd_quant_config cfg;
    if (qd_component_source_resolve(&opt, "transformer", out_dir, &cs) || qd_weight_set_open(&cs.weights, &ck) ||
        qd_quant_resolve(&opt, &cs, ck, e->cls, &cfg))
        fail_msg("%s: %s", tag, qd_last_error());
    const char *want_method = e->nv ? "modelopt_fp4" : e->calibrated ? "modelopt_fp8" : "fp8";
    assert_string_equal(qd_quant_method_name(cfg.method), want_method);

    /* every tensor, and the expected ignore list */
    char **ign = calloc(src->n_tensors + 1, sizeof *ign);
    size_t n_ign = 0, n_expected = 0, n_quant = 0;
    for (size_t i = 0; i < src->n_tensors; i++) {
        const qd_st_tensor *t = &src->tensors[i];
        char m[300];
        if (!is_quantized(e, t, m, sizeof m)) {
            const qd_st_tensor *o = qd_st_find(out, t->name);
            if (!o || o->dtype != t->dtype || o->rank != t->rank || o->end - o->begin != t->end - t->begin ||
                memcmp(qd_st_data(out, o), qd_st_data(src, t), t->end - t->begin))
                fail_msg("%s: '%s' should be copied unchanged", tag, t->name);
            n_expected++;
            if (ends(t->name, ".weight")) ign[n_ign++] = strndup(t->name, strlen(t->name) - 7);
            if (t->rank == 2 && ends(t->name, ".weight")) {
                qd_linear l;
                if (qd_linear_bind(&cfg, ck, m, (const char *[]){m}, 1, &l)) fail_msg("%s: bind '%s': %s", tag, m, qd_last_error());
                if (l.scheme != QD_SCHEME_DENSE) fail_msg("%s: '%s' kept BF16 binds as %s", tag, m, l.scheme_name);
                qd_linear_free(&l);
            }
            continue;
        }
        const int64_t n = t->shape[0], k = t->shape[1];
        n_quant++;
        if (e->nv) {
            need(tag, out, m, "weight", QD_DTYPE_U8, 2, n, k / 2);
            need(tag, out, m, "weight_scale", QD_DTYPE_F8_E4M3, 2, n, k / 16);
            need(tag, out, m, "weight_scale_2", QD_DTYPE_F32, 0, 0, 0);
            n_expected += 3;
            if (e->calibrated) need(tag, out, m, "input_scale", QD_DTYPE_F32, 0, 0, 0), n_expected++;
        } else {
            need(tag, out, m, "weight", QD_DTYPE_F8_E4M3, 2, n, k);
            need(tag, out, m, "weight_scale", QD_DTYPE_F32, 1, 1, 0);
            n_expected += 2;
            if (e->calibrated) need(tag, out, m, "input_scale", QD_DTYPE_F32, 1, 1, 0), n_expected++;
        }
        qd_linear l;
        if (qd_linear_bind(&cfg, ck, m, (const char *[]){m}, 1, &l)) fail_msg("%s: bind '%s': %s", tag, m, qd_last_error());
        assert_string_equal(l.scheme_name, e->nv ? "nvfp4" : "fp8_tensor");
        if (!e->nv) assert_int_equal(l.act, e->calibrated ? QD_ACT_STATIC_TENSOR : QD_ACT_DYNAMIC_TOKEN);
        check_values(tag, e, src, t, out, m, &l);
        qd_linear_free(&l);
    }
    assert_true(n_quant > 0);
    if (out->n_tensors != n_expected) fail_msg("%s: %zu output tensors, expected %zu", tag, out->n_tensors, n_expected);
    qsort(ign, n_ign, sizeof *ign, cmp_str);
    json_t *got = json_object_get(qc, ignore_key);
    if (json_array_size(got) != n_ign) fail_msg("%s: %s has %zu entries, expected %zu", tag, ignore_key, json_array_size(got), n_ign);
    for (size_t i = 0; i < n_ign; i++) {
        if (strcmp(json_string_value(json_array_get(got, i)), ign[i])) fail_msg("%s: %s[%zu] is '%s', expected '%s'", tag, ignore_key, i, json_string_value(json_array_get(got, i)), ign[i]);
        free(ign[i]);
    }
    free(ign);
    /* the index */
    json_t *idx = load_json(out_dir, ST ".index.json");
    json_t *wm = json_object_get(idx, "weight_map");
    uint64_t total = 0;
    for (size_t i = 0; i < out->n_tensors; i++) {
        total += out->tensors[i].end - out->tensors[i].begin;
        const char *f = json_string_value(json_object_get(wm, out->tensors[i].name));
        if (!f || strcmp(f, ST)) fail_msg("%s: the index does not map '%s' to %s", tag, out->tensors[i].name, ST);
    }
    assert_int_equal(json_object_size(wm), out->n_tensors);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")), total);
    json_decref(idx);

    /* the independent numpy writer quantizes the same layers to the same bytes */
    const char *qf = getenv("QDIT_QUANT_FIXTURES");
    if (e->numpy_family) {
        if (!qf) fail_msg("QDIT_QUANT_FIXTURES is not set (ctest sets it after quant_fixtures_generate)");
        char rel[300];
        snprintf(rel, sizeof rel, "%s/%s/" ST, strstr(e->src_dir, "flux") ? "flux_tiny_a" : "zimage_tiny_a", e->numpy_family);
        char *np = qt_path(qf, rel);
        qd_st_file *ref = NULL;
        if (qd_st_open(np, &ref)) fail_msg("%s: %s", tag, qd_last_error());
        int same = 0;
        for (size_t i = 0; i < ref->n_tensors; i++) {
            const qd_st_tensor *r = &ref->tensors[i], *o = qd_st_find(out, r->name);
            if (!o || o->dtype == QD_DTYPE_BF16 || r->dtype == QD_DTYPE_BF16 || ends(r->name, "input_scale") || ends(r->name, ".bias")) continue;
            if (o->dtype != r->dtype || o->end - o->begin != r->end - r->begin || memcmp(qd_st_data(out, o), qd_st_data(ref, r), r->end - r->begin))
                fail_msg("%s: '%s' differs from the numpy writer's", tag, r->name);
            same++;
        }
        if (same < 10) fail_msg("%s: only %d tensors in common with the numpy writer", tag, same);
        qd_st_close(ref);
        free(np);
    }
    qd_quant_config_free(&cfg);
    qd_ckpt_close(ck);
    qd_component_source_free(&cs);
    json_decref(qc), json_decref(scfg), json_decref(ocfg);
    qd_st_close(src), qd_st_close(out);
    free(sp), free(op);
}

static void convert_ok(const char *tag, char **out, ...) {
    char *err = NULL;
    va_list ap;
    va_start(ap, out);
    const char *argv[24];
    int n = 0;
    for (const char *a; n < 23 && (a = va_arg(ap, const char *));) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int rc = qt_run_qdit(out, &err, "convert", argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6], argv[7], argv[8], argv[9],
                         argv[10], argv[11], argv[12], argv[13], argv[14], argv[15], argv[16], NULL);
    if (rc) fail_msg("%s: convert failed (%d): %s", tag, rc, err);
    if (!strstr(*out, "\"quantized_weights\"") || !strstr(*out, "\"added_scale_tensors\"") || !strstr(*out, "\"output_shards\": 1"))
        fail_msg("%s: no builder statistics in: %s", tag, *out);
    free(err);
}

static void test_fixtures(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("modelopt");
    const char *zsrc = FIX "/zimage_tiny_a/transformer", *fsrc = FIX "/flux_tiny_a/transformer";
    struct {
        const char *name, *src, *cls, *cmd, *extra;
        bool nv;
        bool (*kept)(const char *, bool);
        const char *fam;
    } cases[] = {
        {"z8", zsrc, "ZImageTransformer2DModel", "modelopt-fp8", NULL, false, kept_zimage, "modelopt_fp8_flat"},
        {"f8", fsrc, "FluxTransformer2DModel", "modelopt-fp8", NULL, false, kept_flux, "modelopt_fp8_flat"},
        {"z4", zsrc, "ZImageTransformer2DModel", "modelopt-nvfp4", "feed_forward.w2", true, kept_zimage, "modelopt_nvfp4"},
        {"f4", fsrc, "FluxTransformer2DModel", "modelopt-nvfp4", NULL, true, kept_flux, "modelopt_nvfp4"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *o = qt_path(dir, cases[i].name), *out = NULL;
        if (cases[i].extra) convert_ok(cases[i].name, &out, cases[i].cmd, "--model-dir", cases[i].src, "--save-dir", o, "--keep-bf16-pattern", "feed_forward\\.w2$", NULL);
        else convert_ok(cases[i].name, &out, cases[i].cmd, "--model-dir", cases[i].src, "--save-dir", o, NULL);
        /* uncalibrated: the output says plainly what is written */
        assert_non_null(strstr(out, "no --calibrate"));
        expect e = {.src_dir = cases[i].src, .cls = cases[i].cls, .nv = cases[i].nv, .kept = cases[i].kept, .extra_suffix = cases[i].extra,
                    .numpy_family = cases[i].fam};
        check_output(cases[i].name, &e, o);
        free(o), free(out);
    }
    qt_rmtree(dir);
    free(dir);
}

/* (e) */
static void test_calibrate(void **state) {
    (void)state;
    const char *pipes = getenv("QDIT_TINY_PIPELINES");
    if (!pipes) fail_msg("QDIT_TINY_PIPELINES is not set (ctest sets it after tiny_pipelines_generate)");
    char *dir = qt_mkdtemp("modelopt-calib");
    char *prompts = qt_path(dir, "prompts.txt");
    qt_write_text(prompts, "a red cube on a wooden table\n");
    char *zsrc = qt_path(pipes, "zimage/transformer"), *fsrc = qt_path(pipes, "flux/transformer");
    /* one step at 64×64: x_embedder sees only the initial latents, seed 0 */
    float *noise = malloc(sizeof *noise * 16 * 8 * 8);
    for (int c = 0; c < 4; c++) {
        const bool nv = c & 1, flux = c & 2;
        const char *src = flux ? fsrc : zsrc;
        char name[32];
        snprintf(name, sizeof name, "%s%d", flux ? "f" : "z", nv ? 4 : 8);
        char *o = qt_path(dir, name), *out = NULL;
        convert_ok(name, &out, nv ? "modelopt-nvfp4" : "modelopt-fp8", "--model-dir", src, "--save-dir", o, "--model-type", "none", "--calibrate",
                   prompts, "--calib-steps", "1", "--calib-size", "64", "--keep-bf16-pattern", "feed_forward\\.w2$", NULL);
        if (strstr(out, "no --calibrate")) fail_msg("%s: a calibrated run says it is not", name);
        expect e = {.src_dir = src, .cls = flux ? "FluxTransformer2DModel" : "ZImageTransformer2DModel", .nv = nv, .calibrated = true,
                    .kept = kept_none, .extra_suffix = "feed_forward.w2"};
        check_output(name, &e, o);
        /* the known input: FLUX draws the latents in bf16, Z-Image in f32 then casts them to bf16 activations */
        assert_int_equal(qd_generate_noise(0, flux, 16 * 8 * 8, noise), QD_OK);
        float amax = 0;
        for (int i = 0; i < 16 * 8 * 8; i++) amax = fmaxf(amax, fabsf(noise[i]));
        amax = round_bf16(amax);
        char *op = qt_path(o, ST);
        qd_st_file *f = NULL;
        assert_int_equal(qd_st_open(op, &f), QD_OK);
        const qd_st_tensor *t = qd_st_find(f, flux ? "x_embedder.input_scale" : "all_x_embedder.2-1.input_scale");
        assert_non_null(t);
        const float want = nv ? amax / 2688.0f : amax / 448.0f, got = f32_of(f, t);
        if (got != want) fail_msg("%s: x_embedder input_scale %.9g, expected amax %.9g / %s = %.9g", name, got, amax, nv ? "2688" : "448", want);
        qd_st_close(f);
        free(op), free(o), free(out);
    }
    free(noise);
    /* no pipeline beside a fixture transformer: the message says what to give */
    char *o = qt_path(dir, "nopipe"), *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "convert", "modelopt-fp8", "--model-dir", FIX "/zimage_tiny_a/transformer", "--save-dir", o, "--calibrate", prompts, NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "--pipeline"));
    free(out), free(err), free(o);
    /* an empty prompts file */
    qt_write_text(prompts, "\n   \n");
    o = qt_path(dir, "noprompt");
    rc = qt_run_qdit(&out, &err, "convert", "modelopt-fp8", "--model-dir", zsrc, "--save-dir", o, "--calibrate", prompts, NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "no prompts"));
    struct stat st;
    assert_int_not_equal(stat(o, &st), 0);
    free(out), free(err), free(o);
    qt_rmtree(dir);
    free(dir), free(prompts), free(zsrc), free(fsrc);
}

static void expect_error(const char *tag, const char *want1, const char *want2, ...) {
    va_list ap;
    va_start(ap, want2);
    const char *argv[16];
    int n = 0;
    for (const char *a; n < 15 && (a = va_arg(ap, const char *));) argv[n++] = a;
    va_end(ap);
    for (int i = n; i < 16; i++) argv[i] = NULL;
    char *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "convert", argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6], argv[7], argv[8], argv[9], NULL);
    if (rc != 1 && rc != 2) fail_msg("%s: exit %d, expected an error (stderr: %s)", tag, rc, err);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2))) fail_msg("%s: the message '%s' does not name '%s'%s%s", tag, err, want1, want2 ? " and " : "", want2 ? want2 : "");
    free(out), free(err);
}

/* Entries of a folder other than those listed (NULL-terminated). */
static int other_entries(const char *dir, const char *const *allowed) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        bool ok = false;
        for (int i = 0; allowed[i]; i++) ok |= !strcmp(e->d_name, allowed[i]);
        if (!ok) n++, fprintf(stderr, "unexpected entry: %s/%s\n", dir, e->d_name);
    }
    closedir(d);
    return n;
}

static void test_bad_inputs(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("modelopt-bad");
    const char *z = FIX "/zimage_tiny_a/transformer";
    char *o = qt_path(dir, "out");
    expect_error("missing dir", "--model-dir", "no such folder", "modelopt-fp8", "--model-dir", "/nonexistent/qdit", "--save-dir", o, NULL);
    expect_error("no save dir", "--save-dir", NULL, "modelopt-nvfp4", "--model-dir", z, NULL);
    expect_error("bad regex", "--keep-bf16-pattern '('", "regular expression", "modelopt-fp8", "--model-dir", z, "--save-dir", o, "--keep-bf16-pattern", "(", NULL);
    expect_error("bad type", "--model-type sdxl", "zimage", "modelopt-fp8", "--model-dir", z, "--save-dir", o, "--model-type", "sdxl", NULL);
    expect_error("K % 16", "feed_forward.w2.weight", "multiple of 16", "modelopt-nvfp4", "--model-dir", z, "--save-dir", o, NULL);
    expect_error("pipeline alone", "--pipeline", "--calibrate", "modelopt-fp8", "--model-dir", z, "--save-dir", o, "--pipeline", dir, NULL);
    struct stat st;
    assert_int_not_equal(stat(o, &st), 0); /* none of these wrote anything */
    /* an existing output */
    char *out = NULL, *err = NULL;
    assert_int_equal(qt_run_qdit(&out, &err, "convert", "modelopt-fp8", "--model-dir", z, "--save-dir", o, NULL), 0);
    free(out), free(err);
    expect_error("exists", "not empty", "--overwrite", "modelopt-fp8", "--model-dir", z, "--save-dir", o, NULL);
    assert_int_equal(qt_run_qdit(&out, &err, "convert", "modelopt-nvfp4", "--model-dir", z, "--save-dir", o, "--overwrite", "--keep-bf16-pattern", "w2$", NULL), 0);
    free(out), free(err);
    json_t *cfg = load_json(o, "config.json");
    assert_string_equal(json_string_value(json_object_get(json_object_get(cfg, "quantization_config"), "quant_algo")), "NVFP4");
    json_decref(cfg);
    /* a quantized source */
    char *o2 = qt_path(dir, "out2");
    expect_error("quantized source", "quantization_config", "BF16", "modelopt-fp8", "--model-dir", o, "--save-dir", o2, NULL);
    /* --overwrite never deletes what a conversion did not write */
    char *keep = qt_path(o, "notes.txt");
    qt_write_text(keep, "mine");
    expect_error("foreign file", "notes.txt", NULL, "modelopt-fp8", "--model-dir", z, "--save-dir", o, "--overwrite", NULL);
    assert_int_equal(stat(keep, &st), 0);
    unlink(keep);
    /* a failure half way (a NaN in the second linear) leaves neither the output nor a temporary folder */
    char *bad = qt_path(dir, "badsrc"), *bad_cfg = qt_path(bad, "config.json"), *bad_st = qt_path(bad, "model.safetensors");
    qt_write_text(bad_cfg, "{\"_class_name\": \"TinyModel\"}");
    float data[64];
    for (int i = 0; i < 64; i++) data[i] = (float)(i % 7) - 3.0f;
    data[40] = NAN;
    qt_write_raw_safetensors(bad_st, "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,16],\"data_offsets\":[0,128]},"
                                     "\"b.weight\":{\"dtype\":\"F32\",\"shape\":[2,16],\"data_offsets\":[128,256]}}",
                             data, sizeof data);
    char *o3 = qt_path(dir, "out3");
    expect_error("NaN", "b.weight", "non-finite", "modelopt-fp8", "--model-dir", bad, "--save-dir", o3, NULL);
    const char *allowed[] = {"out", "badsrc", NULL};
    assert_int_equal(other_entries(dir, allowed), 0);
    /* and an existing output stays as it was when the replacement fails */
    expect_error("NaN over existing", "b.weight", NULL, "modelopt-nvfp4", "--model-dir", bad, "--save-dir", o, "--overwrite", NULL);
    assert_int_equal(other_entries(dir, allowed), 0);
    cfg = load_json(o, "config.json");
    assert_string_equal(json_string_value(json_object_get(json_object_get(cfg, "quantization_config"), "quant_algo")), "NVFP4");
    json_decref(cfg);
    qt_rmtree(dir);
    free(dir), free(o), free(o2), free(o3), free(keep), free(bad), free(bad_cfg), free(bad_st);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_fixtures), cmocka_unit_test(test_calibrate), cmocka_unit_test(test_bad_inputs)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
