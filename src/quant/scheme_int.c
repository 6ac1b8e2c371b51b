/* Integer linears from msModelSlim (formats.md §6; quant-sglang.md §4.10) and qdit's online W8A8:
 *   W8A8 (static):   int8 weight; y = (Σ q_x·q_w + quant_bias)·deq_scale with q_x = round(x/input_scale
 *                    + input_offset); deq_scale stored F32, or I64 holding the F32 bits (fp16 models);
 *   W8A8_DYNAMIC:    int8 weight, weight_scale/weight_offset [N,1]; per-token dynamic int8 activations;
 *   W4A4_DYNAMIC:    int4 values stored one per int8 byte, per-channel [N,1] or per-group [N,K/g] scales
 *                    and offsets; per-token dynamic int4 activations;
 *   online int8:     per-channel symmetric weight (amax/127), per-token dynamic activations.
 * Canonical: weight I8 [N,K]; scale F32 [N] (or [N,K/g]) such that W = (q − zeros)·scale; W8A8 static
 * keeps input_scale / input_offset and, in `zeros`, quant_bias (I32 [N]) with scale2 = deq_scale. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/mem.h"
#include "core/status.h"
#include "quant/schemes.h"
#include "core/threads.h"

static qd_status float_vector(const qd_bind_ctx *c, const char *suffix, int64_t n, int64_t groups, float **out) {
    const qd_ckpt_entry *e = qd_bind_find(c, suffix);
    *out = NULL;
    if (!e) return qd_fail(QD_EFORMAT, "layer '%s': missing tensor '%s.%s'", c->module, c->module, suffix);
    if (e->tensor->elements != (uint64_t)(n * groups)) {
        return qd_fail(QD_EFORMAT, "layer '%s': %s has %llu elements, expected %lld", c->module, suffix,
                       (unsigned long long)e->tensor->elements, (long long)(n * groups));
    }
    qd_view v;
    qd_view_of(e, &v);
    float *f = malloc(sizeof *f * (size_t)(n * groups) + 1);
    if (!f) return qd_fail(QD_ENOMEM, "cannot allocate");
    for (int64_t i = 0; i < n * groups; i++) {
        if (e->tensor->dtype == QD_DTYPE_I64) {
            /* msModelSlim deq_scale for fp16 models: the F32 bit pattern in the low 32 bits (formats.md §6.2) */
            int64_t x;
            memcpy(&x, (const uint8_t *)v.data + 8 * i, 8);
            uint32_t bits = (uint32_t)x;
            memcpy(&f[i], &bits, 4);
        } else if (e->tensor->dtype == QD_DTYPE_F32 || e->tensor->dtype == QD_DTYPE_BF16 ||
                   e->tensor->dtype == QD_DTYPE_F16) {
            f[i] = qd_view_get_flat(&v, i);
        } else {
            free(f);
            return qd_fail(QD_EFORMAT, "layer '%s': %s must be F32/BF16/F16 (or I64 for deq_scale), got %s", c->module, suffix,
                           qd_dtype_name(e->tensor->dtype));
        }
        if (!isfinite(f[i])) {
            free(f);
            return qd_fail(QD_EFORMAT, "layer '%s': %s[%lld] is not finite", c->module, suffix, (long long)i);
        }
    }
    *out = f;
    return QD_OK;
}

qd_status qd_bind_modelslim_int(const qd_bind_ctx *c, qd_linear *l) {
    const char *type = json_string_value(c->layer_type);
    const qd_ckpt_entry *w;
    qd_status s = qd_bind_require(c, "weight", &w);
    if (s) return s;
    const qd_st_tensor *tw = w->tensor;
    if (tw->dtype != QD_DTYPE_I8 || tw->rank != 2) {
        return qd_fail(QD_EFORMAT, "layer '%s': a %s weight is I8 [out, in], got %s rank %d", c->module, type,
                       qd_dtype_name(tw->dtype), tw->rank);
    }
    int64_t n = tw->shape[0], k = tw->shape[1];
    l->out_features = n;
    l->in_features = k;
    qd_view_of(w, &l->weight);
    float *v = NULL;
    if (c->dry) {
        /* the plan needs only the scheme; the data-dependent checks run at bind */
        bool w8a8 = !strcmp(type, "W8A8"), dyn = !strcmp(type, "W8A8_DYNAMIC"), w4 = !strcmp(type, "W4A4_DYNAMIC");
        if (!w8a8 && !dyn && !w4) {
            return qd_fail(QD_EUNSUPPORTED, "layer '%s': No modelslim compatible scheme was found for type %s", c->module, type);
        }
        l->scheme = w4 ? QD_SCHEME_INT4 : QD_SCHEME_INT8;
        snprintf(l->scheme_name, sizeof l->scheme_name, "%s", w8a8 ? "w8a8_static" : dyn ? "w8a8_dynamic" : "w4a4_dynamic");
        l->act = w8a8 ? QD_ACT_STATIC_TENSOR : QD_ACT_DYNAMIC_TOKEN;
        return QD_OK;
    }
    if (!strcmp(type, "W8A8")) {
        float is, io;
        if ((s = qd_bind_scalar(c, "input_scale", &is)) || (s = qd_bind_scalar(c, "input_offset", &io))) return s;
        if (!(is > 0) || !isfinite(is)) return qd_fail(QD_EFORMAT, "layer '%s': input_scale is %g", c->module, is);
        const qd_ckpt_entry *qb;
        if ((s = qd_bind_require(c, "quant_bias", &qb))) return s;
        if (qb->tensor->dtype != QD_DTYPE_I32 || qb->tensor->elements != (uint64_t)n) {
            return qd_fail(QD_EFORMAT, "layer '%s': quant_bias must be I32 [%lld]", c->module, (long long)n);
        }
        float *deq;
        if ((s = float_vector(c, "deq_scale", n, 1, &deq))) return s;
        /* W = q · deq_scale / input_scale: the weight scale the export folded into deq_scale (§6.2) */
        float *ws = malloc(sizeof *ws * (size_t)n + 1);
        if (!ws) {
            free(deq);
            return qd_fail(QD_ENOMEM, "cannot allocate");
        }
        for (int64_t i = 0; i < n; i++) ws[i] = deq[i] / is;
        l->scheme = QD_SCHEME_INT8;
        snprintf(l->scheme_name, sizeof l->scheme_name, "w8a8_static");
        l->act = QD_ACT_STATIC_TENSOR;
        l->scale = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {n}, .data = ws, .owned = ws};
        l->scale2 = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {n}, .data = deq, .owned = deq};
        qd_view_of(qd_bind_find(c, "input_scale"), &l->input_scale);
        qd_view_of(qd_bind_find(c, "input_offset"), &l->input_offset);
        qd_view_of(qb, &l->zeros);
        return QD_OK; /* a float bias, if any, is already folded into quant_bias */
    }
    bool int4 = !strcmp(type, "W4A4_DYNAMIC");
    if (!int4 && strcmp(type, "W8A8_DYNAMIC") != 0) {
        return qd_fail(QD_EUNSUPPORTED, "layer '%s': No modelslim compatible scheme was found for type %s", c->module, type);
    }
    const qd_ckpt_entry *sc;
    if ((s = qd_bind_require(c, "weight_scale", &sc))) return s;
    int64_t groups = (int64_t)sc->tensor->elements / (n ? n : 1);
    if (groups < 1 || (uint64_t)(groups * n) != sc->tensor->elements || k % groups) {
        return qd_fail(QD_EFORMAT, "layer '%s': weight_scale has %llu elements; expected %lld (per channel) or %lld × groups",
                       c->module, (unsigned long long)sc->tensor->elements, (long long)n, (long long)n);
    }
    if (!int4 && groups != 1) return qd_fail(QD_EFORMAT, "layer '%s': W8A8_DYNAMIC scales are per channel [N,1]", c->module);
    if ((s = float_vector(c, "weight_scale", n, groups, &v))) return s;
    l->scale = (qd_view){.dtype = QD_DTYPE_F32, .rank = 2, .shape = {n, groups}, .data = v, .owned = v};
    if (qd_bind_find(c, "weight_offset")) {
        float *off;
        if ((s = float_vector(c, "weight_offset", n, groups, &off))) return s;
        l->zeros = (qd_view){.dtype = QD_DTYPE_F32, .rank = 2, .shape = {n, groups}, .data = off, .owned = off};
    }
    l->scheme = int4 ? QD_SCHEME_INT4 : QD_SCHEME_INT8;
    snprintf(l->scheme_name, sizeof l->scheme_name, int4 ? "w4a4_dynamic" : "w8a8_dynamic");
    l->act = QD_ACT_DYNAMIC_TOKEN;
    l->block_k = groups > 1 ? (int)(k / groups) : 0;
    return qd_bind_bias(c, n, l);
}

qd_status qd_quantize_int8(const float *w, int64_t n, int64_t k, qd_linear *l) {
    int8_t *q = qd_alloc_big((size_t)(n * k) + 1);
    float *sc = malloc(sizeof *sc * (size_t)n + 1);
    if (!q || !sc) {
        free(q);
        free(sc);
        return qd_fail(QD_ENOMEM, "cannot allocate an int8 weight of %lld×%lld", (long long)n, (long long)k);
    }
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n * k, QD_GRAIN_ELEMS)) /* rows are independent */
    for (int64_t r = 0; r < n; r++) {
        float amax = 0;
        for (int64_t j = 0; j < k; j++) amax = fmaxf(amax, fabsf(w[r * k + j]));
        float s = fmaxf(amax / 127.0f, 1.1920929e-7f); /* msModelSlim's floor at fp32 eps (formats.md §6.1) */
        sc[r] = s;
        for (int64_t j = 0; j < k; j++) q[r * k + j] = qd_f32_to_i8(w[r * k + j] / s);
    }
    l->scheme = QD_SCHEME_INT8;
    snprintf(l->scheme_name, sizeof l->scheme_name, "w8a8_dynamic");
    l->out_features = n;
    l->in_features = k;
    l->act = QD_ACT_DYNAMIC_TOKEN;
    l->weight = (qd_view){.dtype = QD_DTYPE_I8, .rank = 2, .shape = {n, k}, .data = q, .owned = q};
    l->scale = (qd_view){.dtype = QD_DTYPE_F32, .rank = 2, .shape = {n, 1}, .data = sc, .owned = sc};
    return QD_OK;
}

qd_status qd_dequantize_int(const qd_linear *l, float *out) {
    const int8_t *q = l->weight.data;
    int64_t n = l->out_features, k = l->in_features;
    int64_t groups = l->scale.rank == 2 ? l->scale.shape[1] : 1;
    bool static_w8a8 = l->act == QD_ACT_STATIC_TENSOR;
    for (int64_t r = 0; r < n; r++) {
        for (int64_t j = 0; j < k; j++) {
            int64_t g = j / (k / groups);
            float zero = (!static_w8a8 && l->zeros.data) ? qd_view_get(&l->zeros, r, g) : 0.0f;
            out[r * k + j] = ((float)q[r * k + j] - zero) * qd_view_get(&l->scale, r, g);
        }
    }
    return QD_OK;
}
