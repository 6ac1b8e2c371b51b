/* Quantization declarations → qd_quant_config (see declaration.h). Error wording follows SGLang's
 * where the spec quotes it, so users searching for a message find both. */
#include "quant/declaration.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"

json_t *qd_quant_config_in(const json_t *config) {
    json_t *q = json_object_get(config, "quantization_config");
    if (json_is_object(q)) return q;
    q = json_object_get(json_object_get(config, "text_config"), "quantization_config");
    if (json_is_object(q)) return q;
    q = json_object_get(config, "compression_config");
    if (json_is_object(q)) return q;
    return NULL;
}

/* quant_algo of a flat ({quant_algo}) or nested ({quantization: {quant_algo}}) ModelOpt config,
 * upper-cased into buf; "" when absent. */
static const char *modelopt_algo(const json_t *decl, char *buf, size_t n) {
    const char *a = qd_json_string(decl, "quant_algo");
    if (!a) a = qd_json_string(json_object_get(decl, "quantization"), "quant_algo");
    size_t i = 0;
    for (; a && a[i] && i + 1 < n; i++) buf[i] = (char)toupper((unsigned char)a[i]);
    buf[i] = '\0';
    return buf;
}

/* The method ModelOpt's quant_algo canonicalises to (srt canonicalize_modelopt_quant_algo), or NULL. */
static const char *canonical_modelopt(const char *algo) {
    if (!strcmp(algo, "FP8") || !strncmp(algo, "FP8_", 4)) return "modelopt_fp8";
    if (!strcmp(algo, "NVFP4") || !strcmp(algo, "FP4") || !strcmp(algo, "NVFP4_AWQ") || !strcmp(algo, "W4A16_NVFP4"))
        return "modelopt_fp4";
    if (!strcmp(algo, "MXFP8")) return "mxfp8";
    return NULL;
}

static bool compressed_tensors_fp8(const json_t *decl) {
    const char *key;
    json_t *group;
    json_object_foreach(json_object_get(decl, "config_groups"), key, group) {
        json_t *w = json_object_get(group, "weights");
        if (json_integer_value(json_object_get(w, "num_bits")) != 8) return false;
        const char *t = qd_json_string(w, "type");
        if (!t || strcmp(t, "float")) return false;
    }
    return json_object_size(json_object_get(decl, "config_groups")) > 0;
}

qd_status qd_quant_method_of(const char *label, const json_t *decl, qd_quant_method *out) {
    const char *method = qd_json_string(decl, "quant_method");
    if (!method) return qd_fail(QD_EFORMAT, "%s: Missing quant_method in quantization config.", label);
    bool modelopt = !strcmp(method, "modelopt") || !strcmp(method, "modelopt_fp8") || !strcmp(method, "modelopt_fp4");
    if (!modelopt) {
        if (!strcmp(method, "fp8")) *out = QD_QM_FP8;
        else if (!strcmp(method, "fp8_per_tensor")) *out = QD_QM_FP8_PER_TENSOR;
        else if (strstr(method, "mxfp8")) *out = QD_QM_MXFP8;
        else if (!strcmp(method, "modelslim")) *out = QD_QM_MODELSLIM;
        else if (!strcmp(method, "compressed-tensors") && compressed_tensors_fp8(decl)) *out = QD_QM_FP8;
        else if (!strcmp(method, "gguf") || !strcmp(method, "bitsandbytes") || !strcmp(method, "auto-round") ||
                 !strcmp(method, "compressed-tensors")) {
            return qd_fail(QD_EUNSUPPORTED, "%s: quant_method '%s' is not supported by qdit", label, method);
        } else {
            return qd_fail(QD_EUNSUPPORTED, "%s: Invalid quantization method: %s", label, method);
        }
        return QD_OK;
    }
    char algo[64];
    modelopt_algo(decl, algo, sizeof algo);
    if (strcmp(method, "modelopt") != 0 && !algo[0]) {
        *out = !strcmp(method, "modelopt_fp8") ? QD_QM_MODELOPT_FP8 : QD_QM_MODELOPT_FP4;
        return QD_OK;
    }
    if (!strcmp(algo, "MIXED_PRECISION")) {
        return qd_fail(QD_EUNSUPPORTED, "%s: ModelOpt mixed precision is not supported by the current SGLang diffusion "
                                        "runtime (nor by qdit).",
                       label);
    }
    const char *canonical = canonical_modelopt(algo);
    if (strcmp(method, "modelopt") != 0 && canonical && strcmp(method, canonical) != 0) {
        return qd_fail(QD_EFORMAT, "%s: ModelOpt config declares quant_method='%s', but quant_algo='%s' maps to '%s'.",
                       label, method, algo, canonical);
    }
    if (!strcmp(algo, "FP8")) *out = QD_QM_MODELOPT_FP8;
    else if (!strcmp(algo, "NVFP4")) *out = QD_QM_MODELOPT_FP4;
    else if (canonical) {
        return qd_fail(QD_EUNSUPPORTED,
                       "%s: ModelOpt quant_algo='%s' maps to '%s', but that checkpoint algorithm is not supported by "
                       "the SGLang diffusion runtime. Supported ModelOpt checkpoint algorithms are FP8 and NVFP4.",
                       label, algo, canonical);
    } else {
        return qd_fail(QD_EUNSUPPORTED, "%s: Unsupported ModelOpt quant_algo for diffusion: %s", label,
                       algo[0] ? algo : "(none)");
    }
    return QD_OK;
}

/* Copy a JSON list of strings into the config's ignore list (dropping a leading "model." when asked). */
static qd_status take_ignore_list(const char *label, const char *what, const json_t *list, bool strip_model,
                                  qd_quant_config *c) {
    if (!list) return QD_OK;
    if (!json_is_array(list)) return qd_fail(QD_EFORMAT, "%s: '%s' must be a list of layer names", label, what);
    size_t n = json_array_size(list);
    char **v = realloc(c->ignore, (c->n_ignore + n + 1) * sizeof *v);
    if (!v) return qd_fail(QD_ENOMEM, "cannot allocate");
    c->ignore = v;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(list, i));
        if (!s) return qd_fail(QD_EFORMAT, "%s: '%s'[%zu] is not a string", label, what, i);
        if (strip_model && !strncmp(s, "model.", 6)) s += 6;
        if (!(c->ignore[c->n_ignore] = strdup(s))) return qd_fail(QD_ENOMEM, "cannot allocate");
        c->n_ignore++;
    }
    return QD_OK;
}

static qd_status fp8_from_config(const char *label, const json_t *decl, qd_quant_config *c) {
    const char *scheme = qd_json_string(decl, "activation_scheme");
    if (!scheme && !strcmp(qd_json_string(decl, "quant_method"), "compressed-tensors")) {
        /* compressed-tensors channel export: per-channel weights, dynamic per-token activations */
        scheme = "dynamic";
    }
    if (!scheme) return qd_fail(QD_EFORMAT, "%s: fp8 quantization_config needs 'activation_scheme' (static or dynamic)", label);
    if (strcmp(scheme, "static") && strcmp(scheme, "dynamic")) {
        return qd_fail(QD_EFORMAT, "%s: Unsupported activation scheme %s (expected static or dynamic)", label, scheme);
    }
    c->fp8_static_activation = !strcmp(scheme, "static");
    json_t *block = json_object_get(decl, "weight_block_size");
    if (block && !json_is_null(block)) {
        if (!json_is_array(block) || json_array_size(block) != 2 || !json_is_integer(json_array_get(block, 0)) ||
            !json_is_integer(json_array_get(block, 1)) || json_integer_value(json_array_get(block, 0)) <= 0 ||
            json_integer_value(json_array_get(block, 1)) <= 0 || json_integer_value(json_array_get(block, 0)) > 65536 ||
            json_integer_value(json_array_get(block, 1)) > 65536) {
            return qd_fail(QD_EFORMAT, "%s: weight_block_size must be two positive integers [block_n, block_k]", label);
        }
        if (c->fp8_static_activation) {
            return qd_fail(QD_EFORMAT, "%s: block-wise FP8 (weight_block_size) requires activation_scheme dynamic", label);
        }
        c->block_n = (int)json_integer_value(json_array_get(block, 0));
        c->block_k = (int)json_integer_value(json_array_get(block, 1));
    }
    c->ignore_rule = QD_MATCH_PATH;
    qd_status s = take_ignore_list(label, "ignored_layers", json_object_get(decl, "ignored_layers"), true, c);
    if (!s) s = take_ignore_list(label, "modules_to_not_convert", json_object_get(decl, "modules_to_not_convert"), true, c);
    if (!s) s = take_ignore_list(label, "ignore", json_object_get(decl, "ignore"), true, c);
    return s;
}

static qd_status modelopt_fp8_from_config(const char *label, const json_t *decl, qd_quant_config *c) {
    char algo[64];
    if (!strstr(modelopt_algo(decl, algo, sizeof algo), "FP8")) {
        return qd_fail(QD_EFORMAT, "%s: ModelOpt FP8 config must declare quant_algo FP8 (got '%s')", label, algo);
    }
    c->fp8_static_activation = true;
    c->ignore_rule = QD_MATCH_GLOB;
    json_t *list = json_object_get(decl, "ignore");
    if (!list) list = json_object_get(json_object_get(decl, "quantization"), "exclude_modules");
    if (!list) list = json_object_get(decl, "exclude_modules");
    return take_ignore_list(label, "ignore", list, false, c);
}

/* Every "group_size" anywhere in a nested ModelOpt config (top, quantization, config_groups…). */
static void collect_group_sizes(const json_t *v, json_int_t *sizes, int *n) {
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach((json_t *)v, key, child) {
            if (!strcmp(key, "group_size") && json_is_integer(child)) {
                json_int_t g = json_integer_value(child);
                bool seen = false;
                for (int i = 0; i < *n; i++) seen |= sizes[i] == g;
                if (!seen && *n < 8) sizes[(*n)++] = g;
            } else {
                collect_group_sizes(child, sizes, n);
            }
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) collect_group_sizes(json_array_get(v, i), sizes, n);
    }
}

static qd_status modelopt_fp4_from_config(const char *label, const json_t *decl, qd_quant_config *c) {
    const json_t *nested = json_object_get(decl, "quantization");
    bool flat = json_object_get(decl, "quant_algo") != NULL;
    const char *algo = flat ? qd_json_string(decl, "quant_algo") : qd_json_string(nested, "quant_algo");
    if (!algo) return qd_fail(QD_EFORMAT, "%s: Cannot find 'quant_algo' in quantization config.", label);
    if (strcmp(algo, "NVFP4") != 0) {
        return qd_fail(QD_EUNSUPPORTED, "%s: Only NVFP4 quantization is supported for diffusion, got '%s'.", label, algo);
    }
    json_int_t sizes[8];
    int n = 0;
    json_t *list;
    if (flat) {
        json_t *g = json_object_get(decl, "group_size");
        if (json_is_integer(g)) sizes[n++] = json_integer_value(g);
        else {
            const char *key;
            json_t *group;
            json_object_foreach(json_object_get(decl, "config_groups"), key, group) {
                json_t *w = json_object_get(json_object_get(group, "weights"), "group_size");
                if (json_is_integer(w)) sizes[n++] = json_integer_value(w);
                break; /* the first group, as SGLang reads it */
            }
        }
        list = json_object_get(decl, "ignore");
        if (!list) list = json_object_get(decl, "exclude_modules");
    } else {
        collect_group_sizes(decl, sizes, &n);
        if (n > 1) return qd_fail(QD_EFORMAT, "%s: Inconsistent group_size values in the NVFP4 config", label);
        list = json_object_get(nested, "exclude_modules");
    }
    if (n == 0 || !list) {
        return qd_fail(QD_EFORMAT, "%s: NVFP4 quantization requires group_size and exclude_modules in the quantization "
                                   "config",
                       label);
    }
    if (sizes[0] <= 0 || sizes[0] > 4096) return qd_fail(QD_EFORMAT, "%s: group_size %lld is not valid", label, (long long)sizes[0]);
    c->group_size = (int)sizes[0];
    c->ignore_rule = QD_MATCH_GLOB;
    qd_status s = take_ignore_list(label, "ignore", list, false, c);
    if (s) return s;
    json_t *packed = json_object_get(decl, "checkpoint_uses_packed_qkv");
    c->packed_qkv = json_is_true(packed);
    json_t *swap = json_object_get(decl, "swap_weight_nibbles");
    if (!swap && nested) swap = json_object_get(nested, "swap_weight_nibbles");
    if (swap && !json_is_boolean(swap)) return qd_fail(QD_EFORMAT, "%s: swap_weight_nibbles must be true or false", label);
    c->swap_weight_nibbles = swap ? json_is_true(swap) : c->packed_qkv;
    const char *layout = qd_json_string(decl, "checkpoint_weight_scale_layout");
    if (layout && strcmp(layout, "linear") && strcmp(layout, "swizzled")) {
        return qd_fail(QD_EFORMAT, "%s: checkpoint_weight_scale_layout '%s' (expected linear or swizzled)", label, layout);
    }
    c->swizzled_scales = layout && !strcmp(layout, "swizzled");
    c->comfy = json_is_true(json_object_get(decl, "checkpoint_uses_comfy_quantization"));
    return QD_OK;
}

static qd_status mxfp8_from_config(const char *label, const json_t *decl, qd_quant_config *c) {
    const char *scheme = qd_json_string(decl, "activation_scheme");
    if (scheme && strcmp(scheme, "dynamic")) {
        return qd_fail(QD_EFORMAT, "%s: MXFP8 checkpoints use dynamic activations (got activation_scheme %s)", label, scheme);
    }
    c->block_n = 1;
    c->block_k = 32;
    c->ignore_rule = QD_MATCH_PATH;
    qd_status s = take_ignore_list(label, "ignored_layers", json_object_get(decl, "ignored_layers"), true, c);
    if (!s) s = take_ignore_list(label, "modules_to_not_convert", json_object_get(decl, "modules_to_not_convert"), true, c);
    return s;
}

qd_status qd_quant_from_declaration(const char *label, const char *source, const json_t *decl, qd_quant_config *out) {
    qd_quant_config_init(out);
    if (!json_is_object(decl)) return qd_fail(QD_EFORMAT, "%s: quantization_config must be an object", label);
    qd_status s = qd_quant_method_of(label, decl, &out->method);
    if (s) return s;
    switch (out->method) {
    case QD_QM_FP8:
    case QD_QM_FP8_PER_TENSOR: s = fp8_from_config(label, decl, out); break;
    case QD_QM_MODELOPT:
    case QD_QM_MODELOPT_FP8: s = modelopt_fp8_from_config(label, decl, out); break;
    case QD_QM_MODELOPT_FP4: s = modelopt_fp4_from_config(label, decl, out); break;
    case QD_QM_MXFP8: s = mxfp8_from_config(label, decl, out); break;
    case QD_QM_MODELSLIM:
        s = qd_fail(QD_EFORMAT, "%s: quant_method modelslim needs its quant_model_description.json beside the weights",
                    label);
        break;
    default: s = qd_fail(QD_EUNSUPPORTED, "%s: method %s cannot come from a declaration", label, qd_quant_method_name(out->method));
    }
    if (s) {
        qd_quant_config_free(out);
        return s;
    }
    out->declaration = json_deep_copy(decl);
    snprintf(out->source, sizeof out->source, "%s", source);
    return QD_OK;
}

json_t *qd_quant_normalize_metadata_form(const json_t *decl) {
    json_t *copy = json_deep_copy(decl);
    if (!copy || json_object_get(copy, "quant_method") || !json_object_get(copy, "format_version")) return copy;
    json_t *layers = json_object_get(copy, "layers");
    const char *key;
    json_t *layer;
    json_object_foreach(layers, key, layer) {
        const char *fmt = qd_json_string(layer, "format");
        if (fmt && strstr(fmt, "float8")) {
            json_object_set_new(copy, "quant_method", json_string("fp8"));
            json_object_set_new(copy, "activation_scheme", json_string("dynamic"));
            break;
        }
    }
    return copy;
}

/* msModelSlim: quant_model_description.json, else the first quant_model_description*.json. */
static qd_status find_description(const char *dir, char **path) {
    *path = NULL;
    char *exact = qd_path_join(dir, "quant_model_description.json");
    if (!exact) return qd_fail(QD_ENOMEM, "cannot allocate");
    if (qd_is_file(exact)) {
        *path = exact;
        return QD_OK;
    }
    free(exact);
    char **names;
    size_t n;
    if (qd_list_files(dir, ".json", &names, &n) != 0) return QD_OK;
    for (size_t i = 0; i < n && !*path; i++)
        if (!strncmp(names[i], "quant_model_description", 23)) *path = qd_path_join(dir, names[i]);
    qd_free_names(names, n);
    return QD_OK;
}

static const char *const modelslim_types[] = {"FLOAT", "W8A8", "W8A8_DYNAMIC", "W4A4_DYNAMIC", "W8A8_MXFP8",
                                              "W4A4_MXFP4", "W4A4_MXFP4_DUALSCALE", "W8A16", "W4A8_DYNAMIC",
                                              "W4A8_MXFP", NULL};

static qd_status modelslim_from_description(const char *path, qd_quant_config *out) {
    json_t *desc;
    qd_status s = qd_json_load_object(path, &desc);
    if (s) return s;
    out->method = QD_QM_MODELSLIM;
    out->layer_types = json_object();
    const char *key;
    json_t *val;
    json_object_foreach(desc, key, val) {
        /* tensor entries are "<name>": "<TYPE>"; globals (model_quant_type, version, group_size, …) too,
           but those keys contain no '.' */
        if (!strchr(key, '.')) continue;
        const char *type = json_string_value(val);
        if (!type) {
            s = qd_fail(QD_EFORMAT, "%s: entry '%s' must be a type string such as W8A8 or FLOAT", path, key);
            break;
        }
        json_object_set(out->layer_types, key, val);
    }
    if (!s) {
        out->declaration = desc;
        snprintf(out->source, sizeof out->source, "msModelSlim description %s", path);
        out->ignore_rule = QD_MATCH_PATH;
    } else {
        json_decref(desc);
    }
    return s;
}

bool qd_modelslim_type_known(const char *type) {
    for (int i = 0; modelslim_types[i]; i++)
        if (!strcmp(type, modelslim_types[i])) return true;
    return false;
}

qd_status qd_quant_component_declaration(const char *config_path, const char *dir, qd_quant_config *out, bool *found) {
    qd_quant_config_init(out);
    *found = false;
    char *desc = NULL;
    qd_status s = dir ? find_description(dir, &desc) : QD_OK;
    if (s) return s;
    if (desc) {
        s = modelslim_from_description(desc, out);
        free(desc);
        *found = !s;
        return s;
    }
    if (config_path) {
        json_t *config;
        if ((s = qd_json_load_object(config_path, &config))) return s;
        json_t *decl = qd_quant_config_in(config);
        if (decl) {
            char source[400];
            snprintf(source, sizeof source, "%s quantization_config", config_path);
            s = qd_quant_from_declaration(config_path, source, decl, out);
            *found = !s;
        }
        json_decref(config);
        if (s || *found) return s;
    }
    /* the legacy nested ModelOpt form in its own file */
    char *hf = dir ? qd_path_join(dir, "hf_quant_config.json") : NULL;
    if (hf && qd_is_file(hf)) {
        json_t *decl;
        if (!(s = qd_json_load_object(hf, &decl))) {
            if (!json_object_get(decl, "quant_method")) json_object_set_new(decl, "quant_method", json_string("modelopt"));
            char source[400];
            snprintf(source, sizeof source, "%s (nested ModelOpt form)", hf);
            s = qd_quant_from_declaration(hf, source, decl, out);
            *found = !s;
            json_decref(decl);
        }
    }
    free(hf);
    return s;
}
