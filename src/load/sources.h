/* Which files make up each component of a pipeline once the user's flags are applied
 * (../shared/spec/quant-sglang.md §1.1, §1.4 step 0, §2):
 *   - the base comes from --model-path (a pipeline folder or a cached hub repo id);
 *   - --<component>-path DIR replaces that component's folder (config.json + weights);
 *     a --<component>-path FILE.safetensors replaces only its weights and keeps the base config;
 *   - --transformer-weights-path replaces the primary transformer's weights: a file, a folder
 *     (its index, or exactly one *-mixed file among several, or all its files), a cached repo id,
 *     or `org/name/path/in/repo.safetensors`; an adjacent config.json may declare quantization;
 *   - secondary transformers (transformer_2, unconditional_transformer) never inherit the global
 *     weights override or SVDQuant; only their own --<component>-path changes them. */
#ifndef QD_LOAD_SOURCES_H
#define QD_LOAD_SOURCES_H

#include <stdbool.h>

#include "load/weights.h"
#include "qdit.h"

typedef struct {
    char *component;      /* "transformer", … */
    char *dir;            /* the component folder: config.json, description files */
    char *config_path;    /* its config.json, or NULL */
    qd_weight_set weights; /* the files to load */
    /* set when the weights come from --transformer-weights-path or a --<component>-path file */
    bool weights_override;
    char *override_path;        /* the path as the user gave it */
    char *override_config_path; /* config.json beside the override weights, or NULL */
} qd_component_source;

/* Is `component` a secondary DiT that ignores the global weights override (§1.4 step 0)? */
bool qd_is_secondary_transformer(const char *component);

/* Resolve one component. `base_dir` is the component's folder in the base pipeline (NULL when the
 * pipeline has none and only flags provide it). */
qd_status qd_component_source_resolve(const qd_options *o, const char *component, const char *base_dir,
                                      qd_component_source *out);
void qd_component_source_free(qd_component_source *s);

/* --transformer-weights-path on its own: the weight files it names and an adjacent config.json. */
qd_status qd_weights_override_resolve(const char *path, qd_weight_set *out, char **config_path);

#endif
