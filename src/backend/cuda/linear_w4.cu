/* W4A8 linears on the GPU (NVFP4, MXFP4, MXFP8, SVDQuant, AWQ): not built yet (issue 9). */
#include "backend/cuda/linear_internal.cuh"

bool qd_cuda_w4_covers(const qd_linear *l) {
    (void)l;
    return false;
}

qd_status qd_cuda_w4_prepare(qd_linear *l, cuda_linear *d, cuda_arena *a) {
    (void)d, (void)a;
    return qd_fail(QD_EUNSUPPORTED, "layer '%s': the CUDA backend has no kernel for scheme %s yet", l->name, l->scheme_name);
}

qd_status qd_cuda_w4_linear(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu) {
    (void)c, (void)d, (void)x, (void)y, (void)m, (void)gelu;
    return qd_fail(QD_EUNSUPPORTED, "layer '%s': the CUDA backend has no kernel for scheme %s yet", l->name, l->scheme_name);
}
