/* Decoder LLM text encoders over backend ops (see llm.h). Follows transformers' Qwen3Model /
 * LlamaModel forward: embed → per layer [RMSNorm, q/k/v projections, (Qwen3) per-head q/k RMSNorm,
 * rotate-half RoPE with angles pos·θ^(−2j/d) in f32, causal GQA attention over the unmasked keys,
 * o_proj, residual; RMSNorm, down(silu(gate)·up), residual] → final RMSNorm.
 *
 * Checkpoint names: `embed_tokens`, `layers.N.…`, `norm` (a base model), or the same under `model.` (a
 * …ForCausalLM checkpoint; its lm_head is never read). Biases are bound where the checkpoint has them
 * (Qwen2's q/k/v). */
#include "models/te/llm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/json.h"
#include "models/run.h"

typedef struct {
    qd_linear q, k, v, o, gate, up, down;
    qd_tensor in_norm, post_norm, q_norm, k_norm;
} layer;

struct qd_llm {
    qd_model_ctx ctx;
    qd_llm_config c;
    int64_t loaded; /* layers bound */
    bool has_norm;  /* final norm bound */
    qd_tensor embed, norm;
    layer *layers;
};

/* RoPE θ from `rope_parameters` (transformers ≥ 5) or a top-level `rope_theta`; a scaled RoPE type is refused. */
static qd_status parse_rope(const char *label, const json_t *cfg, double *theta) {
    const json_t *p = json_object_get(cfg, "rope_parameters");
    const json_t *scaling = json_object_get(cfg, "rope_scaling");
    if (p && !json_is_null(p)) {
        if (!json_is_object(p)) return qd_fail(QD_EFORMAT, "%s: 'rope_parameters' must be an object", label);
        scaling = p;
    }
    if (scaling && !json_is_null(scaling)) {
        if (!json_is_object(scaling)) return qd_fail(QD_EFORMAT, "%s: 'rope_scaling' must be an object or null", label);
        const char *type = qd_json_string(scaling, "rope_type");
        if (!type) type = qd_json_string(scaling, "type");
        if (type && strcmp(type, "default")) {
            return qd_fail(QD_EUNSUPPORTED, "%s: RoPE type '%s' is not supported (only 'default', unscaled RoPE)", label, type);
        }
    }
    qd_status s = qd_config_float(label, cfg, "rope_theta", 10000.0, theta);
    if (!s && p && json_is_object(p)) s = qd_config_float(label, p, "rope_theta", *theta, theta);
    if (!s && !(*theta > 1.0 && isfinite(*theta))) s = qd_fail(QD_EFORMAT, "%s: rope_theta must be a finite number > 1", label);
    return s;
}

static bool is_qwen3(const json_t *cfg) {
    const char *type = qd_json_string(cfg, "model_type");
    if (type) return !strcmp(type, "qwen3");
    const json_t *arch = json_array_get(json_object_get(cfg, "architectures"), 0);
    return json_is_string(arch) && !strncmp(json_string_value(arch), "Qwen3", 5);
}

qd_status qd_llm_config_parse(const char *label, const json_t *cfg, qd_llm_config *c) {
    memset(c, 0, sizeof *c);
    qd_status s = QD_OK;
    if (!s) s = qd_config_size(label, cfg, "hidden_size", -1, 1 << 20, &c->hidden);
    if (!s) s = qd_config_size(label, cfg, "num_hidden_layers", -1, 4096, &c->layers);
    if (!s) s = qd_config_size(label, cfg, "num_attention_heads", -1, 4096, &c->heads);
    if (!s) s = qd_config_size(label, cfg, "num_key_value_heads", c->heads, 4096, &c->kv_heads);
    if (!s) s = qd_config_size(label, cfg, "intermediate_size", -1, 1 << 22, &c->ffn);
    if (!s) s = qd_config_size(label, cfg, "vocab_size", -1, 1 << 24, &c->vocab);
    if (!s) s = qd_config_eps(label, cfg, "rms_norm_eps", 1e-6, &c->eps);
    if (s) return s;
    if (c->heads % c->kv_heads) {
        return qd_fail(QD_EFORMAT, "%s: num_key_value_heads (%lld) must divide num_attention_heads (%lld)", label,
                       (long long)c->kv_heads, (long long)c->heads);
    }
    /* head_dim: explicit (Qwen3, Mistral-Small), else hidden / heads */
    const json_t *hdv = json_object_get(cfg, "head_dim");
    if ((!hdv || json_is_null(hdv)) && c->hidden % c->heads) {
        return qd_fail(QD_EFORMAT, "%s: no head_dim and hidden_size is not divisible by num_attention_heads", label);
    }
    if ((s = qd_config_size(label, cfg, "head_dim", c->hidden / c->heads, 1024, &c->head_dim))) return s;
    if (c->head_dim % 2) return qd_fail(QD_EFORMAT, "%s: head_dim %lld must be even (RoPE rotates pairs)", label, (long long)c->head_dim);
    const char *act = qd_json_string(cfg, "hidden_act");
    if (act && strcmp(act, "silu")) return qd_fail(QD_EUNSUPPORTED, "%s: hidden_act '%s' (only silu, SwiGLU MLPs)", label, act);
    double partial = 1.0;
    if ((s = qd_config_float(label, cfg, "partial_rotary_factor", 1.0, &partial))) return s;
    if (partial != 1.0) return qd_fail(QD_EUNSUPPORTED, "%s: partial_rotary_factor %g (only 1)", label, partial);
    if ((s = parse_rope(label, cfg, &c->rope_theta))) return s;
    bool sliding = true;
    if ((s = qd_config_bool(label, cfg, "use_sliding_window", true, &sliding))) return s;
    const json_t *sw = json_object_get(cfg, "sliding_window");
    if (sliding && sw && !json_is_null(sw) && (s = qd_config_size(label, cfg, "sliding_window", 0, INT64_C(1) << 40, &c->sliding_window))) return s;
    c->qk_norm = is_qwen3(cfg);
    return QD_OK;
}

static void free_layer(layer *l) {
    qd_linear *ls[] = {&l->q, &l->k, &l->v, &l->o, &l->gate, &l->up, &l->down};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++) qd_linear_free(ls[i]);
    qd_tensor *ts[] = {&l->in_norm, &l->post_norm, &l->q_norm, &l->k_norm};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) qd_tensor_free(ts[i]);
}

void qd_llm_free(qd_llm *m) {
    if (!m) return;
    for (int64_t i = 0; m->layers && i < m->loaded; i++) free_layer(&m->layers[i]);
    free(m->layers);
    qd_tensor_free(&m->embed), qd_tensor_free(&m->norm);
    free(m);
}

static qd_status load_layer(const qd_model_ctx *ctx, const qd_llm_config *c, const char *prefix, layer *l) {
    char n[256];
    const int64_t D = c->hidden, qd = c->heads * c->head_dim, kvd = c->kv_heads * c->head_dim;
    qd_status s = QD_OK;
#define LIN(dst, suffix, in, outf)                  \
    snprintf(n, sizeof n, "%s.%s", prefix, suffix); \
    if (!s) s = qd_model_linear(ctx, n, in, outf, dst)
#define PARAM(dst, suffix, len)                     \
    snprintf(n, sizeof n, "%s.%s", prefix, suffix); \
    if (!s) s = qd_model_param(ctx, n, 1, (int64_t[]){len}, dst)
    LIN(&l->q, "self_attn.q_proj", D, qd);
    LIN(&l->k, "self_attn.k_proj", D, kvd);
    LIN(&l->v, "self_attn.v_proj", D, kvd);
    LIN(&l->o, "self_attn.o_proj", qd, D);
    LIN(&l->gate, "mlp.gate_proj", D, c->ffn);
    LIN(&l->up, "mlp.up_proj", D, c->ffn);
    LIN(&l->down, "mlp.down_proj", c->ffn, D);
    PARAM(&l->in_norm, "input_layernorm.weight", D);
    PARAM(&l->post_norm, "post_attention_layernorm.weight", D);
    if (c->qk_norm) {
        PARAM(&l->q_norm, "self_attn.q_norm.weight", c->head_dim);
        PARAM(&l->k_norm, "self_attn.k_norm.weight", c->head_dim);
    }
#undef LIN
#undef PARAM
    return s;
}

qd_status qd_llm_load(const qd_model_ctx *ctx, const qd_llm_config *c, int64_t max_index, qd_llm **out) {
    *out = NULL;
    if (max_index < 0 || max_index > c->layers) {
        return qd_fail(QD_EINVAL, "LLM text encoder: hidden state %lld does not exist (0..%lld)", (long long)max_index, (long long)c->layers);
    }
    qd_llm *m = calloc(1, sizeof *m);
    if (!m) return qd_fail(QD_ENOMEM, "cannot allocate the text encoder");
    m->ctx = *ctx;
    m->c = *c;
    m->layers = calloc((size_t)max_index + 1, sizeof *m->layers);
    qd_status s = m->layers ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate the text encoder's layers");
    /* a …ForCausalLM checkpoint holds the base model under `model.` */
    const char *root = !ctx->random_weights && qd_model_has(ctx, "model.embed_tokens.weight") ? "model." : "";
    char n[256];
    snprintf(n, sizeof n, "%sembed_tokens.weight", root);
    if (!s) s = qd_model_table(ctx, n, c->vocab, c->hidden, &m->embed);
    for (int64_t i = 0; !s && i < max_index && i < c->layers; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%slayers.%lld", root, (long long)i);
        s = load_layer(ctx, c, prefix, &m->layers[i]);
        m->loaded = i + 1;
    }
    m->has_norm = max_index == c->layers;
    snprintf(n, sizeof n, "%snorm.weight", root);
    if (!s && m->has_norm) s = qd_model_param(ctx, n, 1, (int64_t[]){c->hidden}, &m->norm);
    if (s) {
        qd_llm_free(m);
        return s;
    }
    *out = m;
    return QD_OK;
}

/* ---- forward ---- */

static void run_layer(qd_run *r, const qd_llm_config *c, layer *l, qd_tensor *x, const qd_tensor *mask, const qd_tensor *cos,
                      const qd_tensor *sin) {
    const int64_t B = x->shape[0], L = x->shape[1], hd = c->head_dim;
    const float eps = (float)c->eps;
    qd_tensor h = qd_run_rms_norm(r, x, &l->in_norm, eps);
    qd_tensor q = qd_run_linear(r, &l->q, &h), k = qd_run_linear(r, &l->k, &h), v = qd_run_linear(r, &l->v, &h);
    qd_tensor_free(&h);
    qd_tensor_shape(&q, q.dtype, 4, (int64_t[]){B, L, c->heads, hd});
    qd_tensor_shape(&k, k.dtype, 4, (int64_t[]){B, L, c->kv_heads, hd});
    qd_tensor_shape(&v, v.dtype, 4, (int64_t[]){B, L, c->kv_heads, hd});
    if (c->qk_norm && !r->s) r->s = r->be->ops->rms_norm(r->be, &q, &l->q_norm, eps, &q);
    if (c->qk_norm && !r->s) r->s = r->be->ops->rms_norm(r->be, &k, &l->k_norm, eps, &k);
    if (!r->s) r->s = r->be->ops->rope(r->be, &q, cos, sin, QD_ROPE_HALF, &q);
    if (!r->s) r->s = r->be->ops->rope(r->be, &k, cos, sin, QD_ROPE_HALF, &k);
    qd_tensor a = qd_run_tensor(r, 4, (int64_t[]){B, L, c->heads, hd});
    qd_attn_args args = {.q = &q, .k = &k, .v = &v, .mask = mask, .causal = true};
    if (!r->s) r->s = r->be->ops->attention(r->be, &args, &a);
    qd_tensor_free(&q), qd_tensor_free(&k), qd_tensor_free(&v);
    qd_tensor_shape(&a, a.dtype, 3, (int64_t[]){B, L, c->heads * hd});
    qd_tensor o = qd_run_linear(r, &l->o, &a);
    qd_tensor_free(&a);
    if (!r->s) r->s = r->be->ops->add(r->be, x, &o, x);
    qd_tensor_free(&o);

    qd_tensor f = qd_run_rms_norm(r, x, &l->post_norm, eps);
    qd_tensor g = qd_run_linear(r, &l->gate, &f), u = qd_run_linear(r, &l->up, &f);
    qd_tensor_free(&f);
    if (!r->s) r->s = r->be->ops->activation(r->be, QD_ACT_SILU, &g, &g);
    if (!r->s) r->s = r->be->ops->mul(r->be, &g, &u, &g);
    qd_tensor d = qd_run_linear(r, &l->down, &g);
    qd_tensor_free(&g), qd_tensor_free(&u);
    if (!r->s) r->s = r->be->ops->add(r->be, x, &d, x);
    qd_tensor_free(&d);
}

/* hidden state k goes to every output that asked for it */
static void emit(qd_run *r, int64_t k, const qd_tensor *x, int n, const int64_t *want, qd_tensor *outs) {
    for (int j = 0; j < n && !r->s; j++)
        if (want[j] == k) r->s = r->be->ops->copy(r->be, x, &outs[j]);
}

qd_status qd_llm_forward(qd_llm *m, const int64_t *ids, const int64_t *mask, int64_t B, int64_t L, int n, const int *index,
                         qd_tensor *outs) {
    const qd_llm_config *c = &m->c;
    if (B <= 0 || L <= 0 || n <= 0 || n > 64) return qd_fail(QD_EINVAL, "LLM text encoder: ids must be [B, L] with B, L ≥ 1");
    if (c->sliding_window > 0 && L > c->sliding_window) {
        return qd_fail(QD_EUNSUPPORTED, "LLM text encoder: %lld tokens exceed the sliding window of %lld (not supported)", (long long)L,
                       (long long)c->sliding_window);
    }
    int64_t want[64], last = 0;
    for (int j = 0; j < n; j++) {
        want[j] = index[j] < 0 ? c->layers + 1 + index[j] : index[j];
        if (want[j] < 0 || want[j] > c->layers) {
            return qd_fail(QD_EINVAL, "LLM text encoder: hidden state %d does not exist (%lld layers)", index[j], (long long)c->layers);
        }
        if ((want[j] > m->loaded && want[j] < c->layers) || (want[j] == c->layers && !m->has_norm)) {
            return qd_fail(QD_EINVAL, "LLM text encoder: hidden state %d was not loaded", index[j]);
        }
        const qd_tensor *o = &outs[j];
        if (o->rank != 3 || o->shape[0] != B || o->shape[1] != L || o->shape[2] != c->hidden) {
            return qd_fail(QD_EINVAL, "LLM text encoder: output %d must be [%lld, %lld, %lld]", j, (long long)B, (long long)L, (long long)c->hidden);
        }
        if (want[j] > last) last = want[j];
    }
    qd_run R = {.be = m->ctx.backend, .ctx = &m->ctx, .act = m->ctx.act, .s = QD_OK}, *r = &R;
    qd_tensor idt = qd_run_upload_i64(r, ids, 2, (int64_t[]){B, L});
    qd_tensor mt = mask ? qd_run_upload_i64(r, mask, 2, (int64_t[]){B, L}) : (qd_tensor){0};
    qd_tensor x = qd_run_embed(r, &m->embed, &idt);
    qd_tensor_free(&idt);
    emit(r, 0, &x, n, want, outs);

    /* positions 0..L−1: inv_freq and pos·inv_freq in f32, as transformers' default RoPE */
    const int64_t half = c->head_dim / 2;
    float *pos = malloc(sizeof *pos * (size_t)L), *cs = malloc(sizeof *cs * (size_t)(L * half)), *sn = malloc(sizeof *sn * (size_t)(L * half));
    if (!pos || !cs || !sn) r->s = qd_fail(QD_ENOMEM, "LLM text encoder: cannot allocate RoPE tables for %lld tokens", (long long)L);
    if (!r->s) {
        for (int64_t i = 0; i < L; i++) pos[i] = (float)i;
        int dims[1] = {(int)c->head_dim};
        qd_rope_table(pos, L, 1, dims, c->rope_theta, QD_ROPE_ANGLES_F32, cs, sn);
    }
    qd_tensor cos = qd_run_upload_f32(r, cs, 2, (int64_t[]){L, half}), sin = qd_run_upload_f32(r, sn, 2, (int64_t[]){L, half});
    free(pos), free(cs), free(sn);

    for (int64_t i = 0; i < last && i < c->layers && !r->s; i++) {
        run_layer(r, c, &m->layers[i], &x, mask ? &mt : NULL, &cos, &sin);
        if (i + 1 < c->layers) emit(r, i + 1, &x, n, want, outs);
    }
    if (last == c->layers && !r->s) { /* the last hidden state is taken after the final norm */
        qd_tensor y = qd_run_rms_norm(r, &x, &m->norm, (float)c->eps);
        emit(r, c->layers, &y, n, want, outs);
        qd_tensor_free(&y);
    }
    qd_tensor_free(&x), qd_tensor_free(&mt), qd_tensor_free(&cos), qd_tensor_free(&sin);
    return r->s ? qd_fail_context(r->s, "LLM text encoder forward") : QD_OK;
}
