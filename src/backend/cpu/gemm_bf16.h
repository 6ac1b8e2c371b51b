/* The CPU backend's own GEMM engine for linears whose operands must be converted on the way in (internal
 * to src/backend/cpu): y[m, n] = Σ_k A[m, k]·B[n, k], then an epilogue (scales, bias, output dtype).
 *
 * Why our own: FP8 / MXFP8 / AWQ weights stay in their stored form (DESIGN.md "Decisions"), so the
 * GEMM must read them through a converter. The engine fuses that conversion into the packing of its
 * operand panels — the caller supplies one function that decodes a run of one weight row (e4m3 → bf16,
 * uint4·scale + zero → bf16, …) and one that writes one activation row (quantized to E4M3 and stored as
 * the exact bf16 of that value, or plainly converted) — and runs a register-blocked microkernel on the
 * packed panels:
 *   QD_GEMM_BF16: vdpbf16ps (AVX512-BF16), f32 accumulation. Every product of two bf16 values is exact
 *                 in f32, so on E4M3-valued operands the result is the exact sum up to f32 additions.
 *   QD_GEMM_F32:  vfmadd231ps (AVX-512F), for the f32 reference-precision paths.
 * A plain C path (same layouts, same arithmetic: exact products, f32 sums) runs where the ISA is
 * missing or capped by QDIT_CPU_ISA.
 *
 * Blocking (Goto-style, details in gemm_bf16.c): per thread a range of NC-column weight blocks (all of K,
 * in KC-deep chunks of NR-wide micro-panels), a shared packed chunk of activation rows, an MC × NC block
 * of f32 partial sums in L2 while each KC × NR weight micro-panel stays in L1. Small M splits the
 * micro-panels across threads instead.
 *
 * Block-scaled operands (FP8 128×128 weights with 1×128 activation groups, quant-sglang.md §4.3): with
 * group_k > 0 the partial sum of every K-group is multiplied by a_gscale(m, g)·b_gscale(n, g) before it
 * is added, exactly y = Σ_g (Σ_{k∈g} a·b)·s_a·s_b. */
#ifndef QD_BACKEND_CPU_GEMM_BF16_H
#define QD_BACKEND_CPU_GEMM_BF16_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "qdit.h"


typedef enum { QD_GEMM_BF16, QD_GEMM_F32 } qd_gemm_type;

typedef struct qd_gemm_args {
    qd_gemm_type type;
    int64_t m, n, k;
    const void *ctx; /* passed to the two callbacks */

    /* Write activation row `row` (0 ≤ row < m), its K elements, contiguously to dst as bf16 (uint16_t) or
       f32. May record per-row data (scales) in the caller's own arrays: it is called for every row before
       any product that uses the row. Called concurrently for different rows. */
    void (*a_row)(const void *ctx, int64_t row, void *dst);
    /* Write elements [k0, k0 + kc) of weight row n (< n) contiguously to dst as bf16 or f32
       (k0 + kc ≤ K). Called concurrently. */
    void (*b_row)(const void *ctx, int64_t n, int64_t k0, int64_t kc, void *dst);

    /* Block-scaled partial sums (group_k 0: none). group_k must be even. The partial sum over K-group g
       is multiplied by a_gscale[g * a_gstride + m] · b_gscale[(n / group_n) * b_gstride + g] (activation
       scales group-major, so that the rows of a tile are contiguous). */
    int group_k, group_n;
    const float *a_gscale, *b_gscale;
    int64_t a_gstride, b_gstride;

    /* Epilogue: y[m, n] = acc · alpha · row_scale[m] · col_scale[n] + bias[n]; NULL pointers are 1 / 0.
       row_scale may be filled by a_row. */
    float alpha;
    const float *row_scale, *col_scale, *bias;
    void *y;          /* [m, ldy] */
    qd_dtype y_dtype; /* F32 or BF16 */
    int64_t ldy;
} qd_gemm_args;

/* Run it (OpenMP threads, the fastest kernel the ISA allows). Fails only on allocation. */
qd_status qd_gemm_run(const qd_gemm_args *g);

/* Whether the engine's AVX-512 kernels run for `type` (ISA detected and not capped by QDIT_CPU_ISA). */
bool qd_gemm_fast(qd_gemm_type type);

/* The AVX-512 target every ISA-specific function of the float linears is compiled for. */
#define QD_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

#endif
