/* `qdit convert svdquant`: a BF16 (or F16/F32) diffusers transformer folder → one Nunchaku SVDQuant file
 * `svdq-{int4|fp4}_r{rank}-NAME.safetensors`, as Nunchaku's converter (deepcompressor) lays it out
 * (formats.md §5, quant-sglang.md §4.9), loadable with --transformer-weights-path by qdit and by
 * Nunchaku-based runtimes:
 *   FLUX.1   legacy module names: qkv_proj / qkv_proj_context = [q; k; v], out_proj, out_proj_context,
 *            mlp_fc1/2, mlp_context_fc1/2 (SVDQ; fc2 after GELU unsigned for int4), AWQ W4A16
 *            norm1.linear / norm1_context.linear / single norm.linear, single blocks' proj_out split into
 *            out_proj + mlp_fc2, norm_q/k under the block; tensors smooth, smooth_orig, lora_down, lora_up.
 *   Z-Image  attention.to_qkv = [q; k; v], attention.to_out.0, feed_forward.net.0.proj = [w3; w1],
 *            feed_forward.net.2 (SVDQ) in layers, noise_refiner and context_refiner; tensors
 *            smooth_factor, smooth_factor_orig, proj_down, proj_up; no bias keys where the source has none.
 * Every other tensor (embedders, adaLN, norms, final layer) is written in BF16 under its own name.
 * Metadata: `config` (the diffusers config, `_class_name` included), `model_class`, `quantization_config`.
 * Per layer see convert/svdq_layer.h. The smoothing factors are 1 unless activation maxima are given,
 * per input channel of each layer: calibrated (convert/calibrate.h: qdit runs the pipeline on prompts and
 * keeps each linear input channel's largest |x|) or read from a file; then
 * smooth[k] = sqrt(amax_x[k] / amax_w[k]), amax_w[k] = max_n |W[n][k]| (1 where either is 0).
 * Streams: one layer is read, quantized, written and freed at a time. */
#ifndef QD_CONVERT_SVDQUANT_H
#define QD_CONVERT_SVDQUANT_H

#include <stdbool.h>

#include "convert/calibrate.h"
#include "qdit.h"

typedef struct {
    const char *model_dir;   /* the source transformer folder */
    const char *save_dir;    /* the output folder (written whole or not at all) */
    const char *precision;   /* "int4" (default) or "nvfp4" */
    int rank;                /* 0: 32 */
    const char *name;        /* NAME in the file name; NULL: the source folder's name */
    const char *amax_file;   /* NULL, or a safetensors file of activation maxima (<module>.input_amax [K]) */
    qd_calib_args calib;     /* calib.prompts: calibrate instead (not with amax_file) */
    bool overwrite;
} qd_svdquant_args;

typedef struct {
    int svdq_layers, awq_layers, bf16_tensors;
    double mean_rel_err, worst_rel_err; /* ‖W − W_eff‖_F / ‖W‖_F over the diffusers linears quantized */
    char worst_layer[192];
    char file[1024]; /* the path written */
    unsigned long long bytes;
} qd_svdquant_report;

qd_status qd_convert_svdquant(const qd_svdquant_args *a, qd_svdquant_report *rep);

#endif
