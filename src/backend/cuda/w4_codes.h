/* Two 4-bit codes at once as an f16x2 word, for the W4A16 GEMV (linear_w4.cu); plain C so that the host unit test
 * (tests/unit/backend/test_w4_codes.c) checks these very functions for every code.
 *
 * A word holds 8 codes, code i in bits 4i..4i+3 (low nibble first). Codes j and j + 4 (j = 0..3) lie 16 bits
 * apart, so one shift and one mask put both into the same place of the two f16 halves (code j in the low half):
 *   E2M1  s e1 e0 m: e1 e0 m into f16 bits 9..11 (exponent 1..0 and the mantissa's top bit), s into bit 15. The
 *         half is the code's value · 2^−14 (e = 0: f16's subnormals, m·2^−1·2^−14; else (1 + m/2)·2^(e−1)·2^−14);
 *         the kernel multiplies it by 2^14 in f16, exact (the product is the code's value, an f16 number; f16
 *         arithmetic keeps subnormals: nvcc's -ftz applies to f32 only, and the build uses neither).
 *   INT4  (c ^ 8) | 0x6400 is 1024 + c + 8 for c = 0..7 and 1024 + c − 8 for c = 8..15: minus 1032 gives the
 *         two's-complement value, exactly.
 *   UINT4 c | 0x6400 is 1024 + c: minus 1024 gives c. */
#ifndef QD_BACKEND_CUDA_W4_CODES_H
#define QD_BACKEND_CUDA_W4_CODES_H

#include <stdint.h>

#ifdef __CUDACC__
#define QD_W4_HD static __host__ __device__ __forceinline__
#else
#define QD_W4_HD static inline
#endif

#define QD_W4_F16_2P14 0x7400u /* 2^14 */
#define QD_W4_F16_1024 0x6400u
#define QD_W4_F16_1032 0x6408u

QD_W4_HD uint32_t qd_w4_e2m1_pair(uint32_t w, int j) {
    const uint32_t mag = (j < 3 ? w << (9 - 4 * j) : w >> (4 * j - 9)) & 0x0E000E00u;
    return mag | ((w << (12 - 4 * j)) & 0x80008000u);
}

QD_W4_HD uint32_t qd_w4_int4_pair(uint32_t w, int j) { return ((w >> (4 * j)) & 0x000F000Fu) ^ 0x64086408u; }

QD_W4_HD uint32_t qd_w4_uint4_pair(uint32_t w, int j) { return ((w >> (4 * j)) & 0x000F000Fu) | 0x64006400u; }

#endif
