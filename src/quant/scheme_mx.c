/* OCP MX linears: MXFP8 (E4M3 elements) and MXFP4 (E2M1, lo-first) with one E8M0 scale per 32 elements
 * along K, and msModelSlim's dual-scale MXFP4 with an extra F32 scale per 512 (formats.md §4;
 * quant-sglang.md §4.5, §4.6, §4.10). W[n,k] = elem(q) · 2^(e[n,k/32] − 127) (· dual[n, k/512]).
 * Serialized forms: Comfy / quant_method mxfp8 (F8_E4M3 weight + U8 [N,K/32]), msModelSlim W8A8_MXFP8,
 * W4A4_MXFP4 (U8 [N,K/2]) and W4A4_MXFP4_DUALSCALE (+ weight_dual_scale [N,K/512(,1)]), with the
 * optional smooth-quant `mul_scale` [K] (activations multiplied by it). Online: the OCP floor rule. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/mem.h"
#include "core/status.h"
#include "quant/packing.h"
#include "quant/schemes.h"
#include "core/threads.h"

qd_status qd_bind_mx(const qd_bind_ctx *c, qd_linear *l) {
    const qd_ckpt_entry *w, *sc;
    qd_status s;
    if ((s = qd_bind_require(c, "weight", &w)) || (s = qd_bind_require(c, "weight_scale", &sc))) return s;
    const qd_st_tensor *tw = w->tensor, *ts = sc->tensor;
    bool fp4 = tw->dtype == QD_DTYPE_U8;
    if ((tw->dtype != QD_DTYPE_F8_E4M3 && !fp4) || tw->rank != 2) {
        return qd_fail(QD_EFORMAT, "layer '%s': an MX weight is F8_E4M3 [out, in] (MXFP8) or U8 [out, in/2] (MXFP4), got %s "
                                   "rank %d",
                       c->module, qd_dtype_name(tw->dtype), tw->rank);
    }
    int64_t n = tw->shape[0], k = fp4 ? tw->shape[1] * 2 : tw->shape[1];
    if (k % 32) return qd_fail(QD_EFORMAT, "layer '%s': MX needs in_features a multiple of 32, got %lld", c->module, (long long)k);
    if ((ts->dtype != QD_DTYPE_U8 && ts->dtype != QD_DTYPE_F8_E8M0) || ts->elements != (uint64_t)(n * (k / 32))) {
        return qd_fail(QD_EFORMAT, "layer '%s': MX weight_scale must be U8/F8_E8M0 [%lld, %lld] (one E8M0 byte per 32), got %s "
                                   "with %llu elements",
                       c->module, (long long)n, (long long)(k / 32), qd_dtype_name(ts->dtype),
                       (unsigned long long)ts->elements);
    }
    l->scheme = fp4 ? QD_SCHEME_MXFP4 : QD_SCHEME_MXFP8;
    snprintf(l->scheme_name, sizeof l->scheme_name, fp4 ? "mxfp4" : "mxfp8");
    l->out_features = n;
    l->in_features = k;
    l->block_k = 32;
    l->act = QD_ACT_DYNAMIC_GROUP;
    l->act_group = 32;
    qd_view_of(w, &l->weight);
    qd_view_of(sc, &l->scale);
    l->scale.dtype = QD_DTYPE_U8;
    l->scale.rank = 2;
    l->scale.shape[0] = n;
    l->scale.shape[1] = k / 32;
    if (c->cfg->comfy && c->cfg->method == QD_QM_MXFP8) {
        /* Comfy stores MXFP8 scales already in the 128×4 swizzled byte order under the [N, K/32] shape
           (quant-sglang.md §4.6), which holds them only when no padding is needed */
        if (n % 128 || (k / 32) % 4) {
            return qd_fail(QD_EFORMAT, "layer '%s': Comfy MXFP8 scales are 128x4-swizzled, which a [%lld, %lld] tensor can "
                                       "hold only when N %% 128 == 0 and K/32 %% 4 == 0",
                           c->module, (long long)n, (long long)(k / 32));
        }
        if (!c->dry) {
            uint8_t *lin = malloc((size_t)(n * (k / 32)));
            if (!lin) return qd_fail(QD_ENOMEM, "cannot allocate");
            if ((s = qd_sf_unswizzle(QD_SF_LAYOUT_128X4, l->scale.data, n, k / 32, lin))) {
                free(lin);
                return s;
            }
            l->scale.data = lin;
            l->scale.owned = lin;
        }
    }
    const qd_ckpt_entry *dual = qd_bind_find(c, "weight_dual_scale");
    if (dual) {
        if (!fp4 || k % 512) {
            return qd_fail(QD_EFORMAT, "layer '%s': weight_dual_scale needs an MXFP4 weight with in_features a multiple of "
                                       "512",
                           c->module);
        }
        if (dual->tensor->dtype != QD_DTYPE_F32 || dual->tensor->elements != (uint64_t)(n * (k / 512))) {
            return qd_fail(QD_EFORMAT, "layer '%s': weight_dual_scale must be F32 [%lld, %lld(, 1)]", c->module, (long long)n,
                           (long long)(k / 512));
        }
        qd_view_of(dual, &l->scale2);
        l->scale2.rank = 2;
        l->scale2.shape[0] = n;
        l->scale2.shape[1] = k / 512;
        snprintf(l->scheme_name, sizeof l->scheme_name, "mxfp4_dualscale");
    }
    const qd_ckpt_entry *mul = qd_bind_find(c, "mul_scale");
    if (mul) {
        if (mul->tensor->rank != 1 || mul->tensor->shape[0] != k) {
            return qd_fail(QD_EFORMAT, "layer '%s': mul_scale must be [%lld]", c->module, (long long)k);
        }
        qd_view_of(mul, &l->smooth);
    }
    return qd_bind_bias(c, n, l);
}

/* The OCP reference shared exponent (formats.md §4.3, FLOOR): floor(log2(amax)) − emax, in [−127, 127];
 * an all-zero block takes the smallest scale. */
static int shared_exponent(float amax, int emax) {
    if (!(amax > 0)) return -127;
    int e;
    frexpf(amax, &e); /* amax = m·2^e, m in [0.5, 1): floor(log2(amax)) = e − 1 */
    int x = e - 1 - emax;
    return x < -127 ? -127 : x > 127 ? 127 : x;
}

qd_status qd_quantize_mx(const float *w, int64_t n, int64_t k, bool fp4, qd_linear *l) {
    if (k % 32) return qd_fail(QD_EINVAL, "MX needs in_features a multiple of 32, got %lld", (long long)k);
    size_t wbytes = (size_t)(fp4 ? n * k / 2 : n * k);
    uint8_t *q = qd_calloc_big(wbytes + 1), *sc = malloc((size_t)(n * k / 32) + 1);
    if (!q || !sc) {
        free(q);
        free(sc);
        return qd_fail(QD_ENOMEM, "cannot allocate an MX weight of %lld×%lld", (long long)n, (long long)k);
    }
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n * k, QD_GRAIN_ELEMS)) /* rows are independent: k is even, so no byte is shared */
    for (int64_t r = 0; r < n; r++) {
        for (int64_t b = 0; b < k / 32; b++) {
            const float *x = w + r * k + b * 32;
            float amax = 0;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
            int e = shared_exponent(amax, fp4 ? 2 : 8);
            sc[r * (k / 32) + b] = (uint8_t)(e + 127);
            for (int i = 0; i < 32; i++) {
                float v = ldexpf(x[i], -e); /* exact: a power-of-two scale */
                int64_t j = r * k + b * 32 + i;
                if (fp4) q[j / 2] |= (uint8_t)(qd_f32_to_e2m1(v) << (4 * (j & 1)));
                else q[j] = qd_f32_to_e4m3(v);
            }
        }
    }
    l->scheme = fp4 ? QD_SCHEME_MXFP4 : QD_SCHEME_MXFP8;
    snprintf(l->scheme_name, sizeof l->scheme_name, fp4 ? "mxfp4" : "mxfp8");
    l->out_features = n;
    l->in_features = k;
    l->block_k = 32;
    l->act = QD_ACT_DYNAMIC_GROUP;
    l->act_group = 32;
    l->weight = (qd_view){.dtype = fp4 ? QD_DTYPE_U8 : QD_DTYPE_F8_E4M3, .rank = 2, .shape = {n, fp4 ? k / 2 : k}, .data = q, .owned = q};
    l->scale = (qd_view){.dtype = QD_DTYPE_U8, .rank = 2, .shape = {n, k / 32}, .data = sc, .owned = sc};
    return QD_OK;
}

qd_status qd_dequantize_mx(const qd_linear *l, float *out) {
    const uint8_t *q = l->weight.data, *sc = l->scale.data;
    int64_t n = l->out_features, k = l->in_features;
    bool fp4 = l->scheme == QD_SCHEME_MXFP4;
    for (int64_t r = 0; r < n; r++) {
        for (int64_t j = 0; j < k; j++) {
            int64_t i = r * k + j;
            float e = fp4 ? qd_e2m1_to_f32((i & 1) ? q[i / 2] >> 4 : q[i / 2] & 15) : qd_e4m3_to_f32(q[i]);
            float v = e * qd_e8m0_to_f32(sc[r * (k / 32) + j / 32]);
            if (l->scale2.data) v *= qd_view_get(&l->scale2, r, j / 512);
            if (l->smooth.data) v *= qd_view_get_flat(&l->smooth, j); /* x·mul_scale */
            out[i] = v;
        }
    }
    return QD_OK;
}
