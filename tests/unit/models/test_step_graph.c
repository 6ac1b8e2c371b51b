/* Step graphs (models/step_graph.c) against a recording backend written here: its one op adds the step's
 * input to an accumulator — run at once, or appended to the recording while one is open, and replayed by
 * a launch, reading the input's current value as a replayed CUDA graph reads its tensors. Checked: the
 * first run of a shape goes op by op, the second records and launches, later ones only launch; a replay
 * sees the inputs of its own run; shapes keep their own recordings (four at once, the oldest evicted and
 * freed); a backend without graphs, a refused recording, or a failed one runs op by op, and a failed one
 * switches recording off for good; clear frees every recording; keys differ for different values. */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "models/step_graph.h"
#include "test_util.h"

typedef struct {
    const int *input;
    int *acc;
} add_op;

typedef struct {
    add_op ops[64];
    int n;
} fake_graph;

typedef struct {
    bool recording, refuse_begin, fail_end;
    fake_graph *open;
    int begins, ends, launches, frees, eager_ops;
} fake_state;

static fake_state st;

static qd_status f_begin(qd_backend *b) {
    (void)b;
    st.begins++;
    if (st.refuse_begin) return qd_fail(QD_EUNSUPPORTED, "graphs refused by the test backend");
    st.recording = true;
    st.open = calloc(1, sizeof *st.open);
    return QD_OK;
}

static qd_status f_end(qd_backend *b, void **graph) {
    (void)b;
    st.ends++;
    st.recording = false;
    if (st.fail_end) {
        free(st.open);
        st.open = NULL;
        *graph = NULL;
        return qd_fail(QD_EDEVICE, "recording failed in the test backend");
    }
    *graph = st.open;
    st.open = NULL;
    return QD_OK;
}

static qd_status f_launch(qd_backend *b, void *graph) {
    (void)b;
    st.launches++;
    const fake_graph *g = graph;
    for (int i = 0; i < g->n; i++) *g->ops[i].acc += *g->ops[i].input;
    return QD_OK;
}

static void f_free(qd_backend *b, void *graph) {
    (void)b;
    st.frees++;
    free(graph);
}

static const qd_backend_ops with_graphs = {.name = "test-graphs", .graph_begin = f_begin, .graph_end = f_end, .graph_launch = f_launch,
                                           .graph_free = f_free};
static const qd_backend_ops without_graphs = {.name = "test-eager"};

/* the step: one op, acc += input */
typedef struct {
    const int *input;
    int *acc;
} step_args;

static qd_status body(void *user) {
    const step_args *a = user;
    if (st.recording) {
        st.open->ops[st.open->n++] = (add_op){a->input, a->acc};
    } else {
        st.eager_ops++;
        *a->acc += *a->input;
    }
    return QD_OK;
}

static void reset(void) { memset(&st, 0, sizeof st); }

static void test_first_eager_then_record_then_launch(void **state) {
    (void)state;
    reset();
    qd_backend be = {.ops = &with_graphs};
    qd_step_graph g = {.what = "the test step"};
    int input = 0, acc = 0;
    step_args a = {&input, &acc};
    const int64_t shape[] = {64, 64, 77};
    const uint64_t key = qd_step_graph_key(shape, 3);
    int expect = 0;
    for (int step = 0; step < 6; step++) {
        input = 3 + 7 * step; /* a new input each step, as a sampler's latents */
        expect += input;
        assert_int_equal(qd_step_graph_run(&g, &be, key, body, &a), QD_OK);
        assert_int_equal(acc, expect); /* the replay read this step's input */
    }
    assert_int_equal(st.eager_ops, 1); /* only the first step ran op by op */
    assert_int_equal(st.begins, 1);
    assert_int_equal(st.ends, 1);
    assert_int_equal(st.launches, 5); /* the recording step launches too */
    qd_step_graph_clear(&g, &be);
    assert_int_equal(st.frees, 1);
}

static void test_shapes_keep_their_recordings(void **state) {
    (void)state;
    reset();
    qd_backend be = {.ops = &with_graphs};
    qd_step_graph g = {0};
    int in[6] = {1, 10, 100, 1000, 10000, 100000}, acc[6] = {0};
    step_args a[6];
    uint64_t key[6];
    for (int i = 0; i < 6; i++) {
        a[i] = (step_args){&in[i], &acc[i]};
        const int64_t v[] = {i, 2 * i + 1};
        key[i] = qd_step_graph_key(v, 2);
        for (int j = 0; j < i; j++) assert_true(key[i] != key[j]);
    }
    /* two shapes alternating (a prompt and a negative prompt): each records once, then both launch */
    for (int r = 0; r < 5; r++)
        for (int i = 0; i < 2; i++) assert_int_equal(qd_step_graph_run(&g, &be, key[i], body, &a[i]), QD_OK);
    assert_int_equal(acc[0], 5 * in[0]);
    assert_int_equal(acc[1], 5 * in[1]);
    assert_int_equal(st.eager_ops, 2);
    assert_int_equal(st.ends, 2);
    /* four more shapes, each run twice: the slots hold four, so the oldest recordings are freed */
    for (int i = 2; i < 6; i++)
        for (int r = 0; r < 2; r++) assert_int_equal(qd_step_graph_run(&g, &be, key[i], body, &a[i]), QD_OK);
    for (int i = 2; i < 6; i++) assert_int_equal(acc[i], 2 * in[i]);
    assert_int_equal(st.frees, 2);
    /* shape 0 was evicted: it starts over, op by op, in place of the oldest left (shape 2's recording) */
    const int eager = st.eager_ops;
    assert_int_equal(qd_step_graph_run(&g, &be, key[0], body, &a[0]), QD_OK);
    assert_int_equal(st.eager_ops, eager + 1);
    assert_int_equal(acc[0], 6 * in[0]);
    assert_int_equal(st.frees, 3);
    qd_step_graph_clear(&g, &be);
    assert_int_equal(st.frees, 6); /* shapes 3, 4 and 5's recordings; shape 0 has none yet */
}

static void test_without_graphs_runs_op_by_op(void **state) {
    (void)state;
    reset();
    qd_backend be = {.ops = &without_graphs};
    qd_step_graph g = {0};
    int input = 5, acc = 0;
    step_args a = {&input, &acc};
    for (int i = 0; i < 4; i++) assert_int_equal(qd_step_graph_run(&g, &be, 99, body, &a), QD_OK);
    assert_int_equal(acc, 20);
    assert_int_equal(st.eager_ops, 4);
    assert_false(qd_step_graph_available(&be));
}

static void test_refused_or_failed_recording(void **state) {
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        reset();
        st.refuse_begin = mode == 0, st.fail_end = mode == 1;
        qd_backend be = {.ops = &with_graphs};
        qd_step_graph g = {0};
        int input = 0, acc = 0, expect = 0;
        step_args a = {&input, &acc};
        for (int i = 0; i < 5; i++) {
            input = i + 1;
            expect += input;
            assert_int_equal(qd_step_graph_run(&g, &be, 7, body, &a), QD_OK);
            assert_int_equal(acc, expect); /* nothing ran while recording; the step ran op by op after */
        }
        assert_true(g.off);
        assert_int_equal(st.begins, 1); /* no second try */
        assert_int_equal(st.launches, 0);
        assert_int_equal(st.eager_ops, 5);
        qd_step_graph_clear(&g, &be);
        assert_int_equal(st.frees, 0);
    }
}

static void test_keys(void **state) {
    (void)state;
    const int64_t a[] = {128, 128, 77, 0}, b[] = {128, 128, 78, 0}, c[] = {128, 77, 128, 0};
    assert_true(qd_step_graph_key(a, 4) != qd_step_graph_key(b, 4));
    assert_true(qd_step_graph_key(a, 4) != qd_step_graph_key(c, 4));
    assert_true(qd_step_graph_key(a, 3) != qd_step_graph_key(a, 4));
    assert_true(qd_step_graph_key(a, 4) == qd_step_graph_key(a, 4));
    assert_true(qd_step_graph_key(a, 0) != 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_eager_then_record_then_launch),
        cmocka_unit_test(test_shapes_keep_their_recordings),
        cmocka_unit_test(test_without_graphs_runs_op_by_op),
        cmocka_unit_test(test_refused_or_failed_recording),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
