/* The CUDA backend (Hopper first): the same vtable as the CPU backend (backend.h), every op on the GPU.
 * Tensors live in device memory (stream-ordered cudaMallocAsync on one stream, so nothing synchronises
 * the host except download); ops are launched on that stream. Built only when nvcc is found
 * (QDIT_CUDA); without it qd_backend_cuda_create says so. */
#ifndef QD_BACKEND_CUDA_H
#define QD_BACKEND_CUDA_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Create the backend on device `device` (0: the first GPU). QD_EUNSUPPORTED when qdit was built without
 * CUDA, QD_EDEVICE when no usable GPU is present, each with a message saying which. */
qd_status qd_backend_cuda_create(int device, qd_backend **out);
/* Was this build made with the CUDA backend? */
bool qd_backend_cuda_built(void);
/* QDIT_CUDA_PROFILE=1: forget the op times so far (a benchmark calls it after its warm-up steps). */
void qd_backend_cuda_profile_reset(void);
/* For benchmarks and checks: the W4A8 weight expansion of a prepared 4-bit/MX layer by the mainline kernel against
 * the reference kernel (QDIT_CUDA_EXPAND_REF): how many E4M3 bytes differ, and each one's time per call. */
qd_status qd_backend_cuda_w4_expand_check(qd_backend *b, const qd_linear *l, int64_t *differing, double *ms_fast, double *ms_ref);

#ifdef __cplusplus
}
#endif

#endif
