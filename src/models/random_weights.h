/* Random weights at a module's real configuration, in memory, with no file: for benchmarks and memory
 * checks of full-size models (qdit forward/bench --random-weights). Each linear is drawn as BF16 (uniform,
 * variance 1/in, so activations keep their scale through the layers) and then bound through the same
 * path as a checkpoint's — so online quantization applies and, for quantized runs, the BF16 draw is freed
 * once the layer holds its quantized form: peak memory is the quantized weights plus one layer. Values
 * are a function of (seed, tensor name, row), so runs repeat and threads can draw rows in parallel. */
#ifndef QD_MODELS_RANDOM_WEIGHTS_H
#define QD_MODELS_RANDOM_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "quant/linear.h"
#include "quant/config.h"

/* Draw linears into files in `dir` (each a shared mapping of an unlinked file) instead of the heap, or
 * back into the heap with NULL: the weights then behave like a checkpoint mapped from disk, whose pages the
 * kernel can evict and read again — to run a model larger than memory. Process-wide. */
qd_status qd_random_weights_on_disk(const char *dir);
/* The quantization of random weights under --quantization `method` into q (initialised): the online methods
 * quantize the draw at load; modelopt and modelopt_fp8 draw the tensors a ModelOpt FP8 export stores (E4M3
 * weights with per-tensor weight_scale and a synthetic input_scale) and bind them as stored; modelopt_fp4 and
 * modelslim, which only read checkpoints quantized that way, are refused with what to use instead. */
qd_status qd_random_quant_config(const char *method, qd_quant_config *q);
/* Keep the layers whose name contains one of the n patterns in BF16 (--quantization-ignored-layers on random
 * weights): online methods skip them, modelopt_fp8 draws them as an export's BF16 fallbacks (SGLang's FLUX.1
 * ModelOpt FP8 preset keeps the MLPs and modulation linears of its blocks in BF16, quant-sglang.md §5.1). */
qd_status qd_random_quant_ignore(qd_quant_config *q, const char *const *patterns, size_t n);
/* Bind linear `name` [out, in] with a bias, drawn from `seed`, under the quantization config `q`. */
qd_status qd_random_linear(const qd_quant_config *q, uint64_t seed, const char *name, int64_t in, int64_t out, qd_linear *l);
/* n values for parameter `name`: 1 + U(−0.05, 0.05) for norm weights ("norm" in the name), else U(−0.02, 0.02). */
void qd_random_param(uint64_t seed, const char *name, int64_t n, float *out);
/* A [rows, cols] lookup table (token embeddings) as BF16, U(−0.02, 0.02), drawn row by row (no F32 copy). */
void qd_random_table_bf16(uint64_t seed, const char *name, int64_t rows, int64_t cols, uint16_t *out);
/* Random modules follow the diffusers layout: Nunchaku's module names are absent, all others present. With
 * `nunchaku_layout`, every name is present, so that a model that looks for Nunchaku's layout first takes it. */
bool qd_random_has(const char *name, bool nunchaku_layout);

#endif
