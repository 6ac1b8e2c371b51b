/* A component's resolved quantization: which method (SGLang's name), which rule decided it, and the
 * parameters every layer's scheme needs. Produced by qd_quant_resolve() (src/quant/resolve.c), which
 * follows SGLang's detection order (../shared/spec/quant-sglang.md §1.2–§1.4, §3). */
#ifndef QD_QUANT_CONFIG_H
#define QD_QUANT_CONFIG_H

#include <jansson.h>
#include <stdbool.h>

#include "qdit.h"

typedef enum {
    QD_QM_NONE = 0,
    QD_QM_FP8,          /* "fp8": online (from BF16) or serialized (quant_method containing fp8) */
    QD_QM_FP8_PER_TENSOR, /* "fp8_per_tensor": online, per-tensor weight and dynamic activation */
    QD_QM_MODELOPT,     /* "modelopt": --quantization modelopt (ModelOpt FP8, fnmatch ignore rules) */
    QD_QM_MODELOPT_FP8, /* "modelopt_fp8" */
    QD_QM_MODELOPT_FP4, /* "modelopt_fp4" (NVFP4) */
    QD_QM_MXFP4,        /* "mxfp4": online OCP MXFP4 */
    QD_QM_MXFP8,        /* "mxfp8": online OCP MXFP8, or serialized Comfy MXFP8 */
    QD_QM_MODELSLIM,    /* "modelslim": quant_model_description*.json */
    QD_QM_SVDQUANT,     /* "svdquant": Nunchaku SVDQuant file */
    QD_QM_COMFY_FP8,    /* "comfy_fp8": per-layer comfy_quant markers, float8_e4m3fn */
    QD_QM_COMFY_NVFP4,  /* "comfy_nvfp4": per-layer comfy_quant markers, nvfp4 */
    QD_QM_NVFP4,        /* "nvfp4": online NVFP4 — qdit only, beyond SGLang */
    QD_QM_INT8,         /* "int8": online W8A8 int8 — qdit only, beyond SGLang */
    QD_QM_COUNT
} qd_quant_method;

/* How a pattern of an ignore list matches a layer's dotted name. */
typedef enum {
    QD_MATCH_SUBSTRING, /* --quantization-ignored-layers: the name contains the pattern (DESIGN) */
    QD_MATCH_GLOB,      /* ModelOpt `ignore` / `exclude_modules`: '*' wildcards, whole-name match */
    QD_MATCH_PATH,      /* fp8 `ignored_layers` / `modules_to_not_convert`: equal, or a dotted prefix
                           or dotted component run of the name */
} qd_match_rule;

typedef struct {
    qd_quant_method method;
    bool online;              /* weights are quantized by qdit at load */
    char source[400];         /* the rule that decided, for `inspect` and logs */
    json_t *declaration;      /* the declaration that was used (owned; NULL for online/none) */

    /* layers kept in full precision */
    char **ignore;
    size_t n_ignore;
    qd_match_rule ignore_rule;

    /* fp8 families */
    bool fp8_static_activation; /* activation_scheme "static" (input_scale per layer) */
    int block_n, block_k;       /* weight_block_size, 0 when not block-wise */

    /* NVFP4 (ModelOpt / Comfy) */
    int group_size;
    bool swap_weight_nibbles;
    bool swizzled_scales;       /* checkpoint_weight_scale_layout == "swizzled" */
    bool packed_qkv;            /* BFL raw export names */
    bool comfy;                 /* .comfy_quant markers present */

    /* Nunchaku SVDQuant */
    bool svdq_nvfp4;            /* precision nvfp4 (else int4) */
    int svdq_rank;
    bool svdq_act_unsigned;

    /* msModelSlim: tensor name → type ("W8A8", "FLOAT", …); Comfy: prefix → marker object */
    json_t *layer_types;
} qd_quant_config;

const char *qd_quant_method_name(qd_quant_method m);
/* Parse a --quantization value (SGLang's names plus qdit's nvfp4/int8; kitchen_int8 and the like
 * are rejected with a message that says so). */
qd_status qd_quant_method_parse(const char *name, qd_quant_method *out);

void qd_quant_config_init(qd_quant_config *c);
void qd_quant_config_free(qd_quant_config *c);

/* Does the ignore list keep `name` (a dotted layer name) in full precision? */
bool qd_quant_config_ignores(const qd_quant_config *c, const char *name);

/* The pattern matchers, exposed for tests. */
bool qd_match_glob(const char *pattern, const char *name);
bool qd_match_path(const char *pattern, const char *name);

#endif
