/* The reference modules of ../shared/fixtures run through `qdit forward`, the way a user checks a module:
 * FluxTransformer2DModel (flux_tiny_a), ZImageTransformer2DModel (zimage_tiny_a) and AutoencoderKL decode
 * (vae_kl_tiny_a), each with f32 and bf16 activations, compared in relative L2 (‖out − ref‖ / ‖ref‖).
 *
 * Bounds: 1e-5 for f32 activations (fixtures/README.md: f32 rounding only), 2e-2 for bf16.
 * Two references need a word:
 *  - flux in bf16: diffusers rounds σ and guidance to bf16 before and after its ×1000 (models.md §11.2), a
 *    deliberate change of the input, not compute error. `--scalar-rounding exact` measures the bf16 compute
 *    against the f32 fixture; the default (diffusers' rounding) is measured against an f32 run given the same
 *    rounded scalars (`--scalar-rounding bf16`).
 *  - the VAE fixture's output was computed on a GPU with TF32 convolutions: tools/reference/
 *    vae_precision_check.py measured it 4.4e-4 from diffusers' float64 decode, which it saved as
 *    tests/fixtures/vae_kl_tiny_a_f64.safetensors. f32 is held to 1e-5 of the float64 decode and to 6e-4 of
 *    the TF32 fixture (the floor is its own 4.4e-4). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define FIX QDIT_SHARED_DIR "/fixtures"

typedef struct {
    char *dir;
} env;

static int setup(void **state) {
    env *e = calloc(1, sizeof *e);
    e->dir = qt_mkdtemp("forward");
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

/* qdit forward on one fixture; returns the path of the output file (caller frees). `extra` may be NULL or
 * a flag and its value. */
static char *run_forward(env *e, const char *fixture, const char *component, const char *precision, const char *flag,
                         const char *value) {
    char comp[512], io[512], name[256];
    snprintf(comp, sizeof comp, FIX "/%s/%s", fixture, component);
    snprintf(io, sizeof io, FIX "/%s/io.safetensors", fixture);
    snprintf(name, sizeof name, "%s-%s-%s.safetensors", fixture, precision, value ? value : "default");
    char *out_path = qt_path(e->dir, name);
    char *out = NULL, *err = NULL;
    int rc = flag ? qt_run_qdit(&out, &err, "forward", "--component", comp, "--inputs", io, "--output", out_path, "--precision",
                                precision, flag, value, NULL)
                  : qt_run_qdit(&out, &err, "forward", "--component", comp, "--inputs", io, "--output", out_path, "--precision",
                                precision, NULL);
    if (rc != 0) fail_msg("qdit forward %s --precision %s failed (%d): %s", fixture, precision, rc, err);
    free(out), free(err);
    return out_path;
}

static void check(const char *what, double e, double bound) {
    print_message("%-52s relative L2 %.3e (bound %.0e)\n", what, e, bound);
    if (!(e <= bound)) fail_msg("%s: relative L2 %.3e > %.0e", what, e, bound);
}

static void test_flux(void **state) {
    env *e = *state;
    const char *ref = FIX "/flux_tiny_a/io.safetensors";
    char *f32 = run_forward(e, "flux_tiny_a", "transformer", "f32", NULL, NULL);
    check("flux_tiny_a f32", qt_rel_l2(f32, "output", ref, "output"), 1e-5);
    char *exact = run_forward(e, "flux_tiny_a", "transformer", "bf16", "--scalar-rounding", "exact");
    check("flux_tiny_a bf16 (exact scalars)", qt_rel_l2(exact, "output", ref, "output"), 2e-2);
    char *faithful = run_forward(e, "flux_tiny_a", "transformer", "bf16", NULL, NULL);
    char *f32r = run_forward(e, "flux_tiny_a", "transformer", "f32", "--scalar-rounding", "bf16");
    check("flux_tiny_a bf16 (diffusers' scalars) vs f32, same", qt_rel_l2(faithful, "output", f32r, "output"), 2e-2);
    /* the rounding is real: it moves the output well past f32 noise */
    double moved = qt_rel_l2(f32r, "output", ref, "output");
    print_message("%-52s relative L2 %.3e\n", "flux_tiny_a f32 with bf16-rounded scalars vs fixture", moved);
    assert_true(moved > 1e-3);
    free(f32), free(exact), free(faithful), free(f32r);
}

static void test_zimage(void **state) {
    env *e = *state;
    const char *ref = FIX "/zimage_tiny_a/io.safetensors";
    char *f32 = run_forward(e, "zimage_tiny_a", "transformer", "f32", NULL, NULL);
    check("zimage_tiny_a f32", qt_rel_l2(f32, "output", ref, "output"), 1e-5);
    char *bf16 = run_forward(e, "zimage_tiny_a", "transformer", "bf16", NULL, NULL);
    check("zimage_tiny_a bf16", qt_rel_l2(bf16, "output", ref, "output"), 2e-2);
    free(f32), free(bf16);
}

static void test_vae(void **state) {
    env *e = *state;
    const char *tf32 = FIX "/vae_kl_tiny_a/io.safetensors", *f64 = QDIT_SOURCE_DIR "/tests/fixtures/vae_kl_tiny_a_f64.safetensors";
    char *f32 = run_forward(e, "vae_kl_tiny_a", "vae", "f32", NULL, NULL);
    check("vae_kl_tiny_a f32 vs float64 decode", qt_rel_l2(f32, "output", f64, "output"), 1e-5);
    check("vae_kl_tiny_a f32 vs the TF32 fixture", qt_rel_l2(f32, "output", tf32, "output"), 6e-4);
    char *bf16 = run_forward(e, "vae_kl_tiny_a", "vae", "bf16", NULL, NULL);
    check("vae_kl_tiny_a bf16 vs float64 decode", qt_rel_l2(bf16, "output", f64, "output"), 2e-2);
    check("vae_kl_tiny_a bf16 vs the TF32 fixture", qt_rel_l2(bf16, "output", tf32, "output"), 2e-2);
    free(f32), free(bf16);
}

/* Tiled decoding against diffusers' own (enable_tiling) on a 40×36 latent: 16-latent tiles with 25% overlap,
 * edge tiles of two sizes (tools/reference/vae_tiled_reference.py, float64). Tiling changes the output (the
 * mid attention sees one tile: 0.21 from the untiled decode here), so matching it to f32 noise checks the
 * tile grid, the blend order and weights and the crops; the untiled decode of the same z is checked too. */
static void test_vae_tiled(void **state) {
    env *e = *state;
    const char *ref = QDIT_SOURCE_DIR "/tests/fixtures/vae_kl_tiny_a_tiled_f64.safetensors";
    char *out = NULL, *err = NULL;
    char *t32 = qt_path(e->dir, "tiled-f32.safetensors"), *t16 = qt_path(e->dir, "tiled-bf16.safetensors"),
         *u32 = qt_path(e->dir, "untiled-f32.safetensors");
    const char *vae = FIX "/vae_kl_tiny_a/vae";
    int rc = qt_run_qdit(&out, &err, "forward", "--component", vae, "--inputs", ref, "--output", t32, "--tiled", NULL);
    if (rc) fail_msg("tiled f32: %s", err);
    free(out), free(err);
    rc = qt_run_qdit(&out, &err, "forward", "--component", vae, "--inputs", ref, "--output", t16, "--tiled", "--precision", "bf16", NULL);
    if (rc) fail_msg("tiled bf16: %s", err);
    free(out), free(err);
    rc = qt_run_qdit(&out, &err, "forward", "--component", vae, "--inputs", ref, "--output", u32, NULL);
    if (rc) fail_msg("untiled f32: %s", err);
    free(out), free(err);
    check("vae tiled f32 vs diffusers tiled (float64)", qt_rel_l2(t32, "output", ref, "output"), 1e-5);
    check("vae tiled bf16 vs diffusers tiled (float64)", qt_rel_l2(t16, "output", ref, "output"), 2e-2);
    /* the reference stores the untiled decode as output_untiled */
    check("vae untiled f32 (40x36 latent) vs diffusers", qt_rel_l2(u32, "output", ref, "output_untiled"), 1e-5);
    double apart = qt_rel_l2(t32, "output", u32, "output");
    print_message("%-52s relative L2 %.3e\n", "vae tiled vs untiled (qdit)", apart);
    assert_true(apart > 1e-2);
    free(t32), free(t16), free(u32);
}

/* the float64 reference holds the fixture's own z: a guard against pairing it with other inputs */
static void test_vae_reference_matches_fixture_inputs(void **state) {
    (void)state;
    double d = qt_rel_l2(QDIT_SOURCE_DIR "/tests/fixtures/vae_kl_tiny_a_f64.safetensors", "z", FIX "/vae_kl_tiny_a/io.safetensors", "z");
    assert_true(d == 0.0);
}

/* --random-weights: a folder holding only config.json runs; the draw repeats exactly; online FP8 of the same
 * draw lands near it (the random layers keep activations at unit scale, so this is the FP8 error of a
 * 4-block module: well under 0.3) and not on it; weights files are refused with it. */
static void test_random_weights(void **state) {
    env *e = *state;
    char *cfg_dir = qt_path(e->dir, "config-only"), *cfg = qt_path(cfg_dir, "config.json");
    size_t n = 0;
    char *text = qt_read_file(FIX "/flux_tiny_a/transformer/config.json", &n);
    qt_write_file(cfg, text, n);
    free(text);
    const char *io = FIX "/flux_tiny_a/io.safetensors";
    char *r1 = qt_path(e->dir, "random-1.safetensors"), *r2 = qt_path(e->dir, "random-2.safetensors"),
         *rq = qt_path(e->dir, "random-fp8.safetensors");
    char *out = NULL, *err = NULL;
    char *const outs[3] = {r1, r2, rq};
    for (int i = 0; i < 3; i++) {
        int rc = i < 2 ? qt_run_qdit(&out, &err, "forward", "--component", cfg_dir, "--random-weights", "--inputs", io, "--output", outs[i], NULL)
                       : qt_run_qdit(&out, &err, "forward", "--component", cfg_dir, "--random-weights", "--quantization", "fp8", "--inputs", io,
                                     "--output", outs[i], NULL);
        if (rc) fail_msg("random weights run %d: %s", i, err);
        free(out), free(err);
    }
    assert_true(qt_rel_l2(r2, "output", r1, "output") == 0.0);
    double q = qt_rel_l2(rq, "output", r1, "output");
    print_message("%-52s relative L2 %.3e\n", "random flux_tiny_a: online fp8 vs bf16", q);
    assert_true(q > 1e-4 && q < 0.3);
    int rc = qt_run_qdit(&out, &err, "forward", "--component", cfg_dir, "--random-weights", "--transformer-weights-path",
                         FIX "/flux_tiny_a/transformer/diffusion_pytorch_model.safetensors", "--inputs", io, "--output", rq, NULL);
    assert_true(rc != 0);
    assert_non_null(strstr(err, "--random-weights"));
    free(out), free(err);
    free(cfg_dir), free(cfg), free(r1), free(r2), free(rq);
}

/* --trace-linears: the traced run's output is the untraced one's, and the first linear's input in the trace (FLUX's
 * x_embedder, on hidden_states itself) is the fixture's hidden_states bit for bit; a VAE refuses the flag. */
static void test_trace_linears(void **state) {
    env *e = *state;
    char *plain = run_forward(e, "flux_tiny_a", "transformer", "f32", NULL, NULL);
    char *trace = qt_path(e->dir, "trace.safetensors"), *traced = qt_path(e->dir, "traced.safetensors");
    char *out = NULL, *err = NULL;
    int rc = qt_run_qdit(&out, &err, "forward", "--component", FIX "/flux_tiny_a/transformer", "--inputs", FIX "/flux_tiny_a/io.safetensors",
                         "--output", traced, "--trace-linears", trace, NULL);
    if (rc) fail_msg("qdit forward --trace-linears failed (%d): %s", rc, err);
    free(out), free(err);
    assert_true(qt_rel_l2(traced, "output", plain, "output") == 0.0);
    assert_true(qt_rel_l2(trace, "0000 x_embedder", FIX "/flux_tiny_a/io.safetensors", "hidden_states") == 0.0);
    rc = qt_run_qdit(&out, &err, "forward", "--component", FIX "/vae_kl_tiny_a/vae", "--inputs", FIX "/vae_kl_tiny_a/io.safetensors",
                         "--output", traced, "--trace-linears", trace, NULL);
    assert_true(rc != 0);
    assert_non_null(strstr(err, "--trace-linears"));
    free(out), free(err), free(plain), free(trace), free(traced);
}

static void test_forward_bad_flags(void **state) {
    env *e = *state;
    char *out = NULL, *err = NULL;
    char *o = qt_path(e->dir, "never.safetensors");
    int rc = qt_run_qdit(&out, &err, "forward", "--component", FIX "/flux_tiny_a/transformer", "--inputs",
                         FIX "/flux_tiny_a/io.safetensors", "--output", o, "--scalar-rounding", "fp16", NULL);
    assert_true(rc != 0);
    assert_non_null(strstr(err, "--scalar-rounding fp16"));
    free(out), free(err);
    rc = qt_run_qdit(&out, &err, "forward", "--component", FIX "/flux_tiny_a/transformer", "--inputs",
                     FIX "/vae_kl_tiny_a/io.safetensors", "--output", o, NULL);
    assert_true(rc != 0);
    assert_non_null(strstr(err, "hidden_states"));
    free(out), free(err), free(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flux),
        cmocka_unit_test(test_zimage),
        cmocka_unit_test(test_vae),
        cmocka_unit_test(test_vae_tiled),
        cmocka_unit_test(test_random_weights),
        cmocka_unit_test(test_vae_reference_matches_fixture_inputs),
        cmocka_unit_test(test_trace_linears),
        cmocka_unit_test(test_forward_bad_flags),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
