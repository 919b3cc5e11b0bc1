"""Model: generate / tokenize / detokenize / apply_chat_template / logits give exactly what the
CLI gives for the same inputs; streaming equals generate; errors raise the documented classes."""
import os
import signal
import threading

import numpy as np
import pytest

import s0
from conftest import cli_json, run_cli


def test_properties(model, model_dir):
    assert model.dir == model_dir
    assert model.dtype == "f32"
    assert model.model_type == "qwen3_5"
    assert model.recurrent_arch == "gated_delta_net"
    assert model.vocab_size > 0
    assert len(model.recurrent_layers) > 0
    assert len(model.state_shape) == 3
    assert "qwen3_5" in repr(model)


@pytest.mark.parametrize("text", ["Hello world", "def f(x):\n    return x + 1\n", "ünïcödé 🙂"])
def test_tokenize_detokenize_equal_cli(model, model_dir, text):
    ids = model.tokenize(text)
    assert ids == cli_json("tokenize", "--model", model_dir, "--text", text)["ids"]
    assert model.tokenize(text, add_special_tokens=False) == cli_json(
        "tokenize", "--model", model_dir, "--text", text, "--no-special")["ids"]
    chat = cli_json("tokenize", "--model", model_dir, "--text", text, "--chat")
    assert model.tokenize(text, chat=True) == chat["ids"]
    assert model.apply_chat_template([{"role": "user", "content": text}], enable_thinking=False) == chat["text"]
    ids_s = ",".join(map(str, ids))
    assert model.detokenize(ids) == cli_json("detokenize", "--model", model_dir, "--ids", ids_s)["text"]
    assert model.detokenize(ids, skip_special_tokens=True) == cli_json(
        "detokenize", "--model", model_dir, "--ids", ids_s, "--skip-special")["text"]


GEN_CASES = [
    ({"prompt": "Once upon a time"}, ["--prompt", "Once upon a time"]),
    ({"prompt": "Say OK.", "chat": True}, ["--prompt", "Say OK.", "--chat"]),
    ({"prompt_ids": [5, 6, 7, 8]}, ["--prompt-ids", "5,6,7,8"]),
    ({"prompt": "abc", "temperature": 0.9, "top_k": 20, "top_p": 0.9, "seed": 7},
     ["--prompt", "abc", "--temperature", "0.9", "--top-k", "20", "--top-p", "0.9", "--seed", "7"]),
    ({"prompt": "abc", "stop": ["e"], "temperature": 1.0, "seed": 3},
     ["--prompt", "abc", "--stop", "e", "--temperature", "1.0", "--seed", "3"]),
]


@pytest.mark.parametrize("kwargs,flags", GEN_CASES)
def test_generate_equals_cli(model, model_dir, kwargs, flags):
    got = model.generate(**kwargs, max_new_tokens=12)
    want = cli_json("generate", "--model", model_dir, "--dtype", "f32", "--threads", "1",
                    "--max-new-tokens", "12", *flags)
    assert got["tokens"] == want["tokens"]
    assert got["finish_reason"] == want["finish_reason"]
    if "text" in want:
        assert got["text"] == want["text"]


def test_generate_several_prompts_and_states_equal_cli(model, model_dir, cli_states):
    got = model.generate(["one", "two", "three"], prompt_ids=[[9, 10], [11]], states=cli_states, alpha=2.0,
                         max_new_tokens=10, temperature=0.8, seed=11)
    want = cli_json("generate", "--model", model_dir, "--dtype", "f32", "--threads", "1", "--max-new-tokens", "10",
                    "--prompt-ids", "9,10", "--prompt-ids", "11", "--prompt", "one", "--prompt", "two",
                    "--prompt", "three", "--states", cli_states, "--alpha", "2.0", "--temperature", "0.8",
                    "--seed", "11")
    assert [g["tokens"] for g in got] == [w["tokens"] for w in want]
    assert [g["prompt"] for g in got] == list(range(5))
    # The same through a loaded StateSet object and through activate().
    states = s0.StateSet.load(cli_states, model)
    again = model.generate(["one"], states=states, alpha=2.0, max_new_tokens=10, temperature=0.8, seed=11)
    # prompt "one" is prompt 2 above, which sampled with seed 11 + 2
    again2 = model.generate("one", states=states, alpha=2.0, max_new_tokens=10, temperature=0.8, seed=13)
    assert again2["tokens"] == want[2]["tokens"]
    assert isinstance(again, list) and len(again) == 1
    model.activate(states, alpha=2.0)
    try:
        assert model.active is states
        assert model.generate("one", max_new_tokens=10, temperature=0.8, seed=13)["tokens"] == want[2]["tokens"]
    finally:
        model.deactivate()
    base = cli_json("generate", "--model", model_dir, "--dtype", "f32", "--threads", "1", "--max-new-tokens", "10",
                    "--prompt", "one", "--temperature", "0.8", "--seed", "13")
    assert model.generate("one", max_new_tokens=10, temperature=0.8, seed=13)["tokens"] == base["tokens"]


def test_stream_equals_generate(model):
    for kw in [dict(), dict(temperature=1.0, seed=5), dict(stop="a", temperature=1.0, seed=2)]:
        full = model.generate("Stream me", max_new_tokens=16, **kw)
        parts = list(model.generate("Stream me", max_new_tokens=16, stream=True, **kw))
        assert [p["token"] for p in parts if p["token"] is not None] == full["tokens"]
        assert parts[-1]["finished"] and parts[-1]["finish_reason"] == full["finish_reason"]
        assert all(not p["finished"] for p in parts[:-1])
        if full["finish_reason"] != "stop":
            assert "".join(p["text"] for p in parts) == full["text"]


def test_progress_callback_sees_every_token(model):
    seen = []
    out = model.generate("abc", max_new_tokens=9, progress=lambda i, tok: seen.append((i, tok)))
    assert seen == [(0, t) for t in out["tokens"]]

    def boom(i, tok):
        raise KeyError("stop here")
    with pytest.raises(KeyError, match="stop here"):
        model.generate("abc", max_new_tokens=9, progress=boom)
    assert model.generate("abc", max_new_tokens=9)["tokens"] == out["tokens"]


def test_logits_match_greedy_and_states(model, cli_states):
    ids = model.tokenize("The quick brown fox")
    lg = model.logits(ids)
    assert isinstance(lg, np.ndarray) and lg.dtype == np.float32
    assert lg.shape == (len(ids), model.vocab_size)
    first = model.generate(prompt_ids=ids, max_new_tokens=1)["tokens"][0]
    assert int(np.argmax(lg[-1])) == first
    # A prefix's logits are the same rows (causal).
    np.testing.assert_allclose(model.logits(ids[:3]), lg[:3], rtol=1e-5, atol=1e-5)
    ls = model.logits(ids, states=cli_states, alpha=3.0)
    assert ls.shape == lg.shape
    assert not np.array_equal(ls, lg)  # the states change the sequence's start
    first_s = model.generate(prompt_ids=ids, max_new_tokens=1, states=cli_states, alpha=3.0)["tokens"][0]
    assert int(np.argmax(ls[-1])) == first_s


def test_errors(model, model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        s0.Model.load(str(tmp_path / "nope"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError):
        s0.Model.load(str(tmp_path / "broken"))
    with pytest.raises(ValueError, match="bf16 or f32|dtype"):
        s0.Model.load(model_dir, dtype="int3")
    with pytest.raises(ValueError, match="out of range"):
        model.generate(prompt_ids=[model.vocab_size + 5])
    with pytest.raises(ValueError, match="out of range"):
        model.detokenize([-1])
    with pytest.raises(ValueError, match="give a prompt"):
        model.generate()
    with pytest.raises(ValueError, match="alpha needs states"):
        model.generate("x", alpha=0.5)
    with pytest.raises(ValueError):
        model.generate("x", temperature=-1)
    with pytest.raises(ValueError):
        model.generate("x", max_new_tokens=-1)
    with pytest.raises(FileNotFoundError):
        model.generate("x", states=str(tmp_path / "missing_states"))
    with pytest.raises(ValueError):
        model.apply_chat_template([{"role": "user"}])
    with pytest.raises(TypeError):
        model.generate("x", max_new_tokens="many")
    # The model still works after every error.
    assert len(model.generate("x", max_new_tokens=3)["tokens"]) <= 3


def test_ctrl_c_interrupts_generate(model):
    """SIGINT during a long generation raises KeyboardInterrupt promptly; the model still works."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            # Many prompts, many tokens each: far longer than 0.3 s, whatever eos does.
            model.generate(["a"] * 2000, max_new_tokens=64)
    finally:
        timer.cancel()
    assert len(model.generate("a", max_new_tokens=2)["tokens"]) <= 2
