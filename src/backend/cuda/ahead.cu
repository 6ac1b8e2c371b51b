/* Work done ahead for the next block's linears (backend.h linears_ahead; docs/cuda.md "Expansion ahead").
 *
 * The 4-bit schemes run as W4A8 on FP8 matmuls after expanding their weights to an E4M3 copy before every matmul
 * (linear_w4.cu): a memory-bound pass of ~1.5 bytes per weight that otherwise sits between the compute-bound
 * matmuls (FLUX.1 at 1024²: ~8 ms of a ~95 ms step). Here the next block's expansions run on a stream of their
 * own while the current block computes, and each matmul finds its copy made.
 *
 * Protocol. The model calls linears_ahead(block i + 1) at the start of block i (models/offload.h). The call
 *   1. frees what the call before the previous one staged and no linear took (its block ran without it: another
 *      shape, a few-row input);
 *   2. forks the side stream from the backend's stream (an event: the side stream's work starts after every op
 *      issued so far, so nothing it overwrites is still in use), and for each of the block's layers that has been
 *      expanded before (the ones whose inputs have many rows), allocates the E4M3 copy stream-ordered on the side
 *      stream, launches the expansion there and records an event.
 * When that layer's linear runs, qd_cuda_ahead_take hands it the copy: the backend's stream waits for the layer's
 * event (not for the whole block), and the linear frees the copy on the backend's stream after its matmul, like
 * its own scratch. The copy is the same bytes the linear's own expansion would write (the same kernel).
 *
 * Graphs: a recording forks the side stream from the capturing stream, so the side stream's work becomes part of the
 * graph; graph_begin first joins and frees whatever op-by-op steps left pending (nothing of theirs may run beside a
 * replay), and graph_end joins the side stream back before the capture ends (it must end joined). Addresses of the
 * copies are the graph's own allocations, fixed for its replays.
 *
 * QDIT_CUDA_NO_AHEAD=1 turns it off (every expansion before its matmul, as without this file). */
#include <stdlib.h>

#include "backend/cuda/linear_internal.cuh"

#define AHEAD_MAX 64 /* staged copies at once: two blocks' worth */

typedef struct {
    const cuda_linear *d;
    void *w8;
    int gen;    /* which call staged it */
    int ev;     /* its event in the pool */
    bool taken; /* handed to its linear (which frees it) */
} ahead_entry;

typedef struct {
    cudaStream_t side;
    cudaEvent_t fork, joined;
    cudaEvent_t ev[AHEAD_MAX];
    bool ev_used[AHEAD_MAX];
    ahead_entry e[AHEAD_MAX];
    int n;
    int gen;          /* calls so far */
    bool side_ahead;  /* the side stream has work the backend's stream has not waited for */
} cuda_ahead;

static qd_status state(qd_cuda *c, cuda_ahead **out) {
    *out = (cuda_ahead *)c->ahead;
    if (*out) return QD_OK;
    cuda_ahead *a = (cuda_ahead *)calloc(1, sizeof *a);
    if (!a) return qd_fail(QD_ENOMEM, "cuda: cannot allocate the expansion-ahead state");
    c->ahead = a;
    QD_CUDA_TRY(cudaStreamCreateWithFlags(&a->side, cudaStreamNonBlocking), "expansion-ahead stream");
    QD_CUDA_TRY(cudaEventCreateWithFlags(&a->fork, cudaEventDisableTiming), "expansion-ahead event");
    QD_CUDA_TRY(cudaEventCreateWithFlags(&a->joined, cudaEventDisableTiming), "expansion-ahead event");
    for (int i = 0; i < AHEAD_MAX; i++) QD_CUDA_TRY(cudaEventCreateWithFlags(&a->ev[i], cudaEventDisableTiming), "expansion-ahead event");
    *out = a;
    return QD_OK;
}

/* drop entry i (freeing its copy on the side stream, after its expansion, unless a linear took it) */
static void drop(cuda_ahead *a, int i) {
    if (!a->e[i].taken) cudaFreeAsync(a->e[i].w8, a->side);
    a->ev_used[a->e[i].ev] = false;
    a->e[i] = a->e[--a->n];
}

/* the backend's stream waits for everything issued on the side stream so far */
static qd_status join(qd_cuda *c, cuda_ahead *a) {
    if (!a->side_ahead) return QD_OK;
    QD_CUDA_TRY(cudaEventRecord(a->joined, a->side), "expansion-ahead join");
    QD_CUDA_TRY(cudaStreamWaitEvent(c->stream, a->joined, 0), "expansion-ahead join");
    a->side_ahead = false;
    return QD_OK;
}

static int free_event(cuda_ahead *a) {
    for (int i = 0; i < AHEAD_MAX; i++)
        if (!a->ev_used[i]) return i;
    return -1;
}

extern "C" qd_status qd_cuda_linears_ahead(qd_backend *b, qd_linear *const *layers, int n) {
    qd_cuda *c = qd_cuda_of(b);
    if (c->no_ahead) return QD_OK;
    cuda_ahead *a = NULL;
    qd_status s = state(c, &a);
    if (s) return s;
    a->gen++;
    for (int i = a->n - 1; i >= 0; i--) /* what the call before the previous one staged: its block has run */
        if (a->e[i].gen < a->gen - 1) drop(a, i);
    bool forked = false;
    for (int i = 0; i < n; i++) {
        const qd_linear *l = layers[i];
        const cuda_linear *d = l->out_features > 0 ? qd_cuda_linear_of(l) : NULL;
        if (!d || !qd_cuda_w4_ahead(l, d)) continue;
        const int ev = free_event(a);
        if (ev < 0 || a->n == AHEAD_MAX) break; /* the rest expand before their matmuls */
        if (!forked) {
            QD_CUDA_TRY(cudaEventRecord(a->fork, c->stream), "expansion-ahead fork");
            QD_CUDA_TRY(cudaStreamWaitEvent(a->side, a->fork, 0), "expansion-ahead fork");
            forked = true;
        }
        void *w8 = NULL;
        const size_t bytes = qd_cuda_w4_expand_bytes(l, d);
        cudaError_t e = cudaMallocAsync(&w8, bytes ? bytes : 1, a->side);
        if (e != cudaSuccess) {
            cudaGetLastError();
            break; /* no memory for more copies now: the rest expand before their matmuls */
        }
        a->side_ahead = true;
        if ((s = qd_cuda_w4_expand_into(c, l, d, w8, a->side))) {
            cudaFreeAsync(w8, a->side);
            return s;
        }
        QD_CUDA_TRY(cudaEventRecord(a->ev[ev], a->side), "expansion-ahead event");
        a->ev_used[ev] = true;
        a->e[a->n++] = (ahead_entry){d, w8, a->gen, ev, false};
    }
    return QD_OK;
}

void *qd_cuda_ahead_take(qd_cuda *c, const cuda_linear *d) {
    cuda_ahead *a = (cuda_ahead *)c->ahead;
    if (!a) return NULL;
    int best = -1;
    for (int i = 0; i < a->n; i++)
        if (a->e[i].d == d && !a->e[i].taken && (best < 0 || a->e[i].gen < a->e[best].gen)) best = i;
    if (best < 0) return NULL;
    if (cudaStreamWaitEvent(c->stream, a->ev[a->e[best].ev], 0) != cudaSuccess) {
        cudaGetLastError();
        return NULL; /* the linear expands its own copy; this one is freed with its generation */
    }
    a->e[best].taken = true;
    return a->e[best].w8;
}

/* every staged copy no linear took, freed; the side stream joined to the backend's stream */
static qd_status settle(qd_cuda *c) {
    cuda_ahead *a = (cuda_ahead *)c->ahead;
    if (!a) return QD_OK;
    while (a->n) drop(a, a->n - 1);
    return join(c, a);
}

qd_status qd_cuda_ahead_recording_begin(qd_cuda *c) { return settle(c); }
qd_status qd_cuda_ahead_recording_end(qd_cuda *c) { return settle(c); }

void qd_cuda_ahead_free(qd_cuda *c) {
    cuda_ahead *a = (cuda_ahead *)c->ahead;
    if (!a) return;
    if (a->side) {
        settle(c);
        cudaStreamSynchronize(a->side);
        cudaStreamDestroy(a->side);
    }
    if (a->fork) cudaEventDestroy(a->fork);
    if (a->joined) cudaEventDestroy(a->joined);
    for (int i = 0; i < AHEAD_MAX; i++)
        if (a->ev[i]) cudaEventDestroy(a->ev[i]);
    free(a);
    c->ahead = NULL;
}
