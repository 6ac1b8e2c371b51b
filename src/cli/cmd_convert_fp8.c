/* qdit convert fp8 --model-dir IN --save-dir OUT [--strategy block|channel|tensor] [--block-size BN BK]
 * [--max-workers N] [--overwrite] — SGLang's convert_hf_to_fp8 in C (convert/fp8.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "convert/fp8.h"

static void usage(FILE *to) {
    fprintf(to,
            "usage: qdit convert fp8 --model-dir IN --save-dir OUT [--strategy block|channel|tensor] [--block-size BN BK]\n"
            "                        [--max-workers N] [--overwrite]\n"
            "\n"
            "The equivalent of SGLang's `python -m sglang.multimodal_gen.tools.convert_hf_to_fp8`: the linear weights of a\n"
            "BF16 safetensors model folder (a diffusers transformer/) quantized to FP8 E4M3 with SGLang's selection rule,\n"
            "scale names and quantization_config, one output file per input file, and model.safetensors.index.json.\n"
            "  --model-dir IN          the BF16 model folder\n"
            "  --save-dir OUT          the folder to write (created; must be empty unless --overwrite)\n"
            "  --strategy S            block (default: 128x128 tiles, weight_scale_inv), channel (per output row,\n"
            "                          compressed-tensors config) or tensor (one scale)\n"
            "  --block-size BN BK      the block strategy's tile (default 128 128)\n"
            "  --max-workers N         accepted for SGLang compatibility (qdit converts one tensor at a time)\n"
            "  --overwrite             replace the config.json and safetensors files of an earlier conversion in OUT\n");
}

static int parse_int(const char *flag, const char *v, int *out) {
    char *end = NULL;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || x < 1 || x > 65536) {
        fprintf(stderr, "qdit convert fp8: %s %s: expected a positive integer\n", flag, v ? v : "(missing)");
        return 2;
    }
    *out = (int)x;
    return 0;
}

int qd_cmd_convert_fp8(int argc, char **argv) {
    qd_convert_fp8_args a = {.strategy = QD_FP8_BLOCK, .block_n = 128, .block_k = 128};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int workers = 0;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "--overwrite")) {
            a.overwrite = true;
        } else if (!strcmp(f, "--model-dir") && v) {
            a.model_dir = v, i++;
        } else if (!strcmp(f, "--save-dir") && v) {
            a.save_dir = v, i++;
        } else if (!strcmp(f, "--strategy") && v) {
            if (!strcmp(v, "block")) a.strategy = QD_FP8_BLOCK;
            else if (!strcmp(v, "channel")) a.strategy = QD_FP8_CHANNEL;
            else if (!strcmp(v, "tensor")) a.strategy = QD_FP8_TENSOR;
            else {
                fprintf(stderr, "qdit convert fp8: --strategy %s: expected block, channel or tensor\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(f, "--block-size")) {
            if (parse_int("--block-size", v, &a.block_n) || parse_int("--block-size", i + 2 < argc ? argv[i + 2] : NULL, &a.block_k)) return 2;
            i += 2;
        } else if (!strcmp(f, "--max-workers")) {
            if (parse_int("--max-workers", v, &workers)) return 2;
            i++;
        } else {
            fprintf(stderr, "qdit convert fp8: unexpected argument '%s'%s (see qdit convert fp8 --help)\n", f, v ? "" : " or a missing value");
            return 2;
        }
    }
    if (qd_convert_fp8(&a)) {
        fprintf(stderr, "qdit convert fp8: %s\n", qd_last_error());
        return 1;
    }
    return 0;
}
