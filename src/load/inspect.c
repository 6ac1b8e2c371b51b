/* The inspect report (see inspect.h) and the public qd_inspect_json(). */
#include "load/inspect.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/ckpt.h"
#include "io/fs.h"

void qd_component_stats_free(qd_component_stats *st) {
    for (size_t i = 0; i < st->n_meta_keys; i++) free(st->meta_keys[i]);
    free(st->meta_keys);
    memset(st, 0, sizeof *st);
}

static qd_status add_meta_key(qd_component_stats *st, const char *key) {
    for (size_t i = 0; i < st->n_meta_keys; i++)
        if (!strcmp(st->meta_keys[i], key)) return QD_OK;
    char **v = realloc(st->meta_keys, (st->n_meta_keys + 1) * sizeof *v);
    if (!v) return qd_fail(QD_ENOMEM, "cannot allocate");
    st->meta_keys = v;
    if (!(v[st->n_meta_keys] = strdup(key))) return qd_fail(QD_ENOMEM, "cannot allocate");
    st->n_meta_keys++;
    return QD_OK;
}

qd_status qd_component_stats_compute(const qd_component *c, qd_component_stats *st) {
    memset(st, 0, sizeof *st);
    if (c->weights.n_files == 0) return QD_OK;
    qd_ckpt *ck;
    qd_status s = qd_weight_set_open(&c->weights, &ck);
    if (s) return s;
    for (size_t i = 0; i < ck->n_tensors; i++) {
        const qd_st_tensor *t = ck->entries[i].tensor;
        uint64_t bytes = t->end - t->begin;
        st->tensors++;
        st->elements += t->elements;
        st->bytes += bytes;
        st->dtype_tensors[t->dtype]++;
        st->dtype_bytes[t->dtype] += bytes;
    }
    for (size_t f = 0; f < ck->n_files && !s; f++)
        for (size_t k = 0; k < ck->files[f]->n_meta && !s; k++) s = add_meta_key(st, ck->files[f]->meta[k].key);
    qd_ckpt_close(ck);
    if (s) qd_component_stats_free(st);
    return s;
}

/* A file's name relative to its component folder (the folder prefix removed when it matches). */
static const char *relative_name(const qd_component *c, const char *path) {
    size_t n = strlen(c->dir);
    if (strncmp(path, c->dir, n) == 0 && path[n] == '/') return path + n + 1;
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

qd_status qd_inspect_build(const qd_repo *r, const qd_component_stats *stats, json_t **out) {
    json_t *root = json_object(), *comps = json_array();
    if (!root || !comps) {
        json_decref(root);
        json_decref(comps);
        return qd_fail(QD_ENOMEM, "cannot allocate");
    }
    json_object_set_new(root, "path", json_string(r->path));
    json_object_set_new(root, "layout", json_string(qd_layout_name(r->layout)));
    if (r->repo_id) json_object_set_new(root, "resolved", json_string(r->root));
    json_object_set_new(root, "pipeline_class", r->pipeline_class ? json_string(r->pipeline_class) : json_null());
    for (size_t i = 0; i < r->n_components; i++) {
        const qd_component *c = &r->components[i];
        const qd_component_stats *st = &stats[i];
        json_t *files = json_array(), *dtypes = json_object(), *dbytes = json_object(), *keys = json_array();
        for (size_t f = 0; f < c->weights.n_files; f++) json_array_append_new(files, json_string(relative_name(c, c->weights.files[f])));
        for (int d = 0; d < QD_DTYPE_COUNT; d++) {
            if (!st->dtype_tensors[d]) continue;
            json_object_set_new(dtypes, qd_dtype_name((qd_dtype)d), json_integer((json_int_t)st->dtype_tensors[d]));
            json_object_set_new(dbytes, qd_dtype_name((qd_dtype)d), json_integer((json_int_t)st->dtype_bytes[d]));
        }
        for (size_t k = 0; k < st->n_meta_keys; k++) json_array_append_new(keys, json_string(st->meta_keys[k]));
        json_t *jc = json_pack("{s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:o, s:o, s:o}", "name", c->name, "class",
                               c->class_name ? json_string(c->class_name) : json_null(), "library",
                               c->library ? json_string(c->library) : json_null(), "files", files, "tensors",
                               (json_int_t)st->tensors, "elements", (json_int_t)st->elements, "bytes",
                               (json_int_t)st->bytes, "dtypes", dtypes, "dtype_bytes", dbytes, "metadata_keys", keys);
        if (!jc) {
            json_decref(root);
            json_decref(comps);
            return qd_fail(QD_EFORMAT, "component '%s': a name or class is not valid UTF-8", c->name);
        }
        json_array_append_new(comps, jc);
    }
    json_object_set_new(root, "components", comps);
    *out = root;
    return QD_OK;
}

qd_status qd_inspect_json(const char *path, char **json_out) {
    *json_out = NULL;
    qd_repo *r;
    qd_status s = qd_repo_open(path, &r);
    if (s) return s;
    qd_component_stats *stats = calloc(r->n_components + 1, sizeof *stats);
    if (!stats) s = qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < r->n_components; i++) {
        s = qd_component_stats_compute(&r->components[i], &stats[i]);
    }
    json_t *doc = NULL;
    if (!s) s = qd_inspect_build(r, stats, &doc);
    if (!s) {
        *json_out = json_dumps(doc, JSON_INDENT(2));
        if (!*json_out) s = qd_fail(QD_ENOMEM, "cannot serialise the report");
    }
    json_decref(doc);
    for (size_t i = 0; stats && i < r->n_components; i++) qd_component_stats_free(&stats[i]);
    free(stats);
    qd_repo_close(r);
    return s;
}
