/* The schedule of layerwise weight streaming (backend.h weights_fetch), apart from any device API so that
 * it is checked on the CPU (tests/unit/backend/test_offload_plan.c) and the CUDA backend only executes it
 * (cuda/offload.cu). Groups (transformer blocks, in the order the model runs them) live in host memory and
 * stream through two device slots: group g always lands in slot g % 2, so a recorded step finds the same
 * addresses every time it is replayed.
 *
 * Two streams: the compute stream runs the model, a copy stream runs the host→device copies. A fetch of
 * group g, issued by the model just before g's ops, yields actions:
 *   FORK    the copy stream waits for everything issued on the compute stream so far — in particular for
 *           the ops of the group that last used the slot about to be overwritten (g − 1 for a prefetch);
 *   UNBIND  a group's layers point back to host memory: not resident any more (running one is an error);
 *   COPY    on the copy stream: the group's bytes into the slot, then the slot's `ready` event recorded;
 *   JOIN    the compute stream waits for the slot's `ready` event;
 *   BIND    the group's layers point into the slot.
 * After making g resident, the fetch starts g + 1's copy (prefetch), which then overlaps g's compute; the
 * fetch of g + 1 only joins it. The last group prefetches nothing (no wrap-around): every copy issued in a
 * pass over the groups is joined before the pass ends, as a recorded CUDA graph requires of its forked
 * streams. A group already bound in its slot is not copied again (with one or two groups, nothing is
 * copied after the first pass).
 *
 * A fetch of a group not after the last one fetched starts a new pass; a prefetch left unjoined by an
 * abandoned pass (an error mid-step) is dropped, not joined: its event may belong to a failed recording,
 * and the copy stream runs in order, so any later copy into that slot, and the compute waiting for it,
 * come after it anyway. Every pass that starts from the state a complete pass leaves (`steady`) yields the
 * same actions, which is what makes a recorded pass replayable. */
#ifndef QD_BACKEND_OFFLOAD_PLAN_H
#define QD_BACKEND_OFFLOAD_PLAN_H

#include <stdbool.h>

#define QD_OFFLOAD_SLOTS 2
#define QD_OFFLOAD_MAX_ACTIONS 8

typedef enum { QD_OFFLOAD_FORK, QD_OFFLOAD_UNBIND, QD_OFFLOAD_COPY, QD_OFFLOAD_JOIN, QD_OFFLOAD_BIND } qd_offload_step;

typedef struct {
    qd_offload_step what;
    int group; /* UNBIND, COPY, BIND */
    int slot;  /* COPY, JOIN, BIND */
} qd_offload_action;

typedef struct {
    int n_groups;
    int owner[QD_OFFLOAD_SLOTS]; /* the group bound in each slot, −1 for none */
    int pending;                 /* the prefetched group: copy issued, not joined (−1: none) */
    int last;                    /* the group fetched last in this pass (−1: none yet) */
    bool steady;                 /* this pass started from the state a complete pass leaves */
} qd_offload_plan;

/* No group bound, nothing pending. */
void qd_offload_plan_init(qd_offload_plan *p, int n_groups);
/* The actions of a fetch of group g (0 ≤ g < n_groups) into out (room for QD_OFFLOAD_MAX_ACTIONS); returns
 * how many. The plan's state is advanced as if they were all carried out. */
int qd_offload_plan_fetch(qd_offload_plan *p, int g, qd_offload_action *out);
/* Whether the state is the one a complete pass leaves (the last two groups bound, nothing pending). */
bool qd_offload_plan_is_steady(const qd_offload_plan *p);
/* Whether two states claim the same residency (bound groups, pending copy). A step recorded but not run
 * advances the plan without moving bytes: the device still has the state from before, so the backend keeps
 * what the plan says only when the recording left it unchanged (a whole pass from a steady state). */
bool qd_offload_plan_same_residency(const qd_offload_plan *a, const qd_offload_plan *b);

#endif
