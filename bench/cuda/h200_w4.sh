#!/usr/bin/env bash
# Issue 9's measurements on the H200, in one call of the device tool (from the repo root, with the binaries in
# .devrun/ — packed by tools/device/pack_bins.sh — and diffusers' public source in .refpack/; carry [".devrun", ".refpack"]):
#   correctness  the op harness for every scheme on the GPU against the f64 references (`fallbacks` adds the int8
#                CUDA-core and W4 small-M paths);
#   kernels      W4A8 (NVFP4, MXFP4, MXFP8, SVDQuant int4 r32) and int8 GEMMs at FLUX shapes next to cuBLASLt's FP8
#                matmul on the same shapes (qdit's FP8 linear: quantization included), in one program (bench_qdit;
#                the `bench` check adds PyTorch's _scaled_mm / _int_mm);
#   steps        FLUX.1-dev at 1024², one denoising step, NVFP4, MXFP4 and SVDQuant-int4 (rank 32), with their GPU
#                memory; then diffusers' FluxTransformer2DModel BF16 with torch.compile for the ratio;
#   offload      FLUX.1-dev FP8 resident and with --dit-layerwise-offload (weights in GPU memory and the slowdown).
# Logs land in $OUT. Usage: bash bench/cuda/h200_w4.sh [checks...] (default: all of them).
set -uo pipefail
checks=("$@")
[ ${#checks[@]} -eq 0 ] && checks=(ops bench_qdit w4 offload diffusers)
exec bash "$(dirname "$0")/../../tools/device/cuda_checks.sh" "${checks[@]}"
