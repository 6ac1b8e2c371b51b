/* qd_backend — what a compute backend provides; models call only these (DESIGN.md "Core abstractions",
 * in the spirit of ggml's backend interface). The CPU backend (src/backend/cpu) is the reference and
 * the fallback; the CUDA backend must agree with it within each op's tolerance.
 *
 * Tensors are contiguous, row-major, rank ≤ 5, F32 / BF16 / F16 (and I32/I64 for ids), owned by one
 * backend. Activations flow token-major: a linear's input is [..., K], attention takes q/k/v as
 * [B, L, H, D] (what the projections produce) and returns [B, L, H, D]. Every op accepts F32 and BF16
 * activations; BF16 ops compute in f32 and round once on output, as PyTorch's bf16 kernels do.
 * Output tensors are allocated by the caller (shape and dtype set); ops may run in place where noted. */
#ifndef QD_BACKEND_H
#define QD_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "qdit.h"
#include "quant/linear.h"

#define QD_MAX_RANK 5

typedef struct qd_backend qd_backend;

typedef struct {
    qd_dtype dtype;
    int rank;
    int64_t shape[QD_MAX_RANK];
    void *data;
    qd_backend *backend; /* the owner of `data` (NULL: caller-owned host memory) */
} qd_tensor;

typedef enum { QD_ACT_GELU_TANH, QD_ACT_GELU_ERF, QD_ACT_SILU, QD_ACT_QUICK_GELU, QD_ACT_RELU, QD_ACT_TANH } qd_act_kind;
typedef enum { QD_ROPE_INTERLEAVED, QD_ROPE_HALF } qd_rope_mode;
/* the normalisation of norm_modulate: LayerNorm without affine, or RMSNorm (with an optional weight) */
typedef enum { QD_NORM_LAYER, QD_NORM_RMS } qd_norm_kind;

/* The activation a linear applies to its output (quant/linear.h), as the activation op's kind; false for none. */
static inline bool qd_linear_out_kind(const qd_linear *l, qd_act_kind *kind) {
    switch (l->out_act) {
    case QD_OUT_ACT_GELU_TANH: *kind = QD_ACT_GELU_TANH; return true;
    case QD_OUT_ACT_SILU: *kind = QD_ACT_SILU; return true;
    case QD_OUT_ACT_NONE: break;
    }
    return false;
}

typedef struct {
    const qd_tensor *q;    /* [B, Lq, H, D] */
    const qd_tensor *k;    /* [B, Lk, Hkv, D]; H % Hkv == 0 (grouped-query attention) */
    const qd_tensor *v;    /* [B, Lk, Hkv, Dv] */
    const qd_tensor *mask; /* optional key mask [B, Lk], nonzero = attend */
    const qd_tensor *bias; /* optional additive score bias [H, Lq, Lk] (T5 relative positions), F32 */
    bool causal;           /* key j visible to query i only when j ≤ i + (Lk − Lq) */
    float scale;           /* 0: 1/sqrt(D) */
    int64_t v_row;         /* elements from one token's v to the next: 0 (or Hkv·Dv) packed; wider, v is read in place
                              as columns of a larger row-major output (FLUX's joined [q; k; v] projection, v->data at its
                              first v column), which saves the copy that would slice it out */
} qd_attn_args;

typedef struct {
    int64_t stride[3], pad[3]; /* per spatial axis (2-D convs use the last two) */
    bool causal_time;          /* 3-D: pad time on the left only (Wan's causal conv) */
} qd_conv_args;

/* What memory_info reports, in bytes. */
typedef struct qd_memory_info {
    uint64_t device_free, device_total; /* the device as a whole (cudaMemGetInfo) */
    int offload_groups;                 /* weight groups registered (weights_group) */
    uint64_t offload_host_bytes;        /* their bytes in pinned host memory */
    uint64_t offload_slot_bytes;        /* the two streaming slots: twice the largest group (allocated at the
                                           first fetch) */
    uint64_t offload_device_bytes;      /* what offload holds on the device now: slots and the whole-component
                                           buffer */
} qd_memory_info;

typedef struct qd_backend_ops {
    const char *name;

    /* memory */
    qd_status (*alloc)(qd_backend *b, qd_tensor *t); /* t->dtype, rank, shape set; fills data */
    void (*release)(qd_backend *b, qd_tensor *t);
    qd_status (*upload)(qd_backend *b, qd_tensor *dst, const void *host); /* host bytes of dst's size */
    qd_status (*download)(qd_backend *b, const qd_tensor *src, void *host);
    qd_status (*copy)(qd_backend *b, const qd_tensor *src, qd_tensor *dst); /* also converts dtype */

    /* Put a bound layer's weights in the form this backend's kernels read (repacked, still at their
       quantized size; or uploaded). Optional: linear() prepares on first use. */
    qd_status (*prepare_linear)(qd_backend *b, qd_linear *l);
    /* y[..., N] = x[..., K]·Wᵀ + b, dispatching on the layer's scheme (activations quantized on the fly
       where the scheme says so), then the layer's output activation (l->out_act) if it has one: the CPU
       backend runs the activation op on y as stored (bit for bit a separate activation call), the CUDA
       backend fuses GELU-tanh into cuBLASLt's epilogue where it can (one rounding instead of two) */
    qd_status (*linear)(qd_backend *b, qd_linear *l, const qd_tensor *x, qd_tensor *y);

    qd_status (*attention)(qd_backend *b, const qd_attn_args *a, qd_tensor *out);

    /* normalisation over the last dim (weights/bias may be NULL); group_norm over [N, C, ...] */
    qd_status (*rms_norm)(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, qd_tensor *y);
    qd_status (*layer_norm)(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, float eps,
                            qd_tensor *y);
    qd_status (*group_norm)(qd_backend *b, const qd_tensor *x, int groups, const qd_tensor *w, const qd_tensor *bias,
                            float eps, qd_tensor *y);

    /* x [B, L, H, D] rotated by cos/sin [L, D/2] (F32); in place allowed */
    qd_status (*rope)(qd_backend *b, const qd_tensor *x, const qd_tensor *cos, const qd_tensor *sin, qd_rope_mode mode,
                      qd_tensor *y);

    /* Fused ops of the DiT blocks: one pass over memory where the models ran two, with the same result as the
       two ops in y's dtype (the intermediate value is rounded to y's dtype, as the first op's output was).
       norm_modulate: y = norm(x)·(1 + scale) + shift over the last dim; x [B, L, D] (rank ≥ 2, B = dim 0),
       scale/shift [B, D] (or [B, 1, D]) broadcast over L as in modulate, shift may be NULL; norm LayerNorm
       without affine (w NULL) or RMSNorm with an optional weight w [D]. In place allowed. */
    qd_status (*norm_modulate)(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps,
                               const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y);
    /* Optional (NULL: not offered), FP8 activations straight out of norm_modulate. takes_fp8_tokens: whether
       linear_fp8_tokens runs layer l (per-token dynamic FP8 layers prepared here, and static ones: *static_scale is
       then the layer's input scale, else 0). norm_modulate_fp8: norm_modulate of BF16 x with its output quantized as
       such a layer quantizes its input — per token (fixed_scale 0), or with the static scale fixed_scale — the BF16
       output's codes [..., D] (F8_E4M3) and row scales [rows] (F32; each fixed_scale when static), so
       linear_fp8_tokens on them gives linear's bytes on the BF16 output — one write of a byte per value instead of a
       BF16 write and two reads. */
    bool (*takes_fp8_tokens)(qd_backend *b, const qd_linear *l, float *static_scale);
    qd_status (*norm_modulate_fp8)(qd_backend *b, qd_norm_kind kind, const qd_tensor *x, const qd_tensor *w, float eps,
                                   const qd_tensor *scale, const qd_tensor *shift, float fixed_scale, qd_tensor *codes, qd_tensor *row_scale);
    qd_status (*linear_fp8_tokens)(qd_backend *b, qd_linear *l, const qd_tensor *codes, const qd_tensor *row_scale, qd_tensor *y);
    /* Optional (NULL: not offered), a matmul whose output is the next layer's FP8 input, for a pair whose consumer has
       a static input scale (ModelOpt FP8, static offline fp8): the producer's output never exists in BF16.
       fp8_codes_between: whether the two ops below run this pair — producer a layer that linear_fp8_tokens runs
       (its output activation none or GELU-tanh), consumer a static FP8 layer prepared here. linear_fp8_codes: the
       producer on FP8 tokens (codes, row_scale as linear_fp8_tokens takes them) with its bias and activation, each
       output value v written as the consumer's code e4m3(v / input_scale) (RNE, saturating) into columns [col, col
       + N) of out (F8_E4M3 [..., W], W ≥ col + N, the rows the tokens'). It differs from linear then the consumer's
       quantization only where v's BF16 rounding would have moved a code (one E4M3 step, rare). linear_fused_codes:
       linear_fused (gate, r, y as there) of the consumer on codes [..., K] (F8_E4M3) made with its input scale, after
       quantizing the BF16 parts xs[j] into columns [cols[j], cols[j] + width) of codes with that scale (n ≥ 0 parts;
       codes is written). */
    bool (*fp8_codes_between)(qd_backend *b, const qd_linear *producer, const qd_linear *consumer);
    qd_status (*linear_fp8_codes)(qd_backend *b, qd_linear *l, const qd_tensor *codes, const qd_tensor *row_scale, const qd_linear *consumer,
                                  qd_tensor *out, int64_t col);
    qd_status (*linear_fused_codes)(qd_backend *b, qd_linear *l, qd_tensor *codes, const qd_tensor *const *xs, const int64_t *cols, int n,
                                    const qd_tensor *gate, const qd_tensor *r, qd_tensor *y);
    /* Optional (NULL: the model runs rms_norm, gated_add and norm_modulate): a sandwich norm into the residual
       stream, x += gate·rms_norm(o, w, eps) in place (x, o [B, L, D]; the norm rounded to x's dtype as rms_norm
       stores it; gate [B, D] as in gated_add, or NULL), and, with next_scale, the next norm of the updated x,
       norm_modulate(RMS, x, next_w, eps, next_scale, NULL), into next_y or — BF16 x, codes non-NULL — quantized as
       norm_modulate_fp8 (fixed_scale, codes, row_scale). The same values as those ops, in one pass over the rows. */
    qd_status (*rms_norm_gated_add)(qd_backend *b, const qd_tensor *o, const qd_tensor *w, float eps, const qd_tensor *gate, qd_tensor *x,
                                    const qd_tensor *next_w, const qd_tensor *next_scale, qd_tensor *next_y, float fixed_scale, qd_tensor *codes,
                                    qd_tensor *row_scale);
    /* rms_norm_rope: y = rope(rms_norm(x, w, eps)) per head: x [B, L, H, D], w [D] or NULL, cos/sin [L, D/2]
       F32 as in rope (q and k of the attention, after their per-head norm). In place allowed. */
    qd_status (*rms_norm_rope)(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *cos,
                               const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y);
    /* rms_norm_rope_cols: the same on a column range of a wider input: x [B, L, W] holds the heads in columns
       [col, col + H·D) of each row (a fused [q; k; v] projection's output), y [B, L, H, D] (not x). */
    qd_status (*rms_norm_rope_cols)(qd_backend *b, const qd_tensor *x, int64_t col, const qd_tensor *w, float eps,
                                    const qd_tensor *cos, const qd_tensor *sin, qd_rope_mode mode, qd_tensor *y);

    /* element-wise; in place allowed */
    qd_status (*activation)(qd_backend *b, qd_act_kind kind, const qd_tensor *x, qd_tensor *y);
    /* x [..., 2N] → y [..., N] = x[..., value half] · act(x[..., gate half]); gate_first picks the half */
    qd_status (*gated)(qd_backend *b, qd_act_kind kind, bool gate_first, const qd_tensor *x, qd_tensor *y);
    /* Optional (NULL: the model slices the halves and runs activation and mul): SwiGLU out of a joined projection,
       rounded as that composition rounds it (the SiLU to y's dtype, then the product): x [..., W] holds the gate
       in columns [gate_col, gate_col + N) and the value in [value_col, value_col + N) of each row, y [..., N]. */
    qd_status (*swiglu)(qd_backend *b, const qd_tensor *x, int64_t gate_col, int64_t value_col, qd_tensor *y);
    /* Optional (NULL: not offered): swiglu of BF16 x with its output quantized for a layer that linear_fp8_tokens
       runs, as norm_modulate_fp8 quantizes (fixed_scale; codes [..., N] F8_E4M3, row scales [rows] F32): the BF16
       output's codes, never written in BF16. */
    qd_status (*swiglu_fp8)(qd_backend *b, const qd_tensor *x, int64_t gate_col, int64_t value_col, float fixed_scale, qd_tensor *codes,
                            qd_tensor *row_scale);
    /* y = x·(1 + scale) + shift; x [B, L, D], scale/shift [B, D] (shift may be NULL) */
    qd_status (*modulate)(qd_backend *b, const qd_tensor *x, const qd_tensor *scale, const qd_tensor *shift, qd_tensor *y);
    /* y = r + gate·x; gate [B, D] broadcast over L (NULL: plain add); y may be r */
    qd_status (*gated_add)(qd_backend *b, const qd_tensor *r, const qd_tensor *x, const qd_tensor *gate, qd_tensor *y);
    /* Optional (NULL: qd_linear_fused composes it from concat, linear and gated_add):
       y = r + gate·([x_0 | … | x_{n-1}]·Wᵀ + b) — the layer's input is the column concatenation of xs (1 ≤ n ≤
       QD_FUSED_INPUTS, same leading shape, last dims summing to K), gate [B, N] broadcast over the tokens as in
       gated_add (NULL: 1; only with r), r y-shaped (NULL: 0; y may be r). The layer has no output activation. A device backend
       reads the parts where they are (no concatenated copy; FP8: one activation quantization over them) and
       applies the gate and the residual in the matmul's epilogue; the result differs from the composition by
       roundings of intermediates only (y's dtype, once instead of twice). */
    qd_status (*linear_fused)(qd_backend *b, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate,
                              const qd_tensor *r, qd_tensor *y);
    /* Optional (NULL: qd_linear_many runs linear n times): ys[i] = linear(ls[i], x) for 1 ≤ n ≤ QD_LINEAR_MANY layers of
       one input x [..., K] (FLUX.1's modulation linears of every block, which read only silu(temb)), each ys[i]
       [..., out_features]. The same results as the n linear calls, bit for bit: a device backend reads every weight in one
       kernel where the layers allow it (few rows, the same scheme), x quantized once where they all quantize it alike. */
    qd_status (*linear_many)(qd_backend *b, qd_linear *const *ls, int n, const qd_tensor *x, qd_tensor *const *ys);
    /* y = a ∘ c with c broadcast over a's leading dims (c's shape a suffix of a's) */
    qd_status (*add)(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y);
    qd_status (*mul)(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y);
    qd_status (*softmax)(qd_backend *b, const qd_tensor *x, qd_tensor *y); /* over the last dim */

    /* convolutions, NC(T)HW; w [O, C, (kt,) kh, kw]; bias [O] or NULL */
    qd_status (*conv2d)(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias,
                        const qd_conv_args *c, qd_tensor *y);
    qd_status (*conv3d)(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias,
                        const qd_conv_args *c, qd_tensor *y);
    qd_status (*upsample_nearest)(qd_backend *b, const qd_tensor *x, int factor, qd_tensor *y); /* last 2 dims */

    /* layout: y = x with dims permuted (perm[i] = source dim of y's dim i); concat along `dim` */
    qd_status (*permute)(qd_backend *b, const qd_tensor *x, const int *perm, qd_tensor *y);
    qd_status (*concat)(qd_backend *b, const qd_tensor *const *xs, int n, int dim, qd_tensor *y);
    /* y = x[..., start : start + len, ...] along `dim` (a contiguous copy) */
    qd_status (*slice)(qd_backend *b, const qd_tensor *x, int dim, int64_t start, int64_t len, qd_tensor *y);
    /* rows of table [V, D] picked by ids [...] (I32/I64) → y [..., D] */
    qd_status (*embedding)(qd_backend *b, const qd_tensor *table, const qd_tensor *ids, qd_tensor *y);

    /* Optional (NULL where ops run as they are issued, as on the CPU): record the ops issued between
       graph_begin and graph_end into a graph that graph_launch replays with the same tensors. While
       recording nothing runs, and ops may not upload, download or free memory allocated before
       graph_begin; tensors allocated while recording keep their addresses across launches. graph_end
       always ends the recording; it fails (and makes no graph) when an op could not be recorded. */
    qd_status (*graph_begin)(qd_backend *b);
    qd_status (*graph_end)(qd_backend *b, void **graph);
    qd_status (*graph_launch)(qd_backend *b, void *graph);
    void (*graph_free)(qd_backend *b, void *graph);

    /* Optional weight offload (NULL where weights live in host memory anyway, as on the CPU; models then
       skip it: models/offload.h). A group is a set of prepared linears moved as one (a transformer block).
       weights_group: at load, after the layers are prepared: their prepared bytes move to (pinned) host
         memory and the device copies are freed; *group_id numbers groups in registration order from 0.
         One model's groups per backend (weights_release forgets them all).
       weights_fetch: before the model runs the group's layers: they become resident in one of two device
         slots (group g always in slot g % 2), the copy ordered before the ops issued after the call, and the
         next group's copy started so that it overlaps those ops. Recordable into a graph; allocates only in
         a step that is not being recorded (the first of each shape, see models/step_graph.h).
       weights_fetch_all / weights_evict_all: every group resident at once in one device buffer (whole-
         component offload: before the first step), and every group back in host memory only, the device
         buffers freed (after the last step). Not while recording; after evict_all, recorded steps that read
         the weights must be dropped. A linear whose group is not resident fails with a message naming it.
       weights_release: forget every group (their host memory freed); before the layers are freed. */
    qd_status (*weights_group)(qd_backend *b, qd_linear *const *layers, int n, int *group_id);
    qd_status (*weights_fetch)(qd_backend *b, int group_id);
    qd_status (*weights_fetch_all)(qd_backend *b);
    qd_status (*weights_evict_all)(qd_backend *b);
    void (*weights_release)(qd_backend *b);
    /* Optional (NULL where nothing can be done ahead, as on the CPU): `layers` run after the ops issued next (the
       transformer block after the one about to start). A device backend may start work they need now, on a stream
       of its own that overlaps the ops issued meanwhile — the CUDA backend expands the 4-bit schemes' weights to
       E4M3 (linear_w4.cu), which otherwise runs before each matmul — and a linear of them finds it done. Each call
       also ends what the call before the previous one started and nothing used; n = 0 only ends. Never changes a
       result; recordable into a graph. Not with layerwise offload (the next block's weights are not resident yet):
       models/offload.h calls it one block ahead. Layers run through linear_many (FLUX.1's modulations, all before the
       first block) are not held to that order: few rows, nothing for them is done ahead. */
    qd_status (*linears_ahead)(qd_backend *b, qd_linear *const *layers, int n);
    /* Optional: the device's memory and what weight offload holds (for the auto offload rule and benchmarks). */
    qd_status (*memory_info)(qd_backend *b, struct qd_memory_info *out);

    void (*destroy)(qd_backend *b);

    /* Models run the projections of one input ([q; k; v]) as one fused linear on this backend (a device
       backend: one larger GEMM and one activation quantization instead of three); false on the CPU, whose
       reference numerics stay layer by layer. */
    bool fuse_projections;
} qd_backend_ops;

struct qd_backend {
    const qd_backend_ops *ops;
    void *impl;
};

/* Helpers on tensors. */
int64_t qd_tensor_elements(const qd_tensor *t);
size_t qd_tensor_bytes(const qd_tensor *t);
/* Set dtype/rank/shape (data untouched); shape has `rank` entries. */
void qd_tensor_shape(qd_tensor *t, qd_dtype dtype, int rank, const int64_t *shape);
#define QD_FUSED_INPUTS 4
/* linear_fused (see the op) through the backend's op where it has one, else composed: concat (n > 1), linear,
   gated_add (with r). */
qd_status qd_linear_fused(qd_backend *b, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate, const qd_tensor *r,
                          qd_tensor *y);
#define QD_LINEAR_MANY 128
/* linear_many (see the op) through the backend's op where it has one, else n linear calls. */
qd_status qd_linear_many(qd_backend *b, qd_linear *const *ls, int n, const qd_tensor *x, qd_tensor *const *ys);
/* The composition itself (what a backend's op falls back to for layers it cannot fuse). */
qd_status qd_linear_fused_composed(qd_backend *b, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *gate,
                                   const qd_tensor *r, qd_tensor *y);

/* Allocate through the backend: qd_tensor_new(b, &t, QD_DTYPE_F32, 2, (int64_t[]){M, N}). */
qd_status qd_tensor_new(qd_backend *b, qd_tensor *t, qd_dtype dtype, int rank, const int64_t *shape);
void qd_tensor_free(qd_tensor *t);

#endif
