/* Full-precision linears (BF16 / F16 / F32 weights): the scheme of every layer that is not quantized. */
#include <stdio.h>
#include <string.h>

#include "core/codec.h"
#include "core/status.h"
#include "quant/schemes.h"

qd_status qd_bind_dense(const qd_bind_ctx *c, qd_linear *l) {
    const qd_ckpt_entry *w;
    qd_status s = qd_bind_require(c, "weight", &w);
    if (s) return s;
    const qd_st_tensor *t = w->tensor;
    if (t->rank != 2) return qd_fail(QD_EFORMAT, "layer '%s': weight must be 2-D [out, in], got rank %d", c->module, t->rank);
    if (t->dtype != QD_DTYPE_BF16 && t->dtype != QD_DTYPE_F16 && t->dtype != QD_DTYPE_F32) {
        return qd_fail(QD_EFORMAT, "layer '%s': a full-precision layer needs a BF16/F16/F32 weight, got %s", c->module,
                       qd_dtype_name(t->dtype));
    }
    l->scheme = QD_SCHEME_DENSE;
    l->act = QD_ACT_NONE;
    l->out_features = t->shape[0];
    l->in_features = t->shape[1];
    snprintf(l->scheme_name, sizeof l->scheme_name, "%s",
             t->dtype == QD_DTYPE_BF16 ? "bf16" : t->dtype == QD_DTYPE_F16 ? "f16" : "f32");
    qd_view_of(w, &l->weight);
    return qd_bind_bias(c, l->out_features, l);
}

qd_status qd_dequantize_dense(const qd_linear *l, float *out) {
    int64_t n = l->out_features * l->in_features;
    if (qd_decode_row(l->weight.dtype, l->weight.data, out, (size_t)n) != 0) {
        return qd_fail(QD_EUNSUPPORTED, "layer '%s': cannot decode %s", l->name, qd_dtype_name(l->weight.dtype));
    }
    return QD_OK;
}
