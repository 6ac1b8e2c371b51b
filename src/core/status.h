/* Error reporting inside qdit: set the thread-local message and return the status in one step.
 * Every message names the file, tensor, flag or field at fault and what was expected. */
#ifndef QD_CORE_STATUS_H
#define QD_CORE_STATUS_H

#include "qdit.h"

#if defined(__GNUC__)
#define QD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define QD_PRINTF(a, b)
#endif

/* Record a one-line message (printf-style) for qd_last_error() and return `s`. */
qd_status qd_fail(qd_status s, const char *fmt, ...) QD_PRINTF(2, 3);

/* Prepend context ("while opening X: ") to the current message and return `s`. */
qd_status qd_fail_context(qd_status s, const char *fmt, ...) QD_PRINTF(2, 3);

void qd_clear_error(void);

#endif
