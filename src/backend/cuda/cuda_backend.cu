/* The CUDA backend: device selection, memory (stream-ordered allocations on one stream), transfers,
 * dtype copies, and the op table (ops live in their own files). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.cuh"

qd_status qd_cuda_fail(cudaError_t e, const char *what) {
    return qd_fail(QD_EDEVICE, "cuda %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

qd_status qd_cuda_scratch(qd_cuda *c, size_t bytes, void **out) {
    *out = NULL;
    if (!bytes) bytes = 1;
    QD_CUDA_TRY(cudaMallocAsync(out, bytes, c->stream), "scratch allocation");
    return QD_OK;
}

void qd_cuda_scratch_free(qd_cuda *c, void *p) {
    if (p) cudaFreeAsync(p, c->stream);
}

static qd_status cuda_alloc(qd_backend *b, qd_tensor *t) {
    qd_cuda *c = qd_cuda_of(b);
    size_t bytes = qd_tensor_bytes(t);
    void *p = NULL;
    cudaError_t e = cudaMallocAsync(&p, bytes ? bytes : 1, c->stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return qd_fail(QD_ENOMEM, "cuda: cannot allocate a %zu-byte tensor on %s (%s)", bytes, c->name, cudaGetErrorString(e));
    }
    t->data = p;
    t->backend = b;
    return QD_OK;
}

static void cuda_release(qd_backend *b, qd_tensor *t) {
    if (t->data) cudaFreeAsync(t->data, qd_cuda_of(b)->stream);
    t->data = NULL;
}

static qd_status cuda_upload(qd_backend *b, qd_tensor *dst, const void *host) {
    qd_cuda *c = qd_cuda_of(b);
    /* pageable host memory: the copy is staged by the driver and returns once the source is read */
    QD_CUDA_TRY(cudaMemcpyAsync(dst->data, host, qd_tensor_bytes(dst), cudaMemcpyHostToDevice, c->stream), "upload");
    return QD_OK;
}

static qd_status cuda_download(qd_backend *b, const qd_tensor *src, void *host) {
    qd_cuda *c = qd_cuda_of(b);
    QD_CUDA_TRY(cudaMemcpyAsync(host, src->data, qd_tensor_bytes(src), cudaMemcpyDeviceToHost, c->stream), "download");
    QD_CUDA_TRY(cudaStreamSynchronize(c->stream), "download (stream)");
    return QD_OK;
}

__global__ void convert_kernel(const void *src, int st, void *dst, int dt, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        qd_st(dst, dt, i, qd_ld(src, st, i));
}

extern "C" qd_status qd_cuda_copy(qd_backend *b, const qd_tensor *src, qd_tensor *dst) {
    qd_cuda *c = qd_cuda_of(b);
    const int64_t n = qd_tensor_elements(src);
    if (n != qd_tensor_elements(dst)) {
        return qd_fail(QD_EINVAL, "cuda copy: %lld elements into %lld", (long long)n, (long long)qd_tensor_elements(dst));
    }
    if (src->dtype == dst->dtype) {
        QD_CUDA_TRY(cudaMemcpyAsync(dst->data, src->data, qd_tensor_bytes(src), cudaMemcpyDeviceToDevice, c->stream), "copy");
        return QD_OK;
    }
    if (!qd_cuda_float_dtype(src->dtype) || !qd_cuda_float_dtype(dst->dtype)) {
        return qd_fail(QD_EUNSUPPORTED, "cuda copy: %s to %s (converts F32/BF16/F16 only)", qd_dtype_name(src->dtype),
                       qd_dtype_name(dst->dtype));
    }
    convert_kernel<<<qd_cuda_blocks(n, 256), 256, 0, c->stream>>>(src->data, src->dtype, dst->data, dst->dtype, n);
    QD_CUDA_LAUNCHED("copy");
    return QD_OK;
}

static void cuda_destroy(qd_backend *b) {
    if (!b) return;
    qd_cuda *c = qd_cuda_of(b);
    if (c) {
        cudaStreamSynchronize(c->stream);
        if (c->lt_workspace) cudaFree(c->lt_workspace);
        if (c->lt) cublasLtDestroy(c->lt);
        cudaStreamDestroy(c->stream);
        free(c);
    }
    free(b);
}

static const qd_backend_ops cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .release = cuda_release,
    .upload = cuda_upload,
    .download = cuda_download,
    .copy = qd_cuda_copy,
    .prepare_linear = qd_cuda_prepare_linear,
    .linear = qd_cuda_linear,
    .attention = qd_cuda_attention,
    .rms_norm = qd_cuda_rms_norm,
    .layer_norm = qd_cuda_layer_norm,
    .group_norm = qd_cuda_group_norm,
    .rope = qd_cuda_rope,
    .activation = qd_cuda_activation,
    .gated = qd_cuda_gated,
    .modulate = qd_cuda_modulate,
    .gated_add = qd_cuda_gated_add,
    .add = qd_cuda_add,
    .mul = qd_cuda_mul,
    .softmax = qd_cuda_softmax,
    .conv2d = qd_cuda_conv2d,
    .conv3d = qd_cuda_conv3d,
    .upsample_nearest = qd_cuda_upsample_nearest,
    .permute = qd_cuda_permute,
    .concat = qd_cuda_concat,
    .slice = qd_cuda_slice,
    .embedding = qd_cuda_embedding,
    .destroy = cuda_destroy,
};

extern "C" bool qd_backend_cuda_built(void) { return true; }

extern "C" qd_status qd_backend_cuda_create(int device, qd_backend **out) {
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        return qd_fail(QD_EDEVICE, "cuda: no usable GPU (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    if (device < 0 || device >= count) return qd_fail(QD_EINVAL, "cuda: device %d does not exist (%d found)", device, count);
    QD_CUDA_TRY(cudaSetDevice(device), "set device");
    qd_backend *b = (qd_backend *)calloc(1, sizeof *b);
    qd_cuda *c = (qd_cuda *)calloc(1, sizeof *c);
    if (!b || !c) {
        free(b), free(c);
        return qd_fail(QD_ENOMEM, "cannot allocate the CUDA backend");
    }
    b->ops = &cuda_ops;
    b->impl = c;
    c->device = device;
    cudaDeviceProp p;
    qd_status s = QD_OK;
    if ((e = cudaGetDeviceProperties(&p, device)) != cudaSuccess) s = qd_cuda_fail(e, "device properties");
    if (!s) {
        snprintf(c->name, sizeof c->name, "%s", p.name);
        c->sm_count = p.multiProcessorCount;
        c->cc_major = p.major, c->cc_minor = p.minor;
        if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) s = qd_cuda_fail(e, "stream");
    }
    if (!s) {
        /* keep freed stream-ordered memory in the pool instead of returning it at every sync */
        cudaMemPool_t pool;
        if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
            uint64_t keep = UINT64_MAX;
            cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
        }
        if (cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) s = qd_fail(QD_EDEVICE, "cuda: cublasLtCreate failed");
    }
    if (!s) {
        c->lt_workspace_bytes = 64u << 20;
        if ((e = cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes)) != cudaSuccess) s = qd_cuda_fail(e, "cuBLASLt workspace");
    }
    if (s) {
        cuda_destroy(b);
        return s;
    }
    qd_log(QD_LOG_INFO, "cuda: %s (sm_%d%d, %d SMs)", c->name, c->cc_major, c->cc_minor, c->sm_count);
    *out = b;
    return QD_OK;
}
