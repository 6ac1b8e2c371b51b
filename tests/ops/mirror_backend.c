/* The host-mirroring test backend (mirror_backend.h). */
#include "mirror_backend.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "core/status.h"

typedef struct {
    qd_backend *dev;
} mirror;

#define DEV(b) (((mirror *)(b)->impl)->dev)

/* up to 10 tensors of one op: each host tensor gets a device tensor of its own shape; a host tensor that
 * shares another's buffer (in-place calls, also with another shape: gated's y over x) shares its device
 * buffer too, so the op sees the aliasing the caller set up */
typedef struct {
    const qd_tensor *host[10];
    qd_tensor dev[10];
    bool alias[10];
    int n;
} pairs;

static qd_tensor *to_dev(qd_backend *b, pairs *p, const qd_tensor *h, qd_status *s) {
    if (!h || *s) return NULL;
    qd_tensor *d = &p->dev[p->n];
    *d = *h;
    d->data = NULL;
    for (int i = 0; i < p->n; i++)
        if (!p->alias[i] && p->host[i]->data == h->data) {
            d->data = p->dev[i].data;
            p->alias[p->n] = true;
            p->host[p->n++] = h;
            return d;
        }
    if ((*s = DEV(b)->ops->alloc(DEV(b), d))) return NULL;
    p->alias[p->n] = false;
    p->host[p->n++] = h;
    if ((*s = DEV(b)->ops->upload(DEV(b), d, h->data))) return NULL;
    return d;
}

/* download the outputs (each with its own shape), free every device buffer */
static qd_status finish(qd_backend *b, pairs *p, qd_status s, const qd_tensor *const *outs, int nout) {
    for (int o = 0; !s && o < nout; o++)
        for (int i = 0; i < p->n; i++)
            if (outs[o] && p->host[i] == outs[o]) s = DEV(b)->ops->download(DEV(b), &p->dev[i], outs[o]->data);
    for (int i = 0; i < p->n; i++)
        if (!p->alias[i]) DEV(b)->ops->release(DEV(b), &p->dev[i]);
    return s;
}

/* host memory, as the CPU backend keeps it */
static qd_status m_alloc(qd_backend *b, qd_tensor *t) {
    t->data = qd_cpu_alloc(qd_tensor_bytes(t));
    if (!t->data) return qd_fail(QD_ENOMEM, "mirror: cannot allocate");
    t->backend = b;
    return QD_OK;
}
static void m_release(qd_backend *b, qd_tensor *t) {
    (void)b;
    qd_cpu_free(t->data);
    t->data = NULL;
}
static qd_status m_upload(qd_backend *b, qd_tensor *dst, const void *host) {
    (void)b;
    memcpy(dst->data, host, qd_tensor_bytes(dst));
    return QD_OK;
}
static qd_status m_download(qd_backend *b, const qd_tensor *src, void *host) {
    (void)b;
    memcpy(host, src->data, qd_tensor_bytes(src));
    return QD_OK;
}

#define OUTS(...) (const qd_tensor *const[]){__VA_ARGS__}, (int)(sizeof((const qd_tensor *const[]){__VA_ARGS__}) / sizeof(const qd_tensor *))

static qd_status m_copy(qd_backend *b, const qd_tensor *src, qd_tensor *dst) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *a = to_dev(b, &p, src, &s), *y = to_dev(b, &p, dst, &s);
    if (!s) s = DEV(b)->ops->copy(DEV(b), a, y);
    return finish(b, &p, s, OUTS(dst));
}

static qd_status m_prepare(qd_backend *b, qd_linear *l) { return DEV(b)->ops->prepare_linear(DEV(b), l); }

static qd_status m_linear(qd_backend *b, qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->linear(DEV(b), l, dx, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_attention(qd_backend *b, const qd_attn_args *a, qd_tensor *out) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_attn_args d = *a;
    d.q = to_dev(b, &p, a->q, &s), d.k = to_dev(b, &p, a->k, &s);
    qd_tensor wide = {0}, vview = {0};
    if (!(a->v_row > 0 && a->v->rank == 4)) d.v = to_dev(b, &p, a->v, &s);
    else { /* v in place in wider rows: the rows go over whole (v at their start), not v's own bytes */
        wide = *a->v;
        qd_tensor_shape(&wide, a->v->dtype, 2, (int64_t[]){a->v->shape[0] * a->v->shape[1], a->v_row});
        const qd_tensor *dw = to_dev(b, &p, &wide, &s);
        if (dw) vview = *dw, vview.rank = a->v->rank, memcpy(vview.shape, a->v->shape, sizeof vview.shape), d.v = &vview;
    }
    d.mask = to_dev(b, &p, a->mask, &s), d.bias = to_dev(b, &p, a->bias, &s);
    qd_tensor *o = to_dev(b, &p, out, &s);
    if (!s) s = DEV(b)->ops->attention(DEV(b), &d, o);
    return finish(b, &p, s, OUTS(out));
}

static qd_status m_rms(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dw = to_dev(b, &p, w, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->rms_norm(DEV(b), dx, dw, eps, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_layer(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, float eps, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dw = to_dev(b, &p, w, &s), *db = to_dev(b, &p, bias, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->layer_norm(DEV(b), dx, dw, db, eps, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_group(qd_backend *b, const qd_tensor *x, int groups, const qd_tensor *w, const qd_tensor *bias, float eps, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dw = to_dev(b, &p, w, &s), *db = to_dev(b, &p, bias, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->group_norm(DEV(b), dx, groups, dw, db, eps, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *c, const qd_tensor *sn, qd_rope_mode mode, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dc = to_dev(b, &p, c, &s), *ds = to_dev(b, &p, sn, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->rope(DEV(b), dx, dc, ds, mode, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_norm_modulate(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *sc,
                                 const qd_tensor *sh, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dw = to_dev(b, &p, w, &s), *dc = to_dev(b, &p, sc, &s), *dh = to_dev(b, &p, sh, &s);
    qd_tensor *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->norm_modulate(DEV(b), kind, dx, dw, eps, dc, dh, dy);
    return finish(b, &p, s, OUTS(y));
}

static bool m_takes_fp8_tokens(qd_backend *b, const qd_linear *l, float *fixed) {
    *fixed = 0.0f;
    return DEV(b)->ops->takes_fp8_tokens && DEV(b)->ops->takes_fp8_tokens(DEV(b), l, fixed);
}

static qd_status m_norm_modulate_fp8(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *sc,
                                     const qd_tensor *sh, float fixed, qd_tensor *codes, qd_tensor *rs) {
    if (!DEV(b)->ops->norm_modulate_fp8) return qd_fail(QD_EUNSUPPORTED, "mirror: the device has no norm_modulate_fp8");
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dw = to_dev(b, &p, w, &s), *dc = to_dev(b, &p, sc, &s), *dh = to_dev(b, &p, sh, &s);
    qd_tensor *dq = to_dev(b, &p, codes, &s), *dr = to_dev(b, &p, rs, &s);
    if (!s) s = DEV(b)->ops->norm_modulate_fp8(DEV(b), kind, dx, dw, eps, dc, dh, fixed, dq, dr);
    return finish(b, &p, s, OUTS(codes, rs));
}

static qd_status m_linear_fp8_tokens(qd_backend *b, qd_linear *l, const qd_tensor *codes, const qd_tensor *rs, qd_tensor *y) {
    if (!DEV(b)->ops->linear_fp8_tokens) return qd_fail(QD_EUNSUPPORTED, "mirror: the device has no linear_fp8_tokens");
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dq = to_dev(b, &p, codes, &s), *dr = to_dev(b, &p, rs, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->linear_fp8_tokens(DEV(b), l, dq, dr, dy);
    return finish(b, &p, s, OUTS(y));
}

static bool m_fp8_codes_between(qd_backend *b, const qd_linear *producer, const qd_linear *consumer) {
    return DEV(b)->ops->fp8_codes_between && DEV(b)->ops->fp8_codes_between(DEV(b), producer, consumer);
}

static qd_status m_linear_fp8_codes(qd_backend *b, qd_linear *l, const qd_tensor *codes, const qd_tensor *rs, const qd_linear *consumer, qd_tensor *out,
                                    int64_t col) {
    if (!DEV(b)->ops->linear_fp8_codes) return qd_fail(QD_EUNSUPPORTED, "mirror: the device has no linear_fp8_codes");
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dq = to_dev(b, &p, codes, &s), *dr = to_dev(b, &p, rs, &s), *dout = to_dev(b, &p, out, &s); /* (out's other columns too) */
    if (!s) s = DEV(b)->ops->linear_fp8_codes(DEV(b), l, dq, dr, consumer, dout, col);
    return finish(b, &p, s, OUTS(out));
}

static qd_status m_linear_fused_codes(qd_backend *b, qd_linear *l, qd_tensor *codes, const qd_tensor *const *xs, const int64_t *cols, int n,
                                      const qd_tensor *g, const qd_tensor *r, qd_tensor *y) {
    if (!DEV(b)->ops->linear_fused_codes) return qd_fail(QD_EUNSUPPORTED, "mirror: the device has no linear_fused_codes");
    pairs p = {0};
    qd_status s = QD_OK;
    const qd_tensor *dxs[QD_FUSED_INPUTS];
    for (int i = 0; i < n && i < QD_FUSED_INPUTS; i++) dxs[i] = to_dev(b, &p, xs[i], &s);
    qd_tensor *dq = to_dev(b, &p, codes, &s), *dg = to_dev(b, &p, g, &s), *dr = to_dev(b, &p, r, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->linear_fused_codes(DEV(b), l, dq, dxs, cols, n, dg, dr, dy);
    return finish(b, &p, s, OUTS(codes, y));
}

static qd_status m_rms_norm_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *c, const qd_tensor *sn,
                                 qd_rope_mode mode, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dw = to_dev(b, &p, w, &s), *dc = to_dev(b, &p, c, &s), *ds = to_dev(b, &p, sn, &s);
    qd_tensor *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->rms_norm_rope(DEV(b), dx, dw, eps, dc, ds, mode, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_rms_norm_rope_cols(qd_backend *b, const qd_tensor *x, int64_t col, const qd_tensor *w, float eps, const qd_tensor *c,
                                      const qd_tensor *sn, qd_rope_mode mode, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dw = to_dev(b, &p, w, &s), *dc = to_dev(b, &p, c, &s), *ds = to_dev(b, &p, sn, &s);
    qd_tensor *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->rms_norm_rope_cols(DEV(b), dx, col, dw, eps, dc, ds, mode, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_activation(qd_backend *b, qd_act_kind kind, const qd_tensor *x, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->activation(DEV(b), kind, dx, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_gated(qd_backend *b, qd_act_kind kind, bool gate_first, const qd_tensor *x, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->gated(DEV(b), kind, gate_first, dx, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_rms_norm_gated_add(qd_backend *b, const qd_tensor *o, const qd_tensor *w, float eps, const qd_tensor *g, qd_tensor *x,
                                      const qd_tensor *nw, const qd_tensor *nsc, qd_tensor *ny, float fixed, qd_tensor *q, qd_tensor *rs) {
    if (!DEV(b)->ops->rms_norm_gated_add) return qd_fail(QD_EUNSUPPORTED, "mirror: the device has no rms_norm_gated_add");
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *d_o = to_dev(b, &p, o, &s), *dw = to_dev(b, &p, w, &s), *dg = to_dev(b, &p, g, &s), *dx = to_dev(b, &p, x, &s);
    qd_tensor *dnw = to_dev(b, &p, nw, &s), *dns = to_dev(b, &p, nsc, &s), *dny = to_dev(b, &p, ny, &s), *dq = to_dev(b, &p, q, &s);
    qd_tensor *dr = to_dev(b, &p, rs, &s);
    if (!s) s = DEV(b)->ops->rms_norm_gated_add(DEV(b), d_o, dw, eps, dg, dx, dnw, dns, dny, fixed, dq, dr);
    return finish(b, &p, s, OUTS(x, ny, q, rs));
}

static qd_status m_swiglu(qd_backend *b, const qd_tensor *x, int64_t gate_col, int64_t value_col, qd_tensor *y) {
    if (!DEV(b)->ops->swiglu) return qd_fail(QD_EUNSUPPORTED, "mirror: the device has no swiglu");
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->swiglu(DEV(b), dx, gate_col, value_col, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_swiglu_fp8(qd_backend *b, const qd_tensor *x, int64_t gate_col, int64_t value_col, float fixed, qd_tensor *codes, qd_tensor *rs) {
    if (!DEV(b)->ops->swiglu_fp8) return qd_fail(QD_EUNSUPPORTED, "mirror: the device has no swiglu_fp8");
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dq = to_dev(b, &p, codes, &s), *dr = to_dev(b, &p, rs, &s);
    if (!s) s = DEV(b)->ops->swiglu_fp8(DEV(b), dx, gate_col, value_col, fixed, dq, dr);
    return finish(b, &p, s, OUTS(codes, rs));
}

static qd_status m_modulate(qd_backend *b, const qd_tensor *x, const qd_tensor *sc, const qd_tensor *sh, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dc = to_dev(b, &p, sc, &s), *dh = to_dev(b, &p, sh, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->modulate(DEV(b), dx, dc, dh, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_gated_add(qd_backend *b, const qd_tensor *r, const qd_tensor *x, const qd_tensor *g, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dr = to_dev(b, &p, r, &s), *dx = to_dev(b, &p, x, &s), *dg = to_dev(b, &p, g, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->gated_add(DEV(b), dr, dx, dg, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_linear_fused(qd_backend *b, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *g, const qd_tensor *r,
                                qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    const qd_tensor *dxs[QD_FUSED_INPUTS];
    for (int i = 0; i < n && i < QD_FUSED_INPUTS; i++) dxs[i] = to_dev(b, &p, xs[i], &s);
    qd_tensor *dg = to_dev(b, &p, g, &s), *dr = to_dev(b, &p, r, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = qd_linear_fused(DEV(b), l, dxs, n, dg, dr, dy);
    return finish(b, &p, s, OUTS(y));
}

/* (at most 9 layers: the pairs hold x and 9 outputs) */
static qd_status m_linear_many(qd_backend *b, qd_linear *const *ls, int n, const qd_tensor *x, qd_tensor *const *ys) {
    if (n > 9) return qd_fail(QD_EINVAL, "mirror: linear_many of %d layers (at most 9 here)", n);
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dys[9];
    for (int i = 0; i < n; i++) dys[i] = to_dev(b, &p, ys[i], &s);
    if (!s) s = qd_linear_many(DEV(b), ls, n, dx, dys);
    return finish(b, &p, s, (const qd_tensor *const *)ys, n);
}

static qd_status m_binary(qd_backend *b, bool mul, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *da = to_dev(b, &p, a, &s), *dc = to_dev(b, &p, c, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = mul ? DEV(b)->ops->mul(DEV(b), da, dc, dy) : DEV(b)->ops->add(DEV(b), da, dc, dy);
    return finish(b, &p, s, OUTS(y));
}
static qd_status m_add(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) { return m_binary(b, false, a, c, y); }
static qd_status m_mul(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) { return m_binary(b, true, a, c, y); }

static qd_status m_softmax(qd_backend *b, const qd_tensor *x, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->softmax(DEV(b), dx, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_conv(qd_backend *b, bool is3d, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                        qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dw = to_dev(b, &p, w, &s), *db = to_dev(b, &p, bias, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = is3d ? DEV(b)->ops->conv3d(DEV(b), dx, dw, db, c, dy) : DEV(b)->ops->conv2d(DEV(b), dx, dw, db, c, dy);
    return finish(b, &p, s, OUTS(y));
}
static qd_status m_conv2d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c, qd_tensor *y) {
    return m_conv(b, false, x, w, bias, c, y);
}
static qd_status m_conv3d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c, qd_tensor *y) {
    return m_conv(b, true, x, w, bias, c, y);
}

static qd_status m_upsample(qd_backend *b, const qd_tensor *x, int factor, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->upsample_nearest(DEV(b), dx, factor, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_permute(qd_backend *b, const qd_tensor *x, const int *perm, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->permute(DEV(b), dx, perm, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_concat(qd_backend *b, const qd_tensor *const *xs, int n, int dim, qd_tensor *y) {
    if (n > 7) return qd_fail(QD_EUNSUPPORTED, "mirror: concat of more than 7 inputs");
    pairs p = {0};
    qd_status s = QD_OK;
    const qd_tensor *d[7];
    for (int i = 0; i < n; i++) d[i] = to_dev(b, &p, xs[i], &s);
    qd_tensor *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->concat(DEV(b), d, n, dim, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_slice(qd_backend *b, const qd_tensor *x, int dim, int64_t start, int64_t len, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dx = to_dev(b, &p, x, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->slice(DEV(b), dx, dim, start, len, dy);
    return finish(b, &p, s, OUTS(y));
}

static qd_status m_embedding(qd_backend *b, const qd_tensor *table, const qd_tensor *ids, qd_tensor *y) {
    pairs p = {0};
    qd_status s = QD_OK;
    qd_tensor *dt = to_dev(b, &p, table, &s), *di = to_dev(b, &p, ids, &s), *dy = to_dev(b, &p, y, &s);
    if (!s) s = DEV(b)->ops->embedding(DEV(b), dt, di, dy);
    return finish(b, &p, s, OUTS(y));
}

static void m_destroy(qd_backend *b) {
    if (!b) return;
    DEV(b)->ops->destroy(DEV(b));
    free(b->impl);
    free(b);
}

static const qd_backend_ops mirror_ops = {
    .name = "mirror",
    .alloc = m_alloc,
    .release = m_release,
    .upload = m_upload,
    .download = m_download,
    .copy = m_copy,
    .prepare_linear = m_prepare,
    .linear = m_linear,
    .attention = m_attention,
    .rms_norm = m_rms,
    .layer_norm = m_layer,
    .group_norm = m_group,
    .rope = m_rope,
    .norm_modulate = m_norm_modulate,
    .takes_fp8_tokens = m_takes_fp8_tokens,
    .fp8_codes_between = m_fp8_codes_between,
    .linear_fp8_codes = m_linear_fp8_codes,
    .linear_fused_codes = m_linear_fused_codes,
    .norm_modulate_fp8 = m_norm_modulate_fp8,
    .linear_fp8_tokens = m_linear_fp8_tokens,
    .rms_norm_gated_add = m_rms_norm_gated_add,
    .rms_norm_rope = m_rms_norm_rope,
    .rms_norm_rope_cols = m_rms_norm_rope_cols,
    .activation = m_activation,
    .gated = m_gated,
    .swiglu = m_swiglu,
    .swiglu_fp8 = m_swiglu_fp8,
    .modulate = m_modulate,
    .gated_add = m_gated_add,
    .linear_fused = m_linear_fused,
    .linear_many = m_linear_many,
    .add = m_add,
    .mul = m_mul,
    .softmax = m_softmax,
    .conv2d = m_conv2d,
    .conv3d = m_conv3d,
    .upsample_nearest = m_upsample,
    .permute = m_permute,
    .concat = m_concat,
    .slice = m_slice,
    .embedding = m_embedding,
    .destroy = m_destroy,
};

qd_status qd_mirror_backend_create(qd_backend *device, qd_backend **out) {
    qd_backend *b = calloc(1, sizeof *b);
    mirror *m = calloc(1, sizeof *m);
    if (!b || !m) {
        free(b), free(m);
        return qd_fail(QD_ENOMEM, "mirror: cannot allocate");
    }
    m->dev = device;
    b->ops = &mirror_ops;
    b->impl = m;
    *out = b;
    return QD_OK;
}
