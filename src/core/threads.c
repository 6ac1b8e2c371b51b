/* Thread counts for parallel regions (see threads.h). */
#include "core/threads.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int qd_threads_for(int64_t work, int64_t grain) {
#ifdef _OPENMP
    int64_t max = omp_get_max_threads(), t = grain > 0 ? work / grain : max;
    return t < 1 ? 1 : t > max ? (int)max : (int)t;
#else
    (void)work, (void)grain;
    return 1;
#endif
}
