/* qd_linear views and the dequantization dispatch (see linear.h). */
#include "quant/linear.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/log.h"
#include "core/status.h"
#include "quant/schemes.h"

/* One row per scheme family: its name and its f32 reference. Binding is not a table: which family a
 * layer gets depends on the method and on the tensors (quant/plan.c). */
static const struct {
    const char *name;
    qd_status (*dequantize)(const qd_linear *l, float *out);
} scheme_table[QD_SCHEME_COUNT] = {
    [QD_SCHEME_DENSE] = {"dense", qd_dequantize_dense},
    [QD_SCHEME_FP8] = {"fp8", qd_dequantize_fp8},
    [QD_SCHEME_NVFP4] = {"nvfp4", qd_dequantize_nvfp4},
    [QD_SCHEME_MXFP4] = {"mxfp4", qd_dequantize_mx},
    [QD_SCHEME_MXFP8] = {"mxfp8", qd_dequantize_mx},
    [QD_SCHEME_SVDQ_INT4] = {"svdq_int4", qd_dequantize_svdq},
    [QD_SCHEME_SVDQ_NVFP4] = {"svdq_nvfp4", qd_dequantize_svdq},
    [QD_SCHEME_AWQ_W4A16] = {"awq_w4a16", qd_dequantize_awq},
    [QD_SCHEME_INT8] = {"int8", qd_dequantize_int},
    [QD_SCHEME_INT4] = {"int4", qd_dequantize_int},
};

const char *qd_scheme_family_name(qd_scheme_id s) { return (unsigned)s < QD_SCHEME_COUNT ? scheme_table[s].name : "?"; }

int64_t qd_view_elements(const qd_view *v) {
    if (!v->data) return 0;
    int64_t n = 1;
    for (int i = 0; i < v->rank; i++) n *= v->shape[i];
    return n;
}

uint64_t qd_linear_stored_bytes(const qd_linear *l) {
    const qd_view *views[] = {&l->weight, &l->scale,  &l->scale2,    &l->input_scale, &l->input_offset,
                              &l->bias,   &l->smooth, &l->lora_down, &l->lora_up,     &l->zeros};
    uint64_t total = 0;
    for (size_t i = 0; i < sizeof views / sizeof *views; i++) {
        uint64_t b = 0;
        if (qd_dtype_storage_bytes(views[i]->dtype, (uint64_t)qd_view_elements(views[i]), &b)) total += b;
    }
    return total;
}

float qd_view_get(const qd_view *v, int64_t r, int64_t c) {
    if (qd_view_elements(v) == 1) return qd_view_get_flat(v, 0);
    int64_t cols = v->rank >= 2 ? v->shape[v->rank - 1] : 1;
    return qd_view_get_flat(v, v->rank >= 2 ? r * cols + c : r);
}

float qd_view_get_flat(const qd_view *v, int64_t i) {
    const uint8_t *p = v->data;
    switch (v->dtype) {
    case QD_DTYPE_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case QD_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return qd_bf16_to_f32(h);
    }
    case QD_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return qd_f16_to_f32(h);
    }
    case QD_DTYPE_F8_E4M3: return qd_e4m3_to_f32(p[i]);
    case QD_DTYPE_F8_E5M2: return qd_e5m2_to_f32(p[i]);
    case QD_DTYPE_F8_E8M0: return qd_e8m0_to_f32(p[i]);
    case QD_DTYPE_U8: return (float)p[i];
    case QD_DTYPE_I8: return (float)(int8_t)p[i];
    case QD_DTYPE_I32: {
        int32_t x;
        memcpy(&x, p + 4 * i, 4);
        return (float)x;
    }
    case QD_DTYPE_I64: {
        int64_t x;
        memcpy(&x, p + 8 * i, 8);
        return (float)x;
    }
    default: return 0.0f;
    }
}

static void free_owned(qd_view *v) {
    if (v->owned_map) munmap(v->owned, v->owned_map);
    else free(v->owned);
    v->owned = NULL;
    v->owned_map = 0;
}

void qd_view_free(qd_view *v) {
    free_owned(v);
    memset(v, 0, sizeof *v);
}

qd_status qd_view_own(qd_view *v) {
    if (!v->data || v->owned) return QD_OK;
    const size_t bytes = (size_t)(qd_view_elements(v) * qd_dtype_bits(v->dtype) / 8);
    uint8_t *copy = malloc(bytes + 1);
    if (!copy) return qd_fail(QD_ENOMEM, "cannot allocate %zu bytes", bytes);
    memcpy(copy, v->data, bytes);
    v->data = copy;
    v->owned = copy;
    v->owned_map = 0;
    v->file_mapped = false;
    return QD_OK;
}

void qd_linear_free(qd_linear *l) {
    if (l->prepared && l->prepared_free) l->prepared_free(l->prepared);
    free(l->name);
    qd_view *views[] = {&l->weight, &l->scale, &l->scale2, &l->input_scale, &l->input_offset,
                        &l->bias,   &l->smooth, &l->lora_down, &l->lora_up, &l->zeros};
    for (size_t i = 0; i < sizeof views / sizeof *views; i++) qd_view_free(views[i]);
    memset(l, 0, sizeof *l);
}

/* Give a view's bytes back: free an owned copy, or drop the whole pages of a range in a checkpoint's file
 * mapping from this process (the mapping is read-only and shared: the pages stay valid, and a view of the
 * same tensor elsewhere would read them again from the file). Borrowed memory is left alone. */
static void release_view(qd_view *v) {
    if (!v->data) return;
    if (v->owned) {
        free_owned(v);
    } else if (v->file_mapped) {
        const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        const uintptr_t a = (uintptr_t)v->data;
        const uintptr_t b = a + (uintptr_t)qd_view_elements(v) * (uintptr_t)qd_dtype_bits(v->dtype) / 8;
        const uintptr_t first = (a + page - 1) / page * page, last = b / page * page;
        if (last > first) (void)madvise((void *)first, last - first, MADV_DONTNEED);
    }
    v->data = NULL;
}

void qd_linear_release_stored(qd_linear *l) {
    release_view(&l->weight);
    release_view(&l->scale);
    l->stored_released = true;
}

void qd_linear_bias_f32(const qd_linear *l, float *out) {
    const bool needs_weight = (l->scheme == QD_SCHEME_INT8 && l->act == QD_ACT_STATIC_TENSOR && l->zeros.data) ||
                              (l->scheme == QD_SCHEME_SVDQ_INT4 && l->act_unsigned);
    if (needs_weight && l->stored_released) {
        qd_log(QD_LOG_ERROR, "layer '%s': its effective bias needs the stored weight, which was released", l->name ? l->name : "?");
        for (int64_t n = 0; n < l->out_features; n++) out[n] = NAN;
        return;
    }
    if (l->scheme == QD_SCHEME_INT8 && l->act == QD_ACT_STATIC_TENSOR && l->zeros.data) {
        /* msModelSlim W8A8: y = (Σ q_x·q_w + quant_bias)·deq with q_x ≈ x/input_scale + input_offset, so the
           float bias is deq·(quant_bias + input_offset·Σ_k q_w) (formats.md §6.2) */
        float io = qd_view_get(&l->input_offset, 0, 0);
        const int8_t *q = l->weight.data;
        for (int64_t n = 0; n < l->out_features; n++) {
            double sum = 0;
            for (int64_t k = 0; k < l->in_features; k++) sum += q[n * l->in_features + k];
            out[n] = (float)(qd_view_get(&l->scale2, n, 0) * (qd_view_get(&l->zeros, n, 0) + io * sum));
        }
        return;
    }
    for (int64_t n = 0; n < l->out_features; n++) out[n] = l->bias.data ? qd_view_get(&l->bias, n, 0) : 0.0f;
    qd_svdq_add_shift_bias(l, out);
}

qd_status qd_linear_dequantize(const qd_linear *l, float *out) {
    if ((unsigned)l->scheme >= QD_SCHEME_COUNT) return qd_fail(QD_EINVAL, "%s: unknown scheme", l->name ? l->name : "?");
    if (l->stored_released) {
        return qd_fail(QD_EINVAL, "layer '%s': its stored weights were released when the backend prepared it; "
                                  "dequantize a layer bound without preparation", l->name ? l->name : "?");
    }
    return scheme_table[l->scheme].dequantize(l, out);
}
