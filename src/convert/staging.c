/* Whole-or-nothing output folders (see staging.h). */
#include "convert/staging.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"
#include "io/fs.h"

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

static bool dir_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool empty = true;
    struct dirent *e;
    while (empty && (e = readdir(d))) empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

/* "<parent>/.<base>.qdit-<what>-XXXXXX", created as an empty folder */
static char *sibling_temp(const char *final, const char *what) {
    char *parent = qd_path_dirname(final), *base = qd_path_basename(final);
    char *out = NULL;
    if (parent && base) {
        size_t n = strlen(parent) + strlen(base) + strlen(what) + 32;
        out = malloc(n);
        if (out) {
            snprintf(out, n, "%s/.%s.qdit-%s-XXXXXX", parent, base, what);
            if (!mkdtemp(out)) free(out), out = NULL;
        }
    }
    free(parent), free(base);
    return out;
}

qd_status qd_staging_begin(const char *flag, const char *final, bool overwrite, bool (*looks_ours)(const char *dir), qd_staging *st) {
    memset(st, 0, sizeof *st);
    if (!final || !*final) return qd_fail(QD_EINVAL, "%s DIR is required: the folder to write", flag);
    struct stat sb;
    if (stat(final, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return qd_fail(QD_EINVAL, "%s %s: exists and is not a folder", flag, final);
        if (!dir_is_empty(final)) {
            if (!overwrite) return qd_fail(QD_EINVAL, "%s %s: exists and is not empty; give a new folder, or --overwrite to replace an earlier conversion", flag, final);
            if (looks_ours && !looks_ours(final))
                return qd_fail(QD_EINVAL, "%s %s: --overwrite replaces only an earlier output of this converter, and this folder does not look like one", flag,
                               final);
        }
    }
    char *parent = qd_path_dirname(final);
    qd_status s = parent ? qd_make_dirs(parent) : qd_fail(QD_ENOMEM, "cannot allocate");
    free(parent);
    if (s) return qd_fail_context(s, "%s %s", flag, final);
    st->final = strdup(final);
    st->tmp = sibling_temp(final, "tmp");
    if (!st->final || !st->tmp) {
        int e = errno;
        free(st->final), free(st->tmp);
        memset(st, 0, sizeof *st);
        return qd_fail(QD_EIO, "%s %s: cannot create a temporary folder beside it: %s", flag, final, strerror(e));
    }
    return QD_OK;
}

qd_status qd_staging_commit(qd_staging *st) {
    qd_status s = QD_OK;
    char *old = NULL;
    struct stat sb;
    if (stat(st->final, &sb) == 0) {
        /* rename() onto an empty folder replaces it; a non-empty one is first moved aside */
        if (dir_is_empty(st->final)) {
            if (rmdir(st->final)) s = qd_fail(QD_EIO, "%s: cannot replace it: %s", st->final, strerror(errno));
        } else if (!(old = sibling_temp(st->final, "old")) || rename(st->final, old)) {
            s = qd_fail(QD_EIO, "%s: cannot move the earlier output aside: %s", st->final, strerror(errno));
        }
    }
    /* mkdtemp made it 0700; the output gets the mode a plain mkdir would have given it */
    const mode_t mask = umask(0);
    umask(mask);
    if (!s && chmod(st->tmp, 0777 & ~mask)) s = qd_fail(QD_EIO, "%s: cannot set its permissions: %s", st->tmp, strerror(errno));
    if (!s && rename(st->tmp, st->final)) {
        s = qd_fail(QD_EIO, "%s: cannot move the new output into place: %s", st->final, strerror(errno));
        if (old) rename(old, st->final);
    }
    if (s) {
        if (old) rmdir(old);
        qd_staging_abort(st);
        free(old);
        return s;
    }
    if (old) qd_remove_tree(old);
    free(old), free(st->final), free(st->tmp);
    memset(st, 0, sizeof *st);
    return QD_OK;
}

void qd_staging_abort(qd_staging *st) {
    if (st->tmp) qd_remove_tree(st->tmp);
    free(st->final), free(st->tmp);
    memset(st, 0, sizeof *st);
}
