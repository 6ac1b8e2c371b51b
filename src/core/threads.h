/* How many OpenMP threads one parallel region gets: none beyond the caller for small work.
 *
 * Why: the models run thousands of small ops (the embedded tiny model: dim 192, 64 image tokens). Each
 * `#pragma omp parallel` with a team of two or more ends in a barrier, and when the machine is busy
 * with other work a thread waiting there (libgomp spins by default) holds a core the thread with work
 * needs: measured 86 s instead of 0.4 s for the tiny model beside a CI run. A team of one has no
 * barrier to wait at. So every region asks for qd_threads_for(work, grain) threads: one thread per
 * `grain` units of work, at least 1, at most omp_get_max_threads().
 *
 * The grains, measured on the 2-core CI-class machine (quiet, libgomp's default spinning, where forking
 * a team of two costs ~1-2 µs; docs/benchmarks.md "Small ops on one thread"):
 *   gelu (bf16) 32K elements: 9.5 µs on one thread, 5.1 µs on two; 64K: 19 µs vs 10 µs.
 *   bf16 GEMM 64×192×192 (2.4 M multiply-adds): 16 µs vs 9 µs; 128×192×768 (19 M): 98 µs vs 50 µs.
 * An elementwise grain is ~10 µs of one core's work, a product grain ~100 µs (16 M multiply-adds): below
 * that a second thread saves at most that much on a quiet machine, while on a busy one its barrier can
 * cost a scheduler time slice (milliseconds). Products get the larger grain because there are many of
 * them per step: at 4 M the tiny model's FFN products (~9 M) still took two threads every step.
 * oneDNN's matmuls (linear_dense.c) are capped the same way through omp_set_num_threads.
 *
 * The thread count never changes results: every region splits work into items whose arithmetic does not
 * depend on which thread runs them, and reductions are max (exact in any order). */
#ifndef QD_CORE_THREADS_H
#define QD_CORE_THREADS_H

#include <stdint.h>

#define QD_GRAIN_ELEMS ((int64_t)32 << 10) /* elementwise, norms, copies, packing: elements */
#define QD_GRAIN_MACS ((int64_t)16 << 20)  /* products (GEMM, attention, convolution): multiply-adds */

/* Threads for a parallel region of `work` units, `grain` of which are worth one thread. */
int qd_threads_for(int64_t work, int64_t grain);

#endif
