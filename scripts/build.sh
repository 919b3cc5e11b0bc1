#!/usr/bin/env bash
# Configures and builds s0 (Release) into ./build. `--target NAME` (repeatable) builds only
# those targets (scripts/demo.sh builds just `s0`); every other argument goes to CMake's
# configure step, e.g. -DCMAKE_PREFIX_PATH=/path/to/libtorch for a CUDA libtorch.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=()
configure=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--target" ] && [ $# -ge 2 ]; then
    targets+=(--target "$2")
    shift 2
  else
    configure+=("$1")
    shift
  fi
done
gen=()
command -v ninja >/dev/null && [ ! -f build/Makefile ] && gen=(-G Ninja)
cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release "${configure[@]}"
cmake --build build --parallel "$(nproc)" "${targets[@]}"
