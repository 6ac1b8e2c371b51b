/* qdit convert svdquant --model-dir IN --save-dir OUT [--precision int4|nvfp4] [--rank R] [--name NAME]
 * [--calibrate PROMPTS_FILE [--pipeline DIR] [--calib-steps N] [--calib-size PX] | --amax FILE] [--overwrite] — Nunchaku SVDQuant from a BF16 transformer
 * (convert/svdquant.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_options.h"
#include "convert/svdquant.h"

static void usage(FILE *to) {
    fprintf(to,
            "usage: qdit convert svdquant --model-dir IN --save-dir OUT [--precision int4|nvfp4] [--rank R] [--name NAME]\n"
            "                             [--calibrate PROMPTS_FILE [--pipeline DIR] [--calib-steps N] [--calib-size PX] | --amax FILE]\n"
            "                             [--overwrite]\n"
            "\n"
            "Nunchaku SVDQuant W4A4 from a BF16 (or F16/F32) diffusers transformer folder (FluxTransformer2DModel or\n"
            "ZImageTransformer2DModel): per linear a low-rank branch (top singular directions of the smoothed weight, 16-bit)\n"
            "and the 4-bit residual, written as one file OUT/svdq-{int4|fp4}_r{R}-NAME.safetensors in Nunchaku's layout and\n"
            "names. Load it with --transformer-weights-path (qdit, SGLang with nunchaku).\n"
            "  --model-dir IN      the BF16 transformer folder (config.json + safetensors)\n"
            "  --save-dir OUT      the folder to write; written beside as a temporary folder and renamed at the end\n"
            "  --precision P       int4 (default: group 64, 16-bit scales) or nvfp4 (group 16, E4M3 scales + global scale)\n"
            "  --rank R            the low-rank branch's rank (default 32; stored padded to a multiple of 16)\n"
            "  --name NAME         the NAME in the file name (default: the model folder's name)\n"
            "%s"
            "  --amax FILE         per-input activation maxima (safetensors, '<module>.input_amax' F32 [K]) for the\n"
            "                      smoothing factors sqrt(amax_x / amax_w); without it or --calibrate the factors are 1\n"
            "  --overwrite         replace an earlier svdquant output in OUT\n",
            qd_cli_calib_flags_help("use each linear input channel's largest |x| as amax_x in sqrt(amax_x / amax_w)"));
}

int qd_cmd_convert_svdquant(int argc, char **argv) {
    qd_svdquant_args a = {0};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int c;
        if ((c = qd_cli_calib_flag("svdquant", argc, argv, &i, &a.calib))) {
            if (c < 0) return 2;
        } else if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "--overwrite")) {
            a.overwrite = true;
        } else if (!strcmp(f, "--model-dir") && v) {
            a.model_dir = v, i++;
        } else if (!strcmp(f, "--save-dir") && v) {
            a.save_dir = v, i++;
        } else if (!strcmp(f, "--precision") && v) {
            a.precision = v, i++;
        } else if (!strcmp(f, "--name") && v) {
            a.name = v, i++;
        } else if (!strcmp(f, "--amax") && v) {
            a.amax_file = v, i++;
        } else if (!strcmp(f, "--rank") && v) {
            char *end = NULL;
            long r = strtol(v, &end, 10);
            if (!*v || *end || r < 1 || r > 1024) {
                fprintf(stderr, "qdit convert svdquant: --rank %s: expected an integer 1..1024\n", v);
                return 2;
            }
            a.rank = (int)r, i++;
        } else {
            fprintf(stderr, "qdit convert svdquant: unexpected argument '%s'%s (see qdit convert svdquant --help)\n", f, v ? "" : " or a missing value");
            return 2;
        }
    }
    qd_svdquant_report r;
    if (qd_convert_svdquant(&a, &r)) {
        fprintf(stderr, "qdit convert svdquant: %s\n", qd_last_error());
        return 1;
    }
    printf("{\"svdq_layers\": %d, \"awq_layers\": %d, \"bf16_tensors\": %d, \"mean_rel_err\": %.4g, \"worst_rel_err\": %.4g, \"worst_layer\": \"%s\", "
           "\"output\": \"%s\"}\n",
           r.svdq_layers, r.awq_layers, r.bf16_tensors, r.mean_rel_err, r.worst_rel_err, r.worst_layer, r.file);
    return 0;
}
