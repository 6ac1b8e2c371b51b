/* Shared model plumbing (see model.h). */
#include "models/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/status.h"
#include "models/random_weights.h"
#include "quant/plan.h"

qd_status qd_model_bind(const qd_model_ctx *m, const char *name, int64_t in, int64_t out, qd_linear *l) {
    const char *shards[1] = {name};
    return m->random_weights ? qd_random_linear(m->quant, m->random_seed, name, in, out, l)
                             : qd_linear_bind(m->quant, m->ck, name, shards, 1, l);
}

qd_status qd_model_linear(const qd_model_ctx *m, const char *name, int64_t in, int64_t out, qd_linear *l) {
    qd_status s = qd_model_bind(m, name, in, out, l);
    if (s) return s;
    if ((in > 0 && l->in_features != in) || (out > 0 && l->out_features != out)) {
        s = qd_fail(QD_EFORMAT, "layer '%s' is %lld → %lld, the config says %lld → %lld", name, (long long)l->in_features,
                    (long long)l->out_features, (long long)in, (long long)out);
        qd_linear_free(l);
        return s;
    }
    return qd_model_prepare(m, l);
}

/* l replaced by a dense F32 layer computing x·Wᵀ + b with its reference W and effective b. */
static qd_status to_reference(qd_linear *l) {
    const int64_t n = l->out_features, k = l->in_features;
    float *w = malloc(sizeof *w * (size_t)(n * k) + 4), *b = malloc(sizeof *b * (size_t)n + 4);
    if (!w || !b) {
        free(w), free(b);
        return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its f32 reference (%lld×%lld)", l->name ? l->name : "?",
                       (long long)n, (long long)k);
    }
    qd_status s = qd_linear_dequantize(l, w);
    if (s) {
        free(w), free(b);
        return s;
    }
    qd_linear_bias_f32(l, b);
    qd_linear d = {.name = l->name, .out_features = n, .in_features = k, .scheme = QD_SCHEME_DENSE, .act = QD_ACT_NONE,
                   .alpha = 1.0f, .n_shards = l->n_shards};
    snprintf(d.scheme_name, sizeof d.scheme_name, "f32");
    memcpy(d.shard_out, l->shard_out, sizeof d.shard_out);
    d.weight = (qd_view){.dtype = QD_DTYPE_F32, .rank = 2, .shape = {n, k}, .data = w, .owned = w};
    d.bias = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {n}, .data = b, .owned = b};
    l->name = NULL;
    qd_linear_free(l);
    *l = d;
    return QD_OK;
}

qd_status qd_model_prepare(const qd_model_ctx *m, qd_linear *l) {
    qd_status s = QD_OK;
    if (m->tally) m->tally->bytes += qd_linear_stored_bytes(l), m->tally->layers++; /* before a backend may release it */
    if (m->reference_linears && l->scheme != QD_SCHEME_DENSE) s = to_reference(l);
    if (!s && m->backend && m->backend->ops->prepare_linear) s = m->backend->ops->prepare_linear(m->backend, l);
    if (s) qd_linear_free(l);
    return s;
}

/* Static per-tensor FP8 activation scales, one value and no offset, equal in every part: one quantization of the input
 * is then each part's own. ModelOpt FP8 calibrates q, k and v on the same input, so their input_scale agree. */
static bool same_static_fp8(const qd_linear *parts, int n) {
    for (int i = 0; i < n; i++) {
        const qd_linear *l = &parts[i];
        if (l->scheme != QD_SCHEME_FP8 || l->act != QD_ACT_STATIC_TENSOR || !l->input_scale.data || l->input_offset.data ||
            qd_view_elements(&l->input_scale) != 1 || qd_view_get_flat(&l->input_scale, 0) != qd_view_get_flat(&parts[0].input_scale, 0))
            return false;
    }
    return true;
}

/* Can these bound parts be joined into one linear that computes exactly what they compute apart? Same scheme and
 * input; activations unquantized, quantized per call from the input alone, or under one static FP8 scale that every
 * part shares (a static scale or a smoothing vector per part would otherwise have to be shared); schemes whose fused
 * form is made by the checkpoint itself excluded. */
static bool joinable(const qd_linear *parts, int n) {
    const bool statics_shared = same_static_fp8(parts, n);
    for (int i = 0; i < n; i++) {
        const qd_linear *l = &parts[i];
        if (l->scheme != parts[0].scheme || strcmp(l->scheme_name, parts[0].scheme_name) || l->in_features != parts[0].in_features ||
            l->weight.dtype != parts[0].weight.dtype || ((l->act == QD_ACT_STATIC_TENSOR || l->input_scale.data) && !statics_shared) ||
            l->smooth.data ||
            l->scheme == QD_SCHEME_SVDQ_INT4 || l->scheme == QD_SCHEME_SVDQ_NVFP4 || l->scheme == QD_SCHEME_AWQ_W4A16 ||
            (l->block_n && l->out_features % l->block_n))
            return false;
    }
    return true;
}

qd_status qd_model_projections(const qd_model_ctx *m, const char *const *names, int n, int64_t in, const int64_t *outs, const char *fused_name,
                               qd_linear *parts, qd_linear *fused) {
    memset(fused, 0, sizeof *fused);
    memset(parts, 0, sizeof *parts * (size_t)(n > 0 ? n : 0));
    const bool fuse = n > 1 && n <= 4 && m->backend && m->backend->ops->fuse_projections && !m->reference_linears && !m->observe;
    qd_status s = QD_OK;
    if (!fuse) {
        for (int i = 0; i < n && !s; i++) s = qd_model_linear(m, names[i], in, outs[i], &parts[i]);
        return s;
    }
    int bound = 0;
    for (; bound < n && !s; bound++) {
        s = qd_model_bind(m, names[bound], in, outs[bound], &parts[bound]);
        if (!s && (parts[bound].in_features != in || parts[bound].out_features != outs[bound])) {
            s = qd_fail(QD_EFORMAT, "layer '%s' is %lld → %lld, the config says %lld → %lld", names[bound], (long long)parts[bound].in_features,
                        (long long)parts[bound].out_features, (long long)in, (long long)outs[bound]);
            bound++;
        }
    }
    if (s) {
        for (int i = 0; i < bound; i++) qd_linear_free(&parts[i]);
        memset(parts, 0, sizeof *parts * (size_t)n);
        return s;
    }
    if (!joinable(parts, n)) {
        for (int i = 0; i < n && !s; i++) s = qd_model_prepare(m, &parts[i]);
        return s;
    }
    s = qd_linear_concat(parts, n, fused_name, fused); /* consumes the parts */
    for (int i = 0; i < n; i++) memset(&parts[i], 0, sizeof parts[i]);
    return s ? s : qd_model_prepare(m, fused);
}

bool qd_model_has(const qd_model_ctx *m, const char *name) {
    return m->random_weights ? qd_random_has(name, m->random_nunchaku) : qd_ckpt_find(m->ck, name) != NULL;
}

float qd_model_scalar_x1000(const qd_model_ctx *m, float v) {
    bool bf16 = m->scalars == QD_SCALARS_BF16 || (m->scalars == QD_SCALARS_AS_ACTIVATIONS && m->act == QD_DTYPE_BF16);
    if (!bf16) return v * 1000.0f;
    return qd_bf16_to_f32(qd_f32_to_bf16(qd_bf16_to_f32(qd_f32_to_bf16(v)) * 1000.0f));
}

qd_status qd_model_param(const qd_model_ctx *m, const char *name, int rank, const int64_t *shape, qd_tensor *t) {
    memset(t, 0, sizeof *t);
    if (m->random_weights) {
        int64_t n = 1;
        for (int i = 0; i < rank; i++) n *= shape[i];
        float *host = malloc(sizeof *host * (size_t)n + 4);
        if (!host) return qd_fail(QD_ENOMEM, "cannot allocate '%s'", name);
        qd_random_param(m->random_seed, name, n, host);
        qd_status s = qd_tensor_new(m->backend, t, QD_DTYPE_F32, rank, shape);
        if (!s) s = m->backend->ops->upload(m->backend, t, host);
        free(host);
        if (s) qd_tensor_free(t);
        return s;
    }
    const qd_ckpt_entry *e = qd_ckpt_find(m->ck, name);
    if (!e) return qd_fail(QD_EFORMAT, "the checkpoint has no tensor '%s'", name);
    const qd_st_tensor *st = e->tensor;
    bool same = st->rank == rank;
    for (int i = 0; same && i < rank; i++) same = st->shape[i] == shape[i];
    if (!same) {
        char want[96] = "", got[96] = "";
        for (int i = 0; i < rank; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)shape[i]);
        for (int i = 0; i < st->rank; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)st->shape[i]);
        return qd_fail(QD_EFORMAT, "tensor '%s' is [%s], the config says [%s]", name, got, want);
    }
    float *host = malloc(sizeof *host * (size_t)st->elements + 4);
    if (!host) return qd_fail(QD_ENOMEM, "cannot allocate '%s'", name);
    if ((st->dtype != QD_DTYPE_F32 && st->dtype != QD_DTYPE_BF16 && st->dtype != QD_DTYPE_F16) ||
        qd_decode_row(st->dtype, qd_st_data(e->file, st), host, (size_t)st->elements) != 0) {
        free(host);
        return qd_fail(QD_EFORMAT, "tensor '%s' is %s; a parameter must be a float tensor", name, qd_dtype_name(st->dtype));
    }
    qd_status s = qd_tensor_new(m->backend, t, QD_DTYPE_F32, rank, shape);
    if (!s) s = m->backend->ops->upload(m->backend, t, host);
    free(host);
    if (s) qd_tensor_free(t);
    return s;
}

qd_status qd_model_table(const qd_model_ctx *m, const char *name, int64_t rows, int64_t cols, qd_tensor *t) {
    memset(t, 0, sizeof *t);
    const int64_t shape[2] = {rows, cols};
    const qd_ckpt_entry *e = m->random_weights ? NULL : qd_ckpt_find(m->ck, name);
    const qd_st_tensor *st = e ? e->tensor : NULL;
    if (st && st->rank == 2 && st->shape[0] == rows && st->shape[1] == cols && (st->dtype == QD_DTYPE_BF16 || st->dtype == QD_DTYPE_F16)) {
        qd_status s = qd_tensor_new(m->backend, t, st->dtype, 2, shape);
        if (!s) s = m->backend->ops->upload(m->backend, t, qd_st_data(e->file, st));
        if (s) qd_tensor_free(t);
        return s;
    }
    if (!m->random_weights) return qd_model_param(m, name, 2, shape, t); /* F32, or the error that names the problem */
    uint16_t *bf = malloc(sizeof *bf * (size_t)(rows * cols) + 2);
    if (!bf) return qd_fail(QD_ENOMEM, "cannot allocate '%s' (%lld x %lld)", name, (long long)rows, (long long)cols);
    qd_random_table_bf16(m->random_seed, name, rows, cols, bf);
    qd_status s = qd_tensor_new(m->backend, t, QD_DTYPE_BF16, 2, shape);
    if (!s) s = m->backend->ops->upload(m->backend, t, bf);
    free(bf);
    if (s) qd_tensor_free(t);
    return s;
}

static qd_status config_number(const char *label, const json_t *cfg, const char *key, double *out, bool *present) {
    json_t *v = json_object_get(cfg, key);
    *present = v && !json_is_null(v);
    if (!*present) return QD_OK;
    if (!json_is_number(v)) return qd_fail(QD_EFORMAT, "%s: '%s' must be a number", label, key);
    *out = json_number_value(v);
    return QD_OK;
}

qd_status qd_config_int(const char *label, const json_t *cfg, const char *key, int64_t def, int64_t *out) {
    double v = 0;
    bool present;
    qd_status s = config_number(label, cfg, key, &v, &present);
    if (s) return s;
    if (!present) {
        *out = def;
        return QD_OK;
    }
    if (v != floor(v) || fabs(v) > 1e15) return qd_fail(QD_EFORMAT, "%s: '%s' must be an integer", label, key);
    *out = (int64_t)v;
    return QD_OK;
}

qd_status qd_config_float(const char *label, const json_t *cfg, const char *key, double def, double *out) {
    bool present;
    double v = def;
    qd_status s = config_number(label, cfg, key, &v, &present);
    *out = present ? v : def;
    return s;
}

qd_status qd_config_bool(const char *label, const json_t *cfg, const char *key, bool def, bool *out) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return QD_OK;
    }
    if (!json_is_boolean(v)) return qd_fail(QD_EFORMAT, "%s: '%s' must be true or false", label, key);
    *out = json_is_true(v);
    return QD_OK;
}

qd_status qd_config_size(const char *label, const json_t *cfg, const char *key, int64_t def, int64_t max, int64_t *out) {
    qd_status s = qd_config_int(label, cfg, key, def, out);
    if (s) return s;
    if (*out < 0 && def < 0) return qd_fail(QD_EFORMAT, "%s: '%s' is required", label, key);
    if (*out < 1 || *out > max) return qd_fail(QD_EFORMAT, "%s: '%s' is %lld, expected 1..%lld", label, key, (long long)*out, (long long)max);
    return QD_OK;
}

qd_status qd_config_eps(const char *label, const json_t *cfg, const char *key, double def, double *out) {
    qd_status s = qd_config_float(label, cfg, key, def, out);
    if (!s && !(*out > 0.0 && *out < 1.0)) s = qd_fail(QD_EFORMAT, "%s: '%s' is %g, expected a value in (0, 1)", label, key, *out);
    return s;
}

void qd_timestep_embedding(const float *t, int n, int dim, bool flip_sin_to_cos, float downscale_freq_shift, float scale,
                           float *out) {
    int half = dim / 2;
    for (int r = 0; r < n; r++) {
        for (int i = 0; i < half; i++) {
            /* exponent = −ln(10000)·i / (half − shift), then exp, all in f32 as torch computes them */
            float exponent = -logf(10000.0f) * (float)i / ((float)half - downscale_freq_shift);
            float freq = expf(exponent);
            float arg = t[r] * freq * scale;
            float sn = sinf(arg), cs = cosf(arg);
            out[r * dim + i] = flip_sin_to_cos ? cs : sn;
            out[r * dim + half + i] = flip_sin_to_cos ? sn : cs;
        }
        if (dim % 2) out[r * dim + dim - 1] = 0.0f;
    }
}

void qd_rope_table(const float *ids, int64_t n, int axes, const int *dims, double theta, qd_rope_angles mode,
                   float *cos_out, float *sin_out) {
    int total = 0;
    for (int a = 0; a < axes; a++) total += dims[a] / 2;
    for (int64_t p = 0; p < n; p++) {
        int col = 0;
        for (int a = 0; a < axes; a++) {
            int d = dims[a];
            for (int j = 0; j < d / 2; j++) {
                double angle;
                if (mode == QD_ROPE_ANGLES_F32) {
                    float inv = 1.0f / powf((float)theta, (float)(2 * j) / (float)d);
                    angle = (double)(ids[p * axes + a] * inv);
                } else {
                    double inv = 1.0 / pow(theta, (double)(2 * j) / (double)d);
                    angle = (double)ids[p * axes + a] * inv;
                    if (mode == QD_ROPE_ANGLES_F64_TO_F32) angle = (double)(float)angle;
                }
                cos_out[p * total + col] = (float)cos(angle);
                sin_out[p * total + col] = (float)sin(angle);
                col++;
            }
        }
    }
}
