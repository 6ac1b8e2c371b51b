#!/usr/bin/env bash
# Sets a fresh Debian 12 machine up for qdit and builds it into ./build:
#   1. installs the Debian packages qdit needs (only those missing; needs root or sudo),
#   2. configures and builds with CMake + Ninja.
# Usage: tools/setup.sh [--deps-only] [--fuzz] [--qdit-only]
#   --fuzz also installs clang's fuzzer runtime; --qdit-only builds the qdit command alone (no tests).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build pkg-config gcc libc6-dev libjansson-dev libcmocka-dev libdnnl-dev libpcre2-dev libutf8proc-dev libpng-dev
          python3 python3-numpy sentencepiece)
# The tokenizer tests install their npm references with node + npm (tools/tokenizer-ref); Debian's
# nodejs + npm only when no node is there already (a NodeSource nodejs ships its own npm).
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
deps_only=0
target=()
for arg in "$@"; do
  case "$arg" in
    --deps-only) deps_only=1 ;;
    --fuzz) packages+=(clang libclang-rt-14-dev libomp-14-dev) ;;
    --qdit-only) target=(--target qdit) ;;
    *) echo "setup.sh: unknown option '$arg' (expected --deps-only, --fuzz or --qdit-only)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
((deps_only)) && exit 0

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build "${target[@]}"
