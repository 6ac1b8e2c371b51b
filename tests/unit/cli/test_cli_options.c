/* SGLang-style model/quantization flag parsing (quant-sglang.md §1.1): value forms, component
 * overrides, nargs=+ lists, StoreBoolean, and the errors that name the flag. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_options.h"
#include "test_util.h"

/* Parse a NULL-terminated argument list, copied into writable storage (component keys are
 * rewritten in place, as in a real argv). */
static char storage[4096];
static char *argv_copy[64];

static qd_status parse(qd_options *o, char **rest, int *n_rest, char ***keep, ...) {
    int argc = 0;
    size_t used = 0;
    va_list ap;
    va_start(ap, keep);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        size_t len = strlen(a) + 1;
        memcpy(storage + used, a, len);
        argv_copy[argc++] = storage + used;
        used += len;
    }
    va_end(ap);
    *keep = argv_copy;
    qd_options_init(o);
    return qd_cli_parse_model_flags(argc, argv_copy, 0, o, rest, n_rest);
}

static void expect_error(qd_status s, const char *want) {
    assert_int_equal(s, QD_EINVAL);
    if (!strstr(qd_last_error(), want)) fail_msg("want '%s' in '%s'", want, qd_last_error());
}

static void test_sglang_flags(void **state) {
    (void)state;
    qd_options o;
    char *rest[64], **argv;
    int n;
    assert_int_equal(parse(&o, rest, &n, &argv, "--model-path", "black-forest-labs/FLUX.1-dev", "--transformer-path=/m/t",
                           "--transformer-2-path", "/m/t2", "--vae-path", "/m/vae/x.safetensors",
                           "--transformer-weights-path", "/w/svdq-int4_r32-flux.1-dev.safetensors", "--quantization",
                           "fp8", "--quantization-ignored-layers", "img_mod", "txt_mod", "to_out", "--json",
                           "positional", "--enable-svdquant", "false", "--quantization-rank=128", NULL),
                     QD_OK);
    assert_string_equal(o.model_path, "black-forest-labs/FLUX.1-dev");
    assert_int_equal(o.n_component_paths, 3);
    assert_string_equal(o.component_paths[0].component, "transformer");
    assert_string_equal(o.component_paths[0].path, "/m/t");
    assert_string_equal(o.component_paths[1].component, "transformer_2");
    assert_string_equal(o.component_paths[2].component, "vae");
    assert_string_equal(o.transformer_weights_path, "/w/svdq-int4_r32-flux.1-dev.safetensors");
    assert_string_equal(o.quantization, "fp8");
    assert_int_equal(o.n_ignored_layers, 3);
    assert_string_equal(o.ignored_layers[2], "to_out");
    assert_int_equal(o.enable_svdquant, 0);
    assert_int_equal(o.quantization_rank, 128);
    assert_int_equal(n, 2); /* the command's own flag and positional pass through in order */
    assert_string_equal(rest[0], "--json");
    assert_string_equal(rest[1], "positional");
}

static void test_store_boolean_and_defaults(void **state) {
    (void)state;
    qd_options o;
    char *rest[8], **argv;
    int n;
    assert_int_equal(parse(&o, rest, &n, &argv, "x", NULL), QD_OK);
    assert_int_equal(o.enable_svdquant, -1);
    assert_null(o.quantization);
    assert_int_equal(parse(&o, rest, &n, &argv, "--enable-svdquant", "x", NULL), QD_OK);
    assert_int_equal(o.enable_svdquant, 1); /* "x" is not a boolean: it stays positional */
    assert_int_equal(n, 1);
    assert_int_equal(parse(&o, rest, &n, &argv, "--enable-svdquant=TRUE", NULL), QD_OK);
    assert_int_equal(o.enable_svdquant, 1);
    /* a repeated component override replaces the earlier value */
    assert_int_equal(parse(&o, rest, &n, &argv, "--vae-path", "a", "--vae-path", "b", NULL), QD_OK);
    assert_int_equal(o.n_component_paths, 1);
    assert_string_equal(o.component_paths[0].path, "b");
    /* legacy spelling of the weights override */
    assert_int_equal(parse(&o, rest, &n, &argv, "--transformer-quantized-path", "w.safetensors", NULL), QD_OK);
    assert_string_equal(o.transformer_weights_path, "w.safetensors");
}

static void test_errors_name_the_flag(void **state) {
    (void)state;
    qd_options o;
    char *rest[8], **argv;
    int n;
    expect_error(parse(&o, rest, &n, &argv, "--quantization", NULL), "--quantization: expected a value");
    expect_error(parse(&o, rest, &n, &argv, "--quantization-ignored-layers", "--json", NULL),
                 "--quantization-ignored-layers: expected one or more");
    expect_error(parse(&o, rest, &n, &argv, "--quantization-rank", "zero", NULL),
                 "--quantization-rank: expected a positive integer, got 'zero'");
    expect_error(parse(&o, rest, &n, &argv, "--enable-svdquant=maybe", NULL),
                 "--enable-svdquant: expected true or false, got 'maybe'");
    expect_error(parse(&o, rest, &n, &argv, "--transformer-path", NULL), "--transformer-path: expected a folder");
    expect_error(parse(&o, rest, &n, &argv, "--model-path=", NULL), "--model-path: empty value");
    expect_error(parse(&o, rest, &n, &argv, "--dit-cpu-offload=sometimes", NULL),
                 "--dit-cpu-offload: expected true or false, got 'sometimes'");
    expect_error(parse(&o, rest, &n, &argv, "--dit-layerwise-offload=", NULL), "--dit-layerwise-offload: expected true or false, got ''");
}

/* SGLang's offload flags (quant-sglang.md §1.1): None (unset, the auto rule) unless given; bare = true; an
   explicit value either way; they go to the options, not to the command */
static void test_offload_flags(void **state) {
    (void)state;
    qd_options o;
    char *rest[8], **argv;
    int n;
    assert_int_equal(parse(&o, rest, &n, &argv, "--json", NULL), QD_OK);
    assert_int_equal(o.dit_layerwise_offload, -1);
    assert_int_equal(o.dit_cpu_offload, -1);
    assert_int_equal(o.pin_cpu_memory, -1);
    assert_int_equal(parse(&o, rest, &n, &argv, "--dit-layerwise-offload", "--dit-cpu-offload", "false", "--pin-cpu-memory=no", "pos", NULL),
                     QD_OK);
    assert_int_equal(o.dit_layerwise_offload, 1); /* bare: the next argument is a flag */
    assert_int_equal(o.dit_cpu_offload, 0);
    assert_int_equal(o.pin_cpu_memory, 0);
    assert_int_equal(n, 1);
    assert_string_equal(rest[0], "pos");
    assert_int_equal(parse(&o, rest, &n, &argv, "--dit-layerwise-offload", "False", "--dit-cpu-offload=1", "--dit-cpu-offload", NULL), QD_OK);
    assert_int_equal(o.dit_layerwise_offload, 0);
    assert_int_equal(o.dit_cpu_offload, 1); /* repeated: the last one holds (bare = true) */
    assert_int_equal(n, 0);
    assert_int_equal(parse(&o, rest, &n, &argv, "--dit-cpu-offload", "true", "--dit-cpu-offload", "off", NULL), QD_OK);
    assert_int_equal(o.dit_cpu_offload, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sglang_flags),
        cmocka_unit_test(test_store_boolean_and_defaults),
        cmocka_unit_test(test_errors_name_the_flag),
        cmocka_unit_test(test_offload_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
