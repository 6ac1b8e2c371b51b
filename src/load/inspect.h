/* What `qdit inspect` reports about a repository: per component, its files, tensor count, stored
 * elements, bytes, tensors and bytes per dtype, safetensors metadata keys, and its quantization — the
 * resolved method, the rule that decided it, and the plan of every linear layer (scheme, in/out
 * features, stored bytes). Everything comes from headers (plus a few-byte Comfy marker tensor where
 * present), so the cost does not grow with tensor data (bench/bench_inspect.c measures it). */
#ifndef QD_LOAD_INSPECT_H
#define QD_LOAD_INSPECT_H

#include <jansson.h>
#include <stdint.h>

#include "core/dtype.h"
#include "load/repo.h"
#include "quant/config.h"

typedef struct {
    char *name;
    char scheme[32];
    int64_t in_features, out_features;
    uint64_t bytes; /* stored in the checkpoint under this module */
} qd_layer_report;

typedef struct {
    char **files;     /* the weight files used (after flags), relative to the component folder */
    size_t n_files;
    uint64_t tensors, elements, bytes;
    uint64_t dtype_tensors[QD_DTYPE_COUNT];
    uint64_t dtype_bytes[QD_DTYPE_COUNT];
    char **meta_keys; /* union over the component's files, in first-seen order */
    size_t n_meta_keys;
    bool has_quant;   /* quantization was resolved (components with weights) */
    qd_quant_config quant;
    qd_layer_report *layers;
    size_t n_layers;
} qd_component_stats;

/* Resolve one component's sources under the flags, open its weights (validating every file), count,
 * resolve its quantization and plan its linears. Transformer components (name "transformer…", or the
 * component of a bare folder or file) take the flags; others are resolved from their own
 * declarations only. */
qd_status qd_component_stats_compute(const qd_repo *r, const qd_component *c, const qd_options *o,
                                     qd_component_stats *st);
void qd_component_stats_free(qd_component_stats *st);

/* The inspect document (schema in docs/cli.md). */
qd_status qd_inspect_build(const qd_repo *r, const qd_component_stats *stats, json_t **out);

/* The whole report for PATH under the options (NULL: none). */
qd_status qd_inspect_run(const char *path, const qd_options *o, qd_repo **repo, qd_component_stats **stats);

#endif
