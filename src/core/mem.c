/* Large buffers on transparent huge pages (see mem.h). */
#include "core/mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

void *qd_alloc_big(size_t bytes) {
    void *p = NULL;
    const size_t n = bytes ? (bytes + 63) / 64 * 64 : 64;
    if (n < QD_BIG_BYTES) return posix_memalign(&p, 64, n) == 0 ? p : NULL;
    if (posix_memalign(&p, HUGE_PAGE, n) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    /* whole huge pages inside the buffer; a kernel without THP answers EINVAL, which changes nothing */
    (void)madvise(p, n / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
#endif
    return p;
}

void *qd_calloc_big(size_t bytes) {
    void *p = qd_alloc_big(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}
