/* The CPU backend's internals: instruction-set detection, threading, and the op entry points, one
 * file each (linear*.c, attention.c, norm.c, rope.c, elementwise.c, conv.c, layout.c). Every op has
 * a generic path that runs anywhere, and faster paths chosen at run time from the detected ISA;
 * QDIT_CPU_ISA=generic (or avx2) forces a lower level, so the harness can check every path. Threads:
 * OpenMP, the runtime oneDNN uses too (one pool, no oversubscription); OMP_NUM_THREADS sets the count.
 * Every parallel region asks core/threads.h's qd_threads_for for its team: one thread for small work,
 * so the many small ops of a small model never wait at a barrier on a busy machine. */
#ifndef QD_BACKEND_CPU_H
#define QD_BACKEND_CPU_H

#include <stdbool.h>

#include "backend/backend.h"

typedef struct {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512dq;
    bool avx512_bf16, avx512_vnni, avx_vnni;
    bool amx_bf16, amx_int8;
    const char *level; /* "generic", "avx2", "avx512", "avx512_bf16_vnni", "amx" — the highest in use */
} qd_cpu_isa;

/* The ISA in use: detected with cpuid (and the OS's xsave state), then capped by QDIT_CPU_ISA. */
const qd_cpu_isa *qd_cpu_isa_get(void);
int qd_cpu_threads(void);

/* 64-byte aligned allocation for tensors and packed weights. */
void *qd_cpu_alloc(size_t bytes);
void qd_cpu_free(void *p);

/* element (as f32) i of an F32/BF16/F16 tensor, and the store back */
float qd_cpu_load(const qd_tensor *t, int64_t i);
void qd_cpu_store(qd_tensor *t, int64_t i, float v);
/* rows of an F32/BF16/F16 tensor to f32 and back (n elements from element offset) */
void qd_cpu_to_f32(const qd_tensor *t, int64_t offset, int64_t n, float *out);
void qd_cpu_from_f32(qd_tensor *t, int64_t offset, int64_t n, const float *in);

qd_status qd_cpu_prepare_linear(qd_backend *b, qd_linear *l);
qd_status qd_cpu_linear(qd_backend *b, qd_linear *l, const qd_tensor *x, qd_tensor *y);
qd_status qd_cpu_attention(qd_backend *b, const qd_attn_args *a, qd_tensor *out);
qd_status qd_cpu_rms_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, qd_tensor *y);
qd_status qd_cpu_layer_norm(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, float eps,
                            qd_tensor *y);
qd_status qd_cpu_group_norm(qd_backend *b, const qd_tensor *x, int groups, const qd_tensor *w, const qd_tensor *bias,
                            float eps, qd_tensor *y);
qd_status qd_cpu_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *cos, const qd_tensor *sin, qd_rope_mode mode,
                      qd_tensor *y);
qd_status qd_cpu_norm_modulate(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps,
                               const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y);
qd_status qd_cpu_rms_norm_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *cos,
                               const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y);
qd_status qd_cpu_rms_norm_rope_cols(qd_backend *b, const qd_tensor *x, int64_t col, const qd_tensor *w, float eps, const qd_tensor *cos,
                                    const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y);
qd_status qd_cpu_activation(qd_backend *b, qd_act_kind kind, const qd_tensor *x, qd_tensor *y);
qd_status qd_cpu_gated(qd_backend *b, qd_act_kind kind, bool gate_first, const qd_tensor *x, qd_tensor *y);
qd_status qd_cpu_modulate(qd_backend *b, const qd_tensor *x, const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y);
qd_status qd_cpu_gated_add(qd_backend *b, const qd_tensor *r, const qd_tensor *x, const qd_tensor *gate, qd_tensor *y);
qd_status qd_cpu_add(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y);
qd_status qd_cpu_mul(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y);
qd_status qd_cpu_softmax(qd_backend *b, const qd_tensor *x, qd_tensor *y);
qd_status qd_cpu_conv2d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                        qd_tensor *y);
qd_status qd_cpu_conv3d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                        qd_tensor *y);
qd_status qd_cpu_upsample_nearest(qd_backend *b, const qd_tensor *x, int factor, qd_tensor *y);
qd_status qd_cpu_permute(qd_backend *b, const qd_tensor *x, const int *perm, qd_tensor *y);
qd_status qd_cpu_concat(qd_backend *b, const qd_tensor *const *xs, int n, int dim, qd_tensor *y);
qd_status qd_cpu_slice(qd_backend *b, const qd_tensor *x, int dim, int64_t start, int64_t len, qd_tensor *y);
qd_status qd_cpu_embedding(qd_backend *b, const qd_tensor *table, const qd_tensor *ids, qd_tensor *y);

/* Create the CPU backend. */
qd_status qd_backend_cpu_create(qd_backend **out);

#endif
