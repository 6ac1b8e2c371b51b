/* The shared writer of the converters (see output.h). */
#include "convert/output.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/status.h"
#include "core/strmap.h"
#include "io/fs.h"
#include "io/safetensors.h"

qd_status qd_parse_size(const char *flag, const char *text, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    static const struct {
        const char *unit;
        double mul;
    } units[] = {{"", 1},      {"B", 1},          {"KB", 1e3},        {"MB", 1e6},       {"GB", 1e9},
                 {"KiB", 1024}, {"MiB", 1048576}, {"GiB", 1073741824}, {"TB", 1e12}};
    for (size_t i = 0; end != text && !errno && i < sizeof units / sizeof *units; i++) {
        if (strcasecmp(end, units[i].unit)) continue;
        double bytes = v * units[i].mul;
        if (!(bytes >= 1024 && bytes < 1e18)) break;
        *out = (uint64_t)bytes;
        return QD_OK;
    }
    return qd_fail(QD_EINVAL, "%s %s: expected a size of at least 1KiB such as 5GB, 500MB or 1073741824", flag, text);
}

/* The files a converter writes into its folder. */
static bool converter_file(const char *name) {
    return !strcmp(name, "config.json") || qd_path_has_suffix(name, ".safetensors") ||
           qd_path_has_suffix(name, ".safetensors.index.json");
}

/* The default qd_out_dir_ours: nothing but converter files (no sub-folders). */
static bool only_converter_files(const char *dir, char *why, size_t why_len) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(why, why_len, "it cannot be read: %s", strerror(errno));
        return false;
    }
    bool ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = qd_path_join(dir, e->d_name);
        ok = p && converter_file(e->d_name) && qd_is_file(p);
        if (!ok) snprintf(why, why_len, "it replaces only config.json and safetensors files, and the folder also holds '%s'", e->d_name);
        free(p);
    }
    closedir(d);
    return ok;
}

/* The first entry of `dir` other than . and .. (malloc'd), NULL when it is empty or unreadable. */
static char *first_entry(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char *name = NULL;
    struct dirent *e;
    while (!name && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) name = strdup(e->d_name);
    closedir(d);
    return name;
}

/* May a conversion write `dir`? (absent; empty; or, with overwrite, an earlier output `ours` accepts) */
static qd_status save_dir_check(const char *flag, const char *dir, bool overwrite, qd_out_dir_ours ours) {
    if (!qd_is_dir(dir)) {
        struct stat st;
        if (lstat(dir, &st) == 0) return qd_fail(QD_EINVAL, "%s %s: exists and is not a folder", flag, dir);
        return QD_OK;
    }
    char *first = first_entry(dir);
    qd_status s = QD_OK;
    char why[600] = "";
    if (!first) {
        s = QD_OK;
    } else if (!overwrite) {
        s = qd_fail(QD_EINVAL, "%s %s: the folder is not empty (it holds '%s'); give an empty or new folder, "
                               "or --overwrite to replace a previous conversion",
                    flag, dir, first);
    } else if (!(ours ? ours : only_converter_files)(dir, why, sizeof why)) {
        s = qd_fail(QD_EINVAL, "%s %s: --overwrite replaces only an earlier output of this converter, and this folder does not look like one: %s", flag,
                    dir, why[0] ? why : "its contents differ");
    }
    free(first);
    return s;
}

/* "<save_dir>.qdit-<what>-<pid>" (malloc'd) */
static char *sibling(const char *save_dir, const char *what) {
    size_t n = strlen(save_dir) + strlen(what) + 40;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s.qdit-%s-%ld", save_dir, what, (long)getpid());
    return p;
}

qd_status qd_out_dir_begin(const char *flag, const char *save_dir, bool overwrite, qd_out_dir_ours ours, qd_out_dir *o) {
    memset(o, 0, sizeof *o);
    if (!save_dir || !*save_dir) return qd_fail(QD_EINVAL, "%s DIR is required: the folder to write", flag);
    qd_status s = save_dir_check(flag, save_dir, overwrite, ours);
    if (s) return s;
    size_t n = strlen(save_dir);
    while (n > 1 && save_dir[n - 1] == '/') n--;
    o->save_dir = strndup(save_dir, n);
    o->tmp = o->save_dir ? sibling(o->save_dir, "tmp") : NULL;
    if (!o->save_dir || !o->tmp) {
        qd_out_dir_abort(o);
        return qd_fail(QD_ENOMEM, "cannot allocate");
    }
    o->flag = flag, o->overwrite = overwrite;
    s = qd_remove_tree(o->tmp); /* a stale one of a killed run with our pid */
    if (!s) s = qd_make_dirs(o->tmp);
    if (s) {
        s = qd_fail_context(s, "%s %s", flag, o->save_dir);
        free(o->save_dir), free(o->tmp);
        memset(o, 0, sizeof *o);
    }
    return s;
}

qd_status qd_out_dir_commit(qd_out_dir *o) {
    qd_status s = QD_OK;
    char *old = NULL;
    if (qd_is_dir(o->save_dir)) {
        /* an empty folder goes; the previous conversion (checked at begin) is moved aside until the new one is in place */
        char *first = first_entry(o->save_dir);
        if (!first) {
            if (rmdir(o->save_dir)) s = qd_fail(QD_EIO, "%s %s: cannot replace it: %s", o->flag, o->save_dir, strerror(errno));
        } else if (!(old = sibling(o->save_dir, "old"))) {
            s = qd_fail(QD_ENOMEM, "cannot allocate");
        } else if ((s = qd_remove_tree(old)) || rename(o->save_dir, old)) {
            s = qd_fail(QD_EIO, "%s %s: cannot move the earlier output aside: %s", o->flag, o->save_dir, strerror(errno));
            free(old), old = NULL;
        }
        free(first);
    }
    if (!s && rename(o->tmp, o->save_dir)) {
        s = qd_fail(QD_EIO, "%s %s: cannot move %s there: %s", o->flag, o->save_dir, o->tmp, strerror(errno));
        if (old && !rename(old, o->save_dir)) free(old), old = NULL;
    }
    if (s) {
        free(old);
        qd_out_dir_abort(o);
        return s;
    }
    if (old) (void)qd_remove_tree(old);
    free(old), free(o->save_dir), free(o->tmp);
    memset(o, 0, sizeof *o);
    return QD_OK;
}

void qd_out_dir_abort(qd_out_dir *o) {
    if (o->tmp) (void)qd_remove_tree(o->tmp);
    free(o->save_dir), free(o->tmp);
    memset(o, 0, sizeof *o);
}

qd_status qd_out_file_check(const char *flag, const char *path, bool overwrite, qd_out_file_ours ours) {
    if (!path || !*path) return qd_fail(QD_EINVAL, "%s FILE is required: the file to write", flag);
    char *dir = qd_path_dirname(path);
    qd_status s = !dir ? qd_fail(QD_ENOMEM, "cannot allocate") : qd_is_dir(dir) ? QD_OK : qd_fail(QD_ENOTFOUND, "%s %s: its folder %s does not exist", flag, path, dir);
    free(dir);
    struct stat st;
    char why[600] = "";
    if (s || lstat(path, &st)) return s;
    if (qd_is_dir(path)) return qd_fail(QD_EINVAL, "%s %s: is a folder; give the path of the file to write", flag, path);
    if (!overwrite) return qd_fail(QD_EINVAL, "%s %s: the file exists; give a new path, or --overwrite to replace an earlier output", flag, path);
    if (ours && !ours(path, why, sizeof why))
        return qd_fail(QD_EINVAL, "%s %s: --overwrite replaces only an earlier output of this converter, and this file does not look like one: %s", flag, path,
                       why[0] ? why : "its contents differ");
    return QD_OK;
}

qd_status qd_out_file_write_json(const char *flag, const char *path, const json_t *doc) {
    char *tmp = sibling(path, "tmp");
    if (!tmp) return qd_fail(QD_ENOMEM, "cannot allocate");
    qd_status s = QD_OK;
    if (json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_SORT_KEYS)) s = qd_fail(QD_EIO, "%s %s: cannot write %s", flag, path, tmp);
    else if (rename(tmp, path)) s = qd_fail(QD_EIO, "%s %s: cannot move %s there: %s", flag, path, tmp, strerror(errno));
    if (s) unlink(tmp);
    free(tmp);
    return s;
}

char *qd_json_dumps_python(const json_t *v) {
    char *compact = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    if (!compact) return NULL;
    /* jansson's compact form has no spaces; Python's default puts one after ',' and ':' outside strings */
    size_t n = strlen(compact), o = 0;
    char *out = malloc(2 * n + 1);
    bool in_str = false, esc = false;
    for (size_t i = 0; out && i < n; i++) {
        const char c = compact[i];
        out[o++] = c;
        if (in_str) {
            if (esc) esc = false;
            else if (c == '\\') esc = true;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ',' || c == ':') {
            out[o++] = ' ';
        }
    }
    if (out) out[o] = 0;
    free(compact);
    return out;
}

void qd_print_stats(const json_t *stats) {
    char *text = json_dumps(stats, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text) printf("%s\n", text);
    fflush(stdout);
    free(text);
}

void qd_release_mapped(const void *data, uint64_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = (uintptr_t)data, b = a + (uintptr_t)n;
    const uintptr_t first = (a + page - 1) / page * page, last = b / page * page;
    if (last > first) (void)madvise((void *)first, last - first, MADV_DONTNEED);
}

/* ---- shards ---- */

typedef struct {
    char *name;
    qd_dtype dtype;
    int rank;
    int64_t shape[QD_ST_MAX_RANK];
    uint64_t bytes;
    int shard;
} planned;

struct qd_shards {
    char *dir, *stem;
    uint64_t max_bytes, total;
    planned *t;
    size_t n, cap;
    qd_strmap by_name;
    int n_shards;
    qd_st_writer **w;
    char **paths;
};

qd_status qd_shards_new(const char *dir, const char *stem, uint64_t max_shard_bytes, qd_shards **out) {
    qd_shards *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir)) || !(s->stem = strdup(stem))) {
        if (s) free(s->dir);
        free(s);
        return qd_fail(QD_ENOMEM, "cannot allocate the output");
    }
    s->max_bytes = max_shard_bytes;
    qd_strmap_init(&s->by_name);
    *out = s;
    return QD_OK;
}

int qd_shards_count(const qd_shards *s) { return s->n_shards; }

qd_status qd_shards_add(qd_shards *s, const char *name, qd_dtype dtype, int rank, const int64_t *shape) {
    if (rank < 0 || rank > QD_ST_MAX_RANK) return qd_fail(QD_EINVAL, "output tensor '%s': rank %d", name, rank);
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        planned *nt = realloc(s->t, cap * sizeof *nt);
        if (!nt) return qd_fail(QD_ENOMEM, "cannot allocate the output plan");
        s->t = nt, s->cap = cap;
        /* keys are borrowed by the map: rebuild it over the moved array */
        qd_strmap_free(&s->by_name);
        qd_strmap_init(&s->by_name);
        for (size_t i = 0; i < s->n; i++)
            if (qd_strmap_put(&s->by_name, s->t[i].name, i, NULL) < 0) return qd_fail(QD_ENOMEM, "cannot allocate");
    }
    planned *p = &s->t[s->n];
    memset(p, 0, sizeof *p);
    p->name = strdup(name);
    if (!p->name) return qd_fail(QD_ENOMEM, "cannot allocate");
    int put = qd_strmap_put(&s->by_name, p->name, s->n, NULL);
    if (put <= 0) {
        free(p->name);
        return put < 0 ? qd_fail(QD_ENOMEM, "cannot allocate") : qd_fail(QD_EINVAL, "output tensor '%s' is written twice", name);
    }
    p->dtype = dtype, p->rank = rank;
    uint64_t el = 1;
    for (int i = 0; i < rank; i++) p->shape[i] = shape[i], el *= (uint64_t)shape[i];
    p->bytes = el * (uint64_t)qd_dtype_bits(dtype) / 8;
    s->n++;
    return QD_OK;
}

static char *shard_name(const qd_shards *s, int i) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s-%05d-of-%05d.safetensors", s->stem, i + 1, s->n_shards);
    return strdup(buf);
}

qd_status qd_shards_begin(qd_shards *s, const char *producer) {
    /* declaration order, a new shard when the next tensor would overflow a non-empty one */
    uint64_t used = 0;
    int shard = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (used && used + s->t[i].bytes > s->max_bytes) shard++, used = 0;
        s->t[i].shard = shard;
        used += s->t[i].bytes;
        s->total += s->t[i].bytes;
    }
    s->n_shards = shard + 1;
    s->w = calloc((size_t)s->n_shards, sizeof *s->w);
    s->paths = calloc((size_t)s->n_shards, sizeof *s->paths);
    if (!s->w || !s->paths) return qd_fail(QD_ENOMEM, "cannot allocate the output");
    qd_status st = QD_OK;
    for (int i = 0; !st && i < s->n_shards; i++) {
        char *name = shard_name(s, i);
        s->paths[i] = name ? qd_path_join(s->dir, name) : NULL;
        free(name);
        if (!s->paths[i]) return qd_fail(QD_ENOMEM, "cannot allocate");
        st = qd_st_writer_create(s->paths[i], &s->w[i]);
        if (!st) st = qd_st_writer_meta(s->w[i], "format", "pt");
        if (!st && producer) st = qd_st_writer_meta(s->w[i], "producer", producer);
    }
    for (size_t i = 0; !st && i < s->n; i++) st = qd_st_writer_add(s->w[s->t[i].shard], s->t[i].name, s->t[i].dtype, s->t[i].rank, s->t[i].shape);
    for (int i = 0; !st && i < s->n_shards; i++) st = qd_st_writer_begin(s->w[i]);
    return st;
}

qd_status qd_shards_put(qd_shards *s, const char *name, const void *data, uint64_t nbytes) {
    size_t i;
    if (!s->w || !qd_strmap_get(&s->by_name, name, &i)) return qd_fail(QD_EINVAL, "output tensor '%s' was not declared", name);
    return qd_st_writer_put(s->w[s->t[i].shard], name, data, nbytes);
}

static void shards_free(qd_shards *s) {
    for (size_t i = 0; i < s->n; i++) free(s->t[i].name);
    for (int i = 0; s->paths && i < s->n_shards; i++) free(s->paths[i]);
    qd_strmap_free(&s->by_name);
    free(s->t), free(s->w), free(s->paths), free(s->dir), free(s->stem);
    free(s);
}

static qd_status write_json_file(const char *path, const json_t *doc) {
    char *tmp = malloc(strlen(path) + 8);
    if (!tmp) return qd_fail(QD_ENOMEM, "cannot allocate");
    sprintf(tmp, "%s.tmp", path);
    qd_status s = QD_OK;
    if (json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) || rename(tmp, path)) {
        s = qd_fail(QD_EIO, "%s: cannot write it: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return s;
}

qd_status qd_shards_finish(qd_shards *s) {
    qd_status st = QD_OK;
    for (int i = 0; i < s->n_shards; i++) {
        qd_st_writer *w = s->w[i];
        s->w[i] = NULL;
        if (!st) st = qd_st_writer_finish(w);
        else qd_st_writer_abort(w);
    }
    json_t *idx = json_object(), *meta = json_object(), *map = json_object();
    json_object_set_new(meta, "total_size", json_integer((json_int_t)s->total));
    json_object_set_new(idx, "metadata", meta);
    for (size_t i = 0; !st && i < s->n; i++) {
        const char *slash = strrchr(s->paths[s->t[i].shard], '/');
        json_object_set_new(map, s->t[i].name, json_string(slash ? slash + 1 : s->paths[s->t[i].shard]));
    }
    json_object_set_new(idx, "weight_map", map);
    if (!st) {
        char name[512];
        snprintf(name, sizeof name, "%s.safetensors.index.json", s->stem);
        char *path = qd_path_join(s->dir, name);
        st = path ? write_json_file(path, idx) : qd_fail(QD_ENOMEM, "cannot allocate");
        free(path);
    }
    json_decref(idx);
    if (st)
        for (int i = 0; i < s->n_shards; i++) unlink(s->paths[i]);
    shards_free(s);
    return st;
}

void qd_shards_abort(qd_shards *s) {
    if (!s) return;
    for (int i = 0; s->w && i < s->n_shards; i++)
        if (s->w[i]) qd_st_writer_abort(s->w[i]);
    shards_free(s);
}

qd_status qd_write_config(const char *dir, const json_t *cfg) {
    json_t *c = json_deep_copy(cfg);
    if (!c) return qd_fail(QD_ENOMEM, "cannot allocate");
    json_object_del(c, "quantization_config");
    char *path = qd_path_join(dir, "config.json");
    qd_status s = path ? write_json_file(path, c) : qd_fail(QD_ENOMEM, "cannot allocate");
    free(path);
    json_decref(c);
    return s;
}

/* ---- progress ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void qd_progress_start(qd_progress *p, const char *what, int64_t total) {
    p->what = what, p->total = total, p->tty = isatty(STDERR_FILENO), p->started = now_s();
}

void qd_progress_step(qd_progress *p, int64_t done, uint64_t bytes_written) {
    if (!p->tty) return;
    if (p->total > 0)
        fprintf(stderr, "\r%s: %lld/%lld layers, %.2f GB written, %.0f s", p->what, (long long)done, (long long)p->total,
                (double)bytes_written / 1e9, now_s() - p->started);
    else
        fprintf(stderr, "\r%s: %lld layers, %.2f GB written, %.0f s", p->what, (long long)done, (double)bytes_written / 1e9,
                now_s() - p->started);
    fflush(stderr);
}

void qd_progress_end(qd_progress *p) {
    if (p->tty) fprintf(stderr, "\n");
}
