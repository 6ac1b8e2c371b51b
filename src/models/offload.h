/* Weight offload of a transformer (DiT): --dit-layerwise-offload streams its blocks from host memory while
 * the previous block computes, --dit-cpu-offload keeps the whole component in host memory between runs
 * (quant-sglang.md §1.1, §1.5; the backend side is backend.h's weights_* ops, docs/cuda.md). A model adopts
 * it with a handful of calls:
 *   at load, right after each block's linears are prepared   qd_model_offload_block (in the order the forward
 *                                                             runs the blocks; the device then never holds
 *                                                             more than one block beyond what stays resident)
 *   at the end of the load, with every other linear          qd_model_offload_rest (component mode only: the
 *                                                             embedders and final layers stay resident when
 *                                                             streaming)
 *   in the step body, before block i's first op              qd_model_offload_fetch(i)
 *   before running a step, outside the step body             qd_model_offload_begin (component mode: the
 *                                                             upload, once)
 *   when no step follows for a while                         qd_model_offload_end (every weight back in host
 *                                                             memory only; the model then drops its recorded
 *                                                             steps, which read the device copies)
 *   before the layers are freed                              qd_model_offload_free
 * Each call does nothing when the mode is none or the backend has no offload ops (the CPU, whose weights are
 * host memory already). */
#ifndef QD_MODELS_OFFLOAD_H
#define QD_MODELS_OFFLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "models/model.h"

/* What auto mode keeps free on the device beyond the weights: a step's activations, workspaces and plans. */
#define QD_OFFLOAD_HEADROOM ((uint64_t)4 << 30)

/* What decides the mode. */
typedef struct {
    int layerwise, component; /* --dit-layerwise-offload, --dit-cpu-offload: −1 unset (auto), 0, 1 */
    bool modelopt_fp8;        /* ModelOpt FP8 forbids component offload of the DiT (§1.5) */
    bool backend_offloads;    /* the backend has the weights_* ops */
    uint64_t weight_bytes;    /* the DiT's weights as the device would hold them (0: unknown) */
    uint64_t device_free;     /* free device memory now (0: unknown) */
} qd_offload_inputs;

/* The mode, with a sentence saying why into `why` (empty when nothing is worth saying) and *warn set when it
 * is not what was asked for. Explicit flags win (layerwise over component, as in SGLang); with neither set,
 * qdit's auto rule streams the blocks only when the weights plus QD_OFFLOAD_HEADROOM exceed the free device
 * memory. (SGLang's rule offloads whenever the GPU has under 30 GB, and for every image model otherwise;
 * qdit's pipeline already loads one component at a time, so offload would only slow a model that fits.) */
qd_offload_mode qd_offload_choose(const qd_offload_inputs *in, char *why, size_t why_len, bool *warn);

/* The DiT's weight bytes as the device will hold them: the checkpoint's tensors, with 2-D float tensors at
 * the online method's bits when qdit quantizes at load. 0 when there is no checkpoint (random weights). */
uint64_t qd_offload_weight_estimate(const qd_ckpt *ck, const qd_quant_config *q);

/* The mode for a DiT from the options (o's dit_* flags), checkpoint and quantization, on backend be; the
 * reason logged (info, or a warning when a request is not honoured). */
qd_offload_mode qd_offload_resolve(const qd_options *o, const qd_ckpt *ck, const qd_quant_config *q, qd_backend *be);

/* A model's offload state (zeroed by init). */
typedef struct {
    qd_backend *be;
    qd_offload_mode mode; /* NONE also when the backend has no offload ops */
    int *ids;             /* the backend's group of each block, in registration (= forward) order; −1: resident */
    int n, cap;
    bool uploaded;        /* component mode: the weights are on the device */
    /* layerwise with a budget (ctx->offload_budget): blocks kept resident, paced over the forward */
    uint64_t budget, slot_reserve, resident_bytes;
    int n_blocks; /* the blocks the model will register */
    /* the backend's linears_ahead (backend.h), when it has one and the blocks stay resident: each block's linears,
       in registration order, handed to it one block ahead by qd_model_offload_fetch */
    bool ahead;
    qd_linear ***blocks;
    int *block_n;
    int n_ahead;
} qd_model_offload;

/* n_blocks: how many blocks the model will register (paces a residency budget). */
void qd_model_offload_init(qd_model_offload *o, const qd_model_ctx *ctx, int n_blocks);
/* The linears of the next block, loaded and prepared (empty ones, absent from this checkpoint's layout, are
 * skipped). Layerwise with a budget: the block stays resident instead when the blocks kept so far, this one and
 * the two slots (twice the first block's bytes) fit within budget·(i + 1)/n_blocks — resident blocks spread
 * evenly over the forward, so the copies of the streamed ones overlap their compute too; the first blocks
 * always stream. */
qd_status qd_model_offload_block(qd_model_offload *o, qd_linear *const *layers, int n);
/* Every other linear of the model, at the end of the load (component mode: grouped; layerwise with a budget: the
 * residency chosen is logged). */
qd_status qd_model_offload_rest(qd_model_offload *o, qd_linear *const *layers, int n);
/* Block i's weights resident before its ops (layerwise mode); on a backend with linears_ahead (and not layerwise),
   block i + 1's work that can be done ahead started (block 0's too when i = 0), overlapping block i. */
qd_status qd_model_offload_fetch(qd_model_offload *o, int block);
qd_status qd_model_offload_begin(qd_model_offload *o);
qd_status qd_model_offload_end(qd_model_offload *o);
void qd_model_offload_free(qd_model_offload *o);

#endif
