/* bench_linear_int — the CPU integer-path linears against oneDNN's bf16 matmul, side by side.
 *
 * For M tokens (default 4096) and (K, N) ∈ {(3072, 3072), (3072, 12288), (12288, 3072)} (FLUX-sized
 * linears), it times each integer-path kernel through qd_cpu_linear — activations BF16 in and BF16
 * out, activation quantization INCLUDED (and, for SVDQuant, the rank-32 low-rank branch) — and oneDNN
 * 2.6's bf16 matmul (weights in the layout oneDNN picks, format_tag_any, reordered outside the timing)
 * on the same shape in the same run. GFLOP/s counts the 2·M·N·K of the main product for every row, so
 * the ratio column is plain speed-up over the bf16 baseline. Each figure is the best of --repeat
 * rounds after one warm-up call (which also builds the layer's prepared form); a round times the
 * baseline and then every kernel once, so load from other processes on a shared machine spreads over
 * all of them instead of spoiling one.
 *
 * Kernels: w8a8_dynamic (qdit's online int8 / msModelSlim W8A8_DYNAMIC), w8a8_static, w4a4_dynamic,
 * nvfp4 (online: global scale per call), nvfp4_static (ModelOpt input_scale), mxfp4, svdq_int4,
 * svdq_nvfp4.
 *
 * Usage: bench_linear_int [--m M] [--repeat R] [--filter SUBSTRING] [--shape K,N]
 * Results (with date, machine and command) belong in docs/benchmarks.md. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

#include "backend/cpu/cpu.h"
#include "core/codec.h"
#include "quant/linear.h"
#include "quant/schemes.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next_u64() >> 11) * 0x1.0p-53); }
static float draw(float s) {
    float u = uniform(-1, 1) + uniform(-1, 1) + uniform(-1, 1);
    if (next_u64() % 97 == 0) u *= 6;
    return u * s;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_linear_int: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------------ oneDNN bf16 --------------- */

#define DNNL_CHECK(call)                                                                                                     \
    do {                                                                                                                     \
        dnnl_status_t st_ = (call);                                                                                          \
        if (st_ != dnnl_success) {                                                                                           \
            fprintf(stderr, "oneDNN: %s failed (%d)\n", #call, (int)st_);                                                    \
            exit(1);                                                                                                         \
        }                                                                                                                    \
    } while (0)

typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, dst;
} dnnl_mm;

static void dnnl_mm_make(dnnl_mm *d, int64_t m, int64_t k, int64_t n) {
    DNNL_CHECK(dnnl_engine_create(&d->eng, dnnl_cpu, 0));
    DNNL_CHECK(dnnl_stream_create(&d->stream, d->eng, dnnl_stream_default_flags));
    dnnl_memory_desc_t a, w_user, w_any, y;
    dnnl_dims_t ad = {m, k}, wd = {k, n}, yd = {m, n};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&a, 2, ad, dnnl_bf16, dnnl_ab));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&w_user, 2, wd, dnnl_bf16, dnnl_ba)); /* W [N,K] row-major = Wᵀ "ba" */
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&w_any, 2, wd, dnnl_bf16, dnnl_format_tag_any));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&y, 2, yd, dnnl_bf16, dnnl_ab));
    dnnl_matmul_desc_t md;
    DNNL_CHECK(dnnl_matmul_desc_init(&md, &a, &w_any, NULL, &y));
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &md, NULL, d->eng, NULL));
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    DNNL_CHECK(dnnl_primitive_create(&d->prim, pd));
    DNNL_CHECK(dnnl_memory_create(&d->src, &a, d->eng, DNNL_MEMORY_ALLOCATE));
    DNNL_CHECK(dnnl_memory_create(&d->wei, w_md, d->eng, DNNL_MEMORY_ALLOCATE));
    DNNL_CHECK(dnnl_memory_create(&d->dst, &y, d->eng, DNNL_MEMORY_ALLOCATE));
    /* random bf16 data; the weights reordered from the user layout into oneDNN's, outside the timing */
    dnnl_memory_t wu;
    DNNL_CHECK(dnnl_memory_create(&wu, &w_user, d->eng, DNNL_MEMORY_ALLOCATE));
    void *p;
    DNNL_CHECK(dnnl_memory_get_data_handle(d->src, &p));
    for (int64_t i = 0; i < m * k; i++) ((uint16_t *)p)[i] = qd_f32_to_bf16(draw(1.0f));
    DNNL_CHECK(dnnl_memory_get_data_handle(wu, &p));
    for (int64_t i = 0; i < n * k; i++) ((uint16_t *)p)[i] = qd_f32_to_bf16(draw(0.02f));
    dnnl_primitive_desc_t rpd;
    DNNL_CHECK(dnnl_reorder_primitive_desc_create(&rpd, &w_user, d->eng, w_md, d->eng, NULL));
    dnnl_primitive_t r;
    DNNL_CHECK(dnnl_primitive_create(&r, rpd));
    dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, wu}, {DNNL_ARG_TO, d->wei}};
    DNNL_CHECK(dnnl_primitive_execute(r, d->stream, 2, rargs));
    DNNL_CHECK(dnnl_stream_wait(d->stream));
    dnnl_primitive_destroy(r);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(wu);
    dnnl_primitive_desc_destroy(pd);
}

/* one execution, timed */
static double dnnl_mm_run(dnnl_mm *d) {
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, d->src}, {DNNL_ARG_WEIGHTS, d->wei}, {DNNL_ARG_DST, d->dst}};
    const double t0 = now();
    DNNL_CHECK(dnnl_primitive_execute(d->prim, d->stream, 3, args));
    DNNL_CHECK(dnnl_stream_wait(d->stream));
    return now() - t0;
}

static void dnnl_mm_free(dnnl_mm *d) {
    dnnl_primitive_destroy(d->prim);
    dnnl_memory_destroy(d->src), dnnl_memory_destroy(d->wei), dnnl_memory_destroy(d->dst);
    dnnl_stream_destroy(d->stream);
    dnnl_engine_destroy(d->eng);
}

/* ------------------------------------------------------------------ layers -------------------- */

static float *random_weight(int64_t n, int64_t k) {
    float *w = xmalloc(sizeof *w * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++) w[i] = draw(0.02f);
    return w;
}

static qd_view f32_scalar(float v) {
    float *p = xmalloc(4);
    *p = v;
    return (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {1}, .data = p, .owned = p};
}

static qd_status b_int8(int64_t n, int64_t k, qd_linear *l) {
    float *w = random_weight(n, k);
    qd_status s = qd_quantize_int8(w, n, k, l);
    free(w);
    return s;
}

static qd_status b_w8a8_static(int64_t n, int64_t k, qd_linear *l) {
    qd_status s = b_int8(n, k, l);
    if (s) return s;
    /* msModelSlim W8A8: the same int8 weight with a calibrated per-tensor activation scale and offset */
    const float is = 6.0f / 127.0f;
    float *deq = xmalloc(4 * (size_t)n);
    int32_t *qb = xmalloc(4 * (size_t)n);
    for (int64_t r = 0; r < n; r++) deq[r] = is * qd_view_get(&l->scale, r, 0), qb[r] = (int32_t)(next_u64() % 2001) - 1000;
    l->act = QD_ACT_STATIC_TENSOR;
    snprintf(l->scheme_name, sizeof l->scheme_name, "w8a8_static");
    l->scale2 = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {n}, .data = deq, .owned = deq};
    l->zeros = (qd_view){.dtype = QD_DTYPE_I32, .rank = 1, .shape = {n}, .data = qb, .owned = qb};
    l->input_scale = f32_scalar(is);
    l->input_offset = f32_scalar(1.0f);
    return QD_OK;
}

static qd_status b_w4a4(int64_t n, int64_t k, qd_linear *l) {
    int8_t *q = xmalloc((size_t)(n * k));
    float *sc = xmalloc(4 * (size_t)n);
    for (int64_t r = 0; r < n; r++) sc[r] = uniform(0.005f, 0.01f);
    for (int64_t i = 0; i < n * k; i++) q[i] = (int8_t)((int)(next_u64() % 15) - 7);
    l->scheme = QD_SCHEME_INT4;
    snprintf(l->scheme_name, sizeof l->scheme_name, "w4a4_dynamic");
    l->out_features = n, l->in_features = k;
    l->act = QD_ACT_DYNAMIC_TOKEN;
    l->alpha = 1.0f;
    l->weight = (qd_view){.dtype = QD_DTYPE_I8, .rank = 2, .shape = {n, k}, .data = q, .owned = q};
    l->scale = (qd_view){.dtype = QD_DTYPE_F32, .rank = 2, .shape = {n, 1}, .data = sc, .owned = sc};
    return QD_OK;
}

static qd_status b_nvfp4(int64_t n, int64_t k, qd_linear *l) {
    float *w = random_weight(n, k);
    qd_status s = qd_quantize_nvfp4(w, n, k, l);
    free(w);
    return s;
}

static qd_status b_nvfp4_static(int64_t n, int64_t k, qd_linear *l) {
    qd_status s = b_nvfp4(n, k, l);
    if (!s) l->input_scale = f32_scalar(18.0f / 2688.0f);
    return s;
}

static qd_status b_mxfp4(int64_t n, int64_t k, qd_linear *l) {
    float *w = random_weight(n, k);
    qd_status s = qd_quantize_mx(w, n, k, true, l);
    free(w);
    return s;
}

static qd_status b_svdq(int64_t n, int64_t k, qd_linear *l, bool nv) {
    const int64_t g = nv ? 16 : 64, r = 32;
    uint8_t *q = xmalloc((size_t)(n * k / 2));
    for (int64_t i = 0; i < n * k / 2; i++) q[i] = (uint8_t)next_u64();
    uint8_t *sc = xmalloc((size_t)(n * (k / g)) * (nv ? 1 : 2));
    for (int64_t i = 0; i < n * (k / g); i++) {
        if (nv) sc[i] = qd_f32_to_e4m3(uniform(0.5f, 2.0f));
        else ((uint16_t *)sc)[i] = qd_f32_to_bf16(uniform(0.002f, 0.006f));
    }
    uint16_t *sm = xmalloc(2 * (size_t)k), *dn = xmalloc(2 * (size_t)(r * k)), *up = xmalloc(2 * (size_t)(n * r));
    uint16_t *bias = xmalloc(2 * (size_t)n);
    for (int64_t i = 0; i < k; i++) sm[i] = qd_f32_to_bf16(uniform(0.5f, 2.0f));
    for (int64_t i = 0; i < r * k; i++) dn[i] = qd_f32_to_bf16(draw(0.02f));
    for (int64_t i = 0; i < n * r; i++) up[i] = qd_f32_to_bf16(draw(0.02f));
    for (int64_t i = 0; i < n; i++) bias[i] = qd_f32_to_bf16(uniform(-0.1f, 0.1f));
    l->scheme = nv ? QD_SCHEME_SVDQ_NVFP4 : QD_SCHEME_SVDQ_INT4;
    snprintf(l->scheme_name, sizeof l->scheme_name, nv ? "svdq_nvfp4" : "svdq_int4");
    l->out_features = n, l->in_features = k;
    l->act = QD_ACT_DYNAMIC_GROUP;
    l->act_group = l->block_k = (int)g;
    l->alpha = nv ? 0.003f : 1.0f;
    l->weight = (qd_view){.dtype = QD_DTYPE_U8, .rank = 2, .shape = {n, k / 2}, .data = q, .owned = q};
    l->scale = (qd_view){.dtype = nv ? QD_DTYPE_F8_E4M3 : QD_DTYPE_BF16, .rank = 2, .shape = {n, k / g}, .data = sc, .owned = sc};
    l->smooth = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 1, .shape = {k}, .data = sm, .owned = sm};
    l->lora_down = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {r, k}, .data = dn, .owned = dn};
    l->lora_up = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {n, r}, .data = up, .owned = up};
    l->bias = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 1, .shape = {n}, .data = bias, .owned = bias};
    return QD_OK;
}
static qd_status b_svdq_int4(int64_t n, int64_t k, qd_linear *l) { return b_svdq(n, k, l, false); }
static qd_status b_svdq_nvfp4(int64_t n, int64_t k, qd_linear *l) { return b_svdq(n, k, l, true); }

typedef struct {
    const char *name;
    qd_status (*build)(int64_t n, int64_t k, qd_linear *l);
} kernel_case;

static const kernel_case cases[] = {
    {"w8a8_dynamic", b_int8}, {"w8a8_static", b_w8a8_static}, {"w4a4_dynamic", b_w4a4}, {"nvfp4", b_nvfp4},
    {"nvfp4_static", b_nvfp4_static}, {"mxfp4", b_mxfp4}, {"svdq_int4", b_svdq_int4}, {"svdq_nvfp4", b_svdq_nvfp4},
};

/* ------------------------------------------------------------------ main ---------------------- */

int main(int argc, char **argv) {
    int64_t m = 4096;
    int repeat = 3;
    const char *filter = NULL;
    int64_t shapes[3][2] = {{3072, 3072}, {3072, 12288}, {12288, 3072}};
    int nshapes = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--m") && i + 1 < argc) m = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc && sscanf(argv[i + 1], "%lld,%lld", (long long *)&shapes[0][0], (long long *)&shapes[0][1]) == 2) nshapes = 1, i++;
        else {
            fprintf(stderr, "usage: %s [--m M] [--repeat R] [--filter SUBSTRING] [--shape K,N]\n", argv[0]);
            return 2;
        }
    }
    const qd_cpu_isa *isa = qd_cpu_isa_get();
    printf("# bench_linear_int: M=%lld, BF16 activations in and out, %d threads, ISA %s, best of %d\n", (long long)m,
           qd_cpu_threads(), isa->level, repeat);
    printf("# GFLOP/s = 2·M·N·K / time, activation quantization included; ratio = kernel / oneDNN bf16 matmul\n");
    printf("%-14s %6s %6s %10s %10s %8s\n", "kernel", "K", "N", "ms", "GFLOP/s", "vs bf16");
    for (int si = 0; si < nshapes; si++) {
        const int64_t k = shapes[si][0], n = shapes[si][1];
        const double flop = 2.0 * (double)m * (double)n * (double)k;
        dnnl_mm d;
        dnnl_mm_make(&d, m, k, n);
        qd_tensor x = {0}, y = {0};
        qd_tensor_shape(&x, QD_DTYPE_BF16, 2, (int64_t[]){m, k});
        qd_tensor_shape(&y, QD_DTYPE_BF16, 2, (int64_t[]){m, n});
        x.data = qd_cpu_alloc(qd_tensor_bytes(&x));
        y.data = qd_cpu_alloc(qd_tensor_bytes(&y));
        for (int64_t i = 0; i < m * k; i++) ((uint16_t *)x.data)[i] = qd_f32_to_bf16(draw(1.0f));
        enum { NCASES = sizeof cases / sizeof *cases };
        qd_linear layers[NCASES];
        double t_k[NCASES];
        bool live[NCASES];
        /* build every layer and make one warm-up call (it also builds the prepared form) */
        for (int c = 0; c < NCASES; c++) {
            memset(&layers[c], 0, sizeof layers[c]);
            t_k[c] = 1e30;
            live[c] = !filter || strstr(cases[c].name, filter);
            if (!live[c]) continue;
            qd_status s = cases[c].build(n, k, &layers[c]);
            layers[c].name = strdup(cases[c].name);
            if (!s) s = qd_cpu_linear(NULL, &layers[c], &x, &y);
            if (s) {
                printf("%-14s %6lld %6lld  failed: %s\n", cases[c].name, (long long)k, (long long)n, qd_last_error());
                live[c] = false;
            }
        }
        /* rounds: each round times the baseline and every kernel once, so a burst of load from another
           process on a shared machine costs one sample of each rather than all samples of one */
        double t_bf16 = 1e30;
        dnnl_mm_run(&d); /* warm-up */
        for (int r = 0; r < repeat; r++) {
            const double tb = dnnl_mm_run(&d);
            if (tb < t_bf16) t_bf16 = tb;
            for (int c = 0; c < NCASES; c++) {
                if (!live[c]) continue;
                const double t0 = now();
                if (qd_cpu_linear(NULL, &layers[c], &x, &y)) {
                    printf("%-14s %6lld %6lld  failed: %s\n", cases[c].name, (long long)k, (long long)n, qd_last_error());
                    live[c] = false;
                    continue;
                }
                const double t = now() - t0;
                if (t < t_k[c]) t_k[c] = t;
            }
        }
        printf("%-14s %6lld %6lld %10.1f %10.0f %8.2f\n", "onednn_bf16", (long long)k, (long long)n, t_bf16 * 1e3, flop / t_bf16 * 1e-9, 1.0);
        for (int c = 0; c < NCASES; c++) {
            if (live[c]) {
                printf("%-14s %6lld %6lld %10.1f %10.0f %8.2f\n", cases[c].name, (long long)k, (long long)n, t_k[c] * 1e3,
                       flop / t_k[c] * 1e-9, t_bf16 / t_k[c]);
            }
            qd_linear_free(&layers[c]);
        }
        fflush(stdout);
        qd_cpu_free(x.data), qd_cpu_free(y.data);
        dnnl_mm_free(&d);
    }
    return 0;
}
