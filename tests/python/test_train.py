"""Trainer (S0Trainer-compatible): trained states equal the CLI's bit for bit; the reference's
(text, prompt_len) pairs equal the same dict examples; history, avg_state_norm, save/load in
the reference layout, activate/deactivate, callbacks, Ctrl-C, errors; the baselines."""
import json
import os
import signal
import threading

import numpy as np
import pytest

import s0
from conftest import run_cli

REFERENCE_KEYS = ["n_steps", "lr", "l2_lambda", "alpha", "normalize", "grad_clip", "max_length"]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_defaults_are_the_references(model):
    c = s0.Trainer(model).config
    assert {k: c[k] for k in REFERENCE_KEYS} == {"n_steps": 20, "lr": 1e-3, "l2_lambda": 5e-4, "alpha": None,
                                                 "normalize": False, "grad_clip": 1.0, "max_length": 2048}
    # The reference's constructor: S0Trainer(model, tokenizer, config); config may be an object.
    class Cfg:
        def __init__(self):
            self.n_steps, self.lr = 4, 0.5
    for t in (s0.S0Trainer(model, None, {"n_steps": 4, "lr": 0.5}), s0.S0Trainer(model, "tok", Cfg()),
              s0.S0Trainer(model, {"n_steps": 4, "lr": 0.5})):
        assert isinstance(t, s0.Trainer)
        assert (t.config["n_steps"], t.config["lr"]) == (4, 0.5)
    c = s0.Trainer(model, {"n_steps": 3, "lr": 0.01}, l2_lambda=0.0).config
    assert (c["n_steps"], c["lr"], c["l2_lambda"]) == (3, 0.01, 0.0)


def test_train_equals_cli_bit_for_bit(model, model_dir, cli_states, train_file, tmp_path):
    _, rows = train_file
    t = s0.Trainer(model, n_steps=3, alpha=1.5, out=str(tmp_path / "py"))
    result = t.train(rows)
    # The same tensors, and the same bytes on disk.
    assert read(tmp_path / "py" / "states.safetensors") == read(os.path.join(cli_states, "states.safetensors"))
    assert read(tmp_path / "py" / "config.json") == read(os.path.join(cli_states, "config.json"))
    assert read(tmp_path / "py" / "meta.json") == read(os.path.join(cli_states, "meta.json"))
    cli = s0.StateSet.load(cli_states)
    assert cli.layers == t.states.layers
    for layer in cli.layers:
        assert np.array_equal(cli[layer], t.states[layer])
    # The summary.
    s0json = json.loads(read(os.path.join(cli_states, "s0.json")))
    assert result["final_loss"] == s0json["final_loss"]
    assert len(result["history"]) == 3 and [h["step"] for h in result["history"]] == [1, 2, 3]
    assert result["final_loss"] == result["history"][-1]["loss"]
    norms = [float(np.linalg.norm(t.states[layer].astype(np.float64))) for layer in t.states.layers]
    assert result["avg_state_norm"] == pytest.approx(np.mean(norms), rel=1e-5)
    assert result["avg_state_norm"] > 0
    assert t.history == result["history"]


def test_chat_and_temporary_out_equal_cli(model, model_dir, train_file, tmp_path):
    path, rows = train_file
    out = tmp_path / "cli_chat"
    run_cli("train", "--model", model_dir, "--data", path, "--out", out, "--steps", "2", "--chat", "--dtype", "f32",
            "--threads", "1", "--layers", "early", "--lr", "0.01")
    t = s0.Trainer(model, n_steps=2, layers="early", lr=0.01, chat=True)
    t.train(rows)
    cli = s0.StateSet.load(str(out))
    assert cli.layers == t.states.layers
    for layer in cli.layers:
        assert np.array_equal(cli[layer], t.states[layer])


def test_reference_pairs_equal_dict_examples(model):
    pairs, dicts = [], []
    for prompt, completion in [("Question: hi\n", "Answer"), ("Question: bye\n", "Later")]:
        # The pair form tokenizes the whole text: the same tokens as prompt + completion here.
        whole = model.tokenize(prompt + completion)
        assert whole == model.tokenize(prompt) + model.tokenize(completion, add_special_tokens=False)
        pairs.append((prompt + completion, len(model.tokenize(prompt))))
        dicts.append({"prompt": prompt, "completion": completion})
    a = s0.Trainer(model, n_steps=2)
    b = s0.Trainer(model, n_steps=2)
    ra, rb = a.train(pairs), b.train(dicts)
    assert ra["final_loss"] == rb["final_loss"]
    for layer in a.states.layers:
        assert np.array_equal(a.states[layer], b.states[layer])


def test_save_load_activate(model, train_file, tmp_path):
    t = s0.Trainer(model, n_steps=2, alpha=2.0)
    t.train(train_file[1])
    t.save(str(tmp_path / "st"))
    cfg = json.loads(read(tmp_path / "st" / "config.json"))
    assert list(cfg) == REFERENCE_KEYS  # the reference's layout: exactly its keys, in its order
    meta = json.loads(read(tmp_path / "st" / "meta.json"))
    assert meta["arch"] == "gated_delta_net" and meta["recurrent_layers"] == model.recurrent_layers
    t2 = s0.Trainer(model)
    loaded = t2.load(str(tmp_path / "st"))
    for layer in t.states.layers:
        assert np.array_equal(loaded[layer], t.states[layer])
    base = model.generate("Say OK.", max_new_tokens=8)
    explicit = model.generate("Say OK.", max_new_tokens=8, states=t.states)
    t2.activate()
    try:
        got = model.generate("Say OK.", max_new_tokens=8)
        assert (got["tokens"], got["text"]) == (explicit["tokens"], explicit["text"])
    finally:
        t2.deactivate()
    assert model.generate("Say OK.", max_new_tokens=8)["tokens"] == base["tokens"]


def test_progress_and_callback_errors(model, train_file):
    seen = []
    t = s0.Trainer(model, n_steps=3)
    r = t.train(train_file[1], progress=seen.append)
    assert seen == r["history"]
    assert all("loss" in h and "grad_norm" in h and "state_norms" in h for h in seen)

    def boom(step):
        raise RuntimeError("enough")
    with pytest.raises(RuntimeError, match="enough"):
        s0.Trainer(model, n_steps=3).train(train_file[1], progress=boom)


def test_ctrl_c_interrupts_training(model, train_file):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            s0.Trainer(model, n_steps=100000).train(train_file[1])
    finally:
        timer.cancel()
    assert s0.Trainer(model, n_steps=1).train(train_file[1])["final_loss"] > 0


def test_errors(model, tmp_path):
    with pytest.raises(ValueError, match="unknown training setting 'nsteps'"):
        s0.Trainer(model, nsteps=3)
    with pytest.raises(ValueError):
        s0.Trainer(model, layers="99")
    with pytest.raises(ValueError, match="method"):
        s0.Trainer(model, method="dora")
    t = s0.Trainer(model, n_steps=1)
    with pytest.raises(ValueError, match="example 0"):
        t.train([{"prompt": "x"}])
    with pytest.raises(ValueError, match="example 1"):
        t.train([("abc", 1), 42])
    with pytest.raises(ValueError, match="prompt_len"):
        t.train([("abc", 1000)])
    with pytest.raises(ValueError, match="no examples"):
        t.train([])
    with pytest.raises(ValueError, match="nothing trained"):
        t.save(str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError):
        t.load(str(tmp_path / "missing"))


@pytest.mark.parametrize("method,flags,kwargs", [
    ("offset", ["--method", "offset", "--steps", "2", "--lr", "0.01"], dict(n_steps=2, lr=0.01)),
    ("lora", ["--method", "lora", "--steps", "2", "--rank", "2", "--batch", "1"], dict(n_steps=2, rank=2, batch=1)),
])
def test_baselines_equal_cli(model, model_dir, train_file, tmp_path, method, flags, kwargs):
    path, rows = train_file
    run_cli("train", "--model", model_dir, "--data", path, "--out", tmp_path / "cli", "--dtype", "f32",
            "--threads", "1", *flags)
    t = s0.Trainer(model, method=method, out=str(tmp_path / "py"), **kwargs)
    r = t.train(rows)
    assert r["method"] == method and len(r["history"]) == 2
    if method == "offset":
        a, b = s0.StateOffset.load(str(tmp_path / "cli"), model), t.states
        assert sorted(a.offsets) == sorted(b.offsets)
        for layer in a.offsets:
            assert np.array_equal(a.offsets[layer], b.offsets[layer])
        name = "offsets.safetensors"
    else:
        a, b = s0.Lora.load(str(tmp_path / "cli"), model), t.states
        assert sorted(a.modules) == sorted(b.modules) and a.r == 2
        for m in a.modules:
            assert np.array_equal(a.modules[m][0], b.modules[m][0]) and np.array_equal(a.modules[m][1], b.modules[m][1])
        name = "adapter_model.safetensors"
        want = json.loads(run_cli("lora", "inspect", tmp_path / "cli")[1])
        assert s0.Lora.load(str(tmp_path / "cli")).inspect(str(tmp_path / "cli")) == want
    assert read(tmp_path / "cli" / name) == read(tmp_path / "py" / name)
    # Generation with the trained adapter equals the CLI's.
    flag = "--" + method
    want = run_cli("generate", "--model", model_dir, "--dtype", "f32", "--threads", "1", "--prompt", "Say OK.",
                   "--max-new-tokens", "8", flag, tmp_path / "cli")[1]
    got = model.generate("Say OK.", max_new_tokens=8, **{method: t.states})
    assert got["tokens"] == json.loads(want)["tokens"]
