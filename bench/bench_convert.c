/* Throughput and peak memory of the converters on a FLUX.1-dev-sized transformer (docs/benchmarks.md).
 *
 * usage: bench_convert [--qdit PATH] [--dim D] [--blocks DOUBLE SINGLE] [--keep] WORKDIR CONVERTER...
 *   CONVERTER: modelopt-fp8, modelopt-nvfp4, fp8 (block 128), fp8-tensor, dequantize
 *
 * Writes WORKDIR/src: a random BF16 FluxTransformer2DModel folder with diffusers names (default FLUX.1-dev's
 * sizes: dim 3072, 19 double and 38 single blocks, 11.9 B parameters, 23.8 GB), sharded at 10 GB with
 * diffusion_pytorch_model.safetensors.index.json, streamed row by row (this process stays small). Then runs
 * `qdit convert CONVERTER` on it once per converter (output WORKDIR/out, removed after each) and reports
 * seconds, source GB/s and the child's peak resident memory (wait4's ru_maxrss). Removes WORKDIR/src at the
 * end unless --keep. Weights: uniform bf16 with variance 1/in (values of no importance; the work per element
 * is what is timed). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "io/safetensors.h"

typedef struct {
    char name[160];
    int rank;
    int64_t shape[2];
} tdesc;

static tdesc *T;
static size_t nT, capT;

static void add(const char *name, int rank, int64_t a, int64_t b) {
    if (nT == capT) {
        capT = capT ? 2 * capT : 1024;
        T = realloc(T, capT * sizeof *T);
        if (!T) exit(1);
    }
    if (strlen(name) >= sizeof T[nT].name) exit(1); /* the benchmark's own names are short */
    memcpy(T[nT].name, name, strlen(name) + 1);
    T[nT].rank = rank, T[nT].shape[0] = a, T[nT].shape[1] = b;
    nT++;
}

static void lin(const char *n, int64_t in, int64_t out) {
    char b[200];
    snprintf(b, sizeof b, "%s.weight", n);
    add(b, 2, out, in);
    snprintf(b, sizeof b, "%s.bias", n);
    add(b, 1, out, 0);
}

/* FLUX.1's diffusers modules (as bench/make_flux_bf16.py) */
static void flux_tensors(int64_t D, int L, int S) {
    char p[200];
    lin("x_embedder", 64, D), lin("context_embedder", 4096, D);
    const char *emb[] = {"timestep_embedder", "guidance_embedder"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "time_text_embed.%s.linear_1", emb[i]), lin(p, 256, D);
        snprintf(p, sizeof p, "time_text_embed.%s.linear_2", emb[i]), lin(p, D, D);
    }
    lin("time_text_embed.text_embedder.linear_1", 768, D), lin("time_text_embed.text_embedder.linear_2", D, D);
    const char *att[] = {"to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"};
    const char *nrm[] = {"norm_q", "norm_k", "norm_added_q", "norm_added_k"};
    for (int b = 0; b < L; b++) {
        snprintf(p, sizeof p, "transformer_blocks.%d.norm1.linear", b), lin(p, D, 6 * D);
        snprintf(p, sizeof p, "transformer_blocks.%d.norm1_context.linear", b), lin(p, D, 6 * D);
        for (int i = 0; i < 8; i++) snprintf(p, sizeof p, "transformer_blocks.%d.attn.%s", b, att[i]), lin(p, D, D);
        for (int i = 0; i < 4; i++) snprintf(p, sizeof p, "transformer_blocks.%d.attn.%s.weight", b, nrm[i]), add(p, 1, 128, 0);
        snprintf(p, sizeof p, "transformer_blocks.%d.ff.net.0.proj", b), lin(p, D, 4 * D);
        snprintf(p, sizeof p, "transformer_blocks.%d.ff.net.2", b), lin(p, 4 * D, D);
        snprintf(p, sizeof p, "transformer_blocks.%d.ff_context.net.0.proj", b), lin(p, D, 4 * D);
        snprintf(p, sizeof p, "transformer_blocks.%d.ff_context.net.2", b), lin(p, 4 * D, D);
    }
    for (int b = 0; b < S; b++) {
        snprintf(p, sizeof p, "single_transformer_blocks.%d.norm.linear", b), lin(p, D, 3 * D);
        for (int i = 0; i < 3; i++) snprintf(p, sizeof p, "single_transformer_blocks.%d.attn.%s", b, att[i]), lin(p, D, D);
        for (int i = 0; i < 2; i++) snprintf(p, sizeof p, "single_transformer_blocks.%d.attn.%s.weight", b, nrm[i]), add(p, 1, 128, 0);
        snprintf(p, sizeof p, "single_transformer_blocks.%d.proj_mlp", b), lin(p, D, 4 * D);
        snprintf(p, sizeof p, "single_transformer_blocks.%d.proj_out", b), lin(p, 5 * D, D);
    }
    lin("norm_out.linear", D, 2 * D), lin("proj_out", D, 64);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static uint64_t bytes_of(const tdesc *t) { return 2ull * (uint64_t)t->shape[0] * (uint64_t)(t->rank == 2 ? t->shape[1] : 1); }

/* the source folder; returns its size in bytes */
static uint64_t write_source(const char *dir, int64_t D, int L, int S) {
    flux_tensors(D, L, S);
    mkdir(dir, 0777);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) exit(1);
    fprintf(f, "{\"_class_name\": \"FluxTransformer2DModel\", \"patch_size\": 1, \"in_channels\": 64, \"out_channels\": null, \"num_layers\": %d, "
               "\"num_single_layers\": %d, \"attention_head_dim\": 128, \"num_attention_heads\": %lld, \"joint_attention_dim\": 4096, "
               "\"pooled_projection_dim\": 768, \"guidance_embeds\": true, \"axes_dims_rope\": [16, 56, 56]}\n",
            L, S, (long long)(D / 128));
    fclose(f);
    /* shards of at most 10 GB, in declaration order */
    const uint64_t max = 10000000000ull;
    int *shard = calloc(nT, sizeof *shard), ns = 1;
    uint64_t used = 0, total = 0;
    for (size_t i = 0; i < nT; i++) {
        if (used && used + bytes_of(&T[i]) > max) ns++, used = 0;
        shard[i] = ns - 1, used += bytes_of(&T[i]), total += bytes_of(&T[i]);
    }
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors.index.json", dir);
    FILE *idx = fopen(path, "w");
    fprintf(idx, "{\"metadata\": {\"total_size\": %llu}, \"weight_map\": {", (unsigned long long)total);
    for (size_t i = 0; i < nT; i++)
        fprintf(idx, "%s\"%s\": \"diffusion_pytorch_model-%05d-of-%05d.safetensors\"", i ? ", " : "", T[i].name, shard[i] + 1, ns);
    fprintf(idx, "}}\n");
    fclose(idx);
    uint16_t *row = malloc(2 * 5 * 3072 * 8);
    float *fr = malloc(4 * 5 * 3072 * 8);
    for (int s = 0; s < ns; s++) {
        snprintf(path, sizeof path, "%s/diffusion_pytorch_model-%05d-of-%05d.safetensors", dir, s + 1, ns);
        qd_st_writer *w;
        if (qd_st_writer_create(path, &w)) exit(1);
        for (size_t i = 0; i < nT; i++)
            if (shard[i] == s) qd_st_writer_add(w, T[i].name, QD_DTYPE_BF16, T[i].rank, T[i].shape);
        qd_st_writer_meta(w, "format", "pt");
        if (qd_st_writer_begin(w)) exit(1);
        for (size_t i = 0; i < nT; i++) {
            if (shard[i] != s) continue;
            const int64_t rows = T[i].shape[0], cols = T[i].rank == 2 ? T[i].shape[1] : 1;
            const float a = T[i].rank == 2 ? sqrtf(3.0f / (float)cols) : 0.05f;
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t c = 0; c < cols; c++) fr[c] = (T[i].rank == 2 ? 0.0f : 1.0f) + a * (2.0f * (float)(next() >> 40) / 16777216.0f - 1.0f);
                qd_encode_row(QD_DTYPE_BF16, fr, row, (size_t)cols);
                if (qd_st_writer_put_part(w, T[i].name, row, 2ull * (uint64_t)cols)) exit(1);
            }
        }
        if (qd_st_writer_finish(w)) exit(1);
    }
    free(row), free(fr), free(shard);
    return total;
}

static void rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1400];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv) {
    const char *qdit = "build/qdit";
    int64_t D = 3072;
    int L = 19, S = 38, i = 1;
    int keep = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--qdit") && i + 1 < argc) qdit = argv[++i];
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc) D = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--blocks") && i + 2 < argc) L = atoi(argv[++i]), S = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep")) keep = 1;
        else break;
    }
    if (argc - i < 2 || D < 128 || D % 128 || D > 3072) {
        fprintf(stderr, "usage: bench_convert [--qdit PATH] [--dim D (128..3072, multiple of 128)] [--blocks DOUBLE SINGLE] [--keep] WORKDIR CONVERTER...\n"
                        "CONVERTER: modelopt-fp8 | modelopt-nvfp4 | fp8 | fp8-tensor | dequantize\n");
        return 2;
    }
    const char *work = argv[i++];
    mkdir(work, 0777);
    char src[1100], out[1100];
    snprintf(src, sizeof src, "%s/src", work), snprintf(out, sizeof out, "%s/out", work);
    double t0 = now_s();
    uint64_t total;
    struct stat st;
    char idx[1200];
    snprintf(idx, sizeof idx, "%s/diffusion_pytorch_model.safetensors.index.json", src);
    total = 0;
    if (stat(idx, &st) == 0) { /* a kept source: its size from the tensor list */
        flux_tensors(D, L, S);
        for (size_t k = 0; k < nT; k++) total += bytes_of(&T[k]);
        printf("source: %s (kept, %.2f GB)\n", src, (double)total / 1e9);
    } else {
        total = write_source(src, D, L, S);
        printf("source: %s, %.2f GB BF16, %zu tensors, written in %.1f s\n", src, (double)total / 1e9, nT, now_s() - t0);
    }
    printf("%-16s %10s %10s %12s\n", "converter", "seconds", "GB/s", "peak RSS MB");
    for (; i < argc; i++) {
        const char *c = argv[i];
        const char *sub = !strcmp(c, "fp8-tensor") ? "fp8" : c;
        rm_dir(out);
        fflush(stdout); /* or the child's freopen would write our buffered lines a second time */
        double t = now_s();
        pid_t pid = fork();
        if (pid == 0) {
            if (!freopen("/dev/null", "w", stdout)) _exit(127); /* the table only; the converter's notes go nowhere */
            if (!strcmp(c, "dequantize")) execl(qdit, qdit, "convert", sub, src, "--save-dir", out, (char *)NULL);
            else if (!strcmp(c, "fp8-tensor")) execl(qdit, qdit, "convert", sub, "--model-dir", src, "--save-dir", out, "--strategy", "tensor", (char *)NULL);
            else execl(qdit, qdit, "convert", sub, "--model-dir", src, "--save-dir", out, (char *)NULL);
            _exit(127);
        }
        int status = 0;
        struct rusage ru;
        if (wait4(pid, &status, 0, &ru) < 0) return 1;
        const double sec = now_s() - t;
        if (!WIFEXITED(status) || WEXITSTATUS(status)) printf("%-16s failed (status %d)\n", c, status);
        else printf("%-16s %10.1f %10.3f %12.0f\n", c, sec, (double)total / 1e9 / sec, (double)ru.ru_maxrss / 1024.0);
        fflush(stdout);
        rm_dir(out);
    }
    if (!keep) rm_dir(src);
    return 0;
}
