/* Layout ops: permute (rank ≤ 5, any permutation), concat along any dim, and embedding lookup.
 * Pure data movement — bytes are copied, never converted, except where embedding's table and output
 * dtypes differ — so these work for every dtype of whole bytes (ids, masks and floats alike).
 *
 * permute first simplifies the problem: size-1 dims are dropped and runs of source dims that stay
 * adjacent and in order are merged, so [B, L, H, D] → [B, H, L, D] becomes a 4-D copy of D-element
 * rows, and a VAE's [N, C, HW] → [N, HW, C] a batched 2-D transpose. When the innermost dim is kept the
 * copy is a memcpy per row; when it moves, the two dims involved are walked in 32×32 tiles so that
 * both the reads and the writes stay within a few cache lines. */
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops_internal.h"
#include "core/codec.h"
#include "core/threads.h"

#define TILE 64

static size_t elem_bytes(qd_dtype t) { return (size_t)qd_dtype_bits(t) / 8; }

static qd_status check_bytes(const char *op, const char *what, const qd_tensor *t) {
    if (!t) return qd_fail(QD_EINVAL, "cpu %s: %s is required (got NULL)", op, what);
    if (t->rank < 0 || t->rank > QD_MAX_RANK) return qd_fail(QD_EINVAL, "cpu %s: %s has rank %d, expected ≤ %d", op, what, t->rank, QD_MAX_RANK);
    if (qd_dtype_bits(t->dtype) % 8 != 0) {
        return qd_fail(QD_EUNSUPPORTED, "cpu %s: %s has sub-byte dtype %s (packed elements cannot be moved one by one)", op,
                       what, qd_dtype_name(t->dtype));
    }
    for (int i = 0; i < t->rank; i++) {
        if (t->shape[i] < 0) return qd_fail(QD_EINVAL, "cpu %s: %s has a negative dim", op, what);
    }
    if (!t->data && qd_tensor_elements(t) > 0) return qd_fail(QD_EINVAL, "cpu %s: %s has no data", op, what);
    return QD_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* permute                                                                                           */

qd_status qd_cpu_permute(qd_backend *be, const qd_tensor *x, const int *perm, qd_tensor *y) {
    (void)be;
    qd_status s;
    if ((s = check_bytes("permute", "x", x)) || (s = check_bytes("permute", "y", y))) return s;
    if (!perm) return qd_fail(QD_EINVAL, "cpu permute: perm is required");
    char sx[128], sy[128];
    int r = x->rank;
    if (y->rank != r || y->dtype != x->dtype) {
        return qd_fail(QD_EINVAL, "cpu permute: y (%s %s) must have x's rank and dtype (%s %s)", qd_dtype_name(y->dtype),
                       qd_cpu_shape_str(y, sy, sizeof sy), qd_dtype_name(x->dtype), qd_cpu_shape_str(x, sx, sizeof sx));
    }
    bool seen[QD_MAX_RANK] = {false};
    for (int i = 0; i < r; i++) {
        if (perm[i] < 0 || perm[i] >= r || seen[perm[i]]) {
            return qd_fail(QD_EINVAL, "cpu permute: perm must be a permutation of 0..%d; entry %d is %d", r - 1, i, perm[i]);
        }
        seen[perm[i]] = true;
    }
    for (int i = 0; i < r; i++) {
        if (y->shape[i] != x->shape[perm[i]]) {
            return qd_fail(QD_EINVAL, "cpu permute: y's dim %d is %lld, but x's dim perm[%d] = %d is %lld (x %s, y %s)", i,
                           (long long)y->shape[i], i, perm[i], (long long)x->shape[perm[i]], qd_cpu_shape_str(x, sx, sizeof sx),
                           qd_cpu_shape_str(y, sy, sizeof sy));
        }
    }
    int64_t n = qd_tensor_elements(x);
    if (n == 0) return QD_OK;
    if (x->data == y->data) return qd_fail(QD_EINVAL, "cpu permute: y must not share x's buffer");
    size_t esz = elem_bytes(x->dtype);

    /* x's strides (elements), then y's dims described as (size, source stride), simplified */
    int64_t xst[QD_MAX_RANK];
    {
        int64_t acc = 1;
        for (int i = r - 1; i >= 0; i--) xst[i] = acc, acc *= x->shape[i];
    }
    int64_t dsz[QD_MAX_RANK], dst_[QD_MAX_RANK];
    int nd = 0;
    for (int i = 0; i < r; i++) {
        int64_t sz = y->shape[i], sst = xst[perm[i]];
        if (sz == 1) continue;
        /* merge with the previous y dim when that one steps exactly over this one in x */
        if (nd > 0 && dst_[nd - 1] == sst * sz) {
            dsz[nd - 1] *= sz;
            dst_[nd - 1] = sst;
            continue;
        }
        dsz[nd] = sz, dst_[nd] = sst, nd++;
    }
    if (nd == 0 || (nd == 1 && dst_[0] == 1)) { /* the identity, once simplified */
        memcpy(y->data, x->data, (size_t)n * esz);
        return QD_OK;
    }
    /* y is contiguous over the simplified dims too (dropping size-1 dims and merging keeps order) */
    int64_t yst[QD_MAX_RANK];
    {
        int64_t acc = 1;
        for (int i = nd - 1; i >= 0; i--) yst[i] = acc, acc *= dsz[i];
    }
    const char *xs = x->data;
    char *ys = y->data;
    if (dst_[nd - 1] == 1) {
        /* innermost dim kept: memcpy rows of dsz[nd-1] elements */
        int64_t row = dsz[nd - 1], rows = n / row;
        size_t rb = (size_t)row * esz;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
        for (int64_t q = 0; q < rows; q++) {
            int64_t rem = q, off = 0;
            for (int i = nd - 2; i >= 0; i--) {
                off += (rem % dsz[i]) * dst_[i];
                rem /= dsz[i];
            }
            memcpy(ys + (size_t)(q * row) * esz, xs + (size_t)off * esz, rb);
        }
        return QD_OK;
    }
    /* innermost dim moves: the y dim `p` whose source stride is 1 (x's innermost) and y's innermost
       dim `a` are walked in tiles; the other dims are an outer index */
    int p = -1;
    for (int i = 0; i < nd; i++) {
        if (dst_[i] == 1) p = i;
    }
    int a = nd - 1;
    int64_t outer = n / (dsz[p] * dsz[a]);
    int64_t tp = (dsz[p] + TILE - 1) / TILE, ta = (dsz[a] + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    for (int64_t u = 0; u < outer * tp * ta; u++) {
        int64_t t_a = u % ta, t_p = (u / ta) % tp, o = u / (ta * tp);
        int64_t xo = 0, yo = 0, rem = o;
        for (int i = nd - 1; i >= 0; i--) {
            if (i == p || i == a) continue;
            int64_t c = rem % dsz[i];
            rem /= dsz[i];
            xo += c * dst_[i], yo += c * yst[i];
        }
        int64_t p0 = t_p * TILE, p1 = p0 + TILE < dsz[p] ? p0 + TILE : dsz[p];
        int64_t a0 = t_a * TILE, a1 = a0 + TILE < dsz[a] ? a0 + TILE : dsz[a];
        int64_t sa = dst_[a], sp = yst[p];
        /* Typed copies for the common widths, through a TILE×TILE buffer: rows of x are read
           contiguously into it and rows of y written contiguously from it. Walking x directly with
           stride sa would touch TILE lines a power-of-two apart (a VAE plane is 2^16 elements), all
           in one L1 set — 4K aliasing that made this 5× slower. */
#define TILE_COPY(T)                                                                                                   \
    do {                                                                                                               \
        const T *xt = (const T *)(const void *)xs + xo;                                                                \
        T *yt = (T *)(void *)ys + yo;                                                                                  \
        T buf[TILE * TILE];                                                                                            \
        for (int64_t ia = a0; ia < a1; ia++) {                                                                         \
            const T *xr = xt + ia * sa;                                                                                \
            for (int64_t ip = p0; ip < p1; ip++) buf[(ia - a0) * TILE + (ip - p0)] = xr[ip];                           \
        }                                                                                                              \
        for (int64_t ip = p0; ip < p1; ip++) {                                                                         \
            T *yr = yt + ip * sp;                                                                                      \
            for (int64_t ia = a0; ia < a1; ia++) yr[ia] = buf[(ia - a0) * TILE + (ip - p0)];                           \
        }                                                                                                              \
    } while (0)
        switch (esz) {
        case 1: TILE_COPY(uint8_t); break;
        case 2: TILE_COPY(uint16_t); break;
        case 4: TILE_COPY(uint32_t); break;
        case 8: TILE_COPY(uint64_t); break;
        default:
            for (int64_t ip = p0; ip < p1; ip++) {
                for (int64_t ia = a0; ia < a1; ia++) {
                    memcpy(ys + (size_t)(yo + ip * sp + ia) * esz, xs + (size_t)(xo + ip + ia * sa) * esz, esz);
                }
            }
        }
#undef TILE_COPY
    }
    return QD_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* concat                                                                                            */

qd_status qd_cpu_concat(qd_backend *be, const qd_tensor *const *xs, int n, int dim, qd_tensor *y) {
    (void)be;
    qd_status s;
    if ((s = check_bytes("concat", "y", y))) return s;
    if (!xs || n < 1) return qd_fail(QD_EINVAL, "cpu concat: needs at least one input (got %d)", n);
    int r = y->rank;
    if (dim < -r || dim >= r) return qd_fail(QD_EINVAL, "cpu concat: dim %d is out of range for rank %d", dim, r);
    if (dim < 0) dim += r;
    char sx[128], sy[128];
    int64_t total = 0;
    for (int k = 0; k < n; k++) {
        char what[32];
        snprintf(what, sizeof what, "input %d", k);
        if ((s = check_bytes("concat", what, xs[k]))) return s;
        const qd_tensor *t = xs[k];
        bool ok = t->rank == r && t->dtype == y->dtype;
        for (int i = 0; ok && i < r; i++) ok = i == dim || t->shape[i] == y->shape[i];
        if (!ok) {
            return qd_fail(QD_EINVAL, "cpu concat: input %d (%s %s) must match y (%s %s) in dtype, rank and every dim but %d", k,
                           qd_dtype_name(t->dtype), qd_cpu_shape_str(t, sx, sizeof sx), qd_dtype_name(y->dtype),
                           qd_cpu_shape_str(y, sy, sizeof sy), dim);
        }
        if (t->data == y->data && qd_tensor_elements(t) > 0) return qd_fail(QD_EINVAL, "cpu concat: input %d shares y's buffer", k);
        total += t->shape[dim];
    }
    if (total != y->shape[dim]) {
        return qd_fail(QD_EINVAL, "cpu concat: inputs add up to %lld along dim %d, y has %lld (y %s)", (long long)total, dim,
                       (long long)y->shape[dim], qd_cpu_shape_str(y, sy, sizeof sy));
    }
    size_t esz = elem_bytes(y->dtype);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < dim; i++) outer *= y->shape[i];
    for (int i = dim + 1; i < r; i++) inner *= y->shape[i];
    if (outer == 0 || inner == 0) return QD_OK;
    size_t yrow = (size_t)(y->shape[dim] * inner) * esz;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(qd_tensor_elements(y), QD_GRAIN_ELEMS))
    for (int64_t o = 0; o < outer; o++) {
        size_t at = 0;
        for (int k = 0; k < n; k++) {
            size_t b = (size_t)(xs[k]->shape[dim] * inner) * esz;
            if (b) memcpy((char *)y->data + (size_t)o * yrow + at, (const char *)xs[k]->data + (size_t)o * b, b);
            at += b;
        }
    }
    return QD_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* embedding                                                                                         */

qd_status qd_cpu_embedding(qd_backend *be, const qd_tensor *table, const qd_tensor *ids, qd_tensor *y) {
    (void)be;
    qd_status s;
    if ((s = qd_cpu_check_float("embedding", "table", table)) || (s = qd_cpu_check_float("embedding", "y", y)) ||
        (s = check_bytes("embedding", "ids", ids))) {
        return s;
    }
    char st[128], si[128], sy[128];
    if (table->rank != 2) {
        return qd_fail(QD_EINVAL, "cpu embedding: table must be [V, D], got %s", qd_cpu_shape_str(table, st, sizeof st));
    }
    if (ids->dtype != QD_DTYPE_I32 && ids->dtype != QD_DTYPE_I64) {
        return qd_fail(QD_EUNSUPPORTED, "cpu embedding: ids must be I32 or I64, got %s", qd_dtype_name(ids->dtype));
    }
    int64_t V = table->shape[0], D = table->shape[1];
    bool ok = y->rank == ids->rank + 1 && y->shape[y->rank - 1] == D;
    for (int i = 0; ok && i < ids->rank; i++) ok = y->shape[i] == ids->shape[i];
    if (!ok) {
        return qd_fail(QD_EINVAL, "cpu embedding: y must be ids' shape %s plus [%lld], got %s", qd_cpu_shape_str(ids, si, sizeof si),
                       (long long)D, qd_cpu_shape_str(y, sy, sizeof sy));
    }
    int64_t n = qd_tensor_elements(ids);
    /* every id checked before anything is written */
    for (int64_t i = 0; i < n; i++) {
        int64_t id = ids->dtype == QD_DTYPE_I32 ? ((const int32_t *)ids->data)[i] : ((const int64_t *)ids->data)[i];
        if (id < 0 || id >= V) {
            return qd_fail(QD_EINVAL, "cpu embedding: id %lld at position %lld is out of range for a table of V = %lld rows",
                           (long long)id, (long long)i, (long long)V);
        }
    }
    if (n == 0 || D == 0) return QD_OK;
    bool same = table->dtype == y->dtype;
    size_t esz = elem_bytes(y->dtype);
    int failed = 0;
#pragma omp parallel num_threads(qd_threads_for(n * D, QD_GRAIN_ELEMS))
    {
        float *buf = same ? NULL : malloc(sizeof(float) * (size_t)D);
        if (!same && !buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            int64_t id = ids->dtype == QD_DTYPE_I32 ? ((const int32_t *)ids->data)[i] : ((const int64_t *)ids->data)[i];
            if (same) {
                memcpy((char *)y->data + (size_t)(i * D) * esz, (const char *)table->data + (size_t)(id * D) * esz, (size_t)D * esz);
            } else if (buf) {
                qd_cpu_to_f32(table, id * D, D, buf);
                qd_cpu_out_commit(y, i * D, D, buf);
            }
        }
        free(buf);
    }
    if (failed) return qd_fail(QD_ENOMEM, "cpu embedding: cannot allocate a row buffer");
    return QD_OK;
}
