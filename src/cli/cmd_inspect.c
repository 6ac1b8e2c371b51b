/* qdit inspect PATH [--json] — what is inside a pipeline, component folder, safetensors file or
 * cached hub repo (docs/cli.md). Reads headers only. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_options.h"
#include "load/inspect.h"
#include "qdit.h"

static void inspect_usage(FILE *to) {
    fprintf(to,
            "usage: qdit inspect [PATH] [--json] [model and quantization flags]\n"
            "\n"
            "PATH is a diffusers pipeline folder (model_index.json), a component folder (config.json +\n"
            "weights), a .safetensors file, a *.safetensors.index.json weight map, any folder of those, or\n"
            "a Hugging Face repo id (org/name) already in the local cache ($HF_HOME/hub); --model-path\n"
            "may give it instead. The flags are those of generate, so the quantization plan shown is the one\n"
            "a run would use.\n"
            "\n"
            "  --json   print the machine-readable report (schema in docs/cli.md)\n"
            "\n%s",
            qd_cli_model_flags_help());
}

/* 1234567 → "1,234,567" */
static const char *grouped(uint64_t v, char *buf, size_t n) {
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

static const char *human_bytes(uint64_t v, char *buf, size_t n) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)v;
    int u = 0;
    while (x >= 1024 && u < 4) {
        x /= 1024;
        u++;
    }
    snprintf(buf, n, u ? "%.2f %s" : "%.0f %s", x, units[u]);
    return buf;
}

static void print_quantization(const qd_component_stats *st) {
    char a[48];
    printf("  quantization  %s — %s\n", st->quant.method == QD_QM_NONE ? "none" : qd_quant_method_name(st->quant.method),
           st->quant.source);
    /* scheme counts, then the per-layer table */
    char seen[16][32];
    size_t counts[16] = {0}, n_seen = 0;
    for (size_t i = 0; i < st->n_layers; i++) {
        size_t k = 0;
        while (k < n_seen && strcmp(seen[k], st->layers[i].scheme)) k++;
        if (k == n_seen && n_seen < 16) memcpy(seen[n_seen++], st->layers[i].scheme, 32);
        if (k < 16) counts[k]++;
    }
    printf("  linears   %zu", st->n_layers);
    for (size_t k = 0; k < n_seen; k++) printf("%s %s %zu", k ? "," : ":", seen[k], counts[k]);
    printf("\n");
    if (!st->n_layers) return;
    size_t width = 4;
    for (size_t i = 0; i < st->n_layers; i++)
        if (strlen(st->layers[i].name) > width) width = strlen(st->layers[i].name);
    printf("    %-*s  %-16s %8s %8s %14s\n", (int)width, "layer", "scheme", "in", "out", "stored bytes");
    for (size_t i = 0; i < st->n_layers; i++) {
        const qd_layer_report *l = &st->layers[i];
        printf("    %-*s  %-16s %8lld %8lld %14s\n", (int)width, l->name, l->scheme, (long long)l->in_features,
               (long long)l->out_features, grouped(l->bytes, a, sizeof a));
    }
}

static void print_text(const qd_repo *r, const qd_component_stats *stats) {
    char a[48], b[48];
    printf("%s: %s", r->path, qd_layout_name(r->layout));
    if (r->pipeline_class) printf(" %s", r->pipeline_class);
    printf(", %zu component%s", r->n_components, r->n_components == 1 ? "" : "s");
    if (r->repo_id) printf(" (cached snapshot %s)", r->root);
    printf("\n");
    uint64_t total_tensors = 0, total_bytes = 0;
    for (size_t i = 0; i < r->n_components; i++) {
        const qd_component *c = &r->components[i];
        const qd_component_stats *st = &stats[i];
        total_tensors += st->tensors;
        total_bytes += st->bytes;
        printf("\n%s  %s%s%s\n", c->name, c->class_name ? c->class_name : "(no class)", c->library ? "  " : "",
               c->library ? c->library : "");
        if (st->n_files == 0) {
            printf("  (no weights)\n");
            continue;
        }
        printf("  files     ");
        for (size_t f = 0; f < st->n_files; f++) printf("%s%s", f ? ", " : "", st->files[f]);
        if (c->weights.index_path) {
            const char *slash = strrchr(c->weights.index_path, '/');
            printf("  (index %s)", slash ? slash + 1 : c->weights.index_path);
        }
        printf("\n  tensors   %s\n", grouped(st->tensors, a, sizeof a));
        printf("  elements  %s\n", grouped(st->elements, a, sizeof a));
        printf("  bytes     %s (%s)\n", grouped(st->bytes, a, sizeof a), human_bytes(st->bytes, b, sizeof b));
        for (int d = 0; d < QD_DTYPE_COUNT; d++) {
            if (!st->dtype_tensors[d]) continue;
            printf("  %-9s %6" PRIu64 " tensors  %s bytes\n", qd_dtype_name((qd_dtype)d), st->dtype_tensors[d],
                   grouped(st->dtype_bytes[d], a, sizeof a));
        }
        if (st->n_meta_keys) {
            printf("  metadata  ");
            for (size_t k = 0; k < st->n_meta_keys; k++) printf("%s%s", k ? ", " : "", st->meta_keys[k]);
            printf("\n");
        }
        if (st->has_quant) print_quantization(st);
    }
    if (r->n_components > 1) {
        printf("\ntotal  %s tensors, %s bytes (%s)\n", grouped(total_tensors, a, sizeof a),
               grouped(total_bytes, b, sizeof b), human_bytes(total_bytes, (char[48]){0}, 48));
    }
}

int qd_cmd_inspect(int argc, char **argv) {
    qd_options opts;
    char **rest;
    int n_rest;
    const int begun = qd_cli_begin("inspect", argc, argv, &opts, &rest, &n_rest);
    if (begun) return begun;
    const char *path = NULL;
    int json = 0;
    for (int i = 0; i < n_rest; i++) {
        if (!strcmp(rest[i], "--json")) json = 1;
        else if (!strcmp(rest[i], "--help") || !strcmp(rest[i], "-h")) {
            inspect_usage(stdout);
            free(rest);
            return 0;
        } else if (rest[i][0] == '-' && rest[i][1]) {
            fprintf(stderr, "qdit inspect: unknown option '%s' (expected --json or a model/quantization flag; see --help)\n",
                    rest[i]);
            free(rest);
            return 2;
        } else if (path) {
            fprintf(stderr, "qdit inspect: one PATH expected, got '%s' and '%s'\n", path, rest[i]);
            free(rest);
            return 2;
        } else path = rest[i];
    }
    free(rest);
    if (path && opts.model_path && strcmp(path, opts.model_path)) {
        fprintf(stderr, "qdit inspect: PATH '%s' and --model-path '%s' disagree; give one\n", path, opts.model_path);
        return 2;
    }
    if (!path) path = opts.model_path;
    if (!path) {
        inspect_usage(stderr);
        return 2;
    }
    qd_repo *r;
    qd_component_stats *stats;
    if (qd_inspect_run(path, &opts, &r, &stats)) {
        fprintf(stderr, "qdit inspect: %s\n", qd_last_error());
        return 1;
    }
    int rc = 0;
    if (json) {
        json_t *doc;
        if (qd_inspect_build(r, stats, &doc)) {
            fprintf(stderr, "qdit inspect: %s\n", qd_last_error());
            rc = 1;
        } else {
            json_dumpf(doc, stdout, JSON_INDENT(2));
            fputc('\n', stdout);
            json_decref(doc);
        }
    } else {
        print_text(r, stats);
    }
    for (size_t i = 0; i < r->n_components; i++) qd_component_stats_free(&stats[i]);
    free(stats);
    qd_repo_close(r);
    return rc;
}
