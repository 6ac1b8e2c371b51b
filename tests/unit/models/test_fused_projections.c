/* Fused projections (qd_model_projections, rms_norm_rope_cols; docs/cuda.md "Fused projections"), checked on the
 * CPU: a copy of the CPU backend's ops with fuse_projections set makes FLUX.1 and Z-Image join each block's q, k
 * and v at load and run the fused path of their forward (one linear, q/k normalised and rotated out of its output,
 * v copied), and Z-Image its w1 and w3 (one linear, SwiGLU over its two halves) — the path the GPU runs. Tiny random-weight models, inputs drawn fresh (seed printed), weights in f32
 * and online FP8 (per-token activations: joinable), and ModelOpt FP8 (static per-tensor activation scales, equal in the
 * parts: joinable). Checked:
 *   - the joined load has 2 fewer linears per [q; k; v] (FLUX: 2 per stream of a double block, 2 per single block;
 *     Z-Image: 2 per block, and 1 for [w1; w3]);
 *   - the fused forward equals the unfused one: every output element within 1e-5 of the output's scale (the same
 *     dot products, summed in another blocking at most; on the CPU they come out identical) — a wrong column
 *     offset, head split, norm weight or RoPE row is off by a good fraction of the output (a RoPE table one row
 *     off for k: 0.36 of outputs up to 3.4). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "core/status.h"
#include "models/dit/flux.h"
#include "models/dit/zimage.h"
#include "models/random_weights.h"
#include "quant/config.h"
#include "test_util.h"

static const char *const FLUX_CFG =
    "{\"num_layers\":2,\"num_single_layers\":3,\"attention_head_dim\":16,\"num_attention_heads\":2,\"joint_attention_dim\":32,"
    "\"pooled_projection_dim\":24,\"in_channels\":8,\"guidance_embeds\":true,\"axes_dims_rope\":[4,6,6]}";
static const char *const ZIMAGE_CFG =
    "{\"dim\":64,\"n_layers\":2,\"n_refiner_layers\":1,\"n_heads\":2,\"n_kv_heads\":2,\"in_channels\":4,\"cap_feat_dim\":32,"
    "\"axes_dims\":[8,12,12]}";

enum { FLUX_N = 4, FLUX_T = 3, FLUX_OUT = 1 * FLUX_N * 8, ZIMAGE_OUT = 4 * 8 * 8 };

/* load the model on `be` (fusing or not, as its ops say), run one forward on inputs from `seed`, free it;
   the output into out, the number of linears the load prepared into *layers */
static void run(bool zimage, qd_backend *be, qd_quant_method method, uint64_t seed, float *out, int64_t *layers) {
    qd_quant_config q;
    qd_quant_config_init(&q);
    q.method = method;
    q.online = method != QD_QM_NONE;
    if (method == QD_QM_MODELOPT_FP8) assert_int_equal(qd_random_quant_config("modelopt_fp8", &q), QD_OK); /* static, as stored */
    qd_linear_tally tally = {0};
    qd_model_ctx ctx = {.backend = be, .quant = &q, .act = QD_DTYPE_F32, .random_weights = true, .random_seed = 11, .tally = &tally};
    uint64_t rng = seed;
    json_t *cfg = json_loads(zimage ? ZIMAGE_CFG : FLUX_CFG, 0, NULL);
    qd_status s;
    if (zimage) {
        qd_zimage_config c;
        qd_zimage *m = NULL;
        s = qd_zimage_config_parse("tiny z-image", cfg, &c);
        if (!s) s = qd_zimage_load(&ctx, &c, &m);
        if (s) fail_msg("z-image load: %s", qd_last_error());
        qd_tensor x = qt_random_tensor(be, 4, (int64_t[]){4, 1, 8, 8}, &rng), cap = qt_random_tensor(be, 2, (int64_t[]){5, 32}, &rng), y;
        assert_int_equal(qd_tensor_new(be, &y, QD_DTYPE_F32, 4, x.shape), QD_OK);
        s = qd_zimage_forward(m, &x, 0.3f, &cap, &y);
        if (!s) s = be->ops->download(be, &y, out);
        if (s) fail_msg("z-image forward: %s", qd_last_error());
        qd_tensor_free(&x), qd_tensor_free(&cap), qd_tensor_free(&y);
        qd_zimage_free(m);
    } else {
        qd_flux_config c;
        qd_flux *m = NULL;
        s = qd_flux_config_parse("tiny flux", cfg, &c);
        if (!s) s = qd_flux_load(&ctx, &c, &m);
        if (s) fail_msg("flux load: %s", qd_last_error());
        qd_tensor hs = qt_random_tensor(be, 3, (int64_t[]){1, FLUX_N, 8}, &rng), enc = qt_random_tensor(be, 3, (int64_t[]){1, FLUX_T, 32}, &rng);
        qd_tensor pooled = qt_random_tensor(be, 2, (int64_t[]){1, 24}, &rng), y;
        assert_int_equal(qd_tensor_new(be, &y, QD_DTYPE_F32, 3, (int64_t[]){1, FLUX_N, 8}), QD_OK);
        float img_ids[FLUX_N * 3] = {0}, txt_ids[FLUX_T * 3] = {0}, ts = 0.6f, guide = 3.5f;
        for (int i = 0; i < FLUX_N; i++) img_ids[3 * i + 1] = (float)(i / 2), img_ids[3 * i + 2] = (float)(i % 2);
        qd_flux_inputs in = {.hidden = &hs, .encoder = &enc, .pooled = &pooled, .timestep = &ts, .guidance = &guide, .img_ids = img_ids,
                             .txt_ids = txt_ids};
        s = qd_flux_forward(m, &in, &y);
        if (!s) s = be->ops->download(be, &y, out);
        if (s) fail_msg("flux forward: %s", qd_last_error());
        qd_tensor_free(&hs), qd_tensor_free(&enc), qd_tensor_free(&pooled), qd_tensor_free(&y);
        qd_flux_free(m);
    }
    json_decref(cfg);
    *layers = tally.layers;
}

static void check(bool zimage, qd_quant_method method, int64_t joined) {
    const uint64_t seed = qt_seed();
    const int n = zimage ? ZIMAGE_OUT : FLUX_OUT;
    float *ref = malloc(sizeof *ref * (size_t)n), *got = malloc(sizeof *got * (size_t)n);
    qd_backend *cpu;
    assert_int_equal(qd_backend_cpu_create(&cpu), QD_OK);
    qd_backend_ops ops = *cpu->ops;
    ops.fuse_projections = true;
    qd_backend fusing = {.ops = &ops, .impl = cpu->impl};
    int64_t plain = 0, fused = 0;
    run(zimage, cpu, method, seed, ref, &plain);
    run(zimage, &fusing, method, seed, got, &fused);
    assert_int_equal(plain - fused, joined);
    double scale = 0, worst = 0;
    for (int i = 0; i < n; i++) {
        assert_true(isfinite(ref[i]) && ref[i] != 0.0f);
        scale = fmax(scale, fabs(ref[i]));
    }
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs((double)got[i] - ref[i]));
    printf("%s %s: %lld linears unfused, %lld fused; largest |fused - unfused| %.3g of an output up to %.3g\n", zimage ? "Z-Image" : "FLUX.1",
           method == QD_QM_NONE ? "f32" : qd_quant_method_name(method), (long long)plain, (long long)fused, worst, scale);
    assert_true(worst <= 1e-5 * scale);
    cpu->ops->destroy(cpu);
    free(ref), free(got);
}

/* FLUX tiny: 2 double blocks × 2 streams + 3 single blocks, 2 fewer linears for each [q; k; v] */
static void test_flux_f32(void **state) { (void)state, check(false, QD_QM_NONE, 2 * (2 * 2 + 3)); }
static void test_flux_fp8(void **state) { (void)state, check(false, QD_QM_FP8, 2 * (2 * 2 + 3)); }
/* Z-Image tiny: 2 layers + a noise and a context refiner, 2 fewer linears for each [q; k; v] and 1 for each [w1; w3] */
static void test_zimage_f32(void **state) { (void)state, check(true, QD_QM_NONE, 3 * 4); }
static void test_zimage_fp8(void **state) { (void)state, check(true, QD_QM_FP8, 3 * 4); }
/* ModelOpt FP8 (per-tensor weight scales, a static input scale equal in q, k and v, as calibration on one input
   gives): joined too, the per-tensor weight scales becoming one per output row */
static void test_flux_modelopt_fp8(void **state) { (void)state, check(false, QD_QM_MODELOPT_FP8, 2 * (2 * 2 + 3)); }
static void test_zimage_modelopt_fp8(void **state) { (void)state, check(true, QD_QM_MODELOPT_FP8, 3 * 4); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flux_f32),
        cmocka_unit_test(test_flux_fp8),
        cmocka_unit_test(test_zimage_f32),
        cmocka_unit_test(test_zimage_fp8),
        cmocka_unit_test(test_flux_modelopt_fp8),
        cmocka_unit_test(test_zimage_modelopt_fp8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
