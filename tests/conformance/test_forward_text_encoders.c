/* The reference text encoders of ../shared/fixtures run through `qdit forward`: CLIPTextModel (clip_tiny_a:
 * last_hidden_state and pooler_output), T5EncoderModel (t5_tiny_a, no mask) and Qwen3Model (qwen3_tiny_a:
 * last_hidden_state and hidden_states[-2], with an attention mask; only positions where the mask is 1
 * are compared, as fixtures/README.md says), each compared in relative L2 with transformers' float32 output.
 *
 * Bounds: 1e-5 for f32 activations (README: f32 rounding only; the acceptance is 1e-4), 2e-2 for
 * bf16, as for the DiT fixtures. Online quantization (--quantization fp8 / mxfp8 / int8 / nvfp4) is
 * measured against the unquantized reference with test_forward_quantized's classes: it must move the
 * output past f32 noise (floor 1e-4: the layers really ran quantized) and stay within 0.2 (8-bit) / 0.45
 * (4-bit). mxfp4 is left out: SGLang keeps linears with fewer than 256 outputs unquantized under it and
 * every layer of these encoders is smaller. A run with no flag must equal the f32 run (unquantized). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define FIX QDIT_SHARED_DIR "/fixtures"
#define BOUND_8BIT 0.2
#define BOUND_4BIT 0.45
#define FLOOR 1e-4

typedef struct {
    char *dir;
} env;

static int setup(void **state) {
    env *e = calloc(1, sizeof *e);
    e->dir = qt_mkdtemp("forward-te");
    *state = e;
    return 0;
}

static int teardown(void **state) {
    env *e = *state;
    qt_rmtree(e->dir);
    free(e->dir);
    free(e);
    return 0;
}

typedef struct {
    const char *fixture;
    const char *outputs[2];
    bool masked; /* compare only where the fixture's attention_mask is 1 */
} te_fixture;

static const te_fixture CLIP = {"clip_tiny_a", {"last_hidden_state", "pooler_output"}, false};
static const te_fixture T5 = {"t5_tiny_a", {"last_hidden_state", NULL}, false};
static const te_fixture QWEN3 = {"qwen3_tiny_a", {"last_hidden_state", "hidden_states_minus2"}, true};

/* qdit forward on the fixture's text_encoder with --precision P and an optional flag + value; returns the
 * output path (caller frees) */
static char *run_te(env *e, const te_fixture *f, const char *precision, const char *flag, const char *value) {
    char comp[512], io[512], name[256];
    snprintf(comp, sizeof comp, FIX "/%s/text_encoder", f->fixture);
    snprintf(io, sizeof io, FIX "/%s/io.safetensors", f->fixture);
    snprintf(name, sizeof name, "%s-%s-%s.safetensors", f->fixture, precision, value ? value : "default");
    char *path = qt_path(e->dir, name), *out = NULL, *err = NULL;
    int rc = flag ? qt_run_qdit(&out, &err, "forward", "--component", comp, "--inputs", io, "--output", path, "--precision", precision,
                                flag, value, NULL)
                  : qt_run_qdit(&out, &err, "forward", "--component", comp, "--inputs", io, "--output", path, "--precision", precision,
                                NULL);
    if (rc != 0) fail_msg("qdit forward %s --precision %s %s %s failed (%d): %s", f->fixture, precision, flag ? flag : "",
                          value ? value : "", rc, err);
    free(out), free(err);
    return path;
}

/* relative L2 of output k of `path` against file `ref` (same names), masked where the fixture says so */
static double err_of(const te_fixture *f, const char *path, const char *ref, int k) {
    char io[512];
    snprintf(io, sizeof io, FIX "/%s/io.safetensors", f->fixture);
    return f->masked ? qt_rel_l2_masked(path, f->outputs[k], ref, f->outputs[k], io, "attention_mask")
                     : qt_rel_l2(path, f->outputs[k], ref, f->outputs[k]);
}

/* every output of `path` within `bound` of the fixture's reference (and above `floor`, when > 0) */
static void check(const te_fixture *f, const char *label, const char *path, double floor, double bound) {
    char io[512];
    snprintf(io, sizeof io, FIX "/%s/io.safetensors", f->fixture);
    for (int k = 0; k < 2 && f->outputs[k]; k++) {
        double err = err_of(f, path, io, k);
        print_message("%-13s %-20s %-22s relative L2 %.3e (bound %.2g)\n", f->fixture, f->outputs[k], label, err, bound);
        if (!(err <= bound)) fail_msg("%s %s %s: relative L2 %.3e > %.2g", f->fixture, f->outputs[k], label, err, bound);
        if (floor > 0 && !(err > floor)) {
            fail_msg("%s %s %s: within %.1e of the unquantized reference: the layers did not run quantized", f->fixture, f->outputs[k],
                     label, err);
        }
    }
}

static void conformance(void **state, const te_fixture *f) {
    env *e = *state;
    char *f32 = run_te(e, f, "f32", NULL, NULL);
    check(f, "f32", f32, 0, 1e-5);
    char *bf16 = run_te(e, f, "bf16", NULL, NULL);
    check(f, "bf16", bf16, 0, 2e-2);
    static const struct {
        const char *method;
        double bound;
    } q[] = {{"fp8", BOUND_8BIT}, {"mxfp8", BOUND_8BIT}, {"int8", BOUND_8BIT}, {"nvfp4", BOUND_4BIT}};
    for (size_t i = 0; i < sizeof q / sizeof *q; i++) {
        char label[64];
        snprintf(label, sizeof label, "f32, online %s", q[i].method);
        char *path = run_te(e, f, "f32", "--quantization", q[i].method);
        check(f, label, path, FLOOR, q[i].bound);
        free(path);
    }
    free(f32), free(bf16);
}

static void test_clip(void **state) { conformance(state, &CLIP); }
static void test_t5(void **state) { conformance(state, &T5); }
static void test_qwen3(void **state) { conformance(state, &QWEN3); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_t5),
        cmocka_unit_test(test_qwen3),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
