/* bench_inspect — does `qdit inspect` cost only the headers of a checkpoint?
 *
 * The claim under test (load/inspect.h, io/safetensors.h): opening a sharded checkpoint reads and
 * validates its headers and maps the files without touching tensor data, so the time of
 * qd_inspect_json() should not grow with the size of the tensors. To test it, this tool builds one
 * synthetic diffusers-style component per requested total size — same tensor count, same names,
 * same shard count; only the tensor shapes differ — and times qd_inspect_json() on each, side by
 * side in one run (DESIGN.md, "Performance method").
 *
 * Each size is timed twice: warm (files in the page cache, as right after a download) and after
 * posix_fadvise(POSIX_FADV_DONTNEED) on every file of the component, checked with mincore(), which
 * is the state of a checkpoint that has not been read since boot. The shards hold real
 * pseudo-random bytes written with the library's own safetensors writer, so a size on this table is
 * that many bytes on disk, not a sparse file whose untouched pages cost nothing to "read".
 *
 * Usage: bench_inspect DIR [--sizes-mb 64,1024,4096] [--tensors 2000] [--shards 4] [--repeat 20]
 *                          [--keep]
 * Results are recorded in docs/benchmarks.md. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "qdit.h"

#define MAX_SIZES 16
/* Columns of every tensor; the row counts vary so that the totals land exactly on the target. */
#define TENSOR_COLS 256
#define SHARD_NAME_MAX 96

typedef struct {
    const char *dir;
    uint64_t sizes_mb[MAX_SIZES];
    size_t n_sizes;
    size_t tensors;
    size_t shards;
    size_t repeat;
    bool keep;
} options;

typedef struct {
    uint64_t mb;
    uint64_t file_bytes, header_bytes;
    double gen_s;
    double warm_median, warm_min, cold_median, cold_min;
    double resident_after_evict; /* fraction of the component's pages still cached, worst repeat */
    bool evict_checked;
    uint64_t touched_kib;        /* pages cached after one cold inspect, over all files */
    bool io_ok;
    uint64_t read_bytes, rchar; /* per cold inspect call, averaged */
} size_result;

/* ---- small helpers ---- */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void median_min(double *v, size_t n, double *median, double *min) {
    qsort(v, n, sizeof *v, compare_double);
    *min = v[0];
    *median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* xorshift64*: cheap, and its bytes do not compress or dedupe, so the files are genuinely big. */
static void fill_random(uint64_t *state, void *buf, size_t n) {
    uint64_t x = *state;
    uint8_t *p = buf;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t r = x * 0x2545F4914F6CDD1Dull;
        memcpy(p + i, &r, 8);
    }
    *state = x;
}

/* /proc/self/io: rchar counts every byte read() returned, read_bytes only what came from the block
 * device (page-cache hits are free there). Page faults on a mapping show in read_bytes, not rchar. */
static bool read_proc_io(uint64_t *rchar, uint64_t *read_bytes) {
    FILE *f = fopen("/proc/self/io", "r");
    if (!f) return false;
    char key[64];
    unsigned long long v;
    int found = 0;
    while (fscanf(f, "%63[^:]: %llu\n", key, &v) == 2) {
        if (!strcmp(key, "rchar")) *rchar = v, found++;
        if (!strcmp(key, "read_bytes")) *read_bytes = v, found++;
    }
    fclose(f);
    return found == 2;
}

/* ---- the synthetic component ---- */

/* Diffusers-like names; identical for every size. */
static void tensor_name(char *buf, size_t n, size_t i) {
    static const char *const suffix[] = {"attn.to_q.weight",      "attn.to_k.weight",
                                         "attn.to_v.weight",      "attn.to_out.0.weight",
                                         "ff.net.0.proj.weight",  "ff.net.2.weight",
                                         "norm1.linear.weight",   "ff_context.net.2.weight"};
    snprintf(buf, n, "transformer_blocks.%zu.%s", i / 8, suffix[i % 8]);
}

static void shard_name(char *buf, size_t n, size_t k, size_t shards) {
    snprintf(buf, n, "diffusion_pytorch_model-%05zu-of-%05zu.safetensors", k + 1, shards);
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Rows of tensor i: the total row count spread as evenly as it goes. */
static uint64_t tensor_rows(uint64_t total_rows, size_t n, size_t i) {
    return total_rows / n + (i < total_rows % n ? 1 : 0);
}

static int write_config(const char *dir, size_t tensors) {
    char *path = join(dir, "config.json");
    json_t *cfg = json_pack("{s:s, s:s, s:I, s:i}", "_class_name", "FluxTransformer2DModel",
                            "_diffusers_version", "0.32.0", "num_layers", (json_int_t)((tensors + 7) / 8),
                            "in_channels", 64);
    int rc = path && cfg && json_dump_file(cfg, path, JSON_INDENT(2)) == 0 ? 0 : -1;
    json_decref(cfg);
    free(path);
    return rc;
}

/* One shard: tensors [first, last) with random BF16 bytes, through the library's writer. */
static int write_shard(const char *path, size_t first, size_t last, uint64_t total_rows, size_t n_tensors,
                       uint8_t *buf, uint64_t *rng) {
    qd_st_writer *w;
    if (qd_st_writer_create(path, &w)) return -1;
    char name[128];
    qd_status s = qd_st_writer_meta(w, "format", "pt");
    for (size_t i = first; !s && i < last; i++) {
        tensor_name(name, sizeof name, i);
        int64_t shape[2] = {(int64_t)tensor_rows(total_rows, n_tensors, i), TENSOR_COLS};
        s = qd_st_writer_add(w, name, QD_DTYPE_BF16, 2, shape);
    }
    for (size_t i = first; !s && i < last; i++) {
        tensor_name(name, sizeof name, i);
        uint64_t bytes = tensor_rows(total_rows, n_tensors, i) * TENSOR_COLS * 2;
        fill_random(rng, buf, (size_t)bytes);
        s = qd_st_writer_put(w, name, buf, bytes);
    }
    if (s) {
        qd_st_writer_abort(w);
        return -1;
    }
    return qd_st_writer_finish(w) ? -1 : 0;
}

static int write_index(const char *dir, const options *o, uint64_t data_bytes) {
    json_t *map = json_object();
    char name[128], shard[SHARD_NAME_MAX];
    for (size_t k = 0; k < o->shards; k++) {
        shard_name(shard, sizeof shard, k, o->shards);
        for (size_t i = k * o->tensors / o->shards; i < (k + 1) * o->tensors / o->shards; i++) {
            tensor_name(name, sizeof name, i);
            json_object_set_new(map, name, json_string(shard));
        }
    }
    json_t *root = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)data_bytes, "weight_map", map);
    char *path = join(dir, "diffusion_pytorch_model.safetensors.index.json");
    int rc = root && path && json_dump_file(root, path, JSON_INDENT(2)) == 0 ? 0 : -1;
    json_decref(root);
    free(path);
    return rc;
}

/* Every file of the component, config and index included: a cold run means nothing cached.
 * Returns NULL when out of memory; *n is shards + 2. */
static char **component_files(const char *dir, const options *o, size_t *n) {
    char **paths = calloc(o->shards + 2, sizeof *paths);
    if (!paths) return NULL;
    char shard[SHARD_NAME_MAX];
    *n = 0;
    for (size_t k = 0; k < o->shards; k++) {
        shard_name(shard, sizeof shard, k, o->shards);
        paths[(*n)++] = join(dir, shard);
    }
    paths[(*n)++] = join(dir, "diffusion_pytorch_model.safetensors.index.json");
    paths[(*n)++] = join(dir, "config.json");
    for (size_t i = 0; i < *n; i++) {
        if (!paths[i]) {
            for (size_t j = 0; j < *n; j++) free(paths[j]);
            free(paths);
            return NULL;
        }
    }
    return paths;
}

static void free_paths(char **paths, size_t n) {
    for (size_t i = 0; paths && i < n; i++) free(paths[i]);
    free(paths);
}

static int build_component(const char *dir, const options *o, size_result *r) {
    uint64_t data_bytes = r->mb << 20;
    uint64_t total_rows = data_bytes / (TENSOR_COLS * 2);
    if (total_rows < o->tensors) {
        fprintf(stderr, "bench_inspect: %llu MB is too small for %zu tensors of %d columns\n",
                (unsigned long long)r->mb, o->tensors, TENSOR_COLS);
        return -1;
    }
    if (mkdir_p(dir) != 0 || write_config(dir, o->tensors) != 0) {
        fprintf(stderr, "bench_inspect: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    uint64_t max_bytes = tensor_rows(total_rows, o->tensors, 0) * TENSOR_COLS * 2;
    uint8_t *buf = malloc((size_t)max_bytes);
    if (!buf) return -1;
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ r->mb;
    double t0 = now_ms();
    char shard[SHARD_NAME_MAX];
    int rc = 0;
    for (size_t k = 0; k < o->shards && !rc; k++) {
        shard_name(shard, sizeof shard, k, o->shards);
        char *path = join(dir, shard);
        rc = path ? write_shard(path, k * o->tensors / o->shards, (k + 1) * o->tensors / o->shards, total_rows,
                                o->tensors, buf, &rng)
                  : -1;
        if (rc) fprintf(stderr, "bench_inspect: writing %s: %s\n", path ? path : shard, qd_last_error());
        free(path);
    }
    free(buf);
    if (!rc && write_index(dir, o, data_bytes) != 0) {
        fprintf(stderr, "bench_inspect: cannot write the index in %s\n", dir);
        rc = -1;
    }
    if (rc) return rc;
    /* Write back now: the kernel cannot drop dirty pages, so an eviction right after writing would
     * silently do nothing. Sizes of what ended up on disk go into the table. */
    size_t n;
    char **paths = component_files(dir, o, &n);
    if (!paths) return -1;
    for (size_t i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY);
        struct stat st;
        if (fd >= 0 && fdatasync(fd) == 0 && fstat(fd, &st) == 0) r->file_bytes += (uint64_t)st.st_size;
        else rc = -1;
        if (fd >= 0 && i < o->shards) {
            uint8_t len[8];
            uint64_t hl = 0;
            if (pread(fd, len, 8, 0) == 8)
                for (int b = 7; b >= 0; b--) hl = (hl << 8) | len[b];
            r->header_bytes += hl;
        }
        if (fd >= 0) close(fd);
    }
    free_paths(paths, n);
    r->gen_s = (now_ms() - t0) / 1e3;
    return rc;
}

static void remove_component(const char *dir, const options *o) {
    size_t n;
    char **paths = component_files(dir, o, &n);
    for (size_t i = 0; paths && i < n; i++) unlink(paths[i]);
    free_paths(paths, n);
    rmdir(dir);
}

/* ---- page cache ---- */

/* Cached pages of a file, by mincore() on a fresh mapping (mapping reads nothing). */
static bool cached_pages(const char *path, uint64_t *cached, uint64_t *total) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) close(fd);
        return false;
    }
    long page = sysconf(_SC_PAGESIZE);
    uint64_t pages = ((uint64_t)st.st_size + (uint64_t)page - 1) / (uint64_t)page;
    *total += pages;
    if (pages == 0) {
        close(fd);
        return true;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    unsigned char *vec = malloc((size_t)pages);
    bool ok = map != MAP_FAILED && vec && mincore(map, (size_t)st.st_size, vec) == 0;
    for (uint64_t i = 0; ok && i < pages; i++) *cached += vec[i] & 1;
    free(vec);
    if (map != MAP_FAILED) munmap(map, (size_t)st.st_size);
    return ok;
}

static void evict(char **paths, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY);
        if (fd < 0) continue;
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* Cached fraction over all files; negative when mincore could not tell. */
static double cached_fraction(char **paths, size_t n, uint64_t *cached_out) {
    uint64_t cached = 0, total = 0;
    for (size_t i = 0; i < n; i++)
        if (!cached_pages(paths[i], &cached, &total)) return -1;
    if (cached_out) *cached_out = cached;
    return total ? (double)cached / (double)total : 0;
}

/* ---- timing ---- */

/* One call of what `qdit inspect DIR` does; the first call's document is checked so the table
 * measures a complete, successful inspect of the checkpoint we meant. */
static double inspect_once(const char *dir, const options *o, uint64_t data_bytes, bool check) {
    char *doc = NULL;
    double t0 = now_ms();
    qd_status s = qd_inspect_json(dir, &doc);
    double ms = now_ms() - t0;
    if (s) {
        fprintf(stderr, "bench_inspect: inspect %s: %s\n", dir, qd_last_error());
        return -1;
    }
    if (check) {
        json_t *root = json_loads(doc, 0, NULL);
        json_t *c = json_array_get(json_object_get(root, "components"), 0);
        json_int_t tensors = json_integer_value(json_object_get(c, "tensors"));
        json_int_t bytes = json_integer_value(json_object_get(c, "bytes"));
        size_t files = json_array_size(json_object_get(c, "files"));
        if (tensors != (json_int_t)o->tensors || bytes != (json_int_t)data_bytes || files != o->shards) {
            fprintf(stderr, "bench_inspect: inspect %s reported %lld tensors, %lld bytes, %zu files\n", dir,
                    (long long)tensors, (long long)bytes, files);
            ms = -1;
        }
        json_decref(root);
    }
    free(doc);
    return ms;
}

static int measure(const char *dir, const options *o, size_result *r) {
    double *t = calloc(o->repeat, sizeof *t);
    size_t n = 0;
    char **paths = component_files(dir, o, &n);
    int rc = t && paths ? 0 : -1;

    /* warm-up, and the correctness check */
    if (!rc && inspect_once(dir, o, r->mb << 20, true) < 0) rc = -1;
    for (size_t i = 0; !rc && i < o->repeat; i++)
        if ((t[i] = inspect_once(dir, o, r->mb << 20, false)) < 0) rc = -1;
    if (rc) {
        free_paths(paths, n);
        free(t);
        return rc;
    }
    median_min(t, o->repeat, &r->warm_median, &r->warm_min);

    r->evict_checked = true;
    r->resident_after_evict = 0;
    r->io_ok = true;
    uint64_t rchar_sum = 0, read_sum = 0;
    for (size_t i = 0; !rc && i < o->repeat; i++) {
        evict(paths, n);
        double left = cached_fraction(paths, n, NULL);
        if (left < 0) r->evict_checked = false;
        else if (left > r->resident_after_evict) r->resident_after_evict = left;
        uint64_t rc0 = 0, rb0 = 0, rc1 = 0, rb1 = 0;
        bool io = read_proc_io(&rc0, &rb0);
        t[i] = inspect_once(dir, o, r->mb << 20, false);
        if (t[i] < 0) rc = -1;
        io = io && read_proc_io(&rc1, &rb1);
        r->io_ok = r->io_ok && io;
        rchar_sum += rc1 - rc0;
        read_sum += rb1 - rb0;
        if (i == 0) {
            uint64_t cached = 0;
            cached_fraction(paths, n, &cached);
            r->touched_kib = cached * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
        }
    }
    median_min(t, o->repeat, &r->cold_median, &r->cold_min);
    /* rchar includes reading /proc/self/io itself (a few hundred bytes); negligible here. */
    r->rchar = rchar_sum / o->repeat;
    r->read_bytes = read_sum / o->repeat;
    free_paths(paths, n);
    free(t);
    return rc;
}

/* ---- output ---- */

static void print_size(char *buf, size_t n, uint64_t mb) {
    if (mb >= 1024 && mb % 1024 == 0) snprintf(buf, n, "%llu GiB", (unsigned long long)(mb / 1024));
    else snprintf(buf, n, "%llu MiB", (unsigned long long)mb);
}

static void print_table(const options *o, const size_result *r, size_t n) {
    printf("\nwarm = files in the page cache; cold = after POSIX_FADV_DONTNEED on every file of the component\n");
    printf("%zu repeats per cell; ratio = median / median of the smallest size\n\n", o->repeat);
    printf("| tensor data | on disk | files | tensors | header KiB | warm median ms | warm min ms | warm ratio "
           "| cold median ms | cold min ms | cold ratio | cached after evict | cached after cold inspect "
           "| read_bytes/call | rchar/call |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < n; i++) {
        char size[32], evicted[32], io_rb[32], io_rc[32];
        print_size(size, sizeof size, r[i].mb);
        if (r[i].evict_checked) snprintf(evicted, sizeof evicted, "%.3f%%", 100 * r[i].resident_after_evict);
        else snprintf(evicted, sizeof evicted, "unknown");
        if (r[i].io_ok) {
            snprintf(io_rb, sizeof io_rb, "%.1f KiB", (double)r[i].read_bytes / 1024);
            snprintf(io_rc, sizeof io_rc, "%.1f KiB", (double)r[i].rchar / 1024);
        } else {
            snprintf(io_rb, sizeof io_rb, "n/a");
            snprintf(io_rc, sizeof io_rc, "n/a");
        }
        printf("| %s | %.2f GB | %zu | %zu | %.1f | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f | %s | %llu KiB | %s | %s |\n",
               size, (double)r[i].file_bytes / 1e9, o->shards + 2, o->tensors, (double)r[i].header_bytes / 1024,
               r[i].warm_median, r[i].warm_min, r[i].warm_median / r[0].warm_median, r[i].cold_median,
               r[i].cold_min, r[i].cold_median / r[0].cold_median, evicted, (unsigned long long)r[i].touched_kib,
               io_rb, io_rc);
    }
}

/* ---- arguments ---- */

static int usage(void) {
    fprintf(stderr, "usage: bench_inspect DIR [--sizes-mb 64,1024,4096] [--tensors 2000] [--shards 4] "
                    "[--repeat 20] [--keep]\n");
    return 2;
}

static bool parse_count(const char *s, uint64_t max, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > max || s[0] == '-') return false;
    *out = v;
    return true;
}

static bool parse_sizes(const char *s, options *o) {
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf) return false;
    o->n_sizes = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (o->n_sizes == MAX_SIZES || !parse_count(tok, 1u << 20, &o->sizes_mb[o->n_sizes])) return false;
        o->n_sizes++;
    }
    return o->n_sizes > 0;
}

int main(int argc, char **argv) {
    options o = {.sizes_mb = {64, 1024, 4096}, .n_sizes = 3, .tensors = 2000, .shards = 4, .repeat = 20};
    for (int i = 1; i < argc; i++) {
        uint64_t v;
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "--keep")) o.keep = true;
        else if (!strcmp(a, "--sizes-mb") && has_value) {
            if (!parse_sizes(argv[++i], &o)) return usage();
        } else if (!strcmp(a, "--tensors") && has_value && parse_count(argv[i + 1], 1u << 20, &v)) {
            o.tensors = (size_t)v;
            i++;
        } else if (!strcmp(a, "--shards") && has_value && parse_count(argv[i + 1], 4096, &v)) {
            o.shards = (size_t)v;
            i++;
        } else if (!strcmp(a, "--repeat") && has_value && parse_count(argv[i + 1], 100000, &v)) {
            o.repeat = (size_t)v;
            i++;
        } else if (a[0] != '-' && !o.dir) o.dir = a;
        else return usage();
    }
    if (!o.dir || o.shards > o.tensors) return usage();

    struct stat st;
    bool made_dir = stat(o.dir, &st) != 0;
    size_result results[MAX_SIZES];
    memset(results, 0, sizeof results);
    int rc = 0;
    for (size_t i = 0; i < o.n_sizes && !rc; i++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/size-%llu", o.dir, (unsigned long long)o.sizes_mb[i]);
        results[i].mb = o.sizes_mb[i];
        if (build_component(dir, &o, &results[i]) != 0) {
            rc = 1;
            break;
        }
        printf("built %s: %.2f GB in %zu shards in %.1f s (%.0f MB/s, including write-back)\n", dir,
               (double)results[i].file_bytes / 1e9, o.shards, results[i].gen_s,
               (double)results[i].file_bytes / 1e6 / results[i].gen_s);
        fflush(stdout);
        if (measure(dir, &o, &results[i]) != 0) rc = 1;
    }
    if (!rc) print_table(&o, results, o.n_sizes);
    if (!o.keep) {
        for (size_t i = 0; i < o.n_sizes; i++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/size-%llu", o.dir, (unsigned long long)o.sizes_mb[i]);
            remove_component(dir, &o);
        }
        if (made_dir) rmdir(o.dir);
    }
    return rc;
}
