/* qd_cpu_attention — scaled dot-product attention, flash-attention style (models.md §1.5: layout
 * [B, L, H, Dh], default scale 1/√Dh, SDPA semantics; GQA as PyTorch's enable_gqa: head h reads
 * kv head h / (H/Hkv)).
 *
 * Why this shape: a score matrix of Lq×Lk floats per head is 64 MiB at L = 4096 and does not fit any
 * cache, so keys are processed in blocks of NK with an online softmax (running max m, running sum l,
 * output accumulator O rescaled by exp(m_old − m_new)). Memory is O(L·D): K and V are packed once per
 * (batch, kv head) into the layout the micro-kernels stream, plus one small tile of scratch per thread.
 * Work is split over (batch, head, tile of MQ queries) with OpenMP, dynamically scheduled because a
 * causal mask makes later tiles longer.
 *
 * Three kernel sets share one driver:
 *  - BF16 (q, k, v all BF16, AVX512-BF16): both GEMMs with vdpbf16ps (pairs of bf16 products summed in
 *    f32). K is packed as [D/2][NK][2] (pairs along the head dim), V as [NK/2][Dv][2] (pairs along
 *    keys); the probabilities P are rounded to bf16 before P·V — exactly what PyTorch's CPU flash
 *    attention and GPU flash-attention do for bf16 inputs. Scores, max, sums and O stay f32.
 *  - F32 AVX-512 (any other dtype mix, or BF16 without AVX512-BF16): inputs converted to f32 when
 *    packed, f32 FMAs throughout, so f32 inputs get f32-exact results (~1e-6 relative).
 *  - generic C: the same blocking in plain loops, libm exp2f; always compiled, chosen by
 *    QDIT_CPU_ISA=generic and on CPUs without AVX-512.
 * Softmax runs in base 2: t = s·scale·log2(e) (+ bias·log2(e)), p = 2^(t − m), which costs nothing and
 * lets the AVX-512 exp be a polynomial plus vscalefps. Inputs are clamped at −200 before 2^x, so a
 * masked score (−inf) gives exactly 0 (2^−200 underflows to +0), never NaN.
 *
 * Masks: the key mask [B, Lk] may be BOOL, U8, I32, I64 (nonzero = attend) or F32 / BF16 holding only
 * 0 and 1 (1 = attend). A float mask with any other value is rejected: it is most likely an additive
 * mask (0 / −inf), whose meaning is the opposite. Rows that see no key at all (fully masked batch row,
 * or causal with Lq > Lk) produce zeros, as flash-attention kernels do (SDPA's math path gives NaN). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/ops_internal.h"
#include "core/threads.h"

#define NK 128 /* keys per block: one block's K and V (bf16, D = 128) are 32 KiB each, L2-resident */
#define MQ 96  /* queries per work tile: 16 groups of the 6-row micro-kernels */
#define RQ 6   /* rows per micro-kernel: 6×4 accumulators (QK) and 6×4 (PV) fill 24 of 32 zmm */
#define KW 64  /* keys per QK micro-kernel call (4 zmm of 16 lanes) */

#define LOG2E 1.4426950408889634

typedef enum { KIND_GENERIC, KIND_F32_AVX512, KIND_BF16_AVX512 } attn_kind;

typedef struct {
    int64_t B, Lq, Lk, H, Hkv, D, Dv;
    int64_t v_row; /* elements from one token's v to the next (Hkv·Dv packed, wider when read in place) */
    int64_t Dp;   /* D rounded up to even (bf16 pairs); D otherwise */
    int64_t Dvp;  /* Dv rounded up to 16 (a zmm of f32 lanes) */
    int64_t nblk; /* key blocks */
    float c;      /* scale·log2(e) */
    bool causal;
    int64_t causal_off; /* key j visible to query i when j ≤ i + causal_off */
    const float *bias;  /* [H, Lq, Lk] or NULL */
    const uint8_t *keyok; /* [B, Lk] 1 = attend, or NULL */
    const uint8_t *blk;   /* [B, nblk]: 0 all masked, 1 all attend, 2 mixed; NULL without mask */
    attn_kind kind;
    size_t elt;              /* bytes of a packed element: 2 (bf16) or 4 (f32) */
    size_t kblk_elems, vblk_elems; /* packed elements per key block */
    void *kp, *vp;           /* [B·Hkv][nblk][block] */
    const qd_tensor *q, *k, *v;
    qd_tensor *out;
} attn_plan;

/* ------------------------------------------------------------------------------------------------ */
/* packing: K, V per (b, kv head, key block); Q per work tile                                        */

/* K block → [Dp/2][NK][2] bf16 (pairs along d) or [D][NK] f32 (one key per lane). Keys past Lk and
 * the odd-D pad are zero; their scores are masked anyway. */
static void pack_k_block(const attn_plan *p, int64_t b, int64_t hk, int64_t blk, void *dst, float *row) {
    int64_t j0 = blk * NK;
    if (p->kind == KIND_BF16_AVX512) {
        uint16_t *kp = dst;
        memset(kp, 0, p->kblk_elems * 2);
        const uint16_t *src = p->k->data;
        for (int64_t jj = 0; jj < NK && j0 + jj < p->Lk; jj++) {
            const uint16_t *kr = src + ((b * p->Lk + j0 + jj) * p->Hkv + hk) * p->D;
            for (int64_t d = 0; d < p->D; d++) kp[(d >> 1) * NK * 2 + jj * 2 + (d & 1)] = kr[d];
        }
    } else {
        float *kp = dst;
        memset(kp, 0, p->kblk_elems * 4);
        for (int64_t jj = 0; jj < NK && j0 + jj < p->Lk; jj++) {
            const float *kr = qd_cpu_in_f32(p->k, ((b * p->Lk + j0 + jj) * p->Hkv + hk) * p->D, p->D, row);
            for (int64_t d = 0; d < p->D; d++) kp[d * NK + jj] = kr[d];
        }
    }
}

/* V block → [NK/2][Dvp][2] bf16 (pairs along keys) or [NK][Dvp] f32. */
static void pack_v_block(const attn_plan *p, int64_t b, int64_t hk, int64_t blk, void *dst) {
    int64_t j0 = blk * NK;
    if (p->kind == KIND_BF16_AVX512) {
        uint16_t *vp = dst;
        memset(vp, 0, p->vblk_elems * 2);
        const uint16_t *src = p->v->data;
        for (int64_t jj = 0; jj < NK && j0 + jj < p->Lk; jj++) {
            const uint16_t *vr = src + (b * p->Lk + j0 + jj) * p->v_row + hk * p->Dv;
            uint16_t *o = vp + (jj >> 1) * p->Dvp * 2 + (jj & 1);
            for (int64_t d = 0; d < p->Dv; d++) o[d * 2] = vr[d];
        }
    } else {
        float *vp = dst;
        memset(vp, 0, p->vblk_elems * 4);
        for (int64_t jj = 0; jj < NK && j0 + jj < p->Lk; jj++) {
            float *dr = vp + jj * p->Dvp;
            const float *vr = qd_cpu_in_f32(p->v, (b * p->Lk + j0 + jj) * p->v_row + hk * p->Dv, p->Dv, dr);
            if (vr != dr) memcpy(dr, vr, sizeof(float) * (size_t)p->Dv);
        }
    }
}

/* Q rows i0..i0+n of head h → [rows_pad][Dp] (bf16 copied, or f32); padding rows are zero. */
static void pack_q_tile(const attn_plan *p, int64_t b, int64_t h, int64_t i0, int64_t n, int64_t rows_pad, void *dst) {
    if (p->kind == KIND_BF16_AVX512) {
        uint16_t *qt = dst;
        memset(qt, 0, (size_t)(rows_pad * p->Dp) * 2);
        const uint16_t *src = p->q->data;
        for (int64_t r = 0; r < n; r++) {
            memcpy(qt + r * p->Dp, src + ((b * p->Lq + i0 + r) * p->H + h) * p->D, (size_t)p->D * 2);
        }
    } else {
        float *qt = dst;
        memset(qt + n * p->Dp, 0, (size_t)((rows_pad - n) * p->Dp) * 4);
        for (int64_t r = 0; r < n; r++) {
            float *dr = qt + r * p->Dp;
            const float *qr = qd_cpu_in_f32(p->q, ((b * p->Lq + i0 + r) * p->H + h) * p->D, p->D, dr);
            if (qr != dr) memcpy(dr, qr, sizeof(float) * (size_t)p->D);
        }
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* generic C kernels (f32 packed data)                                                               */

/* S[r][0..nk) = q_r · K[:, j] (raw dot products) */
static void qk_generic(const attn_plan *p, const void *qv, int64_t rows, const void *kv, int64_t nk, float *S) {
    const float *q = qv, *kp = kv;
    for (int64_t r = 0; r < rows; r++) {
        float *s = S + r * NK;
        for (int64_t j = 0; j < nk; j++) s[j] = 0.0f;
        for (int64_t d = 0; d < p->D; d++) {
            float qd = q[r * p->Dp + d];
            const float *kr = kp + d * NK;
            for (int64_t j = 0; j < nk; j++) s[j] += qd * kr[j];
        }
    }
}

/* Online-softmax update of one row block: t = s·c (scores already final when c = 1), m/l updated,
 * P = 2^(t − m), *alpha = 2^(m_old − m_new). Returns nothing; P is f32. */
static void softmax_generic(const attn_plan *p, float *S, int64_t rows, int64_t nk, float c, float *m, float *l,
                            float *alpha, void *Pv) {
    (void)p;
    float *P = Pv;
    for (int64_t r = 0; r < rows; r++) {
        const float *s = S + r * NK;
        float *pr = P + r * NK;
        float mx = -INFINITY;
        for (int64_t j = 0; j < nk; j++) {
            float t = s[j] * c;
            mx = t > mx ? t : mx;
        }
        float mnew = mx > m[r] ? mx : m[r];
        float muse = mnew == -INFINITY ? 0.0f : mnew;
        float sum = 0.0f;
        for (int64_t j = 0; j < nk; j++) {
            float t = s[j] * c - muse;
            float e = t < -200.0f ? 0.0f : exp2f(t);
            pr[j] = e;
            sum += e;
        }
        alpha[r] = exp2f(m[r] - muse);
        l[r] = l[r] * alpha[r] + sum;
        m[r] = mnew;
    }
}

/* O[r] = O[r]·alpha[r] + Σ_j P[r][j]·V[j] */
static void pv_generic(const attn_plan *p, const void *Pv, int64_t rows, const void *vv, int64_t nk, const float *alpha,
                       float *O) {
    const float *P = Pv, *vp = vv;
    for (int64_t r = 0; r < rows; r++) {
        float *o = O + r * p->Dvp;
        for (int64_t d = 0; d < p->Dv; d++) o[d] *= alpha[r];
        for (int64_t j = 0; j < nk; j++) {
            float pj = P[r * NK + j];
            if (pj == 0.0f) continue; /* masked keys: skip, and never touch padding lanes */
            const float *vr = vp + j * p->Dvp;
            for (int64_t d = 0; d < p->Dv; d++) o[d] += pj * vr[d];
        }
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* AVX-512 kernels                                                                                   */

#if defined(__x86_64__)

#define AI static inline __attribute__((always_inline))

/* 2^x for x ≤ 0: round to the nearest integer n, a degree-6 polynomial for 2^f on f ∈ [−½, ½]
 * (Taylor of e^(f·ln2); relative error < 2e-7), then vscalefps multiplies by 2^n — which also
 * flushes the clamped −200 to exactly 0. */
AI QD_TARGET_AVX512 __m512 exp2_avx512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-200.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 y = _mm512_set1_ps(1.5403530393381606e-4f);
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.3333558146428443e-3f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(9.6181291076284772e-3f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(5.5504108664821580e-2f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.4022650695910071e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(6.9314718055994531e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}

/* One row's online-softmax update with AVX-512 (nk a multiple of 32). When c > 0, max(s)·c is the max
 * of s·c, so the scale is folded into the exponent's FMA. P is written as f32 or as bf16 pairs. */
AI QD_TARGET_AVX512 void softmax_row_avx512(const float *s, int64_t nk, float c, float *m, float *l, float *alpha,
                                             float *pf) {
    __m512 mx0 = _mm512_set1_ps(-INFINITY), mx1 = mx0;
    for (int64_t j = 0; j < nk; j += 32) {
        mx0 = _mm512_max_ps(mx0, _mm512_loadu_ps(s + j));
        mx1 = _mm512_max_ps(mx1, _mm512_loadu_ps(s + j + 16));
    }
    float mx = _mm512_reduce_max_ps(_mm512_max_ps(mx0, mx1)) * c;
    float mnew = mx > *m ? mx : *m;
    float muse = mnew == -INFINITY ? 0.0f : mnew;
    __m512 vc = _mm512_set1_ps(c), vm = _mm512_set1_ps(muse);
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; j += 32) {
        __m512 p0 = exp2_avx512(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vc, vm));
        __m512 p1 = exp2_avx512(_mm512_fmsub_ps(_mm512_loadu_ps(s + j + 16), vc, vm));
        sum0 = _mm512_add_ps(sum0, p0);
        sum1 = _mm512_add_ps(sum1, p1);
        _mm512_storeu_ps(pf + j, p0);
        _mm512_storeu_ps(pf + j + 16, p1);
    }
    *alpha = exp2f(*m - muse);
    *l = *l * *alpha + _mm512_reduce_add_ps(_mm512_add_ps(sum0, sum1));
    *m = mnew;
}

static QD_TARGET_AVX512 void softmax_f32_avx512(const attn_plan *p, float *S, int64_t rows, int64_t nk, float c, float *m,
                                                float *l, float *alpha, void *Pv) {
    (void)p;
    float *P = Pv;
    for (int64_t r = 0; r < rows; r++) softmax_row_avx512(S + r * NK, nk, c, m + r, l + r, alpha + r, P + r * NK);
}

/* QK micro-kernel, f32: 6 query rows × 64 keys, accumulated over d, results written raw to S. */
AI QD_TARGET_AVX512 void qk_f32_6x64(const float *q, int64_t qs, const float *kp, int64_t D, float *S) {
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    __m512 a40 = a00, a41 = a00, a42 = a00, a43 = a00, a50 = a00, a51 = a00, a52 = a00, a53 = a00;
    for (int64_t d = 0; d < D; d++) {
        const float *kr = kp + d * NK;
        __m512 k0 = _mm512_loadu_ps(kr), k1 = _mm512_loadu_ps(kr + 16), k2 = _mm512_loadu_ps(kr + 32),
               k3 = _mm512_loadu_ps(kr + 48);
        __m512 b;
#define QK_ROW(r)                                                                                                      \
    b = _mm512_set1_ps(q[(r)*qs + d]);                                                                                 \
    a##r##0 = _mm512_fmadd_ps(b, k0, a##r##0);                                                                         \
    a##r##1 = _mm512_fmadd_ps(b, k1, a##r##1);                                                                         \
    a##r##2 = _mm512_fmadd_ps(b, k2, a##r##2);                                                                         \
    a##r##3 = _mm512_fmadd_ps(b, k3, a##r##3);
        QK_ROW(0) QK_ROW(1) QK_ROW(2) QK_ROW(3) QK_ROW(4) QK_ROW(5)
#undef QK_ROW
    }
#define ST_ROW(r)                                                                                                      \
    _mm512_storeu_ps(S + (r)*NK, a##r##0);                                                                             \
    _mm512_storeu_ps(S + (r)*NK + 16, a##r##1);                                                                        \
    _mm512_storeu_ps(S + (r)*NK + 32, a##r##2);                                                                        \
    _mm512_storeu_ps(S + (r)*NK + 48, a##r##3);
    ST_ROW(0) ST_ROW(1) ST_ROW(2) ST_ROW(3) ST_ROW(4) ST_ROW(5)
}

static QD_TARGET_AVX512 void qk_f32_avx512(const attn_plan *p, const void *qv, int64_t rows, const void *kv, int64_t nk,
                                           float *S) {
    const float *q = qv, *kp = kv;
    for (int64_t j = 0; j < nk; j += KW) {
        for (int64_t r = 0; r < rows; r += RQ) qk_f32_6x64(q + r * p->Dp, p->Dp, kp + j, p->D, S + r * NK + j);
    }
}

/* PV micro-kernel, f32: 6 rows × (16·NC) output lanes, O loaded, rescaled by alpha, accumulated over
 * the keys of the block, stored back. */
AI QD_TARGET_AVX512 void pv_f32_6xN(const float *P, const float *vp, int64_t Dvp, int64_t nk, const float *alpha,
                                    float *O, const int NC) {
    __m512 acc[RQ][4];
    #pragma GCC unroll 6
    for (int r = 0; r < RQ; r++) {
        __m512 al = _mm512_set1_ps(alpha[r]);
        #pragma GCC unroll 4
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_mul_ps(al, _mm512_loadu_ps(O + r * Dvp + c * 16));
    }
    for (int64_t j = 0; j < nk; j++) {
        __m512 v[4];
        #pragma GCC unroll 4
        for (int c = 0; c < NC; c++) v[c] = _mm512_loadu_ps(vp + j * Dvp + c * 16);
        #pragma GCC unroll 6
        for (int r = 0; r < RQ; r++) {
            __m512 b = _mm512_set1_ps(P[r * NK + j]);
            #pragma GCC unroll 4
            for (int c = 0; c < NC; c++) acc[r][c] = _mm512_fmadd_ps(b, v[c], acc[r][c]);
        }
    }
    #pragma GCC unroll 6
    for (int r = 0; r < RQ; r++) {
        #pragma GCC unroll 4
        for (int c = 0; c < NC; c++) _mm512_storeu_ps(O + r * Dvp + c * 16, acc[r][c]);
    }
}

static QD_TARGET_AVX512 void pv_f32_avx512(const attn_plan *p, const void *Pv, int64_t rows, const void *vv, int64_t nk,
                                           const float *alpha, float *O) {
    const float *P = Pv, *vp = vv;
    for (int64_t d = 0; d < p->Dvp; d += 64) {
        int64_t w = p->Dvp - d < 64 ? p->Dvp - d : 64;
        for (int64_t r = 0; r < rows; r += RQ) {
            const float *pr = P + r * NK;
            float *o = O + r * p->Dvp + d;
            switch (w) {
            case 64: pv_f32_6xN(pr, vp + d, p->Dvp, nk, alpha + r, o, 4); break;
            case 48: pv_f32_6xN(pr, vp + d, p->Dvp, nk, alpha + r, o, 3); break;
            case 32: pv_f32_6xN(pr, vp + d, p->Dvp, nk, alpha + r, o, 2); break;
            default: pv_f32_6xN(pr, vp + d, p->Dvp, nk, alpha + r, o, 1); break;
            }
        }
    }
}

/* ---- BF16 (vdpbf16ps) ---- */

AI QD_TARGET_AVX512BF16 __m512bh bcast_pair(const uint16_t *src) {
    int32_t w;
    memcpy(&w, src, 4);
    return (__m512bh)_mm512_set1_epi32(w);
}

AI QD_TARGET_AVX512BF16 __m512bh load_bh(const uint16_t *src) { return (__m512bh)_mm512_loadu_si512(src); }

/* QK micro-kernel, bf16: 6 query rows × 64 keys; each vdpbf16ps adds two d's worth of products. */
AI QD_TARGET_AVX512BF16 void qk_bf16_6x64(const uint16_t *q, int64_t qs, const uint16_t *kp, int64_t Dp, float *S) {
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    __m512 a40 = a00, a41 = a00, a42 = a00, a43 = a00, a50 = a00, a51 = a00, a52 = a00, a53 = a00;
    for (int64_t d = 0; d < Dp; d += 2) {
        const uint16_t *kr = kp + d * NK; /* pair row d/2: NK keys × 2 */
        __m512bh k0 = load_bh(kr), k1 = load_bh(kr + 32), k2 = load_bh(kr + 64), k3 = load_bh(kr + 96);
        __m512bh b;
#define QK_ROW(r)                                                                                                      \
    b = bcast_pair(q + (r)*qs + d);                                                                                    \
    a##r##0 = _mm512_dpbf16_ps(a##r##0, b, k0);                                                                        \
    a##r##1 = _mm512_dpbf16_ps(a##r##1, b, k1);                                                                        \
    a##r##2 = _mm512_dpbf16_ps(a##r##2, b, k2);                                                                        \
    a##r##3 = _mm512_dpbf16_ps(a##r##3, b, k3);
        QK_ROW(0) QK_ROW(1) QK_ROW(2) QK_ROW(3) QK_ROW(4) QK_ROW(5)
#undef QK_ROW
    }
    ST_ROW(0) ST_ROW(1) ST_ROW(2) ST_ROW(3) ST_ROW(4) ST_ROW(5)
#undef ST_ROW
}

static QD_TARGET_AVX512BF16 void qk_bf16_avx512(const attn_plan *p, const void *qv, int64_t rows, const void *kv, int64_t nk,
                                                float *S) {
    const uint16_t *q = qv, *kp = kv;
    for (int64_t j = 0; j < nk; j += KW) {
        for (int64_t r = 0; r < rows; r += RQ) qk_bf16_6x64(q + r * p->Dp, p->Dp, kp + j * 2, p->Dp, S + r * NK + j);
    }
}

AI QD_TARGET_AVX512BF16 void softmax_row_bf16(const float *s, int64_t nk, float c, float *m, float *l, float *alpha,
                                              uint16_t *pb) {
    __m512 mx0 = _mm512_set1_ps(-INFINITY), mx1 = mx0;
    for (int64_t j = 0; j < nk; j += 32) {
        mx0 = _mm512_max_ps(mx0, _mm512_loadu_ps(s + j));
        mx1 = _mm512_max_ps(mx1, _mm512_loadu_ps(s + j + 16));
    }
    float mx = _mm512_reduce_max_ps(_mm512_max_ps(mx0, mx1)) * c;
    float mnew = mx > *m ? mx : *m;
    float muse = mnew == -INFINITY ? 0.0f : mnew;
    __m512 vc = _mm512_set1_ps(c), vm = _mm512_set1_ps(muse);
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; j += 32) {
        __m512 p0 = exp2_avx512(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vc, vm));
        __m512 p1 = exp2_avx512(_mm512_fmsub_ps(_mm512_loadu_ps(s + j + 16), vc, vm));
        sum0 = _mm512_add_ps(sum0, p0);
        sum1 = _mm512_add_ps(sum1, p1);
        _mm512_storeu_si512(pb + j, (__m512i)_mm512_cvtne2ps_pbh(p1, p0));
    }
    *alpha = exp2f(*m - muse);
    *l = *l * *alpha + _mm512_reduce_add_ps(_mm512_add_ps(sum0, sum1));
    *m = mnew;
}

static QD_TARGET_AVX512BF16 void softmax_bf16_avx512(const attn_plan *p, float *S, int64_t rows, int64_t nk, float c,
                                                     float *m, float *l, float *alpha, void *Pv) {
    (void)p;
    uint16_t *P = Pv;
    for (int64_t r = 0; r < rows; r++) softmax_row_bf16(S + r * NK, nk, c, m + r, l + r, alpha + r, P + r * NK);
}

/* PV micro-kernel, bf16: 6 rows × (16·NC) lanes; each vdpbf16ps adds the products of two keys. */
AI QD_TARGET_AVX512BF16 void pv_bf16_6xN(const uint16_t *P, const uint16_t *vp, int64_t Dvp, int64_t nk,
                                         const float *alpha, float *O, const int NC) {
    __m512 acc[RQ][4];
    #pragma GCC unroll 6
    for (int r = 0; r < RQ; r++) {
        __m512 al = _mm512_set1_ps(alpha[r]);
        #pragma GCC unroll 4
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_mul_ps(al, _mm512_loadu_ps(O + r * Dvp + c * 16));
    }
    for (int64_t j = 0; j < nk; j += 2) {
        __m512bh v[4];
        const uint16_t *vr = vp + j * Dvp; /* pair row j/2: Dvp lanes × 2 keys */
        #pragma GCC unroll 4
        for (int c = 0; c < NC; c++) v[c] = load_bh(vr + c * 32);
        #pragma GCC unroll 6
        for (int r = 0; r < RQ; r++) {
            __m512bh b = bcast_pair(P + r * NK + j);
            #pragma GCC unroll 4
            for (int c = 0; c < NC; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], b, v[c]);
        }
    }
    #pragma GCC unroll 6
    for (int r = 0; r < RQ; r++) {
        #pragma GCC unroll 4
        for (int c = 0; c < NC; c++) _mm512_storeu_ps(O + r * Dvp + c * 16, acc[r][c]);
    }
}

static QD_TARGET_AVX512BF16 void pv_bf16_avx512(const attn_plan *p, const void *Pv, int64_t rows, const void *vv, int64_t nk,
                                                const float *alpha, float *O) {
    const uint16_t *P = Pv, *vp = vv;
    for (int64_t d = 0; d < p->Dvp; d += 64) {
        int64_t w = p->Dvp - d < 64 ? p->Dvp - d : 64;
        for (int64_t r = 0; r < rows; r += RQ) {
            const uint16_t *pr = P + r * NK;
            float *o = O + r * p->Dvp + d;
            switch (w) {
            case 64: pv_bf16_6xN(pr, vp + d * 2, p->Dvp, nk, alpha + r, o, 4); break;
            case 48: pv_bf16_6xN(pr, vp + d * 2, p->Dvp, nk, alpha + r, o, 3); break;
            case 32: pv_bf16_6xN(pr, vp + d * 2, p->Dvp, nk, alpha + r, o, 2); break;
            default: pv_bf16_6xN(pr, vp + d * 2, p->Dvp, nk, alpha + r, o, 1); break;
            }
        }
    }
}

#endif /* __x86_64__ */

/* ------------------------------------------------------------------------------------------------ */
/* driver                                                                                            */

typedef struct {
    void (*qk)(const attn_plan *, const void *q, int64_t rows, const void *kp, int64_t nk, float *S);
    void (*softmax)(const attn_plan *, float *S, int64_t rows, int64_t nk, float c, float *m, float *l, float *alpha,
                    void *P);
    void (*pv)(const attn_plan *, const void *P, int64_t rows, const void *vp, int64_t nk, const float *alpha, float *O);
} attn_kernels;

static attn_kernels kernels_for(attn_kind kind) {
    attn_kernels k = {qk_generic, softmax_generic, pv_generic};
#if defined(__x86_64__)
    if (kind == KIND_F32_AVX512) k = (attn_kernels){qk_f32_avx512, softmax_f32_avx512, pv_f32_avx512};
    if (kind == KIND_BF16_AVX512) k = (attn_kernels){qk_bf16_avx512, softmax_bf16_avx512, pv_bf16_avx512};
#else
    (void)kind;
#endif
    return k;
}

/* Scores of rows that need more than a scale — bias, causal limit, key mask, keys past Lk — are
 * finished here in f32 (t = s·c + bias·log2e, masked → −inf); the kernel softmax then runs with c = 1. */
static void finish_scores(const attn_plan *p, float *S, int64_t b, int64_t h, int64_t i0, int64_t rows, int64_t n_valid_rows,
                          int64_t j0, int64_t nk, bool use_keymask) {
    int64_t kend = p->Lk - j0 < nk ? p->Lk - j0 : nk; /* keys of this block that exist */
    const uint8_t *ok = use_keymask ? p->keyok + b * p->Lk + j0 : NULL;
    for (int64_t r = 0; r < rows; r++) {
        float *s = S + r * NK;
        int64_t i = i0 + r;
        for (int64_t j = 0; j < nk; j++) s[j] *= p->c;
        if (p->bias && r < n_valid_rows) {
            const float *bi = p->bias + (h * p->Lq + i) * p->Lk + j0;
            for (int64_t j = 0; j < kend; j++) s[j] += bi[j] * (float)LOG2E;
        }
        int64_t lim = kend;
        if (p->causal) {
            int64_t vis = i + p->causal_off - j0 + 1; /* keys j0..j0+vis-1 visible */
            if (vis < lim) lim = vis < 0 ? 0 : vis;
        }
        for (int64_t j = lim; j < nk; j++) s[j] = -INFINITY;
        if (ok) {
            for (int64_t j = 0; j < lim; j++) {
                if (!ok[j]) s[j] = -INFINITY;
            }
        }
    }
}

typedef struct {
    void *q;     /* [MQ][Dp] */
    float *S;    /* [MQ][NK] */
    void *P;     /* [MQ][NK] */
    float *O;    /* [MQ][Dvp] */
    float *m, *l, *alpha; /* [MQ] */
} attn_scratch;

static void attn_tile(const attn_plan *p, const attn_kernels *kr, attn_scratch *w, int64_t b, int64_t h, int64_t i0) {
    int64_t n = p->Lq - i0 < MQ ? p->Lq - i0 : MQ;
    int64_t rows = qd_cpu_round_up(n, RQ);
    int64_t hk = h / (p->H / p->Hkv);
    pack_q_tile(p, b, h, i0, n, rows, w->q);
    memset(w->O, 0, (size_t)(rows * p->Dvp) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) w->m[r] = -INFINITY, w->l[r] = 0.0f;

    const char *kbase = (const char *)p->kp + (size_t)((b * p->Hkv + hk) * p->nblk) * p->kblk_elems * p->elt;
    const char *vbase = (const char *)p->vp + (size_t)((b * p->Hkv + hk) * p->nblk) * p->vblk_elems * p->elt;
    int64_t last_row = i0 + n - 1;
    for (int64_t blk = 0; blk < p->nblk; blk++) {
        int64_t j0 = blk * NK;
        if (p->causal && j0 > last_row + p->causal_off) break; /* no later block is visible to this tile */
        uint8_t state = p->blk ? p->blk[b * p->nblk + blk] : 1;
        if (state == 0) continue;
        int64_t kvalid = p->Lk - j0 < NK ? p->Lk - j0 : NK;
        int64_t nk = qd_cpu_round_up(kvalid, KW);
        bool partial_causal = p->causal && j0 + kvalid - 1 > i0 + p->causal_off;
        bool finish = p->bias || partial_causal || state == 2 || kvalid < nk || p->c <= 0.0f;
        kr->qk(p, w->q, rows, kbase + (size_t)blk * p->kblk_elems * p->elt, nk, w->S);
        float c = p->c;
        if (finish) {
            finish_scores(p, w->S, b, h, i0, rows, n, j0, nk, state == 2);
            c = 1.0f;
        }
        kr->softmax(p, w->S, rows, nk, c, w->m, w->l, w->alpha, w->P);
        kr->pv(p, w->P, rows, vbase + (size_t)blk * p->vblk_elems * p->elt, nk, w->alpha, w->O);
    }
    /* normalise and write rows; l = 0 means no visible key: output zeros */
    for (int64_t r = 0; r < n; r++) {
        float *o = w->O + r * p->Dvp;
        float inv = w->l[r] > 0.0f ? 1.0f / w->l[r] : 0.0f;
        for (int64_t d = 0; d < p->Dv; d++) o[d] *= inv;
        qd_cpu_out_commit(p->out, ((b * p->Lq + i0 + r) * p->H + h) * p->Dv, p->Dv, o);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* validation and entry                                                                              */

static qd_status check_rank4(const char *what, const qd_tensor *t) {
    qd_status s = qd_cpu_check_float("attention", what, t);
    if (s) return s;
    if (t->rank != 4) {
        char sh[128];
        return qd_fail(QD_EINVAL, "cpu attention: %s must be [B, L, H, D], got %s", what, qd_cpu_shape_str(t, sh, sizeof sh));
    }
    return QD_OK;
}

/* Reads the key mask into 0/1 bytes [B, Lk] and per-block states. */
static qd_status build_mask(const qd_tensor *mask, int64_t B, int64_t Lk, int64_t nblk, uint8_t *ok, uint8_t *blk) {
    int64_t n = B * Lk;
    for (int64_t i = 0; i < n; i++) {
        double v;
        switch (mask->dtype) {
        case QD_DTYPE_BOOL:
        case QD_DTYPE_U8: v = ((const uint8_t *)mask->data)[i]; break;
        case QD_DTYPE_I32: v = ((const int32_t *)mask->data)[i]; break;
        case QD_DTYPE_I64: v = (double)(((const int64_t *)mask->data)[i] != 0); break;
        default: {
            v = qd_cpu_load(mask, i);
            if (v != 0.0 && v != 1.0) {
                return qd_fail(QD_EINVAL,
                               "cpu attention: a %s key mask must hold only 0 and 1 (1 = attend); element %lld is %g — "
                               "an additive mask (0 / -inf) must be converted to a boolean one",
                               qd_dtype_name(mask->dtype), (long long)i, v);
            }
        }
        }
        ok[i] = v != 0.0;
    }
    for (int64_t b = 0; b < B; b++) {
        for (int64_t k = 0; k < nblk; k++) {
            int64_t j0 = k * NK, j1 = j0 + NK < Lk ? j0 + NK : Lk, cnt = 0;
            for (int64_t j = j0; j < j1; j++) cnt += ok[b * Lk + j];
            blk[b * nblk + k] = cnt == 0 ? 0 : cnt == j1 - j0 ? 1 : 2;
        }
    }
    return QD_OK;
}

qd_status qd_cpu_attention(qd_backend *be, const qd_attn_args *a, qd_tensor *out) {
    (void)be;
    if (!a) return qd_fail(QD_EINVAL, "cpu attention: args are NULL");
    qd_status s;
    if ((s = check_rank4("q", a->q)) || (s = check_rank4("k", a->k)) || (s = check_rank4("v", a->v)) ||
        (s = check_rank4("out", out))) {
        return s;
    }
    const qd_tensor *q = a->q, *k = a->k, *v = a->v;
    char s1[128], s2[128], s3[128];
    int64_t B = q->shape[0], Lq = q->shape[1], H = q->shape[2], D = q->shape[3];
    int64_t Lk = k->shape[1], Hkv = k->shape[2], Dv = v->shape[3];
    if (k->shape[0] != B || v->shape[0] != B || v->shape[1] != Lk || v->shape[2] != Hkv || k->shape[3] != D) {
        return qd_fail(QD_EINVAL,
                       "cpu attention: q %s, k %s, v %s do not match (expected k [B, Lk, Hkv, D], v [B, Lk, Hkv, Dv] with q's "
                       "B and D)",
                       qd_cpu_shape_str(q, s1, sizeof s1), qd_cpu_shape_str(k, s2, sizeof s2),
                       qd_cpu_shape_str(v, s3, sizeof s3));
    }
    if (H < 1 || Hkv < 1 || H % Hkv != 0 || D < 1 || Dv < 1) {
        return qd_fail(QD_EINVAL, "cpu attention: heads H = %lld must be a multiple of kv heads Hkv = %lld, D = %lld and Dv = %lld ≥ 1",
                       (long long)H, (long long)Hkv, (long long)D, (long long)Dv);
    }
    if (out->shape[0] != B || out->shape[1] != Lq || out->shape[2] != H || out->shape[3] != Dv) {
        return qd_fail(QD_EINVAL, "cpu attention: out must be [%lld, %lld, %lld, %lld], got %s", (long long)B, (long long)Lq,
                       (long long)H, (long long)Dv, qd_cpu_shape_str(out, s1, sizeof s1));
    }
    if (out->data == q->data || out->data == k->data || out->data == v->data) {
        return qd_fail(QD_EINVAL, "cpu attention: out must not alias q, k or v");
    }
    if (a->mask) {
        const qd_tensor *mk = a->mask;
        qd_dtype t = mk->dtype;
        if (t != QD_DTYPE_BOOL && t != QD_DTYPE_U8 && t != QD_DTYPE_I32 && t != QD_DTYPE_I64 && t != QD_DTYPE_F32 &&
            t != QD_DTYPE_BF16) {
            return qd_fail(QD_EUNSUPPORTED, "cpu attention: mask must be BOOL, U8, I32, I64, F32 or BF16, got %s", qd_dtype_name(t));
        }
        if (mk->rank != 2 || mk->shape[0] != B || mk->shape[1] != Lk || (!mk->data && B * Lk > 0)) {
            return qd_fail(QD_EINVAL, "cpu attention: mask must be [B, Lk] = [%lld, %lld], got %s", (long long)B, (long long)Lk,
                           qd_cpu_shape_str(mk, s1, sizeof s1));
        }
    }
    if (a->bias) {
        const qd_tensor *bs = a->bias;
        if (bs->dtype != QD_DTYPE_F32) {
            return qd_fail(QD_EUNSUPPORTED, "cpu attention: bias must be F32, got %s", qd_dtype_name(bs->dtype));
        }
        if (bs->rank != 3 || bs->shape[0] != H || bs->shape[1] != Lq || bs->shape[2] != Lk || (!bs->data && H * Lq * Lk > 0)) {
            return qd_fail(QD_EINVAL, "cpu attention: bias must be [H, Lq, Lk] = [%lld, %lld, %lld], got %s", (long long)H,
                           (long long)Lq, (long long)Lk, qd_cpu_shape_str(bs, s1, sizeof s1));
        }
    }
    if (a->v_row && a->v_row < Hkv * Dv) {
        return qd_fail(QD_EINVAL, "cpu attention: v's row of %lld elements is narrower than its %lld × %lld values", (long long)a->v_row,
                       (long long)Hkv, (long long)Dv);
    }
    float scale = a->scale != 0.0f ? a->scale : (float)(1.0 / sqrt((double)D));
    if (!isfinite(scale)) return qd_fail(QD_EINVAL, "cpu attention: scale %g is not finite", (double)a->scale);
    if (B == 0 || Lq == 0) return QD_OK;

    attn_plan p = {0};
    p.B = B, p.Lq = Lq, p.Lk = Lk, p.H = H, p.Hkv = Hkv, p.D = D, p.Dv = Dv;
    p.v_row = a->v_row ? a->v_row : Hkv * Dv;
    p.q = q, p.k = k, p.v = v, p.out = out;
    p.c = (float)((double)scale * LOG2E);
    p.causal = a->causal;
    p.causal_off = Lk - Lq;
    p.bias = a->bias ? a->bias->data : NULL;
    bool bf16_in = q->dtype == QD_DTYPE_BF16 && k->dtype == QD_DTYPE_BF16 && v->dtype == QD_DTYPE_BF16;
    p.kind = bf16_in && qd_cpu_has_avx512bf16() ? KIND_BF16_AVX512 : qd_cpu_has_avx512() ? KIND_F32_AVX512 : KIND_GENERIC;
    p.elt = p.kind == KIND_BF16_AVX512 ? 2 : 4;
    p.Dp = p.kind == KIND_BF16_AVX512 ? qd_cpu_round_up(D, 2) : D;
    p.Dvp = qd_cpu_round_up(Dv, 16);
    p.nblk = (Lk + NK - 1) / NK;
    p.kblk_elems = (size_t)(p.Dp * NK);
    p.vblk_elems = (size_t)(NK * p.Dvp);

    /* packed K/V: the size of k and v themselves (rounded to whole blocks), in f32 or bf16 */
    size_t nbh = (size_t)(B * Hkv * p.nblk);
    uint8_t *mask_buf = NULL;
    p.kp = qd_cpu_alloc(nbh * (p.kblk_elems + p.vblk_elems) * p.elt);
    if (!p.kp) return qd_fail(QD_ENOMEM, "cpu attention: cannot allocate packed K/V for B=%lld Lk=%lld", (long long)B, (long long)Lk);
    p.vp = (char *)p.kp + nbh * p.kblk_elems * p.elt;
    if (a->mask && B * Lk > 0) {
        mask_buf = malloc((size_t)(B * Lk + B * p.nblk));
        if (!mask_buf) {
            qd_cpu_free(p.kp);
            return qd_fail(QD_ENOMEM, "cpu attention: cannot allocate the key mask");
        }
        if ((s = build_mask(a->mask, B, Lk, p.nblk, mask_buf, mask_buf + B * Lk))) {
            free(mask_buf);
            qd_cpu_free(p.kp);
            return s;
        }
        p.keyok = mask_buf;
        p.blk = mask_buf + B * Lk;
    }

    attn_kernels kr = kernels_for(p.kind);
    int64_t ntiles = (Lq + MQ - 1) / MQ;
    int64_t units = B * H * ntiles;
    int failed = 0;
#pragma omp parallel num_threads(qd_threads_for(B * H * Lq * Lk * (D + Dv), QD_GRAIN_MACS))
    {
        float *row = malloc(sizeof(float) * (size_t)(D > Dv ? D : Dv));
        if (!row) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t u = 0; u < (int64_t)nbh; u++) {
            if (!row) continue;
            int64_t blk = u % p.nblk, bh = u / p.nblk;
            pack_k_block(&p, bh / Hkv, bh % Hkv, blk, (char *)p.kp + (size_t)u * p.kblk_elems * p.elt, row);
            pack_v_block(&p, bh / Hkv, bh % Hkv, blk, (char *)p.vp + (size_t)u * p.vblk_elems * p.elt);
        }
        free(row);
        /* (the implicit barrier of the omp for makes every block packed before any tile reads it) */
        attn_scratch w = {0};
        size_t qb = (size_t)(MQ * p.Dp) * p.elt, sb = (size_t)MQ * NK * 4, pb = (size_t)MQ * NK * p.elt,
               ob = (size_t)(MQ * p.Dvp) * 4, vb = (size_t)MQ * 4;
        qb = (size_t)qd_cpu_round_up((int64_t)qb, 64), pb = (size_t)qd_cpu_round_up((int64_t)pb, 64);
        char *mem = qd_cpu_alloc(qb + sb + pb + ob + 3 * vb);
        if (!mem) {
#pragma omp atomic write
            failed = 1;
        } else {
            w.q = mem, w.S = (float *)(mem + qb), w.P = mem + qb + sb, w.O = (float *)(mem + qb + sb + pb);
            w.m = (float *)(mem + qb + sb + pb + ob), w.l = w.m + MQ, w.alpha = w.l + MQ;
        }
        /* a thread without scratch skips its tiles; the call then fails as a whole */
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++) {
            if (!mem) continue;
            int64_t t = u % ntiles, bh = u / ntiles;
            attn_tile(&p, &kr, &w, bh / H, bh % H, t * MQ);
        }
        qd_cpu_free(mem);
    }
    free(mask_buf);
    qd_cpu_free(p.kp);
    if (failed) return qd_fail(QD_ENOMEM, "cpu attention: cannot allocate per-thread scratch");
    return QD_OK;
}
