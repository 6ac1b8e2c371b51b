#!/usr/bin/env bash
# Strip the binaries the device checks run and pack them xz-compressed into .devrun/bin.tar.xz (the tree that
# travels to the GPU machine is limited to 64 MiB; cuda_checks.sh unpacks them there). Run from the repo root
# after building in build/.
set -euo pipefail
rm -rf .devrun/bin && mkdir -p .devrun/bin
for b in qdit tests/test_backend_ops bench/bench_dit_step bench/bench_cuda_ops bench/fp8_gemm_lab; do strip -o ".devrun/bin/$(basename "$b")" "build/$b"; done
tar -C .devrun -cJf .devrun/bin.tar.xz bin
rm -rf .devrun/bin
du -h .devrun/bin.tar.xz
