/* What every `qdit convert` sub-command writes: a diffusers component folder (DESIGN.md "writer").
 *   - the save dir: created when missing; an existing one must be empty, unless `overwrite`, which
 *     removes the files a converter writes there (config.json, *.safetensors, *.safetensors.index.json)
 *     and refuses anything else;
 *   - sharded safetensors: tensors declared first (name, dtype, shape), assigned in declaration order to
 *     shards of at most `max_shard_bytes` (a tensor larger than that gets a shard of its own), named
 *     `<stem>-0000i-of-0000n.safetensors`, with `<stem>.safetensors.index.json` ({"metadata":
 *     {"total_size"}, "weight_map"}) — always, one shard included, so every output has one layout; data is
 *     then put tensor by tensor in any order, and nothing appears under its final name before finish;
 *   - config.json: the source config with `quantization_config` removed;
 *   - progress: one updating line on stderr when it is a terminal, nothing otherwise. */
#ifndef QD_CONVERT_OUTPUT_H
#define QD_CONVERT_OUTPUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "qdit.h"

#define QD_DEFAULT_SHARD_BYTES (10ull << 30) /* diffusers' save_pretrained default, 10 GB */

/* Parse a shard size: bytes, or a number with KB/MB/GB/KiB/MiB/GiB (diffusers' spelling, e.g. "5GB"). */
qd_status qd_parse_size(const char *flag, const char *text, uint64_t *out);

qd_status qd_save_dir_prepare(const char *dir, bool overwrite);

typedef struct qd_shards qd_shards;
qd_status qd_shards_new(const char *dir, const char *stem, uint64_t max_shard_bytes, qd_shards **out);
qd_status qd_shards_add(qd_shards *s, const char *name, qd_dtype dtype, int rank, const int64_t *shape);
/* Lay the shards out and write their headers; `producer` goes into each file's metadata. */
qd_status qd_shards_begin(qd_shards *s, const char *producer);
qd_status qd_shards_put(qd_shards *s, const char *name, const void *data, uint64_t nbytes);
/* Completes every shard and writes the index; frees s. */
qd_status qd_shards_finish(qd_shards *s);
void qd_shards_abort(qd_shards *s); /* frees s, removes what it wrote */
/* How many shards begin() made (for messages). */
int qd_shards_count(const qd_shards *s);

/* config.json in `dir`: `cfg` without its quantization_config (cfg itself is not changed). */
qd_status qd_write_config(const char *dir, const json_t *cfg);

typedef struct {
    const char *what; /* "dequantize" */
    bool tty;
    int64_t total;
    double started;
} qd_progress;
void qd_progress_start(qd_progress *p, const char *what, int64_t total);
void qd_progress_step(qd_progress *p, int64_t done, uint64_t bytes_written);
void qd_progress_end(qd_progress *p);

#endif
