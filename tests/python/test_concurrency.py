"""Memory does not grow over 1,000 generate calls; two threads using two models do not
interfere (and run with the GIL released); the server starts and stops from Python."""
import json
import threading
import urllib.request

import numpy as np

import s0


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_does_not_grow_over_1000_generate_calls(model):
    def burst(n):
        for i in range(n):
            model.generate("memory check", max_new_tokens=4, temperature=0.5, seed=i)
    burst(200)  # warm up: allocator pools, caches
    before = rss_bytes()
    burst(1000)
    grown = rss_bytes() - before
    # A leak of even one 4 KB buffer per call would show as > 4 MB.
    assert grown < 4 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 1,000 calls"


def test_two_threads_two_models(model_dir, tmp_path):
    from conftest import run_cli
    other_dir = tmp_path / "other"
    run_cli("init-model", "--preset", "tiny", "--dtype", "f32", "--seed", "9", "--out", other_dir)
    a = s0.Model.load(model_dir, dtype="f32", threads=1)
    b = s0.Model.load(str(other_dir), dtype="f32", threads=1)
    prompts = [f"prompt {i}" for i in range(6)]
    want_a = [a.generate(p, max_new_tokens=12, temperature=0.7, seed=1)["tokens"] for p in prompts]
    want_b = [b.generate(p, max_new_tokens=12, temperature=0.7, seed=1)["tokens"] for p in prompts]
    assert want_a != want_b  # different weights: interference would show
    got = {}
    errors = []

    def worker(name, m):
        try:
            out = []
            for _ in range(5):
                out.append([m.generate(p, max_new_tokens=12, temperature=0.7, seed=1)["tokens"] for p in prompts])
            got[name] = out
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    ts = [threading.Thread(target=worker, args=("a", a)), threading.Thread(target=worker, args=("b", b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert all(r == want_a for r in got["a"])
    assert all(r == want_b for r in got["b"])
    # Logits too (one thread per model, numpy results independent).
    ids = a.tokenize("shared text")
    la, lb = a.logits(ids), b.logits(ids)
    res = {}
    ts = [threading.Thread(target=lambda: res.__setitem__("a", a.logits(ids))),
          threading.Thread(target=lambda: res.__setitem__("b", b.logits(ids)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert np.array_equal(res["a"], la) and np.array_equal(res["b"], lb)


def test_one_model_from_two_threads_takes_turns(model):
    want = model.generate("turns", max_new_tokens=10)["tokens"]
    out = []
    ts = [threading.Thread(target=lambda: out.append(model.generate("turns", max_new_tokens=10)["tokens"]))
          for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out == [want] * 4


def test_server_start_stop(model_dir, cli_states):
    m = s0.Model.load(model_dir, dtype="f32", threads=1)
    want = m.generate("Hello", max_new_tokens=6, states=cli_states)
    srv = s0.Server(m, states={"mine": cli_states}, port=0)
    port = srv.start()
    try:
        assert srv.running and port > 0 and srv.url.endswith(str(port))
        with urllib.request.urlopen(srv.url + "/health", timeout=10) as r:
            assert r.status == 200
        body = json.dumps({"model": "mine", "prompt": "Hello", "max_tokens": 6, "temperature": 0}).encode()
        req = urllib.request.Request(srv.url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            reply = json.loads(r.read())
        assert reply["choices"][0]["text"] == want["text"]
    finally:
        srv.stop()
    assert not srv.running
    try:
        urllib.request.urlopen(srv.url + "/health", timeout=2)
        raise AssertionError("the server still answers after stop()")
    except OSError:
        pass
    with s0.Server(model_dir, dtype="f32") as srv2:
        with urllib.request.urlopen(srv2.url + "/v1/models", timeout=10) as r:
            assert r.status == 200
