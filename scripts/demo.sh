#!/usr/bin/env bash
# The main job on the built-in default: install dependencies, build, run `s0 demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh --target s0   # only what the demo runs (tests, benches and tools: scripts/test.sh)
exec build/s0 demo "$@"
