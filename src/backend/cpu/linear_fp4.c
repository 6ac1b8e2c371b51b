/* The CPU's W4A4 float-4 linears: NVFP4 (QD_SCHEME_NVFP4) and MXFP4 (QD_SCHEME_MXFP4), with the
 * activations quantized to the same format on the fly and every dot product done EXACTLY in integers.
 *
 * Spec: formats.md §2 (E2M1, RNE), §3.5 (NVFP4 activation recipe), §4.3 (MX shared exponent, OCP floor
 * rule), §4.5 (dual-scale MXFP4); quant-sglang.md §4.5, §4.8, §4.10; linear.h for the canonical slots
 * (weight U8 [N,K/2] lo-first; NVFP4 scale E4M3 [N,K/16], scale2 = weight_scale_2 [1] or [N], smooth =
 * pre_quant_scale; MXFP4 scale E8M0 [N,K/32], scale2 = dual scale [N,K/512], smooth = mul_scale).
 *
 *   NVFP4:  y[m][n] = (inv_gs·scale2[n]/4) · Σ_b SFa[m][b]·SFw[n][b] · Σ_{k∈b} (2·a_k)(2·w_k) + bias[n]
 *           inv_gs = input_scale when the layer has one (ModelOpt), else amax(x·s)/(6·448) per call;
 *           activations per 16: SFa = e4m3(gs·vecMax/6), codes = e2m1(x·gs/SFa) (act_quant_int.c).
 *   MXFP4:  y[m][n] = 1/4 · Σ_b 2^(ea+ew)·dual[n][b/16] · Σ_{k∈b} (2·a_k)(2·w_k) + bias[n]
 *           activations per 32: ea = floor(log2 amax) − 2 (OCP floor rule), codes = e2m1(x·2^−ea).
 *           Dual-scale layers: msModelSlim's NPU quantizes the activations in two levels too; qdit keeps
 *           one level (the difference is below the E2M1 rounding itself).
 * 2·E2M1 is an integer in [−12, 12], so each block sum is an exact int32 (vpdpbusd, 4 per 16-block,
 * 8 per 32-block); the float work is one conversion and one multiply-add per block with the scale
 * product (the GEMM core in linear_int.c; 4-bit weights expanded per L1 chunk with vpshufb).
 *
 * Tolerance against the f32 reference (dequantized weights, unquantized activations), as NMSE:
 *   NVFP4: ≤ 5e-2 — E2M1 keeps 1 mantissa bit: elements are rounded to steps of 1/4–1/3 of their
 *          magnitude near the block max and coarser below; on Gaussian-like 16-blocks the noise is
 *          ~7e-3 of the signal, up to ~2e-2 on small samples with 6σ outliers (E4M3 scale rounding
 *          adds < 1e-3);
 *   MXFP4: ≤ 6e-2 — the same elements under a power-of-two scale that can leave the block max as low
 *          as 4 (not 6): ~1.5e-2 typical, ~3e-2 worst seen.
 * Against an exact emulation (same codes, sums in double) only the f32 rounding of the scale products
 * and the accumulation over blocks remains: ~1e-6 relative. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/act_quant_int.h"
#include "backend/cpu/linear_kernels.h"
#include "core/status.h"

static qd_status make_fp4(const qd_linear *l, qd_iq_prepared *p) {
    const char *name = l->name ? l->name : "linear";
    const int64_t n = l->out_features, k = l->in_features;
    const bool nv = l->scheme == QD_SCHEME_NVFP4;
    const int block = nv ? 16 : 32;
    if (!l->weight.data || !l->scale.data || k % block) {
        return qd_fail(QD_EINVAL, "layer '%s': a %s linear needs packed weights, block scales and K %% %d == 0", name,
                       nv ? "NVFP4" : "MXFP4", block);
    }
    float *dual = NULL;
    if (!nv && l->scale2.data) {
        /* an aligned f32 copy (a mapped checkpoint gives no alignment guarantee) */
        const int64_t kd = k / 512;
        if (k % 512) return qd_fail(QD_EINVAL, "layer '%s': dual-scale MXFP4 needs K %% 512 == 0", name);
        dual = malloc(sizeof(float) * (size_t)(n * kd) + 4);
        if (!dual) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", name);
        for (int64_t r = 0; r < n; r++)
            for (int64_t d = 0; d < kd; d++) dual[r * kd + d] = qd_view_get(&l->scale2, r, d);
    }
    qd_status s = qd_iq_weights_make(QD_IQ_W_E2M1, n, k, l->weight.data, block, nv ? QD_IQ_WS_E4M3 : QD_IQ_WS_E8M0,
                                     l->scale.data, dual, &p->w);
    free(dual);
    if (s) return s;
    const int64_t np = p->w.np;
    p->aux = malloc(sizeof(float) * (size_t)np);
    if (!p->aux) goto nomem;
    /* NVFP4: the global weight scale per column (fused shards carry one each); MXFP4: 1 */
    for (int64_t r = 0; r < np; r++) p->aux[r] = r < n ? (nv && l->scale2.data ? qd_view_get(&l->scale2, r, 0) : 1.0f) : 0.0f;
    if (l->bias.data && !(p->bias = qd_iq_vector_f32(&l->bias, n, np, 0.0f))) goto nomem;
    if (l->smooth.data && !(p->smooth = qd_iq_vector_f32(&l->smooth, k, k, 1.0f))) goto nomem;
    return QD_OK;
nomem:
    return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its prepared form", name);
}

qd_status qd_cpu_prepare_fp4(qd_linear *l) { return qd_iq_prepare_replacing(l, make_fp4); }

qd_status qd_cpu_linear_fp4(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    const bool nv = l->scheme == QD_SCHEME_NVFP4;
    qd_iq_prepared *p;
    bool temp;
    qd_status s = qd_iq_prepare(l, make_fp4, &p, &temp);
    if (s) return s;
    qd_iq_act_spec spec = {.kind = nv ? QD_IQ_ACT_NVFP4 : QD_IQ_ACT_MXFP4, .k = l->in_features, .mul = p->smooth};
    const int64_t np = p->w.np;
    float *cs = malloc(sizeof(float) * (size_t)np);
    if (!cs) s = qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", name);
    if (!s) {
        float inv_gs = 1.0f;
        if (nv) {
            if (l->input_scale.data) {
                inv_gs = qd_view_get(&l->input_scale, 0, 0);
            } else {
                /* no calibrated input_scale (online NVFP4): the tensor's own amax, §3.5's TRT-LLM rule
                   globalScale = 448·6 / amax */
                const float amax = qd_iq_tensor_amax(x, p->smooth);
                inv_gs = amax > 0 && isfinite(amax) ? amax / (448.0f * 6.0f) : 1.0f;
            }
            if (!(inv_gs > 0) || !isfinite(inv_gs)) s = qd_fail(QD_EINVAL, "layer '%s': NVFP4 input_scale is %g", name, inv_gs);
        }
        spec.inv_gs = inv_gs;
        /* (2a)(2w) sums: the 1/4 and NVFP4's global scales go to the per-column epilogue factor */
        for (int64_t r = 0; r < np; r++) cs[r] = nv ? inv_gs * p->aux[r] * 0.25f : p->aux[r] * 0.25f;
    }
    qd_iq_act a = {0};
    if (!s) s = qd_iq_quantize(x, &spec, &a);
    if (!s) {
        qd_iq_gemm_args g = {.a = &a, .w = &p->w, .col_scale = cs, .bias = p->bias, .y = y};
        s = qd_iq_gemm(&g);
    }
    qd_iq_act_free(&a);
    free(cs);
    if (temp) qd_iq_prepared_free(p);
    return s;
}
