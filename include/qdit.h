/* qdit — the public C API. One header: status codes, errors, and the operations the CLI offers.
 * Later issues add pipelines and generation here; everything is reached through opaque handles and
 * plain structs, and every fallible call returns a qd_status with details in qd_last_error(). */
#ifndef QDIT_H
#define QDIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QDIT_VERSION "0.1.0"

typedef enum {
    QD_OK = 0,
    QD_EINVAL,        /* a bad argument, flag or request field */
    QD_EIO,           /* a file could not be opened, read, mapped or written */
    QD_EFORMAT,       /* a file's contents are malformed or inconsistent */
    QD_EUNSUPPORTED,  /* well-formed, but not something qdit supports */
    QD_ENOMEM,        /* an allocation failed or a size limit was exceeded */
    QD_EDEVICE,       /* the compute device failed */
    QD_ENOTFOUND      /* a named file, component, tensor or repo does not exist */
} qd_status;

/* The message of the last failure on this thread: one line naming the file, tensor, flag or field at
 * fault and what was expected. Valid until the next failing qdit call on the same thread. */
const char *qd_last_error(void);

/* A short fixed name for a status ("format error", …). */
const char *qd_status_name(qd_status s);

/* ---- options: the model sources and quantization flags, with SGLang's names and meaning ----
 * (../shared/spec/quant-sglang.md §1). Strings are borrowed: they must outlive the calls using them. */

#define QD_MAX_COMPONENT_PATHS 16
#define QD_MAX_IGNORED_LAYERS 256

typedef struct {
    const char *component; /* "transformer", "transformer_2", "vae", … (dashes become underscores) */
    const char *path;      /* a folder (config.json + weights) or a single .safetensors file */
} qd_component_path;

typedef struct qd_options {
    const char *model_path;               /* --model-path: pipeline folder or cached hub repo id */
    const char *model_id;                 /* --model-id: architecture hint for local mirrors */
    qd_component_path component_paths[QD_MAX_COMPONENT_PATHS]; /* --<component>-path */
    size_t n_component_paths;
    const char *transformer_weights_path; /* --transformer-weights-path */
    const char *quantization;             /* --quantization (NULL: detect from the checkpoint) */
    const char *ignored_layers[QD_MAX_IGNORED_LAYERS]; /* --quantization-ignored-layers P… */
    size_t n_ignored_layers;
    int enable_svdquant;                  /* --enable-svdquant: -1 unset, 0 false, 1 true */
    const char *quantization_precision;   /* --quantization-precision int4|nvfp4 (NULL: infer) */
    int quantization_rank;                /* --quantization-rank (0: infer) */
    int quantization_act_unsigned;        /* --quantization-act-unsigned */
    /* where the transformer's weights live on a GPU (docs/cuda.md "Weight offload"); -1 unset, 0 false, 1 true */
    int dit_layerwise_offload;            /* --dit-layerwise-offload: blocks stream from pinned host memory
                                             while the previous block computes (unset: only when the weights
                                             do not fit the GPU) */
    int dit_cpu_offload;                  /* --dit-cpu-offload: the whole transformer in host memory between
                                             runs, uploaded for the denoising loop (unset: off) */
    int pin_cpu_memory;                   /* --pin-cpu-memory: offloaded weights are always pinned; false warns */
    int dit_offload_budget_mib;           /* --dit-offload-budget-mib: with layerwise offload, the GPU memory (MiB) the
                                             blocks' weights may take — blocks kept resident, spread over the
                                             forward, plus the two streaming slots; 0: every block streams */
} qd_options;

/* Defaults: everything unset. */
void qd_options_init(qd_options *o);

/* `qdit inspect` as a library call: describe what is at PATH (a diffusers pipeline folder, a component
 * folder, a .safetensors file or index, or a Hugging Face repo id found in the local cache) as the JSON
 * document documented in docs/cli.md. On success *json_out is a NUL-terminated string the caller
 * frees with free(). */
qd_status qd_inspect_json(const char *path, char **json_out);

#ifdef __cplusplus
}
#endif
#endif
