/* Random weights under --quantization (models/random_weights.c): modelopt_fp8 draws the tensors a ModelOpt FP8
 * export stores and binds them as a checkpoint's — an FP8 layer with a per-tensor weight scale and a static
 * input scale, whose dequantized weights are the unquantized draw to within E4M3's rounding, whose bias is the
 * unquantized draw's, and whose input scale and bias stay valid once a backend releases the stored weight; the
 * online methods stay online; the methods that only read pre-quantized checkpoints are refused with what to use
 * instead. */
#include <math.h>
#include <string.h>

#include "core/codec.h"
#include "core/status.h"
#include "models/random_weights.h"
#include "test_util.h"

static void test_modelopt_fp8_layer(void **state) {
    (void)state;
    uint64_t rs = qt_seed();
    const uint64_t seed = qt_rand_u64(&rs);
    const int64_t in = 96 + 8 * (int64_t)(qt_rand_u64(&rs) % 8), out = 40 + (int64_t)(qt_rand_u64(&rs) % 24);
    const char *name = "transformer_blocks.3.attn.to_q";
    qd_quant_config q, none;
    qd_quant_config_init(&q), qd_quant_config_init(&none);
    assert_int_equal(qd_random_quant_config("modelopt_fp8", &q), QD_OK);
    assert_int_equal(q.method, QD_QM_MODELOPT_FP8);
    assert_false(q.online);

    qd_linear l, d;
    assert_int_equal(qd_random_linear(&q, seed, name, in, out, &l), QD_OK);
    assert_int_equal(qd_random_linear(&none, seed, name, in, out, &d), QD_OK);
    assert_int_equal(l.scheme, QD_SCHEME_FP8);
    assert_int_equal(l.act, QD_ACT_STATIC_TENSOR);
    assert_int_equal(l.weight.dtype, QD_DTYPE_F8_E4M3);
    assert_int_equal(l.out_features, out);
    assert_int_equal(l.in_features, in);
    assert_int_equal(qd_view_elements(&l.scale), 1);
    assert_int_equal(qd_view_elements(&l.input_scale), 1);
    const float ws = qd_view_get_flat(&l.scale, 0), xs = qd_view_get_flat(&l.input_scale, 0);
    assert_true(ws > 0 && isfinite(ws));
    assert_true(xs > 0 && isfinite(xs));
    assert_int_equal(d.weight.dtype, QD_DTYPE_BF16);

    /* the dequantized weight against the unquantized draw: E4M3 rounds to nearest, within 2^-4 of a normal value
       and 2^-10 of the scale for a subnormal one */
    const uint8_t *codes = l.weight.data;
    const uint16_t *w = d.weight.data;
    int distinct = 0, nonzero = 0;
    for (int64_t i = 0; i < out * in; i++) {
        const float ref = qd_bf16_to_f32(w[i]), got = qd_e4m3_to_f32(codes[i]) * ws;
        const float bound = fmaxf(0x1p-4f * fabsf(ref), 0x1p-10f * ws) * (1.0f + 0x1p-20f);
        if (!(fabsf(got - ref) <= bound)) fail_msg("weight %lld: %g dequantized against %g drawn (bound %g)", (long long)i, got, ref, bound);
        nonzero += got != 0.0f;
        distinct += i > 0 && codes[i] != codes[i - 1];
    }
    assert_true(nonzero > out * in / 2);
    assert_true(distinct > out * in / 2);
    /* the bias is the unquantized layer's */
    assert_int_equal(l.bias.dtype, QD_DTYPE_BF16);
    assert_int_equal(qd_view_elements(&l.bias), out);
    for (int64_t i = 0; i < out; i++) assert_float_equal(qd_view_get_flat(&l.bias, i), qd_view_get_flat(&d.bias, i), 0.0f);
    /* a backend that uploads the layer releases its stored weight and scale (the CUDA backend): the input scale and
       the bias stay readable (under ASan, a read of freed bytes fails here) */
    qd_linear_release_stored(&l);
    assert_null(l.weight.data);
    assert_float_equal(qd_view_get_flat(&l.input_scale, 0), xs, 0.0f);
    for (int64_t i = 0; i < out; i++) assert_float_equal(qd_view_get_flat(&l.bias, i), qd_view_get_flat(&d.bias, i), 0.0f);
    qd_linear_free(&l), qd_linear_free(&d);
    qd_quant_config_free(&q), qd_quant_config_free(&none);
}

/* --quantization-ignored-layers on random weights: a layer whose name contains a pattern is drawn in BF16 (SGLang's
   FLUX.1 ModelOpt FP8 layout: the blocks' MLPs and modulation); the others keep the method's scheme; patterns match
   substrings only ("norm.linear" is not in "norm1.linear"). Both for modelopt_fp8 (stored FP8) and online fp8. */
static void test_ignored_layers(void **state) {
    (void)state;
    uint64_t rs = qt_seed();
    const uint64_t seed = qt_rand_u64(&rs);
    const char *const patterns[] = {"ff.net", "norm.linear"};
    const struct {
        const char *name;
        bool kept;
    } layers[] = {{"transformer_blocks.0.ff.net.0.proj", true}, {"transformer_blocks.0.ff.net.2", true},
                  {"single_transformer_blocks.5.norm.linear", true}, {"transformer_blocks.0.norm1.linear", false},
                  {"single_transformer_blocks.5.proj_mlp", false}, {"transformer_blocks.0.attn.to_q", false}};
    for (int mi = 0; mi < 2; mi++) {
        qd_quant_config q;
        qd_quant_config_init(&q);
        assert_int_equal(qd_random_quant_config(mi ? "fp8" : "modelopt_fp8", &q), QD_OK);
        assert_int_equal(qd_random_quant_ignore(&q, patterns, 2), QD_OK);
        assert_int_equal(q.n_ignore, 2);
        for (size_t i = 0; i < sizeof layers / sizeof *layers; i++) {
            assert_int_equal(qd_quant_config_ignores(&q, layers[i].name), layers[i].kept);
            if (mi) continue; /* online fp8 quantizes at load, after the draw: the config says which */
            qd_linear l;
            assert_int_equal(qd_random_linear(&q, seed, layers[i].name, 64, 48, &l), QD_OK);
            if (layers[i].kept) assert_int_equal(l.weight.dtype, QD_DTYPE_BF16);
            else assert_int_equal(l.weight.dtype, QD_DTYPE_F8_E4M3);
            assert_int_equal(l.scheme, layers[i].kept ? QD_SCHEME_DENSE : QD_SCHEME_FP8);
            qd_linear_free(&l);
        }
        qd_quant_config_free(&q);
    }
}

static void test_methods(void **state) {
    (void)state;
    qd_quant_config q;
    qd_quant_config_init(&q);
    assert_int_equal(qd_random_quant_config("fp8", &q), QD_OK);
    assert_int_equal(q.method, QD_QM_FP8);
    assert_true(q.online);
    qd_quant_config_free(&q);

    qd_quant_config_init(&q);
    assert_int_equal(qd_random_quant_config("modelopt", &q), QD_OK);
    assert_false(q.online);
    qd_quant_config_free(&q);

    qd_quant_config_init(&q);
    assert_int_equal(qd_random_quant_config("modelopt_fp4", &q), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "--quantization nvfp4"));
    qd_quant_config_free(&q);

    qd_quant_config_init(&q);
    assert_int_equal(qd_random_quant_config("modelslim", &q), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "modelslim"));
    qd_quant_config_free(&q);

    qd_quant_config_init(&q);
    assert_int_not_equal(qd_random_quant_config("fp9", &q), QD_OK);
    qd_quant_config_free(&q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modelopt_fp8_layer),
        cmocka_unit_test(test_ignored_layers),
        cmocka_unit_test(test_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
