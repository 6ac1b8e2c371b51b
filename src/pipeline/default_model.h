/* The embedded default pipeline: qdit's own tiny text-to-image model (models/tiny-shapes, a ZImagePipeline
 * trained by tools/tiny-model on coloured-shape scenes), which `qdit generate` runs when no --model-path is
 * given, with the size, steps and guidance it was trained and evaluated for. */
#ifndef QD_PIPELINE_DEFAULT_MODEL_H
#define QD_PIPELINE_DEFAULT_MODEL_H

#include <stddef.h>

#include "qdit.h"

#define QD_DEFAULT_MODEL_NAME "tiny-shapes"
#define QD_DEFAULT_MODEL_SIDE 128    /* pixels: the scenes it was trained on */
#define QD_DEFAULT_MODEL_STEPS 20    /* the held-out evaluation's settings (docs/tiny-model.md) */
#define QD_DEFAULT_MODEL_GUIDANCE 2.0

/* The folder, first that exists: $QDIT_DEFAULT_MODEL; models/tiny-shapes in the source tree this qdit was
 * built from; ../models/tiny-shapes and ../share/qdit/models/tiny-shapes beside the executable's folder.
 * QD_ENOTFOUND with the places looked at when none does. */
qd_status qd_default_model_dir(char *out, size_t n);

#endif
