/* The fixture transformers (flux_tiny_a, zimage_tiny_a) quantized, through `qdit forward` with f32
 * activations, against the unquantized reference output:
 *  - online, at load: --quantization fp8, mxfp4, mxfp8, nvfp4, int8;
 *  - from checkpoint files that tools/quant-fixtures (an independent numpy writer) made from the same
 *    weights: ModelOpt FP8, ModelOpt NVFP4, msModelSlim W8A8 and W4A4_MXFP4, and a Nunchaku SVDQuant int4
 *    file at rank 8 (nunchaku's names; given as --transformer-weights-path over the fixture's folder).
 * Each run must (a) succeed, (b) stay finite, (c) move away from the unquantized output by more than f32
 * noise — so the layers really ran quantized — and (d) stay within its format class's bound. The bounds
 * are set per class, not per run: error compounds over the modules' 4 (FLUX) / 4 (Z-Image) blocks from
 * per-element relative rounding of weights and activations of about 2^-5 (8-bit: E4M3 3 mantissa bits,
 * int8 per channel/token) and 2^-2 (4-bit: E2M1 1 mantissa bit, int4 steps of amax/7). Measured values
 * are printed and kept in docs/formats.md; 8-bit runs measured 3e-3..1.2e-1, 4-bit runs 2.3e-2..2.8e-1.
 *   8-bit bound 0.2, 4-bit bound 0.45; floor (c) 1e-4 (f32 runs land at ~2e-6). */
#include <math.h>
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
    const char *quant; /* generated family files */
} env;

static int setup(void **state) {
    env *e = calloc(1, sizeof *e);
    e->dir = qt_mkdtemp("forward-quant");
    e->quant = getenv("QDIT_QUANT_FIXTURES");
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

/* runs forward on `model`'s inputs with either a component folder or --quantization METHOD */
static void run_case(env *e, const char *model, const char *component, const char *weights, const char *method, const char *label,
                     double bound) {
    char io[512], out[512], comp[512];
    snprintf(io, sizeof io, FIX "/%s/io.safetensors", model);
    snprintf(out, sizeof out, "%s/%s-%s.safetensors", e->dir, model, label);
    if (component) snprintf(comp, sizeof comp, "%s", component);
    else snprintf(comp, sizeof comp, FIX "/%s/transformer", model);
    char *so = NULL, *se = NULL;
    int rc = method    ? qt_run_qdit(&so, &se, "forward", "--component", comp, "--quantization", method, "--inputs", io, "--output", out, NULL)
             : weights ? qt_run_qdit(&so, &se, "forward", "--component", comp, "--transformer-weights-path", weights, "--inputs", io,
                                     "--output", out, NULL)
                       : qt_run_qdit(&so, &se, "forward", "--component", comp, "--inputs", io, "--output", out, NULL);
    if (rc != 0) fail_msg("%s %s: qdit forward failed (%d): %s", model, label, rc, se);
    free(so), free(se);
    double err = qt_rel_l2(out, "output", io, "output");
    print_message("%-14s %-22s relative L2 to the unquantized output %.3e (bound %.2f)\n", model, label, err, bound);
    if (!(err > FLOOR)) fail_msg("%s %s: output within %.1e of the unquantized one: the layers did not run quantized", model, label, err);
    if (!(err <= bound)) fail_msg("%s %s: relative L2 %.3e exceeds %.2f", model, label, err, bound);
}

static void online(void **state, const char *model) {
    env *e = *state;
    static const struct {
        const char *method;
        double bound;
    } m[] = {{"fp8", BOUND_8BIT}, {"mxfp8", BOUND_8BIT}, {"int8", BOUND_8BIT}, {"mxfp4", BOUND_4BIT}, {"nvfp4", BOUND_4BIT}};
    for (size_t i = 0; i < sizeof m / sizeof *m; i++) {
        char label[64];
        snprintf(label, sizeof label, "online %s", m[i].method);
        run_case(e, model, NULL, NULL, m[i].method, label, m[i].bound);
    }
}

static void families(void **state, const char *model) {
    env *e = *state;
    if (!e->quant) fail_msg("QDIT_QUANT_FIXTURES is not set (ctest sets it after quant_fixtures_generate)");
    static const struct {
        const char *family;
        double bound;
    } f[] = {{"modelopt_fp8_flat", BOUND_8BIT},
             {"modelslim_w8a8", BOUND_8BIT},
             {"modelopt_nvfp4", BOUND_4BIT},
             {"modelslim_w4a4_mxfp4", BOUND_4BIT}};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        char comp[512];
        snprintf(comp, sizeof comp, "%s/%s/%s", e->quant, model, f[i].family);
        run_case(e, model, comp, NULL, NULL, f[i].family, f[i].bound);
    }
    char file[512];
    snprintf(file, sizeof file, "%s/%s/svdquant_int4_r8/svdq-int4_r8-%s.safetensors", e->quant, model, model);
    run_case(e, model, NULL, file, NULL, "svdquant_int4_r8", BOUND_4BIT);
}

static void test_flux_online(void **state) { online(state, "flux_tiny_a"); }
static void test_zimage_online(void **state) { online(state, "zimage_tiny_a"); }
static void test_flux_families(void **state) { families(state, "flux_tiny_a"); }
static void test_zimage_families(void **state) { families(state, "zimage_tiny_a"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flux_online),
        cmocka_unit_test(test_zimage_online),
        cmocka_unit_test(test_flux_families),
        cmocka_unit_test(test_zimage_families),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
