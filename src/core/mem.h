/* Large buffers on transparent huge pages.
 *
 * Why: a FLUX.1-sized model holds 6–24 GB of weights and activations in a few hundred large buffers. Linux's
 * default on Debian is THP "madvise": anonymous memory gets 4 KiB pages unless the program asks for huge ones. With
 * 4 KiB pages each first touch of a page faults, and every pass over the weights walks millions of page-table
 * entries. Measured on the 2-core CI-class machine (docs/benchmarks.md, "Large buffers on huge pages"): drawing
 * Z-Image-Turbo's random weights took 42.1 s with 4 KiB pages, 53.8 s of it system time. With huge pages on every
 * malloc (GLIBC_TUNABLES=glibc.malloc.hugetlb=1) it took 16.7 s. qd_alloc_big asks for them on the buffers that
 * matter, whatever the environment.
 *
 * qd_alloc_big(n): n bytes, 64-byte aligned (2 MiB aligned and advised MADV_HUGEPAGE from QD_BIG_BYTES on), freed
 * with free(). NULL when out of memory. The advice is a hint: where the kernel has no THP, or says no, the pages
 * are ordinary ones and nothing else changes. */
#ifndef QD_CORE_MEM_H
#define QD_CORE_MEM_H

#include <stddef.h>

#define QD_BIG_BYTES ((size_t)4 << 20)

void *qd_alloc_big(size_t bytes);
/* the same, zeroed (calloc's contract) */
void *qd_calloc_big(size_t bytes);

#endif
