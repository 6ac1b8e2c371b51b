/* A converter's output folder made whole or not at all: everything is written into a temporary sibling
 * (`<parent>/.<name>.qdit-tmp-XXXXXX`) and renamed to its final name only when the conversion has
 * succeeded, so a failed or interrupted run never leaves a partial output under the name the user gave.
 * An existing non-empty output is replaced only with --overwrite, and only if it looks like an earlier
 * output of the same converter (`looks_ours`), so a mistyped path cannot wipe an unrelated folder.
 * (Used by `convert svdquant` and `convert wan-repack`; written so output.c can adopt it.) */
#ifndef QD_CONVERT_STAGING_H
#define QD_CONVERT_STAGING_H

#include <stdbool.h>

#include "qdit.h"

typedef struct {
    char *final; /* the folder the user named */
    char *tmp;   /* where the converter writes */
} qd_staging;

/* `flag` names the option in messages (e.g. "--save-dir"). */
qd_status qd_staging_begin(const char *flag, const char *final, bool overwrite, bool (*looks_ours)(const char *dir), qd_staging *st);
/* Moves tmp into place (an earlier output is removed only after the new one is in place) and frees st. */
qd_status qd_staging_commit(qd_staging *st);
/* Removes tmp and frees st. */
void qd_staging_abort(qd_staging *st);

/* Remove a file or a folder tree (symbolic links are removed, never followed). */
qd_status qd_remove_tree(const char *path);
/* Create a folder and its missing parents. */
qd_status qd_make_dirs(const char *path);

#endif
