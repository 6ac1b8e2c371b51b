/* `qdit convert dequantize`: any checkpoint qdit reads, written back as a plain diffusers transformer
 * folder (docs/cli.md). Each linear's weight and bias are those for which x·Wᵀ + b is what the quantized
 * layer computes with unquantized activations: qd_linear_dequantize's W (scales, global and block scales,
 * smoothing, offsets, SVDQuant's low-rank branch folded in) and qd_linear_bias_f32's b (msModelSlim's
 * quant_bias and offsets, SVDQuant's GELU-shift compensation), after the model's own binding rules (AWQ
 * modulation rows de-interleaved and their +1 taken out of the bias, SVDQuant padding cropped), stored
 * under the model's diffusers names (fused and renamed layouts split back by models/layout.h). Other
 * tensors (norms, pad tokens, biases of unquantized modules) are copied, converted to the output dtype.
 * It streams: one stored layer group is bound, dequantized, written and freed at a time. */
#ifndef QD_CONVERT_DEQUANTIZE_H
#define QD_CONVERT_DEQUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "qdit.h"

typedef struct {
    const char *path;         /* a transformer folder or weights file, or NULL (the flags say) */
    const char *save_dir;     /* required */
    const char *dtype;        /* "bf16" (default) or "f32" */
    uint64_t max_shard_bytes; /* 0: QD_DEFAULT_SHARD_BYTES */
    bool overwrite;           /* replace a previous conversion in save_dir */
} qd_dequantize_args;

typedef struct {
    int64_t linears;   /* diffusers linears written */
    int64_t copied;    /* other tensors copied */
    int shards;
    uint64_t bytes;
} qd_dequantize_report;

qd_status qd_convert_dequantize(const qd_options *o, const qd_dequantize_args *a, qd_dequantize_report *rep);

#endif
