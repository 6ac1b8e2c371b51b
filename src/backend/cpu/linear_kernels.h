/* The CPU linear kernels, one per scheme family, behind qd_cpu_linear (linear.c). Each takes the
 * activations as a 2-D view x [M, K] (F32 or BF16) and writes y [M, N] (F32 or BF16) = x·Wᵀ + b,
 * quantizing activations on the fly where the scheme is weight-and-activation quantized (linear.h's
 * qd_act_mode), and reads the weights in their stored (canonical, quantized) form — or in the form its
 * `prepare` made, still at the quantized size. Each file states its tolerance against the f32
 * reference (qd_linear_dequantize + f32 GEMM, activations unquantized) and why. */
#ifndef QD_BACKEND_CPU_LINEAR_KERNELS_H
#define QD_BACKEND_CPU_LINEAR_KERNELS_H

#include "backend/cpu/cpu.h"

typedef qd_status (*qd_cpu_linear_fn)(qd_linear *l, const qd_tensor *x, qd_tensor *y);

qd_status qd_cpu_linear_dense(qd_linear *l, const qd_tensor *x, qd_tensor *y);   /* linear_dense.c (oneDNN) */
qd_status qd_cpu_linear_fp8(qd_linear *l, const qd_tensor *x, qd_tensor *y);     /* linear_fp8.c: fp8, mxfp8 */
qd_status qd_cpu_linear_awq(qd_linear *l, const qd_tensor *x, qd_tensor *y);     /* linear_fp8.c: W4A16 */
qd_status qd_cpu_linear_int8(qd_linear *l, const qd_tensor *x, qd_tensor *y);    /* linear_int.c: int8, int4 */
qd_status qd_cpu_linear_fp4(qd_linear *l, const qd_tensor *x, qd_tensor *y);     /* linear_fp4.c: nvfp4, mxfp4 */
qd_status qd_cpu_linear_svdq(qd_linear *l, const qd_tensor *x, qd_tensor *y);    /* linear_svdq.c */

/* prepare_linear for the families with a prepared form (VNNI panels): made at load, replacing the
 * stored weight and scale. Dense, fp8, mxfp8 and AWQ kernels read the stored form itself. */
qd_status qd_cpu_prepare_int8(qd_linear *l);
qd_status qd_cpu_prepare_fp4(qd_linear *l);
qd_status qd_cpu_prepare_svdq(qd_linear *l);

#endif
