/* Benchmarks of a denoising step and of the whole pipeline (see bench.h). */
#include "pipeline/bench.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "backend/cpu/cpu.h"
#include "backend/cuda/cuda.h"
#include "core/codec.h"
#include "core/status.h"
#include "io/fs.h"
#include "load/repo.h"
#include "models/component.h"
#include "models/dit/flux.h"
#include "models/dit/zimage.h"
#include "models/offload.h"
#include "models/random_weights.h"
#include "pipeline/default_model.h"
#include "pipeline/generate.h"
#ifdef QDIT_HAVE_CUDA
#include <cuda_runtime.h>
#endif

/* The published transformer configurations (the Hugging Face repos' transformer/config.json). */
static const char *const FLUX_DEV =
    "{\"_class_name\":\"FluxTransformer2DModel\",\"patch_size\":1,\"in_channels\":64,\"out_channels\":null,\"num_layers\":19,"
    "\"num_single_layers\":38,\"attention_head_dim\":128,\"num_attention_heads\":24,\"joint_attention_dim\":4096,"
    "\"pooled_projection_dim\":768,\"guidance_embeds\":true,\"axes_dims_rope\":[16,56,56]}";
static const char *const ZIMAGE_TURBO =
    "{\"_class_name\":\"ZImageTransformer2DModel\",\"all_patch_size\":[2],\"all_f_patch_size\":[1],\"in_channels\":16,"
    "\"dim\":3840,\"n_layers\":30,\"n_refiner_layers\":2,\"n_heads\":30,\"n_kv_heads\":30,\"norm_eps\":1e-5,\"qk_norm\":true,"
    "\"cap_feat_dim\":2560,\"rope_theta\":256.0,\"t_scale\":1000.0,\"axes_dims\":[32,48,48],\"axes_lens\":[1536,512,512]}";

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rss_bytes(void) { /* the current resident set, from /proc/self/statm */
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t peak_bytes(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (uint64_t)u.ru_maxrss * 1024u; /* Linux reports KiB */
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double qd_bench_median(const double *v, int n) {
    if (n <= 0) return 0;
    double *c = malloc(sizeof *c * (size_t)n);
    if (!c) return v[0];
    memcpy(c, v, sizeof *c * (size_t)n);
    qsort(c, (size_t)n, sizeof *c, cmp_double);
    double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    free(c);
    return m;
}

/* The arguments every mode shares, checked before anything loads; each error names its flag. */
static qd_status check_common(const qd_options *o, const qd_bench_args *a, qd_dtype *act) {
    int cuda;
    qd_status s = qd_device_parse(a->device, &cuda);
    if (s) return s;
    qd_quant_method method;
    if (o->quantization && (s = qd_quant_method_parse(o->quantization, &method))) return qd_fail_context(s, "--quantization");
    if (a->precision && strcmp(a->precision, "bf16") && strcmp(a->precision, "f32")) {
        return qd_fail(QD_EINVAL, "--precision %s: expected bf16 or f32", a->precision);
    }
    *act = a->precision && !strcmp(a->precision, "f32") ? QD_DTYPE_F32 : QD_DTYPE_BF16;
    if (a->res && (a->res < 16 || a->res > QD_GENERATE_MAX_SIDE || a->res % 16)) {
        return qd_fail(QD_EINVAL, "--res %lld: expected a multiple of 16 from 16 to %d", (long long)a->res, QD_GENERATE_MAX_SIDE);
    }
    if (a->steps < 0 || a->steps > QD_BENCH_MAX_STEPS) return qd_fail(QD_EINVAL, "--steps %d: expected 1 to %d", a->steps, QD_BENCH_MAX_STEPS);
    if (a->warmup < 0 || a->warmup > QD_BENCH_MAX_STEPS) return qd_fail(QD_EINVAL, "--warmup %d: expected 0 to %d", a->warmup, QD_BENCH_MAX_STEPS);
    if (a->text < 0 || a->text > QD_BENCH_MAX_TEXT) return qd_fail(QD_EINVAL, "--text %lld: expected 1 to %d", (long long)a->text, QD_BENCH_MAX_TEXT);
    return QD_OK;
}

/* ---- the transformer ---- */

typedef struct {
    qd_component_load c; /* config, checkpoint and quantization */
    bool named;          /* a published configuration (c.cfg from the strings above, no source) */
    qd_repo *repo;
} bench_model;

static void bench_model_close(bench_model *m) {
    if (m->named) {
        json_decref(m->c.cfg);
        qd_quant_config_free(&m->c.quant);
        memset(&m->c, 0, sizeof m->c);
    } else {
        qd_component_load_close(&m->c);
    }
    qd_repo_close(m->repo);
    memset(m, 0, sizeof *m);
}

/* The transformer's config, weights and quantization: a named configuration, or the transformer of a
 * pipeline (or a transformer folder itself) under the model flags. */
static qd_status bench_model_open(const qd_options *o, const char *model, bool random, bench_model *m) {
    memset(m, 0, sizeof *m);
    const bool flux = !strcmp(model, "flux.1-dev"), zimage = !strcmp(model, "z-image-turbo");
    if (flux || zimage) {
        m->named = true;
        qd_quant_config_init(&m->c.quant);
        const bool svdq = o->enable_svdquant == 1;
        if (o->transformer_weights_path || (o->n_ignored_layers && (!o->quantization || svdq)) || o->n_component_paths ||
            (svdq && o->quantization) || (svdq && o->quantization_precision && strcmp(o->quantization_precision, "int4"))) {
            return qd_fail(QD_EINVAL, "--model %s draws random weights at the published configuration and takes --quantization METHOD "
                                      "(with --quantization-ignored-layers) or --enable-svdquant (int4) only (give a folder to benchmark a "
                                      "checkpoint)", model);
        }
        json_error_t je;
        if (!(m->c.cfg = json_loads(flux ? FLUX_DEV : ZIMAGE_TURBO, 0, &je))) return qd_fail(QD_ENOMEM, "cannot allocate the config");
        m->c.cls = flux ? "FluxTransformer2DModel" : "ZImageTransformer2DModel";
        if (svdq) { /* a Nunchaku file's scheme per layer, synthetic values (random_weights.c) */
            m->c.quant.method = QD_QM_SVDQUANT;
            m->c.quant.svdq_rank = o->quantization_rank > 0 ? o->quantization_rank : 32;
            snprintf(m->c.quant.source, sizeof m->c.quant.source, "--enable-svdquant on random weights (int4, rank %d, synthetic values)",
                     m->c.quant.svdq_rank);
        }
        if (o->quantization) {
            qd_status s = qd_random_quant_config(o->quantization, &m->c.quant);
            if (s) return qd_fail_context(s, "--model %s", model);
            /* layers kept in BF16 (name contains a pattern): online, as the flag does; for modelopt_fp8, the layout of an
               export built with BF16 fallbacks (SGLang's FLUX.1 preset, quant-sglang.md §5.1) */
            if ((s = qd_random_quant_ignore(&m->c.quant, o->ignored_layers, o->n_ignored_layers))) return s;
        }
        return QD_OK;
    }
    qd_status s = random ? qd_repo_open_configs(model, &m->repo) : qd_repo_open(model, &m->repo);
    if (s == QD_ENOTFOUND && !random && strstr(qd_last_error(), "no weights")) {
        char why[1024];
        snprintf(why, sizeof why, "%s", qd_last_error());
        return qd_fail(s, "--model %s: %s (--random-weights draws them from config.json)", model, why);
    }
    if (s) return qd_fail_context(s, "--model %s", model);
    const char *dir = NULL;
    if (m->repo->layout == QD_LAYOUT_PIPELINE) {
        for (size_t i = 0; i < m->repo->n_components; i++)
            if (!strcmp(m->repo->components[i].name, "transformer")) dir = m->repo->components[i].dir;
        if (!dir) return qd_fail(QD_ENOTFOUND, "--model %s: the pipeline has no transformer component", model);
    } else if (m->repo->layout == QD_LAYOUT_COMPONENT) {
        dir = m->repo->root;
    } else {
        return qd_fail(QD_EINVAL, "--model %s: expected flux.1-dev, z-image-turbo, a pipeline folder or a transformer folder (with "
                                  "config.json), not a %s", model, qd_layout_name(m->repo->layout));
    }
    return qd_component_load_open(o, "transformer", dir, random, &m->c);
}

/* An activation tensor of U(−a, a) values in dtype act. */
static qd_status random_tensor(qd_backend *be, qd_dtype act, int rank, const int64_t *shape, float a, uint64_t *st, qd_tensor *t) {
    qd_status s = qd_tensor_new(be, t, act, rank, shape);
    if (s) return s;
    const int64_t n = qd_tensor_elements(t);
    float *f = malloc(sizeof *f * (size_t)n + 4);
    uint16_t *h = act == QD_DTYPE_BF16 ? malloc(sizeof *h * (size_t)n + 2) : NULL;
    if (!f || (act == QD_DTYPE_BF16 && !h)) s = qd_fail(QD_ENOMEM, "cannot allocate an input of %lld values", (long long)n);
    for (int64_t i = 0; !s && i < n; i++) {
        *st ^= *st << 13, *st ^= *st >> 7, *st ^= *st << 17;
        f[i] = a * ((float)(*st >> 40) * 0x1.0p-23f - 1.0f);
        if (h) h[i] = qd_f32_to_bf16(f[i]);
    }
    if (!s) s = be->ops->upload(be, t, h ? (const void *)h : (const void *)f);
    free(f), free(h);
    return s;
}

typedef struct {
    bool flux;
    qd_flux *fm;
    qd_zimage *zm;
    qd_flux_config fc;
    qd_zimage_config zc;
    qd_tensor hs, enc, pooled, x, cap, y;
    float *img_ids, *txt_ids, tsig, guide;
    void *host; /* the output read back */
} bench_run;

static void bench_run_free(bench_run *b) {
    qd_tensor_free(&b->hs), qd_tensor_free(&b->enc), qd_tensor_free(&b->pooled), qd_tensor_free(&b->x), qd_tensor_free(&b->cap);
    qd_tensor_free(&b->y);
    free(b->img_ids), free(b->txt_ids), free(b->host);
    qd_flux_free(b->fm);
    qd_zimage_free(b->zm);
}

/* Inputs as the pipeline shapes them at res: FLUX packs the [C, res/8, res/8] latent into (res/16)² tokens of
 * in_channels; Z-Image takes the latent [C, 1, res/8, res/8] and patches it itself. */
static qd_status make_inputs(qd_backend *be, qd_dtype act, int64_t res, int64_t text, bench_run *b, int64_t *image_tokens) {
    uint64_t st = 0x9e3779b97f4a7c15ull;
    const int64_t lh = res / 8, lw = res / 8;
    qd_status s = QD_OK;
    b->tsig = 0.7f, b->guide = 3.5f;
    if (b->flux) {
        const int64_t n = (lh / 2) * (lw / 2);
        *image_tokens = n;
        s = random_tensor(be, act, 3, (int64_t[]){1, n, b->fc.in_channels}, 1.7f, &st, &b->hs);
        if (!s) s = random_tensor(be, act, 3, (int64_t[]){1, text, b->fc.joint_attention_dim}, 0.5f, &st, &b->enc);
        if (!s) s = random_tensor(be, act, 2, (int64_t[]){1, b->fc.pooled_projection_dim}, 1.0f, &st, &b->pooled);
        b->img_ids = calloc((size_t)n * 3, sizeof *b->img_ids);
        b->txt_ids = calloc((size_t)text * 3, sizeof *b->txt_ids);
        if (!s && (!b->img_ids || !b->txt_ids)) s = qd_fail(QD_ENOMEM, "cannot allocate the position ids");
        for (int64_t i = 0; !s && i < n; i++) b->img_ids[3 * i + 1] = (float)(i / (lw / 2)), b->img_ids[3 * i + 2] = (float)(i % (lw / 2));
        if (!s) s = qd_tensor_new(be, &b->y, act, 3, (int64_t[]){1, n, b->fc.out_channels});
    } else {
        if (lh % b->zc.patch) {
            return qd_fail(QD_EINVAL, "--res %lld: the latent side %lld is not a multiple of the transformer's patch size %lld", (long long)res,
                           (long long)lh, (long long)b->zc.patch);
        }
        *image_tokens = (lh / b->zc.patch) * (lw / b->zc.patch);
        s = random_tensor(be, act, 4, (int64_t[]){b->zc.in_channels, 1, lh, lw}, 1.7f, &st, &b->x);
        if (!s) s = random_tensor(be, act, 2, (int64_t[]){text, b->zc.cap_feat_dim}, 1.0f, &st, &b->cap);
        if (!s) s = qd_tensor_new(be, &b->y, act, 4, b->x.shape);
    }
    if (!s && !(b->host = malloc(qd_tensor_bytes(&b->y)))) s = qd_fail(QD_ENOMEM, "cannot allocate the output");
    return s;
}

/* bytes in use on the GPU the device names, once its work is done, and its total (0 on the CPU, or without
   CUDA) */
static uint64_t gpu_in_use(const char *device, uint64_t *total) {
    if (total) *total = 0;
#ifdef QDIT_HAVE_CUDA
    int cuda = -1;
    size_t free_b = 0, total_b = 0;
    if (!qd_device_parse(device, &cuda) && cuda >= 0 && cudaDeviceSynchronize() == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
        if (total) *total = total_b;
        return total_b - free_b;
    }
#else
    (void)device;
#endif
    return 0;
}

/* One denoising step; done when its output has been read back (a GPU runs asynchronously). */
static qd_status step(qd_backend *be, bench_run *b) {
    qd_status s;
    if (b->flux) {
        qd_flux_inputs in = {.hidden = &b->hs, .encoder = &b->enc, .pooled = &b->pooled, .timestep = &b->tsig,
                             .guidance = b->fc.guidance_embeds ? &b->guide : NULL, .img_ids = b->img_ids, .txt_ids = b->txt_ids};
        s = qd_flux_forward(b->fm, &in, &b->y);
    } else {
        s = qd_zimage_forward(b->zm, &b->x, b->tsig, &b->cap, &b->y);
    }
    return s ? s : be->ops->download(be, &b->y, b->host);
}

qd_status qd_bench_step(const qd_options *o, const qd_bench_args *a, qd_bench_report *r) {
    memset(r, 0, sizeof *r);
    qd_dtype act;
    qd_status s = check_common(o, a, &act);
    const char *model = a->model ? a->model : o->model_path;
    if (!s && !model) s = qd_fail(QD_EINVAL, "--model is required: flux.1-dev, z-image-turbo, or a pipeline or transformer folder");
    if (s) return s;
    const int64_t res = a->res ? a->res : 512, text = a->text ? a->text : 512;
    snprintf(r->model, sizeof r->model, "%s", model);
    snprintf(r->device, sizeof r->device, "%s", a->device ? a->device : "cpu");
    snprintf(r->precision, sizeof r->precision, "%s", act == QD_DTYPE_F32 ? "f32" : "bf16");
    snprintf(r->isa, sizeof r->isa, "%s", qd_cpu_isa_get()->level);
    r->res = res, r->text = text, r->warmup = a->warmup, r->steps = a->steps ? a->steps : 2;

    bench_model m;
    bench_run b = {0};
    qd_backend *be = NULL;
    const bool named = !strcmp(model, "flux.1-dev") || !strcmp(model, "z-image-turbo");
    r->random_weights = named || a->random_weights;
    s = bench_model_open(o, model, r->random_weights, &m);
    if (!s) {
        snprintf(r->cls, sizeof r->cls, "%s", m.c.cls);
        snprintf(r->quantization, sizeof r->quantization, "%s",
                 m.c.quant.method == QD_QM_NONE ? "none" : qd_quant_method_name(m.c.quant.method));
        b.flux = !strcmp(m.c.cls, "FluxTransformer2DModel");
        if (!b.flux && strcmp(m.c.cls, "ZImageTransformer2DModel")) {
            s = qd_fail(QD_EUNSUPPORTED, "--model %s: the transformer is %s; qdit bench runs FluxTransformer2DModel and ZImageTransformer2DModel",
                        model, m.c.cls);
        }
    }
    const char *label = m.c.cfg_path ? m.c.cfg_path : model;
    if (!s) s = b.flux ? qd_flux_config_parse(label, m.c.cfg, &b.fc) : qd_zimage_config_parse(label, m.c.cfg, &b.zc);
    if (!s && a->weights_on_disk && !r->random_weights) s = qd_fail(QD_EINVAL, "--weights-on-disk applies to random weights only");
    if (!s && (s = qd_device_backend(a->device, &be))) s = qd_fail_context(s, "--device %s", a->device ? a->device : "cpu");
    if (!s && a->weights_on_disk && (s = qd_random_weights_on_disk(a->weights_on_disk))) s = qd_fail_context(s, "--weights-on-disk");

    qd_linear_tally tally = {0};
    r->gpu_used_empty = gpu_in_use(a->device, NULL);
    r->rss_start = rss_bytes();
    const qd_offload_mode offload = s ? QD_OFFLOAD_MODE_NONE : qd_offload_resolve(o, m.c.ck, &m.c.quant, be);
    static const char *const offload_names[] = {"none", "layerwise", "component"};
    snprintf(r->offload, sizeof r->offload, "%s", offload_names[offload]);
    double t0 = now_s();
    if (!s) {
        qd_model_ctx ctx = {.backend = be, .ck = m.c.ck, .quant = &m.c.quant, .act = act, .random_weights = r->random_weights,
                            .random_seed = a->random_seed ? a->random_seed : 1, .tally = &tally, .offload = offload,
                            .random_nunchaku = m.named && b.flux && m.c.quant.method == QD_QM_SVDQUANT && !a->svdq_diffusers_names,
                            .offload_budget = (uint64_t)(o->dit_offload_budget_mib > 0 ? o->dit_offload_budget_mib : 0) << 20};
        s = b.flux ? qd_flux_load(&ctx, &b.fc, &b.fm) : qd_zimage_load(&ctx, &b.zc, &b.zm);
    }
    r->load_s = now_s() - t0, r->rss_loaded = rss_bytes();
    r->linear_bytes = tally.bytes, r->linears = tally.layers;
    r->gpu_used_loaded = gpu_in_use(a->device, NULL);
    if (!s) s = make_inputs(be, act, res, text, &b, &r->image_tokens);
    if (!s && a->progress) a->progress(a->progress_user, r);
    for (int i = 0; i < r->warmup && !s; i++) {
        double t = now_s();
        s = step(be, &b);
        r->warmup_s[i] = now_s() - t;
    }
    qd_backend_cuda_profile_reset(); /* QDIT_CUDA_PROFILE: the table covers the timed steps only */
    void *first = NULL;
    const size_t out_bytes = b.host ? qd_tensor_bytes(&b.y) : 0;
    for (int i = 0; i < r->steps && !s; i++) {
        double t = now_s();
        s = step(be, &b);
        r->step_s[i] = now_s() - t;
        if (!s && r->warmup + i == 0 && (first = malloc(out_bytes + 1))) memcpy(first, b.host, out_bytes);
        if (!s && first && r->warmup + i > 0) {
            const int64_t n = qd_tensor_elements(&b.y);
            for (int64_t j = 0; j < n; j++) {
                const float u = b.y.dtype == QD_DTYPE_BF16 ? qd_bf16_to_f32(((const uint16_t *)b.host)[j]) : ((const float *)b.host)[j];
                const float v = b.y.dtype == QD_DTYPE_BF16 ? qd_bf16_to_f32(((const uint16_t *)first)[j]) : ((const float *)first)[j];
                const double d = fabs((double)u - (double)v);
                if (d > r->rerun_max_diff || d != d) r->rerun_max_diff = d;
            }
        }
        if (!s) {
            r->n_done = i + 1;
            if (a->progress) a->progress(a->progress_user, r);
        }
    }
    free(first);
    if (!s) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t j = 0; j < out_bytes; j++) h = (h ^ ((const uint8_t *)b.host)[j]) * 0x100000001b3ull;
        r->output_hash = h;
        r->median_s = qd_bench_median(r->step_s, r->steps);
        r->min_s = r->step_s[0];
        for (int i = 0; i < r->steps; i++) {
            r->mean_s += r->step_s[i] / r->steps;
            if (r->step_s[i] < r->min_s) r->min_s = r->step_s[i];
        }
    }
    r->rss_peak = peak_bytes();
    if (!s) r->gpu_used = gpu_in_use(a->device, &r->gpu_total);
    qd_memory_info mi;
    if (!s && be->ops->memory_info && !be->ops->memory_info(be, &mi)) {
        r->offload_groups = mi.offload_groups;
        r->offload_host_bytes = mi.offload_host_bytes, r->offload_device_bytes = mi.offload_device_bytes;
    }
    if (r->gpu_total) r->gpu_weights = r->gpu_used_loaded - r->gpu_used_empty + r->offload_device_bytes;
    bench_run_free(&b);
    if (be) be->ops->destroy(be);
    if (a->weights_on_disk) qd_random_weights_on_disk(NULL);
    bench_model_close(&m);
    return s;
}

/* ---- the whole pipeline ---- */

qd_status qd_bench_pipeline(const qd_options *o, const qd_bench_args *a, qd_bench_pipeline_report *r) {
    memset(r, 0, sizeof *r);
    qd_dtype act;
    qd_status s = check_common(o, a, &act);
    if (s) return s;
    if (a->text) return qd_fail(QD_EINVAL, "--text: the pipeline's prompt sets the caption length; not with --pipeline");
    if (a->weights_on_disk) return qd_fail(QD_EINVAL, "--weights-on-disk applies to the step benchmark, not --pipeline");
    qd_options opts = *o;
    const char *model = a->model ? a->model : o->model_path;
    char embedded[4096];
    bool tiny = !model;
    if (tiny) {
        if ((s = qd_default_model_dir(embedded, sizeof embedded))) return s;
        model = embedded;
    }
    if (!strcmp(model, "flux.1-dev") || !strcmp(model, "z-image-turbo")) {
        return qd_fail(QD_EINVAL, "--model %s: --pipeline runs a pipeline folder (model_index.json), e.g. a config-only copy with "
                                  "--random-weights", model);
    }
    opts.model_path = model;
    snprintf(r->model, sizeof r->model, "%s", model);
    snprintf(r->device, sizeof r->device, "%s", a->device ? a->device : "cpu");
    snprintf(r->precision, sizeof r->precision, "%s", act == QD_DTYPE_F32 ? "f32" : "bf16");
    char *dir = qd_path_join(P_tmpdir, "qdit-bench-XXXXXX");
    if (!dir || !mkdtemp(dir)) {
        free(dir);
        return qd_fail(QD_EIO, "cannot make a temporary folder in %s for the image", P_tmpdir);
    }
    char *png = qd_path_join(dir, "bench.png");
    qd_generate_args g = {
        .prompt = "a large red circle at the top left on a blue background",
        .height = a->res ? a->res : tiny ? QD_DEFAULT_MODEL_SIDE : 0,
        .width = a->res ? a->res : tiny ? QD_DEFAULT_MODEL_SIDE : 0,
        .steps = a->steps ? a->steps : tiny ? QD_DEFAULT_MODEL_STEPS : 0,
        .guidance = tiny ? QD_DEFAULT_MODEL_GUIDANCE : -1,
        .output = png,
        .device = a->device,
        .precision = a->precision,
        .random_weights = a->random_weights,
        .random_seed = a->random_seed ? a->random_seed : 1,
    };
    qd_generate_report rep = {0};
    if (!png) s = qd_fail(QD_ENOMEM, "cannot allocate");
    for (int i = 0; i <= a->warmup && !s; i++) s = qd_generate_run(&opts, &g, &rep);
    if (png) remove(png);
    rmdir(dir);
    free(png), free(dir);
    if (s) return s;
    r->res = rep.height, r->steps = rep.steps, r->warmup = a->warmup;
    r->encode_s = rep.encode_s, r->denoise_s = rep.denoise_s, r->loop_s = rep.loop_s, r->decode_s = rep.decode_s;
    r->total_s = rep.encode_s + rep.denoise_s + rep.decode_s;
    r->step_s = rep.steps ? rep.loop_s / rep.steps : 0;
    r->rss_peak = peak_bytes();
    /* the pipeline class, for the report */
    qd_repo *repo = NULL;
    if (!(a->random_weights ? qd_repo_open_configs(model, &repo) : qd_repo_open(model, &repo)) && repo->pipeline_class) {
        snprintf(r->pipeline, sizeof r->pipeline, "%s", repo->pipeline_class);
    }
    qd_clear_error();
    qd_repo_close(repo);
    return QD_OK;
}
