#!/usr/bin/env bash
# Nsight Compute on the GPU machine (device tool, carry [".devrun"]): the int8 wgmma kernel's ping-pong and
# cooperative forms and cuBLASLt's FP8 kernel at M 4608, K 3072, N 12288 (the 11th launch of each in
# `BENCH_ONLY=int8 bench_cuda_ops 2`): speed of light, pipe utilisation, shared-memory tables, warp states.
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
mkdir -p /tmp/devlib
python3 -c "import lzma; open('/tmp/devlib/libdnnl.so.2','wb').write(lzma.open('.devrun/lib/libdnnl.so.2.xz').read())"
cublas_dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null || true)
export LD_LIBRARY_PATH="/tmp/devlib:$PWD/.devrun/lib:/usr/local/cuda/lib64:${cublas_dir}:${LD_LIBRARY_PATH:-}"
mkdir -p .devrun/bin && tar -C .devrun -xJf .devrun/bin.tar.xz
for k in int8_wgmma_pp_kernel nvjet_sm90_qq int8_wgmma_kernel; do
  env $( [ $k = int8_wgmma_kernel ] && echo QDIT_CUDA_INT8_COOP=1 ) BENCH_ONLY=int8 timeout 120 ncu --kernel-name regex:$k --launch-skip 10 --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --print-details all .devrun/bin/bench_cuda_ops 2 > $OUT/prof_$k.txt 2>&1
  echo "=== $k"; grep -E "^  [a-z_]+.*\(|Duration|SM Frequency|Compute \(SM\)|Shared|shared|Tensor|tensor|Issue Slots|Stall (No|Long|Barrier|Wait|GMMA|MIO|Math)|Warp Cycles Per Issued" $OUT/prof_$k.txt | head -40
done
