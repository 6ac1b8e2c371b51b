/* The layerwise streaming schedule (backend/offload_plan.c) run against a model of two CUDA streams written
 * here: ops on a stream are ordered, an event records a stream's position, a wait orders the waiting stream
 * after it (vector clocks give "happens before"). Every fetch's actions are carried out on the model, then
 * the group's compute reads its slot. Checked, for 1 to 9 groups over several passes and for random fetch
 * orders (skipped groups, repeated passes, abandoned passes; the seed is printed):
 *   - a group's compute reads its own bytes: the last copy into the slot ordered before the read wrote that
 *     group, and no copy into the slot is unordered with the read (no overwrite of a slot still in use);
 *   - a group is bound exactly when it is resident, always in slot g % 2;
 *   - every copy of a complete pass is joined back into the compute stream before the pass ends (what a
 *     recorded CUDA graph needs), and a pass starting where a complete pass ended is `steady`;
 *   - every steady pass issues the same actions (a recorded pass replays as recorded);
 *   - in steady passes the copy of group g + 1 is unordered with g's compute (the overlap the scheme is for);
 *   - with one or two groups nothing is copied after the first pass. */
#include <stdio.h>
#include <string.h>

#include "backend/offload_plan.h"
#include "test_util.h"

enum { C = 0, K = 1, MAX_NODES = 8192, MAX_GROUPS = 16 };

typedef struct {
    int stream;
    int clock[2];
    int kind; /* 0 copy, 1 read, 2 end marker */
    int slot, group;
    int pass;
} node;

typedef struct {
    node n[MAX_NODES];
    int count;
    int clock[2][2];    /* each stream's vector clock */
    int fork_clock[2];  /* the fork event */
    int ready_clock[QD_OFFLOAD_SLOTS][2];
    int bound[MAX_GROUPS]; /* host-side: the slot a group's layers point into, −1 host memory */
    int pass;
} sim;

static void sim_init(sim *s) {
    memset(s, 0, sizeof *s);
    for (int g = 0; g < MAX_GROUPS; g++) s->bound[g] = -1;
}

static node *add(sim *s, int stream, int kind, int slot, int group) {
    assert_true(s->count < MAX_NODES);
    s->clock[stream][stream]++;
    node *x = &s->n[s->count++];
    *x = (node){stream, {s->clock[stream][0], s->clock[stream][1]}, kind, slot, group, s->pass};
    return x;
}

static void wait_for(int *clock, const int *ev) {
    for (int i = 0; i < 2; i++)
        if (ev[i] > clock[i]) clock[i] = ev[i];
}

static bool before(const node *a, const node *b) { return a->clock[a->stream] <= b->clock[a->stream] && a != b; }

/* carry out a fetch's actions on the model; returns the number of copies */
static int run(sim *s, const qd_offload_action *a, int n) {
    int copies = 0;
    for (int i = 0; i < n; i++) {
        switch (a[i].what) {
        case QD_OFFLOAD_FORK:
            memcpy(s->fork_clock, s->clock[C], sizeof s->fork_clock);
            wait_for(s->clock[K], s->fork_clock);
            break;
        case QD_OFFLOAD_UNBIND:
            assert_true(s->bound[a[i].group] >= 0);
            s->bound[a[i].group] = -1;
            break;
        case QD_OFFLOAD_COPY:
            assert_int_equal(a[i].slot, a[i].group % QD_OFFLOAD_SLOTS);
            for (int g = 0; g < MAX_GROUPS; g++) assert_true(s->bound[g] != a[i].slot); /* nobody bound to a slot being written */
            add(s, K, 0, a[i].slot, a[i].group);
            copies++;
            memcpy(s->ready_clock[a[i].slot], s->clock[K], sizeof s->ready_clock[0]);
            break;
        case QD_OFFLOAD_JOIN: wait_for(s->clock[C], s->ready_clock[a[i].slot]); break;
        case QD_OFFLOAD_BIND:
            assert_int_equal(a[i].slot, a[i].group % QD_OFFLOAD_SLOTS);
            s->bound[a[i].group] = a[i].slot;
            break;
        }
    }
    return copies;
}

/* the compute of group g: reads its slot */
static void compute(sim *s, int g) {
    assert_true(s->bound[g] >= 0);
    assert_int_equal(s->bound[g], g % QD_OFFLOAD_SLOTS);
    add(s, C, 1, s->bound[g], g);
}

/* every read saw its own group's bytes, and no copy raced a read of the same slot */
static void check_reads(const sim *s) {
    for (int r = 0; r < s->count; r++) {
        const node *rd = &s->n[r];
        if (rd->kind != 1) continue;
        const node *last = NULL;
        for (int w = 0; w < s->count; w++) {
            const node *wr = &s->n[w];
            if (wr->kind != 0 || wr->slot != rd->slot) continue;
            if (before(wr, rd)) {
                if (!last || before(last, wr)) last = wr;
            } else if (!before(rd, wr)) {
                fail_msg("the copy of group %d into slot %d races the compute of group %d", wr->group, wr->slot, rd->group);
            }
        }
        if (!last || last->group != rd->group)
            fail_msg("group %d's compute reads slot %d holding group %d", rd->group, rd->slot, last ? last->group : -1);
    }
}

/* every copy issued in `pass` is ordered before the end marker of the pass */
static void check_joined(const sim *s, const node *end, int pass) {
    for (int w = 0; w < s->count; w++) {
        const node *wr = &s->n[w];
        if (wr->kind == 0 && wr->pass == pass && !before(wr, end)) fail_msg("pass %d: the copy of group %d is never joined", pass, wr->group);
    }
}

static bool same_actions(const qd_offload_action *a, const qd_offload_action *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i].what != b[i].what || a[i].group != b[i].group || a[i].slot != b[i].slot) return false;
    return true;
}

static sim S;

static void test_passes(void **state) {
    (void)state;
    for (int G = 1; G <= 9; G++) {
        sim_init(&S);
        qd_offload_plan p;
        qd_offload_plan_init(&p, G);
        qd_offload_action steady[MAX_GROUPS][QD_OFFLOAD_MAX_ACTIONS];
        int steady_n[MAX_GROUPS];
        for (int pass = 0; pass < 5; pass++) {
            S.pass = pass;
            int copies = 0;
            node *copy_next[MAX_GROUPS] = {0}, *read[MAX_GROUPS] = {0};
            for (int g = 0; g < G; g++) {
                qd_offload_action a[QD_OFFLOAD_MAX_ACTIONS];
                const int first = S.count;
                const int n = qd_offload_plan_fetch(&p, g, a);
                assert_true(n <= QD_OFFLOAD_MAX_ACTIONS);
                if (g == 0) assert_true(p.steady == (pass > 0)); /* every pass after the first starts steady */
                copies += run(&S, a, n);
                for (int i = first; i < S.count; i++)
                    if (S.n[i].kind == 0 && S.n[i].group == g + 1) copy_next[g] = &S.n[i];
                compute(&S, g);
                read[g] = &S.n[S.count - 1];
                if (pass == 1) memcpy(steady[g], a, sizeof a), steady_n[g] = n;
                if (pass > 1) {
                    assert_int_equal(n, steady_n[g]);
                    assert_true(same_actions(a, steady[g], n));
                }
            }
            const node *end = add(&S, C, 2, -1, -1);
            check_joined(&S, end, pass);
            assert_true(qd_offload_plan_is_steady(&p));
            if (pass > 0 && G <= QD_OFFLOAD_SLOTS) assert_int_equal(copies, 0); /* everything stays resident */
            if (pass == 0) assert_int_equal(copies, G);
            if (pass > 0 && G > QD_OFFLOAD_SLOTS) assert_true(copies >= G - 1);
            /* overlap: g + 1's copy is not ordered after g's compute (nor before it) */
            for (int g = 0; pass > 0 && g + 1 < G; g++)
                if (copy_next[g]) assert_false(before(read[g], copy_next[g]) || before(copy_next[g], read[g]));
        }
        check_reads(&S);
    }
}

/* random fetch sequences: passes abandoned midway, groups skipped, passes restarted; the reads still see
   their own bytes, and passes that run to the end join their copies */
static void test_random_orders(void **state) {
    (void)state;
    uint64_t rng = qt_seed();
    for (int trial = 0; trial < 200; trial++) {
        const int G = 1 + (int)(qt_rand_u64(&rng) % 9);
        sim_init(&S);
        qd_offload_plan p;
        qd_offload_plan_init(&p, G);
        for (int pass = 0; pass < 6; pass++) {
            S.pass = pass;
            const bool abandon = qt_rand_u64(&rng) % 3 == 0, skips = qt_rand_u64(&rng) % 3 == 0;
            const int stop = abandon ? (int)(qt_rand_u64(&rng) % (unsigned)G) : G - 1;
            for (int g = 0; g <= stop; g++) {
                /* a group the model did not run (not the last: a prefetch is joined by the fetch after it) */
                if (skips && g > 0 && g < G - 1 && qt_rand_u64(&rng) % 3 == 0) continue;
                qd_offload_action a[QD_OFFLOAD_MAX_ACTIONS];
                const int n = qd_offload_plan_fetch(&p, g, a);
                assert_true(n <= QD_OFFLOAD_MAX_ACTIONS);
                run(&S, a, n);
                compute(&S, g);
            }
            if (!abandon) {
                const node *end = add(&S, C, 2, -1, -1);
                check_joined(&S, end, pass);
            }
        }
        check_reads(&S);
    }
}

static void test_state_after_init(void **state) {
    (void)state;
    qd_offload_plan p;
    qd_offload_plan_init(&p, 4);
    assert_false(qd_offload_plan_is_steady(&p));
    assert_int_equal(p.pending, -1);
    /* the first fetch copies group 0, joins it, binds it, and starts group 1's copy */
    qd_offload_action a[QD_OFFLOAD_MAX_ACTIONS];
    const int n = qd_offload_plan_fetch(&p, 0, a);
    const qd_offload_step want[] = {QD_OFFLOAD_FORK, QD_OFFLOAD_COPY, QD_OFFLOAD_JOIN, QD_OFFLOAD_BIND, QD_OFFLOAD_COPY};
    assert_int_equal(n, 5);
    for (int i = 0; i < n; i++) assert_int_equal(a[i].what, want[i]);
    assert_int_equal(a[1].group, 0);
    assert_int_equal(a[4].group, 1);
    assert_int_equal(a[4].slot, 1);
    assert_int_equal(p.pending, 1);
    /* the next fetch only joins it, and prefetches group 2 into slot 0 once group 0 is unbound */
    const int m = qd_offload_plan_fetch(&p, 1, a);
    const qd_offload_step want2[] = {QD_OFFLOAD_JOIN, QD_OFFLOAD_BIND, QD_OFFLOAD_UNBIND, QD_OFFLOAD_FORK, QD_OFFLOAD_COPY};
    assert_int_equal(m, 5);
    for (int i = 0; i < m; i++) assert_int_equal(a[i].what, want2[i]);
    assert_int_equal(a[2].group, 0);
    assert_int_equal(a[4].group, 2);
    assert_int_equal(a[4].slot, 0);
}

/* a recording runs the plan without the copies: only a whole pass from a steady state leaves the residency
   it found (what the CUDA backend keeps after a recording); an abandoned one does not */
static void test_recorded_pass_leaves_state(void **state) {
    (void)state;
    for (int G = 1; G <= 6; G++) {
        qd_offload_plan p, before;
        qd_offload_action a[QD_OFFLOAD_MAX_ACTIONS];
        qd_offload_plan_init(&p, G);
        for (int g = 0; g < G; g++) qd_offload_plan_fetch(&p, g, a);
        before = p;
        for (int g = 0; g < G; g++) qd_offload_plan_fetch(&p, g, a);
        assert_true(qd_offload_plan_same_residency(&p, &before));
        if (G < 3) continue;
        for (int stop = 0; stop + 1 < G; stop++) { /* abandoned after group `stop` */
            qd_offload_plan q = before;
            for (int g = 0; g <= stop; g++) qd_offload_plan_fetch(&q, g, a);
            assert_false(qd_offload_plan_same_residency(&q, &before));
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_after_init),
        cmocka_unit_test(test_passes),
        cmocka_unit_test(test_random_orders),
        cmocka_unit_test(test_recorded_pass_leaves_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
