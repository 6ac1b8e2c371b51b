/* PyTorch's CPU random normal draws (see torch_randn.h for the algorithm and where it comes from). */
#include "pipeline/torch_randn.h"

#include <math.h>
#include <stdlib.h>

#include "core/codec.h"
#include "core/status.h"

void qd_torch_generator_seed(qd_torch_generator *g, uint64_t seed) {
    g->mt[0] = (uint32_t)(seed & 0xffffffffu);
    for (int j = 1; j < 624; j++) g->mt[j] = 1812433253u * (g->mt[j - 1] ^ (g->mt[j - 1] >> 30)) + (uint32_t)j;
    g->index = 624;
    g->has_normal = false;
    g->next_normal = 0;
}

/* one mt19937 output */
static uint32_t next_u32(qd_torch_generator *g) {
    if (g->index >= 624) {
        for (int j = 0; j < 624; j++) {
            const uint32_t y = (g->mt[j] & 0x80000000u) | (g->mt[(j + 1) % 624] & 0x7fffffffu);
            g->mt[j] = g->mt[(j + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        g->index = 0;
    }
    uint32_t y = g->mt[g->index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static double uniform_double(qd_torch_generator *g) {
    const uint64_t hi = next_u32(g), lo = next_u32(g);
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * 0x1p-53;
}

/* normal_distribution<double> with the generator's cache */
static double normal_double(qd_torch_generator *g) {
    if (g->has_normal) {
        g->has_normal = false;
        return g->next_normal;
    }
    const double u1 = uniform_double(g), u2 = uniform_double(g);
    const double r = sqrt(-2.0 * log1p(-u2)), theta = 2.0 * M_PI * u1;
    g->next_normal = r * sin(theta);
    g->has_normal = true;
    return r * cos(theta);
}

static float bf16_round(float v) { return qd_bf16_to_f32(qd_f32_to_bf16(v)); }

/* the 16-block Box–Muller of float32 uniforms, in float (torch's AVX2 kernel: θ = float(2π)·u in float) */
static void fill16_f32(float *d) {
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - d[j], u2 = d[j + 8];
        const float radius = sqrtf(-2.0f * logf(u1));
        const float theta = (float)(2.0 * M_PI) * u2;
        d[j] = radius * cosf(theta);
        d[j + 8] = radius * sinf(theta);
    }
}

/* the same in bfloat16 arithmetic: every intermediate rounded to bf16, as c10::BFloat16's operators do */
static void fill16_bf16(float *d) {
    for (int j = 0; j < 8; j++) {
        const float u1 = bf16_round(1.0f - d[j]), u2 = d[j + 8];
        const float lg = bf16_round(logf(u1));
        const float radius = bf16_round(sqrtf(bf16_round(-2.0f * lg)));
        const float theta = bf16_round((float)(2.0 * M_PI * (double)u2));
        d[j] = bf16_round(bf16_round(bf16_round(radius * bf16_round(cosf(theta))) * 1.0f) + 0.0f);
        d[j + 8] = bf16_round(bf16_round(bf16_round(radius * bf16_round(sinf(theta))) * 1.0f) + 0.0f);
    }
}

/* torch's normal_fill: uniforms with `bits` bits (rounded to bf16 for bfloat16), then 16-blocks */
static void normal_fill(qd_torch_generator *g, float *d, int64_t n, int bits, bool bf16) {
    const uint32_t mask = (1u << bits) - 1;
    const float scale = 1.0f / (float)(1u << bits);
    for (int64_t i = 0; i < n; i++) d[i] = (float)(next_u32(g) & mask) * scale;
    for (int64_t i = 0; i + 16 <= n; i += 16) bf16 ? fill16_bf16(d + i) : fill16_f32(d + i);
    if (n % 16) {
        float *t = d + n - 16;
        for (int i = 0; i < 16; i++) t[i] = (float)(next_u32(g) & mask) * scale;
        bf16 ? fill16_bf16(t) : fill16_f32(t);
    }
}

void qd_torch_randn_f32(qd_torch_generator *g, float *out, int64_t n) {
    if (n >= 16) {
        normal_fill(g, out, n, 24, false);
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = (float)normal_double(g);
}

qd_status qd_torch_randn_bf16(qd_torch_generator *g, uint16_t *out, int64_t n) {
    if (n >= 16) {
        /* computed in f32 holding bf16 values, then stored */
        float *d = malloc(sizeof(float) * (size_t)n);
        if (!d) return qd_fail(QD_ENOMEM, "random latents: cannot allocate %lld values", (long long)n);
        normal_fill(g, d, n, 8, true);
        for (int64_t i = 0; i < n; i++) out[i] = qd_f32_to_bf16(d[i]);
        free(d);
        return QD_OK;
    }
    for (int64_t i = 0; i < n; i++) out[i] = qd_f32_to_bf16((float)normal_double(g));
    return QD_OK;
}
