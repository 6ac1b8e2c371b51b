/* Internals shared by the CPU's integer-path linears (linear_int.c, linear_fp4.c, linear_svdq.c):
 * the on-the-fly activation quantizers (act_quant_int.c) and the integer GEMM core (linear_int.c).
 *
 * Every weight-and-activation quantized family below reduces to one computation: small integer codes
 * on both sides, an EXACT int32 dot product per block of K, and one float scale per (row, block) and
 * per (column, block):
 *
 *     y[m][n] = epilogue( Σ_b  isum[m][n][b] · sa[m][b] · sw[n][b] )     isum = Σ_{k∈b} qa·qw (int32)
 *
 *   family                        qa (activation codes)        qw (weight codes)     block
 *   int8  W8A8 static / dynamic   int8 (static: with offset)   int8                  whole K
 *   int4  W4A4 dynamic            int4 in [-8, 7]              int4 (one per byte)   whole K or group
 *   nvfp4                         2·E2M1 in [-12, 12]          2·E2M1                16 (E4M3 scales)
 *   mxfp4                         2·E2M1                       2·E2M1                32 (E8M0 scales)
 *   svdq int4                     int4 / uint4 (after GELU)    int4                  64
 *   svdq nvfp4                    2·E2M1                       2·E2M1                16
 * (2·E2M1 is an integer: the E2M1 grid {0, .5, 1, 1.5, 2, 3, 4, 6} doubled; the factor 1/4 goes into the
 * per-column epilogue scale.)
 *
 * Data layouts, chosen for the AVX-512 VNNI microkernel (vpdpbusd: u8 × s8 → s32, 4 bytes along K per
 * 32-bit lane):
 *   A (activations): codes + 128 as u8 (vpdpbusd wants one unsigned operand; the shift is undone
 *     exactly by starting each int32 block sum at −128·Σ_{k∈b} qw), row-major [mp][kp] (a microkernel
 *     broadcasts 4 bytes from each of its MR rows); scales tile-major [mp/MR][kb][MR].
 *   B (weights): VNNI panels of NP = 32 columns, [np/NP][kp/4][NP][4] int8, made once per layer by a
 *     prepare step (l->prepared) at the stored size; 4-bit weights stay 4-bit in the prepared form
 *     (one 32-byte group per 64 codes, expanded per call with a vpshufb table into an L1-sized panel).
 * Rows are padded to MR with zero codes and zero scales; columns to NP with zero weights; K to a
 * multiple of 4 (and of the block) with zero codes on both sides. */
#ifndef QD_BACKEND_CPU_ACT_QUANT_INT_H
#define QD_BACKEND_CPU_ACT_QUANT_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/cpu/cpu.h"

#define QD_IQ_MR 6    /* rows per microkernel tile */
#define QD_IQ_NP 32   /* columns per weight panel (two zmm of 16 int32 lanes) */
#define QD_IQ_CODE_OFFSET 128

/* The ISA attribute of the fast paths; only called after qd_iq_use_vnni() said yes. */
#define QD_IQ_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

/* AVX-512 with VNNI present and not capped by QDIT_CPU_ISA, and the generic path not forced. */
bool qd_iq_use_vnni(void);
/* Test hook: force the generic C path of every integer-path kernel (the ISA itself is read once per
 * process, so a test cannot switch it with QDIT_CPU_ISA). */
void qd_iq_force_generic(bool on);

/* Per-call scratch from a small process-wide cache of blocks (64-byte aligned, contents undefined).
 * Why: glibc hands blocks above its mmap threshold back to the OS on free, so a fresh 50 MB buffer of
 * activation codes would cost ~12k page faults — several ms — on every call. The cache keeps at most
 * QD_IQ_SCRATCH_SLOTS blocks (the largest returned); any thread may get and put, lock-free. */
#define QD_IQ_SCRATCH_SLOTS 16
void *qd_iq_scratch_get(size_t bytes);
void qd_iq_scratch_put(void *p);
/* Free every cached block. */
void qd_iq_scratch_trim(void);

/* ---------------------------------------------------------------- activations ---------------- */

typedef enum {
    QD_IQ_ACT_INT8_STATIC, /* q = clamp(rne(x / input_scale + input_offset), −128, 127); no scale kept */
    QD_IQ_ACT_INT8_TOKEN,  /* s = rowamax/127, q = rne(x / s) (msModelSlim W8A8_DYNAMIC, online int8) */
    QD_IQ_ACT_INT4_TOKEN,  /* s = rowamax/7,   q = clamp(rne(x / s), −8, 7) (W4A4_DYNAMIC) */
    QD_IQ_ACT_NVFP4,       /* 16-blocks, E4M3 block scale under a global scale (formats.md §3.5) */
    QD_IQ_ACT_MXFP4,       /* 32-blocks, E8M0 by the OCP floor rule (formats.md §4.3) */
    QD_IQ_ACT_SVDQ_INT4,   /* 64-groups, amax/7 (or amax/15 unsigned), scale stored in the model dtype */
    QD_IQ_ACT_SVDQ_NVFP4,  /* 16-blocks, scale min(amax/6, 448) stored as E4M3, codes from 1/unrounded */
} qd_iq_act_kind;

typedef struct {
    qd_iq_act_kind kind;
    int64_t k;                 /* logical K of x */
    /* pre-processing of each row before quantization (at most one of them) */
    const float *mul;          /* [k]: x·mul (NVFP4 pre_quant_scale, MX mul_scale) */
    const float *div;          /* [k]: x/div (SVDQuant smooth; 0 = padded column → 0) */
    bool round_t_bf16, round_t_f16; /* SVDQuant: xs and the stored scales rounded to the model dtype */
    float shift;               /* SVDQuant unsigned: added before smoothing (nunchaku's SHIFT_GELU) */
    bool act_unsigned;         /* SVDQuant int4 after GELU: u4 codes, scale amax/15 */
    float input_scale, input_offset; /* INT8_STATIC */
    float inv_gs;              /* NVFP4: the global scale's inverse (input_scale, or amax/2688 per call) */
    /* SVDQuant low-rank down on the raw rows: lora_act[m][r] = Σ_k x[m][k]·down_t[k][r] (f32) */
    int rank;
    const float *down_t;       /* [kp][rank] f32 */
    bool want_sums;            /* keep Σ codes per (row, block) (zero-point corrections) */
    int sum_block;             /* block of those sums (0: whole row) */
} qd_iq_act_spec;

typedef struct {
    int64_t m, mp, kp;         /* rows, rows padded to MR, K padded to the block (and to 4) */
    int block;                 /* elements per activation scale (kp for one scale per row) */
    int64_t kb;                /* kp / block */
    uint8_t *q;                /* codes + 128, [mp][kp] */
    float *scale;              /* [mp/MR][kb][MR]: the dequantization multiplier of each block's codes */
    float *row_scale;          /* [mp] (per-row kinds: equal to scale) */
    int32_t *sums;             /* [mp][kp/sum_block] Σ codes (when asked) */
    int64_t sum_groups;
    float *lora_act;           /* [mp][rank] (SVDQuant) */
    int rank;
} qd_iq_act;

/* Quantizes x [M, K] (F32 or BF16) into `a` (buffers allocated here; qd_iq_act_free). Parallel over
 * row tiles. */
qd_status qd_iq_quantize(const qd_tensor *x, const qd_iq_act_spec *spec, qd_iq_act *a);
void qd_iq_act_free(qd_iq_act *a);
/* max |x·mul| over the whole tensor (mul [K] or NULL): NVFP4's per-call global scale. */
float qd_iq_tensor_amax(const qd_tensor *x, const float *mul);
/* The block size an activation kind quantizes with (0: whole row). */
int qd_iq_act_block(qd_iq_act_kind kind);

/* Scalar rounding rules shared by the generic paths (and spelled out once): */
float qd_iq_e4m3_round(float v);   /* the value of e4m3_satfinite_RNE(v), v ≥ 0 */
int qd_iq_e2m1x2(float v);         /* 2·e2m1_RNE_satfinite(v), an integer in [−12, 12] */

/* ---------------------------------------------------------------- weights -------------------- */

typedef enum { QD_IQ_W_INT8, QD_IQ_W_E2M1, QD_IQ_W_INT4 } qd_iq_wcodes;
typedef enum { QD_IQ_WS_NONE, QD_IQ_WS_F32, QD_IQ_WS_E4M3, QD_IQ_WS_E8M0, QD_IQ_WS_BF16, QD_IQ_WS_F16 } qd_iq_wsfmt;

/* A layer's weights in the kernel's panel order, at their quantized size. */
typedef struct {
    qd_iq_wcodes codes;
    int64_t n, k, np, kp;
    int block;                 /* weight scale block along K; 0 = one scale per column (whole K) */
    int64_t kb;                /* kp / block (1 when block == 0) */
    void *w;                   /* INT8: int8 [np/NP][kp/4][NP][4]; 4-bit: [np/NP][kp/4][2][32] bytes,
                                  byte t of a 32-byte group holds code t (low nibble) and code t+32
                                  (high nibble) of the 64 codes of one zmm in VNNI order */
    int32_t *colsum;           /* [np] Σ_k qw (INT8 whole-K only: undoes the +128 of A) */
    qd_iq_wsfmt sfmt;
    void *ws;                  /* block scales [np/NP][kb][NP] in sfmt (block > 0) */
    float *dual;               /* MX dual scale [np/NP][kp/512][NP] (or NULL) */
} qd_iq_weights;

/* Build from canonical row-major forms (linear.h): codes int8 [n][k] (one per byte) or 4-bit lo-first
 * [n][k/2]; scales row-major [n][kb] of the given format; dual [n][k/512] f32 or NULL. */
qd_status qd_iq_weights_make(qd_iq_wcodes codes, int64_t n, int64_t k, const void *w, int block, qd_iq_wsfmt sfmt,
                             const void *scales, const float *dual, qd_iq_weights *out);
void qd_iq_weights_free(qd_iq_weights *w);

/* ---------------------------------------------------------------- the GEMM ------------------- */

/* y[m][n] = (C[m][n] · col_scale[n] · row_scale[m]) + bias[n] + Σ_r lr_left[m][r]·lr_right[r][n], where
 * C = Σ_b isum·sa·sw (block kernels; sa omitted when `row_scale_only`) or the exact int32 dot product
 * plus col_ibias[n] (whole-K kernels). Pointers may be NULL (factor 1 / term 0). */
typedef struct {
    const qd_iq_act *a;
    const qd_iq_weights *w;
    bool row_scale_only;       /* block kernel: one activation scale per row, applied in the epilogue */
    const float *col_scale;    /* [np] */
    const float *row_scale;    /* [mp] */
    const int32_t *col_ibias;  /* [np] */
    const float *bias;         /* [np] */
    int lr_rank;
    const float *lr_left;      /* [mp][lr_rank] */
    const float *lr_right;     /* [lr_rank][np] */
    qd_tensor *y;              /* [M, N] F32 or BF16 */
} qd_iq_gemm_args;

qd_status qd_iq_gemm(const qd_iq_gemm_args *g);

/* ---------------------------------------------------------------- prepared forms ------------- */

/* What a kernel family keeps in l->prepared: the panel-order weights plus small per-column vectors
 * (f32, length np), tagged so that a form made by someone else is never misread. */
typedef struct {
    const void *tag;
    qd_iq_weights w;
    float *col_scale, *bias, *aux, *smooth; /* [np], [np], family-specific, [kp] */
    int32_t *col_ibias;                     /* [np] */
} qd_iq_prepared;

extern const char qd_iq_prepared_tag[];
void qd_iq_prepared_free(void *p);
/* l->prepared when it is ours, else NULL. */
qd_iq_prepared *qd_iq_prepared_of(const qd_linear *l);
/* Our prepared form of l, made with `make` on first use and attached to l. When l already holds a form
 * made by someone else, a temporary one is made instead (*temporary: the caller frees it after use). */
qd_status qd_iq_prepare(qd_linear *l, qd_status (*make)(const qd_linear *l, qd_iq_prepared *p), qd_iq_prepared **out,
                        bool *temporary);

/* prepare_linear's part: make our form now and, when it is attached to l, drop the stored weight and
 * scale it replaces (qd_linear_release_stored). */
qd_status qd_iq_prepare_replacing(qd_linear *l, qd_status (*make)(const qd_linear *l, qd_iq_prepared *p));

/* Small helpers: a vector view as f32 [n] padded with `pad` to np (NULL view → NULL result) */
float *qd_iq_vector_f32(const qd_view *v, int64_t n, int64_t np, float pad);

#endif
