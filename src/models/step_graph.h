/* A model's denoising step replayed as a backend graph (CUDA graphs on the GPU; the CPU backend has none
 * and runs the step op by op). The model keeps the step's inputs and output in tensors it owns, at fixed
 * addresses, and fills them before each run; the step body only reads and writes those and its own
 * temporaries. Per shape (the key), the first run goes op by op — it prepares weights, builds the matmul
 * and attention plans and sizes their workspaces, none of which can happen while recording — the second
 * records the body and launches the recording, and later runs only launch it. The recorded step holds
 * its activations at fixed addresses for the graph's life: the step's memory plan is made once.
 * If recording fails (an op that cannot be recorded), it says so once and the model runs op by op. */
#ifndef QD_MODELS_STEP_GRAPH_H
#define QD_MODELS_STEP_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"

enum { QD_STEP_GRAPH_SLOTS = 4 }; /* shapes kept at once (CFG's two caption lengths, say) */

typedef struct {
    struct {
        uint64_t key; /* 0: empty */
        void *graph;
        int runs; /* runs of this key so far */
    } slot[QD_STEP_GRAPH_SLOTS];
    int next;  /* the slot a new key takes when all are full */
    bool off;  /* recording failed once: op by op from then on */
    const char *what; /* the model, for messages */
} qd_step_graph;

typedef qd_status (*qd_step_body)(void *user);

/* Run body(user) for the shape `key` (nonzero), through the graph where it can. */
qd_status qd_step_graph_run(qd_step_graph *g, qd_backend *be, uint64_t key, qd_step_body body, void *user);
/* Forget every recording (the step's tensors were reallocated, or the model is freed). */
void qd_step_graph_clear(qd_step_graph *g, qd_backend *be);
/* Whether steps on this backend go through graphs (the model then keeps its step tensors). */
bool qd_step_graph_available(const qd_backend *be);

/* FNV-1a over n 64-bit values, for keys */
uint64_t qd_step_graph_key(const int64_t *v, int n);

#endif
