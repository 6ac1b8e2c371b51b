/* Layerwise weight streaming schedule (see offload_plan.h). */
#include "backend/offload_plan.h"

void qd_offload_plan_init(qd_offload_plan *p, int n_groups) {
    p->n_groups = n_groups;
    for (int s = 0; s < QD_OFFLOAD_SLOTS; s++) p->owner[s] = -1;
    p->pending = -1;
    p->last = -1;
    p->steady = false;
}

bool qd_offload_plan_is_steady(const qd_offload_plan *p) {
    if (p->pending >= 0 || p->n_groups < 1) return false;
    for (int g = p->n_groups - 1; g >= 0 && g >= p->n_groups - QD_OFFLOAD_SLOTS; g--)
        if (p->owner[g % QD_OFFLOAD_SLOTS] != g) return false;
    return true;
}

bool qd_offload_plan_same_residency(const qd_offload_plan *a, const qd_offload_plan *b) {
    if (a->pending != b->pending) return false;
    for (int s = 0; s < QD_OFFLOAD_SLOTS; s++)
        if (a->owner[s] != b->owner[s]) return false;
    return true;
}

typedef struct {
    qd_offload_action *a;
    int n;
    bool forked;
} emitter;

static void emit(emitter *e, qd_offload_step what, int group, int slot) { e->a[e->n++] = (qd_offload_action){what, group, slot}; }

/* group into its (free) slot on the copy stream, after everything issued on the compute stream so far */
static void copy_into(emitter *e, qd_offload_plan *p, int group) {
    const int slot = group % QD_OFFLOAD_SLOTS;
    if (p->owner[slot] >= 0) emit(e, QD_OFFLOAD_UNBIND, p->owner[slot], -1);
    p->owner[slot] = -1;
    if (!e->forked) emit(e, QD_OFFLOAD_FORK, -1, -1);
    e->forked = true; /* nothing is issued on the compute stream between the actions of one fetch */
    emit(e, QD_OFFLOAD_COPY, group, slot);
}

int qd_offload_plan_fetch(qd_offload_plan *p, int g, qd_offload_action *out) {
    emitter e = {out, 0, false};
    const int s = g % QD_OFFLOAD_SLOTS;
    if (p->last < 0 || g <= p->last) { /* a new pass */
        p->pending = -1;               /* a stray prefetch of an abandoned pass: dropped (offload_plan.h) */
        p->steady = qd_offload_plan_is_steady(p);
    } else if (p->pending >= 0 && p->pending != g) { /* groups skipped: the stray copy joined all the same */
        emit(&e, QD_OFFLOAD_JOIN, -1, p->pending % QD_OFFLOAD_SLOTS);
        p->pending = -1;
    }
    if (p->pending == g) { /* prefetched by the last fetch: its copy is in flight */
        emit(&e, QD_OFFLOAD_JOIN, -1, s);
        emit(&e, QD_OFFLOAD_BIND, g, s);
        p->owner[s] = g;
        p->pending = -1;
    } else if (p->owner[s] != g) {
        copy_into(&e, p, g);
        emit(&e, QD_OFFLOAD_JOIN, -1, s);
        emit(&e, QD_OFFLOAD_BIND, g, s);
        p->owner[s] = g;
    }
    const int next = g + 1;
    if (next < p->n_groups && p->owner[next % QD_OFFLOAD_SLOTS] != next) {
        copy_into(&e, p, next);
        p->pending = next;
    }
    p->last = g;
    return e.n;
}
