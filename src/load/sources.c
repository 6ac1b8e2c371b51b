/* Component sources after flags (see sources.h; quant-sglang.md §1.1, §1.4 step 0, §2). */
#include "load/sources.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/fs.h"
#include "load/hf_cache.h"

bool qd_is_secondary_transformer(const char *component) {
    return !strcmp(component, "transformer_2") || !strcmp(component, "unconditional_transformer");
}

void qd_component_source_free(qd_component_source *s) {
    free(s->component);
    free(s->dir);
    free(s->config_path);
    qd_weight_set_free(&s->weights);
    free(s->override_path);
    free(s->override_config_path);
    memset(s, 0, sizeof *s);
}

static char *config_beside(const char *dir) {
    char *p = qd_path_join(dir, "config.json");
    if (p && !qd_is_file(p)) {
        free(p);
        p = NULL;
    }
    return p;
}

/* A folder given as a weights override (§2.1): its index decides; else, among several files, exactly
 * one *-mixed file is chosen; else every file is a shard of one set. */
static qd_status override_folder(const char *dir, qd_weight_set *out) {
    qd_status s = qd_select_weight_files(dir, out);
    if (s || out->index_path || out->n_files < 2) return s;
    size_t mixed = 0, pick = 0;
    for (size_t i = 0; i < out->n_files; i++) {
        char *base = qd_path_basename(out->files[i]);
        if (base && qd_weight_name_is_mixed(base)) {
            mixed++;
            pick = i;
        }
        free(base);
    }
    if (mixed == 1) {
        char *keep = out->files[pick];
        for (size_t i = 0; i < out->n_files; i++)
            if (i != pick) free(out->files[i]);
        out->files[0] = keep;
        out->n_files = 1;
    }
    return QD_OK;
}

static qd_status override_file(const char *path, qd_weight_set *out) {
    memset(out, 0, sizeof *out);
    if (qd_path_has_suffix(path, ".gguf")) {
        return qd_fail(QD_EUNSUPPORTED, "%s: GGUF checkpoints are not supported by qdit; use a safetensors export", path);
    }
    if (qd_path_has_suffix(path, ".safetensors.index.json")) {
        char *dir = qd_path_dirname(path);
        if (!dir) return qd_fail(QD_ENOMEM, "cannot allocate");
        qd_status s = qd_select_weight_files(dir, out);
        free(dir);
        if (s) return s;
        /* the named index, not whichever one the folder rules would pick */
        free(out->index_path);
        out->index_path = strdup(path);
        return out->index_path ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate");
    }
    if (!qd_path_has_suffix(path, ".safetensors")) {
        return qd_fail(QD_EINVAL, "%s: expected a .safetensors file, an index, a folder or a repo id", path);
    }
    out->files = calloc(1, sizeof *out->files);
    if (!out->files || !(out->files[0] = strdup(path))) return qd_fail(QD_ENOMEM, "cannot allocate");
    out->n_files = 1;
    return QD_OK;
}

qd_status qd_weights_override_resolve(const char *path, qd_weight_set *out, char **config_path) {
    memset(out, 0, sizeof *out);
    *config_path = NULL;
    qd_status s;
    char *local = NULL;
    if (qd_is_file(path) || qd_is_dir(path)) {
        local = strdup(path);
    } else {
        /* org/name, or org/name/path/in/repo.safetensors, in the local hub cache */
        const char *first = strchr(path, '/');
        const char *second = first ? strchr(first + 1, '/') : NULL;
        char repo[512];
        size_t n = second ? (size_t)(second - path) : strlen(path);
        if (!first || n >= sizeof repo) return qd_fail(QD_ENOTFOUND, "%s: no such file or folder", path);
        memcpy(repo, path, n);
        repo[n] = '\0';
        char *snap;
        if ((s = qd_hf_resolve(repo, &snap))) return s;
        local = second ? qd_path_join(snap, second + 1) : strdup(snap);
        free(snap);
        if (local && !qd_is_file(local) && !qd_is_dir(local)) {
            s = qd_fail(QD_ENOTFOUND, "%s: the cached snapshot of %s has no %s", path, repo, local);
            free(local);
            return s;
        }
    }
    if (!local) return qd_fail(QD_ENOMEM, "cannot allocate");
    char *dir;
    if (qd_is_dir(local)) {
        s = override_folder(local, out);
        dir = strdup(local);
    } else {
        s = override_file(local, out);
        dir = qd_path_dirname(local);
    }
    if (!s && dir) *config_path = config_beside(dir);
    free(dir);
    free(local);
    if (s) qd_weight_set_free(out);
    return s;
}

qd_status qd_component_source_resolve(const qd_options *o, const char *component, const char *base_dir,
                                      qd_component_source *out) {
    memset(out, 0, sizeof *out);
    out->component = strdup(component);
    if (!out->component) return qd_fail(QD_ENOMEM, "cannot allocate");
    const char *cp = NULL;
    for (size_t i = 0; i < o->n_component_paths; i++)
        if (!strcmp(o->component_paths[i].component, component)) cp = o->component_paths[i].path;

    qd_status s = QD_OK;
    const char *weights_path = NULL; /* a weights-only override, if any */
    if (cp && (qd_is_dir(cp) || qd_hf_is_repo_id(cp))) {
        /* a whole component folder replaces the base one (§2.3) */
        if (qd_is_dir(cp)) out->dir = strdup(cp);
        else if ((s = qd_hf_resolve(cp, &out->dir))) goto fail;
    } else if (cp) {
        if (!qd_is_file(cp)) {
            s = qd_fail(QD_ENOTFOUND, "--%s-path %s: no such file or folder", component, cp);
            goto fail;
        }
        weights_path = cp; /* a single file: weights only, base config kept */
        if (base_dir) out->dir = strdup(base_dir);
    } else if (base_dir) {
        out->dir = strdup(base_dir);
    }
    if (!strcmp(component, "transformer") && o->transformer_weights_path && !weights_path) {
        weights_path = o->transformer_weights_path;
    }
    if (weights_path) {
        out->weights_override = true;
        out->override_path = strdup(weights_path);
        if ((s = qd_weights_override_resolve(weights_path, &out->weights, &out->override_config_path))) goto fail;
        if (!out->dir) {
            /* no base folder: the override's own folder stands in for it */
            out->dir = qd_path_dirname(out->weights.files[0]);
        }
    } else if (!out->dir) {
        s = qd_fail(QD_EINVAL, "component '%s': no folder for it (give --model-path or --%s-path)", component,
                    component);
        goto fail;
    } else if ((s = qd_select_weight_files(out->dir, &out->weights))) {
        goto fail;
    }
    if (!out->dir) {
        s = qd_fail(QD_ENOMEM, "cannot allocate");
        goto fail;
    }
    out->config_path = config_beside(out->dir);
    return QD_OK;
fail:
    qd_component_source_free(out);
    return s;
}
