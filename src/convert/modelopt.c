/* qdit convert modelopt-fp8 / modelopt-nvfp4 (see modelopt.h). */
#include "convert/modelopt.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/output.h"
#include "core/codec.h"
#include "core/log.h"
#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "quant/linear.h"
#include "quant/plan.h"
#include "quant/schemes.h"

/* ---- keep-BF16 presets (quant-sglang.md §5.1, §5.2), regexes searched in module names ---- */

/* What a ModelOpt export of FLUX leaves unquantized (ModelOpt's default diffusers filter: no amax, so the
   builder's auto ignore keeps them BF16); converting from BF16 directly, the preset says it. */
#define FLUX_MODELOPT_FILTER "^x_embedder$", "^context_embedder$", "^time_text_embed\\.", "^norm_out\\.linear$"
#define FLUX_BLOCKS                                                                                                      \
    "^transformer_blocks\\.\\d+\\.norm1\\.linear$", "^transformer_blocks\\.\\d+\\.norm1_context\\.linear$",             \
        "^transformer_blocks\\.\\d+\\.ff\\.net\\.0\\.proj$", "^transformer_blocks\\.\\d+\\.ff\\.net\\.2$",                \
        "^transformer_blocks\\.\\d+\\.ff_context\\.net\\.0\\.proj$", "^transformer_blocks\\.\\d+\\.ff_context\\.net\\.2$", \
        "^single_transformer_blocks\\.\\d+\\.norm\\.linear$"

static const char *const FLUX1_FP8[] = {FLUX_BLOCKS, FLUX_MODELOPT_FILTER, NULL};
/* §5.2 `flux1-nvfp4`: the FP8 set plus the single blocks' proj_mlp */
static const char *const FLUX1_NVFP4[] = {FLUX_BLOCKS, "^single_transformer_blocks\\.\\d+\\.proj_mlp$", FLUX_MODELOPT_FILTER, NULL};
static const char *const FLUX2[] = {"^time_guidance_embed\\.(timestep_embedder|guidance_embedder)\\.linear_[12]$",
                                    "^double_stream_modulation_(img|txt)\\.linear$",
                                    "^single_stream_modulation\\.linear$",
                                    "^x_embedder$",
                                    "^context_embedder$",
                                    "^norm_out\\.linear$",
                                    NULL};
static const char *const HUNYUAN_VIDEO[] = {"^context_embedder\\.",
                                            "^x_embedder\\.proj$",
                                            "^time_text_embed\\.(timestep|guidance|text)_embedder\\.linear_[12]$",
                                            "^norm_out\\.linear$",
                                            "^proj_out$",
                                            "^transformer_blocks\\.\\d+\\.norm1\\.linear$",
                                            "^transformer_blocks\\.\\d+\\.norm1_context\\.linear$",
                                            "^single_transformer_blocks\\.\\d+\\.norm\\.linear$",
                                            NULL};
static const char *const QWEN_IMAGE[] = {"^img_in$",
                                         "^txt_in$",
                                         "^time_text_embed\\.timestep_embedder\\.linear_[12]$",
                                         "^norm_out\\.linear$",
                                         "^proj_out$",
                                         "^transformer_blocks\\.\\d+\\.img_mlp\\.net\\.2$",
                                         "^transformer_blocks\\.\\d+\\.(img_mod|txt_mod)(\\.1)?$",
                                         NULL};
/* Z-Image has no SGLang preset; qdit's conservative choice (docs/cli.md): the embedders, the final layer
   and every block's adaLN modulation stay BF16, as in tools/quant-fixtures. */
static const char *const ZIMAGE[] = {"^t_embedder\\.", "^cap_embedder\\.", "^all_x_embedder\\.", "^all_final_layer\\.",
                                     "^(layers|noise_refiner|context_refiner)\\.\\d+\\.adaLN_modulation\\.0$", NULL};
static const char *const NONE[] = {NULL};

const char *const *qd_modelopt_preset(const char *t, qd_modelopt_algo algo) {
    if (!strcmp(t, "flux1")) return algo == QD_MODELOPT_NVFP4 ? FLUX1_NVFP4 : FLUX1_FP8;
    if (!strcmp(t, "flux2")) return FLUX2;
    if (!strcmp(t, "hunyuan-video")) return HUNYUAN_VIDEO;
    if (!strcmp(t, "qwen-image")) return QWEN_IMAGE;
    if (!strcmp(t, "zimage")) return ZIMAGE;
    if (!strcmp(t, "none")) return NONE;
    return NULL;
}

const char *qd_modelopt_auto_type(const char *cls) {
    static const struct {
        const char *cls, *type;
    } map[] = {{"FluxTransformer2DModel", "flux1"},
               {"Flux2Transformer2DModel", "flux2"},
               {"QwenImageTransformer2DModel", "qwen-image"},
               {"HunyuanVideoTransformer3DModel", "hunyuan-video"},
               {"ZImageTransformer2DModel", "zimage"}};
    for (size_t i = 0; cls && i < sizeof map / sizeof *map; i++)
        if (!strcmp(cls, map[i].cls)) return map[i].type;
    return "none";
}

/* ---- one run ---- */

#define MAX_RE (QD_MODELOPT_MAX_PATTERNS + 32)

typedef enum { ROLE_COPY, ROLE_QUANT } role;

typedef struct {
    const qd_modelopt_args *a;
    bool nv;
    const char *type; /* the resolved model type */
    pcre2_code *re[MAX_RE];
    const char *re_text[MAX_RE];
    int n_re;
    pcre2_match_data *md;
    json_t *cfg;
    const char *class_name;
    char **files;
    size_t nf;
    qd_st_file **f;
    char *index_name;
    json_t *amax;      /* module → input amax (calibrated), or NULL */
    json_t *quantized; /* module → true */
    json_t *ignore;    /* module → true: every `.weight` module left unquantized */
    json_t *stats;
    int64_t n_linears, n_quant, n_fallback, n_auto, n_scales;
    qd_out_dir out;
} conv;

static bool float_dtype(qd_dtype t) { return t == QD_DTYPE_BF16 || t == QD_DTYPE_F16 || t == QD_DTYPE_F32; }

static bool ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The module of a linear weight tensor (`<m>.weight`, 2-D, not an embedding table), else NULL. */
static char *linear_module(const qd_st_tensor *t) {
    if (t->rank != 2 || !ends_with(t->name, ".weight")) return NULL;
    char *m = strndup(t->name, strlen(t->name) - 7);
    if (m && qd_plan_is_embedding(m)) {
        free(m);
        return NULL;
    }
    return m;
}

static bool kept_by_pattern(conv *c, const char *module, const char **which) {
    for (int i = 0; i < c->n_re; i++) {
        int rc = pcre2_match(c->re[i], (PCRE2_SPTR)module, strlen(module), 0, 0, c->md, NULL);
        if (rc >= 0) {
            *which = c->re_text[i];
            return true;
        }
    }
    return false;
}

static qd_status add_regex(conv *c, const char *flag, const char *text) {
    if (c->n_re == MAX_RE) return qd_fail(QD_EINVAL, "%s: more than %d patterns", flag, MAX_RE);
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)text, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return qd_fail(QD_EINVAL, "%s '%s': not a valid regular expression: %s at offset %zu", flag, text, (const char *)msg, (size_t)off);
    }
    c->re[c->n_re] = re;
    c->re_text[c->n_re++] = text;
    return QD_OK;
}

/* The source shards (the index's files, else the folder's single .safetensors) and the output index name. */
static qd_status list_sources(conv *c) {
    const char *dir = c->a->model_dir;
    char **idx = NULL;
    size_t ni = 0;
    if (qd_list_files(dir, ".safetensors.index.json", &idx, &ni)) return qd_fail(QD_EIO, "--model-dir %s: cannot list it", dir);
    qd_status s = QD_OK;
    if (ni > 1) {
        s = qd_fail(QD_EFORMAT, "--model-dir %s: %zu index files ('%s', '%s', …); expected one", dir, ni, idx[0], idx[1]);
    } else if (ni == 1) {
        char *p = qd_path_join(dir, idx[0]);
        json_t *doc = NULL;
        s = p ? qd_json_load_object(p, &doc) : qd_fail(QD_ENOMEM, "cannot allocate");
        json_t *wm = doc ? json_object_get(doc, "weight_map") : NULL;
        if (!s && !json_is_object(wm)) s = qd_fail(QD_EFORMAT, "%s: no weight_map object", p);
        json_t *seen = json_object();
        const char *k;
        json_t *v;
        if (!s) json_object_foreach(wm, k, v) {
            if (!json_is_string(v) || strchr(json_string_value(v), '/')) {
                s = qd_fail(QD_EFORMAT, "%s: weight_map['%s'] is not a file name", p, k);
                break;
            }
            json_object_set_new(seen, json_string_value(v), json_true());
        }
        size_t n = json_object_size(seen);
        c->files = calloc(n + 1, sizeof *c->files);
        if (!s && !c->files) s = qd_fail(QD_ENOMEM, "cannot allocate");
        if (!s) json_object_foreach(seen, k, v) c->files[c->nf++] = strdup(k);
        /* sorted, so shards go in their numbered order */
        for (size_t i = 1; !s && i < c->nf; i++)
            for (size_t j = i; j > 0 && strcmp(c->files[j - 1], c->files[j]) > 0; j--) {
                char *t = c->files[j];
                c->files[j] = c->files[j - 1], c->files[j - 1] = t;
            }
        if (!s && !c->nf) s = qd_fail(QD_EFORMAT, "%s: the weight_map names no file", p);
        if (!s) c->index_name = strdup(idx[0]);
        json_decref(seen), json_decref(doc);
        free(p);
    } else {
        char **st = NULL;
        size_t ns = 0;
        if (qd_list_files(dir, ".safetensors", &st, &ns)) s = qd_fail(QD_EIO, "--model-dir %s: cannot list it", dir);
        else if (ns == 0) s = qd_fail(QD_ENOTFOUND, "--model-dir %s: no .safetensors files (a diffusers transformer folder holds config.json and its weights)", dir);
        else if (ns > 1) s = qd_fail(QD_EFORMAT, "--model-dir %s: %zu .safetensors files and no *.safetensors.index.json saying which belong together", dir, ns);
        if (!s) {
            c->files = calloc(2, sizeof *c->files);
            const size_t l = strlen(st[0]) - strlen(".safetensors");
            c->index_name = malloc(l + 32);
            if (!c->files || !c->index_name || !(c->files[0] = strdup(st[0]))) s = qd_fail(QD_ENOMEM, "cannot allocate");
            else {
                c->nf = 1;
                snprintf(c->index_name, l + 32, "%.*s.safetensors.index.json", (int)l, st[0]);
            }
        }
        qd_free_names(st, ns);
    }
    qd_free_names(idx, ni);
    return s;
}

static qd_status open_sources(conv *c) {
    c->f = calloc(c->nf + 1, sizeof *c->f);
    if (!c->f) return qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; i < c->nf; i++) {
        char *p = qd_path_join(c->a->model_dir, c->files[i]);
        qd_status s = p ? qd_st_open(p, &c->f[i]) : qd_fail(QD_ENOMEM, "cannot allocate");
        free(p);
        if (s) return s;
    }
    return QD_OK;
}

/* A quantized source is refused: this converter starts from full precision. */
static qd_status check_source_tensor(const qd_st_file *f, const qd_st_tensor *t) {
    static const char *const scale_suffixes[] = {".weight_scale", ".weight_scale_2", ".weight_scale_inv", ".input_scale", ".qweight", "._amax"};
    for (size_t i = 0; i < sizeof scale_suffixes / sizeof *scale_suffixes; i++)
        if (ends_with(t->name, scale_suffixes[i]))
            return qd_fail(QD_EFORMAT, "%s: holds '%s', a quantized checkpoint's tensor; convert the BF16 (or F16/F32) transformer", f->path, t->name);
    if (ends_with(t->name, ".weight") && !float_dtype(t->dtype))
        return qd_fail(QD_EFORMAT, "%s: '%s' is %s; the source must be a BF16, F16 or F32 transformer (this one looks quantized already)", f->path,
                       t->name, qd_dtype_name(t->dtype));
    return QD_OK;
}

/* Decide every module: quantized, kept BF16 by a pattern, or left unquantized by calibration. */
static qd_status plan(conv *c) {
    qd_status s = QD_OK;
    int bad_k = 0; /* layers NVFP4 cannot take: all named in the log, the first in the error */
    char first[1200] = "", hint[620] = "";
    for (size_t fi = 0; !s && fi < c->nf; fi++) {
        const qd_st_file *f = c->f[fi];
        for (size_t i = 0; !s && i < f->n_tensors; i++) {
            const qd_st_tensor *t = &f->tensors[i];
            if ((s = check_source_tensor(f, t))) break;
            char *m = ends_with(t->name, ".weight") ? strndup(t->name, strlen(t->name) - 7) : NULL;
            char *lin = linear_module(t);
            const char *pat = NULL;
            if (lin) c->n_linears++;
            if (!lin) {
                if (m) json_object_set_new(c->ignore, m, json_true()); /* norms: unquantized modules with a weight */
            } else if (kept_by_pattern(c, lin, &pat)) {
                qd_log(QD_LOG_INFO, "convert modelopt: '%s' stays BF16 (pattern %s)", lin, pat);
                json_object_set_new(c->ignore, lin, json_true());
                c->n_fallback++;
            } else if (c->amax && !(json_real_value(json_object_get(c->amax, lin)) > 0)) {
                qd_log(QD_LOG_WARN, "convert modelopt: '%s' saw %s during calibration; it stays BF16 (listed in ignore)", lin,
                       json_object_get(c->amax, lin) ? "only zeros" : "no input");
                json_object_set_new(c->ignore, lin, json_true());
                c->n_auto++;
            } else if (c->nv && t->shape[1] % 16) {
                qd_log(QD_LOG_ERROR, "convert modelopt-nvfp4: '%s' has in_features %lld, not a multiple of 16", t->name, (long long)t->shape[1]);
                if (!bad_k++) {
                    char esc[600];
                    size_t o = 0;
                    for (const char *p = lin; *p && o + 3 < sizeof esc; p++) {
                        if (*p == '.') esc[o++] = '\\';
                        esc[o++] = *p;
                    }
                    esc[o] = 0;
                    snprintf(first, sizeof first, "%s: '%s' is [%lld, %lld]", f->path, t->name, (long long)t->shape[0], (long long)t->shape[1]);
                    snprintf(hint, sizeof hint, "^%s$", esc);
                }
            } else {
                json_object_set_new(c->quantized, lin, json_true());
                c->n_quant++;
            }
            free(m), free(lin);
        }
    }
    if (!s && bad_k)
        s = qd_fail(QD_EUNSUPPORTED, "%s: NVFP4 needs in_features (K) a multiple of 16%s; keep such layers BF16 with --keep-bf16-pattern "
                                     "(e.g. '%s') or use modelopt-fp8",
                    first, bad_k > 1 ? " (and more layers like it; the run lists them)" : "", hint);
    return s;
}

static json_t *sorted_keys(const json_t *set) {
    size_t n = json_object_size(set), j = 0;
    const char **names = calloc(n + 1, sizeof *names);
    json_t *arr = json_array();
    const char *k;
    json_t *v;
    if (!names || !arr) {
        free(names);
        json_decref(arr);
        return NULL;
    }
    json_object_foreach((json_t *)set, k, v) names[j++] = k;
    for (size_t x = 1; x < n; x++)
        for (size_t y = x; y > 0 && strcmp(names[y - 1], names[y]) > 0; y--) {
            const char *t = names[y];
            names[y] = names[y - 1], names[y - 1] = t;
        }
    for (size_t x = 0; x < n; x++) json_array_append_new(arr, json_string(names[x]));
    free(names);
    return arr;
}

/* The output's quantization_config (modelopt.h). */
static json_t *quant_config(const conv *c) {
    json_t *ignore = sorted_keys(c->ignore);
    if (!ignore) return NULL;
    if (!c->nv && !c->amax) /* SGLang's dynamic-activation form (§5.1, LLaDA preset): no input_scale */
        return json_pack("{s:s, s:s, s:o}", "quant_method", "fp8", "activation_scheme", "dynamic", "ignored_layers", ignore);
    const int bits = c->nv ? 4 : 8;
    json_t *w = json_pack("{s:b, s:i, s:s}", "dynamic", 0, "num_bits", bits, "type", "float");
    json_t *x = json_pack("{s:b, s:i, s:s}", "dynamic", 0, "num_bits", bits, "type", "float");
    if (c->nv) {
        json_object_set_new(w, "group_size", json_integer(16));
        json_object_set_new(x, "group_size", json_integer(16));
    }
    const char *algo = c->nv ? "NVFP4" : "FP8";
    json_t *q = json_pack("{s:{s:{s:o, s:o, s:[s]}}, s:o, s:{s:s}, s:s, s:s, s:s}", "config_groups", "group_0", "input_activations", x,
                          "weights", w, "targets", "Linear", "ignore", ignore, "producer", "name", "qdit", "quant_algo", algo,
                          "quant_method", "modelopt", "quant_type", algo);
    if (q && c->nv) {
        json_object_set_new(q, "group_size", json_integer(16));
        json_object_set_new(q, "swap_weight_nibbles", json_false());
    }
    return q;
}

/* ---- writing ---- */

static char *join_name(const char *module, const char *suffix) {
    size_t n = strlen(module) + strlen(suffix) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s.%s", module, suffix);
    return s;
}

/* Quantize one linear weight and put it with its scale tensors. */
static qd_status put_quantized(conv *c, qd_st_writer *w, const qd_st_file *f, const qd_st_tensor *t, const char *module, uint64_t *bytes) {
    const int64_t n = t->shape[0], k = t->shape[1];
    float *x = malloc(sizeof *x * (size_t)(n * k) + 4);
    if (!x) return qd_fail(QD_ENOMEM, "'%s': cannot allocate %lld×%lld floats", t->name, (long long)n, (long long)k);
    qd_status s = qd_decode_row(t->dtype, qd_st_data(f, t), x, (size_t)(n * k)) ? qd_fail(QD_EFORMAT, "%s: '%s' cannot be read as floats", f->path, t->name)
                                                                               : QD_OK;
    qd_release_mapped(qd_st_data(f, t), t->end - t->begin);
    for (int64_t i = 0; !s && i < n * k; i++)
        if (!isfinite(x[i])) s = qd_fail(QD_EFORMAT, "%s: '%s' holds a non-finite value at [%lld, %lld]", f->path, t->name, (long long)(i / k), (long long)(i % k));
    qd_linear l;
    memset(&l, 0, sizeof l);
    if (!s) s = c->nv ? qd_quantize_nvfp4(x, n, k, &l) : qd_quantize_fp8(x, n, k, true, &l);
    free(x);
    char *sn = NULL, *s2n = NULL, *in = NULL;
    if (!s) {
        sn = join_name(module, "weight_scale"), s2n = join_name(module, "weight_scale_2"), in = join_name(module, "input_scale");
        if (!sn || !s2n || !in) s = qd_fail(QD_ENOMEM, "cannot allocate");
    }
    const uint64_t wb = c->nv ? (uint64_t)(n * k / 2) : (uint64_t)(n * k), sb = c->nv ? (uint64_t)(n * k / 16) : 4;
    if (!s) s = qd_st_writer_put(w, t->name, l.weight.data, wb);
    if (!s) s = qd_st_writer_put(w, sn, l.scale.data, sb);
    if (!s && c->nv) s = qd_st_writer_put(w, s2n, l.scale2.data, 4);
    *bytes += wb + sb + (c->nv ? 4 : 0);
    if (!s && c->amax) {
        const double amax = json_real_value(json_object_get(c->amax, module));
        const float is = c->nv ? (float)amax / (6.0f * 448.0f) : (float)amax / 448.0f;
        s = qd_st_writer_put(w, in, &is, 4);
        *bytes += 4;
    }
    qd_linear_free(&l);
    free(sn), free(s2n), free(in);
    return s;
}

static qd_status declare_quantized(conv *c, qd_st_writer *w, const qd_st_tensor *t, const char *module, json_t *wm, const char *fname) {
    const int64_t n = t->shape[0], k = t->shape[1];
    struct {
        const char *suffix;
        qd_dtype dt;
        int rank;
        int64_t shape[2];
        bool on;
    } outs[] = {
        {"weight", c->nv ? QD_DTYPE_U8 : QD_DTYPE_F8_E4M3, 2, {n, c->nv ? k / 2 : k}, true},
        {"weight_scale", c->nv ? QD_DTYPE_F8_E4M3 : QD_DTYPE_F32, c->nv ? 2 : 1, {c->nv ? n : 1, k / 16}, true},
        {"weight_scale_2", QD_DTYPE_F32, 0, {0, 0}, c->nv},
        {"input_scale", QD_DTYPE_F32, c->nv ? 0 : 1, {1, 0}, c->amax != NULL},
    };
    qd_status s = QD_OK;
    for (size_t i = 0; !s && i < sizeof outs / sizeof *outs; i++) {
        if (!outs[i].on) continue;
        char *name = join_name(module, outs[i].suffix);
        s = name ? qd_st_writer_add(w, name, outs[i].dt, outs[i].rank, outs[i].shape) : qd_fail(QD_ENOMEM, "cannot allocate");
        if (!s) json_object_set_new(wm, name, json_string(fname));
        if (!s && i > 0) c->n_scales++;
        free(name);
    }
    return s;
}

static qd_status write_shard(conv *c, size_t fi, const char *meta_config, const char *meta_quant, json_t *wm, uint64_t *bytes, qd_progress *pr,
                             int64_t *done) {
    const qd_st_file *f = c->f[fi];
    char *path = qd_path_join(c->out.tmp, c->files[fi]);
    qd_st_writer *w = NULL;
    qd_status s = path ? qd_st_writer_create(path, &w) : qd_fail(QD_ENOMEM, "cannot allocate");
    free(path);
    char **mods = calloc(f->n_tensors + 1, sizeof *mods); /* the module of each quantized weight */
    if (!s && !mods) s = qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < f->n_tensors; i++) {
        const qd_st_tensor *t = &f->tensors[i];
        char *lin = linear_module(t);
        if (lin && json_object_get(c->quantized, lin)) {
            mods[i] = lin;
            s = declare_quantized(c, w, t, lin, wm, c->files[fi]);
        } else {
            free(lin);
            s = qd_st_writer_add(w, t->name, t->dtype, t->rank, t->shape);
            if (!s) json_object_set_new(wm, t->name, json_string(c->files[fi]));
        }
    }
    if (!s) s = qd_st_writer_meta(w, "format", "pt");
    if (!s && c->class_name) s = qd_st_writer_meta(w, "_class_name", c->class_name);
    if (!s) s = qd_st_writer_meta(w, "config", meta_config);
    if (!s) s = qd_st_writer_meta(w, "quantization_config", meta_quant);
    if (!s) s = qd_st_writer_meta(w, "_quantization_metadata", meta_quant);
    if (!s) s = qd_st_writer_begin(w);
    for (size_t i = 0; !s && i < f->n_tensors; i++) {
        const qd_st_tensor *t = &f->tensors[i];
        char *lin = mods[i] ? NULL : linear_module(t);
        if (mods[i]) {
            s = put_quantized(c, w, f, t, mods[i], bytes);
        } else {
            s = qd_st_writer_put(w, t->name, qd_st_data(f, t), t->end - t->begin);
            qd_release_mapped(qd_st_data(f, t), t->end - t->begin);
            *bytes += t->end - t->begin;
        }
        if (mods[i] || lin) qd_progress_step(pr, ++*done, *bytes);
        free(lin);
    }
    if (!s) {
        s = qd_st_writer_finish(w);
        w = NULL;
    }
    if (w) qd_st_writer_abort(w);
    for (size_t i = 0; mods && i < f->n_tensors; i++) free(mods[i]);
    free(mods);
    return s;
}

static qd_status write_json(const char *dir, const char *name, const json_t *doc) {
    char *p = qd_path_join(dir, name);
    qd_status s = !p ? qd_fail(QD_ENOMEM, "cannot allocate")
                     : json_dump_file(doc, p, JSON_INDENT(2) | JSON_SORT_KEYS) ? qd_fail(QD_EIO, "%s: cannot write it", p)
                                                                              : QD_OK;
    free(p);
    return s;
}

static qd_status convert(conv *c) {
    const qd_modelopt_args *a = c->a;
    char *cfg_path = qd_path_join(a->model_dir, "config.json");
    qd_status s = !cfg_path ? qd_fail(QD_ENOMEM, "cannot allocate")
                  : !qd_is_file(cfg_path)
                      ? qd_fail(QD_ENOTFOUND, "--model-dir %s: no config.json (a diffusers transformer folder holds config.json and its weights)", a->model_dir)
                      : qd_json_load_object(cfg_path, &c->cfg);
    if (!s && json_object_get(c->cfg, "quantization_config"))
        s = qd_fail(QD_EFORMAT, "%s: has a quantization_config (the model is quantized already); convert the BF16 transformer", cfg_path);
    if (!s) c->class_name = qd_json_string(c->cfg, "_class_name");
    /* the keep-BF16 patterns: the preset, then the user's */
    if (!s) {
        const char *type = a->model_type && strcmp(a->model_type, "auto") ? a->model_type : qd_modelopt_auto_type(c->class_name);
        const char *const *preset = qd_modelopt_preset(type, a->algo);
        c->type = type;
        if (!preset) s = qd_fail(QD_EINVAL, "--model-type %s: expected auto, flux1, flux2, qwen-image, hunyuan-video, zimage or none", type);
        for (int i = 0; !s && preset[i]; i++) s = add_regex(c, "preset", preset[i]);
        for (int i = 0; !s && i < a->n_patterns; i++) s = add_regex(c, "--keep-bf16-pattern", a->patterns[i]);
        if (!s && !(c->md = pcre2_match_data_create(4, NULL))) s = qd_fail(QD_ENOMEM, "cannot allocate");
    }
    if (!s) s = list_sources(c);
    if (!s) s = open_sources(c);
    if (!s && a->calib.prompts) { /* before the plan: layers the calibration never ran stay BF16 */
        qd_calib cal;
        s = qd_calibrate(&a->calib, a->model_dir, false, &cal);
        if (!s) c->amax = json_incref(cal.amax);
        if (!s) qd_calib_free(&cal);
    }
    if (!s) s = plan(c);
    if (!s && c->n_quant == 0) s = qd_fail(QD_EINVAL, "--model-dir %s: no linear layer left to quantize (every one kept BF16)", a->model_dir);
    json_t *qc = s ? NULL : quant_config(c);
    if (!s && !qc) s = qd_fail(QD_ENOMEM, "cannot build quantization_config");
    json_t *ocfg = s ? NULL : json_deep_copy(c->cfg);
    if (ocfg) json_object_set(ocfg, "quantization_config", qc);
    char *meta_cfg = ocfg ? qd_json_dumps_python(ocfg) : NULL, *meta_q = qc ? qd_json_dumps_python(qc) : NULL;
    if (!s && (!meta_cfg || !meta_q)) s = qd_fail(QD_ENOMEM, "cannot allocate");
    if (!s) s = qd_out_dir_begin("--save-dir", a->save_dir, a->overwrite, NULL, &c->out);
    json_t *wm = json_object();
    uint64_t bytes = 0;
    int64_t done = 0;
    qd_progress pr;
    qd_progress_start(&pr, c->nv ? "modelopt-nvfp4" : "modelopt-fp8", c->n_linears);
    for (size_t i = 0; !s && i < c->nf; i++) s = write_shard(c, i, meta_cfg, meta_q, wm, &bytes, &pr, &done);
    qd_progress_end(&pr);
    if (!s) {
        json_t *index = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)bytes, "weight_map", wm);
        s = index ? write_json(c->out.tmp, c->index_name, index) : qd_fail(QD_ENOMEM, "cannot allocate");
        json_decref(index);
    }
    if (!s) s = write_json(c->out.tmp, "config.json", ocfg);
    if (!s) s = qd_out_dir_commit(&c->out);
    else qd_out_dir_abort(&c->out);
    if (!s) {
        c->stats = json_pack("{s:I, s:I, s:I, s:I, s:I}", "quantized_weights", (json_int_t)c->n_quant, "bf16_fallback_weights", (json_int_t)c->n_fallback,
                             "preserved_ignored_weights", (json_int_t)c->n_auto, "added_scale_tensors", (json_int_t)c->n_scales, "output_shards",
                             (json_int_t)c->nf);
        if (c->stats && c->nv) {
            json_object_set_new(c->stats, "fallback_modules", json_integer(c->n_fallback + c->n_auto));
            json_object_set_new(c->stats, "swap_weight_nibbles", json_false());
        }
    }
    json_decref(wm), json_decref(ocfg), json_decref(qc);
    free(meta_cfg), free(meta_q), free(cfg_path);
    return s;
}

qd_status qd_convert_modelopt(const qd_modelopt_args *a) {
    const char *cmd = a->algo == QD_MODELOPT_NVFP4 ? "modelopt-nvfp4" : "modelopt-fp8";
    if (!a->model_dir) return qd_fail(QD_EINVAL, "--model-dir DIR is required (the BF16 diffusers transformer folder)");
    if (!a->save_dir) return qd_fail(QD_EINVAL, "--save-dir DIR is required (the folder to write)");
    if (!qd_is_dir(a->model_dir)) return qd_fail(QD_ENOTFOUND, "--model-dir %s: no such folder", a->model_dir);
    if (a->calib.pipeline && !a->calib.prompts) return qd_fail(QD_EINVAL, "--pipeline is only used with --calibrate PROMPTS_FILE");
    conv c = {.a = a, .nv = a->algo == QD_MODELOPT_NVFP4};
    c.quantized = json_object(), c.ignore = json_object();
    qd_status s = c.quantized && c.ignore ? convert(&c) : qd_fail(QD_ENOMEM, "cannot allocate");
    if (!s) {
        if (!c.amax && c.nv)
            printf("no --calibrate: no input_scale is written; SGLang and qdit then use 1.0 for every layer (missing_param_init), i.e. "
                   "activation block scales e4m3(block amax / 6), fine while the largest |x| of each 16-value block stays between about 0.1 and 2688; "
                   "calibrate for static per-layer scales\n");
        else if (!c.amax)
            printf("no --calibrate: ModelOpt FP8 needs a calibrated input_scale per layer, so the folder is written in SGLang's "
                   "dynamic-activation form (quantization_config {quant_method: fp8, activation_scheme: dynamic}): per-tensor FP8 "
                   "weights, activations scaled per token at run time\n");
        printf("%s: %lld linears quantized, %lld kept BF16 by patterns (model type %s), %lld by calibration, in %s\n", cmd, (long long)c.n_quant,
               (long long)c.n_fallback, c.type, (long long)c.n_auto, a->save_dir);
        qd_print_stats(c.stats);
    }
    for (int i = 0; i < c.n_re; i++) pcre2_code_free(c.re[i]);
    if (c.md) pcre2_match_data_free(c.md);
    for (size_t i = 0; c.f && i < c.nf; i++) qd_st_close(c.f[i]);
    free(c.f);
    for (size_t i = 0; i < c.nf; i++) free(c.files[i]);
    free(c.files), free(c.index_name);
    json_decref(c.cfg), json_decref(c.amax), json_decref(c.quantized), json_decref(c.ignore), json_decref(c.stats);
    return s;
}
