/* Flow-matching Euler scheduler (see scheduler.h). */
#include "pipeline/scheduler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

void qd_flow_match_config_init(qd_flow_match_config *c) {
    memset(c, 0, sizeof *c);
    c->num_train_timesteps = 1000;
    c->shift = 1.0;
    c->base_shift = 0.5;
    c->max_shift = 1.15;
    c->base_image_seq_len = 256;
    c->max_image_seq_len = 4096;
}

static qd_status number(const char *label, const json_t *obj, const char *key, double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return QD_OK;
    if (!json_is_number(v)) return qd_fail(QD_EFORMAT, "%s: '%s' must be a number", label, key);
    *out = json_number_value(v);
    return QD_OK;
}

qd_status qd_flow_match_config_parse(const char *label, const json_t *obj, qd_flow_match_config *c) {
    qd_flow_match_config_init(c);
    double steps = c->num_train_timesteps, base_len = c->base_image_seq_len, max_len = c->max_image_seq_len;
    qd_status s = QD_OK;
    if (!s) s = number(label, obj, "num_train_timesteps", &steps);
    if (!s) s = number(label, obj, "shift", &c->shift);
    if (!s) s = number(label, obj, "base_shift", &c->base_shift);
    if (!s) s = number(label, obj, "max_shift", &c->max_shift);
    if (!s) s = number(label, obj, "base_image_seq_len", &base_len);
    if (!s) s = number(label, obj, "max_image_seq_len", &max_len);
    if (!s) s = number(label, obj, "shift_terminal", &c->shift_terminal);
    if (s) return s;
    json_t *dyn = json_object_get(obj, "use_dynamic_shifting");
    if (dyn && !json_is_boolean(dyn)) return qd_fail(QD_EFORMAT, "%s: 'use_dynamic_shifting' must be true or false", label);
    c->use_dynamic_shifting = json_is_true(dyn);
    const char *type = json_string_value(json_object_get(obj, "time_shift_type"));
    if (type && strcmp(type, "exponential")) {
        return qd_fail(QD_EUNSUPPORTED, "%s: time_shift_type '%s' (qdit implements the exponential shift)", label, type);
    }
    if (steps < 1 || steps > 1e6 || base_len < 1 || max_len <= base_len || c->shift <= 0) {
        return qd_fail(QD_EFORMAT, "%s: num_train_timesteps, shift and the image sequence lengths must be positive (and "
                                   "max_image_seq_len > base_image_seq_len)",
                       label);
    }
    c->num_train_timesteps = (int)steps;
    c->base_image_seq_len = (int)base_len;
    c->max_image_seq_len = (int)max_len;
    return QD_OK;
}

double qd_flow_match_mu(const qd_flow_match_config *c, int64_t image_seq_len) {
    double m = (c->max_shift - c->base_shift) / (double)(c->max_image_seq_len - c->base_image_seq_len);
    double b = c->base_shift - m * c->base_image_seq_len;
    return (double)image_seq_len * m + b;
}

void qd_flow_match_schedule_free(qd_flow_match_schedule *s) {
    free(s->sigmas);
    free(s->timesteps);
    memset(s, 0, sizeof *s);
}

qd_status qd_flow_match_schedule_make(const qd_flow_match_config *c, int n, double mu, qd_flow_match_schedule *out) {
    memset(out, 0, sizeof *out);
    if (n < 1 || n > 10000) return qd_fail(QD_EINVAL, "steps must be between 1 and 10000, got %d", n);
    out->sigmas = malloc(sizeof(float) * (size_t)(n + 1));
    out->timesteps = malloc(sizeof(float) * (size_t)n);
    if (!out->sigmas || !out->timesteps) {
        qd_flow_match_schedule_free(out);
        return qd_fail(QD_ENOMEM, "cannot allocate a schedule");
    }
    out->n = n;
    /* np.linspace(1, 1/n, n) in float64, then the f32 tensor the scheduler works on */
    for (int i = 0; i < n; i++) {
        double x = n == 1 ? 1.0 : 1.0 + (1.0 / n - 1.0) * (double)i / (double)(n - 1);
        out->sigmas[i] = (float)x;
    }
    if (c->use_dynamic_shifting) {
        /* exp(mu)/(exp(mu) + (1/σ − 1)^1), each op in f32 as torch does with a python scalar */
        float e = (float)exp(mu);
        for (int i = 0; i < n; i++) {
            float t = out->sigmas[i];
            float inner = 1.0f / t - 1.0f;
            out->sigmas[i] = e / (e + inner);
        }
    } else {
        float k = (float)c->shift;
        for (int i = 0; i < n; i++) {
            float t = out->sigmas[i];
            out->sigmas[i] = k * t / (1.0f + (k - 1.0f) * t);
        }
    }
    if (c->shift_terminal > 0) {
        /* stretch so the last sigma is shift_terminal (Qwen-Image) */
        float one_minus_last = 1.0f - out->sigmas[n - 1];
        float scale = one_minus_last / (1.0f - (float)c->shift_terminal);
        for (int i = 0; i < n; i++) out->sigmas[i] = 1.0f - (1.0f - out->sigmas[i]) / scale;
    }
    for (int i = 0; i < n; i++) out->timesteps[i] = out->sigmas[i] * (float)c->num_train_timesteps;
    out->sigmas[n] = 0.0f;
    return QD_OK;
}

void qd_flow_match_step(const qd_flow_match_schedule *s, int i, const float *v, float *x, int64_t n) {
    float dt = s->sigmas[i + 1] - s->sigmas[i];
    for (int64_t j = 0; j < n; j++) x[j] = x[j] + dt * v[j];
}
