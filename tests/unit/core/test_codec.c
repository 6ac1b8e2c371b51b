/* Tests for core/codec.c: every code of every small format, every bf16/f16 code, every rounding
 * midpoint, the saturation and NaN rules of codec.h, the E8M0 rule, int8 and 4-bit packing, the
 * test vectors of formats.md §7, and the row converters against the scalar codecs.
 *
 * The references here are built independently of the implementation: values come from the bit
 * fields through ldexp (formats.md §1.1, §2.1, §4.1), rounding from exact double arithmetic on the
 * value (floor / frexp), never from the library's integer tricks. Random inputs are drawn fresh on
 * every run from the seed printed at start (replay with QDIT_TEST_SEED). */
#include "test_util.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"

static uint64_t rng;
static unsigned long long n_checks;

/* Every comparison goes through CHECK so the number of checks per test can be reported. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        n_checks++;                                                                                \
        if (!(cond)) fail_msg(__VA_ARGS__);                                                        \
    } while (0)

static int reset_checks(void **state) {
    (void)state;
    n_checks = 0;
    return 0;
}

static void report_checks(const char *test) { print_message("[ checks   ] %s: %llu\n", test, n_checks); }

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t rand_below(uint32_t n) { return (uint32_t)(qt_rand_u64(&rng) % n); }

static double rand_unit(void) { return (double)(qt_rand_u64(&rng) >> 11) / 9007199254740992.0; }

/* ---- a description of each float format, from the spec tables ---- */

typedef enum { SPECIALS_IEEE, SPECIALS_FN, SPECIALS_NONE } specials_kind;
typedef enum { NAN_BF16, NAN_F16, NAN_FP8, NAN_ZERO } nan_rule;

typedef struct {
    const char *name;
    int ebits, mbits, bias;
    specials_kind specials; /* IEEE: top exponent is inf/NaN; FN: only all-ones is NaN; NONE */
    uint32_t max_code;      /* largest finite positive code */
    int saturating;         /* encoder clamps overflow to max (1) or gives inf (0) */
    nan_rule nan;
    float (*decode)(uint32_t code);
    uint32_t (*encode)(float f);
} fmt;

static float dec_bf16(uint32_t c) { return qd_bf16_to_f32((uint16_t)c); }
static float dec_f16(uint32_t c) { return qd_f16_to_f32((uint16_t)c); }
static float dec_e4m3(uint32_t c) { return qd_e4m3_to_f32((uint8_t)c); }
static float dec_e5m2(uint32_t c) { return qd_e5m2_to_f32((uint8_t)c); }
static float dec_e2m1(uint32_t c) { return qd_e2m1_to_f32((uint8_t)c); }
static uint32_t enc_bf16(float f) { return qd_f32_to_bf16(f); }
static uint32_t enc_f16(float f) { return qd_f32_to_f16(f); }
static uint32_t enc_e4m3(float f) { return qd_f32_to_e4m3(f); }
static uint32_t enc_e5m2(float f) { return qd_f32_to_e5m2(f); }
static uint32_t enc_e2m1(float f) { return qd_f32_to_e2m1(f); }

static const fmt FMT_BF16 = {"bf16", 8, 7, 127, SPECIALS_IEEE, 0x7F7F, 0, NAN_BF16, dec_bf16, enc_bf16};
static const fmt FMT_F16 = {"f16", 5, 10, 15, SPECIALS_IEEE, 0x7BFF, 0, NAN_F16, dec_f16, enc_f16};
static const fmt FMT_E4M3 = {"e4m3", 4, 3, 7, SPECIALS_FN, 0x7E, 1, NAN_FP8, dec_e4m3, enc_e4m3};
static const fmt FMT_E5M2 = {"e5m2", 5, 2, 15, SPECIALS_IEEE, 0x7B, 1, NAN_FP8, dec_e5m2, enc_e5m2};
static const fmt FMT_E2M1 = {"e2m1", 2, 1, 1, SPECIALS_NONE, 0x7, 1, NAN_ZERO, dec_e2m1, enc_e2m1};

static const fmt *const ALL_FMTS[] = {&FMT_BF16, &FMT_F16, &FMT_E4M3, &FMT_E5M2, &FMT_E2M1};
#define N_FMTS (sizeof ALL_FMTS / sizeof ALL_FMTS[0])

static uint32_t sign_bit(const fmt *f) { return 1u << (f->ebits + f->mbits); }
static uint32_t n_codes(const fmt *f) { return 1u << (f->ebits + f->mbits + 1); }

/* Magnitude of an unsigned code from its fields, with no special values: codes one past the
 * largest finite one give the value the next exponent would have (the "virtual" next code). */
static double ref_magnitude(const fmt *f, uint32_t code) {
    uint32_t e = code >> f->mbits;
    uint32_t m = code & ((1u << f->mbits) - 1u);
    if (e == 0) return ldexp((double)m, 1 - f->bias - f->mbits);
    return ldexp((double)((1u << f->mbits) + m), (int)e - f->bias - f->mbits);
}

typedef enum { REF_FINITE, REF_INF, REF_NAN } ref_class;

static ref_class ref_decode(const fmt *f, uint32_t code, double *value) {
    uint32_t sign = code & sign_bit(f);
    uint32_t mag = code & (sign_bit(f) - 1u);
    uint32_t e = mag >> f->mbits;
    uint32_t m = mag & ((1u << f->mbits) - 1u);
    uint32_t e_all = (1u << f->ebits) - 1u;
    uint32_t m_all = (1u << f->mbits) - 1u;
    if (f->specials == SPECIALS_IEEE && e == e_all) {
        if (m != 0) return REF_NAN;
        *value = sign ? -INFINITY : INFINITY;
        return REF_INF;
    }
    if (f->specials == SPECIALS_FN && e == e_all && m == m_all) return REF_NAN;
    double v = ref_magnitude(f, mag);
    *value = sign ? -v : v;
    return REF_FINITE;
}

/* Round |x| (finite) to the format by exact double arithmetic: find the spacing of representable
 * values around |x|, scale to an integer grid, round half to even with floor, then apply the
 * format's overflow rule. */
static double ref_round_magnitude(const fmt *f, double ax) {
    double min_normal = ldexp(1.0, 1 - f->bias);
    double step;
    if (ax < min_normal) {
        step = ldexp(1.0, 1 - f->bias - f->mbits);
    } else {
        int e;
        frexp(ax, &e); /* ax in [2^(e-1), 2^e) */
        step = ldexp(1.0, e - 1 - f->mbits);
    }
    double q = ax / step;
    double fl = floor(q);
    double frac = q - fl;
    if (frac > 0.5 || (frac == 0.5 && fmod(fl, 2.0) != 0.0)) fl += 1.0;
    double r = fl * step;
    double max = ref_magnitude(f, f->max_code);
    if (r > max) r = f->saturating ? max : INFINITY;
    return r;
}

static int values_same(float got, double want) {
    if (isnan(want)) return isnan(got);
    return (double)got == want && !signbit(got) == !signbit(want);
}

/* The NaN rule of codec.h for each format. */
static int nan_encoding_ok(const fmt *f, float x, uint32_t code) {
    int neg = signbit(x) != 0;
    switch (f->nan) {
    case NAN_BF16:
        return (code & 0x7F80u) == 0x7F80u && (code & 0x0040u) && !!(code & 0x8000u) == neg;
    case NAN_F16:
        return (code & 0x7C00u) == 0x7C00u && (code & 0x0200u) && !!(code & 0x8000u) == neg;
    case NAN_FP8: return code == (neg ? 0xFFu : 0x7Fu);
    case NAN_ZERO: return code == 0x0u;
    }
    return 0;
}

/* ---- decode ---- */

static void test_decode_all_codes(void **state) {
    (void)state;
    for (size_t k = 0; k < N_FMTS; k++) {
        const fmt *f = ALL_FMTS[k];
        for (uint32_t c = 0; c < n_codes(f); c++) {
            double want = 0;
            ref_class cls = ref_decode(f, c, &want);
            float got = f->decode(c);
            if (cls == REF_NAN)
                CHECK(isnan(got), "%s 0x%X: want NaN, got %a", f->name, c, (double)got);
            else
                CHECK(values_same(got, want), "%s 0x%X: want %a, got %a", f->name, c, want, (double)got);
        }
    }
    /* The spec's E2M1 table, literally; and only the low nibble is read. */
    static const float e2m1_table[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (uint32_t c = 0; c < 256; c++) {
        float want = (c & 8) ? -e2m1_table[c & 7] : e2m1_table[c & 7];
        float got = qd_e2m1_to_f32((uint8_t)c);
        CHECK(f2u(got) == f2u(want), "e2m1 byte 0x%02X: want %g, got %g", c, (double)want, (double)got);
    }
    /* formats.md §1.1: E5M2 is the top byte of a binary16. */
    for (uint32_t c = 0; c < 256; c++) {
        float a = qd_e5m2_to_f32((uint8_t)c), b = qd_f16_to_f32((uint16_t)(c << 8));
        CHECK((isnan(a) && isnan(b)) || f2u(a) == f2u(b), "e5m2 0x%02X differs from f16 0x%04X", c, c << 8);
    }
    /* Named points of §1.1. */
    CHECK(qd_e4m3_to_f32(0x7E) == 448.0f && qd_e4m3_to_f32(0xFE) == -448.0f, "e4m3 max");
    CHECK(qd_e4m3_to_f32(0x01) == 0x1p-9f && qd_e4m3_to_f32(0x08) == 0x1p-6f, "e4m3 min sub/normal");
    CHECK(qd_e4m3_to_f32(0x38) == 1.0f && qd_e4m3_to_f32(0xB8) == -1.0f, "e4m3 ±1");
    CHECK(isnan(qd_e4m3_to_f32(0x7F)) && isnan(qd_e4m3_to_f32(0xFF)), "e4m3 NaN");
    CHECK(qd_e5m2_to_f32(0x7B) == 57344.0f && qd_e5m2_to_f32(0x3C) == 1.0f, "e5m2 max/1");
    CHECK(qd_e5m2_to_f32(0x01) == 0x1p-16f && qd_e5m2_to_f32(0x04) == 0x1p-14f, "e5m2 min sub/normal");
    CHECK(isinf(qd_e5m2_to_f32(0x7C)) && qd_e5m2_to_f32(0xFC) < 0, "e5m2 inf");
    CHECK(f2u(qd_e4m3_to_f32(0x80)) == 0x80000000u && f2u(qd_e5m2_to_f32(0x80)) == 0x80000000u, "-0");
    CHECK(f2u(qd_bf16_to_f32(0x8000)) == 0x80000000u && f2u(qd_f16_to_f32(0x8000)) == 0x80000000u, "-0");
    CHECK(qd_f16_to_f32(0x7BFF) == 65504.0f && qd_f16_to_f32(0x0001) == 0x1p-24f, "f16 max/min");
    report_checks(__func__);
}

static void test_decode_e8m0(void **state) {
    (void)state;
    for (uint32_t e = 0; e < 255; e++) {
        float got = qd_e8m0_to_f32((uint8_t)e);
        CHECK((double)got == ldexp(1.0, (int)e - 127), "e8m0 0x%02X: got %a", e, (double)got);
    }
    CHECK(f2u(qd_e8m0_to_f32(0x00)) == 0x00400000u, "e8m0 0x00 must be 2^-127 (fp32 0x00400000)");
    CHECK(qd_e8m0_to_f32(0x7F) == 1.0f, "e8m0 0x7F");
    CHECK(qd_e8m0_to_f32(0xFE) == 0x1p127f, "e8m0 0xFE");
    CHECK(isnan(qd_e8m0_to_f32(0xFF)), "e8m0 0xFF must be NaN");
    report_checks(__func__);
}

/* ---- encode ---- */

static void test_encode_round_trip(void **state) {
    (void)state;
    for (size_t k = 0; k < N_FMTS; k++) {
        const fmt *f = ALL_FMTS[k];
        for (uint32_t c = 0; c < n_codes(f); c++) {
            double v = 0;
            ref_class cls = ref_decode(f, c, &v);
            if (cls == REF_NAN) continue;
            uint32_t want = c;
            if (cls == REF_INF && f->saturating) want = (c & sign_bit(f)) | f->max_code;
            uint32_t got = f->encode(f->decode(c));
            CHECK(got == want, "%s: encode(decode(0x%X)) = 0x%X, want 0x%X", f->name, c, got, want);
        }
    }
    for (uint32_t e = 0; e < 255; e++) {
        uint8_t got = qd_f32_to_e8m0(qd_e8m0_to_f32((uint8_t)e));
        CHECK(got == e, "e8m0: encode(decode(0x%02X)) = 0x%02X", e, got);
    }
    report_checks(__func__);
}

/* The code that a value on the grid position `k` (possibly one past max) encodes to. */
static uint32_t expected_code(const fmt *f, uint32_t k) {
    if (k > f->max_code) return f->saturating ? f->max_code : f->max_code + 1; /* +1 is the inf code */
    return k;
}

static void check_encode(const fmt *f, float x, uint32_t want, const char *what, uint32_t c) {
    uint32_t got = f->encode(x);
    CHECK(got == want, "%s %s of codes 0x%X/0x%X: x=%a encoded 0x%X, want 0x%X", f->name, what, c, c + 1,
          (double)x, got, want);
}

/* For every pair of adjacent representable values (and the pair max / next power past max):
 * the exact midpoint ties to the even code, one float either side goes to the nearer code, the
 * endpoints encode to themselves, and random points in between agree with an exact comparison. */
static void test_encode_midpoints(void **state) {
    (void)state;
    for (size_t k = 0; k < N_FMTS; k++) {
        const fmt *f = ALL_FMTS[k];
        for (uint32_t c = 0; c <= f->max_code; c++) {
            double a = ref_magnitude(f, c), b = ref_magnitude(f, c + 1);
            double mid = (a + b) / 2;
            float midf = (float)mid;
            CHECK((double)midf == mid, "%s: midpoint %a of 0x%X not exact in f32", f->name, mid, c);
            uint32_t even = (c & 1u) ? c + 1 : c;
            for (int neg = 0; neg < 2; neg++) {
                uint32_t s = neg ? sign_bit(f) : 0;
                float sg = neg ? -1.0f : 1.0f;
                check_encode(f, sg * midf, s | expected_code(f, even), "midpoint", c);
                check_encode(f, sg * nextafterf(midf, INFINITY), s | expected_code(f, c + 1), "above mid", c);
                check_encode(f, sg * nextafterf(midf, 0.0f), s | expected_code(f, c), "below mid", c);
                check_encode(f, sg * (float)a, s | c, "low end", c);
                for (int r = 0; r < 2; r++) {
                    double hi = b > FLT_MAX ? FLT_MAX : b;
                    float x = (float)(a + (hi - a) * rand_unit());
                    uint32_t want = (double)x < mid ? c : ((double)x > mid ? c + 1 : even);
                    check_encode(f, sg * x, s | expected_code(f, want), "random inside", c);
                }
            }
        }
    }
    report_checks(__func__);
}

/* Random f32 inputs of every kind against the exact-arithmetic reference. */
static float rand_input_for(const fmt *f) {
    switch (rand_below(4)) {
    case 0: return u2f((uint32_t)qt_rand_u64(&rng)); /* anything, NaN and inf included */
    case 1: {                                        /* dense over the format's exponent range */
        int lo = 1 - f->bias - f->mbits - 3, hi = (1 << f->ebits) - f->bias + 1;
        int e = lo + (int)rand_below((uint32_t)(hi - lo + 1));
        float x = (float)ldexp(1.0 + rand_unit(), e);
        return rand_below(2) ? -x : x;
    }
    case 2: { /* uniform up to the next power past max (FLT_MAX for bf16) */
        float lim = (float)fmin(ref_magnitude(f, f->max_code + 1), FLT_MAX);
        return qt_rand_uniform(&rng, -lim, lim);
    }
    default: return qt_rand_uniform(&rng, -4.0f, 4.0f);
    }
}

/* Half the inputs sweep the whole f32 bit space with an odd stride (a random start, so every run
 * covers different low bits); the other half are drawn by rand_input_for. */
#define SWEEP_STRIDE 8191u
#define SWEEP_COUNT (0xFFFFFFFFu / SWEEP_STRIDE)

static void test_encode_random_vs_reference(void **state) {
    (void)state;
    for (size_t k = 0; k < N_FMTS; k++) {
        const fmt *f = ALL_FMTS[k];
        uint32_t start = (uint32_t)qt_rand_u64(&rng) % SWEEP_STRIDE;
        for (uint32_t i = 0; i < 2 * SWEEP_COUNT; i++) {
            float x = (i & 1) ? rand_input_for(f) : u2f(start + (i / 2) * SWEEP_STRIDE);
            uint32_t code = f->encode(x);
            CHECK(code < n_codes(f), "%s: code 0x%X out of range", f->name, code);
            if (isnan(x)) {
                CHECK(nan_encoding_ok(f, x, code), "%s: NaN 0x%08X encoded 0x%X", f->name, f2u(x), code);
                continue;
            }
            double ax = fabs((double)x);
            double mag = isinf(x) ? (f->saturating ? ref_magnitude(f, f->max_code) : INFINITY)
                                  : ref_round_magnitude(f, ax);
            double want = signbit(x) ? -mag : mag;
            float got = f->decode(code);
            CHECK(values_same(got, want), "%s: x=%a (0x%08X) encoded 0x%X = %a, want %a", f->name, (double)x,
                  f2u(x), code, (double)got, want);
        }
    }
    report_checks(__func__);
}

static void test_encode_saturation_and_specials(void **state) {
    (void)state;
    const float qnan = u2f(0x7FC00000u), nqnan = u2f(0xFFC00000u);
    const float snan = u2f(0x7F800001u), nsnan = u2f(0xFF800001u);
    const float nan_payload = u2f(0x7FA5A5A5u), nnan_all = u2f(0xFFFFFFFFu);
    const float nans[] = {qnan, nqnan, snan, nsnan, nan_payload, nnan_all};

    /* E4M3FN: everything past 448 saturates (no inf; 0x7F is NaN). */
    const float e4m3_over[] = {448.0f, nextafterf(448.0f, INFINITY), 463.99f, 464.0f, 465.0f, 479.0f,
                               480.0f, 481.0f, 1e6f, FLT_MAX, INFINITY};
    for (size_t i = 0; i < sizeof e4m3_over / sizeof e4m3_over[0]; i++) {
        CHECK(qd_f32_to_e4m3(e4m3_over[i]) == 0x7E, "e4m3(%a)", (double)e4m3_over[i]);
        CHECK(qd_f32_to_e4m3(-e4m3_over[i]) == 0xFE, "e4m3(-%a)", (double)e4m3_over[i]);
    }
    CHECK(qd_f32_to_e4m3(nextafterf(448.0f, 0.0f)) == 0x7E, "e4m3 just below 448");
    CHECK(qd_f32_to_e4m3(432.0f) == 0x7E && qd_f32_to_e4m3(431.99f) == 0x7D, "e4m3 416/448 tie");

    /* E5M2: saturates too (never inf), and decodes inf. */
    const float e5m2_over[] = {57344.0f, 61439.0f, 61440.0f, 61441.0f, 65536.0f, 1e10f, FLT_MAX, INFINITY};
    for (size_t i = 0; i < sizeof e5m2_over / sizeof e5m2_over[0]; i++) {
        CHECK(qd_f32_to_e5m2(e5m2_over[i]) == 0x7B, "e5m2(%a)", (double)e5m2_over[i]);
        CHECK(qd_f32_to_e5m2(-e5m2_over[i]) == 0xFB, "e5m2(-%a)", (double)e5m2_over[i]);
    }

    /* E2M1: saturate to ±6; NaN → 0; small negatives keep the sign. */
    const float e2m1_over[] = {6.0f, 6.5f, 7.0f, 8.0f, 100.0f, FLT_MAX, INFINITY};
    for (size_t i = 0; i < sizeof e2m1_over / sizeof e2m1_over[0]; i++) {
        CHECK(qd_f32_to_e2m1(e2m1_over[i]) == 0x7, "e2m1(%a)", (double)e2m1_over[i]);
        CHECK(qd_f32_to_e2m1(-e2m1_over[i]) == 0xF, "e2m1(-%a)", (double)e2m1_over[i]);
    }
    CHECK(qd_f32_to_e2m1(-0.1f) == 0x8 && qd_f32_to_e2m1(-1e-30f) == 0x8, "e2m1 -tiny");
    CHECK(qd_f32_to_e2m1(u2f(0x80000001u)) == 0x8 && qd_f32_to_e2m1(u2f(0x00000001u)) == 0x0, "e2m1 denorm");

    /* bf16 / f16: IEEE overflow to inf, ties at max + half ulp go to inf (max is odd). */
    CHECK(qd_f32_to_bf16(u2f(0x7F7F7FFFu)) == 0x7F7F, "bf16 below max tie");
    CHECK(qd_f32_to_bf16(u2f(0x7F7F8000u)) == 0x7F80, "bf16 max tie → inf");
    CHECK(qd_f32_to_bf16(FLT_MAX) == 0x7F80 && qd_f32_to_bf16(-FLT_MAX) == 0xFF80, "bf16 FLT_MAX");
    CHECK(qd_f32_to_bf16(INFINITY) == 0x7F80 && qd_f32_to_bf16(-INFINITY) == 0xFF80, "bf16 inf");
    CHECK(qd_f32_to_bf16(1.0f) == 0x3F80 && qd_f32_to_bf16(u2f(0x3F808000u)) == 0x3F80, "bf16 1 tie");
    CHECK(qd_f32_to_bf16(u2f(0x3F818000u)) == 0x3F82, "bf16 odd tie up");
    CHECK(qd_f32_to_bf16(u2f(0x00000001u)) == 0x0000 && qd_f32_to_bf16(u2f(0x80008000u)) == 0x8000,
          "bf16 f32-subnormal ties");
    CHECK(qd_f32_to_bf16(u2f(0x00018000u)) == 0x0002, "bf16 subnormal odd tie up");
    CHECK(qd_f32_to_f16(65504.0f) == 0x7BFF && qd_f32_to_f16(nextafterf(65520.0f, 0.0f)) == 0x7BFF, "f16");
    CHECK(qd_f32_to_f16(65520.0f) == 0x7C00 && qd_f32_to_f16(-65520.0f) == 0xFC00, "f16 max tie → inf");
    CHECK(qd_f32_to_f16(1e6f) == 0x7C00 && qd_f32_to_f16(FLT_MAX) == 0x7C00, "f16 overflow");
    CHECK(qd_f32_to_f16(INFINITY) == 0x7C00 && qd_f32_to_f16(-INFINITY) == 0xFC00, "f16 inf");
    CHECK(qd_f32_to_f16(0x1p-24f) == 0x0001 && qd_f32_to_f16(0x1p-25f) == 0x0000, "f16 min sub / tie");
    CHECK(qd_f32_to_f16(nextafterf(0x1p-25f, 1.0f)) == 0x0001, "f16 above half min sub");
    CHECK(qd_f32_to_f16(3 * 0x1p-25f) == 0x0002 && qd_f32_to_f16(5 * 0x1p-25f) == 0x0002, "f16 sub ties");
    CHECK(qd_f32_to_f16(0x1p-14f) == 0x0400 && qd_f32_to_f16(0x3FFp-24f) == 0x03FF, "f16 sub/normal edge");
    CHECK(qd_f32_to_f16(0x7FFp-25f) == 0x0400, "f16 largest subnormal + half step rounds to min normal");
    CHECK(qd_f32_to_f16(u2f(0x80000001u)) == 0x8000 && qd_f32_to_f16(FLT_MIN) == 0x0000, "f16 tiny");

    /* Signed zeros everywhere. */
    CHECK(qd_f32_to_bf16(-0.0f) == 0x8000 && qd_f32_to_f16(-0.0f) == 0x8000, "-0 16-bit");
    CHECK(qd_f32_to_e4m3(-0.0f) == 0x80 && qd_f32_to_e5m2(-0.0f) == 0x80, "-0 fp8");
    CHECK(qd_f32_to_e2m1(-0.0f) == 0x8 && qd_f32_to_e2m1(0.0f) == 0x0, "±0 e2m1");

    /* NaN rules of codec.h, for quiet, signalling and payload NaNs of both signs. */
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        for (size_t k = 0; k < N_FMTS; k++) {
            uint32_t code = ALL_FMTS[k]->encode(nans[i]);
            CHECK(nan_encoding_ok(ALL_FMTS[k], nans[i], code), "%s: NaN 0x%08X → 0x%X", ALL_FMTS[k]->name,
                  f2u(nans[i]), code);
            if (ALL_FMTS[k]->nan != NAN_ZERO)
                CHECK(isnan(ALL_FMTS[k]->decode(code)), "%s: NaN does not decode as NaN", ALL_FMTS[k]->name);
        }
        CHECK(qd_f32_to_e8m0(nans[i]) == 0xFF, "e8m0 NaN");
        CHECK(qd_f32_to_i8(nans[i]) == 0, "i8 NaN");
    }
    /* Truncation alone would turn this signalling NaN into an infinity. */
    CHECK(qd_f32_to_bf16(snan) == 0x7FC0 && qd_f32_to_bf16(nsnan) == 0xFFC0, "bf16 sNaN quieted");
    CHECK(qd_f32_to_f16(snan) == 0x7E00 && qd_f32_to_f16(nsnan) == 0xFE00, "f16 sNaN quieted");
    report_checks(__func__);
}

/* ---- E8M0 ---- */

/* The documented rule computed with frexp: the nearest power of two with ties (significand exactly
 * 1.5) going up, saturating at 2^127; fp32 subnormals split at 2^-127. */
static uint8_t ref_e8m0(float x) {
    double ax = fabs((double)x);
    if (ax < 0x1p-126) return ax <= 0x1p-127 ? 0x00 : 0x01;
    int e;
    double m = frexp(ax, &e); /* ax = m 2^e, m in [0.5, 1): significand 2m */
    int p = (2 * m >= 1.5) ? e : e - 1;
    int byte = p + 127;
    return (uint8_t)(byte > 254 ? 254 : byte);
}

static void test_e8m0_encode(void **state) {
    (void)state;
    for (int p = -127; p <= 127; p++) {
        float x = (float)ldexp(1.0, p);
        CHECK(qd_f32_to_e8m0(x) == p + 127, "e8m0(2^%d)", p);
        CHECK(qd_f32_to_e8m0(-x) == p + 127, "e8m0(-2^%d): sign ignored", p);
    }
    for (int p = -126; p <= 127; p++) {
        int up = p + 128 > 254 ? 254 : p + 128;
        float one = (float)ldexp(1.0, p);
        float tie = (float)ldexp(1.5, p);
        float top = p == 127 ? FLT_MAX : nextafterf((float)ldexp(1.0, p + 1), 0.0f);
        CHECK(qd_f32_to_e8m0(nextafterf(one, INFINITY)) == p + 127, "e8m0 just above 2^%d", p);
        CHECK(qd_f32_to_e8m0((float)ldexp(1.25, p)) == p + 127, "e8m0 1.25*2^%d", p);
        CHECK(qd_f32_to_e8m0(nextafterf(tie, 0.0f)) == p + 127, "e8m0 below 1.5*2^%d", p);
        CHECK(qd_f32_to_e8m0(tie) == up, "e8m0 1.5*2^%d (tie rounds up)", p);
        CHECK(qd_f32_to_e8m0(-tie) == up, "e8m0 -1.5*2^%d", p);
        CHECK(qd_f32_to_e8m0((float)ldexp(1.75, p)) == up, "e8m0 1.75*2^%d", p);
        CHECK(qd_f32_to_e8m0(top) == up, "e8m0 just below 2^%d", p + 1);
    }
    CHECK(qd_f32_to_e8m0(0.0f) == 0x00 && qd_f32_to_e8m0(-0.0f) == 0x00, "e8m0 zero");
    CHECK(qd_f32_to_e8m0(0x1p-149f) == 0x00 && qd_f32_to_e8m0(0x1p-127f) == 0x00, "e8m0 tiny");
    CHECK(qd_f32_to_e8m0(nextafterf(0x1p-127f, 1.0f)) == 0x01, "e8m0 just above 2^-127");
    CHECK(qd_f32_to_e8m0(0x1.8p-127f) == 0x01 && qd_f32_to_e8m0(nextafterf(0x1p-126f, 0.0f)) == 0x01,
          "e8m0 subnormal upper half");
    CHECK(qd_f32_to_e8m0(INFINITY) == 0xFF && qd_f32_to_e8m0(-INFINITY) == 0xFF, "e8m0 inf");
    CHECK(qd_f32_to_e8m0(FLT_MAX) == 0xFE && qd_f32_to_e8m0(0x1.8p127f) == 0xFE, "e8m0 saturates");
    CHECK(qd_f32_to_e8m0(1.0f) == 0x7F && qd_f32_to_e8m0(0.75f) == 0x7F && qd_f32_to_e8m0(3.0f) == 0x81,
          "e8m0 small");
    for (int i = 0; i < 1000000; i++) {
        float x = i & 1 ? u2f((uint32_t)qt_rand_u64(&rng))
                        : (float)ldexp(1.0 + rand_unit(), (int)rand_below(40) - 20);
        if (isnan(x) || isinf(x)) {
            CHECK(qd_f32_to_e8m0(x) == 0xFF, "e8m0 special 0x%08X", f2u(x));
            continue;
        }
        uint8_t got = qd_f32_to_e8m0(x), want = ref_e8m0(x);
        CHECK(got == want, "e8m0(%a) = 0x%02X, want 0x%02X", (double)x, got, want);
    }
    report_checks(__func__);
}

/* ---- int8 ---- */

static int ref_i8(double x) {
    if (isnan(x)) return 0;
    if (x >= 127.0) return 127;
    if (x <= -128.0) return -128;
    double fl = floor(x);
    double frac = x - fl;
    if (frac > 0.5 || (frac == 0.5 && fmod(fl, 2.0) != 0.0)) fl += 1.0;
    return (int)fl;
}

static void test_int8(void **state) {
    (void)state;
    static const struct {
        float x;
        int want;
    } vec[] = {
        {2.5f, 2},        {3.5f, 4},         {-2.5f, -2},     {-3.5f, -4},      {0.5f, 0},
        {-0.5f, 0},       {1.5f, 2},         {0.49f, 0},      {0.51f, 1},       {-0.51f, -1},
        {126.5f, 126},    {127.0f, 127},     {127.4f, 127},   {127.5f, 127},    {128.0f, 127},
        {1e9f, 127},      {INFINITY, 127},   {FLT_MAX, 127},  {-127.5f, -128},  {-128.0f, -128},
        {-128.5f, -128},  {-129.0f, -128},   {-1e9f, -128},   {-INFINITY, -128}, {0.0f, 0},
        {-0.0f, 0},
    };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++)
        CHECK(qd_f32_to_i8(vec[i].x) == vec[i].want, "i8(%g) = %d, want %d", (double)vec[i].x,
              qd_f32_to_i8(vec[i].x), vec[i].want);
    CHECK(qd_f32_to_i8(NAN) == 0 && qd_f32_to_i8(-NAN) == 0, "i8 NaN");
    /* Every quarter from -140 to 140, and the floats on either side of each. */
    for (int q = -560; q <= 560; q++) {
        float x = (float)q / 4.0f;
        const float xs[3] = {x, nextafterf(x, INFINITY), nextafterf(x, -INFINITY)};
        for (int j = 0; j < 3; j++)
            CHECK(qd_f32_to_i8(xs[j]) == ref_i8(xs[j]), "i8(%a) = %d, want %d", (double)xs[j],
                  qd_f32_to_i8(xs[j]), ref_i8(xs[j]));
    }
    for (int i = 0; i < 1000000; i++) {
        float x = i & 1 ? qt_rand_uniform(&rng, -300.0f, 300.0f) : u2f((uint32_t)qt_rand_u64(&rng));
        CHECK(qd_f32_to_i8(x) == ref_i8(x), "i8(%a) = %d, want %d", (double)x, qd_f32_to_i8(x), ref_i8(x));
    }
    report_checks(__func__);
}

/* ---- 4-bit packing ---- */

static void test_pack_int4(void **state) {
    (void)state;
    for (int lo = -8; lo <= 7; lo++) {
        for (int hi = -8; hi <= 7; hi++) {
            int8_t v[2] = {(int8_t)lo, (int8_t)hi};
            uint8_t byte = 0;
            int8_t back[2] = {0, 0};
            qd_pack_int4(v, 2, &byte);
            unsigned want = (unsigned)(lo < 0 ? lo + 16 : lo) | (unsigned)(hi < 0 ? hi + 16 : hi) << 4;
            CHECK(byte == want, "pack_int4(%d, %d) = 0x%02X, want 0x%02X", lo, hi, byte, want);
            qd_unpack_int4(&byte, 2, back);
            CHECK(back[0] == lo && back[1] == hi, "unpack_int4(0x%02X) = %d %d", byte, back[0], back[1]);
        }
    }
    /* Sign extension, one nibble value at a time, in either position. */
    for (unsigned nib = 0; nib < 16; nib++) {
        int want = nib < 8 ? (int)nib : (int)nib - 16;
        uint8_t b[1] = {(uint8_t)(nib | nib << 4)};
        int8_t v[2];
        qd_unpack_int4(b, 2, v);
        CHECK(v[0] == want && v[1] == want, "nibble 0x%X → %d %d, want %d", nib, v[0], v[1], want);
    }
    /* Inputs are masked to 4 bits. */
    {
        int8_t v[2] = {23, -20}; /* 0x17 → 7, 0xEC → 0xC */
        uint8_t b = 0;
        qd_pack_int4(v, 2, &b);
        CHECK(b == 0xC7, "pack_int4 masks: 0x%02X", b);
    }
    /* Odd and random lengths: high nibble of the last byte is 0, nothing past the end is written. */
    for (size_t n = 0; n <= 67; n++) {
        int8_t v[70], back[72];
        uint8_t packed[40];
        for (size_t i = 0; i < n; i++) v[i] = (int8_t)((int)rand_below(16) - 8);
        memset(packed, 0xCC, sizeof packed);
        memset(back, 0x55, sizeof back);
        qd_pack_int4(v, n, packed);
        size_t nb = (n + 1) / 2;
        for (size_t i = nb; i < sizeof packed; i++) CHECK(packed[i] == 0xCC, "n=%zu: byte %zu written", n, i);
        if (n & 1) CHECK((packed[nb - 1] >> 4) == 0, "n=%zu: last high nibble 0x%X", n, packed[nb - 1] >> 4);
        for (size_t i = 0; i < n; i++) {
            unsigned nib = (i & 1) ? packed[i / 2] >> 4 : packed[i / 2] & 0xFu;
            CHECK(nib == ((unsigned)v[i] & 0xFu), "n=%zu: element %zu in the wrong nibble", n, i);
        }
        qd_unpack_int4(packed, n, back);
        for (size_t i = 0; i < n; i++)
            CHECK(back[i] == v[i], "n=%zu: element %zu %d != %d", n, i, back[i], v[i]);
        for (size_t i = n; i < sizeof back; i++) CHECK(back[i] == 0x55, "n=%zu: unpack wrote past end", n);
    }
    report_checks(__func__);
}

static void test_pack_uint4(void **state) {
    (void)state;
    for (unsigned lo = 0; lo < 16; lo++) {
        for (unsigned hi = 0; hi < 16; hi++) {
            uint8_t v[2] = {(uint8_t)lo, (uint8_t)hi};
            uint8_t byte = 0, back[2] = {0, 0};
            qd_pack_uint4(v, 2, &byte);
            CHECK(byte == (lo | hi << 4), "pack_uint4(%u, %u) = 0x%02X", lo, hi, byte);
            qd_unpack_uint4(&byte, 2, back);
            CHECK(back[0] == lo && back[1] == hi, "unpack_uint4(0x%02X) = %u %u", byte, back[0], back[1]);
        }
    }
    {
        uint8_t v[3] = {0x1F, 0xA3, 0x5E}, b[3] = {0xCC, 0xCC, 0xCC};
        qd_pack_uint4(v, 3, b);
        CHECK(b[0] == 0x3F && b[1] == 0x0E && b[2] == 0xCC, "pack_uint4 masks / odd: %02X %02X %02X", b[0],
              b[1], b[2]);
    }
    for (size_t n = 0; n <= 67; n++) {
        uint8_t v[70], back[72], packed[40];
        for (size_t i = 0; i < n; i++) v[i] = (uint8_t)rand_below(16);
        memset(packed, 0xCC, sizeof packed);
        memset(back, 0x55, sizeof back);
        qd_pack_uint4(v, n, packed);
        size_t nb = (n + 1) / 2;
        for (size_t i = nb; i < sizeof packed; i++) CHECK(packed[i] == 0xCC, "n=%zu: byte %zu written", n, i);
        if (n & 1) CHECK((packed[nb - 1] >> 4) == 0, "n=%zu: last high nibble", n);
        qd_unpack_uint4(packed, n, back);
        for (size_t i = 0; i < n; i++) CHECK(back[i] == v[i], "n=%zu: element %zu", n, i);
        for (size_t i = n; i < sizeof back; i++) CHECK(back[i] == 0x55, "n=%zu: unpack wrote past end", n);
    }
    report_checks(__func__);
}

static void test_swap_nibbles(void **state) {
    (void)state;
    uint8_t v[2] = {0xAB, 0x10}; /* formats.md §7, SGLang swap_weight_nibbles */
    qd_swap_nibbles(v, 2);
    CHECK(v[0] == 0xBA && v[1] == 0x01, "swap [AB 10] → [%02X %02X], want [BA 01]", v[0], v[1]);
    uint8_t all[256], twice[256];
    for (int i = 0; i < 256; i++) all[i] = twice[i] = (uint8_t)i;
    qd_swap_nibbles(all, 256);
    qd_swap_nibbles(twice, 256);
    qd_swap_nibbles(twice, 256);
    for (unsigned i = 0; i < 256; i++) {
        CHECK(all[i] == (((i & 0xFu) << 4) | (i >> 4)), "swap 0x%02X → 0x%02X", i, all[i]);
        CHECK(twice[i] == i, "swap twice 0x%02X", i);
    }
    uint8_t untouched = 0x12;
    qd_swap_nibbles(&untouched, 0);
    CHECK(untouched == 0x12, "swap n=0 wrote");
    report_checks(__func__);
}

/* ---- formats.md §7 vectors ---- */

static void test_spec_vectors(void **state) {
    (void)state;
    static const struct {
        float x;
        uint8_t want;
    } e4m3[] = {{1.0f, 0x38},   {-1.0f, 0xB8},  {0.1f, 0x1D},       {0.3f, 0x2A},       {448.0f, 0x7E},
                {449.0f, 0x7E}, {464.0f, 0x7E}, {465.0f, 0x7E},     {1000.0f, 0x7E},    {0x1p-6f, 0x08},
                {0x1p-9f, 0x01}, {0x1p-10f, 0x00}, {0x1.8p-9f, 0x02}, {0x1.4p-8f, 0x02}, {-0.0f, 0x80}};
    for (size_t i = 0; i < sizeof e4m3 / sizeof e4m3[0]; i++)
        CHECK(qd_f32_to_e4m3(e4m3[i].x) == e4m3[i].want, "e4m3(%a) = 0x%02X, want 0x%02X", (double)e4m3[i].x,
              qd_f32_to_e4m3(e4m3[i].x), e4m3[i].want);
    CHECK(qd_e4m3_to_f32(0x1D) == 0.1015625f && qd_e4m3_to_f32(0x2A) == 0.3125f, "e4m3 §7 values");

    static const struct {
        float x;
        uint8_t want;
    } e2m1[] = {{0.24f, 0x0}, {0.25f, 0x0}, {0.26f, 0x1}, {0.75f, 0x2}, {1.25f, 0x2},
                {1.75f, 0x4}, {2.5f, 0x4},  {3.5f, 0x6},  {5.0f, 0x6},  {5.01f, 0x7},
                {7.0f, 0x7},  {-0.2f, 0x8}, {-0.3f, 0x9}, {-6.5f, 0xF}};
    for (size_t i = 0; i < sizeof e2m1 / sizeof e2m1[0]; i++)
        CHECK(qd_f32_to_e2m1(e2m1[i].x) == e2m1[i].want, "e2m1(%g) = 0x%X, want 0x%X", (double)e2m1[i].x,
              qd_f32_to_e2m1(e2m1[i].x), e2m1[i].want);

    /* NVFP4 block, ModelOpt weight recipe (§3.3) in fp32. */
    {
        const float x[16] = {0.0f, 0.1f,  -0.2f, 0.3f,  0.45f,  -0.6f, 0.75f, 0.9f,
                             1.05f, -1.2f, 1.35f, 1.5f, -1.65f, 1.8f,  1.95f, -2.1f};
        static const uint8_t want_codes[16] = {0x0, 0x1, 0x9, 0x2, 0x3, 0xB, 0x4, 0x5,
                                               0x5, 0xD, 0x6, 0x6, 0xE, 0x7, 0x7, 0xF};
        static const uint8_t want_bytes[8] = {0x10, 0x29, 0xB3, 0x54, 0xD5, 0x66, 0x7E, 0xF7};
        float tensor_amax = 21.0f;
        float wsf2 = tensor_amax / (6.0f * 448.0f);
        CHECK(f2u(wsf2) == 0x3C000000u, "weight_scale_2 = %a, want 0.0078125", (double)wsf2);
        float amax = 0.0f;
        for (int i = 0; i < 16; i++) amax = fmaxf(amax, fabsf(x[i]));
        CHECK(amax == 2.1f, "block amax");
        float raw = amax / (6.0f * wsf2);
        CHECK(fabsf(raw - 44.8f) < 1e-4f, "raw scale %g", (double)raw);
        uint8_t sb = qd_f32_to_e4m3(raw);
        CHECK(sb == 0x63 && qd_e4m3_to_f32(sb) == 44.0f, "weight_scale byte 0x%02X, want 0x63", sb);
        float step = qd_e4m3_to_f32(sb) * wsf2;
        CHECK(step == 0.34375f, "dequant step %g", (double)step);
        uint8_t codes[16], packed[8], scaled_packed[8];
        float scaled[16];
        for (int i = 0; i < 16; i++) {
            scaled[i] = x[i] / step;
            codes[i] = qd_f32_to_e2m1(scaled[i]);
            CHECK(codes[i] == want_codes[i], "nvfp4 code %d = 0x%X, want 0x%X", i, codes[i], want_codes[i]);
        }
        qd_pack_uint4(codes, 16, packed);
        CHECK(qd_encode_row(QD_DTYPE_F4, scaled, scaled_packed, 16) == 0, "encode_row F4");
        for (int i = 0; i < 8; i++) {
            CHECK(packed[i] == want_bytes[i], "nvfp4 byte %d = 0x%02X, want 0x%02X", i, packed[i],
                  want_bytes[i]);
            CHECK(scaled_packed[i] == want_bytes[i], "nvfp4 encode_row byte %d = 0x%02X", i,
                  scaled_packed[i]);
        }
        /* Dequantization (§3.4) recovers code values times the step. */
        float deq[16];
        CHECK(qd_decode_row(QD_DTYPE_F4, packed, deq, 16) == 0, "decode_row F4");
        for (int i = 0; i < 16; i++) {
            CHECK(deq[i] == qd_e2m1_to_f32(want_codes[i]), "nvfp4 decode %d", i);
            CHECK(fabsf(deq[i] * step - x[i]) <= step, "nvfp4 dequant %d too far from the input", i);
        }
    }

    /* MXFP4 block, OCP floor rule (§4.3). */
    {
        float x[32] = {0.0f, 0.5f, -1.0f, 3.0f, 7.5f, -0.26f, 0.24f, 2.4f};
        static const uint8_t want_codes[8] = {0x0, 0x1, 0xA, 0x5, 0x7, 0x9, 0x0, 0x4};
        static const uint8_t want_bytes[16] = {0x10, 0x5A, 0x97, 0x40};
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        CHECK(amax == 7.5f, "mx amax");
        int e;
        frexpf(amax, &e);
        int shared_exp = (e - 1) - 2; /* floor(log2(amax)) - emax(E2M1) */
        CHECK(shared_exp == 0, "shared_exp %d", shared_exp);
        uint8_t sbyte = qd_f32_to_e8m0(ldexpf(1.0f, shared_exp));
        CHECK(sbyte == 0x7F && sbyte == shared_exp + 127, "mx scale byte 0x%02X, want 0x7F", sbyte);
        float scale = qd_e8m0_to_f32(sbyte);
        uint8_t codes[32], packed[16], row[16];
        float scaled[32];
        for (int i = 0; i < 32; i++) {
            scaled[i] = x[i] / scale;
            codes[i] = qd_f32_to_e2m1(scaled[i]);
            CHECK(codes[i] == (i < 8 ? want_codes[i] : 0), "mxfp4 code %d = 0x%X", i, codes[i]);
        }
        qd_pack_uint4(codes, 32, packed);
        CHECK(qd_encode_row(QD_DTYPE_F4, scaled, row, 32) == 0, "encode_row F4");
        for (int i = 0; i < 16; i++) {
            CHECK(packed[i] == want_bytes[i], "mxfp4 byte %d = 0x%02X, want 0x%02X", i, packed[i],
                  want_bytes[i]);
            CHECK(row[i] == want_bytes[i], "mxfp4 encode_row byte %d = 0x%02X", i, row[i]);
        }
    }
    report_checks(__func__);
}

/* ---- bulk rows ---- */

static int float_same(float a, float b) { return (isnan(a) && isnan(b)) || f2u(a) == f2u(b); }

/* The f32 a single element of `t` at `p` denotes, through the scalar codecs / plain C casts. */
static float scalar_decode(qd_dtype t, const uint8_t *p) {
    switch (t) {
    case QD_DTYPE_BOOL: return *p ? 1.0f : 0.0f;
    case QD_DTYPE_U8: return (float)*p;
    case QD_DTYPE_I8: return (float)(int8_t)*p;
#define LOAD(ctype)                                                                                \
    do {                                                                                           \
        ctype v;                                                                                   \
        memcpy(&v, p, sizeof v);                                                                   \
        return (float)v;                                                                           \
    } while (0)
    case QD_DTYPE_U16: LOAD(uint16_t);
    case QD_DTYPE_I16: LOAD(int16_t);
    case QD_DTYPE_U32: LOAD(uint32_t);
    case QD_DTYPE_I32: LOAD(int32_t);
    case QD_DTYPE_U64: LOAD(uint64_t);
    case QD_DTYPE_I64: LOAD(int64_t);
    case QD_DTYPE_F64: LOAD(double);
    case QD_DTYPE_F32: LOAD(float);
#undef LOAD
    case QD_DTYPE_F16: return qd_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
    case QD_DTYPE_BF16: return qd_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
    case QD_DTYPE_F8_E4M3: return qd_e4m3_to_f32(*p);
    case QD_DTYPE_F8_E5M2: return qd_e5m2_to_f32(*p);
    case QD_DTYPE_F8_E8M0: return qd_e8m0_to_f32(*p);
    default: fail_msg("no scalar decode for %s", qd_dtype_name(t));
    }
    return 0;
}

static const qd_dtype DECODABLE[] = {
    QD_DTYPE_BOOL, QD_DTYPE_U8,  QD_DTYPE_I8,  QD_DTYPE_U16,     QD_DTYPE_I16,     QD_DTYPE_U32,
    QD_DTYPE_I32,  QD_DTYPE_U64, QD_DTYPE_I64, QD_DTYPE_F16,     QD_DTYPE_BF16,    QD_DTYPE_F32,
    QD_DTYPE_F64,  QD_DTYPE_F8_E4M3, QD_DTYPE_F8_E5M2, QD_DTYPE_F8_E8M0, QD_DTYPE_F4,
};
static const qd_dtype ENCODABLE[] = {QD_DTYPE_F32,     QD_DTYPE_F16,     QD_DTYPE_BF16, QD_DTYPE_F8_E4M3,
                                     QD_DTYPE_F8_E5M2, QD_DTYPE_F8_E8M0, QD_DTYPE_F4,   QD_DTYPE_I8};

static int in_list(qd_dtype t, const qd_dtype *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (list[i] == t) return 1;
    return 0;
}

/* Lengths on both sides of the decoder's table threshold, odd ones included, and one random. */
static size_t row_length(int i) {
    static const size_t fixed[] = {0, 1, 2, 3, 7, 16, 31, 255, 256, 511, 512, 513, 1000, 4097};
    size_t nf = sizeof fixed / sizeof fixed[0];
    return i < (int)nf ? fixed[i] : 1 + rand_below(6000);
}
#define N_ROW_LENGTHS 18

static void fill_random_bytes(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)qt_rand_u64(&rng);
}

static void test_decode_row(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof DECODABLE / sizeof DECODABLE[0]; k++) {
        qd_dtype t = DECODABLE[k];
        int bits = qd_dtype_bits(t);
        for (int li = 0; li < N_ROW_LENGTHS; li++) {
            size_t n = row_length(li);
            if (t == QD_DTYPE_F4 && (n & 1)) {
                uint8_t b[8] = {0};
                float d[8];
                CHECK(qd_decode_row(t, b, d, n & 7 ? (n & 7) : 1) == -1, "F4 odd n must fail");
                n++;
            }
            size_t nbytes = n * (size_t)bits / 8;
            size_t off = (size_t)(li & 3); /* rows of a checkpoint need not be aligned */
            uint8_t *raw = malloc(nbytes + 8);
            float *dst = malloc((n + 4) * sizeof(float));
            fill_random_bytes(raw, nbytes + 8);
            uint8_t *src = raw + off;
            if (t == QD_DTYPE_F64) { /* keep values inside f32 range: out-of-range casts are UB */
                for (size_t i = 0; i < n; i++) {
                    double v = ldexp(rand_unit() - 0.5, (int)rand_below(200) - 100);
                    memcpy(src + 8 * i, &v, sizeof v);
                }
            }
            for (size_t i = 0; i < n + 4; i++) dst[i] = u2f(0x7FCAFE00u);
            CHECK(qd_decode_row(t, src, dst, n) == 0, "decode_row %s n=%zu", qd_dtype_name(t), n);
            for (size_t i = 0; i < n; i++) {
                float want = t == QD_DTYPE_F4
                                 ? qd_e2m1_to_f32((uint8_t)(i & 1 ? src[i / 2] >> 4 : src[i / 2]))
                                 : scalar_decode(t, src + i * (size_t)bits / 8);
                CHECK(float_same(dst[i], want), "decode_row %s n=%zu [%zu]: %a, want %a", qd_dtype_name(t), n,
                      i, (double)dst[i], (double)want);
            }
            for (size_t i = n; i < n + 4; i++)
                CHECK(f2u(dst[i]) == 0x7FCAFE00u, "decode_row %s wrote past n=%zu", qd_dtype_name(t), n);
            free(raw);
            free(dst);
        }
    }
    uint8_t b[64] = {0};
    float d[64];
    for (int t = 0; t < QD_DTYPE_COUNT + 3; t++)
        if (!in_list((qd_dtype)t, DECODABLE, sizeof DECODABLE / sizeof DECODABLE[0]))
            CHECK(qd_decode_row((qd_dtype)t, b, d, 4) == -1, "decode_row %s must be unsupported",
                  qd_dtype_name((qd_dtype)t));
    report_checks(__func__);
}

/* A mix of ordinary values, values near every format's limits, and specials. */
static float rand_mixed_float(void) {
    static const float special[] = {
        0.0f,     -0.0f,    INFINITY, -INFINITY, NAN,      -NAN,     FLT_MAX,
        FLT_MIN,  0x1p-149f, 448.0f,  464.0f,    57344.0f, 61440.0f, 65504.0f,
        65520.0f, 6.0f,     5.0f,     0.25f,     2.5f,     -127.5f,  0x1.8p-127f,
    };
    switch (rand_below(6)) {
    case 0: return u2f((uint32_t)qt_rand_u64(&rng));
    case 1: return special[rand_below(sizeof special / sizeof special[0])];
    case 2: return qt_rand_uniform(&rng, -1.0f, 1.0f);
    case 3: return qt_rand_uniform(&rng, -600.0f, 600.0f);
    case 4: return (float)ldexp(rand_unit() * 2 - 1, (int)rand_below(60) - 30);
    default: return qt_rand_uniform(&rng, -8.0f, 8.0f);
    }
}

static void test_encode_row(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof ENCODABLE / sizeof ENCODABLE[0]; k++) {
        qd_dtype t = ENCODABLE[k];
        int bits = qd_dtype_bits(t);
        for (int li = 0; li < N_ROW_LENGTHS; li++) {
            size_t n = row_length(li);
            if (t == QD_DTYPE_F4 && (n & 1)) {
                float s[1] = {1.0f};
                uint8_t d[1];
                CHECK(qd_encode_row(t, s, d, 1) == -1, "F4 odd n must fail");
                n++;
            }
            size_t nbytes = n * (size_t)bits / 8;
            size_t off = (size_t)(li & 3);
            float *src = malloc((n + 1) * sizeof(float));
            uint8_t *raw = malloc(nbytes + 16);
            for (size_t i = 0; i < n; i++) src[i] = rand_mixed_float();
            memset(raw, 0xA5, nbytes + 16);
            uint8_t *dst = raw + off;
            CHECK(qd_encode_row(t, src, dst, n) == 0, "encode_row %s n=%zu", qd_dtype_name(t), n);
            for (size_t i = 0; i < n; i++) {
                const uint8_t *p = dst + i * (size_t)bits / 8;
                uint32_t got, want;
                switch (t) {
                case QD_DTYPE_F32:
                    got = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
                    want = f2u(src[i]);
                    break;
                case QD_DTYPE_F16: got = (uint32_t)(p[0] | p[1] << 8); want = qd_f32_to_f16(src[i]); break;
                case QD_DTYPE_BF16: got = (uint32_t)(p[0] | p[1] << 8); want = qd_f32_to_bf16(src[i]); break;
                case QD_DTYPE_F8_E4M3: got = *p; want = qd_f32_to_e4m3(src[i]); break;
                case QD_DTYPE_F8_E5M2: got = *p; want = qd_f32_to_e5m2(src[i]); break;
                case QD_DTYPE_F8_E8M0: got = *p; want = qd_f32_to_e8m0(src[i]); break;
                case QD_DTYPE_I8: got = *p; want = (uint8_t)qd_f32_to_i8(src[i]); break;
                default: /* F4: element 2j in the low nibble */
                    got = (i & 1) ? (uint32_t)(dst[i / 2] >> 4) : (uint32_t)(dst[i / 2] & 0xFu);
                    want = qd_f32_to_e2m1(src[i]);
                    break;
                }
                CHECK(got == want, "encode_row %s n=%zu [%zu] x=%a: 0x%X, want 0x%X", qd_dtype_name(t), n, i,
                      (double)src[i], got, want);
            }
            for (size_t i = nbytes; i < nbytes + 16 - off; i++)
                CHECK(dst[i] == 0xA5, "encode_row %s wrote past n=%zu", qd_dtype_name(t), n);
            for (size_t i = 0; i < off; i++)
                CHECK(raw[i] == 0xA5, "encode_row %s wrote before dst", qd_dtype_name(t));
            free(src);
            free(raw);
        }
    }
    float s[4] = {1, 2, 3, 4};
    uint8_t d[64];
    for (int t = 0; t < QD_DTYPE_COUNT + 3; t++)
        if (!in_list((qd_dtype)t, ENCODABLE, sizeof ENCODABLE / sizeof ENCODABLE[0]))
            CHECK(qd_encode_row((qd_dtype)t, s, d, 4) == -1, "encode_row %s must be unsupported",
                  qd_dtype_name((qd_dtype)t));
    report_checks(__func__);
}

int main(void) {
    rng = qt_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_decode_all_codes, reset_checks),
        cmocka_unit_test_setup(test_decode_e8m0, reset_checks),
        cmocka_unit_test_setup(test_encode_round_trip, reset_checks),
        cmocka_unit_test_setup(test_encode_midpoints, reset_checks),
        cmocka_unit_test_setup(test_encode_random_vs_reference, reset_checks),
        cmocka_unit_test_setup(test_encode_saturation_and_specials, reset_checks),
        cmocka_unit_test_setup(test_e8m0_encode, reset_checks),
        cmocka_unit_test_setup(test_int8, reset_checks),
        cmocka_unit_test_setup(test_pack_int4, reset_checks),
        cmocka_unit_test_setup(test_pack_uint4, reset_checks),
        cmocka_unit_test_setup(test_swap_nibbles, reset_checks),
        cmocka_unit_test_setup(test_spec_vectors, reset_checks),
        cmocka_unit_test_setup(test_decode_row, reset_checks),
        cmocka_unit_test_setup(test_encode_row, reset_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
