/* A converter's source transformer (see source.h). */
#include "convert/source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"
#include "load/repo.h"
#include "quant/resolve.h"

/* The transformer's folder inside what --model-path names. */
static qd_status model_path_component(const char *model_path, char **dir) {
    qd_repo *r;
    qd_status s = qd_repo_open(model_path, &r);
    if (s) return qd_fail_context(s, "--model-path %s", model_path);
    const qd_component *c = NULL;
    if (r->layout == QD_LAYOUT_PIPELINE) {
        for (size_t i = 0; i < r->n_components; i++)
            if (!strcmp(r->components[i].name, "transformer")) c = &r->components[i];
    } else if (r->n_components == 1) {
        c = &r->components[0];
    }
    if (!c) {
        s = qd_fail(QD_EINVAL, "--model-path %s: no transformer component in it (a %s with %zu components)", model_path,
                    qd_layout_name(r->layout), r->n_components);
    } else if (!(*dir = strdup(c->dir))) {
        s = qd_fail(QD_ENOMEM, "cannot allocate");
    }
    qd_repo_close(r);
    return s;
}

static qd_status load_config(qd_convert_source *cs) {
    const char *path = cs->src.config_path ? cs->src.config_path : cs->src.override_config_path;
    if (path) {
        cs->cfg_label = strdup(path);
        return qd_json_load_object(path, &cs->cfg);
    }
    /* a lone Nunchaku file carries its config in the metadata (formats.md §5.1) */
    for (size_t i = 0; i < cs->ck->n_files; i++) {
        const char *text = qd_st_meta_get(cs->ck->files[i], "config");
        if (!text) continue;
        char label[1100];
        snprintf(label, sizeof label, "%s (metadata 'config')", cs->ck->files[i]->path);
        cs->cfg_label = strdup(label);
        qd_status s = qd_json_parse(label, text, strlen(text), &cs->cfg);
        if (!s && !json_is_object(cs->cfg)) s = qd_fail(QD_EFORMAT, "%s: not a JSON object", label);
        return s;
    }
    return qd_fail(QD_EFORMAT, "%s: no config.json beside the weights and no 'config' metadata in them, so the model is unknown",
                   cs->src.dir ? cs->src.dir : cs->ck->files[0]->path);
}

qd_status qd_convert_source_open(const qd_options *o, const char *path, qd_convert_source *out) {
    memset(out, 0, sizeof *out);
    qd_quant_config_init(&out->quant);
    qd_options opts = *o;
    char *base = NULL;
    qd_status s = QD_OK;
    if (path && o->model_path) {
        return qd_fail(QD_EINVAL, "PATH '%s' and --model-path '%s' both name the source; give one", path, o->model_path);
    }
    if (path && qd_is_dir(path)) {
        base = strdup(path);
    } else if (path && qd_is_file(path)) {
        if (o->transformer_weights_path) {
            return qd_fail(QD_EINVAL, "PATH '%s' is a weights file and --transformer-weights-path '%s' is another; give one", path,
                           o->transformer_weights_path);
        }
        opts.transformer_weights_path = path;
    } else if (path) {
        return qd_fail(QD_ENOTFOUND, "%s: no such folder or .safetensors file", path);
    } else if (o->model_path) {
        s = model_path_component(o->model_path, &base);
    } else {
        bool any = o->transformer_weights_path != NULL;
        for (size_t i = 0; i < o->n_component_paths; i++) any |= !strcmp(o->component_paths[i].component, "transformer");
        if (!any) {
            return qd_fail(QD_EINVAL, "no source: give a transformer folder or .safetensors file, --model-path, "
                                      "--transformer-path or --transformer-weights-path");
        }
    }
    if (!s) s = qd_component_source_resolve(&opts, "transformer", base, &out->src);
    free(base);
    if (!s) s = qd_weight_set_open(&out->src.weights, &out->ck);
    if (!s) s = load_config(out);
    if (!s) out->class_name = qd_json_string(out->cfg, "_class_name");
    if (!s && !out->class_name) s = qd_fail(QD_EFORMAT, "%s: no _class_name, so the model is unknown", out->cfg_label);
    if (!s) s = qd_quant_resolve(&opts, &out->src, out->ck, out->class_name, &out->quant);
    if (s) qd_convert_source_close(out);
    return s;
}

void qd_convert_source_close(qd_convert_source *s) {
    qd_quant_config_free(&s->quant);
    qd_ckpt_close(s->ck);
    qd_component_source_free(&s->src);
    json_decref(s->cfg);
    free(s->cfg_label);
    memset(s, 0, sizeof *s);
}
