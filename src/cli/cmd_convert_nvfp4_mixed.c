/* qdit convert nvfp4-mixed --base-transformer-dir BASE --modelopt-hf-dir EXPORT --output-dir OUT
 * [--pattern-preset none|flux1-nvfp4] [--keep-bf16-pattern GLOB]… [--swap-weight-nibbles|--no-swap-weight-nibbles]
 * [--overwrite] — SGLang's build_modelopt_nvfp4_transformer in C (convert/nvfp4_mixed.h). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "convert/nvfp4_mixed.h"

static void usage(FILE *to) {
    fprintf(to,
            "usage: qdit convert nvfp4-mixed --base-transformer-dir BASE --modelopt-hf-dir EXPORT --output-dir OUT\n"
            "                                [--pattern-preset none|flux1-nvfp4] [--keep-bf16-pattern GLOB]...\n"
            "                                [--swap-weight-nibbles | --no-swap-weight-nibbles] [--overwrite]\n"
            "\n"
            "The equivalent of SGLang's build_modelopt_nvfp4_transformer: a ModelOpt NVFP4 export whose modules matching\n"
            "the patterns (module names, `*` any characters) carry the BF16 base transformer's tensors instead, with\n"
            "their scales dropped and the patterns added to quantization_config.ignore.\n"
            "  --base-transformer-dir BASE   the original BF16 transformer (or its pipeline folder)\n"
            "  --modelopt-hf-dir EXPORT      ModelOpt's --hf-ckpt-dir output (or its transformer/)\n"
            "  --output-dir OUT              the folder to write (created; must be empty unless --overwrite)\n"
            "  --pattern-preset P            none (default) or flux1-nvfp4 (FLUX.1's validated BF16 modules)\n"
            "  --keep-bf16-pattern GLOB      one more module pattern (repeatable)\n"
            "  --swap-weight-nibbles         record that the runtime swaps the packed FP4 nibbles (default: no)\n"
            "  --overwrite                   replace the files of an earlier conversion in OUT\n");
}

int qd_cmd_convert_nvfp4_mixed(int argc, char **argv) {
    qd_nvfp4_mixed_args a = {.preset = "none"};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "--overwrite")) {
            a.overwrite = true;
        } else if (!strcmp(f, "--swap-weight-nibbles")) {
            a.swap_weight_nibbles = true;
        } else if (!strcmp(f, "--no-swap-weight-nibbles")) {
            a.swap_weight_nibbles = false;
        } else if (!strcmp(f, "--base-transformer-dir") && v) {
            a.base_dir = v, i++;
        } else if (!strcmp(f, "--modelopt-hf-dir") && v) {
            a.modelopt_dir = v, i++;
        } else if (!strcmp(f, "--output-dir") && v) {
            a.output_dir = v, i++;
        } else if (!strcmp(f, "--pattern-preset") && v) {
            a.preset = v, i++;
        } else if (!strcmp(f, "--keep-bf16-pattern") && v) {
            if (a.n_patterns == QD_NVFP4_MIXED_MAX_PATTERNS) {
                fprintf(stderr, "qdit convert nvfp4-mixed: more than %d --keep-bf16-pattern flags\n", QD_NVFP4_MIXED_MAX_PATTERNS);
                return 2;
            }
            a.patterns[a.n_patterns++] = v, i++;
        } else {
            fprintf(stderr, "qdit convert nvfp4-mixed: unexpected argument '%s'%s (see qdit convert nvfp4-mixed --help)\n", f,
                    v ? "" : " or a missing value");
            return 2;
        }
    }
    if (qd_convert_nvfp4_mixed(&a)) {
        fprintf(stderr, "qdit convert nvfp4-mixed: %s\n", qd_last_error());
        return 1;
    }
    return 0;
}
