/* Logger (see log.h). */
#include "core/log.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static void (*log_sink)(qd_log_level, const char *, void *);
static void *log_user;
static int log_threshold = -1;

#define ONCE_SLOTS 256
static unsigned long once_hashes[ONCE_SLOTS];
static size_t once_count;

static int threshold(void) {
    if (log_threshold < 0) {
        const char *v = getenv("QDIT_LOG");
        log_threshold = QD_LOG_WARN;
        if (v && !strcasecmp(v, "error")) log_threshold = QD_LOG_ERROR;
        if (v && !strcasecmp(v, "info")) log_threshold = QD_LOG_INFO;
        if (v && !strcasecmp(v, "debug")) log_threshold = QD_LOG_DEBUG;
    }
    return log_threshold;
}

void qd_log_set_sink(void (*sink)(qd_log_level, const char *, void *), void *user) {
    pthread_mutex_lock(&log_lock);
    log_sink = sink;
    log_user = user;
    pthread_mutex_unlock(&log_lock);
}

static void emit(qd_log_level level, const char *msg) {
    static const char *const names[] = {"error", "warning", "info", "debug"};
    if (log_sink) log_sink(level, msg, log_user);
    else if ((int)level <= threshold()) fprintf(stderr, "qdit: %s: %s\n", names[level], msg);
}

void qd_log(qd_log_level level, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_lock);
    emit(level, msg);
    pthread_mutex_unlock(&log_lock);
}

static void log_once_hashed(const char *key, qd_log_level level, const char *msg) {
    unsigned long h = 5381;
    for (const char *p = key; *p; p++) h = h * 33 + (unsigned char)*p;
    pthread_mutex_lock(&log_lock);
    bool seen = false;
    for (size_t i = 0; i < once_count; i++) seen |= once_hashes[i] == h;
    if (!seen) {
        if (once_count < ONCE_SLOTS) once_hashes[once_count++] = h;
        emit(level, msg);
    }
    pthread_mutex_unlock(&log_lock);
}

void qd_log_once(qd_log_level level, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_once_hashed(msg, level, msg);
}

void qd_log_once_key(const char *key, qd_log_level level, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_once_hashed(key, level, msg);
}
