/* Repository layouts (pipeline, component, file, index, folder), component classes, and hub repo ids
 * resolved in a local Hugging Face cache built in a temporary folder. */
#include <stdlib.h>
#include <string.h>

#include "io/fs.h"
#include "load/hf_cache.h"
#include "load/repo.h"
#include "test_util.h"

static const char *ONE = "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}";

static void st(const char *dir, const char *rel) {
    char *p = qt_path(dir, rel);
    qt_write_raw_safetensors(p, ONE, "abcd", 4);
    free(p);
}

static void text(const char *dir, const char *rel, const char *t) {
    char *p = qt_path(dir, rel);
    qt_write_text(p, t);
    free(p);
}

static void build_pipeline(const char *dir) {
    text(dir, "model_index.json",
         "{\"_class_name\":\"ZImagePipeline\",\"_diffusers_version\":\"0.36.0\",\"force_zeros_for_empty_prompt\":true,"
         "\"scheduler\":[\"diffusers\",\"FlowMatchEulerDiscreteScheduler\"],"
         "\"text_encoder\":[\"transformers\",\"Qwen3Model\"],\"tokenizer\":[\"transformers\",\"Qwen2Tokenizer\"],"
         "\"transformer\":[\"diffusers\",\"ZImageTransformer2DModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"],"
         "\"safety_checker\":[null,null]}");
    text(dir, "scheduler/scheduler_config.json", "{\"_class_name\":\"FlowMatchEulerDiscreteScheduler\"}");
    text(dir, "text_encoder/config.json", "{\"architectures\":[\"Qwen3Model\"]}");
    st(dir, "text_encoder/model-00001-of-00002.safetensors");
    text(dir, "tokenizer/tokenizer_config.json", "{\"tokenizer_class\":\"Qwen2Tokenizer\"}");
    text(dir, "transformer/config.json", "{\"_class_name\":\"ZImageTransformer2DModel\"}");
    st(dir, "transformer/diffusion_pytorch_model.safetensors");
    st(dir, "transformer/diffusion_pytorch_model.fp16.safetensors");
    text(dir, "vae/config.json", "{\"_class_name\":\"AutoencoderKL\"}");
    st(dir, "vae/diffusion_pytorch_model.safetensors");
}

static void test_pipeline(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("pipe");
    build_pipeline(dir);
    qd_repo *r;
    assert_int_equal(qd_repo_open(dir, &r), QD_OK);
    assert_int_equal(r->layout, QD_LAYOUT_PIPELINE);
    assert_string_equal(r->pipeline_class, "ZImagePipeline");
    assert_int_equal(r->n_components, 5); /* safety_checker [null, null] is absent, settings are skipped */
    const char *names[] = {"scheduler", "text_encoder", "tokenizer", "transformer", "vae"};
    const char *classes[] = {"FlowMatchEulerDiscreteScheduler", "Qwen3Model", "Qwen2Tokenizer",
                             "ZImageTransformer2DModel", "AutoencoderKL"};
    const size_t files[] = {0, 1, 0, 1, 1};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(r->components[i].name, names[i]);
        assert_string_equal(r->components[i].class_name, classes[i]);
        assert_int_equal(r->components[i].weights.n_files, files[i]);
    }
    assert_string_equal(r->components[1].library, "transformers");
    /* the .fp16 variant is dropped beside its canonical file */
    assert_true(qd_path_has_suffix(r->components[3].weights.files[0], "/diffusion_pytorch_model.safetensors"));
    qd_repo_close(r);
    qt_rmtree(dir);
    free(dir);
}

static void test_component_and_file(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("comp");
    build_pipeline(dir);
    char *te = qt_path(dir, "text_encoder");
    qd_repo *r;
    assert_int_equal(qd_repo_open(te, &r), QD_OK);
    assert_int_equal(r->layout, QD_LAYOUT_COMPONENT);
    assert_int_equal(r->n_components, 1);
    assert_string_equal(r->components[0].name, "text_encoder");
    assert_string_equal(r->components[0].class_name, "Qwen3Model");
    assert_non_null(r->components[0].config_path);
    qd_repo_close(r);

    /* a single file: named after its folder, described by the adjacent config.json */
    char *file = qt_path(dir, "vae/diffusion_pytorch_model.safetensors");
    assert_int_equal(qd_repo_open(file, &r), QD_OK);
    assert_int_equal(r->layout, QD_LAYOUT_FILE);
    assert_string_equal(r->components[0].name, "vae");
    assert_string_equal(r->components[0].class_name, "AutoencoderKL");
    assert_int_equal(r->components[0].weights.n_files, 1);
    qd_repo_close(r);

    /* an index file as the path */
    text(dir, "t2/diffusion_pytorch_model.safetensors.index.json", "{\"weight_map\":{\"w\":\"a.safetensors\"}}");
    st(dir, "t2/a.safetensors");
    char *idx = qt_path(dir, "t2/diffusion_pytorch_model.safetensors.index.json");
    assert_int_equal(qd_repo_open(idx, &r), QD_OK);
    assert_int_equal(r->layout, QD_LAYOUT_FILE);
    assert_non_null(r->components[0].weights.index_path);
    assert_int_equal(r->components[0].weights.n_files, 1);
    qd_repo_close(r);
    /* the folder holding only the index and its shard is a component */
    char *t2 = qt_path(dir, "t2");
    assert_int_equal(qd_repo_open(t2, &r), QD_OK);
    assert_int_equal(r->layout, QD_LAYOUT_COMPONENT);
    assert_null(r->components[0].class_name);
    qd_repo_close(r);
    free(t2);
    free(idx);
    free(file);
    free(te);
    qt_rmtree(dir);
    free(dir);
}

static void test_folder_layouts(void **state) {
    (void)state;
    char *dir = qt_mkdtemp("folder");
    /* weights-only folder of one shard family: a component named after the folder */
    st(dir, "w/model-00001-of-00002.safetensors");
    st(dir, "w/model-00002-of-00002.safetensors");
    char *w = qt_path(dir, "w");
    qd_repo *r;
    /* both shards hold tensor 'w': the set is invalid, but layout detection does not open files */
    assert_int_equal(qd_repo_open(w, &r), QD_OK);
    assert_int_equal(r->layout, QD_LAYOUT_COMPONENT);
    assert_string_equal(r->components[0].name, "w");
    assert_int_equal(r->components[0].weights.n_files, 2);
    qd_repo_close(r);
    /* a folder with a component sub-folder and unrelated loose files: each listed */
    text(dir, "f/transformer/config.json", "{\"_class_name\":\"FluxTransformer2DModel\"}");
    st(dir, "f/transformer/diffusion_pytorch_model.safetensors");
    st(dir, "f/io.safetensors");
    st(dir, "f/other.safetensors");
    char *f = qt_path(dir, "f");
    assert_int_equal(qd_repo_open(f, &r), QD_OK);
    assert_int_equal(r->layout, QD_LAYOUT_FOLDER);
    assert_int_equal(r->n_components, 3);
    assert_string_equal(r->components[0].name, "transformer");
    assert_string_equal(r->components[1].name, "io.safetensors");
    assert_string_equal(r->components[2].name, "other.safetensors");
    qd_repo_close(r);
    free(f);
    free(w);
    qt_rmtree(dir);
    free(dir);
}

static void test_repo_id_shape(void **state) {
    (void)state;
    assert_true(qd_hf_is_repo_id("black-forest-labs/FLUX.1-dev"));
    assert_true(qd_hf_is_repo_id("Tongyi-MAI/Z-Image-Turbo"));
    assert_false(qd_hf_is_repo_id("FLUX.1-dev"));
    assert_false(qd_hf_is_repo_id("a/b/c"));
    assert_false(qd_hf_is_repo_id("../x"));
    assert_false(qd_hf_is_repo_id("a/.."));
    assert_false(qd_hf_is_repo_id("/abs"));
    assert_false(qd_hf_is_repo_id("a b/c"));
}

static void test_hf_cache(void **state) {
    (void)state;
    char *home = qt_mkdtemp("hf");
    char *snap = qt_path(home, "hub/models--org--tiny-pipe/snapshots/0123abcd");
    build_pipeline(snap);
    text(home, "hub/models--org--tiny-pipe/refs/main", "0123abcd\n");
    setenv("HF_HOME", home, 1);
    unsetenv("HF_HUB_CACHE");
    qd_repo *r;
    assert_int_equal(qd_repo_open("org/tiny-pipe", &r), QD_OK);
    assert_string_equal(r->repo_id, "org/tiny-pipe");
    assert_string_equal(r->root, snap);
    assert_int_equal(r->layout, QD_LAYOUT_PIPELINE);
    assert_int_equal(r->n_components, 5);
    qd_repo_close(r);

    /* HF_HUB_CACHE wins over HF_HOME */
    char *hub = qt_path(home, "hub");
    setenv("HF_HUB_CACHE", hub, 1);
    setenv("HF_HOME", "/nonexistent", 1);
    char *cache = qd_hf_cache_dir();
    assert_string_equal(cache, hub);
    free(cache);
    assert_int_equal(qd_repo_open("org/tiny-pipe", &r), QD_OK);
    qd_repo_close(r);

    /* absent repo: the message says where qdit looked and that it never downloads */
    assert_int_equal(qd_repo_open("org/absent", &r), QD_ENOTFOUND);
    assert_non_null(strstr(qd_last_error(), "models--org--absent"));
    assert_non_null(strstr(qd_last_error(), "never downloads"));
    /* refs/main naming a missing snapshot */
    text(home, "hub/models--org--broken/refs/main", "feedbeef");
    assert_int_equal(qd_repo_open("org/broken", &r), QD_ENOTFOUND);
    assert_non_null(strstr(qd_last_error(), "snapshots/feedbeef"));
    /* a revision that is not a hash */
    text(home, "hub/models--org--weird/refs/main", "../../etc");
    assert_int_equal(qd_repo_open("org/weird", &r), QD_EFORMAT);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_HOME");
    free(hub);
    free(snap);
    qt_rmtree(home);
    free(home);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipeline),       cmocka_unit_test(test_component_and_file),
        cmocka_unit_test(test_folder_layouts), cmocka_unit_test(test_repo_id_shape),
        cmocka_unit_test(test_hf_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
