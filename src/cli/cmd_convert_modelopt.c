/* qdit convert modelopt-fp8 | modelopt-nvfp4 --model-dir IN --save-dir OUT [--model-type T]
 * [--keep-bf16-pattern REGEX]… [--calibrate PROMPTS [--pipeline DIR] [--calib-steps N] [--calib-size PX]]
 * [--overwrite] — a BF16 transformer as the folder SGLang's ModelOpt builders write (convert/modelopt.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_options.h"
#include "convert/modelopt.h"

static void usage(FILE *to, const char *cmd) {
    fprintf(to,
            "usage: qdit convert %s --model-dir IN --save-dir OUT [--model-type TYPE] [--keep-bf16-pattern REGEX]...\n"
            "                    [--calibrate PROMPTS_FILE [--pipeline DIR] [--calib-steps N] [--calib-size PX]] [--overwrite]\n"
            "\n"
            "A BF16 (or F16/F32) diffusers transformer folder written as the ModelOpt %s transformer folder SGLang's\n"
            "build_modelopt_%s_transformer writes: config.json with quantization_config (quant_method modelopt), per quantized\n"
            "linear weight, weight_scale%s and (calibrated) input_scale, one shard per source shard, and the index.\n"
            "  --model-dir IN            the BF16 transformer folder (config.json + safetensors)\n"
            "  --save-dir OUT            the folder to write (must be new or empty unless --overwrite)\n"
            "  --model-type TYPE         keep-BF16 preset: auto (default, from config _class_name), flux1, flux2, qwen-image,\n"
            "                            hunyuan-video, zimage, none\n"
            "  --keep-bf16-pattern REGEX a module whose name this regex finds stays BF16 (repeatable; Python re.search)\n"
            "%s"
            "  --overwrite               replace the config.json and safetensors files of an earlier conversion in OUT\n",
            cmd, cmd + 9, cmd + 9, !strcmp(cmd, "modelopt-nvfp4") ? ", weight_scale_2" : "",
            qd_cli_calib_flags_help("write static input_scale from each layer's input amax; without it, see docs/cli.md for what is written"));
}

static int run(int argc, char **argv, qd_modelopt_algo algo) {
    const char *cmd = algo == QD_MODELOPT_NVFP4 ? "modelopt-nvfp4" : "modelopt-fp8";
    qd_modelopt_args a = {.algo = algo};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout, cmd);
            return 0;
        } else if (!strcmp(f, "--overwrite")) {
            a.overwrite = true;
        } else if (!strcmp(f, "--model-dir") && v) {
            a.model_dir = v, i++;
        } else if ((!strcmp(f, "--save-dir") || !strcmp(f, "--output-dir")) && v) {
            a.save_dir = v, i++;
        } else if (!strcmp(f, "--model-type") && v) {
            a.model_type = v, i++;
        } else if ((x = qd_cli_calib_flag(cmd, argc, argv, &i, &a.calib))) {
            if (x < 0) return 2;
        } else if (!strcmp(f, "--keep-bf16-pattern") && v) {
            if (a.n_patterns == QD_MODELOPT_MAX_PATTERNS) {
                fprintf(stderr, "qdit convert %s: more than %d --keep-bf16-pattern flags\n", cmd, QD_MODELOPT_MAX_PATTERNS);
                return 2;
            }
            a.patterns[a.n_patterns++] = v, i++;
        } else {
            fprintf(stderr, "qdit convert %s: unexpected argument '%s'%s (see qdit convert %s --help)\n", cmd, f, v ? "" : " or a missing value", cmd);
            return 2;
        }
    }
    if (qd_convert_modelopt(&a)) {
        fprintf(stderr, "qdit convert %s: %s\n", cmd, qd_last_error());
        return 1;
    }
    return 0;
}

int qd_cmd_convert_modelopt_fp8(int argc, char **argv) { return run(argc, argv, QD_MODELOPT_FP8); }
int qd_cmd_convert_modelopt_nvfp4(int argc, char **argv) { return run(argc, argv, QD_MODELOPT_NVFP4); }
