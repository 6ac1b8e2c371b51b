/* qdit convert activation-ranges: the real range of every transformer linear's input, measured by running
 * the pipeline on calibration prompts (calibrate.h), written as a JSON file for quantizers outside qdit
 * that need per-layer [min, max] (the independent numpy fixture writer's msModelSlim W8A8 static family,
 * whose asymmetric int8 input_scale / input_offset come from them):
 *
 *   {"format": "qdit-activation-ranges", "version": 1, "prompts": PROMPTS_FILE, "steps": N, "size": PX,
 *    "layers": {"layers.0.attention.to_q": {"min": m, "max": M, "amax": A}, …}}
 *
 * min / max are the smallest and largest x the layer saw over every prompt and step (the bf16 activations
 * as f32, written exactly: 17 significant digits), amax = max(|min|, |max|), the value ModelOpt's
 * calibrator uses. Layers are named as the model binds them (diffusers module names); a linear that never
 * saw a value is not listed (and is named in a warning). */
#ifndef QD_CONVERT_ACTIVATION_RANGES_H
#define QD_CONVERT_ACTIVATION_RANGES_H

#include <stdbool.h>

#include "convert/calibrate.h"
#include "qdit.h"

#define QD_ACTIVATION_RANGES_FORMAT "qdit-activation-ranges"

typedef struct {
    const char *model_dir; /* --model-dir: the transformer folder */
    const char *output;    /* --output FILE.json */
    bool overwrite;        /* --overwrite: replace an earlier output of this converter */
    qd_calib_args calib;   /* --calibrate (required), --pipeline, --calib-steps, --calib-size */
} qd_activation_ranges_args;

/* Calibrate and write the file; *n_layers gets the number of layers written. */
qd_status qd_convert_activation_ranges(const qd_activation_ranges_args *a, int *n_layers);

#endif
