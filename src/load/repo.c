/* Repository layout detection (see repo.h; file selection rules in weights.h). */
#include "load/repo.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"
#include "load/hf_cache.h"

const char *qd_layout_name(qd_layout l) {
    switch (l) {
    case QD_LAYOUT_PIPELINE: return "pipeline";
    case QD_LAYOUT_COMPONENT: return "component";
    case QD_LAYOUT_FILE: return "file";
    case QD_LAYOUT_FOLDER: return "folder";
    }
    return "?";
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void component_free(qd_component *c) {
    free(c->name);
    free(c->dir);
    free(c->library);
    free(c->class_name);
    free(c->config_path);
    qd_weight_set_free(&c->weights);
}

void qd_repo_close(qd_repo *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_components; i++) component_free(&r->components[i]);
    free(r->components);
    free(r->path);
    free(r->root);
    free(r->repo_id);
    free(r->pipeline_class);
    free(r);
}

static qd_component *add_component(qd_repo *r) {
    qd_component *v = realloc(r->components, (r->n_components + 1) * sizeof *v);
    if (!v) return NULL;
    r->components = v;
    qd_component *c = &v[r->n_components++];
    memset(c, 0, sizeof *c);
    return c;
}

/* ---- model_index.json ---- */

void qd_model_index_free(qd_model_index_entry *entries, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(entries[i].name);
        free(entries[i].library);
        free(entries[i].class_name);
    }
    free(entries);
}

qd_status qd_model_index_parse(const char *label, const char *text, size_t len, char **pipeline_class,
                               qd_model_index_entry **entries, size_t *n) {
    *pipeline_class = NULL;
    *entries = NULL;
    *n = 0;
    json_t *root;
    qd_status s = qd_json_parse(label, text, len, &root);
    if (s) return s;
    if (!json_is_object(root)) {
        json_decref(root);
        return qd_fail(QD_EFORMAT, "%s: expected a JSON object of component name → [library, class]", label);
    }
    const char *pc = qd_json_string(root, "_class_name");
    qd_model_index_entry *v = calloc(json_object_size(root) + 1, sizeof *v);
    size_t count = 0;
    if (!v || (pc && !(*pipeline_class = strdup(pc)))) {
        s = qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (key[0] == '_') continue;
        json_t *lib = json_array_get(val, 0), *cls = json_array_get(val, 1);
        if (!json_is_array(val) || json_array_size(val) != 2 || (!json_is_string(lib) && !json_is_null(lib)) ||
            (!json_is_string(cls) && !json_is_null(cls))) {
            /* Pipelines also carry plain settings (booleans, numbers) at the top level. */
            if (json_is_boolean(val) || json_is_number(val) || json_is_null(val)) continue;
            s = qd_fail(QD_EFORMAT, "%s: component '%s' must be a [library, class] pair", label, key);
            goto done;
        }
        if (json_is_null(lib) && json_is_null(cls)) continue; /* an absent optional component */
        if (strchr(key, '/') || !strcmp(key, ".") || !strcmp(key, "..") || !key[0]) {
            s = qd_fail(QD_EFORMAT, "%s: component name '%s' is not a folder name", label, key);
            goto done;
        }
        qd_model_index_entry *e = &v[count++];
        e->name = strdup(key);
        e->library = dup_or_null(json_string_value(lib));
        e->class_name = dup_or_null(json_string_value(cls));
        if (!e->name || (json_is_string(lib) && !e->library) || (json_is_string(cls) && !e->class_name)) {
            s = qd_fail(QD_ENOMEM, "%s: cannot allocate", label);
            goto done;
        }
    }
done:
    json_decref(root);
    if (s) {
        qd_model_index_free(v, count);
        free(*pipeline_class);
        *pipeline_class = NULL;
        return s;
    }
    *entries = v;
    *n = count;
    return QD_OK;
}

/* ---- component class ---- */

/* Read `dir/file` as a JSON object if it exists; *obj stays NULL when the file is absent. */
static qd_status load_optional_object(const char *dir, const char *file, json_t **obj, char **path_out) {
    *obj = NULL;
    char *path = qd_path_join(dir, file);
    if (!path) return qd_fail(QD_ENOMEM, "cannot allocate");
    if (!qd_is_file(path)) {
        struct stat st;
        qd_status s = QD_OK;
        if (lstat(path, &st) == 0) s = qd_fail(QD_EIO, "%s: exists but is not a readable regular file", path);
        free(path);
        return s;
    }
    qd_status s = qd_json_load_object(path, obj);
    if (s || !path_out) free(path);
    else *path_out = path;
    return s;
}

qd_status qd_component_class(const char *dir, char **class_name, char **config_path) {
    *class_name = NULL;
    if (config_path) *config_path = NULL;
    static const struct {
        const char *file, *key;
    } sources[] = {{"config.json", "_class_name"},
                   {"config.json", "architectures"},
                   {"scheduler_config.json", "_class_name"},
                   {"tokenizer_config.json", "tokenizer_class"},
                   {"preprocessor_config.json", "image_processor_type"}};
    const char *loaded = NULL;
    json_t *obj = NULL;
    for (size_t i = 0; i < sizeof sources / sizeof *sources && !*class_name; i++) {
        if (!loaded || strcmp(loaded, sources[i].file) != 0) {
            json_decref(obj);
            char *path = NULL;
            qd_status s = load_optional_object(dir, sources[i].file, &obj, &path);
            if (s) return s;
            loaded = sources[i].file;
            if (obj && config_path && !*config_path) *config_path = path;
            else free(path);
        }
        if (!obj) continue;
        json_t *v = json_object_get(obj, sources[i].key);
        if (json_is_array(v)) v = json_array_get(v, 0);
        if (json_is_string(v) && !(*class_name = strdup(json_string_value(v)))) {
            json_decref(obj);
            return qd_fail(QD_ENOMEM, "cannot allocate");
        }
    }
    json_decref(obj);
    return QD_OK;
}

/* ---- layouts ---- */

static bool has_index(const char *dir);

static bool has_weights_or_index(const char *dir) {
    char **names;
    size_t n;
    if (qd_list_files(dir, ".safetensors", &names, &n) == 0 && n) {
        qd_free_names(names, n);
        return true;
    }
    return has_index(dir);
}

static bool has_index(const char *dir) {
    char **names;
    size_t n;
    if (qd_list_files(dir, ".safetensors.index.json", &names, &n) != 0) return false;
    qd_free_names(names, n);
    return n > 0;
}

static bool has_file(const char *dir, const char *name) {
    char *p = qd_path_join(dir, name);
    bool yes = p && qd_is_file(p);
    free(p);
    return yes;
}

/* Fill a component from a folder: class, config, and (when it has a config.json or weights) its
 * weight files. A config.json without weights is an error — a model with nothing to load — unless the
 * repo was opened for its configs only (qd_repo_open_configs). */
static qd_status fill_component(const qd_repo *r, qd_component *c, const char *name, const char *dir) {
    c->name = strdup(name);
    c->dir = strdup(dir);
    if (!c->name || !c->dir) return qd_fail(QD_ENOMEM, "cannot allocate");
    char *cls = NULL;
    qd_status s = qd_component_class(dir, &cls, &c->config_path);
    if (s) return s;
    if (!c->class_name) c->class_name = cls;
    else free(cls);
    if (has_weights_or_index(dir) || has_file(dir, "config.json")) {
        s = qd_select_weight_files(dir, &c->weights);
        if (s == QD_ENOTFOUND && has_file(dir, "config.json")) {
            if (r->configs_only) {
                qd_clear_error();
                return QD_OK;
            }
            return qd_fail_context(QD_ENOTFOUND, "component '%s' has a config.json but no weights", name);
        }
    }
    return s;
}

static qd_status open_pipeline(qd_repo *r, const char *index_path) {
    char *text;
    size_t len;
    qd_status s = qd_read_small_file(index_path, QD_JSON_MAX_FILE, &text, &len);
    if (s) return s;
    qd_model_index_entry *entries;
    size_t n;
    s = qd_model_index_parse(index_path, text, len, &r->pipeline_class, &entries, &n);
    free(text);
    if (s) return s;
    r->layout = QD_LAYOUT_PIPELINE;
    for (size_t i = 0; i < n && !s; i++) {
        char *dir = qd_path_join(r->root, entries[i].name);
        if (!dir) {
            s = qd_fail(QD_ENOMEM, "cannot allocate");
            break;
        }
        if (!qd_is_dir(dir)) {
            s = qd_fail(QD_ENOTFOUND, "%s names component '%s' (%s), but the folder %s is missing", index_path,
                        entries[i].name, entries[i].class_name ? entries[i].class_name : "?", dir);
        } else {
            qd_component *c = add_component(r);
            if (!c) s = qd_fail(QD_ENOMEM, "cannot allocate");
            else {
                c->library = dup_or_null(entries[i].library);
                c->class_name = dup_or_null(entries[i].class_name);
                s = fill_component(r, c, entries[i].name, dir);
            }
        }
        free(dir);
    }
    qd_model_index_free(entries, n);
    return s;
}

/* Group loose weight files of a folder by shard family ("x-00001-of-00002" → "x"). */
static char *shard_family(const char *name) {
    bool precision;
    char *fam = qd_weight_name_family(name, &precision);
    /* keep precision variants apart here: they are different files, not shards */
    if (fam && precision) {
        free(fam);
        const char *dot = strrchr(name, '.');
        fam = strndup(name, dot ? (size_t)(dot - name) : strlen(name));
    }
    return fam;
}

static qd_status open_folder(qd_repo *r) {
    char **files = NULL, **dirs = NULL;
    size_t nf = 0, nd = 0;
    if (qd_list_files(r->root, ".safetensors", &files, &nf) != 0 || qd_list_dirs(r->root, &dirs, &nd) != 0) {
        qd_free_names(files, nf);
        return qd_fail(QD_EIO, "%s: cannot list the folder", r->root);
    }
    qd_status s = QD_OK;
    size_t sub = 0;
    for (size_t i = 0; i < nd; i++) {
        char *d = qd_path_join(r->root, dirs[i]);
        if (d && (has_file(d, "config.json") || has_weights_or_index(d))) sub++;
        free(d);
    }
    /* One shard family and no component sub-folders: a weights-only component folder. */
    bool one_family = nf > 0;
    char *first = nf ? shard_family(files[0]) : NULL;
    for (size_t i = 1; i < nf && one_family; i++) {
        char *f = shard_family(files[i]);
        one_family = f && first && strcmp(f, first) == 0;
        free(f);
    }
    free(first);
    if (one_family && sub == 0) {
        r->layout = QD_LAYOUT_COMPONENT;
        char *name = qd_path_basename(r->root);
        qd_component *c = add_component(r);
        s = !c || !name ? qd_fail(QD_ENOMEM, "cannot allocate") : fill_component(r, c, name, r->root);
        free(name);
        goto done;
    }
    if (nf == 0 && sub == 0) {
        s = qd_fail(QD_ENOTFOUND, "%s: no model_index.json, config.json, .safetensors file or component folder here",
                    r->root);
        goto done;
    }
    r->layout = QD_LAYOUT_FOLDER;
    for (size_t i = 0; i < nd && !s; i++) {
        char *d = qd_path_join(r->root, dirs[i]);
        if (!d) s = qd_fail(QD_ENOMEM, "cannot allocate");
        else if (has_file(d, "config.json") || has_weights_or_index(d)) {
            qd_component *c = add_component(r);
            s = c ? fill_component(r, c, dirs[i], d) : qd_fail(QD_ENOMEM, "cannot allocate");
        }
        free(d);
    }
    /* Each loose family becomes its own component, named after its first file. */
    for (size_t i = 0; i < nf && !s;) {
        char *fam = shard_family(files[i]);
        size_t j = i + 1;
        while (fam && j < nf) {
            char *g = shard_family(files[j]);
            bool same = g && strcmp(g, fam) == 0;
            free(g);
            if (!same) break;
            j++;
        }
        free(fam);
        qd_component *c = add_component(r);
        if (!c || !(c->name = strdup(files[i])) || !(c->dir = strdup(r->root)) ||
            !(c->weights.files = calloc(j - i, sizeof(char *)))) {
            s = qd_fail(QD_ENOMEM, "cannot allocate");
            break;
        }
        for (size_t k = i; k < j && !s; k++) {
            if (!(c->weights.files[c->weights.n_files++] = qd_path_join(r->root, files[k]))) {
                s = qd_fail(QD_ENOMEM, "cannot allocate");
            }
        }
        i = j;
    }
done:
    qd_free_names(files, nf);
    qd_free_names(dirs, nd);
    return s;
}

static qd_status open_file(qd_repo *r) {
    const char *p = r->root;
    r->layout = QD_LAYOUT_FILE;
    bool index = qd_path_has_suffix(p, ".safetensors.index.json");
    if (!index && !qd_path_has_suffix(p, ".safetensors")) {
        return qd_fail(QD_EINVAL, "%s: expected a .safetensors file, a *.safetensors.index.json weight map or a folder",
                       p);
    }
    char *dir = qd_path_dirname(p);
    char *name = dir ? qd_path_basename(dir) : NULL;
    qd_component *c = add_component(r);
    if (!dir || !name || !c) {
        free(dir);
        free(name);
        return qd_fail(QD_ENOMEM, "cannot allocate");
    }
    c->name = name;
    c->dir = dir;
    /* An adjacent config.json describes the file (as for --transformer-weights-path). */
    qd_status s = qd_component_class(dir, &c->class_name, &c->config_path);
    if (s) return s;
    if (index) {
        char *text;
        size_t len;
        char **shards;
        size_t n;
        if ((s = qd_read_small_file(p, QD_JSON_MAX_FILE, &text, &len))) return s;
        s = qd_ckpt_parse_index(p, text, len, &shards, &n);
        free(text);
        if (s) return s;
        c->weights.files = shards;
        c->weights.n_files = n;
        c->weights.index_path = strdup(p);
        for (size_t i = 0; i < n; i++) {
            char *full = qd_path_join(dir, shards[i]);
            if (!full || !c->weights.index_path) return qd_fail(QD_ENOMEM, "cannot allocate");
            free(shards[i]);
            shards[i] = full;
        }
        return QD_OK;
    }
    c->weights.files = calloc(1, sizeof(char *));
    if (!c->weights.files || !(c->weights.files[0] = strdup(p))) return qd_fail(QD_ENOMEM, "cannot allocate");
    c->weights.n_files = 1;
    return QD_OK;
}

static qd_status repo_open(const char *path, bool configs_only, qd_repo **out);

qd_status qd_repo_open(const char *path, qd_repo **out) { return repo_open(path, false, out); }
qd_status qd_repo_open_configs(const char *path, qd_repo **out) { return repo_open(path, true, out); }

static qd_status repo_open(const char *path, bool configs_only, qd_repo **out) {
    *out = NULL;
    qd_repo *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return qd_fail(QD_ENOMEM, "cannot allocate");
    }
    r->configs_only = configs_only;
    qd_status s = QD_OK;
    struct stat st;
    if (stat(path, &st) == 0) {
        r->root = strdup(path);
    } else if (qd_hf_is_repo_id(path)) {
        s = qd_hf_resolve(path, &r->root);
        if (!s) r->repo_id = strdup(path);
    } else {
        s = qd_fail(QD_ENOTFOUND, "%s: no such file or folder", path);
    }
    if (!s && !r->root) s = qd_fail(QD_ENOMEM, "cannot allocate");
    if (!s) {
        if (qd_is_file(r->root)) {
            s = open_file(r);
        } else if (!qd_is_dir(r->root)) {
            s = qd_fail(QD_EINVAL, "%s: neither a regular file nor a folder", r->root);
        } else if (has_file(r->root, "model_index.json")) {
            char *idx = qd_path_join(r->root, "model_index.json");
            s = idx ? open_pipeline(r, idx) : qd_fail(QD_ENOMEM, "cannot allocate");
            free(idx);
        } else if (has_file(r->root, "config.json") || has_index(r->root)) {
            r->layout = QD_LAYOUT_COMPONENT;
            char *name = qd_path_basename(r->root);
            qd_component *c = add_component(r);
            s = !c || !name ? qd_fail(QD_ENOMEM, "cannot allocate") : fill_component(r, c, name, r->root);
            free(name);
        } else {
            s = open_folder(r);
        }
    }
    if (s) {
        qd_repo_close(r);
        return s;
    }
    *out = r;
    return QD_OK;
}
