/* Malformed inputs, table-driven: each case builds a broken file or folder, runs `qdit inspect` on
 * it, and requires a non-zero exit, exactly one line on stderr that names the file at fault and the
 * problem, nothing on stdout, and no crash (a sanitizer report would add lines and fail the test). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"

typedef struct {
    const char *name;
    void (*setup)(const char *dir);
    const char *target;   /* path to inspect, relative to the case folder */
    const char *names;    /* a fragment of the path the message must name */
    const char *problem;  /* what the message must say */
} bad_case;

static char *in(const char *dir, const char *rel) { return qt_path(dir, rel); }

static void write_at(const char *dir, const char *rel, const void *data, size_t n) {
    char *p = in(dir, rel);
    qt_write_file(p, data, n);
    free(p);
}

static void text_at(const char *dir, const char *rel, const char *text) { write_at(dir, rel, text, strlen(text)); }

static void st_at(const char *dir, const char *rel, const char *header, size_t data_bytes) {
    char *p = in(dir, rel);
    uint8_t *data = calloc(data_bytes + 1, 1);
    for (size_t i = 0; i < data_bytes; i++) data[i] = (uint8_t)(i * 7 + 1);
    qt_write_raw_safetensors(p, header, data, data_bytes);
    free(data);
    free(p);
}

/* A header length prefix followed by `body`. */
static void len_prefixed(const char *dir, const char *rel, uint64_t len, const char *body) {
    size_t n = strlen(body);
    uint8_t *buf = malloc(8 + n);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(len >> (8 * i));
    memcpy(buf + 8, body, n);
    write_at(dir, rel, buf, 8 + n);
    free(buf);
}

#define ONE "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"

static void s_short(const char *d) { write_at(d, "m.safetensors", "\x10\x00\x00", 3); }
static void s_len_past_end(const char *d) { len_prefixed(d, "m.safetensors", 200, ONE); }
static void s_len_2_63(const char *d) { len_prefixed(d, "m.safetensors", 1ull << 63, ONE); }
static void s_len_max(const char *d) { len_prefixed(d, "m.safetensors", ~0ull, ONE); }
static void s_bad_json(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",", 8); }
static void s_not_object(const char *d) { st_at(d, "m.safetensors", "[1, 2, 3]", 8); }
static void s_bad_utf8(const char *d) { st_at(d, "m.safetensors", "{\"w\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8); }
static void s_unknown_dtype(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8); }
static void s_negative_shape(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8); }
static void s_overflow_shape(const char *d) {
    st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8);
}
static void s_bytes_overflow(const char *d) {
    /* 2^62 elements fit in 63 bits, but 2^62 × 4 bytes does not fit in 64 */
    st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8);
}
static void s_huge_int(const char *d) {
    st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,8]}}", 8);
}
static void s_float_shape(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8); }
static void s_past_end(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8); }
static void s_reversed(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8); }
static void s_size_mismatch(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24); }
static void s_overlap(const char *d) {
    st_at(d, "m.safetensors",
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
}
static void s_duplicate(const char *d) {
    st_at(d, "m.safetensors",
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16);
}
static void s_meta_not_string_fixed(const char *d) {
    st_at(d, "m.safetensors", "{\"__metadata__\":{\"format\":1},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
}
static void s_no_offsets(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8); }
static void s_three_offsets(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8); }
static void s_f4_odd(const char *d) { st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2); }
static void s_rank9(const char *d) {
    st_at(d, "m.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1);
}
static void s_tensor_not_object(const char *d) { st_at(d, "m.safetensors", "{\"w\":[1,2]}", 8); }
static void s_empty_header(const char *d) { len_prefixed(d, "m.safetensors", 0, ""); }

#define INDEX(map) "{\"metadata\":{\"total_size\":16},\"weight_map\":" map "}"
static void comp_with_shards(const char *d) {
    text_at(d, "t/config.json", "{\"_class_name\": \"FluxTransformer2DModel\"}");
    st_at(d, "t/diffusion_pytorch_model-00001-of-00002.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
}
static void s_index_missing_shard(const char *d) {
    comp_with_shards(d);
    text_at(d, "t/diffusion_pytorch_model.safetensors.index.json",
            INDEX("{\"a\":\"diffusion_pytorch_model-00001-of-00002.safetensors\","
                  "\"b\":\"diffusion_pytorch_model-00002-of-00002.safetensors\"}"));
}
static void s_index_missing_tensor(const char *d) {
    comp_with_shards(d);
    st_at(d, "t/diffusion_pytorch_model-00002-of-00002.safetensors", "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    text_at(d, "t/diffusion_pytorch_model.safetensors.index.json",
            INDEX("{\"a\":\"diffusion_pytorch_model-00001-of-00002.safetensors\","
                  "\"b\":\"diffusion_pytorch_model-00002-of-00002.safetensors\","
                  "\"c\":\"diffusion_pytorch_model-00002-of-00002.safetensors\"}"));
}
static void s_index_wrong_shard(const char *d) {
    comp_with_shards(d);
    st_at(d, "t/diffusion_pytorch_model-00002-of-00002.safetensors", "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    text_at(d, "t/diffusion_pytorch_model.safetensors.index.json",
            INDEX("{\"a\":\"diffusion_pytorch_model-00002-of-00002.safetensors\","
                  "\"b\":\"diffusion_pytorch_model-00001-of-00002.safetensors\"}"));
}
static void s_index_traversal(const char *d) {
    comp_with_shards(d);
    text_at(d, "t/diffusion_pytorch_model.safetensors.index.json", INDEX("{\"a\":\"../secret.safetensors\"}"));
}
static void s_index_bad_json(const char *d) {
    comp_with_shards(d);
    text_at(d, "t/diffusion_pytorch_model.safetensors.index.json", "{\"weight_map\": {\"a\": ");
}
static void s_index_no_map(const char *d) {
    comp_with_shards(d);
    text_at(d, "t/diffusion_pytorch_model.safetensors.index.json", "{\"metadata\": {}}");
}
static void s_duplicate_across_shards(const char *d) {
    comp_with_shards(d);
    st_at(d, "t/diffusion_pytorch_model-00002-of-00002.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
}
static void s_config_bad_json(const char *d) {
    text_at(d, "t/config.json", "{\"_class_name\": \"FluxTransformer2DModel\",,}");
    st_at(d, "t/diffusion_pytorch_model.safetensors", ONE, 8);
}
static void s_config_is_folder(const char *d) {
    char *p = in(d, "t/config.json");
    text_at(d, "t/config.json/x", "{}");
    free(p);
    st_at(d, "t/diffusion_pytorch_model.safetensors", ONE, 8);
}
static void s_config_not_object(const char *d) {
    text_at(d, "t/config.json", "\"FluxTransformer2DModel\"");
    st_at(d, "t/diffusion_pytorch_model.safetensors", ONE, 8);
}
static void s_config_no_weights(const char *d) { text_at(d, "t/config.json", "{\"_class_name\": \"AutoencoderKL\"}"); }
static void s_only_pickles(const char *d) {
    text_at(d, "t/config.json", "{\"_class_name\": \"AutoencoderKL\"}");
    write_at(d, "t/diffusion_pytorch_model.bin", "PK\x03\x04", 4);
}
#define MODEL_INDEX "{\"_class_name\":\"FluxPipeline\",\"scheduler\":[\"diffusers\",\"FlowMatchEulerDiscreteScheduler\"]," \
                    "\"transformer\":[\"diffusers\",\"FluxTransformer2DModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"]}"
static void pipeline_base(const char *d) {
    text_at(d, "p/scheduler/scheduler_config.json", "{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\"}");
    text_at(d, "p/transformer/config.json", "{\"_class_name\": \"FluxTransformer2DModel\"}");
    st_at(d, "p/transformer/diffusion_pytorch_model.safetensors", ONE, 8);
}
static void s_pipeline_missing_component(const char *d) {
    pipeline_base(d);
    text_at(d, "p/model_index.json", MODEL_INDEX);
}
static void s_pipeline_bad_entry(const char *d) {
    pipeline_base(d);
    text_at(d, "p/model_index.json", "{\"_class_name\":\"FluxPipeline\",\"transformer\":[\"diffusers\"]}");
}
static void s_pipeline_bad_json(const char *d) {
    pipeline_base(d);
    text_at(d, "p/model_index.json", "{\"_class_name\":\"FluxPipeline\" \"transformer\":[]}");
}
static void s_pipeline_bad_weights(const char *d) {
    pipeline_base(d);
    text_at(d, "p/vae/config.json", "{\"_class_name\": \"AutoencoderKL\"}");
    st_at(d, "p/vae/diffusion_pytorch_model.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[9],\"data_offsets\":[0,36]}}", 8);
    text_at(d, "p/model_index.json", MODEL_INDEX);
}
static void s_pipeline_escape(const char *d) {
    pipeline_base(d);
    text_at(d, "p/model_index.json", "{\"../transformer\":[\"diffusers\",\"FluxTransformer2DModel\"]}");
}
static void s_empty_folder(const char *d) { text_at(d, "e/README.md", "nothing here"); }
static void s_not_safetensors(const char *d) { text_at(d, "notes.txt", "hello"); }
static void s_missing_path(const char *d) { (void)d; }
static void s_uncached_repo(const char *d) { (void)d; }

static const bad_case cases[] = {
    {"file shorter than the length prefix", s_short, "m.safetensors", "m.safetensors", "too short"},
    {"header length past the end of the file", s_len_past_end, "m.safetensors", "m.safetensors", "exceeds the file size"},
    {"header length 2^63", s_len_2_63, "m.safetensors", "m.safetensors", "exceeds the 100000000-byte limit"},
    {"header length 2^64-1", s_len_max, "m.safetensors", "m.safetensors", "exceeds the 100000000-byte limit"},
    {"empty header", s_empty_header, "m.safetensors", "m.safetensors", "does not start with a JSON object"},
    {"invalid JSON", s_bad_json, "m.safetensors", "m.safetensors", "invalid JSON"},
    {"header not an object", s_not_object, "m.safetensors", "m.safetensors", "does not start with a JSON object"},
    {"invalid UTF-8 in the header", s_bad_utf8, "m.safetensors", "m.safetensors", "invalid JSON"},
    {"unknown dtype", s_unknown_dtype, "m.safetensors", "m.safetensors", "unknown dtype 'F12'"},
    {"negative shape", s_negative_shape, "m.safetensors", "m.safetensors", "shape[0] is not a non-negative integer"},
    {"element count overflow", s_overflow_shape, "m.safetensors", "m.safetensors", "overflows 63 bits"},
    {"byte size overflow", s_bytes_overflow, "m.safetensors", "m.safetensors", "do not fill whole bytes"},
    {"integer beyond 64 bits", s_huge_int, "m.safetensors", "m.safetensors", "invalid JSON"},
    {"fractional shape", s_float_shape, "m.safetensors", "m.safetensors", "not a non-negative integer"},
    {"offsets past the end", s_past_end, "m.safetensors", "m.safetensors", "run past the end of the data section"},
    {"offsets reversed", s_reversed, "m.safetensors", "m.safetensors", "end before they begin"},
    {"size mismatch", s_size_mismatch, "m.safetensors", "m.safetensors", "need 24 bytes but data_offsets [0, 20] span 20"},
    {"overlapping tensors", s_overlap, "m.safetensors", "m.safetensors", "overlap"},
    {"duplicate names", s_duplicate, "m.safetensors", "m.safetensors", "duplicate object key"},
    {"metadata value not a string", s_meta_not_string_fixed, "m.safetensors", "m.safetensors", "\"__metadata__\" entry 'format' is not a string"},
    {"missing data_offsets", s_no_offsets, "m.safetensors", "m.safetensors", "data_offsets"},
    {"three data_offsets", s_three_offsets, "m.safetensors", "m.safetensors", "must be an array [begin, end]"},
    {"odd F4 element count", s_f4_odd, "m.safetensors", "m.safetensors", "do not fill whole bytes"},
    {"rank 9", s_rank9, "m.safetensors", "m.safetensors", "rank 9 exceeds"},
    {"tensor entry not an object", s_tensor_not_object, "m.safetensors", "m.safetensors", "expected an object"},
    {"index names a missing shard", s_index_missing_shard, "t", "00002-of-00002.safetensors", "names a shard that is missing"},
    {"shard lacks a promised tensor", s_index_missing_tensor, "t", "index.json", "promises tensor 'c'"},
    {"tensor in another shard than promised", s_index_wrong_shard, "t", "index.json", "promises tensor 'a' in diffusion_pytorch_model-00002-of-00002.safetensors, but it is in"},
    {"index escapes its folder", s_index_traversal, "t", "index.json", "relative to the index's folder"},
    {"index invalid JSON", s_index_bad_json, "t", "index.json", "invalid JSON"},
    {"index without weight_map", s_index_no_map, "t", "index.json", "\"weight_map\""},
    {"tensor in two shards", s_duplicate_across_shards, "t", "00002-of-00002.safetensors", "appears in both"},
    {"unreadable config.json (invalid JSON)", s_config_bad_json, "t", "config.json", "invalid JSON"},
    {"config.json is a folder", s_config_is_folder, "t", "config.json", "not a readable regular file"},
    {"config.json not an object", s_config_not_object, "t", "config.json", "expected a JSON object"},
    {"config.json without weights", s_config_no_weights, "t", "/t", "has a config.json but no weights"},
    {"only PyTorch pickles", s_only_pickles, "t", "/t", "only PyTorch pickle files"},
    {"model_index.json names a missing component", s_pipeline_missing_component, "p", "model_index.json", "names component 'vae'"},
    {"model_index.json entry not a pair", s_pipeline_bad_entry, "p", "model_index.json", "must be a [library, class] pair"},
    {"model_index.json invalid JSON", s_pipeline_bad_json, "p", "model_index.json", "invalid JSON"},
    {"model_index.json component outside the folder", s_pipeline_escape, "p", "model_index.json", "is not a folder name"},
    {"bad weights inside a pipeline", s_pipeline_bad_weights, "p", "vae/diffusion_pytorch_model.safetensors", "run past the end"},
    {"folder with nothing to inspect", s_empty_folder, "e", "/e", "no model_index.json"},
    {"not a safetensors file", s_not_safetensors, "notes.txt", "notes.txt", "expected a .safetensors file"},
    {"missing path", s_missing_path, "no/such/dir/x.safetensors", "no/such/dir", "no such file or folder"},
    {"repo id not in the cache", s_uncached_repo, "@cache:qdit-test/absent-repo", "qdit-test/absent-repo", "never downloads"},
};

static void run_case(const bad_case *c) {
    char *dir = qt_mkdtemp("bad");
    c->setup(dir);
    char *target;
    if (!strncmp(c->target, "@cache:", 7)) {
        /* point the cache at an empty folder so the machine's own cache cannot matter */
        setenv("HF_HUB_CACHE", dir, 1);
        target = strdup(c->target + 7);
    } else {
        target = qt_path(dir, c->target);
    }
    char *out, *err;
    int rc = qt_run_qdit(&out, &err, "inspect", target, NULL);
    unsetenv("HF_HUB_CACHE");
    size_t lines = 0;
    for (const char *p = err; *p; p++) lines += *p == '\n';
    if (rc != 1 || lines != 1 || !strstr(err, c->names) || !strstr(err, c->problem) || *out) {
        fail_msg("case '%s': rc=%d (want 1), %zu stderr lines (want 1), want '%s' and '%s' in: %s%s", c->name, rc,
                 lines, c->names, c->problem, err, *out ? "(and stdout was not empty)" : "");
    }
    print_message("ok: %-45s %s", c->name, err);
    free(out);
    free(err);
    free(target);
    qt_rmtree(dir);
    free(dir);
}

static void test_bad_inputs(void **state) {
    (void)state;
    size_t n = sizeof cases / sizeof *cases;
    assert_true(n >= 20);
    for (size_t i = 0; i < n; i++) run_case(&cases[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_bad_inputs)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
