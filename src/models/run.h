/* One forward pass over backend ops with a sticky status: every step checks r->s and does nothing once
 * something failed, so model code reads as a straight line of ops and checks the status once at the end.
 * The helpers here are the steps the transformers share. */
#ifndef QD_MODELS_RUN_H
#define QD_MODELS_RUN_H

#include "models/model.h"

typedef struct {
    qd_backend *be;
    const qd_model_ctx *ctx;
    qd_dtype act; /* dtype of new activations */
    qd_status s;
} qd_run;

/* A new activation tensor, or an empty one once something failed. */
qd_tensor qd_run_tensor(qd_run *r, int rank, const int64_t *shape);
/* l applied to x's last dim (the context's observer, if any, sees x first). */
qd_tensor qd_run_linear(qd_run *r, qd_linear *l, const qd_tensor *x);
/* Show x, the input of l, to the context's observer (for a linear run without qd_run_linear). */
void qd_run_observe(qd_run *r, const qd_linear *l, const qd_tensor *x);
/* l on x with zero columns appended up to l's input width (SVDQuant pads K to a multiple of 128; the
 * padded columns have zero weights); the output as stored, padded N included. */
qd_tensor qd_run_linear_padded(qd_run *r, qd_linear *l, const qd_tensor *x);
/* The layer's n logical outputs on x, for layers stored wider than x and than n (SVDQuant pads K and N to
 * multiples of 128): x gets zero columns appended (padded columns have zero weights), y is cropped. */
qd_tensor qd_run_linear_n(qd_run *r, qd_linear *l, const qd_tensor *x, int64_t n);
/* ys[i] = qd_run_linear_n(r, ls[i], x, outs[i]) for n layers of one input: one backend call (linear_many: a device reads
   every weight in one pass) where each layer is x's width in and outs[i] out, else layer by layer. */
void qd_run_linear_many(qd_run *r, qd_linear *const *ls, int n, const qd_tensor *x, const int64_t *outs, qd_tensor *ys);
/* res = res + gate·([xs_0 | … | xs_{n-1}]·Wᵀ + b) in place (gate [B, N] or NULL): the backend's linear_fused, which
 * on a device reads the parts in place and applies gate and residual in the matmul's epilogue. Layers stored wider
 * than their logical input/output (SVDQuant padding) and observed runs (calibration) take the composed path:
 * concatenation, qd_run_linear_n, gated_add. */
void qd_run_linear_fused(qd_run *r, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate, qd_tensor *res);
/* Columns [start, start + len) of x's last dim. */
qd_tensor qd_run_slice_last(qd_run *r, const qd_tensor *x, int64_t start, int64_t len);
/* Chunk i of width d of a [B, k·d] tensor. */
qd_tensor qd_run_chunk(qd_run *r, const qd_tensor *x, int i, int64_t d);
/* The same chunk as a view into x when B is 1 (no copy, no launch: x must outlive it and its writes land in
 * x), else a copy. Free it with qd_tensor_free either way (a view is not freed). */
qd_tensor qd_run_chunk_view(qd_run *r, const qd_tensor *x, int i, int64_t d);
/* [a, b] along dim. */
qd_tensor qd_run_concat2(qd_run *r, const qd_tensor *a, const qd_tensor *b, int dim);
/* Host f32 values as an F32 backend tensor (RoPE tables, score biases). */
qd_tensor qd_run_upload_f32(qd_run *r, const float *host, int rank, const int64_t *shape);
/* Host int64 values (token ids, masks) as an I64 backend tensor. */
qd_tensor qd_run_upload_i64(qd_run *r, const int64_t *host, int rank, const int64_t *shape);
/* Rows of table [V, D] picked by ids [B, L] (I64) → [B, L, D] activations. */
qd_tensor qd_run_embed(qd_run *r, const qd_tensor *table, const qd_tensor *ids);
/* Normalisations over the last dim into a new activation tensor (w, bias may be NULL). */
qd_tensor qd_run_rms_norm(qd_run *r, const qd_tensor *x, const qd_tensor *w, float eps);
qd_tensor qd_run_layer_norm(qd_run *r, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, float eps);

/* norm_modulate's output made for the linears `ls` that read it: where the backend takes per-token FP8 input in every
 * one of them (an FP8 model on a device), quantized straight out of the norm (codes and row scales: no BF16 output,
 * no quantization pass per linear, the same bytes out of the linears); otherwise the plain output x. */
typedef struct {
    qd_tensor x;             /* the plain output (fp8 false) */
    qd_tensor codes, scales; /* F8_E4M3 [..., D] and F32 [rows] (fp8 true) */
    bool fp8;
} qd_run_input;
qd_run_input qd_run_norm_modulate_for(qd_run *r, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *scale,
                                      const qd_tensor *shift, qd_linear *const *ls, int n);
/* x += gate·rms_norm(o, w, eps) in place (a sandwich norm into the residual stream; gate NULL: a plain add), then,
 * with next_scale, the next modulated RMSNorm of x, RMSNorm(x, next_w)·(1 + next_scale), made for the linears ls as
 * qd_run_norm_modulate_for makes it: one pass over the rows where the backend has rms_norm_gated_add. */
qd_run_input qd_run_norm_add_for(qd_run *r, const qd_tensor *o, const qd_tensor *w, float eps, const qd_tensor *gate, qd_tensor *x,
                                 const qd_tensor *next_w, const qd_tensor *next_scale, qd_linear *const *ls, int n);
/* SwiGLU out of a joined projection's output h [..., W] (gate in columns [gate_col, gate_col + n), value in
 * [value_col, value_col + n)) made for the linear l that reads it: quantized per token where the backend takes
 * l's input so (swiglu_fp8), else the plain [..., n] product (the backend's swiglu, or slices, SiLU and mul). */
qd_run_input qd_run_swiglu_for(qd_run *r, const qd_tensor *h, int64_t gate_col, int64_t value_col, int64_t n, qd_linear *l);
/* l on such an input: a new [..., n] tensor (as qd_run_linear_n), or into y (a view of a bigger tensor, say) */
qd_tensor qd_run_linear_in(qd_run *r, qd_linear *l, const qd_run_input *in, int64_t n);
void qd_run_linear_in_into(qd_run *r, qd_linear *l, const qd_run_input *in, qd_tensor *y);
void qd_run_input_free(qd_run_input *in);

/* An FP8 pair whose consumer has a static input scale (backend.h: fp8_codes_between; ModelOpt FP8's MLPs): does the
 * backend write producer's output, on the FP8 input `in`, straight as consumer's codes? qd_run_linear_codes: a new
 * F8_E4M3 [..., width] tensor (in's leading shape) with producer's output in columns [col, col + N) as consumer's
 * codes (the other columns for qd_run_linear_fused_codes to fill). qd_run_linear_fused_codes: res += gate·l(codes),
 * the BF16 parts xs[j] first quantized into columns cols[j] of codes. */
bool qd_run_codes_between(qd_run *r, const qd_run_input *in, qd_linear *producer, qd_linear *consumer);
qd_tensor qd_run_linear_codes(qd_run *r, qd_linear *producer, const qd_run_input *in, qd_linear *consumer, int64_t width, int64_t col);
void qd_run_linear_fused_codes(qd_run *r, qd_linear *l, qd_tensor *codes, const qd_tensor *const *xs, const int64_t *cols, int n, const qd_tensor *gate,
                               qd_tensor *res);

#endif
