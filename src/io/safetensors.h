/* safetensors files: a validating reader (mmap, header-only at open) and a streaming writer.
 *
 * File layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data section.
 * The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
 * to the data section) plus an optional "__metadata__" object of string → string.
 *
 * Everything is validated once, at open: header length bounds, valid JSON object, known dtypes,
 * shape × dtype size == byte length, offsets inside the data section and not overlapping, no duplicate
 * names, no integer overflow. Nothing downstream re-validates offsets, and opening reads no tensor data. */
#ifndef QD_IO_SAFETENSORS_H
#define QD_IO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/strmap.h"
#include "qdit.h"

#define QD_ST_MAX_RANK 8
#define QD_ST_MAX_HEADER 100000000u /* the reference implementation's limit */

typedef struct {
    char *name;
    qd_dtype dtype;
    int rank;
    int64_t shape[QD_ST_MAX_RANK];
    uint64_t elements;
    uint64_t begin, end; /* byte range within the data section */
} qd_st_tensor;

typedef struct {
    char *key;
    char *value;
} qd_st_meta;

typedef struct qd_st_file {
    char *path;
    uint64_t file_size;
    uint64_t header_len;  /* N */
    size_t n_tensors;
    qd_st_tensor *tensors; /* in header order */
    size_t n_meta;
    qd_st_meta *meta;     /* "__metadata__" entries in header order */
    qd_strmap by_name;
    const uint8_t *map;   /* the whole file, mapped read-only (pages load only when touched) */
    size_t map_len;
    bool borrowed;        /* map is the caller's memory (qd_st_open_memory): close leaves it */
} qd_st_file;

/* Open and validate a file. */
qd_status qd_st_open(const char *path, qd_st_file **out);

/* Validate a header held in memory, as if it came from a file of `file_size` bytes whose first 8
 * bytes gave `header_len` = len. Fills a qd_st_file with no mapping (map == NULL). `label` names the
 * source in messages. This is the parser the fuzzer drives. */
qd_status qd_st_parse_header(const char *label, const char *header, size_t len, uint64_t file_size,
                             qd_st_file **out);

/* The same checks on a whole safetensors image held in memory (`bytes`, `len`); the file views that
 * memory, which must outlive it and stays the caller's. `label` names it in messages. */
qd_status qd_st_open_memory(const char *label, const uint8_t *bytes, size_t len, qd_st_file **out);

void qd_st_close(qd_st_file *f);

const qd_st_tensor *qd_st_find(const qd_st_file *f, const char *name);
const char *qd_st_meta_get(const qd_st_file *f, const char *key);
/* Pointer to a tensor's bytes inside the mapping (NULL for a header-only qd_st_file). */
const void *qd_st_data(const qd_st_file *f, const qd_st_tensor *t);

/* ---- writer ----
 * Declare every tensor (and metadata), then qd_st_writer_begin() lays the data section out (sorted by
 * element width, widest first, then by name, so every tensor is naturally aligned as in the reference
 * writer) and writes the header; tensor bytes are then written with put/put_part in any tensor order,
 * each tensor's parts in sequence. finish() checks that every byte was written and renames the
 * temporary file into place, so a failed conversion never leaves a half-written file under its name. */
typedef struct qd_st_writer qd_st_writer;

qd_status qd_st_writer_create(const char *path, qd_st_writer **out);
qd_status qd_st_writer_add(qd_st_writer *w, const char *name, qd_dtype dtype, int rank,
                           const int64_t *shape);
qd_status qd_st_writer_meta(qd_st_writer *w, const char *key, const char *value);
qd_status qd_st_writer_begin(qd_st_writer *w);
qd_status qd_st_writer_put(qd_st_writer *w, const char *name, const void *data, uint64_t nbytes);
qd_status qd_st_writer_put_part(qd_st_writer *w, const char *name, const void *data, uint64_t nbytes);
qd_status qd_st_writer_finish(qd_st_writer *w); /* frees w */
void qd_st_writer_abort(qd_st_writer *w);      /* frees w, removes the temporary file */

#endif
