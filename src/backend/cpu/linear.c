/* qd_cpu_linear: shape checks, then the kernel of the layer's scheme family (linear_kernels.h), then the
 * layer's output activation (its epilogue) as the activation op applies it. */
#include "backend/cpu/linear_kernels.h"
#include "core/status.h"

qd_status qd_cpu_prepare_linear(qd_backend *b, qd_linear *l) {
    (void)b;
    switch (l->scheme) {
    case QD_SCHEME_INT8:
    case QD_SCHEME_INT4: return qd_cpu_prepare_int8(l);
    case QD_SCHEME_NVFP4:
    case QD_SCHEME_MXFP4: return qd_cpu_prepare_fp4(l);
    case QD_SCHEME_SVDQ_INT4:
    case QD_SCHEME_SVDQ_NVFP4: return qd_cpu_prepare_svdq(l);
    default: return QD_OK; /* read in their stored form */
    }
}

qd_status qd_cpu_linear(qd_backend *b, qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    if (x->rank < 1 || y->rank != x->rank || x->shape[x->rank - 1] != l->in_features ||
        y->shape[y->rank - 1] != l->out_features) {
        return qd_fail(QD_EINVAL, "layer '%s': linear of a [..., %lld] input into [..., %lld] needs in/out features %lld/%lld",
                       name, (long long)(x->rank ? x->shape[x->rank - 1] : 0),
                       (long long)(y->rank ? y->shape[y->rank - 1] : 0), (long long)l->in_features,
                       (long long)l->out_features);
    }
    for (int i = 0; i + 1 < x->rank; i++) {
        if (x->shape[i] != y->shape[i]) return qd_fail(QD_EINVAL, "layer '%s': input and output rows differ", name);
    }
    if ((x->dtype != QD_DTYPE_F32 && x->dtype != QD_DTYPE_BF16) || (y->dtype != QD_DTYPE_F32 && y->dtype != QD_DTYPE_BF16)) {
        return qd_fail(QD_EUNSUPPORTED, "layer '%s': activations must be F32 or BF16", name);
    }
    qd_act_kind kind = QD_ACT_GELU_TANH;
    const bool act = qd_linear_out_kind(l, &kind);
    if (!act && l->out_act != QD_OUT_ACT_NONE) return qd_fail(QD_EINVAL, "layer '%s': unknown output activation %d", name, (int)l->out_act);
    /* the kernels see [M, K] and [M, N] */
    qd_tensor x2 = *x, y2 = *y;
    int64_t m = qd_tensor_elements(x) / l->in_features;
    int64_t xs[2] = {m, l->in_features}, ys[2] = {m, l->out_features};
    qd_tensor_shape(&x2, x->dtype, 2, xs);
    qd_tensor_shape(&y2, y->dtype, 2, ys);
    qd_status s;
    switch (l->scheme) {
    case QD_SCHEME_DENSE: s = qd_cpu_linear_dense(l, &x2, &y2); break;
    case QD_SCHEME_FP8:
    case QD_SCHEME_MXFP8: s = qd_cpu_linear_fp8(l, &x2, &y2); break;
    case QD_SCHEME_AWQ_W4A16: s = qd_cpu_linear_awq(l, &x2, &y2); break;
    case QD_SCHEME_INT8:
    case QD_SCHEME_INT4: s = qd_cpu_linear_int8(l, &x2, &y2); break;
    case QD_SCHEME_NVFP4:
    case QD_SCHEME_MXFP4: s = qd_cpu_linear_fp4(l, &x2, &y2); break;
    case QD_SCHEME_SVDQ_INT4:
    case QD_SCHEME_SVDQ_NVFP4: s = qd_cpu_linear_svdq(l, &x2, &y2); break;
    default: return qd_fail(QD_EINVAL, "layer '%s': unknown scheme", name);
    }
    /* the output activation on y as stored: bit for bit the activation op the model ran after the layer */
    if (!s && act) s = qd_cpu_activation(b, kind, y, y);
    return s;
}
