# Writes a GGUF (llama.cpp arch qwen35, bf16) from a Qwen3.5 checkpoint directory in the
# Hugging Face layout (config.json, one model.safetensors of bf16 tensors, tokenizer.json),
# such as the random-weight models bench_engine writes, so that llama.cpp can run the same
# weights for a speed comparison (scripts/llama_cpp/compare.sh). Needs NumPy and the gguf
# package of a llama.cpp checkout (PYTHONPATH=<llama.cpp>/gguf-py). Tensor rules as in
# llama.cpp's Qwen3.5 conversion:
# A_log -> -exp(A_log), dt_bias -> ssm_dt.bias, conv squeezed, +1 on norms except
# linear_attn.norm; 1-D tensors, norms and the conv in f32, matrices in bf16 as stored.
# Value heads would need reordering from grouped to tiled order when there are more value
# than key heads; not done here, so such configs are refused. The vocabulary is the
# checkpoint's own tokens padded to vocab_size with one placeholder merge (enough to load
# and benchmark, not to tokenize text as the real model would).
#
# usage: qwen35_to_gguf.py MODEL_DIR OUT.gguf
import json, struct, sys
import numpy as np
import gguf

if len(sys.argv) != 3:
    raise SystemExit("usage: qwen35_to_gguf.py MODEL_DIR OUT.gguf")
src, dst = sys.argv[1], sys.argv[2]
cfg = json.load(open(f"{src}/config.json"))
tc = cfg.get("text_config", cfg)
if tc["linear_num_value_heads"] != tc["linear_num_key_heads"]:
    raise SystemExit("more value than key heads: the value-head reordering is not implemented")
f = open(f"{src}/model.safetensors", "rb")
n = struct.unpack("<Q", f.read(8))[0]
hdr = json.loads(f.read(n))
base = 8 + n
mm = np.memmap(f"{src}/model.safetensors", dtype=np.uint8, mode="r")

def load(name):
    e = hdr[name]
    a, b = e["data_offsets"]
    raw = mm[base + a: base + b]
    if e["dtype"] != "BF16":
        raise SystemExit(f"{name}: {e['dtype']} (only bf16 checkpoints are converted)")
    return raw.view(np.uint16).reshape(e["shape"])

def bf16_to_f32(u):
    return (u.astype(np.uint32) << 16).view(np.float32)

L = tc["num_hidden_layers"]
arch = gguf.MODEL_ARCH.QWEN35
w = gguf.GGUFWriter(dst, gguf.MODEL_ARCH_NAMES[arch])
w.add_block_count(L)
w.add_context_length(tc["max_position_embeddings"])
w.add_embedding_length(tc["hidden_size"])
w.add_feed_forward_length(tc["intermediate_size"])
w.add_head_count(tc["num_attention_heads"])
w.add_head_count_kv(tc["num_key_value_heads"])
w.add_key_length(tc["head_dim"])
w.add_value_length(tc["head_dim"])
rp = tc["rope_parameters"]
w.add_rope_freq_base(rp["rope_theta"])
w.add_rope_dimension_sections(rp.get("mrope_section", [11, 11, 10]) + [0])
w.add_rope_dimension_count(int(tc["head_dim"] * rp.get("partial_rotary_factor", 0.25)))
w.add_layer_norm_rms_eps(tc["rms_norm_eps"])
w.add_ssm_conv_kernel(tc["linear_conv_kernel_dim"])
w.add_ssm_state_size(tc["linear_key_head_dim"])
w.add_ssm_group_count(tc["linear_num_key_heads"])
w.add_ssm_time_step_rank(tc["linear_num_value_heads"])
w.add_ssm_inner_size(tc["linear_value_head_dim"] * tc["linear_num_value_heads"])
w.add_full_attention_interval(tc.get("full_attention_interval", 4))
w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)

# Vocabulary: the checkpoint's byte-level tokens, its added tokens, padding up to vocab_size.
tok = json.load(open(f"{src}/tokenizer.json"))
V = tc["vocab_size"]
tokens = [f"[PAD{i}]" for i in range(V)]
types = [gguf.TokenType.UNUSED] * V
for t, i in tok["model"]["vocab"].items():
    tokens[i], types[i] = t, gguf.TokenType.NORMAL
for a in tok["added_tokens"]:
    tokens[a["id"]], types[a["id"]] = a["content"], gguf.TokenType.CONTROL
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("qwen35")
w.add_token_list(tokens)
w.add_token_types(types)
w.add_token_merges(["\u0120 \u0120"])
w.add_eos_token_id(tc["eos_token_id"][0] if isinstance(tc["eos_token_id"], list) else tc["eos_token_id"])

tmap = gguf.get_tensor_name_map(arch, L)
for name in sorted(k for k in hdr if k != "__metadata__"):
    hf = name.replace("model.language_model.", "model.")
    x = load(name)
    f32 = x.ndim <= 1 or hf.endswith("norm.weight") or "conv1d" in hf
    if hf.endswith(".A_log"):
        x = -np.exp(bf16_to_f32(x)); hf = hf + ".weight"
    elif hf.endswith(".dt_bias"):
        hf = hf.replace(".dt_bias", ".dt_proj.bias")
    if "conv1d" in hf:
        x = x.reshape(x.shape[0], x.shape[-1])
    if hf.endswith("norm.weight") and not hf.endswith("linear_attn.norm.weight"):
        x = bf16_to_f32(x) + 1
    new = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
    if new is None:
        raise SystemExit(f"no GGUF name for {hf}")
    if hf.endswith(".A_log.weight"):
        new = new[: -len(".weight")]  # llama.cpp names it without a suffix
    if f32:
        x = x if x.dtype == np.float32 else bf16_to_f32(x)
        w.add_tensor(new, np.ascontiguousarray(x, dtype=np.float32))
    else:
        w.add_tensor(new, np.ascontiguousarray(x), raw_dtype=gguf.GGMLQuantizationType.BF16)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote", dst)
