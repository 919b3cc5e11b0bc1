// llama.cpp sequence-state export (layout and sources: llama_state.h).
#include "s0/interop/llama_state.h"

#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "s0/io/atomic_file.h"
#include "s0/models/config_json.h"
#include "s0/models/falcon_h1_config.h"
#include "s0/models/qwen35_config.h"
#include "s0/util/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "llama.cpp state files are written in host order; s0 writes them on little-endian hosts only");

namespace s0::interop {

namespace {

using nlohmann::json;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

uint32_t checked_u32(int64_t v, const std::string& what, const std::string& source) {
  if (v < 0 || v > static_cast<int64_t>(UINT32_MAX))
    throw Error(source + ": " + what + " = " + std::to_string(v) + " does not fit llama.cpp's 32-bit field");
  return static_cast<uint32_t>(v);
}

LlamaStateLayout qwen35_layout(const json& config, const std::string& source, uint32_t extra_layers) {
  const auto c = models::Qwen35Config::from_json(config, source);
  const int64_t hk = c.linear_num_key_heads, hv = c.linear_num_value_heads;
  const int64_t dk = c.linear_key_head_dim, dv = c.linear_value_head_dim;
  if (dk != dv)
    throw Error(source + ": llama.cpp's qwen35 needs linear_key_head_dim == linear_value_head_dim (it keeps one "
                "head size for both), this model has " + std::to_string(dk) + " and " + std::to_string(dv));
  if (hv % hk != 0)
    throw Error(source + ": llama.cpp's qwen35 needs linear_num_value_heads (" + std::to_string(hv) +
                ") to be a multiple of linear_num_key_heads (" + std::to_string(hk) + ")");
  // The converter writes full_attention_interval (default 4); llama.cpp makes layer i recurrent
  // iff (i + 1) % interval != 0. Explicit layer_types must follow that rule.
  const json& tc = config.contains("text_config") && config["text_config"].is_object() ? config["text_config"] : config;
  const int64_t interval = models::config_opt<int64_t>(tc, "full_attention_interval", 4, source);
  if (interval <= 0) throw Error(source + ": full_attention_interval must be positive");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    if (c.is_linear(i) != ((i + 1) % interval != 0))
      throw Error(source + ": layer_types[" + std::to_string(i) + "] is '" + c.layer_types[i] +
                  "', but llama.cpp's qwen35 derives the layer kinds from full_attention_interval = " +
                  std::to_string(interval) + " (full attention iff (i + 1) % interval == 0)");
  LlamaStateLayout l;
  l.arch = "qwen35";
  l.state_arch = "gated_delta_net";
  l.n_layer = checked_u32(c.num_hidden_layers + extra_layers, "num_hidden_layers + extra layers", source);
  l.recurrent_layers = c.linear_layers();
  l.state_shape = {hv, dk, dv};
  l.key_heads = hk;
  l.n_embd_r = static_cast<uint64_t>(c.linear_conv_kernel_dim - 1) * static_cast<uint64_t>(c.conv_dim());
  l.n_embd_s = static_cast<uint64_t>(dk) * static_cast<uint64_t>(hv * dv);
  return l;
}

LlamaStateLayout falcon_h1_layout(const json& config, const std::string& source, uint32_t extra_layers) {
  const auto c = models::FalconH1Config::from_json(config, source);
  LlamaStateLayout l;
  l.arch = "falcon-h1";
  l.state_arch = "mamba2";
  l.n_layer = checked_u32(c.num_hidden_layers + extra_layers, "num_hidden_layers + extra layers", source);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) l.recurrent_layers.push_back(i);
  l.state_shape = {c.mamba_n_heads, c.mamba_d_head, c.mamba_d_state};
  l.n_embd_r = static_cast<uint64_t>(c.mamba_d_conv - 1) * static_cast<uint64_t>(c.conv_dim());
  l.n_embd_s = static_cast<uint64_t>(c.mamba_d_state) * static_cast<uint64_t>(c.mamba_d_ssm);
  return l;
}

// A little-endian writer over the sink.
struct Out {
  const std::function<void(const void*, size_t)>& sink;
  void u32(uint32_t v) { sink(&v, 4); }
  void i32(int32_t v) { sink(&v, 4); }
  void u64(uint64_t v) { sink(&v, 8); }
  void floats(const float* p, uint64_t n) { sink(p, n * sizeof(float)); }
};

constexpr int32_t kGgmlTypeF32 = 0;

}  // namespace

LlamaStateLayout llama_state_layout(const json& config, const std::string& source, uint32_t extra_layers) {
  if (!config.is_object()) throw Error(source + ": config must be a JSON object");
  const std::string type = models::config_opt<std::string>(config, "model_type", "", source);
  if (type == "qwen3_5" || type == "qwen3_5_text") return qwen35_layout(config, source, extra_layers);
  if (type == "falcon_h1") return falcon_h1_layout(config, source, extra_layers);
  throw Error(source + ": model_type '" + type +
              "' cannot be exported to llama.cpp (supported: qwen3_5 / qwen3_5_text -> qwen35, "
              "falcon_h1 -> falcon-h1; only these hybrids have S0 states llama.cpp can load)");
}

LlamaStateLayout llama_state_layout_for_model(const std::string& model_dir, uint32_t extra_layers) {
  const std::string path = model_dir + "/config.json";
  const std::string text = io::read_file(path, 16u << 20);
  json config;
  try {
    config = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
  return llama_state_layout(config, path, extra_layers);
}

std::vector<float> to_llama_state_row(const LlamaStateLayout& layout, const std::vector<float>& s0_state) {
  const auto& sh = layout.state_shape;
  if (sh.size() != 3) throw Error("llama.cpp export: state shape must have 3 dimensions");
  const uint64_t n = static_cast<uint64_t>(sh[0] * sh[1] * sh[2]);
  if (s0_state.size() != n || n != layout.n_embd_s)
    throw Error("llama.cpp export: a state of shape " + shape_str(sh) + " has " + std::to_string(n) +
                " values, got " + std::to_string(s0_state.size()) + " (llama.cpp's row holds " +
                std::to_string(layout.n_embd_s) + ")");
  if (layout.state_arch == "mamba2") return s0_state;  // [H, P, N] is llama.cpp's memory order
  // GatedDeltaNet: s0 [Hv, K, V] in Hugging Face head order -> llama.cpp heads in tiled order,
  // each stored [V][K].
  const int64_t hv = sh[0], dk = sh[1], dv = sh[2];
  const int64_t hk = layout.key_heads, r = hv / hk;
  std::vector<float> out(n);
  for (int64_t g = 0; g < hk; ++g)
    for (int64_t j = 0; j < r; ++j) {
      const float* src = s0_state.data() + (g * r + j) * dk * dv;  // HF head g*r + j: [K][V]
      float* dst = out.data() + (j * hk + g) * dk * dv;           // llama head j*Hk + g: [V][K]
      for (int64_t k = 0; k < dk; ++k)
        for (int64_t v = 0; v < dv; ++v) dst[v * dk + k] = src[k * dv + v];
    }
  return out;
}

void write_llama_state_seq(const LlamaStateLayout& layout, const std::map<int64_t, std::vector<float>>& states,
                           const LlamaStateSeqOptions& opt, const std::function<void(const void*, size_t)>& sink) {
  if (opt.n_stream < 1) throw Error("llama.cpp export: the KV cache has at least one stream (n_stream >= 1)");
  const std::set<int64_t> recurrent(layout.recurrent_layers.begin(), layout.recurrent_layers.end());
  for (const auto& [l, s] : states)
    if (!recurrent.count(l))
      throw Error("llama.cpp export: layer " + std::to_string(l) + " is not a recurrent layer of this " +
                  layout.arch + " model");
  // Convert every state before writing anything, so that a bad one leaves no partial file.
  std::map<int64_t, std::vector<float>> rows;
  for (const auto& [l, s] : states) {
    try {
      rows[l] = to_llama_state_row(layout, s);
    } catch (const Error& e) {
      throw Error("layer " + std::to_string(l) + ": " + e.what());
    }
  }

  Out o{sink};
  o.u32(kLlamaStateSeqMagic);
  o.u32(kLlamaStateSeqVersion);
  o.u32(0);  // no tokens
  // Attention part: every stream empty.
  o.u32(opt.n_stream);
  for (uint32_t s = 0; s < opt.n_stream; ++s) o.u32(0);
  // Recurrent part: one cell.
  o.u32(1);
  o.i32(-1);  // pos: the sequence looks empty (see llama_state.h)
  o.u32(0);   // n_seq_id: a single-sequence file names none
  o.u32(0);   // s_trans
  o.u32(layout.n_layer);
  const std::vector<float> zeros_r(layout.n_embd_r, 0.0f);
  for (size_t i = 0; i < layout.recurrent_layers.size(); ++i) {
    o.i32(kGgmlTypeF32);
    o.u64(layout.n_embd_r * sizeof(float));
    o.floats(zeros_r.data(), layout.n_embd_r);
  }
  const std::vector<float> zeros_s(layout.n_embd_s, 0.0f);
  for (int64_t l : layout.recurrent_layers) {
    o.i32(kGgmlTypeF32);
    o.u64(layout.n_embd_s * sizeof(float));
    auto it = rows.find(l);
    o.floats(it == rows.end() ? zeros_s.data() : it->second.data(), layout.n_embd_s);
  }
}

std::string llama_state_seq_bytes(const LlamaStateLayout& layout, const std::map<int64_t, std::vector<float>>& states,
                                  const LlamaStateSeqOptions& opt) {
  std::string out;
  write_llama_state_seq(layout, states, opt,
                        [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
  return out;
}

uint64_t save_llama_state_seq(const std::string& path, const LlamaStateLayout& layout,
                              const std::map<int64_t, std::vector<float>>& states, const LlamaStateSeqOptions& opt) {
  // write_llama_state_seq checks everything before its first byte; a refused export
  // destroys the writer uncommitted, which removes the temp file and leaves `path` alone.
  io::AtomicFileWriter w(path);
  uint64_t n = 0;
  write_llama_state_seq(layout, states, opt, [&](const void* p, size_t k) {
    w.write(p, k);
    n += k;
  });
  w.commit();
  return n;
}

}  // namespace s0::interop
