/* Tests for the W4A16 GEMV's code decoding (src/backend/cuda/w4_codes.h): the bit tricks that turn codes j and
 * j + 4 of a packed word into an f16x2 pair, run here on the host for every code in every position, with fresh
 * random codes in the other six nibbles (which the masks must ignore). The expected values come from the spec's
 * tables (formats.md: E2M1 {0, 0.5, 1, 1.5, 2, 3, 4, 6} with bit 3 the sign; int4 two's complement; uint4), and
 * the halves are read with the codec's f16 conversion. The kernel's fix-up (× 2^14, − 1032, − 1024) is done in
 * f16 there and in f32 here; both are exact because each result is an f16 number, which is checked too. */
#include <math.h>

#include "backend/cuda/w4_codes.h"
#include "core/codec.h"
#include "test_util.h"

static uint64_t rng;

static const float e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

/* a word with code a at nibble j, code b at nibble j + 4, random codes elsewhere */
static uint32_t word_with(int j, uint32_t a, uint32_t b) {
    uint32_t w = (uint32_t)qt_rand_u64(&rng);
    w &= ~((15u << (4 * j)) | (15u << (4 * j + 16)));
    return w | a << (4 * j) | b << (4 * j + 16);
}

static bool f16_exact(float v) { return qd_f16_to_f32(qd_f32_to_f16(v)) == v; }

static void check_pair(int kind, uint32_t h, uint32_t code, int half) {
    const float raw = qd_f16_to_f32((uint16_t)(h >> (16 * half)));
    if (kind == 0) {
        const float want = (code & 8) ? -e2m1[code & 7] : e2m1[code & 7];
        const float got = raw * 16384.0f;
        assert_true(got == want && signbit(got) == signbit(want) && f16_exact(got));
    } else if (kind == 1) {
        const float want = (float)((int)code - (code & 8 ? 16 : 0)), got = raw - 1032.0f;
        assert_true(raw == qd_f16_to_f32(QD_W4_F16_1024) + (float)(code ^ 8) && got == want && f16_exact(got));
    } else {
        const float got = raw - 1024.0f;
        assert_true(got == (float)code && f16_exact(got));
    }
}

static void test_every_code_every_place(void **state) {
    (void)state;
    assert_true(qd_f16_to_f32(QD_W4_F16_2P14) == 16384.0f && qd_f16_to_f32(QD_W4_F16_1024) == 1024.0f &&
                qd_f16_to_f32(QD_W4_F16_1032) == 1032.0f);
    for (int rep = 0; rep < 8; rep++)
        for (int j = 0; j < 4; j++)
            for (uint32_t a = 0; a < 16; a++)
                for (uint32_t b = 0; b < 16; b++) {
                    const uint32_t w = word_with(j, a, b);
                    const uint32_t hs[3] = {qd_w4_e2m1_pair(w, j), qd_w4_int4_pair(w, j), qd_w4_uint4_pair(w, j)};
                    for (int kind = 0; kind < 3; kind++) {
                        check_pair(kind, hs[kind], a, 0);
                        check_pair(kind, hs[kind], b, 1);
                    }
                }
}

int main(void) {
    rng = qt_seed();
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_every_code_every_place)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
