/* qd_tensor helpers shared by every backend (see backend.h). */
#include <string.h>

#include "backend/backend.h"

int64_t qd_tensor_elements(const qd_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= t->shape[i];
    return n;
}

size_t qd_tensor_bytes(const qd_tensor *t) {
    uint64_t bytes = 0;
    qd_dtype_storage_bytes(t->dtype, (uint64_t)qd_tensor_elements(t), &bytes);
    return (size_t)bytes;
}

void qd_tensor_shape(qd_tensor *t, qd_dtype dtype, int rank, const int64_t *shape) {
    t->dtype = dtype;
    t->rank = rank;
    for (int i = 0; i < QD_MAX_RANK; i++) t->shape[i] = i < rank ? shape[i] : 1;
}

qd_status qd_tensor_new(qd_backend *b, qd_tensor *t, qd_dtype dtype, int rank, const int64_t *shape) {
    memset(t, 0, sizeof *t);
    qd_tensor_shape(t, dtype, rank, shape);
    return b->ops->alloc(b, t);
}

void qd_tensor_free(qd_tensor *t) {
    if (t->backend && t->data) t->backend->ops->release(t->backend, t);
    t->data = NULL;
}
