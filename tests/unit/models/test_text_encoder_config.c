/* Text-encoder configuration and index rules against transformers' definitions:
 *  - T5's bidirectional relative-position bucket (modeling_t5.py _relative_position_bucket) for both
 *    directions, the exact range, the logarithmic range and the clamp; expected values computed from the
 *    formula in float64 by hand-written Python (the float32 path agrees at the exact boundaries 16, 32, 64);
 *  - CLIP's pooled position: argmax of the ids for eos_token_id 2, else the first eos_token_id (0 if none);
 *  - LLM configs: rope_theta top-level or under rope_parameters, scaled RoPE refused, Qwen3's q/k norm,
 *    head_dim explicit or derived, sliding window only when in use; T5's feed_forward_proj forms. */
#include <jansson.h>
#include <string.h>

#include "core/status.h"
#include "models/te/clip.h"
#include "models/te/llm.h"
#include "models/te/t5.h"
#include "test_util.h"

static void test_t5_bucket(void **state) {
    (void)state;
    static const int rel[] = {0, 1, -1, 7, -7, 8, -8, 9, 11, 12, -15, 16, -16, 22, 23, 31, 32, -32, 45, 63, 64, -64, 90, 127, 128, -128, 1000, -1000};
    static const int b128[] = {0, 17, 1, 23, 7, 24, 8, 24, 24, 25, 9, 26, 10, 26, 27, 27, 28, 12, 28, 29, 30, 14, 30, 31, 31, 15, 31, 15};
    static const int b64[] = {0, 17, 1, 23, 7, 24, 8, 24, 25, 25, 10, 26, 10, 27, 28, 29, 29, 13, 30, 31, 31, 15, 31, 31, 31, 15, 31, 15};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
        int g = qd_t5_bucket(rel[i], 32, 128), h = qd_t5_bucket(rel[i], 32, 64);
        if (g != b128[i]) fail_msg("bucket(%d; 32, 128) = %d, expected %d", rel[i], g, b128[i]);
        if (h != b64[i]) fail_msg("bucket(%d; 32, 64) = %d, expected %d", rel[i], h, b64[i]);
    }
}

static void test_clip_eos(void **state) {
    (void)state;
    qd_clip_config c = {.eos_token_id = 2};
    const int64_t ids[6] = {49406, 320, 1125, 49407, 49407, 49407}; /* padded with end-of-text: the first is pooled */
    assert_int_equal(qd_clip_eos_position(&c, ids, 6), 3);
    c.eos_token_id = 1125;
    assert_int_equal(qd_clip_eos_position(&c, ids, 6), 2);
    c.eos_token_id = 7;
    assert_int_equal(qd_clip_eos_position(&c, ids, 6), 0);
    c.eos_token_id = 49406;
    assert_int_equal(qd_clip_eos_position(&c, ids, 6), 0);
}

static qd_status llm(const char *text, qd_llm_config *c) {
    json_error_t err;
    json_t *cfg = json_loads(text, 0, &err);
    assert_non_null(cfg);
    qd_status s = qd_llm_config_parse("config.json", cfg, c);
    json_decref(cfg);
    return s;
}

#define LLM_BASE "\"hidden_size\":64,\"num_hidden_layers\":3,\"num_attention_heads\":4,\"intermediate_size\":160,\"vocab_size\":1000"

static void test_llm_config(void **state) {
    (void)state;
    qd_llm_config c;
    assert_int_equal(llm("{" LLM_BASE ",\"model_type\":\"qwen3\",\"head_dim\":32,\"num_key_value_heads\":2,"
                         "\"rope_parameters\":{\"rope_theta\":1000000.0,\"rope_type\":\"default\"},\"sliding_window\":null}", &c), QD_OK);
    assert_true(c.rope_theta == 1e6 && c.qk_norm && c.head_dim == 32 && c.kv_heads == 2 && c.sliding_window == 0);
    /* the published form: top-level rope_theta; Qwen2 keeps sliding_window but turns it off */
    assert_int_equal(llm("{" LLM_BASE ",\"model_type\":\"qwen2\",\"rope_theta\":500000.0,\"use_sliding_window\":false,"
                         "\"sliding_window\":4096,\"rope_scaling\":null}", &c), QD_OK);
    assert_true(c.rope_theta == 5e5 && !c.qk_norm && c.head_dim == 16 && c.kv_heads == 4 && c.sliding_window == 0);
    assert_int_equal(llm("{" LLM_BASE ",\"architectures\":[\"Qwen3Model\"]}", &c), QD_OK);
    assert_true(c.qk_norm && c.rope_theta == 10000.0);
    assert_int_equal(llm("{" LLM_BASE ",\"model_type\":\"mistral\",\"sliding_window\":4096}", &c), QD_OK);
    assert_true(c.sliding_window == 4096 && !c.qk_norm);
    /* refused, naming the field */
    assert_int_equal(llm("{" LLM_BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0}}", &c), QD_EUNSUPPORTED);
    assert_non_null(strstr(qd_last_error(), "llama3"));
    assert_int_equal(llm("{" LLM_BASE ",\"rope_parameters\":{\"rope_theta\":1e6,\"rope_type\":\"yarn\"}}", &c), QD_EUNSUPPORTED);
    assert_int_equal(llm("{" LLM_BASE ",\"hidden_act\":\"gelu\"}", &c), QD_EUNSUPPORTED);
    assert_non_null(strstr(qd_last_error(), "hidden_act"));
    assert_int_equal(llm("{" LLM_BASE ",\"num_key_value_heads\":3}", &c), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "num_key_value_heads"));
    assert_int_equal(llm("{\"num_hidden_layers\":3}", &c), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "hidden_size"));
    assert_int_equal(llm("{" LLM_BASE ",\"rope_theta\":\"big\"}", &c), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "rope_theta"));
    assert_int_equal(llm("{" LLM_BASE ",\"rms_norm_eps\":-1e-6}", &c), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "rms_norm_eps"));
    assert_int_equal(llm("{" LLM_BASE ",\"head_dim\":15}", &c), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "head_dim"));
    /* sizes are bounded, so their products cannot overflow */
    assert_int_equal(llm("{\"hidden_size\":4611686018427387904,\"num_hidden_layers\":3,\"num_attention_heads\":4,"
                         "\"intermediate_size\":160,\"vocab_size\":1000}", &c), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "hidden_size"));
    assert_int_equal(llm("{" LLM_BASE ",\"sliding_window\":0}", &c), QD_EFORMAT);
}

static qd_status t5(const char *text, qd_t5_config *c) {
    json_t *cfg = json_loads(text, 0, NULL);
    assert_non_null(cfg);
    qd_status s = qd_t5_config_parse("config.json", cfg, c);
    json_decref(cfg);
    return s;
}

#define T5_BASE "\"d_model\":64,\"d_kv\":16,\"num_heads\":4,\"d_ff\":160,\"num_layers\":3,\"vocab_size\":1000"

static void test_t5_config(void **state) {
    (void)state;
    qd_t5_config c;
    assert_int_equal(t5("{" T5_BASE ",\"feed_forward_proj\":\"gated-gelu\"}", &c), QD_OK);
    assert_true(c.gated && c.act == QD_ACT_GELU_TANH && c.buckets == 32 && c.max_distance == 128 && !c.per_layer_bias);
    assert_int_equal(t5("{" T5_BASE ",\"feed_forward_proj\":\"relu\"}", &c), QD_OK);
    assert_true(!c.gated && c.act == QD_ACT_RELU);
    assert_int_equal(t5("{" T5_BASE ",\"feed_forward_proj\":\"gelu\"}", &c), QD_OK);
    assert_true(!c.gated && c.act == QD_ACT_GELU_ERF);
    assert_int_equal(t5("{" T5_BASE ",\"feed_forward_proj\":\"gated-silu\",\"model_type\":\"umt5\"}", &c), QD_OK);
    assert_true(c.gated && c.act == QD_ACT_SILU && c.per_layer_bias);
    assert_int_equal(t5("{" T5_BASE ",\"feed_forward_proj\":\"gated-swish\"}", &c), QD_EUNSUPPORTED);
    assert_non_null(strstr(qd_last_error(), "feed_forward_proj"));
    assert_int_equal(t5("{" T5_BASE ",\"relative_attention_num_buckets\":2}", &c), QD_EFORMAT);
    assert_int_equal(t5("{\"d_model\":64}", &c), QD_EFORMAT);
    assert_int_equal(t5("{" T5_BASE ",\"layer_norm_epsilon\":0}", &c), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "layer_norm_epsilon"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_t5_bucket),
        cmocka_unit_test(test_clip_eos),
        cmocka_unit_test(test_llm_config),
        cmocka_unit_test(test_t5_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
