"""StateSet: NumPy round trips (in memory and through the reference layout on disk), zero-copy
views, `inspect` equal to `s0 states inspect`, alpha/normalize, and the error classes."""
import json
import os

import numpy as np
import pytest

import s0
from conftest import run_cli


def random_arrays(model, seed=0, layers=None):
    rng = np.random.default_rng(seed)
    layers = model.recurrent_layers if layers is None else layers
    return {l: rng.standard_normal(model.state_shape).astype(np.float32) for l in layers}


def test_numpy_round_trip(model, tmp_path):
    arrays = random_arrays(model)
    s = s0.StateSet.from_arrays(model, arrays, alpha=0.25, normalize=True)
    assert s.layers == sorted(arrays) and s.arch == "gated_delta_net"
    assert s.alpha == 0.25 and s.normalize is True
    for l, a in arrays.items():
        got = s[l]
        assert got.dtype == np.float32 and got.shape == tuple(model.state_shape)
        assert np.array_equal(got, a)
        assert not np.shares_memory(got, a)  # the set holds its own copy
        assert not got.flags.writeable  # a view of the set's tensor: read-only
    s.save(str(tmp_path / "set"))
    back = s0.StateSet.load(str(tmp_path / "set"), model)
    assert back.layers == s.layers and back.alpha == 0.25 and back.normalize is True
    for l, a in arrays.items():
        assert np.array_equal(back[l], a)
    # Views share memory with the set (zero-copy) and stay valid after the set is gone.
    v1, v2 = back[back.layers[0]], back.states[back.layers[0]]
    assert np.shares_memory(v1, v2)
    del back
    assert np.array_equal(v1, arrays[sorted(arrays)[0]])
    # float64 / non-contiguous input is converted.
    l0 = model.recurrent_layers[0]
    s[l0] = np.asfortranarray(arrays[l0].astype(np.float64))
    assert np.array_equal(s[l0], arrays[l0])


def test_scaled(model):
    arrays = random_arrays(model, 1)
    s = s0.StateSet.from_arrays(model, arrays, alpha=0.5)
    for l, a in s.scaled().items():
        np.testing.assert_allclose(a, 0.5 * arrays[l], rtol=1e-6)
    s.normalize = True
    for l, a in s.scaled(2.0).items():
        np.testing.assert_allclose(a, 2.0 * arrays[l] / np.linalg.norm(arrays[l]), rtol=1e-5)
    s.alpha = None
    assert s.alpha == pytest.approx(0.07)  # the architecture default


def test_zeros_and_setitem(model):
    s = s0.StateSet.zeros(model)
    assert s.layers == [] and len(s) == 0
    l = model.recurrent_layers[-1]
    assert not s[l].any()
    s[l] = np.ones(model.state_shape, np.float32)
    assert l in s and s.layers == [l]


def test_inspect_equals_cli(model, model_dir, cli_states):
    s = s0.StateSet.load(cli_states, model)
    want = json.loads(run_cli("states", "inspect", cli_states, "--model", model_dir)[1])
    assert s.inspect(cli_states) == want
    assert s.config["n_steps"] == 3 and s.alpha == 1.5


def test_errors(model, tmp_path):
    shape = model.state_shape
    l = model.recurrent_layers[0]
    with pytest.raises(FileNotFoundError):
        s0.StateSet.load(str(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("[]")
    with pytest.raises(ValueError):
        s0.StateSet.load(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="shape"):
        s0.StateSet.from_arrays(model, {l: np.zeros((2, 2), np.float32)})
    bad = np.zeros(shape, np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite|NaN"):
        s0.StateSet.from_arrays(model, {l: bad})
    attn = [i for i in range(model.num_layers) if i not in model.recurrent_layers][0]
    with pytest.raises(ValueError, match="not a recurrent layer"):
        s0.StateSet.from_arrays(model, {attn: np.zeros(shape, np.float32)})
    s = s0.StateSet.zeros(model)
    with pytest.raises(KeyError):
        s[attn]
    with pytest.raises(ValueError):
        s.alpha = float("nan")
    with pytest.raises(ValueError, match="path"):
        s.save(42)
    # A set saved for this model is refused by a model with another shape.
    other = tmp_path / "falcon"
    run_cli("init-model", "--arch", "falcon_h1", "--preset", "tiny", "--dtype", "f32", "--out", other)
    s = s0.StateSet.from_arrays(model, random_arrays(model))
    s.save(str(tmp_path / "qwen_set"))
    falcon = s0.Model.load(str(other), dtype="f32", threads=1)
    with pytest.raises(ValueError):
        s0.StateSet.load(str(tmp_path / "qwen_set"), falcon)
    with pytest.raises(ValueError):
        falcon.generate("x", states=str(tmp_path / "qwen_set"), max_new_tokens=2)
