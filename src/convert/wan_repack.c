/* qdit convert wan-repack (see wan_repack.h; quant-sglang.md §5.4). */
#include "convert/wan_repack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert/output.h"
#include "core/status.h"
#include "core/strmap.h"
#include "io/fs.h"
#include "io/safetensors.h"

#define NAME_LEN 512

const char *const qd_wan_repack_rules[][2] = {
    {"time_embedding.0", "condition_embedder.time_embedder.linear_1"},
    {"time_embedding.2", "condition_embedder.time_embedder.linear_2"},
    {"text_embedding.0", "condition_embedder.text_embedder.linear_1"},
    {"text_embedding.2", "condition_embedder.text_embedder.linear_2"},
    {"time_projection.1", "condition_embedder.time_proj"},
    {"head.modulation", "scale_shift_table"},
    {"head.head", "proj_out"},
    {"modulation", "scale_shift_table"},
    {"ffn.0", "ffn.net.0.proj"},
    {"ffn.2", "ffn.net.2"},
    /* Wan's blocks call their norms norm1, norm3 (cross-attention), norm2; diffusers numbers them in order */
    {"norm2", "norm__placeholder"},
    {"norm3", "norm2"},
    {"norm__placeholder", "norm3"},
    /* I2V image embedder; FLF2V position embedding */
    {"img_emb.proj.0", "condition_embedder.image_embedder.norm1"},
    {"img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"},
    {"img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"},
    {"img_emb.proj.4", "condition_embedder.image_embedder.norm2"},
    {"img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"},
    {"self_attn.q", "attn1.to_q"},
    {"self_attn.k", "attn1.to_k"},
    {"self_attn.v", "attn1.to_v"},
    {"self_attn.o", "attn1.to_out.0"},
    {"self_attn.norm_q", "attn1.norm_q"},
    {"self_attn.norm_k", "attn1.norm_k"},
    {"cross_attn.q", "attn2.to_q"},
    {"cross_attn.k", "attn2.to_k"},
    {"cross_attn.v", "attn2.to_v"},
    {"cross_attn.o", "attn2.to_out.0"},
    {"cross_attn.norm_q", "attn2.norm_q"},
    {"cross_attn.norm_k", "attn2.norm_k"},
    {"attn2.to_k_img", "attn2.add_k_proj"},
    {"attn2.to_v_img", "attn2.add_v_proj"},
    {"attn2.norm_k_img", "attn2.norm_added_k"},
    /* msModelSlim's MXFP4 wrapper (`.linear.`) and smooth-quant scale (`.div.mul_scale`) */
    {".linear.", "."},
    {".div.", "."},
    {NULL, NULL},
};

/* Python's str.replace: every non-overlapping occurrence, left to right. */
static bool replace_all(const char *in, const char *from, const char *to, char *out, size_t n) {
    const size_t lf = strlen(from), lt = strlen(to);
    size_t o = 0;
    for (const char *p = in; *p;) {
        const char *hit = strstr(p, from);
        const size_t keep = hit ? (size_t)(hit - p) : strlen(p);
        if (o + keep + (hit ? lt : 0) >= n) return false;
        memcpy(out + o, p, keep), o += keep;
        if (!hit) break;
        memcpy(out + o, to, lt), o += lt;
        p = hit + lf;
    }
    out[o] = 0;
    return true;
}

bool qd_wan_repack_rename(const char *name, char *out, size_t n) {
    char a[NAME_LEN], b[NAME_LEN];
    if (strlen(name) >= sizeof a) return false;
    strcpy(a, name);
    for (int i = 0; qd_wan_repack_rules[i][0]; i++) {
        if (!replace_all(a, qd_wan_repack_rules[i][0], qd_wan_repack_rules[i][1], b, sizeof b)) return false;
        memcpy(a, b, strlen(b) + 1);
    }
    if (strlen(a) >= n) return false;
    strcpy(out, a);
    return true;
}

/* ---- copying the base ---- */

static qd_status copy_file(const char *src, const char *dst, mode_t mode, qd_wan_repack_report *rep) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return qd_fail(QD_EIO, "--original-model-path: cannot read %s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 0777);
    if (out < 0) {
        close(in);
        return qd_fail(QD_EIO, "%s: cannot create it: %s", dst, strerror(errno));
    }
    enum { CHUNK = 1 << 20 };
    char *buf = malloc(CHUNK);
    qd_status s = buf ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate");
    while (!s) {
        ssize_t r = read(in, buf, CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) s = qd_fail(QD_EIO, "--original-model-path: cannot read %s: %s", src, strerror(errno));
        if (r <= 0) break;
        for (ssize_t done = 0; !s && done < r;) {
            ssize_t w = write(out, buf + done, (size_t)(r - done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) s = qd_fail(QD_EIO, "%s: cannot write it: %s", dst, strerror(errno));
            else done += w;
        }
        rep->bytes += (unsigned long long)r;
    }
    free(buf);
    close(in);
    if (close(out) && !s) s = qd_fail(QD_EIO, "%s: cannot write it: %s", dst, strerror(errno));
    return s;
}

static bool skipped(const char *name, const char *const *skip) {
    for (int i = 0; skip[i]; i++)
        if (!strcmp(name, skip[i])) return true;
    return false;
}

/* shutil.copytree(src, dst, ignore=ignore_patterns(*skip)): every level, links followed. */
static qd_status copy_tree(const char *src, const char *dst, const char *const *skip, int depth, qd_wan_repack_report *rep) {
    if (depth > 64) return qd_fail(QD_EINVAL, "--original-model-path: %s: folders nested more than 64 deep (a link loop?)", src);
    DIR *d = opendir(src);
    if (!d) return qd_fail(QD_EIO, "--original-model-path: cannot read %s: %s", src, strerror(errno));
    qd_status s = qd_make_dirs(dst);
    struct dirent *e;
    while (!s && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || skipped(e->d_name, skip)) continue;
        char *from = qd_path_join(src, e->d_name), *to = qd_path_join(dst, e->d_name);
        struct stat st;
        if (!from || !to) s = qd_fail(QD_ENOMEM, "cannot allocate");
        else if (stat(from, &st)) s = qd_fail(QD_EIO, "--original-model-path: %s: %s", from, strerror(errno));
        else if (S_ISDIR(st.st_mode)) s = copy_tree(from, to, skip, depth + 1, rep);
        else if (S_ISREG(st.st_mode)) s = copy_file(from, to, st.st_mode, rep), rep->files_copied++;
        else s = qd_fail(QD_EINVAL, "--original-model-path: %s is neither a file nor a folder", from);
        free(from), free(to);
    }
    closedir(d);
    return s;
}

/* ---- one transformer ---- */

typedef struct {
    size_t file;
    const qd_st_tensor *t;
    char *to; /* the renamed name */
} entry;

static int by_name(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    return strcmp(x->t->name, y->t->name);
}

static qd_status list_prefixed(const char *dir, const char *prefix, const char *suffix, char ***out, size_t *n) {
    char **names = NULL;
    size_t m = 0, k = 0;
    if (qd_list_files(dir, suffix, &names, &m)) return qd_fail(QD_EIO, "--quant-path: cannot read %s", dir);
    for (size_t i = 0; i < m; i++) {
        if (!strncmp(names[i], prefix, strlen(prefix))) names[k++] = names[i];
        else free(names[i]);
    }
    *out = names, *n = k;
    return QD_OK;
}

/* The description with renamed keys moved to the end in tensor order (what the Python dict's
 * pop-and-insert leaves), every other key in place. */
static qd_status rename_description(const char *path, const entry *e, size_t n, json_t **out, qd_wan_repack_report *rep) {
    json_error_t err;
    json_t *desc = json_load_file(path, 0, &err);
    if (!desc) return qd_fail(QD_EFORMAT, "%s: not valid JSON (line %d: %s)", path, err.line, err.text);
    if (!json_is_object(desc)) {
        json_decref(desc);
        return qd_fail(QD_EFORMAT, "%s: expected a JSON object (tensor name → type)", path);
    }
    json_t *moved = json_object(), *res = json_object();
    qd_status s = moved && res ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < n; i++) {
        if (!strcmp(e[i].t->name, e[i].to)) continue;
        json_t *v = json_object_get(desc, e[i].t->name);
        if (v) json_object_set(moved, e[i].t->name, json_true());
    }
    const char *k;
    json_t *v;
    json_object_foreach(desc, k, v) {
        if (!s && !json_object_get(moved, k)) json_object_set(res, k, v);
    }
    for (size_t i = 0; !s && i < n; i++) {
        if (!strcmp(e[i].t->name, e[i].to) || !json_object_get(moved, e[i].t->name)) continue;
        if (json_object_get(res, e[i].to))
            s = qd_fail(QD_EFORMAT, "%s: '%s' is renamed to '%s', which the description already has", path, e[i].t->name, e[i].to);
        else json_object_set(res, e[i].to, json_object_get(desc, e[i].t->name)), rep->description_keys_renamed++;
    }
    json_decref(moved), json_decref(desc);
    if (s) {
        json_decref(res);
        return s;
    }
    *out = res;
    return QD_OK;
}

static qd_status write_json_file(const char *path, const json_t *doc) {
    if (json_dump_file(doc, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII))
        return qd_fail(QD_EIO, "%s: cannot write it: %s", path, strerror(errno));
    return QD_OK;
}

static qd_status convert_transformer(const char *qdir, const char *out_dir, const char *base_cfg, qd_wan_repack_report *rep) {
    if (!qd_is_dir(qdir)) return qd_fail(QD_ENOTFOUND, "--quant-path: %s: no such folder (msModelSlim's output for this transformer)", qdir);
    char **wnames = NULL, **dnames = NULL;
    size_t nw = 0, nd = 0;
    qd_status s = list_prefixed(qdir, "quant_model_weight", ".safetensors", &wnames, &nw);
    if (!s) s = list_prefixed(qdir, "quant_model_description", ".json", &dnames, &nd);
    if (!s && !nw) s = qd_fail(QD_ENOTFOUND, "--quant-path: no quant_model_weight*.safetensors in %s", qdir);
    if (!s && !nd) s = qd_fail(QD_ENOTFOUND, "--quant-path: no quant_model_description*.json in %s", qdir);
    qd_st_file **f = s ? NULL : calloc(nw, sizeof *f);
    if (!s && !f) s = qd_fail(QD_ENOMEM, "cannot allocate");
    size_t n = 0;
    for (size_t i = 0; !s && i < nw; i++) {
        char *p = qd_path_join(qdir, wnames[i]);
        s = p ? qd_st_open(p, &f[i]) : qd_fail(QD_ENOMEM, "cannot allocate");
        free(p);
        if (!s) n += f[i]->n_tensors;
    }
    /* every tensor, in the state dict's order, renamed; no two under one name */
    entry *e = s ? NULL : calloc(n + 1, sizeof *e);
    if (!s && !e) s = qd_fail(QD_ENOMEM, "cannot allocate");
    size_t m = 0;
    for (size_t i = 0; !s && i < nw; i++)
        for (size_t j = 0; j < f[i]->n_tensors; j++) e[m].file = i, e[m].t = &f[i]->tensors[j], m++;
    if (!s) qsort(e, n, sizeof *e, by_name);
    qd_strmap seen_from, seen_to;
    qd_strmap_init(&seen_from), qd_strmap_init(&seen_to);
    for (size_t i = 0; !s && i < n; i++) {
        char to[NAME_LEN];
        size_t other;
        if (!qd_wan_repack_rename(e[i].t->name, to, sizeof to)) s = qd_fail(QD_EFORMAT, "%s: tensor name '%s' is too long", f[e[i].file]->path, e[i].t->name);
        else if (!(e[i].to = strdup(to))) s = qd_fail(QD_ENOMEM, "cannot allocate");
        else if (qd_strmap_put(&seen_from, e[i].t->name, i, &other) == 0)
            s = qd_fail(QD_EFORMAT, "--quant-path: tensor '%s' is in both %s and %s", e[i].t->name, f[e[other].file]->path, f[e[i].file]->path);
        else if (qd_strmap_put(&seen_to, e[i].to, i, &other) == 0)
            s = qd_fail(QD_EFORMAT, "--quant-path %s: tensors '%s' and '%s' would both be named '%s'", qdir, e[other].t->name, e[i].t->name, e[i].to);
        if (!s && strcmp(e[i].t->name, e[i].to)) rep->renamed++;
    }
    qd_strmap_free(&seen_from), qd_strmap_free(&seen_to);
    json_t *desc = NULL;
    char *desc_path = s ? NULL : qd_path_join(qdir, dnames[0]);
    if (!s) s = desc_path ? rename_description(desc_path, e, n, &desc, rep) : qd_fail(QD_ENOMEM, "cannot allocate");
    /* write */
    if (!s) s = qd_make_dirs(out_dir);
    char *wpath = s ? NULL : qd_path_join(out_dir, "diffusion_pytorch_model.safetensors");
    qd_st_writer *w = NULL;
    if (!s) s = wpath ? qd_st_writer_create(wpath, &w) : qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < n; i++) s = qd_st_writer_add(w, e[i].to, e[i].t->dtype, e[i].t->rank, e[i].t->shape);
    if (!s) s = qd_st_writer_begin(w);
    for (size_t i = 0; !s && i < n; i++) {
        const void *data = qd_st_data(f[e[i].file], e[i].t);
        const uint64_t bytes = e[i].t->end - e[i].t->begin;
        s = qd_st_writer_put(w, e[i].to, data, bytes);
        qd_release_mapped(data, bytes);
        rep->bytes += bytes, rep->tensors++;
    }
    if (!s) s = qd_st_writer_finish(w);
    else if (w) qd_st_writer_abort(w);
    char *dpath = s ? NULL : qd_path_join(out_dir, "quant_model_description.json");
    if (!s) s = dpath ? write_json_file(dpath, desc) : qd_fail(QD_ENOMEM, "cannot allocate");
    if (!s && qd_is_file(base_cfg)) {
        char *cpath = qd_path_join(out_dir, "config.json");
        struct stat st;
        s = cpath && !stat(base_cfg, &st) ? copy_file(base_cfg, cpath, st.st_mode, rep) : qd_fail(QD_EIO, "%s: cannot read it", base_cfg);
        free(cpath);
    }
    for (size_t i = 0; e && i < n; i++) free(e[i].to);
    free(e);
    for (size_t i = 0; f && i < nw; i++) qd_st_close(f[i]);
    free(f);
    json_decref(desc);
    free(desc_path), free(wpath), free(dpath);
    qd_free_names(wnames, nw), qd_free_names(dnames, nd);
    return s;
}

/* ---- the run ---- */

/* An earlier output: transformer/ holding a repacked weight file and description. */
static bool looks_like_repack_output(const char *dir, char *why, size_t why_len) {
    char *w = qd_path_join(dir, "transformer/diffusion_pytorch_model.safetensors"), *d = qd_path_join(dir, "transformer/quant_model_description.json");
    const bool ok = w && d && qd_is_file(w) && qd_is_file(d);
    if (!ok) snprintf(why, why_len, "it has no transformer/diffusion_pytorch_model.safetensors and transformer/quant_model_description.json");
    free(w), free(d);
    return ok;
}

/* Is `inner` (which may not exist yet) inside `outer`? Both through realpath of what exists. */
static bool inside(const char *outer, const char *inner) {
    char ro[PATH_MAX], ri[PATH_MAX];
    char *parent = qd_path_dirname(inner);
    bool in = false;
    if (parent && realpath(outer, ro) && realpath(parent, ri)) {
        const size_t n = strlen(ro);
        in = !strncmp(ri, ro, n) && (ri[n] == '/' || ri[n] == 0 || (n == 1 && ro[0] == '/'));
    }
    free(parent);
    return in;
}

qd_status qd_convert_wan_repack(const qd_wan_repack_args *a, qd_wan_repack_report *rep) {
    memset(rep, 0, sizeof *rep);
    static const char *const types[] = {"Wan2.2-T2V-A14B", "Wan2.2-I2V-A14B", "Wan2.2-TI2V-5B"};
    if (!a->model_type) return qd_fail(QD_EINVAL, "--model-type is required: Wan2.2-T2V-A14B, Wan2.2-I2V-A14B or Wan2.2-TI2V-5B");
    int type = -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(a->model_type, types[i])) type = i;
    if (type < 0) return qd_fail(QD_EINVAL, "--model-type %s: expected Wan2.2-T2V-A14B, Wan2.2-I2V-A14B or Wan2.2-TI2V-5B", a->model_type);
    if (!a->original_path) return qd_fail(QD_EINVAL, "--original-model-path DIR is required (the BF16 diffusers Wan2.2 model)");
    if (!a->quant_path) return qd_fail(QD_EINVAL, "--quant-path DIR is required (msModelSlim's output)");
    if (!a->output_path) return qd_fail(QD_EINVAL, "--output-path DIR is required (the folder to write)");
    if (!qd_is_dir(a->original_path)) return qd_fail(QD_ENOTFOUND, "--original-model-path %s: no such folder", a->original_path);
    if (!qd_is_dir(a->quant_path)) return qd_fail(QD_ENOTFOUND, "--quant-path %s: no such folder", a->quant_path);
    if (inside(a->original_path, a->output_path))
        return qd_fail(QD_EINVAL, "--output-path %s: inside --original-model-path %s, which is copied into it", a->output_path, a->original_path);
    const bool cascade = type < 2;
    const char *const dirs[] = {"transformer", cascade ? "transformer_2" : NULL, NULL};
    const char *const quant_sub[] = {cascade ? "high_noise_model" : NULL, "low_noise_model"};
    qd_out_dir od;
    qd_status s = qd_out_dir_begin("--output-path", a->output_path, a->overwrite, looks_like_repack_output, &od);
    if (s) return s;
    s = copy_tree(a->original_path, od.tmp, dirs, 0, rep);
    for (int i = 0; !s && dirs[i]; i++) {
        char *q = quant_sub[i] ? qd_path_join(a->quant_path, quant_sub[i]) : strdup(a->quant_path);
        char *out = qd_path_join(od.tmp, dirs[i]), *base = qd_path_join(a->original_path, dirs[i]);
        char *cfg = base ? qd_path_join(base, "config.json") : NULL;
        s = q && out && cfg ? convert_transformer(q, out, cfg, rep) : qd_fail(QD_ENOMEM, "cannot allocate");
        if (s) s = qd_fail_context(s, "%s", dirs[i]);
        rep->transformers += !s;
        free(q), free(out), free(base), free(cfg);
    }
    if (!s) s = qd_out_dir_commit(&od);
    else qd_out_dir_abort(&od);
    return s;
}
