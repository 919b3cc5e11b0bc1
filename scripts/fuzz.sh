#!/usr/bin/env bash
# Runs the fuzz harnesses (fuzz/README.md).
#   scripts/fuzz.sh [--time S | --runs N] [--rss-mb M] [HARNESS...]
#       libFuzzer (clang, ASan+UBSan; built into build-fuzz/) on each harness for S seconds
#       (default 60) or N executions, whichever comes first when both are given; the corpus grows in build-fuzz/corpus/<h>/ seeded from
#       fuzz/corpus/<h>/, findings land in build-fuzz/findings/<h>/. Default: every harness.
#   scripts/fuzz.sh --plain [--runs N] [--time S] [HARNESS...]
#       the g++ plain-driver builds in build/ (those needing libtorch, serve, state_set and
#       adapters, included): replay the corpus, then N (default 10000) random mutations
#       without coverage feedback, for at most S seconds when given.
#   scripts/fuzz.sh --replay      every corpus once with the plain drivers (what CTest runs).
# A finding: add the input to fuzz/corpus/<h>/ (CTest then replays it) and fix the bug.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=libfuzzer time="" runs="" rss=2048
harnesses=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) time=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --rss-mb) rss=$2; shift 2 ;;
    --plain) mode=plain; shift ;;
    --replay) mode=replay; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) harnesses+=("$1"); shift ;;
  esac
done
if [ ${#harnesses[@]} -eq 0 ]; then
  for f in fuzz/fuzz_*.cpp; do h=${f#fuzz/fuzz_}; harnesses+=("${h%.cpp}"); done
fi
jobs=$(nproc)

if [ "$mode" = libfuzzer ]; then
  command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang)" >&2; exit 1; }
  gen=(); command -v ninja >/dev/null && [ ! -f build-fuzz/Makefile ] && gen=(-G Ninja)
  cmake -S . -B build-fuzz "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DS0_FUZZ=ON >/dev/null
  targets=()
  torch_only=" serve state_set adapters "  # need libtorch: built with the plain driver only (--plain)
  for h in "${harnesses[@]}"; do [[ $torch_only == *" $h "* ]] || targets+=(--target "fuzz_$h"); done
  cmake --build build-fuzz --parallel "$jobs" "${targets[@]}"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  status=0
  for h in "${harnesses[@]}"; do
    if [[ $torch_only == *" $h "* ]]; then echo "fuzz.sh: $h needs libtorch: run it with --plain" >&2; continue; fi
    mkdir -p "build-fuzz/corpus/$h" "build-fuzz/findings/$h"
    limit=()
    [ -n "$time" ] && limit+=(-max_total_time="$time")
    [ -n "$runs" ] && limit+=(-runs="$runs")
    [ ${#limit[@]} -eq 0 ] && limit=(-max_total_time=60)
    desc="${runs:+$runs runs}${runs:+${time:+ or }}${time:+$time s}"
    echo "== fuzz_$h (${desc:-60 s})"
    if ! build-fuzz/fuzz_"$h" "${limit[@]}" -timeout=30 -rss_limit_mb="$rss" -malloc_limit_mb="$rss" \
        -print_final_stats=1 -artifact_prefix="build-fuzz/findings/$h/" \
        "build-fuzz/corpus/$h" "fuzz/corpus/$h" 2>&1 | tee "build-fuzz/findings/$h/last.log" |
        grep -E "^#[0-9]+.*(pulse|DONE|INITED)|^Done|stat::number_of_executed_units|ERROR|SUMMARY|^==[0-9]+=="; then
      :
    fi
    if grep -qE "ERROR: (libFuzzer|AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer)|runtime error:|==ERROR" \
        "build-fuzz/findings/$h/last.log"; then
      echo "fuzz.sh: fuzz_$h found a problem: build-fuzz/findings/$h/ (log: last.log)" >&2
      status=1
    fi
  done
  exit $status
fi

# Plain drivers (g++): build them in build/ like the rest of the project.
targets=()
for h in "${harnesses[@]}"; do targets+=(--target "fuzz_$h"); done
scripts/build.sh "${targets[@]}"
for h in "${harnesses[@]}"; do
  if [ "$mode" = replay ]; then
    build/fuzz_"$h" "fuzz/corpus/$h"
  else
    build/fuzz_"$h" --mutate "${runs:-10000}" ${time:+--seconds "$time"} --seed "${SEED:-1}" "fuzz/corpus/$h"
  fi
done
