/* JSON helpers (see json.h). */
#include "io/json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"

qd_status qd_json_parse(const char *label, const char *buf, size_t len, json_t **out) {
    json_error_t err;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!j) {
        return qd_fail(QD_EFORMAT, "%s: invalid JSON at line %d, column %d: %s", label, err.line,
                       err.column, err.text);
    }
    *out = j;
    return QD_OK;
}

qd_status qd_read_small_file(const char *path, size_t max, char **out, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return qd_fail(errno == ENOENT ? QD_ENOTFOUND : QD_EIO, "%s: cannot open: %s", path,
                       strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return qd_fail(QD_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return qd_fail(QD_EFORMAT, "%s: %lld bytes, larger than the %zu-byte limit for this kind of file",
                       path, (long long)st.st_size, max);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return qd_fail(QD_ENOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            close(fd);
            return qd_fail(QD_EIO, "%s: read failed after %zu of %zu bytes", path, got, n);
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return QD_OK;
}

qd_status qd_json_load_object(const char *path, json_t **out) {
    char *buf;
    size_t len;
    qd_status s = qd_read_small_file(path, QD_JSON_MAX_FILE, &buf, &len);
    if (s) return s;
    json_t *j;
    s = qd_json_parse(path, buf, len, &j);
    free(buf);
    if (s) return s;
    if (!json_is_object(j)) {
        json_decref(j);
        return qd_fail(QD_EFORMAT, "%s: expected a JSON object at the top level", path);
    }
    *out = j;
    return QD_OK;
}

const char *qd_json_string(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
