/* The decoder-LLM encoder through the C API as a pipeline uses it: Z-Image needs hidden_states[-2] only, so
 * qd_llm_load binds the layers that index needs and no final norm. Against qwen3_tiny_a (transformers'
 * float32 outputs, compared where attention_mask is 1): hidden_states[-2] from the partial model matches
 * the fixture to f32 rounding; hidden_states[0] is the embedding rows themselves (checked against the
 * checkpoint's table, exactly); asking a partial model for the last state is an error, not a guess. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "core/codec.h"
#include "core/status.h"
#include "io/ckpt.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "models/te/llm.h"
#include "test_util.h"

#define FIX QDIT_SHARED_DIR "/fixtures/qwen3_tiny_a"

static void test_partial(void **state) {
    (void)state;
    json_t *cfg = NULL;
    assert_int_equal(qd_json_load_object(FIX "/text_encoder/config.json", &cfg), QD_OK);
    qd_llm_config c;
    assert_int_equal(qd_llm_config_parse("config.json", cfg, &c), QD_OK);
    json_decref(cfg);
    const char *paths[1] = {FIX "/text_encoder/model.safetensors"};
    qd_ckpt *ck = NULL;
    assert_int_equal(qd_ckpt_open_files(paths, 1, &ck), QD_OK);
    qd_quant_config q;
    qd_quant_config_init(&q);
    qd_backend *be = NULL;
    assert_int_equal(qd_backend_cpu_create(&be), QD_OK);
    qd_model_ctx ctx = {.backend = be, .ck = ck, .quant = &q, .act = QD_DTYPE_F32};
    qd_llm *m = NULL;
    if (qd_llm_load(&ctx, &c, c.layers - 1, &m)) fail_msg("%s", qd_last_error());

    qd_st_file *io = NULL;
    assert_int_equal(qd_st_open(FIX "/io.safetensors", &io), QD_OK);
    const qd_st_tensor *ti = qd_st_find(io, "input_ids"), *tm = qd_st_find(io, "attention_mask"),
                       *tr = qd_st_find(io, "hidden_states_minus2");
    const int64_t B = ti->shape[0], L = ti->shape[1], D = c.hidden;
    const int64_t *ids = qd_st_data(io, ti), *mask = qd_st_data(io, tm);
    const float *ref = qd_st_data(io, tr);
    qd_tensor out[2];
    for (int k = 0; k < 2; k++) assert_int_equal(qd_tensor_new(be, &out[k], QD_DTYPE_F32, 3, (int64_t[]){B, L, D}), QD_OK);
    if (qd_llm_forward(m, ids, mask, B, L, 2, (const int[]){-2, 0}, out)) fail_msg("%s", qd_last_error());
    float *h = malloc(sizeof *h * (size_t)(B * L * D)), *e = malloc(sizeof *e * (size_t)(B * L * D)), row[64];
    assert_int_equal(be->ops->download(be, &out[0], h), QD_OK);
    assert_int_equal(be->ops->download(be, &out[1], e), QD_OK);
    double num = 0, den = 0;
    for (int64_t i = 0; i < B * L; i++)
        for (int64_t d = 0; mask[i] && d < D; d++) {
            double x = h[i * D + d] - ref[i * D + d];
            num += x * x, den += (double)ref[i * D + d] * ref[i * D + d];
        }
    print_message("qwen3_tiny_a hidden_states[-2] from %lld of %lld layers: relative L2 %.3e\n", (long long)(c.layers - 1),
                  (long long)c.layers, sqrt(num / den));
    assert_true(sqrt(num / den) <= 1e-5);
    /* hidden_states[0]: the table rows, decoded independently from the checkpoint */
    const qd_ckpt_entry *te = qd_ckpt_find(ck, "embed_tokens.weight");
    assert_non_null(te);
    assert_true(D <= 64);
    for (int64_t i = 0; i < B * L; i++) {
        const uint16_t *src = (const uint16_t *)qd_st_data(te->file, te->tensor) + ids[i] * D;
        for (int64_t d = 0; d < D; d++) row[d] = qd_bf16_to_f32(src[d]);
        assert_memory_equal(row, e + i * D, sizeof(float) * (size_t)D);
    }
    /* the last state needs the last layer and the final norm, which were not loaded */
    assert_int_equal(qd_llm_forward(m, ids, mask, B, L, 1, (const int[]){-1}, out), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "not loaded"));
    free(h), free(e);
    qd_tensor_free(&out[0]), qd_tensor_free(&out[1]);
    qd_st_close(io);
    qd_llm_free(m);
    be->ops->destroy(be);
    qd_quant_config_free(&q);
    qd_ckpt_close(ck);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_partial)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
