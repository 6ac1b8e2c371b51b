/* AutoencoderKL decoder over backend ops (see kl.h). Convolution weights are small next to a DiT's, so
 * they are kept as F32 backend tensors. */
#include "models/vae/kl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

typedef struct {
    qd_tensor conv_w, conv_b;
} conv;

typedef struct {
    qd_tensor n1w, n1b, n2w, n2b;
    conv c1, c2, shortcut; /* shortcut.conv_w.data == NULL when in == out */
} resnet;

struct qd_vae_kl {
    qd_model_ctx ctx;
    qd_vae_kl_config c;
    conv conv_in, conv_out;
    resnet mid[2];
    qd_tensor attn_gn_w, attn_gn_b;
    qd_linear to_q, to_k, to_v, to_out;
    resnet *up;    /* n_blocks × (layers_per_block + 1) */
    conv *upsample; /* n_blocks − 1 */
    qd_tensor out_gn_w, out_gn_b;
};

qd_status qd_vae_kl_config_parse(const char *label, const json_t *cfg, qd_vae_kl_config *c) {
    memset(c, 0, sizeof *c);
    qd_status s = QD_OK;
    if (!s) s = qd_config_int(label, cfg, "latent_channels", 16, &c->latent_channels);
    if (!s) s = qd_config_int(label, cfg, "out_channels", 3, &c->out_channels);
    if (!s) s = qd_config_int(label, cfg, "norm_num_groups", 32, &c->groups);
    if (!s) s = qd_config_int(label, cfg, "layers_per_block", 2, &c->layers_per_block);
    if (!s) s = qd_config_bool(label, cfg, "mid_block_add_attention", true, &c->mid_attention);
    if (!s) s = qd_config_float(label, cfg, "scaling_factor", 0.3611, &c->scaling_factor);
    if (!s) s = qd_config_float(label, cfg, "shift_factor", 0.0, &c->shift_factor);
    if (s) return s;
    json_t *ss = json_object_get(cfg, "sample_size");
    if (json_is_array(ss)) ss = json_array_get(ss, 0);
    c->sample_size = json_is_integer(ss) ? json_integer_value(ss) : 1024;
    if (c->sample_size <= 0) return qd_fail(QD_EFORMAT, "%s: 'sample_size' must be a positive integer", label);
    json_t *b = json_object_get(cfg, "block_out_channels");
    if (!json_is_array(b) || json_array_size(b) < 1 || json_array_size(b) > 8) {
        return qd_fail(QD_EFORMAT, "%s: 'block_out_channels' must list 1 to 8 channel counts", label);
    }
    c->n_blocks = (int64_t)json_array_size(b);
    for (int64_t i = 0; i < c->n_blocks; i++) {
        c->block_out[i] = json_integer_value(json_array_get(b, (size_t)i));
        if (c->block_out[i] <= 0 || c->block_out[i] % c->groups) {
            return qd_fail(QD_EFORMAT, "%s: block_out_channels[%lld] must be a positive multiple of norm_num_groups", label,
                           (long long)i);
        }
    }
    if (json_is_true(json_object_get(cfg, "use_post_quant_conv"))) {
        return qd_fail(QD_EUNSUPPORTED, "%s: use_post_quant_conv (SD-style VAEs) is not supported yet", label);
    }
    if (c->latent_channels <= 0 || c->out_channels <= 0 || c->groups <= 0 || c->layers_per_block < 0) {
        return qd_fail(QD_EFORMAT, "%s: channel counts must be positive", label);
    }
    return QD_OK;
}

/* prefix + suffix into n, or an error naming the prefix when it does not fit */
static qd_status param_name(char *n, size_t size, const char *prefix, const char *suffix) {
    int len = snprintf(n, size, "%s.%s", prefix, suffix);
    if (len < 0 || (size_t)len >= size) return qd_fail(QD_EINVAL, "VAE parameter name '%s.%s' is too long", prefix, suffix);
    return QD_OK;
}

static qd_status load_conv(const qd_model_ctx *ctx, const char *prefix, int64_t out, int64_t in, int64_t k, conv *cv) {
    char n[320];
    qd_status s = param_name(n, sizeof n, prefix, "weight");
    if (!s) s = qd_model_param(ctx, n, 4, (int64_t[]){out, in, k, k}, &cv->conv_w);
    if (!s) s = param_name(n, sizeof n, prefix, "bias");
    if (!s) s = qd_model_param(ctx, n, 1, (int64_t[]){out}, &cv->conv_b);
    return s;
}

static qd_status load_norm(const qd_model_ctx *ctx, const char *prefix, int64_t ch, qd_tensor *w, qd_tensor *b) {
    char n[320];
    qd_status s = param_name(n, sizeof n, prefix, "weight");
    if (!s) s = qd_model_param(ctx, n, 1, (int64_t[]){ch}, w);
    if (!s) s = param_name(n, sizeof n, prefix, "bias");
    if (!s) s = qd_model_param(ctx, n, 1, (int64_t[]){ch}, b);
    return s;
}

static qd_status load_resnet(const qd_model_ctx *ctx, const char *prefix, int64_t in, int64_t out, resnet *r) {
    char n[256];
    qd_status s = QD_OK;
    snprintf(n, sizeof n, "%s.norm1", prefix);
    if (!s) s = load_norm(ctx, n, in, &r->n1w, &r->n1b);
    snprintf(n, sizeof n, "%s.conv1", prefix);
    if (!s) s = load_conv(ctx, n, out, in, 3, &r->c1);
    snprintf(n, sizeof n, "%s.norm2", prefix);
    if (!s) s = load_norm(ctx, n, out, &r->n2w, &r->n2b);
    snprintf(n, sizeof n, "%s.conv2", prefix);
    if (!s) s = load_conv(ctx, n, out, out, 3, &r->c2);
    if (!s && in != out) {
        snprintf(n, sizeof n, "%s.conv_shortcut", prefix);
        s = load_conv(ctx, n, out, in, 1, &r->shortcut);
    }
    return s;
}

static void free_conv(conv *c) { qd_tensor_free(&c->conv_w), qd_tensor_free(&c->conv_b); }

static void free_resnet(resnet *r) {
    qd_tensor_free(&r->n1w), qd_tensor_free(&r->n1b), qd_tensor_free(&r->n2w), qd_tensor_free(&r->n2b);
    free_conv(&r->c1), free_conv(&r->c2), free_conv(&r->shortcut);
}

void qd_vae_kl_free(qd_vae_kl *m) {
    if (!m) return;
    free_conv(&m->conv_in), free_conv(&m->conv_out);
    free_resnet(&m->mid[0]), free_resnet(&m->mid[1]);
    qd_tensor_free(&m->attn_gn_w), qd_tensor_free(&m->attn_gn_b), qd_tensor_free(&m->out_gn_w), qd_tensor_free(&m->out_gn_b);
    qd_linear_free(&m->to_q), qd_linear_free(&m->to_k), qd_linear_free(&m->to_v), qd_linear_free(&m->to_out);
    int64_t per = m->c.layers_per_block + 1;
    for (int64_t i = 0; m->up && i < m->c.n_blocks * per; i++) free_resnet(&m->up[i]);
    for (int64_t i = 0; m->upsample && i + 1 < m->c.n_blocks; i++) free_conv(&m->upsample[i]);
    free(m->up), free(m->upsample);
    free(m);
}

qd_status qd_vae_kl_load(const qd_model_ctx *ctx, const qd_vae_kl_config *c, qd_vae_kl **out) {
    *out = NULL;
    qd_vae_kl *m = calloc(1, sizeof *m);
    if (!m) return qd_fail(QD_ENOMEM, "cannot allocate the VAE");
    m->ctx = *ctx;
    m->c = *c;
    int64_t per = c->layers_per_block + 1, top = c->block_out[c->n_blocks - 1];
    m->up = calloc((size_t)(c->n_blocks * per), sizeof *m->up);
    m->upsample = calloc((size_t)c->n_blocks, sizeof *m->upsample);
    qd_status s = m->up && m->upsample ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate the VAE blocks");
    if (!s) s = load_conv(ctx, "decoder.conv_in", top, c->latent_channels, 3, &m->conv_in);
    if (!s) s = load_resnet(ctx, "decoder.mid_block.resnets.0", top, top, &m->mid[0]);
    if (!s && c->mid_attention) {
        s = load_norm(ctx, "decoder.mid_block.attentions.0.group_norm", top, &m->attn_gn_w, &m->attn_gn_b);
        if (!s) s = qd_model_linear(ctx, "decoder.mid_block.attentions.0.to_q", top, top, &m->to_q);
        if (!s) s = qd_model_linear(ctx, "decoder.mid_block.attentions.0.to_k", top, top, &m->to_k);
        if (!s) s = qd_model_linear(ctx, "decoder.mid_block.attentions.0.to_v", top, top, &m->to_v);
        if (!s) s = qd_model_linear(ctx, "decoder.mid_block.attentions.0.to_out.0", top, top, &m->to_out);
    }
    if (!s) s = load_resnet(ctx, "decoder.mid_block.resnets.1", top, top, &m->mid[1]);
    int64_t prev = top;
    char n[256];
    for (int64_t i = 0; !s && i < c->n_blocks; i++) {
        int64_t ch = c->block_out[c->n_blocks - 1 - i];
        for (int64_t j = 0; !s && j < per; j++) {
            snprintf(n, sizeof n, "decoder.up_blocks.%lld.resnets.%lld", (long long)i, (long long)j);
            s = load_resnet(ctx, n, j == 0 ? prev : ch, ch, &m->up[i * per + j]);
        }
        if (!s && i + 1 < c->n_blocks) {
            snprintf(n, sizeof n, "decoder.up_blocks.%lld.upsamplers.0.conv", (long long)i);
            s = load_conv(ctx, n, ch, ch, 3, &m->upsample[i]);
        }
        prev = ch;
    }
    if (!s) s = load_norm(ctx, "decoder.conv_norm_out", c->block_out[0], &m->out_gn_w, &m->out_gn_b);
    if (!s) s = load_conv(ctx, "decoder.conv_out", c->out_channels, c->block_out[0], 3, &m->conv_out);
    if (s) {
        qd_vae_kl_free(m);
        return s;
    }
    *out = m;
    return QD_OK;
}

/* ---- decode ---- */

typedef struct {
    qd_backend *be;
    qd_dtype act;
    int64_t groups;
    qd_status s;
} run;

static qd_tensor t_new(run *r, int rank, const int64_t *shape) {
    qd_tensor t = {0};
    if (!r->s) r->s = qd_tensor_new(r->be, &t, r->act, rank, shape);
    return t;
}

static qd_tensor conv2d(run *r, const conv *cv, const qd_tensor *x) {
    int64_t k = cv->conv_w.shape[2];
    qd_tensor y = t_new(r, 4, (int64_t[]){x->shape[0], cv->conv_w.shape[0], x->shape[2], x->shape[3]});
    qd_conv_args a = {.stride = {1, 1, 1}, .pad = {0, k / 2, k / 2}};
    if (!r->s) r->s = r->be->ops->conv2d(r->be, x, &cv->conv_w, &cv->conv_b, &a, &y);
    return y;
}

static qd_tensor norm_silu(run *r, const qd_tensor *x, const qd_tensor *w, const qd_tensor *b) {
    qd_tensor y = t_new(r, x->rank, x->shape);
    if (!r->s) r->s = r->be->ops->group_norm(r->be, x, (int)r->groups, w, b, 1e-6f, &y);
    if (!r->s) r->s = r->be->ops->activation(r->be, QD_ACT_SILU, &y, &y);
    return y;
}

/* ResnetBlock2D: shortcut(x) + conv2(silu(gn2(conv1(silu(gn1(x)))))) ; consumes x */
static qd_tensor resnet_forward(run *r, const resnet *rb, qd_tensor *x) {
    qd_tensor h = norm_silu(r, x, &rb->n1w, &rb->n1b);
    qd_tensor h1 = conv2d(r, &rb->c1, &h);
    qd_tensor_free(&h);
    qd_tensor h2 = norm_silu(r, &h1, &rb->n2w, &rb->n2b);
    qd_tensor_free(&h1);
    qd_tensor y = conv2d(r, &rb->c2, &h2);
    qd_tensor_free(&h2);
    if (rb->shortcut.conv_w.data) {
        qd_tensor sc = conv2d(r, &rb->shortcut, x);
        if (!r->s) r->s = r->be->ops->add(r->be, &y, &sc, &y);
        qd_tensor_free(&sc);
    } else if (!r->s) {
        r->s = r->be->ops->add(r->be, &y, x, &y);
    }
    qd_tensor_free(x);
    return y;
}

/* the mid block's single-head attention over the h·w positions, with its residual */
static void mid_attention(run *r, qd_vae_kl *m, qd_tensor *x) {
    int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    qd_tensor g = t_new(r, 4, x->shape);
    if (!r->s) r->s = r->be->ops->group_norm(r->be, x, (int)r->groups, &m->attn_gn_w, &m->attn_gn_b, 1e-6f, &g);
    qd_tensor_shape(&g, g.dtype, 3, (int64_t[]){B, C, HW});
    qd_tensor tok = t_new(r, 3, (int64_t[]){B, HW, C});
    if (!r->s) r->s = r->be->ops->permute(r->be, &g, (int[]){0, 2, 1}, &tok);
    qd_tensor_free(&g);
    qd_tensor q = t_new(r, 3, tok.shape), k = t_new(r, 3, tok.shape), v = t_new(r, 3, tok.shape);
    if (!r->s) r->s = r->be->ops->linear(r->be, &m->to_q, &tok, &q);
    if (!r->s) r->s = r->be->ops->linear(r->be, &m->to_k, &tok, &k);
    if (!r->s) r->s = r->be->ops->linear(r->be, &m->to_v, &tok, &v);
    qd_tensor *qkv[3] = {&q, &k, &v};
    for (int i = 0; i < 3; i++) qd_tensor_shape(qkv[i], qkv[i]->dtype, 4, (int64_t[]){B, HW, 1, C});
    qd_tensor a = t_new(r, 4, (int64_t[]){B, HW, 1, C});
    qd_attn_args args = {.q = &q, .k = &k, .v = &v};
    if (!r->s) r->s = r->be->ops->attention(r->be, &args, &a);
    qd_tensor_shape(&a, a.dtype, 3, (int64_t[]){B, HW, C});
    if (!r->s) r->s = r->be->ops->linear(r->be, &m->to_out, &a, &tok);
    qd_tensor back = t_new(r, 3, (int64_t[]){B, C, HW});
    if (!r->s) r->s = r->be->ops->permute(r->be, &tok, (int[]){0, 2, 1}, &back);
    qd_tensor_shape(&back, back.dtype, 4, x->shape);
    if (!r->s) r->s = r->be->ops->add(r->be, x, &back, x);
    qd_tensor *rest[] = {&tok, &q, &k, &v, &a, &back};
    for (size_t i = 0; i < sizeof rest / sizeof *rest; i++) qd_tensor_free(rest[i]);
}

qd_status qd_vae_kl_decode(qd_vae_kl *m, const qd_tensor *z, qd_tensor *out) {
    const qd_vae_kl_config *c = &m->c;
    run R = {.be = m->ctx.backend, .act = m->ctx.act, .groups = c->groups, .s = QD_OK}, *r = &R;
    int64_t scale = (int64_t)1 << (c->n_blocks - 1);
    if (z->rank != 4 || z->shape[1] != c->latent_channels || out->rank != 4 || out->shape[0] != z->shape[0] ||
        out->shape[1] != c->out_channels || out->shape[2] != z->shape[2] * scale || out->shape[3] != z->shape[3] * scale) {
        return qd_fail(QD_EINVAL, "VAE decode: z [B, %lld, h, w] into [B, %lld, %lld·h, %lld·w] expected",
                       (long long)c->latent_channels, (long long)c->out_channels, (long long)scale, (long long)scale);
    }
    qd_tensor x = conv2d(r, &m->conv_in, z);
    x = resnet_forward(r, &m->mid[0], &x);
    if (c->mid_attention) mid_attention(r, m, &x);
    x = resnet_forward(r, &m->mid[1], &x);
    int64_t per = c->layers_per_block + 1;
    for (int64_t i = 0; i < c->n_blocks && !r->s; i++) {
        for (int64_t j = 0; j < per; j++) x = resnet_forward(r, &m->up[i * per + j], &x);
        if (i + 1 < c->n_blocks) {
            qd_tensor u = t_new(r, 4, (int64_t[]){x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3]});
            if (!r->s) r->s = r->be->ops->upsample_nearest(r->be, &x, 2, &u);
            qd_tensor_free(&x);
            x = conv2d(r, &m->upsample[i], &u);
            qd_tensor_free(&u);
        }
    }
    qd_tensor h = norm_silu(r, &x, &m->out_gn_w, &m->out_gn_b);
    qd_tensor_free(&x);
    qd_conv_args a = {.stride = {1, 1, 1}, .pad = {0, 1, 1}};
    if (!r->s) r->s = r->be->ops->conv2d(r->be, &h, &m->conv_out.conv_w, &m->conv_out.conv_b, &a, out);
    qd_tensor_free(&h);
    return r->s ? qd_fail_context(r->s, "VAE decode") : QD_OK;
}

/* ---- tiled decode ---- */

/* z[:, :, i0:i0+h, j0:j0+w] of a host f32 copy of z [B, C, H, W] into a new activation tensor */
static qd_status tile_of(qd_backend *be, qd_dtype act, const float *z, const int64_t *zs, int64_t i0, int64_t h, int64_t j0,
                         int64_t w, qd_tensor *t) {
    int64_t B = zs[0], C = zs[1], H = zs[2], W = zs[3];
    float *host = malloc(sizeof *host * (size_t)(B * C * h * w));
    if (!host) return qd_fail(QD_ENOMEM, "VAE tiled decode: cannot allocate a latent tile");
    for (int64_t bc = 0; bc < B * C; bc++)
        for (int64_t y = 0; y < h; y++) memcpy(host + (bc * h + y) * w, z + (bc * H + i0 + y) * W + j0, sizeof *host * (size_t)w);
    qd_tensor f = {0};
    memset(t, 0, sizeof *t);
    qd_status s = qd_tensor_new(be, &f, QD_DTYPE_F32, 4, (int64_t[]){B, C, h, w});
    if (!s) s = be->ops->upload(be, &f, host);
    if (!s) s = qd_tensor_new(be, t, act, 4, f.shape);
    if (!s) s = be->ops->copy(be, &f, t);
    qd_tensor_free(&f);
    free(host);
    return s;
}

typedef struct {
    float *px; /* [B, C, h, w] f32, blended in place as diffusers does */
    int64_t h, w;
} tile_img;

qd_status qd_vae_kl_decode_tiled(qd_vae_kl *m, const qd_tensor *z, qd_tensor *out) {
    const qd_vae_kl_config *c = &m->c;
    qd_backend *be = m->ctx.backend;
    int64_t scale = (int64_t)1 << (c->n_blocks - 1);
    int64_t tl = c->sample_size / scale; /* latent tile */
    if (z->rank != 4 || tl < 1 || (z->shape[2] <= tl && z->shape[3] <= tl)) return qd_vae_kl_decode(m, z, out);
    int64_t B = z->shape[0], C = c->out_channels, H = z->shape[2], W = z->shape[3];
    if (out->rank != 4 || out->shape[0] != B || out->shape[1] != C || out->shape[2] != H * scale || out->shape[3] != W * scale) {
        return qd_fail(QD_EINVAL, "VAE tiled decode: z [B, %lld, h, w] into [B, %lld, %lld·h, %lld·w] expected",
                       (long long)c->latent_channels, (long long)C, (long long)scale, (long long)scale);
    }
    const int64_t stride = (int64_t)((double)tl * 0.75), ts = c->sample_size, blend = (int64_t)((double)ts * 0.25),
                  limit = ts - blend;
    if (stride < 1 || stride * scale != limit) {
        /* diffusers' crops would then not add up to the image size */
        return qd_fail(QD_EUNSUPPORTED, "VAE tiled decode: sample_size %lld does not split into %lld-latent tiles with a 25%% overlap "
                       "that crop to whole strides", (long long)c->sample_size, (long long)tl);
    }
    const int64_t rows = (H + stride - 1) / stride, cols = (W + stride - 1) / stride, OH = H * scale, OW = W * scale;
    float *zh = malloc(sizeof *zh * (size_t)qd_tensor_elements(z)), *img = malloc(sizeof *img * (size_t)(B * C * OH * OW));
    tile_img *above = calloc((size_t)cols, sizeof *above), *cur = calloc((size_t)cols, sizeof *cur);
    qd_status s = zh && img && above && cur ? QD_OK : qd_fail(QD_ENOMEM, "VAE tiled decode: cannot allocate");
    qd_tensor zf = {0};
    if (!s) s = qd_tensor_new(be, &zf, QD_DTYPE_F32, 4, z->shape);
    if (!s) s = be->ops->copy(be, z, &zf);
    if (!s) s = be->ops->download(be, &zf, zh);
    qd_tensor_free(&zf);
    for (int64_t r = 0; r < rows && !s; r++) {
        for (int64_t k = 0; k < cols && !s; k++) {
            int64_t i0 = r * stride, j0 = k * stride;
            int64_t h = H - i0 < tl ? H - i0 : tl, w = W - j0 < tl ? W - j0 : tl;
            qd_tensor zt = {0}, yt = {0}, yf = {0};
            s = tile_of(be, m->ctx.act, zh, z->shape, i0, h, j0, w, &zt);
            tile_img *t = &cur[k];
            t->h = h * scale, t->w = w * scale;
            t->px = malloc(sizeof *t->px * (size_t)(B * C * t->h * t->w));
            if (!s && !t->px) s = qd_fail(QD_ENOMEM, "VAE tiled decode: cannot allocate a tile");
            if (!s) s = qd_tensor_new(be, &yt, m->ctx.act, 4, (int64_t[]){B, C, t->h, t->w});
            if (!s) s = qd_vae_kl_decode(m, &zt, &yt);
            if (!s) s = qd_tensor_new(be, &yf, QD_DTYPE_F32, 4, yt.shape);
            if (!s) s = be->ops->copy(be, &yt, &yf);
            if (!s) s = be->ops->download(be, &yf, t->px);
            qd_tensor_free(&zt), qd_tensor_free(&yt), qd_tensor_free(&yf);
            if (s) break;
            /* blend the tile above (already blended itself), then the one on the left */
            for (int64_t bc = 0; bc < B * C; bc++) {
                float *p = t->px + bc * t->h * t->w;
                if (r > 0) {
                    const tile_img *a = &above[k];
                    int64_t e = blend < a->h ? blend : a->h;
                    e = e < t->h ? e : t->h;
                    for (int64_t y = 0; y < e; y++) {
                        const float *ar = a->px + (bc * a->h + a->h - e + y) * a->w;
                        float wa = (float)(1.0 - (double)y / (double)e), wb = (float)((double)y / (double)e);
                        for (int64_t x = 0; x < t->w; x++) p[y * t->w + x] = ar[x] * wa + p[y * t->w + x] * wb;
                    }
                }
                if (k > 0) {
                    const tile_img *a = &cur[k - 1];
                    int64_t e = blend < a->w ? blend : a->w;
                    e = e < t->w ? e : t->w;
                    for (int64_t y = 0; y < t->h; y++) {
                        const float *ar = a->px + (bc * a->h + y) * a->w;
                        for (int64_t x = 0; x < e; x++) {
                            float wa = (float)(1.0 - (double)x / (double)e), wb = (float)((double)x / (double)e);
                            p[y * t->w + x] = ar[a->w - e + x] * wa + p[y * t->w + x] * wb;
                        }
                    }
                }
            }
            /* its top-left limit × limit into the image */
            int64_t ch = t->h < limit ? t->h : limit, cw = t->w < limit ? t->w : limit, oy = r * limit, ox = k * limit;
            for (int64_t bc = 0; bc < B * C; bc++)
                for (int64_t y = 0; y < ch; y++)
                    memcpy(img + (bc * OH + oy + y) * OW + ox, t->px + (bc * t->h + y) * t->w, sizeof *img * (size_t)cw);
        }
        for (int64_t k = 0; k < cols; k++) {
            free(above[k].px);
            above[k] = cur[k];
            cur[k] = (tile_img){0};
        }
    }
    /* the crops tile the image exactly: rows·limit ≥ OH, and the last crop ends at the image edge */
    qd_tensor of = {0};
    if (!s) s = qd_tensor_new(be, &of, QD_DTYPE_F32, 4, out->shape);
    if (!s) s = be->ops->upload(be, &of, img);
    if (!s) s = be->ops->copy(be, &of, out);
    qd_tensor_free(&of);
    for (int64_t k = 0; above && k < cols; k++) free(above[k].px);
    for (int64_t k = 0; cur && k < cols; k++) free(cur[k].px);
    free(above), free(cur), free(zh), free(img);
    return s ? qd_fail_context(s, "VAE tiled decode") : QD_OK;
}
