/* safetensors reader and writer (see safetensors.h for the format and the validation contract). */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"
#include "io/json.h"

/* ------------------------------------------------------------------------------------------------ */
/* reader                                                                                            */

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void qd_st_close(qd_st_file *f) {
    if (!f) return;
    if (f->map && !f->borrowed) munmap((void *)f->map, f->map_len);
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    qd_strmap_free(&f->by_name);
    free(f->path);
    free(f);
}

/* A JSON integer that must be ≥ 0. */
static bool get_nonnegative(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < 0) return false;
    *out = (uint64_t)x;
    return true;
}

static qd_status parse_metadata(const char *label, json_t *obj, qd_st_file *f) {
    if (!json_is_object(obj)) {
        return qd_fail(QD_EFORMAT, "%s: \"__metadata__\" must be an object of string values", label);
    }
    size_t n = json_object_size(obj);
    f->meta = calloc(n ? n : 1, sizeof *f->meta);
    if (!f->meta) return qd_fail(QD_ENOMEM, "%s: cannot allocate metadata", label);
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (!json_is_string(val)) {
            return qd_fail(QD_EFORMAT, "%s: \"__metadata__\" entry '%s' is not a string", label, key);
        }
        qd_st_meta *m = &f->meta[f->n_meta];
        m->key = dup_string(key);
        m->value = dup_string(json_string_value(val));
        if (!m->key || !m->value) {
            free(m->key);
            free(m->value);
            return qd_fail(QD_ENOMEM, "%s: cannot allocate metadata", label);
        }
        f->n_meta++;
    }
    return QD_OK;
}

static qd_status parse_tensor(const char *label, const char *name, json_t *info, uint64_t data_size,
                              qd_st_tensor *t) {
    if (!json_is_object(info)) {
        return qd_fail(QD_EFORMAT, "%s: tensor '%s': expected an object with dtype, shape, data_offsets",
                       label, name);
    }
    json_t *jd = json_object_get(info, "dtype");
    json_t *js = json_object_get(info, "shape");
    json_t *jo = json_object_get(info, "data_offsets");
    if (!json_is_string(jd)) return qd_fail(QD_EFORMAT, "%s: tensor '%s': missing string \"dtype\"", label, name);
    if (!json_is_array(js)) return qd_fail(QD_EFORMAT, "%s: tensor '%s': missing array \"shape\"", label, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2) {
        return qd_fail(QD_EFORMAT, "%s: tensor '%s': \"data_offsets\" must be an array [begin, end]", label, name);
    }
    if (!qd_dtype_parse(json_string_value(jd), json_string_length(jd), &t->dtype)) {
        return qd_fail(QD_EFORMAT,
                       "%s: tensor '%s': unknown dtype '%s' (expected one of the safetensors dtypes: BOOL, "
                       "U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64, C64, F8_E4M3, F8_E5M2, "
                       "F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, F6_E2M3, F6_E3M2, F4)",
                       label, name, json_string_value(jd));
    }
    size_t rank = json_array_size(js);
    if (rank > QD_ST_MAX_RANK) {
        return qd_fail(QD_EUNSUPPORTED, "%s: tensor '%s': rank %zu exceeds the supported maximum %d", label,
                       name, rank, QD_ST_MAX_RANK);
    }
    t->rank = (int)rank;
    uint64_t elements = 1;
    for (size_t i = 0; i < rank; i++) {
        uint64_t d;
        if (!get_nonnegative(json_array_get(js, i), &d)) {
            return qd_fail(QD_EFORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", label,
                           name, i);
        }
        if (__builtin_mul_overflow(elements, d, &elements) || elements > (uint64_t)INT64_MAX) {
            return qd_fail(QD_EFORMAT, "%s: tensor '%s': shape element count overflows 63 bits", label, name);
        }
        t->shape[i] = (int64_t)d;
    }
    t->elements = elements;
    uint64_t bytes;
    if (!qd_dtype_storage_bytes(t->dtype, elements, &bytes)) {
        return qd_fail(QD_EFORMAT, "%s: tensor '%s': %llu elements of %s do not fill whole bytes", label, name,
                       (unsigned long long)elements, qd_dtype_name(t->dtype));
    }
    if (!get_nonnegative(json_array_get(jo, 0), &t->begin) || !get_nonnegative(json_array_get(jo, 1), &t->end)) {
        return qd_fail(QD_EFORMAT, "%s: tensor '%s': data_offsets must be non-negative integers", label, name);
    }
    if (t->end < t->begin) {
        return qd_fail(QD_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", label,
                       name, (unsigned long long)t->begin, (unsigned long long)t->end);
    }
    if (t->end - t->begin != bytes) {
        return qd_fail(QD_EFORMAT,
                       "%s: tensor '%s': shape and dtype %s need %llu bytes but data_offsets [%llu, %llu] "
                       "span %llu",
                       label, name, qd_dtype_name(t->dtype), (unsigned long long)bytes,
                       (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)(t->end - t->begin));
    }
    if (t->end > data_size) {
        return qd_fail(QD_EFORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data section "
                       "(%llu bytes; the file is truncated or the header is wrong)",
                       label, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)data_size);
    }
    return QD_OK;
}

static int compare_by_begin(const void *a, const void *b) {
    const qd_st_tensor *x = *(const qd_st_tensor *const *)a, *y = *(const qd_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Two tensors may not share bytes; zero-sized tensors occupy none. */
static qd_status check_overlaps(const char *label, qd_st_file *f) {
    if (f->n_tensors < 2) return QD_OK;
    qd_st_tensor **order = malloc(f->n_tensors * sizeof *order);
    if (!order) return qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
    for (size_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, f->n_tensors, sizeof *order, compare_by_begin);
    const qd_st_tensor *prev = NULL;
    qd_status s = QD_OK;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const qd_st_tensor *t = order[i];
        if (t->begin == t->end) continue;
        if (prev && t->begin < prev->end) {
            s = qd_fail(QD_EFORMAT, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", label,
                        prev->name, (unsigned long long)prev->begin, (unsigned long long)prev->end, t->name,
                        (unsigned long long)t->begin, (unsigned long long)t->end);
            break;
        }
        prev = t;
    }
    free(order);
    return s;
}

qd_status qd_st_parse_header(const char *label, const char *header, size_t len, uint64_t file_size,
                             qd_st_file **out) {
    *out = NULL;
    if (len > QD_ST_MAX_HEADER) {
        return qd_fail(QD_EFORMAT, "%s: header length %zu exceeds the %u-byte limit", label, len,
                       QD_ST_MAX_HEADER);
    }
    if (file_size < 8 || len > file_size - 8) {
        return qd_fail(QD_EFORMAT, "%s: header length %zu exceeds the file size %llu", label, len,
                       (unsigned long long)file_size);
    }
    /* The format requires a JSON object; reject anything else before handing it to the parser. */
    size_t i = 0;
    while (i < len && (header[i] == ' ' || header[i] == '\t' || header[i] == '\n' || header[i] == '\r')) i++;
    if (i == len || header[i] != '{') {
        return qd_fail(QD_EFORMAT, "%s: header does not start with a JSON object ('{')", label);
    }
    json_t *root;
    qd_status s = qd_json_parse(label, header, len, &root);
    if (s) return s;
    if (!json_is_object(root)) {
        json_decref(root);
        return qd_fail(QD_EFORMAT, "%s: header is not a JSON object", label);
    }

    qd_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        json_decref(root);
        return qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
    }
    qd_strmap_init(&f->by_name);
    f->path = dup_string(label);
    f->file_size = file_size;
    f->header_len = len;
    size_t n = json_object_size(root);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->path || !f->tensors) {
        s = qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
        goto fail;
    }
    uint64_t data_size = file_size - 8 - len;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((s = parse_metadata(label, val, f))) goto fail;
            continue;
        }
        qd_st_tensor *t = &f->tensors[f->n_tensors];
        if ((s = parse_tensor(label, key, val, data_size, t))) goto fail;
        if (!(t->name = dup_string(key))) {
            s = qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
            goto fail;
        }
        f->n_tensors++;
    }
    /* jansson rejected duplicate keys already; the map is for lookups. */
    for (size_t k = 0; k < f->n_tensors; k++) {
        if (qd_strmap_put(&f->by_name, f->tensors[k].name, k, NULL) < 0) {
            s = qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
            goto fail;
        }
    }
    if ((s = check_overlaps(label, f))) goto fail;
    json_decref(root);
    *out = f;
    return QD_OK;
fail:
    json_decref(root);
    qd_st_close(f);
    return s;
}

qd_status qd_st_open(const char *path, qd_st_file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return qd_fail(errno == ENOENT ? QD_ENOTFOUND : QD_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return qd_fail(QD_EIO, "%s: not a regular file", path);
    }
    uint64_t file_size = (uint64_t)st.st_size;
    unsigned char len_bytes[8];
    if (file_size < 8 || pread(fd, len_bytes, 8, 0) != 8) {
        close(fd);
        return qd_fail(QD_EFORMAT, "%s: file is %llu bytes, too short for the 8-byte header length", path,
                       (unsigned long long)file_size);
    }
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--) len = (len << 8) | len_bytes[i];
    if (len > QD_ST_MAX_HEADER) {
        close(fd);
        return qd_fail(QD_EFORMAT, "%s: header length %llu exceeds the %u-byte limit (not a safetensors file?)",
                       path, (unsigned long long)len, QD_ST_MAX_HEADER);
    }
    if (len > file_size - 8) {
        close(fd);
        return qd_fail(QD_EFORMAT, "%s: header length %llu exceeds the file size %llu (truncated file?)", path,
                       (unsigned long long)len, (unsigned long long)file_size);
    }
    char *header = malloc(len + 1);
    if (!header) {
        close(fd);
        return qd_fail(QD_ENOMEM, "%s: cannot allocate a %llu-byte header", path, (unsigned long long)len);
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, header + got, len - got, (off_t)(8 + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(header);
            close(fd);
            return qd_fail(QD_EIO, "%s: cannot read the header: %s", path, r < 0 ? strerror(errno) : "short read");
        }
        got += (size_t)r;
    }
    header[len] = '\0';
    qd_st_file *f;
    qd_status s = qd_st_parse_header(path, header, len, file_size, &f);
    free(header);
    if (s) {
        close(fd);
        return s;
    }
    /* Map the whole file for later data access; mapping reads nothing until a page is touched. */
    void *map = mmap(NULL, file_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        qd_st_close(f);
        return qd_fail(QD_EIO, "%s: cannot map %llu bytes: %s", path, (unsigned long long)file_size,
                       strerror(errno));
    }
    f->map = map;
    f->map_len = file_size;
    *out = f;
    return QD_OK;
}

const qd_st_tensor *qd_st_find(const qd_st_file *f, const char *name) {
    size_t i;
    return qd_strmap_get(&f->by_name, name, &i) ? &f->tensors[i] : NULL;
}

const char *qd_st_meta_get(const qd_st_file *f, const char *key) {
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

const void *qd_st_data(const qd_st_file *f, const qd_st_tensor *t) {
    if (!f->map) return NULL;
    return f->map + 8 + f->header_len + t->begin;
}

/* ------------------------------------------------------------------------------------------------ */
/* writer                                                                                            */

typedef struct {
    qd_st_tensor t;
    uint64_t written;
} writer_tensor;

struct qd_st_writer {
    char *path;
    char *tmp_path;
    int fd;
    bool begun;
    size_t n, cap;
    writer_tensor *tensors;
    json_t *meta;
    qd_strmap by_name;
    uint64_t data_start;
};

qd_status qd_st_writer_create(const char *path, qd_st_writer **out) {
    *out = NULL;
    qd_st_writer *w = calloc(1, sizeof *w);
    if (!w) return qd_fail(QD_ENOMEM, "%s: cannot allocate a writer", path);
    size_t n = strlen(path) + 16;
    w->path = dup_string(path);
    w->tmp_path = malloc(n);
    w->meta = json_object();
    w->fd = -1;
    qd_strmap_init(&w->by_name);
    if (!w->path || !w->tmp_path || !w->meta) {
        qd_st_writer_abort(w);
        return qd_fail(QD_ENOMEM, "%s: cannot allocate a writer", path);
    }
    snprintf(w->tmp_path, n, "%s.partial", path);
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        qd_status s = qd_fail(QD_EIO, "%s: cannot create: %s", w->tmp_path, strerror(errno));
        qd_st_writer_abort(w);
        return s;
    }
    *out = w;
    return QD_OK;
}

qd_status qd_st_writer_add(qd_st_writer *w, const char *name, qd_dtype dtype, int rank, const int64_t *shape) {
    if (w->begun) return qd_fail(QD_EINVAL, "%s: tensor '%s' added after the header was written", w->path, name);
    if (rank < 0 || rank > QD_ST_MAX_RANK || (unsigned)dtype >= QD_DTYPE_COUNT) {
        return qd_fail(QD_EINVAL, "%s: tensor '%s': bad rank %d or dtype", w->path, name, rank);
    }
    if (strcmp(name, "__metadata__") == 0) return qd_fail(QD_EINVAL, "%s: '__metadata__' is reserved", w->path);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        writer_tensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t) return qd_fail(QD_ENOMEM, "%s: cannot allocate", w->path);
        w->tensors = t;
        w->cap = cap;
    }
    writer_tensor *wt = &w->tensors[w->n];
    memset(wt, 0, sizeof *wt);
    wt->t.dtype = dtype;
    wt->t.rank = rank;
    uint64_t elements = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(elements, (uint64_t)shape[i], &elements)) {
            return qd_fail(QD_EINVAL, "%s: tensor '%s': bad shape", w->path, name);
        }
        wt->t.shape[i] = shape[i];
    }
    wt->t.elements = elements;
    uint64_t bytes;
    if (!qd_dtype_storage_bytes(dtype, elements, &bytes)) {
        return qd_fail(QD_EINVAL, "%s: tensor '%s': %llu elements of %s do not fill whole bytes", w->path, name,
                       (unsigned long long)elements, qd_dtype_name(dtype));
    }
    wt->t.end = bytes; /* the size, until begin() assigns offsets */
    if (!(wt->t.name = dup_string(name))) return qd_fail(QD_ENOMEM, "%s: cannot allocate", w->path);
    int r = qd_strmap_put(&w->by_name, wt->t.name, w->n, NULL);
    if (r <= 0) {
        free(wt->t.name);
        return r < 0 ? qd_fail(QD_ENOMEM, "%s: cannot allocate", w->path)
                     : qd_fail(QD_EINVAL, "%s: tensor '%s' added twice", w->path, name);
    }
    w->n++;
    return QD_OK;
}

qd_status qd_st_writer_meta(qd_st_writer *w, const char *key, const char *value) {
    if (w->begun) return qd_fail(QD_EINVAL, "%s: metadata '%s' set after the header was written", w->path, key);
    if (json_object_set_new(w->meta, key, json_string(value)) != 0) {
        return qd_fail(QD_EINVAL, "%s: metadata '%s' is not valid UTF-8", w->path, key);
    }
    return QD_OK;
}

static int compare_layout(const void *a, const void *b) {
    const writer_tensor *x = a, *y = b;
    int bx = qd_dtype_bits(x->t.dtype), by = qd_dtype_bits(y->t.dtype);
    if (bx != by) return by - bx;
    return strcmp(x->t.name, y->t.name);
}

static qd_status write_all(qd_st_writer *w, const void *data, uint64_t n, uint64_t offset) {
    const uint8_t *p = data;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t r = pwrite(w->fd, p, chunk, (off_t)offset);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return qd_fail(QD_EIO, "%s: write failed: %s", w->tmp_path, r < 0 ? strerror(errno) : "no space");
        p += r;
        n -= (uint64_t)r;
        offset += (uint64_t)r;
    }
    return QD_OK;
}

qd_status qd_st_writer_begin(qd_st_writer *w) {
    if (w->begun) return QD_OK;
    qsort(w->tensors, w->n, sizeof *w->tensors, compare_layout);
    qd_strmap_free(&w->by_name);
    qd_strmap_init(&w->by_name);
    json_t *root = json_object();
    if (!root) return qd_fail(QD_ENOMEM, "%s: cannot allocate", w->path);
    if (json_object_size(w->meta)) json_object_set(root, "__metadata__", w->meta);
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n; i++) {
        qd_st_tensor *t = &w->tensors[i].t;
        uint64_t size = t->end;
        t->begin = offset;
        t->end = offset + size;
        offset = t->end;
        qd_strmap_put(&w->by_name, t->name, i, NULL);
        json_t *shape = json_array();
        for (int d = 0; d < t->rank; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *info = json_pack("{s:s, s:o, s:[I,I]}", "dtype", qd_dtype_name(t->dtype), "shape", shape,
                                 "data_offsets", (json_int_t)t->begin, (json_int_t)t->end);
        if (!info || json_object_set_new(root, t->name, info) != 0) {
            json_decref(root);
            return qd_fail(QD_EINVAL, "%s: tensor name '%s' is not valid UTF-8", w->path, t->name);
        }
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text) return qd_fail(QD_ENOMEM, "%s: cannot serialise the header", w->path);
    size_t len = strlen(text);
    size_t padded = (len + 7) / 8 * 8; /* pad with spaces so the data section starts 8-aligned */
    uint8_t *buf = malloc(8 + padded);
    if (!buf) {
        free(text);
        return qd_fail(QD_ENOMEM, "%s: cannot allocate", w->path);
    }
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, text, len);
    memset(buf + 8 + len, ' ', padded - len);
    free(text);
    qd_status s = write_all(w, buf, 8 + padded, 0);
    free(buf);
    if (s) return s;
    w->data_start = 8 + padded;
    /* Size the file now so tensors can be written in any order. */
    if (ftruncate(w->fd, (off_t)(w->data_start + offset)) != 0) {
        return qd_fail(QD_EIO, "%s: cannot size the file to %llu bytes: %s", w->tmp_path,
                       (unsigned long long)(w->data_start + offset), strerror(errno));
    }
    w->begun = true;
    return QD_OK;
}

qd_status qd_st_writer_put_part(qd_st_writer *w, const char *name, const void *data, uint64_t nbytes) {
    qd_status s;
    if (!w->begun && (s = qd_st_writer_begin(w))) return s;
    size_t i;
    if (!qd_strmap_get(&w->by_name, name, &i)) {
        return qd_fail(QD_EINVAL, "%s: tensor '%s' was not declared", w->path, name);
    }
    writer_tensor *wt = &w->tensors[i];
    uint64_t size = wt->t.end - wt->t.begin;
    if (nbytes > size - wt->written) {
        return qd_fail(QD_EINVAL, "%s: tensor '%s': %llu more bytes than its %llu", w->path, name,
                       (unsigned long long)(nbytes - (size - wt->written)), (unsigned long long)size);
    }
    if ((s = write_all(w, data, nbytes, w->data_start + wt->t.begin + wt->written))) return s;
    wt->written += nbytes;
    return QD_OK;
}

qd_status qd_st_writer_put(qd_st_writer *w, const char *name, const void *data, uint64_t nbytes) {
    size_t i;
    if (w->begun && qd_strmap_get(&w->by_name, name, &i)) {
        uint64_t size = w->tensors[i].t.end - w->tensors[i].t.begin;
        if (nbytes != size || w->tensors[i].written) {
            return qd_fail(QD_EINVAL, "%s: tensor '%s' takes %llu bytes in one put, got %llu", w->path, name,
                           (unsigned long long)size, (unsigned long long)nbytes);
        }
    }
    return qd_st_writer_put_part(w, name, data, nbytes);
}

static void writer_free(qd_st_writer *w) {
    if (w->fd >= 0) close(w->fd);
    for (size_t i = 0; i < w->n; i++) free(w->tensors[i].t.name);
    free(w->tensors);
    json_decref(w->meta);
    qd_strmap_free(&w->by_name);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

qd_status qd_st_writer_finish(qd_st_writer *w) {
    qd_status s = QD_OK;
    if (!w->begun) s = qd_st_writer_begin(w);
    for (size_t i = 0; !s && i < w->n; i++) {
        const writer_tensor *wt = &w->tensors[i];
        if (wt->written != wt->t.end - wt->t.begin) {
            s = qd_fail(QD_EINVAL, "%s: tensor '%s' got %llu of its %llu bytes", w->path, wt->t.name,
                        (unsigned long long)wt->written, (unsigned long long)(wt->t.end - wt->t.begin));
        }
    }
    if (!s && close(w->fd) != 0) s = qd_fail(QD_EIO, "%s: close failed: %s", w->tmp_path, strerror(errno));
    w->fd = -1;
    if (!s && rename(w->tmp_path, w->path) != 0) {
        s = qd_fail(QD_EIO, "%s: cannot rename from %s: %s", w->path, w->tmp_path, strerror(errno));
    }
    if (s) unlink(w->tmp_path);
    writer_free(w);
    return s;
}

void qd_st_writer_abort(qd_st_writer *w) {
    if (!w) return;
    if (w->tmp_path) unlink(w->tmp_path);
    writer_free(w);
}

qd_status qd_st_open_memory(const char *label, const uint8_t *bytes, size_t len, qd_st_file **out) {
    *out = NULL;
    if (len < 8) return qd_fail(QD_EFORMAT, "%s: %zu bytes, shorter than the 8-byte header length", label, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | bytes[i];
    if (n > len - 8) return qd_fail(QD_EFORMAT, "%s: header length %llu exceeds the %zu bytes given", label, (unsigned long long)n, len);
    qd_status s = qd_st_parse_header(label, (const char *)bytes + 8, (size_t)n, len, out);
    if (s) return s;
    (*out)->map = bytes;
    (*out)->map_len = len;
    (*out)->borrowed = true;
    return QD_OK;
}
