/* TEMPORARY: weak stand-ins for the CPU ops still being written; each real definition (a strong
 * symbol in its own file) replaces one. Every stand-in fails loudly. This file goes when the last
 * op lands. */
#include "backend/cpu/linear_kernels.h"
#include "core/status.h"

__attribute__((weak)) qd_status qd_cpu_attention(qd_backend *b, const qd_attn_args *a, qd_tensor *out) {
    (void)b; (void)a; (void)out;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_attention is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_rms_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, qd_tensor *y) {
    (void)b; (void)x; (void)w; (void)eps; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_rms_norm is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_layer_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, float eps, qd_tensor *y) {
    (void)b; (void)x; (void)w; (void)bias; (void)eps; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_layer_norm is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_group_norm(qd_backend *b, const qd_tensor *x, int groups, const qd_tensor *w, const qd_tensor *bias, float eps, qd_tensor *y) {
    (void)b; (void)x; (void)groups; (void)w; (void)bias; (void)eps; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_group_norm is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *cos, const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y) {
    (void)b; (void)x; (void)cos; (void)sin; (void)mode; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_rope is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_activation(qd_backend *b, qd_act_kind kind, const qd_tensor *x, qd_tensor *y) {
    (void)b; (void)kind; (void)x; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_activation is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_gated(qd_backend *b, qd_act_kind kind, bool gate_first, const qd_tensor *x, qd_tensor *y) {
    (void)b; (void)kind; (void)gate_first; (void)x; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_gated is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_modulate(qd_backend *b, const qd_tensor *x, const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y) {
    (void)b; (void)x; (void)scale; (void)shift; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_modulate is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_gated_add(qd_backend *b, const qd_tensor *r, const qd_tensor *x, const qd_tensor *gate, qd_tensor *y) {
    (void)b; (void)r; (void)x; (void)gate; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_gated_add is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_add(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) {
    (void)b; (void)a; (void)c; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_add is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_mul(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) {
    (void)b; (void)a; (void)c; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_mul is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_softmax(qd_backend *b, const qd_tensor *x, qd_tensor *y) {
    (void)b; (void)x; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_softmax is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_conv2d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c, qd_tensor *y) {
    (void)b; (void)x; (void)w; (void)bias; (void)c; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_conv2d is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_conv3d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c, qd_tensor *y) {
    (void)b; (void)x; (void)w; (void)bias; (void)c; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_conv3d is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_upsample_nearest(qd_backend *b, const qd_tensor *x, int factor, qd_tensor *y) {
    (void)b; (void)x; (void)factor; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_upsample_nearest is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_permute(qd_backend *b, const qd_tensor *x, const int *perm, qd_tensor *y) {
    (void)b; (void)x; (void)perm; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_permute is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_concat(qd_backend *b, const qd_tensor *const *xs, int n, int dim, qd_tensor *y) {
    (void)b; (void)xs; (void)n; (void)dim; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_concat is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_embedding(qd_backend *b, const qd_tensor *table, const qd_tensor *ids, qd_tensor *y) {
    (void)b; (void)table; (void)ids; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_embedding is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_linear_dense(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    (void)l; (void)x; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_linear_dense is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_linear_fp8(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    (void)l; (void)x; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_linear_fp8 is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_linear_awq(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    (void)l; (void)x; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_linear_awq is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_linear_int8(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    (void)l; (void)x; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_linear_int8 is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_linear_fp4(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    (void)l; (void)x; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_linear_fp4 is not implemented yet");
}
__attribute__((weak)) qd_status qd_cpu_linear_svdq(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    (void)l; (void)x; (void)y;
    return qd_fail(QD_EUNSUPPORTED, "cpu: qd_cpu_linear_svdq is not implemented yet");
}
