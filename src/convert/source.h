/* The transformer a converter reads, from the same flags as `generate` and `forward`
 * (quant-sglang.md §1.1–1.4, load/sources.h): a component folder or .safetensors file given as PATH, or
 * --model-path (a pipeline folder, component folder or cached repo id), with --transformer-path /
 * --transformer-weights-path / --enable-svdquant / … applied on top; its config (config.json of the
 * component, else the one beside override weights, else a Nunchaku file's embedded `config` metadata),
 * its class, its checkpoint, and its resolved quantization. */
#ifndef QD_CONVERT_SOURCE_H
#define QD_CONVERT_SOURCE_H

#include <jansson.h>

#include "io/ckpt.h"
#include "load/sources.h"
#include "quant/config.h"

typedef struct {
    qd_component_source src;
    qd_ckpt *ck;
    json_t *cfg;
    char *cfg_label;        /* where the config came from, for messages */
    const char *class_name; /* cfg's _class_name */
    qd_quant_config quant;
} qd_convert_source;

/* `path` may be NULL (then --model-path or the component flags say where the transformer is). */
qd_status qd_convert_source_open(const qd_options *o, const char *path, qd_convert_source *out);
void qd_convert_source_close(qd_convert_source *s);

#endif
