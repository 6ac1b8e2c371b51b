/* qdit convert dequantize [PATH] [source flags] --save-dir OUT [--dtype bf16|f32] [--max-shard-size SIZE]
 * [--overwrite] — a quantized transformer written back as a plain diffusers folder (convert/dequantize.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_options.h"
#include "convert/dequantize.h"
#include "convert/output.h"

static void usage(FILE *to) {
    fprintf(to,
            "usage: qdit convert dequantize [PATH] --save-dir OUT [--dtype bf16|f32] [--max-shard-size SIZE]\n"
            "                               [--overwrite] [model and quantization flags]\n"
            "\n"
            "Writes the transformer as a plain diffusers folder: config.json without quantization_config, and\n"
            "diffusion_pytorch_model-0000i-of-0000n.safetensors with diffusion_pytorch_model.safetensors.index.json,\n"
            "under the model's diffusers tensor names (fused / renamed layouts such as Nunchaku's qkv_proj are split\n"
            "back). Each linear gets the W and b for which x·Wᵀ + b is what the quantized layer computes with\n"
            "unquantized activations (every scale, smoothing factor, offset and SVDQuant low-rank branch folded in).\n"
            "PATH is a transformer folder or .safetensors file; or give --model-path / --transformer-path /\n"
            "--transformer-weights-path as for generate and forward.\n"
            "  --save-dir OUT          the folder to write (created; must be empty unless --overwrite)\n"
            "  --dtype bf16|f32        dtype of every written tensor (default bf16; f32 is exact)\n"
            "  --max-shard-size SIZE   largest shard, e.g. 5GB or 500MB (default 10GB)\n"
            "  --overwrite             replace the config.json and safetensors files of an earlier conversion in OUT\n\n%s",
            qd_cli_model_flags_help());
}

int qd_cmd_convert_dequantize(int argc, char **argv) {
    qd_options opts;
    char **rest;
    int n;
    const int begun = qd_cli_begin("convert dequantize", argc, argv, &opts, &rest, &n);
    if (begun) return begun;
    qd_dequantize_args a = {0};
    const char *shard = NULL;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (!strcmp(rest[i], "--help") || !strcmp(rest[i], "-h")) {
            usage(stdout);
            free(rest);
            return 0;
        }
        if (!strcmp(rest[i], "--overwrite")) {
            a.overwrite = true;
            continue;
        }
        const char **slot = !strcmp(rest[i], "--save-dir")         ? &a.save_dir
                            : !strcmp(rest[i], "--dtype")          ? &a.dtype
                            : !strcmp(rest[i], "--max-shard-size") ? &shard
                                                                   : NULL;
        if (!slot && rest[i][0] == '-') {
            fprintf(stderr, "qdit convert dequantize: unexpected argument '%s' (see qdit convert dequantize --help)\n", rest[i]);
            rc = 2;
        } else if (!slot) {
            if (a.path) {
                fprintf(stderr, "qdit convert dequantize: one PATH only ('%s', then '%s')\n", a.path, rest[i]);
                rc = 2;
            }
            a.path = rest[i];
        } else if (i + 1 >= n) {
            fprintf(stderr, "qdit convert dequantize: %s needs a value\n", rest[i]);
            rc = 2;
        } else {
            *slot = rest[++i];
        }
    }
    free(rest);
    if (rc) return rc;
    if (shard && qd_parse_size("--max-shard-size", shard, &a.max_shard_bytes)) {
        fprintf(stderr, "qdit convert dequantize: %s\n", qd_last_error());
        return 2;
    }
    if (!a.save_dir) {
        fprintf(stderr, "qdit convert dequantize: --save-dir OUT is required (the folder to write)\n");
        return 2;
    }
    qd_dequantize_report rep;
    if (qd_convert_dequantize(&opts, &a, &rep)) {
        fprintf(stderr, "qdit convert dequantize: %s\n", qd_last_error());
        return 1;
    }
    printf("wrote %lld linears and %lld other tensors (%.3f GB) in %d shard%s to %s\n", (long long)rep.linears, (long long)rep.copied,
           (double)rep.bytes / 1e9, rep.shards, rep.shards == 1 ? "" : "s", a.save_dir);
    return 0;
}
