/* Element types: every dtype of the safetensors format, with names, bit widths and byte sizes.
 * The numeric encoders/decoders for these live in core/codec.h. */
#ifndef QD_CORE_DTYPE_H
#define QD_CORE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    QD_DTYPE_BOOL,
    QD_DTYPE_U8,
    QD_DTYPE_I8,
    QD_DTYPE_U16,
    QD_DTYPE_I16,
    QD_DTYPE_U32,
    QD_DTYPE_I32,
    QD_DTYPE_U64,
    QD_DTYPE_I64,
    QD_DTYPE_F16,
    QD_DTYPE_BF16,
    QD_DTYPE_F32,
    QD_DTYPE_F64,
    QD_DTYPE_C64,         /* complex64: two f32 */
    QD_DTYPE_F8_E4M3,     /* E4M3FN: bias 7, max 448, NaN 0x7F/0xFF, no inf */
    QD_DTYPE_F8_E5M2,     /* IEEE-like: bias 15, max 57344, inf and NaN */
    QD_DTYPE_F8_E8M0,     /* MX scale: 2^(e-127), 0xFF NaN */
    QD_DTYPE_F8_E4M3FNUZ, /* AMD: bias 8, max 240, NaN 0x80 */
    QD_DTYPE_F8_E5M2FNUZ, /* AMD: bias 16, NaN 0x80 */
    QD_DTYPE_F6_E2M3,     /* 6-bit MX element, bit-packed */
    QD_DTYPE_F6_E3M2,     /* 6-bit MX element, bit-packed */
    QD_DTYPE_F4,          /* E2M1, two per byte, even element in the low nibble */
    QD_DTYPE_COUNT
} qd_dtype;

/* The safetensors spelling ("BF16", "F8_E4M3", …). */
const char *qd_dtype_name(qd_dtype t);

/* Parse a safetensors dtype string of length `len` (exact, case-sensitive). */
bool qd_dtype_parse(const char *name, size_t len, qd_dtype *out);

/* Bits per element: 4, 6, 8, 16, 32 or 64. */
int qd_dtype_bits(qd_dtype t);

/* Bytes that `elements` elements occupy. Fails (returns false) when the count does not fill a whole
 * number of bytes (sub-byte types) or the size overflows 64 bits. */
bool qd_dtype_storage_bytes(qd_dtype t, uint64_t elements, uint64_t *bytes);

#endif
