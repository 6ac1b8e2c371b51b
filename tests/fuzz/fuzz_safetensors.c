/* libFuzzer target: the safetensors header parser (io/safetensors.h, qd_st_parse_header).
 *
 * The input is a whole safetensors file held in memory: 8-byte little-endian header length N, then
 * the header, then the data section. Nothing touches the disk, so a run does tens of thousands of
 * executions a second.
 *
 * Besides "no crash, no leak, no UB" (ASan/UBSan), every header the parser accepts must satisfy the
 * contract written in safetensors.h, because nothing downstream re-validates offsets; a violation is
 * a __builtin_trap() so libFuzzer saves the input. A rejected input must leave *out NULL and a
 * message in qd_last_error(). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/dtype.h"
#include "core/status.h"
#include "io/safetensors.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LABEL "fuzz.safetensors"

/* Above this many tensors the pairwise overlap check would dominate the run time; the inputs
 * libFuzzer generates at its default lengths stay well below it. */
#define MAX_PAIRWISE 1024

static void check_rejected(qd_status s, const qd_st_file *f) {
    check_failed(s);
    CHECK(f == NULL);
}

static void check_tensor(const qd_st_file *f, size_t i, uint64_t data_size) {
    const qd_st_tensor *t = &f->tensors[i];
    CHECK(t->name != NULL);
    CHECK(strcmp(t->name, "__metadata__") != 0);
    /* A lookup by name must find this very entry (names are unique). */
    CHECK(qd_st_find(f, t->name) == t);

    CHECK((unsigned)t->dtype < QD_DTYPE_COUNT);
    const char *dname = qd_dtype_name(t->dtype);
    qd_dtype back;
    CHECK(qd_dtype_parse(dname, strlen(dname), &back) && back == t->dtype);

    CHECK(t->rank >= 0 && t->rank <= QD_ST_MAX_RANK);
    uint64_t elements = 1;
    for (int d = 0; d < t->rank; d++) {
        CHECK(t->shape[d] >= 0);
        CHECK(!__builtin_mul_overflow(elements, (uint64_t)t->shape[d], &elements));
    }
    CHECK(elements == t->elements);

    uint64_t bytes;
    CHECK(qd_dtype_storage_bytes(t->dtype, t->elements, &bytes));
    CHECK(t->begin <= t->end && t->end <= data_size);
    CHECK(t->end - t->begin == bytes);
    CHECK(qd_st_data(f, t) == NULL); /* a header-only file has no mapping */
}

static void check_accepted(const qd_st_file *f, size_t len, uint64_t file_size) {
    CHECK(f != NULL);
    CHECK(f->map == NULL && f->map_len == 0);
    CHECK(f->path != NULL && strcmp(f->path, LABEL) == 0);
    CHECK(f->file_size == file_size && f->header_len == len);
    CHECK(f->n_tensors == 0 || f->tensors != NULL);
    uint64_t data_size = file_size - 8 - len;

    for (size_t i = 0; i < f->n_tensors; i++) check_tensor(f, i, data_size);
    /* A name that is not a tensor must not be found. */
    CHECK(qd_st_find(f, "__metadata__") == NULL);

    if (f->n_tensors <= MAX_PAIRWISE) {
        for (size_t i = 0; i < f->n_tensors; i++) {
            const qd_st_tensor *a = &f->tensors[i];
            for (size_t j = i + 1; j < f->n_tensors; j++) {
                const qd_st_tensor *b = &f->tensors[j];
                CHECK(strcmp(a->name, b->name) != 0);
                bool empty = a->begin == a->end || b->begin == b->end;
                CHECK(empty || a->end <= b->begin || b->end <= a->begin);
            }
        }
    }

    const char *probe_value = NULL; /* a key inputs rarely hold, to exercise the "absent" answer */
    for (size_t i = 0; i < f->n_meta; i++) {
        const qd_st_meta *m = &f->meta[i];
        CHECK(m->key != NULL && m->value != NULL);
        /* Keys are unique, so the lookup must return this entry's own value. */
        CHECK(qd_st_meta_get(f, m->key) == m->value);
        if (strcmp(m->key, "format_version") == 0) probe_value = m->value;
    }
    CHECK(qd_st_meta_get(f, "format_version") == probe_value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qd_st_file *f = NULL;
    qd_status s;
    qd_clear_error();

    if (size < 8) {
        /* Too short for the length prefix: the size check alone must reject it. */
        s = qd_st_parse_header(LABEL, (const char *)data, 0, size, &f);
        check_rejected(s, f);
        return 0;
    }

    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    size_t avail = size - 8;
    const char *header = (const char *)data + 8;

    if (n > avail) {
        /* The prefix claims more than the file holds. Pass what there is, with a file size that is
         * too small for it (derived from N so the fuzzer explores both sides of the boundary
         * arithmetic, including file sizes below 8): the length check must reject it. */
        uint64_t file_size = avail ? 8 + n % avail : n % 8;
        s = qd_st_parse_header(LABEL, header, avail, file_size, &f);
        check_rejected(s, f);
        return 0;
    }

    s = qd_st_parse_header(LABEL, header, (size_t)n, size, &f);
    if (s != QD_OK) {
        check_rejected(s, f);
        return 0;
    }
    check_accepted(f, (size_t)n, size);
    qd_st_close(f);
    return 0;
}
