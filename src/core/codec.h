/* Numeric codecs: bf16, f16, FP8 E4M3FN / E5M2, FP4 E2M1, E8M0, int4/uint4 packing and int8.
 * Bit layouts and rounding rules follow ../shared/spec/formats.md §1, §2, §4.1 and §6.1.
 *
 * Encoders round to nearest, ties to even (RNE; E8M0 has its own tie rule, below). The 8- and 4-bit
 * float encoders saturate finite overflow (and ±inf) to the largest finite value of the format, as
 * every producer in the spec does (formats.md §1.2 "Recommendation for the C engine"); bf16/f16
 * follow IEEE (overflow → ±inf).
 * Decoders are exact: every code maps to the f32 it denotes. */
#ifndef QD_CORE_CODEC_H
#define QD_CORE_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/dtype.h"

/* ---- scalar ---- */

float qd_bf16_to_f32(uint16_t h);
/* RNE; NaN → quiet NaN of the same sign (top payload bits kept, quiet bit set); overflow → ±inf. Inline: the
   random-weight draw and the row converters call it once per value (out of line it was a third of a full-size
   draw's time). */
static inline uint16_t qd_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    /* Truncating a NaN could clear every payload bit and leave an infinity; force the quiet bit. */
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);
    /* The carry of the rounding add walks into the exponent, which also turns overflow into ±inf. */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float qd_f16_to_f32(uint16_t h);
uint16_t qd_f32_to_f16(float f);    /* RNE incl. subnormals; NaN → quiet NaN of the same sign;
                                       overflow → ±inf (65520, the tie above 65504, is inf) */

/* E4M3FN: bias 7, subnormal step 2^-9, max ±448, NaN = 0x7F/0xFF, no infinities. */
float qd_e4m3_to_f32(uint8_t b);
uint8_t qd_f32_to_e4m3(float f);    /* RNE; |f| beyond 448 (and ±inf) → ±448; NaN → 0x7F|sign */

/* E5M2: bias 15, subnormal step 2^-16, max ±57344, ±inf 0x7C/0xFC, NaN 0x7D..0x7F (and signed). */
float qd_e5m2_to_f32(uint8_t b);
uint8_t qd_f32_to_e5m2(float f);    /* RNE; finite overflow and ±inf → ±57344; NaN → 0x7F|sign */

/* E2M1: code bit 3 = sign, bits 0..2 index {0, .5, 1, 1.5, 2, 3, 4, 6}. Only the low nibble is read. */
float qd_e2m1_to_f32(uint8_t code);
uint8_t qd_f32_to_e2m1(float f);    /* RNE (ties to even mantissa); |f| > 6 → ±6; sign kept for
                                       values that round to zero (−0.1 → 0x8); NaN → 0x0 */

/* E8M0: value 2^(e-127) for e = 0..254 (0x00 is 2^-127, not zero); 0xFF is NaN. */
float qd_e8m0_to_f32(uint8_t e);
/* Nearest power of two, bit for bit as PyTorch's fp8e8m0fnu_from_fp32_value (formats.md §4.1) except
 * for overflow: the result is the fp32 exponent field of |f|, plus one when the significand is
 * ≥ 1.5 (a tie rounds up: the implicit leading 1 is an odd LSB). Sign ignored; NaN/±inf → 0xFF.
 * fp32 subnormals (|f| < 2^-126): ≤ 2^-127 (0 included) → 0x00, above 2^-127 → 0x01 (PyTorch's
 * rule; not the nearest power between 2^-127 and 1.5·2^-127).
 * |f| ≥ 1.5·2^127 → 0xFE (saturate; PyTorch gives 0xFF). */
uint8_t qd_f32_to_e8m0(float f);

/* int8: RNE and saturation to [-128, 127]; NaN → 0. */
int8_t qd_f32_to_i8(float f);

/* ---- 4-bit packing: two values per byte, element 2j in the low nibble (formats.md §2.3) ---- */

/* int4 two's complement, values −8..7 (inputs are masked to 4 bits). `n` may be odd: the last high
 * nibble is then 0. Output has (n+1)/2 bytes. */
void qd_pack_int4(const int8_t *v, size_t n, uint8_t *out);
void qd_unpack_int4(const uint8_t *in, size_t n, int8_t *v);     /* sign-extends each nibble */
void qd_pack_uint4(const uint8_t *v, size_t n, uint8_t *out);    /* values 0..15 */
void qd_unpack_uint4(const uint8_t *in, size_t n, uint8_t *v);
/* Swap the two nibbles of every byte (SGLang swap_weight_nibbles: 0xAB → 0xBA). */
void qd_swap_nibbles(uint8_t *bytes, size_t n);

/* ---- bulk row conversions ---- */

/* Decode `n` elements of `src` (stored as dtype `t`, little-endian, any alignment) to f32. For F4,
 * `n` elements occupy n/2 bytes (n must be even, low nibble first). Supported: BOOL (nonzero → 1),
 * U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64 (integers and F64 round to nearest f32),
 * F8_E4M3, F8_E5M2, F8_E8M0, F4. Returns 0 on success, -1 if `t` has no f32 decode or F4 has odd n. */
int qd_decode_row(qd_dtype t, const void *src, float *dst, size_t n);

/* Encode `n` f32 values to dtype `t` with the scalar encoders above (`dst` may be unaligned).
 * Supported: F32, F16, BF16, F8_E4M3, F8_E5M2, F8_E8M0, F4 (n even, low nibble first), I8.
 * Returns 0 on success, -1 if unsupported or F4 has odd n. */
int qd_encode_row(qd_dtype t, const float *src, void *dst, size_t n);

#endif
