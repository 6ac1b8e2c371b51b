/* Weight offload on the GPU (backend.h weights_*; docs/cuda.md "Weight offload"): a group of prepared linears
 * (a transformer block) kept in one pinned host buffer, its layers' device allocations freed. Layerwise
 * (--dit-layerwise-offload): groups stream through a ring of two device slots, sized by the largest group and
 * allocated once, on a copy stream of their own, following the schedule of backend/offload_plan.h: the copy of
 * group g + 1 overlaps the compute of group g, the compute stream waits for each group's copy, and a slot is
 * overwritten only after the compute stream has passed the group that used it. Every pointer field of a
 * layer is moved by qd_cuda_linear_rebase, so any scheme streams at its quantized size without this file
 * knowing what it holds. Whole component (--dit-cpu-offload): fetch_all uploads every group into one device
 * buffer before the first step, evict_all frees it after the last.
 *
 * Inside a recorded step (CUDA graph) the copy stream is forked from the capturing stream and joined back with
 * events, every copy of a step is joined before it ends (no wrap-around prefetch), and the copies from pinned
 * memory become memcpy nodes; since group g always lands in slot g % 2, the recorded pointers hold in every
 * replay. Nothing here allocates, frees or synchronises while a step is being recorded: slots are allocated
 * by a step that runs op by op (the first of each shape), and a fetch that would need it fails instead. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/linear_internal.cuh"
extern "C" {
#include "backend/offload_plan.h"
}

typedef struct {
    cuda_linear **layers;
    size_t *offs; /* each layer's bytes at this offset of the group (256-byte aligned, as cudaMalloc's) */
    int n;
    size_t bytes;
    void *host;       /* pinned: the layers' bytes */
    const char *name; /* the first layer's name, for messages (owned by the layer) */
} off_group;

typedef struct {
    off_group *g;
    int n, cap;
    size_t max_bytes; /* the largest group: the slot size */
    cudaStream_t copy;
    cudaEvent_t fork, ready[QD_OFFLOAD_SLOTS];
    void *slot[QD_OFFLOAD_SLOTS];
    size_t slot_bytes; /* as allocated (0: none) */
    void *whole;       /* fetch_all's buffer, every group at once */
    size_t whole_bytes;
    qd_offload_plan plan;
    qd_offload_plan at_recording; /* the schedule's state when the current recording began */
} cuda_offload;

static size_t align256(size_t n) { return (n + 255) / 256 * 256; }
static double gib(size_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

static bool recording(qd_cuda *c) {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(c->stream, &st) != cudaSuccess) {
        cudaGetLastError();
        return true; /* unknown: do nothing that recording forbids */
    }
    return st != cudaStreamCaptureStatusNone;
}

static qd_status state(qd_cuda *c, cuda_offload **out) {
    *out = NULL;
    cuda_offload *o = (cuda_offload *)c->offload;
    if (!o) {
        if (!(o = (cuda_offload *)calloc(1, sizeof *o))) return qd_fail(QD_ENOMEM, "cuda: cannot allocate the weight offload state");
        qd_offload_plan_init(&o->plan, 0);
        c->offload = o;
    }
    if (!o->copy) {
        QD_CUDA_TRY(cudaStreamCreateWithFlags(&o->copy, cudaStreamNonBlocking), "weight offload copy stream");
        QD_CUDA_TRY(cudaEventCreateWithFlags(&o->fork, cudaEventDisableTiming), "weight offload event");
        for (int s = 0; s < QD_OFFLOAD_SLOTS; s++) QD_CUDA_TRY(cudaEventCreateWithFlags(&o->ready[s], cudaEventDisableTiming), "weight offload event");
    }
    *out = o;
    return QD_OK;
}

/* group g's layers into device memory at base, or back to their host bytes (base NULL: not resident) */
static void bind(cuda_offload *o, int g, uint8_t *base) {
    const off_group *G = &o->g[g];
    for (int i = 0; i < G->n; i++) qd_cuda_linear_rebase(G->layers[i], base ? base + G->offs[i] : G->layers[i]->host_copy);
}

/* every group's layers back to their host bytes and the schedule told so: the next fetch of each copies it
   again (host-side only: allowed while recording) */
static void forget_residency(cuda_offload *o) {
    for (int g = 0; g < o->n; g++) bind(o, g, NULL);
    qd_offload_plan_init(&o->plan, o->n);
}

/* the same once both streams are done (before device buffers are freed or replaced) */
static void unbind_all(qd_cuda *c, cuda_offload *o) {
    cudaStreamSynchronize(c->stream);
    if (o->copy) cudaStreamSynchronize(o->copy);
    forget_residency(o);
}

static void free_slots(cuda_offload *o) {
    for (int s = 0; s < QD_OFFLOAD_SLOTS; s++) {
        if (o->slot[s]) cudaFree(o->slot[s]);
        o->slot[s] = NULL;
    }
    o->slot_bytes = 0;
}

extern "C" qd_status qd_cuda_weights_group(qd_backend *b, qd_linear *const *layers, int n, int *group_id) {
    qd_cuda *c = qd_cuda_of(b);
    *group_id = -1;
    const char *first = n > 0 && layers[0]->name ? layers[0]->name : "?";
    if (n < 1) return qd_fail(QD_EINVAL, "cuda weights_group: an empty group");
    if (recording(c)) return qd_fail(QD_EINVAL, "cuda weights_group (layer '%s'): not while a step is being recorded", first);
    cuda_offload *o = NULL;
    qd_status s = state(c, &o);
    if (s) return s;
    if (o->whole) return qd_fail(QD_EINVAL, "cuda weights_group (layer '%s'): the groups so far are uploaded whole; group every layer first", first);
    size_t *offs = (size_t *)calloc((size_t)n, sizeof *offs);
    cuda_linear **ds = (cuda_linear **)calloc((size_t)n, sizeof *ds);
    size_t bytes = 0;
    if (!offs || !ds) s = qd_fail(QD_ENOMEM, "cuda weights_group: cannot allocate");
    for (int i = 0; !s && i < n; i++) {
        const char *name = layers[i]->name ? layers[i]->name : "?";
        ds[i] = qd_cuda_linear_of(layers[i]);
        if (!ds[i] || !ds[i]->mem) s = qd_fail(QD_EINVAL, "layer '%s': not prepared on the GPU, so it cannot be offloaded", name);
        else if (ds[i]->host_copy) s = qd_fail(QD_EINVAL, "layer '%s': already in a weight offload group", name);
        for (int j = 0; !s && j < i; j++)
            if (ds[j] == ds[i]) s = qd_fail(QD_EINVAL, "layer '%s': twice in one weight offload group", name);
        offs[i] = bytes;
        bytes += align256(ds[i] ? ds[i]->mem_bytes : 0);
    }
    if (!s && o->slot_bytes && bytes > o->slot_bytes)
        s = qd_fail(QD_EINVAL, "cuda weights_group (layer '%s'): %zu bytes, more than the streaming slots of %zu made by the steps so far; "
                    "group every block before the first step", first, bytes, o->slot_bytes);
    if (!s && o->n == o->cap) {
        const int cap = o->cap ? 2 * o->cap : 64;
        off_group *g = (off_group *)realloc(o->g, sizeof *g * (size_t)cap);
        if (!g) s = qd_fail(QD_ENOMEM, "cuda weights_group: cannot allocate");
        else o->g = g, o->cap = cap;
    }
    void *host = NULL;
    cudaError_t e = cudaSuccess;
    if (!s && (e = cudaHostAlloc(&host, bytes ? bytes : 1, cudaHostAllocDefault)) != cudaSuccess) {
        cudaGetLastError();
        s = qd_fail(QD_ENOMEM, "weight offload group of layer '%s' (%d layers): cannot pin %.1f MiB of host memory (%s)", first, n,
                    (double)bytes / 1048576.0, cudaGetErrorString(e));
    }
    /* the prepared bytes, as uploaded, into the pinned buffer; then the device copies go */
    if (!s && (e = cudaStreamSynchronize(c->stream)) != cudaSuccess) s = qd_cuda_fail(e, "weights_group (stream)");
    for (int i = 0; !s && i < n; i++)
        if ((e = cudaMemcpy((uint8_t *)host + offs[i], ds[i]->mem, ds[i]->mem_bytes, cudaMemcpyDeviceToHost)) != cudaSuccess)
            s = qd_cuda_fail(e, "weights_group (copy to host)");
    if (s) {
        if (host) cudaFreeHost(host);
        free(offs), free(ds);
        return s;
    }
    for (int i = 0; i < n; i++) {
        void *old = ds[i]->mem;
        ds[i]->host_copy = (uint8_t *)host + offs[i];
        qd_cuda_linear_rebase(ds[i], ds[i]->host_copy);
        cudaFree(old);
    }
    o->g[o->n] = (off_group){ds, offs, n, bytes, host, layers[0]->name};
    *group_id = o->n++;
    if (bytes > o->max_bytes) o->max_bytes = bytes;
    o->plan.n_groups = o->n;
    return QD_OK;
}

/* the two slots, at the largest group's size (outside recordings only) */
static qd_status ensure_slots(qd_cuda *c, cuda_offload *o) {
    if (o->slot_bytes >= o->max_bytes) return QD_OK;
    if (recording(c))
        return qd_fail(QD_EINVAL, "cuda weights_fetch: the streaming slots are made by a step that runs op by op (the first of its "
                                  "shape), not while one is being recorded");
    unbind_all(c, o);
    free_slots(o);
    for (int s = 0; s < QD_OFFLOAD_SLOTS; s++) {
        cudaError_t e = cudaMalloc(&o->slot[s], o->max_bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            o->slot[s] = NULL;
            free_slots(o);
            return qd_fail(QD_ENOMEM, "cuda layerwise offload: cannot allocate two streaming slots of %.1f MiB on %s (%s)",
                           (double)o->max_bytes / 1048576.0, c->name, cudaGetErrorString(e));
        }
    }
    o->slot_bytes = o->max_bytes;
    size_t host = 0;
    for (int g = 0; g < o->n; g++) host += o->g[g].bytes;
    qd_log_once_key("cuda-layerwise-offload", QD_LOG_INFO,
                    "cuda: layerwise offload: %d groups, %.2f GiB in pinned host memory, streamed through 2 slots of %.1f MiB", o->n,
                    gib(host), (double)o->slot_bytes / 1048576.0);
    return QD_OK;
}

static qd_status run_action(qd_cuda *c, cuda_offload *o, const qd_offload_action *a) {
    switch (a->what) {
    case QD_OFFLOAD_FORK:
        QD_CUDA_TRY(cudaEventRecord(o->fork, c->stream), "weights_fetch (fork)");
        QD_CUDA_TRY(cudaStreamWaitEvent(o->copy, o->fork, 0), "weights_fetch (fork)");
        break;
    case QD_OFFLOAD_UNBIND: bind(o, a->group, NULL); break;
    case QD_OFFLOAD_COPY:
        QD_CUDA_TRY(cudaMemcpyAsync(o->slot[a->slot], o->g[a->group].host, o->g[a->group].bytes, cudaMemcpyHostToDevice, o->copy),
                    "weights_fetch (copy)");
        QD_CUDA_TRY(cudaEventRecord(o->ready[a->slot], o->copy), "weights_fetch (copy)");
        break;
    case QD_OFFLOAD_JOIN: QD_CUDA_TRY(cudaStreamWaitEvent(c->stream, o->ready[a->slot], 0), "weights_fetch (join)"); break;
    case QD_OFFLOAD_BIND: bind(o, a->group, (uint8_t *)o->slot[a->slot]); break;
    }
    return QD_OK;
}

extern "C" qd_status qd_cuda_weights_fetch(qd_backend *b, int group_id) {
    qd_cuda *c = qd_cuda_of(b);
    cuda_offload *o = (cuda_offload *)c->offload;
    if (!o || group_id < 0 || group_id >= o->n)
        return qd_fail(QD_EINVAL, "cuda weights_fetch: no weight group %d (%d registered)", group_id, o ? o->n : 0);
    if (o->whole) return QD_OK; /* everything is resident */
    qd_status s = ensure_slots(c, o);
    if (s) return s;
    const bool new_pass = o->plan.last < 0 || group_id <= o->plan.last;
    if (new_pass && !qd_offload_plan_is_steady(&o->plan) && recording(c))
        return qd_fail(QD_EINVAL, "cuda weights_fetch (group of layer '%s'): a recorded step must start where a whole step left the "
                                  "weights (the first step of a shape runs op by op)", o->g[group_id].name ? o->g[group_id].name : "?");
    qd_offload_action acts[QD_OFFLOAD_MAX_ACTIONS];
    const int n = qd_offload_plan_fetch(&o->plan, group_id, acts);
    for (int i = 0; !s && i < n; i++) s = run_action(c, o, &acts[i]);
    if (s) forget_residency(o); /* an action left undone: nothing is trusted to be resident any more */
    return s;
}

/* A recording runs the schedule's host side (binds, and the state) without running the copies. A recording
   of a whole pass from a steady state leaves that state as it found it, as its replays will; anything else
   (a pass abandoned when an op could not be recorded, a failed recording) leaves a state the device does
   not have: it is forgotten, and every group is copied again by the next fetch. */
extern "C" void qd_cuda_offload_recording_begin(qd_cuda *c) {
    cuda_offload *o = (cuda_offload *)c->offload;
    if (o) o->at_recording = o->plan;
}

extern "C" void qd_cuda_offload_recording_end(qd_cuda *c, bool recorded) {
    cuda_offload *o = (cuda_offload *)c->offload;
    if (o && (!recorded || !qd_offload_plan_same_residency(&o->plan, &o->at_recording))) forget_residency(o);
}

extern "C" qd_status qd_cuda_weights_fetch_all(qd_backend *b) {
    qd_cuda *c = qd_cuda_of(b);
    cuda_offload *o = (cuda_offload *)c->offload;
    if (!o || !o->n || o->whole) return QD_OK;
    if (recording(c)) return qd_fail(QD_EINVAL, "cuda weights_fetch_all: not while a step is being recorded");
    unbind_all(c, o);
    free_slots(o);
    size_t total = 0;
    for (int g = 0; g < o->n; g++) total += align256(o->g[g].bytes);
    cudaError_t e = cudaMalloc(&o->whole, total);
    if (e != cudaSuccess) {
        cudaGetLastError();
        o->whole = NULL;
        return qd_fail(QD_ENOMEM, "cuda: the transformer's %.2f GiB of weights do not fit on %s (%s); --dit-layerwise-offload streams "
                                  "them block by block", gib(total), c->name, cudaGetErrorString(e));
    }
    o->whole_bytes = total;
    size_t off = 0;
    for (int g = 0; g < o->n; g++) {
        /* stream-ordered on the compute stream: the steps that follow read after it */
        if ((e = cudaMemcpyAsync((uint8_t *)o->whole + off, o->g[g].host, o->g[g].bytes, cudaMemcpyHostToDevice, c->stream)) != cudaSuccess) {
            for (int h = 0; h < g; h++) bind(o, h, NULL);
            cudaStreamSynchronize(c->stream);
            cudaFree(o->whole);
            o->whole = NULL, o->whole_bytes = 0;
            return qd_cuda_fail(e, "weights_fetch_all (copy)");
        }
        bind(o, g, (uint8_t *)o->whole + off);
        off += align256(o->g[g].bytes);
    }
    qd_log_once_key("cuda-whole-offload", QD_LOG_INFO, "cuda: transformer offload: %d groups, %.2f GiB uploaded from pinned host memory for the steps",
                    o->n, gib(total));
    return QD_OK;
}

extern "C" qd_status qd_cuda_weights_evict_all(qd_backend *b) {
    qd_cuda *c = qd_cuda_of(b);
    cuda_offload *o = (cuda_offload *)c->offload;
    if (!o) return QD_OK;
    if (recording(c)) return qd_fail(QD_EINVAL, "cuda weights_evict_all: not while a step is being recorded");
    unbind_all(c, o);
    free_slots(o);
    if (o->whole) cudaFree(o->whole);
    o->whole = NULL, o->whole_bytes = 0;
    return QD_OK;
}

extern "C" void qd_cuda_weights_release(qd_backend *b) {
    qd_cuda *c = qd_cuda_of(b);
    cuda_offload *o = (cuda_offload *)c->offload;
    if (!o) return;
    cudaStreamSynchronize(c->stream);
    if (o->copy) cudaStreamSynchronize(o->copy);
    for (int g = 0; g < o->n; g++) {
        off_group *G = &o->g[g];
        for (int i = 0; i < G->n; i++) G->layers[i]->mem = NULL, G->layers[i]->host_copy = NULL; /* qd_cuda_linear refuses it now */
        cudaFreeHost(G->host);
        free(G->layers), free(G->offs);
    }
    o->n = 0, o->max_bytes = 0;
    free_slots(o);
    if (o->whole) cudaFree(o->whole);
    o->whole = NULL, o->whole_bytes = 0;
    qd_offload_plan_init(&o->plan, 0);
}

extern "C" qd_status qd_cuda_memory_info(qd_backend *b, qd_memory_info *out) {
    qd_cuda *c = qd_cuda_of(b);
    memset(out, 0, sizeof *out);
    size_t fr = 0, total = 0;
    QD_CUDA_TRY(cudaMemGetInfo(&fr, &total), "memory info");
    out->device_free = fr, out->device_total = total;
    const cuda_offload *o = (const cuda_offload *)c->offload;
    if (!o) return QD_OK;
    out->offload_groups = o->n;
    for (int g = 0; g < o->n; g++) out->offload_host_bytes += o->g[g].bytes;
    out->offload_slot_bytes = (uint64_t)QD_OFFLOAD_SLOTS * o->max_bytes;
    out->offload_device_bytes = (uint64_t)QD_OFFLOAD_SLOTS * o->slot_bytes + o->whole_bytes;
    return QD_OK;
}

extern "C" void qd_cuda_offload_free(qd_cuda *c) {
    cuda_offload *o = (cuda_offload *)c->offload;
    if (!o) return;
    qd_backend b = {NULL, c};
    qd_cuda_weights_release(&b);
    if (o->copy) cudaStreamDestroy(o->copy);
    if (o->fork) cudaEventDestroy(o->fork);
    for (int s = 0; s < QD_OFFLOAD_SLOTS; s++)
        if (o->ready[s]) cudaEventDestroy(o->ready[s]);
    free(o->g);
    free(o);
    c->offload = NULL;
}
