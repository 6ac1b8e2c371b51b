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

/* `qdit inspect` as a library call: describe what is at PATH (a diffusers pipeline folder, a component
 * folder, a .safetensors file or index, or a Hugging Face repo id found in the local cache) as the JSON
 * document documented in docs/cli.md. On success *json_out is a NUL-terminated string the caller
 * frees with free(). */
qd_status qd_inspect_json(const char *path, char **json_out);

#ifdef __cplusplus
}
#endif
#endif
