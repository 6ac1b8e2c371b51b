/* A backend that runs each op of a device backend on host tensors: inputs are uploaded to device
 * temporaries, the device op runs, outputs are downloaded back. The op harness fills and checks host
 * memory, so wrapping the CUDA backend in this lets every case run unchanged against the same
 * references and tolerances. Layers (qd_linear) pass through: the device backend prepares them. */
#ifndef QD_TESTS_MIRROR_BACKEND_H
#define QD_TESTS_MIRROR_BACKEND_H

#include "backend/backend.h"

/* Wrap `device` (owned: destroyed with the mirror). */
qd_status qd_mirror_backend_create(qd_backend *device, qd_backend **out);

#endif
