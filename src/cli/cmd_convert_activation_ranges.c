/* qdit convert activation-ranges --model-dir IN --calibrate PROMPTS_FILE [--pipeline DIR] [--calib-steps N]
 * [--calib-size PX] --output FILE.json [--overwrite] — each transformer linear's real input range, as JSON
 * (convert/activation_ranges.h). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_options.h"
#include "convert/activation_ranges.h"
#include "convert/output.h"

static void usage(FILE *to) {
    fprintf(to,
            "usage: qdit convert activation-ranges --model-dir IN --calibrate PROMPTS_FILE [--pipeline DIR] [--calib-steps N]\n"
            "                                      [--calib-size PX] --output FILE.json [--overwrite]\n"
            "\n"
            "Runs the pipeline on the calibration prompts and writes the smallest and largest input value (and the\n"
            "largest |x|) each linear of the transformer saw, as JSON: {\"format\": \"qdit-activation-ranges\", \"version\": 1,\n"
            "\"prompts\", \"steps\", \"size\", \"layers\": {\"<module>\": {\"min\", \"max\", \"amax\"}}}. For quantizers that need\n"
            "per-layer activation ranges (e.g. asymmetric int8 input scales and offsets).\n"
            "  --model-dir IN            the transformer folder (config.json + safetensors)\n"
            "%s"
            "  --output FILE.json        the file to write (written beside and renamed at the end)\n"
            "  --overwrite               replace an earlier activation-ranges file at FILE.json\n",
            qd_cli_calib_flags_help("record each linear's input range (required)"));
}

int qd_cmd_convert_activation_ranges(int argc, char **argv) {
    qd_activation_ranges_args a = {0};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int c;
        if ((c = qd_cli_calib_flag("activation-ranges", argc, argv, &i, &a.calib))) {
            if (c < 0) return 2;
        } else if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "--overwrite")) {
            a.overwrite = true;
        } else if (!strcmp(f, "--model-dir") && v) {
            a.model_dir = v, i++;
        } else if (!strcmp(f, "--output") && v) {
            a.output = v, i++;
        } else {
            fprintf(stderr, "qdit convert activation-ranges: unexpected argument '%s'%s (see qdit convert activation-ranges --help)\n", f,
                    v ? "" : " or a missing value");
            return 2;
        }
    }
    int n = 0;
    if (qd_convert_activation_ranges(&a, &n)) {
        fprintf(stderr, "qdit convert activation-ranges: %s\n", qd_last_error());
        return 1;
    }
    json_t *stats = json_pack("{s:i, s:s}", "layers", n, "output", a.output);
    if (stats) qd_print_stats(stats);
    json_decref(stats);
    return 0;
}
