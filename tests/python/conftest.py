"""Fixtures of the Python module's tests (run by CTest: python.<file>; or by hand with
PYTHONPATH=build/python S0_CLI=build/s0 /usr/bin/python3 -m pytest tests/python).

Every test builds its own tiny random model with `s0 init-model`, and compares the module with
what the CLI prints for the same inputs."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("S0_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BUILD_DIR = os.environ.get("S0_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
CLI = os.environ.get("S0_CLI", os.path.join(BUILD_DIR, "s0"))

import s0  # noqa: E402  (PYTHONPATH=build/python)


def run_cli(*args, check=True):
    """Runs the s0 CLI; returns (exit code, stdout, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"s0 {' '.join(map(str, args))} exited {p.returncode}:\n{p.stderr}")
    return p.returncode, p.stdout, p.stderr


def cli_json(*args):
    """The CLI's stdout as JSON (one object, or a list for several lines)."""
    _, out, _ = run_cli(*args)
    lines = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
    if not lines:
        return json.loads(out)
    return lines[0] if len(lines) == 1 else lines


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny"
    run_cli("init-model", "--preset", "tiny", "--dtype", "f32", "--seed", "3", "--out", d)
    return str(d)


@pytest.fixture(scope="session")
def model(model_dir):
    return s0.Model.load(model_dir, dtype="f32", threads=1)


@pytest.fixture(scope="session")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [
        {"prompt": "Say OK.", "completion": "OK"},
        {"prompt": "Say OK!", "completion": "OK then"},
        {"prompt": "What is 2+2?", "completion": "4"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path), rows


@pytest.fixture(scope="session")
def cli_states(model_dir, train_file, tmp_path_factory):
    """A state set trained by the CLI (raw prompts, 3 steps, f32, one thread)."""
    out = tmp_path_factory.mktemp("cli_states") / "states"
    run_cli("train", "--model", model_dir, "--data", train_file[0], "--out", out, "--steps", "3",
            "--dtype", "f32", "--threads", "1", "--alpha", "1.5")
    return str(out)
