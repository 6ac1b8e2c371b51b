/* T5 encoder (T5EncoderModel: FLUX.1's T5-v1.1-XXL; UMT5EncoderModel: Wan's UMT5-XXL), models.md §2.4, §8.
 * Pre-norm blocks with T5's RMS layer norm (no mean, no bias); self-attention with no 1/√d scaling and an
 * additive relative-position bias from bucketed distances (bidirectional buckets: exact below half the
 * bucket range, logarithmic up to max_distance); T5 computes it in layer 0 and every layer reuses it,
 * UMT5 has one per layer. FFN: wo(act(wi_0 x) · wi_1 x) (gated-gelu uses the tanh GELU) or wo(act(wi x)). */
#ifndef QD_MODELS_TE_T5_H
#define QD_MODELS_TE_T5_H

#include <jansson.h>

#include "models/model.h"

typedef struct qd_t5 qd_t5;

typedef struct {
    int64_t d_model, d_kv, heads, d_ff, layers, vocab, buckets, max_distance;
    double eps;
    bool gated, per_layer_bias; /* per_layer_bias: UMT5 */
    qd_act_kind act;
} qd_t5_config;

qd_status qd_t5_config_parse(const char *label, const json_t *cfg, qd_t5_config *c);
qd_status qd_t5_load(const qd_model_ctx *ctx, const qd_t5_config *c, qd_t5 **out);
void qd_t5_free(qd_t5 *m);

/* ids [B, L] (host); mask [B, L] (host, nonzero = attend; NULL: none, as FLUX.1 runs it). out [B, L, d_model]
 * (any float dtype) receives last_hidden_state. */
qd_status qd_t5_forward(qd_t5 *m, const int64_t *ids, const int64_t *mask, int64_t B, int64_t L, qd_tensor *out);

/* T5's bidirectional bucket of relative position rel = key − query (transformers' _relative_position_bucket). */
int qd_t5_bucket(int64_t rel, int64_t buckets, int64_t max_distance);

#endif
