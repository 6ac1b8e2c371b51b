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
 * every layer of these encoders is smaller.
 *
 * Beyond the fixtures' own form: the checkpoint name layouts published checkpoints use (CLIP under
 * `text_model.`, a …ForCausalLM's `model.`, T5's `encoder.embed_tokens`) and a top-level `rope_theta`
 * must give bit-identical outputs (the same weights renamed); a T5 attention mask over a tail must give
 * what the truncated ids give (relative positions and the unmasked keys are the same); --random-weights
 * runs each encoder from its config alone, repeatably; bad inputs are errors that name them. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "io/safetensors.h"
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

/* ---- name layouts and config forms ---- */

/* A copy of fixture `f`'s text_encoder in `dst`: tensor names with `from` at the start replaced by `to`
 * (the data bytes unchanged), and config.json with `drop` removed and the JSON object `add` merged in. */
static void variant(const te_fixture *f, const char *dst, const char *from, const char *to, const char *drop, const char *add) {
    char src[512];
    snprintf(src, sizeof src, FIX "/%s/text_encoder/model.safetensors", f->fixture);
    size_t n = 0;
    uint8_t *bytes = qt_read_file(src, &n);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)bytes[i] << (8 * i);
    json_t *h = json_loadb((const char *)bytes + 8, (size_t)hl, 0, NULL), *renamed = json_object();
    assert_non_null(h);
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        char name[512];
        if (strcmp(key, "__metadata__") && !strncmp(key, from, strlen(from))) snprintf(name, sizeof name, "%s%s", to, key + strlen(from));
        else snprintf(name, sizeof name, "%s", key);
        json_object_set(renamed, name, v);
    }
    char *header = json_dumps(renamed, JSON_COMPACT);
    char *st = qt_path(dst, "model.safetensors");
    qt_write_raw_safetensors(st, header, bytes + 8 + hl, n - 8 - (size_t)hl);
    free(header), free(st), free(bytes);
    json_decref(h), json_decref(renamed);

    snprintf(src, sizeof src, FIX "/%s/text_encoder/config.json", f->fixture);
    json_t *cfg = json_load_file(src, 0, NULL), *extra = add ? json_loads(add, 0, NULL) : NULL;
    assert_non_null(cfg);
    if (drop) json_object_del(cfg, drop);
    if (extra) json_object_update(cfg, extra);
    char *cp = qt_path(dst, "config.json");
    assert_int_equal(json_dump_file(cfg, cp, 0), 0);
    free(cp);
    json_decref(cfg), json_decref(extra);
}

/* forward on component `comp` with the fixture's inputs; the output path (caller frees) */
static char *run_comp(env *e, const te_fixture *f, const char *comp, const char *tag, const char *io) {
    char def[512], name[256];
    snprintf(def, sizeof def, FIX "/%s/io.safetensors", f->fixture);
    snprintf(name, sizeof name, "%s-%s.safetensors", f->fixture, tag);
    char *path = qt_path(e->dir, name), *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "forward", "--component", comp, "--inputs", io ? io : def, "--output", path, NULL);
    if (rc != 0) fail_msg("qdit forward %s (%s) failed (%d): %s", f->fixture, tag, rc, err);
    free(out), free(err);
    return path;
}

static void same(const te_fixture *f, const char *label, const char *a, const char *b) {
    for (int k = 0; k < 2 && f->outputs[k]; k++) {
        double d = qt_rel_l2(a, f->outputs[k], b, f->outputs[k]);
        print_message("%-13s %-20s %-34s vs the fixture's form: %.3e\n", f->fixture, f->outputs[k], label, d);
        if (d != 0.0) fail_msg("%s %s: %s differs from the fixture's form by %.3e", f->fixture, f->outputs[k], label, d);
    }
}

static void test_published_forms(void **state) {
    env *e = *state;
    char comp[512];
    snprintf(comp, sizeof comp, FIX "/%s/text_encoder", CLIP.fixture);
    char *clip = run_comp(e, &CLIP, comp, "plain", NULL);
    char *d = qt_path(e->dir, "clip-text_model");
    variant(&CLIP, d, "", "text_model.", NULL, NULL);
    char *o = run_comp(e, &CLIP, d, "text_model", NULL);
    same(&CLIP, "names under text_model.", o, clip);
    free(d), free(o), free(clip);

    snprintf(comp, sizeof comp, FIX "/%s/text_encoder", QWEN3.fixture);
    char *qwen = run_comp(e, &QWEN3, comp, "plain", NULL);
    d = qt_path(e->dir, "qwen3-causal-lm");
    variant(&QWEN3, d, "", "model.", "rope_parameters", "{\"rope_theta\": 1000000.0, \"architectures\": [\"Qwen3ForCausalLM\"]}");
    o = run_comp(e, &QWEN3, d, "causal_lm", NULL);
    same(&QWEN3, "model. names, top-level rope_theta", o, qwen);
    free(d), free(o);
    /* θ is read: another value moves the output */
    d = qt_path(e->dir, "qwen3-theta");
    variant(&QWEN3, d, "", "", "rope_parameters", "{\"rope_theta\": 10000.0}");
    o = run_comp(e, &QWEN3, d, "theta1e4", NULL);
    double moved = qt_rel_l2(o, "last_hidden_state", qwen, "last_hidden_state");
    print_message("%-13s rope_theta 1e4 instead of 1e6 moves the output by %.3e\n", QWEN3.fixture, moved);
    assert_true(moved > 1e-3);
    free(d), free(o), free(qwen);

    snprintf(comp, sizeof comp, FIX "/%s/text_encoder", T5.fixture);
    char *t5 = run_comp(e, &T5, comp, "plain", NULL);
    d = qt_path(e->dir, "t5-embed-tokens");
    variant(&T5, d, "shared.", "encoder.embed_tokens.", NULL, NULL);
    o = run_comp(e, &T5, d, "embed_tokens", NULL);
    same(&T5, "encoder.embed_tokens", o, t5);
    free(d), free(o), free(t5);
}

/* T5 with the last `cut` positions of each row masked equals T5 on the ids without them, at the kept positions */
static void test_t5_mask(void **state) {
    env *e = *state;
    qd_st_file *io = NULL;
    assert_int_equal(qd_st_open(FIX "/t5_tiny_a/io.safetensors", &io), QD_OK);
    const qd_st_tensor *t = qd_st_find(io, "input_ids");
    assert_non_null(t);
    const int64_t B = t->shape[0], L = t->shape[1], cut = 7, K = L - cut;
    const int64_t *ids = qd_st_data(io, t);
    int64_t *mask = malloc(sizeof *mask * (size_t)(B * L)), *kept = malloc(sizeof *kept * (size_t)(B * K));
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < L; i++) {
            mask[b * L + i] = i < K;
            if (i < K) kept[b * K + i] = ids[b * L + i];
        }
    char header[512];
    size_t nb = (size_t)(B * L) * 8;
    uint8_t *buf = malloc(2 * nb);
    memcpy(buf, ids, nb), memcpy(buf + nb, mask, nb);
    snprintf(header, sizeof header, "{\"input_ids\":{\"dtype\":\"I64\",\"shape\":[%lld,%lld],\"data_offsets\":[0,%zu]},"
             "\"attention_mask\":{\"dtype\":\"I64\",\"shape\":[%lld,%lld],\"data_offsets\":[%zu,%zu]}}",
             (long long)B, (long long)L, nb, (long long)B, (long long)L, nb, 2 * nb);
    char *masked_io = qt_path(e->dir, "t5-masked-io.safetensors"), *short_io = qt_path(e->dir, "t5-short-io.safetensors");
    qt_write_raw_safetensors(masked_io, header, buf, 2 * nb);
    snprintf(header, sizeof header, "{\"input_ids\":{\"dtype\":\"I64\",\"shape\":[%lld,%lld],\"data_offsets\":[0,%zu]}}",
             (long long)B, (long long)K, (size_t)(B * K) * 8);
    qt_write_raw_safetensors(short_io, header, kept, (size_t)(B * K) * 8);
    qd_st_close(io);
    char comp[512];
    snprintf(comp, sizeof comp, FIX "/t5_tiny_a/text_encoder");
    char *a = run_comp(e, &T5, comp, "masked", masked_io), *b = run_comp(e, &T5, comp, "short", short_io);
    /* the kept rows of a, one by one, against b */
    qd_st_file *fa = NULL, *fb = NULL;
    assert_int_equal(qd_st_open(a, &fa), QD_OK);
    assert_int_equal(qd_st_open(b, &fb), QD_OK);
    const qd_st_tensor *ta = qd_st_find(fa, "last_hidden_state"), *tb = qd_st_find(fb, "last_hidden_state");
    const int64_t D = ta->shape[2];
    const float *x = qd_st_data(fa, ta), *y = qd_st_data(fb, tb);
    double num = 0, den = 0, moved = 0;
    for (int64_t r = 0; r < B; r++)
        for (int64_t i = 0; i < K; i++)
            for (int64_t d = 0; d < D; d++) {
                double u = x[(r * L + i) * D + d], w = y[(r * K + i) * D + d];
                num += (u - w) * (u - w), den += w * w;
            }
    /* and the mask did something: the unmasked run differs at those positions */
    char *full = run_comp(e, &T5, comp, "unmasked", NULL);
    qd_st_file *ff = NULL;
    assert_int_equal(qd_st_open(full, &ff), QD_OK);
    const float *z = qd_st_data(ff, qd_st_find(ff, "last_hidden_state"));
    for (int64_t r = 0; r < B; r++)
        for (int64_t i = 0; i < K; i++)
            for (int64_t d = 0; d < D; d++) moved += fabs((double)z[(r * L + i) * D + d] - x[(r * L + i) * D + d]);
    print_message("t5_tiny_a masked tail vs truncated ids: relative L2 %.3e (unmasked differs by %.3e in L1)\n", sqrt(num / den), moved);
    assert_true(sqrt(num / den) < 1e-6);
    assert_true(moved > 1e-3);
    qd_st_close(fa), qd_st_close(fb), qd_st_close(ff);
    free(a), free(b), free(full), free(masked_io), free(short_io), free(mask), free(kept), free(buf);
}

/* --random-weights from each config alone: runs, repeats exactly, online FP8 of the same draw lands near it.
 * "Near" is loose (0.5): random layers keep activations at unit scale, and T5 does not scale q·k, so its
 * random scores are sharp and its softmax amplifies the FP8 error most (measured 0.35; CLIP 0.04). */
static void test_random_weights(void **state) {
    env *e = *state;
    const te_fixture *fs[3] = {&CLIP, &T5, &QWEN3};
    for (int i = 0; i < 3; i++) {
        const te_fixture *f = fs[i];
        char sub[128], src[512], io[512];
        snprintf(sub, sizeof sub, "config-only-%s", f->fixture);
        snprintf(src, sizeof src, FIX "/%s/text_encoder/config.json", f->fixture);
        snprintf(io, sizeof io, FIX "/%s/io.safetensors", f->fixture);
        char *dir = qt_path(e->dir, sub), *cfg = qt_path(dir, "config.json");
        size_t n = 0;
        char *text = qt_read_file(src, &n);
        qt_write_file(cfg, text, n);
        free(text);
        char *r[3];
        for (int k = 0; k < 3; k++) {
            char name[160];
            snprintf(name, sizeof name, "%s-random-%d.safetensors", f->fixture, k);
            r[k] = qt_path(e->dir, name);
            char *out = NULL, *err = NULL;
            int rc = k < 2 ? qt_run_qdit(&out, &err, "forward", "--component", dir, "--random-weights", "--inputs", io, "--output", r[k], NULL)
                           : qt_run_qdit(&out, &err, "forward", "--component", dir, "--random-weights", "--quantization", "fp8", "--inputs",
                                         io, "--output", r[k], NULL);
            if (rc) fail_msg("%s random weights run %d: %s", f->fixture, k, err);
            free(out), free(err);
        }
        assert_true(qt_rel_l2(r[1], "last_hidden_state", r[0], "last_hidden_state") == 0.0);
        double q = qt_rel_l2(r[2], "last_hidden_state", r[0], "last_hidden_state");
        print_message("%-13s random weights: online fp8 vs bf16 draw, relative L2 %.3e\n", f->fixture, q);
        assert_true(q > 1e-4 && q < 0.5);
        for (int k = 0; k < 3; k++) free(r[k]);
        free(dir), free(cfg);
    }
}

/* UMT5 (Wan's encoder) is T5 with a relative-bias table in every layer: the t5_tiny_a configuration as
 * UMT5EncoderModel with random weights runs, draws those tables (the model differs from the T5 form of
 * the same draw, whose layers 1.. reuse layer 0's bias) */
static void test_umt5_random(void **state) {
    env *e = *state;
    const char *io = FIX "/t5_tiny_a/io.safetensors";
    char *out[2];
    for (int k = 0; k < 2; k++) {
        char sub[64], name[64];
        snprintf(sub, sizeof sub, "umt5-config-%d", k);
        snprintf(name, sizeof name, "umt5-random-%d.safetensors", k);
        char *dir = qt_path(e->dir, sub), *cfg = qt_path(dir, "config.json");
        json_t *j = json_load_file(FIX "/t5_tiny_a/text_encoder/config.json", 0, NULL);
        assert_non_null(j);
        if (k) {
            json_object_set_new(j, "model_type", json_string("umt5"));
            json_object_set_new(j, "architectures", json_pack("[s]", "UMT5EncoderModel"));
        }
        qt_write_text(cfg, ""); /* creates the folder */
        assert_int_equal(json_dump_file(j, cfg, 0), 0);
        json_decref(j);
        out[k] = qt_path(e->dir, name);
        char *so = NULL, *se = NULL;
        int rc = qt_run_qdit(&so, &se, "forward", "--component", dir, "--random-weights", "--inputs", io, "--output", out[k], NULL);
        if (rc) fail_msg("umt5 random run %d: %s", k, se);
        free(so), free(se), free(dir), free(cfg);
    }
    double d = qt_rel_l2(out[1], "last_hidden_state", out[0], "last_hidden_state");
    print_message("t5_tiny_a as UMT5 (per-layer relative bias) vs as T5, same random draw: relative L2 %.3e\n", d);
    assert_true(d > 1e-4);
    free(out[0]), free(out[1]);
}

/* bad inputs: named, never a crash */
static void test_bad_inputs(void **state) {
    env *e = *state;
    char *o = qt_path(e->dir, "never.safetensors"), *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "forward", "--component", FIX "/t5_tiny_a/text_encoder", "--inputs", FIX "/flux_tiny_a/io.safetensors",
                         "--output", o, NULL);
    assert_true(rc != 0);
    assert_non_null(strstr(err, "input_ids"));
    free(out), free(err);
    /* an id past the vocabulary (CLIP's vocab is 1000) */
    int64_t ids[3] = {5, 1000, 7};
    char *bad = qt_path(e->dir, "bad-ids.safetensors");
    qt_write_raw_safetensors(bad, "{\"input_ids\":{\"dtype\":\"I64\",\"shape\":[1,3],\"data_offsets\":[0,24]}}", ids, sizeof ids);
    rc = qt_run_qdit(&out, &err, "forward", "--component", FIX "/clip_tiny_a/text_encoder", "--inputs", bad, "--output", o, NULL);
    assert_true(rc != 0);
    assert_non_null(strstr(err, "out of range"));
    free(out), free(err);
    /* CLIP has 77 positions */
    int64_t many[78] = {0};
    qt_write_raw_safetensors(bad, "{\"input_ids\":{\"dtype\":\"I64\",\"shape\":[1,78],\"data_offsets\":[0,624]}}", many, sizeof many);
    rc = qt_run_qdit(&out, &err, "forward", "--component", FIX "/clip_tiny_a/text_encoder", "--inputs", bad, "--output", o, NULL);
    assert_true(rc != 0);
    assert_non_null(strstr(err, "max_position_embeddings"));
    free(out), free(err);
    /* a mask of another shape */
    int64_t two[6] = {1, 2, 3, 1, 1, 1};
    qt_write_raw_safetensors(bad, "{\"input_ids\":{\"dtype\":\"I64\",\"shape\":[1,3],\"data_offsets\":[0,24]},"
                                  "\"attention_mask\":{\"dtype\":\"I64\",\"shape\":[3,1],\"data_offsets\":[24,48]}}", two, sizeof two);
    rc = qt_run_qdit(&out, &err, "forward", "--component", FIX "/qwen3_tiny_a/text_encoder", "--inputs", bad, "--output", o, NULL);
    assert_true(rc != 0);
    assert_non_null(strstr(err, "attention_mask"));
    free(out), free(err), free(bad), free(o);
}

static void test_clip(void **state) { conformance(state, &CLIP); }
static void test_t5(void **state) { conformance(state, &T5); }
static void test_qwen3(void **state) { conformance(state, &QWEN3); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_t5),
        cmocka_unit_test(test_qwen3),
        cmocka_unit_test(test_published_forms),
        cmocka_unit_test(test_t5_mask),
        cmocka_unit_test(test_random_weights),
        cmocka_unit_test(test_umt5_random),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
