"""collect / evaluate / experiment give the CLI's files and summaries for the same settings."""
import json
import os

import pytest

import s0
from conftest import run_cli

TIMING_KEYS = {"seconds", "decode_tokens_per_s", "prefill_tokens_per_s", "tokens_per_s", "elapsed_s",
               "train_seconds", "decode_speed"}


def write_tasks(path, n):
    # Problems a random model can pass: the completion lands inside a string literal.
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"task_id": f"Str/{i}",
                                "prompt": f"def f():\n    return {i}\n\nNOTE = \"\"\"\n",
                                "canonical_solution": "note",
                                "test": f"\"\"\"\n\ndef check(candidate):\n    assert candidate() == {i}\n",
                                "entry_point": "f"}) + "\n")
    return str(path)


def strip_timing(x):
    if isinstance(x, dict):
        return {k: strip_timing(v) for k, v in x.items() if k not in TIMING_KEYS and "per_s" not in k and "seconds" not in k}
    if isinstance(x, list):
        return [strip_timing(v) for v in x]
    return x


def read(path):
    with open(path, "rb") as f:
        return f.read()


COMMON = ["--dtype", "f32", "--threads", "1", "--timeout", "5", "--unsafe-exec", "--max-new-tokens", "6"]


def test_collect_and_evaluate_equal_cli(model, model_dir, cli_states, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 4)
    _, out, _ = run_cli("collect", "--model", model_dir, "--tasks", tasks, "--out", tmp_path / "cli.jsonl",
                        "--samples", "3", "--seed", "5", "--train", "0-2", *COMMON)
    want = json.loads(out)
    got = s0.collect(model, tasks, str(tmp_path / "py.jsonl"), samples=3, seed=5, problems="0-2", timeout=5,
                     unsafe_exec=True, max_new_tokens=6, progress=False)
    assert strip_timing(got) == strip_timing({**want, "out": str(tmp_path / "py.jsonl")})
    assert read(tmp_path / "py.jsonl") == read(tmp_path / "cli.jsonl")
    assert got["kept"] > 0
    # A progress callable gets one dict per finished problem; the files are the same.
    seen = []
    again = s0.collect(model, tasks, str(tmp_path / "py2.jsonl"), samples=3, seed=5, problems="0-2", timeout=5,
                       unsafe_exec=True, max_new_tokens=6, progress=seen.append, batch=1)  # one problem at a time
    assert [u["done"] for u in seen] == [1, 2, 3] and all(u["progress"] == "collect" for u in seen)
    assert strip_timing(again)["kept"] == got["kept"]
    assert read(tmp_path / "py2.jsonl") == read(tmp_path / "cli.jsonl")
    with pytest.raises(Exception, match="batch"):
        s0.collect(model, tasks, str(tmp_path / "py3.jsonl"), samples=3, problems="0-2", unsafe_exec=True, batch=-1)

    _, out, _ = run_cli("eval", "--model", model_dir, "--tasks", tasks, "--out", tmp_path / "cli_eval", "--eval",
                        "2-3", "--states", cli_states, "--alpha", "0.5,2", *COMMON)
    want = json.loads(out)
    got = s0.evaluate(model_dir, tasks, str(tmp_path / "py_eval"), problems="2-3", states=cli_states,
                      alphas=[0.5, 2], timeout=5, unsafe_exec=True, max_new_tokens=6, dtype="f32", threads=1,
                      progress=False)
    # The summaries differ only in where they were written and in timings.
    assert got["files"]["results"] == str(tmp_path / "py_eval" / "results.jsonl")
    for x in (want, got):
        x.pop("files")
    assert strip_timing(got) == strip_timing(want)
    rows = lambda d: [strip_timing(json.loads(l)) for l in read(d / "results.jsonl").decode().splitlines()]
    assert rows(tmp_path / "py_eval") == rows(tmp_path / "cli_eval")


def test_experiment_dict_equals_cli(model_dir, tmp_path):
    write_tasks(tmp_path / "tasks.jsonl", 4)
    cfg = {"model": model_dir, "tasks": "tasks.jsonl", "train_problems": "0-1", "eval_problems": "2-3",
           "seeds": [0], "dtype": "f32", "threads": 1, "unsafe_exec": True,
           "collect": {"samples": 2, "max_new_tokens": 5}, "training": {"steps": 2},
           "eval": {"alphas": [0.5], "max_new_tokens": 5}, "decode_speed_tokens": 0}
    (tmp_path / "exp.json").write_text(json.dumps(cfg))
    run_cli("experiment", "--config", tmp_path / "exp.json", "--out", tmp_path / "cli")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a dict's relative paths are relative to the current directory
    try:
        updates = []
        got = s0.experiment(cfg, out=str(tmp_path / "py"), progress=updates.append)
        assert {u["progress"] for u in updates} == {"collect", "eval"}
    finally:
        os.chdir(cwd)
    want = json.loads(read(tmp_path / "cli" / "summary.json"))
    assert strip_timing(got) == strip_timing(json.loads(read(tmp_path / "py" / "summary.json")))
    drop = lambda s: {k: v for k, v in strip_timing(s).items() if k not in ("out", "config")}
    for a, b in zip(drop(got)["methods"], drop(want)["methods"]):
        assert {k: v for k, v in a.items() if a.get(k) != b.get(k)} == {}, b
    assert drop(got) == drop(want)
    assert read(tmp_path / "py" / "seed_0" / "train.jsonl") == read(tmp_path / "cli" / "seed_0" / "train.jsonl")


def test_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError):
        s0.collect(model, str(tmp_path / "none.jsonl"), str(tmp_path / "o.jsonl"))
    tasks = write_tasks(tmp_path / "t.jsonl", 2)
    with pytest.raises(ValueError, match="--no-base needs --states"):
        s0.evaluate(model, tasks, str(tmp_path / "e"), no_base=True)
    with pytest.raises(ValueError):
        s0.evaluate(model, tasks, str(tmp_path / "e"), problems="7-9", unsafe_exec=True)
    with pytest.raises(ValueError):
        s0.experiment({"model": "m"})
    with pytest.raises(FileNotFoundError):
        s0.experiment(str(tmp_path / "nope.json"))
