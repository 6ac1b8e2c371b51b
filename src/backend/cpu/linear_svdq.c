/* The CPU's Nunchaku SVDQuant W4A4 linears (QD_SCHEME_SVDQ_INT4, QD_SCHEME_SVDQ_NVFP4): a 4-bit
 * residual GEMM on smoothed, on-the-fly quantized activations plus a low-rank branch in f32.
 *
 * Spec: formats.md §5.4 (runtime math, followed step by step), §5.3 (values), §8.7–8.10; quant-sglang.md
 * §4.9. Canonical slots (linear.h, bound by scheme_svdq.c): weight U8 [Np,Kp/2] lo-first (int4 two's
 * complement or E2M1), scale [Np,Kp/64] BF16/F16 (int4) or [Np,Kp/16] E4M3 (nvfp4), smooth [Kp],
 * lora_down [R,Kp], lora_up [Np,R], bias [Np], scale2 = wcscales [Np] (optional), alpha = wtscale.
 * N and K are the padded Np, Kp: the caller passes x with K = Kp columns and crops y.
 *
 * For each row of x (model dtype T = the smooth vector's dtype):
 *   1. lora_act[r] = Σ_k x[k]·D[r][k] on the RAW x, products of T values accumulated in f32, kept f32
 *      (nunchaku rounds lora_act to T before the up projection; qdit keeps f32);
 *   2. xs[k] = T((x[k] + shift) / smooth[k]) — shift = nunchaku's SHIFT_GELU 0.171875 for int4 layers
 *      with act_unsigned (fc2 after a GELU: the file's bias compensates it, §5.4), else 0; a zero
 *      smooth entry is a padded column and gives 0;
 *   3. int4: per 64, scale = amax·(1/7) (unsigned: (1/15)), kept as T(scale); q = sat(rne(xs·(1/scale)))
 *      with the UNROUNDED scale; nvfp4: per 16, scale = min(amax/6, 448), kept as e4m3(scale),
 *      q = e2m1_RNE_sat(xs·(1/scale)) — no global activation scale;
 *   4. main GEMM: per group an exact int32 Σ q_a·q_w (vpdpbusd), then acc += isum·(ascale·wscale)
 *      accumulated in F32 (nunchaku accumulates the int4 path in bf16/fp16 half2 arithmetic; f32 is
 *      the deliberate choice here: the float error is then ~1e-7 per group instead of ~4e-3);
 *   5. y = acc·alpha·wcscales[n] + bias[n] (alpha only for nvfp4; wcscales when present);
 *   6. y += Σ_r lora_act[r]·U[n][r] in f32; output rounded once to F32/BF16.
 * The GEMM core is linear_int.c's (4-bit weights expanded to int8 per L1 chunk; the up projection runs
 * in its epilogue so y is written once).
 *
 * Tolerance against the f32 reference (qd_dequantize_svdq's W_eff, unquantized x), as NMSE: ≤ 5e-2 for
 * both — int4 per 64 with amax/7 steps leaves ~1e-2 of the residual branch's signal on Gaussian-like
 * groups ((amax/rms ≈ 2.5)²/(12·49)) and ~2e-2 when one element in 200 is a 6σ outlier (a quarter of
 * the groups then carry one); E2M1 per 16 ~7e-3; unsigned u4 after GELU ~2e-3 (16 levels on a
 * one-sided range); the low-rank branch is exact to f32, so y's NMSE is at most the residual's.
 * Against an exact emulation of steps 1–6 (same codes, double sums) the error is ~1e-6 relative. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/act_quant_int.h"
#include "backend/cpu/linear_kernels.h"
#include "core/codec.h"
#include "core/status.h"
#include "core/threads.h"

#define SVDQ_SHIFT_GELU 0.171875f

static qd_status make_svdq(const qd_linear *l, qd_iq_prepared *p) {
    const char *name = l->name ? l->name : "linear";
    const int64_t n = l->out_features, k = l->in_features;
    const bool nv = l->scheme == QD_SCHEME_SVDQ_NVFP4;
    const int group = nv ? 16 : 64;
    if (!l->weight.data || !l->scale.data || !l->smooth.data || k % group) {
        return qd_fail(QD_EINVAL, "layer '%s': an SVDQuant linear needs qweight, wscales and smooth (and K %% %d == 0)", name, group);
    }
    qd_iq_wsfmt sf = nv ? QD_IQ_WS_E4M3 : l->scale.dtype == QD_DTYPE_F16 ? QD_IQ_WS_F16 : QD_IQ_WS_BF16;
    if (!nv && l->scale.dtype != QD_DTYPE_F16 && l->scale.dtype != QD_DTYPE_BF16) {
        return qd_fail(QD_EINVAL, "layer '%s': int4 SVDQuant scales must be BF16 or F16", name);
    }
    qd_status s = qd_iq_weights_make(nv ? QD_IQ_W_E2M1 : QD_IQ_W_INT4, n, k, l->weight.data, group, sf, l->scale.data, NULL, &p->w);
    if (s) return s;
    const int64_t np = p->w.np;
    p->col_scale = malloc(sizeof(float) * (size_t)np);
    if (!p->col_scale) goto nomem;
    /* α (wtscale) and wcscales scale the main GEMM only (§5.4 steps 4–5); the E2M1 codes are doubled */
    for (int64_t r = 0; r < np; r++) {
        const float wcs = l->scale2.data && r < n ? qd_view_get(&l->scale2, r, 0) : 1.0f;
        p->col_scale[r] = r < n ? (nv ? l->alpha * wcs * 0.25f : wcs) : 0.0f;
    }
    if (l->bias.data && !(p->bias = qd_iq_vector_f32(&l->bias, n, np, 0.0f))) goto nomem;
    if (!(p->smooth = qd_iq_vector_f32(&l->smooth, k, k, 0.0f))) goto nomem;
    return QD_OK;
nomem:
    return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its prepared form", name);
}

qd_status qd_cpu_prepare_svdq(qd_linear *l) { return qd_iq_prepare_replacing(l, make_svdq); }

qd_status qd_cpu_linear_svdq(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    const bool nv = l->scheme == QD_SCHEME_SVDQ_NVFP4;
    const int64_t k = l->in_features, n = l->out_features;
    const int rank = l->lora_down.data ? (int)l->lora_down.shape[0] : 0;
    if (rank && (!l->lora_up.data || l->lora_up.shape[1] != rank || l->lora_down.shape[1] != k)) {
        return qd_fail(QD_EINVAL, "layer '%s': SVDQuant low-rank factors must be [R, %lld] and [%lld, R]", name, (long long)k, (long long)n);
    }
    qd_iq_prepared *p;
    bool temp;
    qd_status s = qd_iq_prepare(l, make_svdq, &p, &temp);
    if (s) return s;
    const int64_t np = p->w.np;
    /* the low-rank factors in the layouts the kernels stream: down as [Kp][R], up as [R][np], f32 */
    float *down_t = rank ? qd_iq_scratch_get(sizeof(float) * (size_t)(k * rank)) : NULL;
    float *up_t = rank ? qd_iq_scratch_get(sizeof(float) * (size_t)(rank * np)) : NULL;
    if (rank && (!down_t || !up_t)) s = qd_fail(QD_ENOMEM, "layer '%s': cannot allocate the low-rank factors", name);
    if (!s && rank && np > n) {
        for (int r = 0; r < rank; r++) memset(up_t + (int64_t)r * np + n, 0, sizeof(float) * (size_t)(np - n));
    }
    if (!s && rank) {
        const size_t es = (size_t)qd_dtype_bits(l->lora_down.dtype) / 8, eu = (size_t)qd_dtype_bits(l->lora_up.dtype) / 8;
        bool nomem = false;
#pragma omp parallel num_threads(qd_threads_for((int64_t)rank * (k + n), QD_GRAIN_ELEMS))
        {
            float *row = malloc(sizeof(float) * (size_t)(k > rank ? k : rank));
            if (!row) {
#pragma omp atomic write
                nomem = true;
            }
#pragma omp for schedule(static)
            for (int r = 0; r < rank; r++) {
                if (!row) continue;
                qd_decode_row(l->lora_down.dtype, (const uint8_t *)l->lora_down.data + (size_t)r * (size_t)k * es, row, (size_t)k);
                for (int64_t j = 0; j < k; j++) down_t[j * rank + r] = row[j];
            }
#pragma omp for schedule(static)
            for (int64_t c = 0; c < n; c++) {
                if (!row) continue;
                qd_decode_row(l->lora_up.dtype, (const uint8_t *)l->lora_up.data + (size_t)c * (size_t)rank * eu, row, (size_t)rank);
                for (int r = 0; r < rank; r++) up_t[(int64_t)r * np + c] = row[r];
            }
            free(row);
        }
        if (nomem) s = qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", name);
    }
    const bool unsig = !nv && l->act_unsigned;
    qd_iq_act_spec spec = {.kind = nv ? QD_IQ_ACT_SVDQ_NVFP4 : QD_IQ_ACT_SVDQ_INT4,
                           .k = k,
                           .div = p->smooth,
                           .round_t_bf16 = l->smooth.dtype == QD_DTYPE_BF16,
                           .round_t_f16 = l->smooth.dtype == QD_DTYPE_F16,
                           .shift = unsig ? SVDQ_SHIFT_GELU : 0.0f,
                           .act_unsigned = unsig,
                           .rank = rank,
                           .down_t = down_t};
    qd_iq_act a = {0};
    if (!s) s = qd_iq_quantize(x, &spec, &a);
    if (!s) {
        qd_iq_gemm_args g = {.a = &a,
                             .w = &p->w,
                             .col_scale = p->col_scale,
                             .bias = p->bias,
                             .lr_rank = rank,
                             .lr_left = a.lora_act,
                             .lr_right = up_t,
                             .y = y};
        s = qd_iq_gemm(&g);
    }
    qd_iq_act_free(&a);
    qd_iq_scratch_put(down_t), qd_iq_scratch_put(up_t);
    if (temp) qd_iq_prepared_free(p);
    return s;
}
