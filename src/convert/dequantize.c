/* qdit convert dequantize (see dequantize.h). */
#include "convert/dequantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/output.h"
#include "convert/source.h"
#include "core/codec.h"
#include "core/log.h"
#include "core/status.h"
#include "core/strmap.h"
#include "models/layout.h"
#include "quant/plan.h"

/* What one run knows: the layout (the model's groups, then one identity group per other linear), which
 * group each stored module belongs to, and whether each target writes a bias. */
typedef struct {
    qd_convert_source *cs;
    qd_model_ctx ctx;
    qd_layout lay;
    qd_strmap module_group; /* stored module → group index */
    bool *target_bias;      /* [group · QD_LAYOUT_MAX + target] */
    bool *emitted;          /* [group] */
    qd_dtype out;
    qd_strmap renamed;      /* stored name → rename index */
} run;

static bool has_tensor(const qd_ckpt *ck, const char *module, const char *suffix) {
    char n[QD_LAYOUT_NAME + 32];
    snprintf(n, sizeof n, "%s.%s", module, suffix);
    return qd_ckpt_find(ck, n) != NULL;
}

/* Identity groups for the linears the model layout does not list, shaped by the plan (no data read). */
static qd_status add_plain_linears(run *r) {
    char **mods = NULL;
    size_t n = 0;
    qd_status s = qd_plan_candidates(r->cs->ck, &mods, &n);
    /* which are new, asked before any group is added (the map borrows the groups' names) */
    bool *listed = calloc(n + 1, sizeof *listed);
    if (!s && !listed) s = qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < n; i++) listed[i] = qd_strmap_get(&r->module_group, mods[i], NULL);
    qd_strmap_free(&r->module_group);
    qd_strmap_init(&r->module_group);
    for (size_t i = 0; !s && i < n; i++) {
        if (listed[i]) continue;
        if (strlen(mods[i]) >= QD_LAYOUT_NAME) {
            s = qd_fail(QD_EFORMAT, "module '%s': name longer than %d characters", mods[i], QD_LAYOUT_NAME - 1);
            break;
        }
        const char *shard[1] = {mods[i]};
        qd_linear l;
        if ((s = qd_linear_plan(&r->cs->quant, r->cs->ck, mods[i], shard, 1, &l))) break;
        qd_layout_group *g;
        if (!(s = qd_layout_group_new(&r->lay, &g))) {
            int p = qd_layout_add_part(g, l.in_features, l.out_features, false, false, 0, "%s", mods[i]);
            qd_layout_add_piece(g, p, qd_layout_add_target(g, l.in_features, l.out_features, "%s", mods[i]), 0, l.out_features, 0, 0);
        }
        qd_linear_free(&l);
    }
    for (size_t i = 0; i < n; i++) free(mods[i]);
    free(mods);
    free(listed);
    return s;
}

static qd_status index_groups(run *r) {
    qd_strmap_free(&r->module_group);
    qd_strmap_init(&r->module_group);
    for (size_t g = 0; g < r->lay.n_groups; g++) {
        for (int p = 0; p < r->lay.groups[g].n_parts; p++) {
            size_t prev;
            int put = qd_strmap_put(&r->module_group, r->lay.groups[g].parts[p].module, g, &prev);
            if (put < 0) return qd_fail(QD_ENOMEM, "cannot allocate");
            if (!put) return qd_fail(QD_EINVAL, "module '%s' is listed twice in the model's layout", r->lay.groups[g].parts[p].module);
        }
    }
    return QD_OK;
}

/* The stored module a tensor belongs to, when that module is a linear: its group. */
static bool tensor_group(const run *r, const char *name, size_t *group) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot - name >= QD_LAYOUT_NAME) return false;
    char module[QD_LAYOUT_NAME];
    memcpy(module, name, (size_t)(dot - name));
    module[dot - name] = '\0';
    return qd_strmap_get(&r->module_group, module, group);
}

/* Does a part give its targets a bias? When it stores one; and when it moved one into other tensors
 * (msModelSlim W8A8's quant_bias and input offset) that is not zero — a module built without a bias
 * (Z-Image's) stays without one when its effective bias is exactly zero. */
static qd_status part_has_bias(run *r, const qd_layout_part *p, bool *out) {
    *out = has_tensor(r->cs->ck, p->module, "bias");
    if (*out || !has_tensor(r->cs->ck, p->module, "quant_bias")) return QD_OK;
    qd_linear l;
    qd_status s = qd_model_bind_part(&r->ctx, p, &l);
    if (s) return s;
    float *b = malloc(sizeof *b * (size_t)l.out_features + 4);
    if (!b) s = qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its bias", p->module);
    if (!s) qd_linear_bias_f32(&l, b);
    for (int64_t i = 0; !s && i < l.out_features; i++) *out |= b[i] != 0.0f;
    free(b);
    qd_linear_free(&l);
    return s;
}

static qd_status declare_group(run *r, qd_shards *out, size_t gi) {
    const qd_layout_group *g = &r->lay.groups[gi];
    bool part_bias[QD_LAYOUT_MAX] = {0};
    for (int p = 0; p < g->n_parts; p++) {
        qd_status s = part_has_bias(r, &g->parts[p], &part_bias[p]);
        if (s) return s;
    }
    for (int t = 0; t < g->n_targets; t++) {
        bool bias = false;
        for (int k = 0; k < g->n_pieces; k++) bias |= g->pieces[k].target == t && part_bias[g->pieces[k].part];
        r->target_bias[gi * QD_LAYOUT_MAX + (size_t)t] = bias;
        char n[QD_LAYOUT_NAME + 16];
        snprintf(n, sizeof n, "%s.weight", g->targets[t].name);
        qd_status s = qd_shards_add(out, n, r->out, 2, (int64_t[]){g->targets[t].out, g->targets[t].in});
        if (!s && bias) {
            snprintf(n, sizeof n, "%s.bias", g->targets[t].name);
            s = qd_shards_add(out, n, r->out, 1, (int64_t[]){g->targets[t].out});
        }
        if (s) return s;
    }
    return QD_OK;
}

static bool float_dtype(qd_dtype t) { return t == QD_DTYPE_F32 || t == QD_DTYPE_BF16 || t == QD_DTYPE_F16; }

static const char *out_name(const run *r, const char *stored) {
    size_t i;
    return qd_strmap_get(&r->renamed, stored, &i) ? r->lay.renames[i].to : stored;
}

/* Every output tensor, in checkpoint order: a linear's group where its first tensor is, other tensors
 * under their diffusers names. */
static qd_status declare_all(run *r, qd_shards *out, int64_t *copied) {
    const qd_ckpt *ck = r->cs->ck;
    qd_status s = QD_OK;
    for (size_t i = 0; !s && i < ck->n_tensors; i++) {
        const qd_st_tensor *t = ck->entries[i].tensor;
        size_t g;
        if (tensor_group(r, t->name, &g)) {
            if (!r->emitted[g]) s = declare_group(r, out, g);
            r->emitted[g] = true;
            continue;
        }
        if (!float_dtype(t->dtype)) {
            return qd_fail(QD_EFORMAT, "%s: tensor '%s' (%s) belongs to no linear layer qdit found and is not a float tensor, "
                                       "so it has no unquantized form",
                           ck->entries[i].file->path, t->name, qd_dtype_name(t->dtype));
        }
        s = qd_shards_add(out, out_name(r, t->name), r->out, t->rank, t->shape);
        (*copied)++;
    }
    /* groups whose modules the checkpoint lacks: declared last, their binding names what is missing */
    for (size_t g = 0; !s && g < r->lay.n_groups; g++) {
        if (!r->emitted[g]) s = declare_group(r, out, g);
        r->emitted[g] = true;
    }
    return s;
}

static qd_status put_f32(run *r, qd_shards *out, const char *name, const float *v, int64_t n, uint64_t *bytes) {
    if (r->out == QD_DTYPE_F32) {
        *bytes += 4 * (uint64_t)n;
        return qd_shards_put(out, name, v, 4 * (uint64_t)n);
    }
    size_t nb = (size_t)n * (size_t)qd_dtype_bits(r->out) / 8;
    void *buf = malloc(nb + 1);
    if (!buf) return qd_fail(QD_ENOMEM, "'%s': cannot allocate %zu bytes", name, nb);
    qd_status s = qd_encode_row(r->out, v, buf, (size_t)n) ? qd_fail(QD_EINVAL, "'%s': cannot encode as %s", name, qd_dtype_name(r->out))
                                                          : qd_shards_put(out, name, buf, nb);
    free(buf);
    *bytes += nb;
    return s;
}

/* Bind, dequantize and scatter every part of group gi into its targets, then write them. */
static qd_status write_group(run *r, qd_shards *out, size_t gi, uint64_t *bytes) {
    const qd_layout_group *g = &r->lay.groups[gi];
    float *tw[QD_LAYOUT_MAX] = {0}, *tb[QD_LAYOUT_MAX] = {0};
    int filled[QD_LAYOUT_MAX] = {0};
    qd_status s = QD_OK;
    for (int t = 0; !s && t < g->n_targets; t++) {
        tw[t] = calloc((size_t)(g->targets[t].out * g->targets[t].in) + 1, sizeof *tw[t]);
        tb[t] = calloc((size_t)g->targets[t].out + 1, sizeof *tb[t]);
        if (!tw[t] || !tb[t]) s = qd_fail(QD_ENOMEM, "'%s': cannot allocate its %lld×%lld f32 weight", g->targets[t].name,
                                          (long long)g->targets[t].out, (long long)g->targets[t].in);
    }
    for (int p = 0; !s && p < g->n_parts; p++) {
        const qd_layout_part *part = &g->parts[p];
        qd_linear l;
        if ((s = qd_model_bind_part(&r->ctx, part, &l))) break;
        const int64_t N = l.out_features, K = l.in_features;
        float *w = malloc(sizeof *w * (size_t)(N * K) + 4), *b = malloc(sizeof *b * (size_t)N + 4);
        if (!w || !b) s = qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its %lld×%lld f32 weight", part->module, (long long)N, (long long)K);
        if (!s) s = qd_linear_dequantize(&l, w);
        if (!s) qd_linear_bias_f32(&l, b);
        for (int k = 0; !s && k < g->n_pieces; k++) {
            const qd_layout_piece *pc = &g->pieces[k];
            if (pc->part != p) continue;
            const qd_layout_target *t = &g->targets[pc->target];
            if (pc->part_row0 + pc->rows > N || pc->target_row0 + pc->rows > t->out || pc->target_col0 + part->in > t->in) {
                s = qd_fail(QD_EFORMAT, "layer '%s' (%lld × %lld) does not hold rows [%lld, %lld) of %lld columns for '%s'", part->module,
                            (long long)N, (long long)K, (long long)pc->part_row0, (long long)(pc->part_row0 + pc->rows),
                            (long long)part->in, t->name);
                break;
            }
            /* the logical block: the top-left corner of a padded layer */
            for (int64_t i = 0; i < pc->rows; i++) {
                memcpy(tw[pc->target] + (pc->target_row0 + i) * t->in + pc->target_col0, w + (pc->part_row0 + i) * K,
                       sizeof *w * (size_t)part->in);
                float *dst = tb[pc->target] + pc->target_row0 + i;
                /* column-joined parts add their biases; the first one sets them (so a -0 stays -0) */
                *dst = filled[pc->target] ? *dst + b[pc->part_row0 + i] : b[pc->part_row0 + i];
            }
            filled[pc->target]++;
        }
        free(w), free(b);
        qd_linear_release_stored(&l); /* memory: about one layer group */
        qd_linear_free(&l);
    }
    char n[QD_LAYOUT_NAME + 16];
    for (int t = 0; !s && t < g->n_targets; t++) {
        snprintf(n, sizeof n, "%s.weight", g->targets[t].name);
        s = put_f32(r, out, n, tw[t], g->targets[t].out * g->targets[t].in, bytes);
        if (!s && r->target_bias[gi * QD_LAYOUT_MAX + (size_t)t]) {
            snprintf(n, sizeof n, "%s.bias", g->targets[t].name);
            s = put_f32(r, out, n, tb[t], g->targets[t].out, bytes);
        }
    }
    for (int t = 0; t < g->n_targets; t++) free(tw[t]), free(tb[t]);
    return s;
}

static qd_status copy_tensor(run *r, qd_shards *out, const qd_ckpt_entry *e, uint64_t *bytes) {
    const qd_st_tensor *t = e->tensor;
    float *f = malloc(sizeof *f * (size_t)t->elements + 4);
    if (!f) return qd_fail(QD_ENOMEM, "'%s': cannot allocate %llu floats", t->name, (unsigned long long)t->elements);
    qd_status s = qd_decode_row(t->dtype, qd_st_data(e->file, t), f, (size_t)t->elements)
                      ? qd_fail(QD_EFORMAT, "%s: '%s' (%s) cannot be read as floats", e->file->path, t->name, qd_dtype_name(t->dtype))
                      : put_f32(r, out, out_name(r, t->name), f, (int64_t)t->elements, bytes);
    qd_release_mapped(qd_st_data(e->file, t), t->end - t->begin); /* memory: about one tensor */
    free(f);
    return s;
}

static qd_status convert(run *r, const qd_dequantize_args *a, const char *dir, qd_dequantize_report *rep) {
    const qd_ckpt *ck = r->cs->ck;
    qd_status s = qd_dit_layout(&r->ctx, r->cs->class_name, r->cs->cfg, r->cs->cfg_label, &r->lay);
    if (!s) s = index_groups(r);
    if (!s) s = add_plain_linears(r);
    if (!s) s = index_groups(r);
    for (size_t i = 0; !s && i < r->lay.n_renames; i++)
        if (qd_strmap_put(&r->renamed, r->lay.renames[i].from, i, NULL) < 0) s = qd_fail(QD_ENOMEM, "cannot allocate");
    if (s) return s;
    r->target_bias = calloc(r->lay.n_groups * QD_LAYOUT_MAX + 1, sizeof *r->target_bias);
    r->emitted = calloc(r->lay.n_groups + 1, sizeof *r->emitted);
    if (!r->target_bias || !r->emitted) return qd_fail(QD_ENOMEM, "cannot allocate");

    qd_shards *out = NULL;
    s = qd_shards_new(dir, "diffusion_pytorch_model", a->max_shard_bytes ? a->max_shard_bytes : QD_DEFAULT_SHARD_BYTES, &out);
    if (!s) s = declare_all(r, out, &rep->copied);
    if (!s) s = qd_shards_begin(out, "qdit convert dequantize");
    if (s) {
        qd_shards_abort(out);
        return s;
    }
    rep->shards = qd_shards_count(out);
    /* the same walk again, now writing */
    memset(r->emitted, 0, r->lay.n_groups * sizeof *r->emitted);
    qd_progress pr;
    qd_progress_start(&pr, "dequantize", (int64_t)r->lay.n_groups);
    int64_t done = 0;
    for (size_t i = 0; !s && i < ck->n_tensors; i++) {
        size_t g;
        if (!tensor_group(r, ck->entries[i].tensor->name, &g)) {
            s = copy_tensor(r, out, &ck->entries[i], &rep->bytes);
        } else if (!r->emitted[g]) {
            r->emitted[g] = true;
            s = write_group(r, out, g, &rep->bytes);
            rep->linears += r->lay.groups[g].n_targets;
            qd_progress_step(&pr, ++done, rep->bytes);
        }
    }
    for (size_t g = 0; !s && g < r->lay.n_groups; g++) {
        if (r->emitted[g]) continue;
        r->emitted[g] = true;
        s = write_group(r, out, g, &rep->bytes);
        rep->linears += r->lay.groups[g].n_targets;
    }
    qd_progress_end(&pr);
    if (s) qd_shards_abort(out);
    else s = qd_shards_finish(out);
    return s;
}

qd_status qd_convert_dequantize(const qd_options *o, const qd_dequantize_args *a, qd_dequantize_report *rep) {
    memset(rep, 0, sizeof *rep);
    if (!a->save_dir || !*a->save_dir) return qd_fail(QD_EINVAL, "--save-dir DIR is required: the folder to write the transformer to");
    qd_dtype dt = QD_DTYPE_BF16;
    if (a->dtype && !strcmp(a->dtype, "f32")) dt = QD_DTYPE_F32;
    else if (a->dtype && strcmp(a->dtype, "bf16")) return qd_fail(QD_EINVAL, "--dtype %s: expected bf16 or f32", a->dtype);
    qd_convert_source cs;
    qd_status s = qd_convert_source_open(o, a->path, &cs);
    if (s) return s;
    if (cs.quant.method != QD_QM_NONE) {
        qd_log(QD_LOG_INFO, "%s: quantization %s (%s)", cs.class_name, qd_quant_method_name(cs.quant.method), cs.quant.source);
    }
    if (cs.quant.packed_qkv) {
        /* BFL's raw export names (double_blocks.N.img_attn.qkv, …): no model here loads them, so there is no
           map to diffusers names; the tensors keep the names they have */
        qd_log(QD_LOG_WARN, "%s: BFL export names (packed QKV); qdit has no map from them to diffusers names, so they are "
                            "written as stored", cs.src.weights.files[0]);
    }
    qd_out_dir od = {0};
    s = qd_out_dir_begin("--save-dir", a->save_dir, a->overwrite, NULL, &od);
    run r = {.cs = &cs, .out = dt};
    r.ctx = (qd_model_ctx){.backend = NULL, .ck = cs.ck, .quant = &cs.quant, .act = QD_DTYPE_F32};
    qd_strmap_init(&r.module_group);
    qd_strmap_init(&r.renamed);
    if (!s) s = convert(&r, a, od.tmp, rep);
    if (!s) s = qd_write_config(od.tmp, cs.cfg);
    if (!s) s = qd_out_dir_commit(&od);
    else qd_out_dir_abort(&od);
    qd_strmap_free(&r.module_group);
    qd_strmap_free(&r.renamed);
    free(r.target_bias);
    free(r.emitted);
    qd_layout_free(&r.lay);
    qd_convert_source_close(&cs);
    return s;
}
