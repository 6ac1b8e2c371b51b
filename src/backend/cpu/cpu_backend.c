/* The CPU backend: memory, conversions, threads, and the op table (ops live in their own files). */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend/cpu/cpu.h"
#include "core/codec.h"
#include "core/mem.h"
#include "core/status.h"
#include "core/threads.h"

/* 64-byte aligned; large tensors on huge pages (core/mem.h) */
void *qd_cpu_alloc(size_t bytes) { return qd_alloc_big(bytes); }

void qd_cpu_free(void *p) { free(p); }

int qd_cpu_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

float qd_cpu_load(const qd_tensor *t, int64_t i) {
    switch (t->dtype) {
    case QD_DTYPE_F32: return ((const float *)t->data)[i];
    case QD_DTYPE_BF16: return qd_bf16_to_f32(((const uint16_t *)t->data)[i]);
    case QD_DTYPE_F16: return qd_f16_to_f32(((const uint16_t *)t->data)[i]);
    default: return 0.0f;
    }
}

void qd_cpu_store(qd_tensor *t, int64_t i, float v) {
    switch (t->dtype) {
    case QD_DTYPE_F32: ((float *)t->data)[i] = v; break;
    case QD_DTYPE_BF16: ((uint16_t *)t->data)[i] = qd_f32_to_bf16(v); break;
    case QD_DTYPE_F16: ((uint16_t *)t->data)[i] = qd_f32_to_f16(v); break;
    default: break;
    }
}

void qd_cpu_to_f32(const qd_tensor *t, int64_t offset, int64_t n, float *out) {
    int bytes = qd_dtype_bits(t->dtype) / 8;
    qd_decode_row(t->dtype, (const uint8_t *)t->data + offset * bytes, out, (size_t)n);
}

void qd_cpu_from_f32(qd_tensor *t, int64_t offset, int64_t n, const float *in) {
    int bytes = qd_dtype_bits(t->dtype) / 8;
    qd_encode_row(t->dtype, in, (uint8_t *)t->data + offset * bytes, (size_t)n);
}

static qd_status cpu_alloc(qd_backend *b, qd_tensor *t) {
    size_t bytes = qd_tensor_bytes(t);
    t->data = qd_cpu_alloc(bytes);
    if (!t->data) return qd_fail(QD_ENOMEM, "cpu: cannot allocate a %zu-byte tensor", bytes);
    t->backend = b;
    return QD_OK;
}

static void cpu_release(qd_backend *b, qd_tensor *t) {
    (void)b;
    qd_cpu_free(t->data);
    t->data = NULL;
}

static qd_status cpu_upload(qd_backend *b, qd_tensor *dst, const void *host) {
    (void)b;
    memcpy(dst->data, host, qd_tensor_bytes(dst));
    return QD_OK;
}

static qd_status cpu_download(qd_backend *b, const qd_tensor *src, void *host) {
    (void)b;
    memcpy(host, src->data, qd_tensor_bytes(src));
    return QD_OK;
}

static qd_status cpu_copy(qd_backend *b, const qd_tensor *src, qd_tensor *dst) {
    (void)b;
    int64_t n = qd_tensor_elements(src);
    if (n != qd_tensor_elements(dst)) {
        return qd_fail(QD_EINVAL, "cpu copy: %lld elements into %lld", (long long)n, (long long)qd_tensor_elements(dst));
    }
    if (src->dtype == dst->dtype) {
        memcpy(dst->data, src->data, qd_tensor_bytes(src));
        return QD_OK;
    }
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(n, QD_GRAIN_ELEMS))
    for (int64_t c = 0; c < (n + 4095) / 4096; c++) {
        float buf[4096];
        int64_t o = c * 4096, m = n - o < 4096 ? n - o : 4096;
        qd_cpu_to_f32(src, o, m, buf);
        qd_cpu_from_f32(dst, o, m, buf);
    }
    return QD_OK;
}

static void cpu_destroy(qd_backend *b) { free(b); }

static const qd_backend_ops cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .prepare_linear = qd_cpu_prepare_linear,
    .linear = qd_cpu_linear,
    .attention = qd_cpu_attention,
    .rms_norm = qd_cpu_rms_norm,
    .layer_norm = qd_cpu_layer_norm,
    .group_norm = qd_cpu_group_norm,
    .rope = qd_cpu_rope,
    .norm_modulate = qd_cpu_norm_modulate,
    .rms_norm_rope = qd_cpu_rms_norm_rope,
    .rms_norm_rope_cols = qd_cpu_rms_norm_rope_cols,
    .activation = qd_cpu_activation,
    .gated = qd_cpu_gated,
    .modulate = qd_cpu_modulate,
    .gated_add = qd_cpu_gated_add,
    .add = qd_cpu_add,
    .mul = qd_cpu_mul,
    .softmax = qd_cpu_softmax,
    .conv2d = qd_cpu_conv2d,
    .conv3d = qd_cpu_conv3d,
    .upsample_nearest = qd_cpu_upsample_nearest,
    .permute = qd_cpu_permute,
    .concat = qd_cpu_concat,
    .slice = qd_cpu_slice,
    .embedding = qd_cpu_embedding,
    .destroy = cpu_destroy,
};

qd_status qd_backend_cpu_create(qd_backend **out) {
    qd_backend *b = calloc(1, sizeof *b);
    if (!b) return qd_fail(QD_ENOMEM, "cannot allocate the CPU backend");
    b->ops = &cpu_ops;
    qd_cpu_isa_get();
    *out = b;
    return QD_OK;
}
