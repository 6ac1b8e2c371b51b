/* One Nunchaku layer from a dense weight (see svdq_layer.h). */
#include "convert/svdq_layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/lowrank.h"
#include "core/codec.h"
#include "core/status.h"
#include "quant/packing.h"

#define SHIFT_GELU 0.171875 /* formats.md §5.4: nunchaku adds it to the GELU output before fc2 */
#define BF16_ONE 0x3F80
#define E4M3_ONE 0x38

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

uint64_t qd_svdq_layer_seed(const char *module) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *module; module++) h = (h ^ (uint8_t)*module) * 1099511628211ull;
    return h;
}
static double bf(uint16_t h) { return (double)qd_bf16_to_f32(h); }

/* ================================ SVDQ W4A4 ================================ */

void qd_svdq_layer_free(qd_svdq_layer *l) {
    free(l->codes), free(l->wscales), free(l->wscales8), free(l->smooth), free(l->down), free(l->up), free(l->bias_v), free(l->wcscales);
    memset(l, 0, sizeof *l);
}

/* Σ_r up[n][r]·down[r][x] for one row n, over the logical columns */
static void lowrank_row(const qd_svdq_layer *l, int64_t n, double *row) {
    for (int64_t x = 0; x < l->k; x++) row[x] = 0;
    for (int64_t r = 0; r < l->rank; r++) {
        const double u = bf(l->up[n * l->rank + r]);
        if (u == 0.0) continue;
        const uint16_t *d = l->down + r * l->kp;
        for (int64_t x = 0; x < l->k; x++) row[x] += u * bf(d[x]);
    }
}

/* The dequantized residual code of element (n, x) times its scales, without the smoothing division. */
static double residual_value(const qd_svdq_layer *l, int64_t n, int64_t x) {
    const uint8_t c = l->codes[n * l->kp + x];
    if (!l->nvfp4) return (double)((int)c - ((c & 8) ? 16 : 0)) * bf(l->wscales[n * (l->kp / 64) + x / 64]);
    const double s1 = l->per_channel ? bf(l->wcscales[n]) : bf(l->wtscale);
    return (double)qd_e2m1_to_f32(c) * (double)qd_e4m3_to_f32(l->wscales8[n * (l->kp / 16) + x / 16]) * s1;
}

qd_status qd_svdq_effective(const qd_svdq_layer *l, double *w_eff) {
    double *row = malloc(sizeof *row * (size_t)l->k + 8);
    if (!row) return qd_fail(QD_ENOMEM, "cannot allocate a row of %lld", (long long)l->k);
    for (int64_t n = 0; n < l->n; n++) {
        lowrank_row(l, n, row);
        for (int64_t x = 0; x < l->k; x++) w_eff[n * l->k + x] = residual_value(l, n, x) / bf(l->smooth[x]) + row[x];
    }
    free(row);
    return QD_OK;
}

/* int4: wscale = bf16(amax/7) per 64 inputs, q = RNE(R/wscale) clamped to [−8, 7] (formats.md §5.3). */
static void quantize_int4(qd_svdq_layer *l, const float *rs) {
    const int64_t groups = l->kp / 64;
    for (int64_t n = 0; n < l->np; n++)
        for (int64_t g = 0; g < groups; g++) {
            uint16_t *ws = &l->wscales[n * groups + g];
            if (n >= l->n) {
                *ws = BF16_ONE; /* padding rows: scale 1, codes 0 */
                continue;
            }
            const float *x = rs + n * l->kp + g * 64;
            float amax = 0;
            for (int i = 0; i < 64; i++) amax = fmaxf(amax, fabsf(x[i]));
            *ws = qd_f32_to_bf16(amax / 7.0f);
            if (qd_bf16_to_f32(*ws) == 0.0f) *ws = BF16_ONE;
            const float s = qd_bf16_to_f32(*ws);
            for (int i = 0; i < 64; i++) {
                float q = rintf(x[i] / s);
                q = q < -8 ? -8 : q > 7 ? 7 : q;
                l->codes[n * l->kp + g * 64 + i] = (uint8_t)((int)q & 0x0F);
            }
        }
}

/* nvfp4: s1 per tensor or per fused shard, s2 = E4M3(amax_b/(6·s1)) per 16 inputs, E2M1 codes (§5.3). */
static qd_status quantize_nvfp4(qd_svdq_layer *l, const float *rs, const qd_svdq_opts *o) {
    const int64_t groups = l->kp / 16;
    float *s1 = malloc(sizeof *s1 * (size_t)l->np);
    if (!s1) return qd_fail(QD_ENOMEM, "cannot allocate %lld scales", (long long)l->np);
    int64_t row0 = 0;
    const int shards = o->n_shards > 1 ? o->n_shards : 1;
    for (int sh = 0; sh < shards; sh++) {
        const int64_t rows = o->n_shards > 1 ? o->shard_rows[sh] : l->n;
        float amax = 0;
        for (int64_t i = row0 * l->kp; i < (row0 + rows) * l->kp; i++) amax = fmaxf(amax, fabsf(rs[i]));
        uint16_t h = qd_f32_to_bf16(amax / (6.0f * 448.0f));
        if (qd_bf16_to_f32(h) == 0.0f) h = BF16_ONE;
        for (int64_t i = row0; i < row0 + rows; i++) s1[i] = qd_bf16_to_f32(h);
        if (l->per_channel)
            for (int64_t i = row0; i < row0 + rows; i++) l->wcscales[i] = h;
        else
            l->wtscale = h;
        row0 += rows;
    }
    for (int64_t n = l->n; n < l->np; n++) {
        s1[n] = 1.0f;
        if (l->per_channel) l->wcscales[n] = BF16_ONE;
    }
    for (int64_t n = 0; n < l->np; n++)
        for (int64_t g = 0; g < groups; g++) {
            uint8_t *sb = &l->wscales8[n * groups + g];
            if (n >= l->n) {
                *sb = E4M3_ONE;
                continue;
            }
            const float *x = rs + n * l->kp + g * 16;
            float amax = 0;
            for (int i = 0; i < 16; i++) amax = fmaxf(amax, fabsf(x[i]));
            float raw = amax / (6.0f * s1[n]);
            if (raw == 0.0f) raw = 1.0f;
            *sb = qd_f32_to_e4m3(raw);
            const float s2 = qd_e4m3_to_f32(*sb);
            for (int i = 0; i < 16; i++) /* a block scale that rounds to 0 only scales values that round to 0 */
                l->codes[n * l->kp + g * 16 + i] = s2 > 0 ? qd_f32_to_e2m1((x[i] / s1[n]) / s2) : 0;
        }
    free(s1);
    return QD_OK;
}

qd_status qd_svdq_quantize(const char *name, const float *w, const float *bias, int64_t n, int64_t k, const float *smooth,
                           const qd_svdq_opts *o, qd_svdq_layer *out) {
    memset(out, 0, sizeof *out);
    if (n <= 0 || k <= 0) return qd_fail(QD_EINVAL, "layer '%s': %lld x %lld: sizes must be positive", name, (long long)n, (long long)k);
    if (o->rank < 0 || o->rank > 4096) return qd_fail(QD_EINVAL, "layer '%s': rank %d: expected 0..4096", name, o->rank);
    if (o->n_shards > QD_SVDQ_MAX_SHARDS) return qd_fail(QD_EINVAL, "layer '%s': %d fused shards (at most %d)", name, o->n_shards, QD_SVDQ_MAX_SHARDS);
    if (o->n_shards > 1) {
        int64_t sum = 0;
        for (int i = 0; i < o->n_shards; i++) sum += o->shard_rows[i];
        if (sum != n) return qd_fail(QD_EINVAL, "layer '%s': fused shards of %lld rows in all, the weight has %lld", name, (long long)sum, (long long)n);
    }
    qd_svdq_layer *l = out;
    l->n = n, l->k = k, l->np = round_up(n, 128), l->kp = round_up(k, 128), l->rank = round_up(o->rank, 16);
    l->nvfp4 = o->nvfp4, l->after_gelu = o->after_gelu && !o->nvfp4, l->bias = o->bias, l->v1_names = o->v1_names;
    l->per_channel = o->nvfp4 && o->n_shards > 1;
    const int64_t np = l->np, kp = l->kp, rs = l->rank;
    const int r_eff = (int)(o->rank < n ? (o->rank < k ? o->rank : k) : (n < k ? n : k));
    l->codes = calloc((size_t)(np * kp), 1);
    l->wscales = o->nvfp4 ? NULL : malloc(sizeof *l->wscales * (size_t)(np * (kp / 64)));
    l->wscales8 = o->nvfp4 ? malloc((size_t)(np * (kp / 16))) : NULL;
    l->smooth = malloc(sizeof *l->smooth * (size_t)kp);
    l->down = calloc((size_t)(rs * kp), sizeof *l->down);
    l->up = calloc((size_t)(np * rs), sizeof *l->up);
    l->bias_v = o->bias ? malloc(sizeof *l->bias_v * (size_t)np) : NULL;
    l->wcscales = l->per_channel ? malloc(sizeof *l->wcscales * (size_t)np) : NULL;
    float *ws = malloc(sizeof *ws * (size_t)(n * k));
    float *res = calloc((size_t)(n * kp), sizeof *res);
    double *u = malloc(sizeof *u * (size_t)(n * r_eff) + 8), *sig = malloc(sizeof *sig * (size_t)r_eff + 8);
    double *v = malloc(sizeof *v * (size_t)(r_eff * k) + 8), *row = malloc(sizeof *row * (size_t)k);
    qd_status s = QD_OK;
    if (!l->codes || (!o->nvfp4 && !l->wscales) || (o->nvfp4 && !l->wscales8) || !l->smooth || !l->down || !l->up || (o->bias && !l->bias_v) ||
        (l->per_channel && !l->wcscales) || !ws || !res || !u || !sig || !v || !row)
        s = qd_fail(QD_ENOMEM, "layer '%s': cannot allocate the quantization of a %lld x %lld weight", name, (long long)n, (long long)k);
    for (int64_t x = 0; !s && x < kp; x++) {
        const float f = x < k && smooth ? smooth[x] : 1.0f;
        if (!(f > 0) || !isfinite(f))
            s = qd_fail(QD_EINVAL, "layer '%s': smoothing factor %g for input %lld (expected a positive finite value)", name, (double)f, (long long)x);
        else
            l->smooth[x] = qd_f32_to_bf16(f);
    }
    for (int64_t i = 0; !s && i < n * k; i++) {
        if (!isfinite(w[i])) s = qd_fail(QD_EFORMAT, "layer '%s': weight element (%lld, %lld) is %g", name, (long long)(i / k), (long long)(i % k), (double)w[i]);
        else ws[i] = w[i] * qd_bf16_to_f32(l->smooth[i % k]);
    }
    /* the low-rank branch of the smoothed weight */
    if (!s && r_eff > 0) s = qd_lowrank_svd(ws, n, k, r_eff, o->seed, u, sig, v);
    for (int r = 0; !s && r < r_eff; r++) {
        const double sq = sqrt(sig[r]);
        for (int64_t i = 0; i < n; i++) l->up[i * rs + r] = qd_f32_to_bf16((float)(u[i * r_eff + r] * sq));
        for (int64_t x = 0; x < k; x++) {
            const float smoothed = qd_bf16_to_f32(qd_f32_to_bf16((float)(sq * v[(int64_t)r * k + x])));
            l->down[r * kp + x] = qd_f32_to_bf16(smoothed / qd_bf16_to_f32(l->smooth[x]));
        }
    }
    /* the residual, smoothed: R_s = (W − up·down)·smooth, padded columns 0 */
    for (int64_t i = 0; !s && i < n; i++) {
        lowrank_row(l, i, row);
        for (int64_t x = 0; x < k; x++) res[i * kp + x] = (float)(((double)w[i * k + x] - row[x]) * bf(l->smooth[x]));
    }
    if (!s && o->nvfp4) s = quantize_nvfp4(l, res, o);
    if (!s && !o->nvfp4) quantize_int4(l, res);
    for (int64_t i = 0; !s && o->bias && i < np; i++) {
        if (i >= n) {
            l->bias_v[i] = BF16_ONE;
            continue;
        }
        double b = bias ? (double)bias[i] : 0.0;
        if (l->after_gelu) { /* the kernel adds SHIFT·Σ_k main[i][k] for the shifted input; take it out here */
            double sum = 0;
            for (int64_t x = 0; x < k; x++) sum += residual_value(l, i, x) / bf(l->smooth[x]);
            b -= SHIFT_GELU * sum;
        }
        l->bias_v[i] = qd_f32_to_bf16((float)b);
    }
    if (!s) {
        double num = 0, den = 0;
        for (int64_t i = 0; i < n; i++) {
            lowrank_row(l, i, row);
            for (int64_t x = 0; x < k; x++) {
                const double e = residual_value(l, i, x) / bf(l->smooth[x]) + row[x] - (double)w[i * k + x];
                num += e * e, den += (double)w[i * k + x] * w[i * k + x];
            }
        }
        l->rel_err = den > 0 ? sqrt(num / den) : sqrt(num);
    }
    free(ws), free(res), free(u), free(sig), free(v), free(row);
    if (s) qd_svdq_layer_free(l);
    return s;
}

/* ---- the stored tensors ---- */

typedef enum { T_QWEIGHT, T_WSCALES, T_WTSCALE, T_WCSCALES, T_BIAS, T_SMOOTH, T_SMOOTH_ORIG, T_DOWN, T_UP, T_COUNT } svdq_tensor;

static const char *tensor_name(svdq_tensor t, bool v1) {
    static const char *const legacy[] = {"qweight", "wscales", "wtscale", "wcscales", "bias", "smooth", "smooth_orig", "lora_down", "lora_up"};
    static const char *const py[] = {"qweight", "wscales", "wtscale", "wcscales", "bias", "smooth_factor", "smooth_factor_orig", "proj_down", "proj_up"};
    return v1 ? py[t] : legacy[t];
}

/* Whether a layer of these options stores tensor t, and its dtype and shape (formats.md §5.2). */
static bool tensor_spec(svdq_tensor t, int64_t np, int64_t kp, int64_t rs, bool nvfp4, bool per_channel, bool bias, qd_dtype *dt, int *rank,
                        int64_t shape[2]) {
    *dt = QD_DTYPE_BF16, *rank = 1;
    switch (t) {
    case T_QWEIGHT: *dt = QD_DTYPE_I8, *rank = 2, shape[0] = np, shape[1] = kp / 2; return true;
    case T_WSCALES:
        *rank = 2, shape[0] = kp / (nvfp4 ? 16 : 64), shape[1] = np;
        if (nvfp4) *dt = QD_DTYPE_F8_E4M3;
        return true;
    case T_WTSCALE: shape[0] = 1; return nvfp4 && !per_channel;
    case T_WCSCALES: shape[0] = np; return nvfp4 && per_channel;
    case T_BIAS: shape[0] = np; return bias;
    case T_SMOOTH:
    case T_SMOOTH_ORIG: shape[0] = kp; return true;
    case T_DOWN: *rank = 2, shape[0] = kp, shape[1] = rs; return true;
    case T_UP: *rank = 2, shape[0] = np, shape[1] = rs; return true;
    default: return false;
    }
}

qd_status qd_svdq_declare(qd_st_writer *w, const char *module, int64_t n, int64_t k, const qd_svdq_opts *o) {
    const int64_t np = round_up(n, 128), kp = round_up(k, 128), rs = round_up(o->rank, 16);
    for (int t = 0; t < T_COUNT; t++) {
        qd_dtype dt;
        int rank;
        int64_t shape[2];
        if (!tensor_spec((svdq_tensor)t, np, kp, rs, o->nvfp4, o->nvfp4 && o->n_shards > 1, o->bias, &dt, &rank, shape)) continue;
        char name[320];
        snprintf(name, sizeof name, "%s.%s", module, tensor_name((svdq_tensor)t, o->v1_names));
        qd_status s = qd_st_writer_add(w, name, dt, rank, shape);
        if (s) return s;
    }
    return QD_OK;
}

qd_status qd_svdq_put(qd_st_writer *w, const char *module, const qd_svdq_layer *l) {
    const int64_t np = l->np, kp = l->kp, rs = l->rank;
    /* the largest stored tensor: qweight (Np·Kp/2 bytes) or a low-rank factor (max(Np, Kp)·rank·2); the
       scales and vectors are smaller than qweight */
    const int64_t wide = np > kp ? np : kp;
    const size_t big = (size_t)(np * kp / 2 > wide * rs * 2 ? np * kp / 2 : wide * rs * 2);
    uint8_t *buf = malloc(big);
    if (!buf) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its packed tensors", module);
    qd_status s = QD_OK;
    for (int t = 0; !s && t < T_COUNT; t++) {
        qd_dtype dt;
        int rank;
        int64_t shape[2];
        if (!tensor_spec((svdq_tensor)t, np, kp, rs, l->nvfp4, l->per_channel, l->bias, &dt, &rank, shape)) continue;
        uint64_t bytes = (uint64_t)shape[0] * (rank == 2 ? (uint64_t)shape[1] : 1) * (uint64_t)qd_dtype_bits(dt) / 8;
        switch ((svdq_tensor)t) {
        case T_QWEIGHT: s = qd_svdq_qweight_pack(l->codes, np, kp, buf); break;
        case T_WSCALES: s = l->nvfp4 ? qd_svdq_wscales_fp4_pack(l->wscales8, np, kp, buf) : qd_svdq_wscales_int4_pack(l->wscales, np, kp, buf); break;
        case T_WTSCALE: memcpy(buf, &l->wtscale, 2); break;
        case T_WCSCALES: s = qd_svdq_vector_pack(l->wcscales, np, buf); break;
        case T_BIAS: s = qd_svdq_vector_pack(l->bias_v, np, buf); break;
        case T_SMOOTH:
        case T_SMOOTH_ORIG: s = qd_svdq_vector_pack(l->smooth, kp, buf); break; /* no smoothing was fused: orig = smooth */
        case T_DOWN: s = qd_svdq_lowrank_down_pack(l->down, rs, kp, buf); break;
        case T_UP: s = qd_svdq_lowrank_up_pack(l->up, np, rs, buf); break;
        default: break;
        }
        char name[320];
        snprintf(name, sizeof name, "%s.%s", module, tensor_name((svdq_tensor)t, l->v1_names));
        if (!s) s = qd_st_writer_put(w, name, buf, bytes);
    }
    free(buf);
    return s;
}

/* ================================ AWQ W4A16 ================================ */

/* The converter's group-row count: groups rounded to packs of 8, packs to even (formats.md §5.6). */
static int64_t awq_groups_padded(int64_t k) {
    const int64_t packs = ((k / 64 + 7) / 8 + 1) / 2 * 2;
    return packs * 8;
}

void qd_awq_layer_free(qd_awq_layer *l) {
    free(l->codes), free(l->wscales), free(l->wzeros), free(l->bias_v);
    memset(l, 0, sizeof *l);
}

qd_status qd_awq_quantize(const char *name, const float *w, const float *bias, int64_t n, int64_t k, int chunks, qd_awq_layer *out) {
    memset(out, 0, sizeof *out);
    if (chunks < 1 || n <= 0 || n % (4 * chunks) || k <= 0 || k % 64) {
        return qd_fail(QD_EUNSUPPORTED,
                       "layer '%s': %lld x %lld: a Nunchaku AWQ W4A16 layer needs K a multiple of 64 and N a multiple of 4 x %d chunks", name,
                       (long long)n, (long long)k, chunks);
    }
    qd_awq_layer *l = out;
    l->n = n, l->k = k, l->chunks = chunks, l->groups_padded = awq_groups_padded(k);
    const int64_t groups = k / 64, gp = l->groups_padded;
    l->codes = malloc((size_t)(n * k));
    l->wscales = calloc((size_t)(gp * n), sizeof *l->wscales);
    l->wzeros = calloc((size_t)(gp * n), sizeof *l->wzeros);
    l->bias_v = malloc(sizeof *l->bias_v * (size_t)n);
    float *wi = malloc(sizeof *wi * (size_t)(n * k)), *b = malloc(sizeof *b * (size_t)n), *bi = malloc(sizeof *bi * (size_t)n);
    qd_status s = l->codes && l->wscales && l->wzeros && l->bias_v && wi && b && bi ? QD_OK : qd_fail(QD_ENOMEM, "layer '%s': cannot allocate", name);
    for (int64_t i = 0; !s && i < n; i++) b[i] = bias ? bias[i] : 0.0f;
    if (!s) s = qd_awq_mod_interleave(w, 1, n, sizeof(float) * (size_t)k, chunks, wi);
    if (!s) s = qd_awq_mod_interleave(b, 1, n, sizeof(float), chunks, bi);
    double num = 0, den = 0;
    for (int64_t i = 0; !s && i < n; i++)
        for (int64_t g = 0; g < groups; g++) {
            const float *x = wi + i * k + g * 64;
            float amax = 0;
            for (int j = 0; j < 64; j++) amax = fmaxf(amax, fabsf(x[j]));
            uint16_t sh = qd_f32_to_bf16(amax / 7.0f);
            if (qd_bf16_to_f32(sh) == 0.0f) sh = BF16_ONE;
            const float sc = qd_bf16_to_f32(sh), zero = 7.0f * sc;
            const uint16_t zh = (uint16_t)(qd_f32_to_bf16(zero) ^ 0x8000); /* stored negated: W = q·s + wzero */
            l->wscales[g * n + i] = sh;
            l->wzeros[g * n + i] = zh;
            for (int j = 0; j < 64; j++) {
                float q = rintf((x[j] + zero) / sc);
                q = q < 0 ? 0 : q > 15 ? 15 : q;
                l->codes[i * k + g * 64 + j] = (uint8_t)q;
                const double e = (double)q * sc + (double)qd_bf16_to_f32(zh) - (double)x[j];
                num += e * e, den += (double)x[j] * x[j];
            }
        }
    for (int64_t i = 0; !s && i < n; i++) {
        const int64_t c = i % chunks; /* stored row i·C + c: chunk c */
        const float plus = (c == 1 || c == chunks - 2) ? 1.0f : 0.0f;
        l->bias_v[i] = qd_f32_to_bf16(qd_bf16_to_f32(qd_f32_to_bf16(bi[i])) + plus);
    }
    l->rel_err = den > 0 ? sqrt(num / den) : sqrt(num);
    free(wi), free(b), free(bi);
    if (s) qd_awq_layer_free(l);
    return s;
}

qd_status qd_awq_declare(qd_st_writer *w, const char *module, int64_t n, int64_t k) {
    char name[320];
    const int64_t gp = awq_groups_padded(k);
    qd_status s;
    snprintf(name, sizeof name, "%s.qweight", module);
    if ((s = qd_st_writer_add(w, name, QD_DTYPE_I32, 2, (int64_t[]){n / 4, k / 2}))) return s;
    snprintf(name, sizeof name, "%s.wscales", module);
    if ((s = qd_st_writer_add(w, name, QD_DTYPE_BF16, 2, (int64_t[]){gp, n}))) return s;
    snprintf(name, sizeof name, "%s.wzeros", module);
    if ((s = qd_st_writer_add(w, name, QD_DTYPE_BF16, 2, (int64_t[]){gp, n}))) return s;
    snprintf(name, sizeof name, "%s.bias", module);
    return qd_st_writer_add(w, name, QD_DTYPE_BF16, 1, (int64_t[]){n});
}

qd_status qd_awq_put(qd_st_writer *w, const char *module, const qd_awq_layer *l) {
    char name[320];
    uint8_t *packed = malloc((size_t)(l->n * l->k / 2));
    if (!packed) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its packed weight", module);
    qd_status s = qd_awq_qweight_pack(l->codes, l->n, l->k, packed);
    snprintf(name, sizeof name, "%s.qweight", module);
    if (!s) s = qd_st_writer_put(w, name, packed, (uint64_t)(l->n * l->k / 2));
    free(packed);
    const uint64_t gbytes = (uint64_t)(l->groups_padded * l->n) * 2;
    snprintf(name, sizeof name, "%s.wscales", module);
    if (!s) s = qd_st_writer_put(w, name, l->wscales, gbytes);
    snprintf(name, sizeof name, "%s.wzeros", module);
    if (!s) s = qd_st_writer_put(w, name, l->wzeros, gbytes);
    snprintf(name, sizeof name, "%s.bias", module);
    if (!s) s = qd_st_writer_put(w, name, l->bias_v, (uint64_t)l->n * 2);
    return s;
}
