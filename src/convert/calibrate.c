/* Activation calibration for the converters (see calibrate.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/calibrate.h"
#include "core/log.h"
#include "core/status.h"
#include "io/fs.h"
#include "pipeline/generate.h"

typedef struct {
    qd_calib *out;
    bool per_channel;
    qd_status s;
    float *buf;
    size_t cap;
} observer;

/* Layer `name`'s per-channel maxima [k], added (zeros) at its first call. */
static float *channels_of(observer *o, const char *name, int64_t k) {
    qd_calib *c = o->out;
    size_t i;
    if (qd_strmap_get(&c->by_name, name, &i)) {
        if (c->k[i] == k) return c->chan[i];
        o->s = qd_fail(QD_EFORMAT, "calibration: '%s' had inputs of %lld channels, then %lld", name, (long long)c->k[i], (long long)k);
        return NULL;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        char **nn = realloc(c->names, cap * sizeof *nn);
        if (nn) c->names = nn;
        float **nc = nn ? realloc(c->chan, cap * sizeof *nc) : NULL;
        if (nc) c->chan = nc;
        int64_t *nk = nc ? realloc(c->k, cap * sizeof *nk) : NULL;
        if (!nk) {
            o->s = qd_fail(QD_ENOMEM, "calibration: cannot allocate");
            return NULL;
        }
        c->k = nk, c->cap = cap;
        /* keys are borrowed by the map: rebuild it over the moved array */
        qd_strmap_free(&c->by_name);
        qd_strmap_init(&c->by_name);
        for (size_t j = 0; j < c->n; j++)
            if (qd_strmap_put(&c->by_name, c->names[j], j, NULL) < 0) {
                o->s = qd_fail(QD_ENOMEM, "calibration: cannot allocate");
                return NULL;
            }
    }
    char *n = strdup(name);
    float *ch = calloc((size_t)k + 1, sizeof *ch);
    if (!n || !ch || qd_strmap_put(&c->by_name, n, c->n, NULL) < 0) {
        free(n), free(ch);
        o->s = qd_fail(QD_ENOMEM, "calibration: cannot allocate");
        return NULL;
    }
    c->names[c->n] = n, c->chan[c->n] = ch, c->k[c->n] = k;
    c->n++;
    return ch;
}

static void observe(void *user, qd_backend *be, const qd_linear *l, const qd_tensor *x) {
    observer *o = user;
    if (o->s || !l->name) return;
    const int64_t n = qd_tensor_elements(x);
    if ((size_t)n > o->cap) {
        float *nb = realloc(o->buf, sizeof *nb * (size_t)n);
        if (!nb) {
            o->s = qd_fail(QD_ENOMEM, "calibration: cannot allocate %lld floats for the input of '%s'", (long long)n, l->name);
            return;
        }
        o->buf = nb, o->cap = (size_t)n;
    }
    /* the input as F32 on the host, whatever the backend and activation dtype */
    qd_tensor f = {0};
    o->s = qd_tensor_new(be, &f, QD_DTYPE_F32, x->rank, x->shape);
    if (!o->s) o->s = be->ops->copy(be, x, &f);
    if (!o->s) o->s = be->ops->download(be, &f, o->buf);
    qd_tensor_free(&f);
    if (o->s) return;
    /* one pass: the smallest and largest x (NaN compares false, so it is counted apart) */
    float lo = INFINITY, hi = -INFINITY;
    int64_t nan = 0;
    for (int64_t i = 0; i < n; i++) {
        const float v = o->buf[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        nan += v != v;
    }
    if (nan || (n && (!isfinite(lo) || !isfinite(hi)))) {
        o->s = qd_fail(QD_EFORMAT, "calibration: the input of '%s' is not finite", l->name);
        return;
    }
    const float amax = n ? fmaxf(fabsf(lo), fabsf(hi)) : 0;
    json_t *old = json_object_get(o->out->amax, l->name);
    if (!old || json_real_value(old) < amax) json_object_set_new(o->out->amax, l->name, json_real(amax));
    if (n) {
        old = json_object_get(o->out->min, l->name);
        if (!old || json_real_value(old) > lo) json_object_set_new(o->out->min, l->name, json_real(lo));
        old = json_object_get(o->out->max, l->name);
        if (!old || json_real_value(old) < hi) json_object_set_new(o->out->max, l->name, json_real(hi));
    }
    if (!o->per_channel || n == 0) return;
    /* the last dim is the layer's input: row by row, the largest |x| of each channel */
    const int64_t k = x->shape[x->rank - 1];
    float *ch = channels_of(o, l->name, k);
    for (int64_t r = 0; ch && r < n / k; r++)
        for (int64_t j = 0; j < k; j++) ch[j] = fmaxf(ch[j], fabsf(o->buf[r * k + j]));
}

/* Non-empty lines of the prompts file, trailing '\r' and surrounding blanks removed. */
static qd_status read_prompts(const char *path, char ***out, size_t *n) {
    *out = NULL, *n = 0;
    FILE *f = fopen(path, "r");
    if (!f) return qd_fail(QD_ENOTFOUND, "--calibrate %s: cannot open it", path);
    char **v = NULL;
    size_t cap = 0;
    char line[8192];
    qd_status s = QD_OK;
    while (!s && fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        if (l == sizeof line - 1 && line[l - 1] != '\n') {
            s = qd_fail(QD_EINVAL, "--calibrate %s: a line longer than %zu characters", path, sizeof line - 2);
            break;
        }
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t')) line[--l] = 0;
        const char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                s = qd_fail(QD_ENOMEM, "cannot allocate");
                break;
            }
            v = nv;
        }
        if (!(v[*n] = strdup(p))) s = qd_fail(QD_ENOMEM, "cannot allocate");
        else (*n)++;
    }
    fclose(f);
    if (!s && *n == 0) s = qd_fail(QD_EINVAL, "--calibrate %s: no prompts in it (one prompt a line)", path);
    if (s) {
        for (size_t i = 0; i < *n; i++) free(v[i]);
        free(v);
        *n = 0;
        return s;
    }
    *out = v;
    return QD_OK;
}

/* --pipeline, else the transformer folder's parent when it holds a pipeline (malloc'd). */
static qd_status pipeline_dir(const qd_calib_args *a, const char *transformer_dir, char **out) {
    *out = NULL;
    if (a->pipeline) {
        char *mi = qd_path_join(a->pipeline, "model_index.json");
        qd_status s = mi && qd_is_file(mi) ? QD_OK : qd_fail(QD_EINVAL, "--pipeline %s: no model_index.json in it (expected a diffusers pipeline folder)", a->pipeline);
        free(mi);
        if (!s && !(*out = strdup(a->pipeline))) s = qd_fail(QD_ENOMEM, "cannot allocate");
        return s;
    }
    char *parent = qd_path_dirname(transformer_dir);
    char *mi = parent ? qd_path_join(parent, "model_index.json") : NULL;
    qd_status s = QD_OK;
    if (!mi || !qd_is_file(mi)) {
        s = qd_fail(QD_EINVAL, "--calibrate: %s has no model_index.json, so the pipeline (text encoder, scheduler) to run is unknown; give --pipeline DIR",
                    parent ? parent : transformer_dir);
        free(parent), parent = NULL;
    }
    free(mi);
    *out = parent;
    return s;
}

qd_status qd_calibrate(const qd_calib_args *a, const char *transformer_dir, bool per_channel, qd_calib *out) {
    memset(out, 0, sizeof *out);
    qd_strmap_init(&out->by_name);
    if (a->steps < 0 || a->steps > 1000) return qd_fail(QD_EINVAL, "--calib-steps %d: expected 1 to 1000", a->steps);
    if (a->size < 0 || a->size > 4096 || a->size % 16) return qd_fail(QD_EINVAL, "--calib-size %lld: expected a multiple of 16 up to 4096", (long long)a->size);
    char *pipe = NULL;
    qd_status s = pipeline_dir(a, transformer_dir, &pipe);
    char **prompts = NULL;
    size_t n = 0;
    if (!s) s = read_prompts(a->prompts, &prompts, &n);
    qd_options o;
    qd_options_init(&o);
    o.model_path = pipe;
    o.component_paths[0] = (qd_component_path){.component = "transformer", .path = transformer_dir};
    o.n_component_paths = 1;
    observer ob = {.out = out, .per_channel = per_channel};
    if (!s && (!(out->amax = json_object()) || !(out->min = json_object()) || !(out->max = json_object()))) s = qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < n; i++) {
        qd_log(QD_LOG_INFO, "calibration: prompt %zu of %zu", i + 1, n);
        qd_generate_args g = {.prompt = prompts[i], .steps = a->steps ? a->steps : QD_CALIB_DEFAULT_STEPS,
                              .height = a->size ? a->size : QD_CALIB_DEFAULT_SIZE, .width = a->size ? a->size : QD_CALIB_DEFAULT_SIZE,
                              .guidance = -1, .seed = i, .observe = observe, .observe_user = &ob, .no_image = true};
        qd_generate_report rep;
        s = qd_generate_run(&o, &g, &rep);
        if (!s) s = ob.s;
        if (s) s = qd_fail_context(s, "--calibrate prompt %zu", i + 1);
    }
    for (size_t i = 0; i < n; i++) free(prompts[i]);
    free(prompts), free(pipe), free(ob.buf);
    if (s) qd_calib_free(out);
    return s;
}

const float *qd_calib_channels(const qd_calib *c, const char *name, int64_t *k) {
    size_t i;
    if (!c->n || !qd_strmap_get(&c->by_name, name, &i)) return NULL;
    *k = c->k[i];
    return c->chan[i];
}

void qd_calib_free(qd_calib *c) {
    for (size_t i = 0; i < c->n; i++) free(c->names[i]), free(c->chan[i]);
    free(c->names), free(c->chan), free(c->k);
    qd_strmap_free(&c->by_name);
    json_decref(c->amax), json_decref(c->min), json_decref(c->max);
    memset(c, 0, sizeof *c);
}
