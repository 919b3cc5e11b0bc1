#!/usr/bin/env python3
"""The llama.cpp sequence-state file `s0 states export --format llama.cpp` should write, built
independently of s0 (Python 3 standard library only), for tests/interop/test_llama_state.cpp.

  llama_state_expected.py --model MODEL_DIR --states STATES_DIR --out FILE
                          [--alpha A] [--n-stream 1] [--extra-layers 0]

Written from the layout as read in llama.cpp (README "Export to llama.cpp"), not from s0's code:

  u32 0x67677371 ('ggsq'), u32 2, u32 0 tokens
  u32 n_stream, n_stream x u32 0                      attention KV cache: every stream empty
  u32 1 cell; i32 pos -1; u32 n_seq_id 0              recurrent memory: one cell
  u32 s_trans 0; u32 n_layer
  per recurrent layer: i32 0 (F32), u64 4*n_embd_r, n_embd_r zeros        conv states
  per recurrent layer: i32 0 (F32), u64 4*n_embd_s, state                  recurrent states

Qwen3.5 (model_type qwen3_5 / qwen3_5_text, keys in text_config or at the top level):
  recurrent layer i iff (i + 1) % full_attention_interval != 0 (default 4);
  n_embd_r = (linear_conv_kernel_dim - 1) * (2 Hk dk + Hv dv); n_embd_s = Hv dk dv;
  state element (llama head m, value row a, key column b) = S_hf[h][b][a] with
  m = j * Hk + g for the Hugging Face head h = g * (Hv / Hk) + j.
Falcon-H1 (model_type falcon_h1): every layer recurrent;
  n_embd_r = (mamba_d_conv - 1) * (mamba_d_ssm + 2 G N); n_embd_s = N * mamba_d_ssm;
  the state in the Hugging Face [H, P, N] order.
The state is what s0 injects: alpha * S (alpha * S / ||S||_F with normalize), alpha from the
state set's config.json (null: 0.07 for gated_delta_net, 0.65 for mamba2) unless --alpha.
"""
import argparse
import json
import math
import os
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            sys.exit(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        a, b = info["data_offsets"]
        n = (b - a) // 4
        out[name] = (info["shape"], list(struct.unpack_from(f"<{n}f", data, base + a)))
    return out


def model_layout(model_dir, extra_layers):
    with open(os.path.join(model_dir, "config.json")) as f:
        root = json.load(f)
    mt = root.get("model_type")
    if mt in ("qwen3_5", "qwen3_5_text"):
        c = root.get("text_config", root)
        n = c["num_hidden_layers"]
        interval = c.get("full_attention_interval", 4)
        hk, hv = c["linear_num_key_heads"], c["linear_num_value_heads"]
        dk, dv = c["linear_key_head_dim"], c["linear_value_head_dim"]
        kc = c.get("linear_conv_kernel_dim", 4)
        return {
            "kind": "gdn", "n_layer": n + extra_layers,
            "layers": [i for i in range(n) if (i + 1) % interval != 0],
            "hk": hk, "hv": hv, "dk": dk, "dv": dv,
            "n_embd_r": (kc - 1) * (2 * hk * dk + hv * dv),
            "n_embd_s": hv * dk * dv, "default_alpha": 0.07,
        }
    if mt == "falcon_h1":
        n = root["num_hidden_layers"]
        d_ssm, g, ns = root["mamba_d_ssm"], root.get("mamba_n_groups", 1), root["mamba_d_state"]
        kc = root.get("mamba_d_conv", 4)
        return {
            "kind": "mamba2", "n_layer": n + extra_layers, "layers": list(range(n)),
            "n_embd_r": (kc - 1) * (d_ssm + 2 * g * ns),
            "n_embd_s": ns * d_ssm, "default_alpha": 0.65,
        }
    sys.exit(f"unsupported model_type {mt}")


def llama_row(lay, values):
    if lay["kind"] == "mamba2":
        return values
    hk, hv, dk, dv = lay["hk"], lay["hv"], lay["dk"], lay["dv"]
    r = hv // hk
    row = [0.0] * (hv * dk * dv)
    for m in range(hv):           # llama.cpp head
        j, g = divmod(m, hk)      # m = j * hk + g
        h = g * r + j             # Hugging Face head
        for a in range(dv):       # value row
            for b in range(dk):   # key column
                row[m * dv * dk + a * dk + b] = values[h * dk * dv + b * dv + a]
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--states", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--alpha", type=float)
    ap.add_argument("--n-stream", type=int, default=1)
    ap.add_argument("--extra-layers", type=int, default=0)
    a = ap.parse_args()

    lay = model_layout(a.model, a.extra_layers)
    with open(os.path.join(a.states, "config.json")) as f:
        cfg = json.load(f)
    alpha = a.alpha if a.alpha is not None else cfg.get("alpha")
    if alpha is None:
        alpha = lay["default_alpha"]
    normalize = bool(cfg.get("normalize", False))
    tensors = read_safetensors(os.path.join(a.states, "states.safetensors"))

    b = bytearray()
    b += struct.pack("<III", 0x67677371, 2, 0)
    b += struct.pack("<I", a.n_stream) + struct.pack("<I", 0) * a.n_stream
    b += struct.pack("<IiI", 1, -1, 0)
    b += struct.pack("<II", 0, lay["n_layer"])
    for _ in lay["layers"]:
        b += struct.pack("<iQ", 0, 4 * lay["n_embd_r"]) + bytes(4 * lay["n_embd_r"])
    for layer in lay["layers"]:
        b += struct.pack("<iQ", 0, 4 * lay["n_embd_s"])
        if str(layer) in tensors:
            values = tensors[str(layer)][1]
            scale = alpha
            if normalize:
                norm = math.sqrt(sum(v * v for v in values))
                scale = alpha / norm if norm > 0 else 0.0
            values = [v * scale for v in values]
        else:
            values = [0.0] * lay["n_embd_s"]
        b += struct.pack(f"<{lay['n_embd_s']}f", *llama_row(lay, values))
    with open(a.out, "wb") as f:
        f.write(b)


if __name__ == "__main__":
    main()
