/* Local Hugging Face cache lookups (see hf_cache.h). */
#include "load/hf_cache.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"

static bool repo_char(char c) { return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.'; }

bool qd_hf_is_repo_id(const char *s) {
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || !slash[1] || strchr(slash + 1, '/')) return false;
    for (const char *p = s; *p; p++)
        if (p != slash && !repo_char(*p)) return false;
    /* "." and ".." are path components, not names */
    if ((slash - s == 1 && s[0] == '.') || (slash - s == 2 && s[0] == '.' && s[1] == '.')) return false;
    if (!strcmp(slash + 1, ".") || !strcmp(slash + 1, "..")) return false;
    return true;
}

char *qd_hf_cache_dir(void) {
    const char *v = getenv("HF_HUB_CACHE");
    if (v && *v) return strdup(v);
    if ((v = getenv("HF_HOME")) && *v) return qd_path_join(v, "hub");
    if ((v = getenv("XDG_CACHE_HOME")) && *v) return qd_path_join(v, "huggingface/hub");
    const char *home = getenv("HOME");
    return qd_path_join(home && *home ? home : "/", ".cache/huggingface/hub");
}

qd_status qd_hf_resolve(const char *repo_id, char **snapshot_dir) {
    *snapshot_dir = NULL;
    if (!qd_hf_is_repo_id(repo_id)) {
        return qd_fail(QD_EINVAL, "'%s' is neither an existing path nor a Hugging Face repo id (org/name)", repo_id);
    }
    char *cache = qd_hf_cache_dir();
    char folder[1024], refs[1200];
    const char *slash = strchr(repo_id, '/');
    snprintf(folder, sizeof folder, "%s/models--%.*s--%s", cache ? cache : "?", (int)(slash - repo_id), repo_id,
             slash + 1);
    snprintf(refs, sizeof refs, "%s/refs/main", folder);
    free(cache);
    if (!qd_is_dir(folder)) {
        return qd_fail(QD_ENOTFOUND,
                       "'%s' is not a local path, and the repo is not in the local Hugging Face cache (looked in "
                       "%s); qdit never downloads: fetch it first (huggingface-cli download %s) or set HF_HOME / "
                       "HF_HUB_CACHE",
                       repo_id, folder, repo_id);
    }
    char *rev;
    size_t len;
    qd_status s = qd_read_small_file(refs, 256, &rev, &len);
    if (s) return qd_fail(QD_ENOTFOUND, "%s: the cache has no refs/main for '%s' (%s)", folder, repo_id, qd_last_error());
    while (len && isspace((unsigned char)rev[len - 1])) rev[--len] = '\0';
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)rev[i])) {
            free(rev);
            return qd_fail(QD_EFORMAT, "%s: not a revision hash", refs);
        }
    }
    if (len == 0) {
        free(rev);
        return qd_fail(QD_EFORMAT, "%s is empty", refs);
    }
    char snap[1400];
    snprintf(snap, sizeof snap, "%s/snapshots/%s", folder, rev);
    free(rev);
    if (!qd_is_dir(snap)) {
        return qd_fail(QD_ENOTFOUND, "%s: refs/main names snapshot %s, which is missing", folder, snap);
    }
    if (!(*snapshot_dir = strdup(snap))) return qd_fail(QD_ENOMEM, "cannot allocate");
    return QD_OK;
}
