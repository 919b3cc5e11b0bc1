#include "s0/models/init_model.h"

#include <cmath>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/io/atomic_file.h"
#include "s0/io/half.h"
#include "s0/io/safetensors.h"
#include "s0/text/chat_template.h"
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

// The 256 byte tokens (GPT-2 byte <-> unicode mapping: printable bytes map to themselves,
// the rest to U+0100+) at ids offset .. offset + 255.
json byte_vocab(int64_t offset) {
  json vocab = json::object();
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    uint32_t cp = printable ? b : 256 + extra++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[s] = offset + b;
  }
  return vocab;
}

}  // namespace

std::string byte_level_tokenizer_json(int64_t first_special) {
  // GPT-2 byte <-> unicode mapping: printable bytes map to themselves, the rest to U+0100+.
  json vocab = byte_vocab(0);
  json added = json::array();
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", first_special + i}, {"content", specials[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}},
      {"decoder",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""},
        {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab}, {"merges", json::array()}}}};
  return tok.dump(1);
}

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

  io::write_file_atomic(dir + "/tokenizer.json", byte_level_tokenizer_json(first_special));
  json tcfg = {{"tokenizer_class", "Qwen2Tokenizer"},
               {"eos_token", "<|im_end|>"},
               {"pad_token", "<|endoftext|>"},
               {"bos_token", nullptr},
               // The Qwen3.5 small-model template (thinking off unless asked for).
               {"chat_template", text::ChatTemplate::builtin("qwen3.5-small").source()},
               {"model_max_length", cfg.max_position_embeddings}};
  io::write_file_atomic(dir + "/tokenizer_config.json", tcfg.dump(2));
}

}  // namespace s0::models

namespace s0::models {

std::string falcon_h1_tokenizer_json() {
  // Special tokens at the Falcon-H1 ids of config.json (pad 0, bos 1, eos 11), the ChatML
  // markers at 12 and 13 (their real ids are UNVERIFIED), bytes from id 16. Pre-tokenizer:
  // the Llama-3 split regex, then ByteLevel without its own regex; ignore_merges on
  // (shared spec falcon_h1.md section 5).
  json added = json::array();
  const std::pair<int64_t, const char*> specials[] = {{0, "<|pad|>"},
                                                     {1, "<|begin_of_text|>"},
                                                     {11, "<|end_of_text|>"},
                                                     {12, "<|im_start|>"},
                                                     {13, "<|im_end|>"}};
  json vocab = byte_vocab(16);
  for (const auto& [id, content] : specials) {
    added.push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
    vocab[content] = id;
  }
  const char* llama3_regex =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", llama3_regex}}}, {"behavior", "Isolated"}, {"invert", false}},
          byte_level}}}},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
        {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", true},
        {"vocab", vocab}, {"merges", json::array()}}}};
  return tok.dump(1);
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
  io::write_file_atomic(dir + "/tokenizer.json", falcon_h1_tokenizer_json());
  json tcfg = {{"tokenizer_class", "PreTrainedTokenizerFast"},
               {"bos_token", "<|begin_of_text|>"},
               {"eos_token", "<|end_of_text|>"},
               {"pad_token", "<|pad|>"},
               {"chat_template", text::ChatTemplate::builtin("falcon-h1").source()},
               {"model_max_length", cfg.max_position_embeddings}};
  io::write_file_atomic(dir + "/tokenizer_config.json", tcfg.dump(2));
}

}  // namespace s0::models
