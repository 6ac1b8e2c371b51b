/* The per-layer plan: every linear gets exactly one scheme (quant-sglang.md §4; DESIGN.md
 * "qd_linear"). qd_linear_bind() is what the model code calls for each of its linears:
 *   - the resolved config and the tensors decide the scheme together: a layer stored quantized is bound
 *     in its stored scheme, a full-precision layer is kept dense or quantized online, per the method and
 *     its ignore list;
 *   - a fused runtime layer (to_qkv) lists its checkpoint shards (to_q, to_k, to_v); their rows are
 *     joined once here, scales made per-row where the shards' per-tensor scales differ (exact), and
 *     an ignore rule must treat every shard alike (SGLang's "some but not all shards" error). */
#ifndef QD_QUANT_PLAN_H
#define QD_QUANT_PLAN_H

#include "io/ckpt.h"
#include "quant/config.h"
#include "quant/linear.h"

qd_status qd_linear_bind(const qd_quant_config *cfg, const qd_ckpt *ck, const char *name, const char *const *shards,
                         int n_shards, qd_linear *out);

/* The same choice without reading tensor data (for `qdit inspect`): `out` gets the name, scheme,
 * scheme_name, act and in/out features; its views may still be in their stored layout. */
qd_status qd_linear_plan(const qd_quant_config *cfg, const qd_ckpt *ck, const char *name, const char *const *shards,
                         int n_shards, qd_linear *out);

/* Until the model code names its linears: the checkpoint's linear modules — every module with a 2-D
 * `.weight` that is not an embedding table, or a Nunchaku `.qweight` — in checkpoint order. */
qd_status qd_plan_candidates(const qd_ckpt *ck, char ***modules, size_t *n);
/* Is a module with a 2-D weight an embedding table (embed_tokens, pos_embed, …) rather than a linear? */
bool qd_plan_is_embedding(const char *module);

/* Join bound shards into one fused layer (rows concatenated in order). Consumes `parts`. */
qd_status qd_linear_concat(qd_linear *parts, int n, const char *name, qd_linear *out);

#endif
