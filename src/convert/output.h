/* What every `qdit convert` sub-command writes: a diffusers component folder (DESIGN.md "writer").
 *   - the save dir: written whole or not at all (qd_out_dir below): a new folder, an empty one, or with
 *     `overwrite` one that looks like an earlier output of the same converter (by default: only
 *     config.json, *.safetensors and *.safetensors.index.json files), which it replaces; anything else
 *     there is refused;
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
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "qdit.h"

#define QD_DEFAULT_SHARD_BYTES (10ull << 30) /* diffusers' save_pretrained default, 10 GB */

/* Parse a shard size: bytes, or a number with KB/MB/GB/KiB/MiB/GiB (diffusers' spelling, e.g. "5GB"). */
qd_status qd_parse_size(const char *flag, const char *text, uint64_t *out);

/* May --overwrite replace the existing non-empty folder `dir`: does it look like an earlier output of this
 * converter? When not, `why` says what shows it is not (e.g. "it also holds 'README'"). */
typedef bool (*qd_out_dir_ours)(const char *dir, char *why, size_t why_len);

/* An output folder written whole or not at all: qd_out_dir_begin checks `save_dir` (absent, empty, or
 * with `overwrite` one that `ours` accepts — NULL: only a previous conversion's config.json and
 * safetensors files) without changing it, and creates the temporary sibling `<save_dir>.qdit-tmp-<pid>`
 * that the converter writes into (`tmp`, sub-folders allowed); qd_out_dir_commit then puts it in place of
 * save_dir (an earlier output is moved aside first and removed only once the new one is in place),
 * qd_out_dir_abort removes it. A failing conversion therefore leaves save_dir as it was and nothing
 * beside it. `flag` names the option in messages. */
typedef struct {
    char *save_dir, *tmp;
    const char *flag;
    bool overwrite;
} qd_out_dir;
qd_status qd_out_dir_begin(const char *flag, const char *save_dir, bool overwrite, qd_out_dir_ours ours, qd_out_dir *o);
qd_status qd_out_dir_commit(qd_out_dir *o); /* frees o's strings */
void qd_out_dir_abort(qd_out_dir *o);       /* frees o's strings; safe on a zeroed o */

/* A converter's single output file (written whole or not at all, as the folders above):
 * qd_out_file_check, before the work, refuses `path` when its folder does not exist, when it is a folder,
 * and when it exists, unless `overwrite` and `ours` accepts it (an earlier output of the same converter;
 * `why` says what shows it is not); qd_out_file_write_json writes `doc` (2-space indent, sorted keys) to
 * the sibling `<path>.qdit-tmp-<pid>` and renames that over `path`, so a failure leaves `path` as it was
 * and nothing beside it. `flag` names the option in messages. */
typedef bool (*qd_out_file_ours)(const char *path, char *why, size_t why_len);
qd_status qd_out_file_check(const char *flag, const char *path, bool overwrite, qd_out_file_ours ours);
qd_status qd_out_file_write_json(const char *flag, const char *path, const json_t *doc);

/* `v` as Python's json.dumps(v, sort_keys=True) writes it (", " and ": " separators), the form SGLang's
 * tools put in safetensors metadata; malloc'd, NULL when out of memory. */
char *qd_json_dumps_python(const json_t *v);

/* The statistics object a converter prints at the end (as SGLang's tools print theirs): stdout, sorted
 * keys, 2-space indent. */
void qd_print_stats(const json_t *stats);

/* Drop the whole pages of [data, data + n) of a read-only file mapping from this process, once a
 * converter has read them: the peak resident memory stays about one tensor, not one checkpoint. */
void qd_release_mapped(const void *data, uint64_t n);

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
void qd_progress_start(qd_progress *p, const char *what, int64_t total); /* total 0: not known */
void qd_progress_step(qd_progress *p, int64_t done, uint64_t bytes_written);
void qd_progress_end(qd_progress *p);

#endif
