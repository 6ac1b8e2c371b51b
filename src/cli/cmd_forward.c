/* qdit forward --component DIR --inputs IN.safetensors --output OUT.safetensors [--precision f32|bf16]
 * [--scalar-rounding activation|exact|bf16] [--tiled] [--no-act-quant] [--trace-linears FILE] [--device cpu|cuda[:N]] [model and quantization flags]
 * — one module on named inputs (docs/cli.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_options.h"
#include "models/forward.h"

static void forward_usage(FILE *to) {
    fprintf(to,
            "usage: qdit forward --component DIR --inputs IN.safetensors --output OUT.safetensors\n"
            "                    [--precision f32|bf16] [--scalar-rounding activation|exact|bf16]\n"
            "                    [--tiled] [--random-weights] [--no-act-quant] [--trace-linears FILE] [--device cpu|cuda[:N]]\n"
            "                    [model and quantization flags]\n"
            "\n"
            "Runs one module (FluxTransformer2DModel, ZImageTransformer2DModel, AutoencoderKL decode, CLIPTextModel,\n"
            "T5EncoderModel, Qwen3Model and Qwen2/Llama/Mistral decoders) on the named inputs of IN and writes its\n"
            "outputs to OUT as float32; input names as in the shared fixtures (hidden_states, encoder_hidden_states,\n"
            "pooled_projections, timestep, guidance, img_ids, txt_ids | x, cap_feats, t | z | input_ids,\n"
            "attention_mask). DIR may also be a .safetensors file with config.json beside it.\n"
            "--scalar-rounding: how timestep and guidance are rounded before the model's x1000; 'activation'\n"
            "(default) rounds them to bf16 in a bf16 run as diffusers does, 'exact' keeps f32, 'bf16' always rounds.\n"
            "--tiled: decode a VAE latent in overlapping tiles (diffusers' enable_tiling), memory bounded by a tile.\n"
            "--random-weights: no weights file; DIR's config.json alone, weights drawn in memory (benchmarks, memory\n"
            "checks of full-size configurations); --quantization METHOD quantizes them at load.\n"
            "--no-act-quant: every quantized linear runs as its f32 reference, x·Wᵀ + b with the dequantized W and\n"
            "effective b and the activations not quantized (what `qdit convert dequantize` writes); needs --precision\n"
            "f32 (the default) and holds the f32 weights of the whole model in memory.\n"
            "--trace-linears FILE: the transformers only: every linear's input, in call order, as F32 tensors named\n"
            "'NNNN <layer>' into FILE (held in memory until the end: for small models), to compare two devices' runs\n"
            "layer by layer. The traced run takes the unfused path (no joined projections, no FP8 codes from norms, no\n"
            "step graphs).\n\n%s",
            qd_cli_model_flags_help());
}

int qd_cmd_forward(int argc, char **argv) {
    qd_options opts;
    char **rest;
    int n;
    const int begun = qd_cli_begin("forward", argc, argv, &opts, &rest, &n);
    if (begun) return begun;
    qd_forward_args a = {0};
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (!strcmp(rest[i], "--tiled")) {
            a.tiled = true;
            continue;
        }
        if (!strcmp(rest[i], "--no-act-quant")) {
            a.no_act_quant = true;
            continue;
        }
        if (!strcmp(rest[i], "--random-weights")) {
            a.random_weights = true;
            a.random_seed = 1;
            continue;
        }
        const char **slot = !strcmp(rest[i], "--component") ? &a.component
                            : !strcmp(rest[i], "--inputs")  ? &a.inputs
                            : !strcmp(rest[i], "--output")  ? &a.output
                            : !strcmp(rest[i], "--device")  ? &a.device
                            : !strcmp(rest[i], "--precision") ? &a.precision
                            : !strcmp(rest[i], "--scalar-rounding") ? &a.scalars
                            : !strcmp(rest[i], "--trace-linears") ? &a.trace_linears
                                                            : NULL;
        if (!strcmp(rest[i], "--help") || !strcmp(rest[i], "-h")) {
            forward_usage(stdout);
            free(rest);
            return 0;
        }
        if (!slot) {
            fprintf(stderr, "qdit forward: unexpected argument '%s' (see qdit forward --help)\n", rest[i]);
            rc = 2;
        } else if (i + 1 >= n) {
            fprintf(stderr, "qdit forward: %s needs a value\n", rest[i]);
            rc = 2;
        } else {
            *slot = rest[++i];
        }
    }
    free(rest);
    if (rc) return rc;
    if (!a.component || !a.inputs || !a.output) {
        forward_usage(stderr);
        return 2;
    }
    if (qd_forward_run(&opts, &a)) {
        fprintf(stderr, "qdit forward: %s\n", qd_last_error());
        return 1;
    }
    return 0;
}
