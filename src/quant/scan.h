/* What a checkpoint's tensors and safetensors metadata say about its quantization, read from headers
 * only (plus the few-byte Comfy marker tensors): quantized-tensor presence (quant-sglang.md §1.4
 * step 4a), merged metadata declarations (§1.4, §3.2), Comfy per-layer markers (§4.11), Nunchaku
 * file metadata (§4.9) and NVFP4 inference from dtypes and shapes (§3.3). */
#ifndef QD_QUANT_SCAN_H
#define QD_QUANT_SCAN_H

#include <jansson.h>
#include <stdbool.h>

#include "io/ckpt.h"
#include "quant/config.h"

typedef struct {
    bool quantized_tensors;   /* a *.weight_scale / *.input_scale / *.comfy_quant tensor, or a *.weight
                                 stored as F8_E4M3, I8 or U8 */
    char quantized_example[200];
    json_t *metadata_decl;    /* the shards' _quantization_metadata / quantization_config, merged */
    qd_quant_method header_method; /* what per-file metadata alone resolves to, or NONE */
    json_t *comfy_markers;    /* layer prefix → marker object, or NULL */
    json_t *nunchaku_config;  /* metadata "config" of a Nunchaku file (diffusers config JSON), or NULL */
    json_t *nunchaku_quant;   /* metadata "quantization_config" with "method": "svdquant", or NULL */
    bool nvfp4;               /* NVFP4 layers found (tensor layout or metadata signal) */
    qd_quant_config nvfp4_config; /* the inferred ModelOpt-NVFP4 config when nvfp4 */
} qd_quant_scan;

qd_status qd_quant_scan_ckpt(const qd_ckpt *ck, qd_quant_scan *out);
void qd_quant_scan_free(qd_quant_scan *s);

/* Merge `incoming` into `*base` (objects recursively); a key with two different values is an error
 * naming it (SGLang's _merge_quant_declaration). */
qd_status qd_quant_merge_declaration(const char *label, json_t **base, const json_t *incoming);

/* The Comfy marker set → config (resolve_comfy_checkpoint_quantization). */
qd_status qd_quant_from_comfy_markers(const json_t *markers, qd_quant_config *out);

/* §3.4: config.json's ModelOpt NVFP4 config and the tensor-inferred one, merged into `cfg`. */
void qd_quant_merge_nvfp4(qd_quant_config *cfg, const qd_quant_config *inferred);

#endif
