/* Step graphs (see step_graph.h). */
#include "models/step_graph.h"

#include <string.h>

#include "core/log.h"
#include "core/status.h"

bool qd_step_graph_available(const qd_backend *be) { return be->ops->graph_begin && be->ops->graph_launch; }

uint64_t qd_step_graph_key(const int64_t *v, int n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) h = (h ^ (uint8_t)((uint64_t)v[i] >> (8 * b))) * 0x100000001b3ull;
    return h ? h : 1;
}

void qd_step_graph_clear(qd_step_graph *g, qd_backend *be) {
    for (int i = 0; i < QD_STEP_GRAPH_SLOTS; i++) {
        if (g->slot[i].graph && be->ops->graph_free) be->ops->graph_free(be, g->slot[i].graph);
        g->slot[i].graph = NULL, g->slot[i].key = 0, g->slot[i].runs = 0;
    }
    g->next = 0;
}

qd_status qd_step_graph_run(qd_step_graph *g, qd_backend *be, uint64_t key, qd_step_body body, void *user) {
    if (!qd_step_graph_available(be) || g->off) return body(user);
    int i = 0;
    while (i < QD_STEP_GRAPH_SLOTS && g->slot[i].key != key) i++;
    if (i == QD_STEP_GRAPH_SLOTS) { /* a new shape: an empty slot, else the oldest one */
        for (i = 0; i < QD_STEP_GRAPH_SLOTS && g->slot[i].key; i++) {}
        if (i == QD_STEP_GRAPH_SLOTS) {
            i = g->next;
            g->next = (g->next + 1) % QD_STEP_GRAPH_SLOTS;
            if (g->slot[i].graph && be->ops->graph_free) be->ops->graph_free(be, g->slot[i].graph);
        }
        g->slot[i].key = key, g->slot[i].graph = NULL, g->slot[i].runs = 0;
    }
    if (g->slot[i].graph) return be->ops->graph_launch(be, g->slot[i].graph);
    if (g->slot[i].runs++ == 0) return body(user); /* op by op first: plans, workspaces, prepared weights */
    const char *what = g->what ? g->what : "the step";
    qd_status s = be->ops->graph_begin(be);
    if (s) {
        qd_log(QD_LOG_INFO, "%s runs op by op: %s", what, qd_last_error());
        qd_clear_error();
        g->off = true;
        return body(user);
    }
    s = body(user);
    void *graph = NULL;
    qd_status e = be->ops->graph_end(be, &graph);
    if (s || e) {
        qd_log(QD_LOG_WARN, "%s could not be recorded as a graph (%s); it runs op by op", what, qd_last_error());
        qd_clear_error();
        g->off = true;
        return body(user); /* nothing ran while recording */
    }
    g->slot[i].graph = graph;
    qd_log(QD_LOG_DEBUG, "%s recorded as a graph", what);
    return be->ops->graph_launch(be, graph);
}
