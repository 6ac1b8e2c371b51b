#!/usr/bin/env bash
# Run on the GPU machine (device tool) from the repo root, with the binaries built on the CI-class machine
# carried in .devrun/ (bin/ and the .so files Debian's build links: lib/). Checks the CUDA backend with
# the op harness against the CPU references, then runs the GPU benchmarks that exist. Writes logs to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# oneDNN travels xz-compressed (the tree that travels is limited to 64 MiB)
mkdir -p /tmp/devlib
[ -f .devrun/lib/libdnnl.so.2.xz ] && python3 -c "import lzma,sys; open('/tmp/devlib/libdnnl.so.2','wb').write(lzma.open('.devrun/lib/libdnnl.so.2.xz').read())"
cublas_dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null || true)
# cuDNN (dlopen'ed by the CUDA backend for its fused SDPA) from PyTorch's wheel, as a user's would be
cudnn_dir=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0] + "/lib")' 2>/dev/null || true)
export LD_LIBRARY_PATH="/tmp/devlib:$PWD/.devrun/lib:/usr/local/cuda/lib64:${cublas_dir}:${cudnn_dir}:${LD_LIBRARY_PATH:-}"
# the binaries may travel xz-compressed too (.devrun/bin.tar.xz unpacks into .devrun/bin)
[ -f .devrun/bin.tar.xz ] && mkdir -p .devrun/bin && tar -C .devrun -xJf .devrun/bin.tar.xz
# diffusers' public source for the reference side travels xz-compressed too (.refpack/, never committed)
# (packed as src/diffusers/… from the repository's root, or as diffusers/… from its src/)
if [ ! -d .ref/src/diffusers ] && [ -f .refpack/diffusers_src.tar.xz ]; then
  ref_first=$(tar -tJf .refpack/diffusers_src.tar.xz 2>/dev/null | head -1); ref_into=.ref
  [ "${ref_first#diffusers/}" != "$ref_first" ] && ref_into=.ref/src
  mkdir -p "$ref_into" && tar -C "$ref_into" -xJf .refpack/diffusers_src.tar.xz
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"
# the SM clock and power while a step benchmark runs (sampled every 200 ms): whether the sustained step runs its
# kernels slower than the isolated kernel benchmarks because the GPU is at its power limit
sample_start() { nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv,noheader,nounits -lms 200 \
                   > "$OUT/gpu_samples_$1.csv" 2>/dev/null & SAMPLER=$!; }
sample_stop() { kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null
  python3 -c "
import statistics as st, sys
rows = [[c.strip() for c in l.split(',')] for l in open('$OUT/gpu_samples_$1.csv') if l.count(',') == 3]
busy = [r for r in rows if float(r[1]) > 250]
if busy:
    reasons = sorted(set(r[3] for r in busy))
    print('gpu while busy ($1): %d samples, SM clock median %.0f MHz (min %.0f), power median %.0f W (max %.0f), temperature max %.0f C, throttle reasons %s'
          % (len(busy), st.median(float(r[0]) for r in busy), min(float(r[0]) for r in busy), st.median(float(r[1]) for r in busy),
             max(float(r[1]) for r in busy), max(float(r[2]) for r in busy), ' '.join(reasons)))
" 2>&1; }
for t in "$@"; do
  echo "== $t"
  case "$t" in
    ops) .devrun/bin/test_backend_ops --backend cuda 2>&1 | tee "$OUT/ops.log" | grep -Ev "^(ok  |skip)" ;;
    fixtures) [ -f .devrun/fixtures.tar.xz ] && tar -C .devrun -xJf .devrun/fixtures.tar.xz
              python3 tools/device/fixture_check.py .devrun/bin/qdit .devrun/fixtures "$OUT" ${QUANT_FIXTURES:+.devrun/quant-fixtures} 2>&1 | tee "$OUT/fixtures.md" ;;
    nunchaku) # the Nunchaku files only (.devrun/quant-fixtures: tools/device/pack_bins.sh --fixtures)
              [ -f .devrun/fixtures.tar.xz ] && tar -C .devrun -xJf .devrun/fixtures.tar.xz
              python3 tools/device/fixture_check.py .devrun/bin/qdit .devrun/fixtures "$OUT" .devrun/quant-fixtures nunchaku-only 2>&1 | tee "$OUT/nunchaku.md" ;;
    fluxbf16) .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant none --res 1024 --steps 4 --text 512 2>&1 | tee "$OUT/flux_none.log" ;;
    flux) for q in ${FLUX_QUANTS:-none fp8 modelopt_fp8}; do sample_start flux_$q # (issue 8: online fp8 and ModelOpt FP8)
            .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant $q --res 1024 --steps ${FLUX_STEPS:-6} --text 512 2>&1 | tee "$OUT/flux_$q.log"
            sample_stop flux_$q; done ;;
    bench_loop) # the kernel benchmark with the GPU sampled: the isolated kernels' clocks, for the comparison with the step's
          sample_start bench; .devrun/bin/bench_cuda_ops 20 > "$OUT/bench_qdit_sampled.md" 2>&1; sample_stop bench ;;
    w4) for q in ${W4_QUANTS:-nvfp4 mxfp4 svdq-int4}; do sample_start flux_$q
          .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant $q --res 1024 --steps 6 --text 512 2>&1 | tee "$OUT/flux_$q.log"
          sample_stop flux_$q; done ;;
    w4_noahead) # the 4-bit steps with every expansion right before its matmul, for the side-by-side comparison with w4
           for q in ${W4_QUANTS:-nvfp4}; do
             QDIT_CUDA_NO_AHEAD=1 .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant $q --res 1024 --steps 6 --text 512 2>&1 | tee "$OUT/flux_${q}_noahead.log"; done ;;
    w4_lr16) # SVDQuant's step with its low-rank branch as a separate 16-bit matmul (not folded into the FP8 matmul),
             # for the side-by-side comparison with w4
           QDIT_CUDA_SVDQ_LR16=1 .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant svdq-int4 --res 1024 --steps 6 --text 512 2>&1 | tee "$OUT/flux_svdq-int4_lr16.log" ;;
    svdq_threads) # SVDQuant's step with its folded rows' quantization in blocks of 128, 256 and 512 threads, side by side
           for t in ${SVDQ_THREADS:-128 256 512}; do echo "quantization block $t: $(QDIT_CUDA_SVDQ_QUANT_THREADS=$t .devrun/bin/bench_dit_step --device cuda --model flux.1-dev \
             --quant svdq-int4 --res 1024 --steps 6 --text 512 2>&1 | tee "$OUT/flux_svdq_t$t.log" | grep median)"; done ;;
    side) # steps side by side in this order (SIDE_MODEL, default FLUX.1-dev with 512 text tokens; z-image-turbo runs 128): each
          # SIDE entry "quant" or "quant:VAR=value[,VAR=value]" (a switch set for that run only), e.g.
          # SIDE="svdq-int4 svdq-int4:QDIT_CUDA_SVDQ_AMAX_PASS=1 svdq-int4"; "old/quant" runs the binary carried in
          # .devrun/old.tar.xz (a build of the previous source, for a before/after in one call)
          [ -f .devrun/old.tar.xz ] && mkdir -p .devrun/old && tar -C .devrun/old -xJf .devrun/old.tar.xz
          model=${SIDE_MODEL:-flux.1-dev}; text=512; [ "$model" = z-image-turbo ] && text=128
          for e in ${SIDE:-svdq-int4}; do bin=.devrun/bin; [ "${e#old/}" != "$e" ] && bin=.devrun/old/bin && e=${e#old/}
            q=${e%%:*}; v=""; [ "$e" != "$q" ] && v=${e#*:}
            echo "$model $bin $q ${v:-(defaults)}: $(env ${v//,/ } $bin/bench_dit_step --device cuda --model $model --quant $q --res 1024 --steps 6 \
              --text $text 2>&1 | tee -a "$OUT/side.log" | grep -E "median|output hash" | tr '\n' ' ')"; done ;;
    trace) # where the GPU's run of a checkpoint family parts from the CPU's: every linear's input compared in call order
           # (TRACE_FAMILY, default Z-Image's fp8_channel, from the carried quant fixtures)
          [ -f .devrun/fixtures.tar.xz ] && tar -C .devrun -xJf .devrun/fixtures.tar.xz
          python3 tools/device/trace_compare.py .devrun/bin/qdit .devrun/quant-fixtures/zimage_tiny_a/${TRACE_FAMILY:-fp8_channel} \
            .devrun/fixtures/zimage_tiny_a/io.safetensors "$OUT" 2>&1 | tee "$OUT/trace.md" ;;
    paths) # rms_norm_rope and the linears' per-token quantizations against the paths the switches in PATHS_OLD restore (default
           # QDIT_CUDA_QUANT_SMEM=0), timed in alternation, outputs compared byte for byte (bench_cuda_ops BENCH_ONLY=paths; fails on a difference)
          BENCH_ONLY=paths .devrun/bin/bench_cuda_ops ${PATHS_REPS:-50} 2>&1 | tee "$OUT/paths.md" ;;
    many) # FLUX.1's 76 modulation linears through linear_many against the layers one by one, FP8 and NVFP4 (bench_cuda_ops
          # BENCH_ONLY=many; fails where the outputs differ)
          BENCH_ONLY=many .devrun/bin/bench_cuda_ops ${MANY_REPS:-50} 2>&1 | tee "$OUT/many.md" ;;
    ops_filter) # the op harness's cases whose names contain OPS_FILTER (failures and the summary printed)
          for f in ${OPS_FILTER:-swiglu}; do .devrun/bin/test_backend_ops --backend cuda --filter "$f" 2>&1 | tee -a "$OUT/ops_filter.log" | grep -Ev "^(ok  |skip)"; done ;;
    fluxfp8_precise) # the FP8 step with cuBLASLt's promoted accumulation, for the side-by-side comparison with the flux check
          QDIT_CUDA_FP8_PRECISE=1 .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant fp8 --res 1024 --steps 6 --text 512 2>&1 | tee "$OUT/flux_fp8_precise.log" ;;
    fluxbf16_unfused) # the BF16 step with linear_fused composed, for the side-by-side comparison with the flux check
          QDIT_CUDA_LINEAR_UNFUSED=1 .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant none --res 1024 --steps 6 --text 512 2>&1 | tee "$OUT/flux_none_unfused.log" ;;
    offload) # FLUX.1-dev FP8 (OFFLOAD_QUANT: another scheme) at 1024², resident and with --dit-layerwise-offload within a budget
             # for the blocks' weights (OFFLOAD_BUDGET_MIB, default 3650: with the non-block layers under 4 GB), side by side in
             # one call (issue 9: weights ≤ 4 GB on the GPU, slowdown target ≤ 1.3×); the same arguments as the flux check
             oq=${OFFLOAD_QUANT:-fp8}
             .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant $oq --res 1024 --steps 6 --text 512 2>&1 | tee "$OUT/flux_${oq}_resident.log"
             QDIT_LOG=info .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant $oq --res 1024 --steps 6 --text 512 --dit-layerwise-offload true \
               --dit-offload-budget-mib ${OFFLOAD_BUDGET_MIB:-3650} 2>&1 | grep -v "^qdit: info: cuda:" | tee "$OUT/flux_${oq}_layerwise.log"
             python3 -c "
import re
med = [float(re.search(r'median ([0-9.]+) s/step', open('$OUT/flux_${oq}_%s.log' % k).read()).group(1)) for k in ('resident', 'layerwise')]
print('offload: FLUX.1-dev $oq 1024^2 median %.4f s/step resident, %.4f s/step layerwise: %.3fx' % (med[0], med[1], med[1] / med[0]))" ;;
    nograph) for q in none fp8; do QDIT_CUDA_GRAPH=0 .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant $q --res 1024 --steps 6 --text 512 2>&1 | tee "$OUT/flux_${q}_nograph.log"; done ;;
    generate) # the embedded tiny model end to end: a step graph must give the op-by-op image byte for byte
              prompt="a large red circle at the top left and a small blue square at the bottom right on a yellow background"
              for g in 0 1 0 1; do QDIT_CUDA_GRAPH=$g QDIT_DEFAULT_MODEL=$PWD/models/tiny-shapes .devrun/bin/qdit generate --device cuda --prompt "$prompt" --output /tmp/gen_graph$g.png 2>&1 | tail -2; done
              QDIT_DEFAULT_MODEL=$PWD/models/tiny-shapes .devrun/bin/qdit generate --prompt "$prompt" --output /tmp/gen_cpu.png 2>&1 | tail -1
              cmp /tmp/gen_graph1.png /tmp/gen_graph0.png && echo "generate: graph and op-by-op PNGs identical"
              # weight offload (10 blocks streamed through 2 slots, CFG's two shapes each recorded with their copies)
              for f in dit-layerwise-offload dit-cpu-offload; do
                QDIT_CUDA_GRAPH=1 QDIT_DEFAULT_MODEL=$PWD/models/tiny-shapes .devrun/bin/qdit generate --device cuda --$f true --prompt "$prompt" --output /tmp/gen_$f.png 2>&1 | tail -1
                cmp /tmp/gen_$f.png /tmp/gen_graph1.png && echo "generate: --$f PNG identical to the resident one"
              done
              python3 -c "
import numpy as np; from PIL import Image
a, b = (np.asarray(Image.open(p)).astype(float) for p in ('/tmp/gen_graph1.png', '/tmp/gen_cpu.png'))
mse = ((a - b) ** 2).mean(); print('generate: cuda vs cpu PSNR %.1f dB' % (10 * np.log10(255 ** 2 / mse) if mse else float('inf')))" ;;
    modelopt_sglang) # FLUX.1 ModelOpt FP8 in the layout SGLang publishes (lmsys/flux1-dev-modelopt-fp8-sglang-transformer: the flux1
          # BF16 fallback preset, quant-sglang.md §5.1), with the FP8 codes out of proj_mlp and without, side by side
          for v in QDIT_NONE QDIT_CUDA_FP8_CODES QDIT_NONE; do echo "modelopt_fp8, SGLang's BF16 fallbacks, $v=0: $(env $v=0 .devrun/bin/bench_dit_step \
            --device cuda --model flux.1-dev --quant modelopt_fp8 --quantization-ignored-layers norm1.linear,norm1_context.linear,ff.net,ff_context.net,norm.linear \
            --res 1024 --steps 6 --text 512 2>&1 | tee -a "$OUT/modelopt_sglang.log" | grep median)"; done ;;
    zimage) for q in ${ZIMAGE_QUANTS:-none fp8 modelopt_fp8}; do .devrun/bin/bench_dit_step --device cuda --model z-image-turbo --quant $q --res 1024 --steps 6 --text 128 2>&1 | tee "$OUT/zimage_$q.log"; done ;;
    profile) QDIT_CUDA_PROFILE=1 .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant none --res 1024 --warmup 1 --steps 3 --text 512 2>&1 | tee "$OUT/flux_profile.log" ;;
    profile_q) # the event profile of one scheme's step (PROFILE_QUANT, default nvfp4)
               QDIT_CUDA_PROFILE=1 .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant "${PROFILE_QUANT:-nvfp4}" --res 1024 --warmup 1 --steps 3 --text 512 2>&1 | tee "$OUT/flux_profile_${PROFILE_QUANT:-nvfp4}.log" ;;
    profile_zimage) for q in ${PROFILE_QUANTS:-fp8}; do QDIT_CUDA_PROFILE=1 .devrun/bin/bench_dit_step --device cuda --model z-image-turbo --quant $q --res 1024 --warmup 1 --steps 3 --text 128 2>&1 | tee "$OUT/zimage_profile_$q.log"; done ;;
    profile_fp8) QDIT_CUDA_PROFILE=1 .devrun/bin/bench_dit_step --device cuda --model flux.1-dev --quant fp8 --res 1024 --warmup 1 --steps 3 --text 512 2>&1 | tee "$OUT/flux_profile_fp8.log" ;;
    diffusers) sample_start diffusers_flux
               python3 tools/device/diffusers_step_bench.py 5 "${COMPILE:-1}" flux 2>&1 | grep -v Warning | tee "$OUT/diffusers_flux.md"
               sample_stop diffusers_flux ;;
    diffusers_zimage) python3 tools/device/diffusers_step_bench.py 5 "${COMPILE:-1}" zimage 2>&1 | grep -v Warning | tee "$OUT/diffusers_zimage.md" ;;
    fallbacks) QDIT_CUDA_FP8_UNFUSED=1 .devrun/bin/test_backend_ops --backend cuda --filter fp8 2>&1 | tee "$OUT/ops_fp8_unfused.log" | tail -2
               QDIT_CUDA_FP8_PRECISE=1 .devrun/bin/test_backend_ops --backend cuda --filter fp8 2>&1 | tee "$OUT/ops_fp8_precise.log" | tail -1
               QDIT_CUDNN=0 .devrun/bin/test_backend_ops --backend cuda --filter attention 2>&1 | tee "$OUT/ops_attn_own.log" | tail -2
               QDIT_CUDA_INT8_CORES=1 .devrun/bin/test_backend_ops --backend cuda --filter w8a8 2>&1 | tee "$OUT/ops_w8a8_cores.log" | tail -1
               QDIT_CUDA_INT8_CORES=1 .devrun/bin/test_backend_ops --backend cuda --filter w4a4 2>&1 | tee "$OUT/ops_w4a4_cores.log" | tail -1
               QDIT_CUDA_INT8_LT=1 .devrun/bin/test_backend_ops --backend cuda --filter w8a8 2>&1 | tee "$OUT/ops_w8a8_lt.log" | tail -1
               QDIT_CUDA_INT8_LT=1 .devrun/bin/test_backend_ops --backend cuda --filter w4a4 2>&1 | tee "$OUT/ops_w4a4_lt.log" | tail -1
               QDIT_CUDA_FP8_CODES_FALLBACK=1 .devrun/bin/test_backend_ops --backend cuda --filter codes 2>&1 | tee "$OUT/ops_codes_fallback.log" | tail -1
               QDIT_CUDA_W4_NO_GEMV=1 .devrun/bin/test_backend_ops --backend cuda --filter M=7 2>&1 | tee "$OUT/ops_w4_no_gemv.log" | tail -1
               for v in QDIT_CUDA_SVDQ_LR16 QDIT_CUDA_SVDQ_LR_LT QDIT_CUDA_EXPAND_REF QDIT_CUDA_SVDQ_AMAX_PASS QDIT_CUDA_SVDQ_LRD_PER_SM; do
                 echo "$v=1: $(env $v=1 .devrun/bin/test_backend_ops --backend cuda --filter svdq 2>&1 | tail -1)"; done
               # the per-token quantizations with one load in flight per thread
               QDIT_CUDA_QUANT_BATCH=1 .devrun/bin/test_backend_ops --backend cuda --filter fp8 2>&1 | tee "$OUT/ops_fp8_batch1.log" | tail -1
               # the few-row cases (their names say ±bias) through cuBLASLt instead of the dense / FP8 GEMV kernels
               QDIT_CUDA_NO_GEMV=1 .devrun/bin/test_backend_ops --backend cuda --filter bias 2>&1 | tee "$OUT/ops_no_gemv.log" | tail -1
               QDIT_CUDNN=0 QDIT_CUDA_ATTENTION_SIMPLE=1 .devrun/bin/test_backend_ops --backend cuda --filter attention 2>&1 | tee "$OUT/ops_attn_simple.log" | tail -2 ;;
    wide) # attention with heads above 256 (two matmuls and a softmax) and the convolutions' matmul form, in small chunks,
          # and the convolutions' direct form (failures printed)
          QDIT_CUDA_WIDE_ROWS=7 .devrun/bin/test_backend_ops --backend cuda --filter attention 2>&1 | tee "$OUT/ops_attn_wide_rows.log" | grep -Ev "^(ok  |skip)"
          QDIT_CUDA_CONV_ROWS=3 .devrun/bin/test_backend_ops --backend cuda --filter conv 2>&1 | tee "$OUT/ops_conv_rows.log" | grep -Ev "^(ok  |skip)"
          QDIT_CUDNN=0 QDIT_CUDA_CONV_ROWS=3 .devrun/bin/test_backend_ops --backend cuda --filter conv 2>&1 | tee "$OUT/ops_conv_rows_nodnn.log" | grep -Ev "^(ok  |skip)"
          QDIT_CUDA_CONV_DIRECT=1 .devrun/bin/test_backend_ops --backend cuda --filter conv 2>&1 | tee "$OUT/ops_conv_direct.log" | tail -1 ;;
    vae) # the FLUX.1 / Z-Image VAE decode at 1024², random weights: the matmul convolutions, the direct ones (one run), diffusers
         .devrun/bin/bench_vae_decode --device cuda --res ${VAE_RES:-1024} --runs 5 2>&1 | tee "$OUT/vae.log"
         QDIT_CUDNN=0 .devrun/bin/bench_vae_decode --device cuda --res ${VAE_RES:-1024} --runs 5 2>&1 | sed 's/^VAE decode/VAE decode, QDIT_CUDNN=0 (convolutions as im2col matmuls),/' | tee -a "$OUT/vae.log"
         [ -n "${VAE_PROFILE:-}" ] && QDIT_CUDA_PROFILE=1 .devrun/bin/bench_vae_decode --device cuda --res ${VAE_RES:-1024} --runs 3 2>&1 | tee -a "$OUT/vae.log"
         [ -n "${VAE_DIRECT:-}" ] && QDIT_CUDA_CONV_DIRECT=1 .devrun/bin/bench_vae_decode --device cuda --res ${VAE_RES:-1024} --runs 1 2>&1 | tee -a "$OUT/vae.log"
         python3 tools/device/diffusers_vae_bench.py 5 ${VAE_RES:-1024} 2>&1 | grep -v Warning | tee -a "$OUT/vae.log" ;;
    vae_compare) # the full-size VAE on the GPU against the CPU's f32 decode of the same weights and latent (bf16 and f32; the wide
          # attention in chunks of 100 query rows at 512²), next to the CPU's own bf16 decode
          .devrun/bin/bench_vae_decode --device cuda --res 256 --runs 1 --compare 2>&1 | grep -E "relative|error"
          .devrun/bin/bench_vae_decode --device cuda --res 256 --runs 1 --precision f32 --compare 2>&1 | grep -E "relative|error"
          QDIT_CUDA_WIDE_ROWS=100 .devrun/bin/bench_vae_decode --device cuda --res 512 --runs 1 --compare 2>&1 | grep -E "relative|error" ;;
    generate_full) # qdit generate end to end at the published sizes with random weights (configs only: make_tiny_pipelines.py
          # --real-configs), 1024², on the GPU: each stage's time
          python3 tools/tiny-pipeline/make_tiny_pipelines.py --out /tmp/realcfg --real-configs > /dev/null
          for pq in ${GEN_FULL:-flux-dev-config:fp8}; do p=${pq%%:*} q=${pq#*:}; qf=""; [ "$q" != none ] && qf="--quantization $q"
            echo "generate $p $q: $(.devrun/bin/qdit generate --model-path /tmp/realcfg/$p --random-weights --device cuda $qf --prompt "a red cube" \
              --height 1024 --width 1024 --num-inference-steps ${GEN_STEPS:-4} --output /tmp/gen_full_$p.png 2>&1 | tr '\r' '\n' | grep -E "time:|error|qdit generate:" | tail -3)"; done ;;
    svdq) # SVDQuant's op cases on the GPU, with each of its switches (failures printed)
          .devrun/bin/test_backend_ops --backend cuda --filter svdq 2>&1 | grep -Ev "^(ok  |skip)"
          for v in QDIT_CUDA_SVDQ_LR16 QDIT_CUDA_SVDQ_LR_LT QDIT_CUDA_EXPAND_REF QDIT_CUDA_FP8_UNFUSED QDIT_CUDA_LINEAR_UNFUSED QDIT_CUDA_SVDQ_AMAX_PASS \
                   QDIT_CUDA_SVDQ_LRD_PER_SM QDIT_CUDA_QUANT_BATCH; do
            echo "$v=1: $(env $v=1 .devrun/bin/test_backend_ops --backend cuda --filter svdq 2>&1 | grep -Ev '^(ok  |skip)')"; done ;;
    ncu) # one scheme's linear (NCU_SCHEMES: svdq, nvfp4, fp8) kernel by kernel at every FLUX shape: Nsight Compute's
         # duration per launch, CSV (tools/device/ncu_table.py makes the table)
         # NCU_WARM=1: caches left as the previous kernel left them (--cache-control none), as in a step
         for sc in ${NCU_SCHEMES:-svdq fp8}; do BENCH_ONLY=$sc ncu --csv ${NCU_WARM:+--cache-control none} --metrics gpu__time_duration.sum .devrun/bin/bench_cuda_ops \
           > "$OUT/ncu_$sc.csv" 2> "$OUT/ncu_$sc.err"; python3 tools/device/ncu_table.py "$OUT/ncu_$sc.csv" | tee "$OUT/ncu_$sc.md"; done ;;
    ncu_step) # one FLUX.1 step (NCU_STEP_QUANT, default fp8; NCU_STEP_MODEL) kernel by kernel under Nsight Compute, graphs off,
              # caches as the previous kernel left them: each kernel family's launches, time, DRAM bytes and clock over the
              # last step (tools/device/ncu_step.py; NCU_STEP_LIST=N also lists the step's first N launches; NCU_STEP_KERNELS: a regex,
              # only the kernels it matches)
         QDIT_CUDA_GRAPH=0 timeout 540 ncu --csv --cache-control none --clock-control none ${NCU_STEP_KERNELS:+--kernel-name regex:$NCU_STEP_KERNELS} \
           --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__cycles_elapsed.avg.per_second \
           .devrun/bin/bench_dit_step --device cuda --model "${NCU_STEP_MODEL:-flux.1-dev}" --quant "${NCU_STEP_QUANT:-fp8}" --res 1024 \
           --warmup 1 --steps 2 --text "${NCU_STEP_TEXT:-512}" > "$OUT/ncu_step${NCU_STEP_TAG:-}.csv" 2> "$OUT/ncu_step${NCU_STEP_TAG:-}.err"
         tail -3 "$OUT/ncu_step${NCU_STEP_TAG:-}.err"; python3 tools/device/ncu_step.py "$OUT/ncu_step${NCU_STEP_TAG:-}.csv" ${NCU_STEP_LIST:-} | tee "$OUT/ncu_step${NCU_STEP_TAG:-}.md" ;;
    kernel_trace) # one FLUX.1 step's kernels as they run (graphs on, nothing serialised): CUPTI's activity records through an
                  # injection library built here (tools/device/kernel_trace.c), then the step's span, the time some kernel ran and
                  # the idle gaps between kernels, by kernel pair (tools/device/kernel_gaps.py). KT_RUNS: entries "quant" or
                  # "quant:VAR=v[,VAR=v]" as in side (default fp8)
         cupti_h=$(find /usr/local/cuda/ /usr/local/cuda/extras/ $(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null) \
                     -name cupti.h -path "*include*" 2>/dev/null | head -1)
         cupti_dir=$(dirname "$(dirname "$cupti_h")")
         cupti_lib=$(dirname "$(find "$cupti_dir" /usr/local/cuda/ -name 'libcupti.so*' 2>/dev/null | head -1)")
         krec=$(grep -oh "CUpti_ActivityKernel[0-9]*" "$(dirname "$cupti_h")"/cupti_activity*.h | sort -u | sort -V | tail -1)
         echo "cupti: $cupti_h, $cupti_lib, $krec"
         nvcc -shared -Xcompiler -fPIC -x c -I"$(dirname "$cupti_h")" -DKREC="$krec" tools/device/kernel_trace.c -L"$cupti_lib" -lcupti \
           -o /tmp/kernel_trace.so 2>&1 | tail -5
         ki=0; for e in ${KT_RUNS:-fp8}; do q=${e%%:*}; v=""; [ "$e" != "$q" ] && v=${e#*:}; ki=$((ki + 1))
           echo "-- $q ${v:-(defaults)}"
           env ${v//,/ } LD_LIBRARY_PATH="$cupti_lib:$LD_LIBRARY_PATH" CUDA_INJECTION64_PATH=/tmp/kernel_trace.so KERNEL_TRACE_OUT="$OUT/kernel_trace_$ki.csv" \
             .devrun/bin/bench_dit_step --device cuda --model "${KT_MODEL:-flux.1-dev}" --quant $q --res 1024 --steps 4 --text "${KT_TEXT:-512}" 2>&1 | grep median
           python3 tools/device/kernel_gaps.py "$OUT/kernel_trace_$ki.csv" | tee "$OUT/kernel_gaps_$ki.md"; done ;;
    ncu_rows) # row kernels of BENCH_ONLY=zimage under Nsight Compute: speed of light, occupancy, warp state and memory per
              # launch, for 6 launches after the first 3 whose names match NCU_ROWS_KERNELS (a regex; by default those are
              # Z-Image's norm_modulate_fp8 and rms_norm_gated_add; name rms_rope_bf16 or swiglu alone to reach those;
              # NCU_ROWS_BENCH: another BENCH_ONLY part, e.g. many with NCU_ROWS_KERNELS=w4_gemv for the W4A16 GEMV)
         ncu --kernel-name "regex:${NCU_ROWS_KERNELS:-norm_mod_bf16|norm_add_bf16|rms_rope_bf16}" --launch-skip 3 --launch-count 6 \
           --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis --section LaunchStats \
           env BENCH_ONLY=${NCU_ROWS_BENCH:-zimage} .devrun/bin/bench_cuda_ops 3 > "$OUT/ncu_rows.txt" 2>&1
         grep -E "^  [a-z_]+.*\(|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Size|Grid Size|Warp Cycles Per Issued|SM Frequency|L2 Hit|L1/TEX Hit|Compute \(SM\) Throughput|Block Limit" "$OUT/ncu_rows.txt" | head -150 ;;
    lab) # the kernel lab (bench/kernels/fp8_gemm_lab): every variant on each shape, checked against float64 and
         # cuBLASLt and timed, one markdown table per shape (FLUX.1's linears at 1024²: MLP up and down, attention
         # out, the single blocks' fused input and output). Each shape under a timeout: a variant that deadlocks
         # traps after 2 s (LAB_TIMEOUT_NS) or its child is killed after 10 s, and the others still run.
         # LAB_SHAPES="M K N;M K N" overrides the list.
         IFS=';' read -ra lab_shapes <<< "${LAB_SHAPES:-256 256 256;4608 3072 12288;4608 12288 3072;4608 3072 3072;4608 3072 21504;4608 15360 3072}"
         .devrun/bin/fp8_gemm_lab selftest 2>&1 | tee "$OUT/lab.md"
         for shape in "${lab_shapes[@]}"; do
           timeout 150 .devrun/bin/fp8_gemm_lab "${LAB_VARIANTS:-all}" $shape 2>&1 | tee -a "$OUT/lab.md"; done ;;
    ltsearch) # bench/kernels/lt_algo_search: each FP8 matmul of a FLUX.1 and a Z-Image step against the best
              # configuration cuBLASLt has (LTSEARCH_FILTER: cases whose "model case" contains it)
         timeout 560 .devrun/bin/lt_algo_search "${LTSEARCH_FILTER:-}" 2>&1 | tee "$OUT/ltsearch.md" ;;
    int8) # the int8 schemes' op cases on the default path (the wgmma kernel) and both fallbacks (failures printed),
          # then FP8, int8 on wgmma and int8 on cuBLASLt at FLUX's shapes side by side
          for v in QDIT_NONE QDIT_CUDA_INT8_COOP QDIT_CUDA_INT8_LT QDIT_CUDA_INT8_CORES; do for f in w8a8 w4a4; do
            echo "$v=1 $f: $(env $v=1 timeout 60 .devrun/bin/test_backend_ops --backend cuda --filter $f 2>&1 | grep -Ev '^(ok  |skip)') (rc $?)"; done; done
          BENCH_ONLY=int8 timeout 90 .devrun/bin/bench_cuda_ops 20 2>&1 | tee "$OUT/bench_int8.md"
          echo "with QDIT_CUDA_INT8_COOP=1 (the cooperative form):"
          QDIT_CUDA_INT8_COOP=1 BENCH_ONLY=int8 timeout 90 .devrun/bin/bench_cuda_ops 20 2>&1 | tee "$OUT/bench_int8_coop.md" ;;
    bench_qdit) .devrun/bin/bench_cuda_ops 20 2>&1 | tee "$OUT/bench_qdit.md" ;;
    bench) .devrun/bin/bench_cuda_ops 20 2>&1 | tee "$OUT/bench_qdit.md"
           python3 tools/device/torch_ref_bench.py 20 2>&1 | tee "$OUT/bench_torch.md" ;;
    *) echo "unknown check $t" ;;
  esac
done
