/* Schemes: online quantizers against the spec's vectors and per-format error bounds on fresh random
 * weights; binders on files written in each family's stored form (swizzled / hi-first NVFP4, fp8
 * scale shapes, MX, msModelSlim ints) reproducing the canonical layout exactly; fused shards. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "io/ckpt.h"
#include "quant/packing.h"
#include "quant/plan.h"
#include "quant/schemes.h"
#include "test_util.h"

static uint64_t rng;

static float *random_weight(int64_t n, int64_t k, float scale) {
    float *w = malloc(sizeof *w * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++) {
        /* a heavy-ish tail: some rows and columns carry outliers, as trained weights do */
        float u = qt_rand_uniform(&rng, -1, 1);
        if (qt_rand_u64(&rng) % 97 == 0) u *= 12;
        w[i] = u * scale;
    }
    return w;
}

/* formats.md §7: the NVFP4 block of the ModelOpt recipe */
static void test_nvfp4_spec_vector(void **state) {
    (void)state;
    const float block[16] = {0, 0.1f, -0.2f, 0.3f, 0.45f, -0.6f, 0.75f, 0.9f, 1.05f, -1.2f, 1.35f, 1.5f, -1.65f, 1.8f, 1.95f, -2.1f};
    float w[32] = {0};
    memcpy(w, block, sizeof block);
    w[16] = 21.0f; /* the tensor amax of the vector */
    qd_linear l = {0};
    assert_int_equal(qd_quantize_nvfp4(w, 1, 32, &l), QD_OK);
    float g;
    memcpy(&g, l.scale2.data, 4);
    assert_true(g == 0.0078125f);
    assert_int_equal(((const uint8_t *)l.scale.data)[0], 0x63);
    const uint8_t want[8] = {0x10, 0x29, 0xB3, 0x54, 0xD5, 0x66, 0x7E, 0xF7};
    assert_memory_equal(l.weight.data, want, 8);
    float deq[32];
    assert_int_equal(qd_linear_dequantize(&l, deq), QD_OK);
    assert_true(deq[1] == 0.34375f * 0.5f); /* code 1 = 0.5 × the block step 44 · 0.0078125 */
    qd_linear_free(&l);
}

/* formats.md §7: the MXFP4 block under the OCP floor rule */
static void test_mxfp4_spec_vector(void **state) {
    (void)state;
    float w[32] = {0, 0.5f, -1, 3, 7.5f, -0.26f, 0.24f, 2.4f};
    qd_linear l = {0};
    assert_int_equal(qd_quantize_mx(w, 1, 32, true, &l), QD_OK);
    assert_int_equal(((const uint8_t *)l.scale.data)[0], 0x7F);
    const uint8_t want[4] = {0x10, 0x5A, 0x97, 0x40};
    assert_memory_equal(l.weight.data, want, 4);
    qd_linear_free(&l);
}

typedef struct {
    const char *name;
    qd_status (*quantize)(const float *, int64_t, int64_t, qd_linear *);
} online_case;

static qd_status q_fp8_channel(const float *w, int64_t n, int64_t k, qd_linear *l) { return qd_quantize_fp8(w, n, k, false, l); }
static qd_status q_fp8_tensor(const float *w, int64_t n, int64_t k, qd_linear *l) { return qd_quantize_fp8(w, n, k, true, l); }
static qd_status q_mxfp4(const float *w, int64_t n, int64_t k, qd_linear *l) { return qd_quantize_mx(w, n, k, true, l); }
static qd_status q_mxfp8(const float *w, int64_t n, int64_t k, qd_linear *l) { return qd_quantize_mx(w, n, k, false, l); }

/* The largest error rounding can make for element (r, j), from the stored scales (formats.md §1–§4). */
static double error_bound(const qd_linear *l, const float *w, int64_t r, int64_t j) {
    int64_t k = l->in_features;
    double v = fabs(w[r * k + j]);
    switch (l->scheme) {
    case QD_SCHEME_FP8: {
        double s = qd_view_get(&l->scale, qd_view_elements(&l->scale) == 1 ? 0 : r, 0);
        return fmax(v * 0x1p-4, s * 0x1p-10) * 1.0000001; /* half an E4M3 ulp; the subnormal step */
    }
    case QD_SCHEME_NVFP4: {
        double step = qd_e4m3_to_f32(((const uint8_t *)l->scale.data)[r * (k / 16) + j / 16]) * qd_view_get(&l->scale2, 0, 0);
        double amax = 0;
        for (int i = 0; i < 16; i++) amax = fmax(amax, fabs(w[r * k + (j / 16) * 16 + i]));
        return fmax(step, amax - 6 * step) * 1.0000001; /* half the widest E2M1 gap (2), or the clipped excess */
    }
    case QD_SCHEME_MXFP4:
    case QD_SCHEME_MXFP8: {
        double x = qd_e8m0_to_f32(((const uint8_t *)l->scale.data)[r * (k / 32) + j / 32]);
        return l->scheme == QD_SCHEME_MXFP4 ? 2 * x : fmax(v * 0x1p-4, 64 * x);
    }
    /* half a step, plus the f32 rounding of w/s: a value a hair above a tie can divide to the tie exactly
       and round to even, one half-step plus |w|·2^-24 away (seed 1883223923638892 hits one) */
    case QD_SCHEME_INT8: return qd_view_get(&l->scale, r, 0) * 0.5000001 + v * 0x1p-23;
    default: return 0;
    }
}

static void test_online_error_bounds(void **state) {
    (void)state;
    const online_case cases[] = {{"fp8_channel", q_fp8_channel}, {"fp8_tensor", q_fp8_tensor}, {"nvfp4", qd_quantize_nvfp4},
                                 {"mxfp4", q_mxfp4},             {"mxfp8", q_mxfp8},           {"int8", qd_quantize_int8}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int64_t n = 16 + (int64_t)(qt_rand_u64(&rng) % 48), k = 64 * (1 + (int64_t)(qt_rand_u64(&rng) % 6));
        float *w = random_weight(n, k, 0.05f);
        qd_linear l = {0};
        assert_int_equal(cases[c].quantize(w, n, k, &l), QD_OK);
        float *d = malloc(sizeof *d * (size_t)(n * k));
        assert_int_equal(qd_linear_dequantize(&l, d), QD_OK);
        double num = 0, den = 0;
        for (int64_t r = 0; r < n; r++) {
            for (int64_t j = 0; j < k; j++) {
                double e = fabs((double)d[r * k + j] - w[r * k + j]);
                if (e > error_bound(&l, w, r, j)) {
                    fail_msg("%s: element (%lld, %lld) = %g dequantized to %g, beyond the bound %g", cases[c].name, (long long)r,
                             (long long)j, w[r * k + j], d[r * k + j], error_bound(&l, w, r, j));
                }
                num += e * e;
                den += (double)w[r * k + j] * w[r * k + j];
            }
        }
        print_message("%-12s %3lldx%-4lld relative L2 error %.4f\n", cases[c].name, (long long)n, (long long)k, sqrt(num / den));
        free(d);
        free(w);
        qd_linear_free(&l);
    }
}

/* ---- binding stored forms ---- */

static char *tmpdir;

static void write_tensors(const char *file, int count, const char *const *names, const qd_dtype *dt, const int *rank,
                          const int64_t (*shape)[2], const void *const *data) {
    char *p = qt_path(tmpdir, file);
    qd_st_writer *w;
    assert_int_equal(qd_st_writer_create(p, &w), QD_OK);
    for (int i = 0; i < count; i++) assert_int_equal(qd_st_writer_add(w, names[i], dt[i], rank[i], shape[i]), QD_OK);
    for (int i = 0; i < count; i++) {
        uint64_t el = 1, bytes;
        for (int d = 0; d < rank[i]; d++) el *= (uint64_t)shape[i][d];
        qd_dtype_storage_bytes(dt[i], el, &bytes);
        assert_int_equal(qd_st_writer_put(w, names[i], data[i], bytes), QD_OK);
    }
    assert_int_equal(qd_st_writer_finish(w), QD_OK);
    free(p);
}

static qd_ckpt *open_file(const char *file) {
    char *p = qt_path(tmpdir, file);
    const char *paths[1] = {p};
    qd_ckpt *ck;
    assert_int_equal(qd_ckpt_open_files(paths, 1, &ck), QD_OK);
    free(p);
    return ck;
}

/* NVFP4 stored Comfy-style (hi-first nibbles, swizzled scales) binds to the same canonical layout. */
static void test_nvfp4_stored_forms(void **state) {
    (void)state;
    tmpdir = qt_mkdtemp("nvfp4");
    int64_t n = 200, k = 96; /* N not a multiple of 128, K/16 = 6 not a multiple of 4: padding in both */
    float *w = random_weight(n, k, 0.02f);
    qd_linear ref = {0};
    assert_int_equal(qd_quantize_nvfp4(w, n, k, &ref), QD_OK);
    size_t wb = (size_t)(n * k / 2), sb;
    int64_t rp, cp;
    qd_sf_swizzled_dims(QD_SF_LAYOUT_128X4, n, k / 16, &rp, &cp, &sb);
    uint8_t *hi = malloc(wb), *swz = malloc(sb);
    memcpy(hi, ref.weight.data, wb);
    qd_swap_nibbles(hi, wb);
    assert_int_equal(qd_sf_swizzle(QD_SF_LAYOUT_128X4, ref.scale.data, n, k / 16, swz), QD_OK);
    float gs = qd_view_get(&ref.scale2, 0, 0), is = 0.01f;
    const char *names[] = {"a.weight", "a.weight_scale", "a.weight_scale_2", "a.input_scale", "b.weight", "b.weight_scale"};
    const qd_dtype dt[] = {QD_DTYPE_U8, QD_DTYPE_F8_E4M3, QD_DTYPE_F32, QD_DTYPE_F32, QD_DTYPE_U8, QD_DTYPE_F8_E4M3};
    const int rank[] = {2, 2, 0, 0, 2, 2};
    const int64_t shape[][2] = {{n, k / 2}, {rp, cp}, {0}, {0}, {n, k / 2}, {n, k / 16}};
    const void *data[] = {hi, swz, &gs, &is, ref.weight.data, ref.scale.data};
    write_tensors("m.safetensors", 6, names, dt, rank, shape, data);
    qd_ckpt *ck = open_file("m.safetensors");

    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    cfg.method = QD_QM_MODELOPT_FP4;
    cfg.group_size = 16;
    cfg.swap_weight_nibbles = true;
    cfg.swizzled_scales = true;
    const char *a[] = {"a"};
    qd_linear l;
    assert_int_equal(qd_linear_bind(&cfg, ck, "a", a, 1, &l), QD_OK);
    assert_string_equal(l.scheme_name, "nvfp4");
    assert_memory_equal(l.weight.data, ref.weight.data, wb);
    assert_memory_equal(l.scale.data, ref.scale.data, (size_t)(n * k / 16));
    float *d1 = malloc(sizeof *d1 * (size_t)(n * k)), *d2 = malloc(sizeof *d2 * (size_t)(n * k));
    assert_int_equal(qd_linear_dequantize(&l, d1), QD_OK);
    assert_int_equal(qd_linear_dequantize(&ref, d2), QD_OK);
    assert_memory_equal(d1, d2, sizeof *d1 * (size_t)(n * k));
    qd_linear_free(&l);
    /* b has no global scales: 1.0 is used, as SGLang's missing_param_init does */
    cfg.swap_weight_nibbles = false;
    cfg.swizzled_scales = false;
    const char *b[] = {"b"};
    assert_int_equal(qd_linear_bind(&cfg, ck, "b", b, 1, &l), QD_OK);
    assert_true(qd_view_get(&l.scale2, 0, 0) == 1.0f);
    assert_memory_equal(l.weight.data, ref.weight.data, wb);
    qd_linear_free(&l);
    free(d1);
    free(d2);
    free(hi);
    free(swz);
    free(w);
    qd_linear_free(&ref);
    qd_ckpt_close(ck);
    qt_rmtree(tmpdir);
    free(tmpdir);
}

/* §4.8: an NVFP4 layer whose K is not a multiple of 16 is refused, naming the layer. */
static void test_nvfp4_k_not_multiple_of_16(void **state) {
    (void)state;
    tmpdir = qt_mkdtemp("nvfp4k");
    uint8_t w[4 * 12] = {0x21}, sc[4 * 2] = {0x38};
    const char *names[] = {"odd.weight", "odd.weight_scale"};
    const qd_dtype dt[] = {QD_DTYPE_U8, QD_DTYPE_F8_E4M3};
    const int rank[] = {2, 2};
    const int64_t shape[][2] = {{4, 12}, {4, 2}}; /* K = 24 */
    const void *data[] = {w, sc};
    write_tensors("m.safetensors", 2, names, dt, rank, shape, data);
    qd_ckpt *ck = open_file("m.safetensors");
    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    cfg.method = QD_QM_MODELOPT_FP4;
    cfg.group_size = 16;
    const char *m[] = {"odd"};
    qd_linear l;
    assert_int_equal(qd_linear_bind(&cfg, ck, "odd", m, 1, &l), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "layer 'odd': NVFP4 needs in_features a multiple of 16, got 24"));
    qd_ckpt_close(ck);
    qt_rmtree(tmpdir);
    free(tmpdir);
}

/* Per-tensor FP8 shards with different scales fuse exactly into per-channel scales (§4.7's test). */
static void test_fp8_fused_shards(void **state) {
    (void)state;
    tmpdir = qt_mkdtemp("fp8");
    const int64_t rows = 2, k = 3;
    uint8_t q[3][6];
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < 6; i++) q[s][i] = (uint8_t)(0x30 + s * 7 + i); /* finite E4M3 codes */
    const float scales[3] = {0.1f, 0.2f, 0.3f}, in_scales[3] = {0.2f, 0.4f, 0.6f};
    const char *names[] = {"attn.to_q.weight", "attn.to_q.weight_scale", "attn.to_q.input_scale",
                           "attn.to_k.weight", "attn.to_k.weight_scale", "attn.to_k.input_scale",
                           "attn.to_v.weight", "attn.to_v.weight_scale", "attn.to_v.input_scale"};
    qd_dtype dt[9];
    int rank[9];
    int64_t shape[9][2];
    const void *data[9];
    for (int s = 0; s < 3; s++) {
        dt[3 * s] = QD_DTYPE_F8_E4M3, rank[3 * s] = 2, shape[3 * s][0] = rows, shape[3 * s][1] = k, data[3 * s] = q[s];
        dt[3 * s + 1] = QD_DTYPE_F32, rank[3 * s + 1] = 1, shape[3 * s + 1][0] = 1, data[3 * s + 1] = &scales[s];
        dt[3 * s + 2] = QD_DTYPE_F32, rank[3 * s + 2] = 1, shape[3 * s + 2][0] = 1, data[3 * s + 2] = &in_scales[s];
    }
    write_tensors("m.safetensors", 9, names, dt, rank, (const int64_t(*)[2])shape, data);
    qd_ckpt *ck = open_file("m.safetensors");
    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    cfg.method = QD_QM_MODELOPT_FP8;
    const char *shards[] = {"attn.to_q", "attn.to_k", "attn.to_v"};
    qd_linear l;
    assert_int_equal(qd_linear_bind(&cfg, ck, "attn.to_qkv", shards, 3, &l), QD_OK);
    assert_int_equal(l.out_features, 6);
    assert_int_equal(l.n_shards, 3);
    assert_string_equal(l.scheme_name, "fp8_tensor");
    const float want_scale[6] = {0.1f, 0.1f, 0.2f, 0.2f, 0.3f, 0.3f};
    for (int r = 0; r < 6; r++) assert_true(qd_view_get(&l.scale, r, 0) == want_scale[r]);
    assert_true(qd_view_get(&l.input_scale, 0, 0) == 0.6f); /* the largest */
    float d[18];
    assert_int_equal(qd_linear_dequantize(&l, d), QD_OK);
    for (int r = 0; r < 6; r++)
        for (int j = 0; j < 3; j++) assert_true(d[r * 3 + j] == qd_e4m3_to_f32(q[r / 2][(r % 2) * 3 + j]) * want_scale[r]);
    qd_linear_free(&l);
    /* an ignore rule that splits a fused layer is refused (§4.2) */
    cfg.method = QD_QM_FP8;
    cfg.online = true;
    cfg.ignore_rule = QD_MATCH_SUBSTRING;
    char *pat = strdup("to_k");
    cfg.ignore = &pat;
    cfg.n_ignore = 1;
    assert_int_equal(qd_linear_bind(&cfg, ck, "attn.to_qkv", shards, 3, &l), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "some but not all shards of attn.to_qkv"));
    free(pat);
    qd_ckpt_close(ck);
    qt_rmtree(tmpdir);
    free(tmpdir);
}

/* msModelSlim W8A8 static with deq_scale stored as I64 (fp16 models): the effective bias and weight. */
static void test_modelslim_w8a8_static(void **state) {
    (void)state;
    tmpdir = qt_mkdtemp("w8a8");
    const int64_t n = 4, k = 8;
    int8_t q[32];
    for (int i = 0; i < 32; i++) q[i] = (int8_t)((int)(qt_rand_u64(&rng) % 255) - 127);
    float ws[4], deq[4], is = 0.05f, io = 3.0f;
    int64_t deq64[4];
    int32_t qbias[4];
    for (int r = 0; r < 4; r++) {
        ws[r] = qt_rand_uniform(&rng, 0.001f, 0.01f);
        deq[r] = is * ws[r];
        uint32_t bits;
        memcpy(&bits, &deq[r], 4);
        deq64[r] = (int64_t)(int32_t)bits; /* sign-extended low word, as deqscale2int64 writes it */
        qbias[r] = (int32_t)(qt_rand_u64(&rng) % 2000) - 1000;
    }
    const char *names[] = {"l.weight", "l.input_scale", "l.input_offset", "l.deq_scale", "l.quant_bias"};
    const qd_dtype dt[] = {QD_DTYPE_I8, QD_DTYPE_F32, QD_DTYPE_F32, QD_DTYPE_I64, QD_DTYPE_I32};
    const int rank[] = {2, 1, 1, 1, 1};
    const int64_t shape[][2] = {{n, k}, {1}, {1}, {n}, {n}};
    const void *data[] = {q, &is, &io, deq64, qbias};
    write_tensors("quant_model_weights.safetensors", 5, names, dt, rank, shape, data);
    qd_ckpt *ck = open_file("quant_model_weights.safetensors");
    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    cfg.method = QD_QM_MODELSLIM;
    cfg.layer_types = json_pack("{s:s}", "l.weight", "W8A8");
    const char *m[] = {"l"};
    qd_linear l;
    assert_int_equal(qd_linear_bind(&cfg, ck, "l", m, 1, &l), QD_OK);
    assert_string_equal(l.scheme_name, "w8a8_static");
    float d[32], bias[4];
    assert_int_equal(qd_linear_dequantize(&l, d), QD_OK);
    qd_linear_bias_f32(&l, bias);
    for (int r = 0; r < 4; r++) {
        double sum = 0;
        for (int j = 0; j < 8; j++) {
            assert_float_equal(d[r * 8 + j], q[r * 8 + j] * (deq[r] / is), 1e-9);
            sum += q[r * 8 + j];
        }
        assert_float_equal(bias[r], deq[r] * (qbias[r] + io * sum), 1e-6);
    }
    qd_linear_free(&l);
    /* an unknown description type is named */
    json_decref(cfg.layer_types);
    cfg.layer_types = json_pack("{s:s}", "l.weight", "W2A2");
    assert_int_equal(qd_linear_bind(&cfg, ck, "l", m, 1, &l), QD_EUNSUPPORTED);
    assert_non_null(strstr(qd_last_error(), "No modelslim compatible scheme was found for type W2A2"));
    qd_quant_config_free(&cfg);
    qd_ckpt_close(ck);
    qt_rmtree(tmpdir);
    free(tmpdir);
}

/* Online plans: MXFP4 keeps narrow layers dense; ignore substrings; dry plans read no data. */
static void test_online_plan(void **state) {
    (void)state;
    tmpdir = qt_mkdtemp("plan");
    int64_t n1 = 128, n2 = 256, k = 64;
    float *w1 = random_weight(n1, k, 0.1f), *w2 = random_weight(n2, k, 0.1f);
    uint16_t *b1 = malloc(2 * (size_t)(n1 * k)), *b2 = malloc(2 * (size_t)(n2 * k));
    qd_encode_row(QD_DTYPE_BF16, w1, b1, (size_t)(n1 * k));
    qd_encode_row(QD_DTYPE_BF16, w2, b2, (size_t)(n2 * k));
    const char *names[] = {"layers.0.attention.to_q.weight", "layers.0.feed_forward.w1.weight"};
    const qd_dtype dt[] = {QD_DTYPE_BF16, QD_DTYPE_BF16};
    const int rank[] = {2, 2};
    const int64_t shape[][2] = {{n1, k}, {n2, k}};
    const void *data[] = {b1, b2};
    write_tensors("m.safetensors", 2, names, dt, rank, shape, data);
    qd_ckpt *ck = open_file("m.safetensors");
    char **mods;
    size_t nm;
    assert_int_equal(qd_plan_candidates(ck, &mods, &nm), QD_OK);
    assert_int_equal(nm, 2);
    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    cfg.method = QD_QM_MXFP4;
    cfg.online = true;
    const char *want[] = {"bf16", "mxfp4"}; /* 128 outputs < 256 stays dense under mxfp4 (§4.5) */
    for (size_t i = 0; i < nm; i++) {
        const char *s1[] = {mods[i]};
        qd_linear l;
        assert_int_equal(qd_linear_plan(&cfg, ck, mods[i], s1, 1, &l), QD_OK);
        assert_string_equal(l.scheme_name, want[i]);
        qd_linear_free(&l);
        assert_int_equal(qd_linear_bind(&cfg, ck, mods[i], s1, 1, &l), QD_OK);
        assert_string_equal(l.scheme_name, want[i]);
        qd_linear_free(&l);
    }
    /* DESIGN: substring ignore patterns */
    cfg.method = QD_QM_FP8;
    char *pat = strdup("feed_forward.w");
    cfg.ignore = &pat;
    cfg.n_ignore = 1;
    cfg.ignore_rule = QD_MATCH_SUBSTRING;
    const char *s2[] = {mods[1]};
    qd_linear l;
    assert_int_equal(qd_linear_bind(&cfg, ck, mods[1], s2, 1, &l), QD_OK);
    assert_string_equal(l.scheme_name, "bf16");
    qd_linear_free(&l);
    free(pat);
    for (size_t i = 0; i < nm; i++) free(mods[i]);
    free(mods);
    free(w1);
    free(w2);
    free(b1);
    free(b2);
    qd_ckpt_close(ck);
    qt_rmtree(tmpdir);
    free(tmpdir);
}

int main(void) {
    rng = qt_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nvfp4_spec_vector),    cmocka_unit_test(test_mxfp4_spec_vector),
        cmocka_unit_test(test_online_error_bounds),  cmocka_unit_test(test_nvfp4_stored_forms),
        cmocka_unit_test(test_fp8_fused_shards),     cmocka_unit_test(test_modelslim_w8a8_static),
        cmocka_unit_test(test_online_plan),          cmocka_unit_test(test_nvfp4_k_not_multiple_of_16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
