/* qdit convert modelopt-fp8 / modelopt-nvfp4 — a BF16 (or F16/F32) diffusers transformer folder in, the
 * folder SGLang's ModelOpt route ends with out (quant-sglang.md §4.7, §4.8, §5.1, §5.2): what
 * `build_modelopt_fp8_transformer.py` / `build_modelopt_nvfp4_transformer.py` write from a ModelOpt export
 * and the BF16 base, made here straight from the base (weight amax from the weights, activation amax
 * from qdit running the pipeline on calibration prompts).
 *
 *   which linears: every 2-D float `<m>.weight` that is not an embedding table (the loader's rule,
 *     quant/plan.h); a module stays BF16 (its tensors copied as they are, its name in `ignore`) when any
 *     keep-BF16 regex finds a match in its name (Python's re.search, PCRE2): the --model-type preset
 *     (modelopt_presets below, from §5.1/§5.2) and every --keep-bf16-pattern;
 *   FP8 (formats.md §1.3): weight_scale = max|W|/448 (floored at 1e-12/448) F32 [1], weight =
 *     e4m3(W/weight_scale) F8_E4M3 [N, K] (RNE; the scale makes |W/s| ≤ 448);
 *   NVFP4 (formats.md §3.3, ModelOpt's recipe): weight_scale_2 = max|W|/(6·448) F32 [], block scale
 *     e4m3(block amax/(6·weight_scale_2)) (0 → 1) F8_E4M3 [N, K/16] linear layout, codes e2m1_RNE(W/(s·ws2))
 *     packed two a byte, element 2j in the low nibble, U8 [N, K/2]; K % 16 != 0 is an error naming the
 *     tensor;
 *   activations: with calibration amax per layer (the largest |x| any call of the layer saw),
 *     input_scale = amax/448 F32 [1] (FP8), amax/(6·448) F32 [] (NVFP4); a layer the calibration never
 *     ran stays BF16 ("auto ignore", as the builder does with layers without scales). Without it: FP8 is
 *     written in SGLang's dynamic-activation form (§5.1: quantization_config {quant_method: fp8,
 *     activation_scheme: dynamic, ignored_layers}), no input_scale; NVFP4 gets no input_scale, which
 *     SGLang and qdit read as 1.0 (missing_param_init, §4.1). The run says which.
 *   config.json: the source's plus quantization_config — FP8: {quant_method: modelopt, quant_algo: FP8,
 *     quant_type: FP8, config_groups (8-bit float weights and static input activations), producer, ignore};
 *     NVFP4: {quant_method: modelopt, quant_algo: NVFP4, quant_type: NVFP4, group_size: 16, config_groups
 *     (4-bit float, group 16), producer, swap_weight_nibbles: false, ignore}; ignore = every module with a
 *     `.weight` left unquantized (keep-BF16 matches, auto ignores, norms), sorted, exact names;
 *   files: one output shard per source shard, same name, tensors in source order (a quantized weight
 *     followed by its scales), metadata format=pt, _class_name, config (the output config) and
 *     quantization_config / _quantization_metadata (the quant config), as Python's json.dumps(sort_keys)
 *     writes them; the index under the source index's name (single file: `<stem>.safetensors.index.json`),
 *     total_size in bytes;
 *   memory: one tensor at a time (decoded to f32, quantized, written; its mapped pages given back).
 * The output folder is written next to --save-dir and moved there at the end (convert/output.h), so a
 * failure leaves nothing. Statistics on stdout as the builder prints them. */
#ifndef QD_CONVERT_MODELOPT_H
#define QD_CONVERT_MODELOPT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "convert/calibrate.h"
#include "qdit.h"

#define QD_MODELOPT_MAX_PATTERNS 64

typedef enum { QD_MODELOPT_FP8, QD_MODELOPT_NVFP4 } qd_modelopt_algo;

typedef struct {
    qd_modelopt_algo algo;
    const char *model_dir, *save_dir;
    const char *model_type; /* auto (NULL), flux1, flux2, qwen-image, hunyuan-video, zimage, none */
    const char *patterns[QD_MODELOPT_MAX_PATTERNS];
    int n_patterns;
    bool overwrite;
    qd_calib_args calib; /* calib.prompts NULL: no calibration */
} qd_modelopt_args;

/* The keep-BF16 preset of a model type for an algorithm, NULL-terminated regexes (exposed for tests and
 * docs); NULL for an unknown type. "auto" is resolved by the caller from _class_name. */
const char *const *qd_modelopt_preset(const char *model_type, qd_modelopt_algo algo);
/* The model type `auto` picks for a config `_class_name` ("none" when none fits). */
const char *qd_modelopt_auto_type(const char *class_name);

qd_status qd_convert_modelopt(const qd_modelopt_args *a);

#endif
