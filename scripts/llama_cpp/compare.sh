#!/usr/bin/env bash
# Decode and prefill speed of s0 and llama.cpp on the same random Qwen3.5-0.8B weights (bf16,
# the bench_engine preset), measured in one run with the two alternating, on this machine's
# threads. Prints one JSON object (medians over rounds, and s0 / llama.cpp ratios).
#
# usage: scripts/llama_cpp/compare.sh LLAMA_CPP_DIR [ROUNDS] [THREADS]
#   LLAMA_CPP_DIR: a llama.cpp checkout built with CMake into LLAMA_CPP_DIR/build (targets
#   llama-bench and llama-batched-bench). s0's build is ./build (run from the repository root).
# What is compared (prompt 128 tokens before decoding, as bench_engine does):
#   decode tokens/s at 1, 4, 16, 64 sequences: bench_engine's base_tokens_per_s against
#   llama-batched-bench's speed_tg (each sequence its own prompt); batch 1 also against
#   llama-bench tg64 at depth 128; prefill of 512 tokens: bench_engine --prompt-len 512
#   against llama-bench pp512.
set -euo pipefail
LC=${1:?usage: compare.sh LLAMA_CPP_DIR [ROUNDS] [THREADS]}
ROUNDS=${2:-2}
T=${3:-2}
S0=build
CACHE=${S0_BENCH_CACHE:-/tmp/s0-bench}
MODEL=$CACHE/qwen35-0.8b-bf16
GGUF=$CACHE/qwen35-0.8b-bf16.gguf
OUT=$(mktemp -d)
for b in "$S0/bench_engine" "$LC/build/bin/llama-bench" "$LC/build/bin/llama-batched-bench"; do
  [ -x "$b" ] || { echo "compare.sh: $b not built" >&2; exit 1; }
done
# The model: bench_engine writes it on first use; then the GGUF of the same weights.
[ -f "$MODEL/model.safetensors" ] ||
  "$S0/bench_engine" --preset 0.8b --dtype bf16 --threads "$T" --batches 1 --steps 1 --repeats 1 \
    --prompt-len 8 --cache-dir "$CACHE" > /dev/null
if [ ! -f "$GGUF" ] || [ "$GGUF" -ot "$MODEL/model.safetensors" ]; then
  PYTHONPATH="$LC/gguf-py" /usr/bin/python3 "$(dirname "$0")/qwen35_to_gguf.py" "$MODEL" "$GGUF.tmp" >&2
  mv "$GGUF.tmp" "$GGUF"
fi
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS: s0" >&2
  "$S0/bench_engine" --preset 0.8b --dtype bf16 --threads "$T" --batches 1,4,16,64 --steps 8 --repeats 2 \
    --prompt-len 128 --cache-dir "$CACHE" > "$OUT/s0_$r.json"
  "$S0/bench_engine" --preset 0.8b --dtype bf16 --threads "$T" --batches 1 --steps 2 --repeats 1 \
    --prompt-len 512 --cache-dir "$CACHE" > "$OUT/s0pp_$r.json"
  echo "round $r/$ROUNDS: llama.cpp" >&2
  "$LC/build/bin/llama-bench" -m "$GGUF" -t "$T" -p 512 -n 64 -d 128 -r 3 -o json > "$OUT/lb_$r.json" 2> /dev/null
  "$LC/build/bin/llama-batched-bench" -m "$GGUF" -t "$T" -c 16384 -b 2048 -ub 512 -npp 128 -ntg 16 \
    -npl 1,4,16,64 --output-format jsonl 2> /dev/null | grep '^{' > "$OUT/lbb_$r.jsonl"
done
/usr/bin/python3 - "$OUT" "$ROUNDS" "$(git -C "$LC" rev-parse HEAD 2>/dev/null || echo unknown)" <<'PY'
import json, statistics, sys
out, rounds, lc_commit = sys.argv[1], int(sys.argv[2]), sys.argv[3]
med = statistics.median
s0_dec, lc_dec, s0_pp, lc_pp, lc_tg1 = {}, {}, [], [], []
for r in range(1, rounds + 1):
    for d in json.load(open(f"{out}/s0_{r}.json"))["decode"]:
        s0_dec.setdefault(d["batch"], []).append(d["base_tokens_per_s"])
    s0_pp.append(json.load(open(f"{out}/s0pp_{r}.json"))["base"]["prefill_tokens_per_s"])
    for t in json.load(open(f"{out}/lb_{r}.json")):
        (lc_pp if t["n_gen"] == 0 else lc_tg1).append(t["avg_ts"])
    for line in open(f"{out}/lbb_{r}.jsonl"):
        t = json.loads(line)
        lc_dec.setdefault(t["pl"], []).append(t["speed_tg"])
rows = []
for b in sorted(s0_dec):
    row = {"batch": b, "s0_tokens_per_s": med(s0_dec[b]), "s0_runs": s0_dec[b]}
    if b in lc_dec:
        row.update(llama_cpp_tokens_per_s=med(lc_dec[b]), llama_cpp_runs=lc_dec[b],
                   s0_over_llama_cpp=med(s0_dec[b]) / med(lc_dec[b]))
    rows.append(row)
print(json.dumps({
    "llama_cpp_commit": lc_commit, "rounds": rounds,
    "decode": rows,
    "decode_batch1_llama_bench_tg64_d128": {"llama_cpp_tokens_per_s": med(lc_tg1), "runs": lc_tg1},
    "prefill_512": {"s0_tokens_per_s": med(s0_pp), "llama_cpp_tokens_per_s": med(lc_pp),
                    "s0_over_llama_cpp": med(s0_pp) / med(lc_pp), "s0_runs": s0_pp, "llama_cpp_runs": lc_pp},
    "raw": out}, indent=2))
PY
