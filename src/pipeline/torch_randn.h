/* PyTorch's CPU generator, reproduced: `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s))`
 * gives the same values here (float32 and bfloat16), so a user can compare qdit's image with diffusers'
 * for one seed (diffusers' pipelines draw their initial latents exactly so). What torch does (ATen's CPU
 * generator and normal kernel):
 *   - mt19937 seeded with the low 32 bits of the seed;
 *   - a tensor of ≥ 16 values (contiguous): every value first gets a uniform u = (r & (2^d − 1))·2^−d from
 *     one 32-bit draw r (d = 24 for float, 8 for bfloat16), then each 16-block becomes Box–Muller pairs
 *     (j, j + 8): ρ = sqrt(−2·log(1 − u_j)), θ = 2π·u_{j+8}, x_j = ρ·cos θ, x_{j+8} = ρ·sin θ, in the
 *     tensor's dtype; when n % 16 ≠ 0 the last 16 values are drawn again and transformed as one block;
 *   - fewer than 16 values: per value, normal_distribution<double>: u1, u2 from 53-bit uniforms (two 32-bit
 *     draws each, the first the high word), ρ = sqrt(−2·log1p(−u2)), θ = 2π·u1, x = ρ·cos θ, and ρ·sin θ
 *     cached in the generator for the next such value (across calls too).
 * Float32 agrees with torch to the last bit or within a few ulp: torch's AVX2 build evaluates log/cos/sin
 * with SLEEF (1-ulp functions) where this uses the C library. */
#ifndef QD_PIPELINE_TORCH_RANDN_H
#define QD_PIPELINE_TORCH_RANDN_H

#include <stdbool.h>
#include <stdint.h>

#include "qdit.h"

typedef struct {
    uint32_t mt[624];
    int index;
    bool has_normal; /* the cached second value of the double Box–Muller */
    double next_normal;
} qd_torch_generator;

/* torch.Generator("cpu").manual_seed(seed) */
void qd_torch_generator_seed(qd_torch_generator *g, uint64_t seed);
/* torch.randn(n, generator=g, dtype=torch.float32), contiguous */
void qd_torch_randn_f32(qd_torch_generator *g, float *out, int64_t n);
/* torch.randn(n, generator=g, dtype=torch.bfloat16): bf16 bit patterns */
qd_status qd_torch_randn_bf16(qd_torch_generator *g, uint16_t *out, int64_t n);

#endif
