/* qdit convert nvfp4-mixed (see nvfp4_mixed.h). */
#include "convert/nvfp4_mixed.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/output.h"
#include "core/log.h"
#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"
#include "io/safetensors.h"

static const char *const FLUX1_PRESET[] = {
    "transformer_blocks.*.norm1.linear*",         "transformer_blocks.*.norm1_context.linear*",
    "transformer_blocks.*.ff.net.0.proj*",        "transformer_blocks.*.ff.net.2*",
    "transformer_blocks.*.ff_context.net.0.proj*", "transformer_blocks.*.ff_context.net.2*",
    "single_transformer_blocks.*.norm.linear*",   "single_transformer_blocks.*.proj_mlp*",
};

bool qd_nvfp4_mixed_glob(const char *p, const char *s) {
    /* iterative wildcard match with backtracking to the last `*` */
    const char *star = NULL, *mark = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            mark = s;
        } else if (*p == *s) {
            p++, s++;
        } else if (star) {
            p = star + 1;
            s = ++mark;
        } else {
            return false;
        }
    }
    while (*p == '*') p++;
    return *p == '\0';
}

/* the module a tensor belongs to */
static char *module_of(const char *name) {
    static const char *const suffixes[] = {".weight_scale_2", ".weight_scale", ".input_scale", ".weight", ".bias"};
    const size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        const size_t l = strlen(suffixes[i]);
        if (n > l && !strcmp(name + n - l, suffixes[i])) return strndup(name, n - l);
    }
    return strdup(name);
}

/* a transformer folder: `path` if it holds config.json, else path/transformer */
static char *transformer_dir(const char *flag, const char *path, qd_status *s) {
    char *cfg = qd_path_join(path, "config.json");
    const bool here = cfg && qd_is_file(cfg);
    free(cfg);
    if (here) return strdup(path);
    char *t = qd_path_join(path, "transformer");
    char *tc = t ? qd_path_join(t, "config.json") : NULL;
    const bool below = tc && qd_is_file(tc);
    free(tc);
    if (below) return t;
    free(t);
    *s = qd_fail(QD_ENOTFOUND, "%s %s: no config.json there or in transformer/", flag, path);
    return NULL;
}

/* name → shard map of a folder (index file, or the single shard); *index_name gets the index file's name */
static qd_status weight_map(const char *flag, const char *dir, json_t **map, char **index_name) {
    static const char *const names[] = {"model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json"};
    *map = NULL, *index_name = NULL;
    char **files = NULL;
    size_t nf = 0;
    for (size_t i = 0; i < 2 && !*index_name; i++) {
        char *p = qd_path_join(dir, names[i]);
        if (p && qd_is_file(p)) *index_name = strdup(names[i]);
        free(p);
    }
    if (!*index_name && !qd_list_files(dir, ".safetensors.index.json", &files, &nf) && nf) *index_name = strdup(files[0]);
    qd_free_names(files, nf);
    if (*index_name) {
        char *p = qd_path_join(dir, *index_name);
        json_t *doc = NULL;
        qd_status s = qd_json_load_object(p, &doc);
        free(p);
        if (s) return s;
        json_t *wm = json_object_get(doc, "weight_map");
        if (!json_is_object(wm)) {
            json_decref(doc);
            return qd_fail(QD_EFORMAT, "%s %s: %s has no weight_map object", flag, dir, *index_name);
        }
        *map = json_deep_copy(wm);
        json_decref(doc);
        return QD_OK;
    }
    if (qd_list_files(dir, ".safetensors", &files, &nf)) return qd_fail(QD_EIO, "%s %s: cannot list it", flag, dir);
    if (nf != 1) {
        qd_free_names(files, nf);
        return qd_fail(QD_EFORMAT, "%s %s: expected an index file or a single .safetensors shard, found %zu shard(s)", flag, dir, nf);
    }
    char *p = qd_path_join(dir, files[0]);
    qd_st_file *f = NULL;
    qd_status s = qd_st_open(p, &f);
    free(p);
    if (!s) {
        *map = json_object();
        for (size_t i = 0; i < f->n_tensors; i++) json_object_set_new(*map, f->tensors[i].name, json_string(files[0]));
        /* "<stem>.safetensors.index.json" for the output */
        const size_t l = strlen(files[0]) - strlen(".safetensors");
        if ((*index_name = malloc(l + strlen(".safetensors.index.json") + 1)))
            sprintf(*index_name, "%.*s.safetensors.index.json", (int)l, files[0]);
    }
    qd_st_close(f);
    qd_free_names(files, nf);
    return s;
}

static bool matches(const char *module, const char *const *pats, int n) {
    for (int i = 0; i < n; i++)
        if (qd_nvfp4_mixed_glob(pats[i], module)) return true;
    return false;
}

static qd_status copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    qd_status s = in && out ? QD_OK : qd_fail(QD_EIO, "cannot copy %s to %s", from, to);
    char buf[65536];
    size_t n;
    while (!s && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) s = qd_fail(QD_EIO, "%s: cannot write it", to);
    if (in) fclose(in);
    if (out && fclose(out) && !s) s = qd_fail(QD_EIO, "%s: cannot write it", to);
    return s;
}

qd_status qd_convert_nvfp4_mixed(const qd_nvfp4_mixed_args *a) {
    if (!a->base_dir) return qd_fail(QD_EINVAL, "convert nvfp4-mixed: --base-transformer-dir is required (the BF16 transformer)");
    if (!a->modelopt_dir) return qd_fail(QD_EINVAL, "convert nvfp4-mixed: --modelopt-hf-dir is required (the ModelOpt NVFP4 export)");
    if (!a->output_dir) return qd_fail(QD_EINVAL, "convert nvfp4-mixed: --output-dir is required");
    const char *preset = a->preset ? a->preset : "none";
    if (strcmp(preset, "none") && strcmp(preset, "flux1-nvfp4"))
        return qd_fail(QD_EINVAL, "--pattern-preset %s: expected none or flux1-nvfp4", preset);
    const char *pats[QD_NVFP4_MIXED_MAX_PATTERNS + 8];
    int np = 0;
    if (!strcmp(preset, "flux1-nvfp4"))
        for (size_t i = 0; i < sizeof FLUX1_PRESET / sizeof *FLUX1_PRESET; i++) pats[np++] = FLUX1_PRESET[i];
    for (int i = 0; i < a->n_patterns; i++) pats[np++] = a->patterns[i];
    qd_status s = QD_OK;
    char *src = transformer_dir("--modelopt-hf-dir", a->modelopt_dir, &s);
    char *base = s ? NULL : transformer_dir("--base-transformer-dir", a->base_dir, &s);
    /* the output config */
    json_t *cfg = NULL, *smap = NULL, *bmap = NULL;
    char *sindex = NULL, *bindex = NULL, *serialized = NULL;
    char *cin = src ? qd_path_join(src, "config.json") : NULL;
    if (!s) s = qd_json_load_object(cin, &cfg);
    json_t *qc = cfg ? json_object_get(cfg, "quantization_config") : NULL;
    if (!s && !json_is_object(qc)) s = qd_fail(QD_EFORMAT, "%s: expected a flat quantization_config object", cin);
    const char *method = qc ? json_string_value(json_object_get(qc, "quant_method")) : NULL;
    const char *algo = qc ? json_string_value(json_object_get(qc, "quant_algo")) : NULL;
    char algo_up[64] = "";
    for (size_t i = 0; algo && algo[i] && i + 1 < sizeof algo_up; i++) algo_up[i] = (char)toupper((unsigned char)algo[i]), algo_up[i + 1] = 0;
    if (!s && (!method || strcmp(method, "modelopt") || !strstr(algo_up, "FP4")))
        s = qd_fail(QD_EFORMAT, "%s: only ModelOpt NVFP4 exports are supported (quant_method modelopt, quant_algo FP4/NVFP4), got %s / %s",
                    cin, method ? method : "(none)", algo ? algo : "(none)");
    if (!s) {
        json_t *ignore = json_object_get(qc, "ignore");
        json_t *list = json_is_array(ignore) ? json_deep_copy(ignore) : json_array();
        for (int i = 0; i < np; i++) {
            bool have = false;
            size_t j;
            json_t *v;
            json_array_foreach(list, j, v) have = have || (json_is_string(v) && !strcmp(json_string_value(v), pats[i]));
            if (!have) json_array_append_new(list, json_string(pats[i]));
        }
        json_object_set_new(qc, "ignore", list);
        if (!json_object_get(qc, "quant_type")) json_object_set_new(qc, "quant_type", json_string(algo_up));
        json_object_set_new(qc, "swap_weight_nibbles", json_boolean(a->swap_weight_nibbles));
        serialized = qd_json_dumps_python(qc); /* as Python's json.dumps(sort_keys=True) */
        if (!serialized) s = qd_fail(QD_ENOMEM, "cannot allocate");
    }
    if (!s) s = weight_map("--modelopt-hf-dir", src, &smap, &sindex);
    if (!s) s = weight_map("--base-transformer-dir", base, &bmap, &bindex);
    qd_out_dir od = {0};
    if (!s) s = qd_out_dir_begin("--output-dir", a->output_dir, a->overwrite, NULL, &od);
    const char *out_dir = od.tmp;
    /* the export's other files, then the new config */
    char **files = NULL;
    size_t nf = 0;
    if (!s && !qd_list_files(src, "", &files, &nf)) {
        for (size_t i = 0; !s && i < nf; i++) {
            if (qd_path_has_suffix(files[i], ".safetensors") || qd_path_has_suffix(files[i], ".safetensors.index.json")) continue;
            char *from = qd_path_join(src, files[i]), *to = qd_path_join(out_dir, files[i]);
            if (qd_is_file(from)) s = copy_file(from, to);
            free(from), free(to);
        }
    }
    qd_free_names(files, nf);
    char *cout = s ? NULL : qd_path_join(out_dir, "config.json");
    if (!s && json_dump_file(cfg, cout, JSON_INDENT(2) | JSON_SORT_KEYS)) s = qd_fail(QD_EIO, "%s: cannot write it", cout);
    /* per export shard */
    json_t *out_map = json_object(), *shards = json_object(), *fallback_modules = json_object();
    const char *key;
    json_t *v;
    if (!s) json_object_foreach(smap, key, v) if (json_is_string(v)) json_object_set_new(shards, json_string_value(v), json_true());
    /* the fallback modules: those with a tensor in both checkpoints whose module name matches a pattern */
    if (!s) json_object_foreach(smap, key, v) {
        if (!json_object_get(bmap, key)) continue;
        char *mod = module_of(key);
        if (mod && matches(mod, pats, np)) json_object_set_new(fallback_modules, mod, json_true());
        free(mod);
    }
    uint64_t total = 0;
    int replaced = 0, removed = 0;
    qd_st_file *bfile = NULL;
    char *bfile_name = NULL;
    const char *shard;
    json_t *unused;
    qd_progress pr;
    int64_t done = 0;
    qd_progress_start(&pr, "nvfp4-mixed", 0);
    json_object_foreach(shards, shard, unused) {
        if (s) break;
        char *in = qd_path_join(src, shard), *out = qd_path_join(out_dir, shard);
        qd_st_file *f = NULL;
        qd_st_writer *w = NULL;
        s = qd_st_open(in, &f);
        if (!s) s = qd_st_writer_create(out, &w);
        /* what each tensor becomes: dropped, replaced by the base's (its file opened on demand), or kept */
        enum { KEEP, DROP, BASE } *fate = f ? calloc(f->n_tensors + 1, sizeof *fate) : NULL;
        const qd_st_tensor **bt = f ? calloc(f->n_tensors + 1, sizeof *bt) : NULL;
        qd_st_file **bf = f ? calloc(f->n_tensors + 1, sizeof *bf) : NULL;
        if (!s && (!fate || !bt || !bf)) s = qd_fail(QD_ENOMEM, "cannot allocate");
        for (size_t i = 0; !s && i < f->n_tensors; i++) {
            const qd_st_tensor *t = &f->tensors[i];
            if (strstr(t->name, "_quantizer.")) {
                fate[i] = DROP, removed++;
                continue;
            }
            char *mod = module_of(t->name);
            const bool fallback = mod && json_object_get(fallback_modules, mod);
            if (!fallback) {
                fate[i] = KEEP;
            } else if (json_is_string(json_object_get(bmap, t->name))) {
                const char *bname = json_string_value(json_object_get(bmap, t->name));
                if (!bfile_name || strcmp(bfile_name, bname)) {
                    char *bp = qd_path_join(base, bname);
                    qd_st_file *nb = NULL;
                    s = qd_st_open(bp, &nb);
                    free(bp);
                    if (!s) {
                        /* keep every base file opened for this shard alive until it is written */
                        bf[i] = nb;
                        bfile = nb;
                        free(bfile_name);
                        bfile_name = strdup(bname);
                    }
                }
                if (!s && !(bt[i] = qd_st_find(bfile, t->name))) s = qd_fail(QD_EFORMAT, "%s: the index names '%s' but the shard lacks it", base, t->name);
                if (!s) fate[i] = BASE, replaced++;
            } else {
                fate[i] = DROP, removed++;
            }
            free(mod);
        }
        /* header, metadata, data */
        for (size_t i = 0; !s && i < f->n_tensors; i++) {
            if (fate[i] == DROP) continue;
            const qd_st_tensor *t = fate[i] == BASE ? bt[i] : &f->tensors[i];
            s = qd_st_writer_add(w, f->tensors[i].name, t->dtype, t->rank, t->shape);
            if (!s) {
                json_object_set_new(out_map, f->tensors[i].name, json_string(shard));
                total += t->end - t->begin;
            }
        }
        bool has_format = false;
        for (size_t i = 0; !s && i < f->n_meta; i++) {
            if (!strcmp(f->meta[i].key, "quantization_config") || !strcmp(f->meta[i].key, "_quantization_metadata")) continue;
            has_format = has_format || !strcmp(f->meta[i].key, "format");
            s = qd_st_writer_meta(w, f->meta[i].key, f->meta[i].value);
        }
        if (!s && !has_format) s = qd_st_writer_meta(w, "format", "pt");
        if (!s) s = qd_st_writer_meta(w, "quantization_config", serialized);
        if (!s) s = qd_st_writer_meta(w, "_quantization_metadata", serialized);
        if (!s) s = qd_st_writer_begin(w);
        for (size_t i = 0; !s && i < f->n_tensors; i++) {
            if (fate[i] == DROP) continue;
            /* the base tensor's file: the last one opened at or before i that holds it */
            const qd_st_file *owner = f;
            if (fate[i] == BASE)
                for (size_t j = i + 1; j-- > 0;)
                    if (bf[j] && qd_st_find(bf[j], f->tensors[i].name) == bt[i]) {
                        owner = bf[j];
                        break;
                    }
            const qd_st_tensor *t = fate[i] == BASE ? bt[i] : &f->tensors[i];
            s = qd_st_writer_put(w, f->tensors[i].name, qd_st_data(owner, t), t->end - t->begin);
            qd_release_mapped(qd_st_data(owner, t), t->end - t->begin); /* memory: about one tensor */
            qd_progress_step(&pr, ++done, total);
        }
        if (!s) {
            s = qd_st_writer_finish(w);
            w = NULL;
        }
        if (w) qd_st_writer_abort(w);
        for (size_t i = 0; bf && i < f->n_tensors; i++) qd_st_close(bf[i]);
        bfile = NULL;
        free(bfile_name);
        bfile_name = NULL;
        free(fate), free(bt), free(bf);
        qd_st_close(f);
        free(in), free(out);
    }
    qd_progress_end(&pr);
    char *ipath = sindex && !s ? qd_path_join(out_dir, sindex) : NULL;
    if (!s) {
        json_t *index = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total, "weight_map", out_map);
        if (!index || json_dump_file(index, ipath, JSON_INDENT(2) | JSON_SORT_KEYS)) s = qd_fail(QD_EIO, "%s: cannot write it", ipath);
        json_decref(index);
    }
    if (!s) s = qd_out_dir_commit(&od);
    else qd_out_dir_abort(&od);
    if (!s) {
        json_t *st = json_pack("{s:I, s:I, s:i, s:i, s:b}", "fallback_modules", (json_int_t)json_object_size(fallback_modules), "output_shards",
                               (json_int_t)json_object_size(shards), "removed_aux_tensors", removed, "replaced_tensors", replaced,
                               "swap_weight_nibbles", a->swap_weight_nibbles);
        if (st) qd_print_stats(st);
        json_decref(st);
    }
    free(ipath), free(cout), free(cin), free(src), free(base), free(sindex), free(bindex), free(serialized);
    json_decref(cfg), json_decref(smap), json_decref(bmap), json_decref(out_map), json_decref(shards), json_decref(fallback_modules);
    return s;
}
