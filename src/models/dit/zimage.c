/* Z-Image transformer forward over backend ops (models.md §3.3), for one latent at a time: the
 * pipeline's batch of 1 (no attention mask, so pad tokens attend, as in diffusers).
 *
 * Besides diffusers names, a block may come in Nunchaku SVDQuant's layout (formats.md §5.7, nunchaku
 * transformer_zimage.py), told per block by its tensors (skip_refiners leaves the refiners in diffusers
 * form): attention.to_qkv = [to_q; to_k; to_v] (rows), feed_forward.net.0.proj = [w3; w1] (diffusers'
 * SwiGLU: first half the value, second half the SiLU gate), feed_forward.net.2 = w2; attention.to_out.0
 * keeps its name. SVDQuant pads N and K to multiples of 128: x is padded with zeros, y cropped. */
#include "models/dit/zimage.h"
#include "models/run.h"
#include "models/step_graph.h"
#include "models/layout.h"
#include "models/offload.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/status.h"
#include "quant/plan.h"

typedef struct {
    bool modulated;
    bool fused_qkv, fused_w13; /* Nunchaku: to_qkv = [q; k; v], net.0.proj = [w3; w1] */
    bool joined_qkv;           /* to_q, to_k, to_v joined into qkv at load (qd_model_projections) */
    bool joined_w13;           /* w1 and w3 joined into w13 = [w1; w3] at load (the SiLU then in swiglu) */
    qd_linear adaln, to_q, to_k, to_v, to_out, w1, w2, w3, qkv, w13;
    qd_tensor norm_q, norm_k, attn_norm1, attn_norm2, ffn_norm1, ffn_norm2;
} block;

/* A step's inputs and output in tensors the model owns (at fixed addresses, for step graphs), with the
 * host-made conditioning: the timestep sinusoid [1, 256] and the RoPE tables [L, hd/2] of the shape. */
typedef struct {
    int64_t shape_x[4], Lc;
    qd_dtype x_dtype, cap_dtype, out_dtype;
    qd_tensor x, cap, tsin, cos, sin, out;
} zimage_step_io;

struct qd_zimage {
    qd_model_ctx ctx;
    qd_zimage_config c;
    qd_linear x_embedder, t_lin1, t_lin2, cap_lin, final_adaln, final_linear;
    qd_tensor cap_norm, x_pad, cap_pad;
    block *layers, *noise_refiner, *context_refiner;
    zimage_step_io io[2]; /* two shapes at once: classifier-free guidance's prompt and negative prompt */
    int io_next;          /* the slot a third shape takes */
    qd_step_graph graph;
    qd_model_offload off; /* --dit-layerwise-offload / --dit-cpu-offload: a group per block, in forward order:
                             noise refiners, context refiners, main layers */
};

qd_status qd_zimage_config_parse(const char *label, const json_t *cfg, qd_zimage_config *c) {
    memset(c, 0, sizeof *c);
    qd_status s = QD_OK;
    if (!s) s = qd_config_int(label, cfg, "dim", 3840, &c->dim);
    if (!s) s = qd_config_int(label, cfg, "n_heads", 30, &c->heads);
    if (!s) s = qd_config_int(label, cfg, "n_kv_heads", c->heads, &c->kv_heads);
    if (!s) s = qd_config_int(label, cfg, "n_layers", 30, &c->layers);
    if (!s) s = qd_config_int(label, cfg, "n_refiner_layers", 2, &c->refiner_layers);
    if (!s) s = qd_config_int(label, cfg, "in_channels", 16, &c->in_channels);
    if (!s) s = qd_config_int(label, cfg, "cap_feat_dim", 2560, &c->cap_feat_dim);
    if (!s) s = qd_config_float(label, cfg, "norm_eps", 1e-5, &c->norm_eps);
    if (!s) s = qd_config_float(label, cfg, "rope_theta", 256.0, &c->rope_theta);
    if (!s) s = qd_config_float(label, cfg, "t_scale", 1000.0, &c->t_scale);
    if (s) return s;
    json_t *p = json_array_get(json_object_get(cfg, "all_patch_size"), 0), *fp = json_array_get(json_object_get(cfg, "all_f_patch_size"), 0);
    c->patch = p ? json_integer_value(p) : 2;
    c->f_patch = fp ? json_integer_value(fp) : 1;
    if (c->patch != 2 || c->f_patch != 1) {
        return qd_fail(QD_EUNSUPPORTED, "%s: patch size %lld / frame patch %lld (Z-Image text-to-image uses 2 and 1)", label,
                       (long long)c->patch, (long long)c->f_patch);
    }
    json_t *axes = json_object_get(cfg, "axes_dims");
    c->axes_dims[0] = 32, c->axes_dims[1] = 48, c->axes_dims[2] = 48;
    if (axes) {
        if (!json_is_array(axes) || json_array_size(axes) != 3) return qd_fail(QD_EFORMAT, "%s: 'axes_dims' must list 3 sizes", label);
        for (int i = 0; i < 3; i++) {
            json_int_t d = json_integer_value(json_array_get(axes, (size_t)i));
            if (d <= 0 || d % 2 || d > 4096) return qd_fail(QD_EFORMAT, "%s: 'axes_dims'[%d] must be a positive even size", label, i);
            c->axes_dims[i] = (int)d;
        }
    }
    if (c->dim <= 0 || c->heads <= 0 || c->dim % c->heads || c->kv_heads <= 0 || c->heads % c->kv_heads || c->layers < 0 ||
        c->refiner_layers < 0 || c->in_channels <= 0 || c->cap_feat_dim <= 0) {
        return qd_fail(QD_EFORMAT, "%s: dim, heads and layer counts must be positive and dim divisible by n_heads", label);
    }
    c->head_dim = c->dim / c->heads;
    if (c->axes_dims[0] + c->axes_dims[1] + c->axes_dims[2] != c->head_dim) {
        return qd_fail(QD_EFORMAT, "%s: axes_dims sum to %d but the head dim is %lld", label,
                       c->axes_dims[0] + c->axes_dims[1] + c->axes_dims[2], (long long)c->head_dim);
    }
    c->ffn_hidden = (int64_t)((double)c->dim / 3.0 * 8.0);
    c->adaln_dim = c->dim < 256 ? c->dim : 256;
    return QD_OK;
}

/* Every linear of a block (of either layout; the unused ones stay empty) and of the model outside its blocks:
 * for freeing and for offload groups. */
enum { BLOCK_LINEARS = 10, REST_LINEARS = 6 };

static void block_linears(block *b, qd_linear **ls) {
    qd_linear *all[BLOCK_LINEARS] = {&b->adaln, &b->to_q, &b->to_k, &b->to_v, &b->to_out, &b->w1, &b->w2, &b->w3, &b->qkv, &b->w13};
    memcpy(ls, all, sizeof all);
}

static void rest_linears(qd_zimage *m, qd_linear **ls) {
    qd_linear *all[REST_LINEARS] = {&m->x_embedder, &m->t_lin1, &m->t_lin2, &m->cap_lin, &m->final_adaln, &m->final_linear};
    memcpy(ls, all, sizeof all);
}

static void free_block(block *b) {
    qd_linear *ls[BLOCK_LINEARS];
    block_linears(b, ls);
    for (int i = 0; i < BLOCK_LINEARS; i++) qd_linear_free(ls[i]);
    qd_tensor *ts[] = {&b->norm_q, &b->norm_k, &b->attn_norm1, &b->attn_norm2, &b->ffn_norm1, &b->ffn_norm2};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) qd_tensor_free(ts[i]);
}

static void step_io_free(zimage_step_io *io) {
    qd_tensor *ts[] = {&io->x, &io->cap, &io->tsin, &io->cos, &io->sin, &io->out};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) qd_tensor_free(ts[i]);
    memset(io, 0, sizeof *io);
}

void qd_zimage_free(qd_zimage *m) {
    if (!m) return;
    if (m->ctx.backend) qd_step_graph_clear(&m->graph, m->ctx.backend);
    qd_model_offload_free(&m->off); /* before the layers it holds go */
    step_io_free(&m->io[0]), step_io_free(&m->io[1]);
    qd_linear *ls[REST_LINEARS];
    rest_linears(m, ls);
    for (int i = 0; i < REST_LINEARS; i++) qd_linear_free(ls[i]);
    qd_tensor_free(&m->cap_norm), qd_tensor_free(&m->x_pad), qd_tensor_free(&m->cap_pad);
    for (int64_t i = 0; m->layers && i < m->c.layers; i++) free_block(&m->layers[i]);
    for (int64_t i = 0; m->noise_refiner && i < m->c.refiner_layers; i++) free_block(&m->noise_refiner[i]);
    for (int64_t i = 0; m->context_refiner && i < m->c.refiner_layers; i++) free_block(&m->context_refiner[i]);
    free(m->layers), free(m->noise_refiner), free(m->context_refiner);
    free(m);
}

/* Bind a linear that may be an SVDQuant one (padded N and K allowed) and prepare it. Z-Image's SVDQuant
 * activations are all signed (its FFN is SwiGLU, no GELU before an fc2; formats.md §5.4). */
static qd_status padded_linear(const qd_model_ctx *ctx, const char *name, int64_t in, int64_t out, qd_linear *l) {
    qd_layout_part p = {.in = in, .out = out, .padded = true};
    const size_t n = strlen(name);
    if (n >= sizeof p.module) return qd_fail(QD_EINVAL, "z-image: module name longer than %zu bytes: %s", sizeof p.module - 1, name);
    memcpy(p.module, name, n + 1);
    qd_status s = qd_model_bind_part(ctx, &p, l);
    return s ? s : qd_model_prepare(ctx, l);
}

/* Does the checkpoint hold module `prefix.suffix` (as a plain or a Nunchaku weight)? */
static bool has_module(const qd_model_ctx *ctx, const char *prefix, const char *suffix) {
    char n[320];
    snprintf(n, sizeof n, "%s.%s.qweight", prefix, suffix);
    if (qd_model_has(ctx, n)) return true;
    snprintf(n, sizeof n, "%s.%s.weight", prefix, suffix);
    return qd_model_has(ctx, n);
}

static qd_status load_block(const qd_model_ctx *ctx, const qd_zimage_config *c, const char *prefix, bool modulated, block *b) {
    char n[256];
    int64_t D = c->dim, hd = c->head_dim, kvd = c->kv_heads * hd;
    qd_status s = QD_OK;
    b->modulated = modulated;
#define LIN(dst, suffix, in, outf)                      \
    snprintf(n, sizeof n, "%s.%s", prefix, suffix); \
    if (!s) s = qd_model_linear(ctx, n, in, outf, dst)
#define PARAM(dst, suffix, len)                         \
    snprintf(n, sizeof n, "%s.%s", prefix, suffix); \
    if (!s) s = qd_model_param(ctx, n, 1, (int64_t[]){len}, dst)
    if (modulated) {
        LIN(&b->adaln, "adaLN_modulation.0", c->adaln_dim, 4 * D);
    }
#define PLIN(dst, suffix, in, outf)                 \
    snprintf(n, sizeof n, "%s.%s", prefix, suffix); \
    if (!s) s = padded_linear(ctx, n, in, outf, dst)
    b->fused_qkv = has_module(ctx, prefix, "attention.to_qkv") && !has_module(ctx, prefix, "attention.to_q");
    b->fused_w13 = has_module(ctx, prefix, "feed_forward.net.0.proj") && !has_module(ctx, prefix, "feed_forward.w1");
    if (b->fused_qkv) {
        PLIN(&b->qkv, "attention.to_qkv", D, D + 2 * kvd);
    } else if (!s) {
        char pn[3][256], fn[256];
        const char *names[3] = {pn[0], pn[1], pn[2]};
        const char *suffix[3] = {"attention.to_q", "attention.to_k", "attention.to_v"};
        for (int j = 0; j < 3; j++) snprintf(pn[j], sizeof pn[j], "%s.%s", prefix, suffix[j]);
        snprintf(fn, sizeof fn, "%s.attention.to_qkv", prefix);
        qd_linear p[3];
        s = qd_model_projections(ctx, names, 3, D, (const int64_t[]){D, kvd, kvd}, fn, p, &b->qkv);
        b->to_q = p[0], b->to_k = p[1], b->to_v = p[2];
        b->joined_qkv = b->qkv.out_features > 0;
    }
    PLIN(&b->to_out, "attention.to_out.0", D, D);
    if (b->fused_w13) {
        PLIN(&b->w13, "feed_forward.net.0.proj", D, 2 * c->ffn_hidden);
        PLIN(&b->w2, "feed_forward.net.2", c->ffn_hidden, D);
    } else {
        LIN(&b->w2, "feed_forward.w2", c->ffn_hidden, D);
        if (!s) { /* one GEMM where the backend joins projections of one input, then swiglu over [w1 | w3] */
            char pn[2][256], fn[256];
            const char *names[2] = {pn[0], pn[1]};
            snprintf(pn[0], sizeof pn[0], "%s.feed_forward.w1", prefix), snprintf(pn[1], sizeof pn[1], "%s.feed_forward.w3", prefix);
            snprintf(fn, sizeof fn, "%s.feed_forward.w13", prefix);
            qd_linear p[2];
            s = qd_model_projections(ctx, names, 2, D, (const int64_t[]){c->ffn_hidden, c->ffn_hidden}, fn, p, &b->w13);
            b->w1 = p[0], b->w3 = p[1];
            b->joined_w13 = b->w13.out_features > 0;
        }
        /* SwiGLU's gate: silu(w1(x)) as stored, then ·w3(x) — the SiLU is w1's own output activation. (Nunchaku's
           fused [w3; w1] and the joined [w1; w3] run swiglu: the activation covers only half of their output.) */
        if (!b->joined_w13) b->w1.out_act = QD_OUT_ACT_SILU;
    }
#undef PLIN
    PARAM(&b->norm_q, "attention.norm_q.weight", hd);
    PARAM(&b->norm_k, "attention.norm_k.weight", hd);
    PARAM(&b->attn_norm1, "attention_norm1.weight", D);
    PARAM(&b->attn_norm2, "attention_norm2.weight", D);
    PARAM(&b->ffn_norm1, "ffn_norm1.weight", D);
    PARAM(&b->ffn_norm2, "ffn_norm2.weight", D);
#undef LIN
#undef PARAM
    return s;
}

static qd_status offload_block(qd_zimage *m, block *b) {
    qd_linear *ls[BLOCK_LINEARS];
    block_linears(b, ls);
    return qd_model_offload_block(&m->off, ls, BLOCK_LINEARS);
}

qd_status qd_zimage_load(const qd_model_ctx *ctx, const qd_zimage_config *c, qd_zimage **out) {
    *out = NULL;
    qd_zimage *m = calloc(1, sizeof *m);
    if (!m) return qd_fail(QD_ENOMEM, "cannot allocate the Z-Image transformer");
    m->ctx = *ctx;
    m->c = *c;
    qd_model_offload_init(&m->off, ctx, (int)(c->layers + 2 * c->refiner_layers));
    m->layers = calloc((size_t)c->layers + 1, sizeof *m->layers);
    m->noise_refiner = calloc((size_t)c->refiner_layers + 1, sizeof *m->noise_refiner);
    m->context_refiner = calloc((size_t)c->refiner_layers + 1, sizeof *m->context_refiner);
    qd_status s = m->layers && m->noise_refiner && m->context_refiner ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate blocks");
    int64_t D = c->dim, tokdim = c->patch * c->patch * c->f_patch * c->in_channels;
    if (!s) s = qd_model_linear(ctx, "all_x_embedder.2-1", tokdim, D, &m->x_embedder);
    if (!s) s = qd_model_linear(ctx, "t_embedder.mlp.0", 256, 1024, &m->t_lin1); /* mid_size 1024 in diffusers */
    if (!s) s = qd_model_linear(ctx, "t_embedder.mlp.2", m->t_lin1.out_features, c->adaln_dim, &m->t_lin2);
    if (!s) s = qd_model_param(ctx, "cap_embedder.0.weight", 1, (int64_t[]){c->cap_feat_dim}, &m->cap_norm);
    if (!s) s = qd_model_linear(ctx, "cap_embedder.1", c->cap_feat_dim, D, &m->cap_lin);
    if (!s) s = qd_model_param(ctx, "x_pad_token", 2, (int64_t[]){1, D}, &m->x_pad);
    if (!s) s = qd_model_param(ctx, "cap_pad_token", 2, (int64_t[]){1, D}, &m->cap_pad);
    if (!s) s = qd_model_linear(ctx, "all_final_layer.2-1.adaLN_modulation.1", c->adaln_dim, D, &m->final_adaln);
    if (!s) s = qd_model_linear(ctx, "all_final_layer.2-1.linear", D, tokdim, &m->final_linear);
    /* the blocks in the order the forward runs them, each an offload group once loaded */
    char prefix[64];
    for (int64_t i = 0; !s && i < c->refiner_layers; i++) {
        snprintf(prefix, sizeof prefix, "noise_refiner.%lld", (long long)i);
        s = load_block(ctx, c, prefix, true, &m->noise_refiner[i]);
        if (!s) s = offload_block(m, &m->noise_refiner[i]);
    }
    for (int64_t i = 0; !s && i < c->refiner_layers; i++) {
        snprintf(prefix, sizeof prefix, "context_refiner.%lld", (long long)i);
        s = load_block(ctx, c, prefix, false, &m->context_refiner[i]);
        if (!s) s = offload_block(m, &m->context_refiner[i]);
    }
    for (int64_t i = 0; !s && i < c->layers; i++) {
        snprintf(prefix, sizeof prefix, "layers.%lld", (long long)i);
        s = load_block(ctx, c, prefix, true, &m->layers[i]);
        if (!s) s = offload_block(m, &m->layers[i]);
    }
    if (!s) {
        qd_linear *rest[REST_LINEARS];
        rest_linears(m, rest);
        s = qd_model_offload_rest(&m->off, rest, REST_LINEARS);
    }
    if (s) {
        qd_zimage_free(m);
        return s;
    }
    *out = m;
    return QD_OK;
}

/* One block's stored layers as layout groups (models/layout.h): Nunchaku's fused to_qkv and [w3; w1], its
 * net.2 (= w2) and the padded to_out.0; a block in diffusers form adds nothing but to_out.0. */
static qd_status block_layout(const qd_model_ctx *ctx, const qd_zimage_config *c, const char *prefix, qd_layout *lay) {
    const int64_t D = c->dim, kvd = c->kv_heads * c->head_dim, H = c->ffn_hidden;
    qd_layout_group *g;
    qd_status s;
    if (has_module(ctx, prefix, "attention.to_qkv") && !has_module(ctx, prefix, "attention.to_q")) {
        if ((s = qd_layout_group_new(lay, &g))) return s;
        int p = qd_layout_add_part(g, D, D + 2 * kvd, true, false, 0, "%s.attention.to_qkv", prefix);
        qd_layout_add_piece(g, p, qd_layout_add_target(g, D, D, "%s.attention.to_q", prefix), 0, D, 0, 0);
        qd_layout_add_piece(g, p, qd_layout_add_target(g, D, kvd, "%s.attention.to_k", prefix), D, kvd, 0, 0);
        qd_layout_add_piece(g, p, qd_layout_add_target(g, D, kvd, "%s.attention.to_v", prefix), D + kvd, kvd, 0, 0);
    }
    if ((s = qd_layout_group_new(lay, &g))) return s;
    int p = qd_layout_add_part(g, D, D, true, false, 0, "%s.attention.to_out.0", prefix);
    qd_layout_add_piece(g, p, qd_layout_add_target(g, D, D, "%s.attention.to_out.0", prefix), 0, D, 0, 0);
    if (has_module(ctx, prefix, "feed_forward.net.0.proj") && !has_module(ctx, prefix, "feed_forward.w1")) {
        /* [w3; w1]: diffusers' SwiGLU takes the value from the first half, the SiLU gate from the second */
        if ((s = qd_layout_group_new(lay, &g))) return s;
        p = qd_layout_add_part(g, D, 2 * H, true, false, 0, "%s.feed_forward.net.0.proj", prefix);
        qd_layout_add_piece(g, p, qd_layout_add_target(g, D, H, "%s.feed_forward.w3", prefix), 0, H, 0, 0);
        qd_layout_add_piece(g, p, qd_layout_add_target(g, D, H, "%s.feed_forward.w1", prefix), H, H, 0, 0);
        if ((s = qd_layout_group_new(lay, &g))) return s;
        p = qd_layout_add_part(g, H, D, true, false, 0, "%s.feed_forward.net.2", prefix);
        qd_layout_add_piece(g, p, qd_layout_add_target(g, H, D, "%s.feed_forward.w2", prefix), 0, D, 0, 0);
    }
    return QD_OK;
}

qd_status qd_zimage_layout(const qd_model_ctx *ctx, const qd_zimage_config *c, qd_layout *out) {
    memset(out, 0, sizeof *out);
    char prefix[64];
    qd_status s = QD_OK;
    for (int64_t i = 0; !s && i < c->layers; i++) {
        snprintf(prefix, sizeof prefix, "layers.%lld", (long long)i);
        s = block_layout(ctx, c, prefix, out);
    }
    for (int64_t i = 0; !s && i < c->refiner_layers; i++) {
        snprintf(prefix, sizeof prefix, "noise_refiner.%lld", (long long)i);
        s = block_layout(ctx, c, prefix, out);
        snprintf(prefix, sizeof prefix, "context_refiner.%lld", (long long)i);
        if (!s) s = block_layout(ctx, c, prefix, out);
    }
    if (s) qd_layout_free(out);
    return s;
}

/* ---- forward ---- */

typedef qd_run run;

/* rows [0, n) of x followed by `pad` repeated to `total` rows (x [1, n, D] → [1, total, D]) */
static qd_tensor pad_rows(run *r, const qd_tensor *x, int64_t n, const qd_tensor *pad, int64_t total) {
    if (total == n) {
        qd_tensor y = qd_run_tensor(r, x->rank, x->shape);
        if (!r->s) r->s = r->be->ops->copy(r->be, x, &y);
        return y;
    }
    int64_t D = x->shape[2];
    qd_tensor p = qd_run_tensor(r, 3, (int64_t[]){1, total - n, D});
    for (int64_t i = 0; i < total - n && !r->s; i++) {
        qd_tensor row = p;
        row.data = (char *)p.data + (size_t)(i * D) * (size_t)(qd_dtype_bits(p.dtype) / 8);
        qd_tensor_shape(&row, p.dtype, 2, (int64_t[]){1, D});
        row.backend = NULL; /* a view: not freed */
        r->s = r->be->ops->copy(r->be, pad, &row);
    }
    qd_tensor y = qd_run_concat2(r, x, &p, 1);
    qd_tensor_free(&p);
    return y;
}

/* A modulated block's adaLN chunks: scale_msa, tanh(gate_msa), scale_mlp, tanh(gate_mlp), views of e where they
 * can be. */
typedef struct {
    qd_tensor e, mod[4];
} block_mods;

static void mods_make(run *r, const qd_zimage_config *c, block *b, const qd_tensor *adaln, block_mods *bm) {
    bm->e = qd_run_linear(r, &b->adaln, adaln); /* no SiLU before it (§3.2) */
    for (int k = 0; k < 4; k++) bm->mod[k] = qd_run_chunk_view(r, &bm->e, k, c->dim);
    if (!r->s) r->s = r->be->ops->activation(r->be, QD_ACT_TANH, &bm->mod[1], &bm->mod[1]);
    if (!r->s) r->s = r->be->ops->activation(r->be, QD_ACT_TANH, &bm->mod[3], &bm->mod[3]);
}

static void mods_free(block_mods *bm) {
    for (int i = 0; i < 4; i++) qd_tensor_free(&bm->mod[i]);
    qd_tensor_free(&bm->e); /* after the chunks: they may be views into it */
}

/* Whether a norm's output was made (an input handed on by the previous block) */
static bool input_made(const qd_run_input *in) { return in->x.data || in->codes.data; }

/* The linears that read a block's attention_norm1 output (qkv_l, n of them; 0: the plain output is read) */
static int qkv_readers(block *b, qd_linear **qkv_l) {
    qkv_l[0] = &b->qkv;
    const int nq = !b->modulated || b->fused_qkv ? 0 : b->joined_qkv ? 1 : 3;
    if (nq == 3) qkv_l[0] = &b->to_q, qkv_l[1] = &b->to_k, qkv_l[2] = &b->to_v;
    return nq;
}

/* One block on x [1, L, D] with RoPE tables for its L positions; bm its adaLN chunks (NULL: an unmodulated
 * block). hin: its attention_norm1 output when the previous block made it (else empty). With nb (the next
 * modulated block on the same x, nbm its chunks), the last sandwich norm also makes nb's attention_norm1 output
 * in the same pass, which is returned (else an empty input). */
static qd_run_input run_block(run *r, const qd_zimage_config *c, block *b, qd_tensor *x, const block_mods *bm, qd_run_input hin, block *nb,
                              const block_mods *nbm, const qd_tensor *cos, const qd_tensor *sin) {
    int64_t D = c->dim, L = x->shape[1], hd = c->head_dim;
    float eps = (float)c->norm_eps;
    const qd_tensor *mod = bm ? bm->mod : NULL;
    /* the modulated norms' outputs quantized straight out of the norm where every linear that reads them takes
       per-token FP8 input (qd_run_norm_modulate_for); Nunchaku's padded layers read the plain output */
    qd_linear *qkv_l[3], *ffn_l[2] = {&b->w13};
    const int nq = qkv_readers(b, qkv_l), nf = !b->modulated || b->fused_w13 ? 0 : b->joined_w13 ? 1 : 2;
    if (nf == 2) ffn_l[0] = &b->w1, ffn_l[1] = &b->w3;
    const bool given = input_made(&hin); /* made by the previous block's last pass */
    if (!given && b->modulated) hin = qd_run_norm_modulate_for(r, QD_NORM_RMS, x, &b->attn_norm1, eps, &mod[0], NULL, qkv_l, nq);
    else if (!given) hin.x = qd_run_rms_norm(r, x, &b->attn_norm1, eps);
    const qd_tensor *h = &hin.x;
    const int64_t kvd = c->kv_heads * hd;
    qd_tensor q, k, v, qkv = {0};
    int64_t v_row = 0; /* v read in place from qkv (qd_attn_args.v_row) */
    if (b->joined_qkv) { /* one GEMM, then q/k normalised and rotated straight out of it, v read where it lies */
        qkv = qd_run_linear_in(r, &b->qkv, &hin, D + 2 * kvd);
        q = qd_run_tensor(r, 4, (int64_t[]){1, L, c->heads, hd});
        k = qd_run_tensor(r, 4, (int64_t[]){1, L, c->kv_heads, hd});
        if (!r->s) r->s = r->be->ops->rms_norm_rope_cols(r->be, &qkv, 0, &b->norm_q, eps, cos, sin, QD_ROPE_INTERLEAVED, &q);
        if (!r->s) r->s = r->be->ops->rms_norm_rope_cols(r->be, &qkv, D, &b->norm_k, eps, cos, sin, QD_ROPE_INTERLEAVED, &k);
        v = qkv;
        v.backend = NULL; /* a view of its last kvd columns */
        v.data = (char *)qkv.data + (size_t)(D + kvd) * (size_t)(qd_dtype_bits(qkv.dtype) / 8);
        v_row = D + 2 * kvd;
    } else if (b->fused_qkv) {
        qkv = qd_run_linear_padded(r, &b->qkv, h);
        q = qd_run_slice_last(r, &qkv, 0, D), k = qd_run_slice_last(r, &qkv, D, kvd), v = qd_run_slice_last(r, &qkv, D + kvd, kvd);
        qd_tensor_free(&qkv);
    } else {
        q = qd_run_linear_in(r, &b->to_q, &hin, D), k = qd_run_linear_in(r, &b->to_k, &hin, kvd), v = qd_run_linear_in(r, &b->to_v, &hin, kvd);
    }
    qd_run_input_free(&hin);
    qd_tensor_shape(&q, q.dtype, 4, (int64_t[]){1, L, c->heads, hd});
    qd_tensor_shape(&k, k.dtype, 4, (int64_t[]){1, L, c->kv_heads, hd});
    qd_tensor_shape(&v, v.dtype, 4, (int64_t[]){1, L, c->kv_heads, hd});
    if (!b->joined_qkv && !r->s) r->s = r->be->ops->rms_norm_rope(r->be, &q, &b->norm_q, eps, cos, sin, QD_ROPE_INTERLEAVED, &q);
    if (!b->joined_qkv && !r->s) r->s = r->be->ops->rms_norm_rope(r->be, &k, &b->norm_k, eps, cos, sin, QD_ROPE_INTERLEAVED, &k);
    qd_tensor a = qd_run_tensor(r, 4, (int64_t[]){1, L, c->heads, hd});
    qd_attn_args args = {.q = &q, .k = &k, .v = &v, .v_row = v_row};
    if (!r->s) r->s = r->be->ops->attention(r->be, &args, &a);
    qd_tensor_free(&q), qd_tensor_free(&k), qd_tensor_free(&v), qd_tensor_free(&qkv);
    qd_tensor_shape(&a, a.dtype, 3, (int64_t[]){1, L, D});
    qd_tensor o = qd_run_linear_n(r, &b->to_out, &a, D);
    qd_tensor_free(&a);
    /* x += gate·attention_norm2(o), and ffn_norm1(x)·(1 + scale) out of the same pass where the backend fuses them */
    qd_run_input fin = {0};
    if (b->modulated) {
        fin = qd_run_norm_add_for(r, &o, &b->attn_norm2, eps, &mod[1], x, &b->ffn_norm1, &mod[2], ffn_l, nf);
    } else {
        qd_run_norm_add_for(r, &o, &b->attn_norm2, eps, NULL, x, NULL, NULL, NULL, 0);
        fin.x = qd_run_rms_norm(r, x, &b->ffn_norm1, eps);
    }
    qd_tensor_free(&o);
    const int64_t F = c->ffn_hidden;
    qd_run_input gin = {0}; /* silu(w1(f))·w3(f), as w2 takes it */
    if (b->fused_w13 || b->joined_w13) { /* Nunchaku's [w3; w1] (value first, padded) or the joined [w1; w3] */
        qd_tensor h13 = b->fused_w13 ? qd_run_linear_padded(r, &b->w13, &fin.x) : qd_run_linear_in(r, &b->w13, &fin, 2 * F);
        qd_run_input_free(&fin);
        gin = qd_run_swiglu_for(r, &h13, b->fused_w13 ? F : 0, b->fused_w13 ? 0 : F, F, &b->w2);
        qd_tensor_free(&h13);
    } else {
        gin.x = qd_run_linear_in(r, &b->w1, &fin, F); /* w1 applies the SiLU */
        qd_tensor u = qd_run_linear_in(r, &b->w3, &fin, F);
        qd_run_input_free(&fin);
        if (!r->s) r->s = r->be->ops->mul(r->be, &gin.x, &u, &gin.x);
        qd_tensor_free(&u);
    }
    qd_tensor ff = qd_run_linear_in(r, &b->w2, &gin, D);
    qd_run_input_free(&gin);
    /* x += gate·ffn_norm2(ff), and the next block's attention_norm1(x)·(1 + its scale) out of the same pass */
    qd_run_input next = {0};
    if (nb) {
        qd_linear *nq_l[3];
        const int nn = qkv_readers(nb, nq_l);
        next = qd_run_norm_add_for(r, &ff, &b->ffn_norm2, eps, &mod[3], x, &nb->attn_norm1, &nbm->mod[0], nq_l, nn);
    } else qd_run_norm_add_for(r, &ff, &b->ffn_norm2, eps, b->modulated ? &mod[3] : NULL, x, NULL, NULL, NULL, 0);
    qd_tensor_free(&ff);
    return next;
}

/* Blocks bs[0..n) on x in order (their offload groups from fetch0). Modulated blocks (adaln non-NULL) on a device
 * that holds them all hand the next block's attention_norm1 output out of their last pass: the next block's adaLN
 * chunks are made one block early. Streamed blocks (--dit-layerwise-offload) do not: the next block's weights are
 * still in flight. */
static void run_blocks(run *r, qd_zimage *m, block *bs, int n, int fetch0, qd_tensor *x, const qd_tensor *adaln, const qd_tensor *cos,
                       const qd_tensor *sin) {
    const qd_zimage_config *c = &m->c;
    const bool chain = adaln && m->off.mode != QD_OFFLOAD_MODE_LAYERWISE;
    block_mods cur = {0}, nxt = {0};
    qd_run_input hin = {0};
    for (int i = 0; i < n && !r->s; i++) {
        r->s = qd_model_offload_fetch(&m->off, fetch0 + i);
        const bool modulated = adaln && bs[i].modulated;
        if (modulated && !input_made(&hin)) mods_make(r, c, &bs[i], adaln, &cur); /* else made with the previous block */
        block *nb = chain && modulated && i + 1 < n && bs[i + 1].modulated ? &bs[i + 1] : NULL;
        if (nb) mods_make(r, c, nb, adaln, &nxt);
        hin = run_block(r, c, &bs[i], x, modulated ? &cur : NULL, hin, nb, nb ? &nxt : NULL, cos, sin);
        mods_free(&cur);
        cur = nxt;
        memset(&nxt, 0, sizeof nxt);
    }
    mods_free(&cur), mods_free(&nxt);
    qd_run_input_free(&hin);
}

static int64_t ceil32(int64_t n) { return (n + 31) / 32 * 32; }

typedef struct {
    qd_zimage *m;
    const qd_tensor *x, *cap, *tsin, *cos, *sin;
    qd_tensor *out;
} zimage_body_args;

/* The transformer from device inputs to the output: no host values, uploads or downloads (step_graph.h). */
static qd_status zimage_body(void *user) {
    const zimage_body_args *a = user;
    qd_zimage *m = a->m;
    const qd_zimage_config *c = &m->c;
    run R = {.be = m->ctx.backend, .ctx = &m->ctx, .act = m->ctx.act, .s = QD_OK}, *r = &R;
    const qd_tensor *x = a->x, *cap = a->cap;
    qd_tensor *out = a->out;
    int64_t C = c->in_channels, H2 = x->shape[2] / 2, W2 = x->shape[3] / 2, N = H2 * W2, Np = ceil32(N);
    int64_t Lc = cap->shape[0], Lp = ceil32(Lc), D = c->dim, hd = c->head_dim;

    /* adaln = t_embedder(t·t_scale): [cos | sin] over 256 in f32 (made on the host), cast to the activation dtype */
    qd_tensor adaln;
    {
        qd_tensor e = qd_run_tensor(r, 2, (int64_t[]){1, 256});
        if (!r->s) r->s = r->be->ops->copy(r->be, a->tsin, &e);
        qd_tensor h = qd_run_linear(r, &m->t_lin1, &e);
        if (!r->s) r->s = r->be->ops->activation(r->be, QD_ACT_SILU, &h, &h);
        adaln = qd_run_linear(r, &m->t_lin2, &h);
        qd_tensor_free(&e), qd_tensor_free(&h);
    }

    /* patchify [C, 1, 2·H2, 2·W2] → tokens (h, w), features (ph, pw, c) (§3.3 step 2) */
    qd_tensor tokens = qd_run_tensor(r, 5, (int64_t[]){H2, W2, 2, 2, C});
    {
        qd_tensor v = *x;
        v.backend = NULL;
        qd_tensor_shape(&v, x->dtype, 5, (int64_t[]){C, H2, 2, W2, 2});
        int perm[5] = {1, 3, 2, 4, 0};
        if (x->dtype == r->act) {
            if (!r->s) r->s = r->be->ops->permute(r->be, &v, perm, &tokens);
        } else {
            qd_tensor vc = qd_run_tensor(r, 5, v.shape);
            if (!r->s) r->s = r->be->ops->copy(r->be, &v, &vc);
            if (!r->s) r->s = r->be->ops->permute(r->be, &vc, perm, &tokens);
            qd_tensor_free(&vc);
        }
        qd_tensor_shape(&tokens, tokens.dtype, 3, (int64_t[]){1, N, 4 * C});
    }
    qd_tensor xe = qd_run_linear(r, &m->x_embedder, &tokens);
    qd_tensor_free(&tokens);
    qd_tensor img = pad_rows(r, &xe, N, &m->x_pad, Np);
    qd_tensor_free(&xe);

    /* caption: RMSNorm then Linear, padded with cap_pad_token */
    qd_tensor capx = qd_run_tensor(r, 2, cap->shape);
    if (!r->s) r->s = r->be->ops->copy(r->be, cap, &capx);
    qd_tensor capn = qd_run_rms_norm(r, &capx, &m->cap_norm, (float)c->norm_eps);
    qd_tensor_free(&capx);
    qd_tensor_shape(&capn, capn.dtype, 3, (int64_t[]){1, Lc, c->cap_feat_dim});
    qd_tensor ce = qd_run_linear(r, &m->cap_lin, &capn);
    qd_tensor_free(&capn);
    qd_tensor txt = pad_rows(r, &ce, Lc, &m->cap_pad, Lp);
    qd_tensor_free(&ce);

    /* RoPE tables of [image, caption] positions (step_io_fill): the image rows, the caption rows, all */
    const int64_t half = hd / 2;
    qd_tensor cos_all = *a->cos, sin_all = *a->sin; /* views: not freed */
    cos_all.backend = sin_all.backend = NULL;
    qd_tensor cos_img = cos_all, sin_img = sin_all, cos_txt = cos_all, sin_txt = sin_all;
    qd_tensor_shape(&cos_img, QD_DTYPE_F32, 2, (int64_t[]){Np, half}), qd_tensor_shape(&sin_img, QD_DTYPE_F32, 2, (int64_t[]){Np, half});
    qd_tensor_shape(&cos_txt, QD_DTYPE_F32, 2, (int64_t[]){Lp, half}), qd_tensor_shape(&sin_txt, QD_DTYPE_F32, 2, (int64_t[]){Lp, half});
    cos_txt.data = (float *)cos_all.data + Np * half, sin_txt.data = (float *)sin_all.data + Np * half;

    /* each block's weights on the device before its ops (--dit-layerwise-offload; groups in this order) */
    const int nr = (int)c->refiner_layers;
    run_blocks(r, m, m->noise_refiner, nr, 0, &img, &adaln, &cos_img, &sin_img);
    run_blocks(r, m, m->context_refiner, nr, nr, &txt, NULL, &cos_txt, &sin_txt);
    qd_tensor u = qd_run_concat2(r, &img, &txt, 1); /* [image, caption] */
    qd_tensor_free(&img), qd_tensor_free(&txt);
    run_blocks(r, m, m->layers, (int)c->layers, 2 * nr, &u, &adaln, &cos_all, &sin_all);

    /* final layer: LN(x)·(1 + Linear(SiLU(adaln))), then the token projection, image tokens only */
    qd_tensor sa = qd_run_tensor(r, 2, adaln.shape);
    if (!r->s) r->s = r->be->ops->activation(r->be, QD_ACT_SILU, &adaln, &sa);
    qd_tensor scale = qd_run_linear(r, &m->final_adaln, &sa);
    qd_tensor xi = qd_run_tensor(r, 3, (int64_t[]){1, N, D});
    if (!r->s) r->s = r->be->ops->slice(r->be, &u, 1, 0, N, &xi);
    if (!r->s) r->s = r->be->ops->norm_modulate(r->be, QD_NORM_LAYER, &xi, NULL, 1e-6f, &scale, NULL, &xi);
    qd_tensor y = qd_run_linear(r, &m->final_linear, &xi);
    /* unpatchify: tokens (h, w) × (ph, pw, c) → [C, 1, 2·H2, 2·W2] */
    if (!r->s) {
        qd_tensor_shape(&y, y.dtype, 5, (int64_t[]){H2, W2, 2, 2, C});
        qd_tensor o = *out;
        o.backend = NULL;
        qd_tensor_shape(&o, out->dtype, 5, (int64_t[]){C, H2, 2, W2, 2});
        int perm[5] = {4, 0, 2, 1, 3};
        if (out->dtype == y.dtype) r->s = r->be->ops->permute(r->be, &y, perm, &o);
        else {
            qd_tensor tmp = qd_run_tensor(r, 5, o.shape);
            if (!r->s) r->s = r->be->ops->permute(r->be, &y, perm, &tmp);
            if (!r->s) r->s = r->be->ops->copy(r->be, &tmp, &o);
            qd_tensor_free(&tmp);
        }
    }
    qd_tensor *rest[] = {&u, &sa, &scale, &xi, &y, &adaln};
    for (size_t i = 0; i < sizeof rest / sizeof *rest; i++) qd_tensor_free(rest[i]);
    return r->s;
}

static bool step_io_fits(const zimage_step_io *io, const qd_tensor *x, const qd_tensor *cap, const qd_tensor *out) {
    return io->x.data && !memcmp(io->shape_x, x->shape, sizeof io->shape_x) && io->Lc == cap->shape[0] && io->x_dtype == x->dtype &&
           io->cap_dtype == cap->dtype && io->out_dtype == out->dtype;
}

/* The step io of this shape: one of the two kept, else a new one with its RoPE tables (in an empty slot, or
 * in place of the older one — whose recorded graphs read its tensors, so the recordings go too). */
static qd_status step_io_fit(qd_zimage *m, const qd_tensor *x, const qd_tensor *cap, const qd_tensor *out, zimage_step_io **got) {
    const qd_zimage_config *c = &m->c;
    *got = NULL;
    for (int i = 0; i < 2; i++)
        if (step_io_fits(&m->io[i], x, cap, out)) {
            *got = &m->io[i];
            return QD_OK;
        }
    qd_backend *be = m->ctx.backend;
    int slot = !m->io[0].x.data ? 0 : !m->io[1].x.data ? 1 : m->io_next;
    zimage_step_io *io = &m->io[slot];
    if (io->x.data) {
        qd_step_graph_clear(&m->graph, be);
        m->io_next = !slot;
    }
    step_io_free(io);
    memcpy(io->shape_x, x->shape, sizeof io->shape_x);
    io->Lc = cap->shape[0], io->x_dtype = x->dtype, io->cap_dtype = cap->dtype, io->out_dtype = out->dtype;
    const int64_t H2 = x->shape[2] / 2, W2 = x->shape[3] / 2, N = H2 * W2, Np = ceil32(N), Lp = ceil32(cap->shape[0]);
    const int64_t L = Np + Lp, half = c->head_dim / 2;
    qd_status s = qd_tensor_new(be, &io->x, x->dtype, x->rank, x->shape);
    if (!s) s = qd_tensor_new(be, &io->cap, cap->dtype, cap->rank, cap->shape);
    if (!s) s = qd_tensor_new(be, &io->out, out->dtype, out->rank, out->shape);
    if (!s) s = qd_tensor_new(be, &io->tsin, QD_DTYPE_F32, 2, (int64_t[]){1, 256});
    if (!s) s = qd_tensor_new(be, &io->cos, QD_DTYPE_F32, 2, (int64_t[]){L, half});
    if (!s) s = qd_tensor_new(be, &io->sin, QD_DTYPE_F32, 2, (int64_t[]){L, half});
    /* positions: caption k → (1+k, 0, 0); image (h, w) → (Lp+1, h, w); image padding → (0, 0, 0) */
    float *ids = calloc((size_t)(L * 3), sizeof *ids), *cs = malloc(sizeof *cs * (size_t)(L * half)),
          *sn = malloc(sizeof *sn * (size_t)(L * half));
    if (!s && (!ids || !cs || !sn)) s = qd_fail(QD_ENOMEM, "Z-Image step: RoPE tables");
    if (!s) {
        for (int64_t i = 0; i < N; i++) {
            ids[i * 3 + 0] = (float)(Lp + 1);
            ids[i * 3 + 1] = (float)(i / W2);
            ids[i * 3 + 2] = (float)(i % W2);
        }
        for (int64_t k = 0; k < Lp; k++) ids[(Np + k) * 3] = (float)(1 + k);
        qd_rope_table(ids, L, 3, c->axes_dims, c->rope_theta, QD_ROPE_ANGLES_F64_TO_F32, cs, sn);
        s = be->ops->upload(be, &io->cos, cs);
    }
    if (!s) s = be->ops->upload(be, &io->sin, sn);
    free(ids), free(cs), free(sn);
    if (s) step_io_free(io);
    else *got = io;
    return s;
}

qd_status qd_zimage_forward(qd_zimage *m, const qd_tensor *x, float t, const qd_tensor *cap, qd_tensor *out) {
    const qd_zimage_config *c = &m->c;
    if (x->rank != 4 || x->shape[0] != c->in_channels || x->shape[1] != 1 || x->shape[2] % 2 || x->shape[3] % 2 ||
        cap->rank != 2 || cap->shape[1] != c->cap_feat_dim || cap->shape[0] < 1) {
        return qd_fail(QD_EINVAL, "Z-Image forward: x [%lld, 1, H, W] with even H, W and caption features [L, %lld] expected",
                       (long long)c->in_channels, (long long)c->cap_feat_dim);
    }
    if (out->rank != 4 || memcmp(out->shape, x->shape, sizeof(int64_t) * 4))
        return qd_fail(QD_EINVAL, "Z-Image forward: the output must have x's shape [%lld, 1, H, W]", (long long)c->in_channels);
    qd_backend *be = m->ctx.backend;
    /* the step io: inputs copied in, the timestep sinusoid made, the body run (through a graph where the
       backend has them), the output copied out */
    zimage_step_io *io = NULL;
    qd_status s = step_io_fit(m, x, cap, out, &io);
    if (!s) {
        float tt = t * (float)c->t_scale, emb[256];
        qd_timestep_embedding(&tt, 1, 256, true, 0.0f, 1.0f, emb);
        s = be->ops->upload(be, &io->tsin, emb);
    }
    if (!s) s = be->ops->copy(be, x, &io->x);
    if (!s) s = be->ops->copy(be, cap, &io->cap);
    if (!s) s = qd_model_offload_begin(&m->off); /* --dit-cpu-offload: the weights up for the steps, once */
    zimage_body_args a = {m, io ? &io->x : NULL, io ? &io->cap : NULL, io ? &io->tsin : NULL, io ? &io->cos : NULL, io ? &io->sin : NULL,
                          io ? &io->out : NULL};
    if (!s) {
        m->graph.what = "the Z-Image step";
        /* a recording reads its io's tensors: the io slot is part of the key */
        const int64_t key[] = {x->shape[2], x->shape[3], cap->shape[0], x->dtype, cap->dtype, out->dtype, io - m->io};
        s = m->ctx.observe ? zimage_body(&a) : qd_step_graph_run(&m->graph, be, qd_step_graph_key(key, 7), zimage_body, &a);
    }
    if (!s) s = be->ops->copy(be, &io->out, out);
    return s ? qd_fail_context(s, "Z-Image forward") : QD_OK;
}

qd_status qd_zimage_offload_end(qd_zimage *m) {
    qd_step_graph_clear(&m->graph, m->ctx.backend); /* recorded steps read the device copies */
    return qd_model_offload_end(&m->off);
}
