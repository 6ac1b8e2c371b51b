/* qdit convert fp8 — the equivalent of SGLang's `multimodal_gen/tools/convert_hf_to_fp8.py`
 * (quant-sglang.md §4.3, §5.3): a BF16/F16/F32 safetensors model folder in, the same folder with its
 * linear weights in FP8 E4M3 out, loadable by SGLang's `fp8` method and by qdit.
 *
 *   which tensors: every 2-D float tensor whose name contains "weight" and none of "layernorm", "embed",
 *     "router", "mlp.gate.", "norm", "lm_head", "eh_proj", "net", and is not "proj_out.weight" (SGLang's
 *     rule verbatim: it keeps FLUX's feed-forward `…ff.net.*` layers in BF16);
 *   strategies: tensor — one scale max|W|/448 (floored at 1e-12/448), `<m>.weight_scale` [1];
 *     channel — per output row, `<m>.weight_scale` [N, 1]; block — per BN×BK tile of the zero-padded
 *     weight, `<m>.weight_scale_inv` [⌈N/BN⌉, ⌈K/BK⌉] with size-1 dims squeezed out, as SGLang writes it;
 *     codes e4m3(clamp(W/s, ±448)), round to nearest even;
 * *   files: each input `*.safetensors` becomes an output file of the same name (metadata format=pt),
 *     config.json gets `quantization_config`
 *     (tensor/block: {activation_scheme: dynamic, fmt: e4m3, quant_method: fp8, [weight_block_size],
 *     modules_to_not_convert}; channel: a compressed-tensors config with token-dynamic activations and
 *     `ignore`), and `model.safetensors.index.json` maps every tensor to its file.
 * Deviations, on purpose: a tile whose max is 0 gets codes 0 (SGLang divides 0 by a 0 scale and writes NaN
 * codes); only 2-D tensors are quantized (SGLang would try any tensor named "weight"); no other file is
 * copied (SGLang copies every other file, including the source's index, which names no scale tensors);
 * `total_size` counts bytes (SGLang writes the element count). Memory: one tensor (or one row tile of it) in f32 at a time. */
#ifndef QD_CONVERT_FP8_H
#define QD_CONVERT_FP8_H

#include <stdbool.h>

#include "qdit.h"

typedef enum { QD_FP8_TENSOR, QD_FP8_CHANNEL, QD_FP8_BLOCK } qd_fp8_strategy;

typedef struct {
    const char *model_dir, *save_dir;
    qd_fp8_strategy strategy;
    int block_n, block_k; /* block: the tile (default 128 × 128) */
    bool overwrite;
} qd_convert_fp8_args;

/* SGLang's selection rule for one tensor name (exposed for tests). */
bool qd_fp8_convert_selects(const char *name);

qd_status qd_convert_fp8(const qd_convert_fp8_args *a);

#endif
