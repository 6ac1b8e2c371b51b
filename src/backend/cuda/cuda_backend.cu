/* The CUDA backend: device selection, memory (stream-ordered allocations on one stream), transfers,
 * dtype copies, and the op table (ops live in their own files). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* ---- step graphs: stream capture into a CUDA graph, replayed with one launch ---- */

static qd_status cuda_graph_begin(qd_backend *b) {
    qd_cuda *c = qd_cuda_of(b);
    if (!c->use_graphs) return qd_fail(QD_EUNSUPPORTED, "cuda graphs are off (QDIT_CUDA_GRAPH=0, or QDIT_CUDA_PROFILE times ops one by one)");
    /* thread-local: a forbidden call from this thread (a synchronous copy, cudaMalloc) fails the recording
       instead of running at the wrong time */
    qd_status s = qd_cuda_ahead_recording_begin(c); /* nothing staged op by op runs beside a replay */
    if (s) return s;
    QD_CUDA_TRY(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal), "graph recording");
    qd_cuda_offload_recording_begin(c);
    return QD_OK;
}

static qd_status cuda_graph_end(qd_backend *b, void **out) {
    qd_cuda *c = qd_cuda_of(b);
    *out = NULL;
    cudaGraph_t g = NULL;
    const qd_status joined = qd_cuda_ahead_recording_end(c); /* a capture must end with its side stream joined */
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (joined && e == cudaSuccess) e = cudaErrorStreamCaptureUnjoined;
    qd_cuda_offload_recording_end(c, e == cudaSuccess && g);
    if (e != cudaSuccess || !g) {
        cudaGetLastError();
        if (g) cudaGraphDestroy(g);
        return qd_cuda_fail(e != cudaSuccess ? e : cudaErrorStreamCaptureInvalidated, "graph recording (an op could not be recorded)");
    }
    cudaGraphExec_t x = NULL;
    /* auto-free: an allocation the step leaves unfreed is released before the next launch instead of
       making relaunching fail */
    e = cudaGraphInstantiateWithFlags(&x, g, cudaGraphInstantiateFlagAutoFreeOnLaunch);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return qd_cuda_fail(e, "graph instantiation");
    }
    if ((e = cudaGraphUpload(x, c->stream)) != cudaSuccess) {
        cudaGraphExecDestroy(x);
        return qd_cuda_fail(e, "graph upload");
    }
    /* the graph holds its own activations now: hand back what the op-by-op runs left cached in the pool */
    cudaMemPool_t pool;
    if (cudaStreamSynchronize(c->stream) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, c->device) == cudaSuccess)
        cudaMemPoolTrimTo(pool, 0);
    *out = x;
    return QD_OK;
}

static qd_status cuda_graph_launch(qd_backend *b, void *graph) {
    QD_CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)graph, qd_cuda_of(b)->stream), "graph launch");
    return QD_OK;
}

static void cuda_graph_free(qd_backend *b, void *graph) {
    if (!graph) return;
    cudaStreamSynchronize(qd_cuda_of(b)->stream);
    cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

static void cuda_destroy(qd_backend *b) {
    if (!b) return;
    if (b->impl && qd_cuda_of(b)->ops_owned) free((void *)b->ops); /* the profiling table */
    qd_cuda *c = qd_cuda_of(b);
    if (c) {
        cudaStreamSynchronize(c->stream);
        qd_cuda_offload_free(c);
        qd_cuda_ahead_free(c);
        qd_cuda_plans_free(c);
        qd_cudnn_free(c);
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
    .norm_modulate = qd_cuda_norm_modulate,
    .takes_fp8_tokens = qd_cuda_takes_fp8_tokens,
    .norm_modulate_fp8 = qd_cuda_norm_modulate_fp8,
    .linear_fp8_tokens = qd_cuda_linear_fp8_tokens,
    .fp8_codes_between = qd_cuda_fp8_codes_between,
    .linear_fp8_codes = qd_cuda_linear_fp8_codes,
    .linear_fused_codes = qd_cuda_linear_fused_codes,
    .rms_norm_gated_add = qd_cuda_rms_norm_gated_add,
    .rms_norm_rope = qd_cuda_rms_norm_rope,
    .rms_norm_rope_cols = qd_cuda_rms_norm_rope_cols,
    .activation = qd_cuda_activation,
    .gated = qd_cuda_gated,
    .swiglu = qd_cuda_swiglu,
    .swiglu_fp8 = qd_cuda_swiglu_fp8,
    .modulate = qd_cuda_modulate,
    .gated_add = qd_cuda_gated_add,
    .linear_fused = qd_cuda_linear_fused,
    .linear_many = qd_cuda_linear_many,
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
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
    .weights_group = qd_cuda_weights_group,
    .weights_fetch = qd_cuda_weights_fetch,
    .weights_fetch_all = qd_cuda_weights_fetch_all,
    .weights_evict_all = qd_cuda_weights_evict_all,
    .weights_release = qd_cuda_weights_release,
    .linears_ahead = qd_cuda_linears_ahead,
    .memory_info = qd_cuda_memory_info,
    .destroy = cuda_destroy,
    .fuse_projections = true,
};

/* ---- QDIT_CUDA_PROFILE=1: each op bracketed by two CUDA events on the stream (nothing synchronises, so
   the GPU runs as it would), summed per op kind; a table at destroy. The sum of the ops' GPU times against
   a step's wall time shows how much of the step is gaps between kernels (launch and host overhead). ---- */

enum { P_LINEAR, P_LINEAR_SMALL, P_LINEAR_MID, P_LINEAR_FUSED, P_ATTN, P_RMS, P_LN, P_GN, P_ROPE, P_NORM_MOD, P_RMS_ROPE, P_ACT, P_GATED, P_SWIGLU, P_NORM_ADD, P_MOD, P_GADD, P_ADD, P_MUL,
       P_SOFTMAX, P_CONV2D, P_CONV3D, P_UPS, P_PERM, P_CONCAT, P_SLICE, P_EMB, P_COPY, P_COUNT };
static const char *const prof_names[P_COUNT] = {"linear", "linear M<=16", "linear M<=1024", "linear_fused", "attention", "rms_norm", "layer_norm", "group_norm", "rope",
                                                "norm_modulate", "rms_norm_rope", "activation",
                                                "gated", "swiglu", "rms_norm_gated_add", "modulate", "gated_add", "add", "mul", "softmax", "conv2d", "conv3d",
                                                "upsample", "permute", "concat", "slice", "embedding", "copy"};
static double prof_ms[P_COUNT];
static long prof_n[P_COUNT];
enum { PROF_PENDING = 4096 };
static struct {
    cudaEvent_t a, b;
    int kind;
} prof_ev[PROF_PENDING];
static int prof_used, prof_made;

/* read back the pending events' times (waits for them) */
static void prof_flush(void) {
    if (!prof_used) return;
    cudaEventSynchronize(prof_ev[prof_used - 1].b);
    for (int i = 0; i < prof_used; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, prof_ev[i].a, prof_ev[i].b) == cudaSuccess) prof_ms[prof_ev[i].kind] += ms;
        prof_n[prof_ev[i].kind]++;
    }
    prof_used = 0;
}

static int prof_begin(qd_backend *b) {
    if (prof_used == PROF_PENDING) prof_flush();
    const int i = prof_used++;
    if (i == prof_made) {
        cudaEventCreate(&prof_ev[i].a), cudaEventCreate(&prof_ev[i].b);
        prof_made++;
    }
    cudaEventRecord(prof_ev[i].a, qd_cuda_of(b)->stream);
    return i;
}

#define PROF(idx, call)                                                                                        \
    do {                                                                                                       \
        const int e_ = prof_begin(b);                                                                          \
        const qd_status s_ = (call);                                                                           \
        prof_ev[e_].kind = (idx);                                                                              \
        cudaEventRecord(prof_ev[e_].b, qd_cuda_of(b)->stream);                                                 \
        return s_;                                                                                             \
    } while (0)

extern "C" void qd_backend_cuda_profile_reset(void) {
    prof_flush();
    memset(prof_ms, 0, sizeof prof_ms);
    memset(prof_n, 0, sizeof prof_n);
}

static qd_status p_linear(qd_backend *b, qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const int64_t k = x->rank ? x->shape[x->rank - 1] : 1, rows = k ? qd_tensor_elements(x) / k : 0;
    PROF(rows <= 16 ? P_LINEAR_SMALL : rows <= 1024 ? P_LINEAR_MID : P_LINEAR, qd_cuda_linear(b, l, x, y));
}
static qd_status p_linear_many(qd_backend *b, qd_linear *const *ls, int n, const qd_tensor *x, qd_tensor *const *ys) {
    PROF(P_LINEAR_SMALL, qd_cuda_linear_many(b, ls, n, x, ys));
}
static qd_status p_linear_fused(qd_backend *b, qd_linear *l, const qd_tensor *const *xs, int n, const qd_tensor *g, const qd_tensor *r, qd_tensor *y) {
    PROF(P_LINEAR_FUSED, qd_cuda_linear_fused(b, l, xs, n, g, r, y)); /* (its composed fallback's ops are counted twice) */
}
static qd_status p_attention(qd_backend *b, const qd_attn_args *a, qd_tensor *o) { PROF(P_ATTN, qd_cuda_attention(b, a, o)); }
static qd_status p_rms(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, qd_tensor *y) { PROF(P_RMS, qd_cuda_rms_norm(b, x, w, eps, y)); }
static qd_status p_ln(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bi, float eps, qd_tensor *y) {
    PROF(P_LN, qd_cuda_layer_norm(b, x, w, bi, eps, y));
}
static qd_status p_gn(qd_backend *b, const qd_tensor *x, int g, const qd_tensor *w, const qd_tensor *bi, float eps, qd_tensor *y) {
    PROF(P_GN, qd_cuda_group_norm(b, x, g, w, bi, eps, y));
}
static qd_status p_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *c, const qd_tensor *sn, qd_rope_mode m, qd_tensor *y) {
    PROF(P_ROPE, qd_cuda_rope(b, x, c, sn, m, y));
}
static qd_status p_norm_mod(qd_backend *b, qd_norm_kind k, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *sc,
                            const qd_tensor *sh, qd_tensor *y) {
    PROF(P_NORM_MOD, qd_cuda_norm_modulate(b, k, x, w, eps, sc, sh, y));
}
static qd_status p_norm_mod_fp8(qd_backend *b, qd_norm_kind k, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *sc,
                                const qd_tensor *sh, float fixed, qd_tensor *q, qd_tensor *rs) {
    PROF(P_NORM_MOD, qd_cuda_norm_modulate_fp8(b, k, x, w, eps, sc, sh, fixed, q, rs));
}
static qd_status p_linear_fp8_tokens(qd_backend *b, qd_linear *l, const qd_tensor *q, const qd_tensor *rs, qd_tensor *y) {
    const int64_t k = q->rank ? q->shape[q->rank - 1] : 1, rows = k ? qd_tensor_elements(q) / k : 0;
    PROF(rows <= 16 ? P_LINEAR_SMALL : rows <= 1024 ? P_LINEAR_MID : P_LINEAR, qd_cuda_linear_fp8_tokens(b, l, q, rs, y));
}
static qd_status p_linear_fp8_codes(qd_backend *b, qd_linear *l, const qd_tensor *q, const qd_tensor *rs, const qd_linear *to, qd_tensor *o,
                                    int64_t col) {
    const int64_t k = q->rank ? q->shape[q->rank - 1] : 1, rows = k ? qd_tensor_elements(q) / k : 0;
    PROF(rows <= 16 ? P_LINEAR_SMALL : rows <= 1024 ? P_LINEAR_MID : P_LINEAR, qd_cuda_linear_fp8_codes(b, l, q, rs, to, o, col));
}
static qd_status p_linear_fused_codes(qd_backend *b, qd_linear *l, qd_tensor *q, const qd_tensor *const *xs, const int64_t *cols, int n,
                                      const qd_tensor *g, const qd_tensor *r, qd_tensor *y) {
    PROF(P_LINEAR_FUSED, qd_cuda_linear_fused_codes(b, l, q, xs, cols, n, g, r, y));
}
static qd_status p_rms_rope(qd_backend *b, const qd_tensor *x, const qd_tensor *w, float eps, const qd_tensor *c, const qd_tensor *sn,
                            qd_rope_mode m, qd_tensor *y) {
    PROF(P_RMS_ROPE, qd_cuda_rms_norm_rope(b, x, w, eps, c, sn, m, y));
}
static qd_status p_rms_rope_cols(qd_backend *b, const qd_tensor *x, int64_t col, const qd_tensor *w, float eps, const qd_tensor *c, const qd_tensor *sn,
                                 qd_rope_mode m, qd_tensor *y) {
    PROF(P_RMS_ROPE, qd_cuda_rms_norm_rope_cols(b, x, col, w, eps, c, sn, m, y));
}
static qd_status p_act(qd_backend *b, qd_act_kind k, const qd_tensor *x, qd_tensor *y) { PROF(P_ACT, qd_cuda_activation(b, k, x, y)); }
static qd_status p_gated(qd_backend *b, qd_act_kind k, bool gf, const qd_tensor *x, qd_tensor *y) { PROF(P_GATED, qd_cuda_gated(b, k, gf, x, y)); }
static qd_status p_norm_add(qd_backend *b, const qd_tensor *o, const qd_tensor *w, float eps, const qd_tensor *g, qd_tensor *x, const qd_tensor *nw,
                             const qd_tensor *nsc, qd_tensor *ny, float fixed, qd_tensor *q, qd_tensor *rs) {
    PROF(P_NORM_ADD, qd_cuda_rms_norm_gated_add(b, o, w, eps, g, x, nw, nsc, ny, fixed, q, rs));
}
static qd_status p_swiglu(qd_backend *b, const qd_tensor *x, int64_t g, int64_t v, qd_tensor *y) { PROF(P_SWIGLU, qd_cuda_swiglu(b, x, g, v, y)); }
static qd_status p_swiglu_fp8(qd_backend *b, const qd_tensor *x, int64_t g, int64_t v, float fixed, qd_tensor *q, qd_tensor *rs) {
    PROF(P_SWIGLU, qd_cuda_swiglu_fp8(b, x, g, v, fixed, q, rs));
}
static qd_status p_mod(qd_backend *b, const qd_tensor *x, const qd_tensor *sc, const qd_tensor *sh, qd_tensor *y) {
    PROF(P_MOD, qd_cuda_modulate(b, x, sc, sh, y));
}
static qd_status p_gadd(qd_backend *b, const qd_tensor *r, const qd_tensor *x, const qd_tensor *g, qd_tensor *y) {
    PROF(P_GADD, qd_cuda_gated_add(b, r, x, g, y));
}
static qd_status p_add(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) { PROF(P_ADD, qd_cuda_add(b, a, c, y)); }
static qd_status p_mul(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) { PROF(P_MUL, qd_cuda_mul(b, a, c, y)); }
static qd_status p_softmax(qd_backend *b, const qd_tensor *x, qd_tensor *y) { PROF(P_SOFTMAX, qd_cuda_softmax(b, x, y)); }
static qd_status p_conv2d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bi, const qd_conv_args *c, qd_tensor *y) {
    PROF(P_CONV2D, qd_cuda_conv2d(b, x, w, bi, c, y));
}
static qd_status p_conv3d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bi, const qd_conv_args *c, qd_tensor *y) {
    PROF(P_CONV3D, qd_cuda_conv3d(b, x, w, bi, c, y));
}
static qd_status p_ups(qd_backend *b, const qd_tensor *x, int f, qd_tensor *y) { PROF(P_UPS, qd_cuda_upsample_nearest(b, x, f, y)); }
static qd_status p_perm(qd_backend *b, const qd_tensor *x, const int *perm, qd_tensor *y) { PROF(P_PERM, qd_cuda_permute(b, x, perm, y)); }
static qd_status p_concat(qd_backend *b, const qd_tensor *const *xs, int n, int dim, qd_tensor *y) { PROF(P_CONCAT, qd_cuda_concat(b, xs, n, dim, y)); }
static qd_status p_slice(qd_backend *b, const qd_tensor *x, int dim, int64_t st, int64_t len, qd_tensor *y) {
    PROF(P_SLICE, qd_cuda_slice(b, x, dim, st, len, y));
}
static qd_status p_emb(qd_backend *b, const qd_tensor *t, const qd_tensor *ids, qd_tensor *y) { PROF(P_EMB, qd_cuda_embedding(b, t, ids, y)); }
static qd_status p_copy(qd_backend *b, const qd_tensor *src, qd_tensor *dst) { PROF(P_COPY, qd_cuda_copy(b, src, dst)); }

static void prof_report(void) {
    prof_flush();
    double total = 0;
    for (int i = 0; i < P_COUNT; i++) total += prof_ms[i];
    if (total <= 0) return;
    fprintf(stderr, "cuda profile (GPU time between events around each op): %.1f ms in ops\n", total);
    for (int i = 0; i < P_COUNT; i++)
        if (prof_n[i]) fprintf(stderr, "  %-12s %8ld calls %10.2f ms %5.1f%%  %8.1f us/call\n", prof_names[i], prof_n[i], prof_ms[i],
                               100 * prof_ms[i] / total, prof_ms[i] / prof_n[i] * 1e3);
}

static void cuda_destroy(qd_backend *b);
static void cuda_destroy_prof(qd_backend *b) {
    prof_report();
    cuda_destroy(b);
}

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
    const char *dnn = getenv("QDIT_CUDNN");
    c->use_cudnn = !(dnn && !strcmp(dnn, "0"));
    if (!c->use_cudnn) qd_log(QD_LOG_INFO, "cuda: QDIT_CUDNN=0: attention runs on qdit's own kernels");
    const char *graphs = getenv("QDIT_CUDA_GRAPH"), *prof = getenv("QDIT_CUDA_PROFILE");
    const bool profiling = prof && *prof && strcmp(prof, "0");
    c->use_graphs = !(graphs && !strcmp(graphs, "0")) && !profiling;
    const char *epi = getenv("QDIT_CUDA_GELU_EPILOGUE");
    c->gelu_epilogue = !(epi && !strcmp(epi, "0"));
    c->fp8_unfused = getenv("QDIT_CUDA_FP8_UNFUSED") != NULL;
    c->w4_no_gemv = getenv("QDIT_CUDA_W4_NO_GEMV") != NULL;
    c->no_gemv = getenv("QDIT_CUDA_NO_GEMV") != NULL;
    c->int8_cores = getenv("QDIT_CUDA_INT8_CORES") != NULL;
    c->int8_lt = getenv("QDIT_CUDA_INT8_LT") != NULL;
    c->int8_coop = getenv("QDIT_CUDA_INT8_COOP") != NULL;
    c->linear_unfused = getenv("QDIT_CUDA_LINEAR_UNFUSED") != NULL;
    c->fp8_precise = getenv("QDIT_CUDA_FP8_PRECISE") != NULL;
    c->fp8_codes_fallback = getenv("QDIT_CUDA_FP8_CODES_FALLBACK") != NULL;
    c->no_ahead = getenv("QDIT_CUDA_NO_AHEAD") != NULL;
    c->expand_ref = getenv("QDIT_CUDA_EXPAND_REF") != NULL;
    c->svdq_lr_lt = getenv("QDIT_CUDA_SVDQ_LR_LT") != NULL;
    c->svdq_amax_pass = getenv("QDIT_CUDA_SVDQ_AMAX_PASS") != NULL;
    c->quant_div = getenv("QDIT_CUDA_QUANT_DIV") != NULL;
    c->no_many = getenv("QDIT_CUDA_NO_MANY") != NULL;
    c->w4_gemv_pf = getenv("QDIT_CUDA_W4_GEMV_PF") != NULL;
    c->quant_smem = !(getenv("QDIT_CUDA_QUANT_SMEM") && !strcmp(getenv("QDIT_CUDA_QUANT_SMEM"), "0"));
    const char *qw = getenv("QDIT_CUDA_QUANT_WARP");
    c->quant_warp = qw && (atoi(qw) == 0 || atoi(qw) == 1) ? atoi(qw) : -1;
    const char *rh = getenv("QDIT_CUDA_ROPE_HEADS");
    c->rope_heads = rh && (atoi(rh) == 1 || atoi(rh) == 2 || atoi(rh) == 4) ? atoi(rh) : 0;
    const char *qb = getenv("QDIT_CUDA_QUANT_BATCH"), *lps = getenv("QDIT_CUDA_SVDQ_LRD_PER_SM");
    c->quant_batch = qb && atoi(qb) >= 1 && atoi(qb) <= QD_ROW_BATCH ? atoi(qb) : QD_ROW_BATCH;
    c->lrd_per_sm = lps && atoi(lps) >= 1 && atoi(lps) <= 16 ? atoi(lps) : 4;
    const char *qt = getenv("QDIT_CUDA_SVDQ_QUANT_THREADS");
    c->svdq_quant_threads = qt && atoi(qt) >= 64 && atoi(qt) <= 1024 && atoi(qt) % 32 == 0 ? atoi(qt) : 0;
    const char *at = getenv("QDIT_CUDA_QUANT_THREADS");
    c->quant_threads = at && atoi(at) >= 64 && atoi(at) <= 1024 && atoi(at) % 32 == 0 ? atoi(at) : 0;
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
    if (profiling) {
        qd_backend_ops *po = (qd_backend_ops *)malloc(sizeof *po);
        if (po) {
            *po = cuda_ops;
            po->linear = p_linear, po->attention = p_attention, po->rms_norm = p_rms, po->layer_norm = p_ln, po->group_norm = p_gn;
            po->rope = p_rope, po->norm_modulate = p_norm_mod, po->rms_norm_rope = p_rms_rope, po->rms_norm_rope_cols = p_rms_rope_cols, po->activation = p_act, po->gated = p_gated, po->swiglu = p_swiglu, po->rms_norm_gated_add = p_norm_add, po->swiglu_fp8 = p_swiglu_fp8, po->modulate = p_mod, po->gated_add = p_gadd;
            po->linear_fused = p_linear_fused, po->linear_many = p_linear_many, po->norm_modulate_fp8 = p_norm_mod_fp8, po->linear_fp8_tokens = p_linear_fp8_tokens;
            po->linear_fp8_codes = p_linear_fp8_codes, po->linear_fused_codes = p_linear_fused_codes;
            po->add = p_add, po->mul = p_mul, po->softmax = p_softmax, po->conv2d = p_conv2d, po->conv3d = p_conv3d;
            po->upsample_nearest = p_ups, po->permute = p_perm, po->concat = p_concat, po->slice = p_slice, po->embedding = p_emb;
            po->copy = p_copy, po->destroy = cuda_destroy_prof;
            b->ops = po;
            c->ops_owned = true;
        }
    }
    *out = b;
    return QD_OK;
}
