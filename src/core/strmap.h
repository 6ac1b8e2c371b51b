/* A string → index hash map (open addressing, FNV-1a). Keys are borrowed: the caller keeps them alive
 * for the map's lifetime. Used for tensor-name lookups in checkpoints. */
#ifndef QD_CORE_STRMAP_H
#define QD_CORE_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char **keys;
    size_t *values;
    size_t cap;   /* a power of two, or 0 */
    size_t count;
} qd_strmap;

void qd_strmap_init(qd_strmap *m);
void qd_strmap_free(qd_strmap *m);
/* Insert key → value. Returns 1 if inserted, 0 if the key was already present (value untouched and
 * *existing set to the stored value when non-NULL), -1 on allocation failure. */
int qd_strmap_put(qd_strmap *m, const char *key, size_t value, size_t *existing);
bool qd_strmap_get(const qd_strmap *m, const char *key, size_t *value);

#endif
