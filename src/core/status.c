/* Thread-local last-error message (DESIGN.md, "Errors"). */
#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define QD_ERROR_MAX 2048

static _Thread_local char error_message[QD_ERROR_MAX];

/* Keep messages one line: a newline or other control byte from outside input would split them. */
static void flatten_message(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20) *s = ' ';
}

qd_status qd_fail(qd_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    flatten_message(error_message);
    return s;
}

qd_status qd_fail_context(qd_status s, const char *fmt, ...) {
    char prefix[QD_ERROR_MAX], old[QD_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_message, sizeof old);
    /* Truncation of an over-long message is acceptable; build it piecewise to say so to the compiler. */
    size_t n = strlen(prefix);
    if (n > QD_ERROR_MAX - 3) n = QD_ERROR_MAX - 3;
    memcpy(error_message, prefix, n);
    memcpy(error_message + n, ": ", 2);
    size_t rest = QD_ERROR_MAX - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(error_message + n + 2, old, m);
    error_message[n + 2 + m] = '\0';
    flatten_message(error_message);
    return s;
}

void qd_clear_error(void) { error_message[0] = '\0'; }

const char *qd_last_error(void) { return error_message; }

const char *qd_status_name(qd_status s) {
    switch (s) {
    case QD_OK: return "ok";
    case QD_EINVAL: return "invalid argument";
    case QD_EIO: return "i/o error";
    case QD_EFORMAT: return "format error";
    case QD_EUNSUPPORTED: return "unsupported";
    case QD_ENOMEM: return "out of memory";
    case QD_EDEVICE: return "device error";
    case QD_ENOTFOUND: return "not found";
    }
    return "unknown status";
}
