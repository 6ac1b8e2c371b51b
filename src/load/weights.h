/* Which *.safetensors files in a component folder make up its weights — SGLang's selection rules
 * (../shared/spec/quant-sglang.md §2.1–2.2):
 *   1. a `*.safetensors.index.json` weight map, when present, decides: only the shards it names;
 *   2. if some (not all) files are `*-mixed(-N-of-M).safetensors`, only those ("alternative full
 *      exports, not shards");
 *   3. precision variants `stem.(fp16|bf16|fp32)[-N-of-M].safetensors` are dropped when the
 *      unsuffixed canonical file of the same family exists (precision-only families are kept). */
#ifndef QD_LOAD_WEIGHTS_H
#define QD_LOAD_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>

#include "io/ckpt.h"
#include "qdit.h"

typedef struct {
    char **files;     /* full paths, sorted */
    size_t n_files;
    char *index_path; /* the weight map used, or NULL */
} qd_weight_set;

/* Select the weights of `dir`. No safetensors at all is QD_ENOTFOUND with a message naming `dir`
 * (and saying so when only PyTorch .bin/.pt weights are there). */
qd_status qd_select_weight_files(const char *dir, qd_weight_set *out);
void qd_weight_set_free(qd_weight_set *w);

/* Open the selected weights as one checkpoint (through the index when there is one). */
qd_status qd_weight_set_open(const qd_weight_set *w, qd_ckpt **out);

/* Name rules, exposed for tests and for --transformer-weights-path handling. */
bool qd_weight_name_is_mixed(const char *name);
/* The family of a file name: its stem without ".safetensors", a "-N-of-M" shard suffix and a
 * ".fp16/.bf16/.fp32" precision suffix; *precision tells whether that last suffix was there. */
char *qd_weight_name_family(const char *name, bool *precision);

#endif
