#!/usr/bin/env python3
"""A stand-in for the s0-tuning reference library's state-set files, in plain Python (no torch,
no numpy, no safetensors package), used by tests/adapters/test_state_set.cpp.

  write DIR --layers 0,1,2 --shape 4,16,16 [--arch gated_delta_net] [--alpha A] [--format pt]
      writes what S0Trainer.save() writes: states.safetensors (safetensors.torch.save_file of
      {str(layer): float32 tensor}, no __metadata__), config.json (S0Config.save(): the seven
      dataclass fields, json.dumps(indent=2)) and meta.json (arch, recurrent_layers,
      state_shape; json.dumps(indent=2)). With --format pt, states.pt instead: the zip archive
      torch.save() writes (protocol-2 pickle of a dict whose tensors are rebuilt by
      torch._utils._rebuild_tensor_v2 from persistent storages "data/<key>").
      Element i of layer l is value(l, i) below.

  load DIR --layers 0,1,2 --shape 4,16,16 [--arch gated_delta_net]
      does what S0Trainer.load() checks for a model with these recurrent layers: meta.json arch,
      state_shape and recurrent_layers (sorted) must match; config.json may hold only the
      seven keys ("Unknown config keys" otherwise); states.safetensors (else states.pt) is read.
      Prints JSON {"config": ..., "meta": ..., "states": {layer: [float32 values]}}.

The layouts were learnt by reading the reference (github.com/JackYoung27/s0-tuning,
s0_tuning/trainer.py and config.py at 9513f26) and the safetensors / torch.save formats.
"""
import argparse
import collections
import io
import json
import pickle
import struct
import sys
import types
import zipfile

CONFIG_FIELDS = ["n_steps", "lr", "l2_lambda", "alpha", "normalize", "grad_clip", "max_length"]
DEFAULT_ALPHA = {"gated_delta_net": 0.07, "mamba2": 0.65}


def value(layer, i):
    """Deterministic test values, exact in float32: ((7919 l + 104729 i) mod 2001 - 1000) / 256."""
    return ((layer * 7919 + i * 104729) % 2001 - 1000) / 256.0


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def f32_bytes(values):
    return struct.pack("<%df" % len(values), *values)


def write_safetensors(path, tensors):
    # safetensors orders tensors by dtype alignment, then name; all are F32 here: by name.
    names = sorted(tensors)
    header = {}
    offset = 0
    for name in names:
        shape, data = tensors[name]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in names:
            f.write(tensors[name][1])


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError("tensor %s has dtype %s" % (name, info["dtype"]))
        a, b = info["data_offsets"]
        data = raw[base + a:base + b]
        count = numel(info["shape"])
        if len(data) != 4 * count:
            raise ValueError("tensor %s: %d bytes for %d elements" % (name, len(data), count))
        out[name] = (info["shape"], list(struct.unpack("<%df" % count, data)))
    return out


# ---- torch.save()'s pickle, produced without torch: stand-ins pickled under torch's names.
def _install_fake_torch():
    torch_mod = types.ModuleType("torch")
    utils_mod = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    FloatStorage.__module__ = "torch"
    FloatStorage.__qualname__ = "FloatStorage"

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("stand-in only")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch_mod.FloatStorage = FloatStorage
    torch_mod._utils = utils_mod
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    sys.modules.setdefault("torch", torch_mod)
    sys.modules.setdefault("torch._utils", utils_mod)
    return FloatStorage, _rebuild_tensor_v2


class _Storage:
    def __init__(self, key, data, count):
        self.key, self.data, self.count = key, data, count


class _Tensor:
    def __init__(self, storage, shape, rebuild):
        self.storage, self.shape, self.rebuild = storage, shape, rebuild

    def __reduce_ex__(self, protocol):
        stride, s = [], 1
        for d in reversed(self.shape):
            stride.insert(0, s)
            s *= d
        return (self.rebuild, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))


def write_torch_save(path, tensors, archive="states"):
    float_storage, rebuild = _install_fake_torch()
    storages, obj = [], {}
    for name in sorted(tensors, key=int):
        shape, data = tensors[name]
        st = _Storage(str(len(storages)), data, numel(shape))
        storages.append(st)
        obj[name] = _Tensor(st, shape, rebuild)

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                return ("storage", float_storage, o.key, "cpu", o.count)
            return None

    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(archive + "/data.pkl", buf.getvalue())
        z.writestr(archive + "/byteorder", "little")
        for st in storages:
            z.writestr(archive + "/data/" + st.key, st.data)
        z.writestr(archive + "/version", "3\n")
        z.writestr(archive + "/.data/serialization_id", "0123456789012345678901234567890123456789")


def cmd_write(a):
    layers = [int(x) for x in a.layers.split(",")]
    shape = [int(x) for x in a.shape.split(",")]
    tensors = {}
    for l in layers:
        tensors[str(l)] = (shape, f32_bytes([value(l, i) for i in range(numel(shape))]))
    import os
    os.makedirs(a.dir, exist_ok=True)
    if a.format == "pt":
        write_torch_save(a.dir + "/states.pt", tensors)
    else:
        write_safetensors(a.dir + "/states.safetensors", tensors)
    config = {"n_steps": 20, "lr": 1e-3, "l2_lambda": 5e-4, "alpha": a.alpha, "normalize": False,
              "grad_clip": 1.0, "max_length": 2048}
    with open(a.dir + "/config.json", "w") as f:
        f.write(json.dumps(config, indent=2))
    meta = {"arch": a.arch, "recurrent_layers": layers, "state_shape": shape}
    with open(a.dir + "/meta.json", "w") as f:
        f.write(json.dumps(meta, indent=2))


def cmd_load(a):
    import os
    layers = [int(x) for x in a.layers.split(",")]
    shape = [int(x) for x in a.shape.split(",")]
    with open(a.dir + "/meta.json") as f:
        meta = json.load(f)
    if meta.get("arch") != a.arch:
        raise SystemExit("Architecture mismatch: %r vs %r" % (meta.get("arch"), a.arch))
    if tuple(meta.get("state_shape", [])) != tuple(shape):
        raise SystemExit("State shape mismatch: %r vs %r" % (meta.get("state_shape"), shape))
    saved = meta.get("recurrent_layers")
    if saved is not None and sorted(saved) != sorted(layers):
        raise SystemExit("Layer index mismatch: saved %r, model %r" % (sorted(saved), sorted(layers)))
    config = None
    if os.path.exists(a.dir + "/config.json"):
        with open(a.dir + "/config.json") as f:
            config = json.load(f)
        unknown = set(config) - set(CONFIG_FIELDS)
        if unknown:
            raise SystemExit("Unknown config keys: %r" % sorted(unknown))
    if os.path.exists(a.dir + "/states.safetensors"):
        raw = read_safetensors(a.dir + "/states.safetensors")
    else:
        raise SystemExit("No states found in %s" % a.dir)
    states = {}
    for name, (sh, vals) in raw.items():
        if list(sh) != shape:
            raise SystemExit("tensor %s has shape %r" % (name, sh))
        states[str(int(name))] = vals
    print(json.dumps({"config": config, "meta": meta, "states": states}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["write", "load"])
    p.add_argument("dir")
    p.add_argument("--layers", required=True)
    p.add_argument("--shape", required=True)
    p.add_argument("--arch", default="gated_delta_net")
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--format", choices=["safetensors", "pt"], default="safetensors")
    a = p.parse_args()
    (cmd_write if a.cmd == "write" else cmd_load)(a)


if __name__ == "__main__":
    main()
