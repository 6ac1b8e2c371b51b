/* FP8 E4M3 linears: per-tensor, per-channel and 128×128-block weight scales; static per-tensor or
 * dynamic per-token / per-token-group activations. Covers serialized fp8 (quant-sglang.md §4.3),
 * ModelOpt FP8 (§4.7), Comfy float8_e4m3fn markers (§4.11) and online fp8 / fp8_per_tensor
 * (§4.2, §4.4). Formats: formats.md §1. W[n,k] = e4m3(q[n,k]) · scale(n, k). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/mem.h"
#include "core/status.h"
#include "quant/schemes.h"
#include "core/threads.h"

static qd_status check_scales(const qd_bind_ctx *c, const qd_view *v) {
    for (int64_t i = 0; i < qd_view_elements(v); i++) {
        float x = qd_view_get_flat(v, i);
        if (!isfinite(x) || x < 0) {
            return qd_fail(QD_EFORMAT, "layer '%s': weight scale %lld is %g (expected a finite value ≥ 0)", c->module,
                           (long long)i, x);
        }
    }
    return QD_OK;
}

qd_status qd_bind_fp8(const qd_bind_ctx *c, qd_linear *l) {
    const qd_ckpt_entry *w, *sc;
    qd_status s = qd_bind_require(c, "weight", &w);
    if (s) return s;
    const qd_st_tensor *t = w->tensor;
    if (t->dtype != QD_DTYPE_F8_E4M3 || t->rank != 2) {
        return qd_fail(QD_EFORMAT, "layer '%s': an FP8 layer needs an F8_E4M3 [out, in] weight, got %s rank %d", c->module,
                       qd_dtype_name(t->dtype), t->rank);
    }
    int64_t n = t->shape[0], k = t->shape[1];
    l->scheme = QD_SCHEME_FP8;
    l->out_features = n;
    l->in_features = k;
    qd_view_of(w, &l->weight);
    bool block = c->cfg->block_n > 0 && c->cfg->method == QD_QM_FP8;
    const char *scale_name = block ? "weight_scale_inv" : "weight_scale";
    if (block && !qd_bind_find(c, scale_name) && qd_bind_find(c, "weight_scale")) scale_name = "weight_scale";
    if ((s = qd_bind_require(c, scale_name, &sc))) return s;
    qd_view_of(sc, &l->scale);
    if (sc->tensor->dtype != QD_DTYPE_F32 && sc->tensor->dtype != QD_DTYPE_BF16 && sc->tensor->dtype != QD_DTYPE_F16) {
        return qd_fail(QD_EFORMAT, "layer '%s': %s must be F32 (or BF16/F16), got %s", c->module, scale_name,
                       qd_dtype_name(sc->tensor->dtype));
    }
    uint64_t se = sc->tensor->elements;
    if (block) {
        int64_t bn = c->cfg->block_n, bk = c->cfg->block_k;
        int64_t gn = (n + bn - 1) / bn, gk = (k + bk - 1) / bk;
        /* [gn, gk], or that shape with its size-1 dims squeezed out (SGLang's convert_hf_to_fp8 writes
           scale.squeeze(): [gk] for a layer of at most bn rows, [] for one block) */
        const int64_t full[2] = {gn, gk};
        int64_t sq[2];
        int sr = 0;
        for (int i = 0; i < 2; i++)
            if (full[i] != 1) sq[sr++] = full[i];
        bool squeezed = sc->tensor->rank == sr;
        for (int i = 0; squeezed && i < sr; i++) squeezed = sc->tensor->shape[i] == sq[i];
        if (squeezed) {
            l->scale.rank = 2;
            l->scale.shape[0] = gn;
            l->scale.shape[1] = gk;
        }
        if (!squeezed && (sc->tensor->rank != 2 || sc->tensor->shape[0] != gn || sc->tensor->shape[1] != gk)) {
            return qd_fail(QD_EFORMAT, "layer '%s': block %lldx%lld scales must be [%lld, %lld] for a [%lld, %lld] weight",
                           c->module, (long long)bn, (long long)bk, (long long)gn, (long long)gk, (long long)n, (long long)k);
        }
        l->block_n = (int)bn;
        l->block_k = (int)bk;
        l->act = QD_ACT_DYNAMIC_GROUP;
        l->act_group = (int)bk;
        snprintf(l->scheme_name, sizeof l->scheme_name, "fp8_block");
    } else if (se == 1) {
        snprintf(l->scheme_name, sizeof l->scheme_name, "fp8_tensor");
    } else if (se == (uint64_t)n && (sc->tensor->rank == 1 || (sc->tensor->rank == 2 && sc->tensor->shape[1] == 1))) {
        /* [N] or [N, 1]: one scale per output channel; normalise to rank 1 */
        l->scale.rank = 1;
        l->scale.shape[0] = n;
        snprintf(l->scheme_name, sizeof l->scheme_name, "fp8_channel");
    } else {
        return qd_fail(QD_EFORMAT, "layer '%s': %s has %llu elements; expected 1 (per tensor) or %lld (per channel)",
                       c->module, scale_name, (unsigned long long)se, (long long)n);
    }
    if (!c->dry && (s = check_scales(c, &l->scale))) return s;
    if (!block) {
        /* activations: static when the checkpoint carries input_scale and says so, else dynamic per token */
        const char *scheme = c->layer_type ? json_string_value(json_object_get(c->layer_type, "_activation_scheme")) : NULL;
        bool want_static = scheme ? !strcmp(scheme, "static")
                                  : (c->cfg->fp8_static_activation || c->cfg->method == QD_QM_MODELOPT_FP8 ||
                                     c->cfg->method == QD_QM_MODELOPT);
        const qd_ckpt_entry *in = qd_bind_find(c, "input_scale");
        if (want_static && !in && c->cfg->method == QD_QM_FP8) {
            return qd_fail(QD_EFORMAT, "layer '%s': activation_scheme static needs '%s.input_scale'", c->module, c->module);
        }
        if (want_static && in && c->dry) {
            qd_view_of(in, &l->input_scale);
            l->act = QD_ACT_STATIC_TENSOR;
        } else if (want_static && in) {
            float v;
            if ((s = qd_bind_scalar(c, "input_scale", &v))) return s;
            if (!isfinite(v) || v <= 0) {
                return qd_fail(QD_EFORMAT, "layer '%s': input_scale is %g (expected a positive finite value)", c->module, v);
            }
            qd_view_of(in, &l->input_scale);
            l->act = QD_ACT_STATIC_TENSOR;
        } else {
            l->act = QD_ACT_DYNAMIC_TOKEN;
        }
    }
    return qd_bind_bias(c, n, l);
}

qd_status qd_quantize_fp8(const float *w, int64_t n, int64_t k, bool per_tensor, qd_linear *l) {
    uint8_t *q = qd_alloc_big((size_t)(n * k));
    float *sc = malloc(sizeof(float) * (size_t)(per_tensor ? 1 : n));
    if (!q || !sc) {
        free(q);
        free(sc);
        return qd_fail(QD_ENOMEM, "cannot allocate an FP8 weight of %lld×%lld", (long long)n, (long long)k);
    }
    float tensor_amax = 0;
    if (per_tensor) {
#pragma omp parallel for reduction(max : tensor_amax) schedule(static) num_threads(qd_threads_for(n * k, QD_GRAIN_ELEMS))
        for (int64_t i = 0; i < n * k; i++) tensor_amax = fmaxf(tensor_amax, fabsf(w[i]));
    }
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n * k, QD_GRAIN_ELEMS)) /* rows are independent */
    for (int64_t r = 0; r < n; r++) {
        float amax = tensor_amax;
        if (!per_tensor) {
            amax = 0;
            for (int64_t j = 0; j < k; j++) amax = fmaxf(amax, fabsf(w[r * k + j]));
        }
        /* amax/448 with a floor so an all-zero row divides safely (SGLang clamps likewise) */
        float s = fmaxf(amax / 448.0f, 1e-12f);
        if (!per_tensor) sc[r] = s;
        else sc[0] = s;
        for (int64_t j = 0; j < k; j++) q[r * k + j] = qd_f32_to_e4m3(w[r * k + j] / s);
    }
    l->scheme = QD_SCHEME_FP8;
    l->out_features = n;
    l->in_features = k;
    l->act = QD_ACT_DYNAMIC_TOKEN;
    snprintf(l->scheme_name, sizeof l->scheme_name, per_tensor ? "fp8_tensor" : "fp8_channel");
    l->weight = (qd_view){.dtype = QD_DTYPE_F8_E4M3, .rank = 2, .shape = {n, k}, .data = q, .owned = q};
    l->scale = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {per_tensor ? 1 : n}, .data = sc, .owned = sc};
    return QD_OK;
}

/* The scale that applies to element (r, j). */
static float fp8_scale_at(const qd_linear *l, int64_t r, int64_t j) {
    if (l->block_n) return qd_view_get(&l->scale, r / l->block_n, j / l->block_k);
    if (qd_view_elements(&l->scale) == 1) return qd_view_get(&l->scale, 0, 0);
    return qd_view_get(&l->scale, r, 0);
}

qd_status qd_dequantize_fp8(const qd_linear *l, float *out) {
    const uint8_t *q = l->weight.data;
    for (int64_t r = 0; r < l->out_features; r++)
        for (int64_t j = 0; j < l->in_features; j++)
            out[r * l->in_features + j] = qd_e4m3_to_f32(q[r * l->in_features + j]) * fp8_scale_at(l, r, j);
    return QD_OK;
}
