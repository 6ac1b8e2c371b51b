/* Random module weights in memory (see random_weights.h). */
#include "models/random_weights.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/mem.h"
#include "core/status.h"
#include "io/ckpt.h"
#include "quant/plan.h"
#include "core/threads.h"

static uint64_t hash_name(uint64_t seed, const char *name) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 1099511628211ull;
    return h;
}

static uint64_t mix(uint64_t x) { /* splitmix64 finaliser */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* U(−1, 1) stream of row r */
static void fill_row(uint64_t h, int64_t r, float a, int64_t n, uint16_t *bf16, float *f32) {
    uint64_t s = mix(h + (uint64_t)r * 0x632be59bd9b4e019ull) | 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        float u = a * ((float)(s >> 40) * 0x1.0p-23f - 1.0f);
        if (bf16) bf16[i] = qd_f32_to_bf16(u);
        else f32[i] = u;
    }
}

void qd_random_param(uint64_t seed, const char *name, int64_t n, float *out) {
    bool norm = strstr(name, "norm") != NULL;
    fill_row(hash_name(seed, name), 0, norm ? 0.05f : 0.02f, n, NULL, out);
    if (norm)
        for (int64_t i = 0; i < n; i++) out[i] += 1.0f;
}

void qd_random_table_bf16(uint64_t seed, const char *name, int64_t rows, int64_t cols, uint16_t *out) {
    uint64_t h = hash_name(seed, name);
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(rows * cols, QD_GRAIN_ELEMS))
    for (int64_t r = 0; r < rows; r++) fill_row(h, r, 0.02f, cols, out + r * cols, NULL);
}

bool qd_random_has(const char *name, bool nunchaku_layout) {
    if (nunchaku_layout) return true;
    static const char *const nunchaku[] = {".qweight", "qkv_proj", "to_qkv", "mlp_fc", "out_proj", "feed_forward.net."};
    for (size_t i = 0; i < sizeof nunchaku / sizeof *nunchaku; i++)
        if (strstr(name, nunchaku[i])) return false;
    return true;
}

static char *disk_dir; /* qd_random_weights_on_disk */

qd_status qd_random_weights_on_disk(const char *dir) {
    free(disk_dir);
    disk_dir = NULL;
    if (!dir) return QD_OK;
    if (access(dir, W_OK) != 0) return qd_fail(QD_EIO, "random weights: cannot write to '%s'", dir);
    if (!(disk_dir = strdup(dir))) return qd_fail(QD_ENOMEM, "random weights: out of memory");
    return QD_OK;
}

/* len bytes for an image: heap memory, or a shared mapping of a fresh unlinked file in disk_dir */
static uint8_t *image_alloc(size_t len) {
    if (!disk_dir) return qd_alloc_big(len);
    char path[4096];
    snprintf(path, sizeof path, "%s/qdit-random-XXXXXX", disk_dir);
    const int fd = mkstemp(path);
    if (fd < 0) return NULL;
    unlink(path);
    void *p = ftruncate(fd, (off_t)len) == 0 ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static void image_free(uint8_t *img, size_t len) {
    if (!img) return;
    if (disk_dir) munmap(img, len);
    else free(img);
}

/* A safetensors image of n tensors (dtype names as safetensors spells them), their data contiguous in the order
 * given (no holes, as the format requires: order them so that each is aligned to its element size); data[i] points
 * at tensor i's bytes. */
typedef struct {
    const char *name, *dtype;
    int rank;
    int64_t shape[2];
    size_t bytes;
} image_tensor;

static uint8_t *st_image(const image_tensor *t, int n, size_t *len, uint8_t **data) {
    char header[2048];
    size_t hn = 0, off = 0;
    hn += (size_t)snprintf(header + hn, sizeof header - hn, "{");
    for (int i = 0; i < n && hn < sizeof header; i++) {
        char shape[64] = "";
        if (t[i].rank == 1) snprintf(shape, sizeof shape, "%lld", (long long)t[i].shape[0]);
        if (t[i].rank == 2) snprintf(shape, sizeof shape, "%lld,%lld", (long long)t[i].shape[0], (long long)t[i].shape[1]);
        hn += (size_t)snprintf(header + hn, sizeof header - hn, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}",
                               i ? "," : "", t[i].name, t[i].dtype, shape, off, off + t[i].bytes);
        off += t[i].bytes;
    }
    if (hn + 1 >= sizeof header - 8) return NULL;
    hn += (size_t)snprintf(header + hn, sizeof header - hn, "}");
    const size_t hl = (hn + 7) / 8 * 8; /* padded with spaces so the data is 8-byte aligned */
    *len = 8 + hl + off;
    uint8_t *img = image_alloc(*len);
    if (!img) return NULL;
    for (int i = 0; i < 8; i++) img[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(img + 8, header, hn);
    memset(img + 8 + hn, ' ', hl - hn);
    off = 0;
    for (int i = 0; i < n; i++) {
        data[i] = img + 8 + hl + off;
        off += t[i].bytes;
    }
    return img;
}

/* A one-tensor BF16 safetensors image; its data section starts at *data. */
static uint8_t *bf16_image(const char *tensor, int rank, const int64_t *shape, size_t *len, uint16_t **data) {
    const int64_t elements = rank == 2 ? shape[0] * shape[1] : shape[0];
    const image_tensor t = {tensor, "BF16", rank, {shape[0], rank == 2 ? shape[1] : 0}, (size_t)(2 * elements)};
    uint8_t *d = NULL, *img = st_image(&t, 1, len, &d);
    *data = (uint16_t *)d;
    return img;
}

/* hand `img` to the first view of l that points into it (it then frees it with the layer) */
static bool give_image(qd_linear *l, uint8_t *img, size_t len) {
    qd_view *views[] = {&l->weight, &l->scale, &l->scale2, &l->input_scale, &l->input_offset,
                        &l->bias,   &l->smooth, &l->lora_down, &l->lora_up, &l->zeros};
    bool given = false;
    for (size_t i = 0; i < sizeof views / sizeof *views; i++) {
        const uint8_t *d = views[i]->data;
        if (d && d >= img && d < img + len) {
            if (!given && !views[i]->owned) {
                views[i]->owned = img;
                views[i]->owned_map = disk_dir ? len : 0;
                given = true;
            } else if (!given) {
                return false; /* cannot happen: a view into our image that already owns something else */
            }
        }
    }
    return given;
}

/* --enable-svdquant on random weights (qdit bench, bench_dit_step --quant svdq-int4): the layer in the scheme a Nunchaku SVDQuant FLUX file gives it
 * (formats.md §5.7), with synthetic values — a speed benchmark's stand-in for `svdq-int4_r32-…` (an SVD of every
 * drawn weight would take minutes): block projections and MLPs SVDQuant int4 (group 64, BF16 scales, smoothing, a
 * rank-R BF16 low-rank branch), the blocks' modulation linears AWQ W4A16 (group 64), the rest BF16 (not taken here:
 * returns false); each with a BF16 bias, as FLUX's layers have. Codes are uniform; scales, smoothing and factors have
 * the magnitudes such files have. */
static bool svdq_synthetic(const qd_quant_config *q, uint64_t seed, const char *name, int64_t in, int64_t out, qd_linear *l, qd_status *st) {
    const bool block = strstr(name, "transformer_blocks.") != NULL || strstr(name, "layers.") != NULL;
    if (!q || q->method != QD_QM_SVDQUANT || !block || in % 128 || out % 128) return false;
    const bool modulation = strstr(name, "norm1") || strstr(name, "norm.linear") || strstr(name, "adaLN");
    const int64_t g = 64, r = q->svdq_rank > 0 ? q->svdq_rank : 32, ng = out * (in / g);
    uint64_t h = hash_name(seed, name) | 1;
    uint8_t *codes = malloc((size_t)(out * in / 2));
    uint16_t *sc = malloc(2 * (size_t)ng), *z = modulation ? malloc(2 * (size_t)ng) : NULL;
    uint16_t *sm = modulation ? NULL : malloc(2 * (size_t)in), *dn = modulation ? NULL : malloc(2 * (size_t)(r * in));
    uint16_t *up = modulation ? NULL : malloc(2 * (size_t)(out * r)), *bias = malloc(2 * (size_t)out);
    if (!codes || !sc || !bias || (modulation ? !z : (!sm || !dn || !up))) {
        free(codes), free(sc), free(z), free(sm), free(dn), free(up), free(bias);
        *st = qd_fail(QD_ENOMEM, "random weights: cannot allocate layer '%s'", name);
        return true;
    }
    for (int64_t i = 0; i < out * in / 2; i++) {
        h ^= h << 13, h ^= h >> 7, h ^= h << 17;
        codes[i] = (uint8_t)h;
    }
    const float step = sqrtf(3.0f / (float)in) / 7.0f; /* int4 steps of a U(±√(3/in)) weight */
    fill_row(hash_name(seed, "svdq.scales"), 0, 0.0f, ng, sc, NULL);
    for (int64_t i = 0; i < ng; i++) sc[i] = qd_f32_to_bf16(step);
    l->name = strdup(name);
    l->out_features = out, l->in_features = in, l->alpha = 1.0f;
    l->block_k = (int)g;
    l->weight = (qd_view){.dtype = QD_DTYPE_U8, .rank = 2, .shape = {out, in / 2}, .data = codes, .owned = codes};
    l->scale = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {out, in / g}, .data = sc, .owned = sc};
    fill_row(hash_name(seed ^ 3, name), 0, 0.01f, out, bias, NULL);
    l->bias = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 1, .shape = {out}, .data = bias, .owned = bias};
    if (modulation) {
        for (int64_t i = 0; i < ng; i++) z[i] = qd_f32_to_bf16(-8.0f * step);
        l->scheme = QD_SCHEME_AWQ_W4A16;
        snprintf(l->scheme_name, sizeof l->scheme_name, "awq_w4a16");
        l->act = QD_ACT_NONE;
        l->zeros = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {out, in / g}, .data = z, .owned = z};
    } else {
        for (int64_t i = 0; i < in; i++) sm[i] = qd_f32_to_bf16(1.0f);
        fill_row(hash_name(seed ^ 1, name), 0, 0.02f, r * in, dn, NULL);
        fill_row(hash_name(seed ^ 2, name), 0, 0.02f, out * r, up, NULL);
        l->scheme = QD_SCHEME_SVDQ_INT4;
        snprintf(l->scheme_name, sizeof l->scheme_name, "svdq_int4");
        l->act = QD_ACT_DYNAMIC_GROUP;
        l->act_group = (int)g;
        l->smooth = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 1, .shape = {in}, .data = sm, .owned = sm};
        l->lora_down = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {r, in}, .data = dn, .owned = dn};
        l->lora_up = (qd_view){.dtype = QD_DTYPE_BF16, .rank = 2, .shape = {out, r}, .data = up, .owned = up};
    }
    *st = l->name ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate");
    return true;
}

/* The activations' static scale of a synthetic ModelOpt FP8 layer: inputs up to ±4 keep their range (ModelOpt
   calibrates amax/448 per layer; random weights have no calibration data, and the kernels' speed does not depend
   on the value) */
#define MODELOPT_SYNTHETIC_INPUT_AMAX 4.0f

/* --quantization modelopt_fp8 (or modelopt) on random weights (qdit bench, bench_dit_step --quant modelopt_fp8): the
 * tensors a ModelOpt FP8 export stores for the layer (quant-sglang.md §4.7: E4M3 weight, per-tensor weight_scale
 * and input_scale, BF16 bias), bound through the checkpoint path — the static per-tensor activation scheme, which
 * online fp8 never makes. The weight is the BF16 draw of the unquantized layer, quantized per tensor by the draw's
 * bound (a/448); the input scale is synthetic. */
static qd_status modelopt_fp8_synthetic(const qd_quant_config *q, uint64_t seed, const char *name, int64_t in, int64_t out, qd_linear *l) {
    char wn[300], sn[300], xn[300], bn[300];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(sn, sizeof sn, "%s.weight_scale", name);
    snprintf(xn, sizeof xn, "%s.input_scale", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    const image_tensor t[4] = {{sn, "F32", 0, {0, 0}, 4},
                               {xn, "F32", 0, {0, 0}, 4},
                               {bn, "BF16", 1, {out, 0}, (size_t)(2 * out)},
                               {wn, "F8_E4M3", 2, {out, in}, (size_t)(out * in)}};
    size_t len = 0;
    uint8_t *data[4];
    uint8_t *img = st_image(t, 4, &len, data);
    if (!img) return qd_fail(QD_ENOMEM, "random weights: cannot allocate layer '%s' (%lld x %lld)", name, (long long)out, (long long)in);
    const float a = sqrtf(3.0f / (float)in), ws = a / 448.0f, xs = MODELOPT_SYNTHETIC_INPUT_AMAX / 448.0f;
    memcpy(data[0], &ws, 4);
    memcpy(data[1], &xs, 4);
    const uint64_t h = hash_name(seed, wn);
    bool oom = false;
#pragma omp parallel for schedule(static) reduction(|| : oom) num_threads(qd_threads_for(out * in, QD_GRAIN_ELEMS))
    for (int64_t r = 0; r < out; r++) {
        uint16_t *row = malloc(sizeof(uint16_t) * (size_t)in);
        if (!row) {
            oom = true;
            continue;
        }
        fill_row(h, r, a, in, row, NULL); /* the BF16 draw of the unquantized layer */
        for (int64_t i = 0; i < in; i++) data[3][r * in + i] = qd_f32_to_e4m3(qd_bf16_to_f32(row[i]) / ws);
        free(row);
    }
    fill_row(hash_name(seed, bn), 0, 0.01f, out, (uint16_t *)data[2], NULL);
    qd_st_file *file = NULL;
    qd_ckpt *ck = NULL;
    qd_status s = oom ? qd_fail(QD_ENOMEM, "random weights: cannot allocate a row of layer '%s'", name) : qd_st_open_memory(wn, img, len, &file);
    if (!s) {
        s = qd_ckpt_adopt_files(&file, 1, &ck);
        file = NULL;
    }
    const char *shards[1] = {name};
    if (!s) s = qd_linear_bind(q, ck, name, shards, 1, l);
    qd_ckpt_close(ck);
    qd_st_close(file);
    /* the scales and the bias get bytes of their own and the weight keeps the image: a backend that releases the
       stored weight after its upload (qd_linear_release_stored) frees the image, and the others must stay valid */
    if (!s) s = qd_view_own(&l->scale);
    if (!s) s = qd_view_own(&l->input_scale);
    if (!s) s = qd_view_own(&l->bias);
    if (!s && give_image(l, img, len)) img = NULL;
    image_free(img, len);
    if (s) qd_linear_free(l);
    return s;
}

qd_status qd_random_quant_config(const char *method, qd_quant_config *q) {
    qd_status s = qd_quant_method_parse(method, &q->method);
    if (s) return s;
    if (q->method == QD_QM_MODELOPT || q->method == QD_QM_MODELOPT_FP8) {
        q->online = false;
        q->fp8_static_activation = true;
        snprintf(q->source, sizeof q->source,
                 "--quantization %s on random weights (a ModelOpt FP8 export's tensors: E4M3 weights, per-tensor weight_scale and "
                 "input_scale; synthetic values)",
                 method);
        return QD_OK;
    }
    if (q->method == QD_QM_MODELOPT_FP4 || q->method == QD_QM_MODELSLIM) {
        return qd_fail(QD_EINVAL, "--quantization %s on random weights: it reads a checkpoint quantized that way, which random weights are not (%s)",
                       method, q->method == QD_QM_MODELOPT_FP4 ? "--quantization nvfp4 quantizes the draw into the same NVFP4 scheme at load"
                                                               : "benchmark an msModelSlim export's folder instead");
    }
    q->online = true;
    snprintf(q->source, sizeof q->source, "--quantization %s on random weights (online)", method);
    return QD_OK;
}

qd_status qd_random_quant_ignore(qd_quant_config *q, const char *const *patterns, size_t n) {
    q->ignore_rule = QD_MATCH_SUBSTRING; /* as --quantization-ignored-layers matches */
    if (!n) return QD_OK;
    char **grown = realloc(q->ignore, sizeof *grown * (q->n_ignore + n));
    if (!grown) return qd_fail(QD_ENOMEM, "cannot allocate");
    q->ignore = grown;
    for (size_t i = 0; i < n; i++)
        if (!(q->ignore[q->n_ignore++] = strdup(patterns[i]))) return qd_fail(QD_ENOMEM, "cannot allocate");
    return QD_OK;
}

qd_status qd_random_linear(const qd_quant_config *q, uint64_t seed, const char *name, int64_t in, int64_t out, qd_linear *l) {
    memset(l, 0, sizeof *l);
    if (in <= 0 || out <= 0) return qd_fail(QD_EINVAL, "random weights: layer '%s' needs its shape", name);
    qd_status sq = QD_OK;
    if (svdq_synthetic(q, seed, name, in, out, l, &sq)) {
        if (sq) qd_linear_free(l);
        return sq;
    }
    if (q && !q->online && (q->method == QD_QM_MODELOPT || q->method == QD_QM_MODELOPT_FP8) && !qd_quant_config_ignores(q, name))
        return modelopt_fp8_synthetic(q, seed, name, in, out, l);
    char wn[300], bn[300];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    size_t wl = 0, bl = 0;
    uint16_t *wd = NULL, *bd = NULL;
    uint8_t *wi = bf16_image(wn, 2, (int64_t[]){out, in}, &wl, &wd), *bi = bf16_image(bn, 1, (int64_t[]){out}, &bl, &bd);
    if (!wi || !bi) {
        image_free(wi, wl), image_free(bi, bl);
        return qd_fail(QD_ENOMEM, "random weights: cannot allocate layer '%s' (%lld x %lld)", name, (long long)out, (long long)in);
    }
    uint64_t h = hash_name(seed, wn);
    float a = sqrtf(3.0f / (float)in);
#pragma omp parallel for schedule(static) num_threads(qd_threads_for(out * in, QD_GRAIN_ELEMS))
    for (int64_t r = 0; r < out; r++) fill_row(h, r, a, in, wd + r * in, NULL);
    fill_row(hash_name(seed, bn), 0, 0.01f, out, bd, NULL);
    qd_st_file *files[2] = {NULL, NULL};
    qd_ckpt *ck = NULL;
    qd_status s = qd_st_open_memory(wn, wi, wl, &files[0]);
    if (!s) s = qd_st_open_memory(bn, bi, bl, &files[1]);
    if (!s) {
        s = qd_ckpt_adopt_files(files, 2, &ck);
        files[0] = files[1] = NULL;
    }
    const char *shards[1] = {name};
    if (!s) s = qd_linear_bind(q, ck, name, shards, 1, l);
    qd_ckpt_close(ck);
    qd_st_close(files[0]), qd_st_close(files[1]);
    /* the layer may view the draw (full precision kept) or hold its own quantized copy */
    if (!s && give_image(l, wi, wl)) wi = NULL;
    if (!s && give_image(l, bi, bl)) bi = NULL;
    image_free(wi, wl), image_free(bi, bl);
    if (s) qd_linear_free(l);
    return s;
}
