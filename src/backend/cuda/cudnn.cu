/* What qdit runs through cuDNN's backend API (cuDNN ≥ 9.13, loaded at run time):
 *
 * Attention: the fused SDPA (the single SDPA_FWD operation) on the shapes it covers: BF16/F16 q, k, v and out of one
 * dtype, [B, L, H, D] rows, D = Dv a multiple of 8 up to 256, grouped-query heads, no mask, bias or causal band; v
 * packed or read in place from a wider row (qd_attn_args.v_row: cuDNN takes its strides). Everything else runs
 * attention.cu's own kernels. Why: on the H200 its fused kernel runs 650 TFLOP/s at FLUX's shape, ours 212.
 *
 * Convolutions (conv.cu asks first): 2-D and 3-D (NCHW / NCTHW), BF16/F16 x, weights rounded to x's type (as conv.cu's
 * matmul form rounds them), f32 accumulation, y in x's type or f32, any stride and padding (the causal time padding as
 * a front-only pre-padding); the bias is added by conv.cu. Why: cuDNN's implicit-GEMM kernels read x in place, where
 * the im2col matmul writes and reads every input value kt·kh·kw times (the FLUX VAE decode at 1024²: 207 ms that way).
 *
 * cuDNN is loaded at run time (dlopen "libcudnn.so.9", or the path in QDIT_CUDNN; QDIT_CUDNN=0 turns it
 * off), so a binary built here needs no cuDNN to start and the CPU build never sees it. Only the header's
 * types and enum values are used at build time. One execution plan per shape is built on first use
 * (heuristics mode A, the first engine config that finalizes) and cached with the backend, each plan with
 * its own workspace, allocated with the plan outside any recording and kept as long as the plan: a
 * recorded step keeps the workspace address it was recorded with, so no workspace is ever freed or
 * moved under it. A shape cuDNN has no plan for is remembered as such and runs on qdit's own kernels. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.cuh"

#if __has_include(<cudnn_graph.h>)
#include <cudnn_graph.h>
#define QD_CUDNN_HEADERS 1
#endif

#ifndef QD_CUDNN_HEADERS

extern "C" bool qd_cudnn_sdpa(qd_backend *b, const qd_attn_args *a, qd_tensor *out, qd_status *st) {
    (void)b, (void)a, (void)out, (void)st;
    return false;
}
extern "C" void qd_cudnn_free(qd_cuda *c) { (void)c; }
extern "C" bool qd_cudnn_conv(qd_cuda *c, const qd_cudnn_conv_args *a, qd_status *st) {
    (void)c, (void)a, (void)st;
    return false;
}

#else

/* the entry points, looked up once */
static struct {
    bool tried, ok;
    size_t version;
    decltype(&cudnnGetVersion) GetVersion;
    decltype(&cudnnGetErrorString) GetErrorString;
    decltype(&cudnnGetLastErrorString) GetLastErrorString;
    decltype(&cudnnCreate) Create;
    decltype(&cudnnDestroy) Destroy;
    decltype(&cudnnSetStream) SetStream;
    decltype(&cudnnBackendCreateDescriptor) CreateDescriptor;
    decltype(&cudnnBackendDestroyDescriptor) DestroyDescriptor;
    decltype(&cudnnBackendSetAttribute) SetAttribute;
    decltype(&cudnnBackendGetAttribute) GetAttribute;
    decltype(&cudnnBackendFinalize) Finalize;
    decltype(&cudnnBackendExecute) Execute;
} dnn;

static bool load_cudnn(void) {
    if (dnn.tried) return dnn.ok;
    dnn.tried = true;
    /* QDIT_CUDNN=0 never gets here: the backend reads it when it is made (use_cudnn) */
    const char *env = getenv("QDIT_CUDNN");
    const char *name = env && *env ? env : "libcudnn.so.9";
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        qd_log(QD_LOG_INFO, "cuda: cuDNN not loaded (%s); attention runs on qdit's own kernels", dlerror());
        return false;
    }
#define SYM(field, sym)                                                                                        \
    if (!(*(void **)&dnn.field = dlsym(lib, #sym))) {                                                         \
        qd_log(QD_LOG_INFO, "cuda: %s has no %s; attention runs on qdit's own kernels", name, #sym);         \
        return false;                                                                                          \
    }
    SYM(GetVersion, cudnnGetVersion)
    SYM(GetErrorString, cudnnGetErrorString)
    SYM(GetLastErrorString, cudnnGetLastErrorString)
    SYM(Create, cudnnCreate)
    SYM(Destroy, cudnnDestroy)
    SYM(SetStream, cudnnSetStream)
    SYM(CreateDescriptor, cudnnBackendCreateDescriptor)
    SYM(DestroyDescriptor, cudnnBackendDestroyDescriptor)
    SYM(SetAttribute, cudnnBackendSetAttribute)
    SYM(GetAttribute, cudnnBackendGetAttribute)
    SYM(Finalize, cudnnBackendFinalize)
    SYM(Execute, cudnnBackendExecute)
#undef SYM
    dnn.version = dnn.GetVersion();
    if (dnn.version < 91300) {
        qd_log(QD_LOG_INFO, "cuda: cuDNN %zu has no fused SDPA operation (9.13 or later); attention runs on qdit's own kernels",
               dnn.version);
        return false;
    }
    dnn.ok = true;
    qd_log(QD_LOG_INFO, "cuda: cuDNN %zu.%zu.%zu loaded; attention without mask or bias uses its fused SDPA", dnn.version / 10000,
           dnn.version / 100 % 100, dnn.version % 100);
    return true;
}

/* a failed cuDNN call: its status and cuDNN's own last message */
static qd_status dnn_fail(cudnnStatus_t st, const char *what) {
    char msg[512] = "";
    dnn.GetLastErrorString(msg, sizeof msg);
    return qd_fail(QD_EDEVICE, "cuDNN %s: %s%s%s", what, dnn.GetErrorString(st), *msg ? ": " : "", msg);
}
#define DNN_TRY(call, what)                                                                                    \
    do {                                                                                                       \
        cudnnStatus_t st_ = (call);                                                                            \
        if (st_ != CUDNN_STATUS_SUCCESS) return dnn_fail(st_, what);                                          \
    } while (0)

typedef struct {
    int64_t B, H, Hkv, Lq, Lk, D;
    int64_t v_row; /* v's token stride in elements (Hkv·D when packed) */
    int dtype;
} sdpa_key;

typedef struct sdpa_plan {
    sdpa_key key;
    cudnnBackendDescriptor_t plan; /* NULL: no engine for this shape (kept so that it is not retried) */
    int64_t workspace;             /* bytes */
    void *ws;                      /* this plan's workspace (NULL when it needs none) */
    struct sdpa_plan *next;
} sdpa_plan;

typedef struct {
    int64_t g[20]; /* nd, N, C, O, T, H, W, kt, kh, kw, st, sh, sw, pt0, pt1, ph, pw, x dtype, y dtype, 0 */
} conv_key;

typedef struct conv_plan {
    conv_key key;
    cudnnBackendDescriptor_t plan; /* NULL: no engine for this shape */
    int64_t workspace;
    void *ws;
    struct conv_plan *next;
} conv_plan;

typedef struct {
    cudnnHandle_t handle;
    sdpa_plan *plans;
    conv_plan *convs;
} dnn_state;

enum { UID_Q = 1, UID_K, UID_V, UID_O, UID_SCALE };

/* a [B, H, L, D] view of [B, L, H, D] rows, `row` elements from one token to the next (H·D when packed) */
static qd_status tensor_desc(int64_t uid, cudnnDataType_t dt, int64_t B, int64_t H, int64_t L, int64_t D, int64_t row, bool by_value,
                             cudnnBackendDescriptor_t *out) {
    *out = NULL;
    cudnnBackendDescriptor_t t;
    DNN_TRY(dnn.CreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t), "tensor descriptor");
    *out = t;
    int64_t dims[4] = {B, H, L, D}, strides[4] = {L * row, D, row, 1}, align = 16;
    if (by_value) {
        for (int i = 0; i < 4; i++) dims[i] = strides[i] = 1;
        align = 4;
    }
    bool bv = by_value;
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), "tensor id");
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt), "tensor dtype");
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align), "tensor alignment");
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims), "tensor dims");
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides), "tensor strides");
    if (by_value) DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &bv), "tensor by value");
    DNN_TRY(dnn.Finalize(t), "tensor finalize");
    return QD_OK;
}

#define STEP(call, what)                                                                                       \
    if (!s) {                                                                                                  \
        cudnnStatus_t st_ = (call);                                                                            \
        if (st_ != CUDNN_STATUS_SUCCESS) s = dnn_fail(st_, what);                                             \
    }

/* A finalized operation → its graph → heuristics (mode A) → the first engine config whose plan finalizes, and the
   plan's workspace size. */
static qd_status plan_from_op(cudnnHandle_t h, cudnnBackendDescriptor_t op, cudnnBackendDescriptor_t *plan_out, int64_t *ws_out) {
    *plan_out = NULL;
    qd_status s = QD_OK;
    cudnnBackendDescriptor_t graph = NULL, heur = NULL, *cfgs = NULL;
    int64_t n_cfg = 0;
    STEP(dnn.CreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph), "operation graph");
    STEP(dnn.SetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h), "graph handle");
    STEP(dnn.SetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op), "graph ops");
    STEP(dnn.Finalize(graph), "operation graph finalize");
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    STEP(dnn.CreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur), "heuristics");
    STEP(dnn.SetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph), "heuristics graph");
    STEP(dnn.SetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode), "heuristics mode");
    STEP(dnn.Finalize(heur), "heuristics finalize");
    STEP(dnn.GetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n_cfg, NULL), "engine count");
    if (!s && n_cfg <= 0) s = qd_fail(QD_EUNSUPPORTED, "cuDNN offers no engine for this operation");
    if (!s && !(cfgs = (cudnnBackendDescriptor_t *)calloc((size_t)n_cfg, sizeof *cfgs))) s = qd_fail(QD_ENOMEM, "cuDNN engine list");
    for (int64_t i = 0; !s && i < n_cfg; i++) STEP(dnn.CreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[i]), "engine config");
    int64_t got = 0;
    STEP(dnn.GetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n_cfg, &got, cfgs), "engine configs");
    cudnnBackendDescriptor_t plan = NULL;
    qd_status last = QD_OK;
    for (int64_t i = 0; !s && i < got && !plan; i++) {
        cudnnBackendDescriptor_t p = NULL;
        if (dnn.CreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p) != CUDNN_STATUS_SUCCESS) continue;
        cudnnStatus_t st = dnn.SetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
        if (st == CUDNN_STATUS_SUCCESS)
            st = dnn.SetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
        if (st == CUDNN_STATUS_SUCCESS) st = dnn.Finalize(p);
        if (st == CUDNN_STATUS_SUCCESS) {
            plan = p;
        } else {
            last = dnn_fail(st, "execution plan"); /* the message of the last config tried */
            dnn.DestroyDescriptor(p);
        }
    }
    if (!s && !plan) s = last ? last : qd_fail(QD_EUNSUPPORTED, "cuDNN: no engine config finalizes for this operation");
    int64_t ws = 0, n = 0;
    STEP(dnn.GetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws), "workspace size");
    for (int64_t i = 0; cfgs && i < n_cfg; i++)
        if (cfgs[i]) dnn.DestroyDescriptor(cfgs[i]);
    free(cfgs);
    if (heur) dnn.DestroyDescriptor(heur);
    if (graph) dnn.DestroyDescriptor(graph);
    if (s) {
        if (plan) dnn.DestroyDescriptor(plan);
        return s;
    }
    *plan_out = plan;
    *ws_out = ws;
    return QD_OK;
}

/* Build the plan of one shape: tensors → SDPA_FWD operation → graph → heuristics → first plan that finalizes. */
static qd_status build_plan(cudnnHandle_t h, const sdpa_key *k, cudnnBackendDescriptor_t *plan_out, int64_t *ws_out) {
    *plan_out = NULL;
    const cudnnDataType_t dt = k->dtype == QD_DTYPE_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    cudnnBackendDescriptor_t t[5] = {NULL}, op = NULL;
    qd_status s = tensor_desc(UID_Q, dt, k->B, k->H, k->Lq, k->D, k->H * k->D, false, &t[0]);
    if (!s) s = tensor_desc(UID_K, dt, k->B, k->Hkv, k->Lk, k->D, k->Hkv * k->D, false, &t[1]);
    if (!s) s = tensor_desc(UID_V, dt, k->B, k->Hkv, k->Lk, k->D, k->v_row, false, &t[2]);
    if (!s) s = tensor_desc(UID_O, dt, k->B, k->H, k->Lq, k->D, k->H * k->D, false, &t[3]);
    if (!s) s = tensor_desc(UID_SCALE, CUDNN_DATA_FLOAT, 1, 1, 1, 1, 1, true, &t[4]);
    STEP(dnn.CreateDescriptor(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, &op), "SDPA operation");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[0]), "SDPA q");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[1]), "SDPA k");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[2]), "SDPA v");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[3]), "SDPA out");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[4]), "SDPA scale");
    STEP(dnn.Finalize(op), "SDPA operation finalize");
    if (!s) s = plan_from_op(h, op, plan_out, ws_out);
    cudnnBackendDescriptor_t rest[] = {op, t[0], t[1], t[2], t[3], t[4]};
    for (size_t i = 0; i < sizeof rest / sizeof *rest; i++)
        if (rest[i]) dnn.DestroyDescriptor(rest[i]);
    return s;
}

/* run a plan on the tensors' pointers (uids[i] ↔ ptrs[i]) with its workspace */
static qd_status execute_plan(dnn_state *d, cudnnBackendDescriptor_t plan, void *ws, int n, int64_t *uids, void **ptrs, const char *what) {
    cudnnBackendDescriptor_t pack = NULL;
    cudnnStatus_t s = dnn.CreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
    if (s == CUDNN_STATUS_SUCCESS) s = dnn.SetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
    if (s == CUDNN_STATUS_SUCCESS) s = dnn.SetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (s == CUDNN_STATUS_SUCCESS) s = dnn.SetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (s == CUDNN_STATUS_SUCCESS) s = dnn.Finalize(pack);
    if (s == CUDNN_STATUS_SUCCESS) s = dnn.Execute(d->handle, plan, pack);
    if (pack) dnn.DestroyDescriptor(pack);
    return s == CUDNN_STATUS_SUCCESS ? QD_OK : dnn_fail(s, what);
}

static qd_status state_of(qd_cuda *c, dnn_state **out) {
    if (!c->cudnn) {
        dnn_state *d = (dnn_state *)calloc(1, sizeof *d);
        if (!d) return qd_fail(QD_ENOMEM, "cuDNN state");
        cudnnStatus_t st = dnn.Create(&d->handle);
        if (st == CUDNN_STATUS_SUCCESS) st = dnn.SetStream(d->handle, c->stream);
        if (st != CUDNN_STATUS_SUCCESS) {
            if (d->handle) dnn.Destroy(d->handle);
            free(d);
            return dnn_fail(st, "handle");
        }
        c->cudnn = d;
    }
    *out = (dnn_state *)c->cudnn;
    return QD_OK;
}

extern "C" void qd_cudnn_free(qd_cuda *c) {
    dnn_state *d = (dnn_state *)c->cudnn;
    if (!d) return;
    for (sdpa_plan *p = d->plans, *n; p; p = n) {
        n = p->next;
        if (p->plan) dnn.DestroyDescriptor(p->plan);
        if (p->ws) cudaFree(p->ws);
        free(p);
    }
    for (conv_plan *p = d->convs, *n; p; p = n) {
        n = p->next;
        if (p->plan) dnn.DestroyDescriptor(p->plan);
        if (p->ws) cudaFree(p->ws);
        free(p);
    }
    dnn.Destroy(d->handle);
    free(d);
    c->cudnn = NULL;
}

/* The plan for this key: cached, or built now; its plan is NULL when cuDNN has none (said once per shape).
   *out NULL: not built now (a recording is open). */
static qd_status plan_for(qd_cuda *c, dnn_state *d, const sdpa_key *k, sdpa_plan **out) {
    for (sdpa_plan *p = d->plans; p; p = p->next)
        if (!memcmp(&p->key, k, sizeof *k)) {
            *out = p;
            return QD_OK;
        }
    /* cuDNN may make CUDA calls that a recording forbids while it builds a plan: a shape first seen while
       recording runs on our kernel (and gets its plan at its next op-by-op run) */
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(c->stream, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone) {
        *out = NULL;
        return QD_OK;
    }
    sdpa_plan *p = (sdpa_plan *)calloc(1, sizeof *p);
    if (!p) return qd_fail(QD_ENOMEM, "cuDNN plan cache");
    p->key = *k;
    qd_status s = build_plan(d->handle, k, &p->plan, &p->workspace);
    if (s) {
        qd_log(QD_LOG_INFO, "cuda: cuDNN SDPA for B %lld, H %lld/%lld, L %lld×%lld, D %lld unavailable (%s); qdit's own kernel runs it",
               (long long)k->B, (long long)k->H, (long long)k->Hkv, (long long)k->Lq, (long long)k->Lk, (long long)k->D, qd_last_error());
        qd_clear_error();
        p->plan = NULL;
    } else {
        qd_log(QD_LOG_DEBUG, "cuda: cuDNN SDPA plan for B %lld, H %lld/%lld, L %lld×%lld, D %lld (workspace %lld bytes)", (long long)k->B,
               (long long)k->H, (long long)k->Hkv, (long long)k->Lq, (long long)k->Lk, (long long)k->D, (long long)p->workspace);
    }
    if (p->plan && p->workspace > 0) {
        const cudaError_t e = cudaMalloc(&p->ws, (size_t)p->workspace);
        if (e != cudaSuccess) {
            cudaGetLastError();
            qd_log(QD_LOG_INFO, "cuda: cuDNN SDPA's %lld-byte workspace not allocated (%s); qdit's own kernel runs this shape",
                   (long long)p->workspace, cudaGetErrorString(e));
            dnn.DestroyDescriptor(p->plan);
            p->plan = NULL, p->ws = NULL;
        }
    }
    p->next = d->plans;
    d->plans = p;
    *out = p;
    return QD_OK;
}

extern "C" bool qd_cudnn_sdpa(qd_backend *b, const qd_attn_args *a, qd_tensor *out, qd_status *st) {
    *st = QD_OK;
    qd_cuda *c = qd_cuda_of(b);
    const qd_tensor *q = a->q, *k = a->k, *v = a->v;
    if (!c->use_cudnn || a->mask || a->bias || a->causal) return false;
    if ((q->dtype != QD_DTYPE_BF16 && q->dtype != QD_DTYPE_F16) || out->dtype != q->dtype) return false;
    const int64_t D = q->shape[3];
    if (D != v->shape[3] || D % 8 || D > 256) return false;
    if (((uintptr_t)q->data | (uintptr_t)k->data | (uintptr_t)v->data | (uintptr_t)out->data) % 16) return false;
    if (!load_cudnn()) return false;
    dnn_state *d = NULL;
    if ((*st = state_of(c, &d))) return true;
    sdpa_key key;
    memset(&key, 0, sizeof key); /* the cache compares keys bytewise: no stray padding */
    key.B = q->shape[0], key.H = q->shape[2], key.Hkv = k->shape[2], key.Lq = q->shape[1], key.Lk = k->shape[1], key.D = D;
    key.v_row = a->v_row > 0 ? a->v_row : key.Hkv * D;
    if (key.v_row % 8) return false; /* 16-byte aligned rows */
    key.dtype = q->dtype;
    sdpa_plan *p = NULL;
    if ((*st = plan_for(c, d, &key, &p))) return true;
    if (!p || !p->plan) return false;
    float scale = a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)D);
    int64_t uids[5] = {UID_Q, UID_K, UID_V, UID_O, UID_SCALE};
    void *ptrs[5] = {q->data, k->data, v->data, out->data, &scale};
    *st = execute_plan(d, p->plan, p->ws, 5, uids, ptrs, "SDPA execute");
    return true;
}

/* ---- convolutions ---- */

enum { UID_X = 11, UID_W, UID_Y };

static cudnnDataType_t dnn_type(int t) { return t == QD_DTYPE_BF16 ? CUDNN_DATA_BFLOAT16 : t == QD_DTYPE_F16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT; }

/* a packed tensor of rank n (NC(T)HW or OC(kt)khkw) */
static qd_status packed_desc(int64_t uid, cudnnDataType_t dt, int n, const int64_t *dims, cudnnBackendDescriptor_t *out) {
    *out = NULL;
    cudnnBackendDescriptor_t t;
    DNN_TRY(dnn.CreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t), "tensor descriptor");
    *out = t;
    int64_t strides[5], align = 16;
    strides[n - 1] = 1;
    for (int i = n - 2; i >= 0; i--) strides[i] = strides[i + 1] * dims[i + 1];
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), "tensor id");
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt), "tensor dtype");
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align), "tensor alignment");
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, n, dims), "tensor dims");
    DNN_TRY(dnn.SetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, n, strides), "tensor strides");
    DNN_TRY(dnn.Finalize(t), "tensor finalize");
    return QD_OK;
}

static qd_status build_conv_plan(cudnnHandle_t h, const qd_cudnn_conv_args *a, cudnnBackendDescriptor_t *plan_out, int64_t *ws_out) {
    *plan_out = NULL;
    const int sd = a->nd, n = sd + 2; /* spatial dims, tensor rank */
    int64_t xd[5], wd[5], yd[5];
    xd[0] = a->N, xd[1] = a->C, wd[0] = a->O, wd[1] = a->C, yd[0] = a->N, yd[1] = a->O;
    const int64_t xs[3] = {a->T, a->H, a->W}, ks[3] = {a->kt, a->kh, a->kw}, ys[3] = {a->To, a->Ho, a->Wo};
    const int64_t str[3] = {a->st, a->sh, a->sw}, pre[3] = {a->pt0, a->ph, a->pw}, post[3] = {a->pt1, a->ph, a->pw};
    int64_t stride[3], prep[3], postp[3], dil[3] = {1, 1, 1};
    for (int i = 0; i < sd; i++) {
        const int j = 3 - sd + i; /* 2-D: H, W */
        xd[2 + i] = xs[j], wd[2 + i] = ks[j], yd[2 + i] = ys[j];
        stride[i] = str[j], prep[i] = pre[j], postp[i] = post[j];
    }
    cudnnBackendDescriptor_t tx = NULL, tw = NULL, ty = NULL, conv = NULL, op = NULL;
    qd_status s = packed_desc(UID_X, dnn_type(a->xt), n, xd, &tx);
    if (!s) s = packed_desc(UID_W, dnn_type(a->xt), n, wd, &tw);
    if (!s) s = packed_desc(UID_Y, dnn_type(a->yt), n, yd, &ty);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    const int64_t sd64 = sd;
    STEP(dnn.CreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &conv), "convolution");
    STEP(dnn.SetAttribute(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp), "convolution compute type");
    STEP(dnn.SetAttribute(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode), "convolution mode");
    STEP(dnn.SetAttribute(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &sd64), "convolution dims");
    STEP(dnn.SetAttribute(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, sd, dil), "convolution dilations");
    STEP(dnn.SetAttribute(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, sd, stride), "convolution strides");
    STEP(dnn.SetAttribute(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, sd, prep), "convolution pre-paddings");
    STEP(dnn.SetAttribute(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, sd, postp), "convolution post-paddings");
    STEP(dnn.Finalize(conv), "convolution finalize");
    const float alpha = 1.0f, beta = 0.0f;
    STEP(dnn.CreateDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, &op), "convolution operation");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tx), "convolution x");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tw), "convolution w");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ty), "convolution y");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv), "convolution desc");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha), "convolution alpha");
    STEP(dnn.SetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta), "convolution beta");
    STEP(dnn.Finalize(op), "convolution operation finalize");
    if (!s) s = plan_from_op(h, op, plan_out, ws_out);
    cudnnBackendDescriptor_t rest[] = {op, conv, tx, tw, ty};
    for (size_t i = 0; i < sizeof rest / sizeof *rest; i++)
        if (rest[i]) dnn.DestroyDescriptor(rest[i]);
    return s;
}

extern "C" bool qd_cudnn_conv(qd_cuda *c, const qd_cudnn_conv_args *a, qd_status *st) {
    *st = QD_OK;
    if (!c->use_cudnn || (a->xt != QD_DTYPE_BF16 && a->xt != QD_DTYPE_F16)) return false;
    if (((uintptr_t)a->x | (uintptr_t)a->w | (uintptr_t)a->y) % 16) return false;
    if (!load_cudnn()) return false;
    dnn_state *d = NULL;
    if ((*st = state_of(c, &d))) return true;
    conv_key key;
    memset(&key, 0, sizeof key);
    const int64_t g[] = {a->nd, a->N, a->C, a->O, a->T, a->H, a->W, a->kt, a->kh, a->kw, a->st, a->sh, a->sw, a->pt0, a->pt1, a->ph, a->pw, a->xt, a->yt};
    memcpy(key.g, g, sizeof g);
    conv_plan *p = NULL;
    for (conv_plan *q = d->convs; q && !p; q = q->next)
        if (!memcmp(&q->key, &key, sizeof key)) p = q;
    if (!p) {
        cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
        if (cudaStreamIsCapturing(c->stream, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone) return false;
        if (!(p = (conv_plan *)calloc(1, sizeof *p))) {
            *st = qd_fail(QD_ENOMEM, "cuDNN plan cache");
            return true;
        }
        p->key = key;
        if (build_conv_plan(d->handle, a, &p->plan, &p->workspace)) {
            qd_log(QD_LOG_INFO, "cuda: cuDNN has no convolution for C %lld → O %lld, %lldx%lldx%lld over %lldx%lldx%lld (%s); qdit's matmul form runs it",
                   (long long)a->C, (long long)a->O, (long long)a->kt, (long long)a->kh, (long long)a->kw, (long long)a->T, (long long)a->H,
                   (long long)a->W, qd_last_error());
            qd_clear_error();
            p->plan = NULL;
        }
        if (p->plan && p->workspace > 0 && cudaMalloc(&p->ws, (size_t)p->workspace) != cudaSuccess) {
            cudaGetLastError();
            dnn.DestroyDescriptor(p->plan);
            p->plan = NULL, p->ws = NULL;
        }
        p->next = d->convs;
        d->convs = p;
    }
    if (!p->plan) return false;
    int64_t uids[3] = {UID_X, UID_W, UID_Y};
    void *ptrs[3] = {(void *)a->x, (void *)a->w, a->y};
    *st = execute_plan(d, p->plan, p->ws, 3, uids, ptrs, "convolution execute");
    return true;
}

#endif
