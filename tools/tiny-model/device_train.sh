#!/usr/bin/env bash
# Train, export and check the embedded tiny model on the GPU machine, in one call (device tool, from the
# repo root, with `carry: [".devrun"]`, plus ".ref" for the optional diffusers comparison):
#   bash tools/tiny-model/device_train.sh [trainer flags...]
# .devrun/bin/qdit is a qdit built on the CI-class machine (with .devrun/lib, see tools/device/cuda_checks.sh).
# Brings back in $OUT: the logs, the held-out grids, and the pipeline folder as tar parts (≤ 15 MiB each).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/devlib
export PYTHONUNBUFFERED=1
[ -f .devrun/lib/libdnnl.so.2.xz ] && python3 -c "import lzma; open('/tmp/devlib/libdnnl.so.2','wb').write(lzma.open('.devrun/lib/libdnnl.so.2.xz').read())"
cublas_dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null || true)
export LD_LIBRARY_PATH="/tmp/devlib:$PWD/.devrun/lib:/usr/local/cuda/lib64:${cublas_dir}:${LD_LIBRARY_PATH:-}"
T=/tmp/tiny
rm -rf "$T"
start=$(date +%s)
python3 tools/tiny-model/train_tiny_model.py --out "$T" "$@" 2>&1 | tee "$OUT/train.log"
echo "trainer: $(( $(date +%s) - start )) s"
(cd "$T" && tar -cf - pipeline checks train_summary.json) | split -b 15M - "$OUT/pipeline.tar.part-"
cp "$T/heldout_grid.png" "$T/train_summary.json" "$OUT/" 2>/dev/null
mkdir -p /tmp/vout
[ -n "${SKIP_VERIFY:-}" ] || python3 tools/tiny-model/verify_export.py "$T" .devrun/bin/qdit /tmp/vout ${VERIFY_ARGS:-} 2>&1 | tee "$OUT/verify.log"
cp /tmp/vout/qdit_heldout_grid.png "$OUT/" 2>/dev/null
echo "total: $(( $(date +%s) - start )) s"
ls -la "$OUT"
