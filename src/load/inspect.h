/* What `qdit inspect` reports about a repository: per component, its files, tensor count, stored
 * elements, bytes, tensors and bytes per dtype, and safetensors metadata keys. Opening reads only
 * headers, so the cost does not grow with tensor data (bench/bench_inspect.c measures it). */
#ifndef QD_LOAD_INSPECT_H
#define QD_LOAD_INSPECT_H

#include <jansson.h>
#include <stdint.h>

#include "core/dtype.h"
#include "load/repo.h"

typedef struct {
    uint64_t tensors, elements, bytes;
    uint64_t dtype_tensors[QD_DTYPE_COUNT];
    uint64_t dtype_bytes[QD_DTYPE_COUNT];
    char **meta_keys; /* union over the component's files, in first-seen order */
    size_t n_meta_keys;
} qd_component_stats;

/* Open the component's weights (validating every file) and count. */
qd_status qd_component_stats_compute(const qd_component *c, qd_component_stats *st);
void qd_component_stats_free(qd_component_stats *st);

/* The inspect document (schema in docs/cli.md). */
qd_status qd_inspect_build(const qd_repo *r, const qd_component_stats *stats, json_t **out);

#endif
