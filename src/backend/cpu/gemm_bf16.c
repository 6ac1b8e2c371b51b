/* The GEMM engine behind the CPU float-path linears (gemm_bf16.h): packing with fused conversion,
 * AVX512-BF16 / AVX-512F microkernels, a plain C path, and the OpenMP driver.
 *
 * Layouts, in 32-bit "units" (a bf16 pair k, k+1 — one operand lane of vdpbf16ps — or one f32):
 *   A (activations): KC-deep chunks of MR-row panels, chunk-major ([K chunk][panel][unit][MR]), so the
 *     microkernel walks one panel-chunk as a single sequential stream (one broadcast per row and unit at
 *     constant displacements) and the panels of a block are contiguous for the prefetchers.
 *   B (weights): per NR-column micro-panel and K chunk, [unit][NR] — two zmm loads per unit.
 *   Both come from 16×16 in-register transposes of rows the caller decoded whole (its a_row / b_row:
 *   quantize-and-round activations, E4M3 → bf16, uint4·scale + zero → bf16, plain conversions), so the
 *   stored weight is read sequentially once per pass.
 * Microkernel: MR × NR = 14 × 32 f32 accumulators (28 zmm); per unit 2 weight loads, 14 broadcasts and 28
 * vdpbf16ps (or vfmadd231ps). On this machine's Zen 5 cores it sustains ~97% of the 2 × 512-bit-per-cycle
 * peak when its operands are in cache; what the driver must avoid is waiting on memory, so each call
 * prefetches the next activation panel-chunk and a slice of the next weight micro-panel into L1. Group
 * mode (block-scaled FP8) splits a call into K-group segments whose sums are scaled per row and added to
 * the tile in L1; on a tile's last chunk the epilogue (scales, bias, bf16/f32 store) is fused into the
 * kernel's final stores.
 * Driver (large M): the threads split the columns (whole micro-panels), so each packs and reads its own
 * weight blocks; activations are packed once per row chunk by all threads (the only barriers). Per
 * thread: for each NC-column block, pack it (all of K); then for each MC-panel row block, for each K
 * chunk, for each micro-panel, for each panel: one kernel call accumulating into a private MC × NC f32
 * block (L2) while the weight micro-panel stays in L1.
 * Small M (≤ SMALL_M rows): threads split the micro-panels, each packed once and used by every row.
 * Rows are processed in chunks so the activation scratch stays within A_BUDGET bytes; the scratch is one
 * grow-only area reused across calls. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/cpu.h"
#include "backend/cpu/gemm_bf16.h"
#include "core/codec.h"
#include "core/status.h"
#include "core/threads.h"

#ifndef QD_GEMM_KC
#define QD_GEMM_KC 512 /* K elements per packed chunk */
#endif
#ifndef QD_GEMM_MC
#define QD_GEMM_MC 16 /* MR-panels per L2 block */
#endif
#ifndef QD_GEMM_NC
#define QD_GEMM_NC 256 /* columns per weight block */
#endif
#define KC QD_GEMM_KC
#define MR 14      /* rows per microkernel tile */
#define NV 2       /* zmm vectors (16 columns each) per tile */
#define NR (16 * NV)
#define MC QD_GEMM_MC
#define NC QD_GEMM_NC
/* Activation scratch per pass (rows are processed in chunks that fit). */
#define A_BUDGET ((size_t)64 << 20)
/* Up to this many rows, the small-M driver. */
#define SMALL_M 64
/* group-scale scratch: row scales of up to KC/2 groups per chunk, or MR row + NR column scales */
#define GS_FLOATS (((KC / 2 * MR > MR + NR ? KC / 2 * MR : MR + NR) + 15) / 16 * 16)

#define QD_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

bool qd_gemm_fast(qd_gemm_type type) {
    const qd_cpu_isa *isa = qd_cpu_isa_get();
    bool avx512 = isa->avx512f && isa->avx512bw && isa->avx512vl && isa->fma;
    return type == QD_GEMM_BF16 ? avx512 && isa->avx512_bf16 : avx512;
}

/* ================================ microkernels ================================ */

/* One microkernel call: for each of nseg segments of seg_units units, acc = Σ_u A[u][r]·B[u][0..NR) over
 * the segment (r < mr); with row scales, acc is multiplied by rsc[s][r] (and by csc[s][j] when given:
 * the plain C kernel only); then C[r][0..NR) = acc, or += acc for every segment after the first and for
 * the first too when `add`. While it runs it prefetches npa lines from pa (the next activation panel-
 * chunk) and npb lines from pb (a slice of the next weight micro-panel) into L1. */
/* The epilogue of a tile fused into the kernel's last store: y = v·rs[r]·cs[j] + bias[j] for j < ncols. */
typedef struct {
    void *y; /* at (m0, n0) */
    int64_t ldy;
    bool bf16;
    int ncols;
    const float *cs, *bias; /* at n0, or NULL */
    float rs[MR];           /* alpha · row_scale */
} kepi;

typedef struct {
    const void *a, *b;
    int nunits, add;
    float *c;
    int64_t ldc;
    int nseg, seg_units;
    const float *rsc, *csc; /* [nseg][MR], [nseg][NR] or NULL */
    const uint8_t *pa, *pb;
    int npa, npb;
    const kepi *epi; /* the last segment writes y instead of C (AVX-512 kernels) */
} ktile;

static void kernel_generic(qd_gemm_type type, int mr, const ktile *t) {
    for (int s = 0; s < t->nseg; s++) {
        const int u0 = s * t->seg_units, u1 = u0 + t->seg_units < t->nunits ? u0 + t->seg_units : t->nunits;
        float acc[MR][NR];
        memset(acc, 0, sizeof acc);
        if (type == QD_GEMM_BF16) {
            const uint16_t *pa = t->a;
            const uint32_t *pb = t->b;
            for (int u = u0; u < u1; u++) {
                float b0[NR], b1[NR];
                for (int j = 0; j < NR; j++) {
                    b0[j] = qd_bf16_to_f32((uint16_t)(pb[u * NR + j] & 0xFFFF));
                    b1[j] = qd_bf16_to_f32((uint16_t)(pb[u * NR + j] >> 16));
                }
                for (int r = 0; r < mr; r++) {
                    /* exact products, f32 sums, as vdpbf16ps */
                    const float a0 = qd_bf16_to_f32(pa[(u * MR + r) * 2]), a1 = qd_bf16_to_f32(pa[(u * MR + r) * 2 + 1]);
                    for (int j = 0; j < NR; j++) {
                        acc[r][j] += a0 * b0[j];
                        acc[r][j] += a1 * b1[j];
                    }
                }
            }
        } else {
            const float *pa = t->a, *pb = t->b;
            for (int u = u0; u < u1; u++)
                for (int r = 0; r < mr; r++) {
                    const float av = pa[u * MR + r];
                    for (int j = 0; j < NR; j++) acc[r][j] += av * pb[u * NR + j];
                }
        }
        for (int r = 0; r < mr; r++)
            for (int j = 0; j < NR; j++) {
                float v = acc[r][j];
                float *cp = t->c + r * t->ldc + j;
                if (t->rsc) v *= t->rsc[s * MR + r] * (t->csc ? t->csc[s * NR + j] : 1.0f);
                *cp = (s || t->add) ? *cp + v : v;
            }
    }
}

#if defined(__x86_64__)

/* f32 → bf16, round to nearest even, NaN kept (quiet); integer ops, so no AVX512-BF16 needed. */
static inline __attribute__((always_inline)) QD_TARGET_AVX512 __m256i f32_to_bf16_avx512(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

#define KERNEL_HEAD()                                                                                          \
    const int nunits = t->nunits, npa = t->npa, npb = t->npb;                                                  \
    const uint8_t *pfa = t->pa, *pfb = t->pb;                                                                  \
    float *const c = t->c;                                                                                     \
    const int64_t ldc = t->ldc;                                                                                \
    __m512 acc[MR][NV];                                                                                        \
    _Pragma("GCC unroll 16") for (int r = 0; r < mr; r++) {                                                    \
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);                                                \
        _mm_prefetch((const char *)(c + r * ldc + NR - 1), _MM_HINT_T0);                                       \
    }

#define KERNEL_ZERO()                                                                                          \
    _Pragma("GCC unroll 16") for (int r = 0; r < mr; r++) {                                                    \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) acc[r][j] = _mm512_setzero_ps();                  \
    }

#define KERNEL_PREFETCH()                                                                                      \
    do {                                                                                                       \
        if (u < npa) _mm_prefetch((const char *)(pfa + 64 * u), _MM_HINT_T0);                                  \
        if (u < npb) _mm_prefetch((const char *)(pfb + 64 * u), _MM_HINT_T0);                                  \
    } while (0)

#define KERNEL_TAIL(s)                                                                                         \
    do {                                                                                                       \
        const bool add = (s) || t->add;                                                                        \
        const kepi *e = (s) == t->nseg - 1 ? t->epi : NULL;                                                    \
        _Pragma("GCC unroll 16") for (int r = 0; r < mr; r++) {                                                \
            const __m512 sv = _mm512_set1_ps(t->rsc ? t->rsc[(s) * MR + r] : 1.0f);                            \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) {                                             \
                __m512 v = acc[r][j];                                                                          \
                float *cp = c + r * ldc + 16 * j;                                                              \
                if (t->rsc) v = add ? _mm512_fmadd_ps(v, sv, _mm512_loadu_ps(cp)) : _mm512_mul_ps(v, sv);      \
                else if (add) v = _mm512_add_ps(v, _mm512_loadu_ps(cp));                                       \
                if (e) epi_store(e, r, j, v);                                                                  \
                else _mm512_storeu_ps(cp, v);                                                                  \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

/* y[r][16j..] = v·rs[r]·cs + bias, masked to the tile's columns */
static inline __attribute__((always_inline)) QD_TARGET_AVX512 void epi_store(const kepi *e, int r, int j, __m512 v) {
    const int left = e->ncols - 16 * j;
    if (left <= 0) return;
    const __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    v = _mm512_mul_ps(v, _mm512_set1_ps(e->rs[r]));
    if (e->cs) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, e->cs + 16 * j));
    if (e->bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, e->bias + 16 * j));
    if (e->bf16) _mm256_mask_storeu_epi16((uint16_t *)e->y + r * e->ldy + 16 * j, k, f32_to_bf16_avx512(v));
    else _mm512_mask_storeu_ps((float *)e->y + r * e->ldy + 16 * j, k, v);
}

static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 void kernel_bf16_tile(const int mr, const ktile *t) {
    const uint32_t *a = t->a, *b = t->b;
    KERNEL_HEAD()
    for (int s = 0; s < t->nseg; s++) {
        const int u0 = s * t->seg_units, u1 = u0 + t->seg_units < nunits ? u0 + t->seg_units : nunits;
        KERNEL_ZERO()
        for (int u = u0; u < u1; u++) {
            __m512bh bv[NV];
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) bv[j] = (__m512bh)_mm512_loadu_si512(b + u * NR + 16 * j);
            KERNEL_PREFETCH();
            _Pragma("GCC unroll 16") for (int r = 0; r < mr; r++) {
                const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[u * MR + r]);
                _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], av, bv[j]);
            }
        }
        KERNEL_TAIL(s);
    }
}

static inline __attribute__((always_inline)) QD_TARGET_AVX512 void kernel_f32_tile(const int mr, const ktile *t) {
    const float *a = t->a, *b = t->b;
    KERNEL_HEAD()
    for (int s = 0; s < t->nseg; s++) {
        const int u0 = s * t->seg_units, u1 = u0 + t->seg_units < nunits ? u0 + t->seg_units : nunits;
        KERNEL_ZERO()
        for (int u = u0; u < u1; u++) {
            __m512 bv[NV];
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) bv[j] = _mm512_loadu_ps(b + u * NR + 16 * j);
            KERNEL_PREFETCH();
            _Pragma("GCC unroll 16") for (int r = 0; r < mr; r++) {
                const __m512 av = _mm512_set1_ps(a[u * MR + r]);
                _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) acc[r][j] = _mm512_fmadd_ps(av, bv[j], acc[r][j]);
            }
        }
        KERNEL_TAIL(s);
    }
}

/* one instance per row count, so every loop over rows is unrolled with the accumulators in registers */
#define KERNEL_CASES(fn)                                                                                       \
    switch (mr) {                                                                                              \
    case 1: fn(1, t); break;                                                                                   \
    case 2: fn(2, t); break;                                                                                   \
    case 3: fn(3, t); break;                                                                                   \
    case 4: fn(4, t); break;                                                                                   \
    case 5: fn(5, t); break;                                                                                   \
    case 6: fn(6, t); break;                                                                                   \
    case 7: fn(7, t); break;                                                                                   \
    case 8: fn(8, t); break;                                                                                   \
    case 9: fn(9, t); break;                                                                                   \
    case 10: fn(10, t); break;                                                                                 \
    case 11: fn(11, t); break;                                                                                 \
    case 12: fn(12, t); break;                                                                                 \
    case 13: fn(13, t); break;                                                                                 \
    default: fn(14, t); break;                                                                                 \
    }
#if MR != 14
#error "KERNEL_CASES enumerates MR = 14 rows"
#endif

static QD_TARGET_AVX512BF16 void kernel_bf16_avx512(int mr, const ktile *t) { KERNEL_CASES(kernel_bf16_tile) }

static QD_TARGET_AVX512 void kernel_f32_avx512(int mr, const ktile *t) { KERNEL_CASES(kernel_f32_tile) }

/* dst + u·dst_stride ← column u of the 16 rows src + i·src_stride (16 units each), lanes in `keep`: a
 * 16×16 transpose of 32-bit units in registers (unpack 32, unpack 64, two 128-bit lane shuffles). */
static QD_TARGET_AVX512 void transpose16(const uint32_t *src, int64_t src_stride, uint32_t *dst, int64_t dst_stride,
                                         __mmask16 keep) {
    __m512i r[16], t[16];
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(src + i * src_stride);
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
        r[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    /* r[4i + c], 128-bit lane L: rows 4i..4i+3 of column 4L + c */
    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
        const __m512i v0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88), w0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xDD);
        const __m512i v1 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88), w1 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xDD);
        _mm512_mask_storeu_epi32(dst + (0 + c) * dst_stride, keep, _mm512_shuffle_i32x4(v0, v1, 0x88));
        _mm512_mask_storeu_epi32(dst + (8 + c) * dst_stride, keep, _mm512_shuffle_i32x4(v0, v1, 0xDD));
        _mm512_mask_storeu_epi32(dst + (4 + c) * dst_stride, keep, _mm512_shuffle_i32x4(w0, w1, 0x88));
        _mm512_mask_storeu_epi32(dst + (12 + c) * dst_stride, keep, _mm512_shuffle_i32x4(w0, w1, 0xDD));
    }
}

static QD_TARGET_AVX512 void epilogue_avx512(const qd_gemm_args *g, const float *c, int64_t ldc, int64_t m0, int mr,
                                             int64_t n0, int nc) {
    for (int r = 0; r < mr; r++) {
        const int64_t m = m0 + r;
        const __m512 rs = _mm512_set1_ps(g->alpha * (g->row_scale ? g->row_scale[m] : 1.0f));
        for (int j = 0; j < nc; j += 16) {
            const __mmask16 k = nc - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nc - j)) - 1);
            __m512 v = _mm512_mul_ps(_mm512_loadu_ps(c + r * ldc + j), rs);
            if (g->col_scale) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, g->col_scale + n0 + j));
            if (g->bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, g->bias + n0 + j));
            if (g->y_dtype == QD_DTYPE_F32) {
                _mm512_mask_storeu_ps((float *)g->y + m * g->ldy + n0 + j, k, v);
            } else {
                _mm256_mask_storeu_epi16((uint16_t *)g->y + m * g->ldy + n0 + j, k, f32_to_bf16_avx512(v));
            }
        }
    }
}

#endif /* __x86_64__ */

static void transpose_generic(const uint32_t *src, int64_t src_stride, uint32_t *dst, int64_t dst_stride, int keep) {
    for (int i = 0; i < keep; i++)
        for (int u = 0; u < 16; u++) dst[u * dst_stride + i] = src[i * src_stride + u];
}

static void epilogue_generic(const qd_gemm_args *g, const float *c, int64_t ldc, int64_t m0, int mr, int64_t n0, int nc) {
    for (int r = 0; r < mr; r++) {
        const int64_t m = m0 + r;
        const float rs = g->alpha * (g->row_scale ? g->row_scale[m] : 1.0f);
        for (int j = 0; j < nc; j++) {
            float v = c[r * ldc + j] * rs;
            if (g->col_scale) v *= g->col_scale[n0 + j];
            if (g->bias) v += g->bias[n0 + j];
            if (g->y_dtype == QD_DTYPE_F32) ((float *)g->y)[m * g->ldy + n0 + j] = v;
            else ((uint16_t *)g->y)[m * g->ldy + n0 + j] = qd_f32_to_bf16(v);
        }
    }
}

/* ================================ driver ================================ */

typedef struct {
    const qd_gemm_args *g;
    bool fast;
    int elem;         /* bytes per element: 2 (bf16) or 4 (f32) */
    int per_unit;     /* elements per 32-bit unit: 2 or 1 */
    int units;        /* units per KC chunk */
    int64_t nkb;      /* K chunks */
    int64_t kp;       /* K rounded up to whole chunks */
    int64_t a_chunk;  /* bytes of one packed MR-row panel-chunk: units × MR × 4 */
    int64_t b_chunk;  /* bytes of one packed micro-panel chunk: units × NR × 4 */
} plan;

static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

/* Returns whether t->epi was applied (the AVX-512 kernels fuse it; otherwise C holds the tile). */
static bool run_kernel(const plan *p, int mr, const ktile *t) {
#if defined(__x86_64__)
    if (p->fast && !t->csc) {
        if (p->g->type == QD_GEMM_BF16) kernel_bf16_avx512(mr, t);
        else kernel_f32_avx512(mr, t);
        return t->epi != NULL;
    }
#endif
    kernel_generic(p->g->type, mr, t);
    return false;
}

static void epilogue(const plan *p, const float *c, int64_t ldc, int64_t m0, int mr, int64_t n0, int nc) {
#if defined(__x86_64__)
    if (p->fast) {
        epilogue_avx512(p->g, c, ldc, m0, mr, n0, nc);
        return;
    }
#endif
    epilogue_generic(p->g, c, ldc, m0, mr, n0, nc);
}

/* Transpose `rows` (≤ 16) rows of `units` units (a multiple of 16) at src (row stride src_stride units)
 * into dst[u][dst_stride], keeping `rows` lanes of each output. src must have 16 readable rows. */
static void transpose_block(const plan *p, const uint32_t *src, int64_t src_stride, int64_t units, uint32_t *dst,
                            int64_t dst_stride, int rows) {
    for (int64_t u = 0; u < units; u += 16) {
#if defined(__x86_64__)
        if (p->fast) {
            transpose16(src + u, src_stride, dst + u * dst_stride, dst_stride, (__mmask16)((1u << rows) - 1));
            continue;
        }
#endif
        transpose_generic(src + u, src_stride, dst + u * dst_stride, dst_stride, rows);
    }
}

/* Pack one weight micro-panel, all K chunks: rows n0..n0+NR → dst, chunk kb at kb·b_chunk, each [units][NR].
 * Each row is decoded whole (one sequential read of the stored weight, which the prefetchers follow) into
 * `tmp` (16 rows of kp elements at a time), then transposed chunk by chunk. */
static void pack_b(const plan *p, int64_t n0, uint8_t *tmp, uint8_t *dst) {
    const qd_gemm_args *g = p->g;
    const int64_t row_bytes = p->kp * p->elem;
    for (int h = 0; h < NR; h += 16) {
        for (int i = 0; i < 16; i++) {
            uint8_t *row = tmp + i * row_bytes;
            const int64_t n = n0 + h + i;
            if (n < g->n) {
                g->b_row(g->ctx, n, 0, g->k, row);
                memset(row + g->k * p->elem, 0, (size_t)((p->kp - g->k) * p->elem)); /* pad (an odd K's partner) */
            } else {
                memset(row, 0, (size_t)row_bytes);
            }
        }
        for (int64_t kb = 0; kb < p->nkb; kb++) {
            const int64_t units16 = ((imin(KC, g->k - kb * KC) + p->per_unit - 1) / p->per_unit + 15) / 16 * 16;
            transpose_block(p, (const uint32_t *)(tmp + kb * KC * p->elem), row_bytes / 4, units16,
                            (uint32_t *)(dst + kb * p->b_chunk) + h, NR, 16);
        }
    }
}

/* Pack activation panel `pi` of a row chunk (rows m0..m0+mr) into abuf, whose chunk kb starts at
 * kb·npan·a_chunk. `tmp` holds 16 rows of kp elements; rows ≥ mr are zeroed (the transpose reads 16). */
static void pack_a(const plan *p, int64_t m0, int mr, uint8_t *tmp, uint8_t *abuf, int64_t npan, int64_t pi) {
    const qd_gemm_args *g = p->g;
    const int64_t row_bytes = p->kp * p->elem;
    for (int r = 0; r < 16; r++) {
        uint8_t *row = tmp + r * row_bytes;
        if (r < mr) {
            g->a_row(g->ctx, m0 + r, row);
            memset(row + g->k * p->elem, 0, (size_t)((p->kp - g->k) * p->elem));
        } else {
            memset(row, 0, (size_t)row_bytes);
        }
    }
    for (int64_t kb = 0; kb < p->nkb; kb++)
        transpose_block(p, (const uint32_t *)(tmp + kb * KC * p->elem), row_bytes / 4, p->units,
                        (uint32_t *)(abuf + (kb * npan + pi) * p->a_chunk), MR, MR);
}

/* Group-mode scale scratch of one panel: the row scales of its last (rows, chunk, weight block), kept while
 * the micro-panels of one weight block go by. */
typedef struct {
    int64_t m0, kb, nb;
    float s[GS_FLOATS];
} gslot;

/* Multiply-accumulate one tile over K chunk kb: C (ldc) ⟵ A panel-chunk · B micro-panel chunk, with the
 * block scales of group mode (`slot`: scratch, see gslot); pa/pb the prefetch streams (ktile); epi the
 * epilogue to fuse on the last chunk. Returns whether the epilogue was applied. */
static bool tile_chunk(const plan *p, const uint8_t *ap, const uint8_t *bp, int mr, int64_t m0, int64_t n0, int64_t kb,
                       float *c, int64_t ldc, gslot *slot, const uint8_t *pa, int npa, const uint8_t *pb, int npb,
                       const kepi *epi) {
    float *gs = slot->s;
    const qd_gemm_args *g = p->g;
    const int64_t k0 = kb * KC, kc = imin(KC, g->k - k0);
    const int nunits = (int)((kc + p->per_unit - 1) / p->per_unit);
    ktile t = {ap, bp, nunits, kb > 0, c, ldc, 1, nunits, NULL, NULL, pa, pb, npa, npb, epi};
    if (!g->group_k) return run_kernel(p, mr, &t);
    /* Group mode. When the K-groups tile the chunk and the tile lies in one weight block along N, every row
       has one scale per group and the kernel runs all of the chunk's groups in one call. */
    const int64_t nb = n0 / g->group_n;
    if (KC % g->group_k == 0 && g->group_n % NR == 0) {
        const int64_t g0 = k0 / g->group_k;
        t.seg_units = g->group_k / p->per_unit;
        t.nseg = (nunits + t.seg_units - 1) / t.seg_units;
        if (slot->m0 != m0 || slot->kb != kb || slot->nb != nb) {
            for (int s = 0; s < t.nseg; s++) {
                const float sb = g->b_gscale[nb * g->b_gstride + g0 + s], *sa = g->a_gscale + (g0 + s) * g->a_gstride + m0;
                for (int r = 0; r < mr; r++) gs[s * MR + r] = sa[r] * sb;
            }
            slot->m0 = m0, slot->kb = kb, slot->nb = nb;
        }
        t.rsc = gs;
        return run_kernel(p, mr, &t);
    }
    /* otherwise one call per group with per-column weight scales (the plain C kernel) */
    float *arow = gs, *bcol = gs + MR;
    slot->m0 = -1; /* overwritten */
    for (int64_t s0 = k0; s0 < k0 + kc;) {
        const int64_t grp = s0 / g->group_k, s1 = imin((grp + 1) * g->group_k, k0 + kc);
        for (int r = 0; r < mr; r++) arow[r] = g->a_gscale[grp * g->a_gstride + m0 + r];
        /* the weight block of each column; columns past N (zero weights) reuse the last block */
        int64_t b = nb, next = (b + 1) * g->group_n;
        const int64_t b_last = (g->n - 1) / g->group_n;
        for (int j = 0; j < NR; j++) {
            if (n0 + j >= next && b < b_last) b++, next += g->group_n;
            bcol[j] = g->b_gscale[b * g->b_gstride + grp];
        }
        const int64_t u0 = (s0 - k0) / p->per_unit; /* whole units: group_k and KC are even */
        const int n1 = (int)((s1 - s0 + p->per_unit - 1) / p->per_unit);
        const ktile ts = {ap + u0 * MR * 4, bp + u0 * NR * 4, n1, s0 > 0, c, ldc, 1, n1, arow, bcol, NULL, NULL, 0, 0, NULL};
        run_kernel(p, mr, &ts);
        s0 = s1;
    }
    return false;
}

/* The epilogue of tile (m0, n0): fused into the kernel where it can be, else from C afterwards. */
static void make_epi(const plan *p, int64_t m0, int mr, int64_t n0, int nc, kepi *e) {
    const qd_gemm_args *g = p->g;
    e->bf16 = g->y_dtype == QD_DTYPE_BF16;
    e->ldy = g->ldy;
    e->y = (uint8_t *)g->y + (m0 * g->ldy + n0) * (e->bf16 ? 2 : 4);
    e->ncols = nc;
    e->cs = g->col_scale ? g->col_scale + n0 : NULL;
    e->bias = g->bias ? g->bias + n0 : NULL;
    for (int r = 0; r < mr; r++) e->rs[r] = g->alpha * (g->row_scale ? g->row_scale[m0 + r] : 1.0f);
}

/* Large M: columns split across threads. abuf: the packed row chunk; bbufs: one weight block per thread. */
static void run_large(const plan *p, int nthreads, int64_t chunk_rows, uint8_t *abuf, uint8_t *bbufs, size_t b_bytes,
                      uint8_t *scratch, size_t scratch_per_thread) {
    const qd_gemm_args *g = p->g;
    const int64_t njr_all = (g->n + NR - 1) / NR;
    const int lines_a = (int)(p->a_chunk / 64), lines_b = (int)(p->b_chunk / 64);
#pragma omp parallel num_threads(nthreads)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int t = 0, nt = 1;
#endif
        uint8_t *mine = scratch + (size_t)t * scratch_per_thread;
        float *cblk = (float *)mine;                     /* MC·MR × NC */
        gslot *gs = (gslot *)(cblk + (size_t)MC * MR * NC); /* MC */
        uint8_t *tmp = (uint8_t *)(gs + MC);
        for (int i = 0; i < MC; i++) gs[i].m0 = -1;
        uint8_t *bc = bbufs + (size_t)t * b_bytes;
        const int64_t n_lo = njr_all * t / nt * NR, n_hi = imin(g->n, njr_all * (t + 1) / nt * NR);
        for (int64_t c0 = 0; c0 < g->m; c0 += chunk_rows) {
            const int64_t rows = imin(chunk_rows, g->m - c0), npan = (rows + MR - 1) / MR;
#pragma omp for schedule(static)
            for (int64_t pi = 0; pi < npan; pi++) pack_a(p, c0 + pi * MR, (int)imin(MR, rows - pi * MR), tmp, abuf, npan, pi);
            /* (implicit barrier: the chunk's activations are packed) */
            for (int64_t jc = n_lo; jc < n_hi; jc += NC) {
                const int64_t njr = (imin(NC, n_hi - jc) + NR - 1) / NR;
                for (int64_t jr = 0; jr < njr; jr++) pack_b(p, jc + jr * NR, tmp, bc + jr * p->nkb * p->b_chunk);
                for (int64_t ic = 0; ic < npan; ic += MC) {
                    const int64_t np = imin(MC, npan - ic);
                    for (int64_t kb = 0; kb < p->nkb; kb++) {
                        const uint8_t *ablk = abuf + (kb * npan + ic) * p->a_chunk;
                        for (int64_t jr = 0; jr < njr; jr++) {
                            const uint8_t *bp = bc + (jr * p->nkb + kb) * p->b_chunk;
                            /* what the next calls need: the next panel-chunk, and (in slices) the next micro-panel */
                            const uint8_t *bnext = jr + 1 < njr ? bp + p->nkb * p->b_chunk
                                                   : kb + 1 < p->nkb ? bc + (kb + 1) * p->b_chunk : NULL;
                            const int slice = (int)((lines_b + np - 1) / np);
                            for (int64_t ip = 0; ip < np; ip++) {
                                const int64_t m0 = c0 + (ic + ip) * MR;
                                const int mr = (int)imin(MR, c0 + rows - m0);
                                const uint8_t *anext = ip + 1 < np ? ablk + (ip + 1) * p->a_chunk
                                                       : jr + 1 < njr ? ablk
                                                       : kb + 1 < p->nkb ? ablk + npan * p->a_chunk : NULL;
                                const int first = (int)ip * slice, npb = bnext ? (int)imin(slice, lines_b - first) : 0;
                                float *cp = cblk + ip * MR * NC + jr * NR;
                                const int ncols = (int)imin(NR, n_hi - jc - jr * NR);
                                kepi e;
                                const bool last = kb == p->nkb - 1;
                                if (last) make_epi(p, m0, mr, jc + jr * NR, ncols, &e);
                                if (!tile_chunk(p, ablk + ip * p->a_chunk, bp, mr, m0, jc + jr * NR, kb, cp, NC, gs + ip, anext,
                                                anext ? lines_a : 0, npb > 0 ? bnext + 64 * first : NULL, npb > 0 ? npb : 0,
                                                last ? &e : NULL) &&
                                    last)
                                    epilogue(p, cp, NC, m0, mr, jc + jr * NR, ncols);
                            }
                        }
                    }
                }
            }
#pragma omp barrier
        }
    }
}

/* Small M: weight micro-panels split across threads, each packed into L1 once and used by every row. */
static void run_small(const plan *p, int nthreads, uint8_t *abuf, uint8_t *scratch, size_t scratch_per_thread) {
    const qd_gemm_args *g = p->g;
    const int64_t npan = (g->m + MR - 1) / MR, njr = (g->n + NR - 1) / NR;
#pragma omp parallel num_threads(nthreads)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int t = 0, nt = 1;
#endif
        uint8_t *mine = scratch + (size_t)t * scratch_per_thread;
        float *cblk = (float *)mine;                         /* npan·MR × NR */
        gslot *gs = (gslot *)(cblk + (size_t)npan * MR * NR); /* one */
        uint8_t *bp = (uint8_t *)(gs + 1);                   /* one micro-panel, all chunks */
        gs->m0 = -1;
        uint8_t *tmp = bp + p->nkb * p->b_chunk;     /* packing rows */
#pragma omp for schedule(static)
        for (int64_t pi = 0; pi < npan; pi++) pack_a(p, pi * MR, (int)imin(MR, g->m - pi * MR), tmp, abuf, npan, pi);
        const int64_t j0 = njr * t / nt, j1 = njr * (t + 1) / nt;
        for (int64_t jr = j0; jr < j1; jr++) {
            pack_b(p, jr * NR, tmp, bp);
            for (int64_t kb = 0; kb < p->nkb; kb++) {
                for (int64_t pi = 0; pi < npan; pi++) {
                    const int64_t m0 = pi * MR;
                    const int mr = (int)imin(MR, g->m - m0);
                    float *cp = cblk + pi * MR * NR;
                    const int ncols = (int)imin(NR, g->n - jr * NR);
                    kepi e;
                    const bool last = kb == p->nkb - 1;
                    if (last) make_epi(p, m0, mr, jr * NR, ncols, &e);
                    if (!tile_chunk(p, abuf + (kb * npan + pi) * p->a_chunk, bp + kb * p->b_chunk, mr, m0, jr * NR, kb, cp, NR, gs,
                                    NULL, 0, NULL, 0, last ? &e : NULL) &&
                        last)
                        epilogue(p, cp, NR, m0, mr, jr * NR, ncols);
                }
            }
        }
    }
}

/* One grow-only scratch area reused across calls: fresh multi-megabyte allocations each call would cost a
 * page fault (and the kernel's zeroing) per 4 KiB — several percent of a large product. A concurrent
 * caller finding it busy allocates its own. */
static struct {
    uint8_t *p;
    size_t size;
    int busy;
} scratch_cache;

static uint8_t *scratch_get(size_t bytes, bool *cached) {
    *cached = false;
    if (!__atomic_exchange_n(&scratch_cache.busy, 1, __ATOMIC_ACQUIRE)) {
        if (scratch_cache.size < bytes) {
            qd_cpu_free(scratch_cache.p);
            scratch_cache.p = qd_cpu_alloc(bytes);
            scratch_cache.size = scratch_cache.p ? bytes : 0;
        }
        if (scratch_cache.p) {
            *cached = true;
            return scratch_cache.p;
        }
        __atomic_store_n(&scratch_cache.busy, 0, __ATOMIC_RELEASE);
    }
    return qd_cpu_alloc(bytes);
}

static void scratch_put(uint8_t *p, bool cached) {
    if (cached) __atomic_store_n(&scratch_cache.busy, 0, __ATOMIC_RELEASE);
    else qd_cpu_free(p);
}

static size_t round64(size_t x) { return (x + 63) / 64 * 64; }

qd_status qd_gemm_run(const qd_gemm_args *g) {
    if (g->m <= 0 || g->n <= 0) return QD_OK;
    if (g->k <= 0 || (g->group_k && (g->group_k % 2 || g->group_n <= 0))) {
        return qd_fail(QD_EINVAL, "gemm: K = %lld, group %d×%d", (long long)g->k, g->group_n, g->group_k);
    }
    plan p = {.g = g, .fast = qd_gemm_fast(g->type)};
    p.elem = g->type == QD_GEMM_BF16 ? 2 : 4;
    p.per_unit = g->type == QD_GEMM_BF16 ? 2 : 1;
    p.units = KC / p.per_unit;
    p.nkb = (g->k + KC - 1) / KC;
    p.kp = p.nkb * KC;
    p.a_chunk = (int64_t)p.units * MR * 4;
    p.b_chunk = (int64_t)p.units * NR * 4;
    const int nthreads = qd_threads_for(g->m * g->n * g->k, QD_GRAIN_MACS);
    /* per thread: packing rows, 16 rows of kp elements */
    const size_t tmp_bytes = round64((size_t)(16 * p.kp * p.elem));
    bool cached;
    if (g->m <= SMALL_M) {
        const int64_t npan = (g->m + MR - 1) / MR;
        const size_t a_bytes = round64((size_t)(p.nkb * npan * p.a_chunk));
        const size_t per_thread = round64((size_t)npan * MR * NR * 4 + sizeof(gslot) + (size_t)(p.nkb * p.b_chunk)) + tmp_bytes;
        uint8_t *buf = scratch_get(a_bytes + per_thread * (size_t)nthreads, &cached);
        if (!buf) return qd_fail(QD_ENOMEM, "gemm: cannot allocate %lld×%lld scratch", (long long)g->m, (long long)g->k);
        run_small(&p, nthreads, buf, buf + a_bytes, per_thread);
        scratch_put(buf, cached);
        return QD_OK;
    }
    /* rows per pass: within the A budget, at least one MC block */
    int64_t chunk_rows = (int64_t)(A_BUDGET / (size_t)(p.nkb * p.a_chunk)) * MR;
    if (chunk_rows < (int64_t)MC * MR) chunk_rows = (int64_t)MC * MR;
    if (chunk_rows > g->m) chunk_rows = g->m;
    const size_t a_bytes = round64((size_t)(p.nkb * ((chunk_rows + MR - 1) / MR) * p.a_chunk));
    const size_t b_bytes = round64((size_t)(NC / NR * p.nkb * p.b_chunk));
    const size_t per_thread = round64((size_t)MC * MR * NC * 4 + MC * sizeof(gslot)) + tmp_bytes;
    uint8_t *buf = scratch_get(a_bytes + (b_bytes + per_thread) * (size_t)nthreads, &cached);
    if (!buf) {
        return qd_fail(QD_ENOMEM, "gemm: cannot allocate scratch for a %lld×%lld×%lld product", (long long)g->m,
                       (long long)g->n, (long long)g->k);
    }
    run_large(&p, nthreads, chunk_rows, buf, buf + a_bytes, b_bytes, buf + a_bytes + b_bytes * (size_t)nthreads, per_thread);
    scratch_put(buf, cached);
    return QD_OK;
}
