/* Activation calibration for the ModelOpt converters (modelopt.h): qdit generates each calibration prompt
 * with the pipeline (its text encoder, scheduler and the transformer being converted, on the CPU, a few
 * steps, no VAE decode) while an observer on the transformer's linears keeps the largest |x| each layer
 * saw — ModelOpt's max calibrator, whose amax gives input_scale = amax/448 (FP8) or amax/(6·448) (NVFP4). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/modelopt.h"
#include "core/log.h"
#include "core/status.h"
#include "io/fs.h"
#include "pipeline/generate.h"

typedef struct {
    json_t *amax;
    qd_status s;
    float *buf;
    size_t cap;
} calib;

static void observe(void *user, qd_backend *be, const qd_linear *l, const qd_tensor *x) {
    calib *c = user;
    if (c->s || !l->name) return;
    const int64_t n = qd_tensor_elements(x);
    if ((size_t)n > c->cap) {
        float *nb = realloc(c->buf, sizeof *nb * (size_t)n);
        if (!nb) {
            c->s = qd_fail(QD_ENOMEM, "calibration: cannot allocate %lld floats for the input of '%s'", (long long)n, l->name);
            return;
        }
        c->buf = nb, c->cap = (size_t)n;
    }
    /* the input as F32 on the host, whatever the backend and activation dtype */
    qd_tensor f = {0};
    c->s = qd_tensor_new(be, &f, QD_DTYPE_F32, x->rank, x->shape);
    if (!c->s) c->s = be->ops->copy(be, x, &f);
    if (!c->s) c->s = be->ops->download(be, &f, c->buf);
    qd_tensor_free(&f);
    if (c->s) return;
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(c->buf[i]));
    if (!isfinite(amax)) {
        c->s = qd_fail(QD_EFORMAT, "calibration: the input of '%s' is not finite", l->name);
        return;
    }
    json_t *old = json_object_get(c->amax, l->name);
    if (!old || json_real_value(old) < amax) json_object_set_new(c->amax, l->name, json_real(amax));
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

qd_status qd_calibrate_amax(const char *prompts_file, const char *pipeline_dir, const char *transformer_dir, int steps, int64_t size,
                            json_t **amax) {
    *amax = NULL;
    if (steps < 0 || steps > 1000) return qd_fail(QD_EINVAL, "--calib-steps %d: expected 1 to 1000", steps);
    if (size < 0 || size > 4096 || size % 16) return qd_fail(QD_EINVAL, "--calib-size %lld: expected a multiple of 16 up to 4096", (long long)size);
    char **prompts = NULL;
    size_t n = 0;
    qd_status s = read_prompts(prompts_file, &prompts, &n);
    if (s) return s;
    qd_options o;
    qd_options_init(&o);
    o.model_path = pipeline_dir;
    o.component_paths[0] = (qd_component_path){.component = "transformer", .path = transformer_dir};
    o.n_component_paths = 1;
    calib c = {.amax = json_object()};
    if (!c.amax) s = qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < n; i++) {
        qd_log(QD_LOG_INFO, "calibration: prompt %zu of %zu", i + 1, n);
        qd_generate_args g = {.prompt = prompts[i], .steps = steps ? steps : 4, .height = size ? size : 256, .width = size ? size : 256,
                              .guidance = -1, .seed = i, .observe = observe, .observe_user = &c, .no_image = true};
        qd_generate_report rep;
        s = qd_generate_run(&o, &g, &rep);
        if (!s) s = c.s;
        if (s) s = qd_fail_context(s, "--calibrate prompt %zu", i + 1);
    }
    for (size_t i = 0; i < n; i++) free(prompts[i]);
    free(prompts);
    free(c.buf);
    if (s) {
        json_decref(c.amax);
        return s;
    }
    *amax = c.amax;
    return QD_OK;
}
