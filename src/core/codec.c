/* Numeric codecs: exact decoders and round-to-nearest-even encoders for bf16, f16, FP8 E4M3FN / E5M2,
 * FP4 E2M1, E8M0 and int8, 4-bit packing, and row conversions between stored dtypes and f32.
 * Follows ../shared/spec/formats.md §1.1–1.2 (FP8), §2 (E2M1 and nibble order), §4.1 (E8M0) and
 * §6.1 (int8 RNE); the vectors of §7 are checked in tests/unit/core/test_codec.c.
 *
 * Every float encoder works on the fp32 bit pattern with integer arithmetic, so the result does not
 * depend on the FPU rounding mode or on flush-to-zero, and one rounding routine serves every small
 * format.
 * Floats and their bits are exchanged through memcpy (the only well-defined pun in C). Stored data is
 * little-endian (safetensors); rows are read with memcpy because checkpoint offsets need not be
 * aligned. */
#include "core/codec.h"

#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "codec.c reads little-endian safetensors data with host loads; a big-endian host needs byte swaps"
#endif

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#define F32_ABS 0x7FFFFFFFu
#define F32_INF 0x7F800000u
#define F32_QNAN 0x7FC00000u

/* Round a finite, non-negative fp32 (given as bits) to a binary format with `mbits` stored mantissa
 * bits and exponent bias `bias`, RNE, and return the code (exponent << mbits | mantissa) without an
 * upper bound: codes past the format's largest finite value are the caller's to saturate or turn
 * into infinity. Codes are monotonic in value, so a carry out of the mantissa is the correct next
 * exponent, and rounding up from the largest subnormal lands exactly on the smallest normal. */
static inline uint32_t round_to_binary(uint32_t abs_bits, int mbits, int bias) {
    uint32_t exp32 = abs_bits >> 23;
    uint32_t min_normal_exp32 = (uint32_t)(127 + 1 - bias);
    if (exp32 >= min_normal_exp32) {
        /* Normal in the target: rebias, then drop 23 - mbits mantissa bits with RNE. Adding
         * half-minus-one plus the kept LSB rounds ties to even in one integer add. */
        int drop = 23 - mbits;
        uint32_t r = abs_bits - ((uint32_t)(127 - bias) << 23);
        uint32_t lsb = (r >> drop) & 1u;
        r += ((1u << (drop - 1)) - 1u) + lsb;
        return r >> drop;
    }
    /* Subnormal in the target: the code is the value in units of the subnormal step
     * 2^(1 - bias - mbits). The fp32 value is full * 2^(exp32 - 150) (exp32 = 1 for fp32 subnormals,
     * which lack the implicit bit), so the code is full >> shift with shift >= 24 - mbits >= 1. */
    uint32_t full = abs_bits & 0x7FFFFFu;
    if (exp32 == 0)
        exp32 = 1;
    else
        full |= 0x800000u;
    uint32_t shift = (uint32_t)(151 - bias - mbits) - exp32;
    if (shift > 24) return 0; /* full < 2^24, so the value is below half a step */
    uint32_t q = full >> shift;
    uint32_t rem = full & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return q;
}

/* ---- bf16 ---- */

float qd_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* ---- f16 ---- */

float qd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    if (exp == 0x1F) return bits_f32(sign | F32_INF | (mant << 13)); /* inf, or NaN with its payload */
    if (exp == 0) return bits_f32(sign | f32_bits((float)mant * 0x1p-24f)); /* exact: mant < 2^10 */
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t qd_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & F32_ABS;
    if (a > F32_INF) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a >= F32_INF) return (uint16_t)(sign | 0x7C00u);
    uint32_t code = round_to_binary(a, 10, 15);
    if (code > 0x7C00u) code = 0x7C00u; /* IEEE: overflow (including the max + half-ulp tie) is inf */
    return (uint16_t)(sign | code);
}

/* ---- FP8 E4M3FN ---- */

float qd_e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t exp = (b >> 3) & 0xFu;
    uint32_t mant = b & 0x7u;
    if ((b & 0x7Fu) == 0x7Fu) return bits_f32(sign | F32_QNAN);
    if (exp == 0) return bits_f32(sign | f32_bits((float)mant * 0x1p-9f));
    return bits_f32(sign | ((exp + 120u) << 23) | (mant << 20));
}

uint8_t qd_f32_to_e4m3(float f) {
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & F32_ABS;
    if (a > F32_INF) return (uint8_t)(sign | 0x7Fu);
    /* ±inf rounds to a huge code and is saturated with every other overflow. 0x7F is NaN, so the
     * first code past the largest finite one must saturate too (448 < f < 464 stays 0x7E by rounding;
     * 464 <= f rounds to 0x7F or beyond). */
    uint32_t code = round_to_binary(a, 3, 7);
    if (code > 0x7Eu) code = 0x7Eu;
    return (uint8_t)(sign | code);
}

/* ---- FP8 E5M2 ---- */

float qd_e5m2_to_f32(uint8_t b) { return qd_f16_to_f32((uint16_t)((uint16_t)b << 8)); }

uint8_t qd_f32_to_e5m2(float f) {
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & F32_ABS;
    if (a > F32_INF) return (uint8_t)(sign | 0x7Fu);
    uint32_t code = round_to_binary(a, 2, 15);
    if (code > 0x7Bu) code = 0x7Bu; /* saturate: the engine's quantizers never produce E5M2 inf */
    return (uint8_t)(sign | code);
}

/* ---- FP4 E2M1 ---- */

static const float e2m1_magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

float qd_e2m1_to_f32(uint8_t code) {
    float m = e2m1_magnitude[code & 0x7u];
    return (code & 0x8u) ? -m : m;
}

uint8_t qd_f32_to_e2m1(float f) {
    uint32_t u = f32_bits(f);
    uint32_t a = u & F32_ABS;
    if (a > F32_INF) return 0x0; /* E2M1 has no NaN; zero is the value that poisons a GEMM least */
    uint8_t sign = (uint8_t)((u >> 28) & 0x8u);
    uint32_t code = round_to_binary(a, 1, 1);
    if (code > 0x7u) code = 0x7u;
    return (uint8_t)(sign | code);
}

/* ---- E8M0 ---- */

float qd_e8m0_to_f32(uint8_t e) {
    if (e == 0xFF) return bits_f32(F32_QNAN);
    if (e == 0) return bits_f32(0x00400000u); /* 2^-127 is an fp32 subnormal */
    return bits_f32((uint32_t)e << 23);
}

uint8_t qd_f32_to_e8m0(float f) {
    /* PyTorch's fp8e8m0fnu_from_fp32_value, bit for bit, except that finite overflow saturates.
     * The result is the fp32 exponent field; the fraction decides whether it goes up by one. For
     * normal inputs the implicit leading 1 counts as an odd LSB, so a fraction of exactly one half
     * (mantissa 1.5) rounds up, like anything above it. For fp32 subnormals the implicit bit is 0,
     * so only a fraction strictly above one half (value > 2^-127) goes up to 0x01. */
    uint32_t u = f32_bits(f);
    uint32_t exp = (u >> 23) & 0xFFu;
    if (exp == 0xFF) return 0xFF;
    uint32_t frac = u & 0x7FFFFFu;
    exp += (uint32_t)((frac > 0x400000u) | ((frac == 0x400000u) & (exp > 0))); /* branch-free for rows */
    exp -= (uint32_t)(exp > 0xFE); /* saturate: PyTorch would give 0xFF (NaN) for |f| >= 1.5 * 2^127 */
    return (uint8_t)exp;
}

/* ---- int8 ---- */

int8_t qd_f32_to_i8(float f) {
    if (f != f) return 0;
    float c = f < -128.0f ? -128.0f : (f > 127.0f ? 127.0f : f);
    /* Round explicitly rather than through rintf or a magic-constant add, so the result does not
     * depend on the FPU rounding mode or on excess precision; c - q is exact for |c| <= 128. */
    int q = (int)c; /* toward zero */
    float d = c - (float)q;
    /* Non-short-circuit operators keep this branch-free: random data would mispredict every tie test. */
    int odd = q & 1;
    q += ((d > 0.5f) | ((d == 0.5f) & odd)) - ((d < -0.5f) | ((d == -0.5f) & odd));
    return (int8_t)q;
}

/* ---- 4-bit packing ---- */

void qd_pack_int4(const int8_t *v, size_t n, uint8_t *out) {
    size_t pairs = n / 2;
    for (size_t j = 0; j < pairs; j++)
        out[j] = (uint8_t)(((uint8_t)v[2 * j] & 0xFu) | (((uint8_t)v[2 * j + 1] & 0xFu) << 4));
    if (n & 1) out[pairs] = (uint8_t)((uint8_t)v[n - 1] & 0xFu);
}

static inline int8_t sign_extend_nibble(uint32_t nib) { return (int8_t)((int)(nib ^ 0x8u) - 8); }

void qd_unpack_int4(const uint8_t *in, size_t n, int8_t *v) {
    size_t pairs = n / 2;
    for (size_t j = 0; j < pairs; j++) {
        v[2 * j] = sign_extend_nibble(in[j] & 0xFu);
        v[2 * j + 1] = sign_extend_nibble((uint32_t)in[j] >> 4);
    }
    if (n & 1) v[n - 1] = sign_extend_nibble(in[pairs] & 0xFu);
}

void qd_pack_uint4(const uint8_t *v, size_t n, uint8_t *out) {
    size_t pairs = n / 2;
    for (size_t j = 0; j < pairs; j++) out[j] = (uint8_t)((v[2 * j] & 0xFu) | ((v[2 * j + 1] & 0xFu) << 4));
    if (n & 1) out[pairs] = (uint8_t)(v[n - 1] & 0xFu);
}

void qd_unpack_uint4(const uint8_t *in, size_t n, uint8_t *v) {
    size_t pairs = n / 2;
    for (size_t j = 0; j < pairs; j++) {
        v[2 * j] = (uint8_t)(in[j] & 0xFu);
        v[2 * j + 1] = (uint8_t)(in[j] >> 4);
    }
    if (n & 1) v[n - 1] = (uint8_t)(in[pairs] & 0xFu);
}

void qd_swap_nibbles(uint8_t *bytes, size_t n) {
    for (size_t i = 0; i < n; i++) bytes[i] = (uint8_t)((bytes[i] >> 4) | (bytes[i] << 4));
}

/* ---- bulk rows ---- */

/* Below this many elements a 256-entry table costs more to build than it saves. */
#define TABLE_MIN_ROW 512

static void decode_row_u8_table(float (*decode)(uint8_t), const uint8_t *src, float *dst, size_t n) {
    if (n < TABLE_MIN_ROW) {
        for (size_t i = 0; i < n; i++) dst[i] = decode(src[i]);
        return;
    }
    /* Built per call on the stack: no shared state, so nothing to synchronise between threads. */
    float table[256];
    for (int b = 0; b < 256; b++) table[b] = decode((uint8_t)b);
    for (size_t i = 0; i < n; i++) dst[i] = table[src[i]];
}

/* One loop per stored integer (and f64) type; memcpy keeps unaligned loads defined. */
#define DECODE_CAST_ROW(ctype)                                                                     \
    do {                                                                                           \
        const unsigned char *p = src;                                                              \
        for (size_t i = 0; i < n; i++) {                                                           \
            ctype x;                                                                               \
            memcpy(&x, p + i * sizeof x, sizeof x);                                                \
            dst[i] = (float)x;                                                                     \
        }                                                                                          \
    } while (0)

int qd_decode_row(qd_dtype t, const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    switch (t) {
    case QD_DTYPE_BOOL:
        for (size_t i = 0; i < n; i++) dst[i] = b[i] ? 1.0f : 0.0f;
        return 0;
    case QD_DTYPE_U8: DECODE_CAST_ROW(uint8_t); return 0;
    case QD_DTYPE_I8: DECODE_CAST_ROW(int8_t); return 0;
    case QD_DTYPE_U16: DECODE_CAST_ROW(uint16_t); return 0;
    case QD_DTYPE_I16: DECODE_CAST_ROW(int16_t); return 0;
    case QD_DTYPE_U32: DECODE_CAST_ROW(uint32_t); return 0;
    case QD_DTYPE_I32: DECODE_CAST_ROW(int32_t); return 0;
    case QD_DTYPE_U64: DECODE_CAST_ROW(uint64_t); return 0;
    case QD_DTYPE_I64: DECODE_CAST_ROW(int64_t); return 0;
    case QD_DTYPE_F64: DECODE_CAST_ROW(double); return 0;
    case QD_DTYPE_F32:
        if (n) memmove(dst, src, n * sizeof(float));
        return 0;
    case QD_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, b + 2 * i, sizeof h);
            uint32_t u = (uint32_t)h << 16;
            memcpy(&dst[i], &u, sizeof u);
        }
        return 0;
    case QD_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, b + 2 * i, sizeof h);
            dst[i] = qd_f16_to_f32(h);
        }
        return 0;
    case QD_DTYPE_F8_E4M3: decode_row_u8_table(qd_e4m3_to_f32, b, dst, n); return 0;
    case QD_DTYPE_F8_E5M2: decode_row_u8_table(qd_e5m2_to_f32, b, dst, n); return 0;
    case QD_DTYPE_F8_E8M0: decode_row_u8_table(qd_e8m0_to_f32, b, dst, n); return 0;
    case QD_DTYPE_F4: {
        if (n & 1) return -1;
        float table[16];
        for (int c = 0; c < 16; c++) table[c] = qd_e2m1_to_f32((uint8_t)c);
        for (size_t j = 0; j < n / 2; j++) {
            dst[2 * j] = table[b[j] & 0xFu];
            dst[2 * j + 1] = table[b[j] >> 4];
        }
        return 0;
    }
    default: return -1;
    }
}

int qd_encode_row(qd_dtype t, const float *src, void *dst, size_t n) {
    uint8_t *b = dst;
    switch (t) {
    case QD_DTYPE_F32:
        if (n) memmove(dst, src, n * sizeof(float));
        return 0;
    case QD_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = qd_f32_to_bf16(src[i]);
            memcpy(b + 2 * i, &h, sizeof h);
        }
        return 0;
    case QD_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = qd_f32_to_f16(src[i]);
            memcpy(b + 2 * i, &h, sizeof h);
        }
        return 0;
    case QD_DTYPE_F8_E4M3:
        for (size_t i = 0; i < n; i++) b[i] = qd_f32_to_e4m3(src[i]);
        return 0;
    case QD_DTYPE_F8_E5M2:
        for (size_t i = 0; i < n; i++) b[i] = qd_f32_to_e5m2(src[i]);
        return 0;
    case QD_DTYPE_F8_E8M0:
        for (size_t i = 0; i < n; i++) b[i] = qd_f32_to_e8m0(src[i]);
        return 0;
    case QD_DTYPE_F4:
        if (n & 1) return -1;
        for (size_t j = 0; j < n / 2; j++)
            b[j] = (uint8_t)(qd_f32_to_e2m1(src[2 * j]) | (qd_f32_to_e2m1(src[2 * j + 1]) << 4));
        return 0;
    case QD_DTYPE_I8:
        for (size_t i = 0; i < n; i++) b[i] = (uint8_t)qd_f32_to_i8(src[i]);
        return 0;
    default: return -1;
    }
}
