/* convert/output.c: shard sizes, the shard layout and its index, the save-dir rules, the config rewrite.
 * Tensor bytes are random (seed printed); files are read back with the library's reader and checked
 * against what was put, the index against the files. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/output.h"
#include "io/ckpt.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "test_util.h"

static void test_parse_size(void **state) {
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes;
    } ok[] = {{"5GB", 5000000000ull}, {"500MB", 500000000ull}, {"1MiB", 1048576ull}, {"2gib", 2147483648ull},
              {"1073741824", 1073741824ull}, {"1.5KiB", 1536ull}, {"64KB", 64000ull}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        uint64_t v = 0;
        assert_int_equal(qd_parse_size("--max-shard-size", ok[i].text, &v), QD_OK);
        assert_int_equal(v, ok[i].bytes);
    }
    const char *bad[] = {"", "lots", "5XB", "-1GB", "100", "GB", "1e30GB", "nan"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t v;
        assert_int_equal(qd_parse_size("--max-shard-size", bad[i], &v), QD_EINVAL);
        assert_non_null(strstr(qd_last_error(), "--max-shard-size"));
    }
}

/* five tensors of 3, 3, 10, 1 and 2 KiB f32 under a 6 KiB limit: [a b] [c] [d e] — the 10 KiB one alone */
static void test_shards(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("shards");
    uint64_t seed = qt_seed();
    const char *names[5] = {"a.weight", "b.weight", "c.weight", "d.bias", "e.weight"};
    const int64_t elems[5] = {768, 768, 2560, 256, 512};
    const int want_shard[5] = {1, 1, 2, 3, 3};
    float *data[5];
    qd_shards *s;
    assert_int_equal(qd_shards_new(dir, "diffusion_pytorch_model", 6 * 1024, &s), QD_OK);
    for (int i = 0; i < 5; i++) {
        data[i] = malloc(sizeof(float) * (size_t)elems[i]);
        for (int64_t k = 0; k < elems[i]; k++) data[i][k] = qt_rand_uniform(&seed, -2, 2);
        int64_t shape[2] = {elems[i] / 256, 256};
        assert_int_equal(qd_shards_add(s, names[i], QD_DTYPE_F32, 2, shape), QD_OK);
    }
    int64_t one = 1;
    assert_int_equal(qd_shards_add(s, "a.weight", QD_DTYPE_F32, 1, &one), QD_EINVAL); /* twice */
    assert_int_equal(qd_shards_begin(s, "test"), QD_OK);
    assert_int_equal(qd_shards_count(s), 3);
    assert_int_equal(qd_shards_put(s, "nope", data[0], 4), QD_EINVAL);
    for (int i = 4; i >= 0; i--) assert_int_equal(qd_shards_put(s, names[i], data[i], sizeof(float) * (uint64_t)elems[i]), QD_OK);
    /* nothing under a final name before finish */
    char **files;
    size_t n;
    assert_int_equal(qd_list_files(dir, ".safetensors", &files, &n), 0);
    assert_int_equal(n, 0);
    qd_free_names(files, n);
    assert_int_equal(qd_shards_finish(s), QD_OK);

    char *idx = qt_path(dir, "diffusion_pytorch_model.safetensors.index.json");
    json_t *doc = json_load_file(idx, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "metadata"), "total_size")), 4 * (768 + 768 + 2560 + 256 + 512));
    qd_ckpt *ck;
    assert_int_equal(qd_ckpt_open_index(idx, &ck), QD_OK);
    assert_int_equal(ck->n_files, 3);
    for (int i = 0; i < 5; i++) {
        char want[128];
        snprintf(want, sizeof want, "diffusion_pytorch_model-%05d-of-00003.safetensors", want_shard[i]);
        assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "weight_map"), names[i])), want);
        const qd_ckpt_entry *e = qd_ckpt_find(ck, names[i]);
        assert_non_null(e);
        assert_int_equal(e->tensor->elements, elems[i]);
        assert_memory_equal(qd_st_data(e->file, e->tensor), data[i], sizeof(float) * (size_t)elems[i]);
        free(data[i]);
    }
    qd_ckpt_close(ck);
    json_decref(doc);
    free(idx);
    qt_rmtree(dir);
    free(dir);
}

/* an unfinished conversion leaves nothing behind */
static void test_shards_abort(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("abort");
    qd_shards *s;
    int64_t shape[1] = {4};
    float v[4] = {1, 2, 3, 4};
    assert_int_equal(qd_shards_new(dir, "m", 1 << 20, &s), QD_OK);
    assert_int_equal(qd_shards_add(s, "x", QD_DTYPE_F32, 1, shape), QD_OK);
    assert_int_equal(qd_shards_add(s, "y", QD_DTYPE_F32, 1, shape), QD_OK);
    assert_int_equal(qd_shards_begin(s, NULL), QD_OK);
    assert_int_equal(qd_shards_put(s, "x", v, sizeof v), QD_OK);
    qd_shards_abort(s);
    char **files;
    size_t n;
    assert_int_equal(qd_list_files(dir, NULL, &files, &n), 0);
    assert_int_equal(n, 0);
    qd_free_names(files, n);
    /* finishing with a tensor never put is an error, and leaves nothing either */
    assert_int_equal(qd_shards_new(dir, "m", 1 << 20, &s), QD_OK);
    assert_int_equal(qd_shards_add(s, "x", QD_DTYPE_F32, 1, shape), QD_OK);
    assert_int_equal(qd_shards_begin(s, NULL), QD_OK);
    assert_int_not_equal(qd_shards_finish(s), QD_OK);
    assert_int_equal(qd_list_files(dir, NULL, &files, &n), 0);
    assert_int_equal(n, 0);
    qd_free_names(files, n);
    qt_rmtree(dir);
    free(dir);
}

/* qd_out_dir: the folder appears only at commit, replaces only a previous conversion, and an abort leaves
 * the old one as it was and no temporary sibling. */
static void test_save_dir(void **state) {
    (void)state;
    char *root = qt_mkdtemp("savedir"), *fresh = qt_path(root, "a/b/c"), *file = qt_path(root, "plain");
    qd_out_dir o;
    assert_int_equal(qd_out_dir_begin("--save-dir", fresh, false, NULL, &o), QD_OK);
    assert_false(qd_is_dir(fresh)); /* nothing under the final name before commit */
    char *in_tmp = qt_path(o.tmp, "config.json");
    qt_write_text(in_tmp, "{\"v\": 1}");
    free(in_tmp);
    assert_int_equal(qd_out_dir_commit(&o), QD_OK); /* created with its parents */
    char *cfg = qt_path(fresh, "config.json"), *shard = qt_path(fresh, "m-00001-of-00001.safetensors"), *other = qt_path(fresh, "README");
    assert_true(qd_is_file(cfg));
    char *parent = qt_path(root, "a/b");
    char **names = NULL;
    size_t n = 0;
    assert_int_equal(qd_list_dirs(parent, &names, &n), 0);
    assert_int_equal(n, 1); /* no temporary folder left beside it */
    qd_free_names(names, n);
    qt_write_text(file, "x");
    assert_int_equal(qd_out_dir_begin("--save-dir", file, false, NULL, &o), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "not a folder"));
    qt_write_text(shard, "x");
    assert_int_equal(qd_out_dir_begin("--save-dir", fresh, false, NULL, &o), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "not empty"));
    /* overwrite, then abort: the previous conversion stays */
    assert_int_equal(qd_out_dir_begin("--save-dir", fresh, true, NULL, &o), QD_OK);
    char *tmp = strdup(o.tmp);
    qd_out_dir_abort(&o);
    assert_false(qd_is_dir(tmp));
    assert_true(qd_is_file(cfg));
    assert_true(qd_is_file(shard));
    /* overwrite, then commit: only the new files */
    assert_int_equal(qd_out_dir_begin("--save-dir", fresh, true, NULL, &o), QD_OK);
    char *new_cfg = qt_path(o.tmp, "config.json");
    qt_write_text(new_cfg, "{\"v\": 2}");
    assert_int_equal(qd_out_dir_commit(&o), QD_OK);
    assert_false(qd_is_file(shard));
    size_t len;
    char *text = qt_read_file(cfg, &len);
    assert_non_null(strstr(text, "2"));
    free(text);
    /* anything else is refused and nothing deleted */
    qt_write_text(other, "mine");
    assert_int_equal(qd_out_dir_begin("--save-dir", fresh, true, NULL, &o), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "README"));
    assert_true(qd_is_file(cfg));
    free(cfg), free(shard), free(other), free(parent), free(tmp), free(new_cfg);
    qt_rmtree(root);
    free(root), free(fresh), free(file);
}

/* A converter that writes a folder tree with its own idea of an earlier output (`ours`): a sub-folder
 * called "keep" marks one. Overwrite replaces the whole tree; abort leaves it; a folder `ours` refuses is
 * named with its reason and left alone. */
static bool has_keep(const char *dir, char *why, size_t why_len) {
    char *p = qt_path(dir, "keep");
    bool ok = qd_is_dir(p);
    if (!ok) snprintf(why, why_len, "it has no 'keep' folder");
    free(p);
    return ok;
}

static void test_save_dir_tree(void **state) {
    (void)state;
    char *root = qt_mkdtemp("savedir-tree"), *out = qt_path(root, "out");
    qd_out_dir o;
    assert_int_equal(qd_out_dir_begin("--output-path", out, false, has_keep, &o), QD_OK);
    char *sub = qt_path(o.tmp, "keep/deeper"), *f1 = qt_path(sub, "one.txt");
    assert_int_equal(qd_make_dirs(sub), QD_OK);
    qt_write_text(f1, "1");
    assert_int_equal(qd_out_dir_commit(&o), QD_OK);
    char *got1 = qt_path(out, "keep/deeper/one.txt");
    assert_true(qd_is_file(got1));
    /* overwrite then abort: the tree stays, the temporary tree goes */
    assert_int_equal(qd_out_dir_begin("--output-path", out, true, has_keep, &o), QD_OK);
    char *tsub = qt_path(o.tmp, "x/y"), *tmp = strdup(o.tmp);
    assert_int_equal(qd_make_dirs(tsub), QD_OK);
    qd_out_dir_abort(&o);
    assert_false(qd_is_dir(tmp));
    assert_true(qd_is_file(got1));
    /* overwrite then commit: the whole earlier tree replaced, nothing left beside it */
    assert_int_equal(qd_out_dir_begin("--output-path", out, true, has_keep, &o), QD_OK);
    char *f2 = qt_path(o.tmp, "keep/two.txt"), *k2 = qt_path(o.tmp, "keep");
    assert_int_equal(qd_make_dirs(k2), QD_OK);
    qt_write_text(f2, "2");
    assert_int_equal(qd_out_dir_commit(&o), QD_OK);
    char *got2 = qt_path(out, "keep/two.txt");
    assert_true(qd_is_file(got2));
    assert_false(qd_is_file(got1));
    char **names = NULL;
    size_t n = 0;
    assert_int_equal(qd_list_dirs(root, &names, &n), 0);
    assert_int_equal(n, 1);
    qd_free_names(names, n);
    /* a folder the predicate refuses: the reason is in the message, nothing is touched */
    char *other = qt_path(root, "other"), *mine = qt_path(other, "mine.txt");
    assert_int_equal(qd_make_dirs(other), QD_OK);
    qt_write_text(mine, "mine");
    assert_int_equal(qd_out_dir_begin("--output-path", other, true, has_keep, &o), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "--output-path"));
    assert_non_null(strstr(qd_last_error(), "no 'keep' folder"));
    assert_true(qd_is_file(mine));
    assert_int_equal(qd_out_dir_begin("--output-path", "", false, has_keep, &o), QD_EINVAL);
    assert_non_null(strstr(qd_last_error(), "--output-path DIR is required"));
    free(sub), free(f1), free(got1), free(tsub), free(tmp), free(f2), free(k2), free(got2), free(other), free(mine);
    qt_rmtree(root);
    free(root), free(out);
}

/* Python's json.dumps(sort_keys=True) form, including separators inside strings left alone. */
static void test_json_python(void **state) {
    (void)state;
    json_t *v = json_pack("{s:[i, s], s:{s:b}, s:s}", "b", 1, "x,y", "a", "z", true, "c", "k: v, \"q\"");
    char *text = qd_json_dumps_python(v);
    assert_string_equal(text, "{\"a\": {\"z\": true}, \"b\": [1, \"x,y\"], \"c\": \"k: v, \\\"q\\\"\"}");
    free(text);
    json_decref(v);
}

static void test_write_config(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("config");
    json_t *cfg = json_pack("{s:s, s:i, s:{s:s}}", "_class_name", "FluxTransformer2DModel", "num_layers", 19, "quantization_config",
                            "quant_method", "modelopt");
    assert_int_equal(qd_write_config(dir, cfg), QD_OK);
    assert_non_null(json_object_get(cfg, "quantization_config")); /* the caller's copy is untouched */
    char *path = qt_path(dir, "config.json");
    json_t *back = json_load_file(path, 0, NULL);
    assert_non_null(back);
    assert_null(json_object_get(back, "quantization_config"));
    assert_int_equal(json_integer_value(json_object_get(back, "num_layers")), 19);
    assert_string_equal(json_string_value(json_object_get(back, "_class_name")), "FluxTransformer2DModel");
    json_decref(back), json_decref(cfg);
    free(path);
    qt_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),  cmocka_unit_test(test_shards),       cmocka_unit_test(test_shards_abort),
        cmocka_unit_test(test_save_dir), cmocka_unit_test(test_save_dir_tree), cmocka_unit_test(test_json_python),    cmocka_unit_test(test_write_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
