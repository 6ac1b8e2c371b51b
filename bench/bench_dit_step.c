/* Seconds per denoising step of a full-size transformer with random weights (no file), and the memory it
 * takes: FLUX.1-dev (11.9 B parameters) or Z-Image-Turbo (6.15 B) at their published configurations,
 * bf16 activations, weights in bf16 or quantized online at load (--quant fp8 | nvfp4 | … as
 * `--quantization`; modelopt_fp8: a ModelOpt FP8 export's tensors, static per-tensor activation scales).
 * A thin wrapper over the library's step benchmark (pipeline/bench.h), which `qdit bench` also runs; kept
 * for its flags and output, which tools/device/cuda_checks.sh uses.
 *
 *   bench_dit_step --model flux.1-dev|z-image-turbo [--quant none|fp8|modelopt_fp8|nvfp4|mxfp4|mxfp8|int8|svdq-int4|svdq-int4-diffusers] [--res 512]
 *                  [--steps 2] [--warmup 0] [--text 512] [--weights-on-disk DIR] [--device cpu|cuda]
 *                  [--dit-layerwise-offload [true|false]] [--dit-cpu-offload [true|false]] [--dit-offload-budget-mib N]
 *                  [--quantization-ignored-layers P1,P2,…] (layers whose name contains a pattern stay BF16: e.g. SGLang's
 *                  FLUX.1 ModelOpt FP8 layout with norm1.linear,norm1_context.linear,ff.net,ff_context.net,norm.linear)
 *
 * The offload flags are the library's (docs/cuda.md "Weight offload"): the transformer's blocks stream from
 * pinned host memory through two device slots, or the whole transformer is uploaded for the steps; the GPU
 * memory line then says how much the weights hold on the device (resident layers + slots).
 *
 * --weights-on-disk DIR draws the weights into (unlinked) files in DIR mapped shared, so they behave like a
 * checkpoint mapped from disk: the kernel evicts and re-reads their pages when the model is larger than
 * memory (FLUX.1-dev in bf16 on a 23 GiB machine). Resident memory then counts the pages present.
 *
 * svdq-int4 draws FLUX.1-dev's blocks in the layout of Nunchaku's svdq-int4_r32 files (fused qkv_proj with one
 * smoothing vector and one rank-32 branch; single blocks' proj_out as out_proj + mlp_fc2); svdq-int4-diffusers under
 * diffusers names (to_q, to_k, to_v each with their own), a layout no published file has, kept for comparison.
 *
 * Prints: load seconds, the bytes the linears hold in their stored form (the weights' quantized size),
 * resident memory after load and the peak over the run (getrusage ru_maxrss), each step's seconds and
 * their median. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "pipeline/bench.h"

static double gib(uint64_t b) { return (double)b / 1073741824.0; }

typedef struct {
    const char *quant, *disk;
} shown;

static void progress(void *user, const qd_bench_report *r) {
    const shown *w = user;
    if (r->n_done == 0) {
        printf("model %s, weights %s (random%s), activations %s, %lldx%lld, %s text tokens %lld, ISA %s\n", r->model, w->quant,
               w->disk ? ", drawn into unlinked files, mapped" : ", in memory", r->precision, (long long)r->res,
               (long long)r->res, strcmp(r->cls, "FluxTransformer2DModel") ? "caption" : "T5", (long long)r->text, r->isa);
        printf("load %.1f s; linears %lld, %.2f GiB stored; resident after load %.2f GiB (+%.2f GiB over the empty process)\n", r->load_s,
               (long long)r->linears, gib(r->linear_bytes), gib(r->rss_loaded), gib(r->rss_loaded) - gib(r->rss_start));
    } else {
        printf("step %d: %.4f s\n", r->n_done, r->step_s[r->n_done - 1]);
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    qd_bench_args a = {.model = "z-image-turbo", .res = 512, .steps = 2, .text = 512, .progress = progress};
    const char *quant = "none", *ignored = NULL; /* comma-separated patterns */
    int layerwise = -1, component = -1, budget_mib = 0;
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--dit-layerwise-offload") || !strcmp(argv[i], "--dit-cpu-offload")) {
            /* alone: true; or an explicit true/false, as the qdit flags take them */
            int *flag = argv[i][6] == 'l' ? &layerwise : &component, v = 1;
            if (i + 1 < argc && (!strcmp(argv[i + 1], "true") || !strcmp(argv[i + 1], "false"))) v = !strcmp(argv[i + 1], "true");
            else i--; /* no value to step over */
            *flag = v;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_dit_step: %s needs a value\n", argv[i]);
            return 2;
        }
        const char *v = argv[i + 1];
        if (!strcmp(argv[i], "--model")) a.model = v;
        else if (!strcmp(argv[i], "--quant")) quant = v;
        else if (!strcmp(argv[i], "--res")) a.res = atoi(v);
        else if (!strcmp(argv[i], "--steps")) a.steps = atoi(v);
        else if (!strcmp(argv[i], "--warmup")) a.warmup = atoi(v);
        else if (!strcmp(argv[i], "--text")) a.text = atoi(v);
        else if (!strcmp(argv[i], "--weights-on-disk")) a.weights_on_disk = v;
        else if (!strcmp(argv[i], "--device")) a.device = v;
        else if (!strcmp(argv[i], "--dit-offload-budget-mib")) budget_mib = atoi(v);
        else if (!strcmp(argv[i], "--quantization-ignored-layers")) ignored = v;
        else {
            fprintf(stderr, "bench_dit_step: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    if (strcmp(a.model, "flux.1-dev") && strcmp(a.model, "z-image-turbo")) {
        fprintf(stderr, "bench_dit_step: --model flux.1-dev or z-image-turbo\n");
        return 2;
    }
    if (a.res <= 0 || a.steps <= 0 || a.text <= 0) {
        fprintf(stderr, "bench_dit_step: --res must be a positive multiple of 16, --steps and --text positive\n");
        return 2;
    }
    qd_options o;
    qd_options_init(&o);
    /* Nunchaku's scheme per layer (--enable-svdquant on random weights), in its file layout (fused qkv_proj, out_proj +
       mlp_fc2 for the single blocks' proj_out), or under diffusers names with svdq-int4-diffusers (the layout before) */
    const bool svdq_diffusers = !strcmp(quant, "svdq-int4-diffusers"), svdq = svdq_diffusers || !strcmp(quant, "svdq-int4");
    a.svdq_diffusers_names = svdq_diffusers;
    o.quantization = strcmp(quant, "none") && !svdq ? quant : NULL;
    if (svdq) o.enable_svdquant = 1, o.quantization_rank = 32;
    o.dit_layerwise_offload = layerwise, o.dit_cpu_offload = component, o.dit_offload_budget_mib = budget_mib;
    char *ignored_copy = ignored ? strdup(ignored) : NULL; /* (the patterns point into it until the end) */
    for (char *save = NULL, *t = ignored_copy ? strtok_r(ignored_copy, ",", &save) : NULL; t && o.n_ignored_layers < QD_MAX_IGNORED_LAYERS;
         t = strtok_r(NULL, ",", &save))
        o.ignored_layers[o.n_ignored_layers++] = t;
    shown w = {quant, a.weights_on_disk};
    a.progress_user = &w;
    qd_bench_report *r = malloc(sizeof *r);
    qd_status s = r ? qd_bench_step(&o, &a, r) : QD_ENOMEM;
    if (s) {
        fprintf(stderr, "bench_dit_step: %s\n", r ? qd_last_error() : "out of memory");
        free(r), free(ignored_copy);
        return s == QD_EINVAL ? 2 : 1;
    }
    printf("median %.4f s/step over %d steps\n", r->median_s, r->steps);
    if (r->warmup + r->steps > 1) printf("largest |later step - first step| of the output: %.3g (same inputs each step)\n", r->rerun_max_diff);
    printf("output hash %016llx (FNV-1a of the last step's output bytes)\n", (unsigned long long)r->output_hash);
    printf("peak resident %.2f GiB\n", gib(r->rss_peak));
    if (r->gpu_total) {
        printf("GPU memory in use at the end %.2f GiB (of %.1f)\n", gib(r->gpu_used), gib(r->gpu_total));
        printf("GPU memory: %.2f GiB with the backend made (context, workspaces), +%.2f GiB after the load (weights), "
               "+%.2f GiB more at the end (steps' activations, plans, graphs)\n", gib(r->gpu_used_empty),
               gib(r->gpu_used_loaded - r->gpu_used_empty), gib(r->gpu_used - r->gpu_used_loaded));
        printf("GPU memory held by weights %.2f GiB (offload %s: %.2f GiB resident after the load + %.2f GiB offload buffers)\n",
               gib(r->gpu_weights), r->offload, gib(r->gpu_used_loaded - r->gpu_used_empty), gib(r->offload_device_bytes));
    }
    if (r->offload_groups)
        printf("offload %s: %d groups, %.2f GiB in pinned host memory\n", r->offload, r->offload_groups, gib(r->offload_host_bytes));
    free(r), free(ignored_copy);
    return 0;
}
