/* qd_cpu_slice: a contiguous copy of a narrow range along one dim (chunking modulation vectors, splitting
 * fused projections). Rows of the trailing block are copied with memcpy, in parallel over the outer dims. */
#include <string.h>

#include "backend/cpu/cpu.h"
#include "core/status.h"
#include "core/threads.h"

qd_status qd_cpu_slice(qd_backend *b, const qd_tensor *x, int dim, int64_t start, int64_t len, qd_tensor *y) {
    (void)b;
    if (dim < 0 || dim >= x->rank || start < 0 || len < 0 || start + len > x->shape[dim]) {
        return qd_fail(QD_EINVAL, "slice: [%lld, %lld) of dim %d is outside its %lld entries", (long long)start,
                       (long long)(start + len), dim, (long long)(dim >= 0 && dim < x->rank ? x->shape[dim] : 0));
    }
    if (y->dtype != x->dtype || y->rank != x->rank || y->shape[dim] != len) {
        return qd_fail(QD_EINVAL, "slice: the output must have the input's dtype and rank, and %lld entries along dim %d",
                       (long long)len, dim);
    }
    for (int i = 0; i < x->rank; i++) {
        if (i != dim && y->shape[i] != x->shape[i]) return qd_fail(QD_EINVAL, "slice: output dim %d differs from the input's", i);
    }
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < dim; i++) outer *= x->shape[i];
    for (int i = dim + 1; i < x->rank; i++) inner *= x->shape[i];
    size_t es = (size_t)qd_dtype_bits(x->dtype) / 8, row = (size_t)(len * inner) * es;
    const char *src = x->data;
    char *dst = y->data;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(outer * len * inner, QD_GRAIN_ELEMS))
    for (int64_t o = 0; o < outer; o++)
        memcpy(dst + (size_t)o * row, src + ((size_t)(o * x->shape[dim] + start) * (size_t)inner) * es, row);
    return QD_OK;
}
