/* The per-family scheme functions behind qd_linear_bind() and qd_linear_dequantize(): one file each
 * (scheme_dense.c, scheme_fp8.c, scheme_nvfp4.c, scheme_mx.c, scheme_svdq.c, scheme_int.c). Each
 * `bind` finds and validates one checkpoint module's tensors and fills a qd_linear in the canonical
 * layout of linear.h; each `quantize` makes that layout from an f32 weight (online quantization);
 * each `dequantize` is the f32 reference. */
#ifndef QD_QUANT_SCHEMES_H
#define QD_QUANT_SCHEMES_H

#include <jansson.h>

#include "io/ckpt.h"
#include "quant/config.h"
#include "quant/linear.h"

typedef struct {
    const qd_quant_config *cfg;
    const qd_ckpt *ck;
    const char *module;       /* the checkpoint module prefix ("transformer_blocks.0.attn.to_q") */
    const json_t *layer_type; /* msModelSlim type string or Comfy marker object for this module, or NULL */
    bool dry;                 /* plan only: choose the scheme and check headers, read no tensor data, copy
                                 nothing (views may then still be in their stored layout) */
} qd_bind_ctx;

/* Tensor lookup helpers for binders: `<module>.<suffix>`; a missing required tensor is an error that
 * names it. */
const qd_ckpt_entry *qd_bind_find(const qd_bind_ctx *c, const char *suffix);
qd_status qd_bind_require(const qd_bind_ctx *c, const char *suffix, const qd_ckpt_entry **out);
/* A view of a checkpoint tensor (zero copy). */
void qd_view_of(const qd_ckpt_entry *e, qd_view *v);
/* A scalar F32/BF16/F16 tensor (shape [] or [1]) as float; error naming it otherwise. */
qd_status qd_bind_scalar(const qd_bind_ctx *c, const char *suffix, float *out);
/* Optional bias `<module>.bias` of length N. */
qd_status qd_bind_bias(const qd_bind_ctx *c, int64_t n, qd_linear *l);

qd_status qd_bind_dense(const qd_bind_ctx *c, qd_linear *l);
qd_status qd_bind_fp8(const qd_bind_ctx *c, qd_linear *l);
qd_status qd_bind_nvfp4(const qd_bind_ctx *c, qd_linear *l);
qd_status qd_bind_mx(const qd_bind_ctx *c, qd_linear *l);
qd_status qd_bind_svdq(const qd_bind_ctx *c, qd_linear *l);
qd_status qd_bind_awq(const qd_bind_ctx *c, qd_linear *l);
qd_status qd_bind_modelslim_int(const qd_bind_ctx *c, qd_linear *l);

/* Online quantization of w [N][K] into `l` (whose name and bias the caller sets). */
qd_status qd_quantize_fp8(const float *w, int64_t n, int64_t k, bool per_tensor, qd_linear *l);
qd_status qd_quantize_nvfp4(const float *w, int64_t n, int64_t k, qd_linear *l);
qd_status qd_quantize_mx(const float *w, int64_t n, int64_t k, bool fp4, qd_linear *l);
qd_status qd_quantize_int8(const float *w, int64_t n, int64_t k, qd_linear *l);

qd_status qd_dequantize_dense(const qd_linear *l, float *out);
qd_status qd_dequantize_fp8(const qd_linear *l, float *out);
qd_status qd_dequantize_nvfp4(const qd_linear *l, float *out);
/* nunchaku's shift added to post-GELU activations of unsigned int4 layers (formats.md §5.4) */
#define QD_SVDQ_SHIFT_GELU 0.171875
void qd_svdq_add_shift_bias(const qd_linear *l, float *bias);
qd_status qd_dequantize_mx(const qd_linear *l, float *out);
qd_status qd_dequantize_svdq(const qd_linear *l, float *out);
qd_status qd_dequantize_awq(const qd_linear *l, float *out);
qd_status qd_dequantize_int(const qd_linear *l, float *out);

#endif
