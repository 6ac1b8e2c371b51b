/* qdit inspect PATH [--json] — what is inside a pipeline, component folder, safetensors file or
 * cached hub repo (docs/cli.md). Reads headers only. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "load/inspect.h"
#include "qdit.h"

static void inspect_usage(FILE *to) {
    fprintf(to,
            "usage: qdit inspect PATH [--json]\n"
            "\n"
            "PATH is a diffusers pipeline folder (model_index.json), a component folder (config.json +\n"
            "weights), a .safetensors file, a *.safetensors.index.json weight map, any folder of those, or\n"
            "a Hugging Face repo id (org/name) already in the local cache ($HF_HOME/hub).\n"
            "\n"
            "  --json   print the machine-readable report (schema in docs/cli.md)\n");
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
        if (c->weights.n_files == 0) {
            printf("  (no weights)\n");
            continue;
        }
        printf("  files     ");
        for (size_t f = 0; f < c->weights.n_files; f++) {
            const char *p = c->weights.files[f];
            const char *slash = strrchr(p, '/');
            printf("%s%s", f ? ", " : "", slash ? slash + 1 : p);
        }
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
    }
    if (r->n_components > 1) {
        printf("\ntotal  %s tensors, %s bytes (%s)\n", grouped(total_tensors, a, sizeof a),
               grouped(total_bytes, b, sizeof b), human_bytes(total_bytes, (char[48]){0}, 48));
    }
}

int qd_cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            inspect_usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "qdit inspect: unknown option '%s' (expected --json)\n", argv[i]);
            return 2;
        } else if (path) {
            fprintf(stderr, "qdit inspect: one PATH expected, got '%s' and '%s'\n", path, argv[i]);
            return 2;
        } else path = argv[i];
    }
    if (!path) {
        inspect_usage(stderr);
        return 2;
    }
    qd_repo *r;
    qd_status s = qd_repo_open(path, &r);
    if (s) {
        fprintf(stderr, "qdit inspect: %s\n", qd_last_error());
        return 1;
    }
    qd_component_stats *stats = calloc(r->n_components + 1, sizeof *stats);
    for (size_t i = 0; !s && stats && i < r->n_components; i++) s = qd_component_stats_compute(&r->components[i], &stats[i]);
    int rc = 0;
    if (!stats) {
        fprintf(stderr, "qdit inspect: out of memory\n");
        rc = 1;
    } else if (s) {
        fprintf(stderr, "qdit inspect: %s\n", qd_last_error());
        rc = 1;
    } else if (json) {
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
    for (size_t i = 0; stats && i < r->n_components; i++) qd_component_stats_free(&stats[i]);
    free(stats);
    qd_repo_close(r);
    return rc;
}
