/* Repository layout: what a path the user gave us is, and which components it holds.
 *   pipeline   a diffusers pipeline folder: model_index.json names the components
 *   component  a component folder (config.json and/or weights), or a weights-only folder
 *   file       a single .safetensors file, or a *.safetensors.index.json weight map
 *   folder     any other folder: its component sub-folders and loose weight files, each listed
 * A hub repo id `org/name` is resolved in the local Hugging Face cache first (load/hf_cache.h). */
#ifndef QD_LOAD_REPO_H
#define QD_LOAD_REPO_H

#include <stddef.h>

#include "load/weights.h"
#include "qdit.h"

typedef enum { QD_LAYOUT_PIPELINE, QD_LAYOUT_COMPONENT, QD_LAYOUT_FILE, QD_LAYOUT_FOLDER } qd_layout;

typedef struct {
    char *name;        /* model_index key / folder name / file name */
    char *dir;         /* the component's folder */
    char *library;     /* "diffusers", "transformers", … (from model_index.json), or NULL */
    char *class_name;  /* model_index entry, else config `_class_name`, else `architectures[0]` … */
    char *config_path; /* the component's config file, or NULL */
    qd_weight_set weights; /* n_files == 0 for weightless components (scheduler, tokenizer) */
} qd_component;

typedef struct qd_repo {
    char *path;          /* as given */
    char *root;          /* the local folder or file it resolved to */
    char *repo_id;       /* set when resolved from the HF cache */
    qd_layout layout;
    char *pipeline_class; /* model_index.json `_class_name`, or NULL */
    size_t n_components;
    qd_component *components;
    bool configs_only;   /* opened by qd_repo_open_configs */
} qd_repo;

qd_status qd_repo_open(const char *path, qd_repo **out);
/* The same, for a pipeline whose model components may hold only config.json (random-weight runs). */
qd_status qd_repo_open_configs(const char *path, qd_repo **out);
void qd_repo_close(qd_repo *r);

const char *qd_layout_name(qd_layout l);

/* The class a component folder declares: config.json `_class_name`, else `architectures[0]`, else
 * `scheduler_config.json` `_class_name`, else `tokenizer_config.json` `tokenizer_class`. NULL when
 * none (not an error). Malformed JSON in any of those files is an error naming the file. */
qd_status qd_component_class(const char *dir, char **class_name, char **config_path);

/* Parse model_index.json text: the component entries (name, library, class) of every key not
 * starting with '_' whose value is a [library, class] pair; [null, null] entries (absent optional
 * components) are skipped. Every other value type is an error naming the key. The parser the fuzzer
 * drives. */
typedef struct {
    char *name, *library, *class_name;
} qd_model_index_entry;
qd_status qd_model_index_parse(const char *label, const char *text, size_t len, char **pipeline_class,
                               qd_model_index_entry **entries, size_t *n);
void qd_model_index_free(qd_model_index_entry *entries, size_t n);

#endif
