/* Seconds per VAE decode at full size with random weights: the FLUX.1 / Z-Image AutoencoderKL decoder
 * (block_out_channels 128, 256, 512, 512; 16 latent channels; mid-block attention over every latent position, one
 * head of 512), a latent of res/8 × res/8 drawn fresh, activations in bf16 (as the pipelines decode) or f32.
 *
 *   bench_vae_decode [--device cpu|cuda] [--res 1024] [--runs 5] [--precision bf16|f32] [--compare]
 *
 * --compare: the same weights and latent also decoded by the CPU backend in f32 (the reference) and in --precision,
 * and the relative L2 distances printed: the device's decode against the f32 one, next to the CPU's own in the same
 * precision (a device path that is wrong lands far from both).
 * Each run decodes and downloads the image (a device synchronisation; 12 MiB of f32 at 1024²); the first run is a
 * warm-up (cuBLASLt plans are made and timed there) and is reported apart. Prints each run and the median.
 * tools/device/cuda_checks.sh vae runs it next to diffusers' AutoencoderKL.decode (tools/device/diffusers_vae_bench.py). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cuda/cuda.h"
#include "core/status.h"
#include "models/component.h"
#include "models/vae/kl.h"
#include "quant/config.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const char *FLUX_VAE =
    "{\"_class_name\": \"AutoencoderKL\", \"act_fn\": \"silu\", \"in_channels\": 3, \"out_channels\": 3, \"latent_channels\": 16,"
    " \"block_out_channels\": [128, 256, 512, 512], \"layers_per_block\": 2, \"norm_num_groups\": 32, \"mid_block_add_attention\": true,"
    " \"sample_size\": 1024, \"scaling_factor\": 0.3611, \"shift_factor\": 0.1159, \"use_quant_conv\": false, \"use_post_quant_conv\": false}";

/* Decode z (host f32, [1, 16, res/8, res/8]) `runs` + 1 times on `device` in `act` (the first a warm-up), each run
   into img (host f32, [1, 3, res, res]); t[i] its seconds (NULL: not timed, one run). */
static qd_status decodes(const char *device, qd_dtype act, int res, const float *zh, int runs, double *t, double *load_s, float *img) {
    qd_backend *be = NULL;
    qd_vae_kl *m = NULL;
    qd_vae_kl_config c;
    json_error_t je;
    json_t *cfg = json_loads(FLUX_VAE, 0, &je);
    qd_status s = cfg ? qd_vae_kl_config_parse("FLUX.1 VAE", cfg, &c) : qd_fail(QD_EFORMAT, "the VAE config: %s", je.text);
    if (!s) s = qd_device_backend(device, &be);
    qd_quant_config qc; /* none: the VAE's linears stay as drawn */
    qd_quant_config_init(&qc);
    qd_model_ctx ctx = {.backend = be, .quant = &qc, .act = act, .random_weights = true, .random_seed = 7};
    double t0 = now();
    if (!s) s = qd_vae_kl_load(&ctx, &c, &m);
    if (load_s) *load_s = now() - t0;
    const int64_t h = res / 8;
    qd_tensor zf = {0}, z = {0};
    if (!s) s = qd_tensor_new(be, &zf, QD_DTYPE_F32, 4, (int64_t[]){1, 16, h, h});
    if (!s) s = be->ops->upload(be, &zf, zh);
    if (!s) s = qd_tensor_new(be, &z, act, 4, zf.shape);
    if (!s) s = be->ops->copy(be, &zf, &z);
    for (int r = 0; r <= runs && !s; r++) {
        double a = now();
        qd_tensor y = {0}, yf = {0};
        s = qd_tensor_new(be, &y, act, 4, (int64_t[]){1, 3, res, res});
        if (!s) s = qd_vae_kl_decode(m, &z, &y);
        if (!s) s = qd_tensor_new(be, &yf, QD_DTYPE_F32, 4, y.shape);
        if (!s) s = be->ops->copy(be, &y, &yf);
        if (!s) s = be->ops->download(be, &yf, img);
        qd_tensor_free(&yf), qd_tensor_free(&y);
        if (t) {
            t[r] = now() - a;
            if (!s) printf("%s %d: %.4f s\n", r ? "run" : "warm-up", r, t[r]);
            if (!r) qd_backend_cuda_profile_reset(); /* QDIT_CUDA_PROFILE=1: the timed runs' ops only */
        }
    }
    qd_tensor_free(&zf), qd_tensor_free(&z);
    if (m) qd_vae_kl_free(m);
    if (be) be->ops->destroy(be);
    qd_quant_config_free(&qc);
    json_decref(cfg);
    return s;
}

/* ‖a − b‖ / ‖b‖ over n values */
static double rel_l2(const float *a, const float *b, int64_t n) {
    double e = 0, r = 0;
    for (int64_t i = 0; i < n; i++) e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), r += (double)b[i] * b[i];
    return r > 0 ? sqrt(e / r) : sqrt(e);
}

int main(int argc, char **argv) {
    const char *device = "cpu", *precision = "bf16";
    int res = 1024, runs = 5, compare = 0;
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--compare")) {
            compare = 1, i--;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_vae_decode: %s needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--device")) device = argv[i + 1];
        else if (!strcmp(argv[i], "--res")) res = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--precision")) precision = argv[i + 1];
        else {
            fprintf(stderr, "bench_vae_decode: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    if (res < 8 || res % 8 || runs < 1 || (strcmp(precision, "bf16") && strcmp(precision, "f32"))) {
        fprintf(stderr, "bench_vae_decode: --res a positive multiple of 8, --runs ≥ 1, --precision bf16 or f32\n");
        return 2;
    }
    const qd_dtype act = strcmp(precision, "f32") ? QD_DTYPE_BF16 : QD_DTYPE_F32;
    const int64_t h = res / 8, npx = 3 * (int64_t)res * res;
    float *zh = malloc(sizeof *zh * (size_t)(16 * h * h)), *img = malloc(sizeof *img * (size_t)npx);
    float *ref = compare ? malloc(sizeof *ref * (size_t)npx) : NULL, *same = compare ? malloc(sizeof *same * (size_t)npx) : NULL;
    double *t = calloc((size_t)runs + 1, sizeof *t), load_s = 0;
    if (!zh || !img || !t || (compare && (!ref || !same))) {
        fprintf(stderr, "bench_vae_decode: out of memory\n");
        return 1;
    }
    uint64_t st = 0x2545F4914F6CDD1Dull ^ (uint64_t)time(NULL); /* a fresh latent each run of the program */
    for (int64_t i = 0; i < 16 * h * h; i++) {
        st ^= st << 13, st ^= st >> 7, st ^= st << 17;
        zh[i] = (float)((double)(st >> 11) / 9007199254740992.0) * 4.0f - 2.0f;
    }
    qd_status s = decodes(device, act, res, zh, runs, t, &load_s, img);
    if (!s) {
        double amax = 0;
        for (int64_t i = 0; i < npx; i++) amax = fmax(amax, fabs(img[i]));
        qsort(t + 1, (size_t)runs, sizeof *t, cmp_double);
        printf("VAE decode %dx%d on %s, %s: load (random weights) %.2f s, median %.4f s over %d runs (largest |pixel| %.3g)\n", res, res,
               device, precision, load_s, t[1 + runs / 2], runs, amax);
    }
    /* --compare: the same weights and latent decoded by the CPU in f32 (the reference) and in this precision */
    if (!s && compare) s = decodes("cpu", QD_DTYPE_F32, res, zh, 0, NULL, NULL, ref);
    if (!s && compare) s = decodes("cpu", act, res, zh, 0, NULL, NULL, same);
    if (!s && compare)
        printf("VAE decode %dx%d, relative L2 against the CPU's f32 decode: %s %s %.3g; cpu %s %.3g; %s against cpu %s %.3g\n", res, res, device,
               precision, rel_l2(img, ref, npx), precision, rel_l2(same, ref, npx), device, precision, rel_l2(img, same, npx));
    if (s) fprintf(stderr, "bench_vae_decode: %s\n", qd_last_error());
    free(t), free(zh), free(img), free(ref), free(same);
    return s ? 1 : 0;
}
