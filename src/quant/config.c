/* Quantization methods, their names, and ignore-list matching (see config.h). */
#include "quant/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

static const char *const method_names[QD_QM_COUNT] = {
    [QD_QM_NONE] = "none",
    [QD_QM_FP8] = "fp8",
    [QD_QM_FP8_PER_TENSOR] = "fp8_per_tensor",
    [QD_QM_MODELOPT] = "modelopt",
    [QD_QM_MODELOPT_FP8] = "modelopt_fp8",
    [QD_QM_MODELOPT_FP4] = "modelopt_fp4",
    [QD_QM_MXFP4] = "mxfp4",
    [QD_QM_MXFP8] = "mxfp8",
    [QD_QM_MODELSLIM] = "modelslim",
    [QD_QM_SVDQUANT] = "svdquant",
    [QD_QM_COMFY_FP8] = "comfy_fp8",
    [QD_QM_COMFY_NVFP4] = "comfy_nvfp4",
    [QD_QM_NVFP4] = "nvfp4",
    [QD_QM_INT8] = "int8",
};

const char *qd_quant_method_name(qd_quant_method m) {
    return (unsigned)m < QD_QM_COUNT ? method_names[m] : "?";
}

qd_status qd_quant_method_parse(const char *name, qd_quant_method *out) {
    /* what --quantization accepts: SGLang's registry (quant-sglang.md §1.3) plus qdit's own */
    static const qd_quant_method accepted[] = {QD_QM_FP8,          QD_QM_FP8_PER_TENSOR, QD_QM_MODELOPT,
                                               QD_QM_MODELOPT_FP8, QD_QM_MODELOPT_FP4,   QD_QM_MXFP4,
                                               QD_QM_MXFP8,        QD_QM_MODELSLIM,      QD_QM_NVFP4,
                                               QD_QM_INT8};
    for (size_t i = 0; i < sizeof accepted / sizeof *accepted; i++) {
        if (!strcmp(name, method_names[accepted[i]])) {
            *out = accepted[i];
            return QD_OK;
        }
    }
    /* SGLang's Ascend name for online MXFP4: the same OCP format here, on every backend */
    if (!strcmp(name, "mxfp4_npu")) {
        *out = QD_QM_MXFP4;
        return QD_OK;
    }
    if (!strcmp(name, "gguf")) {
        return qd_fail(QD_EINVAL, "--quantization gguf: GGUF is selected by the checkpoint itself in SGLang, and "
                                  "qdit does not read GGUF files; use a safetensors export");
    }
    static const char *const known_unsupported[] = {"bitsandbytes", "auto-round", "convrot_int8", "kitchen_int8",
                                                    "compressed-tensors"};
    for (size_t i = 0; i < sizeof known_unsupported / sizeof *known_unsupported; i++) {
        if (!strcmp(name, known_unsupported[i])) {
            return qd_fail(QD_EUNSUPPORTED,
                           "--quantization %s: SGLang accepts this method but qdit does not support it (supported: "
                           "fp8, fp8_per_tensor, modelopt, modelopt_fp8, modelopt_fp4, mxfp4, mxfp4_npu, mxfp8, "
                           "modelslim, and qdit's nvfp4 and int8)",
                           name);
        }
    }
    return qd_fail(QD_EINVAL,
                   "Invalid quantization method: %s (expected one of fp8, fp8_per_tensor, modelopt, modelopt_fp8, "
                   "modelopt_fp4, mxfp4, mxfp4_npu, mxfp8, modelslim, nvfp4, int8)",
                   name);
}

void qd_quant_config_init(qd_quant_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->source, sizeof c->source, "no quantization declared");
}

void qd_quant_config_free(qd_quant_config *c) {
    json_decref(c->declaration);
    json_decref(c->layer_types);
    for (size_t i = 0; i < c->n_ignore; i++) free(c->ignore[i]);
    free(c->ignore);
    qd_quant_config_init(c);
}

/* '*' matches any run of characters (dots included), as Python's fnmatch / re ".*" do. */
bool qd_match_glob(const char *p, const char *s) {
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == '?' || *p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*p == '*') p++;
    return *p == '\0';
}

/* srt's dot-boundary rule: equal, a dotted prefix, or a dotted run inside the name. */
bool qd_match_path(const char *pattern, const char *name) {
    size_t pl = strlen(pattern), nl = strlen(name);
    if (pl == 0) return false;
    for (size_t i = 0; i + pl <= nl; i++) {
        if (memcmp(name + i, pattern, pl) != 0) continue;
        bool left = i == 0 || name[i - 1] == '.';
        bool right = i + pl == nl || name[i + pl] == '.';
        if (left && right) return true;
    }
    return false;
}

bool qd_quant_config_ignores(const qd_quant_config *c, const char *name) {
    for (size_t i = 0; i < c->n_ignore; i++) {
        const char *p = c->ignore[i];
        switch (c->ignore_rule) {
        case QD_MATCH_SUBSTRING:
            if (strstr(name, p)) return true;
            break;
        case QD_MATCH_GLOB:
            if (qd_match_glob(p, name)) return true;
            break;
        case QD_MATCH_PATH:
            if (qd_match_path(p, name)) return true;
            break;
        }
    }
    return false;
}
