/* qd_quant_resolve: one component's quantization, decided in SGLang's order
 * (../shared/spec/quant-sglang.md §1.2, §1.4, §3):
 *   1. Nunchaku SVDQuant: --enable-svdquant, or a weights file named svdq-(int4|fp4)_r<rank>
 *      (primary transformer only);
 *   2. Comfy per-layer markers in the weights (.comfy_quant tensors, _quantization_metadata.layers,
 *      quant_format=mxfp8);
 *   3. a weights override's own declarations: adjacent config.json, shard metadata (merged; conflicts
 *      are errors), msModelSlim description;
 *   4. an explicit --quantization (online for fp8/fp8_per_tensor/mxfp4/mxfp8/nvfp4/int8; modelslim
 *      reads the description; modelopt* expect a pre-quantized checkpoint of that kind);
 *   5. the component's declaration: quant_model_description*.json, config.json quantization_config
 *      (flat or nested, also text_config / compression_config), hf_quant_config.json;
 *   6. NVFP4 inferred from tensors (alone, or merged into a ModelOpt NVFP4 declaration, §3.4);
 *   7. safetensors metadata declarations (for base components too: a deliberate superset);
 *   8. quantized tensors with no declaration at all: an error that says how to declare them. */
#ifndef QD_QUANT_RESOLVE_H
#define QD_QUANT_RESOLVE_H

#include "io/ckpt.h"
#include "load/sources.h"
#include "quant/config.h"

/* `runtime_class` is the component's class (config.json _class_name), checked against a Nunchaku
 * file's embedded config; may be NULL. `ck` is the opened weight set of `src`. */
qd_status qd_quant_resolve(const qd_options *o, const qd_component_source *src, const qd_ckpt *ck,
                           const char *runtime_class, qd_quant_config *out);

/* Nunchaku's file-name rule: `svdq-(int4|fp4)_r(\d+)` anywhere in `name`. */
bool qd_svdq_name_match(const char *name, bool *fp4, int *rank);

#endif
