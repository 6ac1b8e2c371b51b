/* A small logger: levels, one line per message on stderr, and "once" messages keyed by their text
 * (DESIGN.md: a missing kernel is logged once, by name). QDIT_LOG=error|warn|info|debug sets the
 * level (default warn). */
#ifndef QD_CORE_LOG_H
#define QD_CORE_LOG_H

#include "core/status.h"

typedef enum { QD_LOG_ERROR, QD_LOG_WARN, QD_LOG_INFO, QD_LOG_DEBUG } qd_log_level;

void qd_log(qd_log_level level, const char *fmt, ...) QD_PRINTF(2, 3);
/* Log only the first time this exact message is produced in the process. */
void qd_log_once(qd_log_level level, const char *fmt, ...) QD_PRINTF(2, 3);
/* Log only the first message produced under `key` in the process (the text may differ, e.g. name the
 * first layer of many). */
void qd_log_once_key(const char *key, qd_log_level level, const char *fmt, ...) QD_PRINTF(3, 4);
/* Route messages to a callback instead of stderr (tests); NULL restores stderr. */
void qd_log_set_sink(void (*sink)(qd_log_level level, const char *message, void *user), void *user);

#endif
