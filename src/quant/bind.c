/* Helpers shared by the scheme binders (see schemes.h). */
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "quant/schemes.h"

const qd_ckpt_entry *qd_bind_find(const qd_bind_ctx *c, const char *suffix) {
    char name[1024];
    snprintf(name, sizeof name, "%s.%s", c->module, suffix);
    return qd_ckpt_find(c->ck, name);
}

qd_status qd_bind_require(const qd_bind_ctx *c, const char *suffix, const qd_ckpt_entry **out) {
    *out = qd_bind_find(c, suffix);
    if (!*out) return qd_fail(QD_EFORMAT, "layer '%s': missing tensor '%s.%s'", c->module, c->module, suffix);
    return QD_OK;
}

void qd_view_of(const qd_ckpt_entry *e, qd_view *v) {
    memset(v, 0, sizeof *v);
    v->dtype = e->tensor->dtype;
    v->rank = e->tensor->rank > 4 ? 4 : e->tensor->rank;
    for (int i = 0; i < v->rank; i++) v->shape[i] = e->tensor->shape[i];
    v->data = qd_st_data(e->file, e->tensor);
    v->file_mapped = !e->file->borrowed;
}

qd_status qd_bind_scalar(const qd_bind_ctx *c, const char *suffix, float *out) {
    const qd_ckpt_entry *e;
    qd_status s = qd_bind_require(c, suffix, &e);
    if (s) return s;
    const qd_st_tensor *t = e->tensor;
    if (t->elements != 1 || (t->dtype != QD_DTYPE_F32 && t->dtype != QD_DTYPE_BF16 && t->dtype != QD_DTYPE_F16)) {
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.%s' must be one F32/BF16/F16 value, got %s with %llu elements",
                       c->module, c->module, suffix, qd_dtype_name(t->dtype), (unsigned long long)t->elements);
    }
    qd_view v;
    qd_view_of(e, &v);
    *out = qd_view_get(&v, 0, 0);
    return QD_OK;
}

qd_status qd_bind_bias(const qd_bind_ctx *c, int64_t n, qd_linear *l) {
    const qd_ckpt_entry *b = qd_bind_find(c, "bias");
    if (!b) return QD_OK;
    const qd_st_tensor *t = b->tensor;
    if (t->rank != 1 || t->shape[0] != n ||
        (t->dtype != QD_DTYPE_F32 && t->dtype != QD_DTYPE_BF16 && t->dtype != QD_DTYPE_F16)) {
        return qd_fail(QD_EFORMAT, "layer '%s': bias must be a float vector of %lld, got %s rank %d", c->module,
                       (long long)n, qd_dtype_name(t->dtype), t->rank);
    }
    qd_view_of(b, &l->bias);
    return QD_OK;
}
