/* qdit convert wan-repack --model-type T --original-model-path BASE --quant-path Q --output-path OUT
 * [--overwrite] — msModelSlim's Wan2.2 output as a diffusers pipeline folder, as SGLang's wan_repack.py
 * writes it (convert/wan_repack.h). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "convert/output.h"
#include "convert/wan_repack.h"

static void usage(FILE *to) {
    fprintf(to,
            "usage: qdit convert wan-repack --model-type {Wan2.2-T2V-A14B,Wan2.2-I2V-A14B,Wan2.2-TI2V-5B}\n"
            "                               --original-model-path BASE --quant-path Q --output-path OUT [--overwrite]\n"
            "\n"
            "msModelSlim's quantized Wan2.2 (original Wan tensor names) repacked into the diffusers layout, as SGLang's\n"
            "wan_repack.py does: BASE copied except its transformer folder(s); per transformer the quant weights\n"
            "(quant_model_weight*.safetensors) renamed to diffusers names in diffusion_pytorch_model.safetensors, the first\n"
            "quant_model_description*.json with the same renames as quant_model_description.json, and BASE's config.json.\n"
            "  --model-type T            Wan2.2-T2V-A14B or Wan2.2-I2V-A14B (two transformers: Q/high_noise_model ->\n"
            "                            transformer, Q/low_noise_model -> transformer_2) or Wan2.2-TI2V-5B (Q -> transformer)\n"
            "  --original-model-path BASE the BF16 diffusers model (model_index.json, vae, text_encoder, ...)\n"
            "  --quant-path Q            msModelSlim's output folder\n"
            "  --output-path OUT         the folder to write (new or empty; written beside and renamed at the end)\n"
            "  --overwrite               replace an earlier wan-repack output in OUT\n");
}

int qd_cmd_convert_wan_repack(int argc, char **argv) {
    qd_wan_repack_args a = {0};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "--overwrite")) {
            a.overwrite = true;
        } else if (!strcmp(f, "--model-type") && v) {
            a.model_type = v, i++;
        } else if (!strcmp(f, "--original-model-path") && v) {
            a.original_path = v, i++;
        } else if (!strcmp(f, "--quant-path") && v) {
            a.quant_path = v, i++;
        } else if (!strcmp(f, "--output-path") && v) {
            a.output_path = v, i++;
        } else {
            fprintf(stderr, "qdit convert wan-repack: unexpected argument '%s'%s (see qdit convert wan-repack --help)\n", f, v ? "" : " or a missing value");
            return 2;
        }
    }
    qd_wan_repack_report r;
    if (qd_convert_wan_repack(&a, &r)) {
        fprintf(stderr, "qdit convert wan-repack: %s\n", qd_last_error());
        return 1;
    }
    printf("wan-repack: %s repacked into %s\n", a.model_type, a.output_path);
    json_t *stats = json_pack("{s:i, s:I, s:I, s:I, s:I, s:I}", "transformers", r.transformers, "tensors", (json_int_t)r.tensors, "renamed_tensors",
                              (json_int_t)r.renamed, "renamed_description_keys", (json_int_t)r.description_keys_renamed, "base_files_copied",
                              (json_int_t)r.files_copied, "bytes_written", (json_int_t)r.bytes);
    if (stats) qd_print_stats(stats);
    json_decref(stats);
    return 0;
}
