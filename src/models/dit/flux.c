/* FLUX.1 transformer forward, straight-line over backend ops (models.md §2.3). Temporaries are
 * allocated per op and freed as soon as they are dead; a per-step arena comes with the pipeline.
 *
 * Two checkpoint layouts load: diffusers names, and Nunchaku SVDQuant's legacy names (formats.md §5.7,
 * detected by `transformer_blocks.0.qkv_proj` / `single_transformer_blocks.0.qkv_proj`):
 *   joint block   qkv_proj = [to_q; to_k; to_v] and qkv_proj_context = [add_q; add_k; add_v] (rows, one
 *                 linear each, sliced after), out_proj, out_proj_context, mlp_fc1/2, mlp_context_fc1/2,
 *                 AWQ norm1.linear / norm1_context.linear; norm_q, norm_k, norm_added_* under the block;
 *   single block  qkv_proj, mlp_fc1 (= proj_mlp), and proj_out split by input columns into out_proj
 *                 (attention part) + mlp_fc2 (MLP part, carries the bias), so proj_out(cat(a, m)) =
 *                 out_proj(a) + mlp_fc2(m); AWQ norm.linear; norm_q, norm_k under the block.
 * The AWQ modulation layers store their rows interleaved by chunk with +1 in the scale chunks' bias
 * (§5.6): undone once at load, so the forward is the diffusers one. The int4 fc2 layers (after GELU)
 * quantize their activations unsigned (§5.4). SVDQuant pads N and K to multiples of 128: the forward
 * pads x with zeros and crops y (qd_run_linear_n). The table of Nunchaku layers below drives both the loader
 * and qd_flux_layout (models/layout.h), the map `qdit convert dequantize` splits them back by. */
#include "models/dit/flux.h"
#include "models/run.h"
#include "models/layout.h"
#include "models/offload.h"
#include "models/step_graph.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/status.h"
#include "quant/plan.h"

typedef struct {
    qd_linear norm1, norm1_context, to_q, to_k, to_v, add_q, add_k, add_v, to_out, to_add_out;
    qd_linear ff_in, ff_out, ffc_in, ffc_out;
    qd_linear qkv, qkv_ctx; /* Nunchaku: fused [q; k; v] of each stream */
    qd_tensor norm_q, norm_k, norm_added_q, norm_added_k;
} double_block;

typedef struct {
    qd_linear norm, to_q, to_k, to_v, proj_mlp, proj_out;
    qd_linear qkv, out_attn, mlp_fc2; /* Nunchaku: fused [q; k; v]; proj_out's two column blocks */
    qd_tensor norm_q, norm_k;
} single_block;

/* A step's inputs and output in tensors the model owns (at fixed addresses, for step graphs), and the
 * host-made conditioning: timestep / guidance sinusoids [B, 256] and the RoPE tables of the positions. */
typedef struct {
    int64_t B, N, T;
    qd_dtype hs_dtype, enc_dtype, pooled_dtype, out_dtype;
    qd_tensor hs, enc, pooled, tsin, gsin, cos, sin, out;
    float *ids; /* [txt_ids; img_ids] the RoPE tables were made from */
} flux_step_io;

struct qd_flux {
    qd_model_ctx ctx;
    qd_flux_config c;
    bool nunchaku; /* Nunchaku SVDQuant legacy module names and fused layouts */
    qd_linear x_embedder, context_embedder, t_lin1, t_lin2, g_lin1, g_lin2, p_lin1, p_lin2, norm_out, proj_out;
    double_block *dbl;
    single_block *sgl;
    flux_step_io io;
    qd_step_graph graph;
    qd_model_offload off; /* --dit-layerwise-offload / --dit-cpu-offload: a group per block, double then single */
};

qd_status qd_flux_config_parse(const char *label, const json_t *cfg, qd_flux_config *c) {
    memset(c, 0, sizeof *c);
    int64_t patch;
    qd_status s = QD_OK;
    if (!s) s = qd_config_int(label, cfg, "patch_size", 1, &patch);
    if (!s) s = qd_config_int(label, cfg, "in_channels", 64, &c->in_channels);
    if (!s) s = qd_config_int(label, cfg, "out_channels", c->in_channels, &c->out_channels);
    if (!s) s = qd_config_int(label, cfg, "num_layers", 19, &c->num_layers);
    if (!s) s = qd_config_int(label, cfg, "num_single_layers", 38, &c->num_single_layers);
    if (!s) s = qd_config_int(label, cfg, "attention_head_dim", 128, &c->head_dim);
    if (!s) s = qd_config_int(label, cfg, "num_attention_heads", 24, &c->heads);
    if (!s) s = qd_config_int(label, cfg, "joint_attention_dim", 4096, &c->joint_attention_dim);
    if (!s) s = qd_config_int(label, cfg, "pooled_projection_dim", 768, &c->pooled_projection_dim);
    if (!s) s = qd_config_bool(label, cfg, "guidance_embeds", false, &c->guidance_embeds);
    if (s) return s;
    if (patch != 1) return qd_fail(QD_EUNSUPPORTED, "%s: patch_size %lld (FLUX.1 packs latents itself: 1)", label, (long long)patch);
    json_t *axes = json_object_get(cfg, "axes_dims_rope");
    int64_t sum = 0;
    c->axes_dims[0] = 16, c->axes_dims[1] = 56, c->axes_dims[2] = 56;
    if (axes) {
        if (!json_is_array(axes) || json_array_size(axes) != 3) return qd_fail(QD_EFORMAT, "%s: 'axes_dims_rope' must list 3 sizes", label);
        for (int i = 0; i < 3; i++) {
            json_int_t d = json_integer_value(json_array_get(axes, (size_t)i));
            if (d <= 0 || d % 2 || d > 4096) return qd_fail(QD_EFORMAT, "%s: 'axes_dims_rope'[%d] must be a positive even size", label, i);
            c->axes_dims[i] = (int)d;
        }
    }
    for (int i = 0; i < 3; i++) sum += c->axes_dims[i];
    if (c->heads <= 0 || c->head_dim <= 0 || c->num_layers < 0 || c->num_single_layers < 0 || c->in_channels <= 0 ||
        c->out_channels <= 0 || c->joint_attention_dim <= 0 || c->pooled_projection_dim <= 0) {
        return qd_fail(QD_EFORMAT, "%s: sizes must be positive", label);
    }
    if (sum != c->head_dim) {
        return qd_fail(QD_EFORMAT, "%s: axes_dims_rope sum to %lld but attention_head_dim is %lld", label, (long long)sum,
                       (long long)c->head_dim);
    }
    c->inner_dim = c->heads * c->head_dim;
    return QD_OK;
}

/* Every linear of a block (of either layout; those the checkpoint's layout does not use stay empty) and of
 * the model outside its blocks: for freeing and for offload groups. */
enum { DOUBLE_LINEARS = 16, SINGLE_LINEARS = 9, REST_LINEARS = 10 };

static void double_linears(double_block *b, qd_linear **ls) {
    qd_linear *all[DOUBLE_LINEARS] = {&b->norm1, &b->norm1_context, &b->to_q, &b->to_k, &b->to_v, &b->add_q, &b->add_k,
                                      &b->add_v, &b->to_out, &b->to_add_out, &b->ff_in, &b->ff_out, &b->ffc_in, &b->ffc_out,
                                      &b->qkv,   &b->qkv_ctx};
    memcpy(ls, all, sizeof all);
}

static void single_linears(single_block *b, qd_linear **ls) {
    qd_linear *all[SINGLE_LINEARS] = {&b->norm, &b->to_q, &b->to_k, &b->to_v, &b->proj_mlp, &b->proj_out, &b->qkv, &b->out_attn, &b->mlp_fc2};
    memcpy(ls, all, sizeof all);
}

static void rest_linears(qd_flux *m, qd_linear **ls) {
    qd_linear *all[REST_LINEARS] = {&m->x_embedder, &m->context_embedder, &m->t_lin1, &m->t_lin2, &m->g_lin1,
                                    &m->g_lin2,     &m->p_lin1,           &m->p_lin2, &m->norm_out, &m->proj_out};
    memcpy(ls, all, sizeof all);
}

static void free_double(double_block *b) {
    qd_linear *ls[DOUBLE_LINEARS];
    double_linears(b, ls);
    for (int i = 0; i < DOUBLE_LINEARS; i++) qd_linear_free(ls[i]);
    qd_tensor_free(&b->norm_q), qd_tensor_free(&b->norm_k), qd_tensor_free(&b->norm_added_q), qd_tensor_free(&b->norm_added_k);
}

static void free_single(single_block *b) {
    qd_linear *ls[SINGLE_LINEARS];
    single_linears(b, ls);
    for (int i = 0; i < SINGLE_LINEARS; i++) qd_linear_free(ls[i]);
    qd_tensor_free(&b->norm_q), qd_tensor_free(&b->norm_k);
}

/* a loaded block's linears as the next offload group (models/offload.h) */
static qd_status offload_double(qd_flux *m, double_block *b) {
    qd_linear *ls[DOUBLE_LINEARS];
    double_linears(b, ls);
    return qd_model_offload_block(&m->off, ls, DOUBLE_LINEARS);
}

static qd_status offload_single(qd_flux *m, single_block *b) {
    qd_linear *ls[SINGLE_LINEARS];
    single_linears(b, ls);
    return qd_model_offload_block(&m->off, ls, SINGLE_LINEARS);
}

static void step_io_free(flux_step_io *io) {
    qd_tensor *ts[] = {&io->hs, &io->enc, &io->pooled, &io->tsin, &io->gsin, &io->cos, &io->sin, &io->out};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) qd_tensor_free(ts[i]);
    free(io->ids);
    memset(io, 0, sizeof *io);
}

void qd_flux_free(qd_flux *m) {
    if (!m) return;
    if (m->ctx.backend) qd_step_graph_clear(&m->graph, m->ctx.backend);
    qd_model_offload_free(&m->off); /* before the layers it holds go */
    step_io_free(&m->io);
    qd_linear *ls[REST_LINEARS];
    rest_linears(m, ls);
    for (int i = 0; i < REST_LINEARS; i++) qd_linear_free(ls[i]);
    for (int64_t i = 0; m->dbl && i < m->c.num_layers; i++) free_double(&m->dbl[i]);
    for (int64_t i = 0; m->sgl && i < m->c.num_single_layers; i++) free_single(&m->sgl[i]);
    free(m->dbl);
    free(m->sgl);
    free(m);
}

/* ---- Nunchaku SVDQuant layers ---- */

/* A block's q, k and v projections (D → D each): one fused [q; k; v] linear in *fused where the backend runs
 * fused projections and the three can be joined exactly (qd_model_projections), else the three layers. */
static qd_status projections(const qd_model_ctx *ctx, const char *blocks, int64_t i, const char *const *suffix, const char *fused_suffix, int64_t D,
                             qd_linear *const *parts, qd_linear *fused) {
    char n[3][256], fn[256];
    const char *names[3] = {n[0], n[1], n[2]};
    for (int j = 0; j < 3; j++) snprintf(n[j], sizeof n[j], "%s.%lld.%s", blocks, (long long)i, suffix[j]);
    snprintf(fn, sizeof fn, "%s.%lld.%s", blocks, (long long)i, fused_suffix);
    qd_linear p[3];
    qd_status s = qd_model_projections(ctx, names, 3, D, (const int64_t[]){D, D, D}, fn, p, fused);
    for (int j = 0; j < 3; j++) *parts[j] = p[j];
    return s;
}

/* a Nunchaku [q; k; v] projection that needs no padding of its input or output (D a multiple of 128) */
static bool nk_unpadded(const qd_linear *qkv, int64_t D) { return qkv->in_features == D && qkv->out_features == 3 * D; }

/* Nunchaku's legacy layout, told by its fused qkv of the first block (formats.md §5.7) */
static bool flux_is_nunchaku(const qd_model_ctx *ctx, const qd_flux_config *c) {
    return qd_model_has(ctx, c->num_layers > 0 ? "transformer_blocks.0.qkv_proj.qweight" : "single_transformer_blocks.0.qkv_proj.qweight");
}

/* The Nunchaku block layers (formats.md §5.7): checkpoint suffix, where the loader keeps it, logical
 * in → out as multiples of the inner dim D, AWQ modulation chunks, after GELU (unsigned int4 activations),
 * and the diffusers modules it holds: `to` lists them ('|'), its rows split equally among them; with
 * `col` ≥ 0 it is the columns [col·D, col·D + in) of the one module `to`, which is to_in·D wide. */
typedef struct {
    const char *suffix;
    size_t field;
    int in, out, chunks;
    bool after_gelu;
    const char *to;
    int col, to_in;
} nk_layer;

static const nk_layer nk_double[] = {
    {"norm1.linear", offsetof(double_block, norm1), 1, 6, 6, false, "norm1.linear", -1, 0},
    {"norm1_context.linear", offsetof(double_block, norm1_context), 1, 6, 6, false, "norm1_context.linear", -1, 0},
    {"qkv_proj", offsetof(double_block, qkv), 1, 3, 0, false, "attn.to_q|attn.to_k|attn.to_v", -1, 0},
    {"qkv_proj_context", offsetof(double_block, qkv_ctx), 1, 3, 0, false, "attn.add_q_proj|attn.add_k_proj|attn.add_v_proj", -1, 0},
    {"out_proj", offsetof(double_block, to_out), 1, 1, 0, false, "attn.to_out.0", -1, 0},
    {"out_proj_context", offsetof(double_block, to_add_out), 1, 1, 0, false, "attn.to_add_out", -1, 0},
    {"mlp_fc1", offsetof(double_block, ff_in), 1, 4, 0, false, "ff.net.0.proj", -1, 0},
    {"mlp_fc2", offsetof(double_block, ff_out), 4, 1, 0, true, "ff.net.2", -1, 0},
    {"mlp_context_fc1", offsetof(double_block, ffc_in), 1, 4, 0, false, "ff_context.net.0.proj", -1, 0},
    {"mlp_context_fc2", offsetof(double_block, ffc_out), 4, 1, 0, true, "ff_context.net.2", -1, 0},
};

static const nk_layer nk_single[] = {
    {"norm.linear", offsetof(single_block, norm), 1, 3, 3, false, "norm.linear", -1, 0},
    {"qkv_proj", offsetof(single_block, qkv), 1, 3, 0, false, "attn.to_q|attn.to_k|attn.to_v", -1, 0},
    {"mlp_fc1", offsetof(single_block, proj_mlp), 1, 4, 0, false, "proj_mlp", -1, 0},
    {"out_proj", offsetof(single_block, out_attn), 1, 1, 0, false, "proj_out", 0, 5},
    {"mlp_fc2", offsetof(single_block, mlp_fc2), 4, 1, 0, true, "proj_out", 1, 5},
};

/* The per-head norms, kept under the block by Nunchaku: stored suffix → diffusers suffix. */
static const char *const nk_double_norms[][2] = {{"norm_q.weight", "attn.norm_q.weight"},
                                                 {"norm_k.weight", "attn.norm_k.weight"},
                                                 {"norm_added_q.weight", "attn.norm_added_q.weight"},
                                                 {"norm_added_k.weight", "attn.norm_added_k.weight"}};
static const char *const nk_single_norms[][2] = {{"norm_q.weight", "attn.norm_q.weight"}, {"norm_k.weight", "attn.norm_k.weight"}};

static qd_layout_part nk_part(const nk_layer *t, const char *block, int64_t i, int64_t D) {
    qd_layout_part p = {.in = t->in * D, .out = t->out * D, .padded = true, .after_gelu = t->after_gelu, .chunks = t->chunks};
    snprintf(p.module, sizeof p.module, "%s.%lld.%s", block, (long long)i, t->suffix);
    return p;
}

/* Bind a linear of a Nunchaku checkpoint as its table row says, and prepare it. */
static qd_status nk_linear(const qd_model_ctx *ctx, const qd_layout_part *p, qd_linear *l) {
    char q[300], w[300];
    snprintf(q, sizeof q, "%s.qweight", p->module);
    snprintf(w, sizeof w, "%s.weight", p->module);
    if (!qd_model_has(ctx, q) && !qd_model_has(ctx, w)) {
        const char *file = ctx->ck->n_files ? ctx->ck->files[0]->path : "the transformer checkpoint";
        return qd_fail(QD_EFORMAT,
                       "%s%s: a Nunchaku FLUX checkpoint (legacy names, as its transformer_blocks.0.qkv_proj says) "
                       "needs layer '%s' ('%s' or '%s'), and it is missing",
                       file, ctx->ck->n_files > 1 ? " (and the other files of its set)" : "", p->module, q, w);
    }
    qd_status s = qd_model_bind_part(ctx, p, l);
    return s ? s : qd_model_prepare(ctx, l);
}

static qd_status load_nunchaku(const qd_model_ctx *ctx, qd_flux *m) {
    const qd_flux_config *c = &m->c;
    const int64_t D = c->inner_dim, hd = c->head_dim;
    char n[256];
    qd_status s = QD_OK;
    for (int64_t i = 0; !s && i < c->num_layers; i++) {
        double_block *b = &m->dbl[i];
        for (size_t j = 0; !s && j < sizeof nk_double / sizeof *nk_double; j++) {
            qd_layout_part p = nk_part(&nk_double[j], "transformer_blocks", i, D);
            s = nk_linear(ctx, &p, (qd_linear *)((char *)b + nk_double[j].field));
        }
        qd_tensor *norms[] = {&b->norm_q, &b->norm_k, &b->norm_added_q, &b->norm_added_k};
        for (size_t j = 0; !s && j < 4; j++) {
            snprintf(n, sizeof n, "transformer_blocks.%lld.%s", (long long)i, nk_double_norms[j][0]);
            s = qd_model_param(ctx, n, 1, (int64_t[]){hd}, norms[j]);
        }
        if (!s) s = offload_double(m, b);
    }
    for (int64_t i = 0; !s && i < c->num_single_layers; i++) {
        single_block *b = &m->sgl[i];
        for (size_t j = 0; !s && j < sizeof nk_single / sizeof *nk_single; j++) {
            qd_layout_part p = nk_part(&nk_single[j], "single_transformer_blocks", i, D);
            s = nk_linear(ctx, &p, (qd_linear *)((char *)b + nk_single[j].field));
        }
        qd_tensor *norms[] = {&b->norm_q, &b->norm_k};
        for (size_t j = 0; !s && j < 2; j++) {
            snprintf(n, sizeof n, "single_transformer_blocks.%lld.%s", (long long)i, nk_single_norms[j][0]);
            s = qd_model_param(ctx, n, 1, (int64_t[]){hd}, norms[j]);
        }
        if (!s) s = offload_single(m, b);
    }
    return s;
}

/* One block's Nunchaku layers as layout groups: a group per stored layer, except that layers landing in
 * the same diffusers module (single-block out_proj + mlp_fc2 → proj_out) share one. */
static qd_status nk_block_layout(qd_layout *lay, const nk_layer *tab, size_t n_tab, const char *block, int64_t i, int64_t D) {
    qd_layout_group *shared = NULL;
    for (size_t j = 0; j < n_tab; j++) {
        const nk_layer *t = &tab[j];
        qd_layout_group *g = t->col >= 0 ? shared : NULL;
        qd_status s = QD_OK;
        if (!g && (s = qd_layout_group_new(lay, &g))) return s;
        qd_layout_part p = nk_part(t, block, i, D);
        int part = qd_layout_add_part(g, p.in, p.out, p.padded, p.after_gelu, p.chunks, "%s", p.module);
        if (t->col >= 0) {
            int target = g->n_targets ? 0 : qd_layout_add_target(g, t->to_in * D, p.out, "%s.%lld.%s", block, (long long)i, t->to);
            qd_layout_add_piece(g, part, target, 0, p.out, 0, t->col * D);
            shared = g;
            continue;
        }
        int n_to = 1;
        for (const char *c = t->to; *c; c++) n_to += *c == '|';
        const char *name = t->to;
        for (int k = 0; k < n_to; k++) {
            size_t len = strcspn(name, "|");
            int target = qd_layout_add_target(g, p.in, p.out / n_to, "%s.%lld.%.*s", block, (long long)i, (int)len, name);
            qd_layout_add_piece(g, part, target, k * (p.out / n_to), p.out / n_to, 0, 0);
            name += len + (name[len] == '|');
        }
    }
    return QD_OK;
}

qd_status qd_flux_layout(const qd_model_ctx *ctx, const qd_flux_config *c, qd_layout *out) {
    memset(out, 0, sizeof *out);
    if (!flux_is_nunchaku(ctx, c)) return QD_OK; /* diffusers names throughout */
    const int64_t D = c->inner_dim;
    char from[QD_LAYOUT_NAME], to[QD_LAYOUT_NAME];
    qd_status s = QD_OK;
    for (int64_t i = 0; !s && i < c->num_layers; i++) {
        s = nk_block_layout(out, nk_double, sizeof nk_double / sizeof *nk_double, "transformer_blocks", i, D);
        for (size_t j = 0; !s && j < 4; j++) {
            snprintf(from, sizeof from, "transformer_blocks.%lld.%s", (long long)i, nk_double_norms[j][0]);
            snprintf(to, sizeof to, "transformer_blocks.%lld.%s", (long long)i, nk_double_norms[j][1]);
            s = qd_layout_add_rename(out, from, to);
        }
    }
    for (int64_t i = 0; !s && i < c->num_single_layers; i++) {
        s = nk_block_layout(out, nk_single, sizeof nk_single / sizeof *nk_single, "single_transformer_blocks", i, D);
        for (size_t j = 0; !s && j < 2; j++) {
            snprintf(from, sizeof from, "single_transformer_blocks.%lld.%s", (long long)i, nk_single_norms[j][0]);
            snprintf(to, sizeof to, "single_transformer_blocks.%lld.%s", (long long)i, nk_single_norms[j][1]);
            s = qd_layout_add_rename(out, from, to);
        }
    }
    if (s) qd_layout_free(out);
    return s;
}

qd_status qd_flux_load(const qd_model_ctx *ctx, const qd_flux_config *c, qd_flux **out) {
    *out = NULL;
    qd_flux *m = calloc(1, sizeof *m);
    if (!m) return qd_fail(QD_ENOMEM, "cannot allocate the FLUX transformer");
    m->ctx = *ctx;
    m->c = *c;
    qd_model_offload_init(&m->off, ctx, (int)(c->num_layers + c->num_single_layers));
    m->dbl = calloc((size_t)c->num_layers + 1, sizeof *m->dbl);
    m->sgl = calloc((size_t)c->num_single_layers + 1, sizeof *m->sgl);
    int64_t D = c->inner_dim, hd = c->head_dim, mlp = 4 * D;
    char n[256];
    qd_status s = m->dbl && m->sgl ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate the FLUX blocks");
#define LIN(dst, name, in, outf) \
    if (!s) s = qd_model_linear(ctx, name, in, outf, dst)
#define PARAM(dst, name, len) \
    if (!s) s = qd_model_param(ctx, name, 1, (int64_t[]){len}, dst)
    LIN(&m->x_embedder, "x_embedder", c->in_channels, D);
    LIN(&m->context_embedder, "context_embedder", c->joint_attention_dim, D);
    LIN(&m->t_lin1, "time_text_embed.timestep_embedder.linear_1", 256, D);
    LIN(&m->t_lin2, "time_text_embed.timestep_embedder.linear_2", D, D);
    if (c->guidance_embeds) {
        LIN(&m->g_lin1, "time_text_embed.guidance_embedder.linear_1", 256, D);
        LIN(&m->g_lin2, "time_text_embed.guidance_embedder.linear_2", D, D);
    }
    LIN(&m->p_lin1, "time_text_embed.text_embedder.linear_1", c->pooled_projection_dim, D);
    LIN(&m->p_lin2, "time_text_embed.text_embedder.linear_2", D, D);
    m->nunchaku = flux_is_nunchaku(ctx, c);
    if (m->nunchaku && !s) s = load_nunchaku(ctx, m);
    for (int64_t i = 0; !s && !m->nunchaku && i < c->num_layers; i++) {
        double_block *b = &m->dbl[i];
#define BL(dst, suffix, in, outf)                                         \
    snprintf(n, sizeof n, "transformer_blocks.%lld.%s", (long long)i, suffix); \
    LIN(dst, n, in, outf)
#define BP(dst, suffix, len)                                              \
    snprintf(n, sizeof n, "transformer_blocks.%lld.%s", (long long)i, suffix); \
    PARAM(dst, n, len)
        BL(&b->norm1, "norm1.linear", D, 6 * D);
        BL(&b->norm1_context, "norm1_context.linear", D, 6 * D);
        if (!s) s = projections(ctx, "transformer_blocks", i, (const char *[]){"attn.to_q", "attn.to_k", "attn.to_v"}, "attn.to_qkv", D,
                                (qd_linear *[]){&b->to_q, &b->to_k, &b->to_v}, &b->qkv);
        if (!s) s = projections(ctx, "transformer_blocks", i, (const char *[]){"attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"},
                                "attn.add_qkv_proj", D, (qd_linear *[]){&b->add_q, &b->add_k, &b->add_v}, &b->qkv_ctx);
        BL(&b->to_out, "attn.to_out.0", D, D);
        BL(&b->to_add_out, "attn.to_add_out", D, D);
        BL(&b->ff_in, "ff.net.0.proj", D, mlp);
        BL(&b->ff_out, "ff.net.2", mlp, D);
        BL(&b->ffc_in, "ff_context.net.0.proj", D, mlp);
        BL(&b->ffc_out, "ff_context.net.2", mlp, D);
        BP(&b->norm_q, "attn.norm_q.weight", hd);
        BP(&b->norm_k, "attn.norm_k.weight", hd);
        BP(&b->norm_added_q, "attn.norm_added_q.weight", hd);
        BP(&b->norm_added_k, "attn.norm_added_k.weight", hd);
        if (!s) s = offload_double(m, b);
#undef BL
#undef BP
    }
    for (int64_t i = 0; !s && !m->nunchaku && i < c->num_single_layers; i++) {
        single_block *b = &m->sgl[i];
#define SL(dst, suffix, in, outf)                                                \
    snprintf(n, sizeof n, "single_transformer_blocks.%lld.%s", (long long)i, suffix); \
    LIN(dst, n, in, outf)
#define SP(dst, suffix, len)                                                     \
    snprintf(n, sizeof n, "single_transformer_blocks.%lld.%s", (long long)i, suffix); \
    PARAM(dst, n, len)
        SL(&b->norm, "norm.linear", D, 3 * D);
        if (!s) s = projections(ctx, "single_transformer_blocks", i, (const char *[]){"attn.to_q", "attn.to_k", "attn.to_v"}, "attn.to_qkv", D,
                                (qd_linear *[]){&b->to_q, &b->to_k, &b->to_v}, &b->qkv);
        SL(&b->proj_mlp, "proj_mlp", D, mlp);
        SL(&b->proj_out, "proj_out", D + mlp, D);
        SP(&b->norm_q, "attn.norm_q.weight", hd);
        SP(&b->norm_k, "attn.norm_k.weight", hd);
        if (!s) s = offload_single(m, b);
#undef SL
#undef SP
    }
    LIN(&m->norm_out, "norm_out.linear", D, 2 * D);
    LIN(&m->proj_out, "proj_out", D, c->out_channels);
#undef LIN
#undef PARAM
    if (!s) {
        qd_linear *rest[REST_LINEARS];
        rest_linears(m, rest);
        s = qd_model_offload_rest(&m->off, rest, REST_LINEARS);
    }
    if (s) {
        qd_flux_free(m);
        return s;
    }
    /* the MLP inputs (ff.net.0.proj, ff_context.net.0.proj, proj_mlp; Nunchaku's mlp_fc1, mlp_context_fc1)
       apply their GELU-tanh themselves: a backend fuses it into the matmul */
    for (int64_t i = 0; i < c->num_layers; i++) m->dbl[i].ff_in.out_act = m->dbl[i].ffc_in.out_act = QD_OUT_ACT_GELU_TANH;
    for (int64_t i = 0; i < c->num_single_layers; i++) m->sgl[i].proj_mlp.out_act = QD_OUT_ACT_GELU_TANH;
    *out = m;
    return QD_OK;
}

/* ---- forward ---- */

typedef qd_run run;

/* LayerNorm (no affine, eps 1e-6) then ·(1 + scale) + shift, one fused op */
static qd_tensor norm_modulate(run *r, const qd_tensor *x, const qd_tensor *scale, const qd_tensor *shift) {
    qd_tensor y = qd_run_tensor(r, x->rank, x->shape);
    if (!r->s) r->s = r->be->ops->norm_modulate(r->be, QD_NORM_LAYER, x, NULL, 1e-6f, scale, shift, &y);
    return y;
}

/* q/k/v of one stream as [B, L, H, hd] views of the projections (same bytes, new shape) */
static void as_heads(qd_tensor *t, int64_t heads, int64_t hd) {
    int64_t shape[4] = {t->shape[0], t->shape[1], heads, hd};
    qd_tensor_shape(t, t->dtype, 4, shape);
}

static void as_tokens(qd_tensor *t) {
    int64_t shape[3] = {t->shape[0], t->shape[1], t->shape[2] * t->shape[3]};
    qd_tensor_shape(t, t->dtype, 3, shape);
}

static qd_tensor seq_slice(run *r, const qd_tensor *x, int64_t start, int64_t len) {
    int64_t shape[QD_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[1] = len;
    qd_tensor y = qd_run_tensor(r, x->rank, shape);
    if (!r->s) r->s = r->be->ops->slice(r->be, x, 1, start, len, &y);
    return y;
}

/* rows [start, start + len) of a [1, L, ...] tensor, as a view (t must outlive it) */
static qd_tensor rows_view(const qd_tensor *t, int64_t start, int64_t len) {
    qd_tensor v = *t;
    v.backend = NULL;
    const int64_t row = t->shape[1] ? qd_tensor_elements(t) / t->shape[1] : 0;
    v.data = (char *)t->data + (size_t)(start * row) * (size_t)(qd_dtype_bits(t->dtype) / 8);
    v.shape[1] = len;
    return v;
}

/* l(x) into y (a view of a bigger tensor, say) */
static void linear_into(run *r, qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    qd_run_observe(r, l, x);
    if (!r->s) r->s = r->be->ops->linear(r->be, l, x, y);
}

/* views of rows [pos, pos + L) of the RoPE tables cos/sin [L_all, half] */
static void table_rows(const qd_tensor *cos, const qd_tensor *sin, int64_t pos, int64_t L, qd_tensor *c, qd_tensor *sn) {
    const int64_t half = cos->shape[1];
    *c = *cos, *sn = *sin;
    c->backend = sn->backend = NULL; /* views */
    c->data = (float *)cos->data + pos * half, sn->data = (float *)sin->data + pos * half;
    qd_tensor_shape(c, QD_DTYPE_F32, 2, (int64_t[]){L, half});
    qd_tensor_shape(sn, QD_DTYPE_F32, 2, (int64_t[]){L, half});
}

/* The per-head RMSNorm of q or k [B, L, H, hd] and its RoPE, in place, one fused op; the stream's L positions
   are rows [pos, pos + L) of the [text, image] tables */
static void rms_heads(run *r, qd_tensor *x, const qd_tensor *w, const qd_tensor *cos, const qd_tensor *sin, int64_t pos) {
    if (r->s) return;
    qd_tensor c, sn;
    table_rows(cos, sin, pos, x->shape[1], &c, &sn);
    r->s = r->be->ops->rms_norm_rope(r->be, x, w, 1e-6f, &c, &sn, QD_ROPE_INTERLEAVED, x);
}

/* y [B, L, H, hd] = rms_norm_rope of the heads at column `col` of a fused [q; k; v] output x [B, L, 3·D], the
 * positions from `pos` on (as rms_heads) */
static void rms_heads_cols(run *r, const qd_tensor *x, int64_t col, qd_tensor *y, const qd_tensor *w, const qd_tensor *cos, const qd_tensor *sin,
                           int64_t pos) {
    if (r->s) return;
    qd_tensor c, sn;
    table_rows(cos, sin, pos, y->shape[1], &c, &sn);
    r->s = r->be->ops->rms_norm_rope_cols(r->be, x, col, w, 1e-6f, &c, &sn, QD_ROPE_INTERLEAVED, y);
}

/* v of a fused [q; k; v] output qkv [B, L, 3·D] where it lies: a [B, L, H, hd] view of its last D columns, for the
 * attention told that its rows are 3·D wide (qd_attn_args.v_row) — no copy */
static qd_tensor v_in_place(const qd_tensor *qkv, int64_t H, int64_t hd) {
    qd_tensor v = *qkv;
    v.backend = NULL; /* a view: qd_tensor_free leaves it alone */
    v.data = (char *)qkv->data + (size_t)(2 * H * hd) * (size_t)(qd_dtype_bits(qkv->dtype) / 8);
    qd_tensor_shape(&v, qkv->dtype, 4, (int64_t[]){qkv->shape[0], qkv->shape[1], H, hd});
    return v;
}

/* An MLP added into the residual stream under its gate: res += gate·out(gelu_tanh(in(x))), the GELU applied by `in`
   itself (its out_act) */
static void mlp_into(run *r, qd_linear *in, qd_linear *outl, const qd_run_input *x, int64_t hidden, const qd_tensor *gate, qd_tensor *res) {
    if (in->out_features == hidden && outl->in_features == hidden && qd_run_codes_between(r, x, in, outl)) {
        /* a static FP8 `out` (ModelOpt): `in` writes its codes, the GELU output never in BF16 */
        qd_tensor codes = qd_run_linear_codes(r, in, x, outl, hidden, 0);
        qd_run_linear_fused_codes(r, outl, &codes, NULL, NULL, 0, gate, res);
        qd_tensor_free(&codes);
        return;
    }
    qd_tensor h = qd_run_linear_in(r, in, x, hidden);
    qd_run_linear_fused(r, outl, (const qd_tensor *[]){&h}, 1, gate, res);
    qd_tensor_free(&h);
}

/* The sinusoid [B, 256] (F32) of a scalar per batch item, v·1000 rounded as the context says (by default
 * in the activation dtype, as diffusers does; models.md §11.2). Host work: made before the step runs. */
static void scalar_sinusoid(const qd_model_ctx *ctx, const float *v, int64_t B, float *emb) {
    float *t = malloc(sizeof *t * (size_t)B);
    for (int64_t b = 0; b < B; b++) t[b] = qd_model_scalar_x1000(ctx, v[b]);
    qd_timestep_embedding(t, (int)B, 256, true, 0.0f, 1.0f, emb);
    free(t);
}

/* temb contribution of a scalar: linear_2(silu(linear_1(sinusoid))) */
static qd_tensor scalar_embedding(run *r, qd_linear *l1, qd_linear *l2, const qd_tensor *sinusoid) {
    qd_tensor e = qd_run_tensor(r, 2, sinusoid->shape);
    if (!r->s) r->s = r->be->ops->copy(r->be, sinusoid, &e);
    qd_tensor h = qd_run_linear(r, l1, &e);
    if (!r->s) r->s = r->be->ops->activation(r->be, QD_ACT_SILU, &h, &h);
    qd_tensor y = qd_run_linear(r, l2, &h);
    qd_tensor_free(&e);
    qd_tensor_free(&h);
    return y;
}

/* q and k come rotated (rms_heads) */
/* v_row: v's token stride when it is read in place from a wider output (v_in_place), else 0 */
static void attention(run *r, qd_tensor *q, qd_tensor *k, qd_tensor *v, int64_t v_row, qd_tensor *out) {
    qd_attn_args a = {.q = q, .k = k, .v = v, .v_row = v_row};
    if (!r->s) r->s = r->be->ops->attention(r->be, &a, out);
}

/* What the step body reads: device tensors only (the step io's, or temporaries on the CPU). */
typedef struct {
    qd_flux *m;
    const qd_tensor *hs, *enc, *pooled, *tsin, *gsin, *cos, *sin;
    qd_tensor *out;
} flux_body_args;

/* The transformer from device inputs to the output: no host values, uploads or downloads (step_graph.h). */
static qd_status flux_body(void *user) {
    const flux_body_args *a = user;
    qd_flux *m = a->m;
    const qd_flux_config *c = &m->c;
    run R = {.be = m->ctx.backend, .ctx = &m->ctx, .act = m->ctx.act, .s = QD_OK}, *r = &R;
    const qd_tensor *hs = a->hs, *enc = a->enc;
    int64_t B = hs->shape[0], N = hs->shape[1], T = enc->shape[1], L = T + N, D = c->inner_dim, H = c->heads, hd = c->head_dim;

    qd_tensor x = qd_run_linear(r, &m->x_embedder, hs);
    qd_tensor temb = scalar_embedding(r, &m->t_lin1, &m->t_lin2, a->tsin);
    if (c->guidance_embeds) {
        qd_tensor g = scalar_embedding(r, &m->g_lin1, &m->g_lin2, a->gsin);
        if (!r->s) r->s = r->be->ops->add(r->be, &temb, &g, &temb);
        qd_tensor_free(&g);
    }
    {
        qd_tensor h = qd_run_linear(r, &m->p_lin1, a->pooled);
        if (!r->s) r->s = r->be->ops->activation(r->be, QD_ACT_SILU, &h, &h);
        qd_tensor p = qd_run_linear(r, &m->p_lin2, &h);
        if (!r->s) r->s = r->be->ops->add(r->be, &temb, &p, &temb);
        qd_tensor_free(&h);
        qd_tensor_free(&p);
    }
    qd_tensor ctx = qd_run_linear(r, &m->context_embedder, enc);
    qd_tensor cos = *a->cos, sin = *a->sin; /* read only */
    cos.backend = sin.backend = NULL;
    qd_tensor silu_temb = qd_run_tensor(r, 2, (int64_t[]){B, D});
    if (!r->s) r->s = r->be->ops->activation(r->be, QD_ACT_SILU, &temb, &silu_temb);

    /* every block's modulation reads only silu(temb): all of them in one call up front (a device reads their weights in
       one pass: linear_many), unless the blocks' weights stream in one at a time (--dit-layerwise-offload) */
    const int n_mod = (int)(2 * c->num_layers + c->num_single_layers);
    qd_tensor *mods = NULL;
    if (m->off.mode != QD_OFFLOAD_MODE_LAYERWISE && n_mod <= QD_LINEAR_MANY && !r->s) {
        qd_linear *ml[QD_LINEAR_MANY];
        int64_t mo[QD_LINEAR_MANY];
        for (int64_t i = 0; i < c->num_layers; i++)
            ml[2 * i] = &m->dbl[i].norm1, ml[2 * i + 1] = &m->dbl[i].norm1_context, mo[2 * i] = mo[2 * i + 1] = 6 * D;
        for (int64_t i = 0; i < c->num_single_layers; i++) ml[2 * c->num_layers + i] = &m->sgl[i].norm, mo[2 * c->num_layers + i] = 3 * D;
        if (!(mods = calloc((size_t)n_mod, sizeof *mods))) r->s = qd_fail(QD_ENOMEM, "flux: the blocks' modulations");
        else qd_run_linear_many(r, ml, n_mod, &silu_temb, mo, mods);
    }

    for (int64_t i = 0; i < c->num_layers && !r->s; i++) {
        double_block *b = &m->dbl[i];
        r->s = qd_model_offload_fetch(&m->off, (int)i); /* the block's weights on the device (--dit-layerwise-offload) */
        qd_tensor e = mods ? mods[2 * i] : qd_run_linear_n(r, &b->norm1, &silu_temb, 6 * D);
        qd_tensor ce = mods ? mods[2 * i + 1] : qd_run_linear_n(r, &b->norm1_context, &silu_temb, 6 * D);
        if (mods) memset(&mods[2 * i], 0, 2 * sizeof *mods); /* freed below with the block's chunks */
        qd_tensor mod[6], cmod[6]; /* shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp */
        for (int k = 0; k < 6; k++) mod[k] = qd_run_chunk_view(r, &e, k, D), cmod[k] = qd_run_chunk_view(r, &ce, k, D);

        /* Batch 1 (diffusers' FLUX runs): the projections write straight into the joint [text, image]
           Q/K/V and the streams read the attention output in place — views, no concatenation or slicing.
           Otherwise (and for a Nunchaku qkv_proj that needs padding) each stream's q/k/v is made, then concatenated. */
        const bool joint = B == 1 && (!m->nunchaku || (nk_unpadded(&b->qkv, D) && nk_unpadded(&b->qkv_ctx, D)));
        /* [q; k; v] joined at load (qd_model_projections), or Nunchaku's qkv_proj without padding (FLUX's D is a
           multiple of 128): one GEMM per stream writing into the joint tensors */
        const bool fused = b->qkv.out_features > 0 && (!m->nunchaku || joint);
        /* the normed streams: FP8 codes straight out of the norm where the joined projection takes them */
        qd_linear *qkv_l[] = {&b->qkv}, *cqkv_l[] = {&b->qkv_ctx};
        qd_run_input xin = qd_run_norm_modulate_for(r, QD_NORM_LAYER, &x, NULL, 1e-6f, &mod[1], &mod[0], qkv_l, joint && fused ? 1 : 0);
        qd_run_input cin = qd_run_norm_modulate_for(r, QD_NORM_LAYER, &ctx, NULL, 1e-6f, &cmod[1], &cmod[0], cqkv_l, joint && fused ? 1 : 0);
        const qd_tensor xn = xin.x, cn = cin.x; /* the plain outputs (the other paths) */
        bool normed = false; /* q and k already normalised and rotated */
        qd_tensor q, k, v = {0}, cq, ck, cv = {0}, Q = {0}, K = {0}, V = {0}, QKV = {0};
        int64_t v_row = 0; /* V read in place from the joint [q; k; v] output QKV */
        if (joint) {
            Q = qd_run_tensor(r, 3, (int64_t[]){1, L, D}), K = qd_run_tensor(r, 3, (int64_t[]){1, L, D});
            cq = rows_view(&Q, 0, T), ck = rows_view(&K, 0, T);
            q = rows_view(&Q, T, N), k = rows_view(&K, T, N);
            if (fused) { /* one GEMM per stream into the joint [text, image] rows of QKV, then q/k normalised and rotated
                            into Q/K, and V read by the attention where it lies (v_row) */
                QKV = qd_run_tensor(r, 3, (int64_t[]){1, L, 3 * D});
                qd_tensor cqkv = rows_view(&QKV, 0, T), qkv = rows_view(&QKV, T, N);
                qd_run_linear_in_into(r, &b->qkv, &xin, &qkv), qd_run_linear_in_into(r, &b->qkv_ctx, &cin, &cqkv);
                qd_tensor *heads[4] = {&q, &k, &cq, &ck};
                for (int j = 0; j < 4 && !r->s; j++) as_heads(heads[j], H, hd);
                rms_heads_cols(r, &qkv, 0, &q, &b->norm_q, &cos, &sin, T), rms_heads_cols(r, &qkv, D, &k, &b->norm_k, &cos, &sin, T);
                rms_heads_cols(r, &cqkv, 0, &cq, &b->norm_added_q, &cos, &sin, 0);
                rms_heads_cols(r, &cqkv, D, &ck, &b->norm_added_k, &cos, &sin, 0);
                V = v_in_place(&QKV, H, hd), v_row = 3 * D;
                normed = true;
            } else {
                V = qd_run_tensor(r, 3, (int64_t[]){1, L, D});
                cv = rows_view(&V, 0, T), v = rows_view(&V, T, N);
                linear_into(r, &b->to_q, &xn, &q), linear_into(r, &b->to_k, &xn, &k), linear_into(r, &b->to_v, &xn, &v);
                linear_into(r, &b->add_q, &cn, &cq), linear_into(r, &b->add_k, &cn, &ck), linear_into(r, &b->add_v, &cn, &cv);
            }
        } else if (m->nunchaku || fused) { /* one fused [q; k; v] per stream */
            qd_tensor qkv = qd_run_linear_padded(r, &b->qkv, &xn), cqkv = qd_run_linear_padded(r, &b->qkv_ctx, &cn);
            q = qd_run_slice_last(r, &qkv, 0, D), k = qd_run_slice_last(r, &qkv, D, D), v = qd_run_slice_last(r, &qkv, 2 * D, D);
            cq = qd_run_slice_last(r, &cqkv, 0, D), ck = qd_run_slice_last(r, &cqkv, D, D), cv = qd_run_slice_last(r, &cqkv, 2 * D, D);
            qd_tensor_free(&qkv), qd_tensor_free(&cqkv);
        } else {
            q = qd_run_linear(r, &b->to_q, &xn), k = qd_run_linear(r, &b->to_k, &xn), v = qd_run_linear(r, &b->to_v, &xn);
            cq = qd_run_linear(r, &b->add_q, &cn), ck = qd_run_linear(r, &b->add_k, &cn), cv = qd_run_linear(r, &b->add_v, &cn);
        }
        qd_run_input_free(&xin), qd_run_input_free(&cin);
        qd_tensor *heads[6] = {&q, &k, &v, &cq, &ck, &cv};
        if (!normed) {
            for (int j = 0; j < 6 && !r->s; j++) as_heads(heads[j], H, hd);
            rms_heads(r, &q, &b->norm_q, &cos, &sin, T), rms_heads(r, &k, &b->norm_k, &cos, &sin, T);
            rms_heads(r, &cq, &b->norm_added_q, &cos, &sin, 0), rms_heads(r, &ck, &b->norm_added_k, &cos, &sin, 0);
        }
        if (joint) {
            as_heads(&Q, H, hd), as_heads(&K, H, hd);
            if (!v_row) as_heads(&V, H, hd);
        } else {
            Q = qd_run_concat2(r, &cq, &q, 1), K = qd_run_concat2(r, &ck, &k, 1), V = qd_run_concat2(r, &cv, &v, 1);
        }
        for (int j = 0; j < 6; j++) qd_tensor_free(heads[j]); /* views: nothing */
        qd_tensor A = qd_run_tensor(r, 4, (int64_t[]){B, L, H, hd});
        attention(r, &Q, &K, &V, v_row, &A);
        qd_tensor_free(&Q), qd_tensor_free(&K), qd_tensor_free(&V), qd_tensor_free(&QKV);
        as_tokens(&A);
        qd_tensor ca = joint ? rows_view(&A, 0, T) : seq_slice(r, &A, 0, T), xa = joint ? rows_view(&A, T, N) : seq_slice(r, &A, T, N);
        /* the output projections add into the streams under their gates (one pass on a device: linear_fused) */
        qd_run_linear_fused(r, &b->to_out, (const qd_tensor *[]){&xa}, 1, &mod[2], &x);
        qd_run_linear_fused(r, &b->to_add_out, (const qd_tensor *[]){&ca}, 1, &cmod[2], &ctx);
        qd_tensor_free(&xa), qd_tensor_free(&ca);
        qd_tensor_free(&A); /* after ca, xa: they may be views into it */

        qd_linear *ff_l[] = {&b->ff_in}, *ffc_l[] = {&b->ffc_in};
        qd_run_input xn2 = qd_run_norm_modulate_for(r, QD_NORM_LAYER, &x, NULL, 1e-6f, &mod[4], &mod[3], ff_l, 1);
        mlp_into(r, &b->ff_in, &b->ff_out, &xn2, 4 * D, &mod[5], &x);
        qd_run_input_free(&xn2);
        qd_run_input cn2 = qd_run_norm_modulate_for(r, QD_NORM_LAYER, &ctx, NULL, 1e-6f, &cmod[4], &cmod[3], ffc_l, 1);
        mlp_into(r, &b->ffc_in, &b->ffc_out, &cn2, 4 * D, &cmod[5], &ctx);
        qd_run_input_free(&cn2);
        for (int j = 0; j < 6; j++) qd_tensor_free(&mod[j]), qd_tensor_free(&cmod[j]);
        qd_tensor_free(&e), qd_tensor_free(&ce); /* after the chunks: they may be views into them */
    }

    /* single-stream blocks over [text, image] */
    qd_tensor s = qd_run_concat2(r, &ctx, &x, 1);
    qd_tensor_free(&ctx), qd_tensor_free(&x);
    for (int64_t i = 0; i < c->num_single_layers && !r->s; i++) {
        single_block *b = &m->sgl[i];
        r->s = qd_model_offload_fetch(&m->off, (int)(c->num_layers + i));
        qd_tensor e = mods ? mods[2 * c->num_layers + i] : qd_run_linear_n(r, &b->norm, &silu_temb, 3 * D);
        if (mods) memset(&mods[2 * c->num_layers + i], 0, sizeof *mods);
        qd_tensor shift = qd_run_chunk_view(r, &e, 0, D), scale = qd_run_chunk_view(r, &e, 1, D), gate = qd_run_chunk_view(r, &e, 2, D);
        const bool nk_slices = m->nunchaku && !nk_unpadded(&b->qkv, D); /* a padded qkv_proj: sliced, then normalised */
        qd_linear *sn_l[] = {&b->proj_mlp, &b->qkv}; /* one FP8 quantization for both where they take it */
        qd_run_input sn_in = qd_run_norm_modulate_for(r, QD_NORM_LAYER, &s, NULL, 1e-6f, &scale, &shift, sn_l,
                                                     !nk_slices && b->qkv.out_features > 0 ? 2 : 0);
        const qd_tensor sn = sn_in.x;
        /* a static FP8 proj_out (ModelOpt): proj_mlp writes its codes into columns [D, 5D) of proj_out's input, the
           attention's go into [0, D) later (qd_run_linear_fused_codes) */
        const bool codes_out = !m->nunchaku && b->proj_mlp.out_features == 4 * D && b->proj_out.in_features == 5 * D &&
                               qd_run_codes_between(r, &sn_in, &b->proj_mlp, &b->proj_out);
        qd_tensor hmlp = {0}, po_codes = {0};
        if (codes_out) po_codes = qd_run_linear_codes(r, &b->proj_mlp, &sn_in, &b->proj_out, 5 * D, D);
        else hmlp = qd_run_linear_in(r, &b->proj_mlp, &sn_in, 4 * D); /* GELU-tanh applied by the layer */
        qd_tensor q, k, v, qkv = {0};
        int64_t v_row = 0; /* v read in place from qkv */
        if (nk_slices) {
            qkv = qd_run_linear_padded(r, &b->qkv, &sn);
            q = qd_run_slice_last(r, &qkv, 0, D), k = qd_run_slice_last(r, &qkv, D, D), v = qd_run_slice_last(r, &qkv, 2 * D, D);
            qd_tensor_free(&qkv);
        } else if (b->qkv.out_features > 0) { /* joined at load: one GEMM, then q/k normalised and rotated, v read in place */
            qkv = qd_run_linear_in(r, &b->qkv, &sn_in, 3 * D);
            q = qd_run_tensor(r, 4, (int64_t[]){B, L, H, hd}), k = qd_run_tensor(r, 4, (int64_t[]){B, L, H, hd});
            rms_heads_cols(r, &qkv, 0, &q, &b->norm_q, &cos, &sin, 0), rms_heads_cols(r, &qkv, D, &k, &b->norm_k, &cos, &sin, 0);
            v = v_in_place(&qkv, H, hd), v_row = 3 * D;
        } else {
            q = qd_run_linear(r, &b->to_q, &sn), k = qd_run_linear(r, &b->to_k, &sn), v = qd_run_linear(r, &b->to_v, &sn);
        }
        qd_run_input_free(&sn_in);
        if (nk_slices || b->qkv.out_features == 0) {
            as_heads(&q, H, hd), as_heads(&k, H, hd), as_heads(&v, H, hd);
            rms_heads(r, &q, &b->norm_q, &cos, &sin, 0), rms_heads(r, &k, &b->norm_k, &cos, &sin, 0);
        }
        qd_tensor A = qd_run_tensor(r, 4, (int64_t[]){B, L, H, hd});
        attention(r, &q, &k, &v, v_row, &A);
        qd_tensor_free(&q), qd_tensor_free(&k), qd_tensor_free(&v), qd_tensor_free(&qkv);
        as_tokens(&A);
        if (m->nunchaku) { /* s += gate·proj_out(cat(A, hmlp)) = gate·out_proj(A) + gate·mlp_fc2(hmlp): two passes into s */
            qd_run_linear_fused(r, &b->out_attn, (const qd_tensor *[]){&A}, 1, &gate, &s);
            qd_run_linear_fused(r, &b->mlp_fc2, (const qd_tensor *[]){&hmlp}, 1, &gate, &s);
        } else if (codes_out) {
            qd_run_linear_fused_codes(r, &b->proj_out, &po_codes, (const qd_tensor *[]){&A}, (const int64_t[]){0}, 1, &gate, &s);
        } else { /* proj_out over [attention | MLP] without the concatenation on a device (linear_fused) */
            qd_run_linear_fused(r, &b->proj_out, (const qd_tensor *[]){&A, &hmlp}, 2, &gate, &s);
        }
        qd_tensor_free(&A), qd_tensor_free(&hmlp), qd_tensor_free(&po_codes);
        qd_tensor_free(&shift), qd_tensor_free(&scale), qd_tensor_free(&gate);
        qd_tensor_free(&e); /* after the chunks: they may be views into it */
    }
    qd_tensor img = seq_slice(r, &s, T, N);
    qd_tensor_free(&s);
    /* AdaLayerNormContinuous: (scale, shift) in diffusers' order */
    qd_tensor e = qd_run_linear(r, &m->norm_out, &silu_temb);
    qd_tensor scale = qd_run_chunk_view(r, &e, 0, D), shift = qd_run_chunk_view(r, &e, 1, D);
    qd_tensor xn = norm_modulate(r, &img, &scale, &shift);
    qd_run_observe(r, &m->proj_out, &xn);
    if (!r->s) r->s = r->be->ops->linear(r->be, &m->proj_out, &xn, a->out);
    qd_tensor *rest[] = {&img, &scale, &shift, &e, &xn, &temb, &silu_temb};
    for (size_t i = 0; i < sizeof rest / sizeof *rest; i++) qd_tensor_free(rest[i]);
    for (int j = 0; mods && j < n_mod; j++) qd_tensor_free(&mods[j]); /* those a failed step did not reach */
    free(mods);
    return r->s;
}

/* (Re)make the step io for this shape; false when it already fits. */
static qd_status step_io_fit(qd_flux *m, const qd_flux_inputs *in, const qd_tensor *out, bool *remade) {
    flux_step_io *io = &m->io;
    const qd_tensor *hs = in->hidden, *enc = in->encoder, *pooled = in->pooled;
    const int64_t B = hs->shape[0], N = hs->shape[1], T = enc->shape[1];
    *remade = false;
    if (io->ids && io->B == B && io->N == N && io->T == T && io->hs_dtype == hs->dtype && io->enc_dtype == enc->dtype &&
        io->pooled_dtype == pooled->dtype && io->out_dtype == out->dtype)
        return QD_OK;
    qd_backend *be = m->ctx.backend;
    qd_step_graph_clear(&m->graph, be);
    step_io_free(io);
    *remade = true;
    const int64_t L = T + N, hd = m->c.head_dim;
    io->B = B, io->N = N, io->T = T;
    io->hs_dtype = hs->dtype, io->enc_dtype = enc->dtype, io->pooled_dtype = pooled->dtype, io->out_dtype = out->dtype;
    qd_status s = qd_tensor_new(be, &io->hs, hs->dtype, hs->rank, hs->shape);
    if (!s) s = qd_tensor_new(be, &io->enc, enc->dtype, enc->rank, enc->shape);
    if (!s) s = qd_tensor_new(be, &io->pooled, pooled->dtype, pooled->rank, pooled->shape);
    if (!s) s = qd_tensor_new(be, &io->out, out->dtype, out->rank, out->shape);
    if (!s) s = qd_tensor_new(be, &io->tsin, QD_DTYPE_F32, 2, (int64_t[]){B, 256});
    if (!s && m->c.guidance_embeds) s = qd_tensor_new(be, &io->gsin, QD_DTYPE_F32, 2, (int64_t[]){B, 256});
    if (!s) s = qd_tensor_new(be, &io->cos, QD_DTYPE_F32, 2, (int64_t[]){L, hd / 2});
    if (!s) s = qd_tensor_new(be, &io->sin, QD_DTYPE_F32, 2, (int64_t[]){L, hd / 2});
    if (!s && !(io->ids = calloc((size_t)(L * 3), sizeof *io->ids))) s = qd_fail(QD_ENOMEM, "FLUX step: position ids");
    if (s) step_io_free(io);
    return s;
}

/* Fill the step io's conditioning from the host inputs: sinusoids always, RoPE tables when the positions
 * changed (or the io is new). */
static qd_status step_io_fill(qd_flux *m, const qd_flux_inputs *in, bool fresh) {
    flux_step_io *io = &m->io;
    qd_backend *be = m->ctx.backend;
    const int64_t B = io->B, N = io->N, T = io->T, L = T + N, hd = m->c.head_dim;
    float *emb = malloc(sizeof *emb * (size_t)(B * 256));
    if (!emb) return qd_fail(QD_ENOMEM, "FLUX step: timestep embedding");
    scalar_sinusoid(&m->ctx, in->timestep, B, emb);
    qd_status s = be->ops->upload(be, &io->tsin, emb);
    if (!s && m->c.guidance_embeds) {
        scalar_sinusoid(&m->ctx, in->guidance, B, emb);
        s = be->ops->upload(be, &io->gsin, emb);
    }
    free(emb);
    if (s) return s;
    if (!fresh && !memcmp(io->ids, in->txt_ids, sizeof *io->ids * (size_t)(T * 3)) &&
        !memcmp(io->ids + T * 3, in->img_ids, sizeof *io->ids * (size_t)(N * 3)))
        return QD_OK;
    /* RoPE over [text, image] positions, angles in float64 (models.md §1.2) */
    memcpy(io->ids, in->txt_ids, sizeof *io->ids * (size_t)(T * 3));
    memcpy(io->ids + T * 3, in->img_ids, sizeof *io->ids * (size_t)(N * 3));
    float *cs = malloc(sizeof *cs * (size_t)(L * hd / 2)), *sn = malloc(sizeof *sn * (size_t)(L * hd / 2));
    if (!cs || !sn) s = qd_fail(QD_ENOMEM, "FLUX step: RoPE tables");
    if (!s) qd_rope_table(io->ids, L, 3, m->c.axes_dims, 10000.0, QD_ROPE_ANGLES_F64, cs, sn);
    if (!s) s = be->ops->upload(be, &io->cos, cs);
    if (!s) s = be->ops->upload(be, &io->sin, sn);
    free(cs), free(sn);
    if (s) io->ids[0] = -1.0f; /* never a valid cache hit */
    return s;
}

qd_status qd_flux_forward(qd_flux *m, const qd_flux_inputs *in, qd_tensor *out) {
    const qd_flux_config *c = &m->c;
    const qd_tensor *hs = in->hidden, *enc = in->encoder;
    if (hs->rank != 3 || enc->rank != 3 || hs->shape[2] != c->in_channels || enc->shape[2] != c->joint_attention_dim ||
        enc->shape[0] != hs->shape[0] || in->pooled->rank != 2 || in->pooled->shape[1] != c->pooled_projection_dim ||
        in->pooled->shape[0] != hs->shape[0]) {
        return qd_fail(QD_EINVAL, "FLUX forward: hidden [B, N, %lld], encoder [B, T, %lld] and pooled [B, %lld] expected",
                       (long long)c->in_channels, (long long)c->joint_attention_dim, (long long)c->pooled_projection_dim);
    }
    if (c->guidance_embeds && !in->guidance) return qd_fail(QD_EINVAL, "FLUX forward: this model embeds guidance; pass one");
    if (out->rank != 3 || out->shape[0] != hs->shape[0] || out->shape[1] != hs->shape[1] || out->shape[2] != c->out_channels)
        return qd_fail(QD_EINVAL, "FLUX forward: output [B, N, %lld] expected", (long long)c->out_channels);
    qd_backend *be = m->ctx.backend;
    bool fresh = false;
    /* The step io: inputs copied in, conditioning filled, the body run (through a graph where the backend
       has them), the output copied out. An observer (calibration) sees every linear's input as it runs. */
    qd_status s = step_io_fit(m, in, out, &fresh);
    if (!s) s = step_io_fill(m, in, fresh);
    if (!s) s = be->ops->copy(be, hs, &m->io.hs);
    if (!s) s = be->ops->copy(be, enc, &m->io.enc);
    if (!s) s = be->ops->copy(be, in->pooled, &m->io.pooled);
    if (!s) s = qd_model_offload_begin(&m->off); /* --dit-cpu-offload: the weights up for the steps, once */
    flux_body_args a = {m, &m->io.hs, &m->io.enc, &m->io.pooled, &m->io.tsin, c->guidance_embeds ? &m->io.gsin : NULL,
                        &m->io.cos, &m->io.sin, &m->io.out};
    if (!s) {
        m->graph.what = "the FLUX step";
        const int64_t key[] = {m->io.B, m->io.N, m->io.T};
        s = m->ctx.observe ? flux_body(&a) : qd_step_graph_run(&m->graph, be, qd_step_graph_key(key, 3), flux_body, &a);
    }
    if (!s) s = be->ops->copy(be, &m->io.out, out);
    return s ? qd_fail_context(s, "FLUX forward") : QD_OK;
}

qd_status qd_flux_offload_end(qd_flux *m) {
    qd_step_graph_clear(&m->graph, m->ctx.backend); /* recorded steps read the device copies */
    return qd_model_offload_end(&m->off);
}
