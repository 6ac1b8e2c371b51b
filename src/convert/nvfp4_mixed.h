/* qdit convert nvfp4-mixed — the equivalent of SGLang's `multimodal_gen/tools/build_modelopt_nvfp4_transformer.py`
 * (quant-sglang.md §5.2): a ModelOpt NVFP4 export plus the BF16 base transformer in, a folder out where the
 * modules matching keep-BF16 patterns (the `flux1-nvfp4` preset and/or `--keep-bf16-pattern GLOB`) carry
 * the base tensors instead, their scale tensors dropped.
 *
 *   inputs: each a transformer folder (config.json inside) or a pipeline folder with transformer/; tensors
 *     found through the index (model.safetensors.index.json, diffusion_pytorch_model.safetensors.index.json,
 *     or the first *.safetensors.index.json) or a single shard;
 *   config: the export's flat quantization_config (quant_method "modelopt", quant_algo containing FP4)
 *     with the patterns appended to `ignore`, `quant_type` defaulted to the upper-cased quant_algo and
 *     `swap_weight_nibbles` set; written with sorted keys, 2-space indent;
 *   tensors: `*_quantizer.*` dropped; a tensor's module is its name less .weight_scale_2 / .weight_scale /
 *     .input_scale / .weight / .bias; a module matches a pattern when the whole name matches the glob
 *     (`*` any characters, everything else literal); in a matching module, the base's tensors replace
 *     the export's and the rest (scales) are dropped; shard metadata keeps the export's, adds
 *     format=pt when missing, and quantization_config / _quantization_metadata (the config as JSON);
 *   output: shards under their export names, the index under the export's index name (a single-shard
 *     export gets `<stem>.safetensors.index.json`), other regular files of the export copied.
 * Differences from SGLang's script: an existing non-empty --output-dir is refused unless --overwrite, which
 * replaces only a previous conversion's files (the script deletes the whole folder); subfolders of the
 * export are not copied; in the glob, regex characters other than `*` and `.` are literal. */
#ifndef QD_CONVERT_NVFP4_MIXED_H
#define QD_CONVERT_NVFP4_MIXED_H

#include <stdbool.h>

#include "qdit.h"

#define QD_NVFP4_MIXED_MAX_PATTERNS 64

typedef struct {
    const char *base_dir, *modelopt_dir, *output_dir;
    const char *preset; /* "none" (default) or "flux1-nvfp4" */
    const char *patterns[QD_NVFP4_MIXED_MAX_PATTERNS];
    int n_patterns;
    bool swap_weight_nibbles, overwrite;
} qd_nvfp4_mixed_args;

/* The glob rule on a module name (exposed for tests). */
bool qd_nvfp4_mixed_glob(const char *pattern, const char *name);

qd_status qd_convert_nvfp4_mixed(const qd_nvfp4_mixed_args *a);

#endif
