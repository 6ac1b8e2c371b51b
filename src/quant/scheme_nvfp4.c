/* NVFP4 linears: E2M1 weights, an E4M3 scale per 16 elements along K, and a global F32 scale
 * (formats.md §3; quant-sglang.md §4.8 ModelOpt, §4.11 Comfy). Loading normalises to lo-first nibbles
 * and linear [N, K/16] scales: a nibble swap when the config says `swap_weight_nibbles` (Comfy and BFL
 * packed-QKV exports are hi-first), an unswizzle of 128×4 scales when the layout is swizzled.
 * W[n,k] = e2m1(code) · e4m3(scale[n, k/16]) · weight_scale_2. Activations: E2M1 with dynamic E4M3
 * block scales under the static global input_scale (§3.5). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/mem.h"
#include "core/log.h"
#include "core/status.h"
#include "quant/packing.h"
#include "quant/schemes.h"
#include "core/threads.h"

/* A global scale that SGLang fills with 1.0 when absent (missing_param_init="ones", §4.1): qdit does the
 * same, and says so once per layer. */
static qd_status global_scale(const qd_bind_ctx *c, const char *suffix, float *value, qd_view *v) {
    const qd_ckpt_entry *e = qd_bind_find(c, suffix);
    if (!e && c->dry) {
        *value = 1.0f;
        return QD_OK;
    }
    if (!e) {
        char key[64];
        snprintf(key, sizeof key, "nvfp4-missing-%s", suffix);
        qd_log_once_key(key, QD_LOG_WARN, "NVFP4 layers without %s (the first: '%s'): using 1.0, as SGLang does", suffix,
                        c->module);
        *value = 1.0f;
        float *one = malloc(sizeof *one);
        if (!one) return qd_fail(QD_ENOMEM, "cannot allocate");
        *one = 1.0f;
        *v = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {1}, .data = one, .owned = one};
        return QD_OK;
    }
    if (c->dry) {
        *value = 1.0f;
        qd_view_of(e, v);
        return QD_OK;
    }
    qd_status s = qd_bind_scalar(c, suffix, value);
    if (s) return s;
    if (!isfinite(*value) || *value <= 0) {
        return qd_fail(QD_EFORMAT, "layer '%s': %s is %g (expected a positive finite value)", c->module, suffix, *value);
    }
    qd_view_of(e, v);
    return QD_OK;
}

qd_status qd_bind_nvfp4(const qd_bind_ctx *c, qd_linear *l) {
    const qd_ckpt_entry *w, *sc;
    qd_status s;
    if ((s = qd_bind_require(c, "weight", &w)) || (s = qd_bind_require(c, "weight_scale", &sc))) return s;
    const qd_st_tensor *tw = w->tensor, *ts = sc->tensor;
    if (tw->dtype != QD_DTYPE_U8 || tw->rank != 2) {
        return qd_fail(QD_EFORMAT, "layer '%s': an NVFP4 weight is U8 [out, in/2] (two E2M1 codes a byte), got %s rank %d",
                       c->module, qd_dtype_name(tw->dtype), tw->rank);
    }
    if (ts->dtype != QD_DTYPE_F8_E4M3 || ts->rank != 2) {
        return qd_fail(QD_EFORMAT, "layer '%s': NVFP4 weight_scale must be F8_E4M3 [out, in/16], got %s rank %d", c->module,
                       qd_dtype_name(ts->dtype), ts->rank);
    }
    int group = c->cfg->group_size ? c->cfg->group_size : 16;
    if (group != 16) return qd_fail(QD_EUNSUPPORTED, "layer '%s': NVFP4 group_size %d (NVFP4 blocks are 16)", c->module, group);
    int64_t n = tw->shape[0], k = tw->shape[1] * 2;
    if (k % 16 != 0) return qd_fail(QD_EFORMAT, "layer '%s': NVFP4 needs in_features a multiple of 16, got %lld", c->module, (long long)k);
    int64_t kg = k / 16;
    l->scheme = QD_SCHEME_NVFP4;
    snprintf(l->scheme_name, sizeof l->scheme_name, "nvfp4");
    l->out_features = n;
    l->in_features = k;
    l->block_k = 16;
    l->act = QD_ACT_DYNAMIC_GROUP;
    l->act_group = 16;

    /* weight: lo-first nibbles */
    qd_view_of(w, &l->weight);
    if (c->cfg->swap_weight_nibbles && !c->dry) {
        size_t bytes = (size_t)(n * k / 2);
        uint8_t *copy = malloc(bytes ? bytes : 1);
        if (!copy) return qd_fail(QD_ENOMEM, "cannot allocate %zu bytes", bytes);
        memcpy(copy, l->weight.data, bytes);
        qd_swap_nibbles(copy, bytes);
        l->weight.data = copy;
        l->weight.owned = copy;
    }

    /* scales: linear [N, K/16] */
    int64_t rp, cp;
    qd_sf_swizzled_dims(QD_SF_LAYOUT_128X4, n, kg, &rp, &cp, NULL);
    bool padded_shape = ts->shape[0] == rp && ts->shape[1] == cp && (rp != n || cp != kg);
    bool swizzled = c->cfg->swizzled_scales || padded_shape;
    if (!(ts->shape[0] == n && ts->shape[1] == kg) && !padded_shape) {
        return qd_fail(QD_EFORMAT, "layer '%s': NVFP4 weight_scale is [%lld, %lld]; a [%lld, %lld] weight needs [%lld, %lld] "
                                   "(linear) or [%lld, %lld] (swizzled 128x4)",
                       c->module, (long long)ts->shape[0], (long long)ts->shape[1], (long long)n, (long long)k,
                       (long long)n, (long long)kg, (long long)rp, (long long)cp);
    }
    qd_view_of(sc, &l->scale);
    if (swizzled && !c->dry) {
        uint8_t *lin = malloc((size_t)(n * kg) + 1);
        if (!lin) return qd_fail(QD_ENOMEM, "cannot allocate");
        if (padded_shape || (rp == n && cp == kg)) {
            s = qd_sf_unswizzle(QD_SF_LAYOUT_128X4, qd_st_data(sc->file, ts), n, kg, lin);
        } else {
            /* a swizzled layout needs 128-row / 4-column padding the stored shape does not have */
            s = qd_fail(QD_EFORMAT, "layer '%s': swizzled NVFP4 scales need a [%lld, %lld] tensor, got [%lld, %lld]",
                        c->module, (long long)rp, (long long)cp, (long long)ts->shape[0], (long long)ts->shape[1]);
        }
        if (s) {
            free(lin);
            return s;
        }
        l->scale = (qd_view){.dtype = QD_DTYPE_F8_E4M3, .rank = 2, .shape = {n, kg}, .data = lin, .owned = lin};
    }

    float v;
    if ((s = global_scale(c, "weight_scale_2", &v, &l->scale2))) return s;
    if ((s = global_scale(c, "input_scale", &v, &l->input_scale))) return s;
    /* NVFP4-AWQ / Comfy pre_quant_scale: activations are multiplied by it before quantization */
    const qd_ckpt_entry *pre = qd_bind_find(c, "pre_quant_scale");
    if (pre) {
        if (pre->tensor->rank != 1 || pre->tensor->shape[0] != k) {
            return qd_fail(QD_EFORMAT, "layer '%s': pre_quant_scale must be [%lld]", c->module, (long long)k);
        }
        qd_view_of(pre, &l->smooth);
    }
    return qd_bind_bias(c, n, l);
}

qd_status qd_quantize_nvfp4(const float *w, int64_t n, int64_t k, qd_linear *l) {
    if (k % 16) return qd_fail(QD_EINVAL, "NVFP4 needs in_features a multiple of 16, got %lld", (long long)k);
    int64_t kg = k / 16;
    uint8_t *q = qd_calloc_big((size_t)(n * k / 2) + 1), *sc = malloc((size_t)(n * kg) + 1);
    float *g = malloc(sizeof *g);
    if (!q || !sc || !g) {
        free(q);
        free(sc);
        free(g);
        return qd_fail(QD_ENOMEM, "cannot allocate an NVFP4 weight of %lld×%lld", (long long)n, (long long)k);
    }
    /* ModelOpt's recipe (formats.md §3.3): global = amax/(6·448); block scale = e4m3(block amax/(6·global)) */
    float amax = 0;
#pragma omp parallel for reduction(max : amax) schedule(static) num_threads(qd_threads_for(n * k, QD_GRAIN_ELEMS))
    for (int64_t i = 0; i < n * k; i++) amax = fmaxf(amax, fabsf(w[i]));
    float wsf2 = amax > 0 ? amax / (6.0f * 448.0f) : 1.0f;
    /* rows are independent (each writes its own bytes): threads split them */
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n * k, QD_GRAIN_ELEMS))
    for (int64_t r = 0; r < n; r++) {
        for (int64_t b = 0; b < kg; b++) {
            const float *x = w + r * k + b * 16;
            float bmax = 0;
            for (int i = 0; i < 16; i++) bmax = fmaxf(bmax, fabsf(x[i]));
            float sb = bmax / (6.0f * wsf2);
            if (sb == 0) sb = 1.0f;
            uint8_t e = qd_f32_to_e4m3(sb);
            sc[r * kg + b] = e;
            float step = qd_e4m3_to_f32(e) * wsf2;
            uint8_t codes[16];
            for (int i = 0; i < 16; i++) codes[i] = qd_f32_to_e2m1(x[i] / step);
            for (int i = 0; i < 8; i++) q[(r * k + b * 16) / 2 + i] = (uint8_t)(codes[2 * i] | codes[2 * i + 1] << 4);
        }
    }
    *g = wsf2;
    l->scheme = QD_SCHEME_NVFP4;
    snprintf(l->scheme_name, sizeof l->scheme_name, "nvfp4");
    l->out_features = n;
    l->in_features = k;
    l->block_k = 16;
    l->act = QD_ACT_DYNAMIC_GROUP; /* global activation scale computed per call: there is no calibration */
    l->act_group = 16;
    l->weight = (qd_view){.dtype = QD_DTYPE_U8, .rank = 2, .shape = {n, k / 2}, .data = q, .owned = q};
    l->scale = (qd_view){.dtype = QD_DTYPE_F8_E4M3, .rank = 2, .shape = {n, kg}, .data = sc, .owned = sc};
    l->scale2 = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {1}, .data = g, .owned = g};
    return QD_OK;
}

qd_status qd_dequantize_nvfp4(const qd_linear *l, float *out) {
    const uint8_t *q = l->weight.data, *sc = l->scale.data;
    int64_t n = l->out_features, k = l->in_features, kg = k / 16;
    for (int64_t r = 0; r < n; r++) {
        float g = qd_view_get(&l->scale2, r, 0); /* one value, or one per row for fused shards */
        for (int64_t j = 0; j < k; j++) {
            uint8_t byte = q[(r * k + j) / 2];
            uint8_t code = (j & 1) ? byte >> 4 : byte & 15;
            out[r * k + j] = qd_e2m1_to_f32(code) * qd_e4m3_to_f32(sc[r * kg + j / 16]) * g;
            if (l->smooth.data) out[r * k + j] *= qd_view_get_flat(&l->smooth, j); /* x·pre_quant_scale */
        }
    }
    return QD_OK;
}
