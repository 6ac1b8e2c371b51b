/* qdit convert svdquant (see svdquant.h). */
#include "convert/svdquant.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/calibrate.h"
#include "convert/output.h"
#include "convert/source.h"
#include "convert/svdq_layer.h"
#include "core/codec.h"
#include "core/log.h"
#include "core/status.h"
#include "io/fs.h"
#include "models/dit/flux.h"
#include "models/dit/zimage.h"
#include "quant/config.h"

#define NAME_LEN 192
#define MAX_PARTS 3

/* One stored Nunchaku layer and the diffusers modules it is made of. */
typedef struct {
    char module[NAME_LEN];          /* the stored (Nunchaku) module */
    bool awq;                       /* AWQ W4A16 modulation layer, else SVDQ W4A4 */
    int n_parts;
    char parts[MAX_PARTS][NAME_LEN]; /* diffusers modules, their rows stacked in this order */
    int64_t part_rows[MAX_PARTS];
    int64_t col0, cols;             /* cols > 0: only columns [col0, col0 + cols) of parts[0] */
    bool take_bias;                 /* a column slice: this one carries the source bias */
    bool after_gelu;                /* FLUX fc2 */
    int chunks;                     /* AWQ: modulation chunks */
    bool v1_names;
    bool bias;                      /* write a bias */
    int64_t n, k;                   /* logical sizes, from the source shapes */
} planned;

typedef struct {
    const qd_convert_source *cs;
    planned *layers;
    size_t n_layers, cap_layers;
    char (*renames)[2][NAME_LEN];
    size_t n_renames, cap_renames;
    bool *used; /* [source tensor]: consumed by a layer */
} plan;

/* A new zeroed entry, or NULL when out of memory. */
static planned *plan_add(plan *p) {
    if (p->n_layers == p->cap_layers) {
        size_t cap = p->cap_layers ? 2 * p->cap_layers : 64;
        planned *nv = realloc(p->layers, cap * sizeof *nv);
        if (!nv) return NULL;
        p->layers = nv, p->cap_layers = cap;
    }
    planned *l = &p->layers[p->n_layers++];
    memset(l, 0, sizeof *l);
    return l;
}

static qd_status plan_rename(plan *p, const char *from, const char *to) {
    if (p->n_renames == p->cap_renames) {
        size_t cap = p->cap_renames ? 2 * p->cap_renames : 64;
        char(*nv)[2][NAME_LEN] = realloc(p->renames, cap * sizeof *nv);
        if (!nv) return qd_fail(QD_ENOMEM, "cannot allocate the layer plan");
        p->renames = nv, p->cap_renames = cap;
    }
    snprintf(p->renames[p->n_renames][0], NAME_LEN, "%s", from);
    snprintf(p->renames[p->n_renames][1], NAME_LEN, "%s", to);
    p->n_renames++;
    return QD_OK;
}

static const char *source_path(const qd_convert_source *cs) { return cs->ck->n_files ? cs->ck->files[0]->path : "the source"; }

/* The source weight of a diffusers module: present, 2-D, a float dtype. */
static qd_status source_weight(const qd_convert_source *cs, const char *module, const qd_ckpt_entry **out) {
    char n[NAME_LEN + 16];
    snprintf(n, sizeof n, "%s.weight", module);
    const qd_ckpt_entry *e = qd_ckpt_find(cs->ck, n);
    if (!e) return qd_fail(QD_EFORMAT, "%s: tensor '%s' is missing (the %s layout needs it)", source_path(cs), n, cs->class_name);
    const qd_st_tensor *t = e->tensor;
    if (t->rank != 2 || (t->dtype != QD_DTYPE_BF16 && t->dtype != QD_DTYPE_F16 && t->dtype != QD_DTYPE_F32)) {
        return qd_fail(QD_EFORMAT, "%s: '%s' is %s of rank %d; expected a 2-D BF16, F16 or F32 weight (convert svdquant reads an unquantized model)",
                       e->file->path, n, qd_dtype_name(t->dtype), t->rank);
    }
    *out = e;
    return QD_OK;
}

/* Add a layer made of `parts` ('|'-separated diffusers suffixes under `block`), checking and recording
 * the source shapes. */
static qd_status add_layer(plan *p, const char *block, const char *stored, const char *parts, bool awq, int chunks, bool after_gelu,
                           bool v1, int col_part, int64_t dim) {
    planned *l = plan_add(p);
    if (!l) return qd_fail(QD_ENOMEM, "cannot allocate the layer plan");
    qd_status s = QD_OK;
    snprintf(l->module, sizeof l->module, "%s.%s", block, stored);
    l->awq = awq, l->chunks = chunks, l->after_gelu = after_gelu, l->v1_names = v1;
    bool any_bias = false;
    for (const char *c = parts; *c && l->n_parts < MAX_PARTS;) {
        size_t len = strcspn(c, "|");
        snprintf(l->parts[l->n_parts], NAME_LEN, "%s.%.*s", block, (int)len, c);
        const qd_ckpt_entry *e = NULL;
        if ((s = source_weight(p->cs, l->parts[l->n_parts], &e))) return s;
        const int64_t n = e->tensor->shape[0], k = e->tensor->shape[1];
        if (l->n_parts && k != l->k) {
            return qd_fail(QD_EFORMAT, "%s: '%s.weight' has %lld inputs but '%s.weight' has %lld; they cannot be fused into '%s'", source_path(p->cs),
                           l->parts[l->n_parts], (long long)k, l->parts[0], (long long)l->k, l->module);
        }
        l->k = k, l->n += n, l->part_rows[l->n_parts] = n;
        char b[NAME_LEN + 16];
        snprintf(b, sizeof b, "%s.bias", l->parts[l->n_parts]);
        any_bias |= qd_ckpt_find(p->cs->ck, b) != NULL;
        l->n_parts++;
        c += len + (c[len] == '|');
    }
    if (col_part >= 0) { /* FLUX single block: proj_out = [out_proj | mlp_fc2] by input columns */
        l->col0 = col_part == 0 ? 0 : dim;
        l->cols = col_part == 0 ? dim : l->k - dim;
        l->take_bias = col_part == 1;
        if (l->cols <= 0) return qd_fail(QD_EFORMAT, "%s: '%s.weight' has %lld inputs, not more than the inner dim %lld", source_path(p->cs), l->parts[0], (long long)l->k, (long long)dim);
        l->k = l->cols;
    } else {
        l->take_bias = true;
    }
    /* deepcompressor writes a bias for every FLUX layer (zeros where there is none); nunchaku's v1 modules
       (Z-Image) are built without one when the source has none */
    l->bias = v1 ? any_bias : true;
    return QD_OK;
}

static qd_status plan_zimage(plan *p) {
    qd_zimage_config c;
    qd_status s = qd_zimage_config_parse(p->cs->cfg_label, p->cs->cfg, &c);
    const char *groups[] = {"layers", "noise_refiner", "context_refiner"};
    for (int g = 0; !s && g < 3; g++) {
        const int64_t count = g == 0 ? c.layers : c.refiner_layers;
        for (int64_t i = 0; !s && i < count; i++) {
            char b[64];
            snprintf(b, sizeof b, "%s.%lld", groups[g], (long long)i);
            s = add_layer(p, b, "attention.to_qkv", "attention.to_q|attention.to_k|attention.to_v", false, 0, false, true, -1, 0);
            if (!s) s = add_layer(p, b, "attention.to_out.0", "attention.to_out.0", false, 0, false, true, -1, 0);
            /* diffusers' SwiGLU: the first half of the fused output is the value (w3), the second the gate (w1) */
            if (!s) s = add_layer(p, b, "feed_forward.net.0.proj", "feed_forward.w3|feed_forward.w1", false, 0, false, true, -1, 0);
            if (!s) s = add_layer(p, b, "feed_forward.net.2", "feed_forward.w2", false, 0, false, true, -1, 0);
        }
    }
    return s;
}

static qd_status plan_flux(plan *p) {
    qd_flux_config c;
    qd_status s = qd_flux_config_parse(p->cs->cfg_label, p->cs->cfg, &c);
    const int64_t D = c.inner_dim;
    char b[64], from[NAME_LEN], to[NAME_LEN];
    for (int64_t i = 0; !s && i < c.num_layers; i++) {
        snprintf(b, sizeof b, "transformer_blocks.%lld", (long long)i);
        s = add_layer(p, b, "norm1.linear", "norm1.linear", true, 6, false, false, -1, D);
        if (!s) s = add_layer(p, b, "norm1_context.linear", "norm1_context.linear", true, 6, false, false, -1, D);
        if (!s) s = add_layer(p, b, "qkv_proj", "attn.to_q|attn.to_k|attn.to_v", false, 0, false, false, -1, D);
        if (!s) s = add_layer(p, b, "qkv_proj_context", "attn.add_q_proj|attn.add_k_proj|attn.add_v_proj", false, 0, false, false, -1, D);
        if (!s) s = add_layer(p, b, "out_proj", "attn.to_out.0", false, 0, false, false, -1, D);
        if (!s) s = add_layer(p, b, "out_proj_context", "attn.to_add_out", false, 0, false, false, -1, D);
        if (!s) s = add_layer(p, b, "mlp_fc1", "ff.net.0.proj", false, 0, false, false, -1, D);
        if (!s) s = add_layer(p, b, "mlp_fc2", "ff.net.2", false, 0, true, false, -1, D);
        if (!s) s = add_layer(p, b, "mlp_context_fc1", "ff_context.net.0.proj", false, 0, false, false, -1, D);
        if (!s) s = add_layer(p, b, "mlp_context_fc2", "ff_context.net.2", false, 0, true, false, -1, D);
        static const char *const norms[] = {"norm_q", "norm_k", "norm_added_q", "norm_added_k"};
        for (int j = 0; !s && j < 4; j++) {
            snprintf(from, sizeof from, "%s.attn.%s.weight", b, norms[j]);
            snprintf(to, sizeof to, "%s.%s.weight", b, norms[j]);
            s = plan_rename(p, from, to);
        }
    }
    for (int64_t i = 0; !s && i < c.num_single_layers; i++) {
        snprintf(b, sizeof b, "single_transformer_blocks.%lld", (long long)i);
        s = add_layer(p, b, "norm.linear", "norm.linear", true, 3, false, false, -1, D);
        if (!s) s = add_layer(p, b, "qkv_proj", "attn.to_q|attn.to_k|attn.to_v", false, 0, false, false, -1, D);
        if (!s) s = add_layer(p, b, "mlp_fc1", "proj_mlp", false, 0, false, false, -1, D);
        /* proj_out(cat(attn, mlp)) = out_proj(attn) + mlp_fc2(mlp); the bias goes with the last part */
        if (!s) s = add_layer(p, b, "out_proj", "proj_out", false, 0, false, false, 0, D);
        if (!s) s = add_layer(p, b, "mlp_fc2", "proj_out", false, 0, true, false, 1, D);
        static const char *const norms[] = {"norm_q", "norm_k"};
        for (int j = 0; !s && j < 2; j++) {
            snprintf(from, sizeof from, "%s.attn.%s.weight", b, norms[j]);
            snprintf(to, sizeof to, "%s.%s.weight", b, norms[j]);
            s = plan_rename(p, from, to);
        }
    }
    return s;
}

static const char *renamed(const plan *p, const char *name) {
    for (size_t i = 0; i < p->n_renames; i++)
        if (!strcmp(p->renames[i][0], name)) return p->renames[i][1];
    return name;
}

/* ---- reading a layer ---- */

static qd_status read_rows(const qd_convert_source *cs, const char *module, const char *suffix, int64_t col0, int64_t cols, float *dst,
                           int64_t *rows) {
    char n[NAME_LEN + 16];
    snprintf(n, sizeof n, "%s.%s", module, suffix);
    const qd_ckpt_entry *e = qd_ckpt_find(cs->ck, n);
    if (!e) return QD_ENOTFOUND;
    const qd_st_tensor *t = e->tensor;
    const int64_t r = t->shape[0], k = t->rank == 2 ? t->shape[1] : 1; /* a bias: one value per row */
    const size_t es = (size_t)qd_dtype_bits(t->dtype) / 8;
    const uint8_t *src = qd_st_data(e->file, t);
    float *row = malloc(sizeof *row * (size_t)k + 4);
    if (!row) return qd_fail(QD_ENOMEM, "'%s': cannot allocate a row", n);
    qd_status s = QD_OK;
    for (int64_t i = 0; !s && i < r; i++) {
        if (qd_decode_row(t->dtype, src + (size_t)(i * k) * es, row, (size_t)k)) s = qd_fail(QD_EFORMAT, "%s: '%s' (%s) cannot be read as floats", e->file->path, n, qd_dtype_name(t->dtype));
        else memcpy(dst + i * (cols ? cols : k), row + col0, sizeof *row * (size_t)(cols ? cols : k));
    }
    free(row);
    *rows = r;
    return s;
}

/* The layer's logical weight [n][k] and bias [n] (NULL when the source has none for it). */
static qd_status read_layer(const qd_convert_source *cs, const planned *l, float *w, float *bias, bool *has_bias) {
    int64_t row0 = 0;
    *has_bias = false;
    for (int i = 0; i < l->n_parts; i++) {
        int64_t rows = 0;
        qd_status s = read_rows(cs, l->parts[i], "weight", l->col0, l->cols, w + row0 * l->k, &rows);
        if (s) return s;
        int64_t brows = 0;
        s = l->take_bias ? read_rows(cs, l->parts[i], "bias", 0, 0, bias + row0, &brows) : QD_ENOTFOUND;
        if (s == QD_OK) {
            if (brows != rows) return qd_fail(QD_EFORMAT, "%s: '%s.bias' has %lld entries for %lld rows", source_path(cs), l->parts[i], (long long)brows, (long long)rows);
            *has_bias = true;
        } else if (s == QD_ENOTFOUND) {
            for (int64_t j = 0; j < rows; j++) bias[row0 + j] = 0;
        } else {
            return s;
        }
        row0 += rows;
    }
    return QD_OK;
}

/* ---- smoothing from activation maxima ---- */

/* The activation maxima of a layer's input (the first part's module: fused parts share their input), from
 * --amax FILE or the calibration; *a NULL when there are none for it. `full` inputs are needed (a column
 * slice reads its columns of the whole input). */
static qd_status layer_amax(const qd_st_file *file, const qd_calib *cal, const planned *l, const float **a) {
    *a = NULL;
    const int64_t full = l->cols ? l->col0 + l->cols : l->k;
    int64_t k = 0;
    if (cal) {
        *a = qd_calib_channels(cal, l->parts[0], &k);
        if (*a && k < full)
            return qd_fail(QD_EFORMAT, "calibration: '%s' saw inputs of %lld channels; its weight has %lld", l->parts[0], (long long)k, (long long)full);
        if (!*a) qd_log(QD_LOG_WARN, "convert svdquant: '%s' never ran during calibration; its smoothing factors stay 1", l->parts[0]);
        return QD_OK;
    }
    if (!file) return QD_OK;
    char n[NAME_LEN + 16];
    snprintf(n, sizeof n, "%s.input_amax", l->parts[0]);
    const qd_st_tensor *t = qd_st_find(file, n);
    if (!t) return QD_OK;
    if (t->dtype != QD_DTYPE_F32 || t->rank != 1 || t->shape[0] < full)
        return qd_fail(QD_EFORMAT, "%s: '%s' must be F32 [%lld] (one maximum per input of '%s')", file->path, n, (long long)full, l->parts[0]);
    *a = qd_st_data(file, t);
    return QD_OK;
}

/* smooth[k] = sqrt(amax_x[k] / amax_w[k]) (SmoothQuant with α = 0.5, as SVDQuant migrates outliers), 1
 * where either is 0, cropped like the weight for a column slice. */
static void layer_smooth(const planned *l, const float *w, const float *a, float *smooth) {
    for (int64_t x = 0; x < l->k; x++) {
        float wmax = 0;
        for (int64_t i = 0; i < l->n; i++) wmax = fmaxf(wmax, fabsf(w[i * l->k + x]));
        const float ax = a[l->col0 + x];
        smooth[x] = ax > 0 && wmax > 0 && isfinite(ax) ? sqrtf(ax / wmax) : 1.0f;
    }
}

/* ---- the run ---- */

static qd_svdq_opts layer_opts(const planned *l, bool nvfp4, int rank) {
    qd_svdq_opts o = {.nvfp4 = nvfp4, .rank = rank, .after_gelu = l->after_gelu, .bias = l->bias, .v1_names = l->v1_names, .seed = qd_svdq_layer_seed(l->module)};
    o.n_shards = l->n_parts > 1 ? l->n_parts : 0;
    for (int i = 0; l->n_parts > 1 && i < l->n_parts; i++) o.shard_rows[i] = l->part_rows[i];
    return o;
}

/* An earlier output of this converter: svdq-*.safetensors files and nothing else. */
static bool looks_like_svdq_output(const char *dir, char *why, size_t why_len) {
    char **names = NULL, **dirs = NULL;
    size_t n = 0, nd = 0;
    if (qd_list_files(dir, NULL, &names, &n) || qd_list_dirs(dir, &dirs, &nd)) {
        snprintf(why, why_len, "it cannot be read");
        qd_free_names(names, n);
        return false;
    }
    bool ok = true;
    if (nd) ok = false, snprintf(why, why_len, "it holds the folder '%s'", dirs[0]);
    for (size_t i = 0; ok && i < n; i++) {
        ok = !strncmp(names[i], "svdq-", 5) && qd_path_has_suffix(names[i], ".safetensors");
        if (!ok) snprintf(why, why_len, "it holds '%s', and convert svdquant writes only svdq-*.safetensors", names[i]);
    }
    qd_free_names(names, n);
    qd_free_names(dirs, nd);
    return ok;
}

/* NAME: the given one, else the source folder's name (its parent's for a `transformer` folder). */
static char *model_name(const qd_svdquant_args *a) {
    if (a->name) return strdup(a->name);
    char *base = qd_path_basename(a->model_dir);
    if (base && !strcmp(base, "transformer")) {
        char *parent = qd_path_dirname(a->model_dir);
        free(base);
        base = parent ? qd_path_basename(parent) : NULL;
        free(parent);
    }
    for (char *c = base; c && *c; c++) *c = (char)tolower((unsigned char)*c);
    return base;
}

static json_t *quant_config_json(bool nvfp4, int rank, bool zimage) {
    json_t *qc = json_pack("{s:s, s:{s:s, s:o, s:i}, s:{s:s, s:o, s:i}, s:i}", "method", "svdquant", "weight", "dtype", nvfp4 ? "fp4_e2m1_all" : "int4",
                           "scale_dtype", nvfp4 ? json_pack("[n, s]", "fp8_e4m3_nan") : json_null(), "group_size", nvfp4 ? 16 : 64, "activation", "dtype",
                           nvfp4 ? "fp4_e2m1_all" : "int4", "scale_dtype", nvfp4 ? json_string("fp8_e4m3_nan") : json_null(), "group_size", nvfp4 ? 16 : 64,
                           "rank", rank);
    if (qc && zimage) json_object_set_new(qc, "skip_refiners", json_false());
    return qc;
}

static qd_status write_metadata(qd_st_writer *w, const qd_convert_source *cs, bool nvfp4, int rank, bool zimage) {
    json_t *cfg = json_deep_copy(cs->cfg), *qc = quant_config_json(nvfp4, rank, zimage);
    qd_status s = cfg && qc ? QD_OK : qd_fail(QD_ENOMEM, "cannot build the metadata");
    if (!s) json_object_del(cfg, "quantization_config");
    char *ct = s ? NULL : json_dumps(cfg, JSON_COMPACT | JSON_PRESERVE_ORDER), *qt = s ? NULL : json_dumps(qc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s && (!ct || !qt)) s = qd_fail(QD_ENOMEM, "cannot build the metadata");
    if (!s) s = qd_st_writer_meta(w, "config", ct);
    if (!s) s = qd_st_writer_meta(w, "model_class", zimage ? "NunchakuZImageTransformer2DModel" : "NunchakuFluxTransformer2dModel");
    if (!s) s = qd_st_writer_meta(w, "quantization_config", qt);
    free(ct), free(qt);
    json_decref(cfg), json_decref(qc);
    return s;
}

static qd_status copy_as_bf16(qd_st_writer *w, const qd_ckpt_entry *e, const char *name, uint64_t *bytes) {
    const qd_st_tensor *t = e->tensor;
    if (t->dtype == QD_DTYPE_BF16) {
        *bytes += t->end - t->begin;
        return qd_st_writer_put(w, name, qd_st_data(e->file, t), t->end - t->begin);
    }
    float *f = malloc(sizeof *f * (size_t)t->elements + 4);
    uint16_t *h = malloc(sizeof *h * (size_t)t->elements + 4);
    qd_status s = f && h ? QD_OK : qd_fail(QD_ENOMEM, "'%s': cannot allocate", t->name);
    if (!s && qd_decode_row(t->dtype, qd_st_data(e->file, t), f, (size_t)t->elements)) s = qd_fail(QD_EFORMAT, "%s: '%s' cannot be read as floats", e->file->path, t->name);
    if (!s && qd_encode_row(QD_DTYPE_BF16, f, h, (size_t)t->elements)) s = qd_fail(QD_EINVAL, "'%s': cannot encode as BF16", t->name);
    if (!s) s = qd_st_writer_put(w, name, h, 2 * t->elements);
    *bytes += 2 * t->elements;
    free(f), free(h);
    return s;
}

static bool is_float(qd_dtype t) { return t == QD_DTYPE_BF16 || t == QD_DTYPE_F16 || t == QD_DTYPE_F32; }

static qd_status mark_used(plan *p) {
    const qd_ckpt *ck = p->cs->ck;
    if (!(p->used = calloc(ck->n_tensors + 1, sizeof *p->used))) return qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; i < p->n_layers; i++)
        for (int j = 0; j < p->layers[i].n_parts; j++)
            for (int b = 0; b < 2; b++) {
                char n[NAME_LEN + 16];
                snprintf(n, sizeof n, "%s.%s", p->layers[i].parts[j], b ? "bias" : "weight");
                const qd_ckpt_entry *e = qd_ckpt_find(ck, n);
                if (e) p->used[e - ck->entries] = true;
            }
    return QD_OK;
}

static qd_status convert(const qd_convert_source *cs, plan *p, const char *path, bool nvfp4, int rank, bool zimage,
                         const qd_st_file *amax, const qd_calib *cal, qd_svdquant_report *rep) {
    qd_st_writer *w = NULL;
    qd_status s = qd_st_writer_create(path, &w);
    if (!s) s = write_metadata(w, cs, nvfp4, rank, zimage);
    /* declare: the layers, then every other tensor under its (renamed) name, in BF16 */
    for (size_t i = 0; !s && i < p->n_layers; i++) {
        const planned *l = &p->layers[i];
        qd_svdq_opts o = layer_opts(l, nvfp4, rank);
        s = l->awq ? qd_awq_declare(w, l->module, l->n, l->k) : qd_svdq_declare(w, l->module, l->n, l->k, &o);
    }
    for (size_t i = 0; !s && i < cs->ck->n_tensors; i++) {
        const qd_ckpt_entry *e = &cs->ck->entries[i];
        if (p->used[i]) continue;
        if (!is_float(e->tensor->dtype)) {
            s = qd_fail(QD_EFORMAT, "%s: tensor '%s' is %s; convert svdquant reads an unquantized (BF16, F16 or F32) model", e->file->path, e->tensor->name,
                        qd_dtype_name(e->tensor->dtype));
            break;
        }
        s = qd_st_writer_add(w, renamed(p, e->tensor->name), QD_DTYPE_BF16, e->tensor->rank, e->tensor->shape);
    }
    if (!s) s = qd_st_writer_begin(w);
    qd_progress pr;
    qd_progress_start(&pr, "svdquant", (int64_t)p->n_layers);
    double err_sum = 0;
    int err_count = 0;
    for (size_t i = 0; !s && i < p->n_layers; i++) {
        const planned *l = &p->layers[i];
        float *wt = malloc(sizeof *wt * (size_t)(l->n * l->k) + 4), *bias = malloc(sizeof *bias * (size_t)l->n + 4);
        float *smooth = malloc(sizeof *smooth * (size_t)l->k + 4);
        bool has_bias = false, smoothed = false;
        s = wt && bias && smooth ? QD_OK : qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its %lld x %lld weight", l->module, (long long)l->n, (long long)l->k);
        if (!s) s = read_layer(cs, l, wt, bias, &has_bias);
        double err = 0;
        if (!s && l->awq) {
            qd_awq_layer q;
            s = qd_awq_quantize(l->module, wt, has_bias ? bias : NULL, l->n, l->k, l->chunks, &q);
            if (!s) s = qd_awq_put(w, l->module, &q);
            err = q.rel_err;
            qd_awq_layer_free(&q);
            rep->awq_layers++;
        } else if (!s) {
            qd_svdq_opts o = layer_opts(l, nvfp4, rank);
            const float *ax = NULL;
            s = layer_amax(amax, cal, l, &ax);
            if (ax) layer_smooth(l, wt, ax, smooth), smoothed = true;
            qd_svdq_layer q;
            if (!s) s = qd_svdq_quantize(l->module, wt, has_bias ? bias : NULL, l->n, l->k, smoothed ? smooth : NULL, &o, &q);
            if (!s) {
                s = qd_svdq_put(w, l->module, &q);
                err = q.rel_err;
                qd_svdq_layer_free(&q);
            }
            rep->svdq_layers++;
        }
        if (!s) {
            qd_log(QD_LOG_DEBUG, "svdquant: %s (%lld x %lld%s) relative error %.3e", l->module, (long long)l->n, (long long)l->k, smoothed ? ", smoothed" : "", err);
            err_sum += err, err_count++;
            if (err > rep->worst_rel_err) {
                rep->worst_rel_err = err;
                snprintf(rep->worst_layer, sizeof rep->worst_layer, "%s", l->module);
            }
            rep->bytes += (unsigned long long)(l->n * l->k / 2);
        }
        free(wt), free(bias), free(smooth);
        qd_progress_step(&pr, (int64_t)i + 1, rep->bytes);
    }
    qd_progress_end(&pr);
    rep->mean_rel_err = err_count ? err_sum / err_count : 0;
    for (size_t i = 0; !s && i < cs->ck->n_tensors; i++) {
        const qd_ckpt_entry *e = &cs->ck->entries[i];
        if (p->used[i]) continue;
        uint64_t b = 0;
        s = copy_as_bf16(w, e, renamed(p, e->tensor->name), &b);
        rep->bytes += b;
        rep->bf16_tensors++;
    }
    if (!s) return qd_st_writer_finish(w);
    if (w) qd_st_writer_abort(w);
    return s;
}

qd_status qd_convert_svdquant(const qd_svdquant_args *a, qd_svdquant_report *rep) {
    memset(rep, 0, sizeof *rep);
    if (!a->model_dir) return qd_fail(QD_EINVAL, "convert svdquant: --model-dir is required (the BF16 transformer folder)");
    if (!a->save_dir) return qd_fail(QD_EINVAL, "convert svdquant: --save-dir is required (the folder to write the Nunchaku file to)");
    if (!qd_is_dir(a->model_dir)) return qd_fail(QD_ENOTFOUND, "--model-dir %s: not a folder", a->model_dir);
    if (a->calib.prompts && a->amax_file) return qd_fail(QD_EINVAL, "give --calibrate PROMPTS_FILE or --amax FILE, not both");
    if ((a->calib.pipeline || a->calib.steps || a->calib.size) && !a->calib.prompts)
        return qd_fail(QD_EINVAL, "--pipeline, --calib-steps and --calib-size are only used with --calibrate PROMPTS_FILE");
    bool nvfp4 = false;
    if (a->precision && (!strcmp(a->precision, "nvfp4") || !strcmp(a->precision, "fp4"))) nvfp4 = true;
    else if (a->precision && strcmp(a->precision, "int4")) return qd_fail(QD_EINVAL, "--precision %s: expected int4 or nvfp4", a->precision);
    const int rank = a->rank ? a->rank : 32;
    if (rank < 1 || rank > 1024) return qd_fail(QD_EINVAL, "--rank %d: expected 1..1024 (Nunchaku ships 32 and 128)", rank);
    char *name = model_name(a);
    if (!name || !*name || strchr(name, '/')) {
        free(name);
        return qd_fail(QD_EINVAL, "--name: expected a file-name part such as z-image-turbo");
    }

    qd_options o;
    qd_options_init(&o);
    qd_convert_source cs;
    qd_status s = qd_convert_source_open(&o, a->model_dir, &cs);
    if (s) {
        free(name);
        return s;
    }
    qd_st_file *amax = NULL;
    plan p = {.cs = &cs};
    bool zimage = false;
    if (cs.quant.method != QD_QM_NONE) {
        s = qd_fail(QD_EFORMAT, "--model-dir %s: already quantized (%s, %s); convert svdquant reads an unquantized BF16/F16/F32 model", a->model_dir,
                    qd_quant_method_name(cs.quant.method), cs.quant.source);
    } else if (!strcmp(cs.class_name, "ZImageTransformer2DModel")) {
        zimage = true;
        s = plan_zimage(&p);
    } else if (!strcmp(cs.class_name, "FluxTransformer2DModel")) {
        s = plan_flux(&p);
    } else {
        s = qd_fail(QD_EUNSUPPORTED, "%s: _class_name %s: convert svdquant writes the Nunchaku layouts of FluxTransformer2DModel and ZImageTransformer2DModel",
                    cs.cfg_label, cs.class_name);
    }
    if (!s) s = mark_used(&p);
    if (!s && a->amax_file) s = qd_st_open(a->amax_file, &amax);
    qd_calib cal = {0};
    if (!s && a->calib.prompts) s = qd_calibrate(&a->calib, a->model_dir, true, &cal);
    qd_out_dir od = {0};
    if (!s) s = qd_out_dir_begin("--save-dir", a->save_dir, a->overwrite, looks_like_svdq_output, &od);
    if (!s) {
        char fname[512];
        snprintf(fname, sizeof fname, "svdq-%s_r%d-%s.safetensors", nvfp4 ? "fp4" : "int4", rank, name);
        char *tmp_path = qd_path_join(od.tmp, fname), *final_path = qd_path_join(a->save_dir, fname);
        s = tmp_path && final_path ? convert(&cs, &p, tmp_path, nvfp4, rank, zimage, amax, a->calib.prompts ? &cal : NULL, rep) : qd_fail(QD_ENOMEM, "cannot allocate");
        if (!s) s = qd_out_dir_commit(&od);
        else qd_out_dir_abort(&od);
        if (!s) snprintf(rep->file, sizeof rep->file, "%s", final_path);
        free(tmp_path), free(final_path);
    }
    qd_st_close(amax);
    qd_calib_free(&cal);
    free(p.used);
    free(p.layers), free(p.renames);
    qd_convert_source_close(&cs);
    free(name);
    return s;
}
