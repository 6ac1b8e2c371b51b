/* qdit convert <sub-command> … — offline checkpoint converters (docs/cli.md). Each sub-command is one
 * cmd_convert_*.c; this table is the only place that lists them. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} converters[] = {
    {"activation-ranges", qd_cmd_convert_activation_ranges, "each transformer linear's real input range (min, max, amax) from calibration prompts, as JSON"},
    {"dequantize", qd_cmd_convert_dequantize, "write any checkpoint qdit reads as a plain diffusers transformer folder"},
    {"fp8", qd_cmd_convert_fp8, "a BF16 model folder's linears in FP8, as SGLang's convert_hf_to_fp8 writes them"},
    {"nvfp4-mixed", qd_cmd_convert_nvfp4_mixed, "a ModelOpt NVFP4 export with chosen modules back in BF16 (SGLang's builder)"},
    {"modelopt-fp8", qd_cmd_convert_modelopt_fp8, "a BF16 transformer as a ModelOpt FP8 folder (SGLang's builder output)"},
    {"modelopt-nvfp4", qd_cmd_convert_modelopt_nvfp4, "a BF16 transformer as a ModelOpt NVFP4 folder (SGLang's builder output)"},
    {"svdquant", qd_cmd_convert_svdquant, "a BF16 FLUX.1 / Z-Image transformer as one Nunchaku SVDQuant int4 / nvfp4 file"},
    {"wan-repack", qd_cmd_convert_wan_repack, "msModelSlim's quantized Wan2.2 as a diffusers folder (SGLang's wan_repack)"},
};

static void convert_usage(FILE *to) {
    fprintf(to, "usage: qdit convert <converter> [options]\n\nconverters:\n");
    for (size_t i = 0; i < sizeof converters / sizeof *converters; i++) fprintf(to, "  %-17s %s\n", converters[i].name, converters[i].summary);
    fprintf(to, "\nRun `qdit convert <converter> --help` for its options; docs/cli.md has the full reference.\n");
}

int qd_cmd_convert(int argc, char **argv) {
    if (argc < 2) {
        convert_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        convert_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof converters / sizeof *converters; i++)
        if (!strcmp(argv[1], converters[i].name)) return converters[i].run(argc - 1, argv + 1);
    fprintf(stderr, "qdit convert: unknown converter '%s' (expected", argv[1]);
    for (size_t i = 0; i < sizeof converters / sizeof *converters; i++) fprintf(stderr, "%s%s", i ? ", " : " ", converters[i].name);
    fprintf(stderr, "; see qdit convert --help)\n");
    return 2;
}
