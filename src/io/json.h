/* JSON reading on top of jansson: bounded file reads and parse errors that name the file, line and
 * column. Used for config.json, model_index.json, *.index.json and safetensors headers. */
#ifndef QD_IO_JSON_H
#define QD_IO_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "qdit.h"

/* Largest JSON file qdit reads (tokenizer.json files reach ~11 MB; configs are tiny). */
#define QD_JSON_MAX_FILE (256u << 20)

/* Parse `len` bytes. Duplicate object keys are an error (a config or header that says two different
 * things about one name is not trustworthy). `label` names the source in messages. */
qd_status qd_json_parse(const char *label, const char *buf, size_t len, json_t **out);

/* Read and parse a file; the top level must be an object. */
qd_status qd_json_load_object(const char *path, json_t **out);

/* Read a whole (small) file into a NUL-terminated buffer of at most `max` bytes; caller frees. */
qd_status qd_read_small_file(const char *path, size_t max, char **out, size_t *len);

/* Convenience lookups: NULL when absent or of another type. */
const char *qd_json_string(const json_t *obj, const char *key);

#endif
