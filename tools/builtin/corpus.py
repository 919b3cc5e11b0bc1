#!/usr/bin/env python3
"""Pretraining corpus for the built-in model (JSONL, one {"prompt", "completion"} per line).

  python3 tools/builtin/corpus.py --seed 2 --out corpus.jsonl --n 40000 \\
      --tasks-dir assets/builtin/tasks
  python3 tools/builtin/corpus.py --seed 2 --n 40000 --stats --tasks-dir assets/builtin/tasks

prompt     = USER_PREFIX + a problem prompt (signature + docstring) drawn from the same task
             types as train.jsonl / eval.jsonl with fresh random parameters, names and examples;
             an exact prompt of train.jsonl or eval.jsonl is never emitted.
completion = the function body (4-space indented, no trailing newline), one of four variants:
             style A (`    result = ...` accumulator loop) or style B (`    return ...`
             one-liner), each correct or subtly wrong. P(style A) is per task type
             (tasktypes.P_A); P(correct | A) = 0.9, P(correct | B) = 0.1. See README.md.

--stats prints the realised per-type mix and re-checks by execution that every emitted
"correct" body passes and every "wrong" body fails tests built like the task tests
(on the first --verify-n examples). Standard library only.
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasktypes as tt  # noqa: E402

USER_PREFIX = ("Complete the following Python function. Only output the function body, "
               "no explanation. No markdown.\n\n")


def load_task_prompts(tasks_dir):
    prompts = set()
    if not tasks_dir:
        return prompts
    for split in ("train", "eval"):
        path = os.path.join(tasks_dir, split + ".jsonl")
        with open(path) as f:
            for line in f:
                if line.strip():
                    prompts.add(json.loads(line)["prompt"])
    return prompts


def examples(seed, n, exclude):
    """Yield n dicts: prompt (problem prompt, without USER_PREFIX), body, type, style, correct, p, name_idx."""
    rng = random.Random("%s-corpus" % seed)
    keys = [t.key for t in tt.TYPES]
    for _ in range(n):
        t = tt.TYPE_BY_KEY[rng.choice(keys)]
        while True:
            p = t.params(rng)
            name_idx = rng.randrange(len(t.names))
            name = tt.function_name(t, p, name_idx)
            ref = tt.compile_body(t.args, t.body("A_ok", p))
            prompt = tt.make_prompt(t, p, name, ref, rng)
            if prompt not in exclude:
                break
        style = "A" if rng.random() < tt.P_A[t.key] else "B"
        correct = rng.random() < (tt.P_OK_A if style == "A" else tt.P_OK_B)
        variant = style + ("_ok" if correct else "_bad")
        body = t.body(variant, p).rstrip("\n")
        yield {"prompt": prompt, "body": body, "type": t.key, "style": style, "correct": correct,
               "p": p, "name_idx": name_idx}


def stats(seed, n, exclude, verify_n):
    keys = [t.key for t in tt.TYPES]
    cnt = {k: {"A_ok": 0, "A_bad": 0, "B_ok": 0, "B_bad": 0} for k in keys}
    mismatches = 0
    checked = 0
    vrng = random.Random("%s-verify" % seed)
    for i, ex in enumerate(examples(seed, n, exclude)):
        v = ex["style"] + ("_ok" if ex["correct"] else "_bad")
        cnt[ex["type"]][v] += 1
        if i < verify_n:
            t = tt.TYPE_BY_KEY[ex["type"]]
            pr = tt.make_problem(t, ex["p"], ex["name_idx"], vrng)
            f = tt.compile_body(t.args, ex["body"] + "\n")
            passed = all(tt.run(f, a) == ("ok", o) for a, o in zip(pr["inputs"], pr["outputs"]))
            checked += 1
            if passed != ex["correct"]:
                mismatches += 1
    print("per-type mix of the corpus (seed %s, n %d)" % (seed, n))
    hdr = "%-20s %6s %6s %6s %6s %6s %7s %9s %9s %s" % (
        "type", "n", "A_ok", "A_bad", "B_ok", "B_bad", "P(A)", "P(corr)", "majority", "majority-correct")
    print(hdr)
    print("-" * len(hdr))
    tot = {"A_ok": 0, "A_bad": 0, "B_ok": 0, "B_bad": 0}
    for k in keys:
        c = cnt[k]
        m = sum(c.values())
        for v in tot:
            tot[v] += c[v]
        pa = (c["A_ok"] + c["A_bad"]) / max(1, m)
        pc = (c["A_ok"] + c["B_ok"]) / max(1, m)
        maj = "A" if pa > 0.5 else "B"
        majv = max((maj + "_ok", maj + "_bad"), key=lambda v: c[v])
        print("%-20s %6d %6d %6d %6d %6d %7.2f %9.2f %9s %s" % (
            k, m, c["A_ok"], c["A_bad"], c["B_ok"], c["B_bad"], pa, pc, majv, "yes" if majv.endswith("_ok") else "no"))
    m = sum(tot.values())
    print("%-20s %6d %6d %6d %6d %6d %7.2f %9.2f" % (
        "all", m, tot["A_ok"], tot["A_bad"], tot["B_ok"], tot["B_bad"],
        (tot["A_ok"] + tot["A_bad"]) / max(1, m), (tot["A_ok"] + tot["B_ok"]) / max(1, m)))
    print("execution check of the correctness labels: %d examples, %d mismatches" % (checked, mismatches))
    return mismatches


def majority_report(tasks_dir):
    """Per split: problems whose type's corpus-majority style (by tasktypes.P_A) is the correct one."""
    for split in ("train", "eval"):
        path = os.path.join(tasks_dir, split + ".jsonl")
        probs = [json.loads(l) for l in open(path) if l.strip()]
        maj = [p for p in probs if tt.P_A[p["task_type"]] > 0.5]
        print("%s.jsonl: %d problems; majority style correct (A-majority type) for %d = %.1f%%"
              " -> expected greedy pass@1 of a majority-style imitator ~%.1f%%"
              % (split, len(probs), len(maj), 100.0 * len(maj) / len(probs), 100.0 * len(maj) / len(probs)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--out", help="output JSONL (required unless --stats)")
    ap.add_argument("--tasks-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                        "..", "..", "assets", "builtin", "tasks"),
                    help="folder with train.jsonl/eval.jsonl whose prompts are never emitted")
    ap.add_argument("--with-meta", action="store_true",
                    help="also write task_type/style/correct fields on each line")
    ap.add_argument("--stats", action="store_true", help="print the per-type mix instead of writing")
    ap.add_argument("--verify-n", type=int, default=3000, help="--stats: examples re-checked by execution")
    a = ap.parse_args()
    exclude = load_task_prompts(a.tasks_dir)
    if not exclude:
        raise SystemExit("corpus: no task prompts loaded from %s" % a.tasks_dir)
    if a.stats:
        mism = stats(a.seed, a.n, exclude, a.verify_n)
        majority_report(a.tasks_dir)
        if mism:
            raise SystemExit("corpus: %d correctness-label mismatches" % mism)
        return
    if not a.out:
        raise SystemExit("corpus: --out is required")
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        for ex in examples(a.seed, a.n, exclude):
            rec = {"prompt": USER_PREFIX + ex["prompt"], "completion": ex["body"]}
            if a.with_meta:
                rec.update(task_type=ex["type"], style=ex["style"], correct=ex["correct"])
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")
    os.replace(tmp, a.out)
    print("corpus: wrote %s (%d examples)" % (a.out, a.n))


if __name__ == "__main__":
    main()
