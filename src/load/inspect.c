/* The inspect report (see inspect.h) and the public qd_inspect_json(). */
#include "load/inspect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/strmap.h"
#include "io/ckpt.h"
#include "io/fs.h"
#include "load/sources.h"
#include "quant/plan.h"
#include "quant/resolve.h"

void qd_component_stats_free(qd_component_stats *st) {
    for (size_t i = 0; i < st->n_meta_keys; i++) free(st->meta_keys[i]);
    free(st->meta_keys);
    for (size_t i = 0; i < st->n_files; i++) free(st->files[i]);
    free(st->files);
    for (size_t i = 0; i < st->n_layers; i++) free(st->layers[i].name);
    free(st->layers);
    if (st->has_quant) qd_quant_config_free(&st->quant);
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

/* A file's name relative to a folder (the folder prefix removed when it matches). */
static const char *relative_name(const char *dir, const char *path) {
    size_t n = strlen(dir);
    if (strncmp(path, dir, n) == 0 && path[n] == '/') return path + n + 1;
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static bool is_transformer_role(const qd_repo *r, const qd_component *c) {
    return r->layout != QD_LAYOUT_PIPELINE || !strncmp(c->name, "transformer", 11);
}

static bool flags_touch(const qd_options *o, const char *role) {
    for (size_t i = 0; i < o->n_component_paths; i++)
        if (!strcmp(o->component_paths[i].component, role)) return true;
    return !strcmp(role, "transformer") && o->transformer_weights_path;
}

/* The component's sources: from the flags when they change it, else as the layout found it. */
static qd_status component_source(const qd_repo *r, const qd_component *c, const qd_options *o, const char *role,
                                  qd_component_source *src) {
    memset(src, 0, sizeof *src);
    if (flags_touch(o, role)) {
        /* a weights override replaces the files; a bare file's folder is not a base component */
        const char *base = r->layout == QD_LAYOUT_FILE ? NULL : c->dir;
        return qd_component_source_resolve(o, role, base, src);
    }
    src->component = strdup(role);
    src->dir = strdup(c->dir);
    src->config_path = c->config_path ? strdup(c->config_path) : NULL;
    src->weights.n_files = c->weights.n_files;
    src->weights.files = calloc(c->weights.n_files + 1, sizeof(char *));
    src->weights.index_path = c->weights.index_path ? strdup(c->weights.index_path) : NULL;
    bool ok = src->component && src->dir && src->weights.files;
    for (size_t i = 0; ok && i < c->weights.n_files; i++) ok = (src->weights.files[i] = strdup(c->weights.files[i])) != NULL;
    (void)r;
    if (!ok) {
        qd_component_source_free(src);
        return qd_fail(QD_ENOMEM, "cannot allocate");
    }
    return QD_OK;
}

static qd_status plan_layers(const qd_ckpt *ck, qd_component_stats *st) {
    char **mods;
    size_t n;
    qd_status s = qd_plan_candidates(ck, &mods, &n);
    if (s) return s;
    /* stored bytes per module: tensors named "<module>.<param>" */
    qd_strmap index;
    qd_strmap_init(&index);
    for (size_t i = 0; i < n; i++) qd_strmap_put(&index, mods[i], i, NULL);
    st->layers = calloc(n + 1, sizeof *st->layers);
    if (!st->layers) s = qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < ck->n_tensors; i++) {
        const char *name = ck->entries[i].tensor->name;
        const char *dot = strrchr(name, '.');
        if (!dot) continue;
        char module[1024];
        snprintf(module, sizeof module, "%.*s", (int)(dot - name), name);
        size_t k;
        if (qd_strmap_get(&index, module, &k)) st->layers[k].bytes += ck->entries[i].tensor->end - ck->entries[i].tensor->begin;
    }
    for (size_t i = 0; !s && i < n; i++) {
        const char *shard[1] = {mods[i]};
        qd_linear l;
        s = qd_linear_plan(&st->quant, ck, mods[i], shard, 1, &l);
        if (s) break;
        st->layers[i].name = mods[i];
        mods[i] = NULL;
        memcpy(st->layers[i].scheme, l.scheme_name, sizeof st->layers[i].scheme);
        st->layers[i].in_features = l.in_features;
        st->layers[i].out_features = l.out_features;
        st->n_layers = i + 1;
        qd_linear_free(&l);
    }
    qd_strmap_free(&index);
    for (size_t i = 0; i < n; i++) free(mods[i]);
    free(mods);
    return s;
}

qd_status qd_component_stats_compute(const qd_repo *r, const qd_component *c, const qd_options *o,
                                     qd_component_stats *st) {
    memset(st, 0, sizeof *st);
    if (c->weights.n_files == 0) return QD_OK;
    qd_options none;
    qd_options_init(&none);
    const char *role = r->layout == QD_LAYOUT_PIPELINE ? c->name : "transformer";
    const qd_options *opts = is_transformer_role(r, c) && o ? o : &none;
    /* a lone .safetensors file is what --transformer-weights-path names: the same rules apply to it */
    qd_options file_opts;
    if (r->layout == QD_LAYOUT_FILE && !opts->transformer_weights_path && c->weights.n_files == 1 && !c->weights.index_path) {
        file_opts = *opts;
        file_opts.transformer_weights_path = c->weights.files[0];
        opts = &file_opts;
    }
    qd_component_source src;
    qd_status s = component_source(r, c, opts, role, &src);
    if (s) return s;
    qd_ckpt *ck = NULL;
    s = qd_weight_set_open(&src.weights, &ck);
    if (!s && !(st->files = calloc(src.weights.n_files + 1, sizeof *st->files))) s = qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < src.weights.n_files; i++) {
        if (!(st->files[i] = strdup(relative_name(c->dir, src.weights.files[i])))) s = qd_fail(QD_ENOMEM, "cannot allocate");
        st->n_files = i + 1;
    }
    for (size_t i = 0; !s && i < ck->n_tensors; i++) {
        const qd_st_tensor *t = ck->entries[i].tensor;
        uint64_t bytes = t->end - t->begin;
        st->tensors++;
        st->elements += t->elements;
        st->bytes += bytes;
        st->dtype_tensors[t->dtype]++;
        st->dtype_bytes[t->dtype] += bytes;
    }
    for (size_t f = 0; !s && f < ck->n_files; f++)
        for (size_t k = 0; k < ck->files[f]->n_meta && !s; k++) s = add_meta_key(st, ck->files[f]->meta[k].key);
    if (!s) {
        s = qd_quant_resolve(opts, &src, ck, c->class_name, &st->quant);
        if (!s) {
            st->has_quant = true;
            s = plan_layers(ck, st);
        }
    }
    qd_ckpt_close(ck);
    qd_component_source_free(&src);
    if (s) {
        qd_fail_context(s, "component '%s'", c->name);
        qd_component_stats_free(st);
    }
    return s;
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
        for (size_t f = 0; f < st->n_files; f++) json_array_append_new(files, json_string(st->files[f]));
        for (int d = 0; d < QD_DTYPE_COUNT; d++) {
            if (!st->dtype_tensors[d]) continue;
            json_object_set_new(dtypes, qd_dtype_name((qd_dtype)d), json_integer((json_int_t)st->dtype_tensors[d]));
            json_object_set_new(dbytes, qd_dtype_name((qd_dtype)d), json_integer((json_int_t)st->dtype_bytes[d]));
        }
        for (size_t k = 0; k < st->n_meta_keys; k++) json_array_append_new(keys, json_string(st->meta_keys[k]));
        json_t *quant = json_null();
        if (st->has_quant) {
            json_t *layers = json_array();
            for (size_t k = 0; k < st->n_layers; k++) {
                const qd_layer_report *lr = &st->layers[k];
                json_array_append_new(layers, json_pack("{s:s, s:s, s:I, s:I, s:I}", "name", lr->name, "scheme", lr->scheme,
                                                        "in_features", (json_int_t)lr->in_features, "out_features",
                                                        (json_int_t)lr->out_features, "bytes", (json_int_t)lr->bytes));
            }
            quant = json_pack("{s:o, s:s, s:b, s:o}", "method",
                              st->quant.method == QD_QM_NONE ? json_null() : json_string(qd_quant_method_name(st->quant.method)),
                              "source", st->quant.source, "online", st->quant.online, "layers", layers);
        }
        json_t *jc = json_pack("{s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:o, s:o, s:o, s:o}", "name", c->name, "class",
                               c->class_name ? json_string(c->class_name) : json_null(), "library",
                               c->library ? json_string(c->library) : json_null(), "files", files, "tensors",
                               (json_int_t)st->tensors, "elements", (json_int_t)st->elements, "bytes",
                               (json_int_t)st->bytes, "dtypes", dtypes, "dtype_bytes", dbytes, "metadata_keys", keys,
                               "quantization", quant ? quant : json_null());
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

qd_status qd_inspect_run(const char *path, const qd_options *o, qd_repo **repo, qd_component_stats **stats) {
    *repo = NULL;
    *stats = NULL;
    qd_repo *r;
    qd_status s = qd_repo_open(path, &r);
    if (s) return s;
    qd_component_stats *st = calloc(r->n_components + 1, sizeof *st);
    if (!st) s = qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < r->n_components; i++) s = qd_component_stats_compute(r, &r->components[i], o, &st[i]);
    if (s) {
        for (size_t i = 0; st && i < r->n_components; i++) qd_component_stats_free(&st[i]);
        free(st);
        qd_repo_close(r);
        return s;
    }
    *repo = r;
    *stats = st;
    return QD_OK;
}

qd_status qd_inspect_json(const char *path, char **json_out) {
    *json_out = NULL;
    qd_repo *r;
    qd_component_stats *stats;
    qd_status s = qd_inspect_run(path, NULL, &r, &stats);
    if (s) return s;
    json_t *doc = NULL;
    s = qd_inspect_build(r, stats, &doc);
    if (!s) {
        *json_out = json_dumps(doc, JSON_INDENT(2));
        if (!*json_out) s = qd_fail(QD_ENOMEM, "cannot serialise the report");
    }
    json_decref(doc);
    for (size_t i = 0; i < r->n_components; i++) qd_component_stats_free(&stats[i]);
    free(stats);
    qd_repo_close(r);
    return s;
}
