/* Layout ops on the GPU: permute (rank ≤ 5), concat, slice and embedding lookup. Bytes are moved, never
 * converted (except embedding into another float dtype), so every whole-byte dtype works. Each is one
 * kernel over the output elements with the source index computed from the output index. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.cuh"

typedef struct {
    int64_t yshape[QD_MAX_RANK]; /* output dims */
    int64_t xstride[QD_MAX_RANK]; /* source stride (elements) of each output dim */
    int rank;
} perm_map;

template <typename T>
__global__ void permute_kernel(const T *x, T *y, int64_t n, perm_map m) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i, src = 0;
        for (int d = m.rank - 1; d >= 0; d--) {
            src += (r % m.yshape[d]) * m.xstride[d];
            r /= m.yshape[d];
        }
        y[i] = x[src];
    }
}

static qd_status launch_map(qd_backend *b, const void *x, void *y, int es, int64_t n, const perm_map *m, const char *op) {
    cudaStream_t s = qd_cuda_of(b)->stream;
    const unsigned g = qd_cuda_blocks(n, 256);
    switch (es) {
    case 1: permute_kernel<<<g, 256, 0, s>>>((const uint8_t *)x, (uint8_t *)y, n, *m); break;
    case 2: permute_kernel<<<g, 256, 0, s>>>((const uint16_t *)x, (uint16_t *)y, n, *m); break;
    case 4: permute_kernel<<<g, 256, 0, s>>>((const uint32_t *)x, (uint32_t *)y, n, *m); break;
    case 8: permute_kernel<<<g, 256, 0, s>>>((const uint64_t *)x, (uint64_t *)y, n, *m); break;
    default: return qd_fail(QD_EUNSUPPORTED, "cuda %s: %d-byte elements", op, es);
    }
    QD_CUDA_LAUNCHED(op);
    return QD_OK;
}

static int elem_bytes(qd_dtype t) { return qd_dtype_bits(t) % 8 ? 0 : qd_dtype_bits(t) / 8; }

extern "C" qd_status qd_cuda_permute(qd_backend *b, const qd_tensor *x, const int *perm, qd_tensor *y) {
    if (x->rank != y->rank || x->rank < 1 || x->rank > QD_MAX_RANK || x->dtype != y->dtype)
        return qd_fail(QD_EINVAL, "cuda permute: x and y must have one dtype and rank (≤ %d)", QD_MAX_RANK);
    perm_map m = {};
    m.rank = x->rank;
    int64_t xs[QD_MAX_RANK];
    xs[x->rank - 1] = 1;
    for (int d = x->rank - 2; d >= 0; d--) xs[d] = xs[d + 1] * x->shape[d + 1];
    bool seen[QD_MAX_RANK] = {false};
    for (int d = 0; d < x->rank; d++) {
        if (perm[d] < 0 || perm[d] >= x->rank || seen[perm[d]] || y->shape[d] != x->shape[perm[d]])
            return qd_fail(QD_EINVAL, "cuda permute: perm is not a permutation matching y's shape (dim %d)", d);
        seen[perm[d]] = true;
        m.yshape[d] = y->shape[d];
        m.xstride[d] = xs[perm[d]];
    }
    const int64_t n = qd_tensor_elements(y);
    return n ? launch_map(b, x->data, y->data, elem_bytes(x->dtype), n, &m, "permute") : QD_OK;
}

/* a sub-block of y [outer, len, inner] taken from x [outer, xlen, inner] at offset `start` along the
 * middle dim (slice), or written into y at `start` (concat: the reverse). Per outer index that is one
 * contiguous run of len·inner elements on each side, so it is a copy of `outer` rows: a 2-D grid, rows
 * along y, each row's units along x — no index division — in the widest unit (16, 8, 4 or 2 bytes) that
 * divides the run, both row strides, both offsets and both pointers' alignment. */
template <typename T>
__global__ void rows_copy_kernel(const T *x, T *y, int64_t rows, int64_t units, int64_t xstride, int64_t ystride, int64_t xoff, int64_t yoff) {
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const T *xr = x + r * xstride + xoff;
        T *yr = y + r * ystride + yoff;
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < units; c += (int64_t)gridDim.x * blockDim.x) yr[c] = xr[c];
    }
}

static qd_status block_copy(qd_backend *b, const void *x, void *y, int es, int64_t outer, int64_t len, int64_t inner, int64_t xlen,
                            int64_t ylen, int64_t xstart, int64_t ystart, const char *op) {
    if (es <= 0) return qd_fail(QD_EUNSUPPORTED, "cuda %s: elements of a fractional byte size", op);
    /* in bytes: the run of each row, the row strides and the offsets */
    const int64_t run = len * inner * es, xs = xlen * inner * es, ys = ylen * inner * es, xo = xstart * inner * es, yo = ystart * inner * es;
    if (!run || !outer) return QD_OK;
    int u = 16;
    while (u > 1 && (run % u || xs % u || ys % u || xo % u || yo % u || (uintptr_t)x % u || (uintptr_t)y % u)) u /= 2;
    const int64_t units = run / u;
    const int threads = units >= 256 ? 256 : units >= 64 ? 64 : 32;
    int64_t gx = (units + threads - 1) / threads;
    if (gx > 4096) gx = 4096;
    const int64_t gy = outer > 65535 ? 65535 : outer;
    dim3 grid((unsigned)gx, (unsigned)gy);
    cudaStream_t s = qd_cuda_of(b)->stream;
#define RC(T) rows_copy_kernel<T><<<grid, threads, 0, s>>>((const T *)x, (T *)y, outer, units, xs / u, ys / u, xo / u, yo / u)
    switch (u) {
    case 1: RC(uint8_t); break;
    case 2: RC(uint16_t); break;
    case 4: RC(uint32_t); break;
    case 8: RC(uint2); break;
    default: RC(uint4); break;
    }
#undef RC
    QD_CUDA_LAUNCHED(op);
    return QD_OK;
}

static void split_dims(const qd_tensor *t, int dim, int64_t *outer, int64_t *inner) {
    *outer = *inner = 1;
    for (int i = 0; i < dim; i++) *outer *= t->shape[i];
    for (int i = dim + 1; i < t->rank; i++) *inner *= t->shape[i];
}

extern "C" qd_status qd_cuda_slice(qd_backend *b, const qd_tensor *x, int dim, int64_t start, int64_t len, qd_tensor *y) {
    if (dim < 0 || dim >= x->rank || start < 0 || len < 0 || start + len > x->shape[dim])
        return qd_fail(QD_EINVAL, "slice: [%lld, %lld) of dim %d is outside its %lld entries", (long long)start, (long long)(start + len),
                       dim, dim >= 0 && dim < x->rank ? (long long)x->shape[dim] : 0LL);
    if (y->dtype != x->dtype || y->rank != x->rank || y->shape[dim] != len)
        return qd_fail(QD_EINVAL, "slice: the output must have the input's dtype and rank, and %lld entries along dim %d", (long long)len, dim);
    for (int i = 0; i < x->rank; i++)
        if (i != dim && y->shape[i] != x->shape[i]) return qd_fail(QD_EINVAL, "slice: output dim %d differs from the input's", i);
    int64_t outer, inner;
    split_dims(x, dim, &outer, &inner);
    return block_copy(b, x->data, y->data, elem_bytes(x->dtype), outer, len, inner, x->shape[dim], len, start, 0, "slice");
}

extern "C" qd_status qd_cuda_concat(qd_backend *b, const qd_tensor *const *xs, int n, int dim, qd_tensor *y) {
    if (dim < 0) dim += y->rank;
    if (n < 1 || dim < 0 || dim >= y->rank) return qd_fail(QD_EINVAL, "cuda concat: %d inputs along dim %d of a rank-%d output", n, dim, y->rank);
    int64_t at = 0;
    for (int k = 0; k < n; k++) {
        const qd_tensor *x = xs[k];
        bool ok = x->dtype == y->dtype && x->rank == y->rank;
        for (int i = 0; ok && i < y->rank; i++) ok = i == dim || x->shape[i] == y->shape[i];
        if (!ok) return qd_fail(QD_EINVAL, "cuda concat: input %d does not match the output outside dim %d", k, dim);
        at += x->shape[dim];
    }
    if (at != y->shape[dim]) return qd_fail(QD_EINVAL, "cuda concat: inputs give %lld entries along dim %d, output has %lld", (long long)at, dim, (long long)y->shape[dim]);
    at = 0;
    for (int k = 0; k < n; k++) {
        int64_t outer, inner;
        split_dims(xs[k], dim, &outer, &inner);
        qd_status s = block_copy(b, xs[k]->data, y->data, elem_bytes(y->dtype), outer, xs[k]->shape[dim], inner, xs[k]->shape[dim],
                                 y->shape[dim], 0, at, "concat");
        if (s) return s;
        at += xs[k]->shape[dim];
    }
    return QD_OK;
}

__global__ void embedding_kernel(const void *table, int tt, const void *ids, bool i64, void *y, int yt, int64_t n, int64_t D) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / D, c = i % D;
        const int64_t id = i64 ? ((const int64_t *)ids)[r] : ((const int32_t *)ids)[r];
        qd_st(y, yt, i, qd_ld(table, tt, id * D + c));
    }
}

extern "C" qd_status qd_cuda_embedding(qd_backend *b, const qd_tensor *table, const qd_tensor *ids, qd_tensor *y) {
    if (table->rank != 2 || !qd_cuda_float_dtype(table->dtype) || !qd_cuda_float_dtype(y->dtype))
        return qd_fail(QD_EINVAL, "cuda embedding: table must be F32/BF16/F16 [V, D]");
    if (ids->dtype != QD_DTYPE_I32 && ids->dtype != QD_DTYPE_I64)
        return qd_fail(QD_EUNSUPPORTED, "cuda embedding: ids must be I32 or I64, got %s", qd_dtype_name(ids->dtype));
    const int64_t V = table->shape[0], D = table->shape[1], n = qd_tensor_elements(ids);
    bool ok = y->rank == ids->rank + 1 && y->shape[y->rank - 1] == D;
    for (int i = 0; ok && i < ids->rank; i++) ok = y->shape[i] == ids->shape[i];
    if (!ok) return qd_fail(QD_EINVAL, "cuda embedding: y must be ids' shape plus [%lld]", (long long)D);
    /* ids are a handful of tokens: check their range on the host, so a bad id is an error, not a fault */
    const size_t ib = qd_tensor_bytes(ids);
    void *host = malloc(ib ? ib : 1);
    if (!host) return qd_fail(QD_ENOMEM, "cuda embedding: cannot allocate");
    qd_status s = b->ops->download(b, ids, host);
    for (int64_t i = 0; !s && i < n; i++) {
        const int64_t id = ids->dtype == QD_DTYPE_I64 ? ((const int64_t *)host)[i] : ((const int32_t *)host)[i];
        if (id < 0 || id >= V)
            s = qd_fail(QD_EINVAL, "cuda embedding: id %lld at position %lld is out of range for a table of V = %lld rows", (long long)id,
                        (long long)i, (long long)V);
    }
    free(host);
    if (s || !n) return s;
    embedding_kernel<<<qd_cuda_blocks(n * D, 256), 256, 0, qd_cuda_of(b)->stream>>>(table->data, table->dtype, ids->data,
                                                                                    ids->dtype == QD_DTYPE_I64, y->data, y->dtype,
                                                                                    n * D, D);
    QD_CUDA_LAUNCHED("embedding");
    return QD_OK;
}
