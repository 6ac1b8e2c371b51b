/* The CPU's integer GEMM core and its int8 / int4 linears (QD_SCHEME_INT8, QD_SCHEME_INT4).
 *
 * Spec: formats.md §6.1–§6.4 (msModelSlim W8A8 static, W8A8_DYNAMIC, W4A4_DYNAMIC), quant-sglang.md
 * §4.10; linear.h for the canonical slots (int8: weight I8 [N,K], scale [N] or [N,1]; static keeps
 * input_scale / input_offset, scale2 = deq_scale, zeros = quant_bias I32; dynamic: zeros =
 * weight_offset; int4: one value per byte, scale [N,1] or [N,K/g]).
 *
 *   W8A8 static:   y = (Σ_k q_x·q_w + quant_bias[n]) · deq_scale[n],  q_x = clamp(rne(x/is + io))
 *   dynamic:       y = s_x[m]·Σ_g s_w[n,g]·(Σ_{k∈g} q_x·q_w − z[n,g]·Σ_{k∈g} q_x) + bias[n]
 *                  (one group = whole K for per-channel weights), s_x = rowamax/127 (int8) or /7 (int4)
 *
 * The GEMM core (qd_iq_gemm, act_quant_int.h) also serves linear_fp4.c and linear_svdq.c. Algorithm:
 *  - weights are repacked once per layer (l->prepared, same byte size) into VNNI panels of 32 columns,
 *    [np/32][kp/4][32][4]: one 64-byte load is 16 columns × 4 consecutive k, the vpdpbusd operand;
 *  - each OpenMP thread owns a disjoint set of panels (or of rows, when panels are fewer than threads)
 *    and walks: block of 384 rows → K chunk of 1024 → its panels → 6-row tiles. The block's codes for
 *    one chunk (384 KB) stay in L2 while every panel streams past them; a panel's chunk (32 KB of int8;
 *    4-bit weights are expanded to it with a vpshufb table) stays in L1 while every tile of the block
 *    streams past it; the per-(row, column) sums wait in a per-thread scratch between chunks;
 *  - microkernel: a 6×32 register tile of int32 sums (12 zmm), per 4 k two 64-byte weight loads, six
 *    4-byte activation broadcasts and 12 vpdpbusd;
 *  - whole-K kernels keep the exact int32 sum across chunks; block kernels convert each block's int32
 *    sum once, C += float(isum)·sw[n]·sa[m] (3 float ops per 16 lanes per block, against BK/4 vpdpbusd);
 *  - the epilogue applies column / row scales, bias and an optional low-rank term (SVDQuant's LoRA-up,
 *    zero-point corrections), six rows at a time, then stores F32 or BF16 (RNE).
 * The u8 × s8 operand of vpdpbusd: activations carry +128; every block's int32 sum starts at
 * −128·Σ_{k∈b} q_w (block kernels) or gets it back in the epilogue (whole-K), so all sums are exact.
 * The generic C path runs the same loops on a k-major int16 copy of each chunk (plain loops over 32
 * contiguous columns, vectorized by the compiler for the baseline ISA).
 *
 * Tolerance against the f32 reference (qd_linear_dequantize + f32 GEMM on unquantized x), as NMSE:
 *   int8 per token: ≤ 1e-3 — rounding to 1/254 of the row amax, a uniform error of variance
 *                   (amax/127)²/12; for rows with amax ≤ 10× rms that is ≤ 5e-4 of the signal;
 *   int4 per token: ≤ 5e-2 — the same with 7 levels: (amax/7)²/12 ≈ 3e-2 of the signal at amax ≈ 4 rms
 *                   (heavier outliers make it worse: amax ≈ 15 rms gives ~0.4 — the format, not the kernel);
 *   static int8:    ≤ 1e-3 when input_scale covers the data (calibrated), as per token.
 * Against an exact emulation (same codes, double-precision sums) the error is only the f32 rounding of
 * the scale products and of the float accumulation over blocks: ~1e-6 relative. */
#include "backend/cpu/act_quant_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend/cpu/linear_kernels.h"
#include "core/codec.h"
#include "core/status.h"
#include "core/threads.h"

#ifndef KC_TARGET
#define KC_TARGET 1024 /* K per chunk: a 32-column int8 panel chunk is 32 KB (L1 holds 48) */
#endif
#ifndef MB_ROWS
#define MB_ROWS 384 /* rows per block: its activations for one K chunk (384 KB) stay in L2 */
#endif

/* ------------------------------------------------------------------ prepared forms ------------ */

const char qd_iq_prepared_tag[] = "qdit-cpu-integer-path";

void qd_iq_prepared_free(void *pv) {
    qd_iq_prepared *p = pv;
    if (!p) return;
    qd_iq_weights_free(&p->w);
    free(p->col_scale), free(p->bias), free(p->aux), free(p->col_ibias), free(p->smooth);
    free(p);
}

qd_iq_prepared *qd_iq_prepared_of(const qd_linear *l) {
    qd_iq_prepared *p = l->prepared;
    return p && l->prepared_for == qd_iq_prepared_tag && p->tag == qd_iq_prepared_tag ? p : NULL;
}

qd_status qd_iq_prepare(qd_linear *l, qd_status (*make)(const qd_linear *l, qd_iq_prepared *p), qd_iq_prepared **out,
                        bool *temporary) {
    *out = qd_iq_prepared_of(l);
    *temporary = false;
    if (*out) return QD_OK;
    qd_iq_prepared *p = calloc(1, sizeof *p);
    if (!p) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its prepared form", l->name ? l->name : "linear");
    p->tag = qd_iq_prepared_tag;
    qd_status s = make(l, p);
    if (s) {
        qd_iq_prepared_free(p);
        return s;
    }
    if (l->prepared) {
        /* another backend's form lives here; ours is made per call rather than displacing it */
        *temporary = true;
    } else {
        l->prepared = p;
        l->prepared_free = qd_iq_prepared_free;
        l->prepared_for = qd_iq_prepared_tag;
    }
    *out = p;
    return QD_OK;
}

qd_status qd_iq_prepare_replacing(qd_linear *l, qd_status (*make)(const qd_linear *l, qd_iq_prepared *p)) {
    qd_iq_prepared *p;
    bool temp;
    const qd_status s = qd_iq_prepare(l, make, &p, &temp);
    if (s) return s;
    if (temp) qd_iq_prepared_free(p);
    else qd_linear_release_stored(l);
    return QD_OK;
}

float *qd_iq_vector_f32(const qd_view *v, int64_t n, int64_t np, float pad) {
    if (!v->data) return NULL;
    float *f = malloc(sizeof *f * (size_t)(np ? np : 1));
    if (!f) return NULL;
    for (int64_t i = 0; i < np; i++) f[i] = i < n ? qd_view_get(v, i, 0) : pad;
    return f;
}

/* ------------------------------------------------------------------ weights ------------------- */

static size_t wscale_bytes(qd_iq_wsfmt f) {
    switch (f) {
    case QD_IQ_WS_F32: return 4;
    case QD_IQ_WS_BF16:
    case QD_IQ_WS_F16: return 2;
    case QD_IQ_WS_E4M3:
    case QD_IQ_WS_E8M0: return 1;
    default: return 0;
    }
}

void qd_iq_weights_free(qd_iq_weights *w) {
    qd_cpu_free(w->w);
    free(w->colsum), free(w->ws), free(w->dual);
    memset(w, 0, sizeof *w);
}

static int8_t nibble_value(qd_iq_wcodes codes, uint8_t c) {
    static const int8_t e2m1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
    return codes == QD_IQ_W_E2M1 ? e2m1x2[c & 15] : (int8_t)((c & 8) ? (int)(c & 15) - 16 : (int)(c & 15));
}

qd_status qd_iq_weights_make(qd_iq_wcodes codes, int64_t n, int64_t k, const void *wsrc, int block, qd_iq_wsfmt sfmt,
                             const void *scales, const float *dual, qd_iq_weights *o) {
    memset(o, 0, sizeof *o);
    if (block && (block % 4 || k % block)) {
        return qd_fail(QD_EUNSUPPORTED, "integer linear: a scale block of %d along K = %lld (needs a multiple of 4 dividing K)",
                       block, (long long)k);
    }
    if (codes != QD_IQ_W_INT8 && (k % 8)) return qd_fail(QD_EINVAL, "integer linear: 4-bit weights need K %% 8 == 0");
    o->codes = codes;
    o->n = n, o->k = k;
    o->np = (n + QD_IQ_NP - 1) / QD_IQ_NP * QD_IQ_NP;
    o->kp = block ? k : (k + 3) / 4 * 4;
    o->block = block;
    o->kb = block ? k / block : 1;
    o->sfmt = block ? sfmt : QD_IQ_WS_NONE;
    const int64_t np = o->np, kp = o->kp, panels = np / QD_IQ_NP;
    const size_t wbytes = codes == QD_IQ_W_INT8 ? (size_t)(np * kp) : (size_t)(np * kp / 2);
    o->w = qd_cpu_alloc(wbytes);
    if (!o->w) goto nomem;
    if (codes == QD_IQ_W_INT8) {
        const int8_t *src = wsrc;
        int8_t *dst = o->w;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(np * kp, QD_GRAIN_ELEMS))
        for (int64_t p = 0; p < panels; p++)
            for (int64_t g = 0; g < kp / 4; g++)
                for (int c = 0; c < QD_IQ_NP; c++)
                    for (int kk = 0; kk < 4; kk++) {
                        const int64_t row = p * QD_IQ_NP + c, col = 4 * g + kk;
                        dst[((p * (kp / 4) + g) * QD_IQ_NP + c) * 4 + kk] = row < n && col < k ? src[row * k + col] : 0;
                    }
        if (!block) {
            o->colsum = malloc(sizeof(int32_t) * (size_t)np);
            if (!o->colsum) goto nomem;
            for (int64_t r = 0; r < np; r++) {
                int32_t s = 0;
                for (int64_t j = 0; r < n && j < k; j++) s += src[r * k + j];
                o->colsum[r] = s;
            }
        }
    } else {
        /* 4-bit: per (panel, k4, half) a 32-byte group holding the 64 codes of one zmm, code t in the
           low nibble of byte t and code t + 32 in the high nibble of byte t */
        const uint8_t *src = wsrc;
        uint8_t *dst = o->w;
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(np * kp, QD_GRAIN_ELEMS))
        for (int64_t p = 0; p < panels; p++)
            for (int64_t g = 0; g < kp / 4; g++)
                for (int h = 0; h < 2; h++) {
                    uint8_t *grp = dst + ((p * (kp / 4) + g) * 2 + h) * 32;
                    for (int t = 0; t < 32; t++) {
                        uint8_t nib[2];
                        for (int u = 0; u < 2; u++) {
                            const int idx = t + 32 * u; /* position in the zmm: column idx/4, k idx%4 */
                            const int64_t row = p * QD_IQ_NP + h * 16 + idx / 4, col = 4 * g + idx % 4;
                            nib[u] = row < n ? (uint8_t)((src[(row * k + col) / 2] >> (4 * (col & 1))) & 15) : 0;
                        }
                        grp[t] = (uint8_t)(nib[0] | nib[1] << 4);
                    }
                }
    }
    if (block) {
        const size_t es = wscale_bytes(sfmt);
        if (!es) {
            qd_iq_weights_free(o);
            return qd_fail(QD_EINVAL, "integer linear: block scales without a format");
        }
        o->ws = calloc((size_t)(np * o->kb), es);
        if (!o->ws) goto nomem;
        for (int64_t r = 0; r < n; r++)
            for (int64_t b = 0; b < o->kb; b++)
                memcpy((uint8_t *)o->ws + (((r / QD_IQ_NP) * o->kb + b) * QD_IQ_NP + r % QD_IQ_NP) * es,
                       (const uint8_t *)scales + (r * o->kb + b) * es, es);
        if (dual) {
            const int64_t kd = k / 512;
            o->dual = calloc((size_t)(np * kd), sizeof(float));
            if (!o->dual) goto nomem;
            for (int64_t r = 0; r < n; r++)
                for (int64_t d = 0; d < kd; d++) o->dual[((r / QD_IQ_NP) * kd + d) * QD_IQ_NP + r % QD_IQ_NP] = dual[r * kd + d];
        }
    }
    return QD_OK;
nomem:
    qd_iq_weights_free(o);
    return qd_fail(QD_ENOMEM, "integer linear: cannot allocate the %lld×%lld weight panels", (long long)n, (long long)k);
}

/* ------------------------------------------------------------------ generic kernels ----------- */

/* One panel chunk of int8 weights [kc/4][32][4] (4-bit codes expanded), per-block corrections
   −128·Σ q_w [kc/bk][32] and per-block f32 weight scales [kc/bk][32]. */
typedef struct {
    const int8_t *b;     /* VNNI order (AVX-512 path) */
    const int16_t *b16;  /* k-major int16 (generic path) */
    int32_t *corr;
    float *sw;
} chunk;

static float wscale_f32(const qd_iq_weights *w, int64_t idx) {
    const uint8_t *s = w->ws;
    switch (w->sfmt) {
    case QD_IQ_WS_F32: {
        float f;
        memcpy(&f, s + 4 * idx, 4);
        return f;
    }
    case QD_IQ_WS_E4M3: return qd_e4m3_to_f32(s[idx]);
    case QD_IQ_WS_E8M0: return qd_e8m0_to_f32(s[idx]);
    case QD_IQ_WS_BF16: {
        uint16_t h;
        memcpy(&h, s + 2 * idx, 2);
        return qd_bf16_to_f32(h);
    }
    case QD_IQ_WS_F16: {
        uint16_t h;
        memcpy(&h, s + 2 * idx, 2);
        return qd_f16_to_f32(h);
    }
    default: return 1.0f;
    }
}

/* The generic path works on a k-major int16 copy of the chunk, b16[k][32], so its inner loops run
   over 32 contiguous columns and the compiler can vectorize them with whatever the baseline ISA has. */
static void chunk_generic(const qd_iq_weights *w, int64_t p, int64_t k0, int64_t kc, int16_t *b16, chunk *c) {
    const int64_t kp = w->kp;
    if (w->codes == QD_IQ_W_INT8) {
        const int8_t *src = (const int8_t *)w->w + (p * (kp / 4) + k0 / 4) * QD_IQ_NP * 4;
        for (int64_t g = 0; g < kc / 4; g++)
            for (int j = 0; j < QD_IQ_NP; j++)
                for (int kk = 0; kk < 4; kk++) b16[(4 * g + kk) * QD_IQ_NP + j] = src[(g * QD_IQ_NP + j) * 4 + kk];
    } else {
        /* byte t of a 32-byte group: code t (low nibble) and code t + 32 (high) of 16 columns × 4 k */
        const uint8_t *src = (const uint8_t *)w->w + (p * (kp / 4) + k0 / 4) * 64;
        for (int64_t g = 0; g < kc / 4; g++)
            for (int h = 0; h < 2; h++)
                for (int t = 0; t < 32; t++) {
                    const uint8_t byte = src[(g * 2 + h) * 32 + t];
                    for (int u = 0; u < 2; u++) {
                        const int idx = t + 32 * u, j = h * 16 + idx / 4, kk = idx % 4;
                        b16[(4 * g + kk) * QD_IQ_NP + j] = nibble_value(w->codes, u ? byte >> 4 : byte & 15);
                    }
                }
    }
    c->b = NULL;
    if (!w->block) return;
    const int bk = w->block;
    for (int64_t b = 0; b < kc / bk; b++) {
        for (int j = 0; j < QD_IQ_NP; j++) {
            int32_t s = 0;
            for (int kk = 0; kk < bk; kk++) s += b16[(b * bk + kk) * QD_IQ_NP + j];
            c->corr[b * QD_IQ_NP + j] = -QD_IQ_CODE_OFFSET * s;
            const int64_t gb = k0 / bk + b;
            float sw = wscale_f32(w, (p * w->kb + gb) * QD_IQ_NP + j);
            if (w->dual) sw *= w->dual[(p * (kp / 512) + gb * bk / 512) * QD_IQ_NP + j];
            c->sw[b * QD_IQ_NP + j] = sw;
        }
    }
}

static void ukr_int_generic(int64_t kc, const uint8_t *a, int64_t lda, const int16_t *b16, int32_t *c, bool first) {
    int32_t acc[QD_IQ_MR][QD_IQ_NP];
    for (int i = 0; i < QD_IQ_MR; i++)
        for (int j = 0; j < QD_IQ_NP; j++) acc[i][j] = first ? 0 : c[i * QD_IQ_NP + j];
    for (int64_t k = 0; k < kc; k++) {
        const int16_t *bk = b16 + k * QD_IQ_NP;
        for (int i = 0; i < QD_IQ_MR; i++) {
            const int16_t av = a[i * lda + k];
            for (int j = 0; j < QD_IQ_NP; j++) acc[i][j] += av * bk[j];
        }
    }
    memcpy(c, acc, sizeof acc);
}

static void ukr_blk_generic(int64_t kc, int bk, const uint8_t *a, int64_t lda, const int16_t *b16, const chunk *ch,
                            const float *sa, float *c, bool first) {
    float f[QD_IQ_MR][QD_IQ_NP];
    int32_t acc[QD_IQ_MR][QD_IQ_NP];
    for (int i = 0; i < QD_IQ_MR; i++)
        for (int j = 0; j < QD_IQ_NP; j++) f[i][j] = first ? 0.0f : c[i * QD_IQ_NP + j];
    for (int64_t b = 0; b < kc / bk; b++) {
        for (int i = 0; i < QD_IQ_MR; i++) memcpy(acc[i], ch->corr + b * QD_IQ_NP, sizeof acc[i]);
        for (int64_t k = b * bk; k < (b + 1) * bk; k++) {
            const int16_t *bk16 = b16 + k * QD_IQ_NP;
            for (int i = 0; i < QD_IQ_MR; i++) {
                const int16_t av = a[i * lda + k];
                for (int j = 0; j < QD_IQ_NP; j++) acc[i][j] += av * bk16[j];
            }
        }
        const float *sw = ch->sw + b * QD_IQ_NP;
        for (int i = 0; i < QD_IQ_MR; i++) {
            const float s = sa ? sa[b * QD_IQ_MR + i] : 1.0f;
            for (int j = 0; j < QD_IQ_NP; j++) f[i][j] += (float)acc[i][j] * sw[j] * s;
        }
    }
    memcpy(c, f, sizeof f);
}

static void epilogue_generic(const qd_iq_gemm_args *g, int64_t p, int64_t r0, int64_t r1, const void *cbuf) {
    const qd_iq_weights *w = g->w;
    const int64_t n = w->n, n0 = p * QD_IQ_NP, cols = n - n0 < QD_IQ_NP ? n - n0 : QD_IQ_NP;
    const bool ints = !w->block;
    float *out = malloc(sizeof(float) * QD_IQ_NP);
    if (!out) return;
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t j = 0; j < cols; j++) {
            const int64_t cn = n0 + j, ci = (r - r0) * QD_IQ_NP + j;
            float v;
            if (ints) v = (float)(((const int32_t *)cbuf)[ci] + (g->col_ibias ? g->col_ibias[cn] : 0));
            else v = ((const float *)cbuf)[ci];
            if (g->col_scale) v *= g->col_scale[cn];
            if (g->row_scale) v *= g->row_scale[r];
            if (g->bias) v += g->bias[cn];
            for (int q = 0; q < g->lr_rank; q++) v += g->lr_left[r * g->lr_rank + q] * g->lr_right[q * w->np + cn];
            out[j] = v;
        }
        qd_cpu_from_f32(g->y, r * n + n0, cols, out);
    }
    free(out);
}

/* ------------------------------------------------------------------ AVX-512 VNNI kernels ------ */

#if defined(__x86_64__)

QD_IQ_TARGET static void chunk_avx512(const qd_iq_weights *w, int64_t p, int64_t k0, int64_t kc, int8_t *buf, chunk *c) {
    const int64_t kp = w->kp;
    if (w->codes == QD_IQ_W_INT8) {
        c->b = (const int8_t *)w->w + (p * (kp / 4) + k0 / 4) * QD_IQ_NP * 4;
    } else {
        /* 32 packed bytes → 64 int8 codes: low nibbles are codes 0..31, high nibbles 32..63 */
        const __m512i lut = w->codes == QD_IQ_W_E2M1
                                ? _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12))
                                : _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1));
        const __m256i m4 = _mm256_set1_epi8(15);
        const uint8_t *src = (const uint8_t *)w->w + (p * (kp / 4) + k0 / 4) * 64;
        for (int64_t i = 0; i < kc / 4 * 2; i++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(src + i * 32));
            const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            const __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            _mm512_store_si512((__m512i *)(buf + i * 64), _mm512_shuffle_epi8(lut, idx));
        }
        c->b = buf;
    }
    if (!w->block) return;
    const int bk = w->block;
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t b = 0; b < kc / bk; b++) {
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        for (int g = 0; g < bk / 4; g++) {
            const int8_t *bp = c->b + (b * bk / 4 + g) * QD_IQ_NP * 4;
            s0 = _mm512_dpbusd_epi32(s0, ones, _mm512_loadu_si512(bp));
            s1 = _mm512_dpbusd_epi32(s1, ones, _mm512_loadu_si512(bp + 64));
        }
        _mm512_storeu_si512(c->corr + b * QD_IQ_NP, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(s0, 7)));
        _mm512_storeu_si512(c->corr + b * QD_IQ_NP + 16, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(s1, 7)));
        const int64_t gb = k0 / bk + b, base = (p * w->kb + gb) * QD_IQ_NP;
        for (int h = 0; h < 2; h++) {
            __m512 f;
            switch (w->sfmt) {
            case QD_IQ_WS_F32: f = _mm512_loadu_ps((const float *)w->ws + base + 16 * h); break;
            case QD_IQ_WS_E4M3: {
                /* E4M3 → f32: the 7 magnitude bits placed at f32 bit 20 make the value times 2^-120,
                   subnormals included (an f32 subnormal then); the multiply restores it exactly */
                const __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((const uint8_t *)w->ws + base + 16 * h)));
                const __m512i mag = _mm512_slli_epi32(_mm512_and_si512(e, _mm512_set1_epi32(0x7F)), 20);
                const __m512i sgn = _mm512_slli_epi32(_mm512_and_si512(e, _mm512_set1_epi32(0x80)), 24);
                f = _mm512_mul_ps(_mm512_castsi512_ps(mag), _mm512_set1_ps(0x1p120f));
                f = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(f), sgn));
                break;
            }
            case QD_IQ_WS_E8M0: {
                const __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((const uint8_t *)w->ws + base + 16 * h)));
                const __mmask16 z = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
                f = _mm512_castsi512_ps(_mm512_mask_mov_epi32(_mm512_slli_epi32(e, 23), z, _mm512_set1_epi32(0x00400000)));
                break;
            }
            case QD_IQ_WS_BF16:
                f = _mm512_castsi512_ps(_mm512_slli_epi32(
                    _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w->ws + base + 16 * h))), 16));
                break;
            case QD_IQ_WS_F16: f = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w->ws + base + 16 * h))); break;
            default: f = _mm512_set1_ps(1.0f); break;
            }
            if (w->dual) f = _mm512_mul_ps(f, _mm512_loadu_ps(w->dual + (p * (kp / 512) + gb * bk / 512) * QD_IQ_NP + 16 * h));
            _mm512_storeu_ps(c->sw + b * QD_IQ_NP + 16 * h, f);
        }
    }
}

#define UNROLL_MR _Pragma("GCC unroll 6")

QD_IQ_TARGET static void ukr_int_avx512(int64_t kc, const uint8_t *a, int64_t lda, const int8_t *b, int32_t *c, bool first) {
    __m512i acc[QD_IQ_MR][2];
    UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) {
        acc[i][0] = first ? _mm512_setzero_si512() : _mm512_loadu_si512(c + i * QD_IQ_NP);
        acc[i][1] = first ? _mm512_setzero_si512() : _mm512_loadu_si512(c + i * QD_IQ_NP + 16);
    }
    for (int64_t g = 0; g < kc / 4; g++) {
        const __m512i b0 = _mm512_loadu_si512(b + g * 128), b1 = _mm512_loadu_si512(b + g * 128 + 64);
        UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) {
            int32_t av;
            memcpy(&av, a + i * lda + g * 4, 4);
            const __m512i va = _mm512_set1_epi32(av);
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], va, b0);
            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], va, b1);
        }
    }
    UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) {
        _mm512_storeu_si512(c + i * QD_IQ_NP, acc[i][0]);
        _mm512_storeu_si512(c + i * QD_IQ_NP + 16, acc[i][1]);
    }
}

/* The block kernel; inlined into one copy per block size so the k loop of a block is unrolled. */
QD_IQ_TARGET static inline __attribute__((always_inline)) void ukr_blk_body(int64_t kc, const int bk, const bool has_sa,
                                                                            const uint8_t *a, int64_t lda, const chunk *ch,
                                                                            const float *sa, float *c, bool first) {
    __m512 f[QD_IQ_MR][2];
    UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) {
        f[i][0] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * QD_IQ_NP);
        f[i][1] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * QD_IQ_NP + 16);
    }
    const int8_t *b = ch->b;
    for (int64_t blk = 0; blk < kc / bk; blk++) {
        __m512i acc[QD_IQ_MR][2];
        const __m512i c0 = _mm512_loadu_si512(ch->corr + blk * QD_IQ_NP), c1 = _mm512_loadu_si512(ch->corr + blk * QD_IQ_NP + 16);
        UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) acc[i][0] = c0, acc[i][1] = c1;
        _Pragma("GCC unroll 16") for (int g = 0; g < bk / 4; g++) {
            const __m512i b0 = _mm512_loadu_si512(b + g * 128), b1 = _mm512_loadu_si512(b + g * 128 + 64);
            UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) {
                int32_t av;
                memcpy(&av, a + i * lda + g * 4, 4);
                const __m512i va = _mm512_set1_epi32(av);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], va, b0);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], va, b1);
            }
        }
        const __m512 s0 = _mm512_loadu_ps(ch->sw + blk * QD_IQ_NP), s1 = _mm512_loadu_ps(ch->sw + blk * QD_IQ_NP + 16);
        UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) {
            if (has_sa) {
                const __m512 vs = _mm512_set1_ps(sa[blk * QD_IQ_MR + i]);
                f[i][0] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][0]), s0), vs, f[i][0]);
                f[i][1] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][1]), s1), vs, f[i][1]);
            } else {
                f[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][0]), s0, f[i][0]);
                f[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][1]), s1, f[i][1]);
            }
        }
        a += bk;
        b += bk * QD_IQ_NP;
    }
    UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) {
        _mm512_storeu_ps(c + i * QD_IQ_NP, f[i][0]);
        _mm512_storeu_ps(c + i * QD_IQ_NP + 16, f[i][1]);
    }
}

typedef void (*ukr_blk_fn)(int64_t kc, int bk, const uint8_t *a, int64_t lda, const chunk *ch, const float *sa, float *c,
                           bool first);

QD_IQ_TARGET static void ukr_blk16(int64_t kc, int bk, const uint8_t *a, int64_t lda, const chunk *ch, const float *sa, float *c, bool first) {
    (void)bk;
    ukr_blk_body(kc, 16, true, a, lda, ch, sa, c, first);
}
QD_IQ_TARGET static void ukr_blk32(int64_t kc, int bk, const uint8_t *a, int64_t lda, const chunk *ch, const float *sa, float *c, bool first) {
    (void)bk;
    ukr_blk_body(kc, 32, true, a, lda, ch, sa, c, first);
}
QD_IQ_TARGET static void ukr_blk64(int64_t kc, int bk, const uint8_t *a, int64_t lda, const chunk *ch, const float *sa, float *c, bool first) {
    (void)bk;
    ukr_blk_body(kc, 64, true, a, lda, ch, sa, c, first);
}
QD_IQ_TARGET static void ukr_blk_any(int64_t kc, int bk, const uint8_t *a, int64_t lda, const chunk *ch, const float *sa, float *c, bool first) {
    ukr_blk_body(kc, bk, true, a, lda, ch, sa, c, first);
}
QD_IQ_TARGET static void ukr_blk_any_nosa(int64_t kc, int bk, const uint8_t *a, int64_t lda, const chunk *ch, const float *sa, float *c, bool first) {
    ukr_blk_body(kc, bk, false, a, lda, ch, sa, c, first);
}

/* f32 → bf16 RNE of 16 lanes */
QD_IQ_TARGET static inline __m256i bf16_of(__m512 v) {
    __m512i b = _mm512_castps_si512(v);
    b = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7FFF)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16));
}

QD_IQ_TARGET static void epilogue_avx512(const qd_iq_gemm_args *g, int64_t p, int64_t r0, int64_t r1, const void *cbuf) {
    const qd_iq_weights *w = g->w;
    const int64_t n = w->n, n0 = p * QD_IQ_NP, cols = n - n0 < QD_IQ_NP ? n - n0 : QD_IQ_NP;
    const bool ints = !w->block, bf16 = g->y->dtype == QD_DTYPE_BF16;
    __m512 cs[2], bias[2];
    __m512i ib[2];
    __mmask16 mask[2];
    for (int h = 0; h < 2; h++) {
        const int64_t left = cols - 16 * h;
        mask[h] = left >= 16 ? 0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        cs[h] = g->col_scale ? _mm512_loadu_ps(g->col_scale + n0 + 16 * h) : _mm512_set1_ps(1.0f);
        bias[h] = g->bias ? _mm512_loadu_ps(g->bias + n0 + 16 * h) : _mm512_setzero_ps();
        ib[h] = g->col_ibias ? _mm512_loadu_si512(g->col_ibias + n0 + 16 * h) : _mm512_setzero_si512();
    }
    /* rows in groups of MR so the low-rank FMAs form 2·MR independent chains (one chain per row would
       be bound by the FMA latency, not its throughput) */
    for (int64_t rg = r0; rg < r1; rg += QD_IQ_MR) {
        const int nr = (int)(r1 - rg < QD_IQ_MR ? r1 - rg : QD_IQ_MR);
        __m512 v[QD_IQ_MR][2];
        UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) {
            if (i >= nr) break;
            const int64_t r = rg + i;
            const __m512 rs = _mm512_set1_ps(g->row_scale ? g->row_scale[r] : 1.0f);
            for (int h = 0; h < 2; h++) {
                const int64_t ci = (r - r0) * QD_IQ_NP + 16 * h;
                __m512 t = ints ? _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_loadu_si512((const int32_t *)cbuf + ci), ib[h]))
                                : _mm512_loadu_ps((const float *)cbuf + ci);
                v[i][h] = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(t, cs[h]), rs), bias[h]);
            }
        }
        if (nr == QD_IQ_MR) {
            for (int q = 0; q < g->lr_rank; q++) {
                const float *rr = g->lr_right + q * w->np + n0;
                const __m512 u0 = _mm512_loadu_ps(rr), u1 = _mm512_loadu_ps(rr + 16);
                UNROLL_MR for (int i = 0; i < QD_IQ_MR; i++) {
                    const __m512 l = _mm512_set1_ps(g->lr_left[(rg + i) * g->lr_rank + q]);
                    v[i][0] = _mm512_fmadd_ps(l, u0, v[i][0]);
                    v[i][1] = _mm512_fmadd_ps(l, u1, v[i][1]);
                }
            }
        } else {
            for (int i = 0; i < nr; i++)
                for (int q = 0; q < g->lr_rank; q++) {
                    const float *rr = g->lr_right + q * w->np + n0;
                    const __m512 l = _mm512_set1_ps(g->lr_left[(rg + i) * g->lr_rank + q]);
                    v[i][0] = _mm512_fmadd_ps(l, _mm512_loadu_ps(rr), v[i][0]);
                    v[i][1] = _mm512_fmadd_ps(l, _mm512_loadu_ps(rr + 16), v[i][1]);
                }
        }
        for (int i = 0; i < nr; i++) {
            const int64_t r = rg + i;
            for (int h = 0; h < 2; h++) {
                if (!mask[h]) continue;
                if (bf16) _mm256_mask_storeu_epi16((uint16_t *)g->y->data + r * n + n0 + 16 * h, mask[h], bf16_of(v[i][h]));
                else _mm512_mask_storeu_ps((float *)g->y->data + r * n + n0 + 16 * h, mask[h], v[i][h]);
            }
        }
    }
}

#endif

/* ------------------------------------------------------------------ the driver ---------------- */

/* One call of the right microkernel on a 6-row tile. */
static void run_tile(const qd_iq_gemm_args *g, bool vnni, int64_t t, int64_t k0, int64_t kc, const chunk *ch, void *ct) {
    const qd_iq_act *a = g->a;
    const int bk = g->w->block;
    const int64_t kp = g->w->kp;
    const uint8_t *at = a->q + t * QD_IQ_MR * kp + k0;
    const float *sa = g->row_scale_only ? NULL : a->scale + (t * a->kb + (bk ? k0 / bk : 0)) * QD_IQ_MR;
#if defined(__x86_64__)
    if (vnni) {
        if (!bk) {
            ukr_int_avx512(kc, at, kp, ch->b, ct, k0 == 0);
            return;
        }
        ukr_blk_fn fn = g->row_scale_only ? ukr_blk_any_nosa : bk == 16 ? ukr_blk16 : bk == 32 ? ukr_blk32 : bk == 64 ? ukr_blk64 : ukr_blk_any;
        fn(kc, bk, at, kp, ch, sa, ct, k0 == 0);
        return;
    }
#endif
    (void)vnni;
    if (bk) ukr_blk_generic(kc, bk, at, kp, (const int16_t *)ch->b16, ch, sa, ct, k0 == 0);
    else ukr_int_generic(kc, at, kp, (const int16_t *)ch->b16, ct, k0 == 0);
}

qd_status qd_iq_gemm(const qd_iq_gemm_args *g) {
    const qd_iq_act *a = g->a;
    const qd_iq_weights *w = g->w;
    if (a->kp != w->kp) return qd_fail(QD_EINVAL, "integer GEMM: activations have K = %lld, weights %lld", (long long)a->kp, (long long)w->kp);
    const int bk = w->block;
    if (bk && !g->row_scale_only && a->block != bk) {
        return qd_fail(QD_EINVAL, "integer GEMM: activation blocks of %d, weight blocks of %d", a->block, bk);
    }
    if (!bk && (double)w->kp * 255.0 * 128.0 >= 2147483647.0) {
        return qd_fail(QD_EUNSUPPORTED, "integer GEMM: K = %lld could overflow the int32 sums (at most 65793)", (long long)w->kp);
    }
    const int64_t m = a->m, kp = w->kp, panels = w->np / QD_IQ_NP, tiles = a->mp / QD_IQ_MR;
    if (m == 0 || w->n == 0) return QD_OK;
    const int64_t kc_max = bk ? (bk >= KC_TARGET ? bk : KC_TARGET / bk * bk) : KC_TARGET;
    const bool vnni = qd_iq_use_vnni();
    bool nomem = false;
    /* Loop order (per thread): row block → K chunk → the thread's panels → 6-row tiles. The row block's
       activations for one K chunk (MB_ROWS × KC bytes) stay in L2 while every panel streams past them,
       each panel's chunk (KC × 32 int8) stays in L1 while every tile of the block streams past it, and
       the f32/int32 sums of (block × panels) live in a per-thread scratch between chunks. Threads own
       disjoint panels (or, when there are fewer panels than threads, disjoint rows), so no thread waits
       on another. */
#pragma omp parallel num_threads(qd_threads_for(m * w->np * kp, QD_GRAIN_MACS))
    {
        int nth = 1, tid = 0;
#ifdef _OPENMP
        nth = omp_get_num_threads(), tid = omp_get_thread_num();
#endif
        int64_t p0 = 0, p1 = panels, tt0 = 0, tt1 = tiles;
        if (panels >= nth) p0 = panels * tid / nth, p1 = panels * (tid + 1) / nth;
        else tt0 = tiles * tid / nth, tt1 = tiles * (tid + 1) / nth;
        int64_t mbt = MB_ROWS / QD_IQ_MR;
        /* bound the scratch of wide layers: (panels × rows) of 4-byte sums */
        while (mbt > 2 && (p1 - p0) * mbt * QD_IQ_MR * QD_IQ_NP * 4 > ((int64_t)16 << 20)) mbt /= 2;
        const int64_t nb = bk ? kc_max / bk : 0, cpanel = mbt * QD_IQ_MR * QD_IQ_NP;
        int8_t *buf = qd_iq_scratch_get((size_t)(kc_max * QD_IQ_NP) * (vnni ? 1 : 2));
        int32_t *corr = qd_iq_scratch_get(sizeof(int32_t) * (size_t)(nb * QD_IQ_NP + 1));
        float *sw = qd_iq_scratch_get(sizeof(float) * (size_t)(nb * QD_IQ_NP + 1));
        float *cbuf = p1 > p0 && tt1 > tt0 ? qd_iq_scratch_get(sizeof(float) * (size_t)((p1 - p0) * cpanel)) : NULL;
        if (!buf || !corr || !sw || (p1 > p0 && tt1 > tt0 && !cbuf)) {
#pragma omp atomic write
            nomem = true;
        } else {
            chunk ch = {.b = NULL, .corr = corr, .sw = sw};
            for (int64_t b0 = tt0; b0 < tt1; b0 += mbt) {
                const int64_t b1 = b0 + mbt < tt1 ? b0 + mbt : tt1;
                for (int64_t k0 = 0; k0 < kp; k0 += kc_max) {
                    const int64_t kc = kp - k0 < kc_max ? kp - k0 : kc_max;
                    for (int64_t p = p0; p < p1; p++) {
#if defined(__x86_64__)
                        if (vnni) chunk_avx512(w, p, k0, kc, buf, &ch);
                        else
#endif
                            chunk_generic(w, p, k0, kc, (int16_t *)buf, &ch), ch.b16 = (const int16_t *)buf;
                        float *cp = cbuf + (p - p0) * cpanel;
                        for (int64_t t = b0; t < b1; t++) run_tile(g, vnni, t, k0, kc, &ch, cp + (t - b0) * QD_IQ_MR * QD_IQ_NP);
                    }
                }
                const int64_t r0 = b0 * QD_IQ_MR, r1 = b1 * QD_IQ_MR < m ? b1 * QD_IQ_MR : m;
                for (int64_t p = p0; p < p1; p++) {
#if defined(__x86_64__)
                    if (vnni) {
                        epilogue_avx512(g, p, r0, r1, cbuf + (p - p0) * cpanel);
                        continue;
                    }
#endif
                    epilogue_generic(g, p, r0, r1, cbuf + (p - p0) * cpanel);
                }
            }
        }
        qd_iq_scratch_put(buf), qd_iq_scratch_put(corr), qd_iq_scratch_put(sw), qd_iq_scratch_put(cbuf);
    }
    if (nomem) return qd_fail(QD_ENOMEM, "integer GEMM: cannot allocate the per-thread panels");
    return QD_OK;
}

/* ------------------------------------------------------------------ int8 / int4 linears ------- */

static qd_status make_int(const qd_linear *l, qd_iq_prepared *p) {
    const char *name = l->name ? l->name : "linear";
    const int64_t n = l->out_features, k = l->in_features;
    if (!l->weight.data || l->weight.dtype != QD_DTYPE_I8 || !l->scale.data) {
        return qd_fail(QD_EINVAL, "layer '%s': an int8/int4 linear needs an I8 weight and its scales", name);
    }
    const bool stat = l->act == QD_ACT_STATIC_TENSOR;
    const int64_t groups = !stat && l->scale.rank == 2 ? l->scale.shape[1] : 1;
    if (groups < 1 || k % groups) return qd_fail(QD_EINVAL, "layer '%s': %lld scale groups along K = %lld", name, (long long)groups, (long long)k);
    const int block = groups > 1 ? (int)(k / groups) : 0;
    float *sw = malloc(sizeof(float) * (size_t)(n * groups) + 4);
    if (!sw) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", name);
    for (int64_t r = 0; r < n; r++)
        for (int64_t gi = 0; gi < groups; gi++) sw[r * groups + gi] = qd_view_get(&l->scale, r, gi);
    qd_status s = qd_iq_weights_make(QD_IQ_W_INT8, n, k, l->weight.data, block, QD_IQ_WS_F32, sw, NULL, &p->w);
    if (s) {
        free(sw);
        if (s == QD_EUNSUPPORTED) return qd_fail(s, "layer '%s': int4 scale groups of %d along K (needs a multiple of 4)", name, block);
        return s;
    }
    const int64_t np = p->w.np;
    p->col_ibias = calloc((size_t)np, sizeof(int32_t));
    if (!p->col_ibias) goto nomem;
    if (!block) {
        /* the +128 of the activation codes, undone per column; static W8A8 adds quant_bias */
        for (int64_t r = 0; r < np; r++) {
            int64_t v = -(int64_t)QD_IQ_CODE_OFFSET * p->w.colsum[r];
            if (stat && r < n) v += (int64_t)qd_view_get(&l->zeros, r, 0);
            p->col_ibias[r] = (int32_t)v;
        }
        p->col_scale = malloc(sizeof(float) * (size_t)np);
        if (!p->col_scale) goto nomem;
        for (int64_t r = 0; r < np; r++) p->col_scale[r] = r < n ? (stat ? qd_view_get(&l->scale2, r, 0) : sw[r]) : 0.0f;
    }
    if (!stat) {
        if (l->bias.data && !(p->bias = qd_iq_vector_f32(&l->bias, n, np, 0.0f))) goto nomem;
        /* weight offsets: W = (q − z)·s, so y loses s_x·Σ_g s_w·z·Σ_{k∈g} q_x — a rank-`groups` term */
        bool any = false;
        for (int64_t i = 0; l->zeros.data && i < n * groups && !any; i++) any = qd_view_get(&l->zeros, i / groups, i % groups) != 0.0f;
        if (any) {
            p->aux = calloc((size_t)(groups * np), sizeof(float));
            if (!p->aux) goto nomem;
            for (int64_t r = 0; r < n; r++)
                for (int64_t gi = 0; gi < groups; gi++) p->aux[gi * np + r] = sw[r * groups + gi] * qd_view_get(&l->zeros, r, gi);
        }
    }
    free(sw);
    return QD_OK;
nomem:
    free(sw);
    return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its prepared form", name);
}

qd_status qd_cpu_prepare_int8(qd_linear *l) { return qd_iq_prepare_replacing(l, make_int); }

qd_status qd_cpu_linear_int8(qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const char *name = l->name ? l->name : "linear";
    const bool stat = l->act == QD_ACT_STATIC_TENSOR;
    if (stat && (!l->input_scale.data || !l->input_offset.data || !l->scale2.data || !l->zeros.data)) {
        return qd_fail(QD_EINVAL, "layer '%s': a static W8A8 layer needs input_scale, input_offset, deq_scale and quant_bias", name);
    }
    qd_iq_prepared *p;
    bool temp;
    qd_status s = qd_iq_prepare(l, make_int, &p, &temp);
    if (s) return s;
    const int64_t groups = p->w.block ? p->w.kb : 1;
    qd_iq_act_spec spec = {.kind = stat ? QD_IQ_ACT_INT8_STATIC
                                        : (l->scheme == QD_SCHEME_INT4 ? QD_IQ_ACT_INT4_TOKEN : QD_IQ_ACT_INT8_TOKEN),
                           .k = l->in_features};
    if (stat) {
        spec.input_scale = qd_view_get(&l->input_scale, 0, 0);
        spec.input_offset = qd_view_get(&l->input_offset, 0, 0);
    }
    if (p->aux) {
        spec.want_sums = true;
        spec.sum_block = p->w.block;
    }
    qd_iq_act a;
    s = qd_iq_quantize(x, &spec, &a);
    float *left = NULL;
    if (!s && p->aux) {
        /* L[m][g] = −s_x[m]·Σ_{k∈g} q_x (the zero-point term's left factor) */
        left = malloc(sizeof(float) * (size_t)(a.mp * groups) + 4);
        if (!left) s = qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", name);
        for (int64_t r = 0; left && r < a.mp; r++)
            for (int64_t gi = 0; gi < groups; gi++) left[r * groups + gi] = -a.row_scale[r] * (float)a.sums[r * a.sum_groups + gi];
    }
    if (!s) {
        qd_iq_gemm_args g = {.a = &a,
                             .w = &p->w,
                             .row_scale_only = p->w.block > 0,
                             .col_scale = p->col_scale,
                             .row_scale = stat ? NULL : a.row_scale,
                             .col_ibias = p->w.block ? NULL : p->col_ibias,
                             .bias = p->bias,
                             .lr_rank = p->aux ? (int)groups : 0,
                             .lr_left = left,
                             .lr_right = p->aux,
                             .y = y};
        s = qd_iq_gemm(&g);
    }
    free(left);
    qd_iq_act_free(&a);
    if (temp) qd_iq_prepared_free(p);
    return s;
}
