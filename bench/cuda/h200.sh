#!/usr/bin/env bash
# Issue 8's measurements on the H200, everything in one call of the device tool (from the repo root, with
# the binaries built here carried in .devrun/ and a local copy of diffusers' public source in .ref/src, or
# xz-compressed as .refpack/diffusers_src.tar.xz — carry [".devrun", ".refpack"]; both are git-ignored):
#   correctness  the op harness on the GPU (cuDNN attention, then qdit's own kernels), fixture conformance,
#                the embedded model's image with step graphs on and off;
#   kernels      GEMMs at FLUX shapes and attention at L 4608, D 128, 24 heads against PyTorch/cuDNN;
#   steps        FLUX.1-dev and Z-Image-Turbo at 1024², bf16, online fp8 and ModelOpt FP8, then diffusers eager and
#                torch.compile for both models; an event-timed op profile of the FLUX step;
#   decode       the FLUX.1 / Z-Image VAE at 1024² against diffusers' AutoencoderKL.decode, and against the CPU's
#                decode of the same weights (vae, vae_compare);
#   end to end   qdit generate --device cuda on the published configurations with random weights (generate_full).
# Logs land in $OUT. Usage: bash bench/cuda/h200.sh [checks...] (default: all of them).
set -uo pipefail
checks=("$@")
[ ${#checks[@]} -eq 0 ] && checks=(ops fallbacks wide fixtures bench generate flux zimage diffusers diffusers_zimage profile vae vae_compare generate_full)
exec bash "$(dirname "$0")/../../tools/device/cuda_checks.sh" "${checks[@]}"
