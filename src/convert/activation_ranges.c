/* qdit convert activation-ranges (see activation_ranges.h). */
#include "convert/activation_ranges.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/status.h"
#include "convert/output.h"
#include "io/fs.h"

/* --overwrite replaces a file only when it is an earlier output: JSON with our "format". */
static bool earlier_output(const char *path, char *why, size_t why_len) {
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    const char *format = json_string_value(json_object_get(doc, "format"));
    const bool ours = format && !strcmp(format, QD_ACTIVATION_RANGES_FORMAT);
    if (!doc) snprintf(why, why_len, "it is not JSON (%s, line %d)", err.text, err.line);
    else if (!ours) snprintf(why, why_len, "it has no \"format\": \"%s\"", QD_ACTIVATION_RANGES_FORMAT);
    json_decref(doc);
    return ours;
}

/* {"layers": …} entries: every layer that saw at least one value, with its min, max and amax. */
static qd_status layers_of(const qd_calib *cal, json_t *layers, int *n) {
    const char *name;
    json_t *amax;
    json_object_foreach(cal->amax, name, amax) {
        json_t *lo = json_object_get(cal->min, name), *hi = json_object_get(cal->max, name);
        if (!lo || !hi) {
            qd_log(QD_LOG_WARN, "activation-ranges: '%s' ran only with empty inputs; it has no range and is not listed", name);
            continue;
        }
        json_t *e = json_pack("{s:O, s:O, s:O}", "min", lo, "max", hi, "amax", amax);
        if (!e || json_object_set_new(layers, name, e)) return qd_fail(QD_ENOMEM, "cannot allocate");
        (*n)++;
    }
    return QD_OK;
}

qd_status qd_convert_activation_ranges(const qd_activation_ranges_args *a, int *n_layers) {
    *n_layers = 0;
    if (!a->model_dir) return qd_fail(QD_EINVAL, "--model-dir DIR is required (the transformer folder)");
    if (!a->output) return qd_fail(QD_EINVAL, "--output FILE.json is required (the file to write)");
    if (!a->calib.prompts) return qd_fail(QD_EINVAL, "--calibrate PROMPTS_FILE is required (the prompts to run, one a line)");
    if (!qd_is_dir(a->model_dir)) return qd_fail(QD_ENOTFOUND, "--model-dir %s: no such folder", a->model_dir);
    qd_status s = qd_out_file_check("--output", a->output, a->overwrite, earlier_output);
    if (s) return s;
    qd_calib cal;
    s = qd_calibrate(&a->calib, a->model_dir, false, &cal);
    if (s) return s;
    json_t *layers = json_object();
    json_t *doc = json_pack("{s:s, s:i, s:s, s:i, s:I, s:o}", "format", QD_ACTIVATION_RANGES_FORMAT, "version", 1, "prompts", a->calib.prompts, "steps",
                            a->calib.steps ? a->calib.steps : QD_CALIB_DEFAULT_STEPS, "size", (json_int_t)(a->calib.size ? a->calib.size : QD_CALIB_DEFAULT_SIZE), "layers", layers);
    s = doc ? layers_of(&cal, layers, n_layers) : qd_fail(QD_ENOMEM, "cannot allocate");
    if (!s && *n_layers == 0) s = qd_fail(QD_EINVAL, "--model-dir %s: no linear of the transformer saw an input during calibration", a->model_dir);
    if (!s) s = qd_out_file_write_json("--output", a->output, doc);
    json_decref(doc);
    qd_calib_free(&cal);
    return s;
}
