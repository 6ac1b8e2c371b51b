/* dtype table: the 22 safetensors dtypes (safetensors format, current Dtype list). */
#include "core/dtype.h"

#include <string.h>

static const struct {
    const char *name;
    int bits;
} dtype_table[QD_DTYPE_COUNT] = {
    [QD_DTYPE_BOOL] = {"BOOL", 8},
    [QD_DTYPE_U8] = {"U8", 8},
    [QD_DTYPE_I8] = {"I8", 8},
    [QD_DTYPE_U16] = {"U16", 16},
    [QD_DTYPE_I16] = {"I16", 16},
    [QD_DTYPE_U32] = {"U32", 32},
    [QD_DTYPE_I32] = {"I32", 32},
    [QD_DTYPE_U64] = {"U64", 64},
    [QD_DTYPE_I64] = {"I64", 64},
    [QD_DTYPE_F16] = {"F16", 16},
    [QD_DTYPE_BF16] = {"BF16", 16},
    [QD_DTYPE_F32] = {"F32", 32},
    [QD_DTYPE_F64] = {"F64", 64},
    [QD_DTYPE_C64] = {"C64", 64},
    [QD_DTYPE_F8_E4M3] = {"F8_E4M3", 8},
    [QD_DTYPE_F8_E5M2] = {"F8_E5M2", 8},
    [QD_DTYPE_F8_E8M0] = {"F8_E8M0", 8},
    [QD_DTYPE_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [QD_DTYPE_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [QD_DTYPE_F6_E2M3] = {"F6_E2M3", 6},
    [QD_DTYPE_F6_E3M2] = {"F6_E3M2", 6},
    [QD_DTYPE_F4] = {"F4", 4},
};

const char *qd_dtype_name(qd_dtype t) {
    return (unsigned)t < QD_DTYPE_COUNT ? dtype_table[t].name : "?";
}

bool qd_dtype_parse(const char *name, size_t len, qd_dtype *out) {
    for (int i = 0; i < QD_DTYPE_COUNT; i++) {
        if (strlen(dtype_table[i].name) == len && memcmp(dtype_table[i].name, name, len) == 0) {
            *out = (qd_dtype)i;
            return true;
        }
    }
    return false;
}

int qd_dtype_bits(qd_dtype t) { return (unsigned)t < QD_DTYPE_COUNT ? dtype_table[t].bits : 0; }

bool qd_dtype_storage_bytes(qd_dtype t, uint64_t elements, uint64_t *bytes) {
    uint64_t bits;
    int b = qd_dtype_bits(t);
    if (b == 0 || __builtin_mul_overflow(elements, (uint64_t)b, &bits)) return false;
    if (bits % 8 != 0) return false;
    *bytes = bits / 8;
    return true;
}
