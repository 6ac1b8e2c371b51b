/* T5 / UMT5 encoder over backend ops (see t5.h), following transformers' T5EncoderModel forward.
 * Checkpoint names: `shared.weight` (or `encoder.embed_tokens.weight`), `encoder.block.N.layer.0.
 * SelfAttention.{q,k,v,o}`, `…layer.0.SelfAttention.relative_attention_bias.weight` [buckets, heads],
 * `…layer.0.layer_norm`, `encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1,wo | wi,wo}`, `…layer.1.layer_norm`,
 * `encoder.final_layer_norm`. */
#include "models/te/t5.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/json.h"
#include "models/run.h"

typedef struct {
    qd_linear q, k, v, o, wi0, wi1, wo;
    qd_tensor attn_norm, ffn_norm;
    float *rel_bias; /* [buckets, heads] on the host, or NULL (layer 0's is used) */
} block;

struct qd_t5 {
    qd_model_ctx ctx;
    qd_t5_config c;
    qd_tensor embed, final_norm;
    block *blocks;
};

qd_status qd_t5_config_parse(const char *label, const json_t *cfg, qd_t5_config *c) {
    memset(c, 0, sizeof *c);
    qd_status s = QD_OK;
    if (!s) s = qd_config_size(label, cfg, "d_model", -1, 1 << 20, &c->d_model);
    if (!s) s = qd_config_size(label, cfg, "d_kv", -1, 4096, &c->d_kv);
    if (!s) s = qd_config_size(label, cfg, "num_heads", -1, 4096, &c->heads);
    if (!s) s = qd_config_size(label, cfg, "d_ff", -1, 1 << 22, &c->d_ff);
    if (!s) s = qd_config_size(label, cfg, "num_layers", -1, 4096, &c->layers);
    if (!s) s = qd_config_size(label, cfg, "vocab_size", -1, 1 << 24, &c->vocab);
    if (!s) s = qd_config_size(label, cfg, "relative_attention_num_buckets", 32, 4096, &c->buckets);
    if (!s) s = qd_config_size(label, cfg, "relative_attention_max_distance", 128, 1 << 24, &c->max_distance);
    if (!s) s = qd_config_eps(label, cfg, "layer_norm_epsilon", 1e-6, &c->eps);
    if (s) return s;
    if (c->buckets < 4 || c->max_distance <= c->buckets / 4) {
        return qd_fail(QD_EFORMAT, "%s: relative_attention_num_buckets (%lld) must be at least 4 and relative_attention_max_distance "
                                   "(%lld) above a quarter of it", label, (long long)c->buckets, (long long)c->max_distance);
    }
    /* feed_forward_proj: "[gated-]ACT"; transformers turns gated-gelu into gelu_new (tanh) */
    const char *ff = qd_json_string(cfg, "feed_forward_proj");
    if (!ff) ff = "relu";
    c->gated = !strncmp(ff, "gated-", 6);
    const char *act = c->gated ? ff + 6 : ff;
    if (!strcmp(act, "relu")) c->act = QD_ACT_RELU;
    else if (!strcmp(act, "gelu")) c->act = c->gated ? QD_ACT_GELU_TANH : QD_ACT_GELU_ERF;
    else if (!strcmp(act, "gelu_new")) c->act = QD_ACT_GELU_TANH;
    else if (!strcmp(act, "silu")) c->act = QD_ACT_SILU;
    else return qd_fail(QD_EUNSUPPORTED, "%s: feed_forward_proj '%s' (expected relu, gelu, gated-gelu, gated-silu)", label, ff);
    const char *type = qd_json_string(cfg, "model_type");
    const json_t *arch = json_array_get(json_object_get(cfg, "architectures"), 0);
    c->per_layer_bias = (type && !strcmp(type, "umt5")) || (json_is_string(arch) && !strncmp(json_string_value(arch), "UMT5", 4));
    return QD_OK;
}

int qd_t5_bucket(int64_t rel, int64_t buckets, int64_t max_distance) {
    int64_t nb = buckets / 2, bucket = rel > 0 ? nb : 0, n = rel < 0 ? -rel : rel;
    int64_t max_exact = nb / 2;
    if (n < max_exact) return (int)(bucket + n);
    /* in f32 as torch computes it, truncated toward zero by .to(long) */
    float f = logf((float)n / (float)max_exact) / (float)log((double)max_distance / (double)max_exact) * (float)(nb - max_exact);
    int64_t large = max_exact + (int64_t)f;
    if (large > nb - 1) large = nb - 1;
    return (int)(bucket + large);
}

static void free_block(block *b) {
    qd_linear *ls[] = {&b->q, &b->k, &b->v, &b->o, &b->wi0, &b->wi1, &b->wo};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++) qd_linear_free(ls[i]);
    qd_tensor_free(&b->attn_norm), qd_tensor_free(&b->ffn_norm);
    free(b->rel_bias);
}

void qd_t5_free(qd_t5 *m) {
    if (!m) return;
    for (int64_t i = 0; m->blocks && i < m->c.layers; i++) free_block(&m->blocks[i]);
    free(m->blocks);
    qd_tensor_free(&m->embed), qd_tensor_free(&m->final_norm);
    free(m);
}

/* the relative-bias table [buckets, heads] on the host */
static qd_status load_rel_bias(const qd_model_ctx *ctx, const qd_t5_config *c, const char *name, float **out) {
    qd_tensor t = {0};
    int64_t n = c->buckets * c->heads;
    qd_status s = qd_model_param(ctx, name, 2, (int64_t[]){c->buckets, c->heads}, &t);
    *out = s ? NULL : malloc(sizeof **out * (size_t)n);
    if (!s && !*out) s = qd_fail(QD_ENOMEM, "cannot allocate '%s'", name);
    if (!s) s = ctx->backend->ops->download(ctx->backend, &t, *out);
    qd_tensor_free(&t);
    return s;
}

static qd_status load_block(const qd_model_ctx *ctx, const qd_t5_config *c, int64_t i, block *b) {
    char n[256];
    const int64_t D = c->d_model, inner = c->heads * c->d_kv;
    qd_status s = QD_OK;
#define LIN(dst, suffix, in, outf)                                        \
    snprintf(n, sizeof n, "encoder.block.%lld.%s", (long long)i, suffix); \
    if (!s) s = qd_model_linear(ctx, n, in, outf, dst)
#define PARAM(dst, suffix, len)                                           \
    snprintf(n, sizeof n, "encoder.block.%lld.%s", (long long)i, suffix); \
    if (!s) s = qd_model_param(ctx, n, 1, (int64_t[]){len}, dst)
    LIN(&b->q, "layer.0.SelfAttention.q", D, inner);
    LIN(&b->k, "layer.0.SelfAttention.k", D, inner);
    LIN(&b->v, "layer.0.SelfAttention.v", D, inner);
    LIN(&b->o, "layer.0.SelfAttention.o", inner, D);
    PARAM(&b->attn_norm, "layer.0.layer_norm.weight", D);
    if (c->gated) {
        LIN(&b->wi0, "layer.1.DenseReluDense.wi_0", D, c->d_ff);
        LIN(&b->wi1, "layer.1.DenseReluDense.wi_1", D, c->d_ff);
    } else {
        LIN(&b->wi0, "layer.1.DenseReluDense.wi", D, c->d_ff);
    }
    LIN(&b->wo, "layer.1.DenseReluDense.wo", c->d_ff, D);
    PARAM(&b->ffn_norm, "layer.1.layer_norm.weight", D);
    if (!s && (i == 0 || c->per_layer_bias)) {
        snprintf(n, sizeof n, "encoder.block.%lld.layer.0.SelfAttention.relative_attention_bias.weight", (long long)i);
        s = load_rel_bias(ctx, c, n, &b->rel_bias);
    }
#undef LIN
#undef PARAM
    return s;
}

qd_status qd_t5_load(const qd_model_ctx *ctx, const qd_t5_config *c, qd_t5 **out) {
    *out = NULL;
    qd_t5 *m = calloc(1, sizeof *m);
    if (!m) return qd_fail(QD_ENOMEM, "cannot allocate the T5 encoder");
    m->ctx = *ctx;
    m->c = *c;
    m->blocks = calloc((size_t)c->layers, sizeof *m->blocks);
    qd_status s = m->blocks ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate the T5 blocks");
    /* the shared table is saved once: as `shared` or as the encoder's own embed_tokens */
    const char *emb = ctx->random_weights || qd_model_has(ctx, "shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight";
    if (!s) s = qd_model_table(ctx, emb, c->vocab, c->d_model, &m->embed);
    for (int64_t i = 0; !s && i < c->layers; i++) s = load_block(ctx, c, i, &m->blocks[i]);
    if (!s) s = qd_model_param(ctx, "encoder.final_layer_norm.weight", 1, (int64_t[]){c->d_model}, &m->final_norm);
    if (s) {
        qd_t5_free(m);
        return s;
    }
    *out = m;
    return QD_OK;
}

/* ---- forward ---- */

/* bias [H, L, L] = table[bucket(j − i), h] */
static qd_tensor position_bias(qd_run *r, const qd_t5_config *c, const float *table, int64_t L) {
    const int64_t H = c->heads;
    int *bk = malloc(sizeof *bk * (size_t)(2 * L));
    float *bias = malloc(sizeof *bias * (size_t)(H * L * L));
    if (!bk || !bias) {
        free(bk), free(bias);
        if (!r->s) r->s = qd_fail(QD_ENOMEM, "T5: cannot allocate the position bias for %lld tokens", (long long)L);
        return (qd_tensor){0};
    }
    for (int64_t d = -(L - 1); d <= L - 1; d++) bk[d + L - 1] = qd_t5_bucket(d, c->buckets, c->max_distance);
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j < L; j++) bias[(h * L + i) * L + j] = table[bk[j - i + L - 1] * H + h];
    qd_tensor t = qd_run_upload_f32(r, bias, 3, (int64_t[]){H, L, L});
    free(bk), free(bias);
    return t;
}

static void run_block(qd_run *r, const qd_t5_config *c, block *b, qd_tensor *x, const qd_tensor *mask, const qd_tensor *bias) {
    const int64_t B = x->shape[0], L = x->shape[1];
    const float eps = (float)c->eps;
    qd_tensor h = qd_run_rms_norm(r, x, &b->attn_norm, eps);
    qd_tensor q = qd_run_linear(r, &b->q, &h), k = qd_run_linear(r, &b->k, &h), v = qd_run_linear(r, &b->v, &h);
    qd_tensor_free(&h);
    int64_t shape[4] = {B, L, c->heads, c->d_kv};
    qd_tensor_shape(&q, q.dtype, 4, shape), qd_tensor_shape(&k, k.dtype, 4, shape), qd_tensor_shape(&v, v.dtype, 4, shape);
    qd_tensor a = qd_run_tensor(r, 4, shape);
    qd_attn_args args = {.q = &q, .k = &k, .v = &v, .mask = mask, .bias = bias, .scale = 1.0f}; /* T5 does not scale q·k */
    if (!r->s) r->s = r->be->ops->attention(r->be, &args, &a);
    qd_tensor_free(&q), qd_tensor_free(&k), qd_tensor_free(&v);
    qd_tensor_shape(&a, a.dtype, 3, (int64_t[]){B, L, c->heads * c->d_kv});
    qd_tensor o = qd_run_linear(r, &b->o, &a);
    qd_tensor_free(&a);
    if (!r->s) r->s = r->be->ops->add(r->be, x, &o, x);
    qd_tensor_free(&o);

    qd_tensor f = qd_run_rms_norm(r, x, &b->ffn_norm, eps);
    qd_tensor g = qd_run_linear(r, &b->wi0, &f);
    if (!r->s) r->s = r->be->ops->activation(r->be, c->act, &g, &g);
    if (c->gated) {
        qd_tensor u = qd_run_linear(r, &b->wi1, &f);
        if (!r->s) r->s = r->be->ops->mul(r->be, &g, &u, &g);
        qd_tensor_free(&u);
    }
    qd_tensor_free(&f);
    qd_tensor d = qd_run_linear(r, &b->wo, &g);
    qd_tensor_free(&g);
    if (!r->s) r->s = r->be->ops->add(r->be, x, &d, x);
    qd_tensor_free(&d);
}

qd_status qd_t5_forward(qd_t5 *m, const int64_t *ids, const int64_t *mask, int64_t B, int64_t L, qd_tensor *out) {
    const qd_t5_config *c = &m->c;
    if (B <= 0 || L <= 0 || L > 65536) return qd_fail(QD_EINVAL, "T5 forward: ids must be [B, L] with B ≥ 1 and 1 ≤ L ≤ 65536");
    if (out->rank != 3 || out->shape[0] != B || out->shape[1] != L || out->shape[2] != c->d_model) {
        return qd_fail(QD_EINVAL, "T5 forward: the output must be [%lld, %lld, %lld]", (long long)B, (long long)L, (long long)c->d_model);
    }
    qd_run R = {.be = m->ctx.backend, .ctx = &m->ctx, .act = m->ctx.act, .s = QD_OK}, *r = &R;
    qd_tensor idt = qd_run_upload_i64(r, ids, 2, (int64_t[]){B, L});
    qd_tensor mt = mask ? qd_run_upload_i64(r, mask, 2, (int64_t[]){B, L}) : (qd_tensor){0};
    qd_tensor x = qd_run_embed(r, &m->embed, &idt);
    qd_tensor_free(&idt);
    qd_tensor bias = {0};
    for (int64_t i = 0; i < c->layers && !r->s; i++) {
        if (m->blocks[i].rel_bias) {
            qd_tensor_free(&bias);
            bias = position_bias(r, c, m->blocks[i].rel_bias, L);
        }
        run_block(r, c, &m->blocks[i], &x, mask ? &mt : NULL, &bias);
    }
    qd_tensor y = qd_run_rms_norm(r, &x, &m->final_norm, (float)c->eps);
    if (!r->s) r->s = r->be->ops->copy(r->be, &y, out);
    qd_tensor_free(&x), qd_tensor_free(&y), qd_tensor_free(&mt), qd_tensor_free(&bias);
    return r->s ? qd_fail_context(r->s, "T5 forward") : QD_OK;
}
