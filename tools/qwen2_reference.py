#!/usr/bin/env python3
"""Independent float64 reference of a Qwen2 / Qwen2.5 forward pass (Hugging Face
Qwen2ForCausalLM semantics, shared spec qwen2.md section 3), with optional PEFT prefix tuning
(section 5: prompt_embeddings split into per-layer keys/values, inserted as a KV prefix at
positions 0..n-1 without RoPE, real tokens at positions n..).

Standard library only (no numpy/torch): reads config.json and model.safetensors (F32, BF16
or F16; single file or shards + index) and computes everything in Python floats. Written from
the spec and the Hugging Face modelling semantics, not from s0's C++ code. Meant for tiny
test models.

  qwen2_reference.py logits --model DIR --ids 1,2,3 [--prefix ADAPTER_DIR] > out.json
      {"logits": [[...vocab...] per position]}
  qwen2_reference.py write-peft-prefix --out DIR --virtual-tokens N --num-layers L
      --kv-heads KV --head-dim HD [--seed S] [--dtype F32|BF16]
      a PEFT-layout PREFIX_TUNING adapter (adapter_config.json + adapter_model.safetensors
      holding "prompt_embeddings"), as PEFT's save_pretrained writes it.
"""
import argparse
import json
import math
import os
import random
import struct
import sys


# ---- safetensors ----------------------------------------------------------------------------

def _decode(dtype, raw):
    if dtype == "F32":
        return list(struct.unpack("<%df" % (len(raw) // 4), raw))
    if dtype == "F64":
        return list(struct.unpack("<%dd" % (len(raw) // 8), raw))
    if dtype == "BF16":
        halves = struct.unpack("<%dH" % (len(raw) // 2), raw)
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    if dtype == "F16":
        return list(struct.unpack("<%de" % (len(raw) // 2), raw))
    raise SystemExit("unsupported dtype " + dtype)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = (info["shape"], _decode(info["dtype"], data[a:b]))
    return out


def write_safetensors(path, tensors):
    """tensors: name -> (dtype "F32"|"BF16", shape, flat list of floats)."""
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, vals) in tensors.items():
        if dtype == "F32":
            raw = struct.pack("<%df" % len(vals), *vals)
        else:  # BF16, round to nearest even
            words = []
            for v in vals:
                u = struct.unpack("<I", struct.pack("<f", v))[0]
                u += 0x7FFF + ((u >> 16) & 1)
                words.append((u >> 16) & 0xFFFF)
            raw = struct.pack("<%dH" % len(words), *words)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    files = [os.path.join(model_dir, "model.safetensors")]
    if os.path.exists(index):
        with open(index) as f:
            files = sorted({os.path.join(model_dir, v) for v in json.load(f)["weight_map"].values()})
    w = {}
    for p in files:
        w.update(read_safetensors(p))
    return w


# ---- math -----------------------------------------------------------------------------------

def matvec(W, out_dim, in_dim, x, bias=None):
    """W flat row-major [out, in]; returns W x (+ bias)."""
    y = []
    for o in range(out_dim):
        row = W[o * in_dim:(o + 1) * in_dim]
        s = math.fsum(a * b for a, b in zip(row, x))
        y.append(s + (bias[o] if bias is not None else 0.0))
    return y


def rms_norm(x, w, eps):
    r = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [wi * v * r for wi, v in zip(w, x)]


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def rope(x, pos, theta):
    """Rotate-half (NeoX) RoPE over the whole head: pairs (j, j + d/2). The inverse
    frequencies are float32 numbers as in Hugging Face (computed in float32 there); the
    angles and everything after in float64."""
    d = len(x)
    half = d // 2
    out = list(x)
    for j in range(half):
        ang = pos * f32(1.0 / f32(f32(theta) ** f32(2.0 * j / d)))
        c, s = math.cos(ang), math.sin(ang)
        a, b = x[j], x[j + half]
        out[j] = a * c - b * s
        out[j + half] = b * c + a * s
    return out


def silu(v):
    return v / (1.0 + math.exp(-v))


def forward(model_dir, ids, prefix_dir=None):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    D = cfg["hidden_size"]
    I = cfg["intermediate_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or D // H
    nl = cfg["num_hidden_layers"]
    V = cfg["vocab_size"]
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    tied = cfg.get("tie_word_embeddings", False)
    W = {k: v[1] for k, v in load_weights(model_dir).items()}

    def g(name):
        return W["model." + name]

    # Prefix: per layer l, keys = block 2l, values = block 2l+1 of each virtual token's
    # vector, flat index ((l*2 + kv)*KV + head)*hd + d.
    n = 0
    pk = [[[] for _ in range(KV)] for _ in range(nl)]
    pv = [[[] for _ in range(KV)] for _ in range(nl)]
    if prefix_dir:
        with open(os.path.join(prefix_dir, "adapter_config.json")) as f:
            pcfg = json.load(f)
        assert pcfg["peft_type"] == "PREFIX_TUNING"
        shape, P = read_safetensors(os.path.join(prefix_dir, "adapter_model.safetensors"))["prompt_embeddings"]
        n, width = shape
        assert width == nl * 2 * KV * hd, (width, nl, KV, hd)
        for j in range(n):
            row = P[j * width:(j + 1) * width]
            for l in range(nl):
                for kv, dst in ((0, pk), (1, pv)):
                    for h in range(KV):
                        base = ((l * 2 + kv) * KV + h) * hd
                        dst[l][h].append(row[base:base + hd])

    emb = g("embed_tokens.weight")
    xs = [emb[t * D:(t + 1) * D] for t in ids]
    L = len(ids)
    for l in range(nl):
        p = "layers.%d." % l
        keys = [list(pk[l][h]) for h in range(KV)]
        vals = [list(pv[l][h]) for h in range(KV)]
        normed = [rms_norm(x, g(p + "input_layernorm.weight"), eps) for x in xs]
        qs, outs = [], []
        for t, a in enumerate(normed):
            pos = n + t
            q = matvec(g(p + "self_attn.q_proj.weight"), H * hd, D, a, g(p + "self_attn.q_proj.bias"))
            k = matvec(g(p + "self_attn.k_proj.weight"), KV * hd, D, a, g(p + "self_attn.k_proj.bias"))
            v = matvec(g(p + "self_attn.v_proj.weight"), KV * hd, D, a, g(p + "self_attn.v_proj.bias"))
            qs.append([rope(q[h * hd:(h + 1) * hd], pos, theta) for h in range(H)])
            for h in range(KV):
                keys[h].append(rope(k[h * hd:(h + 1) * hd], pos, theta))
                vals[h].append(v[h * hd:(h + 1) * hd])
        # Causal attention: token t sees the n prefix slots and real tokens 0..t.
        for t in range(L):
            ctx = []
            for h in range(H):
                kvh = h // (H // KV)
                T = n + t + 1
                sc = [math.fsum(a * b for a, b in zip(qs[t][h], keys[kvh][s])) / math.sqrt(hd) for s in range(T)]
                m = max(sc)
                e = [math.exp(s - m) for s in sc]
                z = math.fsum(e)
                ctx.extend(math.fsum(e[s] / z * vals[kvh][s][d] for s in range(T)) for d in range(hd))
            outs.append(matvec(g(p + "self_attn.o_proj.weight"), D, H * hd, ctx))
        xs = [[a + b for a, b in zip(x, o)] for x, o in zip(xs, outs)]
        new = []
        for x in xs:
            m_in = rms_norm(x, g(p + "post_attention_layernorm.weight"), eps)
            gt = matvec(g(p + "mlp.gate_proj.weight"), I, D, m_in)
            up = matvec(g(p + "mlp.up_proj.weight"), I, D, m_in)
            act = [silu(a) * b for a, b in zip(gt, up)]
            dn = matvec(g(p + "mlp.down_proj.weight"), D, I, act)
            new.append([a + b for a, b in zip(x, dn)])
        xs = new
    head = emb if tied else W["lm_head.weight"]
    fn = g("norm.weight")
    return [matvec(head, V, D, rms_norm(x, fn, eps)) for x in xs]


def write_peft_prefix(a):
    rng = random.Random(a.seed)
    width = a.num_layers * 2 * a.kv_heads * a.head_dim
    vals = [rng.gauss(0.0, a.scale) for _ in range(a.virtual_tokens * width)]
    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "adapter_model.safetensors"),
                      {"prompt_embeddings": (a.dtype, [a.virtual_tokens, width], vals)})
    cfg = {
        "auto_mapping": None, "base_model_name_or_path": "tiny", "encoder_hidden_size": 16,
        "inference_mode": True, "num_attention_heads": a.kv_heads, "num_layers": a.num_layers,
        "num_transformer_submodules": 1, "num_virtual_tokens": a.virtual_tokens, "peft_type": "PREFIX_TUNING",
        "prefix_projection": True, "revision": None, "task_type": "CAUSAL_LM",
        "token_dim": a.kv_heads * a.head_dim,
    }
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lg = sub.add_parser("logits")
    lg.add_argument("--model", required=True)
    lg.add_argument("--ids", required=True)
    lg.add_argument("--prefix")
    wp = sub.add_parser("write-peft-prefix")
    wp.add_argument("--out", required=True)
    wp.add_argument("--virtual-tokens", type=int, required=True)
    wp.add_argument("--num-layers", type=int, required=True)
    wp.add_argument("--kv-heads", type=int, required=True)
    wp.add_argument("--head-dim", type=int, required=True)
    wp.add_argument("--seed", type=int, default=0)
    wp.add_argument("--scale", type=float, default=1.0)
    wp.add_argument("--dtype", default="F32", choices=["F32", "BF16"])
    a = ap.parse_args()
    if a.cmd == "logits":
        ids = [int(x) for x in a.ids.split(",")]
        json.dump({"logits": forward(a.model, ids, a.prefix)}, sys.stdout)
    else:
        write_peft_prefix(a)


if __name__ == "__main__":
    main()
