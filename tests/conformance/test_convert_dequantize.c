/* `qdit convert dequantize` on every family that tools/quant-fixtures (the independent numpy writer)
 * makes from the shared FLUX.1 and Z-Image fixtures (CTest runs it first). For each family folder (and
 * each Nunchaku file, given alone: its config comes from the file's metadata) this checks that the
 * written f32 folder
 *   - has config.json without quantization_config and sharded safetensors with an index, and loads as an
 *     unquantized checkpoint;
 *   - holds exactly the tensor names and shapes of the original BF16 transformer (fused and renamed
 *     layouts split back into the diffusers modules);
 *   - gives every quantized layer the weight of its scheme's dequantize, bit for bit (the parts bound and
 *     dequantized here, as the manifest describes them), and the effective bias, bit for bit; and within
 *     2^-20 of the largest weight of the generator's own f64 dequantization (expected/dequant.safetensors);
 *   - copies every other tensor exactly (f32 of the BF16 source);
 *   - runs through `qdit forward` to the output of the quantized checkpoint run with f32 activations and
 *     no activation quantization (`--no-act-quant`): relative L2 ≤ 1e-5.
 * Then: a bf16 output (each value the round-to-nearest-even of the f32 one), small shards, --model-path
 * on a pipeline folder, and the bad inputs (missing --save-dir, non-empty folder, unknown --dtype,
 * missing or corrupt source) with errors that name the flag or file. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>

#include "core/codec.h"
#include "io/ckpt.h"
#include "io/fs.h"
#include "load/sources.h"
#include "quant/resolve.h"
#include "quant_manifest.h"
#include "test_util.h"

#define FIX QDIT_SHARED_DIR "/fixtures"
#define FORWARD_BOUND 1e-5

typedef struct {
    char *dir;
    const char *quant;
} env;

static int setup(void **state) {
    env *e = calloc(1, sizeof *e);
    e->dir = qt_mkdtemp("dequantize");
    e->quant = getenv("QDIT_QUANT_FIXTURES");
    *state = e;
    return 0;
}

static int teardown(void **state) {
    env *e = *state;
    qt_rmtree(e->dir);
    free(e->dir);
    free(e);
    return 0;
}

/* A checkpoint of a component folder or weights file, with its resolved quantization. */
typedef struct {
    qd_component_source cs;
    qd_ckpt *ck;
    qd_quant_config cfg;
} opened;

static void open_source(const char *dir, const char *weights, const char *cls, opened *o) {
    qd_options opt;
    qd_options_init(&opt);
    opt.transformer_weights_path = weights;
    if (qd_component_source_resolve(&opt, "transformer", weights ? NULL : dir, &o->cs)) fail_msg("%s: %s", dir, qd_last_error());
    if (qd_weight_set_open(&o->cs.weights, &o->ck)) fail_msg("%s: %s", dir, qd_last_error());
    if (qd_quant_resolve(&opt, &o->cs, o->ck, cls, &o->cfg)) fail_msg("%s: %s", dir, qd_last_error());
}

static void close_source(opened *o) {
    qd_quant_config_free(&o->cfg);
    qd_ckpt_close(o->ck);
    qd_component_source_free(&o->cs);
}

static const float *f32_data(const qd_ckpt *ck, const char *name, int64_t want) {
    const qd_ckpt_entry *e = qd_ckpt_find(ck, name);
    if (!e) fail_msg("the output has no '%s'", name);
    if (e->tensor->dtype != QD_DTYPE_F32 || (int64_t)e->tensor->elements != want) {
        fail_msg("'%s' is %s with %llu elements, expected F32 with %lld", name, qd_dtype_name(e->tensor->dtype),
                 (unsigned long long)e->tensor->elements, (long long)want);
    }
    return qd_st_data(e->file, e->tensor);
}

/* |got − want| ≤ 2^-20 · max|want| everywhere */
static void near(const char *what, const float *got, const float *want, int64_t n) {
    double scale = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)got[i] - want[i]));
    if (worst > 0x1p-20 * scale) fail_msg("%s: off the generator's dequantization by %.3g of its largest value", what, worst / scale);
}

/* the quantized checkpoint and its dequantized folder through qdit forward */
static double forward_gap(env *e, const char *model, const char *quant_args[3], const char *out_dir, const char *tag) {
    char io[512], a[512], b[512];
    snprintf(io, sizeof io, FIX "/%s/io.safetensors", model);
    snprintf(a, sizeof a, "%s/%s-quant.safetensors", e->dir, tag);
    snprintf(b, sizeof b, "%s/%s-deq.safetensors", e->dir, tag);
    char *so = NULL, *se = NULL;
    int rc = quant_args[1] ? qt_run_qdit(&so, &se, "forward", "--component", quant_args[0], quant_args[1], quant_args[2], "--no-act-quant",
                                         "--inputs", io, "--output", a, NULL)
                           : qt_run_qdit(&so, &se, "forward", "--component", quant_args[0], "--no-act-quant", "--inputs", io, "--output", a, NULL);
    if (rc) fail_msg("%s: qdit forward --no-act-quant failed (%d): %s", tag, rc, se);
    free(so), free(se);
    rc = qt_run_qdit(&so, &se, "forward", "--component", out_dir, "--inputs", io, "--output", b, NULL);
    if (rc) fail_msg("%s: qdit forward on the dequantized folder failed (%d): %s", tag, rc, se);
    free(so), free(se);
    return qt_rel_l2(b, "output", a, "output");
}

static void check_family(env *e, const char *model, const char *fam_dir) {
    const char *cls = strstr(model, "flux") ? "FluxTransformer2DModel" : "ZImageTransformer2DModel";
    char *mpath = qt_path(fam_dir, "expected/manifest.json");
    json_t *m = json_load_file(mpath, 0, NULL);
    if (!m) fail_msg("%s: cannot read", mpath);
    const char *family = json_string_value(json_object_get(m, "family"));
    char *weights = NULL;
    json_t *files = json_object_get(m, "files");
    for (size_t i = 0; i < json_array_size(files); i++) {
        const char *f = json_string_value(json_array_get(files, i));
        if (!strncmp(f, "svdq-", 5)) weights = qt_path(fam_dir, f);
    }
    char tag[256], out_dir[600];
    snprintf(tag, sizeof tag, "%s-%s", model, family);
    snprintf(out_dir, sizeof out_dir, "%s/%s", e->dir, tag);

    /* a Nunchaku file alone (config from its metadata); a family folder as PATH */
    char *so = NULL, *se = NULL;
    int rc = qt_run_qdit(&so, &se, "convert", "dequantize", weights ? weights : fam_dir, "--save-dir", out_dir, "--dtype", "f32", NULL);
    if (rc) fail_msg("%s: qdit convert dequantize failed (%d): %s", tag, rc, se);
    free(so), free(se);

    /* the folder: config without quantization_config, an index over its shards */
    char *cfg_path = qt_path(out_dir, "config.json"), *index = qt_path(out_dir, "diffusion_pytorch_model.safetensors.index.json");
    json_t *cfg = json_load_file(cfg_path, 0, NULL);
    if (!cfg) fail_msg("%s: no config.json written", tag);
    if (json_object_get(cfg, "quantization_config")) fail_msg("%s: config.json still has quantization_config", tag);
    if (strcmp(json_string_value(json_object_get(cfg, "_class_name")), cls)) fail_msg("%s: config.json _class_name changed", tag);
    qd_ckpt *got;
    if (qd_ckpt_open_index(index, &got)) fail_msg("%s: %s", tag, qd_last_error());
    opened q = {0}, orig = {0}, plain = {0};
    open_source(fam_dir, weights, cls, &q);
    char orig_dir[512];
    snprintf(orig_dir, sizeof orig_dir, FIX "/%s/transformer", model);
    open_source(orig_dir, NULL, cls, &orig);
    open_source(out_dir, NULL, cls, &plain);
    if (plain.cfg.method != QD_QM_NONE) fail_msg("%s: the output resolves to %s, not unquantized", tag, qd_quant_method_name(plain.cfg.method));

    /* the original's names and shapes, nothing more */
    if (got->n_tensors != orig.ck->n_tensors) fail_msg("%s: %zu tensors written, the original has %zu", tag, got->n_tensors, orig.ck->n_tensors);
    for (size_t i = 0; i < orig.ck->n_tensors; i++) {
        const qd_st_tensor *t = orig.ck->entries[i].tensor;
        const qd_ckpt_entry *g = qd_ckpt_find(got, t->name);
        if (!g) fail_msg("%s: the output has no '%s'", tag, t->name);
        if (g->tensor->rank != t->rank || memcmp(g->tensor->shape, t->shape, sizeof(int64_t) * (size_t)t->rank)) {
            fail_msg("%s: '%s' has another shape than the original's", tag, t->name);
        }
    }

    /* quantized layers: bit-exact against the schemes' dequantize, near the generator's f64 values */
    qd_st_file *expected;
    char *epath = qt_path(fam_dir, "expected/dequant.safetensors");
    assert_int_equal(qd_st_open(epath, &expected), QD_OK);
    json_t *layers = json_object_get(m, "quantized_layers"), *covered = json_object();
    for (size_t i = 0; i < json_array_size(layers); i++) {
        json_t *layer = json_array_get(layers, i);
        const char *name = json_string_value(json_object_get(layer, "name"));
        const int64_t n = json_integer_value(json_object_get(layer, "out_features")), k = json_integer_value(json_object_get(layer, "in_features"));
        float *w = calloc((size_t)(n * k), sizeof *w), *b = calloc((size_t)n, sizeof *b);
        bool known;
        qt_manifest_reference(&q.cfg, q.ck, layer, true, w, b, &known);
        char key[600];
        snprintf(key, sizeof key, "%s.weight", name);
        json_object_set_new(covered, key, json_true());
        const float *gw = f32_data(got, key, n * k);
        if (memcmp(gw, w, sizeof *w * (size_t)(n * k))) fail_msg("%s: '%s' differs from the scheme's dequantize output", tag, key);
        const qd_st_tensor *ew = qd_st_find(expected, key);
        if (!ew) fail_msg("%s: expected/dequant.safetensors has no '%s'", tag, key);
        near(key, gw, qd_st_data(expected, ew), n * k);
        snprintf(key, sizeof key, "%s.bias", name);
        json_object_set_new(covered, key, json_true());
        if (qd_ckpt_find(got, key)) {
            const float *gb = f32_data(got, key, n);
            if (memcmp(gb, b, sizeof *b * (size_t)n)) fail_msg("%s: '%s' differs from the layer's effective bias", tag, key);
            const qd_st_tensor *eb = qd_st_find(expected, key);
            if (eb) near(key, gb, qd_st_data(expected, eb), n);
        } else {
            for (int64_t r = 0; r < n; r++)
                if (b[r] != 0.0f) fail_msg("%s: '%s' is not written but the effective bias is not zero", tag, key);
        }
        free(w), free(b);
    }
    /* everything else: the original's values (or the quantized file's, where it stores them in another
       dtype: msModelSlim's FP16-model variant) */
    for (size_t i = 0; i < got->n_tensors; i++) {
        const qd_st_tensor *t = got->entries[i].tensor;
        if (json_object_get(covered, t->name)) continue;
        const qd_ckpt_entry *o = qd_ckpt_find(q.ck, t->name);
        if (!o || o->tensor->dtype == QD_DTYPE_BF16) o = qd_ckpt_find(orig.ck, t->name);
        float *want = malloc(sizeof *want * (size_t)t->elements);
        assert_int_equal(qd_decode_row(o->tensor->dtype, qd_st_data(o->file, o->tensor), want, (size_t)t->elements), 0);
        if (memcmp(f32_data(got, t->name, (int64_t)t->elements), want, sizeof *want * (size_t)t->elements)) {
            fail_msg("%s: '%s' is not the original's (%s)", tag, t->name, o->file->path);
        }
        free(want);
    }

    /* the same computation through the model */
    const char *qargs[3] = {weights ? orig_dir : fam_dir, weights ? "--transformer-weights-path" : NULL, weights};
    double gap = forward_gap(e, model, qargs, out_dir, tag);
    print_message("%-13s %-31s %-13s %3zu quantized layers bit-exact, %3zu tensors; forward gap %.2e\n", model, family,
                  qd_quant_method_name(q.cfg.method), json_array_size(layers), got->n_tensors, gap);
    if (!(gap <= FORWARD_BOUND)) fail_msg("%s: forward relative L2 %.3e exceeds %.0e", tag, gap, FORWARD_BOUND);

    json_decref(covered);
    qd_st_close(expected);
    close_source(&q), close_source(&orig), close_source(&plain);
    qd_ckpt_close(got);
    json_decref(cfg), json_decref(m);
    free(cfg_path), free(index), free(epath), free(mpath), free(weights);
}

static void families(void **state, const char *model) {
    env *e = *state;
    if (!e->quant) fail_msg("QDIT_QUANT_FIXTURES is not set (ctest sets it after quant_fixtures_generate)");
    char root[512];
    snprintf(root, sizeof root, "%s/%s", e->quant, model);
    char **names;
    size_t n;
    if (qd_list_dirs(root, &names, &n)) fail_msg("%s: cannot list", root);
    size_t checked = 0;
    for (size_t i = 0; i < n; i++) {
        char *dir = qt_path(root, names[i]);
        check_family(e, model, dir);
        free(dir);
        checked++;
    }
    qd_free_names(names, n);
    if (checked < 20) fail_msg("%s: only %zu families found", root, checked);
}

static void test_flux_families(void **state) { families(state, "flux_tiny_a"); }
static void test_zimage_families(void **state) { families(state, "zimage_tiny_a"); }

/* round-to-nearest-even to bf16, written here rather than taken from the library's codec */
static uint16_t bf16_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* qdit convert dequantize with up to 8 arguments (the first NULL ends them) */
static int convert8(char **err, const char *a, const char *b, const char *c, const char *d, const char *e2, const char *f, const char *g,
                    const char *h) {
    char *out = NULL;
    int rc = qt_run_qdit(&out, err, "convert", "dequantize", a, b, c, d, e2, f, g, h, NULL);
    free(out);
    return rc;
}
#define convert(err, a, b, c, d, e2, f) convert8(err, a, b, c, d, e2, f, NULL, NULL)

static char *family_dir(env *e, const char *model, const char *family) {
    if (!e->quant) fail_msg("QDIT_QUANT_FIXTURES is not set (ctest sets it after quant_fixtures_generate)");
    char p[512];
    snprintf(p, sizeof p, "%s/%s/%s", e->quant, model, family);
    return strdup(p);
}

/* the default dtype: every tensor bf16, each the RNE of the exact f32 value */
static void test_bf16_output(void **state) {
    env *e = *state;
    char *src = family_dir(e, "flux_tiny_a", "modelopt_nvfp4"), *f32 = qt_path(e->dir, "bf16-ref"), *bf = qt_path(e->dir, "bf16");
    char *err = NULL;
    if (convert(&err, src, "--save-dir", f32, "--dtype", "f32", NULL)) fail_msg("f32: %s", err);
    free(err);
    if (convert(&err, src, "--save-dir", bf, NULL, NULL, NULL)) fail_msg("bf16: %s", err);
    free(err);
    char *i32 = qt_path(f32, "diffusion_pytorch_model.safetensors.index.json"), *i16 = qt_path(bf, "diffusion_pytorch_model.safetensors.index.json");
    qd_ckpt *a, *b;
    assert_int_equal(qd_ckpt_open_index(i32, &a), QD_OK);
    assert_int_equal(qd_ckpt_open_index(i16, &b), QD_OK);
    assert_int_equal(a->n_tensors, b->n_tensors);
    size_t values = 0;
    for (size_t i = 0; i < a->n_tensors; i++) {
        const qd_ckpt_entry *x = &a->entries[i], *y = qd_ckpt_find(b, x->tensor->name);
        assert_non_null(y);
        assert_int_equal(y->tensor->dtype, QD_DTYPE_BF16);
        const float *fv = qd_st_data(x->file, x->tensor);
        const uint8_t *hv = qd_st_data(y->file, y->tensor);
        for (uint64_t k = 0; k < x->tensor->elements; k++, values++) {
            uint16_t h;
            memcpy(&h, hv + 2 * k, 2);
            if (h != bf16_rne(fv[k])) fail_msg("'%s'[%llu]: bf16 0x%04x, expected 0x%04x", x->tensor->name, (unsigned long long)k, h, bf16_rne(fv[k]));
        }
    }
    print_message("bf16 output: %zu values, each the RNE of the f32 output\n", values);
    qd_ckpt_close(a), qd_ckpt_close(b);
    free(i32), free(i16), free(src), free(f32), free(bf);
}

/* small shards: several files, one index over them, the same tensors and the same forward output */
static void test_shards(void **state) {
    env *e = *state;
    char *src = family_dir(e, "flux_tiny_a", "svdquant_int4_r8"), *one = qt_path(e->dir, "shards-1"), *many = qt_path(e->dir, "shards-n");
    char file[600];
    snprintf(file, sizeof file, "%s/svdq-int4_r8-flux_tiny_a.safetensors", src);
    char *err = NULL;
    if (convert(&err, file, "--save-dir", one, "--dtype", "f32", NULL)) fail_msg("%s", err);
    free(err);
    if (convert8(&err, file, "--save-dir", many, "--dtype", "f32", "--max-shard-size", "1MiB", NULL)) fail_msg("%s", err);
    free(err);
    char *idx = qt_path(many, "diffusion_pytorch_model.safetensors.index.json");
    json_t *doc = json_load_file(idx, 0, NULL);
    assert_non_null(doc);
    json_t *map = json_object_get(doc, "weight_map");
    const char *key;
    json_t *v;
    json_t *shards = json_object();
    json_object_foreach(map, key, v) json_object_set_new(shards, json_string_value(v), json_true());
    size_t n = json_object_size(shards);
    print_message("--max-shard-size 1MiB: %zu shards, %zu tensors\n", n, json_object_size(map));
    if (n < 3) fail_msg("7 MB of f32 tensors in %zu shards of at most 1 MiB", n);
    uint64_t total = 0;
    json_object_foreach(shards, key, v) {
        char *p = qt_path(many, key);
        qd_st_file *f;
        if (qd_st_open(p, &f)) fail_msg("%s", qd_last_error());
        /* a shard holds more than 1 MiB only when it is one tensor */
        if (f->file_size > (1u << 20) + f->header_len + 8 && f->n_tensors > 1) fail_msg("%s: %llu bytes in %zu tensors", key, (unsigned long long)f->file_size, f->n_tensors);
        for (size_t i = 0; i < f->n_tensors; i++) total += f->tensors[i].end - f->tensors[i].begin;
        qd_st_close(f);
        free(p);
    }
    assert_int_equal(total, (uint64_t)json_integer_value(json_object_get(json_object_get(doc, "metadata"), "total_size")));
    qd_ckpt *a, *b;
    char *i1 = qt_path(one, "diffusion_pytorch_model.safetensors.index.json");
    assert_int_equal(qd_ckpt_open_index(i1, &a), QD_OK);
    assert_int_equal(qd_ckpt_open_index(idx, &b), QD_OK);
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const qd_ckpt_entry *x = &a->entries[i], *y = qd_ckpt_find(b, x->tensor->name);
        assert_non_null(y);
        assert_int_equal(x->tensor->end - x->tensor->begin, y->tensor->end - y->tensor->begin);
        assert_memory_equal(qd_st_data(x->file, x->tensor), qd_st_data(y->file, y->tensor), x->tensor->end - x->tensor->begin);
    }
    qd_ckpt_close(a), qd_ckpt_close(b);
    json_decref(shards), json_decref(doc);
    free(i1), free(idx), free(src), free(one), free(many);
}

/* --model-path on a pipeline folder, and --transformer-path, find the same transformer as PATH */
static void test_source_flags(void **state) {
    env *e = *state;
    char *src = family_dir(e, "zimage_tiny_a", "modelopt_fp8_flat"), *pipe = qt_path(e->dir, "pipeline");
    char *mi = qt_path(pipe, "model_index.json"), *link = qt_path(pipe, "transformer");
    qt_write_text(mi, "{\"_class_name\": \"ZImagePipeline\", \"transformer\": [\"diffusers\", \"ZImageTransformer2DModel\"]}");
    assert_int_equal(symlink(src, link), 0);
    const char *how[3][2] = {{NULL, NULL}, {"--model-path", pipe}, {"--transformer-path", src}};
    char *first = NULL;
    size_t first_n = 0;
    for (int i = 0; i < 3; i++) {
        char out[600];
        snprintf(out, sizeof out, "%s/flags-%d", e->dir, i);
        char *err = NULL;
        int rc = how[i][0] ? convert(&err, how[i][0], how[i][1], "--save-dir", out, NULL, NULL) : convert(&err, src, "--save-dir", out, NULL, NULL, NULL);
        if (rc) fail_msg("source %d: %s", i, err);
        free(err);
        char *shard = qt_path(out, "diffusion_pytorch_model-00001-of-00001.safetensors");
        size_t n;
        char *bytes = qt_read_file(shard, &n);
        if (!first) first = bytes, first_n = n;
        else {
            if (n != first_n || memcmp(bytes, first, n)) fail_msg("%s %s wrote another file than PATH", how[i][0], how[i][1]);
            free(bytes);
        }
        free(shard);
    }
    free(first), free(mi), free(link), free(src), free(pipe);
}

/* runs the conversion and checks its exit status and that its message names `needle` */
static void expect_error(int want_rc, const char *needle, const char *what, const char *a, const char *b, const char *c, const char *d,
                         const char *e2, const char *f) {
    char *err = NULL;
    int rc = convert(&err, a, b, c, d, e2, f);
    if (rc != want_rc) fail_msg("%s: exit %d, expected %d (%s)", what, rc, want_rc, err);
    if (!strstr(err, needle)) fail_msg("%s: the message '%s' does not name '%s'", what, err, needle);
    print_message("%-34s exit %d: %s", what, rc, err);
    free(err);
}

static void test_bad_inputs(void **state) {
    env *e = *state;
    char *src = family_dir(e, "flux_tiny_a", "modelopt_fp8_flat"), *out = qt_path(e->dir, "bad-out"), *err = NULL;
    expect_error(2, "--save-dir", "no --save-dir", src, NULL, NULL, NULL, NULL, NULL);
    expect_error(1, "--dtype f16", "--dtype f16", src, "--save-dir", out, "--dtype", "f16", NULL);
    expect_error(2, "--max-shard-size lots", "--max-shard-size lots", src, "--save-dir", out, "--max-shard-size", "lots", NULL);
    char *missing = qt_path(e->dir, "no-such-model");
    expect_error(1, missing, "missing PATH", missing, "--save-dir", out, NULL, NULL, NULL);
    expect_error(1, "--model-path", "no source", "--save-dir", out, NULL, NULL, NULL, NULL);
    /* a corrupt weights file beside a config */
    char *bad = qt_path(e->dir, "corrupt"), *bad_cfg = qt_path(bad, "config.json"), *bad_w = qt_path(bad, "diffusion_pytorch_model.safetensors");
    qt_write_text(bad_cfg, "{\"_class_name\": \"FluxTransformer2DModel\"}");
    qt_write_text(bad_w, "this is not a safetensors file");
    expect_error(1, bad_w, "corrupt weights", bad, "--save-dir", out, NULL, NULL, NULL);
    /* a folder with something in it: refused, then replaced with --overwrite (only a converter's files) */
    char *used = qt_path(e->dir, "used"), *old = qt_path(used, "config.json");
    qt_write_text(old, "{}");
    expect_error(1, "not empty", "non-empty --save-dir", src, "--save-dir", used, NULL, NULL, NULL);
    if (convert(&err, src, "--save-dir", used, "--overwrite", NULL, NULL)) fail_msg("--overwrite: %s", err);
    free(err);
    char *notes = qt_path(used, "notes.txt");
    qt_write_text(notes, "mine");
    expect_error(1, "notes.txt", "--overwrite over a foreign file", src, "--save-dir", used, "--overwrite", NULL, NULL);
    free(notes), free(used), free(old), free(bad), free(bad_cfg), free(bad_w), free(missing), free(src), free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flux_families),
        cmocka_unit_test(test_zimage_families),
        cmocka_unit_test(test_bf16_output),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_source_flags),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
