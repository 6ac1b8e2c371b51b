/* qd_torch_randn_* against values PyTorch 2.11 drew on its CPU generator
 * (tests/fixtures/torch_randn.safetensors, written by tools/reference/torch_randn_reference.py):
 * float32 and bfloat16, sizes on both of torch's paths (< 16 values: the double Box–Muller with its
 * cache; ≥ 16: the 16-block fill with the tail redrawn), latent shapes, and two draws in a row from one
 * generator. The scalar path and bfloat16 must match bit for bit; float32 blocks within 4 ulp (torch's
 * AVX2 build evaluates log/cos/sin with SLEEF's 1-ulp functions, this uses the C library), and at least
 * three quarters of them exactly. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "io/safetensors.h"
#include "pipeline/torch_randn.h"

#define REF QDIT_SOURCE_DIR "/tests/fixtures/torch_randn.safetensors"

static int64_t ulp_distance(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4), memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return llabs((long long)ia - (long long)ib);
}

/* compare `n` drawn values with tensor `name`; returns the number of exact matches */
static int64_t check_f32(const qd_st_file *f, const char *name, const float *got, int64_t n, int64_t max_ulp) {
    const qd_st_tensor *t = qd_st_find(f, name);
    if (!t) fail_msg("%s: not in %s", name, REF);
    if (t->dtype != QD_DTYPE_F32 || (int64_t)t->elements != n) fail_msg("%s: expected %lld F32 values", name, (long long)n);
    const float *want = qd_st_data(f, t);
    int64_t exact = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) {
        float w;
        memcpy(&w, (const char *)want + 4 * i, 4);
        const int64_t d = ulp_distance(got[i], w);
        exact += d == 0;
        if (d > worst) worst = d;
        if (d > max_ulp) fail_msg("%s[%lld]: %.9g, torch %.9g (%lld ulp)", name, (long long)i, got[i], w, (long long)d);
    }
    printf("  %-28s %6lld values, %6lld exact, worst %lld ulp\n", name, (long long)n, (long long)exact, (long long)worst);
    return exact;
}

static void test_float32(void **state) {
    (void)state;
    qd_st_file *f = NULL;
    assert_int_equal(qd_st_open(REF, &f), QD_OK);
    const uint64_t seeds[] = {0, 1, 42, 12345, (1ull << 32) + 7};
    const int64_t sizes[] = {1, 5, 15, 16, 17, 31, 16 * 64 * 64, 2 * 3 * 7};
    const char *labels[] = {"1", "5", "15", "16", "17", "31", "1x16x64x64", "2x3x7"};
    int64_t exact = 0, total = 0;
    for (size_t si = 0; si < sizeof seeds / sizeof *seeds; si++) {
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            char name[96];
            snprintf(name, sizeof name, "seed%llu_%s_f32", (unsigned long long)seeds[si], labels[k]);
            qd_torch_generator g;
            qd_torch_generator_seed(&g, seeds[si]);
            float *v = malloc(sizeof *v * (size_t)sizes[k]);
            qd_torch_randn_f32(&g, v, sizes[k]);
            /* fewer than 16: double math rounded once, bit-exact; blocks: libm vs SLEEF */
            exact += check_f32(f, name, v, sizes[k], sizes[k] < 16 ? 0 : 4);
            total += sizes[k];
            free(v);
        }
        /* one generator, two draws: the scalar path's cached value carries into the next call */
        char a[96], b[96];
        snprintf(a, sizeof a, "seed%llu_then_3x5", (unsigned long long)seeds[si]);
        snprintf(b, sizeof b, "seed%llu_then_40", (unsigned long long)seeds[si]);
        qd_torch_generator g;
        qd_torch_generator_seed(&g, seeds[si]);
        float x[15], y[40];
        qd_torch_randn_f32(&g, x, 15);
        qd_torch_randn_f32(&g, y, 40);
        check_f32(f, a, x, 15, 0);
        check_f32(f, b, y, 40, 4);
    }
    {
        qd_torch_generator g;
        qd_torch_generator_seed(&g, 0);
        const int64_t n = 16 * 128 * 128;
        float *v = malloc(sizeof *v * (size_t)n);
        qd_torch_randn_f32(&g, v, n);
        exact += check_f32(f, "seed0_1x16x128x128_f32", v, n, 4);
        total += n;
        free(v);
    }
    printf("float32: %lld of %lld values bit-exact\n", (long long)exact, (long long)total);
    /* log, cos and sin each within 1 ulp on both sides can meet anywhere within a few ulp of each other;
       most values still agree exactly (83% on this data) — a wrong formula would agree on almost none */
    assert_true(exact >= total * 3 / 4);
    qd_st_close(f);
}

static void test_bfloat16(void **state) {
    (void)state;
    qd_st_file *f = NULL;
    assert_int_equal(qd_st_open(REF, &f), QD_OK);
    const uint64_t seeds[] = {0, 1, 42, 12345, (1ull << 32) + 7};
    for (size_t si = 0; si < sizeof seeds / sizeof *seeds; si++) {
        char name[96];
        snprintf(name, sizeof name, "seed%llu_1x16x64x64_bf16", (unsigned long long)seeds[si]);
        const qd_st_tensor *t = qd_st_find(f, name);
        assert_non_null(t);
        const int64_t n = 16 * 64 * 64;
        uint16_t *v = malloc(2 * (size_t)n);
        qd_torch_generator g;
        qd_torch_generator_seed(&g, seeds[si]);
        assert_int_equal(qd_torch_randn_bf16(&g, v, n), QD_OK);
        const uint16_t *want = qd_st_data(f, t);
        int64_t exact = 0;
        for (int64_t i = 0; i < n; i++) {
            uint16_t w;
            memcpy(&w, (const char *)want + 2 * i, 2);
            exact += w == v[i];
        }
        printf("  %-28s %6lld values, %6lld exact\n", name, (long long)n, (long long)exact);
        if (exact != n) fail_msg("%s: %lld of %lld values differ from torch", name, (long long)(n - exact), (long long)n);
        free(v);
    }
    qd_st_close(f);
}

/* different seeds give different noise, the same seed the same */
static void test_repeatable(void **state) {
    (void)state;
    qd_torch_generator a, b;
    float x[64], y[64], z[64];
    qd_torch_generator_seed(&a, 7), qd_torch_randn_f32(&a, x, 64);
    qd_torch_generator_seed(&b, 7), qd_torch_randn_f32(&b, y, 64);
    qd_torch_generator_seed(&b, 8), qd_torch_randn_f32(&b, z, 64);
    assert_memory_equal(x, y, sizeof x);
    assert_memory_not_equal(x, z, sizeof x);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_float32), cmocka_unit_test(test_bfloat16), cmocka_unit_test(test_repeatable)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
