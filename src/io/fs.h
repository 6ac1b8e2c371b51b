/* Small file-system helpers: path joins, existence checks, sorted directory listings. */
#ifndef QD_IO_FS_H
#define QD_IO_FS_H

#include <stdbool.h>
#include <stddef.h>

#include "qdit.h"

/* "a/b" (malloc'd; NULL on allocation failure). */
char *qd_path_join(const char *a, const char *b);
/* The last path component, ignoring trailing slashes ("a/b/" → "b"); malloc'd. */
char *qd_path_basename(const char *path);
/* Everything before the last component ("a/b" → "a", "b" → "."); malloc'd. */
char *qd_path_dirname(const char *path);
bool qd_path_has_suffix(const char *path, const char *suffix);

bool qd_is_dir(const char *path);
bool qd_is_file(const char *path);   /* a regular file, following symlinks (HF cache snapshots) */

/* Names (not paths) of the entries of `dir` that are regular files (following symlinks) and end in
 * `suffix` (NULL: every file), sorted with strcmp. Returns -1 if the folder cannot be read. */
int qd_list_files(const char *dir, const char *suffix, char ***names, size_t *n);
/* Names of the sub-folders of `dir` (not starting with '.'), sorted. */
int qd_list_dirs(const char *dir, char ***names, size_t *n);
void qd_free_names(char **names, size_t n);

/* Remove a file or a folder tree (symbolic links are removed, never followed); absent is fine. */
qd_status qd_remove_tree(const char *path);
/* Create a folder and its missing parents (mkdir -p). */
qd_status qd_make_dirs(const char *path);

#endif
