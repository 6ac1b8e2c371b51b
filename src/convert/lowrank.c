/* Truncated SVD by subspace iteration (see lowrank.h).
 *
 *   Y = A·Ω  (Ω: k×p Gaussian, p = rank + 8 oversampling), orthonormalize;
 *   POWER times: Z = orth(Aᵀ·Y), Y = orth(A·Z)        — Y's span converges to the top left subspace;
 *   B = Yᵀ·A (p×k), one-sided Jacobi on B's rows: B = J·Σ·Vᵀ, so A ≈ Y·B = (Y·J)·Σ·Vᵀ.
 * Everything in double. All matrices are row-major so every inner loop runs over contiguous memory. */
#include "convert/lowrank.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

#define OVERSAMPLE 8
#define POWER 8
#define JACOBI_SWEEPS 60

/* splitmix64: a small, well-mixed generator; the start block only has to be generic */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double gaussian(uint64_t *s) {
    /* Box–Muller on two uniforms in (0, 1] */
    double u1 = ((double)(next_u64(s) >> 11) + 1.0) / 9007199254740992.0;
    double u2 = (double)(next_u64(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* y[n][p] = a[n][k] · z[k][p] */
static void mul_a(const float *a, int64_t n, int64_t k, const double *z, int p, double *y) {
    memset(y, 0, sizeof *y * (size_t)(n * p));
    for (int64_t i = 0; i < n; i++) {
        double *yr = y + i * p;
        const float *ar = a + i * k;
        for (int64_t j = 0; j < k; j++) {
            const double x = ar[j];
            if (x == 0.0) continue;
            const double *zr = z + j * p;
            for (int c = 0; c < p; c++) yr[c] += x * zr[c];
        }
    }
}

/* z[k][p] = aᵀ · y[n][p] */
static void mul_at(const float *a, int64_t n, int64_t k, const double *y, int p, double *z) {
    memset(z, 0, sizeof *z * (size_t)(k * p));
    for (int64_t i = 0; i < n; i++) {
        const double *yr = y + i * p;
        const float *ar = a + i * k;
        for (int64_t j = 0; j < k; j++) {
            const double x = ar[j];
            if (x == 0.0) continue;
            double *zr = z + j * p;
            for (int c = 0; c < p; c++) zr[c] += x * yr[c];
        }
    }
}

/* Orthonormalize the p columns of m[rows][p] (modified Gram–Schmidt, twice, which is enough for
 * double-precision orthogonality). A column that is (numerically) in the span of the earlier ones is
 * set to zero: the matrix has lower rank than p. */
static void orthonormalize(double *m, int64_t rows, int p) {
    for (int c = 0; c < p; c++) {
        double before = 0;
        for (int64_t i = 0; i < rows; i++) before += m[i * p + c] * m[i * p + c];
        for (int pass = 0; pass < 2; pass++)
            for (int d = 0; d < c; d++) {
                double dot = 0;
                for (int64_t i = 0; i < rows; i++) dot += m[i * p + c] * m[i * p + d];
                for (int64_t i = 0; i < rows; i++) m[i * p + c] -= dot * m[i * p + d];
            }
        double after = 0;
        for (int64_t i = 0; i < rows; i++) after += m[i * p + c] * m[i * p + c];
        const double inv = after > 1e-24 * before && after > 0 ? 1.0 / sqrt(after) : 0.0;
        for (int64_t i = 0; i < rows; i++) m[i * p + c] *= inv;
    }
}

/* One-sided Jacobi on the rows of b[p][k]: rotates pairs of rows (and the same pairs of columns of
 * j[p][p], which starts as I) until all rows are mutually orthogonal. Afterwards b = Jᵀ·B₀ has
 * orthogonal rows σ_i·v_iᵀ, i.e. B₀ = J·Σ·Vᵀ. */
static void jacobi_rows(double *b, int p, int64_t k, double *j) {
    for (int i = 0; i < p; i++)
        for (int c = 0; c < p; c++) j[i * p + c] = i == c;
    for (int sweep = 0; sweep < JACOBI_SWEEPS; sweep++) {
        int rotated = 0;
        for (int r = 0; r < p; r++)
            for (int s = r + 1; s < p; s++) {
                double *br = b + (int64_t)r * k, *bs = b + (int64_t)s * k;
                double alpha = 0, beta = 0, gamma = 0;
                for (int64_t x = 0; x < k; x++) alpha += br[x] * br[x], beta += bs[x] * bs[x], gamma += br[x] * bs[x];
                if (gamma == 0.0 || fabs(gamma) <= 1e-15 * sqrt(alpha * beta)) continue;
                const double zeta = (beta - alpha) / (2.0 * gamma);
                const double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                const double c = 1.0 / sqrt(1.0 + t * t), sn = c * t;
                for (int64_t x = 0; x < k; x++) {
                    const double u = br[x], w = bs[x];
                    br[x] = c * u - sn * w;
                    bs[x] = sn * u + c * w;
                }
                for (int x = 0; x < p; x++) {
                    const double u = j[x * p + r], w = j[x * p + s];
                    j[x * p + r] = c * u - sn * w;
                    j[x * p + s] = sn * u + c * w;
                }
                rotated++;
            }
        if (!rotated) break;
    }
}

qd_status qd_lowrank_svd(const float *a, int64_t n, int64_t k, int rank, uint64_t seed, double *u, double *sigma, double *v) {
    if (n <= 0 || k <= 0 || rank <= 0) return qd_fail(QD_EINVAL, "low-rank SVD: %lld x %lld, rank %d: sizes must be positive", (long long)n, (long long)k, rank);
    memset(u, 0, sizeof *u * (size_t)(n * rank));
    memset(sigma, 0, sizeof *sigma * (size_t)rank);
    memset(v, 0, sizeof *v * (size_t)(rank * k));
    const int64_t full = n < k ? n : k;
    const int p = (int)(rank + OVERSAMPLE < full ? rank + OVERSAMPLE : full);
    double *y = malloc(sizeof *y * (size_t)(n * p)), *z = malloc(sizeof *z * (size_t)(k * p));
    double *b = malloc(sizeof *b * (size_t)(p * k)), *j = malloc(sizeof *j * (size_t)(p * p));
    double *norms = malloc(sizeof *norms * (size_t)p);
    int *order = malloc(sizeof *order * (size_t)p);
    if (!y || !z || !b || !j || !norms || !order) {
        free(y), free(z), free(b), free(j), free(norms), free(order);
        return qd_fail(QD_ENOMEM, "low-rank SVD of a %lld x %lld matrix: cannot allocate its workspace", (long long)n, (long long)k);
    }
    uint64_t state = seed;
    for (int64_t i = 0; i < k * p; i++) z[i] = gaussian(&state);
    mul_a(a, n, k, z, p, y);
    orthonormalize(y, n, p);
    for (int it = 0; it < POWER; it++) {
        mul_at(a, n, k, y, p, z);
        orthonormalize(z, k, p);
        mul_a(a, n, k, z, p, y);
        orthonormalize(y, n, p);
    }
    /* b[c][:] = Σ_i y[i][c]·a[i][:] */
    memset(b, 0, sizeof *b * (size_t)(p * k));
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < p; c++) {
            const double yc = y[i * p + c];
            if (yc == 0.0) continue;
            double *br = b + (int64_t)c * k;
            const float *ar = a + i * k;
            for (int64_t x = 0; x < k; x++) br[x] += yc * ar[x];
        }
    jacobi_rows(b, p, k, j);
    for (int c = 0; c < p; c++) {
        double s2 = 0;
        for (int64_t x = 0; x < k; x++) s2 += b[(int64_t)c * k + x] * b[(int64_t)c * k + x];
        norms[c] = sqrt(s2);
        order[c] = c;
    }
    /* descending σ (insertion sort: p ≤ a few hundred) */
    for (int c = 1; c < p; c++)
        for (int d = c; d > 0 && norms[order[d]] > norms[order[d - 1]]; d--) {
            int t = order[d];
            order[d] = order[d - 1], order[d - 1] = t;
        }
    const int keep = rank < p ? rank : p;
    for (int r = 0; r < keep; r++) {
        const int c = order[r];
        const double s = norms[c];
        if (!(s > 0)) continue;
        sigma[r] = s;
        for (int64_t x = 0; x < k; x++) v[(int64_t)r * k + x] = b[(int64_t)c * k + x] / s;
        for (int64_t i = 0; i < n; i++) {
            double acc = 0;
            for (int d = 0; d < p; d++) acc += y[i * p + d] * j[d * p + c];
            u[i * rank + r] = acc;
        }
    }
    free(y), free(z), free(b), free(j), free(norms), free(order);
    return QD_OK;
}
