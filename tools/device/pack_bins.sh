#!/usr/bin/env bash
# Strip the binaries the device checks run and pack them xz-compressed into .devrun/bin.tar.xz (the tree that
# travels to the GPU machine is limited to 64 MiB; cuda_checks.sh unpacks them there). Run from the repo root
# after building in build/.
set -euo pipefail
rm -rf .devrun/bin && mkdir -p .devrun/bin
# PACK_BINS: a shorter list where the 64 MiB is tight (the kernel lab's programs are needed only by its checks)
for b in ${PACK_BINS:-qdit tests/test_backend_ops bench/bench_dit_step bench/bench_cuda_ops bench/fp8_gemm_lab bench/lt_algo_search bench/bench_vae_decode}; do strip -o ".devrun/bin/$(basename "$b")" "build/$b"; done
tar -C .devrun -cJf .devrun/bin.tar.xz bin
rm -rf .devrun/bin
du -h .devrun/bin.tar.xz
# the Debian libraries the binaries link that the GPU machine lacks (cuda_checks.sh puts .devrun/lib on
# LD_LIBRARY_PATH; oneDNN goes xz-compressed, it is the largest)
rm -rf .devrun/lib && mkdir -p .devrun/lib
for l in libjansson.so.4 libpcre2-8.so.0 libutf8proc.so.2 libpng16.so.16 libgomp.so.1 libOpenCL.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$l" .devrun/lib/; done
xz -9 -T2 -c /lib/x86_64-linux-gnu/libdnnl.so.2 > .devrun/lib/libdnnl.so.2.xz
du -sh .devrun/lib
# --fixtures [--all]: also the transformers' reference modules (--all: the VAE and text encoders too) (../shared/fixtures) and the Nunchaku files tools/quant-fixtures wrote under
# build/tests (ctest -R quant_fixtures_generate), for cuda_checks.sh fixtures / nunchaku
if [ "${1:-}" = "--fixtures" ]; then
  rm -rf /tmp/qdit-fx && mkdir -p /tmp/qdit-fx/fixtures /tmp/qdit-fx/quant-fixtures
  cp -r ../shared/fixtures/{flux_tiny_a,zimage_tiny_a} /tmp/qdit-fx/fixtures/
  [ "${2:-}" = "--all" ] && cp -r ../shared/fixtures/{vae_kl_tiny_a,clip_tiny_a,t5_tiny_a,qwen3_tiny_a} /tmp/qdit-fx/fixtures/
  # FLUX's fp4 file stays behind (6 MB more would pass the 64 MiB the tree may carry)
  for mf in flux_tiny_a:int4 zimage_tiny_a:int4; do m=${mf%%:*} f=${mf#*:}; for _ in 1; do
    mkdir -p /tmp/qdit-fx/quant-fixtures/$m/svdquant_$f/expected
    cp build/tests/quant-fixtures/$m/svdquant_$f/svdq-${f}_r32-$m.safetensors /tmp/qdit-fx/quant-fixtures/$m/svdquant_$f/
    cp build/tests/quant-fixtures/$m/svdquant_$f/expected/dequant.safetensors /tmp/qdit-fx/quant-fixtures/$m/svdquant_$f/expected/
  done; done
  # checkpoint families (component folders, without their expected/ references): Z-Image's (less the
  # variants of a family's metadata), FLUX.1's ModelOpt FP8 (flat: SGLang's BF16 fallback preset; nested: every linear, its MLPs
  # take the FP8-codes path on the GPU) and NVFP4
  # (fixture_check.py runs them on the CPU and the GPU)
  for m in zimage_tiny_a flux_tiny_a; do for d in build/tests/quant-fixtures/$m/*/; do f=$(basename "$d")
    [ -f "$d/config.json" ] || continue
    [ $m = flux_tiny_a ] && case $f in modelopt_fp8_flat|modelopt_fp8_nested|modelopt_nvfp4) ;; *) continue ;; esac
    case $f in *_comfy|*_tensor_only|*_int64|*_dynamic|*_metadata|*_dualscale|modelopt_fp8_flat) [ $m = zimage_tiny_a ] && continue ;; esac # (the 64 MiB)
    mkdir -p /tmp/qdit-fx/quant-fixtures/$m/$f && cp "$d"/*.json "$d"/*.safetensors /tmp/qdit-fx/quant-fixtures/$m/$f/
  done; done
  tar -C /tmp/qdit-fx -cf - fixtures quant-fixtures | xz -9e -T2 > .devrun/fixtures.tar.xz # (-9e: 2 MB under the default)
  du -h .devrun/fixtures.tar.xz
fi
