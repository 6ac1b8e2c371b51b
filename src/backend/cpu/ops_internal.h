/* Small helpers shared by the CPU op files (attention.c, norm.c, rope.c, elementwise.c, conv.c,
 * layout.c): argument checks that produce the same style of message everywhere ("cpu <op>: <what>
 * must be …, got …"), shape printing, and the ISA attribute strings the fast paths are compiled with.
 * Everything here is static inline so no new link-level symbols appear. */
#ifndef QD_BACKEND_CPU_OPS_INTERNAL_H
#define QD_BACKEND_CPU_OPS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/cpu.h"
#include "core/status.h"

/* The fast paths: each function carrying one of these is only called after qd_cpu_isa_get() said
 * the features are there (and QDIT_CPU_ISA did not cap them). */
#define QD_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define QD_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

static inline bool qd_cpu_has_avx512(void) {
    const qd_cpu_isa *isa = qd_cpu_isa_get();
    return isa->avx512f && isa->avx512bw && isa->avx512vl && isa->avx512dq && isa->fma;
}

static inline bool qd_cpu_has_avx512bf16(void) { return qd_cpu_has_avx512() && qd_cpu_isa_get()->avx512_bf16; }

#if defined(__x86_64__)
/* f32 → bf16 bits, round to nearest even, NaN → quiet NaN keeping the top payload bits: bit for bit
 * qd_f32_to_bf16, in integer arithmetic so it needs no AVX512-BF16. Result: 16 × u32 (bits in the
 * low half). */
static inline __attribute__((always_inline)) QD_TARGET_AVX512 __m512i qd_cpu_bf16_bits_avx512(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
}

/* v rounded to the nearest bf16, as f32 */
static inline __attribute__((always_inline)) QD_TARGET_AVX512 __m512 qd_cpu_bf16_round_avx512(__m512 v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(qd_cpu_bf16_bits_avx512(v), 16));
}
#endif

/* "[2, 3, 4]" into buf (at least 128 bytes) — for error messages. */
static inline const char *qd_cpu_shape_str(const qd_tensor *t, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < t->rank && o < n; i++) {
        o += (size_t)snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    }
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

/* The activation dtypes every op reads and writes (backend.h: F32 / BF16, and F16). */
static inline bool qd_cpu_is_float(qd_dtype t) { return t == QD_DTYPE_F32 || t == QD_DTYPE_BF16 || t == QD_DTYPE_F16; }

/* A tensor argument that must be present, hold data, and have a float dtype. */
static inline qd_status qd_cpu_check_float(const char *op, const char *what, const qd_tensor *t) {
    if (!t) return qd_fail(QD_EINVAL, "cpu %s: %s is required (got NULL)", op, what);
    if (t->rank < 0 || t->rank > QD_MAX_RANK) {
        return qd_fail(QD_EINVAL, "cpu %s: %s has rank %d, expected 0..%d", op, what, t->rank, QD_MAX_RANK);
    }
    for (int i = 0; i < t->rank; i++) {
        if (t->shape[i] < 0) return qd_fail(QD_EINVAL, "cpu %s: %s has a negative dim %d", op, what, i);
    }
    if (!qd_cpu_is_float(t->dtype)) {
        return qd_fail(QD_EUNSUPPORTED, "cpu %s: %s must be F32, BF16 or F16, got %s", op, what, qd_dtype_name(t->dtype));
    }
    if (!t->data && qd_tensor_elements(t) > 0) return qd_fail(QD_EINVAL, "cpu %s: %s has no data", op, what);
    return QD_OK;
}

static inline bool qd_cpu_same_shape(const qd_tensor *a, const qd_tensor *b) {
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++) {
        if (a->shape[i] != b->shape[i]) return false;
    }
    return true;
}

static inline qd_status qd_cpu_check_same_shape(const char *op, const char *wa, const qd_tensor *a, const char *wb,
                                                const qd_tensor *b) {
    if (qd_cpu_same_shape(a, b)) return QD_OK;
    char sa[128], sb[128];
    return qd_fail(QD_EINVAL, "cpu %s: %s %s and %s %s must have the same shape", op, wa, qd_cpu_shape_str(a, sa, sizeof sa),
                   wb, qd_cpu_shape_str(b, sb, sizeof sb));
}

/* Two tensors that may be the same buffer (in place) must then also agree on dtype, else a row
 * would be overwritten in another encoding before it is read. Partial overlap is never allowed. */
static inline qd_status qd_cpu_check_inplace(const char *op, const qd_tensor *x, const qd_tensor *y) {
    if (x->data == y->data && x->dtype != y->dtype && qd_tensor_elements(x) > 0) {
        return qd_fail(QD_EINVAL, "cpu %s: in place needs the same dtype for input and output (%s vs %s)", op,
                       qd_dtype_name(x->dtype), qd_dtype_name(y->dtype));
    }
    return QD_OK;
}

/* Rows as f32, without a copy for F32 tensors (elementwise.c; AVX-512 conversions where available,
 * bit-identical to core/codec's RNE encoders).
 * qd_cpu_in_f32: n elements of t from element `off`: t's own memory when t is F32, else decoded into
 * buf. qd_cpu_out_f32: where to put n results for t at `off`: t's own memory when F32, else buf;
 * qd_cpu_out_commit then encodes buf into t (and does nothing when vals already is t's memory). */
const float *qd_cpu_in_f32(const qd_tensor *t, int64_t off, int64_t n, float *buf);
float *qd_cpu_out_f32(qd_tensor *t, int64_t off, float *buf);
void qd_cpu_out_commit(qd_tensor *t, int64_t off, int64_t n, const float *vals);

/* Row helpers the fused ops share with the ops they fuse (bit for bit the same arithmetic):
 * qd_cpu_load_batch_vec: a per-batch vector [B, D] (or [B, 1, D], as diffusers shapes emb.chunk outputs)
 * read to f32 (*out malloc'ed); qd_cpu_modulate_rows: out = x·(1 + sc) + sh (sh may be NULL), modulate's
 * row kernel (elementwise.c); qd_cpu_round_rows: v rounded in place to dtype t as a store to t and a load
 * back would (nothing for F32); qd_cpu_rms_row: one row of rms_norm (norm.c), w NULL or of dtype wt;
 * qd_cpu_rope_heads: H heads of one position rotated by that position's cos/sin rows, with `ex` scratch of
 * 2·D floats (rope.c). in and out of the row helpers may be the same memory. */
qd_status qd_cpu_load_batch_vec(const char *op, const char *what, const qd_tensor *t, int64_t B, int64_t D, float **out);
void qd_cpu_modulate_rows(const float *x, const float *sc, const float *sh, float *out, int64_t n);
void qd_cpu_round_rows(qd_dtype t, float *v, int64_t n);
void qd_cpu_rms_row(bool avx, const float *in, int64_t D, float eps, const float *w, qd_dtype wt, float *out);
void qd_cpu_rope_heads(bool avx, qd_rope_mode mode, const float *in, const float *c, const float *s, int64_t H, int64_t D,
                       float *ex, float *out);

static inline int64_t qd_cpu_round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

#endif
