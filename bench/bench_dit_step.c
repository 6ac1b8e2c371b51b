/* Seconds per denoising step of a full-size transformer with random weights (no file), and the memory it
 * takes: FLUX.1-dev (11.9 B parameters) or Z-Image-Turbo (6.15 B) at their published configurations,
 * bf16 activations, weights in bf16 or quantized online at load (--quant fp8 | nvfp4 | … as
 * `--quantization`). One step = one transformer forward (FLUX.1-dev's guidance is embedded; Z-Image-Turbo
 * runs without CFG), on random inputs shaped as the pipeline makes them at --res (latents / 8, 2×2
 * patches).
 *
 *   bench_dit_step --model flux.1-dev|z-image-turbo [--quant none|fp8|nvfp4|mxfp4|mxfp8|int8] [--res 512]
 *                  [--steps 2] [--text 512] [--weights-on-disk DIR] [--device cpu|cuda]
 *
 * --weights-on-disk DIR draws the weights into (unlinked) files in DIR mapped shared, so they behave like a
 * checkpoint mapped from disk: the kernel evicts and re-reads their pages when the model is larger than
 * memory (FLUX.1-dev in bf16 on a 23 GiB machine). Resident memory then counts the pages present.
 *
 * Prints: load seconds, the bytes the linears hold in their stored form (the weights' quantized size),
 * resident memory after load and the peak over the run (getrusage ru_maxrss), and each step's seconds. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend/cpu/cpu.h"
#include "core/codec.h"
#include "core/status.h"
#include "models/dit/flux.h"
#include "models/dit/zimage.h"
#include "models/random_weights.h"
#include "backend/cuda/cuda.h"
#ifdef QDIT_HAVE_CUDA
#include <cuda_runtime.h>
#endif
#include "quant/config.h"

static const char *const FLUX_DEV =
    "{\"_class_name\":\"FluxTransformer2DModel\",\"patch_size\":1,\"in_channels\":64,\"out_channels\":null,\"num_layers\":19,"
    "\"num_single_layers\":38,\"attention_head_dim\":128,\"num_attention_heads\":24,\"joint_attention_dim\":4096,"
    "\"pooled_projection_dim\":768,\"guidance_embeds\":true,\"axes_dims_rope\":[16,56,56]}";
static const char *const ZIMAGE_TURBO =
    "{\"_class_name\":\"ZImageTransformer2DModel\",\"all_patch_size\":[2],\"all_f_patch_size\":[1],\"in_channels\":16,"
    "\"dim\":3840,\"n_layers\":30,\"n_refiner_layers\":2,\"n_heads\":30,\"n_kv_heads\":30,\"norm_eps\":1e-5,\"qk_norm\":true,"
    "\"cap_feat_dim\":2560,\"rope_theta\":256.0,\"t_scale\":1000.0,\"axes_dims\":[32,48,48],\"axes_lens\":[1536,512,512]}";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double rss_gib(void) { /* current resident set, from /proc/self/statm */
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (double)res * 4096.0 / (1024.0 * 1024.0 * 1024.0);
}

static double peak_gib(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_maxrss / (1024.0 * 1024.0);
}

/* an activation tensor of U(−a, a) values */
static qd_tensor random_tensor(qd_backend *be, int rank, const int64_t *shape, float a, uint64_t *st) {
    qd_tensor t = {0};
    if (qd_tensor_new(be, &t, QD_DTYPE_BF16, rank, shape)) {
        fprintf(stderr, "%s\n", qd_last_error());
        exit(1);
    }
    uint16_t *p = malloc(qd_tensor_bytes(&t));
    for (int64_t i = 0; p && i < qd_tensor_elements(&t); i++) {
        *st ^= *st << 13, *st ^= *st >> 7, *st ^= *st << 17;
        p[i] = qd_f32_to_bf16(a * ((float)(*st >> 40) * 0x1.0p-23f - 1.0f));
    }
    if (!p || be->ops->upload(be, &t, p)) {
        fprintf(stderr, "%s\n", p ? qd_last_error() : "out of memory");
        exit(1);
    }
    free(p);
    return t;
}

static void die(const char *what) {
    fprintf(stderr, "bench_dit_step: %s: %s\n", what, qd_last_error());
    exit(1);
}

int main(int argc, char **argv) {
    const char *model = "z-image-turbo", *quant = "none", *disk = NULL, *device = "cpu";
    int res = 512, steps = 2, text = 512;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--quant")) quant = argv[i + 1];
        else if (!strcmp(argv[i], "--res")) res = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--text")) text = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--weights-on-disk")) disk = argv[i + 1];
        else if (!strcmp(argv[i], "--device")) device = argv[i + 1];
        else {
            fprintf(stderr, "bench_dit_step: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    bool flux = !strcmp(model, "flux.1-dev");
    if (!flux && strcmp(model, "z-image-turbo")) {
        fprintf(stderr, "bench_dit_step: --model flux.1-dev or z-image-turbo\n");
        return 2;
    }
    if (res % 16 || res <= 0 || steps <= 0 || text <= 0) {
        fprintf(stderr, "bench_dit_step: --res must be a positive multiple of 16, --steps and --text positive\n");
        return 2;
    }
    qd_quant_config q;
    qd_quant_config_init(&q);
    if (strcmp(quant, "none")) {
        if (qd_quant_method_parse(quant, &q.method)) die("--quant");
        q.online = true;
        snprintf(q.source, sizeof q.source, "bench_dit_step --quant %s (online)", quant);
    }
    qd_backend *be;
    const bool gpu = !strcmp(device, "cuda");
    if (!gpu && strcmp(device, "cpu")) {
        fprintf(stderr, "bench_dit_step: --device cpu or cuda\n");
        return 2;
    }
    if (gpu ? qd_backend_cuda_create(0, &be) : qd_backend_cpu_create(&be)) die("backend");
    if (qd_random_weights_on_disk(disk)) die("--weights-on-disk");
    qd_model_ctx ctx = {.backend = be, .quant = &q, .act = QD_DTYPE_BF16, .random_weights = true, .random_seed = 1};
    json_error_t je;
    json_t *cfg = json_loads(flux ? FLUX_DEV : ZIMAGE_TURBO, 0, &je);
    double rss0 = rss_gib(), t0 = now();
    qd_flux *fm = NULL;
    qd_zimage *zm = NULL;
    qd_flux_config fc;
    qd_zimage_config zc;
    if (flux) {
        if (qd_flux_config_parse(model, cfg, &fc) || qd_flux_load(&ctx, &fc, &fm)) die("load");
    } else {
        if (qd_zimage_config_parse(model, cfg, &zc) || qd_zimage_load(&ctx, &zc, &zm)) die("load");
    }
    double load_s = now() - t0, rss_load = rss_gib();
    printf("model %s, weights %s (random, %s), activations bf16, %dx%d, %s text tokens %d, ISA %s\n", model, quant,
           disk ? "drawn into unlinked files, mapped" : "in memory", res, res, flux ? "T5" : "caption", text, qd_cpu_isa_get()->level);
    printf("load %.1f s; resident after load %.2f GiB (+%.2f GiB over the empty process)\n", load_s, rss_load, rss_load - rss0);
    fflush(stdout);

    uint64_t st = 0x9e3779b97f4a7c15ull;
    int64_t lh = res / 8, lw = res / 8, n_img = (lh / 2) * (lw / 2);
    qd_tensor hs = {0}, enc = {0}, pooled = {0}, x = {0}, cap = {0}, y = {0};
    float *img_ids = NULL, *txt_ids = NULL, tsig = 0.7f, guide = 3.5f;
    if (flux) {
        hs = random_tensor(be, 3, (int64_t[]){1, n_img, 64}, 1.7f, &st);
        enc = random_tensor(be, 3, (int64_t[]){1, text, 4096}, 0.5f, &st);
        pooled = random_tensor(be, 2, (int64_t[]){1, 768}, 1.0f, &st);
        img_ids = calloc((size_t)n_img * 3, sizeof *img_ids);
        txt_ids = calloc((size_t)text * 3, sizeof *txt_ids);
        for (int64_t i = 0; i < n_img; i++) img_ids[3 * i + 1] = (float)(i / (lw / 2)), img_ids[3 * i + 2] = (float)(i % (lw / 2));
        if (qd_tensor_new(be, &y, QD_DTYPE_BF16, 3, hs.shape)) die("output");
    } else {
        x = random_tensor(be, 4, (int64_t[]){16, 1, lh, lw}, 1.7f, &st);
        cap = random_tensor(be, 2, (int64_t[]){text, 2560}, 1.0f, &st);
        if (qd_tensor_new(be, &y, QD_DTYPE_BF16, 4, x.shape)) die("output");
    }
    for (int s = 0; s < steps; s++) {
        double a = now();
        qd_status rc;
        if (flux) {
            qd_flux_inputs in = {.hidden = &hs, .encoder = &enc, .pooled = &pooled, .timestep = &tsig, .guidance = &guide,
                                 .img_ids = img_ids, .txt_ids = txt_ids};
            rc = qd_flux_forward(fm, &in, &y);
        } else {
            rc = qd_zimage_forward(zm, &x, tsig, &cap, &y);
        }
        if (rc) die("forward");
        /* the step is done when its output can be read (the GPU runs asynchronously) */
        void *host = malloc(qd_tensor_bytes(&y));
        if (!host || be->ops->download(be, &y, host)) die("download");
        free(host);
        printf("step %d: %.4f s\n", s + 1, now() - a);
        fflush(stdout);
    }
    printf("peak resident %.2f GiB\n", peak_gib());
#ifdef QDIT_HAVE_CUDA
    if (gpu) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        printf("GPU memory in use at the end %.2f GiB (of %.1f)\n", (double)(total_b - free_b) / 1073741824.0, (double)total_b / 1073741824.0);
    }
#endif
    qd_tensor_free(&hs), qd_tensor_free(&enc), qd_tensor_free(&pooled), qd_tensor_free(&x), qd_tensor_free(&cap), qd_tensor_free(&y);
    free(img_ids), free(txt_ids);
    qd_flux_free(fm);
    qd_zimage_free(zm);
    json_decref(cfg);
    qd_quant_config_free(&q);
    be->ops->destroy(be);
    return 0;
}
