/* Nunchaku SVDQuant linears — W4A4 with a low-rank branch (int4, group 64; nvfp4, group 16) — and the
 * AWQ W4A16 layers that the same files use for the modulation linears.
 *
 * Spec: ../shared/spec/formats.md §5.2 (tensors), §5.3 (values), §5.4 (runtime math), §5.5 (packing,
 * undone with quant/packing.h), §5.6 (AWQ W4A16) and §8.8–8.9; quant-sglang.md §4.9 (tensor names,
 * legacy aliases, per-layer method).
 *
 * Binding turns Nunchaku's MMA-permuted storage into the canonical layout of linear.h, so every view
 * is an owned copy. Sizes stay padded: N = Np and K = Kp (multiples of 128) as stored; the padding
 * rows/columns carry zero codes and zero low-rank entries, and cropping to the model's logical sizes
 * (e.g. N = 200 in a file padded to 256) is the model code's job, since only it knows them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/status.h"
#include "quant/packing.h"
#include "quant/schemes.h"

/* A tensor found under one of two names: the v1 (Python) name or the legacy (C++) one, §5.2. */
typedef struct {
    const qd_ckpt_entry *e;
    const char *suffix; /* the name it was found under, for messages */
} found_tensor;

static qd_status find_alias(const qd_bind_ctx *c, const char *v1, const char *legacy, bool required,
                            found_tensor *out) {
    const qd_ckpt_entry *a = qd_bind_find(c, v1), *b = legacy ? qd_bind_find(c, legacy) : NULL;
    out->e = NULL;
    out->suffix = v1;
    if (a && b) {
        /* No converter writes both; picking one would be a guess about which is current. */
        return qd_fail(QD_EFORMAT, "layer '%s': both '%s.%s' and its legacy name '%s.%s' are present; expected one",
                       c->module, c->module, v1, c->module, legacy);
    }
    if (a || b) {
        out->e = a ? a : b;
        out->suffix = a ? v1 : legacy;
        return QD_OK;
    }
    if (!required) return QD_OK;
    if (legacy) {
        return qd_fail(QD_EFORMAT, "layer '%s': missing tensor '%s.%s' (or its legacy name '%s.%s')", c->module,
                       c->module, v1, c->module, legacy);
    }
    return qd_fail(QD_EFORMAT, "layer '%s': missing tensor '%s.%s'", c->module, c->module, v1);
}

static void shape_text(const qd_st_tensor *t, char *buf, size_t cap) {
    size_t o = 0;
    o += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->rank && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Checks dtype and shape (d1 < 0: rank 1) of a found tensor; the message names it and what was expected. */
static qd_status expect_shape(const qd_bind_ctx *c, const found_tensor *f, qd_dtype dtype, int64_t d0, int64_t d1,
                              const char *meaning) {
    const qd_st_tensor *t = f->e->tensor;
    const int rank = d1 < 0 ? 1 : 2;
    bool ok = t->dtype == dtype && t->rank == rank && t->shape[0] == d0 && (rank == 1 || t->shape[1] == d1);
    if (ok) return QD_OK;
    char got[160], want[64];
    shape_text(t, got, sizeof got);
    if (rank == 1) snprintf(want, sizeof want, "[%lld]", (long long)d0);
    else snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
    return qd_fail(QD_EFORMAT, "layer '%s': '%s.%s' must be %s %s (%s), got %s %s", c->module, c->module, f->suffix,
                   qd_dtype_name(dtype), want, meaning, qd_dtype_name(t->dtype), got);
}

static bool is_16bit_float(qd_dtype t) { return t == QD_DTYPE_BF16 || t == QD_DTYPE_F16; }

static float f16ish_to_f32(qd_dtype t, const void *p, int64_t i) {
    uint16_t h;
    memcpy(&h, (const uint8_t *)p + 2 * i, 2);
    return t == QD_DTYPE_BF16 ? qd_bf16_to_f32(h) : qd_f16_to_f32(h);
}

/* Every element of an unpacked 16-bit (or E4M3) buffer of `count` elements finite. The message names the
 * tensor and the logical position: index i of a vector, or (output, group) of a [N][groups] scale matrix
 * (cols > 1) — the stored position is a permutation of it and would not help a reader. */
static qd_status check_finite(const qd_bind_ctx *c, const char *suffix, qd_dtype t, const void *p, int64_t count,
                              int64_t cols) {
    for (int64_t i = 0; i < count; i++) {
        float v = t == QD_DTYPE_F8_E4M3 ? qd_e4m3_to_f32(((const uint8_t *)p)[i]) : f16ish_to_f32(t, p, i);
        if (isfinite(v)) continue;
        if (cols > 1) {
            return qd_fail(QD_EFORMAT, "layer '%s': '%s.%s' has %g for output %lld, group %lld (expected a finite scale)",
                           c->module, c->module, suffix, (double)v, (long long)(i / cols), (long long)(i % cols));
        }
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.%s' has %g at index %lld (expected a finite value)", c->module,
                       c->module, suffix, (double)v, (long long)i);
    }
    return QD_OK;
}

static qd_view owned_view(qd_dtype dtype, int rank, int64_t d0, int64_t d1, void *data) {
    qd_view v = {.dtype = dtype, .rank = rank, .shape = {d0, d1}, .data = data, .owned = data};
    return v;
}

/* ================================ SVDQuant W4A4 ================================ */

qd_status qd_bind_svdq(const qd_bind_ctx *c, qd_linear *l) {
    qd_status s;
    found_tensor qw, ws, sm, down, up, bias = {0}, wcs = {0}, wts = {0};
    if ((s = find_alias(c, "qweight", NULL, true, &qw))) return s;
    if ((s = find_alias(c, "wscales", NULL, true, &ws))) return s;
    if ((s = find_alias(c, "smooth_factor", "smooth", true, &sm))) return s;
    if ((s = find_alias(c, "proj_down", "lora_down", true, &down))) return s;
    if ((s = find_alias(c, "proj_up", "lora_up", true, &up))) return s;
    if ((s = find_alias(c, "bias", NULL, false, &bias))) return s;
    if ((s = find_alias(c, "wcscales", NULL, false, &wcs))) return s;
    if ((s = find_alias(c, "wtscale", NULL, false, &wts))) return s;
    /* smooth_factor_orig / smooth_orig are not used at run time (§5.2): tolerated, never read. */

    /* qweight I8 [Np, Kp/2]: the padded sizes of the layer. */
    const qd_st_tensor *tq = qw.e->tensor;
    if (tq->dtype != QD_DTYPE_I8 || tq->rank != 2) {
        char got[160];
        shape_text(tq, got, sizeof got);
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.qweight' must be I8 [Np, Kp/2] (packed 4-bit codes), got %s %s",
                       c->module, c->module, qd_dtype_name(tq->dtype), got);
    }
    const int64_t np = tq->shape[0], kp = tq->shape[1] * 2;
    if (np <= 0 || kp <= 0 || np % 128 || kp % 128) {
        /* the packer pads both to 128 (§5.2) and the tile permutation (§5.5.1) assumes it */
        return qd_fail(QD_EFORMAT,
                       "layer '%s': '%s.qweight' [%lld, %lld] gives Np = %lld, Kp = %lld; both must be positive multiples "
                       "of 128",
                       c->module, c->module, (long long)np, (long long)(kp / 2), (long long)np, (long long)kp);
    }

    /* Precision: the wscales dtype is the evidence (§5.1: any fp8 tensor ⇒ fp4); the config must agree. */
    const qd_dtype ws_dtype = ws.e->tensor->dtype;
    const bool nvfp4 = c->cfg->svdq_nvfp4;
    if (nvfp4 && ws_dtype != QD_DTYPE_F8_E4M3) {
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.wscales' is %s, but an nvfp4 SVDQuant layer needs F8_E4M3 block scales",
                       c->module, c->module, qd_dtype_name(ws_dtype));
    }
    if (!nvfp4 && ws_dtype == QD_DTYPE_F8_E4M3) {
        return qd_fail(QD_EFORMAT,
                       "layer '%s': '%s.wscales' is F8_E4M3 (an nvfp4 layer), but the SVDQuant precision is int4 (expected "
                       "BF16/F16 group scales)",
                       c->module, c->module);
    }
    if (!nvfp4 && !is_16bit_float(ws_dtype)) {
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.wscales' must be BF16 or F16 for an int4 SVDQuant layer, got %s",
                       c->module, c->module, qd_dtype_name(ws_dtype));
    }
    if (!nvfp4 && (wcs.e || wts.e)) {
        /* int4 kernels have no per-tensor or per-channel weight scale (§8.8); applying one would be a guess */
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.%s' is only meaningful for an nvfp4 layer, but this one is int4",
                       c->module, c->module, wcs.e ? "wcscales" : "wtscale");
    }

    /* One 16-bit dtype T (the model's) for the vectors and low-rank factors; smooth decides it. */
    const qd_dtype t = sm.e->tensor->dtype;
    if (!is_16bit_float(t)) {
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.%s' must be BF16 or F16, got %s", c->module, c->module, sm.suffix,
                       qd_dtype_name(t));
    }
    const int group = nvfp4 ? 16 : 64;
    const char *ws_meaning = nvfp4 ? "E4M3 scales of 16-input blocks, [Kp/16, Np]"
                                   : "scales of 64-input groups, [Kp/64, Np], in the dtype of the smoothing vector";
    if ((s = expect_shape(c, &ws, nvfp4 ? QD_DTYPE_F8_E4M3 : t, kp / group, np, ws_meaning))) return s;
    if ((s = expect_shape(c, &sm, t, kp, -1, "one divisor per input"))) return s;

    /* Rank from proj_down [Kp, R]; the kernels need R % 16 == 0 (§5.5.5). */
    const qd_st_tensor *td = down.e->tensor;
    if (td->rank != 2 || td->shape[0] != kp) {
        char got[160];
        shape_text(td, got, sizeof got);
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.%s' must be [Kp = %lld, rank], got %s", c->module, c->module,
                       down.suffix, (long long)kp, got);
    }
    const int64_t rank = td->shape[1];
    if (rank <= 0 || rank % 16) {
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.%s' has rank %lld; the low-rank rank must be a positive multiple of 16",
                       c->module, c->module, down.suffix, (long long)rank);
    }
    /* nunchaku pads the rank to a multiple of 16 with zero rows (formats.md §5.5, pitfall 9): an r8 file
       stores 16 */
    if (c->cfg->svdq_rank > 0 && (c->cfg->svdq_rank + 15) / 16 * 16 != rank) {
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.%s' has rank %lld, but the SVDQuant config says rank %d (stored padded to %d)",
                       c->module, c->module, down.suffix, (long long)rank, c->cfg->svdq_rank, (c->cfg->svdq_rank + 15) / 16 * 16);
    }
    if ((s = expect_shape(c, &down, t, kp, rank, "low-rank down, [Kp, rank]"))) return s;
    if ((s = expect_shape(c, &up, t, np, rank, "low-rank up, [Np, rank]"))) return s;
    if (bias.e && (s = expect_shape(c, &bias, t, np, -1, "one per output, permuted"))) return s;
    if (wcs.e && (s = expect_shape(c, &wcs, t, np, -1, "per-channel scale, permuted"))) return s;
    if (c->dry) {
        /* a plan: the headers are checked; the data is neither read nor unpacked */
        l->scheme = nvfp4 ? QD_SCHEME_SVDQ_NVFP4 : QD_SCHEME_SVDQ_INT4;
        snprintf(l->scheme_name, sizeof l->scheme_name, nvfp4 ? "svdq_nvfp4" : "svdq_int4");
        l->out_features = np;
        l->in_features = kp;
        l->act = QD_ACT_DYNAMIC_GROUP;
        l->act_group = l->block_k = (int)group;
        return QD_OK;
    }
    float alpha = 1.0f;
    if (wts.e) {
        if ((s = qd_bind_scalar(c, "wtscale", &alpha))) return s;
        if (!isfinite(alpha)) {
            return qd_fail(QD_EFORMAT, "layer '%s': '%s.wtscale' is %g (expected a finite value)", c->module, c->module,
                           (double)alpha);
        }
    }

    /* Everything is validated: unpack into owned canonical buffers. */
    const size_t scale_elems = (size_t)(np * (kp / group)), scale_bytes = scale_elems * (nvfp4 ? 1 : 2);
    uint8_t *codes = malloc((size_t)(np * kp));
    uint8_t *weight = malloc((size_t)(np * kp / 2));
    void *scale = malloc(scale_bytes);
    void *smooth = malloc((size_t)kp * 2);
    void *lora_down = malloc((size_t)(rank * kp) * 2);
    void *lora_up = malloc((size_t)(np * rank) * 2);
    void *bias_v = bias.e ? malloc((size_t)np * 2) : NULL;
    void *wcs_v = wcs.e ? malloc((size_t)np * 2) : NULL;
    void *all[] = {codes, weight, scale, smooth, lora_down, lora_up, bias_v, wcs_v};
    const size_t n_all = sizeof all / sizeof *all;
    if (!codes || !weight || !scale || !smooth || !lora_down || !lora_up || (bias.e && !bias_v) || (wcs.e && !wcs_v)) {
        for (size_t i = 0; i < n_all; i++) free(all[i]);
        return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate the unpacked SVDQuant layer (%lld×%lld, rank %lld)",
                       c->module, (long long)np, (long long)kp, (long long)rank);
    }
    const void *dq = qd_st_data(qw.e->file, qw.e->tensor);
    s = qd_svdq_qweight_unpack(dq, np, kp, codes);
    if (!s) {
        const void *p = qd_st_data(ws.e->file, ws.e->tensor);
        s = nvfp4 ? qd_svdq_wscales_fp4_unpack(p, np, kp, scale) : qd_svdq_wscales_int4_unpack(p, np, kp, scale);
    }
    if (!s) s = qd_svdq_vector_unpack(qd_st_data(sm.e->file, sm.e->tensor), kp, smooth);
    if (!s) s = qd_svdq_lowrank_down_unpack(qd_st_data(down.e->file, down.e->tensor), rank, kp, lora_down);
    if (!s) s = qd_svdq_lowrank_up_unpack(qd_st_data(up.e->file, up.e->tensor), np, rank, lora_up);
    if (!s && bias_v) s = qd_svdq_vector_unpack(qd_st_data(bias.e->file, bias.e->tensor), np, bias_v);
    if (!s && wcs_v) s = qd_svdq_vector_unpack(qd_st_data(wcs.e->file, wcs.e->tensor), np, wcs_v);
    /* NaN scales would poison every output; padding entries are 0 or 1 depending on the converter (§8.9),
     * both fine. */
    if (!s) s = check_finite(c, "wscales", nvfp4 ? QD_DTYPE_F8_E4M3 : t, scale, (int64_t)scale_elems, kp / group);
    if (!s) s = check_finite(c, sm.suffix, t, smooth, kp, 1);
    if (!s && wcs_v) s = check_finite(c, "wcscales", t, wcs_v, np, 1);
    if (!s) {
        /* A zero smoothing divisor is legitimate only for a padded input column, whose codes are all zero
         * (nunchaku's own packer pads smooth with 0, §5.3); anywhere else the layer would divide by zero. */
        for (int64_t k = 0; k < kp && !s; k++) {
            if (f16ish_to_f32(t, smooth, k) != 0.0f) continue;
            for (int64_t n = 0; n < np; n++) {
                const uint8_t code = codes[n * kp + k];
                if ((nvfp4 ? code & 7 : code) != 0) {
                    s = qd_fail(QD_EFORMAT,
                                "layer '%s': '%s.%s'[%lld] is 0 but weight column %lld has nonzero codes (row %lld); "
                                "a zero divisor is only valid for padding",
                                c->module, c->module, sm.suffix, (long long)k, (long long)k, (long long)n);
                    break;
                }
            }
        }
    }
    if (s) {
        for (size_t i = 0; i < n_all; i++) free(all[i]);
        return s;
    }
    /* One code per byte → lo-first nibble pairs: the same byte format as an NVFP4 weight (linear.h). */
    qd_pack_uint4(codes, (size_t)(np * kp), weight);
    free(codes);

    l->scheme = nvfp4 ? QD_SCHEME_SVDQ_NVFP4 : QD_SCHEME_SVDQ_INT4;
    snprintf(l->scheme_name, sizeof l->scheme_name, "%s", nvfp4 ? "svdq_nvfp4" : "svdq_int4");
    l->out_features = np;
    l->in_features = kp;
    l->act = QD_ACT_DYNAMIC_GROUP;
    l->act_group = group;
    l->block_n = 0;
    l->block_k = group;
    /* Per layer the model code knows better (fc2 after a fused GELU, §5.4); this is the config default. */
    l->act_unsigned = c->cfg->svdq_act_unsigned;
    l->alpha = alpha;
    l->weight = owned_view(QD_DTYPE_U8, 2, np, kp / 2, weight);
    l->scale = owned_view(nvfp4 ? QD_DTYPE_F8_E4M3 : t, 2, np, kp / group, scale);
    l->smooth = owned_view(t, 1, kp, 0, smooth);
    l->lora_down = owned_view(t, 2, rank, kp, lora_down);
    l->lora_up = owned_view(t, 2, np, rank, lora_up);
    if (bias_v) l->bias = owned_view(t, 1, np, 0, bias_v);
    if (wcs_v) l->scale2 = owned_view(t, 1, np, 0, wcs_v);
    return QD_OK;
}

/* The f32 reference. §5.4 for one input row x (steps 1–6, activation quantization left out — that is
 * the runtime's approximation, not part of W):
 *   1. a[r]   = Σ_k x[k]·D[r][k]                       (lora_down on the RAW x: D was stored already
 *                                                        divided by smooth, §5.3)
 *   2. xs[k]  = x[k] / smooth[k]
 *   3–4. m[n] = α · Σ_k xs[k]·deq(code[n][k])·ws[n][k/G]  (main 4-bit GEMM on xs; α = wtscale, fp4)
 *   5. y[n]   = m[n]·wcs[n] + b[n]                       (wcscales scale the main GEMM only, then bias)
 *   6. y[n]  += Σ_r a[r]·U[n][r]                         (low-rank up added last, unscaled)
 * Collecting the coefficient of x[k]:
 *   y[n] = Σ_k x[k] · ( deq(code[n][k])·ws[n][k/G]·α·wcs[n] / smooth[k] + Σ_r U[n][r]·D[r][k] ) + b[n]
 * so W_eff[n][k] is the bracket (wcs[n] = 1 when absent, α = 1 when absent). A zero smooth[k] only
 * occurs on padded columns whose codes are all zero (checked at bind), where the main term is 0.
 * Computed in double and rounded once to f32. */
qd_status qd_dequantize_svdq(const qd_linear *l, float *out) {
    const int64_t n_out = l->out_features, k_in = l->in_features;
    const int64_t rank = l->lora_down.data ? l->lora_down.shape[0] : 0;
    const int group = l->block_k;
    const bool nvfp4 = l->scheme == QD_SCHEME_SVDQ_NVFP4;
    if (group <= 0 || !l->weight.data || !l->scale.data || !l->smooth.data) {
        return qd_fail(QD_EINVAL, "layer '%s': not a bound SVDQuant layer", l->name ? l->name : "?");
    }
    double *inv_smooth = malloc(sizeof(double) * (size_t)k_in);
    double *down = malloc(sizeof(double) * (size_t)(rank * k_in) + 1);
    double *up_row = malloc(sizeof(double) * (size_t)rank + 1);
    if (!inv_smooth || !down || !up_row) {
        free(inv_smooth), free(down), free(up_row);
        return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate the dequantization workspace", l->name ? l->name : "?");
    }
    for (int64_t k = 0; k < k_in; k++) {
        const double sm = qd_view_get(&l->smooth, k, 0);
        inv_smooth[k] = sm != 0.0 ? 1.0 / sm : 0.0;
    }
    for (int64_t i = 0; i < rank * k_in; i++) down[i] = qd_view_get_flat(&l->lora_down, i);
    const uint8_t *w = l->weight.data;
    for (int64_t n = 0; n < n_out; n++) {
        const double channel = (double)l->alpha * (l->scale2.data ? qd_view_get(&l->scale2, n, 0) : 1.0);
        for (int64_t r = 0; r < rank; r++) up_row[r] = qd_view_get(&l->lora_up, n, r);
        for (int64_t k = 0; k < k_in; k++) {
            const uint8_t code = (uint8_t)((w[(n * k_in + k) / 2] >> (4 * (k & 1))) & 0x0F);
            const double q = nvfp4 ? (double)qd_e2m1_to_f32(code) : (double)((int)code - ((code & 8) ? 16 : 0));
            /* q·ws·α·wcs / smooth, as a multiply by 1/smooth: the division and this agree to a few ulps of
             * double, far below the f32 rounding that follows */
            double v = q * (double)qd_view_get(&l->scale, n, k / group) * channel * inv_smooth[k];
            for (int64_t r = 0; r < rank; r++) v += up_row[r] * down[r * k_in + k];
            out[n * k_in + k] = (float)v;
        }
    }
    free(inv_smooth), free(down), free(up_row);
    return QD_OK;
}

/* Unsigned int4 layers (fc2 after GELU, formats.md §5.4): the kernel quantizes x + SHIFT_GELU on the main
 * path, and the converter stored b − SHIFT·Σ_k main[n][k] as the bias. The layer's true bias is thus the
 * stored one plus that sum: added here so the reference x·W_effᵀ + b is the layer's function. */
void qd_svdq_add_shift_bias(const qd_linear *l, float *bias) {
    if (l->scheme != QD_SCHEME_SVDQ_INT4 || !l->act_unsigned) return;
    const int64_t n_out = l->out_features, k_in = l->in_features;
    const uint8_t *w = l->weight.data;
    for (int64_t n = 0; n < n_out; n++) {
        const double channel = (double)l->alpha * (l->scale2.data ? qd_view_get(&l->scale2, n, 0) : 1.0);
        double sum = 0;
        for (int64_t k = 0; k < k_in; k++) {
            const double sm = qd_view_get(&l->smooth, k, 0);
            if (sm == 0.0) continue;
            const uint8_t code = (uint8_t)((w[(n * k_in + k) / 2] >> (4 * (k & 1))) & 0x0F);
            sum += (double)((int)code - ((code & 8) ? 16 : 0)) * (double)qd_view_get(&l->scale, n, k / l->block_k) / sm;
        }
        bias[n] = (float)((double)bias[n] + QD_SVDQ_SHIFT_GELU * channel * sum);
    }
}

/* ================================ AWQ W4A16 ================================ */

/* Binds the layer in its STORED row order with the stored bias. Modulation layers (FLUX norm1.linear,
 * norm1_context.linear, norm.linear; Qwen-Image img_mod.1 / txt_mod.1) interleave their output rows by
 * chunk and carry +1 in the bias of the "scale" chunks (§5.6); whether a layer is one, and with how
 * many chunks, is a property of the model, so the model code de-interleaves (qd_awq_mod_deinterleave)
 * and accounts for the +1 — the binder does not guess. */
qd_status qd_bind_awq(const qd_bind_ctx *c, qd_linear *l) {
    qd_status s;
    found_tensor qw, ws, wz;
    if ((s = find_alias(c, "qweight", NULL, true, &qw))) return s;
    if ((s = find_alias(c, "wscales", NULL, true, &ws))) return s;
    if ((s = find_alias(c, "wzeros", NULL, true, &wz))) return s;
    const qd_st_tensor *tq = qw.e->tensor;
    if (tq->dtype != QD_DTYPE_I32 || tq->rank != 2) {
        char got[160];
        shape_text(tq, got, sizeof got);
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.qweight' must be I32 [N/4, K/2] (AWQ W4A16), got %s %s", c->module,
                       c->module, qd_dtype_name(tq->dtype), got);
    }
    const int64_t n = tq->shape[0] * 4, k = tq->shape[1] * 2;
    if (n <= 0 || k <= 0 || k % 64) {
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.qweight' [%lld, %lld] gives K = %lld; K must be a positive multiple of 64",
                       c->module, c->module, (long long)tq->shape[0], (long long)tq->shape[1], (long long)k);
    }
    const int64_t groups = k / 64;
    const qd_dtype t = ws.e->tensor->dtype;
    if (!is_16bit_float(t)) {
        return qd_fail(QD_EFORMAT, "layer '%s': '%s.wscales' must be BF16 or F16, got %s", c->module, c->module,
                       qd_dtype_name(t));
    }
    /* [G, N] with G ≥ K/64: the converter pads the group axis (to a multiple of 16), §5.6 */
    const found_tensor *pair[2] = {&ws, &wz};
    for (int i = 0; i < 2; i++) {
        const qd_st_tensor *tt = pair[i]->e->tensor;
        if (tt->dtype != t || tt->rank != 2 || tt->shape[1] != n || tt->shape[0] < groups) {
            char got[160];
            shape_text(tt, got, sizeof got);
            return qd_fail(QD_EFORMAT,
                           "layer '%s': '%s.%s' must be %s [G, %lld] with G ≥ K/64 = %lld (group scales of a [%lld, %lld] "
                           "weight), got %s %s",
                           c->module, c->module, pair[i]->suffix, qd_dtype_name(t), (long long)n, (long long)groups,
                           (long long)n, (long long)k, qd_dtype_name(tt->dtype), got);
        }
    }
    if ((s = qd_bind_bias(c, n, l))) return s;
    if (c->dry) {
        l->scheme = QD_SCHEME_AWQ_W4A16;
        snprintf(l->scheme_name, sizeof l->scheme_name, "awq_w4a16");
        l->out_features = n;
        l->in_features = k;
        l->act = QD_ACT_NONE;
        l->block_k = 64;
        return QD_OK;
    }

    uint8_t *codes = malloc((size_t)(n * k)), *weight = malloc((size_t)(n * k / 2));
    uint8_t *scale = malloc((size_t)(n * groups) * 2), *zeros = malloc((size_t)(n * groups) * 2);
    if (!codes || !weight || !scale || !zeros) {
        free(codes), free(weight), free(scale), free(zeros);
        qd_view_free(&l->bias);
        return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate the unpacked AWQ layer (%lld×%lld)", c->module,
                       (long long)n, (long long)k);
    }
    if ((s = qd_awq_qweight_unpack(qd_st_data(qw.e->file, qw.e->tensor), n, k, codes))) {
        free(codes), free(weight), free(scale), free(zeros);
        qd_view_free(&l->bias);
        return s;
    }
    qd_pack_uint4(codes, (size_t)(n * k), weight);
    free(codes);
    /* [g][n] → [n][g], dropping the padding rows g ≥ K/64 */
    const uint8_t *ps = qd_st_data(ws.e->file, ws.e->tensor), *pz = qd_st_data(wz.e->file, wz.e->tensor);
    for (int64_t g = 0; g < groups; g++)
        for (int64_t i = 0; i < n; i++) {
            memcpy(scale + 2 * (i * groups + g), ps + 2 * (g * n + i), 2);
            memcpy(zeros + 2 * (i * groups + g), pz + 2 * (g * n + i), 2);
        }
    l->scheme = QD_SCHEME_AWQ_W4A16;
    snprintf(l->scheme_name, sizeof l->scheme_name, "awq_w4a16");
    l->out_features = n;
    l->in_features = k;
    l->act = QD_ACT_NONE;
    l->act_group = 0;
    l->block_n = 0;
    l->block_k = 64;
    l->act_unsigned = false;
    l->alpha = 1.0f;
    l->weight = owned_view(QD_DTYPE_U8, 2, n, k / 2, weight);
    l->scale = owned_view(t, 2, n, groups, scale);
    l->zeros = owned_view(t, 2, n, groups, zeros);
    return QD_OK;
}

/* W[n][k] = q·scale[n][k/64] + zeros[n][k/64], q ∈ 0..15 (zeros are stored pre-scaled and negated,
 * −7·scale for the shipped converter, §5.6). */
qd_status qd_dequantize_awq(const qd_linear *l, float *out) {
    const int64_t n_out = l->out_features, k_in = l->in_features;
    if (l->block_k <= 0 || !l->weight.data || !l->scale.data || !l->zeros.data) {
        return qd_fail(QD_EINVAL, "layer '%s': not a bound AWQ W4A16 layer", l->name ? l->name : "?");
    }
    const uint8_t *w = l->weight.data;
    for (int64_t n = 0; n < n_out; n++)
        for (int64_t k = 0; k < k_in; k++) {
            const int q = (w[(n * k_in + k) / 2] >> (4 * (k & 1))) & 0x0F;
            const int64_t g = k / l->block_k;
            /* in double, so the only rounding is the final one to f32 (for the shipped zeros, −7·scale, the
             * result is exact) */
            out[n * k_in + k] = (float)((double)q * qd_view_get(&l->scale, n, g) + qd_view_get(&l->zeros, n, g));
        }
    return QD_OK;
}
