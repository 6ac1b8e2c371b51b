/* The reference weights of one quantized layer of a tools/quant-fixtures family, as qdit's schemes give
 * them: the manifest's `quantized_layers[]` entry names the checkpoint parts (checkpoint_prefix), the rows
 * of a fused part (fused_rows), the columns a split part holds (in_columns), AWQ modulation chunks
 * (adanorm_splits) and unsigned-activation layers (act_unsigned). Shared by the loader test
 * (test_quant_families) and the dequantize converter test. */
#ifndef QD_TEST_QUANT_MANIFEST_H
#define QD_TEST_QUANT_MANIFEST_H

#include <jansson.h>
#include <stdbool.h>

#include "io/ckpt.h"
#include "quant/config.h"

/* w [out·in] (the layer's logical in/out features) and b [out]: every part bound with qd_linear_bind,
 * dequantized (qd_linear_dequantize) and its effective bias taken (qd_linear_bias_f32); AWQ rows
 * de-interleaved with the +1 of the scale chunks taken out of the bias; the logical block (top-left of
 * a padded part, the fused rows, placed at its columns); biases of column-joined parts summed, the first
 * part's set. With `unsigned_shift`, act_unsigned parts are bound as the model binds them (their bias
 * then holds the shift compensation); without it *bias_known is false for them. Fails the test on a
 * binding error. */
void qt_manifest_reference(const qd_quant_config *cfg, const qd_ckpt *ck, json_t *layer, bool unsigned_shift, float *w, float *b,
                           bool *bias_known);

#endif
