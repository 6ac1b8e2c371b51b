/* libFuzzer target: a text encoder's config.json (transformers' form) through the three readers the
 * encoders use — qd_clip_config_parse, qd_t5_config_parse, qd_llm_config_parse (models/te/) — each on
 * the document itself and, for CLIP, on a CLIPConfig's text_config.
 *
 * Invariants on accepted input are what the loaders and forward passes rely on without re-checking:
 * every size in its documented range (so products such as heads × head_dim and vocab × hidden cannot
 * overflow), head counts that divide, an even head_dim for RoPE, a norm epsilon in (0, 1), a finite
 * RoPE θ > 1, T5 buckets ≥ 4 with max_distance above a quarter of them (the log-bucket formula's
 * domain), and an activation the backend knows. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "core/status.h"
#include "io/json.h"
#include "models/te/clip.h"
#include "models/te/llm.h"
#include "models/te/t5.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int in(int64_t v, int64_t max) { return v >= 1 && v <= max; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_t *root = NULL;
    qd_clear_error();
    if (qd_json_parse("config.json", (const char *)data, size, &root)) return 0;

    qd_clip_config cc;
    qd_clear_error();
    qd_status s = qd_clip_config_parse("config.json", root, &cc);
    if (s) check_failed(s);
    else {
        CHECK(in(cc.hidden, 1 << 20) && in(cc.heads, 4096) && cc.hidden % cc.heads == 0 && in(cc.ffn, 1 << 22));
        CHECK(in(cc.layers, 4096) && in(cc.vocab, 1 << 24) && in(cc.max_positions, 1 << 20));
        CHECK(cc.eps > 0 && cc.eps < 1);
        CHECK(cc.act == QD_ACT_QUICK_GELU || cc.act == QD_ACT_GELU_ERF || cc.act == QD_ACT_GELU_TANH);
        int64_t ids[4] = {cc.eos_token_id, 3, cc.eos_token_id, -1};
        int64_t at = qd_clip_eos_position(&cc, ids, 4);
        CHECK(at >= 0 && at < 4);
    }

    qd_t5_config tc;
    qd_clear_error();
    s = qd_t5_config_parse("config.json", root, &tc);
    if (s) check_failed(s);
    else {
        CHECK(in(tc.d_model, 1 << 20) && in(tc.d_kv, 4096) && in(tc.heads, 4096) && in(tc.d_ff, 1 << 22));
        CHECK(in(tc.layers, 4096) && in(tc.vocab, 1 << 24));
        CHECK(tc.buckets >= 4 && tc.buckets <= 4096 && tc.max_distance > tc.buckets / 4 && tc.max_distance <= 1 << 24);
        CHECK(tc.eps > 0 && tc.eps < 1);
        /* every bucket the forward pass can ask for indexes the [buckets, heads] table */
        static const int64_t rel[] = {0, 1, -1, 7, -8, 100, -100, 65535, -65535};
        for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
            int b = qd_t5_bucket(rel[i], tc.buckets, tc.max_distance);
            CHECK(b >= 0 && b < tc.buckets);
        }
    }

    qd_llm_config lc;
    qd_clear_error();
    s = qd_llm_config_parse("config.json", root, &lc);
    if (s) check_failed(s);
    else {
        CHECK(in(lc.hidden, 1 << 20) && in(lc.layers, 4096) && in(lc.heads, 4096) && in(lc.kv_heads, 4096));
        CHECK(lc.heads % lc.kv_heads == 0 && in(lc.head_dim, 1024) && lc.head_dim % 2 == 0);
        CHECK(in(lc.ffn, 1 << 22) && in(lc.vocab, 1 << 24) && lc.sliding_window >= 0);
        CHECK(lc.eps > 0 && lc.eps < 1 && isfinite(lc.rope_theta) && lc.rope_theta > 1);
    }
    json_decref(root);
    return 0;
}
