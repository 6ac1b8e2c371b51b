/* Ops that a backend may fuse, composed from the ops every backend has (backend.h): what the CPU backend runs, and
 * what a device backend falls back to for the layers its fused kernels do not cover. */
#include <string.h>

#include "backend/backend.h"
#include "core/status.h"

static qd_status fused_check(const qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate, const qd_tensor *r,
                             const qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    if (n < 1 || n > QD_FUSED_INPUTS) return qd_fail(QD_EINVAL, "layer '%s': linear_fused takes 1 to %d inputs, not %d", name, QD_FUSED_INPUTS, n);
    if (l->out_act != QD_OUT_ACT_NONE) return qd_fail(QD_EINVAL, "layer '%s': linear_fused applies no output activation", name);
    if (gate && !r) return qd_fail(QD_EINVAL, "layer '%s': linear_fused's gate needs a residual r", name);
    int64_t k = 0;
    for (int i = 0; i < n; i++) {
        const qd_tensor *x = xs[i];
        if (x->rank != y->rank || x->rank < 1) return qd_fail(QD_EINVAL, "layer '%s': linear_fused input %d has rank %d, y %d", name, i, x->rank, y->rank);
        for (int d = 0; d + 1 < x->rank; d++)
            if (x->shape[d] != y->shape[d])
                return qd_fail(QD_EINVAL, "layer '%s': linear_fused input %d is %lld along dim %d, y %lld", name, i, (long long)x->shape[d], d,
                               (long long)y->shape[d]);
        k += x->shape[x->rank - 1];
    }
    if (k != l->in_features || y->shape[y->rank - 1] != l->out_features)
        return qd_fail(QD_EINVAL, "layer '%s': linear_fused of inputs %lld wide into %lld needs in/out features %lld/%lld", name, (long long)k,
                       (long long)y->shape[y->rank - 1], (long long)l->in_features, (long long)l->out_features);
    if (r && (r->rank != y->rank || memcmp(r->shape, y->shape, sizeof(int64_t) * (size_t)y->rank)))
        return qd_fail(QD_EINVAL, "layer '%s': linear_fused's residual must have y's shape", name);
    return QD_OK;
}

qd_status qd_linear_fused_composed(qd_backend *b, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate, const qd_tensor *r,
                                   qd_tensor *y) {
    qd_status s = fused_check(l, xs, n, gate, r, y);
    if (s) return s;
    qd_tensor cat = {0}, t = {0};
    const qd_tensor *x = xs[0];
    if (n > 1) {
        int64_t shape[QD_MAX_RANK];
        memcpy(shape, y->shape, sizeof shape);
        shape[y->rank - 1] = l->in_features;
        s = qd_tensor_new(b, &cat, xs[0]->dtype, y->rank, shape);
        if (!s) s = b->ops->concat(b, xs, n, y->rank - 1, &cat);
        x = &cat;
    }
    /* the linear into y itself unless y is the residual */
    qd_tensor *out = y;
    if (!s && r && r->data == y->data) {
        s = qd_tensor_new(b, &t, y->dtype, y->rank, y->shape);
        out = &t;
    }
    if (!s) s = b->ops->linear(b, l, x, out);
    if (!s && r) s = b->ops->gated_add(b, r, out, gate, y);
    qd_tensor_free(&t);
    qd_tensor_free(&cat);
    return s;
}

qd_status qd_linear_fused(qd_backend *b, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate, const qd_tensor *r,
                          qd_tensor *y) {
    if (b->ops->linear_fused) {
        qd_status s = fused_check(l, xs, n, gate, r, y);
        return s ? s : b->ops->linear_fused(b, l, xs, n, gate, r, y);
    }
    return qd_linear_fused_composed(b, l, xs, n, gate, r, y);
}

qd_status qd_linear_many(qd_backend *b, qd_linear *const *ls, int n, const qd_tensor *x, qd_tensor *const *ys) {
    if (n < 1 || n > QD_LINEAR_MANY) return qd_fail(QD_EINVAL, "linear_many takes 1 to %d layers, not %d", QD_LINEAR_MANY, n);
    if (b->ops->linear_many) return b->ops->linear_many(b, ls, n, x, ys);
    qd_status s = QD_OK;
    for (int i = 0; i < n && !s; i++) s = b->ops->linear(b, ls[i], x, ys[i]);
    return s;
}
