/* bench_linear_float — the CPU float-path linears side by side with oneDNN's bf16 matmul, in one run
 * (DESIGN.md "Performance method": ratios measured together, never lone absolute times).
 *
 * For M tokens (default 4096) and (K, N) ∈ {(3072, 3072), (3072, 12288), (12288, 3072)} — FLUX-sized
 * projections — it times, through the backend dispatcher qd_cpu_linear with BF16 activations and output:
 *   dense-bf16       BF16 weights (oneDNN bf16 matmul behind qd_cpu_linear_dense)
 *   fp8-channel-dyn  fp8_channel weights, per-token dynamic activations (online fp8, quant-sglang.md §4.2)
 *   fp8-tensor-stat  fp8_tensor weights, static input_scale (ModelOpt FP8, §4.7)
 *   fp8-block        128×128 block weights, 1×128 dynamic groups (§4.3)
 *   mxfp8            MXFP8 weights and activations (E8M0 per 32, §4.6)
 *   awq-w4a16        AWQ uint4 weights, group 64 (formats.md §5.6)
 * each including its activation quantization, against oneDNN's bf16 matmul (weights pre-reordered, no
 * bias) on the same shape. Every kernel and the baseline run once to warm up, then `reps` rounds of
 * [baseline, each kernel], interleaved so machine noise hits all alike; the best time of each is reported.
 *
 * usage: bench_linear_float [--m M] [--reps R] [--only K,N] [--shape K,N (any other shape)] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

#include "backend/cpu/cpu.h"
#include "core/codec.h"
#include "quant/schemes.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static qd_view owned(qd_dtype dt, int rank, int64_t s0, int64_t s1, void *data) {
    qd_view v = {.dtype = dt, .rank = rank, .shape = {s0, s1}, .data = data, .owned = data};
    return v;
}

/* ---------------------------------------------------------------- oneDNN baseline */

typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t st;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, dst;
    void *wbuf;
} baseline;

#define DNNL_OK(x)                                                                                             \
    do {                                                                                                       \
        if ((x) != dnnl_success) {                                                                             \
            fprintf(stderr, "oneDNN call failed: %s\n", #x);                                                   \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

static void baseline_init(baseline *b, int64_t m, int64_t k, int64_t n, const uint16_t *w, void *x, void *y) {
    DNNL_OK(dnnl_engine_create(&b->eng, dnnl_cpu, 0));
    DNNL_OK(dnnl_stream_create(&b->st, b->eng, dnnl_stream_default_flags));
    dnnl_memory_desc_t a, plain, any, c;
    const dnnl_dims_t ad = {m, k}, wd = {k, n}, cd = {m, n}, ws = {1, k};
    DNNL_OK(dnnl_memory_desc_init_by_tag(&a, 2, ad, dnnl_bf16, dnnl_ab));
    DNNL_OK(dnnl_memory_desc_init_by_strides(&plain, 2, wd, dnnl_bf16, ws));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&any, 2, wd, dnnl_bf16, dnnl_format_tag_any));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&c, 2, cd, dnnl_bf16, dnnl_ab));
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd;
    DNNL_OK(dnnl_matmul_desc_init(&md, &a, &any, NULL, &c));
    DNNL_OK(dnnl_primitive_desc_create(&pd, &md, NULL, b->eng, NULL));
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    b->wbuf = qd_cpu_alloc(dnnl_memory_desc_get_size(wmd));
    dnnl_memory_t from;
    DNNL_OK(dnnl_memory_create(&from, &plain, b->eng, (void *)w));
    DNNL_OK(dnnl_memory_create(&b->wei, wmd, b->eng, b->wbuf));
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t rp;
    DNNL_OK(dnnl_reorder_primitive_desc_create(&rpd, &plain, b->eng, wmd, b->eng, NULL));
    DNNL_OK(dnnl_primitive_create(&rp, rpd));
    dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, b->wei}};
    DNNL_OK(dnnl_primitive_execute(rp, b->st, 2, ra));
    DNNL_OK(dnnl_stream_wait(b->st));
    dnnl_primitive_destroy(rp);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(from);
    DNNL_OK(dnnl_memory_create(&b->src, &a, b->eng, x));
    DNNL_OK(dnnl_memory_create(&b->dst, &c, b->eng, y));
    DNNL_OK(dnnl_primitive_create(&b->prim, pd));
    dnnl_primitive_desc_destroy(pd);
}

static void baseline_run(baseline *b) {
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, b->src}, {DNNL_ARG_WEIGHTS, b->wei}, {DNNL_ARG_DST, b->dst}};
    DNNL_OK(dnnl_primitive_execute(b->prim, b->st, 3, args));
    DNNL_OK(dnnl_stream_wait(b->st));
}

static void baseline_free(baseline *b) {
    dnnl_primitive_destroy(b->prim);
    dnnl_memory_destroy(b->src);
    dnnl_memory_destroy(b->wei);
    dnnl_memory_destroy(b->dst);
    qd_cpu_free(b->wbuf);
    dnnl_stream_destroy(b->st);
    dnnl_engine_destroy(b->eng);
}

/* ---------------------------------------------------------------- layers */

enum { L_DENSE, L_FP8_CHANNEL, L_FP8_STATIC, L_FP8_BLOCK, L_MXFP8, L_AWQ, L_COUNT };
static const char *const layer_names[L_COUNT] = {"dense-bf16", "fp8-channel-dyn", "fp8-tensor-stat", "fp8-block", "mxfp8",
                                                 "awq-w4a16"};

static void make_layer(int kind, qd_linear *l, const float *w, const uint16_t *wb, int64_t n, int64_t k, float x_amax) {
    memset(l, 0, sizeof *l);
    l->alpha = 1.0f;
    switch (kind) {
    case L_DENSE: {
        uint16_t *copy = xmalloc(2 * (size_t)(n * k));
        memcpy(copy, wb, 2 * (size_t)(n * k));
        l->scheme = QD_SCHEME_DENSE;
        snprintf(l->scheme_name, sizeof l->scheme_name, "bf16");
        l->out_features = n;
        l->in_features = k;
        l->weight = owned(QD_DTYPE_BF16, 2, n, k, copy);
        break;
    }
    case L_FP8_CHANNEL:
    case L_FP8_STATIC:
        if (qd_quantize_fp8(w, n, k, kind == L_FP8_STATIC, l) != QD_OK) exit(1);
        if (kind == L_FP8_STATIC) {
            float *is = xmalloc(sizeof(float));
            *is = x_amax / 448.0f;
            l->input_scale = owned(QD_DTYPE_F32, 1, 1, 0, is);
            l->act = QD_ACT_STATIC_TENSOR;
        }
        break;
    case L_FP8_BLOCK: {
        const int64_t gn = (n + 127) / 128, gk = (k + 127) / 128;
        uint8_t *q = xmalloc((size_t)(n * k));
        float *s = xmalloc(sizeof(float) * (size_t)(gn * gk));
        for (int64_t bn = 0; bn < gn; bn++)
            for (int64_t bk = 0; bk < gk; bk++) {
                float amax = 0;
                for (int64_t r = bn * 128; r < n && r < bn * 128 + 128; r++)
                    for (int64_t c = bk * 128; c < k && c < bk * 128 + 128; c++) amax = fmaxf(amax, fabsf(w[r * k + c]));
                const float sc = fmaxf(amax / 448.0f, 1e-12f);
                s[bn * gk + bk] = sc;
                for (int64_t r = bn * 128; r < n && r < bn * 128 + 128; r++)
                    for (int64_t c = bk * 128; c < k && c < bk * 128 + 128; c++) q[r * k + c] = qd_f32_to_e4m3(w[r * k + c] / sc);
            }
        l->scheme = QD_SCHEME_FP8;
        snprintf(l->scheme_name, sizeof l->scheme_name, "fp8_block");
        l->out_features = n;
        l->in_features = k;
        l->block_n = l->block_k = 128;
        l->act = QD_ACT_DYNAMIC_GROUP;
        l->act_group = 128;
        l->weight = owned(QD_DTYPE_F8_E4M3, 2, n, k, q);
        l->scale = owned(QD_DTYPE_F32, 2, gn, gk, s);
        break;
    }
    case L_MXFP8:
        if (qd_quantize_mx(w, n, k, false, l) != QD_OK) exit(1);
        break;
    case L_AWQ: {
        const int64_t g = k / 64;
        uint8_t *q = xmalloc((size_t)(n * k / 2));
        uint16_t *s = xmalloc(2 * (size_t)(n * g)), *z = xmalloc(2 * (size_t)(n * g));
        for (int64_t i = 0; i < n * k / 2; i++) q[i] = (uint8_t)(128.0f + 127.0f * frand());
        for (int64_t i = 0; i < n * g; i++) {
            const float sc = 0.002f + 0.01f * fabsf(frand());
            s[i] = qd_f32_to_bf16(sc);
            z[i] = qd_f32_to_bf16(-7.0f * qd_bf16_to_f32(s[i]));
        }
        l->scheme = QD_SCHEME_AWQ_W4A16;
        snprintf(l->scheme_name, sizeof l->scheme_name, "awq_w4a16");
        l->out_features = n;
        l->in_features = k;
        l->block_k = 64;
        l->weight = owned(QD_DTYPE_U8, 2, n, k / 2, q);
        l->scale = owned(QD_DTYPE_BF16, 2, n, g, s);
        l->zeros = owned(QD_DTYPE_BF16, 2, n, g, z);
        break;
    }
    }
    l->name = strdup(layer_names[kind]);
}

static void bench_shape(int64_t m, int64_t k, int64_t n, int reps) {
    const double flop = 2.0 * (double)m * (double)n * (double)k;
    float *w = xmalloc(sizeof(float) * (size_t)(n * k));
    uint16_t *wb = xmalloc(2 * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++) {
        w[i] = frand() * 0.05f;
        wb[i] = qd_f32_to_bf16(w[i]);
    }
    uint16_t *xb = xmalloc(2 * (size_t)(m * k)), *y = qd_cpu_alloc(2 * (size_t)(m * n)), *yb = qd_cpu_alloc(2 * (size_t)(m * n));
    float x_amax = 0;
    for (int64_t i = 0; i < m * k; i++) {
        float v = frand() * (i % 97 == 0 ? 8.0f : 1.0f);
        xb[i] = qd_f32_to_bf16(v);
        x_amax = fmaxf(x_amax, fabsf(qd_bf16_to_f32(xb[i])));
    }
    qd_linear layers[L_COUNT];
    for (int i = 0; i < L_COUNT; i++) make_layer(i, &layers[i], w, wb, n, k, x_amax);
    free(w);
    baseline b;
    baseline_init(&b, m, k, n, wb, xb, yb);
    qd_tensor x = {.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {m, k}, .data = xb};
    qd_tensor yt = {.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {m, n}, .data = y};
    double best[L_COUNT + 1];
    for (int i = 0; i <= L_COUNT; i++) best[i] = 1e30;
    for (int rep = -1; rep < reps; rep++) { /* rep −1: warm-up (primitives, reorders, scratch) */
        double t0 = now();
        baseline_run(&b);
        double t = now() - t0;
        if (rep >= 0 && t < best[L_COUNT]) best[L_COUNT] = t;
        for (int i = 0; i < L_COUNT; i++) {
            t0 = now();
            if (qd_cpu_linear(NULL, &layers[i], &x, &yt) != QD_OK) {
                fprintf(stderr, "%s: %s\n", layer_names[i], qd_last_error());
                exit(1);
            }
            t = now() - t0;
            if (rep >= 0 && t < best[i]) best[i] = t;
        }
    }
    printf("| %5lld | %5lld | %5lld | %-16s | %8.2f | %7.1f | %5s |\n", (long long)m, (long long)k, (long long)n, "oneDNN bf16",
           best[L_COUNT] * 1e3, flop / best[L_COUNT] / 1e9, "1.00");
    for (int i = 0; i < L_COUNT; i++)
        printf("| %5lld | %5lld | %5lld | %-16s | %8.2f | %7.1f | %5.2f |\n", (long long)m, (long long)k, (long long)n,
               layer_names[i], best[i] * 1e3, flop / best[i] / 1e9, best[L_COUNT] / best[i]);
    fflush(stdout);
    baseline_free(&b);
    for (int i = 0; i < L_COUNT; i++) qd_linear_free(&layers[i]);
    free(wb), free(xb);
    qd_cpu_free(y), qd_cpu_free(yb);
}

int main(int argc, char **argv) {
    int64_t m = 4096;
    int reps = 3;
    int64_t only_k = 0, only_n = 0, shape_k = 0, shape_n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--m") && i + 1 < argc) m = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            long long kk, nn;
            if (sscanf(argv[++i], "%lld,%lld", &kk, &nn) == 2) only_k = kk, only_n = nn;
        } else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            long long kk, nn;
            if (sscanf(argv[++i], "%lld,%lld", &kk, &nn) != 2 || kk <= 0 || nn <= 0) {
                fprintf(stderr, "--shape wants K,N\n");
                return 2;
            }
            shape_k = kk, shape_n = nn;
        } else {
            fprintf(stderr, "usage: %s [--m M] [--reps R] [--only K,N] [--shape K,N]\n", argv[0]);
            return 2;
        }
    }
    printf("CPU float-path linears vs oneDNN bf16 matmul (BF16 x and y; best of %d interleaved rounds; ISA %s, %d threads)\n\n",
           reps, qd_cpu_isa_get()->level, qd_cpu_threads());
    printf("| M     | K     | N     | kernel           | ms       | GFLOP/s | ratio |\n");
    printf("|-------|-------|-------|------------------|----------|---------|-------|\n");
    if (shape_k) {
        bench_shape(m, shape_k, shape_n, reps);
        return 0;
    }
    const int64_t shapes[3][2] = {{3072, 3072}, {3072, 12288}, {12288, 3072}};
    for (int s = 0; s < 3; s++) {
        if (only_k && (shapes[s][0] != only_k || shapes[s][1] != only_n)) continue;
        bench_shape(m, shapes[s][0], shapes[s][1], reps);
    }
    return 0;
}
