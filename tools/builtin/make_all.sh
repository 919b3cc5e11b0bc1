#!/usr/bin/env bash
# Regenerate the built-in task family, pretraining corpus and tokenizer into OUT (default
# assets/builtin). Deterministic: the same seeds give byte-identical files.
#   tools/builtin/make_all.sh [OUT] [N_CORPUS]
# Shipped in git: OUT/tasks/{train,eval}.jsonl, OUT/tokenizer.json, OUT/corpus_stats.txt.
# Not shipped (large, regenerated in ~2 s): OUT/corpus.jsonl.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-$HERE/../../assets/builtin}"
N="${2:-50000}"          # corpus examples (the tokenizer only uses the first 40000; prefix-stable)
TASK_SEED=1
CORPUS_SEED=2
mkdir -p "$OUT/tasks"
python3 "$HERE/taskgen.py" --seed "$TASK_SEED" --out-dir "$OUT/tasks" --n-train 80 --n-eval 100
python3 "$HERE/corpus.py" --seed "$CORPUS_SEED" --n "$N" --out "$OUT/corpus.jsonl" --tasks-dir "$OUT/tasks"
python3 "$HERE/corpus.py" --seed "$CORPUS_SEED" --n "$N" --stats --verify-n 5000 --tasks-dir "$OUT/tasks" \
  > "$OUT/corpus_stats.txt"
cat "$OUT/corpus_stats.txt"
python3 "$HERE/bpe.py" --corpus "$OUT/corpus.jsonl" --vocab-size 1024 --max-lines 40000 --out "$OUT/tokenizer.json"
