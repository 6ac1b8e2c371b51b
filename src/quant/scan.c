/* Header-level quantization evidence of a checkpoint (see scan.h). */
#include "quant/scan.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/status.h"
#include "io/json.h"
#include "quant/declaration.h"

void qd_quant_scan_free(qd_quant_scan *s) {
    json_decref(s->metadata_decl);
    json_decref(s->comfy_markers);
    json_decref(s->nunchaku_config);
    json_decref(s->nunchaku_quant);
    qd_quant_config_free(&s->nvfp4_config);
    memset(s, 0, sizeof *s);
}

qd_status qd_quant_merge_declaration(const char *label, json_t **base, const json_t *incoming) {
    if (!*base) {
        *base = json_deep_copy(incoming);
        return *base ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate");
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)incoming, key, value) {
        json_t *previous = json_object_get(*base, key);
        if (json_is_object(previous) && json_is_object(value)) {
            json_t *sub = json_incref(previous);
            qd_status s = qd_quant_merge_declaration(label, &sub, value);
            json_object_set_new(*base, key, sub);
            if (s) return s;
        } else if (previous && !json_equal(previous, value)) {
            return qd_fail(QD_EFORMAT, "%s: Conflicting checkpoint quantization field '%s' across shards", label, key);
        } else {
            json_object_set(*base, key, value);
        }
    }
    return QD_OK;
}

static bool contains_nocase(const char *s, const char *needle) {
    size_t n = strlen(needle);
    for (; *s; s++)
        if (!strncasecmp(s, needle, n)) return true;
    return false;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static qd_status parse_metadata_json(const qd_st_file *f, const char *key, json_t **out) {
    *out = NULL;
    const char *text = qd_st_meta_get(f, key);
    if (!text) return QD_OK;
    char label[1200];
    snprintf(label, sizeof label, "%s: metadata %s", f->path, key);
    json_t *j;
    if (qd_json_parse(label, text, strlen(text), &j)) {
        return qd_fail(QD_EFORMAT, "Invalid %s in %s (not JSON)", key, f->path);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return qd_fail(QD_EFORMAT, "Invalid %s in %s: expected an object", key, f->path);
    }
    *out = j;
    return QD_OK;
}

/* get_quant_config_from_safetensors_metadata: what one file's metadata alone resolves to. Failures are
 * silent there, so they are here (the merged declaration reports real conflicts). */
static qd_quant_method file_metadata_method(json_t *qmeta, json_t *qconf) {
    json_t *decl = qmeta ? qmeta : qconf;
    if (!decl) return QD_QM_NONE;
    json_t *norm = qd_quant_normalize_metadata_form(decl);
    qd_quant_method m = QD_QM_NONE;
    if (json_object_get(norm, "quant_method") && qd_quant_method_of("metadata", norm, &m) != QD_OK) m = QD_QM_NONE;
    json_decref(norm);
    return m;
}

static bool is_svdquant_decl(const json_t *d) {
    const char *m = qd_json_string(d, "method");
    return m && !strcmp(m, "svdquant");
}

/* ---- Comfy markers (§4.11) ---- */

static qd_status comfy_require(const qd_ckpt *ck, const char *prefix, const char *suffix, const qd_ckpt_entry **e) {
    char name[1024];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    *e = qd_ckpt_find(ck, name);
    if (!*e) return qd_fail(QD_EFORMAT, "Comfy layer '%s' is missing checkpoint tensor '%s'", prefix, name);
    return QD_OK;
}

static qd_status comfy_validate(const qd_ckpt *ck, const char *prefix, json_t *marker) {
    const char *fmt = qd_json_string(marker, "format");
    if (!fmt) return qd_fail(QD_EFORMAT, "Comfy quantization marker for '%s' has no \"format\"", prefix);
    const qd_ckpt_entry *w, *sc, *s2;
    qd_status s;
    if (!strcmp(fmt, "float8_e4m3fn")) {
        if ((s = comfy_require(ck, prefix, "weight", &w)) || (s = comfy_require(ck, prefix, "weight_scale", &sc))) return s;
        char in[1024];
        snprintf(in, sizeof in, "%s.input_scale", prefix);
        json_object_set_new(marker, "_activation_scheme", json_string(qd_ckpt_find(ck, in) ? "static" : "dynamic"));
    } else if (!strcmp(fmt, "nvfp4")) {
        if ((s = comfy_require(ck, prefix, "weight", &w)) || (s = comfy_require(ck, prefix, "weight_scale", &sc)) ||
            (s = comfy_require(ck, prefix, "weight_scale_2", &s2)))
            return s;
        const qd_st_tensor *tw = w->tensor, *ts = sc->tensor, *t2 = s2->tensor;
        if (tw->dtype != QD_DTYPE_U8 || ts->dtype != QD_DTYPE_F8_E4M3) {
            return qd_fail(QD_EFORMAT, "Comfy NVFP4 layer '%s' needs U8 packed weights and FP8 block scales, got %s and %s",
                           prefix, qd_dtype_name(tw->dtype), qd_dtype_name(ts->dtype));
        }
        if (t2->dtype != QD_DTYPE_F32 || t2->elements != 1 || t2->rank > 1) {
            return qd_fail(QD_EFORMAT, "Comfy NVFP4 layer '%s' needs a scalar F32 weight_scale_2", prefix);
        }
        /* SGLang checks [N, K/16]; comfy-kitchen writes the swizzled scales padded to [roundup(N,128),
           roundup(K/16,4)] (formats.md §3.7): both are accepted */
        int64_t n = tw->rank == 2 ? tw->shape[0] : 0, kg = tw->rank == 2 ? tw->shape[1] * 2 / 16 : 0;
        bool exact = ts->rank == 2 && ts->shape[0] == n && ts->shape[1] == kg;
        bool padded = ts->rank == 2 && ts->shape[0] == (n + 127) / 128 * 128 && ts->shape[1] == (kg + 3) / 4 * 4;
        if (tw->rank != 2 || (tw->shape[1] * 2) % 16 != 0 || !(exact || padded)) {
            return qd_fail(QD_EFORMAT, "Comfy NVFP4 layer '%s' has incompatible weight/scale shapes (weight U8 [N, K/2] with "
                                       "weight_scale [N, K/16] or, swizzled, [roundup(N,128), roundup(K/16,4)])",
                           prefix);
        }
    } else if (!strcmp(fmt, "mxfp8")) {
        if ((s = comfy_require(ck, prefix, "weight", &w)) || (s = comfy_require(ck, prefix, "weight_scale", &sc))) return s;
    } else if (!strcmp(fmt, "int8_tensorwise")) {
        if ((s = comfy_require(ck, prefix, "weight", &w)) || (s = comfy_require(ck, prefix, "weight_scale", &sc))) return s;
    }
    return QD_OK;
}

static qd_status scan_comfy(const qd_ckpt *ck, qd_quant_scan *out) {
    json_t *markers = json_object();
    bool global_mxfp8 = false, any_global = false;
    qd_status s = QD_OK;
    for (size_t f = 0; f < ck->n_files && !s; f++) {
        const qd_st_file *file = ck->files[f];
        const char *qf = qd_st_meta_get(file, "quant_format");
        if (qf) {
            any_global = true;
            global_mxfp8 = !strcasecmp(qf, "mxfp8");
            if (!global_mxfp8) any_global = true;
        }
        json_t *qmeta;
        if ((s = parse_metadata_json(file, "_quantization_metadata", &qmeta))) break;
        json_t *layers = json_object_get(qmeta, "layers");
        if (qmeta && json_object_get(qmeta, "layers") && !json_is_object(layers)) {
            s = qd_fail(QD_EFORMAT, "_quantization_metadata in %s must contain a layers object", file->path);
        }
        const char *prefix;
        json_t *marker;
        json_object_foreach(layers, prefix, marker) {
            if (s) break;
            if (!json_is_object(marker)) {
                s = qd_fail(QD_EFORMAT, "Comfy quantization metadata for '%s' in %s must be an object", prefix, file->path);
                break;
            }
            json_t *prev = json_object_get(markers, prefix);
            if (prev && !json_equal(prev, marker)) {
                s = qd_fail(QD_EFORMAT, "Conflicting Comfy quantization markers for '%s'", prefix);
                break;
            }
            json_object_set_new(markers, prefix, json_deep_copy(marker));
        }
        json_decref(qmeta);
        for (size_t t = 0; t < file->n_tensors && !s; t++) {
            const qd_st_tensor *ten = &file->tensors[t];
            if (!ends_with(ten->name, ".comfy_quant")) continue;
            const char *bytes = qd_st_data(file, ten);
            json_t *m = NULL;
            char label[1200];
            snprintf(label, sizeof label, "%s: Comfy marker '%s'", file->path, ten->name);
            if (ten->dtype != QD_DTYPE_U8 || !bytes || qd_json_parse(label, bytes, ten->end - ten->begin, &m) || !json_is_object(m)) {
                json_decref(m);
                s = qd_fail(QD_EFORMAT, "Invalid Comfy quantization marker '%s' in %s (expected U8 bytes of a JSON object)",
                            ten->name, file->path);
                break;
            }
            char prefix_buf[1024];
            snprintf(prefix_buf, sizeof prefix_buf, "%.*s", (int)(strlen(ten->name) - strlen(".comfy_quant")), ten->name);
            json_t *prev = json_object_get(markers, prefix_buf);
            if (prev && !json_equal(prev, m)) {
                json_decref(m);
                s = qd_fail(QD_EFORMAT, "Conflicting Comfy quantization markers for '%s'", prefix_buf);
                break;
            }
            json_object_set_new(markers, prefix_buf, m);
        }
    }
    (void)any_global;
    /* weights stored as quantized dtypes must all carry markers once any marker exists */
    for (size_t i = 0; i < ck->n_tensors && !s; i++) {
        const qd_st_tensor *t = ck->entries[i].tensor;
        if (!ends_with(t->name, ".weight")) continue;
        if (t->dtype != QD_DTYPE_F8_E4M3 && t->dtype != QD_DTYPE_I8 && t->dtype != QD_DTYPE_U8) continue;
        char prefix[1024];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(strlen(t->name) - 7), t->name);
        if (global_mxfp8 && !json_object_get(markers, prefix)) {
            char sn[1100];
            snprintf(sn, sizeof sn, "%s.weight_scale", prefix);
            const qd_ckpt_entry *sc = qd_ckpt_find(ck, sn);
            if (t->dtype != QD_DTYPE_F8_E4M3 || t->rank != 2 || t->shape[1] % 32 != 0 || !sc ||
                sc->tensor->dtype != QD_DTYPE_U8 || sc->tensor->rank != 2 || sc->tensor->shape[0] != t->shape[0] ||
                sc->tensor->shape[1] != t->shape[1] / 32) {
                s = qd_fail(QD_EFORMAT, "MXFP8 layer '%s' has incompatible weight/scale metadata (want F8_E4M3 [N,K] "
                                        "with K %% 32 == 0 and U8 weight_scale [N,K/32])",
                            prefix);
                break;
            }
            json_object_set_new(markers, prefix, json_pack("{s:s}", "format", "mxfp8"));
        }
    }
    if (!s && json_object_size(markers) > 0) {
        for (size_t i = 0; i < ck->n_tensors && !s; i++) {
            const qd_st_tensor *t = ck->entries[i].tensor;
            if (!ends_with(t->name, ".weight")) continue;
            if (t->dtype != QD_DTYPE_F8_E4M3 && t->dtype != QD_DTYPE_I8 && t->dtype != QD_DTYPE_U8) continue;
            char prefix[1024];
            snprintf(prefix, sizeof prefix, "%.*s", (int)(strlen(t->name) - 7), t->name);
            if (!json_object_get(markers, prefix)) {
                s = qd_fail(QD_EFORMAT, "Quantized weights are missing comfy_quant metadata: '%s' (%s)", prefix,
                            qd_dtype_name(t->dtype));
            }
        }
        const char *prefix;
        json_t *marker;
        json_object_foreach(markers, prefix, marker) {
            if (s) break;
            s = comfy_validate(ck, prefix, marker);
        }
    }
    if (s || json_object_size(markers) == 0) {
        json_decref(markers);
        return s;
    }
    out->comfy_markers = markers;
    return QD_OK;
}

/* ---- NVFP4 inference (§3.3) ---- */

static bool packed_qkv_name(const char *n) {
    /* ^(double_blocks\.\d+\.(img|txt)_attn\.qkv|single_blocks\.\d+\.linear1)\. */
    const char *p;
    if (!strncmp(n, "double_blocks.", 14)) {
        p = n + 14;
        if (!isdigit((unsigned char)*p)) return false;
        while (isdigit((unsigned char)*p)) p++;
        return !strncmp(p, ".img_attn.qkv.", 14) || !strncmp(p, ".txt_attn.qkv.", 14);
    }
    if (!strncmp(n, "single_blocks.", 14)) {
        p = n + 14;
        if (!isdigit((unsigned char)*p)) return false;
        while (isdigit((unsigned char)*p)) p++;
        return !strncmp(p, ".linear1.", 9);
    }
    return false;
}

static qd_status add_exclude(qd_quant_config *c, const char *module) {
    char name[1024];
    snprintf(name, sizeof name, "%s", module);
    /* Qwen-Image Sequential(SiLU, Linear): img_mod.1 is the runtime img_mod linear */
    size_t n = strlen(name);
    if (ends_with(name, ".img_mod.1") || ends_with(name, ".txt_mod.1")) name[n - 2] = '\0';
    char **v = realloc(c->ignore, (c->n_ignore + 1) * sizeof *v);
    if (!v) return qd_fail(QD_ENOMEM, "cannot allocate");
    c->ignore = v;
    if (!(v[c->n_ignore] = strdup(name))) return qd_fail(QD_ENOMEM, "cannot allocate");
    c->n_ignore++;
    return QD_OK;
}

static qd_status infer_nvfp4(const qd_ckpt *ck, qd_quant_scan *out) {
    bool signal = false;
    int group = 0;
    qd_quant_config *c = &out->nvfp4_config;
    qd_quant_config_init(c);
    for (size_t f = 0; f < ck->n_files; f++) {
        json_t *qmeta = NULL;
        parse_metadata_json(ck->files[f], "_quantization_metadata", &qmeta);
        const char *algo = qd_json_string(qmeta, "quant_algo"), *type = qd_json_string(qmeta, "quant_type");
        if ((algo && (contains_nocase(algo, "NVFP4") || contains_nocase(algo, "FP4"))) || (type && contains_nocase(type, "NVFP4"))) signal = true;
        const char *prefix;
        json_t *layer;
        json_object_foreach(json_object_get(qmeta, "layers"), prefix, layer) {
            const char *fmt = qd_json_string(layer, "format");
            if (fmt && !strcmp(fmt, "nvfp4")) signal = true;
        }
        json_decref(qmeta);
    }
    for (size_t i = 0; i < ck->n_tensors; i++) {
        const qd_st_tensor *t = ck->entries[i].tensor;
        if (packed_qkv_name(t->name)) c->packed_qkv = true;
        if (ends_with(t->name, ".comfy_quant")) c->comfy = true;
        if (!ends_with(t->name, ".weight")) continue;
        char module[1024], scale_name[1100];
        snprintf(module, sizeof module, "%.*s", (int)(strlen(t->name) - 7), t->name);
        snprintf(scale_name, sizeof scale_name, "%s.weight_scale", module);
        const qd_ckpt_entry *sc = qd_ckpt_find(ck, scale_name);
        bool quantized = t->dtype == QD_DTYPE_U8 && sc && sc->tensor->dtype == QD_DTYPE_F8_E4M3 && sc->tensor->rank >= 2;
        if (quantized) {
            signal = true;
            if (!group && t->rank >= 2 && sc->tensor->shape[sc->tensor->rank - 1] > 0) {
                int64_t in = t->shape[1] * 2, groups = sc->tensor->shape[sc->tensor->rank - 1];
                if (in % groups == 0) group = (int)(in / groups);
            }
        } else {
            qd_status s = add_exclude(c, module);
            if (s) return s;
        }
    }
    if (!signal || !group) {
        qd_quant_config_free(c);
        return QD_OK;
    }
    c->method = QD_QM_MODELOPT_FP4;
    c->group_size = group;
    c->ignore_rule = QD_MATCH_GLOB;
    c->swizzled_scales = c->packed_qkv || c->comfy;
    c->swap_weight_nibbles = c->packed_qkv || c->comfy;
    snprintf(c->source, sizeof c->source, "tensor inference: NVFP4 (U8 weights with F8_E4M3 block scales, group %d)", group);
    out->nvfp4 = true;
    return QD_OK;
}

void qd_quant_merge_nvfp4(qd_quant_config *cfg, const qd_quant_config *inferred) {
    /* the tensor-inferred exclude list wins over a possibly stale config.json one */
    for (size_t i = 0; i < cfg->n_ignore; i++) free(cfg->ignore[i]);
    free(cfg->ignore);
    cfg->ignore = NULL;
    cfg->n_ignore = 0;
    char **v = calloc(inferred->n_ignore + 1, sizeof *v);
    for (size_t i = 0; v && i < inferred->n_ignore; i++) {
        if ((v[i] = strdup(inferred->ignore[i]))) cfg->n_ignore++;
    }
    cfg->ignore = v;
    cfg->ignore_rule = QD_MATCH_GLOB;
    cfg->packed_qkv |= inferred->packed_qkv;
    cfg->swap_weight_nibbles |= inferred->swap_weight_nibbles;
    cfg->comfy |= inferred->comfy;
    if (!cfg->swizzled_scales) cfg->swizzled_scales = inferred->swizzled_scales;
    if (!cfg->group_size) cfg->group_size = inferred->group_size;
    size_t len = strlen(cfg->source);
    snprintf(cfg->source + len, sizeof cfg->source - len, ", exclude list from tensor inference");
}

qd_status qd_quant_from_comfy_markers(const json_t *markers, qd_quant_config *out) {
    qd_quant_config_init(out);
    bool fp8 = false, nvfp4 = false, mxfp8 = false, int8 = false, other = false;
    const char *prefix, *other_name = NULL;
    json_t *m;
    json_object_foreach((json_t *)markers, prefix, m) {
        const char *f = qd_json_string(m, "format");
        if (!f) f = "?";
        if (!strcmp(f, "float8_e4m3fn")) fp8 = true;
        else if (!strcmp(f, "nvfp4")) nvfp4 = true;
        else if (!strcmp(f, "mxfp8")) mxfp8 = true;
        else if (!strcmp(f, "int8_tensorwise")) int8 = true;
        else {
            other = true;
            other_name = f;
        }
    }
    if (!other && fp8 && !nvfp4 && !mxfp8 && !int8) out->method = QD_QM_COMFY_FP8;
    else if (!other && nvfp4 && !fp8 && !mxfp8) out->method = QD_QM_COMFY_NVFP4;
    else if (!other && mxfp8 && !fp8 && !nvfp4 && !int8) out->method = QD_QM_MXFP8;
    else if (other || int8) {
        return qd_fail(QD_EUNSUPPORTED, "Unsupported Comfy quantization format(s): %s (qdit reads float8_e4m3fn, nvfp4 and "
                                        "mxfp8 markers)",
                       other ? other_name : "int8_tensorwise");
    } else {
        return qd_fail(QD_EUNSUPPORTED, "Unsupported Comfy quantization format mix (float8_e4m3fn/nvfp4/mxfp8 together)");
    }
    out->layer_types = json_deep_copy(markers);
    out->comfy = true;
    if (out->method == QD_QM_COMFY_NVFP4) {
        out->group_size = 16;
        out->swizzled_scales = true;
        out->swap_weight_nibbles = true;
    }
    if (out->method == QD_QM_MXFP8) {
        out->block_n = 1;
        out->block_k = 32;
    }
    snprintf(out->source, sizeof out->source, "Comfy per-layer markers (%zu layers)", json_object_size(markers));
    return QD_OK;
}

qd_status qd_quant_scan_ckpt(const qd_ckpt *ck, qd_quant_scan *out) {
    memset(out, 0, sizeof *out);
    qd_status s = QD_OK;
    for (size_t i = 0; i < ck->n_tensors && !out->quantized_tensors; i++) {
        const qd_st_tensor *t = ck->entries[i].tensor;
        /* SGLang's markers (§1.4 step 4a), plus Nunchaku's packed `.qweight` */
        if (ends_with(t->name, ".weight_scale") || ends_with(t->name, ".input_scale") || ends_with(t->name, ".comfy_quant") ||
            ends_with(t->name, ".qweight") ||
            (ends_with(t->name, ".weight") &&
             (t->dtype == QD_DTYPE_F8_E4M3 || t->dtype == QD_DTYPE_I8 || t->dtype == QD_DTYPE_U8))) {
            out->quantized_tensors = true;
            snprintf(out->quantized_example, sizeof out->quantized_example, "'%s' %s", t->name, qd_dtype_name(t->dtype));
        }
    }
    for (size_t f = 0; f < ck->n_files && !s; f++) {
        const qd_st_file *file = ck->files[f];
        json_t *qmeta = NULL, *qconf = NULL;
        if ((s = parse_metadata_json(file, "_quantization_metadata", &qmeta))) break;
        if ((s = parse_metadata_json(file, "quantization_config", &qconf))) {
            json_decref(qmeta);
            break;
        }
        if (qconf && is_svdquant_decl(qconf)) {
            /* Nunchaku's own declaration: handled by the SVDQuant rules, not the generic ones */
            json_decref(out->nunchaku_quant);
            out->nunchaku_quant = qconf;
            qconf = NULL;
        }
        /* Nunchaku files embed the diffusers config of the model they were made from */
        const char *embedded = qd_st_meta_get(file, "config");
        if (embedded && !out->nunchaku_config) out->nunchaku_config = json_loads(embedded, 0, NULL);
        qd_quant_method m = file_metadata_method(qmeta, qconf);
        if (m != QD_QM_NONE) {
            if (out->header_method != QD_QM_NONE && out->header_method != m) {
                s = qd_fail(QD_EFORMAT, "Conflicting safetensors quantization declarations: %s says %s, an earlier shard %s",
                            file->path, qd_quant_method_name(m), qd_quant_method_name(out->header_method));
            }
            out->header_method = m;
        }
        for (int k = 0; k < 2 && !s; k++) {
            json_t *d = k == 0 ? qmeta : qconf;
            if (d) s = qd_quant_merge_declaration(file->path, &out->metadata_decl, d);
        }
        json_decref(qmeta);
        json_decref(qconf);
    }
    if (!s) s = scan_comfy(ck, out);
    if (!s) s = infer_nvfp4(ck, out);
    if (s) qd_quant_scan_free(out);
    return s;
}
