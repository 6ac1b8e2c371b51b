/* Reference weights of a quant-fixtures manifest layer (see quant_manifest.h). */
#include "quant_manifest.h"

#include <stdlib.h>
#include <string.h>

#include "quant/packing.h"
#include "quant/plan.h"
#include "test_util.h"

void qt_manifest_reference(const qd_quant_config *cfg, const qd_ckpt *ck, json_t *layer, bool unsigned_shift, float *got, float *bias_got,
                           bool *bias_known) {
    const char *name = json_string_value(json_object_get(layer, "name"));
    const int64_t n_out = json_integer_value(json_object_get(layer, "out_features"));
    const int64_t k_in = json_integer_value(json_object_get(layer, "in_features"));
    *bias_known = true;
    json_t *parts = json_object_get(layer, "parts");
    const size_t n_parts = parts ? json_array_size(parts) : 1;
    for (size_t p = 0; p < n_parts; p++) {
        json_t *part = parts ? json_array_get(parts, p) : layer;
        const char *prefix = json_string_value(json_object_get(part, "checkpoint_prefix"));
        const char *shards[1] = {prefix};
        qd_linear l;
        if (qd_linear_bind(cfg, ck, prefix, shards, 1, &l)) fail_msg("%s: bind %s: %s", name, prefix, qd_last_error());
        if (l.scheme == QD_SCHEME_DENSE) fail_msg("%s: %s bound as %s, expected a quantized scheme", name, prefix, l.scheme_name);
        const bool unsig = json_is_true(json_object_get(part, "act_unsigned")) || json_is_true(json_object_get(layer, "act_unsigned"));
        if (unsig && unsigned_shift) l.act_unsigned = true;
        if (unsig && !unsigned_shift) *bias_known = false;
        float *w = malloc(sizeof *w * (size_t)(l.out_features * l.in_features));
        float *b = malloc(sizeof *b * (size_t)l.out_features);
        assert_int_equal(qd_linear_dequantize(&l, w), QD_OK);
        qd_linear_bias_f32(&l, b);
        /* AWQ modulation layers keep the stored chunk interleave; the model de-interleaves (formats.md §5.6) */
        const int64_t splits = json_integer_value(json_object_get(layer, "adanorm_splits"));
        if (splits) {
            float *d = malloc(sizeof *d * (size_t)(l.out_features * l.in_features));
            float *db = malloc(sizeof *db * (size_t)l.out_features);
            assert_int_equal(qd_awq_mod_deinterleave(w, 1, l.out_features, (size_t)l.in_features * 4, (int)splits, d), QD_OK);
            assert_int_equal(qd_awq_mod_deinterleave(b, 1, l.out_features, 4, (int)splits, db), QD_OK);
            /* and the +1 baked into the scale chunks' bias comes back out */
            const int64_t per = l.out_features / splits;
            for (int64_t c = 0; c < splits; c++)
                if (c == 1 || c == splits - 2)
                    for (int64_t i = 0; i < per; i++) db[c * per + i] -= 1.0f;
            free(w), free(b);
            w = d, b = db;
        }
        json_t *rows = json_object_get(layer, "fused_rows"), *cols = json_object_get(part, "in_columns");
        const int64_t r0 = rows ? json_integer_value(json_array_get(rows, 0)) : 0;
        const int64_t c0 = cols ? json_integer_value(json_array_get(cols, 0)) : 0;
        const int64_t c1 = cols ? json_integer_value(json_array_get(cols, 1)) : k_in;
        if (l.out_features < r0 + n_out || l.in_features < c1 - c0) fail_msg("%s: part %s is too small", name, prefix);
        /* padded Nunchaku layers: the logical block is the top-left corner */
        for (int64_t r = 0; r < n_out; r++) {
            memcpy(got + r * k_in + c0, w + (r0 + r) * l.in_features, sizeof *got * (size_t)(c1 - c0));
            bias_got[r] = p ? bias_got[r] + b[r0 + r] : b[r0 + r];
        }
        free(w), free(b);
        qd_linear_free(&l);
    }
}
