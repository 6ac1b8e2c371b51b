/* Checkpoint sets: single files, unindexed shards and indexed shards (see ckpt.h). */
#include "io/ckpt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/json.h"

void qd_ckpt_close(qd_ckpt *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_files; i++) qd_st_close(c->files[i]);
    free(c->files);
    free(c->entries);
    qd_strmap_free(&c->by_name);
    free(c->index_path);
    free(c);
}

const qd_ckpt_entry *qd_ckpt_find(const qd_ckpt *c, const char *name) {
    size_t i;
    return qd_strmap_get(&c->by_name, name, &i) ? &c->entries[i] : NULL;
}

/* Build the combined name map; a name in two files is an error. */
static qd_status index_entries(qd_ckpt *c) {
    size_t total = 0;
    for (size_t i = 0; i < c->n_files; i++) total += c->files[i]->n_tensors;
    c->entries = calloc(total ? total : 1, sizeof *c->entries);
    if (!c->entries) return qd_fail(QD_ENOMEM, "cannot allocate a checkpoint map of %zu tensors", total);
    for (size_t i = 0; i < c->n_files; i++) {
        const qd_st_file *f = c->files[i];
        for (size_t k = 0; k < f->n_tensors; k++) {
            size_t existing;
            int r = qd_strmap_put(&c->by_name, f->tensors[k].name, c->n_tensors, &existing);
            if (r < 0) return qd_fail(QD_ENOMEM, "cannot allocate a checkpoint map");
            if (r == 0) {
                return qd_fail(QD_EFORMAT, "tensor '%s' appears in both %s and %s", f->tensors[k].name,
                               c->entries[existing].file->path, f->path);
            }
            c->entries[c->n_tensors].tensor = &f->tensors[k];
            c->entries[c->n_tensors].file = f;
            c->n_tensors++;
        }
    }
    return QD_OK;
}

qd_status qd_ckpt_open_files(const char *const *paths, size_t n, qd_ckpt **out) {
    *out = NULL;
    qd_ckpt *c = calloc(1, sizeof *c);
    if (!c || !(c->files = calloc(n ? n : 1, sizeof *c->files))) {
        free(c);
        return qd_fail(QD_ENOMEM, "cannot allocate a checkpoint");
    }
    qd_strmap_init(&c->by_name);
    qd_status s = QD_OK;
    for (size_t i = 0; i < n && !s; i++) {
        s = qd_st_open(paths[i], &c->files[i]);
        if (!s) c->n_files++;
    }
    if (!s) s = index_entries(c);
    if (s) {
        qd_ckpt_close(c);
        return s;
    }
    *out = c;
    return QD_OK;
}

qd_status qd_ckpt_adopt_files(qd_st_file **files, size_t n, qd_ckpt **out) {
    *out = NULL;
    qd_ckpt *c = calloc(1, sizeof *c);
    if (!c || !(c->files = calloc(n ? n : 1, sizeof *c->files))) {
        free(c);
        for (size_t i = 0; i < n; i++) qd_st_close(files[i]);
        return qd_fail(QD_ENOMEM, "cannot allocate a checkpoint");
    }
    qd_strmap_init(&c->by_name);
    for (size_t i = 0; i < n; i++) c->files[c->n_files++] = files[i];
    qd_status s = index_entries(c);
    if (s) {
        qd_ckpt_close(c);
        return s;
    }
    *out = c;
    return QD_OK;
}

static bool safe_relative_name(const char *name) {
    if (!*name || name[0] == '/') return false;
    /* no ".." and no empty path component; the last one is checked too, so a trailing '/' (a
     * folder, not a shard file) is rejected */
    for (const char *p = name;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return false;
        if (len == 0) return false;
        if (!slash) return true;
        p = slash + 1;
    }
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

qd_status qd_ckpt_parse_index(const char *label, const char *text, size_t len, char ***shards, size_t *n_shards) {
    *shards = NULL;
    *n_shards = 0;
    json_t *root;
    qd_status s = qd_json_parse(label, text, len, &root);
    if (s) return s;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(map)) {
        json_decref(root);
        return qd_fail(QD_EFORMAT, "%s: expected an object with a \"weight_map\" object of tensor name → shard file",
                       label);
    }
    size_t cap = json_object_size(map);
    char **names = calloc(cap ? cap : 1, sizeof *names);
    size_t n = 0;
    qd_strmap seen; /* borrows the JSON's strings; freed before the JSON is */
    qd_strmap_init(&seen);
    if (!names) {
        json_decref(root);
        return qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
    }
    const char *key;
    json_t *val;
    json_object_foreach(map, key, val) {
        const char *file = json_string_value(val);
        if (!json_is_string(val) || !safe_relative_name(file)) {
            s = qd_fail(QD_EFORMAT, "%s: weight_map entry '%s' must name a shard file relative to the index's folder",
                        label, key);
            break;
        }
        int r = qd_strmap_put(&seen, file, n, NULL);
        if (r < 0) {
            s = qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
            break;
        }
        if (r == 1) {
            size_t fl = strlen(file) + 1;
            if (!(names[n] = malloc(fl))) {
                s = qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
                break;
            }
            memcpy(names[n++], file, fl);
        }
    }
    qd_strmap_free(&seen);
    json_decref(root);
    if (!s && n == 0) s = qd_fail(QD_EFORMAT, "%s: weight_map names no shard files", label);
    if (s) {
        for (size_t i = 0; i < n; i++) free(names[i]);
        free(names);
        return s;
    }
    qsort(names, n, sizeof *names, compare_strings);
    *shards = names;
    *n_shards = n;
    return QD_OK;
}

static char *dirname_of(const char *path) {
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (slash) memcpy(d, path, n);
    else d[0] = '.';
    d[n] = '\0';
    if (slash == path) { d[0] = '/'; d[1] = '\0'; }
    return d;
}

qd_status qd_ckpt_open_index(const char *index_path, qd_ckpt **out) {
    *out = NULL;
    char *text;
    size_t len;
    qd_status s = qd_read_small_file(index_path, QD_JSON_MAX_FILE, &text, &len);
    if (s) return s;
    char **shards;
    size_t n;
    s = qd_ckpt_parse_index(index_path, text, len, &shards, &n);
    if (s) {
        free(text);
        return s;
    }
    char *dir = dirname_of(index_path);
    char **paths = calloc(n, sizeof *paths);
    for (size_t i = 0; dir && paths && i < n; i++) {
        size_t pl = strlen(dir) + strlen(shards[i]) + 2;
        if ((paths[i] = malloc(pl))) snprintf(paths[i], pl, "%s/%s", dir, shards[i]);
    }
    qd_ckpt *c = NULL;
    for (size_t i = 0; !s && i < n; i++) {
        if (!dir || !paths || !paths[i]) s = qd_fail(QD_ENOMEM, "%s: cannot allocate", index_path);
    }
    if (!s) {
        s = qd_ckpt_open_files((const char *const *)paths, n, &c);
        if (s == QD_ENOTFOUND) {
            s = qd_fail_context(QD_ENOTFOUND, "%s names a shard that is missing", index_path);
        }
    }
    /* Every promise of the weight map must hold. */
    if (!s) {
        json_t *root = NULL;
        qd_json_parse(index_path, text, len, &root);
        const char *key;
        json_t *val;
        json_object_foreach(json_object_get(root, "weight_map"), key, val) {
            const qd_ckpt_entry *e = qd_ckpt_find(c, key);
            const char *want = json_string_value(val);
            if (!e) {
                s = qd_fail(QD_EFORMAT, "%s promises tensor '%s' in %s, but that shard has no such tensor",
                            index_path, key, want);
                break;
            }
            /* files[i] was opened from shards[i] */
            char *const *slot = bsearch(&want, shards, n, sizeof *shards, compare_strings);
            if (!slot || c->files[slot - shards] != e->file) {
                s = qd_fail(QD_EFORMAT, "%s promises tensor '%s' in %s, but it is in %s", index_path, key, want,
                            e->file->path);
                break;
            }
        }
        json_decref(root);
    }
    if (!s && !(c->index_path = malloc(strlen(index_path) + 1))) s = qd_fail(QD_ENOMEM, "cannot allocate");
    if (!s) strcpy(c->index_path, index_path);
    for (size_t i = 0; i < n; i++) {
        free(shards[i]);
        if (paths) free(paths[i]);
    }
    free(shards);
    free(paths);
    free(dir);
    free(text);
    if (s) {
        qd_ckpt_close(c);
        return s;
    }
    *out = c;
    return QD_OK;
}
