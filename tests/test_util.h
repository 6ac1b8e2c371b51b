/* Shared helpers for the cmocka tests: temporary folders, small file writers, random inputs, and a
 * way to run the qdit binary and capture what it prints. */
#ifndef QD_TEST_UTIL_H
#define QD_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/backend.h"

/* A fresh empty directory under $QDIT_TEST_TMP (or /tmp), unique per call; caller frees the path. */
char *qt_mkdtemp(const char *tag);
/* Remove a directory tree (for cleanup; ignores errors). */
void qt_rmtree(const char *path);

/* Join path parts with '/'; returns a static-free malloc'd string. */
char *qt_path(const char *a, const char *b);

/* Write bytes / a string to a file (creating parent dirs as needed); aborts the test on failure. */
void qt_write_file(const char *path, const void *data, size_t n);
void qt_write_text(const char *path, const char *text);
/* Read a whole file; *n gets its size; caller frees. */
void *qt_read_file(const char *path, size_t *n);

/* A seeded xorshift generator for fresh random inputs: qt_seed() picks a seed from the clock (or
 * $QDIT_TEST_SEED) and prints it so a failure can be replayed. */
uint64_t qt_seed(void);
uint64_t qt_rand_u64(uint64_t *state);
float qt_rand_uniform(uint64_t *state, float lo, float hi);
/* An F32 tensor of `shape` on backend be, filled with U(−1, 1) from *state (asserts on failure). */
qd_tensor qt_random_tensor(qd_backend *be, int rank, const int64_t *shape, uint64_t *state);

/* Run `QDIT_BINARY args...` (a NULL-terminated list), capture stdout and stderr (caller frees),
 * and return the exit status (or 128+signal if it was killed, or -1 on a timeout of 60 s). */
int qt_run_qdit(char **out, char **err, ...);

/* A tiny safetensors writer for building test inputs byte by byte, independent of the library's
 * own writer: `header_json` is written verbatim after its 8-byte length, then `data`. */
void qt_write_raw_safetensors(const char *path, const char *header_json, const void *data, size_t n);

/* ‖a − b‖ / ‖b‖ over the F32 tensor `name_a` of safetensors file a and `name_b` of file b (the reference),
 * which must have the same shape; fails the test on a missing tensor, another dtype or shape, a
 * non-finite value in a, or an all-zero reference. */
double qt_rel_l2(const char *a, const char *name_a, const char *b, const char *name_b);
/* The same over the positions where `mask_name` (I64 [B, L] in mask_file) is nonzero: the leading dims of
 * the compared tensors are the mask's (masked positions of a padded batch are not compared). */
double qt_rel_l2_masked(const char *a, const char *name_a, const char *b, const char *name_b, const char *mask_file,
                        const char *mask_name);

/* A PNG read back with libpng: RGB8 (the test fails on anything else), its size, and (if params is not
 * NULL) its "parameters" text chunk or NULL; caller frees. */
uint8_t *qt_read_png_rgb(const char *path, int *w, int *h, char **params);

#endif
