#include "pipeline/default_model.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/status.h"
#include "io/fs.h"

#ifndef QDIT_MODELS_DIR
#define QDIT_MODELS_DIR ""
#endif

/* A pipeline folder: it has model_index.json. */
static bool is_pipeline(const char *dir) {
    size_t n = strlen(dir) + sizeof "/model_index.json";
    char *p = malloc(n);
    if (!p) return false;
    snprintf(p, n, "%s/model_index.json", dir);
    bool yes = qd_is_file(p);
    free(p);
    return yes;
}

qd_status qd_default_model_dir(char *out, size_t n) {
    char tried[4][PATH_MAX + 64];
    int k = 0;
    const char *env = getenv("QDIT_DEFAULT_MODEL");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        if (is_pipeline(out)) return QD_OK;
        return qd_fail(QD_ENOTFOUND, "$QDIT_DEFAULT_MODEL %s: not a diffusers pipeline folder (no model_index.json)", env);
    }
    if (QDIT_MODELS_DIR[0]) snprintf(tried[k++], sizeof tried[0], "%s/%s", QDIT_MODELS_DIR, QD_DEFAULT_MODEL_NAME);
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(tried[k++], sizeof tried[0], "%s/../models/%s", exe, QD_DEFAULT_MODEL_NAME);
        snprintf(tried[k++], sizeof tried[0], "%s/../share/qdit/models/%s", exe, QD_DEFAULT_MODEL_NAME);
    }
    for (int i = 0; i < k; i++) {
        if (is_pipeline(tried[i])) {
            snprintf(out, n, "%s", tried[i]);
            return QD_OK;
        }
    }
    return qd_fail(QD_ENOTFOUND, "the embedded default model (%s) is not where qdit looks for it (%s%s%s%s%s); give --model-path or set $QDIT_DEFAULT_MODEL",
                   QD_DEFAULT_MODEL_NAME, k > 0 ? tried[0] : "", k > 1 ? ", " : "", k > 1 ? tried[1] : "", k > 2 ? ", " : "", k > 2 ? tried[2] : "");
}
