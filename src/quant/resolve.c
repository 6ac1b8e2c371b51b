/* The resolution order (see resolve.h; quant-sglang.md §1.2, §1.4, §3). */
#include "quant/resolve.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"
#include "quant/declaration.h"
#include "quant/scan.h"

bool qd_svdq_name_match(const char *name, bool *fp4, int *rank) {
    for (const char *p = strstr(name, "svdq-"); p; p = strstr(p + 1, "svdq-")) {
        const char *q = p + 5;
        bool is_fp4;
        if (!strncmp(q, "int4_r", 6)) is_fp4 = false;
        else if (!strncmp(q, "fp4_r", 5)) is_fp4 = true;
        else continue;
        q += is_fp4 ? 5 : 6;
        if (!isdigit((unsigned char)*q)) continue;
        long r = 0;
        while (isdigit((unsigned char)*q) && r < 1000000) r = r * 10 + (*q++ - '0');
        *fp4 = is_fp4;
        *rank = (int)r;
        return true;
    }
    return false;
}

static qd_status from_metadata(const json_t *decl, const char *what, qd_quant_config *out) {
    json_t *norm = qd_quant_normalize_metadata_form(decl);
    char source[400];
    snprintf(source, sizeof source, "safetensors metadata (%s)", what);
    qd_status s = qd_quant_from_declaration(what, source, norm, out);
    json_decref(norm);
    return s;
}

static qd_status set_online_ignores(const qd_options *o, qd_quant_config *c) {
    c->ignore_rule = QD_MATCH_SUBSTRING;
    if (!o->n_ignored_layers) return QD_OK;
    c->ignore = calloc(o->n_ignored_layers, sizeof *c->ignore);
    if (!c->ignore) return qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; i < o->n_ignored_layers; i++) {
        if (!(c->ignore[i] = strdup(o->ignored_layers[i]))) return qd_fail(QD_ENOMEM, "cannot allocate");
        c->n_ignore++;
    }
    return QD_OK;
}

/* Nunchaku arguments (§1.2): enabled, precision and rank, or not enabled. */
static qd_status resolve_svdquant(const qd_options *o, const qd_component_source *src, const qd_ckpt *ck,
                                  const qd_quant_scan *scan, const char *runtime_class, bool *enabled,
                                  qd_quant_config *out) {
    *enabled = false;
    bool primary = !strcmp(src->component, "transformer");
    const char *wpath = primary && src->weights_override ? src->override_path : NULL;
    bool name_fp4 = false;
    int name_rank = 0;
    char *base = wpath ? qd_path_basename(wpath) : NULL;
    bool matched = base && qd_svdq_name_match(base, &name_fp4, &name_rank);
    free(base);
    bool on = o->enable_svdquant == 1 || (o->enable_svdquant == -1 && matched);
    if (!on || !primary) return QD_OK;
    if (!wpath) return qd_fail(QD_EINVAL, "--enable-svdquant requires --transformer-weights-path to be set");
    const char *prec = o->quantization_precision;
    bool fp4 = matched ? name_fp4 : false;
    if (prec) {
        if (!strcmp(prec, "int4")) fp4 = false;
        else if (!strcmp(prec, "nvfp4") || !strcmp(prec, "fp4")) fp4 = true;
        else return qd_fail(QD_EINVAL, "--quantization-precision %s: expected int4 or nvfp4", prec);
    }
    int rank = o->quantization_rank ? o->quantization_rank : matched && name_rank > 0 ? name_rank : 32;
    if (rank <= 0) return qd_fail(QD_EINVAL, "--quantization-rank must be positive");
    if (o->quantization) {
        return qd_fail(QD_EINVAL, "--quantization %s and Nunchaku SVDQuant (%s) are mutually exclusive: the SVDQuant file "
                                  "is already quantized",
                       o->quantization, wpath);
    }
    /* the file's embedded diffusers config must describe the model being built */
    const char *file_class = qd_json_string(scan->nunchaku_config, "_class_name");
    if (file_class && runtime_class && strcmp(file_class, runtime_class) != 0) {
        return qd_fail(QD_EFORMAT, "Class name of DiT specified in nunchaku transformer_weights_path: %s does not match "
                                   "the pipeline's transformer class %s",
                       file_class, runtime_class);
    }
    /* trust the tensors: an nvfp4 file carries F8_E4M3 block scales (wscales), an int4 file none */
    const char *fp8_tensor = NULL;
    for (size_t i = 0; i < ck->n_tensors && !fp8_tensor; i++)
        if (ck->entries[i].tensor->dtype == QD_DTYPE_F8_E4M3) fp8_tensor = ck->entries[i].tensor->name;
    if (fp8_tensor && !fp4) {
        return qd_fail(QD_EFORMAT, "%s holds nvfp4 SVDQuant layers (F8_E4M3 tensor '%s') but the precision is int4; pass "
                                   "--quantization-precision nvfp4 or check the file",
                       wpath, fp8_tensor);
    }
    if (!fp8_tensor && fp4 && ck->n_tensors) {
        return qd_fail(QD_EFORMAT, "%s holds no F8_E4M3 block scales, so it is not an nvfp4 SVDQuant file; pass "
                                   "--quantization-precision int4 or check the file",
                       wpath);
    }
    qd_quant_config_init(out);
    out->method = QD_QM_SVDQUANT;
    out->svdq_nvfp4 = fp4;
    out->svdq_rank = rank;
    out->svdq_act_unsigned = o->quantization_act_unsigned;
    out->group_size = fp4 ? 16 : 64;
    if (scan->nunchaku_quant) out->declaration = json_deep_copy(scan->nunchaku_quant);
    snprintf(out->source, sizeof out->source, "%s (precision %s, rank %d)",
             matched && o->enable_svdquant != 1 ? "file name svdq-*_r*" : "--enable-svdquant", fp4 ? "nvfp4" : "int4", rank);
    *enabled = true;
    return QD_OK;
}

/* SGLang's _resolve_weight_override_quantization (§1.4 step 4a). */
static qd_status override_declaration(const qd_component_source *src, const qd_quant_scan *scan, qd_quant_config *cfg,
                                      bool *declares) {
    qd_quant_config_init(cfg);
    *declares = false;
    json_t *decl = NULL;
    qd_status s = QD_OK;
    if (src->override_config_path) {
        json_t *config;
        if ((s = qd_json_load_object(src->override_config_path, &config))) return s;
        json_t *q = qd_quant_config_in(config);
        if (q) decl = json_deep_copy(q);
        json_decref(config);
    }
    if (scan->metadata_decl) s = qd_quant_merge_declaration(src->override_path, &decl, scan->metadata_decl);
    if (s) {
        json_decref(decl);
        return s;
    }
    if (decl) {
        *declares = true;
        if (!json_object_get(decl, "quant_method")) {
            json_t *norm = qd_quant_normalize_metadata_form(decl);
            if (json_object_get(norm, "quant_method")) s = from_metadata(norm, src->override_path, cfg);
            json_decref(norm);
        } else {
            char source[400];
            snprintf(source, sizeof source, "weights override %s: declared quantization_config", src->override_path);
            /* a description beside the override weights wins, as get_quant_config reads it first */
            bool found = false;
            char *dir = qd_path_dirname(src->weights.files[0]);
            s = qd_quant_component_declaration(NULL, dir, cfg, &found);
            free(dir);
            if (!s && (!found || cfg->method != QD_QM_MODELSLIM)) {
                qd_quant_config_free(cfg);
                s = qd_quant_from_declaration(src->override_config_path ? src->override_config_path : src->override_path,
                                              source, decl, cfg);
            }
        }
        json_decref(decl);
        return s;
    }
    bool found = false;
    char *dir = qd_path_dirname(src->weights.files[0]);
    s = qd_quant_component_declaration(NULL, dir, cfg, &found);
    free(dir);
    *declares = !s && (scan->quantized_tensors || found);
    return s;
}

qd_status qd_quant_resolve(const qd_options *o, const qd_component_source *src, const qd_ckpt *ck,
                           const char *runtime_class, qd_quant_config *out) {
    qd_quant_config_init(out);
    qd_quant_scan scan;
    qd_status s = qd_quant_scan_ckpt(ck, &scan);
    if (s) return s;
    qd_quant_method flag = QD_QM_NONE;
    if (o->quantization && (s = qd_quant_method_parse(o->quantization, &flag))) goto done;

    /* 1. Nunchaku SVDQuant */
    bool svdq = false;
    if ((s = resolve_svdquant(o, src, ck, &scan, runtime_class, &svdq, out))) goto done;
    if (svdq) {
        if (scan.comfy_markers) {
            s = qd_fail(QD_EINVAL, "Per-layer checkpoint quantization (Comfy markers) and Nunchaku are mutually exclusive");
        }
        goto done;
    }

    /* 2. Comfy per-layer markers */
    if (scan.comfy_markers) {
        if (o->quantization) {
            s = qd_fail(QD_EINVAL, "Checkpoint quantization is encoded in per-layer metadata (Comfy markers); do not also "
                                   "set --quantization %s",
                        o->quantization);
            goto done;
        }
        s = qd_quant_from_comfy_markers(scan.comfy_markers, out);
        goto done;
    }

    /* 3. a weights override's own declarations */
    qd_quant_config override_cfg;
    qd_quant_config_init(&override_cfg);
    bool declares = false;
    if (src->weights_override && (s = override_declaration(src, &scan, &override_cfg, &declares))) goto done;

    /* 4. explicit --quantization */
    if (o->quantization) {
        if (declares) {
            qd_quant_config_free(&override_cfg);
            s = qd_fail(QD_EINVAL, "The replacement checkpoint already contains or declares quantization; do not also set an "
                                   "online --quantization override (%s%s%s)",
                        src->override_path, scan.quantized_example[0] ? ", e.g. tensor " : "", scan.quantized_example);
            goto done;
        }
        qd_quant_config_free(&override_cfg);
        if (flag == QD_QM_MODELSLIM) {
            bool found = false;
            s = qd_quant_component_declaration(src->config_path, src->dir, out, &found);
            if (!s && (!found || out->method != QD_QM_MODELSLIM)) {
                qd_quant_config_free(out);
                s = qd_fail(QD_ENOTFOUND, "--quantization modelslim: no quant_model_description*.json in %s", src->dir);
            }
            goto done;
        }
        if (flag == QD_QM_MODELOPT || flag == QD_QM_MODELOPT_FP8 || flag == QD_QM_MODELOPT_FP4) {
            /* pre-quantized kinds: the checkpoint must be of that kind; its own declaration gives the details */
            bool found = false;
            if ((s = qd_quant_component_declaration(src->config_path, src->dir, out, &found))) goto done;
            bool want_fp4 = flag == QD_QM_MODELOPT_FP4;
            if (!found && want_fp4 && scan.nvfp4) {
                qd_quant_config_free(out);
                *out = scan.nvfp4_config;
                qd_quant_config_init(&scan.nvfp4_config);
                found = true;
            } else if (found && want_fp4 && out->method == QD_QM_MODELOPT_FP4 && scan.nvfp4) {
                qd_quant_merge_nvfp4(out, &scan.nvfp4_config);
            }
            bool ok = found && (want_fp4 ? out->method == QD_QM_MODELOPT_FP4
                                         : (out->method == QD_QM_MODELOPT_FP8 || out->method == QD_QM_MODELOPT));
            if (!ok) {
                char what[64];
                snprintf(what, sizeof what, "%s", found ? qd_quant_method_name(out->method) : "no quantization");
                qd_quant_config_free(out);
                s = qd_fail(QD_EINVAL, "--quantization %s needs a checkpoint pre-quantized that way, but %s declares %s%s",
                            o->quantization, src->dir, what,
                            want_fp4 ? "" : " (for online FP8 from a BF16 checkpoint use --quantization fp8)");
                goto done;
            }
            if (flag == QD_QM_MODELOPT) out->method = QD_QM_MODELOPT;
            size_t len = strlen(out->source);
            snprintf(out->source + len, sizeof out->source - len, ", as --quantization %s asked", o->quantization);
            goto done;
        }
        /* online quantization of a full-precision checkpoint */
        if (scan.quantized_tensors) {
            s = qd_fail(QD_EINVAL, "--quantization %s quantizes a full-precision checkpoint at load, but %s is already "
                                   "quantized (tensor %s); drop the flag to use its own quantization",
                        o->quantization, src->weights.files[0], scan.quantized_example);
            goto done;
        }
        out->method = flag;
        out->online = true;
        if (flag == QD_QM_MXFP4 || flag == QD_QM_MXFP8) out->block_k = 32;
        if (flag == QD_QM_NVFP4) out->group_size = 16;
        snprintf(out->source, sizeof out->source, "--quantization %s (online, at load)", o->quantization);
        s = set_online_ignores(o, out);
        goto done;
    }

    /* 5. the declared config: the override's, else the component's */
    bool found = false;
    if (src->weights_override) {
        *out = override_cfg;
        found = out->method != QD_QM_NONE;
    } else {
        qd_quant_config_free(&override_cfg);
        if ((s = qd_quant_component_declaration(src->config_path, src->dir, out, &found))) goto done;
    }

    /* 6. NVFP4 from tensors, alone or merged with a ModelOpt NVFP4 declaration */
    if ((!found || out->method == QD_QM_MODELOPT_FP4) && scan.nvfp4) {
        if (found) {
            qd_quant_merge_nvfp4(out, &scan.nvfp4_config);
        } else {
            qd_quant_config_free(out);
            *out = scan.nvfp4_config;
            qd_quant_config_init(&scan.nvfp4_config);
            found = true;
        }
    }
    if (!found && declares) {
        s = qd_fail(QD_EFORMAT, "Replacement checkpoint contains quantized tensors but no supported native quantization "
                                "declaration (%s: tensor %s)",
                    src->override_path, scan.quantized_example);
        goto done;
    }

    /* 7. metadata declarations of base components */
    if (!found && scan.metadata_decl) {
        json_t *norm = qd_quant_normalize_metadata_form(scan.metadata_decl);
        if (json_object_get(norm, "quant_method")) {
            qd_quant_config_free(out);
            s = from_metadata(norm, src->weights.files[0], out);
            found = !s;
        }
        json_decref(norm);
        if (s) goto done;
    }

    /* 8. quantized tensors nobody declared */
    if (!found && scan.quantized_tensors) {
        bool nunchaku = strstr(scan.quantized_example, ".qweight'") != NULL;
        s = qd_fail(QD_EFORMAT, "%s holds quantized tensors (e.g. %s) but declares no quantization: %s",
                    src->weights.files[0], scan.quantized_example,
                    nunchaku ? "these are Nunchaku SVDQuant layers; pass the file with --transformer-weights-path and "
                               "--enable-svdquant (or name it svdq-<int4|fp4>_r<rank>-….safetensors)"
                             : "add a quantization_config to its config.json, or name the method with --quantization "
                               "modelopt_fp8|modelopt_fp4|modelslim");
        goto done;
    }
done:
    if (!s && o->n_ignored_layers && !out->online) {
        qd_log(QD_LOG_WARN, "--quantization-ignored-layers applies to online quantization (--quantization fp8, mxfp4, "
                            "mxfp8, nvfp4, int8); the %s checkpoint's own quantization (%s) is used as stored",
               src->component, qd_quant_method_name(out->method));
    }
    qd_quant_scan_free(&scan);
    if (s) qd_quant_config_free(out);
    return s;
}
