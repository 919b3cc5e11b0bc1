#!/usr/bin/env bash
# The test suite: install dependencies, build, run every test with CTest.
#   scripts/test.sh              Release build in build/
#   scripts/test.sh --sanitize   AddressSanitizer + UndefinedBehaviorSanitizer (g++) build in
#                                build-asan/; any report fails the test it happens in
#                                (suppressions for libtorch's own internals: scripts/sanitize/)
# Extra arguments go to ctest (e.g. -R Serve).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if [ "${1:-}" = "--sanitize" ]; then
  shift
  gen=()
  command -v ninja >/dev/null && [ ! -f build-asan/Makefile ] && gen=(-G Ninja)
  # -O1 -g1: the usual sanitizer setting (fast enough to run, line numbers in reports).
  cmake -S . -B build-asan "${gen[@]}" -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" -DS0_SANITIZE=ON -DS0_BUILD_BENCH=OFF \
    -DS0_BUILD_TOOLS=OFF
  cmake --build build-asan --parallel "$(nproc)"
  sup="$PWD/scripts/sanitize"
  # halt_on_error / no recovery: a report ends the test process, so the test fails.
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0:strict_string_checks=1:check_initialization_order=1:suppressions=$sup/asan.supp"
  export LSAN_OPTIONS="suppressions=$sup/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$sup/ubsan.supp"
  ctest --test-dir build-asan --output-on-failure --timeout 3600 -j "$(nproc)" "$@"
  exit
fi
scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 900 -j "$(nproc)" "$@"
