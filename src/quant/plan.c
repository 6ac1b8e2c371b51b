/* Per-layer scheme choice and binding (see plan.h). */
#include "quant/plan.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "core/status.h"
#include "quant/schemes.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* Replace a dense binding with its online quantization. */
static qd_status quantize_online(const qd_quant_config *cfg, qd_linear *l) {
    int64_t n = l->out_features, k = l->in_features;
    float *w = qd_alloc_big(sizeof *w * (size_t)(n * k) + 1);
    if (!w) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate %lld×%lld floats", l->name, (long long)n, (long long)k);
    qd_status s = qd_dequantize_dense(l, w);
    qd_linear q = {0};
    if (!s) {
        switch (cfg->method) {
        case QD_QM_FP8: s = qd_quantize_fp8(w, n, k, false, &q); break;
        case QD_QM_FP8_PER_TENSOR: s = qd_quantize_fp8(w, n, k, true, &q); break;
        case QD_QM_MXFP4: s = qd_quantize_mx(w, n, k, true, &q); break;
        case QD_QM_MXFP8: s = qd_quantize_mx(w, n, k, false, &q); break;
        case QD_QM_NVFP4: s = qd_quantize_nvfp4(w, n, k, &q); break;
        case QD_QM_INT8: s = qd_quantize_int8(w, n, k, &q); break;
        default: s = qd_fail(QD_EINVAL, "layer '%s': %s is not an online method", l->name, qd_quant_method_name(cfg->method));
        }
    }
    free(w);
    if (s) {
        qd_linear_free(&q);
        return qd_fail_context(s, "layer '%s'", l->name);
    }
    q.bias = l->bias; /* the bias stays as stored */
    l->bias = (qd_view){0};
    q.name = l->name;
    l->name = NULL;
    qd_linear_free(l);
    *l = q;
    return QD_OK;
}

/* What quantize_online would make, without doing it. */
static qd_status plan_online(const qd_quant_config *cfg, qd_linear *l) {
    static const struct {
        qd_quant_method m;
        qd_scheme_id id;
        const char *name;
        int group;
    } table[] = {{QD_QM_FP8, QD_SCHEME_FP8, "fp8_channel", 0},     {QD_QM_FP8_PER_TENSOR, QD_SCHEME_FP8, "fp8_tensor", 0},
                 {QD_QM_MXFP4, QD_SCHEME_MXFP4, "mxfp4", 32},       {QD_QM_MXFP8, QD_SCHEME_MXFP8, "mxfp8", 32},
                 {QD_QM_NVFP4, QD_SCHEME_NVFP4, "nvfp4", 16},       {QD_QM_INT8, QD_SCHEME_INT8, "w8a8_dynamic", 0}};
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        if (table[i].m != cfg->method) continue;
        l->scheme = table[i].id;
        snprintf(l->scheme_name, sizeof l->scheme_name, "%s", table[i].name);
        l->act = table[i].group ? QD_ACT_DYNAMIC_GROUP : QD_ACT_DYNAMIC_TOKEN;
        l->act_group = table[i].group;
        return QD_OK;
    }
    return qd_fail(QD_EINVAL, "layer '%s': %s is not an online method", l->name, qd_quant_method_name(cfg->method));
}

static const json_t *modelslim_type(const qd_quant_config *cfg, const char *module) {
    char key[1024];
    snprintf(key, sizeof key, "%s.weight", module);
    return json_object_get(cfg->layer_types, key);
}

/* One checkpoint module → one bound linear. */
static qd_status bind_module(const qd_quant_config *cfg, const qd_ckpt *ck, const char *module, bool dry, qd_linear *l) {
    qd_bind_ctx c = {.cfg = cfg, .ck = ck, .module = module, .layer_type = NULL, .dry = dry};
    const qd_ckpt_entry *w = qd_bind_find(&c, "weight");
    qd_dtype wt = w ? w->tensor->dtype : QD_DTYPE_COUNT;
    bool ignored = qd_quant_config_ignores(cfg, module);
    switch (cfg->method) {
    case QD_QM_NONE:
        if (w && wt != QD_DTYPE_BF16 && wt != QD_DTYPE_F16 && wt != QD_DTYPE_F32) {
            return qd_fail(QD_EFORMAT, "layer '%s' is stored as %s but no quantization was resolved for this checkpoint",
                           module, qd_dtype_name(wt));
        }
        return qd_bind_dense(&c, l);
    case QD_QM_FP8:
    case QD_QM_FP8_PER_TENSOR:
    case QD_QM_MXFP4:
    case QD_QM_NVFP4:
    case QD_QM_INT8:
        if (!cfg->online) { /* serialized fp8 */
            if (wt == QD_DTYPE_F8_E4M3) return qd_bind_fp8(&c, l);
            return qd_bind_dense(&c, l);
        }
        /* fall through: online */
    online:;
        qd_status s = qd_bind_dense(&c, l);
        if (s || ignored) return s;
        /* SGLang keeps layers with fewer than 256 outputs unquantized under online MXFP4 (§4.5) */
        if (cfg->method == QD_QM_MXFP4 && l->out_features < 256) return QD_OK;
        if ((cfg->method == QD_QM_MXFP4 || cfg->method == QD_QM_MXFP8) && l->in_features % 32) {
            qd_log_once(QD_LOG_WARN, "layer '%s': in_features %lld is not a multiple of 32; kept unquantized under %s", module,
                        (long long)l->in_features, qd_quant_method_name(cfg->method));
            return QD_OK;
        }
        if (cfg->method == QD_QM_NVFP4 && l->in_features % 16) {
            qd_log_once(QD_LOG_WARN, "layer '%s': in_features %lld is not a multiple of 16; kept unquantized under nvfp4",
                        module, (long long)l->in_features);
            return QD_OK;
        }
        l->name = strdup(module);
        if (dry) return plan_online(cfg, l);
        return quantize_online(cfg, l);
    case QD_QM_MXFP8:
        if (cfg->online) goto online;
        if (wt == QD_DTYPE_F8_E4M3) return qd_bind_mx(&c, l);
        return qd_bind_dense(&c, l);
    case QD_QM_MODELOPT:
    case QD_QM_MODELOPT_FP8:
    case QD_QM_COMFY_FP8:
        if (cfg->method == QD_QM_COMFY_FP8) c.layer_type = json_object_get(cfg->layer_types, module);
        if (wt == QD_DTYPE_F8_E4M3) {
            if (ignored) qd_log_once(QD_LOG_INFO, "layer '%s' is in the ignore list but stored as FP8; kept as stored", module);
            return qd_bind_fp8(&c, l);
        }
        return qd_bind_dense(&c, l);
    case QD_QM_MODELOPT_FP4:
    case QD_QM_COMFY_NVFP4:
        if (wt == QD_DTYPE_U8) return qd_bind_nvfp4(&c, l);
        if (wt == QD_DTYPE_F8_E4M3) return qd_bind_fp8(&c, l); /* FP8 fallback layers of NVFP4 exports */
        return qd_bind_dense(&c, l);
    case QD_QM_MODELSLIM: {
        const json_t *t = modelslim_type(cfg, module);
        const char *type = json_string_value(t);
        if (!type || !strcmp(type, "FLOAT")) return qd_bind_dense(&c, l);
        c.layer_type = t;
        if (!strcmp(type, "W8A8") || !strcmp(type, "W8A8_DYNAMIC") || !strcmp(type, "W4A4_DYNAMIC"))
            return qd_bind_modelslim_int(&c, l);
        if (!strcmp(type, "W8A8_MXFP8") || !strcmp(type, "W4A4_MXFP4") || !strcmp(type, "W4A4_MXFP4_DUALSCALE")) {
            if (!strcmp(type, "W4A4_MXFP4_DUALSCALE")) {
                char key[1100];
                snprintf(key, sizeof key, "%s.weight_dual_scale", module);
                if (!json_object_get(cfg->layer_types, key) || !qd_bind_find(&c, "weight_dual_scale")) {
                    return qd_fail(QD_EFORMAT, "layer '%s': W4A4_MXFP4_DUALSCALE needs '%s' in the description and the "
                                               "weights",
                                   module, key);
                }
            }
            if (!strcmp(type, "W4A4_MXFP4") && w && w->tensor->dtype != QD_DTYPE_U8) {
                return qd_fail(QD_EUNSUPPORTED, "layer '%s': W4A4_MXFP4 weights stored one value per byte (%s) are the old "
                                                "form; repack them (SGLang's wan_repack) to U8 [N, K/2]",
                               module, qd_dtype_name(w->tensor->dtype));
            }
            return qd_bind_mx(&c, l);
        }
        return qd_fail(QD_EUNSUPPORTED, "layer '%s': No modelslim compatible scheme was found for type %s", module, type);
    }
    case QD_QM_SVDQUANT:
        if (qd_bind_find(&c, "qweight")) return qd_bind_find(&c, "wzeros") ? qd_bind_awq(&c, l) : qd_bind_svdq(&c, l);
        return qd_bind_dense(&c, l);
    case QD_QM_COUNT: break;
    }
    return qd_fail(QD_EINVAL, "layer '%s': no scheme for method %s", module, qd_quant_method_name(cfg->method));
}

/* ---- fused layers ---- */

static int64_t row_bytes(const qd_view *v, int64_t rows) {
    int64_t total = (int64_t)(qd_view_elements(v) * qd_dtype_bits(v->dtype) / 8);
    return rows ? total / rows : 0;
}

/* Rows of `views[i]` (each `rows[i]` rows) stacked into one owned view. */
static qd_status stack_rows(qd_view *views, const int64_t *rows, int n, qd_view *out) {
    int64_t total_rows = 0, total_bytes = 0;
    for (int i = 0; i < n; i++) {
        total_rows += rows[i];
        total_bytes += row_bytes(&views[i], rows[i]) * rows[i];
    }
    uint8_t *buf = malloc((size_t)total_bytes + 1);
    if (!buf) return qd_fail(QD_ENOMEM, "cannot allocate %lld bytes", (long long)total_bytes);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t b = row_bytes(&views[i], rows[i]) * rows[i];
        memcpy(buf + off, views[i].data, (size_t)b);
        off += b;
    }
    *out = views[0];
    out->shape[0] = total_rows;
    if (out->rank == 0) out->rank = 1;
    out->data = buf;
    out->owned = buf;
    return QD_OK;
}

/* A per-tensor (one value) or per-row vector expanded to F32 [rows]. */
static float *expand_rows(const qd_view *v, int64_t rows) {
    float *f = malloc(sizeof *f * (size_t)rows + 1);
    for (int64_t r = 0; f && r < rows; r++) f[r] = qd_view_get(v, r, 0);
    return f;
}

static qd_status stack_vectors(qd_linear *parts, int n, size_t field, qd_view *out, int64_t total) {
    float *f = malloc(sizeof *f * (size_t)total + 1);
    if (!f) return qd_fail(QD_ENOMEM, "cannot allocate");
    int64_t o = 0;
    for (int i = 0; i < n; i++) {
        const qd_view *v = (const qd_view *)((const char *)&parts[i] + field);
        float *e = expand_rows(v, parts[i].out_features);
        if (!e) {
            free(f);
            return qd_fail(QD_ENOMEM, "cannot allocate");
        }
        memcpy(f + o, e, sizeof *f * (size_t)parts[i].out_features);
        free(e);
        o += parts[i].out_features;
    }
    *out = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {total}, .data = f, .owned = f};
    return QD_OK;
}

qd_status qd_linear_concat(qd_linear *parts, int n, const char *name, qd_linear *out) {
    memset(out, 0, sizeof *out);
    qd_status s = QD_OK;
    int64_t total = 0, rows[4] = {0};
    if (n > 4) return qd_fail(QD_EINVAL, "layer '%s': at most 4 shards", name);
    for (int i = 0; i < n; i++) {
        rows[i] = parts[i].out_features;
        total += rows[i];
        if (parts[i].scheme != parts[0].scheme || strcmp(parts[i].scheme_name, parts[0].scheme_name) ||
            parts[i].in_features != parts[0].in_features || parts[i].weight.dtype != parts[0].weight.dtype) {
            s = qd_fail(QD_EFORMAT, "layer '%s': its shards differ (%s %lld inputs vs %s %lld inputs); they cannot be fused",
                        name, parts[0].scheme_name, (long long)parts[0].in_features, parts[i].scheme_name,
                        (long long)parts[i].in_features);
            goto done;
        }
    }
    qd_scheme_id sch = parts[0].scheme;
    if (sch == QD_SCHEME_SVDQ_INT4 || sch == QD_SCHEME_SVDQ_NVFP4 || sch == QD_SCHEME_AWQ_W4A16) {
        s = qd_fail(QD_EUNSUPPORTED, "layer '%s': %s layers are fused in the checkpoint itself; bind the fused module", name,
                    parts[0].scheme_name);
        goto done;
    }
    *out = parts[0];
    memset(&out->weight, 0, sizeof out->weight);
    out->name = strdup(name);
    out->out_features = total;
    out->n_shards = n;
    for (int i = 0; i < n; i++) out->shard_out[i] = rows[i];
    qd_view views[4];
    for (int i = 0; i < n; i++) views[i] = parts[i].weight;
    if ((s = stack_rows(views, rows, n, &out->weight))) goto done;
    /* scales */
    qd_view sc = {0}, s2 = {0}, bias = {0}, zeros = {0};
    out->scale = out->scale2 = out->bias = out->zeros = out->input_scale = out->input_offset = (qd_view){0};
    out->smooth = out->lora_down = out->lora_up = (qd_view){0};
    if (parts[0].scale.data) {
        bool per_tensor = qd_view_elements(&parts[0].scale) == 1;
        if (per_tensor || (parts[0].scale.rank == 1)) {
            s = stack_vectors(parts, n, offsetof(qd_linear, scale), &sc, total);
        } else if (sch == QD_SCHEME_FP8 && parts[0].block_n) {
            for (int i = 0; i < n && !s; i++)
                if (rows[i] % parts[0].block_n) {
                    s = qd_fail(QD_EFORMAT, "layer '%s': shard %d has %lld rows, not a multiple of the %d-row block", name, i,
                                (long long)rows[i], parts[0].block_n);
                }
            int64_t grows[4];
            for (int i = 0; i < n; i++) {
                views[i] = parts[i].scale;
                grows[i] = parts[i].scale.shape[0];
            }
            if (!s) s = stack_rows(views, grows, n, &sc);
        } else {
            for (int i = 0; i < n; i++) views[i] = parts[i].scale;
            s = stack_rows(views, rows, n, &sc);
        }
        if (s) goto done;
        out->scale = sc;
    }
    if (parts[0].scale2.data) {
        if (sch == QD_SCHEME_NVFP4) s = stack_vectors(parts, n, offsetof(qd_linear, scale2), &s2, total);
        else {
            for (int i = 0; i < n; i++) views[i] = parts[i].scale2;
            s = stack_rows(views, rows, n, &s2);
        }
        if (s) goto done;
        out->scale2 = s2;
    }
    bool any_bias = false;
    for (int i = 0; i < n; i++) any_bias |= parts[i].bias.data != NULL;
    if (any_bias) {
        if ((s = stack_vectors(parts, n, offsetof(qd_linear, bias), &bias, total))) goto done;
        out->bias = bias;
    }
    if (parts[0].zeros.data) {
        for (int i = 0; i < n; i++) views[i] = parts[i].zeros;
        if ((s = stack_rows(views, rows, n, &zeros))) goto done;
        out->zeros = zeros;
    }
    /* one activation scale for the fused input: the largest, as SGLang does (§4.7) */
    if (parts[0].input_scale.data && sch == QD_SCHEME_INT8) {
        /* W8A8 static folds the input scale and offset into deq_scale and quant_bias: they must agree */
        for (int i = 1; i < n; i++) {
            if (qd_view_get(&parts[i].input_scale, 0, 0) != qd_view_get(&parts[0].input_scale, 0, 0) ||
                qd_view_get(&parts[i].input_offset, 0, 0) != qd_view_get(&parts[0].input_offset, 0, 0)) {
                s = qd_fail(QD_EUNSUPPORTED, "layer '%s': W8A8 shards with different input_scale/input_offset cannot be fused "
                                             "(they are folded into deq_scale and quant_bias)",
                            name);
                goto done;
            }
        }
    }
    if (parts[0].input_scale.data) {
        float best = 0;
        int pick = 0;
        for (int i = 0; i < n; i++) {
            float v = qd_view_get(&parts[i].input_scale, 0, 0);
            if (v != qd_view_get(&parts[0].input_scale, 0, 0))
                qd_log_once(QD_LOG_INFO, "layer '%s': shards have different input scales; using the largest", name);
            if (v > best) {
                best = v;
                pick = i;
            }
        }
        out->input_scale = parts[pick].input_scale;
        parts[pick].input_scale = (qd_view){0};
        out->input_offset = parts[pick].input_offset;
        parts[pick].input_offset = (qd_view){0};
        /* copies where they point into memory another view of the part owns, freed with it below */
        if ((s = qd_view_own(&out->input_scale)) || (s = qd_view_own(&out->input_offset))) goto done;
    }
    if (parts[0].smooth.data) {
        out->smooth = parts[0].smooth;
        parts[0].smooth = (qd_view){0};
    }
done:
    for (int i = 0; i < n; i++) qd_linear_free(&parts[i]);
    if (s) qd_linear_free(out);
    return s;
}

static qd_status bind_or_plan(const qd_quant_config *cfg, const qd_ckpt *ck, const char *name,
                              const char *const *shards, int n_shards, bool dry, qd_linear *out) {
    memset(out, 0, sizeof *out);
    if (n_shards < 1 || n_shards > 4) return qd_fail(QD_EINVAL, "layer '%s': 1 to 4 shards, got %d", name, n_shards);
    /* an ignore rule must treat every shard of a fused layer alike */
    if (n_shards > 1 && cfg->n_ignore) {
        int skipped = 0;
        for (int i = 0; i < n_shards; i++) skipped += qd_quant_config_ignores(cfg, shards[i]);
        if (skipped && skipped != n_shards) {
            return qd_fail(QD_EINVAL, "Detected some but not all shards of %s are quantized: the ignore list keeps %d of its %d "
                                      "shards (%s, …) in full precision",
                           name, skipped, n_shards, shards[0]);
        }
    }
    qd_linear parts[4];
    memset(parts, 0, sizeof parts);
    qd_status s = QD_OK;
    for (int i = 0; i < n_shards && !s; i++) {
        s = bind_module(cfg, ck, shards[i], dry, &parts[i]);
        if (!s && !parts[i].name) parts[i].name = strdup(shards[i]);
    }
    if (s) {
        for (int i = 0; i < n_shards; i++) qd_linear_free(&parts[i]);
        return s;
    }
    if (n_shards == 1) {
        *out = parts[0];
        free(out->name);
        out->name = strdup(name);
        out->n_shards = 1;
        out->shard_out[0] = out->out_features;
        return out->name ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate");
    }
    if (dry) {
        /* the plan of a fused layer: the first shard's scheme over the joined rows */
        int64_t total = 0;
        for (int i = 0; i < n_shards; i++) total += parts[i].out_features;
        for (int i = 0; i < n_shards; i++) {
            if (parts[i].scheme != parts[0].scheme || parts[i].in_features != parts[0].in_features) {
                qd_status e = qd_fail(QD_EFORMAT, "layer '%s': its shards differ (%s vs %s); they cannot be fused", name,
                                      parts[0].scheme_name, parts[i].scheme_name);
                for (int k = 0; k < n_shards; k++) qd_linear_free(&parts[k]);
                return e;
            }
        }
        out->scheme = parts[0].scheme;
        memcpy(out->scheme_name, parts[0].scheme_name, sizeof out->scheme_name);
        out->act = parts[0].act;
        out->in_features = parts[0].in_features;
        out->out_features = total;
        out->n_shards = n_shards;
        for (int i = 0; i < n_shards; i++) {
            out->shard_out[i] = parts[i].out_features;
            qd_linear_free(&parts[i]);
        }
        out->name = strdup(name);
        return out->name ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate");
    }
    return qd_linear_concat(parts, n_shards, name, out);
}

qd_status qd_linear_bind(const qd_quant_config *cfg, const qd_ckpt *ck, const char *name, const char *const *shards,
                         int n_shards, qd_linear *out) {
    return bind_or_plan(cfg, ck, name, shards, n_shards, false, out);
}

qd_status qd_linear_plan(const qd_quant_config *cfg, const qd_ckpt *ck, const char *name, const char *const *shards,
                         int n_shards, qd_linear *out) {
    return bind_or_plan(cfg, ck, name, shards, n_shards, true, out);
}

/* "blocks.2" before "blocks.10": digit runs compare as numbers. */
static int natural_compare(const void *pa, const void *pb) {
    const char *a = *(char *const *)pa, *b = *(char *const *)pb;
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            const char *ea = a, *eb = b;
            while (*ea == '0') ea++;
            while (*eb == '0') eb++;
            const char *da = ea, *db = eb;
            while (isdigit((unsigned char)*da)) da++;
            while (isdigit((unsigned char)*db)) db++;
            if (da - ea != db - eb) return (da - ea) < (db - eb) ? -1 : 1;
            int c = strncmp(ea, eb, (size_t)(da - ea));
            if (c) return c;
            a = da;
            b = db;
            continue;
        }
        if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    return *a ? 1 : *b ? -1 : 0;
}

bool qd_plan_is_embedding(const char *module) {
    static const char *const tails[] = {"embed_tokens", "shared", "wte", "wpe", "token_embedding", "position_embedding",
                                        "pos_embed", "embeddings.word_embeddings", "embeddings.position_embeddings"};
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++)
        if (ends_with(module, tails[i])) return true;
    return false;
}

qd_status qd_plan_candidates(const qd_ckpt *ck, char ***modules, size_t *n) {
    *modules = NULL;
    *n = 0;
    char **v = calloc(ck->n_tensors + 1, sizeof *v);
    if (!v) return qd_fail(QD_ENOMEM, "cannot allocate");
    size_t count = 0;
    for (size_t i = 0; i < ck->n_tensors; i++) {
        const qd_st_tensor *t = ck->entries[i].tensor;
        size_t len = strlen(t->name);
        size_t cut;
        if (ends_with(t->name, ".weight") && t->rank == 2) cut = len - 7;
        else if (ends_with(t->name, ".qweight")) cut = len - 8;
        else continue;
        char *m = strndup(t->name, cut);
        if (!m) {
            for (size_t k = 0; k < count; k++) free(v[k]);
            free(v);
            return qd_fail(QD_ENOMEM, "cannot allocate");
        }
        if (qd_plan_is_embedding(m)) {
            free(m);
            continue;
        }
        v[count++] = m;
    }
    qsort(v, count, sizeof *v, natural_compare);
    *modules = v;
    *n = count;
    return QD_OK;
}
