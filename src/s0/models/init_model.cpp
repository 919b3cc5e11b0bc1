#include "s0/models/init_model.h"

#include <cmath>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/io/atomic_file.h"
#include "s0/io/half.h"
#include "s0/io/safetensors.h"
#include "s0/text/tokenizer_writer.h"
#include "s0/util/error.h"

namespace s0::models {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ULL ^ seed;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// How each tensor is drawn: uniform on [lo, hi), optionally exponentiated (log-uniform).
struct Dist {
  double lo, hi;
  bool exp_then_log = false;  // A_log: log of a log-uniform A
};

Dist dist_for(const std::string& name, const std::vector<int64_t>& shape) {
  auto ends = [&](const char* s) {
    std::string t(s);
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  if (ends("A_log")) return {std::log(0.02), std::log(16.0)};  // A in [0.02, 16], log-uniform
  if (ends("dt_bias")) return {-1.0, 1.0};
  if (ends("linear_attn.norm.weight")) return {0.8, 1.2};     // used as is
  if (ends("norm.weight") || ends("layernorm.weight")) return {-0.15, 0.15};  // (1 + w)
  if (ends("embed_tokens.weight")) return {-0.5, 0.5};
  if (ends("conv1d.weight")) return {-0.6, 0.6};
  // Linear layers: std 1/sqrt(fan_in) (uniform with that std).
  double fan_in = static_cast<double>(shape.back());
  double a = std::sqrt(3.0 / fan_in);
  return {-a, a};
}

// Falcon-H1 (shared fixtures README): plain norms centred on 1, A = U(1, 16),
// dt = softplus(dt_bias) roughly log-uniform in [0.001, 0.1], D near 1.
Dist falcon_dist_for(const std::string& name, const std::vector<int64_t>& shape) {
  auto ends = [&](const char* s) {
    std::string t(s);
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  if (ends("A_log")) return {0.0, std::log(16.0)};
  if (ends("dt_bias")) return {-6.9, -2.25};
  if (ends("mamba.D")) return {0.7, 1.3};
  if (ends("norm.weight")) return {0.8, 1.2};
  if (ends("embed_tokens.weight")) return {-0.5, 0.5};
  if (ends("conv1d.weight")) return {-0.6, 0.6};
  if (ends(".bias")) return {-0.1, 0.1};
  double a = std::sqrt(3.0 / static_cast<double>(shape.back()));
  return {-a, a};
}

using DistFn = Dist (*)(const std::string&, const std::vector<int64_t>&);

void write_tensor(io::SafetensorsWriter& w, const std::string& name,
                  const std::vector<int64_t>& shape, bool bf16, uint64_t seed, DistFn dist) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  Dist d = dist(name, shape);
  uint64_t state = hash_name(name, seed);
  constexpr int64_t kChunk = 1 << 20;
  std::vector<float> f32(bf16 ? 0 : std::min(n, kChunk));
  std::vector<uint16_t> b16(bf16 ? std::min(n, kChunk) : 0);
  for (int64_t off = 0; off < n; off += kChunk) {
    int64_t m = std::min(kChunk, n - off);
    for (int64_t i = 0; i < m; ++i) {
      double u = (splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
      float v = static_cast<float>(d.lo + (d.hi - d.lo) * u);
      if (bf16)
        b16[i] = io::f32_to_bf16(v);
      else
        f32[i] = v;
    }
    if (bf16)
      w.write(b16.data(), m * 2);
    else
      w.write(f32.data(), m * 4);
  }
}

std::string full_name(const std::string& canonical) {
  return canonical == "lm_head.weight" ? canonical : "model.language_model." + canonical;
}

// Writes random weights for `tensors` (full checkpoint names) into DIR as one
// model.safetensors or as shards + index. `dir` must exist.
void write_weights(const std::string& dir, const std::vector<TensorShape>& tensors, const InitOptions& opt,
                   DistFn dist) {
  const bool bf16 = opt.dtype == "bf16";
  std::error_code ec;
  std::vector<std::vector<io::TensorSpec>> shards(1);
  uint64_t cur = 0;
  for (const auto& t : tensors) {
    io::TensorSpec s{t.name, bf16 ? io::DType::BF16 : io::DType::F32, t.shape};
    if (opt.shard_bytes > 0 && cur > 0 && cur + s.nbytes() > opt.shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(s);
    cur += s.nbytes();
  }
  json weight_map = json::object();
  uint64_t total = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    char fname[64];
    if (shards.size() == 1)
      snprintf(fname, sizeof fname, "model.safetensors");
    else
      snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    io::SafetensorsWriter w(dir + "/" + fname, shards[i]);
    for (const auto& s : shards[i]) {
      write_tensor(w, s.name, s.shape, bf16, opt.seed, dist);
      weight_map[s.name] = fname;
      total += s.nbytes();
    }
    w.finish();
  }
  if (shards.size() > 1) {
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    io::write_file_atomic(dir + "/model.safetensors.index.json", index.dump(2));
    // A stale single file from an earlier run would shadow the shards (transformers prefers it).
    fs::remove(dir + "/model.safetensors", ec);
  } else {
    fs::remove(dir + "/model.safetensors.index.json", ec);
  }
}

void make_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir + "': " + ec.message());
}

}  // namespace

void write_random_qwen35(const std::string& dir, const Qwen35Config& cfg, const InitOptions& opt) {
  if (opt.dtype != "bf16" && opt.dtype != "f32")
    throw Error("init-model: dtype must be bf16 or f32, got '" + opt.dtype + "'");
  const bool bf16 = opt.dtype == "bf16";
  // Special tokens: the real Qwen3.5 ids when the vocabulary is real-sized, else 256..258.
  // Checked before anything is written.
  const int64_t first_special = cfg.vocab_size >= 248047 ? 248044 : 256;
  if (cfg.vocab_size < first_special + 3)
    throw Error("init-model: vocab_size must be at least 259 for the byte-level tokenizer");
  make_dir(dir);
  std::vector<TensorShape> tensors;
  for (const auto& t : qwen35_tensor_shapes(cfg)) tensors.push_back({full_name(t.name), t.shape});
  write_weights(dir, tensors, opt, dist_for);

  json config = cfg.to_json();
  config["text_config"]["dtype"] = bf16 ? "bfloat16" : "float32";
  config["dtype"] = bf16 ? "bfloat16" : "float32";
  io::write_file_atomic(dir + "/config.json", config.dump(2));
  json gen = {{"eos_token_id", cfg.eos_token_ids}, {"do_sample", false}};
  io::write_file_atomic(dir + "/generation_config.json", gen.dump(2));

  text::write_qwen35_tokenizer(dir, first_special, cfg.max_position_embeddings);
}

void write_random_falcon_h1(const std::string& dir, const FalconH1Config& cfg, const InitOptions& opt) {
  if (opt.dtype != "bf16" && opt.dtype != "f32")
    throw Error("init-model: dtype must be bf16 or f32, got '" + opt.dtype + "'");
  if (cfg.vocab_size < 16 + 256)
    throw Error("init-model: vocab_size must be at least 272 for the byte-level tokenizer");
  const bool bf16 = opt.dtype == "bf16";
  make_dir(dir);
  std::vector<TensorShape> tensors;
  for (const auto& t : falcon_h1_tensor_shapes(cfg))
    tensors.push_back({t.name == "lm_head.weight" ? t.name : "model." + t.name, t.shape});
  write_weights(dir, tensors, opt, falcon_dist_for);

  json config = cfg.to_json();
  config["torch_dtype"] = bf16 ? "bfloat16" : "float32";
  io::write_file_atomic(dir + "/config.json", config.dump(2));
  json gen = {{"bos_token_id", cfg.bos_token_id}, {"pad_token_id", cfg.pad_token_id},
              {"eos_token_id", cfg.eos_token_ids}, {"do_sample", false}};
  io::write_file_atomic(dir + "/generation_config.json", gen.dump(2));
  text::write_falcon_h1_tokenizer(dir, cfg.max_position_embeddings);
}

void write_random_qwen2(const std::string& dir, const Qwen2Config& cfg, const InitOptions& opt) {
  if (opt.dtype != "bf16" && opt.dtype != "f32")
    throw Error("init-model: dtype must be bf16 or f32, got '" + opt.dtype + "'");
  // Special tokens: the real Qwen2.5 ids (151643..151645) when the vocabulary is real-sized.
  const int64_t first_special = cfg.vocab_size >= 151646 ? 151643 : 256;
  if (cfg.vocab_size < first_special + 3)
    throw Error("init-model: vocab_size must be at least 259 for the byte-level tokenizer");
  const bool bf16 = opt.dtype == "bf16";
  make_dir(dir);
  std::vector<TensorShape> tensors;
  for (const auto& t : qwen2_tensor_shapes(cfg))
    tensors.push_back({t.name == "lm_head.weight" ? t.name : "model." + t.name, t.shape});
  write_weights(dir, tensors, opt, falcon_dist_for);  // plain norms near 1, small biases

  json config = cfg.to_json();
  config["torch_dtype"] = bf16 ? "bfloat16" : "float32";
  io::write_file_atomic(dir + "/config.json", config.dump(2));
  json gen = {{"eos_token_id", cfg.eos_token_ids}, {"do_sample", false}};
  if (cfg.bos_token_id >= 0) gen["bos_token_id"] = cfg.bos_token_id, gen["pad_token_id"] = cfg.bos_token_id;
  io::write_file_atomic(dir + "/generation_config.json", gen.dump(2));
  text::write_qwen2_tokenizer(dir, first_special, cfg.max_position_embeddings);
}

int64_t write_random_model(const std::string& dir, const std::string& arch, const std::string& preset,
                           const InitOptions& opt) {
  if (opt.dtype != "bf16" && opt.dtype != "f32") throw Error("dtype must be bf16 or f32, not '" + opt.dtype + "'");
  if (arch == "falcon_h1") {
    auto cfg = FalconH1Config::preset(preset);
    write_random_falcon_h1(dir, cfg, opt);
    return cfg.num_parameters();
  }
  if (arch == "qwen35") {
    auto cfg = Qwen35Config::preset(preset);
    write_random_qwen35(dir, cfg, opt);
    return cfg.num_parameters();
  }
  if (arch == "qwen2") {
    auto cfg = Qwen2Config::preset(preset);
    write_random_qwen2(dir, cfg, opt);
    return cfg.num_parameters();
  }
  throw Error("arch must be qwen35, falcon_h1 or qwen2, not '" + arch + "'");
}

}  // namespace s0::models
