/* File-system helpers (see fs.h). */
#include "io/fs.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *qd_path_join(const char *a, const char *b) {
    size_t la = strlen(a);
    while (la > 1 && a[la - 1] == '/') la--;
    size_t n = la + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%.*s/%s", (int)la, a, b);
    return p;
}

static size_t trimmed_length(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    return n;
}

char *qd_path_basename(const char *path) {
    size_t n = trimmed_length(path);
    size_t start = n;
    while (start > 0 && path[start - 1] != '/') start--;
    if (start == n) return dup_n(path, n); /* "/" */
    return dup_n(path + start, n - start);
}

char *qd_path_dirname(const char *path) {
    size_t n = trimmed_length(path);
    while (n > 0 && path[n - 1] != '/') n--;
    if (n == 0) return dup_n(".", 1);
    while (n > 1 && path[n - 1] == '/') n--;
    return dup_n(path, n);
}

bool qd_path_has_suffix(const char *path, const char *suffix) {
    size_t n = strlen(path), m = strlen(suffix);
    return n >= m && strcmp(path + n - m, suffix) == 0;
}

bool qd_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool qd_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int list_entries(const char *dir, const char *suffix, bool want_dirs, char ***names, size_t *count) {
    *names = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return -1;
    size_t cap = 0, n = 0;
    char **v = NULL;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (suffix && !qd_path_has_suffix(e->d_name, suffix)) continue;
        char *full = qd_path_join(dir, e->d_name);
        if (!full) { rc = -1; break; }
        bool ok = want_dirs ? qd_is_dir(full) : qd_is_file(full);
        free(full);
        if (!ok) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(v, cap * sizeof *nv);
            if (!nv) { rc = -1; break; }
            v = nv;
        }
        if (!(v[n] = dup_n(e->d_name, strlen(e->d_name)))) { rc = -1; break; }
        n++;
    }
    closedir(d);
    if (rc) {
        qd_free_names(v, n);
        return rc;
    }
    if (n) qsort(v, n, sizeof *v, compare_names);
    *names = v;
    *count = n;
    return 0;
}

int qd_list_files(const char *dir, const char *suffix, char ***names, size_t *n) {
    return list_entries(dir, suffix, false, names, n);
}

int qd_list_dirs(const char *dir, char ***names, size_t *n) { return list_entries(dir, NULL, true, names, n); }

void qd_free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

qd_status qd_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st)) return errno == ENOENT ? QD_OK : qd_fail(QD_EIO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return qd_fail(QD_EIO, "%s: cannot read it: %s", path, strerror(errno));
        qd_status s = QD_OK;
        struct dirent *e;
        while (!s && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *child = qd_path_join(path, e->d_name);
            s = child ? qd_remove_tree(child) : qd_fail(QD_ENOMEM, "cannot allocate");
            free(child);
        }
        closedir(d);
        if (!s && rmdir(path)) s = qd_fail(QD_EIO, "%s: cannot remove it: %s", path, strerror(errno));
        return s;
    }
    return unlink(path) ? qd_fail(QD_EIO, "%s: cannot remove it: %s", path, strerror(errno)) : QD_OK;
}

qd_status qd_make_dirs(const char *path) {
    char *p = strdup(path);
    if (!p) return qd_fail(QD_ENOMEM, "cannot allocate");
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = '\0';
        if (mkdir(p, 0777) && errno != EEXIST) break;
        *c = '/';
    }
    int rc = mkdir(p, 0777);
    qd_status s = rc && errno != EEXIST ? qd_fail(QD_EIO, "%s: cannot create it: %s", path, strerror(errno)) : QD_OK;
    free(p);
    return s;
}
