/* CLIP text encoder over backend ops (see clip.h), following transformers' CLIPTextTransformer.
 * Checkpoint names: `embeddings.{token,position}_embedding.weight`, `encoder.layers.N.{layer_norm1,
 * self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}`, `final_layer_norm` — under `text_model.` in
 * most published checkpoints, at the root in recent transformers' saves. */
#include "models/te/clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/json.h"
#include "models/run.h"

typedef struct {
    qd_linear q, k, v, o, fc1, fc2;
    qd_tensor ln1_w, ln1_b, ln2_w, ln2_b;
} layer;

struct qd_clip {
    qd_model_ctx ctx;
    qd_clip_config c;
    qd_tensor tok, pos, final_w, final_b;
    layer *layers;
};

qd_status qd_clip_config_parse(const char *label, const json_t *cfg, qd_clip_config *c) {
    memset(c, 0, sizeof *c);
    /* a CLIPConfig (text + vision) keeps the text settings under text_config */
    const json_t *tc = json_object_get(cfg, "text_config");
    if (json_is_object(tc)) cfg = tc;
    qd_status s = QD_OK;
    if (!s) s = qd_config_size(label, cfg, "hidden_size", 512, 1 << 20, &c->hidden);
    if (!s) s = qd_config_size(label, cfg, "num_attention_heads", 8, 4096, &c->heads);
    if (!s) s = qd_config_size(label, cfg, "intermediate_size", 2048, 1 << 22, &c->ffn);
    if (!s) s = qd_config_size(label, cfg, "num_hidden_layers", 12, 4096, &c->layers);
    if (!s) s = qd_config_size(label, cfg, "vocab_size", 49408, 1 << 24, &c->vocab);
    if (!s) s = qd_config_size(label, cfg, "max_position_embeddings", 77, 1 << 20, &c->max_positions);
    if (!s) s = qd_config_int(label, cfg, "eos_token_id", 2, &c->eos_token_id);
    if (!s) s = qd_config_eps(label, cfg, "layer_norm_eps", 1e-5, &c->eps);
    if (s) return s;
    if (c->hidden % c->heads) {
        return qd_fail(QD_EFORMAT, "%s: hidden_size %lld must be divisible by num_attention_heads (%lld)", label,
                       (long long)c->hidden, (long long)c->heads);
    }
    const char *act = qd_json_string(cfg, "hidden_act");
    if (!act || !strcmp(act, "quick_gelu")) c->act = QD_ACT_QUICK_GELU;
    else if (!strcmp(act, "gelu")) c->act = QD_ACT_GELU_ERF;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) c->act = QD_ACT_GELU_TANH;
    else return qd_fail(QD_EUNSUPPORTED, "%s: hidden_act '%s' (expected quick_gelu, gelu, gelu_new)", label, act);
    return QD_OK;
}

static void free_layer(layer *l) {
    qd_linear *ls[] = {&l->q, &l->k, &l->v, &l->o, &l->fc1, &l->fc2};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++) qd_linear_free(ls[i]);
    qd_tensor *ts[] = {&l->ln1_w, &l->ln1_b, &l->ln2_w, &l->ln2_b};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) qd_tensor_free(ts[i]);
}

void qd_clip_free(qd_clip *m) {
    if (!m) return;
    for (int64_t i = 0; m->layers && i < m->c.layers; i++) free_layer(&m->layers[i]);
    free(m->layers);
    qd_tensor *ts[] = {&m->tok, &m->pos, &m->final_w, &m->final_b};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) qd_tensor_free(ts[i]);
    free(m);
}

static qd_status load_layer(const qd_model_ctx *ctx, const qd_clip_config *c, const char *prefix, layer *l) {
    char n[256];
    const int64_t D = c->hidden;
    qd_status s = QD_OK;
#define LIN(dst, suffix, in, outf)                  \
    snprintf(n, sizeof n, "%s.%s", prefix, suffix); \
    if (!s) s = qd_model_linear(ctx, n, in, outf, dst)
#define PARAM(dst, suffix)                          \
    snprintf(n, sizeof n, "%s.%s", prefix, suffix); \
    if (!s) s = qd_model_param(ctx, n, 1, (int64_t[]){D}, dst)
    LIN(&l->q, "self_attn.q_proj", D, D);
    LIN(&l->k, "self_attn.k_proj", D, D);
    LIN(&l->v, "self_attn.v_proj", D, D);
    LIN(&l->o, "self_attn.out_proj", D, D);
    LIN(&l->fc1, "mlp.fc1", D, c->ffn);
    LIN(&l->fc2, "mlp.fc2", c->ffn, D);
    PARAM(&l->ln1_w, "layer_norm1.weight");
    PARAM(&l->ln1_b, "layer_norm1.bias");
    PARAM(&l->ln2_w, "layer_norm2.weight");
    PARAM(&l->ln2_b, "layer_norm2.bias");
#undef LIN
#undef PARAM
    return s;
}

qd_status qd_clip_load(const qd_model_ctx *ctx, const qd_clip_config *c, qd_clip **out) {
    *out = NULL;
    qd_clip *m = calloc(1, sizeof *m);
    if (!m) return qd_fail(QD_ENOMEM, "cannot allocate the CLIP text encoder");
    m->ctx = *ctx;
    m->c = *c;
    m->layers = calloc((size_t)c->layers, sizeof *m->layers);
    qd_status s = m->layers ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate the CLIP layers");
    const char *root = !ctx->random_weights && qd_model_has(ctx, "text_model.embeddings.token_embedding.weight") ? "text_model." : "";
    char n[256];
    const int64_t D = c->hidden;
#define ROOT(name) (snprintf(n, sizeof n, "%s%s", root, name), n)
    if (!s) s = qd_model_table(ctx, ROOT("embeddings.token_embedding.weight"), c->vocab, D, &m->tok);
    if (!s) s = qd_model_param(ctx, ROOT("embeddings.position_embedding.weight"), 2, (int64_t[]){c->max_positions, D}, &m->pos);
    if (!s) s = qd_model_param(ctx, ROOT("final_layer_norm.weight"), 1, (int64_t[]){D}, &m->final_w);
    if (!s) s = qd_model_param(ctx, ROOT("final_layer_norm.bias"), 1, (int64_t[]){D}, &m->final_b);
#undef ROOT
    for (int64_t i = 0; !s && i < c->layers; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%sencoder.layers.%lld", root, (long long)i);
        s = load_layer(ctx, c, prefix, &m->layers[i]);
    }
    if (s) {
        qd_clip_free(m);
        return s;
    }
    *out = m;
    return QD_OK;
}

int64_t qd_clip_eos_position(const qd_clip_config *c, const int64_t *ids, int64_t L) {
    int64_t at = 0;
    for (int64_t j = 1; j < L; j++) {
        if (c->eos_token_id == 2 ? ids[j] > ids[at] : (ids[j] == c->eos_token_id && ids[at] != c->eos_token_id)) at = j;
    }
    return at;
}

/* ---- forward ---- */

static void run_layer(qd_run *r, const qd_clip_config *c, layer *l, qd_tensor *x, const qd_tensor *mask) {
    const int64_t B = x->shape[0], L = x->shape[1], D = c->hidden, hd = D / c->heads;
    const float eps = (float)c->eps;
    qd_tensor h = qd_run_layer_norm(r, x, &l->ln1_w, &l->ln1_b, eps);
    qd_tensor q = qd_run_linear(r, &l->q, &h), k = qd_run_linear(r, &l->k, &h), v = qd_run_linear(r, &l->v, &h);
    qd_tensor_free(&h);
    int64_t shape[4] = {B, L, c->heads, hd};
    qd_tensor_shape(&q, q.dtype, 4, shape), qd_tensor_shape(&k, k.dtype, 4, shape), qd_tensor_shape(&v, v.dtype, 4, shape);
    qd_tensor a = qd_run_tensor(r, 4, shape);
    qd_attn_args args = {.q = &q, .k = &k, .v = &v, .mask = mask, .causal = true};
    if (!r->s) r->s = r->be->ops->attention(r->be, &args, &a);
    qd_tensor_free(&q), qd_tensor_free(&k), qd_tensor_free(&v);
    qd_tensor_shape(&a, a.dtype, 3, (int64_t[]){B, L, D});
    qd_tensor o = qd_run_linear(r, &l->o, &a);
    qd_tensor_free(&a);
    if (!r->s) r->s = r->be->ops->add(r->be, x, &o, x);
    qd_tensor_free(&o);

    qd_tensor f = qd_run_layer_norm(r, x, &l->ln2_w, &l->ln2_b, eps);
    qd_tensor g = qd_run_linear(r, &l->fc1, &f);
    qd_tensor_free(&f);
    if (!r->s) r->s = r->be->ops->activation(r->be, c->act, &g, &g);
    qd_tensor d = qd_run_linear(r, &l->fc2, &g);
    qd_tensor_free(&g);
    if (!r->s) r->s = r->be->ops->add(r->be, x, &d, x);
    qd_tensor_free(&d);
}

qd_status qd_clip_forward(qd_clip *m, const int64_t *ids, const int64_t *mask, int64_t B, int64_t L, qd_tensor *last,
                          qd_tensor *pooled) {
    const qd_clip_config *c = &m->c;
    const int64_t D = c->hidden;
    if (B <= 0 || L <= 0 || L > c->max_positions) {
        return qd_fail(QD_EINVAL, "CLIP forward: ids must be [B, L] with 1 ≤ L ≤ %lld (max_position_embeddings), got L = %lld",
                       (long long)c->max_positions, (long long)L);
    }
    if ((last && (last->rank != 3 || last->shape[0] != B || last->shape[1] != L || last->shape[2] != D)) ||
        (pooled && (pooled->rank != 2 || pooled->shape[0] != B || pooled->shape[1] != D))) {
        return qd_fail(QD_EINVAL, "CLIP forward: outputs must be [%lld, %lld, %lld] and [%lld, %lld]", (long long)B, (long long)L,
                       (long long)D, (long long)B, (long long)D);
    }
    qd_run R = {.be = m->ctx.backend, .ctx = &m->ctx, .act = m->ctx.act, .s = QD_OK}, *r = &R;
    qd_tensor idt = qd_run_upload_i64(r, ids, 2, (int64_t[]){B, L});
    qd_tensor mt = mask ? qd_run_upload_i64(r, mask, 2, (int64_t[]){B, L}) : (qd_tensor){0};
    qd_tensor x = qd_run_embed(r, &m->tok, &idt);
    qd_tensor_free(&idt);
    /* + position_embedding(0..L−1): the first L rows of the table */
    qd_tensor pos = m->pos;
    pos.backend = NULL; /* a view */
    qd_tensor_shape(&pos, pos.dtype, 2, (int64_t[]){L, D});
    if (!r->s) r->s = r->be->ops->add(r->be, &x, &pos, &x);
    for (int64_t i = 0; i < c->layers && !r->s; i++) run_layer(r, c, &m->layers[i], &x, mask ? &mt : NULL);
    qd_tensor y = qd_run_layer_norm(r, &x, &m->final_w, &m->final_b, (float)c->eps);
    if (last && !r->s) r->s = r->be->ops->copy(r->be, &y, last);
    for (int64_t b = 0; pooled && b < B && !r->s; b++) {
        int64_t at = qd_clip_eos_position(c, ids + b * L, L);
        qd_tensor row = qd_run_tensor(r, 3, (int64_t[]){1, 1, D}), src = y, dst = *pooled;
        src.backend = dst.backend = NULL; /* views of batch row b */
        const size_t ys = (size_t)qd_dtype_bits(y.dtype) / 8, ps = (size_t)qd_dtype_bits(pooled->dtype) / 8;
        src.data = (char *)y.data + (size_t)(b * L * D) * ys;
        qd_tensor_shape(&src, y.dtype, 3, (int64_t[]){1, L, D});
        dst.data = (char *)pooled->data + (size_t)(b * D) * ps;
        qd_tensor_shape(&dst, pooled->dtype, 3, (int64_t[]){1, 1, D});
        if (!r->s) r->s = r->be->ops->slice(r->be, &src, 1, at, 1, &row);
        if (!r->s) r->s = r->be->ops->copy(r->be, &row, &dst);
        qd_tensor_free(&row);
    }
    qd_tensor_free(&x), qd_tensor_free(&y), qd_tensor_free(&mt);
    return r->s ? qd_fail_context(r->s, "CLIP forward") : QD_OK;
}
