/* Activation calibration for the converters: qdit generates each calibration prompt with the pipeline
 * (its text encoder, scheduler and the transformer being converted, on the CPU, a few steps, no VAE
 * decode) while an observer on the transformer's linears keeps the largest |x| each layer saw, its
 * smallest and largest x, and on request the largest |x| of each input channel:
 *   - ModelOpt (modelopt.h): the per-layer amax, ModelOpt's max calibrator (input_scale = amax/448 FP8,
 *     amax/(6·448) NVFP4);
 *   - SVDQuant (svdquant.h): the per-channel amax_x[k] of the smoothing factors sqrt(amax_x[k] / amax_w[k]);
 *   - activation ranges (activation_ranges.h): the per-layer [min, max] of asymmetric int8 activation
 *     scales (msModelSlim W8A8 static's input_scale and input_offset).
 * Prompt i (0-based) is generated with seed i. Layers are named as the model binds them: the diffusers
 * module of the source transformer (e.g. "layers.0.attention.to_q"). */
#ifndef QD_CONVERT_CALIBRATE_H
#define QD_CONVERT_CALIBRATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/strmap.h"
#include "qdit.h"

#define QD_CALIB_DEFAULT_STEPS 4
#define QD_CALIB_DEFAULT_SIZE 256

typedef struct {
    const char *prompts;  /* --calibrate PROMPTS_FILE, one prompt a line; NULL: no calibration */
    const char *pipeline; /* --pipeline DIR; NULL: the transformer folder's parent when it has model_index.json */
    int steps;            /* --calib-steps, denoising steps per prompt (0: QD_CALIB_DEFAULT_STEPS) */
    int64_t size;         /* --calib-size, image side in pixels (0: QD_CALIB_DEFAULT_SIZE) */
} qd_calib_args;

typedef struct {
    json_t *amax; /* layer name → the largest |x| it saw (real); 0 for a layer whose inputs were all empty */
    /* layer name → the smallest / largest x it saw (real), for the layers that saw at least one value;
       there amax = max(|min|, |max|) exactly */
    json_t *min, *max;
    /* with per_channel: layer i's largest |x| per input channel, chan[i][0..k[i]) */
    char **names;
    float **chan;
    int64_t *k;
    size_t n, cap;
    qd_strmap by_name;
} qd_calib;

/* Calibrate the transformer in `transformer_dir` (the converter's --model-dir). On success *out holds the maxima (free with qd_calib_free). */
qd_status qd_calibrate(const qd_calib_args *a, const char *transformer_dir, bool per_channel, qd_calib *out);
/* Layer `name`'s per-channel maxima and their count, NULL when it never ran (or without per_channel). */
const float *qd_calib_channels(const qd_calib *c, const char *name, int64_t *k);
void qd_calib_free(qd_calib *c); /* safe on a zeroed c */

#endif
