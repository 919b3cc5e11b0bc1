#!/usr/bin/env python3
"""Generate the built-in verifiable task family (HumanEval JSONL) deterministically.

  python3 tools/builtin/taskgen.py --seed 1 --out-dir assets/builtin/tasks

Writes train.jsonl and eval.jsonl: the same task types (tasktypes.py), different parameter
instances (for every type the parameter tuples of the two splits are disjoint, so function
names and prompts differ too). Each canonical solution (style A, correct) is run with
python3 against its own test in a subprocess; the correct one-liner must pass too and both
buggy variants must fail. Any deviation aborts with a non-zero exit.
Standard library only.
"""
import argparse
import concurrent.futures as cf
import json
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasktypes as tt  # noqa: E402


def split_types(seed, n, salt):
    """Types for n problems: balanced round-robin over a seeded permutation."""
    order = [t.key for t in tt.TYPES]
    random.Random("%s-order-%s" % (seed, salt)).shuffle(order)
    return [order[i % len(order)] for i in range(n)]


def generate(seed, n_train, n_eval):
    rng = random.Random("%s-params" % seed)
    eval_types = split_types(seed, n_eval, "eval")
    train_types = split_types(seed, n_train, "train")
    used = {t.key: set() for t in tt.TYPES}  # parameter tuples taken (across both splits)

    def draw(key):
        t = tt.TYPE_BY_KEY[key]
        for _ in range(10000):
            p = t.params(rng)
            pk = t.param_key(p)
            if pk not in used[key]:
                used[key].add(pk)
                return p
        raise SystemExit("taskgen: parameter space of %s exhausted" % key)

    out = {}
    next_id = 0
    for split, types in (("train", train_types), ("eval", eval_types)):
        probs = []
        for i, key in enumerate(types):
            t = tt.TYPE_BY_KEY[key]
            p = draw(key)
            prng = random.Random("%s-%s-%d" % (seed, split, i))
            pr = tt.make_problem(t, p, prng.randrange(3), prng)
            probs.append({
                "task_id": "Builtin/%d" % next_id,
                "prompt": pr["prompt"],
                "canonical_solution": pr["bodies"]["A_ok"],
                "test": pr["test"],
                "entry_point": pr["entry_point"],
                "task_type": key,
                "params": {k: v for k, v in p.items()},
                # the other solution variants of this instance (documentation / tooling only)
                "variants": {v: b for v, b in pr["bodies"].items() if v != "A_ok"},
            })
            next_id += 1
        out[split] = probs
    prompts_tr = {p["prompt"] for p in out["train"]}
    prompts_ev = {p["prompt"] for p in out["eval"]}
    assert not prompts_tr & prompts_ev, "identical prompt in train and eval"
    assert len(prompts_tr) == len(out["train"]) and len(prompts_ev) == len(out["eval"])
    names = [p["entry_point"] for p in out["train"] + out["eval"]]
    assert len(set(names)) == len(names), "duplicate function name"
    return out


def run_program(src):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(src)
        path = f.name
    try:
        r = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=10)
        return r.returncode, r.stderr[-400:]
    except subprocess.TimeoutExpired:
        return 124, "timeout"
    finally:
        os.unlink(path)


def program(prob, body):
    return prob["prompt"] + body + "\n" + prob["test"] + "\n" + "check(" + prob["entry_point"] + ")\n"


def verify(splits):
    jobs = []
    for split, probs in splits.items():
        for p in probs:
            jobs.append((p, "A_ok", p["canonical_solution"], True))
            jobs.append((p, "B_ok", p["variants"]["B_ok"], True))
            jobs.append((p, "A_bad", p["variants"]["A_bad"], False))
            jobs.append((p, "B_bad", p["variants"]["B_bad"], False))
    bad = []
    with cf.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 2)) as ex:
        for (p, v, body, want), (rc, err) in zip(jobs, ex.map(lambda j: run_program(program(j[0], j[2])), jobs)):
            if (rc == 0) != want:
                bad.append("%s %s %s: rc=%d (expected %s) %s" % (p["task_id"], p["task_type"], v, rc,
                                                                 "pass" if want else "fail", err))
    if bad:
        for b in bad:
            print("VERIFY FAILED:", b, file=sys.stderr)
        raise SystemExit("taskgen: %d verification failures" % len(bad))
    return len(jobs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--n-train", type=int, default=80)
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--no-verify", action="store_true", help="skip the subprocess verification (not for release)")
    a = ap.parse_args()
    splits = generate(a.seed, a.n_train, a.n_eval)
    if not a.no_verify:
        n = verify(splits)
        print("taskgen: verified %d programs (canonical + correct one-liner pass, both buggy variants fail)" % n)
    os.makedirs(a.out_dir, exist_ok=True)
    for split in ("train", "eval"):
        path = os.path.join(a.out_dir, split + ".jsonl")
        with open(path, "w") as f:
            for p in splits[split]:
                f.write(json.dumps(p, ensure_ascii=True) + "\n")
        print("taskgen: wrote %s (%d problems)" % (path, len(splits[split])))
    ev = splits["eval"]
    maj = sum(1 for p in ev if tt.P_A[p["task_type"]] > 0.5)
    print("taskgen: eval problems whose type has style A (correct) as corpus majority: %d/%d = %.1f%%"
          % (maj, len(ev), 100.0 * maj / len(ev)))


if __name__ == "__main__":
    main()
