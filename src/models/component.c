/* Devices and component loading shared by the commands that run models (see component.h). */
#include "models/component.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cuda/cuda.h"
#include "core/log.h"
#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"
#include "models/random_weights.h"
#include "quant/resolve.h"

qd_status qd_device_parse(const char *device, int *cuda_index) {
    *cuda_index = -1;
    if (!device || !strcmp(device, "cpu")) return QD_OK;
    if (!strcmp(device, "cuda")) {
        *cuda_index = 0;
        return QD_OK;
    }
    if (!strncmp(device, "cuda:", 5)) {
        char *end = NULL;
        long d = strtol(device + 5, &end, 10);
        if (end != device + 5 && !*end && d >= 0 && d <= 1024) {
            *cuda_index = (int)d;
            return QD_OK;
        }
    }
    return qd_fail(QD_EINVAL, "--device %s: expected cpu, cuda or cuda:N", device);
}

qd_status qd_device_backend(const char *device, qd_backend **out) {
    *out = NULL;
    int cuda;
    qd_status s = qd_device_parse(device, &cuda);
    if (s) return s;
    return cuda < 0 ? qd_backend_cpu_create(out) : qd_backend_cuda_create(cuda, out);
}

void qd_component_load_close(qd_component_load *c) {
    qd_ckpt_close(c->ck);
    qd_quant_config_free(&c->quant);
    qd_component_source_free(&c->src);
    json_decref(c->cfg);
    free(c->cfg_path);
    memset(c, 0, sizeof *c);
}

qd_status qd_component_load_open(const qd_options *o, const char *component, const char *base_dir, bool random_weights,
                                 qd_component_load *out) {
    memset(out, 0, sizeof *out);
    qd_quant_config_init(&out->quant);
    qd_status s = qd_component_source_resolve(o, component, base_dir, &out->src);
    if (s == QD_ENOTFOUND && random_weights && base_dir) {
        /* a config-only folder: nothing to select, the config beside */
        qd_clear_error();
        memset(&out->src, 0, sizeof out->src);
        out->src.component = strdup(component);
        out->src.dir = strdup(base_dir);
        out->src.config_path = qd_path_join(base_dir, "config.json");
        s = out->src.component && out->src.dir && out->src.config_path ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate");
    }
    const char *cfg_path = out->src.override_config_path ? out->src.override_config_path : out->src.config_path;
    if (!s && !cfg_path) s = qd_fail(QD_ENOTFOUND, "component '%s' (%s): no config.json", component, out->src.dir ? out->src.dir : "?");
    if (!s && !(out->cfg_path = strdup(cfg_path))) s = qd_fail(QD_ENOMEM, "cannot allocate");
    if (!s) s = qd_json_load_object(out->cfg_path, &out->cfg);
    if (!s) {
        out->cls = qd_json_string(out->cfg, "_class_name");
        const json_t *arch = json_array_get(json_object_get(out->cfg, "architectures"), 0);
        if (!out->cls && json_is_string(arch)) out->cls = json_string_value(arch);
        if (!out->cls) s = qd_fail(QD_EFORMAT, "%s: no _class_name or architectures, so the module is unknown", out->cfg_path);
    }
    if (random_weights) {
        /* no checkpoint: the config alone; --quantization quantizes the drawn weights at load */
        if (!s && (o->n_ignored_layers || o->transformer_weights_path || o->enable_svdquant == 1))
            s = qd_fail(QD_EINVAL, "--random-weights takes --quantization METHOD only (no weights files, no ignored layers)");
        if (!s && o->quantization) s = qd_random_quant_config(o->quantization, &out->quant);
    } else {
        if (!s && out->src.weights.n_files == 0) s = qd_fail(QD_ENOTFOUND, "component '%s' (%s): no weight files", component, out->src.dir);
        if (!s) s = qd_weight_set_open(&out->src.weights, &out->ck);
        if (!s) s = qd_quant_resolve(o, &out->src, out->ck, out->cls, &out->quant);
    }
    if (!s && out->quant.method != QD_QM_NONE) {
        qd_log(QD_LOG_INFO, "%s: quantization %s (%s)", component, qd_quant_method_name(out->quant.method), out->quant.source);
    }
    if (s) qd_component_load_close(out);
    return s;
}
