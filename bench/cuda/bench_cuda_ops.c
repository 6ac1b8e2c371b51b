/* bench_cuda_ops — the CUDA backend's linears and attention at FLUX.1-dev 1024² shapes, timed on the GPU
 * (run on the device machine; tools/device/cuda_checks.sh runs it next to PyTorch's numbers from
 * tools/device/torch_ref_bench.py, so ratios come from one call on one card).
 *
 *   linears: M = 4608 tokens (4096 image + 512 text), (K, N) of FLUX's projections, BF16 x and y:
 *            dense bf16 (cuBLASLt), fp8 per-channel weights with per-token dynamic activations (online
 *            fp8), fp8 per-tensor static (ModelOpt FP8), int8 W8A8 dynamic (per-channel int8 weights,
 *            per-token int8 activations: msModelSlim W8A8_DYNAMIC on qdit's int8 wgmma kernel) — each including
 *            its activation quantization and epilogue, as a model step runs them; the W4A8 schemes (NVFP4,
 *            MXFP4, MXFP8, SVDQuant int4 rank 32) including their weight expansion to E4M3, activation
 *            quantization and (SVDQuant) low-rank branch;
 *            The MLP up-projection shape (3072 x 12288) also with its GELU-tanh: the layer's output activation
 *            (cuBLASLt's epilogue) against the same matmul followed by the activation op;
 *   attention: B = 1, L = 4608, 24 heads, D = 128, BF16: the default path (cuDNN's fused SDPA where it is
 *            loaded) and qdit's own tensor-core kernel (a second backend made with QDIT_CUDNN=0), with the
 *            largest difference between their outputs;
 *   fused element-wise ops against the op pairs they replace, BF16: norm_modulate vs layer_norm + modulate
 *            ([1, 4608, 3072]), rms_norm_rope vs rms_norm + rope (q [1, 4608, 24, 128], F32 weight and tables);
 *   modulation linears: M = 1, K = 3072, N = 18432 (a double block's two) and 9216 (a single block's), BF16 and
 *            online FP8 (per-channel weights, per-token activations): the GEMV kernels (linear_gemv.cu) against
 *            cuBLASLt (a second backend made with QDIT_CUDA_NO_GEMV=1), in µs per linear and GB/s of weight
 *            read; and NVFP4: the W4A16 GEMV (linear_w4.cu) against the W4A8 expansion + FP8 matmul
 *            (QDIT_CUDA_W4_NO_GEMV=1 on the same second backend), GB/s of codes and block scales read (their
 *            outputs differ by W4A8's activation quantization, ~1e-2 of the largest). A step reads ~57 different such weights once each, so the timed loop cycles through copies
 *            of the layer that together exceed the 50 MB L2 several times, recorded into one CUDA graph (a
 *            step's launches are too: this times the device, not the host's launch rate). Also the largest
 *            difference between the two paths' outputs.
 * BENCH_ONLY=paths: rms_norm_rope and the linears' per-token quantizations against the paths a set of switches restores
 * (PATHS_OLD, default QDIT_CUDA_QUANT_SMEM=0: the rows read twice from global memory), timed in alternation and compared
 * byte for byte.
 * BENCH_ONLY=many: FLUX.1's 76 modulation linears (M = 1) through linear_many, FP8 and NVFP4, against the layers one by
 *            one (QDIT_CUDA_NO_MANY=1), in µs per set and GB/s of weights read, outputs compared byte for byte
 * BENCH_ONLY=zimage: Z-Image's fused element-wise ops (swiglu, swiglu_fp8, rms_norm_gated_add) against the ops they
 * replace, at 1024² shapes, in ms and GB/s.
 * Each op runs 3 times to warm up, then `reps` times between two device synchronisations; the mean of
 * that loop is reported (launches are asynchronous, so the loop measures device time). Inputs are random. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cuda/cuda.h"
#include "core/codec.h"
#include "quant/schemes.h"

static uint64_t st = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    return (float)((double)(st >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_cuda_ops: %s: %s\n", what, qd_last_error());
    exit(1);
}

/* F32 values (norm weights and RoPE tables, as the models keep them) */
static qd_tensor dev_f32(qd_backend *be, int rank, const int64_t *shape, float a, float b) {
    qd_tensor x = {0};
    if (qd_tensor_new(be, &x, QD_DTYPE_F32, rank, shape)) die("alloc");
    int64_t n = qd_tensor_elements(&x);
    float *h = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) h[i] = a + b * frand();
    if (be->ops->upload(be, &x, h)) die("upload");
    free(h);
    return x;
}

static qd_tensor dev_random(qd_backend *be, qd_dtype t, int rank, const int64_t *shape, float a) {
    qd_tensor x = {0};
    if (qd_tensor_new(be, &x, t, rank, shape)) die("alloc");
    int64_t n = qd_tensor_elements(&x);
    uint16_t *h = malloc(2 * (size_t)n);
    for (int64_t i = 0; i < n; i++) h[i] = qd_f32_to_bf16(a * frand());
    if (be->ops->upload(be, &x, h)) die("upload");
    free(h);
    return x;
}

/* an SVDQuant int4 layer in canonical form (quant/linear.h) with random codes, BF16 group scales, smoothing
 * and a rank-32 low-rank branch, as Nunchaku's FLUX files have */
static int svdq_int4_random(int64_t n, int64_t k, qd_linear *l) {
    const int64_t g = 64, r = 32;
    uint8_t *q = malloc((size_t)(n * k / 2));
    uint16_t *sc = malloc(2 * (size_t)(n * (k / g))), *sm = malloc(2 * (size_t)k), *dn = malloc(2 * (size_t)(r * k)), *up = malloc(2 * (size_t)(n * r));
    if (!q || !sc || !sm || !dn || !up) return 1;
    for (int64_t i = 0; i < n * k / 2; i++) q[i] = (uint8_t)(frand() * 128.0f + 128.0f);
    for (int64_t i = 0; i < n * (k / g); i++) sc[i] = qd_f32_to_bf16(0.004f + 0.002f * frand());
    for (int64_t i = 0; i < k; i++) sm[i] = qd_f32_to_bf16(1.25f + 0.75f * frand());
    for (int64_t i = 0; i < r * k; i++) dn[i] = qd_f32_to_bf16(0.02f * frand());
    for (int64_t i = 0; i < n * r; i++) up[i] = qd_f32_to_bf16(0.02f * frand());
    l->scheme = QD_SCHEME_SVDQ_INT4;
    snprintf(l->scheme_name, sizeof l->scheme_name, "svdq_int4");
    l->out_features = n, l->in_features = k, l->alpha = 1.0f;
    l->act = QD_ACT_DYNAMIC_GROUP;
    l->act_group = l->block_k = (int)g;
    l->weight = (qd_view){.dtype = QD_DTYPE_U8, .rank = 2, .shape = {n, k / 2}, .data = q, .owned = q};
    l->scale = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {n, k / g}, .data = sc, .owned = sc};
    l->smooth = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 1, .shape = {k}, .data = sm, .owned = sm};
    l->lora_down = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {r, k}, .data = dn, .owned = dn};
    l->lora_up = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {n, r}, .data = up, .owned = up};
    return 0;
}

/* mean µs per linear over `reps` passes through the L layers, from a CUDA graph of one pass where the backend
 * records one (each layer ran once before: weights uploaded, cuBLASLt plans tuned) */
static double time_layers(qd_backend *be, qd_linear *ls, int L, const qd_tensor *x, qd_tensor *y, int reps) {
    for (int i = 0; i < L; i++)
        if (be->ops->linear(be, &ls[i], x, y)) die("linear");
    void *g = NULL;
    if (be->ops->graph_begin && !be->ops->graph_begin(be)) {
        qd_status s = QD_OK;
        for (int i = 0; !s && i < L; i++) s = be->ops->linear(be, &ls[i], x, y);
        if (be->ops->graph_end(be, &g) || s) die("graph of the linears");
    }
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < (g ? 1 : L); i++)
            if (g ? be->ops->graph_launch(be, g) : be->ops->linear(be, &ls[i], x, y)) die("linear");
    cudaDeviceSynchronize();
    const double t0 = now();
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < (g ? 1 : L); i++)
            if (g ? be->ops->graph_launch(be, g) : be->ops->linear(be, &ls[i], x, y)) die("linear");
    cudaDeviceSynchronize();
    const double us = (now() - t0) / ((double)reps * L) * 1e6;
    if (g) be->ops->graph_free(be, g);
    return us;
}

/* the modulation linears (M = 1) on the GEMV kernels (be) and on cuBLASLt (lt: QDIT_CUDA_NO_GEMV; NVFP4 with
   QDIT_CUDA_W4_NO_GEMV: the expansion to E4M3 and the FP8 matmul, W4A8) */
static void bench_modulation(qd_backend *be, qd_backend *lt, int reps) {
    const int64_t K = 3072, Ns[2] = {18432, 9216};
    printf("\n| modulation linear M = 1 (K x N)    | GEMV us | GB/s   | cuBLASLt us | GB/s   | speed-up | max diff / max y |\n"
           "|---|---:|---:|---:|---:|---:|---:|\n");
    for (int ni = 0; ni < 2; ni++)
        for (int v = 0; v < 3; v++) {
            const int64_t N = Ns[ni];
            const bool fp8 = v == 1, nvfp4 = v == 2;
            float *w = malloc(sizeof(float) * (size_t)(N * K));
            for (int64_t i = 0; i < N * K; i++) w[i] = 0.03f * frand();
            qd_linear src = {0};
            if (fp8) {
                if (qd_quantize_fp8(w, N, K, false, &src)) die("quantize");
            } else if (nvfp4) {
                if (qd_quantize_nvfp4(w, N, K, &src)) die("quantize");
            } else {
                uint16_t *wb = malloc(2 * (size_t)(N * K));
                for (int64_t i = 0; i < N * K; i++) wb[i] = qd_f32_to_bf16(w[i]);
                src.scheme = QD_SCHEME_DENSE;
                snprintf(src.scheme_name, sizeof src.scheme_name, "bf16");
                src.out_features = N, src.in_features = K, src.alpha = 1;
                src.weight = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {N, K}, .data = wb, .owned = wb};
            }
            free(w);
            float *b = malloc(sizeof(float) * (size_t)N); /* the modulation linears have a bias */
            for (int64_t i = 0; i < N; i++) b[i] = 0.1f * frand();
            src.bias = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {N}, .data = b, .owned = b};
            /* copies borrowing src's host bytes, each uploaded to its own device memory: 400 MB in all */
            const double bytes = (double)(N * K) * (fp8 ? 1 : nvfp4 ? 0.5 + 1.0 / 16 : 2); /* NVFP4: codes and block scales */
            const int L = (int)ceil(400e6 / bytes);
            qd_linear *ls = calloc((size_t)L, sizeof *ls);
            for (int i = 0; i < L; i++) {
                ls[i] = src;
                ls[i].weight.owned = ls[i].scale.owned = ls[i].scale2.owned = ls[i].bias.owned = NULL;
                ls[i].name = strdup("modulation");
            }
            qd_tensor x = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, K}, 1.0f), y = {0}, y2 = {0};
            if (qd_tensor_new(be, &y, QD_DTYPE_BF16, 2, (int64_t[]){1, N}) || qd_tensor_new(be, &y2, QD_DTYPE_BF16, 2, (int64_t[]){1, N}))
                die("alloc");
            const double tg = time_layers(be, ls, L, &x, &y, reps), tl = time_layers(lt, ls, L, &x, &y2, reps);
            uint16_t *h1 = malloc(2 * (size_t)N), *h2 = malloc(2 * (size_t)N);
            if (be->ops->linear(be, &ls[0], &x, &y) || lt->ops->linear(lt, &ls[0], &x, &y2) || be->ops->download(be, &y, h1) ||
                lt->ops->download(lt, &y2, h2))
                die("outputs");
            double maxd = 0, maxv = 0;
            for (int64_t i = 0; i < N; i++) {
                const double v1 = qd_bf16_to_f32(h1[i]), v2 = qd_bf16_to_f32(h2[i]);
                maxd = fmax(maxd, fabs(v1 - v2)), maxv = fmax(maxv, fabs(v2));
            }
            char label[64];
            snprintf(label, sizeof label, "%s %lldx%lld", fp8 ? "fp8 chan/token" : nvfp4 ? "nvfp4 (W4A16 / W4A8)" : "bf16", (long long)K, (long long)N);
            printf("| %-34s | %7.2f | %6.0f | %11.2f | %6.0f | %8.2f | %.2e |\n", label, tg, bytes / (tg * 1e-6) / 1e9, tl,
                   bytes / (tl * 1e-6) / 1e9, tl / tg, maxd / maxv);
            free(h1), free(h2);
            qd_tensor_free(&x), qd_tensor_free(&y), qd_tensor_free(&y2);
            for (int i = 0; i < L; i++) qd_linear_free(&ls[i]);
            free(ls);
            qd_linear_free(&src);
        }
}

#define TIME(label, flop, reps, call)                                                                            \
    do {                                                                                                         \
        for (int w_ = 0; w_ < 3; w_++)                                                                           \
            if (call) die(label);                                                                                \
        cudaDeviceSynchronize();                                                                                 \
        double t0_ = now();                                                                                      \
        for (int r_ = 0; r_ < (reps); r_++)                                                                      \
            if (call) die(label);                                                                                \
        cudaDeviceSynchronize();                                                                                 \
        double ms_ = (now() - t0_) / (reps) * 1e3;                                                               \
        printf("| %-34s | %9.3f | %7.1f |\n", label, ms_, (flop) / (ms_ * 1e-3) / 1e12);                         \
    } while (0)

/* linear_fused (the output projections of FLUX's blocks into the residual stream under their gates) against the
 * composition it replaces (concatenation of the inputs, linear, gated_add), same backend, same operands */
static void fused_linears(qd_backend *be, int reps) {
    const struct {
        const char *what;
        int64_t m, k0, k1, n;
    } cases[] = {{"to_out 3072x3072", 4096, 3072, 0, 3072}, {"ff out 12288x3072", 4096, 12288, 0, 3072},
                 {"single proj_out [3072|12288]x3072", 4608, 3072, 12288, 3072}};
    printf("\n| linear into the residual stream (M, K x N)        | ms        | TFLOP/s |\n|---|---:|---:|\n");
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const int64_t M = cases[ci].m, K = cases[ci].k0 + cases[ci].k1, N = cases[ci].n;
        const int np = cases[ci].k1 ? 2 : 1;
        float *w = malloc(sizeof(float) * (size_t)(N * K));
        uint16_t *wb = malloc(2 * (size_t)(N * K));
        for (int64_t i = 0; i < N * K; i++) w[i] = 0.03f * frand(), wb[i] = qd_f32_to_bf16(w[i]);
        qd_linear ls[3] = {{0}};
        static const char *const lname[3] = {"bf16", "fp8", "nvfp4"};
        ls[0].scheme = QD_SCHEME_DENSE, ls[0].out_features = N, ls[0].in_features = K, ls[0].alpha = 1;
        snprintf(ls[0].scheme_name, sizeof ls[0].scheme_name, "bf16");
        ls[0].weight = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {N, K}, .data = wb, .owned = wb};
        ls[0].name = strdup("dense");
        if (qd_quantize_fp8(w, N, K, false, &ls[1]) || qd_quantize_nvfp4(w, N, K, &ls[2])) die("quantize");
        ls[1].name = strdup("fp8_channel"), ls[2].name = strdup("nvfp4");
        free(w);
        qd_tensor x0 = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, M, cases[ci].k0}, 1.0f), x1 = {0};
        if (np == 2) x1 = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, M, cases[ci].k1}, 1.0f);
        qd_tensor g = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, N}, 1.0f), res = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, M, N}, 1.0f);
        const qd_tensor *xs[2] = {&x0, &x1};
        const double flop = 2.0 * (double)M * (double)N * (double)K;
        for (int li = 0; li < 3; li++) {
            char label[96];
            snprintf(label, sizeof label, "%s %s, composed", lname[li], cases[ci].what);
            TIME(label, flop, reps, qd_linear_fused_composed(be, &ls[li], xs, np, &g, &res, &res));
            snprintf(label, sizeof label, "%s %s, linear_fused", lname[li], cases[ci].what);
            TIME(label, flop, reps, qd_linear_fused(be, &ls[li], xs, np, &g, &res, &res));
            qd_linear_free(&ls[li]);
        }
        qd_tensor_free(&x0), qd_tensor_free(&x1), qd_tensor_free(&g), qd_tensor_free(&res);
    }
}

/* Z-Image's fused element-wise ops at 1024² (L = 4096 + 128, D = 3840, SwiGLU width 10240) against the ops they
   replace: swiglu (BF16) against the SiLU and the product, swiglu_fp8 alone (it replaces those and w2's quantization,
   which runs inside the linear), rms_norm_gated_add with and without the next norm's FP8 codes against rms_norm,
   gated_add and norm_modulate_fp8; GB/s counts each op's own reads and writes. */
static void zimage_elementwise(qd_backend *be, int reps) {
    const int64_t L = 4224, D = 3840, F = 10240;
    printf("\n| Z-Image op (L %lld, D %lld, F %lld)     | ms        | GB/s    |\n|---|---:|---:|\n", (long long)L, (long long)D, (long long)F);
    qd_tensor h = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, L, 2 * F}, 3.0f), g = {0}, u = {0}, y = {0}, q = {0}, rs = {0};
    if (qd_tensor_new(be, &g, QD_DTYPE_BF16, 3, (int64_t[]){1, L, F}) || qd_tensor_new(be, &u, QD_DTYPE_BF16, 3, (int64_t[]){1, L, F}) ||
        qd_tensor_new(be, &y, QD_DTYPE_BF16, 3, (int64_t[]){1, L, F}) || qd_tensor_new(be, &q, QD_DTYPE_F8_E4M3, 3, (int64_t[]){1, L, F}) ||
        qd_tensor_new(be, &rs, QD_DTYPE_F32, 1, (int64_t[]){L}))
        die("alloc");
    const double hb = 2.0 * (double)(L * 2 * F), fb = 2.0 * (double)(L * F);
    /* (the "TFLOP/s" column of TIME read as GB/s: bytes · 1e3 as its flop argument) */
    TIME("silu + mul (the composition)", (2 * fb + 3 * fb) * 1e3, reps,
         be->ops->activation(be, QD_ACT_SILU, &g, &g) || be->ops->mul(be, &g, &u, &g));
    TIME("swiglu", (hb + fb) * 1e3, reps, be->ops->swiglu(be, &h, 0, F, &y));
    TIME("swiglu_fp8", (hb + fb / 2) * 1e3, reps, be->ops->swiglu_fp8(be, &h, 0, F, 0.0f, &q, &rs));
    qd_tensor_free(&h), qd_tensor_free(&g), qd_tensor_free(&u), qd_tensor_free(&y), qd_tensor_free(&q), qd_tensor_free(&rs);
    qd_tensor o = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, L, D}, 3.0f), x = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, L, D}, 2.0f);
    qd_tensor on = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, L, D}, 1.0f), gate = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, D}, 0.5f);
    qd_tensor sc = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, D}, 0.5f), w = dev_f32(be, 1, (int64_t[]){D}, 1.0f, 0.2f);
    qd_tensor w2 = dev_f32(be, 1, (int64_t[]){D}, 1.0f, 0.2f), c8 = {0}, s8 = {0};
    if (qd_tensor_new(be, &c8, QD_DTYPE_F8_E4M3, 3, (int64_t[]){1, L, D}) || qd_tensor_new(be, &s8, QD_DTYPE_F32, 1, (int64_t[]){L})) die("alloc");
    const double xb = 2.0 * (double)(L * D);
    TIME("rms_norm + gated_add", 5 * xb * 1e3, reps, be->ops->rms_norm(be, &o, &w, 1e-6f, &on) || be->ops->gated_add(be, &x, &on, &gate, &x));
    TIME("rms_norm_gated_add", 3 * xb * 1e3, reps, be->ops->rms_norm_gated_add(be, &o, &w, 1e-6f, &gate, &x, NULL, NULL, NULL, 0.0f, NULL, NULL));
    TIME("the same + norm_modulate_fp8", (6.5 * xb) * 1e3, reps,
         be->ops->rms_norm(be, &o, &w, 1e-6f, &on) || be->ops->gated_add(be, &x, &on, &gate, &x) ||
             be->ops->norm_modulate_fp8(be, QD_NORM_RMS, &x, &w2, 1e-6f, &sc, NULL, 0.0f, &c8, &s8));
    TIME("rms_norm_gated_add, next FP8", 3.5 * xb * 1e3, reps,
         be->ops->rms_norm_gated_add(be, &o, &w, 1e-6f, &gate, &x, &w2, &sc, NULL, 0.0f, &c8, &s8));
    TIME("norm_modulate_fp8 (attention_norm1)", 1.5 * xb * 1e3, reps, be->ops->norm_modulate_fp8(be, QD_NORM_RMS, &x, &w2, 1e-6f, &sc, NULL, 0.0f, &c8, &s8));
    /* FLUX.1's modulated LayerNorm at 1024² (L 4608, D 3072: scale and shift), BF16 out and FP8 codes */
    {
        const int64_t Lf = 4608, Df = 3072;
        qd_tensor fx = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, Lf, Df}, 2.0f), fy = {0}, fq = {0}, fs = {0};
        qd_tensor fsc = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, Df}, 0.5f), fsh = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, Df}, 0.5f);
        if (qd_tensor_new(be, &fy, QD_DTYPE_BF16, 3, (int64_t[]){1, Lf, Df}) || qd_tensor_new(be, &fq, QD_DTYPE_F8_E4M3, 3, (int64_t[]){1, Lf, Df}) ||
            qd_tensor_new(be, &fs, QD_DTYPE_F32, 1, (int64_t[]){Lf}))
            die("alloc");
        const double fxb = 2.0 * (double)(Lf * Df);
        TIME("FLUX norm_modulate (L 4608, D 3072)", 2 * fxb * 1e3, reps, be->ops->norm_modulate(be, QD_NORM_LAYER, &fx, NULL, 1e-6f, &fsc, &fsh, &fy));
        TIME("FLUX norm_modulate_fp8 (L 4608, D 3072)", 1.5 * fxb * 1e3, reps,
             be->ops->norm_modulate_fp8(be, QD_NORM_LAYER, &fx, NULL, 1e-6f, &fsc, &fsh, 0.0f, &fq, &fs));
        qd_tensor_free(&fx), qd_tensor_free(&fy), qd_tensor_free(&fq), qd_tensor_free(&fs), qd_tensor_free(&fsc), qd_tensor_free(&fsh);
    }
    /* q and k normalised and rotated out of the joined q/k/v output (30 heads of 128, interleaved pairs) */
    {
        const int64_t H = 30, hd = 128;
        qd_tensor qkv = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, L, 3 * D}, 2.0f), qo = {0}, ko = {0};
        qd_tensor nw = dev_f32(be, 1, (int64_t[]){hd}, 1.0f, 0.2f), cs = dev_f32(be, 2, (int64_t[]){L, hd / 2}, 0.0f, 1.0f),
                  sn = dev_f32(be, 2, (int64_t[]){L, hd / 2}, 0.0f, 1.0f);
        if (qd_tensor_new(be, &qo, QD_DTYPE_BF16, 4, (int64_t[]){1, L, H, hd}) || qd_tensor_new(be, &ko, QD_DTYPE_BF16, 4, (int64_t[]){1, L, H, hd}))
            die("alloc");
        TIME("rms_norm_rope_cols q and k", 4 * xb * 1e3, reps,
             be->ops->rms_norm_rope_cols(be, &qkv, 0, &nw, 1e-6f, &cs, &sn, QD_ROPE_INTERLEAVED, &qo) ||
                 be->ops->rms_norm_rope_cols(be, &qkv, D, &nw, 1e-6f, &cs, &sn, QD_ROPE_INTERLEAVED, &ko));
        qd_tensor_free(&qkv), qd_tensor_free(&qo), qd_tensor_free(&ko), qd_tensor_free(&nw), qd_tensor_free(&cs), qd_tensor_free(&sn);
    }
    qd_tensor *all[] = {&o, &x, &on, &gate, &sc, &w, &w2, &c8, &s8};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) qd_tensor_free(all[i]);
}

/* BENCH_ONLY=paths: this build's rms_norm_rope and per-token quantizations (with their matmuls) against the paths they
   replaced, a second backend made with the switches PATHS_OLD names (default QDIT_CUDA_QUANT_SMEM=0; the eighteenth pass's were
   QDIT_CUDA_ROPE_HEADS=1,QDIT_CUDA_QUANT_DIV=1,QDIT_CUDA_QUANT_WARP=0), timed in alternation on the same operands at FLUX.1 and
   Z-Image 1024² shapes; their outputs must agree byte for byte (same arithmetic), and a difference fails the run */
static int path_failures;

static int64_t bytes_differing(const qd_tensor *a, const qd_tensor *b) {
    const size_t n = qd_tensor_bytes(a);
    unsigned char *h1 = malloc(n), *h2 = malloc(n);
    cudaDeviceSynchronize();
    cudaMemcpy(h1, a->data, n, cudaMemcpyDeviceToHost), cudaMemcpy(h2, b->data, n, cudaMemcpyDeviceToHost);
    int64_t d = 0;
    for (size_t i = 0; i < n; i++) d += h1[i] != h2[i];
    free(h1), free(h2);
    return d;
}

static void report_differing(const char *what, int64_t d, const qd_tensor *t) {
    printf("| %s: %lld of %zu bytes differ |  |  |\n", what, (long long)d, qd_tensor_bytes(t));
    if (d) path_failures++;
}

static void paths_against_old(qd_backend *be, int reps) {
    /* PATHS_OLD: the switches that make the replaced paths, "VAR=v,VAR=v" (default: this pass's, the quantizations
       reading their rows twice from global memory) */
    const char *spec = getenv("PATHS_OLD") ? getenv("PATHS_OLD") : "QDIT_CUDA_QUANT_SMEM=0";
    char vars[8][64];
    int nv = 0;
    for (const char *q = spec; *q && nv < 8;) {
        size_t n = strcspn(q, ",");
        snprintf(vars[nv], sizeof vars[nv], "%.*s", (int)n, q);
        char *eq = strchr(vars[nv], '=');
        if (eq) *eq = 0, setenv(vars[nv], eq + 1, 1), nv++;
        q += n + (q[n] == ',');
    }
    printf("\nreplaced paths: %s\n", spec);
    qd_backend *old;
    if (qd_backend_cuda_create(0, &old)) die("cuda (old paths)");
    for (int i = 0; i < nv; i++) unsetenv(vars[i]);
    printf("\n| op (this build, then the replaced path)            | ms        | GB/s    |\n|---|---:|---:|\n");
    /* q and k out of the joined q/k/v: FLUX.1 (L 4608, 24 heads: 4 per thread), Z-Image (L 4224, 30 heads: 2) */
    const struct {
        const char *what;
        int64_t l, h;
    } rc[] = {{"FLUX rms_norm_rope_cols q, k (H 24)", 4608, 24}, {"Z-Image rms_norm_rope_cols q, k (H 30)", 4224, 30}};
    for (int ci = 0; ci < 2; ci++) {
        const int64_t L = rc[ci].l, H = rc[ci].h, hd = 128, D = H * hd;
        qd_tensor qkv = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, L, 3 * D}, 2.0f), o[4] = {{0}};
        qd_tensor nw = dev_f32(be, 1, (int64_t[]){hd}, 1.0f, 0.2f), cs = dev_f32(be, 2, (int64_t[]){L, hd / 2}, 0.0f, 1.0f),
                  sn = dev_f32(be, 2, (int64_t[]){L, hd / 2}, 0.0f, 1.0f);
        for (int j = 0; j < 4; j++)
            if (qd_tensor_new(be, &o[j], QD_DTYPE_BF16, 4, (int64_t[]){1, L, H, hd})) die("alloc");
        const double xb = 2.0 * (double)(L * D);
        for (int round = 0; round < 2; round++) {
            TIME(rc[ci].what, 4 * xb * 1e3, reps,
                 be->ops->rms_norm_rope_cols(be, &qkv, 0, &nw, 1e-6f, &cs, &sn, QD_ROPE_INTERLEAVED, &o[0]) ||
                     be->ops->rms_norm_rope_cols(be, &qkv, D, &nw, 1e-6f, &cs, &sn, QD_ROPE_INTERLEAVED, &o[1]));
            TIME("  the same, one head per thread", 4 * xb * 1e3, reps,
                 old->ops->rms_norm_rope_cols(old, &qkv, 0, &nw, 1e-6f, &cs, &sn, QD_ROPE_INTERLEAVED, &o[2]) ||
                     old->ops->rms_norm_rope_cols(old, &qkv, D, &nw, 1e-6f, &cs, &sn, QD_ROPE_INTERLEAVED, &o[3]));
        }
        report_differing("  q", bytes_differing(&o[0], &o[2]), &o[0]);
        report_differing("  k", bytes_differing(&o[1], &o[3]), &o[1]);
        /* rotate-half pairs, the other path of the kernel */
        if (be->ops->rms_norm_rope_cols(be, &qkv, D, &nw, 1e-6f, &cs, &sn, QD_ROPE_HALF, &o[1]) ||
            old->ops->rms_norm_rope_cols(old, &qkv, D, &nw, 1e-6f, &cs, &sn, QD_ROPE_HALF, &o[3]))
            die("rms_norm_rope_cols (rotate-half)");
        report_differing("  k, rotate-half pairs", bytes_differing(&o[1], &o[3]), &o[1]);
        for (int j = 0; j < 4; j++) qd_tensor_free(&o[j]);
        qd_tensor_free(&qkv), qd_tensor_free(&nw), qd_tensor_free(&cs), qd_tensor_free(&sn);
    }
    /* linears whose per-token quantization runs inside: FLUX's online FP8 MLP-out (linear, 12288 x 3072), to_out
       (3072 x 3072) and a single block's proj_out (linear_fused, [attention 3072 | MLP 12288] x 3072 into the residual
       under its gate); SVDQuant int4 r32 (smoothing, folded low-rank branch) and NVFP4 at FLUX shapes */
    const struct {
        const char *what;
        int scheme; /* 0 fp8 per-channel / per-token, 1 SVDQuant int4 r32, 2 NVFP4 */
        int64_t k0, k1, n;
    } lc[] = {{"fp8 linear 12288x3072", 0, 12288, 0, 3072},
              {"fp8 linear 3072x3072", 0, 3072, 0, 3072},
              {"fp8 proj_out [3072|12288]x3072 fused", 0, 3072, 12288, 3072},
              {"svdq int4 linear 3072x3072", 1, 3072, 0, 3072},
              {"svdq int4 linear 12288x3072", 1, 12288, 0, 3072},
              {"svdq int4 linear 3072x12288", 1, 3072, 0, 12288},
              {"nvfp4 linear 3072x3072", 2, 3072, 0, 3072},
              {"nvfp4 proj_out [3072|12288]x3072 fused", 2, 3072, 12288, 3072}};
    for (size_t ci = 0; ci < sizeof lc / sizeof *lc; ci++) {
        const int64_t M = 4608, k0 = lc[ci].k0, k1 = lc[ci].k1, K = k0 + k1, N = lc[ci].n;
        qd_linear ln = {0}, lo = {0};
        if (lc[ci].scheme == 1) { /* the same random layer twice */
            const uint64_t seed = st;
            if (svdq_int4_random(N, K, &ln)) die("svdq layer");
            st = seed;
            if (svdq_int4_random(N, K, &lo)) die("svdq layer");
        } else {
            float *w = malloc(sizeof(float) * (size_t)(N * K));
            for (int64_t i = 0; i < N * K; i++) w[i] = 0.03f * frand();
            if (lc[ci].scheme == 0 ? qd_quantize_fp8(w, N, K, false, &ln) || qd_quantize_fp8(w, N, K, false, &lo)
                                   : qd_quantize_nvfp4(w, N, K, &ln) || qd_quantize_nvfp4(w, N, K, &lo))
                die("quantize");
            free(w);
        }
        ln.name = strdup("layer_new"), lo.name = strdup("layer_old");
        qd_tensor x0 = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, M, k0}, 1.0f), x1 = {0}, y[2] = {{0}};
        if (k1) x1 = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, M, k1}, 3.0f);
        qd_tensor g = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, N}, 1.0f), res = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, M, N}, 1.0f);
        for (int j = 0; j < 2; j++)
            if (qd_tensor_new(be, &y[j], QD_DTYPE_BF16, 3, (int64_t[]){1, M, N})) die("alloc");
        const qd_tensor *xs[2] = {&x0, &x1};
        const double flop = 2.0 * (double)M * (double)N * (double)K;
        for (int round = 0; round < 2; round++) { /* (TFLOP/s in the last column here) */
            if (k1) {
                TIME(lc[ci].what, flop, reps, qd_linear_fused(be, &ln, xs, 2, &g, &res, &y[0]));
                TIME("  the same, replaced path", flop, reps, qd_linear_fused(old, &lo, xs, 2, &g, &res, &y[1]));
            } else {
                TIME(lc[ci].what, flop, reps, be->ops->linear(be, &ln, &x0, &y[0]));
                TIME("  the same, replaced path", flop, reps, old->ops->linear(old, &lo, &x0, &y[1]));
            }
        }
        report_differing("  outputs", bytes_differing(&y[0], &y[1]), &y[0]);
        qd_linear_free(&ln), qd_linear_free(&lo);
        qd_tensor_free(&x0), qd_tensor_free(&x1), qd_tensor_free(&y[0]), qd_tensor_free(&y[1]), qd_tensor_free(&g), qd_tensor_free(&res);
    }
    old->ops->destroy(old);
}

/* mean µs per call of linear_many over the n layers, from a CUDA graph of one call (run once before: weights
   uploaded) */
static double time_many(qd_backend *be, qd_linear *const *lp, int n, const qd_tensor *x, qd_tensor *const *yp, int reps) {
    if (qd_linear_many(be, lp, n, x, yp)) die("linear_many");
    void *g = NULL;
    if (be->ops->graph_begin && !be->ops->graph_begin(be)) {
        const qd_status s = qd_linear_many(be, lp, n, x, yp);
        if (be->ops->graph_end(be, &g) || s) die("graph of linear_many");
    }
    for (int w = 0; w < 3; w++)
        if (g ? be->ops->graph_launch(be, g) : qd_linear_many(be, lp, n, x, yp)) die("linear_many");
    cudaDeviceSynchronize();
    const double t0 = now();
    for (int r = 0; r < reps; r++)
        if (g ? be->ops->graph_launch(be, g) : qd_linear_many(be, lp, n, x, yp)) die("linear_many");
    cudaDeviceSynchronize();
    const double us = (now() - t0) / reps * 1e6;
    if (g) be->ops->graph_free(be, g);
    return us;
}

/* BENCH_ONLY=many (see the top of this file) */
static int many_failures; /* outputs whose bytes differ between the two paths */
static void bench_many(qd_backend *be, int reps) {
    qd_backend *one;
    setenv("QDIT_CUDA_NO_MANY", "1", 1);
    if (qd_backend_cuda_create(0, &one)) die("cuda (QDIT_CUDA_NO_MANY=1)");
    unsetenv("QDIT_CUDA_NO_MANY");
    enum { NL = 76 };
    const int64_t K = 3072;
    printf("\n| FLUX.1's 76 modulation linears, M = 1 | linear_many us | GB/s | one by one us | GB/s | outputs differing |\n"
           "|---|---:|---:|---:|---:|---:|\n");
    for (int v = 0; v < 2; v++) {
        const bool fp8 = v == 0;
        qd_linear src[2] = {{0}};
        for (int j = 0; j < 2; j++) { /* the double blocks' norm1 / norm1_context (18432) and the single blocks' norm (9216) */
            const int64_t N = j ? 9216 : 18432;
            float *w = malloc(sizeof(float) * (size_t)(N * K)), *b = malloc(sizeof(float) * (size_t)N);
            for (int64_t i = 0; i < N * K; i++) w[i] = 0.03f * frand();
            for (int64_t i = 0; i < N; i++) b[i] = 0.1f * frand();
            if (fp8 ? qd_quantize_fp8(w, N, K, false, &src[j]) : qd_quantize_nvfp4(w, N, K, &src[j])) die("quantize");
            free(w);
            src[j].bias = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {N}, .data = b, .owned = b};
        }
        qd_linear ls[NL];
        qd_linear *lp[NL];
        qd_tensor y[2][NL];
        qd_tensor *yp[2][NL];
        double bytes = 0;
        for (int i = 0; i < NL; i++) { /* copies borrowing src's host bytes, each uploaded to its own device memory */
            const int j = i >= 38;
            ls[i] = src[j];
            ls[i].weight.owned = ls[i].scale.owned = ls[i].scale2.owned = ls[i].bias.owned = NULL;
            ls[i].name = strdup("modulation");
            lp[i] = &ls[i];
            const int64_t N = ls[i].out_features;
            bytes += (double)(N * K) * (fp8 ? 1 : 0.5 + 1.0 / 16);
            for (int p = 0; p < 2; p++) {
                if (qd_tensor_new(be, &y[p][i], QD_DTYPE_BF16, 2, (int64_t[]){1, N})) die("alloc");
                yp[p][i] = &y[p][i];
            }
        }
        qd_tensor x = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, K}, 1.0f);
        double t[2] = {0};
        for (int round = 0; round < 2; round++) /* alternating */
            for (int p = 0; p < 2; p++) t[p] += time_many(p == 0 ? be : one, lp, NL, &x, yp[p], reps) / 2;
        int64_t differ = 0;
        for (int i = 0; i < NL; i++) {
            const size_t nb = qd_tensor_bytes(&y[0][i]);
            uint8_t *h[2];
            for (int p = 0; p < 2; p++)
                if (!(h[p] = malloc(nb)) || be->ops->download(be, &y[p][i], h[p])) die("outputs");
            for (size_t e = 0; e < nb / 2; e++) differ += memcmp(h[0] + 2 * e, h[1] + 2 * e, 2) != 0;
            for (int p = 0; p < 2; p++) free(h[p]);
        }
        many_failures += differ != 0;
        printf("| %-37s | %14.1f | %4.0f | %13.1f | %4.0f | %lld |\n", fp8 ? "fp8 chan/token" : "nvfp4 (W4A16)", t[0], bytes / (t[0] * 1e-6) / 1e9,
               t[1], bytes / (t[1] * 1e-6) / 1e9, (long long)differ);
        qd_tensor_free(&x);
        for (int i = 0; i < NL; i++) {
            for (int p = 0; p < 2; p++) qd_tensor_free(&y[p][i]);
            qd_linear_free(&ls[i]);
        }
        qd_linear_free(&src[0]), qd_linear_free(&src[1]);
    }
    one->ops->destroy(one);
}

static int expand_failures; /* expansions whose bytes differ from the reference kernel's */

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    qd_backend *be;
    if (qd_backend_cuda_create(0, &be)) die("cuda");
    /* BENCH_ONLY=int8: FP8 and int8 W8A8 dynamic only, int8 also on a second backend made with QDIT_CUDA_INT8_LT=1
       (cuBLASLt's int8 matmul + the epilogue kernel), side by side with the default wgmma kernel */
    const char *only_env = getenv("BENCH_ONLY");
    const bool int8_only = only_env && !strcmp(only_env, "int8");
    if (only_env && !strcmp(only_env, "paths")) {
        paths_against_old(be, reps);
        be->ops->destroy(be);
        if (path_failures) fprintf(stderr, "%d outputs differ from the replaced paths'\n", path_failures);
        return path_failures ? 1 : 0;
    }
    if (only_env && !strcmp(only_env, "many")) {
        bench_many(be, reps);
        be->ops->destroy(be);
        if (many_failures) fprintf(stderr, "%d linear_many sets differ between the paths\n", many_failures);
        return many_failures ? 1 : 0;
    }
    if (only_env && !strcmp(only_env, "zimage")) { /* BENCH_ONLY=zimage: Z-Image's fused element-wise ops only */
        zimage_elementwise(be, reps);
        be->ops->destroy(be);
        return 0;
    }
    qd_backend *be_lt = NULL;
    if (int8_only) {
        setenv("QDIT_CUDA_INT8_LT", "1", 1);
        if (qd_backend_cuda_create(0, &be_lt)) die("cuda (QDIT_CUDA_INT8_LT)");
        unsetenv("QDIT_CUDA_INT8_LT");
    }
    const int64_t M = 4608;
    const int64_t shapes[][2] = {{3072, 3072}, {3072, 9216}, {3072, 12288}, {12288, 3072}, {15360, 3072}, {3072, 21504}};
    printf("CUDA backend, M = %lld, BF16 activations; mean of %d runs\n\n", (long long)M, reps);
    printf("| op (K x N)                         | ms        | TFLOP/s |\n|---|---:|---:|\n");
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int64_t K = shapes[si][0], N = shapes[si][1];
        float *w = malloc(sizeof(float) * (size_t)(N * K));
        uint16_t *wb = malloc(2 * (size_t)(N * K));
        for (int64_t i = 0; i < N * K; i++) {
            w[i] = 0.03f * frand();
            wb[i] = qd_f32_to_bf16(w[i]);
        }
        qd_linear dense = {0}, f8c = {0}, f8t = {0}, i8 = {0}, w4[4] = {{0}};
        const char *w4_names[4] = {"nvfp4", "mxfp4", "mxfp8", "svdq_int4"};
        if (qd_quantize_nvfp4(w, N, K, &w4[0]) || qd_quantize_mx(w, N, K, true, &w4[1]) || qd_quantize_mx(w, N, K, false, &w4[2]) ||
            svdq_int4_random(N, K, &w4[3]))
            die("quantize");
        for (int j = 0; j < 4; j++) w4[j].name = strdup(w4_names[j]);
        dense.scheme = QD_SCHEME_DENSE;
        snprintf(dense.scheme_name, sizeof dense.scheme_name, "bf16");
        dense.out_features = N, dense.in_features = K, dense.alpha = 1;
        dense.weight = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {N, K}, .data = wb, .owned = wb};
        dense.name = strdup("dense");
        if (qd_quantize_fp8(w, N, K, false, &f8c) || qd_quantize_fp8(w, N, K, true, &f8t) || qd_quantize_int8(w, N, K, &i8)) die("quantize");
        f8c.name = strdup("fp8_channel"), f8t.name = strdup("fp8_tensor"), i8.name = strdup("int8_w8a8_dynamic");
        float *is = malloc(4);
        *is = 4.0f / 448.0f;
        f8t.input_scale = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {1}, .data = is, .owned = is};
        f8t.act = QD_ACT_STATIC_TENSOR;
        float *w8 = w; /* (kept for BENCH_ONLY=int8's second int8 layer) */
        qd_tensor x = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){M, K}, 1.0f), y = {0};
        if (qd_tensor_new(be, &y, QD_DTYPE_BF16, 2, (int64_t[]){M, N})) die("alloc");
        const double flop = 2.0 * (double)M * (double)N * (double)K;
        const char *only = getenv("BENCH_ONLY");
        if (int8_only) {
            qd_linear i8lt = {0};
            if (qd_quantize_int8(w8, N, K, &i8lt)) die("quantize");
            i8lt.name = strdup("int8_w8a8_dynamic_lt");
            qd_tensor y2 = {0};
            if (qd_tensor_new(be_lt, &y2, QD_DTYPE_BF16, 2, (int64_t[]){M, N})) die("alloc");
            char label[64];
            snprintf(label, sizeof label, "linear fp8 chan/token %lldx%lld", (long long)K, (long long)N);
            TIME(label, flop, reps, be->ops->linear(be, &f8c, &x, &y));
            snprintf(label, sizeof label, "linear int8 w8a8 dynamic %lldx%lld", (long long)K, (long long)N);
            TIME(label, flop, reps, be->ops->linear(be, &i8, &x, &y));
            snprintf(label, sizeof label, "linear int8 cuBLASLt %lldx%lld", (long long)K, (long long)N);
            TIME(label, flop, reps, be_lt->ops->linear(be_lt, &i8lt, &x, &y2));
            /* the two int8 paths compute the same codes and the same exact sums: their outputs must agree */
            const size_t ny = (size_t)(M * N);
            uint16_t *h1 = malloc(2 * ny), *h2 = malloc(2 * ny);
            cudaMemcpy(h1, y.data, 2 * ny, cudaMemcpyDeviceToHost), cudaMemcpy(h2, y2.data, 2 * ny, cudaMemcpyDeviceToHost);
            size_t differ = 0;
            for (size_t i = 0; i < ny; i++) differ += h1[i] != h2[i];
            printf("| int8 wgmma vs cuBLASLt: %zu of %zu BF16 outputs differ |  |  |\n", differ, ny);
            free(h1), free(h2), free(w8);
            qd_tensor_free(&y2), qd_linear_free(&i8lt);
            for (int j = 0; j < 4; j++) qd_linear_free(&w4[j]);
            qd_tensor_free(&x), qd_tensor_free(&y);
            qd_linear_free(&dense), qd_linear_free(&f8c), qd_linear_free(&f8t), qd_linear_free(&i8);
            continue;
        }
        free(w8);
        if (only) { /* one scheme's linear alone (svdq, nvfp4 or fp8), a few plain calls: for a kernel profiler's breakdown */
            qd_linear *ol = !strcmp(only, "svdq") ? &w4[3] : !strcmp(only, "nvfp4") ? &w4[0] : &f8c;
            for (int i = 0; i < 4; i++)
                if (be->ops->linear(be, ol, &x, &y)) die("linear");
            cudaDeviceSynchronize();
            printf("%s %lldx%lld: 4 calls\n", only, (long long)K, (long long)N);
            for (int j = 0; j < 4; j++) qd_linear_free(&w4[j]);
            qd_tensor_free(&x), qd_tensor_free(&y);
            qd_linear_free(&dense), qd_linear_free(&f8c), qd_linear_free(&f8t), qd_linear_free(&i8);
            continue;
        }
        char label[64];
        snprintf(label, sizeof label, "linear bf16 %lldx%lld", (long long)K, (long long)N);
        TIME(label, flop, reps, be->ops->linear(be, &dense, &x, &y));
        snprintf(label, sizeof label, "linear fp8 chan/token %lldx%lld", (long long)K, (long long)N);
        TIME(label, flop, reps, be->ops->linear(be, &f8c, &x, &y));
        snprintf(label, sizeof label, "linear fp8 tensor/static %lldx%lld", (long long)K, (long long)N);
        TIME(label, flop, reps, be->ops->linear(be, &f8t, &x, &y));
        snprintf(label, sizeof label, "linear int8 w8a8 dynamic %lldx%lld", (long long)K, (long long)N);
        TIME(label, flop, reps, be->ops->linear(be, &i8, &x, &y));
        for (int j = 0; j < 4; j++) {
            snprintf(label, sizeof label, "linear w4a8 %s %lldx%lld", w4_names[j], (long long)K, (long long)N);
            TIME(label, flop, reps, be->ops->linear(be, &w4[j], &x, &y));
            /* the expansion alone: the mainline kernel against the reference one, byte for byte */
            int64_t differing = 0;
            double ms_fast = 0, ms_ref = 0;
            if (qd_backend_cuda_w4_expand_check(be, &w4[j], &differing, &ms_fast, &ms_ref)) die("expansion check");
            const double traffic = (double)N * (double)K * (j == 2 ? 2.0 : 1.5) / 1e9; /* codes read + E4M3 written, GB */
            printf("expansion %s %lldx%lld: %.4f ms (%.0f GB/s) against the reference kernel's %.4f ms (%.0f GB/s); E4M3 bytes differing: %lld\n",
                   w4_names[j], (long long)K, (long long)N, ms_fast, traffic / (ms_fast * 1e-3), ms_ref, traffic / (ms_ref * 1e-3), (long long)differing);
            if (differing) expand_failures++;
            qd_linear_free(&w4[j]);
        }
        if (K == 3072 && N == 12288) { /* FLUX's MLP input: GELU-tanh fused, or run after */
            dense.out_act = f8c.out_act = QD_OUT_ACT_GELU_TANH;
            TIME("linear bf16 3072x12288 +gelu (fused)", flop, reps, be->ops->linear(be, &dense, &x, &y));
            TIME("linear fp8 chan/token +gelu (fused)", flop, reps, be->ops->linear(be, &f8c, &x, &y));
            dense.out_act = f8c.out_act = QD_OUT_ACT_NONE;
            TIME("linear bf16 3072x12288, gelu op", flop, reps,
                 be->ops->linear(be, &dense, &x, &y) || be->ops->activation(be, QD_ACT_GELU_TANH, &y, &y));
            TIME("linear fp8 chan/token, gelu op", flop, reps,
                 be->ops->linear(be, &f8c, &x, &y) || be->ops->activation(be, QD_ACT_GELU_TANH, &y, &y));
        }
        qd_tensor_free(&x), qd_tensor_free(&y);
        qd_linear_free(&dense), qd_linear_free(&f8c), qd_linear_free(&f8t), qd_linear_free(&i8);
    }
    if (getenv("BENCH_ONLY")) {
        if (be_lt) be_lt->ops->destroy(be_lt);
        be->ops->destroy(be);
        return 0;
    }
    /* the modulation GEMVs against cuBLASLt on this device */
    setenv("QDIT_CUDA_NO_GEMV", "1", 1), setenv("QDIT_CUDA_W4_NO_GEMV", "1", 1);
    qd_backend *lt;
    if (qd_backend_cuda_create(0, &lt)) die("cuda (QDIT_CUDA_NO_GEMV)");
    unsetenv("QDIT_CUDA_NO_GEMV"), unsetenv("QDIT_CUDA_W4_NO_GEMV");
    bench_modulation(be, lt, reps * 10);
    lt->ops->destroy(lt);
    const int64_t L = 4608, H = 24, D = 128;
    qd_tensor q = dev_random(be, QD_DTYPE_BF16, 4, (int64_t[]){1, L, H, D}, 1.0f);
    qd_tensor k = dev_random(be, QD_DTYPE_BF16, 4, (int64_t[]){1, L, H, D}, 1.0f);
    qd_tensor v = dev_random(be, QD_DTYPE_BF16, 4, (int64_t[]){1, L, H, D}, 1.0f), o = {0};
    if (qd_tensor_new(be, &o, QD_DTYPE_BF16, 4, (int64_t[]){1, L, H, D})) die("alloc");
    qd_attn_args a = {.q = &q, .k = &k, .v = &v};
    const double aflop = 4.0 * (double)L * (double)L * (double)H * (double)D;
    TIME("attention L4608 H24 D128 (default)", aflop, reps, be->ops->attention(be, &a, &o));
    /* the same inputs through qdit's own kernel: a backend made with QDIT_CUDNN=0 runs on this device too */
    setenv("QDIT_CUDNN", "0", 1);
    qd_backend *own;
    if (qd_backend_cuda_create(0, &own)) die("cuda (own kernels)");
    qd_tensor o2 = {0};
    if (qd_tensor_new(own, &o2, QD_DTYPE_BF16, 4, (int64_t[]){1, L, H, D})) die("alloc");
    TIME("attention L4608 H24 D128 (qdit kernel)", aflop, reps, own->ops->attention(own, &a, &o2));
    const int64_t n = L * H * D;
    uint16_t *h1 = malloc(2 * (size_t)n), *h2 = malloc(2 * (size_t)n);
    if (be->ops->download(be, &o, h1) || own->ops->download(own, &o2, h2)) die("download");
    double maxd = 0, maxv = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d1 = qd_bf16_to_f32(h1[i]), d2 = qd_bf16_to_f32(h2[i]);
        maxd = fmax(maxd, fabs(d1 - d2)), maxv = fmax(maxv, fabs(d2));
    }
    printf("\nattention: largest |default - qdit kernel| = %.3g (largest |output| %.3g)\n", maxd, maxv);
    free(h1), free(h2);
    qd_tensor_free(&o2);

    /* fused element-wise ops vs the pairs they replace (the TFLOP/s column is meaningless here: 0) */
    printf("\n| op                                 | ms        |         |\n|---|---:|---:|\n");
    const int64_t Dm = 3072;
    qd_tensor hx = dev_random(be, QD_DTYPE_BF16, 3, (int64_t[]){1, L, Dm}, 2.0f), hy = {0};
    qd_tensor sc = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, Dm}, 0.5f), sh = dev_random(be, QD_DTYPE_BF16, 2, (int64_t[]){1, Dm}, 0.5f);
    if (qd_tensor_new(be, &hy, QD_DTYPE_BF16, 3, (int64_t[]){1, L, Dm})) die("alloc");
    TIME("layer_norm + modulate L4608 D3072", 0.0, reps,
         be->ops->layer_norm(be, &hx, NULL, NULL, 1e-6f, &hy) || be->ops->modulate(be, &hy, &sc, &sh, &hy));
    TIME("norm_modulate L4608 D3072", 0.0, reps, be->ops->norm_modulate(be, QD_NORM_LAYER, &hx, NULL, 1e-6f, &sc, &sh, &hy));
    qd_tensor nw = dev_f32(be, 1, (int64_t[]){D}, 1.0f, 0.2f), cs = dev_f32(be, 2, (int64_t[]){L, D / 2}, 0.0f, 1.0f);
    qd_tensor sn = dev_f32(be, 2, (int64_t[]){L, D / 2}, 0.0f, 1.0f);
    TIME("rms_norm + rope L4608 H24 D128", 0.0, reps,
         be->ops->rms_norm(be, &q, &nw, 1e-6f, &o) || be->ops->rope(be, &o, &cs, &sn, QD_ROPE_INTERLEAVED, &o));
    TIME("rms_norm_rope L4608 H24 D128", 0.0, reps, be->ops->rms_norm_rope(be, &q, &nw, 1e-6f, &cs, &sn, QD_ROPE_INTERLEAVED, &o));
    qd_tensor_free(&hx), qd_tensor_free(&hy), qd_tensor_free(&sc), qd_tensor_free(&sh);
    qd_tensor_free(&nw), qd_tensor_free(&cs), qd_tensor_free(&sn);
    fused_linears(be, reps);
    own->ops->destroy(own);
    be->ops->destroy(be);
    if (expand_failures) fprintf(stderr, "%d weight expansions differ from the reference kernel\n", expand_failures);
    return expand_failures ? 1 : 0;
}
