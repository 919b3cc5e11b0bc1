#!/usr/bin/env bash
# The main job on the built-in default: install dependencies, build, run `s0 demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/s0 demo "$@"
