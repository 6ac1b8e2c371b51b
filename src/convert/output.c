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

/* Does `dir` exist, and may a conversion replace it? (absent; empty; or, with overwrite, only converter files) */
static qd_status save_dir_check(const char *flag, const char *dir, bool overwrite, bool *exists) {
    *exists = false;
    if (!qd_is_dir(dir)) {
        struct stat st;
        if (stat(dir, &st) == 0) return qd_fail(QD_EINVAL, "%s %s: exists and is not a folder", flag, dir);
        return QD_OK;
    }
    *exists = true;
    DIR *d = opendir(dir);
    if (!d) return qd_fail(QD_EIO, "%s %s: cannot read it: %s", flag, dir, strerror(errno));
    qd_status s = QD_OK;
    struct dirent *e;
    while (!s && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!overwrite) {
            s = qd_fail(QD_EINVAL, "%s %s: the folder is not empty (it holds '%s'); give an empty or new folder, "
                                   "or --overwrite to replace a previous conversion",
                        flag, dir, e->d_name);
        } else if (!converter_file(e->d_name)) {
            s = qd_fail(QD_EINVAL, "%s %s: --overwrite replaces only config.json and safetensors files, and the "
                                   "folder also holds '%s'",
                        flag, dir, e->d_name);
        }
    }
    closedir(d);
    return s;
}

/* mkdir -p */
static qd_status make_dirs(const char *flag, const char *dir) {
    char *p = strdup(dir);
    if (!p) return qd_fail(QD_ENOMEM, "cannot allocate");
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = '\0';
        if (mkdir(p, 0777) && errno != EEXIST) break;
        *c = '/';
    }
    int rc = mkdir(p, 0777);
    free(p);
    if (rc && errno != EEXIST) return qd_fail(QD_EIO, "%s %s: cannot create it: %s", flag, dir, strerror(errno));
    return QD_OK;
}

/* Remove the files of `dir` that `which` accepts (NULL: every file). */
static qd_status remove_files(const char *flag, const char *dir, bool (*which)(const char *)) {
    char **names = NULL;
    size_t n = 0;
    if (qd_list_files(dir, NULL, &names, &n)) return qd_fail(QD_EIO, "%s %s: cannot list it", flag, dir);
    qd_status s = QD_OK;
    for (size_t i = 0; !s && i < n; i++) {
        if (which && !which(names[i])) continue;
        char *p = qd_path_join(dir, names[i]);
        if (!p || unlink(p)) s = qd_fail(QD_EIO, "%s %s: cannot remove '%s': %s", flag, dir, names[i], strerror(errno));
        free(p);
    }
    qd_free_names(names, n);
    return s;
}

qd_status qd_out_dir_begin(const char *flag, const char *save_dir, bool overwrite, qd_out_dir *o) {
    memset(o, 0, sizeof *o);
    bool exists;
    qd_status s = save_dir_check(flag, save_dir, overwrite, &exists);
    if (s) return s;
    size_t n = strlen(save_dir);
    while (n > 1 && save_dir[n - 1] == '/') n--;
    o->save_dir = strndup(save_dir, n);
    o->tmp = malloc(n + 40);
    if (!o->save_dir || !o->tmp) {
        qd_out_dir_abort(o);
        return qd_fail(QD_ENOMEM, "cannot allocate");
    }
    snprintf(o->tmp, n + 40, "%s.qdit-tmp-%ld", o->save_dir, (long)getpid());
    o->overwrite = overwrite;
    if (qd_is_dir(o->tmp)) s = remove_files(flag, o->tmp, NULL); /* a stale one of a killed run with our pid */
    else s = make_dirs(flag, o->tmp);
    if (s) {
        free(o->save_dir), free(o->tmp);
        memset(o, 0, sizeof *o);
    }
    return s;
}

qd_status qd_out_dir_commit(qd_out_dir *o) {
    qd_status s = QD_OK;
    if (qd_is_dir(o->save_dir)) {
        /* the previous conversion (checked at begin): its files, then the empty folder */
        s = remove_files("--save-dir", o->save_dir, converter_file);
        if (!s && rmdir(o->save_dir))
            s = qd_fail(QD_EIO, "--save-dir %s: cannot replace it: %s (the new files are in %s)", o->save_dir, strerror(errno), o->tmp);
    }
    if (!s && rename(o->tmp, o->save_dir))
        s = qd_fail(QD_EIO, "--save-dir %s: cannot move %s there: %s", o->save_dir, o->tmp, strerror(errno));
    if (s) {
        qd_out_dir_abort(o);
        return s;
    }
    free(o->save_dir), free(o->tmp);
    memset(o, 0, sizeof *o);
    return QD_OK;
}

void qd_out_dir_abort(qd_out_dir *o) {
    if (o->tmp && qd_is_dir(o->tmp)) {
        (void)remove_files("--save-dir", o->tmp, NULL);
        (void)rmdir(o->tmp);
    }
    free(o->save_dir), free(o->tmp);
    memset(o, 0, sizeof *o);
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
