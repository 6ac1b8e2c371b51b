/* Shared forward-pass steps (see run.h). */
#include "models/run.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"

qd_tensor qd_run_tensor(qd_run *r, int rank, const int64_t *shape) {
    qd_tensor t = {0};
    if (!r->s) r->s = qd_tensor_new(r->be, &t, r->act, rank, shape);
    return t;
}

qd_tensor qd_run_linear(qd_run *r, qd_linear *l, const qd_tensor *x) {
    int64_t shape[QD_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->rank - 1] = l->out_features;
    qd_tensor y = qd_run_tensor(r, x->rank, shape);
    qd_run_observe(r, l, x);
    if (!r->s) r->s = r->be->ops->linear(r->be, l, x, &y);
    return y;
}

void qd_run_observe(qd_run *r, const qd_linear *l, const qd_tensor *x) {
    if (!r->s && r->ctx && r->ctx->observe) r->ctx->observe(r->ctx->observe_user, r->be, l, x);
}

qd_tensor qd_run_slice_last(qd_run *r, const qd_tensor *x, int64_t start, int64_t len) {
    int64_t shape[QD_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->rank - 1] = len;
    qd_tensor y = {0};
    if (!r->s) r->s = qd_tensor_new(r->be, &y, x->dtype, x->rank, shape);
    if (!r->s) r->s = r->be->ops->slice(r->be, x, x->rank - 1, start, len, &y);
    return y;
}

qd_tensor qd_run_linear_padded(qd_run *r, qd_linear *l, const qd_tensor *x) {
    const int64_t k = x->shape[x->rank - 1];
    if (r->s || k >= l->in_features) return qd_run_linear(r, l, x);
    int64_t shape[QD_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->rank - 1] = l->in_features - k;
    qd_tensor z = {0}, xp = {0};
    const size_t bytes = (size_t)(qd_tensor_elements(x) / k * (l->in_features - k)) * (size_t)qd_dtype_bits(x->dtype) / 8;
    void *zeros = calloc(1, bytes + 1);
    if (!zeros) r->s = qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its input padding", l->name ? l->name : "?");
    if (!r->s) r->s = qd_tensor_new(r->be, &z, x->dtype, x->rank, shape);
    if (!r->s) r->s = r->be->ops->upload(r->be, &z, zeros);
    free(zeros);
    shape[x->rank - 1] = l->in_features;
    if (!r->s) r->s = qd_tensor_new(r->be, &xp, x->dtype, x->rank, shape);
    const qd_tensor *xs[2] = {x, &z};
    if (!r->s) r->s = r->be->ops->concat(r->be, xs, 2, x->rank - 1, &xp);
    qd_tensor y = qd_run_linear(r, l, &xp);
    qd_tensor_free(&z), qd_tensor_free(&xp);
    return y;
}

qd_tensor qd_run_linear_n(qd_run *r, qd_linear *l, const qd_tensor *x, int64_t n) {
    qd_tensor y = qd_run_linear_padded(r, l, x);
    if (r->s || y.shape[y.rank - 1] == n) return y;
    qd_tensor c = qd_run_slice_last(r, &y, 0, n);
    qd_tensor_free(&y);
    return c;
}

void qd_run_linear_many(qd_run *r, qd_linear *const *ls, int n, const qd_tensor *x, const int64_t *outs, qd_tensor *ys) {
    memset(ys, 0, sizeof *ys * (size_t)(n > 0 ? n : 0));
    bool one = n >= 1 && n <= QD_LINEAR_MANY;
    for (int i = 0; one && i < n; i++) one = ls[i]->in_features == x->shape[x->rank - 1] && ls[i]->out_features == outs[i];
    if (!one) {
        for (int i = 0; i < n; i++) ys[i] = qd_run_linear_n(r, ls[i], x, outs[i]);
        return;
    }
    qd_tensor *yp[QD_LINEAR_MANY];
    for (int i = 0; i < n; i++) {
        int64_t shape[QD_MAX_RANK];
        memcpy(shape, x->shape, sizeof shape);
        shape[x->rank - 1] = outs[i];
        ys[i] = qd_run_tensor(r, x->rank, shape);
        qd_run_observe(r, ls[i], x);
        yp[i] = &ys[i];
    }
    if (!r->s) r->s = qd_linear_many(r->be, ls, n, x, yp);
}

void qd_run_linear_fused(qd_run *r, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate, qd_tensor *res) {
    if (r->s) return;
    int64_t k = 0;
    for (int i = 0; i < n; i++) k += xs[i]->shape[xs[i]->rank - 1];
    const int64_t nout = res->shape[res->rank - 1];
    if (k == l->in_features && nout == l->out_features && !(r->ctx && r->ctx->observe)) {
        r->s = qd_linear_fused(r->be, l, xs, n, gate, res, res);
        return;
    }
    qd_tensor cat = {0};
    const qd_tensor *x = xs[0];
    if (n > 1) {
        int64_t shape[QD_MAX_RANK];
        memcpy(shape, xs[0]->shape, sizeof shape);
        shape[xs[0]->rank - 1] = k;
        cat = qd_run_tensor(r, xs[0]->rank, shape);
        if (!r->s) r->s = r->be->ops->concat(r->be, xs, n, xs[0]->rank - 1, &cat);
        x = &cat;
    }
    qd_tensor y = qd_run_linear_n(r, l, x, nout);
    if (!r->s) r->s = r->be->ops->gated_add(r->be, res, &y, gate, res);
    qd_tensor_free(&y), qd_tensor_free(&cat);
}

qd_tensor qd_run_chunk(qd_run *r, const qd_tensor *x, int i, int64_t d) {
    qd_tensor y = qd_run_tensor(r, 2, (int64_t[]){x->shape[0], d});
    if (!r->s) r->s = r->be->ops->slice(r->be, x, 1, i * d, d, &y);
    return y;
}

qd_tensor qd_run_chunk_view(qd_run *r, const qd_tensor *x, int i, int64_t d) {
    if (r->s || x->rank != 2 || x->shape[0] != 1) return qd_run_chunk(r, x, i, d);
    qd_tensor v = *x;
    v.backend = NULL; /* a view: qd_tensor_free leaves it alone */
    v.data = (char *)x->data + (size_t)(i * d) * (size_t)(qd_dtype_bits(x->dtype) / 8);
    qd_tensor_shape(&v, x->dtype, 2, (int64_t[]){1, d});
    return v;
}

qd_tensor qd_run_concat2(qd_run *r, const qd_tensor *a, const qd_tensor *b, int dim) {
    int64_t shape[QD_MAX_RANK];
    memcpy(shape, a->shape, sizeof shape);
    shape[dim] += b->shape[dim];
    qd_tensor y = qd_run_tensor(r, a->rank, shape);
    const qd_tensor *xs[2] = {a, b};
    if (!r->s) r->s = r->be->ops->concat(r->be, xs, 2, dim, &y);
    return y;
}

qd_tensor qd_run_upload_f32(qd_run *r, const float *host, int rank, const int64_t *shape) {
    qd_tensor t = {0};
    if (!r->s) r->s = qd_tensor_new(r->be, &t, QD_DTYPE_F32, rank, shape);
    if (!r->s) r->s = r->be->ops->upload(r->be, &t, host);
    return t;
}

qd_tensor qd_run_upload_i64(qd_run *r, const int64_t *host, int rank, const int64_t *shape) {
    qd_tensor t = {0};
    if (!r->s) r->s = qd_tensor_new(r->be, &t, QD_DTYPE_I64, rank, shape);
    if (!r->s) r->s = r->be->ops->upload(r->be, &t, host);
    return t;
}

qd_tensor qd_run_embed(qd_run *r, const qd_tensor *table, const qd_tensor *ids) {
    qd_tensor y = qd_run_tensor(r, 3, (int64_t[]){ids->shape[0], ids->shape[1], table->shape[1]});
    if (!r->s) r->s = r->be->ops->embedding(r->be, table, ids, &y);
    return y;
}

qd_tensor qd_run_rms_norm(qd_run *r, const qd_tensor *x, const qd_tensor *w, float eps) {
    qd_tensor y = qd_run_tensor(r, x->rank, x->shape);
    if (!r->s) r->s = r->be->ops->rms_norm(r->be, x, w, eps, &y);
    return y;
}

qd_tensor qd_run_layer_norm(qd_run *r, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, float eps) {
    qd_tensor y = qd_run_tensor(r, x->rank, x->shape);
    if (!r->s) r->s = r->be->ops->layer_norm(r->be, x, w, bias, eps, &y);
    return y;
}

/* Do the linears ls (n > 0) all take x's FP8 codes in place of x, made the same way: per token (*fixed 0), or with
   one static input scale *fixed that all of them have? */
static bool tokens_for(qd_run *r, const qd_tensor *x, qd_linear *const *ls, int n, float *fixed) {
    const qd_backend_ops *ops = r->be->ops;
    *fixed = 0.0f;
    /* an observer or the f32 reference linears need the plain input */
    bool fp8 = n > 0 && !r->s && ops->takes_fp8_tokens && ops->linear_fp8_tokens && x->dtype == QD_DTYPE_BF16 && r->act == QD_DTYPE_BF16 &&
               !(r->ctx && (r->ctx->observe || r->ctx->reference_linears));
    for (int i = 0; fp8 && i < n; i++) {
        float s = 0.0f;
        fp8 = ops->takes_fp8_tokens(r->be, ls[i], &s);
        if (i == 0) *fixed = s;
        else fp8 = fp8 && s == *fixed; /* (static layers with unequal input scales each quantize their own input) */
    }
    return fp8;
}

/* an FP8 input of `shape`: its codes and one F32 scale per row, allocated (in.fp8 set) */
static qd_run_input tokens_new(qd_run *r, int rank, const int64_t *shape) {
    qd_run_input in = {.fp8 = true};
    int64_t rows = 1;
    for (int i = 0; i + 1 < rank; i++) rows *= shape[i];
    if (!r->s) r->s = qd_tensor_new(r->be, &in.codes, QD_DTYPE_F8_E4M3, rank, shape);
    if (!r->s) r->s = qd_tensor_new(r->be, &in.scales, QD_DTYPE_F32, 1, (int64_t[]){rows});
    return in;
}

qd_run_input qd_run_norm_modulate_for(qd_run *r, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *scale,
                                      const qd_tensor *shift, qd_linear *const *ls, int n) {
    qd_run_input in = {0};
    const qd_backend_ops *ops = r->be->ops;
    float fixed = 0.0f;
    const bool fp8 = ops->norm_modulate_fp8 && tokens_for(r, x, ls, n, &fixed);
    if (!fp8) {
        in.x = qd_run_tensor(r, x->rank, x->shape);
        if (!r->s) r->s = ops->norm_modulate(r->be, kind, x, w, eps, scale, shift, &in.x);
        return in;
    }
    in = tokens_new(r, x->rank, x->shape);
    if (!r->s) r->s = ops->norm_modulate_fp8(r->be, kind, x, w, eps, scale, shift, fixed, &in.codes, &in.scales);
    return in;
}

qd_run_input qd_run_norm_add_for(qd_run *r, const qd_tensor *o, const qd_tensor *w, float eps, const qd_tensor *gate, qd_tensor *x,
                                 const qd_tensor *next_w, const qd_tensor *next_scale, qd_linear *const *ls, int n) {
    qd_run_input in = {0};
    const qd_backend_ops *ops = r->be->ops;
    if (r->s) return in;
    if (!ops->rms_norm_gated_add) {
        qd_tensor on = qd_run_rms_norm(r, o, w, eps);
        if (!r->s) r->s = ops->gated_add(r->be, x, &on, gate, x);
        qd_tensor_free(&on);
        if (next_scale) in = qd_run_norm_modulate_for(r, QD_NORM_RMS, x, next_w, eps, next_scale, NULL, ls, n);
        return in;
    }
    if (!next_scale) {
        r->s = ops->rms_norm_gated_add(r->be, o, w, eps, gate, x, NULL, NULL, NULL, 0.0f, NULL, NULL);
        return in;
    }
    float fixed = 0.0f;
    if (!tokens_for(r, x, ls, n, &fixed)) {
        in.x = qd_run_tensor(r, x->rank, x->shape);
        if (!r->s) r->s = ops->rms_norm_gated_add(r->be, o, w, eps, gate, x, next_w, next_scale, &in.x, 0.0f, NULL, NULL);
        return in;
    }
    in = tokens_new(r, x->rank, x->shape);
    if (!r->s) r->s = ops->rms_norm_gated_add(r->be, o, w, eps, gate, x, next_w, next_scale, NULL, fixed, &in.codes, &in.scales);
    return in;
}

qd_run_input qd_run_swiglu_for(qd_run *r, const qd_tensor *h, int64_t gate_col, int64_t value_col, int64_t n, qd_linear *l) {
    qd_run_input in = {0};
    const qd_backend_ops *ops = r->be->ops;
    int64_t shape[QD_MAX_RANK];
    memcpy(shape, h->shape, sizeof shape);
    shape[h->rank - 1] = n;
    float fixed = 0.0f;
    if (ops->swiglu_fp8 && l && l->in_features == n && tokens_for(r, h, &l, 1, &fixed)) {
        in = tokens_new(r, h->rank, shape);
        if (!r->s) r->s = ops->swiglu_fp8(r->be, h, gate_col, value_col, fixed, &in.codes, &in.scales);
        return in;
    }
    if (ops->swiglu) {
        in.x = qd_run_tensor(r, h->rank, shape);
        if (!r->s) r->s = ops->swiglu(r->be, h, gate_col, value_col, &in.x);
        return in;
    }
    in.x = qd_run_slice_last(r, h, gate_col, n);
    qd_tensor u = qd_run_slice_last(r, h, value_col, n);
    if (!r->s) r->s = ops->activation(r->be, QD_ACT_SILU, &in.x, &in.x);
    if (!r->s) r->s = ops->mul(r->be, &in.x, &u, &in.x);
    qd_tensor_free(&u);
    return in;
}

void qd_run_linear_in_into(qd_run *r, qd_linear *l, const qd_run_input *in, qd_tensor *y) {
    if (r->s) return;
    if (!in->fp8) {
        qd_run_observe(r, l, &in->x);
        if (!r->s) r->s = r->be->ops->linear(r->be, l, &in->x, y);
        return;
    }
    r->s = r->be->ops->linear_fp8_tokens(r->be, l, &in->codes, &in->scales, y);
}

qd_tensor qd_run_linear_in(qd_run *r, qd_linear *l, const qd_run_input *in, int64_t n) {
    if (!in->fp8) return qd_run_linear_n(r, l, &in->x, n);
    int64_t shape[QD_MAX_RANK];
    memcpy(shape, in->codes.shape, sizeof shape);
    shape[in->codes.rank - 1] = l->out_features; /* FP8 layers that take tokens have no padding: out_features is n */
    qd_tensor y = qd_run_tensor(r, in->codes.rank, shape);
    if (!r->s && l->out_features != n)
        r->s = qd_fail(QD_EINVAL, "layer '%s': %lld outputs where %lld are read", l->name ? l->name : "?", (long long)l->out_features, (long long)n);
    qd_run_linear_in_into(r, l, in, &y);
    return y;
}

void qd_run_input_free(qd_run_input *in) {
    qd_tensor_free(&in->x), qd_tensor_free(&in->codes), qd_tensor_free(&in->scales);
    in->fp8 = false;
}

bool qd_run_codes_between(qd_run *r, const qd_run_input *in, qd_linear *producer, qd_linear *consumer) {
    const qd_backend_ops *ops = r->be->ops;
    /* in->fp8: tokens_for held (bf16 activations, no observer, no reference linears) */
    return !r->s && in->fp8 && ops->fp8_codes_between && ops->linear_fp8_codes && ops->linear_fused_codes &&
           ops->fp8_codes_between(r->be, producer, consumer);
}

qd_tensor qd_run_linear_codes(qd_run *r, qd_linear *producer, const qd_run_input *in, qd_linear *consumer, int64_t width, int64_t col) {
    int64_t shape[QD_MAX_RANK];
    memcpy(shape, in->codes.shape, sizeof shape);
    shape[in->codes.rank - 1] = width;
    qd_tensor codes = {0};
    if (!r->s) r->s = qd_tensor_new(r->be, &codes, QD_DTYPE_F8_E4M3, in->codes.rank, shape);
    if (!r->s) r->s = r->be->ops->linear_fp8_codes(r->be, producer, &in->codes, &in->scales, consumer, &codes, col);
    return codes;
}

void qd_run_linear_fused_codes(qd_run *r, qd_linear *l, qd_tensor *codes, const qd_tensor *const *xs, const int64_t *cols, int n, const qd_tensor *gate,
                               qd_tensor *res) {
    if (!r->s) r->s = r->be->ops->linear_fused_codes(r->be, l, codes, xs, cols, n, gate, res, res);
}
