/* `qdit forward`: run one module on named inputs and write its named outputs (docs/cli.md), the way users
 * check a converted or quantized checkpoint against its original. The module's class comes from its
 * config.json `_class_name`; inputs and outputs use the names of ../shared/fixtures/README.md:
 *   FluxTransformer2DModel    hidden_states, encoder_hidden_states, pooled_projections, timestep,
 *                             guidance, img_ids, txt_ids → output
 *   ZImageTransformer2DModel  x [C, 1, H, W], cap_feats [L, cap], t [1] → output
 *   AutoencoderKL             z → output (decode)
 *   CLIPTextModel             input_ids [B, L] (, attention_mask) → last_hidden_state, pooler_output
 *   T5EncoderModel, UMT5…     input_ids (, attention_mask) → last_hidden_state
 *   Qwen3Model, Qwen2/Llama/Mistral …Model / …ForCausalLM
 *                             input_ids, attention_mask → last_hidden_state, hidden_states_minus2
 * A transformers config names its class in `architectures`. Transformers and text encoders take the
 * quantization flags; outputs are written as F32. */
#ifndef QD_MODELS_FORWARD_H
#define QD_MODELS_FORWARD_H

#include <stdbool.h>

#include "qdit.h"

typedef struct {
    const char *component;  /* a component folder, or a .safetensors file with config.json beside it */
    const char *inputs;     /* a safetensors file of named inputs */
    const char *output;     /* where to write the outputs */
    const char *device;     /* "cpu" (default) */
    const char *precision;  /* "f32" (default) or "bf16" */
    const char *scalars;    /* rounding of timestep/guidance before ×1000: "activation" (default), "exact", "bf16" */
    bool tiled;             /* VAE: decode in tiles (diffusers' enable_tiling) */
    bool no_act_quant;      /* every linear as its f32 reference: dequantized W, effective b, x not quantized */
    bool random_weights;    /* weights drawn in memory from the config (models/random_weights.h), no file */
    const char *trace_linears; /* transformers: every linear's input, in call order, into this safetensors file */
    uint64_t random_seed;
} qd_forward_args;

qd_status qd_forward_run(const qd_options *o, const qd_forward_args *a);

#endif
