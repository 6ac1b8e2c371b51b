/* bench_attention — how fast is the CPU backend's attention next to the best GEMM on this machine?
 *
 * Attention at FLUX-like sizes is two GEMMs (Q·Kᵀ and P·V, 4·B·H·Lq·Lk·D flops together) plus a
 * softmax, so its ceiling is the machine's GEMM rate. This tool measures, in one run and on the same
 * threads, oneDNN's bf16 matmul at 4096×3072×3072 (a FLUX linear; the best GEMM rate oneDNN reaches
 * here) and qd_cpu_attention on several shapes, and prints each attention rate as a ratio of the
 * matmul rate (DESIGN.md "Performance method": ratios side by side, never a lone absolute time).
 * oneDNN's f32 matmul is timed too, as the reference rate for the f32 attention rows.
 *
 * Usage: bench_attention [--heads 4] [--len 4096] [--reps 5] [--quick]
 *   --quick: smaller shapes (L = 1024), for a smoke run.
 * FLOPs counted: 4·B·H·Lq·Lk·D (the two GEMMs; softmax not counted), over the visible keys only
 * (half for causal, the attended 3/4 for the key-mask case), so skipped work is not counted as speed. */
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/cpu.h"
#include "core/codec.h"
#include "core/status.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define DNNL_CHECK(x)                                                                                                  \
    do {                                                                                                               \
        dnnl_status_t st_ = (x);                                                                                       \
        if (st_ != dnnl_success) {                                                                                     \
            fprintf(stderr, "oneDNN error %d at %s\n", (int)st_, #x);                                                  \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

/* An M×K×N oneDNN matmul (A row-major, B in oneDNN's preferred layout, C f32), set up once and
 * timed in rounds with everything else. */
typedef struct {
    int64_t M, K, N;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t ma, mb, mc;
    char impl[64];
} dnnl_mm;

static void dnnl_mm_init(dnnl_mm *m, int64_t M, int64_t K, int64_t N, dnnl_data_type_t dt) {
    m->M = M, m->K = K, m->N = N;
    DNNL_CHECK(dnnl_engine_create(&m->eng, dnnl_cpu, 0));
    DNNL_CHECK(dnnl_stream_create(&m->stream, m->eng, dnnl_stream_default_flags));
    dnnl_memory_desc_t a, b, c;
    dnnl_dims_t da = {M, K}, db = {K, N}, dc = {M, N};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&a, 2, da, dt, dnnl_ab));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&b, 2, db, dt, dnnl_format_tag_any));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t md;
    DNNL_CHECK(dnnl_matmul_desc_init(&md, &a, &b, NULL, &c));
    DNNL_CHECK(dnnl_primitive_desc_create(&m->pd, &md, NULL, m->eng, NULL));
    const char *impl = "?";
    dnnl_primitive_desc_query(m->pd, dnnl_query_impl_info_str, 0, &impl);
    snprintf(m->impl, sizeof m->impl, "%s", impl);
    const dnnl_memory_desc_t *bmd = dnnl_primitive_desc_query_md(m->pd, dnnl_query_weights_md, 0);
    DNNL_CHECK(dnnl_primitive_create(&m->prim, m->pd));
    DNNL_CHECK(dnnl_memory_create(&m->ma, &a, m->eng, DNNL_MEMORY_ALLOCATE));
    DNNL_CHECK(dnnl_memory_create(&m->mb, bmd, m->eng, DNNL_MEMORY_ALLOCATE));
    DNNL_CHECK(dnnl_memory_create(&m->mc, &c, m->eng, DNNL_MEMORY_ALLOCATE));
    /* small values, so the timing is not of denormals or NaNs */
    void *pa, *pb;
    DNNL_CHECK(dnnl_memory_get_data_handle(m->ma, &pa));
    DNNL_CHECK(dnnl_memory_get_data_handle(m->mb, &pb));
    size_t esz = dt == dnnl_bf16 ? 2 : 4, nb = dnnl_memory_desc_get_size(bmd) / esz;
    for (size_t i = 0; i < (size_t)(M * K); i++) {
        float f = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        if (esz == 2) ((uint16_t *)pa)[i] = qd_f32_to_bf16(f);
        else ((float *)pa)[i] = f;
    }
    for (size_t i = 0; i < nb; i++) {
        float f = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
        if (esz == 2) ((uint16_t *)pb)[i] = qd_f32_to_bf16(f);
        else ((float *)pb)[i] = f;
    }
}

/* seconds of one execution */
static double dnnl_mm_run(dnnl_mm *m) {
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, m->ma}, {DNNL_ARG_WEIGHTS, m->mb}, {DNNL_ARG_DST, m->mc}};
    double t0 = now_s();
    DNNL_CHECK(dnnl_primitive_execute(m->prim, m->stream, 3, args));
    DNNL_CHECK(dnnl_stream_wait(m->stream));
    return now_s() - t0;
}

static double dnnl_mm_flops(const dnnl_mm *m) { return 2.0 * (double)m->M * (double)m->K * (double)m->N; }

static void dnnl_mm_destroy(dnnl_mm *m) {
    dnnl_memory_destroy(m->ma);
    dnnl_memory_destroy(m->mb);
    dnnl_memory_destroy(m->mc);
    dnnl_primitive_destroy(m->prim);
    dnnl_primitive_desc_destroy(m->pd);
    dnnl_stream_destroy(m->stream);
    dnnl_engine_destroy(m->eng);
}

typedef struct {
    const char *name;
    qd_dtype dtype;
    int64_t B, Lq, Lk, H, Hkv, D;
    bool causal, mask;
} attn_case;

static void fill(qd_tensor *t, uint64_t seed) {
    int64_t n = qd_tensor_elements(t);
    uint64_t x = seed | 1;
    for (int64_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        float f = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        qd_cpu_store(t, i, f);
    }
}

typedef struct {
    qd_tensor q, k, v, o, m;
    qd_attn_args a;
    double flops, best;
} attn_run;

static void case_init(qd_backend *be, const attn_case *c, attn_run *r) {
    memset(r, 0, sizeof *r);
    qd_tensor_new(be, &r->q, c->dtype, 4, (int64_t[]){c->B, c->Lq, c->H, c->D});
    qd_tensor_new(be, &r->k, c->dtype, 4, (int64_t[]){c->B, c->Lk, c->Hkv, c->D});
    qd_tensor_new(be, &r->v, c->dtype, 4, (int64_t[]){c->B, c->Lk, c->Hkv, c->D});
    qd_tensor_new(be, &r->o, c->dtype, 4, (int64_t[]){c->B, c->Lq, c->H, c->D});
    fill(&r->q, 1), fill(&r->k, 2), fill(&r->v, 3);
    r->a = (qd_attn_args){.q = &r->q, .k = &r->k, .v = &r->v, .causal = c->causal};
    if (c->mask) {
        qd_tensor_new(be, &r->m, QD_DTYPE_U8, 2, (int64_t[]){c->B, c->Lk});
        uint8_t *mk = r->m.data;
        for (int64_t i = 0; i < c->B * c->Lk; i++) mk[i] = (i % c->Lk) < c->Lk * 3 / 4; /* padded tail */
        r->a.mask = &r->m;
    }
    r->flops = 4.0 * (double)c->B * (double)c->H * (double)c->Lq * (double)c->Lk * (double)c->D;
    if (c->causal) r->flops *= 0.5; /* only the visible half of the scores is work */
    if (c->mask) r->flops *= 0.75;  /* masked key blocks are skipped: count the attended keys only */
    r->best = 1e30;
}

/* seconds of one call */
static double case_run(qd_backend *be, const attn_case *c, attn_run *r) {
    double t0 = now_s();
    if (qd_cpu_attention(be, &r->a, &r->o) != QD_OK) {
        fprintf(stderr, "%s: %s\n", c->name, qd_last_error());
        exit(1);
    }
    return now_s() - t0;
}

static void case_free(const attn_case *c, attn_run *r) {
    qd_tensor_free(&r->q), qd_tensor_free(&r->k), qd_tensor_free(&r->v), qd_tensor_free(&r->o);
    if (c->mask) qd_tensor_free(&r->m);
}

int main(int argc, char **argv) {
    int64_t H = 4, L = 4096;
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--heads") && i + 1 < argc) H = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--len") && i + 1 < argc) L = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) L = 1024;
        else {
            fprintf(stderr, "usage: bench_attention [--heads N] [--len L] [--reps R] [--quick]\n");
            return 2;
        }
    }
    qd_backend *be;
    if (qd_backend_cpu_create(&be) != QD_OK) return 1;
    const qd_cpu_isa *isa = qd_cpu_isa_get();
    printf("bench_attention: %d threads, ISA %s, H=%lld, L=%lld, best of %d interleaved rounds\n", qd_cpu_threads(), isa->level, (long long)H,
           (long long)L, reps);

    dnnl_mm mm_bf16, mm_f32;
    dnnl_mm_init(&mm_bf16, 4096, 3072, 3072, dnnl_bf16);
    dnnl_mm_init(&mm_f32, 4096, 3072, 3072, dnnl_f32);

    attn_case cases[] = {
        {"bf16 self  (FLUX-like)", QD_DTYPE_BF16, 1, L, L, H, H, 128, false, false},
        {"bf16 causal", QD_DTYPE_BF16, 1, L, L, H, H, 128, true, false},
        {"bf16 key mask 3/4", QD_DTYPE_BF16, 1, L, L, H, H, 128, false, true},
        {"bf16 GQA H/Hkv=4", QD_DTYPE_BF16, 1, L, L, H, H / 4 ? H / 4 : 1, 128, false, false},
        {"bf16 cross Lk=512", QD_DTYPE_BF16, 1, L, 512, H, H, 128, false, false},
        {"f32 self", QD_DTYPE_F32, 1, L, L, H, H, 128, false, false},
    };
    enum { NCASES = sizeof cases / sizeof cases[0] };
    attn_run runs[NCASES];
    for (int i = 0; i < NCASES; i++) {
        case_init(be, &cases[i], &runs[i]);
        case_run(be, &cases[i], &runs[i]); /* warm-up: pages touched, oneDNN JIT done */
    }
    dnnl_mm_run(&mm_bf16), dnnl_mm_run(&mm_f32);
    /* Rounds: every workload once per round, best time kept. On a shared machine a burst of other
       work then costs one sample of several workloads instead of every sample of one. */
    double best_bf16 = 1e30, best_f32 = 1e30;
    for (int round = 0; round < reps; round++) {
        double t = dnnl_mm_run(&mm_bf16);
        if (t < best_bf16) best_bf16 = t;
        t = dnnl_mm_run(&mm_f32);
        if (t < best_f32) best_f32 = t;
        for (int i = 0; i < NCASES; i++) {
            t = case_run(be, &cases[i], &runs[i]);
            if (t < runs[i].best) runs[i].best = t;
        }
    }
    double g_bf16 = dnnl_mm_flops(&mm_bf16) / best_bf16 * 1e-9, g_f32 = dnnl_mm_flops(&mm_f32) / best_f32 * 1e-9;
    printf("\n%-28s %12s\n", "baseline (oneDNN matmul)", "GFLOP/s");
    printf("%-28s %12.1f   (%s)\n", "bf16 4096x3072x3072", g_bf16, mm_bf16.impl);
    printf("%-28s %12.1f   (%s)\n", "f32  4096x3072x3072", g_f32, mm_f32.impl);
    printf("\n%-28s %6s %6s %5s %10s %10s %12s %12s\n", "attention case", "Lq", "Lk", "D", "ms", "GFLOP/s", "/bf16 mm",
           "/f32 mm");
    for (int i = 0; i < NCASES; i++) {
        double g = runs[i].flops / runs[i].best * 1e-9;
        printf("%-28s %6lld %6lld %5lld %10.2f %10.1f %12.3f %12.3f\n", cases[i].name, (long long)cases[i].Lq,
               (long long)cases[i].Lk, (long long)cases[i].D, runs[i].best * 1e3, g, g / g_bf16, g / g_f32);
        case_free(&cases[i], &runs[i]);
    }
    dnnl_mm_destroy(&mm_bf16), dnnl_mm_destroy(&mm_f32);
    be->ops->destroy(be);
    return 0;
}
