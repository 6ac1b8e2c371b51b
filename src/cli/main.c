/* qdit — entry point: dispatch to a sub-command (see docs/cli.md). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "qdit.h"

static void usage(FILE *to) {
    fprintf(to,
            "qdit %s — quantized diffusion transformers in C\n"
            "\n"
            "usage: qdit <command> [options]\n"
            "\n"
            "commands:\n"
            "  inspect PATH [--json]   what is inside a pipeline, component folder, .safetensors file\n"
            "                          or cached Hugging Face repo id\n"
            "  generate --model-path PIPELINE --prompt TEXT --output FILE.png\n"
            "                          text to image with FLUX.1 or Z-Image\n"
            "  forward --component DIR --inputs IN --output OUT\n"
            "                          run one module on named inputs (conformance checks)\n"
            "  bench --model flux.1-dev|z-image-turbo|PATH [--quantization M] [--res N] [--json]\n"
            "                          seconds per denoising step and memory (--pipeline: per stage of generate)\n"
            "  convert dequantize [PATH] --save-dir OUT\n"
            "                          write a quantized transformer as a plain diffusers folder\n"
            "  tokenize --model DIR --prompt TEXT\n"
            "                          print the token ids of a prompt (tokenizer debugging)\n"
            "  version                 print the version\n"
            "\n"
            "Run `qdit <command> --help` for a command's options; docs/cli.md has the full reference.\n",
            QDIT_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "inspect")) return qd_cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(cmd, "generate")) return qd_cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return qd_cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "forward")) return qd_cmd_forward(argc - 1, argv + 1);
    if (!strcmp(cmd, "convert")) return qd_cmd_convert(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return qd_cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("qdit %s\n", QDIT_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "qdit: unknown command '%s' (expected inspect, generate, bench, forward, convert, tokenize or version; see qdit --help)\n", cmd);
    return 2;
}
