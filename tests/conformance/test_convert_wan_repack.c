/* qdit convert wan-repack: a synthetic msModelSlim Wan2.2 output (original Wan names, written byte by byte
 * by this test) and a diffusers base → the folder SGLang's wan_repack.py writes (quant-sglang.md §5.4):
 *   - every tensor under its diffusers name from the hand-written table below (not from the converter's
 *     rule list), dtype, shape and bytes unchanged, no metadata — the order-dependent renames explicitly:
 *     norm3 → norm2 and norm2 → norm3 in one block, head.modulation → scale_shift_table (not
 *     head.scale_shift_table), cross_attn.k_img → attn2.add_k_proj, cross_attn.norm_k_img →
 *     attn2.norm_added_k, img_emb.proj.4 → image_embedder.norm2 (untouched by the norm swap), `.linear.`
 *     and `.div.` stripped;
 *   - the description: renamed keys moved to the end in tensor order, others in place, values kept;
 *   - the base copied except its transformer folder(s) (at any depth), links followed; config.json from
 *     the base transformer; A14B: high_noise_model → transformer, low_noise_model → transformer_2;
 *     TI2V-5B: the quant folder → transformer, the base's transformer_2 copied as it is;
 *   - qdit resolves the repacked transformer as msModelSlim;
 *   - bad inputs name the flag / path at fault and leave no output; --overwrite rules. */
#include "test_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fs.h"
#include "io/ckpt.h"
#include "io/safetensors.h"
#include "load/sources.h"
#include "quant/config.h"
#include "quant/plan.h"
#include "quant/resolve.h"

typedef struct {
    const char *from, *to; /* Wan name, diffusers name */
    const char *dtype;
    int64_t d0, d1;        /* d1 0: rank 1 */
    int es;                /* bytes per element */
} wt;

/* Shard 1 of the high-noise (or only) transformer. */
static const wt shard1[] = {
    {"patch_embedding.weight", "patch_embedding.weight", "BF16", 8, 4, 2},
    {"text_embedding.0.weight", "condition_embedder.text_embedder.linear_1.weight", "BF16", 8, 4, 2},
    {"text_embedding.2.bias", "condition_embedder.text_embedder.linear_2.bias", "BF16", 8, 0, 2},
    {"time_embedding.0.weight", "condition_embedder.time_embedder.linear_1.weight", "BF16", 8, 4, 2},
    {"time_embedding.2.weight", "condition_embedder.time_embedder.linear_2.weight", "BF16", 8, 8, 2},
    {"time_projection.1.weight", "condition_embedder.time_proj.weight", "BF16", 48, 8, 2},
    {"head.modulation", "scale_shift_table", "F32", 2, 8, 4},
    {"head.head.weight", "proj_out.weight", "BF16", 4, 8, 2},
    {"blocks.0.modulation", "blocks.0.scale_shift_table", "F32", 6, 8, 4},
    {"blocks.0.self_attn.q.weight", "blocks.0.attn1.to_q.weight", "I8", 8, 8, 1},
    {"blocks.0.self_attn.q.weight_scale", "blocks.0.attn1.to_q.weight_scale", "F32", 8, 1, 4},
    {"blocks.0.self_attn.q.weight_offset", "blocks.0.attn1.to_q.weight_offset", "F32", 8, 1, 4},
    {"blocks.0.self_attn.k.weight", "blocks.0.attn1.to_k.weight", "I8", 8, 8, 1},
    {"blocks.0.self_attn.o.weight", "blocks.0.attn1.to_out.0.weight", "I8", 8, 8, 1},
    {"blocks.0.self_attn.norm_q.weight", "blocks.0.attn1.norm_q.weight", "BF16", 8, 0, 2},
    {"blocks.0.self_attn.norm_k.weight", "blocks.0.attn1.norm_k.weight", "BF16", 8, 0, 2},
    {"blocks.0.cross_attn.k.weight", "blocks.0.attn2.to_k.weight", "I8", 8, 8, 1},
    {"blocks.0.cross_attn.k_img.weight", "blocks.0.attn2.add_k_proj.weight", "I8", 8, 8, 1},
    {"blocks.0.cross_attn.v_img.weight", "blocks.0.attn2.add_v_proj.weight", "I8", 8, 8, 1},
    {"blocks.0.cross_attn.norm_k.weight", "blocks.0.attn2.norm_k.weight", "BF16", 8, 0, 2},
    {"blocks.0.cross_attn.norm_k_img.weight", "blocks.0.attn2.norm_added_k.weight", "BF16", 8, 0, 2},
    {"blocks.0.norm3.weight", "blocks.0.norm2.weight", "BF16", 8, 0, 2},
    {"blocks.0.norm3.bias", "blocks.0.norm2.bias", "BF16", 8, 0, 2},
    {"blocks.0.norm2.weight", "blocks.0.norm3.weight", "F32", 8, 0, 4},
};
/* Shard 2: MXFP4 wrapper and smooth-quant names, the I2V image embedder. */
static const wt shard2[] = {
    {"blocks.0.ffn.0.linear.weight", "blocks.0.ffn.net.0.proj.weight", "U8", 16, 4, 1},
    {"blocks.0.ffn.0.linear.weight_scale", "blocks.0.ffn.net.0.proj.weight_scale", "U8", 16, 1, 1},
    {"blocks.0.ffn.2.div.mul_scale", "blocks.0.ffn.net.2.mul_scale", "F32", 16, 0, 4},
    {"blocks.0.ffn.2.weight", "blocks.0.ffn.net.2.weight", "I8", 8, 16, 1},
    {"img_emb.proj.0.weight", "condition_embedder.image_embedder.norm1.weight", "F32", 8, 0, 4},
    {"img_emb.proj.1.weight", "condition_embedder.image_embedder.ff.net.0.proj.weight", "BF16", 8, 8, 2},
    {"img_emb.proj.3.weight", "condition_embedder.image_embedder.ff.net.2.weight", "BF16", 8, 8, 2},
    {"img_emb.proj.4.bias", "condition_embedder.image_embedder.norm2.bias", "F32", 8, 0, 4},
    {"img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed", "BF16", 1, 8, 2},
};
/* The low-noise transformer (one file). */
static const wt low[] = {
    {"blocks.0.self_attn.v.weight", "blocks.0.attn1.to_v.weight", "I8", 8, 8, 1},
    {"blocks.0.cross_attn.q.weight", "blocks.0.attn2.to_q.weight", "I8", 8, 8, 1},
    {"blocks.0.cross_attn.o.weight", "blocks.0.attn2.to_out.0.weight", "I8", 8, 8, 1},
    {"blocks.0.cross_attn.norm_q.weight", "blocks.0.attn2.norm_q.weight", "BF16", 8, 0, 2},
    {"head.head.bias", "proj_out.bias", "BF16", 4, 0, 2},
};

#define N1 (sizeof shard1 / sizeof *shard1)
#define N2 (sizeof shard2 / sizeof *shard2)
#define NL (sizeof low / sizeof *low)

static size_t bytes_of(const wt *t) { return (size_t)(t->d0 * (t->d1 ? t->d1 : 1) * t->es); }

/* A safetensors file of `n` tensors with random bytes, written by hand; the bytes go to data[i]. */
static void write_quant(const char *path, const wt *t, size_t n, uint64_t *rng, unsigned char **data) {
    char header[8192];
    size_t o = 0, off = 0;
    o += (size_t)snprintf(header + o, sizeof header - o, "{");
    for (size_t i = 0; i < n; i++) {
        const size_t b = bytes_of(&t[i]);
        if (t[i].d1) o += (size_t)snprintf(header + o, sizeof header - o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%zu,%zu]}", i ? "," : "", t[i].from, t[i].dtype, (long long)t[i].d0, (long long)t[i].d1, off, off + b);
        else o += (size_t)snprintf(header + o, sizeof header - o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%zu,%zu]}", i ? "," : "", t[i].from, t[i].dtype, (long long)t[i].d0, off, off + b);
        off += b;
    }
    snprintf(header + o, sizeof header - o, "}");
    unsigned char *all = malloc(off);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t b = bytes_of(&t[i]);
        data[i] = malloc(b);
        for (size_t j = 0; j < b; j++) data[i][j] = (unsigned char)(qt_rand_u64(rng) >> 24);
        if (!strcmp(t[i].dtype, "F32")) /* finite floats: exponent bits kept below all-ones */
            for (size_t j = 3; j < b; j += 4) data[i][j] &= 0x3f;
        if (!strcmp(t[i].dtype, "BF16"))
            for (size_t j = 1; j < b; j += 2) data[i][j] &= 0x3f;
        memcpy(all + at, data[i], b), at += b;
    }
    qt_write_raw_safetensors(path, header, all, off);
    free(all);
}

/* The output file holds exactly the expected tensors: diffusers names, same dtype, shape and bytes. */
static void check_tensors(const char *path, const wt *const *sets, const size_t *counts, unsigned char **const *data, int n_sets) {
    qd_st_file *f;
    assert_int_equal(qd_st_open(path, &f), QD_OK);
    size_t total = 0;
    for (int s = 0; s < n_sets; s++)
        for (size_t i = 0; i < counts[s]; i++) {
            const wt *t = &sets[s][i];
            const qd_st_tensor *q = qd_st_find(f, t->to);
            if (!q) fail_msg("%s: '%s' (from '%s') is missing", path, t->to, t->from);
            assert_string_equal(qd_dtype_name(q->dtype), t->dtype);
            assert_int_equal(q->rank, t->d1 ? 2 : 1);
            assert_int_equal(q->shape[0], t->d0);
            if (t->d1) assert_int_equal(q->shape[1], t->d1);
            assert_int_equal(q->end - q->begin, bytes_of(t));
            if (memcmp(qd_st_data(f, q), data[s][i], bytes_of(t))) fail_msg("%s: '%s' bytes differ from '%s'", path, t->to, t->from);
            total++;
        }
    assert_int_equal(f->n_tensors, total);
    assert_int_equal(f->n_meta, 0);
    qd_st_close(f);
}

static void assert_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = qt_read_file(a, &na), *y = qt_read_file(b, &nb);
    if (na != nb || memcmp(x, y, na)) fail_msg("%s differs from %s", a, b);
    free(x), free(y);
}

static bool exists(const char *dir, const char *rel) {
    char *p = qt_path(dir, rel);
    struct stat st;
    bool e = lstat(p, &st) == 0;
    free(p);
    return e;
}

/* A diffusers Wan2.2 base: model_index, vae, a text encoder file reached through a link, tokenizer with
 * a nested folder named transformer (skipped too), transformer(s) with config and a weight file. */
static void write_base(const char *base, const char *outside, bool two) {
    char *p;
    qt_write_text(p = qt_path(base, "model_index.json"), "{\"_class_name\": \"WanPipeline\", \"transformer\": [\"diffusers\", \"WanTransformer3DModel\"]}"), free(p);
    qt_write_text(p = qt_path(base, "vae/config.json"), "{\"_class_name\": \"AutoencoderKLWan\"}"), free(p);
    qt_write_file(p = qt_path(base, "vae/diffusion_pytorch_model.safetensors"), "vae-bytes-\x01\x02\x03", 13), free(p);
    qt_write_text(outside, "text encoder weights, stored elsewhere");
    char *dir = qt_path(base, "text_encoder"), *link = qt_path(dir, "model.safetensors");
    mkdir(dir, 0777);
    assert_int_equal(symlink(outside, link), 0);
    free(dir), free(link);
    qt_write_text(p = qt_path(base, "tokenizer/transformer/never.txt"), "skipped"), free(p);
    qt_write_text(p = qt_path(base, "tokenizer/tokenizer.json"), "{}"), free(p);
    const char *tdirs[] = {"transformer", "transformer_2"};
    for (int i = 0; i < (two ? 2 : 1); i++) {
        char rel[128], cfg[256];
        snprintf(rel, sizeof rel, "%s/config.json", tdirs[i]);
        snprintf(cfg, sizeof cfg, "{\"_class_name\": \"WanTransformer3DModel\", \"num_layers\": 1, \"which\": \"%s\"}", tdirs[i]);
        qt_write_text(p = qt_path(base, rel), cfg), free(p);
        snprintf(rel, sizeof rel, "%s/diffusion_pytorch_model.safetensors", tdirs[i]);
        qt_write_text(p = qt_path(base, rel), "bf16 base weights"), free(p);
        snprintf(rel, sizeof rel, "%s/extra.txt", tdirs[i]);
        qt_write_text(p = qt_path(base, rel), "extra"), free(p);
    }
}

static const char *const DESC_HIGH = "{\"model_quant_type\": \"W8A8_DYNAMIC\", \"blocks.0.self_attn.q.weight\": \"W8A8_DYNAMIC\", "
                                     "\"patch_embedding.weight\": \"FLOAT\", \"blocks.0.ffn.0.linear.weight\": \"W4A4_MXFP4\", "
                                     "\"blocks.9.self_attn.q.weight\": \"W8A8\", \"blocks.0.norm3.weight\": \"FLOAT\", \"group_size\": 0, "
                                     "\"timestep_policy\": {\"w4a4_linear\": [1, 2]}}";
/* Not in the tensors: blocks.9 (kept as it is); renamed ones at the end in tensor order: shard 1 sorted
 * (norm3 < self_attn), then shard 2. */
static const char *const DESC_HIGH_KEYS[] = {"model_quant_type", "patch_embedding.weight", "blocks.9.self_attn.q.weight", "group_size", "timestep_policy",
                                             "blocks.0.norm2.weight", "blocks.0.attn1.to_q.weight", "blocks.0.ffn.net.0.proj.weight", NULL};
static const char *const DESC_HIGH_VALUES[] = {"W8A8_DYNAMIC", "FLOAT", "W8A8", NULL, NULL, "FLOAT", "W8A8_DYNAMIC", "W4A4_MXFP4"};

static void check_description(const char *path) {
    json_error_t e;
    json_t *d = json_load_file(path, JSON_PRESERVE_ORDER, &e);
    if (!d) fail_msg("%s: %s", path, e.text);
    const char *k;
    json_t *v;
    int i = 0;
    json_object_foreach(d, k, v) {
        if (!DESC_HIGH_KEYS[i]) fail_msg("%s: unexpected key '%s'", path, k);
        if (strcmp(k, DESC_HIGH_KEYS[i])) fail_msg("%s: key %d is '%s', expected '%s'", path, i, k, DESC_HIGH_KEYS[i]);
        if (DESC_HIGH_VALUES[i]) assert_string_equal(json_string_value(v), DESC_HIGH_VALUES[i]);
        i++;
    }
    assert_null(DESC_HIGH_KEYS[i]);
    assert_int_equal(json_integer_value(json_object_get(d, "group_size")), 0);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(json_object_get(d, "timestep_policy"), "w4a4_linear"), 1)), 2);
    json_decref(d);
    /* written with 2-space indentation, like json.dump(indent=2) */
    size_t n;
    char *text = qt_read_file(path, &n);
    assert_non_null(strstr(text, "{\n  \"model_quant_type\": \"W8A8_DYNAMIC\",\n"));
    free(text);
}

typedef struct {
    char *dir, *base, *quant, *outside;
    unsigned char *d1[N1], *d2[N2], *dl[NL];
} world;

static void make_world(world *w, bool a14b) {
    memset(w, 0, sizeof *w);
    uint64_t rng = qt_seed();
    w->dir = qt_mkdtemp("wan-repack");
    w->base = qt_path(w->dir, "Wan2.2-Diffusers");
    w->quant = qt_path(w->dir, "quant");
    w->outside = qt_path(w->dir, "te-blob.bin");
    write_base(w->base, w->outside, true); /* TI2V-5B's base has a transformer_2 too: copied as it is */
    char *hq = a14b ? qt_path(w->quant, "high_noise_model") : strdup(w->quant), *p;
    write_quant(p = qt_path(hq, "quant_model_weights-00001-of-00002.safetensors"), shard1, N1, &rng, w->d1), free(p);
    write_quant(p = qt_path(hq, "quant_model_weights-00002-of-00002.safetensors"), shard2, N2, &rng, w->d2), free(p);
    qt_write_text(p = qt_path(hq, "quant_model_description.json"), DESC_HIGH), free(p);
    qt_write_text(p = qt_path(hq, "quant_model_description_w8a8.json"), "{\"not\": \"read\"}"), free(p); /* the first sorted one is read */
    if (a14b) {
        char *lq = qt_path(w->quant, "low_noise_model");
        write_quant(p = qt_path(lq, "quant_model_weight.safetensors"), low, NL, &rng, w->dl), free(p);
        qt_write_text(p = qt_path(lq, "quant_model_description.json"), "{\"model_quant_type\": \"W8A8\", \"head.head.bias\": \"FLOAT\"}"), free(p);
        free(lq);
    }
    free(hq);
}

static void free_world(world *w) {
    for (size_t i = 0; i < N1; i++) free(w->d1[i]);
    for (size_t i = 0; i < N2; i++) free(w->d2[i]);
    for (size_t i = 0; i < NL; i++) free(w->dl[i]);
    qt_rmtree(w->dir);
    free(w->dir), free(w->base), free(w->quant), free(w->outside);
}

static void repack_ok(const char *type, const world *w, const char *out, bool overwrite) {
    char *o = NULL, *e = NULL;
    int rc = qt_run_qdit(&o, &e, "convert", "wan-repack", "--model-type", type, "--original-model-path", w->base, "--quant-path", w->quant,
                         "--output-path", out, overwrite ? "--overwrite" : NULL, NULL);
    if (rc) fail_msg("wan-repack %s: %s", type, e);
    print_message("%s", o);
    free(o), free(e);
}

static void check_base_copy(const world *w, const char *out) {
    char *a, *b;
    assert_same_file(a = qt_path(w->base, "model_index.json"), b = qt_path(out, "model_index.json")), free(a), free(b);
    assert_same_file(a = qt_path(w->base, "vae/diffusion_pytorch_model.safetensors"), b = qt_path(out, "vae/diffusion_pytorch_model.safetensors")), free(a), free(b);
    /* the link's target copied as a plain file */
    b = qt_path(out, "text_encoder/model.safetensors");
    struct stat st;
    assert_int_equal(lstat(b, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_same_file(w->outside, b), free(b);
    assert_true(exists(out, "tokenizer/tokenizer.json"));
    assert_false(exists(out, "tokenizer/transformer"));
    assert_false(exists(out, "transformer/extra.txt"));
}

static void check_transformer(const world *w, const char *out, const char *tdir) {
    char rel[128], *a, *b;
    snprintf(rel, sizeof rel, "%s/config.json", tdir);
    assert_same_file(a = qt_path(w->base, rel), b = qt_path(out, rel)), free(a), free(b);
    snprintf(rel, sizeof rel, "%s/extra.txt", tdir);
    assert_false(exists(out, rel));
    char **names;
    size_t n;
    char *d = qt_path(out, tdir);
    assert_int_equal(qd_list_files(d, NULL, &names, &n), 0);
    assert_int_equal(n, 3); /* config.json, diffusion_pytorch_model.safetensors, quant_model_description.json */
    qd_free_names(names, n);
    free(d);
}

/* qdit resolves the repacked transformer of the pipeline folder as msModelSlim (qdit has no Wan model, so
 * detection and plan): the described W8A8_DYNAMIC layer plans as w8a8_dynamic, a FLOAT one as dense. */
static void check_detection(const char *out, const char *component, const char *quantized, const char *dense) {
    qd_options o;
    qd_options_init(&o);
    char *dir = qt_path(out, component);
    o.component_paths[0] = (qd_component_path){.component = component, .path = dir};
    o.n_component_paths = 1;
    qd_component_source cs;
    if (qd_component_source_resolve(&o, component, NULL, &cs)) fail_msg("%s", qd_last_error());
    qd_ckpt *ck;
    if (qd_weight_set_open(&cs.weights, &ck)) fail_msg("%s", qd_last_error());
    qd_quant_config cfg;
    if (qd_quant_resolve(&o, &cs, ck, "WanTransformer3DModel", &cfg)) fail_msg("resolve: %s", qd_last_error());
    assert_int_equal(cfg.method, QD_QM_MODELSLIM);
    print_message("%s: %s (%s)\n", component, qd_quant_method_name(cfg.method), cfg.source);
    const char *mods[2] = {quantized, dense};
    for (int i = 0; i < 2 && mods[i]; i++) {
        qd_linear l;
        if (qd_linear_plan(&cfg, ck, mods[i], &mods[i], 1, &l)) fail_msg("plan %s: %s", mods[i], qd_last_error());
        if (strcmp(l.scheme_name, i ? "bf16" : "w8a8_dynamic") && !(i && l.scheme == QD_SCHEME_DENSE))
            fail_msg("the plan makes %s %s", mods[i], l.scheme_name);
        qd_linear_free(&l);
    }
    qd_quant_config_free(&cfg);
    qd_ckpt_close(ck);
    qd_component_source_free(&cs);
    free(dir);
}

static void test_a14b(void **state) {
    (void)state;
    world w;
    make_world(&w, true);
    char *out = qt_path(w.dir, "out/Wan2.2-T2V-A14B-w8a8"), *p;
    repack_ok("Wan2.2-T2V-A14B", &w, out, false);
    check_base_copy(&w, out);
    const wt *sets[] = {shard1, shard2};
    const size_t counts[] = {N1, N2};
    unsigned char **const data[] = {w.d1, w.d2};
    check_tensors(p = qt_path(out, "transformer/diffusion_pytorch_model.safetensors"), sets, counts, data, 2), free(p);
    const wt *lsets[] = {low};
    const size_t lcounts[] = {NL};
    unsigned char **const ldata[] = {w.dl};
    check_tensors(p = qt_path(out, "transformer_2/diffusion_pytorch_model.safetensors"), lsets, lcounts, ldata, 1), free(p);
    check_description(p = qt_path(out, "transformer/quant_model_description.json")), free(p);
    json_t *ld = json_load_file(p = qt_path(out, "transformer_2/quant_model_description.json"), JSON_PRESERVE_ORDER, NULL);
    free(p);
    assert_string_equal(json_string_value(json_object_get(ld, "proj_out.bias")), "FLOAT");
    assert_null(json_object_get(ld, "head.head.bias"));
    json_decref(ld);
    check_transformer(&w, out, "transformer");
    check_transformer(&w, out, "transformer_2");
    check_detection(out, "transformer", "blocks.0.attn1.to_q", "patch_embedding");
    check_detection(out, "transformer_2", NULL, NULL);
    /* the I2V type is the same repack */
    char *out2 = qt_path(w.dir, "i2v");
    repack_ok("Wan2.2-I2V-A14B", &w, out2, false);
    check_tensors(p = qt_path(out2, "transformer_2/diffusion_pytorch_model.safetensors"), lsets, lcounts, ldata, 1), free(p);
    /* --overwrite replaces an earlier output */
    repack_ok("Wan2.2-T2V-A14B", &w, out2, true);
    free(out), free(out2);
    free_world(&w);
}

static void test_ti2v(void **state) {
    (void)state;
    world w;
    make_world(&w, false);
    char *out = qt_path(w.dir, "ti2v"), *p, *a;
    repack_ok("Wan2.2-TI2V-5B", &w, out, false);
    check_base_copy(&w, out);
    const wt *sets[] = {shard1, shard2};
    const size_t counts[] = {N1, N2};
    unsigned char **const data[] = {w.d1, w.d2};
    check_tensors(p = qt_path(out, "transformer/diffusion_pytorch_model.safetensors"), sets, counts, data, 2), free(p);
    check_description(p = qt_path(out, "transformer/quant_model_description.json")), free(p);
    check_transformer(&w, out, "transformer");
    check_detection(out, "transformer", "blocks.0.attn1.to_q", "patch_embedding");
    /* one transformer: the base's transformer_2 is not replaced, so it is copied */
    assert_same_file(a = qt_path(w.base, "transformer_2/diffusion_pytorch_model.safetensors"), p = qt_path(out, "transformer_2/diffusion_pytorch_model.safetensors"));
    free(a), free(p);
    assert_true(exists(out, "transformer_2/extra.txt"));
    free(out);
    free_world(&w);
}

static bool leftovers(const char *dir) {
    char **names;
    size_t n;
    bool any = false;
    if (qd_list_dirs(dir, &names, &n)) return false;
    for (size_t i = 0; i < n; i++) any |= strstr(names[i], ".qdit-") != NULL;
    qd_free_names(names, n);
    return any;
}

static void expect_fail(const world *w, const char *want, const char *type, const char *base, const char *quant, const char *out, bool overwrite) {
    char *o = NULL, *e = NULL;
    int rc = qt_run_qdit(&o, &e, "convert", "wan-repack", "--model-type", type, "--original-model-path", base, "--quant-path", quant, "--output-path", out,
                         overwrite ? "--overwrite" : NULL, NULL);
    print_message("error: %s", e);
    assert_int_equal(rc, 1);
    if (!strstr(e, want)) fail_msg("'%s' not in: %s", want, e);
    assert_false(leftovers(w->dir));
    free(o), free(e);
}

static void test_bad_inputs(void **state) {
    (void)state;
    world w;
    make_world(&w, true);
    char *never = qt_path(w.dir, "never"), *p;
    struct stat st;
    expect_fail(&w, "--model-type Wan2.1-T2V-14B", "Wan2.1-T2V-14B", w.base, w.quant, never, false);
    expect_fail(&w, "--original-model-path", "Wan2.2-T2V-A14B", never, w.quant, never, false);
    expect_fail(&w, "--quant-path", "Wan2.2-T2V-A14B", w.base, never, never, false);
    /* TI2V-5B on an A14B quant folder: no weights at its top */
    expect_fail(&w, "no quant_model_weight*.safetensors in", "Wan2.2-TI2V-5B", w.base, w.quant, never, false);
    /* the output inside the base */
    char *inner = qt_path(w.base, "out");
    expect_fail(&w, "inside --original-model-path", "Wan2.2-T2V-A14B", w.base, w.quant, inner, false);
    assert_false(exists(w.base, "out"));
    free(inner);
    /* a missing low_noise_model: the failure comes after the first transformer; nothing is left */
    char *lq = qt_path(w.quant, "low_noise_model"), *lq2 = qt_path(w.quant, "low");
    assert_int_equal(rename(lq, lq2), 0);
    expect_fail(&w, "low_noise_model", "Wan2.2-T2V-A14B", w.base, w.quant, never, false);
    assert_int_not_equal(stat(never, &st), 0);
    assert_int_equal(rename(lq2, lq), 0);
    /* no description */
    char *ld = qt_path(lq, "quant_model_description.json"), *ld2 = qt_path(lq, "description.bak");
    assert_int_equal(rename(ld, ld2), 0);
    expect_fail(&w, "no quant_model_description*.json", "Wan2.2-T2V-A14B", w.base, w.quant, never, false);
    /* a description that is not an object */
    qt_write_text(ld, "[1, 2]");
    expect_fail(&w, "expected a JSON object", "Wan2.2-T2V-A14B", w.base, w.quant, never, false);
    assert_int_equal(rename(ld2, ld), 0);
    /* two tensors that would share a name */
    qt_write_raw_safetensors(p = qt_path(lq, "quant_model_weight_x.safetensors"),
                             "{\"blocks.0.attn1.to_v.weight\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "\x05", 1);
    expect_fail(&w, "would both be named 'blocks.0.attn1.to_v.weight'", "Wan2.2-T2V-A14B", w.base, w.quant, never, false);
    unlink(p), free(p);
    /* a truncated weight file is named */
    qt_write_file(p = qt_path(lq, "quant_model_weight_y.safetensors"), "\x40\x00\x00\x00\x00\x00\x00\x00{", 9);
    expect_fail(&w, "quant_model_weight_y.safetensors", "Wan2.2-T2V-A14B", w.base, w.quant, never, false);
    unlink(p), free(p);
    assert_int_not_equal(stat(never, &st), 0);
    /* an existing folder: refused without --overwrite; with it, refused unless it is an earlier output */
    char *keep = qt_path(never, "notes.txt");
    qt_write_text(keep, "mine");
    expect_fail(&w, "--overwrite", "Wan2.2-T2V-A14B", w.base, w.quant, never, false);
    expect_fail(&w, "does not look like one", "Wan2.2-T2V-A14B", w.base, w.quant, never, true);
    assert_int_equal(stat(keep, &st), 0);
    free(keep), free(never), free(lq), free(lq2), free(ld), free(ld2);
    free_world(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_a14b), cmocka_unit_test(test_ti2v), cmocka_unit_test(test_bad_inputs)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
