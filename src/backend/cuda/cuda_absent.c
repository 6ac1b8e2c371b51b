/* qd_backend_cuda_create in a build without CUDA (no nvcc found, or QDIT_CUDA=OFF): it says so. */
#include "backend/cuda/cuda.h"
#include "core/status.h"

bool qd_backend_cuda_built(void) { return false; }

void qd_backend_cuda_profile_reset(void) {}

qd_status qd_backend_cuda_w4_expand_check(qd_backend *b, const qd_linear *l, int64_t *differing, double *ms_fast, double *ms_ref) {
    (void)b, (void)l;
    *differing = 0, *ms_fast = *ms_ref = 0;
    return qd_fail(QD_EUNSUPPORTED, "this qdit was built without the CUDA backend");
}

qd_status qd_backend_cuda_create(int device, qd_backend **out) {
    (void)device;
    *out = NULL;
    return qd_fail(QD_EUNSUPPORTED, "this qdit was built without the CUDA backend (no nvcc at build time, or -DQDIT_CUDA=OFF)");
}
