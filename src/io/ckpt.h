/* qd_ckpt — a checkpoint: one or more safetensors files seen as one name → tensor map (DESIGN.md,
 * "Core abstractions"). A sharded set with a `*.safetensors.index.json` weight map and a set of
 * unindexed files look the same to callers. Validation happens once, at open:
 *   - every file passes the safetensors checks (io/safetensors.h);
 *   - no tensor name appears in two files;
 *   - with an index: every shard it names exists, and every tensor it promises is in the shard it
 *     names (a tensor in a shard but absent from the weight map is kept, as loaders do). */
#ifndef QD_IO_CKPT_H
#define QD_IO_CKPT_H

#include <stddef.h>

#include "core/strmap.h"
#include "io/safetensors.h"

typedef struct {
    const qd_st_tensor *tensor;
    const qd_st_file *file;
} qd_ckpt_entry;

typedef struct qd_ckpt {
    size_t n_files;
    qd_st_file **files;    /* in the order given (index: sorted shard names) */
    size_t n_tensors;
    qd_ckpt_entry *entries; /* file order, then header order */
    qd_strmap by_name;
    char *index_path;      /* NULL for unindexed sets */
} qd_ckpt;

/* Open an unindexed set of files (one file is the common case). */
qd_status qd_ckpt_open_files(const char *const *paths, size_t n, qd_ckpt **out);

/* Open the shards named by an index file, resolved relative to its folder. */
qd_status qd_ckpt_open_index(const char *index_path, qd_ckpt **out);

/* The shard file names an index refers to (relative to its folder, unique, sorted); validates the
 * index JSON: a "weight_map" object of tensor name → relative file name without ".." or a leading
 * "/". `label` names the source in messages. Caller frees each name and the array. The parser the
 * fuzzer drives. */
qd_status qd_ckpt_parse_index(const char *label, const char *text, size_t len, char ***shards,
                              size_t *n_shards);

/* A checkpoint over files already open (e.g. qd_st_open_memory); it takes them, closing them with itself. */
qd_status qd_ckpt_adopt_files(qd_st_file **files, size_t n, qd_ckpt **out);

void qd_ckpt_close(qd_ckpt *c);

const qd_ckpt_entry *qd_ckpt_find(const qd_ckpt *c, const char *name);

#endif
