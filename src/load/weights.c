/* Weight-file selection for a component folder (see weights.h; quant-sglang.md §2). */
#include "load/weights.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"

#define ST_SUFFIX ".safetensors"
#define INDEX_SUFFIX ".safetensors.index.json"

/* Length of `name` without a trailing "-<digits>-of-<digits>" (or its full length). */
static size_t strip_shard_suffix(const char *name, size_t n) {
    size_t i = n;
    while (i > 0 && isdigit((unsigned char)name[i - 1])) i--;
    if (i == n || i < 4 || memcmp(name + i - 4, "-of-", 4) != 0) return n;
    size_t j = i - 4;
    size_t k = j;
    while (k > 0 && isdigit((unsigned char)name[k - 1])) k--;
    if (k == j || k == 0 || name[k - 1] != '-') return n;
    return k - 1;
}

static size_t stem_length(const char *name) {
    size_t n = strlen(name);
    if (qd_path_has_suffix(name, ST_SUFFIX)) n -= strlen(ST_SUFFIX);
    return strip_shard_suffix(name, n);
}

bool qd_weight_name_is_mixed(const char *name) {
    if (!qd_path_has_suffix(name, ST_SUFFIX)) return false;
    size_t n = stem_length(name);
    return n >= 6 && memcmp(name + n - 6, "-mixed", 6) == 0;
}

char *qd_weight_name_family(const char *name, bool *precision) {
    size_t n = stem_length(name);
    *precision = false;
    static const char *const variants[] = {".fp16", ".bf16", ".fp32"};
    for (int i = 0; i < 3; i++) {
        if (n > 5 && memcmp(name + n - 5, variants[i], 5) == 0) {
            n -= 5;
            *precision = true;
            break;
        }
    }
    char *f = malloc(n + 1);
    if (f) {
        memcpy(f, name, n);
        f[n] = '\0';
    }
    return f;
}

void qd_weight_set_free(qd_weight_set *w) {
    qd_free_names(w->files, w->n_files);
    free(w->index_path);
    memset(w, 0, sizeof *w);
}

/* Pick the weight-map index of a folder, if any. */
static qd_status choose_index(const char *dir, char **index_name) {
    *index_name = NULL;
    char **names;
    size_t n;
    if (qd_list_files(dir, INDEX_SUFFIX, &names, &n) != 0) return qd_fail(QD_EIO, "%s: cannot list the folder", dir);
    qd_status s = QD_OK;
    static const char *const preferred[] = {"diffusion_pytorch_model" INDEX_SUFFIX, "model" INDEX_SUFFIX};
    for (int p = 0; p < 2 && !*index_name; p++)
        for (size_t i = 0; i < n && !*index_name; i++)
            if (strcmp(names[i], preferred[p]) == 0) *index_name = strdup(names[i]);
    if (!*index_name) {
        /* drop precision-variant indexes whose canonical index exists, as for weight files */
        size_t kept = 0, pick = 0;
        for (size_t i = 0; i < n; i++) {
            size_t len = strlen(names[i]) - strlen(INDEX_SUFFIX);
            bool variant = false;
            if (len > 5) {
                const char *v = names[i] + len - 5;
                if (!memcmp(v, ".fp16", 5) || !memcmp(v, ".bf16", 5) || !memcmp(v, ".fp32", 5)) {
                    for (size_t k = 0; k < n; k++) {
                        if (k != i && strlen(names[k]) == len - 5 + strlen(INDEX_SUFFIX) &&
                            !memcmp(names[k], names[i], len - 5))
                            variant = true;
                    }
                }
            }
            if (!variant) {
                kept++;
                pick = i;
            }
        }
        if (kept == 1) *index_name = strdup(names[pick]);
        else if (kept > 1) {
            s = qd_fail(QD_EFORMAT, "%s: several weight-map indexes (%s, %s, …); keep one, or pass the "
                        "index file itself as the path", dir, names[0], names[1]);
        }
    }
    qd_free_names(names, n);
    return s;
}

qd_status qd_select_weight_files(const char *dir, qd_weight_set *out) {
    memset(out, 0, sizeof *out);
    char *index_name = NULL;
    qd_status s = choose_index(dir, &index_name);
    if (s) return s;
    if (index_name) {
        out->index_path = qd_path_join(dir, index_name);
        free(index_name);
        if (!out->index_path) return qd_fail(QD_ENOMEM, "cannot allocate");
        /* The shard list comes from the index itself when the checkpoint is opened; list it here
         * too so callers can show it. */
        char *text;
        size_t len;
        char **shards;
        size_t n;
        if ((s = qd_read_small_file(out->index_path, QD_JSON_MAX_FILE, &text, &len))) goto fail;
        s = qd_ckpt_parse_index(out->index_path, text, len, &shards, &n);
        free(text);
        if (s) goto fail;
        out->files = shards;
        out->n_files = n;
        for (size_t i = 0; i < n; i++) {
            char *full = qd_path_join(dir, shards[i]);
            if (!full) {
                s = qd_fail(QD_ENOMEM, "cannot allocate");
                goto fail;
            }
            free(shards[i]);
            shards[i] = full;
        }
        return QD_OK;
    }

    char **names;
    size_t n;
    if (qd_list_files(dir, ST_SUFFIX, &names, &n) != 0) return qd_fail(QD_EIO, "%s: cannot list the folder", dir);
    if (n == 0) {
        char **others;
        size_t m = 0;
        bool pickles = false;
        if (qd_list_files(dir, NULL, &others, &m) == 0) {
            for (size_t i = 0; i < m; i++)
                if (qd_path_has_suffix(others[i], ".bin") || qd_path_has_suffix(others[i], ".pt") ||
                    qd_path_has_suffix(others[i], ".ckpt") || qd_path_has_suffix(others[i], ".pth"))
                    pickles = true;
            qd_free_names(others, m);
        }
        return qd_fail(QD_ENOTFOUND, pickles ? "%s: no .safetensors weights (only PyTorch pickle files, which qdit does not read)"
                                             : "%s: no .safetensors weights found", dir);
    }
    bool *keep = calloc(n, sizeof *keep);
    char **family = calloc(n, sizeof *family);
    bool *precision = calloc(n, sizeof *precision);
    if (!keep || !family || !precision) {
        s = qd_fail(QD_ENOMEM, "cannot allocate");
        goto done;
    }
    size_t mixed = 0;
    for (size_t i = 0; i < n; i++) {
        keep[i] = true;
        if (qd_weight_name_is_mixed(names[i])) mixed++;
        if (!(family[i] = qd_weight_name_family(names[i], &precision[i]))) {
            s = qd_fail(QD_ENOMEM, "cannot allocate");
            goto done;
        }
    }
    if (mixed > 0 && mixed < n)
        for (size_t i = 0; i < n; i++) keep[i] = qd_weight_name_is_mixed(names[i]);
    for (size_t i = 0; i < n; i++) {
        if (!keep[i] || !precision[i]) continue;
        for (size_t k = 0; k < n; k++)
            if (keep[k] && !precision[k] && strcmp(family[k], family[i]) == 0) keep[i] = false;
    }
    out->files = calloc(n, sizeof *out->files);
    if (!out->files) {
        s = qd_fail(QD_ENOMEM, "cannot allocate");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (!keep[i]) continue;
        if (!(out->files[out->n_files] = qd_path_join(dir, names[i]))) {
            s = qd_fail(QD_ENOMEM, "cannot allocate");
            goto done;
        }
        out->n_files++;
    }
done:
    for (size_t i = 0; family && i < n; i++) free(family[i]);
    free(family);
    free(precision);
    free(keep);
    qd_free_names(names, n);
    if (s) qd_weight_set_free(out);
    return s;
fail:
    qd_weight_set_free(out);
    return s;
}

qd_status qd_weight_set_open(const qd_weight_set *w, qd_ckpt **out) {
    if (w->index_path) return qd_ckpt_open_index(w->index_path, out);
    return qd_ckpt_open_files((const char *const *)w->files, w->n_files, out);
}
