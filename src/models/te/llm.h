/* Decoder LLMs used as text encoders (models.md §3.4, §8): Qwen3 (Z-Image's Qwen3-4B, per-head q/k
 * RMSNorm), and the same decoder without q/k norm for Qwen2 / Qwen2.5 (q/k/v biases), Llama and Mistral
 * (biases only where the checkpoint has them). Pre-norm blocks: RMSNorm → GQA self-attention with
 * rotate-half RoPE, causal and key-masked → residual; RMSNorm → SwiGLU MLP → residual. The pipelines take
 * transformers' `hidden_states[k]`: 0 the embeddings, k the output of layer k, the last one after the
 * final norm (= last_hidden_state). */
#ifndef QD_MODELS_TE_LLM_H
#define QD_MODELS_TE_LLM_H

#include <jansson.h>

#include "models/model.h"

typedef struct qd_llm qd_llm;

typedef struct {
    int64_t hidden, layers, heads, kv_heads, head_dim, ffn, vocab, sliding_window; /* sliding_window 0: none */
    double eps, rope_theta;
    bool qk_norm; /* Qwen3: RMSNorm over each head of q and k before RoPE */
} qd_llm_config;

/* transformers' config.json (Qwen3Config, Qwen2Config, LlamaConfig, MistralConfig). RoPE θ is read from
 * `rope_theta` or `rope_parameters.rope_theta` (recent transformers); only the default RoPE type runs. */
qd_status qd_llm_config_parse(const char *label, const json_t *cfg, qd_llm_config *c);
/* Load what hidden_states[0 ..= max_index] needs: layers 1..max_index, and the final norm only when
 * max_index is the last entry (c->layers) — Z-Image's hidden_states[-2] skips the last layer. */
qd_status qd_llm_load(const qd_model_ctx *ctx, const qd_llm_config *c, int64_t max_index, qd_llm **out);
void qd_llm_free(qd_llm *m);

/* ids [B, L] (host), mask [B, L] (host, nonzero = real token; NULL: all), positions 0..L−1 as transformers
 * uses when no position ids are passed. For each j, outs[j] [B, L, hidden] (allocated by the caller, any
 * float dtype) receives hidden_states[index[j]]; an index may be negative (−1 the last, −2 the one before). */
qd_status qd_llm_forward(qd_llm *m, const int64_t *ids, const int64_t *mask, int64_t B, int64_t L, int n, const int *index,
                         qd_tensor *outs);

#endif
