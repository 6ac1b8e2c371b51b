/* Hugging Face hub repo ids resolved in the local cache only — qdit never downloads (DESIGN.md,
 * "Decisions"). Cache root: $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
 * else ~/.cache/huggingface/hub. A repo `org/name` lives in `models--org--name/`; the revision is
 * read from `refs/main` and the files are in `snapshots/<revision>/`. */
#ifndef QD_LOAD_HF_CACHE_H
#define QD_LOAD_HF_CACHE_H

#include <stdbool.h>

#include "qdit.h"

/* Does `s` have the shape of a repo id ("org/name", letters, digits, '-', '_', '.')? */
bool qd_hf_is_repo_id(const char *s);

/* The hub cache folder in effect (malloc'd). */
char *qd_hf_cache_dir(void);

/* Resolve `org/name` to its snapshot folder (malloc'd). A repo absent from the cache is
 * QD_ENOTFOUND with a message that says where qdit looked. */
qd_status qd_hf_resolve(const char *repo_id, char **snapshot_dir);

#endif
