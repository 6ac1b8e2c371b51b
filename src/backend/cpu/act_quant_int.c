/* On-the-fly activation quantizers of the CPU integer-path linears (act_quant_int.h): one pass over
 * x [M, K] that pre-processes each row (smoothing), quantizes it per block into small integer codes
 * with one f32 dequantization multiplier per (row, block), and writes the codes (+128, as u8) in the
 * tile-major order the VNNI microkernel streams. SVDQuant's low-rank down projection rides along in
 * the same pass, since it needs the raw rows just loaded.
 *
 * The rules, each from the spec:
 *   int8 static   formats.md §6.2     q = clamp(rne(x / input_scale + input_offset), −128, 127)
 *   int8 / int4   formats.md §6.3–6.4 s = rowamax/127 (/7), q = clamp(rne(x / s)); amax 0 → codes 0
 *   nvfp4         formats.md §3.5     SF = gs·(vecMax·(1/6)); SFf = e4m3_satfinite_RNE(SF);
 *                                     out = SFf ≠ 0 ? 1/(SFf·(1/gs)) : 0; q = e2m1_RNE_sat(x·out)
 *   mxfp4         formats.md §4.3     e = clamp(floor(log2 amax) − 2, −127, 127) (amax 0 → −127);
 *                                     q = e2m1_RNE_sat(x·2^−e) (OCP floor rule, saturating)
 *   svdq int4     formats.md §5.4.3   scale = amax·(1/7) (unsigned: (1/15)); kept = T(scale);
 *                                     q = sat(rne(xs · 1/scale)) with the UNROUNDED scale
 *   svdq nvfp4    formats.md §5.4.3   scale = min(amax/6, 448); kept = e4m3(scale); q from 1/scale
 * E2M1 codes are kept doubled (integers in [−12, 12]). Rounding is round-to-nearest-even everywhere
 * (nearbyintf / vrndscaleps under the default rounding mode); the AVX-512 path performs the same f32
 * operations in the same order as the generic one, so both give identical codes and scales.
 * NaN inputs are not supported (they give code 0 or a saturated code, never a trap). */
#include "backend/cpu/act_quant_int.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/codec.h"
#include "core/status.h"
#include "core/threads.h"

/* ------------------------------------------------------------------ scratch cache ------------ */

static _Atomic(void *) scratch_slot[QD_IQ_SCRATCH_SLOTS];

/* a block is [64-byte header holding its capacity][capacity bytes]; callers see the part after it */
static size_t scratch_cap(void *p) { return *(size_t *)((char *)p - 64); }

void *qd_iq_scratch_get(size_t bytes) {
    for (int i = 0; i < QD_IQ_SCRATCH_SLOTS; i++) {
        void *p = atomic_load(&scratch_slot[i]);
        if (p && scratch_cap(p) >= bytes && atomic_compare_exchange_strong(&scratch_slot[i], &p, NULL)) return p;
    }
    const size_t cap = (bytes < 4096 ? 4096 : bytes + 63) / 64 * 64;
    char *base = qd_cpu_alloc(cap + 64);
    if (!base) return NULL;
    *(size_t *)base = cap;
    return base + 64;
}

void qd_iq_scratch_put(void *p) {
    if (!p) return;
    for (int i = 0; i < QD_IQ_SCRATCH_SLOTS; i++) {
        void *empty = NULL;
        if (atomic_compare_exchange_strong(&scratch_slot[i], &empty, p)) return;
    }
    /* every slot is taken: keep the larger block of p and the smallest cached one */
    int smallest = -1;
    size_t cap = scratch_cap(p);
    for (int i = 0; i < QD_IQ_SCRATCH_SLOTS; i++) {
        void *q = atomic_load(&scratch_slot[i]);
        if (q && scratch_cap(q) < cap) cap = scratch_cap(q), smallest = i;
    }
    if (smallest >= 0) p = atomic_exchange(&scratch_slot[smallest], p);
    if (p) qd_cpu_free((char *)p - 64);
}

void qd_iq_scratch_trim(void) {
    for (int i = 0; i < QD_IQ_SCRATCH_SLOTS; i++) {
        void *p = atomic_exchange(&scratch_slot[i], NULL);
        if (p) qd_cpu_free((char *)p - 64);
    }
}

/* ------------------------------------------------------------------ dispatch ----------------- */

static bool forced_generic;

void qd_iq_force_generic(bool on) { forced_generic = on; }

bool qd_iq_use_vnni(void) {
#if defined(__x86_64__)
    if (forced_generic) return false;
    const qd_cpu_isa *isa = qd_cpu_isa_get();
    return isa->avx512f && isa->avx512bw && isa->avx512vl && isa->avx512dq && isa->avx512_vnni && isa->fma;
#else
    return false;
#endif
}

int qd_iq_act_block(qd_iq_act_kind kind) {
    switch (kind) {
    case QD_IQ_ACT_NVFP4:
    case QD_IQ_ACT_SVDQ_NVFP4: return 16;
    case QD_IQ_ACT_MXFP4: return 32;
    case QD_IQ_ACT_SVDQ_INT4: return 64;
    default: return 0;
    }
}

/* ------------------------------------------------------------------ scalar rules -------------- */

float qd_iq_e4m3_round(float v) {
    if (v != v) return v;
    if (!(v < 448.0f)) return 448.0f; /* satfinite */
    if (v < 0x1p-6f) return nearbyintf(v * 512.0f) * 0x1p-9f; /* subnormal grid of 2^-9 */
    uint32_t b;
    memcpy(&b, &v, 4);
    b = (b + 0x7FFFFu + ((b >> 20) & 1u)) & 0xFFF00000u; /* RNE to 3 mantissa bits */
    float r;
    memcpy(&r, &b, 4);
    return r;
}

int qd_iq_e2m1x2(float v) {
    float a = fabsf(v), r;
    if (a != a) return 0;
    /* the E2M1 grid has step 0.5 below 2, 1 below 4 and 2 above: rounding to the local step is RNE
       on the grid, ties going to the even code as in formats.md §2.2 */
    if (a < 2.0f) r = nearbyintf(a * 2.0f);
    else if (a < 4.0f) r = nearbyintf(a) * 2.0f;
    else r = nearbyintf(a * 0.5f) * 4.0f;
    if (r > 12.0f) r = 12.0f;
    int q = (int)r;
    return signbit(v) ? -q : q;
}

static int mx_exponent(float amax) {
    if (!(amax > 0)) return -127;
    int e;
    frexpf(amax, &e); /* amax = f·2^e, f in [0.5, 1): floor(log2 amax) = e − 1 */
    e = e - 1 - 2;    /* E2M1's emax is 2 */
    return e < -127 ? -127 : e > 127 ? 127 : e;
}

static float round_t(const qd_iq_act_spec *s, float v) {
    if (s->round_t_bf16) return qd_bf16_to_f32(qd_f32_to_bf16(v));
    if (s->round_t_f16) return qd_f16_to_f32(qd_f32_to_f16(v));
    return v;
}

static inline uint8_t clamp_code(float r, float lo, float hi) {
    if (r < lo) r = lo;
    if (r > hi) r = hi;
    return (uint8_t)((int)r + QD_IQ_CODE_OFFSET);
}

/* ------------------------------------------------------------------ generic row paths --------- */

/* Pre-processing of one row: x (f32, K values) → xp (kp values, zero-padded). */
static void preprocess_generic(const qd_iq_act_spec *s, const float *x, int64_t kp, float *xp) {
    const int64_t k = s->k;
    if (s->mul) {
        for (int64_t j = 0; j < k; j++) xp[j] = x[j] * s->mul[j];
    } else if (s->div) {
        for (int64_t j = 0; j < k; j++) xp[j] = s->div[j] != 0.0f ? round_t(s, (x[j] + s->shift) / s->div[j]) : 0.0f;
    } else if (xp != x) {
        memcpy(xp, x, sizeof *xp * (size_t)k);
    }
    for (int64_t j = k; j < kp; j++) xp[j] = 0.0f;
}

/* Codes (+128) of one pre-processed row; block scales into sc[kb]; returns the row scale. */
static float quant_row_generic(const qd_iq_act_spec *s, const float *x, int64_t kp, uint8_t *q, float *sc) {
    const int64_t k = s->k;
    switch (s->kind) {
    case QD_IQ_ACT_INT8_STATIC: {
        for (int64_t j = 0; j < k; j++) q[j] = clamp_code(nearbyintf(x[j] / s->input_scale + s->input_offset), -128, 127);
        for (int64_t j = k; j < kp; j++) q[j] = QD_IQ_CODE_OFFSET;
        sc[0] = 1.0f;
        return 1.0f;
    }
    case QD_IQ_ACT_INT8_TOKEN:
    case QD_IQ_ACT_INT4_TOKEN: {
        const bool i8 = s->kind == QD_IQ_ACT_INT8_TOKEN;
        float amax = 0;
        for (int64_t j = 0; j < k; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float sx = amax / (i8 ? 127.0f : 7.0f);
        for (int64_t j = 0; j < kp; j++)
            q[j] = sx > 0 && j < k ? clamp_code(nearbyintf(x[j] / sx), i8 ? -128 : -8, i8 ? 127 : 7) : QD_IQ_CODE_OFFSET;
        sc[0] = sx;
        return sx;
    }
    case QD_IQ_ACT_NVFP4: {
        const float inv_gs = s->inv_gs, gs = 1.0f / inv_gs;
        for (int64_t b = 0; b < kp / 16; b++) {
            const float *xb = x + b * 16;
            float vmax = 0;
            for (int i = 0; i < 16; i++) vmax = fmaxf(vmax, fabsf(xb[i]));
            const float sf = qd_iq_e4m3_round(gs * (vmax * (1.0f / 6.0f)));
            const float out = sf != 0.0f ? 1.0f / (sf * inv_gs) : 0.0f;
            for (int i = 0; i < 16; i++) q[b * 16 + i] = (uint8_t)(qd_iq_e2m1x2(xb[i] * out) + QD_IQ_CODE_OFFSET);
            sc[b] = sf;
        }
        return 1.0f;
    }
    case QD_IQ_ACT_MXFP4: {
        for (int64_t b = 0; b < kp / 32; b++) {
            const float *xb = x + b * 32;
            float amax = 0;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(xb[i]));
            const int e = mx_exponent(amax);
            for (int i = 0; i < 32; i++) q[b * 32 + i] = (uint8_t)(qd_iq_e2m1x2(ldexpf(xb[i], -e)) + QD_IQ_CODE_OFFSET);
            sc[b] = ldexpf(1.0f, e);
        }
        return 1.0f;
    }
    case QD_IQ_ACT_SVDQ_INT4: {
        const bool u = s->act_unsigned;
        for (int64_t b = 0; b < kp / 64; b++) {
            const float *xb = x + b * 64;
            float amax = 0;
            for (int i = 0; i < 64; i++) amax = fmaxf(amax, fabsf(xb[i]));
            const float scale = amax * (u ? 1.0f / 15.0f : 1.0f / 7.0f);
            const float rs = scale > 0 ? 1.0f / scale : 0.0f; /* nunchaku: rs = inf, 0·inf → code 0 */
            for (int i = 0; i < 64; i++) q[b * 64 + i] = clamp_code(nearbyintf(xb[i] * rs), u ? 0 : -8, u ? 15 : 7);
            sc[b] = round_t(s, scale);
        }
        return 1.0f;
    }
    case QD_IQ_ACT_SVDQ_NVFP4: {
        for (int64_t b = 0; b < kp / 16; b++) {
            const float *xb = x + b * 16;
            float amax = 0;
            for (int i = 0; i < 16; i++) amax = fmaxf(amax, fabsf(xb[i]));
            const float scale = fminf(amax / 6.0f, 448.0f);
            const float rs = scale > 0 ? 1.0f / scale : 0.0f;
            for (int i = 0; i < 16; i++) q[b * 16 + i] = (uint8_t)(qd_iq_e2m1x2(xb[i] * rs) + QD_IQ_CODE_OFFSET);
            sc[b] = qd_iq_e4m3_round(scale);
        }
        return 1.0f;
    }
    }
    return 1.0f;
}

/* lora_act[i][r] = Σ_k x_i[k]·down_t[k][r] for the rows of one tile (raw rows, before smoothing). */
static void lora_down_generic(const float *const *rows, int nrows, int64_t k, int rank, const float *down_t, float *out) {
    for (int i = 0; i < nrows; i++) {
        float *o = out + (int64_t)i * rank;
        for (int r = 0; r < rank; r++) o[r] = 0.0f;
        for (int64_t j = 0; j < k; j++) {
            const float xv = rows[i][j];
            const float *d = down_t + j * rank;
            for (int r = 0; r < rank; r++) o[r] += xv * d[r];
        }
    }
}

/* ------------------------------------------------------------------ AVX-512 row paths --------- */

#if defined(__x86_64__)

QD_IQ_TARGET static inline __m512 abs_v(__m512 v) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFFFFFF)));
}

QD_IQ_TARGET static inline __m512 rne_v(__m512 v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

/* 2·e2m1_RNE_sat(v) as int32 lanes: qd_iq_e2m1x2 lane by lane. */
QD_IQ_TARGET static inline __m512i e2m1x2_v(__m512 v) {
    const __m512 a = abs_v(v);
    const __mmask16 lt2 = _mm512_cmp_ps_mask(a, _mm512_set1_ps(2.0f), _CMP_LT_OQ);
    const __mmask16 lt4 = _mm512_cmp_ps_mask(a, _mm512_set1_ps(4.0f), _CMP_LT_OQ);
    const __mmask16 ord = _mm512_cmp_ps_mask(a, a, _CMP_ORD_Q);
    __m512 inv = _mm512_mask_blend_ps(lt4, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f));
    inv = _mm512_mask_blend_ps(lt2, inv, _mm512_set1_ps(2.0f));
    __m512 mul = _mm512_mask_blend_ps(lt4, _mm512_set1_ps(4.0f), _mm512_set1_ps(2.0f));
    mul = _mm512_mask_blend_ps(lt2, mul, _mm512_set1_ps(1.0f));
    __m512 r = _mm512_mul_ps(rne_v(_mm512_mul_ps(a, inv)), mul);
    r = _mm512_min_ps(r, _mm512_set1_ps(12.0f));
    __m512i qi = _mm512_maskz_cvttps_epi32(ord, r);
    const __mmask16 neg = _mm512_movepi32_mask(_mm512_castps_si512(v));
    return _mm512_mask_sub_epi32(qi, neg, _mm512_setzero_si512(), qi);
}

/* int32 lanes (small codes) + 128 → 16 bytes */
QD_IQ_TARGET static inline void store_codes16(uint8_t *q, __m512i c) {
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(_mm512_add_epi32(c, _mm512_set1_epi32(QD_IQ_CODE_OFFSET))));
}

QD_IQ_TARGET static inline float hmax_abs(const float *x, int n) {
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) m = _mm512_max_ps(m, abs_v(_mm512_loadu_ps(x + i)));
    return _mm512_reduce_max_ps(m);
}

QD_IQ_TARGET static inline __m512 round_t_v(const qd_iq_act_spec *s, __m512 v) {
    if (s->round_t_bf16) {
        __m512i b = _mm512_castps_si512(v);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
        b = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
        return _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32((int)0xFFFF0000u)));
    }
    if (s->round_t_f16) return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return v;
}

QD_IQ_TARGET static void preprocess_avx512(const qd_iq_act_spec *s, const float *x, int64_t kp, float *xp) {
    const int64_t k = s->k;
    int64_t j = 0;
    if (s->mul) {
        for (; j + 16 <= k; j += 16) _mm512_storeu_ps(xp + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), _mm512_loadu_ps(s->mul + j)));
        for (; j < k; j++) xp[j] = x[j] * s->mul[j];
    } else if (s->div) {
        const __m512 shift = _mm512_set1_ps(s->shift);
        for (; j + 16 <= k; j += 16) {
            const __m512 d = _mm512_loadu_ps(s->div + j);
            const __mmask16 nz = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ);
            __m512 v = round_t_v(s, _mm512_div_ps(_mm512_add_ps(_mm512_loadu_ps(x + j), shift), d));
            _mm512_storeu_ps(xp + j, _mm512_maskz_mov_ps(nz, v));
        }
        for (; j < k; j++) xp[j] = s->div[j] != 0.0f ? round_t(s, (x[j] + s->shift) / s->div[j]) : 0.0f;
    } else if (xp != x) {
        memcpy(xp, x, sizeof *xp * (size_t)k);
    }
    for (j = k; j < kp; j++) xp[j] = 0.0f;
}

QD_IQ_TARGET static float quant_row_avx512(const qd_iq_act_spec *s, const float *x, int64_t kp, uint8_t *q, float *sc) {
    const int64_t k = s->k;
    switch (s->kind) {
    case QD_IQ_ACT_INT8_STATIC:
    case QD_IQ_ACT_INT8_TOKEN:
    case QD_IQ_ACT_INT4_TOKEN: {
        float div = s->input_scale, add = s->input_offset, lo = -128, hi = 127;
        if (s->kind != QD_IQ_ACT_INT8_STATIC) {
            const bool i8 = s->kind == QD_IQ_ACT_INT8_TOKEN;
            float amax = 0;
            int64_t j = 0;
            if (k >= 16) {
                __m512 m = _mm512_setzero_ps();
                for (; j + 16 <= k; j += 16) m = _mm512_max_ps(m, abs_v(_mm512_loadu_ps(x + j)));
                amax = _mm512_reduce_max_ps(m);
            }
            for (; j < k; j++) amax = fmaxf(amax, fabsf(x[j]));
            div = amax / (i8 ? 127.0f : 7.0f);
            add = 0;
            lo = i8 ? -128 : -8, hi = i8 ? 127 : 7;
            sc[0] = div;
            if (!(div > 0)) {
                memset(q, QD_IQ_CODE_OFFSET, (size_t)kp);
                return div;
            }
        } else {
            sc[0] = 1.0f;
        }
        const __m512 vd = _mm512_set1_ps(div), va = _mm512_set1_ps(add), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
        int64_t j = 0;
        for (; j + 16 <= k; j += 16) {
            __m512 r = rne_v(_mm512_add_ps(_mm512_div_ps(_mm512_loadu_ps(x + j), vd), va));
            r = _mm512_min_ps(_mm512_max_ps(r, vlo), vhi);
            store_codes16(q + j, _mm512_cvttps_epi32(r));
        }
        for (; j < k; j++) q[j] = clamp_code(nearbyintf(x[j] / div + add), lo, hi);
        for (; j < kp; j++) q[j] = QD_IQ_CODE_OFFSET;
        return sc[0];
    }
    case QD_IQ_ACT_NVFP4:
    case QD_IQ_ACT_SVDQ_NVFP4: {
        const bool svdq = s->kind == QD_IQ_ACT_SVDQ_NVFP4;
        const float inv_gs = s->inv_gs, gs = svdq ? 0.0f : 1.0f / inv_gs;
        for (int64_t b = 0; b < kp / 16; b++) {
            const __m512 xv = _mm512_loadu_ps(x + b * 16);
            const float vmax = _mm512_reduce_max_ps(abs_v(xv));
            float sf, out;
            if (svdq) {
                const float scale = fminf(vmax / 6.0f, 448.0f);
                out = scale > 0 ? 1.0f / scale : 0.0f;
                sf = qd_iq_e4m3_round(scale);
            } else {
                sf = qd_iq_e4m3_round(gs * (vmax * (1.0f / 6.0f)));
                out = sf != 0.0f ? 1.0f / (sf * inv_gs) : 0.0f;
            }
            store_codes16(q + b * 16, e2m1x2_v(_mm512_mul_ps(xv, _mm512_set1_ps(out))));
            sc[b] = sf;
        }
        return 1.0f;
    }
    case QD_IQ_ACT_MXFP4: {
        for (int64_t b = 0; b < kp / 32; b++) {
            const float *xb = x + b * 32;
            const int e = mx_exponent(hmax_abs(xb, 32));
            const __m512 ne = _mm512_set1_ps((float)-e);
            store_codes16(q + b * 32, e2m1x2_v(_mm512_scalef_ps(_mm512_loadu_ps(xb), ne)));
            store_codes16(q + b * 32 + 16, e2m1x2_v(_mm512_scalef_ps(_mm512_loadu_ps(xb + 16), ne)));
            sc[b] = ldexpf(1.0f, e);
        }
        return 1.0f;
    }
    case QD_IQ_ACT_SVDQ_INT4: {
        const bool u = s->act_unsigned;
        const __m512 vlo = _mm512_set1_ps(u ? 0.0f : -8.0f), vhi = _mm512_set1_ps(u ? 15.0f : 7.0f);
        for (int64_t b = 0; b < kp / 64; b++) {
            const float *xb = x + b * 64;
            const float scale = hmax_abs(xb, 64) * (u ? 1.0f / 15.0f : 1.0f / 7.0f);
            const __m512 rs = _mm512_set1_ps(scale > 0 ? 1.0f / scale : 0.0f);
            for (int i = 0; i < 64; i += 16) {
                __m512 r = rne_v(_mm512_mul_ps(_mm512_loadu_ps(xb + i), rs));
                r = _mm512_min_ps(_mm512_max_ps(r, vlo), vhi);
                store_codes16(q + b * 64 + i, _mm512_cvttps_epi32(r));
            }
            sc[b] = round_t(s, scale);
        }
        return 1.0f;
    }
    }
    return 1.0f;
}

/* lora_act for the rows of one tile, 32 ranks at a time (2 zmm per row, MR rows: 12 accumulators). */
QD_IQ_TARGET static void lora_down_avx512(const float *const *rows, int nrows, int64_t k, int rank, const float *down_t,
                                          float *out) {
    for (int r0 = 0; r0 < rank; r0 += 32) {
        const int two = rank - r0 >= 32;
        __m512 acc[QD_IQ_MR][2];
        for (int i = 0; i < QD_IQ_MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        for (int64_t j = 0; j < k; j++) {
            const float *d = down_t + j * rank + r0;
            const __m512 d0 = _mm512_loadu_ps(d), d1 = two ? _mm512_loadu_ps(d + 16) : _mm512_setzero_ps();
#pragma GCC unroll 6
            for (int i = 0; i < QD_IQ_MR; i++) {
                if (i >= nrows) break;
                const __m512 xv = _mm512_set1_ps(rows[i][j]);
                acc[i][0] = _mm512_fmadd_ps(xv, d0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(xv, d1, acc[i][1]);
            }
        }
        for (int i = 0; i < nrows; i++) {
            _mm512_storeu_ps(out + (int64_t)i * rank + r0, acc[i][0]);
            if (two) _mm512_storeu_ps(out + (int64_t)i * rank + r0 + 16, acc[i][1]);
        }
    }
}

QD_IQ_TARGET static void bf16_row_avx512(const uint16_t *src, int64_t n, float *dst) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + j)));
        _mm512_storeu_ps(dst + j, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
    for (; j < n; j++) dst[j] = qd_bf16_to_f32(src[j]);
}

QD_IQ_TARGET static float amax_avx512(const float *x, int64_t n) {
    __m512 m = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) m = _mm512_max_ps(m, abs_v(_mm512_loadu_ps(x + j)));
    float a = _mm512_reduce_max_ps(m);
    for (; j < n; j++) a = fmaxf(a, fabsf(x[j]));
    return a;
}

#endif

/* ------------------------------------------------------------------ drivers ------------------- */

/* Row r of x as f32 into dst (K values). */
static void load_row(const qd_tensor *x, int64_t r, int64_t k, float *dst, bool vnni) {
    if (x->dtype == QD_DTYPE_F32) {
        memcpy(dst, (const float *)x->data + r * k, sizeof *dst * (size_t)k);
        return;
    }
#if defined(__x86_64__)
    if (vnni && x->dtype == QD_DTYPE_BF16) {
        bf16_row_avx512((const uint16_t *)x->data + r * k, k, dst);
        return;
    }
#endif
    (void)vnni;
    qd_cpu_to_f32(x, r * k, k, dst);
}

float qd_iq_tensor_amax(const qd_tensor *x, const float *mul) {
    const int64_t k = x->rank ? x->shape[x->rank - 1] : 1, m = k ? qd_tensor_elements(x) / k : 0;
    const bool vnni = qd_iq_use_vnni();
    float amax = 0;
#pragma omp parallel reduction(max : amax) num_threads(qd_threads_for(m * k, QD_GRAIN_ELEMS))
    {
        float *row = malloc(sizeof *row * (size_t)(k ? k : 1));
        if (row) {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < m; r++) {
                load_row(x, r, k, row, vnni);
                if (mul) {
                    for (int64_t j = 0; j < k; j++) row[j] *= mul[j];
                }
#if defined(__x86_64__)
                if (vnni) {
                    amax = fmaxf(amax, amax_avx512(row, k));
                    continue;
                }
#endif
                for (int64_t j = 0; j < k; j++) amax = fmaxf(amax, fabsf(row[j]));
            }
            free(row);
        }
    }
    return amax;
}

void qd_iq_act_free(qd_iq_act *a) {
    qd_iq_scratch_put(a->q);
    qd_iq_scratch_put(a->scale);
    qd_iq_scratch_put(a->row_scale);
    qd_iq_scratch_put(a->sums);
    qd_iq_scratch_put(a->lora_act);
    memset(a, 0, sizeof *a);
}

qd_status qd_iq_quantize(const qd_tensor *x, const qd_iq_act_spec *s, qd_iq_act *a) {
    memset(a, 0, sizeof *a);
    const int64_t k = s->k, m = qd_tensor_elements(x) / (k ? k : 1);
    const int blk = qd_iq_act_block(s->kind);
    if (blk && k % blk) return qd_fail(QD_EINVAL, "activation quantization: K = %lld is not a multiple of the block %d", (long long)k, blk);
    const int64_t kp = blk ? k : (k + 3) / 4 * 4;
    const int64_t mp = (m + QD_IQ_MR - 1) / QD_IQ_MR * QD_IQ_MR, tiles = mp / QD_IQ_MR;
    a->m = m, a->mp = mp, a->kp = kp;
    a->block = blk ? blk : (int)kp;
    a->kb = blk ? kp / blk : 1;
    a->rank = s->rank;
    const int sum_block = s->want_sums ? (s->sum_block ? s->sum_block : (int)kp) : 0;
    a->sum_groups = sum_block ? (kp + sum_block - 1) / sum_block : 0;
    a->q = qd_iq_scratch_get((size_t)(mp * kp));
    a->scale = qd_iq_scratch_get(sizeof(float) * (size_t)(mp * a->kb));
    a->row_scale = qd_iq_scratch_get(sizeof(float) * (size_t)mp);
    if (sum_block) a->sums = qd_iq_scratch_get(sizeof(int32_t) * (size_t)(mp * a->sum_groups));
    if (s->rank) a->lora_act = qd_iq_scratch_get(sizeof(float) * (size_t)(mp * s->rank));
    if (!a->q || !a->scale || !a->row_scale || (sum_block && !a->sums) || (s->rank && !a->lora_act)) {
        qd_iq_act_free(a);
        return qd_fail(QD_ENOMEM, "activation quantization: cannot allocate %lld×%lld codes", (long long)mp, (long long)kp);
    }
    const bool vnni = qd_iq_use_vnni();
    const bool pre = s->mul || s->div;
    bool nomem = false;
#pragma omp parallel num_threads(qd_threads_for(mp * kp, QD_GRAIN_ELEMS))
    {
        /* per thread: the MR raw rows of a tile (zero-padded to kp), one pre-processed row */
        float *raw = qd_iq_scratch_get(sizeof(float) * (size_t)(QD_IQ_MR * kp));
        float *xp = pre ? qd_iq_scratch_get(sizeof(float) * (size_t)kp) : NULL;
        float *sc = qd_iq_scratch_get(sizeof(float) * (size_t)a->kb);
        const bool ok = raw && sc && (xp || !pre);
        if (!ok) {
#pragma omp atomic write
            nomem = true;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tiles; t++) {
            if (!ok) continue;
            const int nrows = (int)(m - t * QD_IQ_MR < QD_IQ_MR ? m - t * QD_IQ_MR : QD_IQ_MR);
            const float *rows[QD_IQ_MR];
            for (int i = 0; i < nrows; i++) {
                load_row(x, t * QD_IQ_MR + i, k, raw + i * kp, vnni);
                for (int64_t j = k; j < kp; j++) raw[i * kp + j] = 0.0f;
                rows[i] = raw + i * kp;
            }
            if (s->rank) {
                float *la = a->lora_act + t * QD_IQ_MR * s->rank;
#if defined(__x86_64__)
                if (vnni) lora_down_avx512(rows, nrows, k, s->rank, s->down_t, la);
                else
#endif
                    lora_down_generic(rows, nrows, k, s->rank, s->down_t, la);
                for (int i = nrows; i < QD_IQ_MR; i++) memset(la + (int64_t)i * s->rank, 0, sizeof(float) * (size_t)s->rank);
            }
            for (int i = 0; i < QD_IQ_MR; i++) {
                const int64_t r = t * QD_IQ_MR + i;
                uint8_t *qrow = a->q + r * kp;
                float rsc;
                if (i < nrows) {
                    const float *src = rows[i];
#if defined(__x86_64__)
                    if (vnni) {
                        if (pre) preprocess_avx512(s, rows[i], kp, xp), src = xp;
                        rsc = quant_row_avx512(s, src, kp, qrow, sc);
                    } else
#endif
                    {
                        if (pre) preprocess_generic(s, rows[i], kp, xp), src = xp;
                        rsc = quant_row_generic(s, src, kp, qrow, sc);
                    }
                } else {
                    /* padding rows: zero codes, zero scales */
                    memset(qrow, QD_IQ_CODE_OFFSET, (size_t)kp);
                    for (int64_t b = 0; b < a->kb; b++) sc[b] = 0.0f;
                    rsc = 0.0f;
                }
                a->row_scale[r] = rsc;
                for (int64_t b = 0; b < a->kb; b++) a->scale[(t * a->kb + b) * QD_IQ_MR + i] = sc[b];
                if (sum_block) {
                    for (int64_t g = 0; g < a->sum_groups; g++) {
                        int32_t sum = 0;
                        const int64_t e = (g + 1) * sum_block < kp ? (g + 1) * sum_block : kp;
                        for (int64_t j = g * sum_block; j < e; j++) sum += (int32_t)qrow[j] - QD_IQ_CODE_OFFSET;
                        a->sums[r * a->sum_groups + g] = sum;
                    }
                }
            }
        }
        qd_iq_scratch_put(raw), qd_iq_scratch_put(xp), qd_iq_scratch_put(sc);
    }
    if (nomem) {
        qd_iq_act_free(a);
        return qd_fail(QD_ENOMEM, "activation quantization: cannot allocate per-thread rows of %lld", (long long)kp);
    }
    return QD_OK;
}
