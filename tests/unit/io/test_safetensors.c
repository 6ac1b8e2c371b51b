/* safetensors reader and writer: round trips with fresh random data, every dtype, metadata, the
 * layout rules of the writer, and the fixtures read against an independent header parse. Malformed
 * files are covered table-driven in tests/unit/cli/test_inspect_bad_input.c. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "test_util.h"

typedef struct {
    const char *name;
    qd_dtype dtype;
    int rank;
    int64_t shape[4];
} spec_t;

static void test_round_trip_random(void **state) {
    (void)state;
    uint64_t rng = qt_seed();
    char *dir = qt_mkdtemp("st");
    char *path = qt_path(dir, "x.safetensors");
    const spec_t specs[] = {
        {"blocks.0.attn.to_q.weight", QD_DTYPE_BF16, 2, {48, 32}},
        {"blocks.0.attn.to_q.weight_scale", QD_DTYPE_F32, 0, {0}},
        {"blocks.0.ff.weight", QD_DTYPE_F4, 2, {16, 64}},
        {"blocks.0.ff.weight_scale", QD_DTYPE_F8_E4M3, 2, {16, 4}},
        {"mx.scales", QD_DTYPE_F8_E8M0, 2, {5, 3}},
        {"ids", QD_DTYPE_I64, 1, {7}},
        {"empty", QD_DTYPE_F16, 2, {0, 9}},
        {"f6", QD_DTYPE_F6_E2M3, 1, {8}},
        {"u8", QD_DTYPE_U8, 3, {3, 1, 5}},
    };
    const size_t n = sizeof specs / sizeof *specs;
    uint8_t *data[16];
    uint64_t sizes[16];
    qd_st_writer *w;
    assert_int_equal(qd_st_writer_create(path, &w), QD_OK);
    assert_int_equal(qd_st_writer_meta(w, "format", "pt"), QD_OK);
    assert_int_equal(qd_st_writer_meta(w, "quantization_config", "{\"quant_method\": \"fp8\"}"), QD_OK);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(qd_st_writer_add(w, specs[i].name, specs[i].dtype, specs[i].rank, specs[i].shape), QD_OK);
        uint64_t el = 1;
        for (int d = 0; d < specs[i].rank; d++) el *= (uint64_t)specs[i].shape[d];
        assert_true(qd_dtype_storage_bytes(specs[i].dtype, el, &sizes[i]));
        data[i] = malloc(sizes[i] + 1);
        for (uint64_t b = 0; b < sizes[i]; b++) data[i][b] = (uint8_t)qt_rand_u64(&rng);
    }
    /* write in reverse declaration order, the big one in two parts */
    for (size_t i = n; i-- > 0;) {
        if (sizes[i] > 8) {
            assert_int_equal(qd_st_writer_put_part(w, specs[i].name, data[i], 5), QD_OK);
            assert_int_equal(qd_st_writer_put_part(w, specs[i].name, data[i] + 5, sizes[i] - 5), QD_OK);
        } else {
            assert_int_equal(qd_st_writer_put(w, specs[i].name, data[i], sizes[i]), QD_OK);
        }
    }
    assert_int_equal(qd_st_writer_finish(w), QD_OK);

    qd_st_file *f;
    assert_int_equal(qd_st_open(path, &f), QD_OK);
    assert_int_equal(f->n_tensors, n);
    assert_int_equal(f->header_len % 8, 0);
    assert_string_equal(qd_st_meta_get(f, "format"), "pt");
    assert_string_equal(qd_st_meta_get(f, "quantization_config"), "{\"quant_method\": \"fp8\"}");
    assert_null(qd_st_meta_get(f, "absent"));
    for (size_t i = 0; i < n; i++) {
        const qd_st_tensor *t = qd_st_find(f, specs[i].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, specs[i].dtype);
        assert_int_equal(t->rank, specs[i].rank);
        for (int d = 0; d < t->rank; d++) assert_int_equal(t->shape[d], specs[i].shape[d]);
        assert_int_equal(t->end - t->begin, sizes[i]);
        /* the writer keeps every tensor naturally aligned within the 8-aligned data section */
        int bits = qd_dtype_bits(t->dtype);
        if (bits >= 8) assert_int_equal(t->begin % (uint64_t)(bits / 8), 0);
        assert_memory_equal(qd_st_data(f, t), data[i], sizes[i]);
        free(data[i]);
    }
    assert_null(qd_st_find(f, "nope"));
    qd_st_close(f);
    qt_rmtree(dir);
    free(path);
    free(dir);
}

static void test_every_dtype_name(void **state) {
    (void)state;
    static const char *const names[] = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "BF16",
                                        "F32", "F64", "C64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ",
                                        "F8_E5M2FNUZ", "F6_E2M3", "F6_E3M2", "F4"};
    static const int bits[] = {8, 8, 8, 16, 16, 32, 32, 64, 64, 16, 16, 32, 64, 64, 8, 8, 8, 8, 8, 6, 6, 4};
    assert_int_equal(sizeof names / sizeof *names, QD_DTYPE_COUNT);
    char *dir = qt_mkdtemp("dtypes");
    for (size_t i = 0; i < QD_DTYPE_COUNT; i++) {
        qd_dtype t;
        assert_true(qd_dtype_parse(names[i], strlen(names[i]), &t));
        assert_string_equal(qd_dtype_name(t), names[i]);
        assert_int_equal(qd_dtype_bits(t), bits[i]);
        /* a file with 8 elements of this dtype, written by hand */
        char header[256], path[64];
        uint64_t nbytes = 8u * (uint64_t)bits[i] / 8;
        snprintf(header, sizeof header, "{\"t\":{\"dtype\":\"%s\",\"shape\":[2,4],\"data_offsets\":[0,%llu]}}",
                 names[i], (unsigned long long)nbytes);
        snprintf(path, sizeof path, "d%zu.safetensors", i);
        char *p = qt_path(dir, path);
        uint8_t data[64] = {1, 2, 3};
        qt_write_raw_safetensors(p, header, data, nbytes);
        qd_st_file *f;
        assert_int_equal(qd_st_open(p, &f), QD_OK);
        assert_int_equal(f->tensors[0].dtype, t);
        assert_int_equal(f->tensors[0].elements, 8);
        qd_st_close(f);
        free(p);
    }
    qd_dtype t;
    assert_false(qd_dtype_parse("bf16", 4, &t));
    assert_false(qd_dtype_parse("F8_E4M3FN", 9, &t));
    qt_rmtree(dir);
    free(dir);
}

static void test_holes_trailing_and_zero_sized(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("holes");
    char *p = qt_path(dir, "h.safetensors");
    /* two zero-sized tensors at the same offset, a gap, and trailing bytes: all allowed */
    qt_write_raw_safetensors(p,
                             "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                             "\"b\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                             "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                             "\"__metadata__\":{}}",
                             "0123456789abcdefgh", 18);
    qd_st_file *f;
    assert_int_equal(qd_st_open(p, &f), QD_OK);
    assert_int_equal(f->n_tensors, 3);
    assert_int_equal(f->n_meta, 0);
    assert_memory_equal(qd_st_data(f, qd_st_find(f, "c")), "89ab", 4);
    qd_st_close(f);
    qt_rmtree(dir);
    free(p);
    free(dir);
}

/* The fixtures, checked against a header read done here with jansson alone. */
static void check_fixture(const char *rel) {
    char *p = qt_path(QDIT_SHARED_DIR "/fixtures", rel);
    size_t n;
    uint8_t *raw = qt_read_file(p, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    json_t *h = json_loadb((const char *)raw + 8, hl, 0, NULL);
    assert_non_null(h);
    qd_st_file *f;
    assert_int_equal(qd_st_open(p, &f), QD_OK);
    size_t count = 0;
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        count++;
        const qd_st_tensor *t = qd_st_find(f, key);
        assert_non_null(t);
        assert_string_equal(qd_dtype_name(t->dtype), json_string_value(json_object_get(v, "dtype")));
        assert_int_equal(t->rank, json_array_size(json_object_get(v, "shape")));
        for (int d = 0; d < t->rank; d++)
            assert_int_equal(t->shape[d], json_integer_value(json_array_get(json_object_get(v, "shape"), d)));
        json_t *off = json_object_get(v, "data_offsets");
        assert_int_equal(t->begin, json_integer_value(json_array_get(off, 0)));
        assert_int_equal(t->end, json_integer_value(json_array_get(off, 1)));
        assert_ptr_equal(qd_st_data(f, t), f->map + 8 + hl + t->begin);
        assert_memory_equal(qd_st_data(f, t), raw + 8 + hl + t->begin, t->end - t->begin);
    }
    assert_int_equal(f->n_tensors, count);
    qd_st_close(f);
    json_decref(h);
    free(raw);
    free(p);
}

static void test_fixtures(void **state) {
    (void)state;
    check_fixture("flux_tiny_a/transformer/diffusion_pytorch_model.safetensors");
    check_fixture("zimage_tiny_a/transformer/diffusion_pytorch_model.safetensors");
    check_fixture("vae_kl_tiny_a/vae/diffusion_pytorch_model.safetensors");
    check_fixture("clip_tiny_a/text_encoder/model.safetensors");
    check_fixture("t5_tiny_a/text_encoder/model.safetensors");
    check_fixture("qwen3_tiny_a/text_encoder/model.safetensors");
    check_fixture("nunchaku_packing/svdq_fp4_a.safetensors");
    check_fixture("nunchaku_packing/svdq_int4_a.safetensors");
    check_fixture("nunchaku_packing/awq_w4a16_a.safetensors");
    check_fixture("flux_tiny_a/io.safetensors");
}

static void test_writer_misuse(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("wm");
    char *p = qt_path(dir, "w.safetensors");
    int64_t shape[2] = {2, 3};
    qd_st_writer *w;
    assert_int_equal(qd_st_writer_create(p, &w), QD_OK);
    assert_int_equal(qd_st_writer_add(w, "a", QD_DTYPE_F32, 2, shape), QD_OK);
    assert_int_equal(qd_st_writer_add(w, "a", QD_DTYPE_F32, 2, shape), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "added twice"));
    int64_t odd[1] = {3};
    assert_int_equal(qd_st_writer_add(w, "f4", QD_DTYPE_F4, 1, odd), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "whole bytes"));
    float x[6] = {1, 2, 3, 4, 5, 6};
    assert_int_equal(qd_st_writer_put(w, "b", x, 24), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "'b' was not declared"));
    assert_int_equal(qd_st_writer_put(w, "a", x, 20), QD_EINVAL);
    assert_int_equal(qd_st_writer_put_part(w, "a", x, 20), QD_OK);
    assert_int_equal(qd_st_writer_put_part(w, "a", x, 8), QD_EINVAL);
    /* finishing with bytes missing fails and leaves no file under either name */
    assert_int_equal(qd_st_writer_finish(w), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "got 20 of its 24 bytes"));
    assert_false(qd_is_file(p));
    char *partial = qt_path(dir, "w.safetensors.partial");
    assert_false(qd_is_file(partial));
    /* abort removes the partial file */
    assert_int_equal(qd_st_writer_create(p, &w), QD_OK);
    assert_true(qd_is_file(partial));
    qd_st_writer_abort(w);
    assert_false(qd_is_file(partial));
    free(partial);
    qt_rmtree(dir);
    free(p);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_random),
        cmocka_unit_test(test_every_dtype_name),
        cmocka_unit_test(test_holes_trailing_and_zero_sized),
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_writer_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
