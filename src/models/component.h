/* One pipeline component opened for loading, as `qdit forward` and `qdit generate` both need it: the
 * compute device a `--device` value names, and a component's config, class, checkpoint and resolved
 * quantization (quant-sglang.md §1.4) from the model flags. */
#ifndef QD_MODELS_COMPONENT_H
#define QD_MODELS_COMPONENT_H

#include <jansson.h>
#include <stdbool.h>

#include "backend/backend.h"
#include "io/ckpt.h"
#include "load/sources.h"
#include "quant/config.h"

/* "cpu" (or NULL), "cuda", "cuda:N": *cuda_index −1 for the CPU, else the GPU's index; anything else is an
 * error naming --device (checked before loading anything). */
qd_status qd_device_parse(const char *device, int *cuda_index);
/* The backend the device names. */
qd_status qd_device_backend(const char *device, qd_backend **out);

typedef struct {
    qd_component_source src;
    json_t *cfg;      /* config.json */
    char *cfg_path;   /* its path, the label in messages */
    const char *cls;  /* `_class_name`, else `architectures[0]` (points into cfg) */
    qd_ckpt *ck;
    qd_quant_config quant;
} qd_component_load;

/* Open `component` (its folder in the pipeline is base_dir, NULL when only flags give it) with the
 * options o: weights, config.json and quantization. With random_weights only config.json is read (ck stays
 * NULL; the model draws its weights, models/random_weights.h) and --quantization applies online. */
qd_status qd_component_load_open(const qd_options *o, const char *component, const char *base_dir, bool random_weights,
                                 qd_component_load *out);
void qd_component_load_close(qd_component_load *c);

#endif
