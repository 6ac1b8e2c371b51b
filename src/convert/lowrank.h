/* Truncated SVD of a dense matrix — the low-rank branch of `qdit convert svdquant` (formats.md §5.3:
 * SVDQuant keeps the top singular directions of the smoothed weight in 16-bit and quantizes the rest).
 *
 * Method: randomized subspace (block power) iteration, then a one-sided Jacobi SVD of the small
 * projected matrix. Why this and not LAPACK: only the top r (32–128) of min(N, K) (up to 3072)
 * directions are wanted, so iterating on an N×(r+8) block costs O(N·K·r) per pass where a full
 * gesdd costs O(N·K·min(N, K)); it needs no new dependency; and it is deterministic (the start block
 * is drawn from `seed`), so a conversion is reproducible byte for byte. With 8 power passes the top
 * directions of a weight with a spectral gap are found to double rounding; without a gap the result is
 * still an orthonormal r-dimensional subspace that captures nearly the optimal energy, which is all the
 * quantizer needs (the residual absorbs the rest). */
#ifndef QD_CONVERT_LOWRANK_H
#define QD_CONVERT_LOWRANK_H

#include <stdint.h>

#include "qdit.h"

/* a: [n][k] row-major. Writes the top `rank` triplets, sorted by descending singular value:
 * u [n][rank] (column j = left vector j), sigma [rank], v [rank][k] (row j = right vector j). Ranks
 * beyond min(n, k), and directions of a rank-deficient a, come back as zero vectors with sigma 0. */
qd_status qd_lowrank_svd(const float *a, int64_t n, int64_t k, int rank, uint64_t seed, double *u, double *sigma, double *v);

#endif
