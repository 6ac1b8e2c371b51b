/* Quantization declarations: what a checkpoint says about itself in JSON — config.json's
 * `quantization_config` (flat and nested ModelOpt forms, `hf_quant_config.json`, fp8, mxfp8,
 * compressed-tensors), safetensors metadata, and msModelSlim's quant_model_description*.json — turned
 * into a qd_quant_config (quant-sglang.md §3.1, §3.2, §4.3, §4.6–§4.8, §4.10). */
#ifndef QD_QUANT_DECLARATION_H
#define QD_QUANT_DECLARATION_H

#include <jansson.h>

#include "quant/config.h"

/* The quantization_config of a component config: top level, else under text_config, else under
 * compression_config (srt resolve_checkpoint_quant_spec). Borrowed; NULL when absent. */
json_t *qd_quant_config_in(const json_t *component_config);

/* SGLang's method-name resolution for a declaration (§3.1 step 3–4, _resolve_quant_method_name):
 * fills out->method; unsupported ModelOpt algorithms are errors with SGLang's wording. */
qd_status qd_quant_method_of(const char *label, const json_t *decl, qd_quant_method *out);

/* Build the config from a declaration (method resolved as above, then that method's from_config
 * rules). `label` names the file in messages; `source` says which rule found it. */
qd_status qd_quant_from_declaration(const char *label, const char *source, const json_t *decl,
                                    qd_quant_config *out);

/* get_quant_config(config, dir) (§3.1): msModelSlim description first, then the config's declaration,
 * then a nested-form hf_quant_config.json. `config_path` may be NULL. *found tells whether anything
 * was declared. */
qd_status qd_quant_component_declaration(const char *config_path, const char *dir, qd_quant_config *out,
                                         bool *found);

/* The diffusers/Comfy metadata form {format_version, layers} → {quant_method: fp8, activation_scheme:
 * dynamic} when a layer format mentions float8 (§3.2). Returns a new reference. */
json_t *qd_quant_normalize_metadata_form(const json_t *decl);

/* Is `type` a msModelSlim description type qdit knows (FLOAT, W8A8, W8A8_DYNAMIC, …)? */
bool qd_modelslim_type_known(const char *type);

#endif
