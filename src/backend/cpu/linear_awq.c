/* CPU linears for Nunchaku's AWQ W4A16 layers (formats.md §5.6; quant-sglang.md §4.9): weights stay
 * 4-bit (canonical U8 [N, K/2], lo-first, with BF16/F16 scales and pre-scaled zeros [N, K/64]); the
 * activations are not quantized. W[n, k] = q·scale[n, k/64] + zeros[n, k/64], q ∈ 0..15.
 *
 * The weight tiles are dequantized while the GEMM engine packs them (gemm_bf16.h) and multiplied on the
 * engine's microkernel:
 *   BF16 activations → the AVX512-BF16 kernel, W rounded once to bf16: bf16_rne(fma(q, s, z)) (q·s is
 *     exact in f32, so the f32 value is the correctly rounded q·s + z), the weight precision of a BF16
 *     model in SGLang;
 *   F32 activations (reference precision) → the f32 FMA kernel with W = fma(q, s, z) in f32, no bf16 step.
 *
 * Tolerance against the f32 reference (qd_linear_dequantize + f32 GEMM): BF16 activations NMSE ≤ 3e-5
 * (bf16 weights: relative rounding ≤ 2^−9 per element, ≈ 2^−18/3 ≈ 1.3e-6 of each product's energy, made
 * uneven by heavy-tailed activations; plus ≈ 1.3e-6 for the rounding of a BF16 output); F32 activations
 * NMSE ≤ 1e-9 with an F32 output (f32 summation order only; the reference rounds q·s + z from double, the
 * same f32 value up to double rounding), ≤ 1e-5 with a BF16 output. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/linear_kernels.h"
#include "core/codec.h"
#include "core/status.h"

typedef struct {
    const qd_linear *l;
    const void *x;
    qd_dtype x_dtype;
    int64_t k, groups;
    bool to_bf16; /* engine type: bf16 (BF16 activations) or f32 */
    bool fast;
} awq_ctx;

static float f16ish(const qd_view *v, int64_t i) {
    const uint16_t h = ((const uint16_t *)v->data)[i];
    return v->dtype == QD_DTYPE_BF16 ? qd_bf16_to_f32(h) : qd_f16_to_f32(h);
}

static void b_row_generic(const awq_ctx *c, int64_t n, int64_t k0, int64_t kc, void *dst) {
    const qd_linear *l = c->l;
    const uint8_t *w = (const uint8_t *)l->weight.data + n * (c->k / 2);
    for (int64_t k = k0; k < k0 + kc; k++) {
        const int q = (w[k / 2] >> (4 * (k & 1))) & 0x0F;
        const int64_t gi = n * c->groups + k / 64;
        const float v = fmaf((float)q, f16ish(&l->scale, gi), f16ish(&l->zeros, gi));
        if (c->to_bf16) ((uint16_t *)dst)[k - k0] = qd_f32_to_bf16(v);
        else ((float *)dst)[k - k0] = v;
    }
}

#if defined(__x86_64__)

/* 16 scale/zero values broadcast from one group's bf16/f16 */
static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 __m512 bcast16(const qd_view *v, int64_t i) {
    return _mm512_set1_ps(f16ish(v, i));
}

static inline __attribute__((always_inline)) QD_TARGET_AVX512BF16 __m512i bf16_rne_bits(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
}

/* one 64-element group at a time: 16 bytes → 16 even (low nibble) and 16 odd (high nibble) elements */
static QD_TARGET_AVX512BF16 void b_row_avx512(const awq_ctx *c, int64_t n, int64_t k0, int64_t kc, void *dst) {
    const qd_linear *l = c->l;
    const uint8_t *w = (const uint8_t *)l->weight.data + n * (c->k / 2);
    const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi_idx = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    for (int64_t k = k0; k < k0 + kc; k += 64) { /* k0, kc: multiples of 64 (K is) */
        const int64_t gi = n * c->groups + k / 64;
        const __m512 s = bcast16(&l->scale, gi), z = bcast16(&l->zeros, gi);
        for (int h = 0; h < 64; h += 32) {
            const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(w + (k + h) / 2)));
            const __m512 even = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(d, _mm512_set1_epi32(15))), s, z);
            const __m512 odd = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(d, 4)), s, z);
            if (c->to_bf16) {
                const __m512i pair = _mm512_or_si512(bf16_rne_bits(even), _mm512_slli_epi32(bf16_rne_bits(odd), 16));
                _mm512_storeu_si512((uint16_t *)dst + (k + h - k0), pair);
            } else {
                float *o = (float *)dst + (k + h - k0);
                _mm512_storeu_ps(o, _mm512_permutex2var_ps(even, lo_idx, odd));
                _mm512_storeu_ps(o + 16, _mm512_permutex2var_ps(even, hi_idx, odd));
            }
        }
    }
}

#endif

static void awq_b_row(const void *ctx, int64_t n, int64_t k0, int64_t kc, void *dst) {
    const awq_ctx *c = ctx;
#if defined(__x86_64__)
    if (c->fast && k0 % 64 == 0 && kc % 64 == 0) {
        b_row_avx512(c, n, k0, kc, dst);
        return;
    }
#endif
    b_row_generic(c, n, k0, kc, dst);
}

/* activations as they are (BF16 copied to the bf16 engine; F32 or BF16 widened for the f32 engine) */
static void awq_a_row(const void *ctx, int64_t m, void *dst) {
    const awq_ctx *c = ctx;
    if (c->to_bf16) {
        memcpy(dst, (const uint16_t *)c->x + m * c->k, (size_t)c->k * 2);
    } else if (c->x_dtype == QD_DTYPE_F32) {
        memcpy(dst, (const float *)c->x + m * c->k, (size_t)c->k * 4);
    } else {
        const uint16_t *src = (const uint16_t *)c->x + m * c->k;
        for (int64_t i = 0; i < c->k; i++) ((float *)dst)[i] = qd_bf16_to_f32(src[i]);
    }
}

qd_status qd_cpu_linear_awq(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    const int64_t m = x->shape[0], k = l->in_features, n = l->out_features;
    if (l->scheme != QD_SCHEME_AWQ_W4A16 || l->block_k != 64 || k % 64 || !l->weight.data || !l->scale.data ||
        !l->zeros.data || (l->scale.dtype != QD_DTYPE_BF16 && l->scale.dtype != QD_DTYPE_F16) || l->zeros.dtype != l->scale.dtype ||
        qd_view_elements(&l->weight) != n * k / 2 || qd_view_elements(&l->scale) != n * (k / 64) ||
        qd_view_elements(&l->zeros) != n * (k / 64)) {
        return qd_fail(QD_EINVAL, "layer '%s': not a bound AWQ W4A16 layer (U8 [%lld, %lld] weight, 16-bit [%lld, %lld] "
                                  "scales and zeros)",
                       name, (long long)n, (long long)(k / 2), (long long)n, (long long)(k / 64));
    }
    const bool bf16 = x->dtype == QD_DTYPE_BF16;
    awq_ctx c = {.l = l, .x = x->data, .x_dtype = x->dtype, .k = k, .groups = k / 64, .to_bf16 = bf16,
                 .fast = qd_gemm_fast(bf16 ? QD_GEMM_BF16 : QD_GEMM_F32) && qd_gemm_fast(QD_GEMM_BF16)};
    float *bias = NULL;
    if (l->bias.data) {
        if (!(bias = malloc(sizeof(float) * (size_t)n))) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", name);
        qd_linear_bias_f32(l, bias);
    }
    qd_gemm_args g = {.type = bf16 ? QD_GEMM_BF16 : QD_GEMM_F32, .m = m, .n = n, .k = k, .ctx = &c, .a_row = awq_a_row,
                      .b_row = awq_b_row, .alpha = 1.0f, .bias = bias, .y = y->data, .y_dtype = y->dtype, .ldy = n};
    qd_status s = qd_gemm_run(&g);
    free(bias);
    return s;
}
