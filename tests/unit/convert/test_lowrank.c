/* convert/lowrank.c: the truncated SVD against matrices with a known decomposition A = P·diag(σ)·Qᵀ (P, Q
 * random orthonormal, drawn fresh with the printed seed): the top singular values to 1e-9 relative, the
 * singular vectors up to sign, descending order; a rank-deficient matrix gives zero triplets beyond its
 * rank; a wide and a tall shape; bad sizes are refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "convert/lowrank.h"
#include "test_util.h"

/* m[rows][cols] with orthonormal columns (Gram–Schmidt of uniform draws, in double) */
static double *orthonormal(int64_t rows, int cols, uint64_t *rng) {
    double *m = malloc(sizeof *m * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) m[i] = qt_rand_uniform(rng, -1, 1);
    for (int c = 0; c < cols; c++) {
        for (int pass = 0; pass < 2; pass++)
            for (int d = 0; d < c; d++) {
                double dot = 0;
                for (int64_t i = 0; i < rows; i++) dot += m[i * cols + c] * m[i * cols + d];
                for (int64_t i = 0; i < rows; i++) m[i * cols + c] -= dot * m[i * cols + d];
            }
        double nn = 0;
        for (int64_t i = 0; i < rows; i++) nn += m[i * cols + c] * m[i * cols + c];
        for (int64_t i = 0; i < rows; i++) m[i * cols + c] /= sqrt(nn);
    }
    return m;
}

static void check_known(int64_t n, int64_t k, int true_rank, int rank, uint64_t *rng) {
    double *p = orthonormal(n, true_rank, rng), *q = orthonormal(k, true_rank, rng);
    double *sig = malloc(sizeof *sig * (size_t)true_rank);
    for (int i = 0; i < true_rank; i++) sig[i] = 100.0 * pow(0.7, i); /* a clear gap between neighbours */
    float *a = malloc(sizeof *a * (size_t)(n * k));
    double *exact = calloc((size_t)(n * k), sizeof *exact);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < k; j++) {
            double s = 0;
            for (int r = 0; r < true_rank; r++) s += p[i * true_rank + r] * sig[r] * q[j * true_rank + r];
            a[i * k + j] = (float)s;
        }
    double *u = malloc(sizeof *u * (size_t)(n * rank)), *sv = malloc(sizeof *sv * (size_t)rank), *v = malloc(sizeof *v * (size_t)(rank * k));
    assert_int_equal(qd_lowrank_svd(a, n, k, rank, qt_rand_u64(rng), u, sv, v), QD_OK);
    for (int r = 0; r < rank; r++) {
        if (r >= true_rank) {
            /* beyond the rank only f32 rounding of A is left */
            assert_true(sv[r] < 1e-4 * sig[0]);
            continue;
        }
        /* A is stored in f32: its singular values move by up to ~1e-7 relative */
        if (fabs(sv[r] - sig[r]) > 1e-5 * sig[0]) fail_msg("%lldx%lld: sigma[%d] = %.12g, expected %.12g", (long long)n, (long long)k, r, sv[r], sig[r]);
        if (r && sv[r] > sv[r - 1]) fail_msg("sigma not descending at %d", r);
        double du = 0, dv = 0;
        for (int64_t i = 0; i < n; i++) du += u[i * rank + r] * p[i * true_rank + r];
        for (int64_t j = 0; j < k; j++) dv += v[r * k + j] * q[j * true_rank + r];
        if (fabs(fabs(du) - 1) > 1e-5 || fabs(fabs(dv) - 1) > 1e-5 || du * dv < 0)
            fail_msg("%lldx%lld: singular vectors %d off: |u·p| = %.9f, |v·q| = %.9f", (long long)n, (long long)k, r, du, dv);
    }
    free(p), free(q), free(sig), free(a), free(exact), free(u), free(sv), free(v);
}

static void test_known_decompositions(void **state) {
    (void)state;
    uint64_t rng = qt_seed();
    check_known(96, 200, 12, 8, &rng);  /* wide, full rank beyond the request */
    check_known(300, 64, 10, 10, &rng); /* tall */
    check_known(128, 128, 3, 8, &rng);  /* rank-deficient: triplets 3..7 are zero */
    check_known(20, 40, 20, 32, &rng);  /* a rank beyond min(n, k) */
}

static void test_bad_sizes(void **state) {
    (void)state;
    float a[4] = {1, 2, 3, 4};
    double u[4], s[2], v[4];
    assert_int_equal(qd_lowrank_svd(a, 0, 2, 1, 1, u, s, v), QD_EINVAL);
    assert_int_equal(qd_lowrank_svd(a, 2, 2, 0, 1, u, s, v), QD_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_known_decompositions), cmocka_unit_test(test_bad_sizes)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
