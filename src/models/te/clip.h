/* CLIP text encoder (CLIPTextModel: FLUX.1's and HunyuanVideo's CLIP-L), models.md §2.4, §8: token +
 * learned position embeddings; pre-LayerNorm blocks of causal self-attention (biased q/k/v/out
 * projections, scale 1/√d) and an MLP fc2(act(fc1 x)) with quick_gelu (x·σ(1.702x)) or gelu; a final
 * LayerNorm gives last_hidden_state, and pooler_output is its row at the end-of-text token. */
#ifndef QD_MODELS_TE_CLIP_H
#define QD_MODELS_TE_CLIP_H

#include <jansson.h>

#include "models/model.h"

typedef struct qd_clip qd_clip;

typedef struct {
    int64_t hidden, heads, ffn, layers, vocab, max_positions, eos_token_id;
    double eps;
    qd_act_kind act;
} qd_clip_config;

qd_status qd_clip_config_parse(const char *label, const json_t *cfg, qd_clip_config *c);
qd_status qd_clip_load(const qd_model_ctx *ctx, const qd_clip_config *c, qd_clip **out);
void qd_clip_free(qd_clip *m);

/* The pooled position of one row of ids, as transformers picks it: with eos_token_id 2 (the original
 * configs) the position of the largest id (the tokenizer's end-of-text has the largest id), else the
 * first position holding eos_token_id (0 when none does). */
int64_t qd_clip_eos_position(const qd_clip_config *c, const int64_t *ids, int64_t L);

/* ids [B, L] (host, L ≤ max_position_embeddings); mask [B, L] (host, nonzero = attend, NULL: none, the
 * pipelines' way). last [B, L, hidden] and pooled [B, hidden] (either may be NULL; any float dtype). */
qd_status qd_clip_forward(qd_clip *m, const int64_t *ids, const int64_t *mask, int64_t B, int64_t L, qd_tensor *last,
                          qd_tensor *pooled);

#endif
