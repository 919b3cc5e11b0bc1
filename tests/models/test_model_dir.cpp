// Loading Hugging Face model directories: sharded checkpoints, tensor-name prefixes, tied and
// untied heads, per-tensor dtypes, the errors a user can cause (with the facts they need),
// Qwen35Config parsing/serialisation, and the init-model tokenizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/io/atomic_file.h"
#include "s0/io/half.h"
#include "s0/io/model_dir.h"
#include "s0/io/safetensors.h"
#include "s0/models/init_model.h"
#include "s0/models/model.h"
#include "s0/models/qwen35.h"
#include "s0/models/qwen35_config.h"
#include "s0/models/weights.h"
#include "s0/util/huge_pages.h"
#include "s0/text/tokenizer_writer.h"
#include "s0/util/error.h"
#include "test_util.h"

using namespace s0;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---------------------------------------------------------------------------- helpers

// A tensor held in memory (name, dtype, shape, raw little-endian bytes).
struct OwnedTensor {
  std::string name;
  io::DType dtype = io::DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<OwnedTensor> read_tensors(const std::string& path) {
  io::SafetensorsFile f(path);
  std::vector<OwnedTensor> out;
  for (const auto& name : f.names()) {
    const auto& t = f.get(name);
    out.push_back({name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes())});
  }
  return out;
}

void write_tensors(const std::string& path, const std::vector<OwnedTensor>& ts) {
  std::vector<std::pair<io::TensorSpec, const void*>> v;
  for (const auto& t : ts) v.push_back({io::TensorSpec{t.name, t.dtype, t.shape}, t.bytes.data()});
  io::save_safetensors(path, v);
}

OwnedTensor* find(std::vector<OwnedTensor>& ts, const std::string& name) {
  for (auto& t : ts)
    if (t.name == name) return &t;
  ADD_FAILURE() << "no tensor " << name;
  return nullptr;
}

std::vector<float> as_f32(const OwnedTensor& t) {
  EXPECT_EQ(t.dtype, io::DType::F32) << t.name;
  std::vector<float> v(t.bytes.size() / 4);
  std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}

template <typename T>
OwnedTensor make_tensor(const std::string& name, io::DType dt, std::vector<int64_t> shape,
                        const std::vector<T>& vals) {
  OwnedTensor t{name, dt, std::move(shape), {}};
  t.bytes.resize(vals.size() * sizeof(T));
  std::memcpy(t.bytes.data(), vals.data(), t.bytes.size());
  return t;
}

// s0::testing::temp_dir, removed again when the test program ends (these add up to ~50 MB).
std::string temp_dir(const std::string& name) {
  static struct Cleanup {
    std::set<std::string> dirs;
    ~Cleanup() {
      std::error_code ec;
      for (const auto& d : dirs) fs::remove_all(d, ec);
    }
  } cleanup;
  std::string d = s0::testing::temp_dir(name);
  cleanup.dirs.insert(d);
  return d;
}

// Copies every file of `src` into a fresh temp dir `name`.
std::string copy_dir(const std::string& src, const std::string& name) {
  std::string dst = temp_dir(name);
  fs::copy(src, dst, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return dst;
}

json read_json(const std::string& path) { return json::parse(io::read_file(path)); }
void write_json(const std::string& path, const json& j) { io::write_file_atomic(path, j.dump(2)); }

// Copy of `src` with config.json changed by `fn`.
std::string with_config(const std::string& src, const std::string& name,
                        const std::function<void(json&)>& fn) {
  std::string dst = copy_dir(src, name);
  json cfg = read_json(dst + "/config.json");
  fn(cfg);
  write_json(dst + "/config.json", cfg);
  return dst;
}

// Copy of the (unsharded) checkpoint `src` with its tensors changed by `fn`.
std::string with_tensors(const std::string& src, const std::string& name,
                         const std::function<void(std::vector<OwnedTensor>&)>& fn) {
  std::string dst = copy_dir(src, name);
  auto ts = read_tensors(dst + "/model.safetensors");
  fn(ts);
  write_tensors(dst + "/model.safetensors", ts);
  return dst;
}

// Renames every tensor: `rename` returns the new name ("" drops the tensor).
void rename_tensors(std::vector<OwnedTensor>& ts,
                    const std::function<std::string(const std::string&)>& rename) {
  std::vector<OwnedTensor> out;
  for (auto& t : ts) {
    std::string n = rename(t.name);
    if (n.empty()) continue;
    t.name = n;
    out.push_back(std::move(t));
  }
  ts = std::move(out);
}

std::string strip_prefix(const std::string& name, const std::string& from, const std::string& to) {
  return name.rfind(from, 0) == 0 ? to + name.substr(from.size()) : name;
}

const std::vector<int64_t> kIds = {1, 17, 300, 42, 7, 256, 511, 0, 99, 12, 3, 3, 3, 200, 150,
                                   8, 64, 65, 258, 31, 90, 400, 5, 6};

Tensor logits_of(const std::string& dir, at::ScalarType dt = at::kFloat) {
  auto model = models::load_model(dir, dt);
  NoGrad ng;
  auto cache = model->new_cache(1);
  return model->forward(at::tensor(kIds, at::kLong).view({1, -1}), cache);
}

// Runs `f`, expects s0::Error, returns its message ("" and a failure otherwise).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const s0::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected s0::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected s0::Error, nothing was thrown";
  return "";
}

::testing::AssertionResult Contains(const std::string& msg, const std::string& part) {
  if (msg.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "message: " << msg << "\nlacks: " << part;
}
#define EXPECT_HAS(msg, part) EXPECT_TRUE(Contains(msg, part))

models::Qwen35Config tiny() { return models::Qwen35Config::preset("tiny"); }

std::string write_tiny(const std::string& name, uint64_t seed, const std::string& dtype,
                       uint64_t shard_bytes = 0, const models::Qwen35Config& cfg = tiny()) {
  std::string dir = temp_dir(name);
  models::InitOptions opt;
  opt.seed = seed;
  opt.dtype = dtype;
  opt.shard_bytes = shard_bytes;
  models::write_random_qwen35(dir, cfg, opt);
  return dir;
}

// The tiny f32 checkpoint most tests start from (written once).
const std::string& base_dir() {
  static const std::string d = write_tiny("md_base", 11, "f32");
  return d;
}
const Tensor& base_logits() {
  static const Tensor t = logits_of(base_dir());
  return t;
}

std::vector<std::string> files_matching(const std::string& dir, const std::string& re) {
  std::vector<std::string> out;
  std::regex r(re);
  for (const auto& e : fs::directory_iterator(dir))
    if (std::regex_match(e.path().filename().string(), r)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------- sanity

TEST(ModelDir, BaseCheckpointLoadsAndIsNotDegenerate) {
  const Tensor& l = base_logits();
  ASSERT_EQ(l.sizes().vec(), (std::vector<int64_t>{1, (int64_t)kIds.size(), 512}));
  EXPECT_TRUE(at::isfinite(l).all().item<bool>());
  EXPECT_GT(l.std().item<double>(), 1e-3);
  // A different seed gives different logits, so equality elsewhere means something.
  EXPECT_FALSE(at::equal(l, logits_of(write_tiny("md_seed12", 12, "f32"))));
}

TEST(ModelDir, CanonicalNamesAndTrailingSlash) {
  io::ModelDir md(base_dir() + "//");
  EXPECT_EQ(md.path(), base_dir());
  EXPECT_EQ(md.config_path(), base_dir() + "/config.json");
  std::set<std::string> want;
  for (const auto& t : models::qwen35_tensor_shapes(tiny())) want.insert(t.name);
  auto names = md.names();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), want);
  EXPECT_TRUE(md.has("layers.0.linear_attn.A_log"));
  EXPECT_FALSE(md.has("model.language_model.layers.0.linear_attn.A_log"));
  EXPECT_FALSE(md.has("lm_head.weight"));  // tied preset
  EXPECT_EQ(md.get("norm.weight").name, "model.language_model.norm.weight");
  EXPECT_EQ(md.file_of("norm.weight"), base_dir() + "/model.safetensors");
  EXPECT_EQ(md.get("norm.weight", {64}).shape, (std::vector<int64_t>{64}));
}

// ---------------------------------------------------------------------------- sharding

TEST(ModelDirSharded, ShardsLoadIdenticallyToOneFile) {
  for (std::string dtype : {"f32", "bf16"}) {
    SCOPED_TRACE(dtype);
    std::string one = write_tiny("md_unsharded_" + dtype, 21, dtype);
    std::string sh = write_tiny("md_sharded_" + dtype, 21, dtype, /*shard_bytes=*/60000);
    auto shards = files_matching(sh, R"(model-\d{5}-of-\d{5}\.safetensors)");
    ASSERT_GE(shards.size(), 3u);
    const std::string n = std::to_string(shards.size());
    for (size_t i = 0; i < shards.size(); ++i) {
      char want[64];
      snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      EXPECT_EQ(shards[i], want);
    }
    EXPECT_FALSE(fs::exists(sh + "/model.safetensors"));
    EXPECT_FALSE(fs::exists(one + "/model.safetensors.index.json"));

    // The index maps every tensor to the shard holding it; total_size is the sum of tensors.
    json idx = read_json(sh + "/model.safetensors.index.json");
    uint64_t total = 0;
    std::set<std::string> used;
    for (const auto& f : shards) {
      io::SafetensorsFile sf(sh + "/" + f);
      for (const auto& [name, t] : sf.tensors()) {
        EXPECT_EQ(idx["weight_map"].value(name, std::string()), f) << name;
        total += t.nbytes();
        used.insert(f);
      }
    }
    EXPECT_EQ(used.size(), shards.size());  // no empty shard
    EXPECT_EQ(idx["weight_map"].size(), models::qwen35_tensor_shapes(tiny()).size());
    EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), total);

    io::ModelDir a(one), b(sh);
    EXPECT_EQ(a.names(), b.names());
    std::set<std::string> files;
    for (const auto& nm : b.names()) files.insert(b.file_of(nm));
    EXPECT_EQ(files.size(), shards.size());

    for (auto dt : {at::kFloat, at::kBFloat16})
      EXPECT_TRUE(at::equal(logits_of(one, dt), logits_of(sh, dt))) << "load dtype " << models::dtype_str(dt);
  }
}

TEST(ModelDirSharded, ShardedRewriteRemovesStaleSingleFile) {
  // Hugging Face prefers model.safetensors over the index: a stale one must not survive.
  std::string dir = write_tiny("md_reshard", 31, "f32");
  models::InitOptions opt;
  opt.seed = 32;
  opt.dtype = "f32";
  opt.shard_bytes = 60000;
  models::write_random_qwen35(dir, tiny(), opt);
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  EXPECT_TRUE(at::equal(logits_of(dir), logits_of(write_tiny("md_reshard_ref", 32, "f32"))));
  // And back to one file: the index goes.
  opt.shard_bytes = 0;
  opt.seed = 33;
  models::write_random_qwen35(dir, tiny(), opt);
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(at::equal(logits_of(dir), logits_of(write_tiny("md_reshard_ref2", 33, "f32"))));
}

TEST(ModelDirSharded, IndexNamingAMissingShard) {
  std::string sh = write_tiny("md_sh_missing", 21, "f32", 60000);
  auto shards = files_matching(sh, R"(model-\d{5}-of-\d{5}\.safetensors)");
  ASSERT_GE(shards.size(), 2u);
  fs::remove(sh + "/" + shards[1]);
  std::string msg = error_of([&] { io::ModelDir md(sh); });
  EXPECT_HAS(msg, sh + "/model.safetensors.index.json");
  EXPECT_HAS(msg, shards[1]);
  EXPECT_HAS(msg, "missing");
  EXPECT_THROW(models::load_model(sh, at::kFloat), s0::Error);
}

TEST(ModelDirSharded, IndexErrors) {
  std::string sh = write_tiny("md_sh_idx", 21, "f32", 60000);
  auto shards = files_matching(sh, R"(model-\d{5}-of-\d{5}\.safetensors)");
  ASSERT_GE(shards.size(), 2u);
  const std::string index = sh + "/model.safetensors.index.json";
  json idx = read_json(index);
  auto with_index = [&](const std::string& name, const std::function<void(json&)>& fn) {
    std::string d = copy_dir(sh, name);
    json j = idx;
    fn(j);
    write_json(d + "/model.safetensors.index.json", j);
    return d;
  };
  // A tensor attributed to the wrong (existing) shard.
  const std::string emb = "model.language_model.embed_tokens.weight";
  std::string wrong_shard = idx["weight_map"][emb] == shards[0] ? shards[1] : shards[0];
  std::string d1 = with_index("md_sh_idx1", [&](json& j) { j["weight_map"][emb] = wrong_shard; });
  std::string m1 = error_of([&] { io::ModelDir md(d1); });
  EXPECT_HAS(m1, emb);
  EXPECT_HAS(m1, wrong_shard);
  // Invalid JSON, missing weight_map, a path instead of a file name.
  std::string d2 = copy_dir(sh, "md_sh_idx2");
  io::write_file_atomic(d2 + "/model.safetensors.index.json", "{\"weight_map\": {");
  std::string m2 = error_of([&] { io::ModelDir md(d2); });
  EXPECT_HAS(m2, d2 + "/model.safetensors.index.json");
  EXPECT_HAS(m2, "invalid JSON");
  std::string d3 = with_index("md_sh_idx3", [&](json& j) { j.erase("weight_map"); });
  EXPECT_HAS(error_of([&] { io::ModelDir md(d3); }), "weight_map");
  std::string d4 = with_index("md_sh_idx4", [&](json& j) { j["weight_map"][emb] = "../" + shards[0]; });
  EXPECT_HAS(error_of([&] { io::ModelDir md(d4); }), "../" + shards[0]);
  // A tensor missing from the index (and from its shard) is reported by load.
  std::string d5 = copy_dir(sh, "md_sh_idx5");
  {
    std::string f = d5 + "/" + idx["weight_map"][emb].get<std::string>();
    auto ts = read_tensors(f);
    rename_tensors(ts, [&](const std::string& n) { return n == emb ? "" : n; });
    write_tensors(f, ts);
    json j = idx;
    j["weight_map"].erase(emb);
    write_json(d5 + "/model.safetensors.index.json", j);
  }
  std::string m5 = error_of([&] { models::load_model(d5, at::kFloat); });
  EXPECT_HAS(m5, "embed_tokens.weight");
  EXPECT_HAS(m5, d5);
}

// ---------------------------------------------------------------------------- prefixes

TEST(ModelDirPrefixes, TextOnlyExportWithFlatConfig) {
  // model.* names and a flat qwen3_5_text config, plus vision and MTP tensors to ignore.
  std::string dir = with_tensors(base_dir(), "md_flat", [](std::vector<OwnedTensor>& ts) {
    rename_tensors(ts, [](const std::string& n) { return strip_prefix(n, "model.language_model.", "model."); });
    ts.push_back(make_tensor<float>("model.visual.patch_embed.proj.weight", io::DType::F32, {3, 5},
                                    std::vector<float>(15, 1.f)));
    // Same canonical-looking suffix as real tensors, wrong shapes: must be ignored, not clash.
    ts.push_back(make_tensor<float>("model.visual.norm.weight", io::DType::F32, {7}, std::vector<float>(7, 2.f)));
    ts.push_back(make_tensor<float>("mtp.norm.weight", io::DType::F32, {5}, std::vector<float>(5, 3.f)));
    ts.push_back(make_tensor<float>("mtp.layers.0.input_layernorm.weight", io::DType::F32, {64},
                                    std::vector<float>(64, 4.f)));
    ts.push_back(make_tensor<float>("model.mtp.fc.weight", io::DType::F32, {2, 2}, std::vector<float>(4, 5.f)));
  });
  json flat = read_json(dir + "/config.json")["text_config"];
  ASSERT_EQ(flat["model_type"], "qwen3_5_text");
  write_json(dir + "/config.json", flat);
  ASSERT_TRUE(io::SafetensorsFile(dir + "/model.safetensors").has("model.embed_tokens.weight"));

  io::ModelDir md(dir);
  EXPECT_EQ(md.names(), io::ModelDir(base_dir()).names());
  EXPECT_EQ(md.get("norm.weight").name, "model.norm.weight");
  EXPECT_EQ(md.get("layers.0.input_layernorm.weight").name, "model.layers.0.input_layernorm.weight");
  EXPECT_TRUE(at::equal(logits_of(dir), base_logits()));
}

TEST(ModelDirPrefixes, NestedNamesWithFlatConfigAndFlatNamesWithNestedConfig) {
  std::string a = with_config(base_dir(), "md_flatcfg", [](json& c) { c = json(c["text_config"]); });
  EXPECT_TRUE(at::equal(logits_of(a), base_logits()));
  std::string b = with_tensors(base_dir(), "md_flatnames", [](std::vector<OwnedTensor>& ts) {
    rename_tensors(ts, [](const std::string& n) { return strip_prefix(n, "model.language_model.", "model."); });
  });
  EXPECT_TRUE(at::equal(logits_of(b), base_logits()));
}

TEST(ModelDirPrefixes, VisionAndMtpTensorsAreIgnoredInNestedLayoutToo) {
  std::string dir = with_tensors(base_dir(), "md_vis", [](std::vector<OwnedTensor>& ts) {
    ts.push_back(make_tensor<float>("model.visual.blocks.0.norm1.weight", io::DType::F32, {3},
                                    std::vector<float>(3, 1.f)));
    ts.push_back(make_tensor<float>("mtp.fc.weight", io::DType::F32, {64, 128},
                                    std::vector<float>(64 * 128, 1.f)));
  });
  io::ModelDir md(dir);
  for (const auto& n : md.names()) {
    EXPECT_EQ(n.find("visual"), std::string::npos) << n;
    EXPECT_EQ(n.find("mtp"), std::string::npos) << n;
  }
  EXPECT_TRUE(at::equal(logits_of(dir), base_logits()));
}

TEST(ModelDirPrefixes, SameTensorUnderTwoPrefixesIsAnError) {
  std::string dir = with_tensors(base_dir(), "md_twice", [](std::vector<OwnedTensor>& ts) {
    OwnedTensor t = *find(ts, "model.language_model.norm.weight");
    t.name = "model.norm.weight";
    ts.push_back(t);
  });
  std::string msg = error_of([&] { io::ModelDir md(dir); });
  EXPECT_HAS(msg, "norm.weight");
  EXPECT_HAS(msg, "model.language_model.norm.weight");
  EXPECT_HAS(msg, "'model.norm.weight'");
}

// ---------------------------------------------------------------------------- tied / untied

TEST(ModelDirHead, TiedUsesTheEmbeddingUntiedUsesLmHead) {
  // Untied with lm_head == embedding: identical to the tied model.
  auto add_head = [](float scale) {
    return [scale](std::vector<OwnedTensor>& ts) {
      OwnedTensor h = *find(ts, "model.language_model.embed_tokens.weight");
      h.name = "lm_head.weight";
      auto v = as_f32(h);
      for (auto& x : v) x *= scale;
      std::memcpy(h.bytes.data(), v.data(), h.bytes.size());
      ts.push_back(h);
    };
  };
  auto untie = [](json& c) {
    c["tie_word_embeddings"] = false;
    c["text_config"]["tie_word_embeddings"] = false;
  };
  std::string same = with_tensors(base_dir(), "md_untied_same", add_head(1.f));
  {
    json c = read_json(same + "/config.json");
    untie(c);
    write_json(same + "/config.json", c);
  }
  EXPECT_TRUE(at::equal(logits_of(same), base_logits()));
  // Untied with a different lm_head: it is used (logits scale with it).
  std::string scaled = with_tensors(same, "md_untied_scaled", [](std::vector<OwnedTensor>& ts) {
    OwnedTensor* h = find(ts, "lm_head.weight");
    auto v = as_f32(*h);
    for (auto& x : v) x *= 2.f;
    std::memcpy(h->bytes.data(), v.data(), h->bytes.size());
  });
  Tensor ls = logits_of(scaled);
  EXPECT_FALSE(at::equal(ls, base_logits()));
  EXPECT_TRUE(at::allclose(ls, 2 * base_logits(), 1e-5, 1e-5));
  // Tied config with a stray lm_head.weight: the embedding wins (as in transformers).
  std::string stray = with_tensors(base_dir(), "md_tied_stray", add_head(-3.f));
  EXPECT_TRUE(at::equal(logits_of(stray), base_logits()));
}

TEST(ModelDirHead, UntiedWithoutLmHeadFails) {
  std::string dir = with_config(base_dir(), "md_untied_nohead", [](json& c) {
    c["tie_word_embeddings"] = false;
    c["text_config"]["tie_word_embeddings"] = false;
  });
  std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
  EXPECT_HAS(msg, "lm_head.weight");
  EXPECT_HAS(msg, dir);
}

TEST(ModelDirHead, TieFlagPrecedence) {
  json c = tiny().to_json();
  // text_config's flag wins; the top level's applies when text_config has none.
  c["tie_word_embeddings"] = true;
  c["text_config"]["tie_word_embeddings"] = false;
  EXPECT_FALSE(models::Qwen35Config::from_json(c, "c").tie_word_embeddings);
  c["text_config"].erase("tie_word_embeddings");
  c["tie_word_embeddings"] = false;
  EXPECT_FALSE(models::Qwen35Config::from_json(c, "c").tie_word_embeddings);
  c.erase("tie_word_embeddings");
  EXPECT_TRUE(models::Qwen35Config::from_json(c, "c").tie_word_embeddings);
  auto shapes = models::qwen35_tensor_shapes(models::Qwen35Config::preset("9b"));
  EXPECT_EQ(shapes.back().name, "lm_head.weight");
  EXPECT_EQ(models::qwen35_tensor_shapes(tiny()).back().name, "norm.weight");
}

// ---------------------------------------------------------------------------- errors

TEST(ModelDirErrors, MissingDirectory) {
  std::string dir = temp_dir("md_nodir") + "/does_not_exist";
  std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
  EXPECT_HAS(msg, dir);
  EXPECT_HAS(msg, "does not exist");
  // A file is not a directory either.
  EXPECT_HAS(error_of([&] { io::ModelDir md(base_dir() + "/config.json"); }), base_dir() + "/config.json");
}

TEST(ModelDirErrors, MissingConfig) {
  std::string dir = copy_dir(base_dir(), "md_nocfg");
  fs::remove(dir + "/config.json");
  std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
  EXPECT_HAS(msg, dir);
  EXPECT_HAS(msg, "config.json");
}

TEST(ModelDirErrors, MissingWeights) {
  std::string dir = copy_dir(base_dir(), "md_noweights");
  fs::remove(dir + "/model.safetensors");
  std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
  EXPECT_HAS(msg, dir);
  EXPECT_HAS(msg, "model.safetensors");
}

TEST(ModelDirErrors, InvalidJsonConfig) {
  std::string dir = copy_dir(base_dir(), "md_badjson");
  io::write_file_atomic(dir + "/config.json", "{\"model_type\": \"qwen3_5\",");
  std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
  EXPECT_HAS(msg, dir + "/config.json");
  EXPECT_HAS(msg, "invalid JSON");
}

TEST(ModelDirErrors, ConfigNotAnObject) {
  for (const char* text : {"[1, 2, 3]", "\"qwen3_5\"", "42"}) {
    std::string dir = copy_dir(base_dir(), "md_cfgarray");
    io::write_file_atomic(dir + "/config.json", text);
    std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
    EXPECT_HAS(msg, dir + "/config.json");
  }
}

TEST(ModelDirErrors, MissingRequiredKey) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "linear_num_key_heads", "linear_num_value_heads",
                          "linear_key_head_dim", "linear_value_head_dim"}) {
    SCOPED_TRACE(key);
    std::string dir = with_config(base_dir(), "md_nokey", [&](json& c) { c["text_config"].erase(key); });
    std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
    EXPECT_HAS(msg, dir + "/config.json");
    EXPECT_HAS(msg, std::string("'") + key + "'");
    EXPECT_HAS(msg, "missing");
  }
}

TEST(ModelDirErrors, WrongKeyTypesAndValues) {
  auto msg_for = [](const std::function<void(json&)>& fn) {
    json c = tiny().to_json();
    fn(c);
    return error_of([&] { models::Qwen35Config::from_json(c, "/x/config.json"); });
  };
  std::string m = msg_for([](json& c) { c["text_config"]["hidden_size"] = "64"; });
  EXPECT_HAS(m, "/x/config.json");
  EXPECT_HAS(m, "'hidden_size'");
  EXPECT_HAS(m, "wrong type");
  m = msg_for([](json& c) { c["text_config"]["tie_word_embeddings"] = "yes"; });
  EXPECT_HAS(m, "tie_word_embeddings");
  m = msg_for([](json& c) { c["text_config"]["num_key_value_heads"] = 3; });
  EXPECT_HAS(m, "num_key_value_heads");
  m = msg_for([](json& c) { c["text_config"]["hidden_size"] = 0; });
  EXPECT_HAS(m, "hidden_size");
  m = msg_for([](json& c) { c["text_config"]["layer_types"][1] = "sliding_attention"; });
  EXPECT_HAS(m, "layer_types[1]");
  EXPECT_HAS(m, "sliding_attention");
  m = msg_for([](json& c) { c["text_config"]["layer_types"][1] = 7; });
  EXPECT_HAS(m, "layer_types");
  m = msg_for([](json& c) { c["text_config"]["eos_token_id"] = json::array({258, "x"}); });
  EXPECT_HAS(m, "eos_token_id");
  m = msg_for([](json& c) { c["text_config"]["rope_parameters"]["rope_type"] = "yarn"; });
  EXPECT_HAS(m, "yarn");
  m = msg_for([](json& c) { c["text_config"]["rope_parameters"]["partial_rotary_factor"] = 2.0; });
  EXPECT_HAS(m, "rotary");
  EXPECT_HAS(msg_for([](json& c) { c = json::array(); }), "/x/config.json");
}

TEST(ModelDirErrors, LayerTypesWrongLength) {
  for (int n : {3, 5}) {
    std::string dir = with_config(base_dir(), "md_lt", [&](json& c) {
      auto& lt = c["text_config"]["layer_types"];
      if (n < 4)
        lt.erase(lt.size() - 1);
      else
        lt.push_back("linear_attention");
    });
    std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
    EXPECT_HAS(msg, dir + "/config.json");
    EXPECT_HAS(msg, "layer_types has " + std::to_string(n) + " entries");
    EXPECT_HAS(msg, "num_hidden_layers = 4");
  }
}

TEST(ModelDirErrors, MissingTensor) {
  const std::string name = "model.language_model.layers.2.linear_attn.A_log";
  std::string dir = with_tensors(base_dir(), "md_missing_t", [&](std::vector<OwnedTensor>& ts) {
    rename_tensors(ts, [&](const std::string& n) { return n == name ? "" : n; });
  });
  std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
  EXPECT_HAS(msg, dir);
  EXPECT_HAS(msg, "layers.2.linear_attn.A_log");
  EXPECT_HAS(msg, "not found");
}

TEST(ModelDirErrors, WrongShape) {
  const std::string name = "model.language_model.norm.weight";
  std::string dir = with_tensors(base_dir(), "md_shape", [&](std::vector<OwnedTensor>& ts) {
    OwnedTensor* t = find(ts, name);
    t->shape = {65};
    t->bytes.resize(65 * 4);
  });
  std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
  EXPECT_HAS(msg, dir + "/model.safetensors");
  EXPECT_HAS(msg, name);
  EXPECT_HAS(msg, "[65]");
  EXPECT_HAS(msg, "[64]");
  EXPECT_LT(msg.find("[65]"), msg.find("[64]"));  // "has shape [65], expected [64]"
  // A 2-D one, transposed.
  std::string dir2 = with_tensors(base_dir(), "md_shape2", [&](std::vector<OwnedTensor>& ts) {
    find(ts, "model.language_model.layers.1.mlp.down_proj.weight")->shape = {128, 64};
  });
  std::string m2 = error_of([&] { models::load_model(dir2, at::kFloat); });
  EXPECT_HAS(m2, "layers.1.mlp.down_proj.weight");
  EXPECT_HAS(m2, "[128,64]");
  EXPECT_HAS(m2, "[64,128]");
}

TEST(ModelDirErrors, TruncatedSafetensors) {
  std::string dir = copy_dir(base_dir(), "md_trunc");
  const std::string f = dir + "/model.safetensors";
  fs::resize_file(f, fs::file_size(f) - 100);
  std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
  EXPECT_HAS(msg, f);
  EXPECT_HAS(msg, "truncated");
  // Cut inside the header too.
  fs::resize_file(f, 50);
  EXPECT_HAS(error_of([&] { io::ModelDir md(dir); }), f);
}

TEST(ModelDirErrors, IntegerDtypeForAFloatWeight) {
  const std::string name = "model.language_model.layers.0.mlp.up_proj.weight";
  for (io::DType dt : {io::DType::I32, io::DType::I64, io::DType::U8, io::DType::BOOL}) {
    SCOPED_TRACE(io::dtype_name(dt));
    std::string dir = with_tensors(base_dir(), "md_int", [&](std::vector<OwnedTensor>& ts) {
      OwnedTensor* t = find(ts, name);
      t->dtype = dt;
      t->bytes.assign(128 * 64 * io::dtype_size(dt), 0);
    });
    std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
    EXPECT_HAS(msg, dir + "/model.safetensors");
    EXPECT_HAS(msg, name);
    EXPECT_HAS(msg, io::dtype_name(dt));
  }
}

TEST(ModelDirErrors, UnsupportedModelType) {
  std::string dir = with_config(base_dir(), "md_llama", [](json& c) { c["model_type"] = "llama"; });
  std::string msg = error_of([&] { models::load_model(dir, at::kFloat); });
  EXPECT_HAS(msg, dir + "/config.json");
  EXPECT_HAS(msg, "'llama'");
  EXPECT_HAS(msg, "qwen3_5");
  std::string none = with_config(base_dir(), "md_notype", [](json& c) { c.erase("model_type"); });
  EXPECT_HAS(error_of([&] { models::load_model(none, at::kFloat); }), "unsupported model_type");
  std::string num = with_config(base_dir(), "md_numtype", [](json& c) { c["model_type"] = 35; });
  EXPECT_HAS(error_of([&] { models::load_model(num, at::kFloat); }), "model_type");
}

TEST(ModelDirErrors, UnsupportedLoadDtype) {
  EXPECT_THROW(models::load_model(base_dir(), at::kHalf), s0::Error);
  EXPECT_THROW(models::parse_dtype("f16"), s0::Error);
  EXPECT_EQ(models::parse_dtype("bfloat16"), at::kBFloat16);
  EXPECT_EQ(models::parse_dtype("f32"), at::kFloat);
}

// ---------------------------------------------------------------------------- dtypes

TEST(ModelDirDtypes, MixedF32Bf16F16) {
  // Each tensor of the f32 checkpoint stored as F32, BF16, F16 or F64 in turn. The reference is
  // an all-F32 copy holding exactly the rounded values.
  const io::DType cycle[] = {io::DType::BF16, io::DType::F32, io::DType::F16, io::DType::F64};
  std::vector<OwnedTensor> mixed = read_tensors(base_dir() + "/model.safetensors");
  std::vector<OwnedTensor> ref = mixed;
  std::map<io::DType, int> count;
  for (size_t i = 0; i < mixed.size(); ++i) {
    io::DType dt = cycle[i % 4];
    ++count[dt];
    auto v = as_f32(mixed[i]);
    std::vector<float> r(v.size());
    OwnedTensor& m = mixed[i];
    m.dtype = dt;
    if (dt == io::DType::BF16) {
      std::vector<uint16_t> h(v.size());
      for (size_t k = 0; k < v.size(); ++k) h[k] = io::f32_to_bf16(v[k]), r[k] = io::bf16_to_f32(h[k]);
      m = make_tensor(m.name, dt, m.shape, h);
    } else if (dt == io::DType::F16) {
      std::vector<uint16_t> h(v.size());
      for (size_t k = 0; k < v.size(); ++k) h[k] = io::f32_to_f16(v[k]), r[k] = io::f16_to_f32(h[k]);
      m = make_tensor(m.name, dt, m.shape, h);
    } else if (dt == io::DType::F64) {
      std::vector<double> d(v.begin(), v.end());
      r = v;
      m = make_tensor(m.name, dt, m.shape, d);
    } else {
      r = v;
    }
    ref[i] = make_tensor(ref[i].name, io::DType::F32, ref[i].shape, r);
  }
  EXPECT_GT(count[io::DType::BF16], 5);
  EXPECT_GT(count[io::DType::F16], 5);
  // An ignored 2-byte tensor first, so that every following tensor is only 2-byte aligned.
  mixed.insert(mixed.begin(), make_tensor<uint16_t>("model.visual.pad", io::DType::BF16, {1}, {0}));
  std::string mdir = copy_dir(base_dir(), "md_mixed");
  std::string rdir = copy_dir(base_dir(), "md_mixed_ref");
  write_tensors(mdir + "/model.safetensors", mixed);
  write_tensors(rdir + "/model.safetensors", ref);

  for (auto dt : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(models::dtype_str(dt));
    Tensor got = logits_of(mdir, dt), want = logits_of(rdir, dt);
    EXPECT_TRUE(at::equal(got, want));
  }
  // The rounding is real: the mixed model differs from the all-F32 original.
  EXPECT_FALSE(at::equal(logits_of(mdir), base_logits()));

  // Weight level: an f32 load of a BF16 / F16 tensor equals its rounded values exactly, and a
  // bf16 load of an F32 tensor rounds to nearest even.
  io::ModelDir md(mdir), rd(rdir), orig(base_dir());
  for (const auto& t : models::qwen35_tensor_shapes(tiny())) {
    SCOPED_TRACE(t.name);
    Tensor w = models::load_weight(md, t.name, t.shape, at::kFloat);
    Tensor r = models::load_weight(rd, t.name, t.shape, at::kFloat);
    ASSERT_EQ(w.scalar_type(), at::kFloat);
    ASSERT_EQ(w.sizes().vec(), t.shape);
    EXPECT_TRUE(at::equal(w, r));
    Tensor wb = models::load_weight(md, t.name, t.shape, at::kBFloat16);
    ASSERT_EQ(wb.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(wb, r.to(at::kBFloat16)));
    io::DType stored = md.get(t.name).dtype;
    Tensor o = models::load_weight(orig, t.name, t.shape, at::kFloat);
    if (stored == io::DType::F32 || stored == io::DType::F64)
      EXPECT_TRUE(at::equal(w, o));
    else
      EXPECT_FALSE(at::equal(w, o));
  }
}

TEST(ModelDirDtypes, Bf16CheckpointLoadsExactlyInF32) {
  std::string b = write_tiny("md_bf16", 11, "bf16");
  io::ModelDir bd(b), fd(base_dir());
  for (const auto& t : models::qwen35_tensor_shapes(tiny())) {
    EXPECT_EQ(bd.get(t.name).dtype, io::DType::BF16);
    Tensor w = models::load_weight(bd, t.name, t.shape, at::kFloat);
    // Same seed: the bf16 checkpoint is the f32 one rounded to nearest even.
    Tensor o = models::load_weight(fd, t.name, t.shape, at::kFloat);
    EXPECT_TRUE(at::equal(w, o.to(at::kBFloat16).to(at::kFloat))) << t.name;
  }
}

// The weight arena: tensors carved out of 2 MB-aligned chunks, alive after the arena, and a
// load through it equal to a plain load.
TEST(WeightArena, TensorsOutliveTheArenaAndSpanChunks) {
  std::vector<Tensor> ts;
  int64_t reserved = 0, advised = 0;
  {
    models::WeightArena arena;
    // Two 192 MB tensors (virtual only until touched) need two chunks; the small one shares.
    for (int64_t n : {int64_t{1} << 10, int64_t{192} << 20, int64_t{192} << 20, int64_t{300}})
      ts.push_back(arena.empty({n}, at::kByte));
    Tensor big = arena.empty({3, int64_t{100} << 20}, at::kFloat);  // larger than a chunk
    ts.push_back(big);
    reserved = arena.reserved_bytes(), advised = arena.advised_bytes();
    EXPECT_EQ(big.sizes().vec(), (std::vector<int64_t>{3, int64_t{100} << 20}));
    EXPECT_EQ(big.scalar_type(), at::kFloat);
    EXPECT_TRUE(big.is_contiguous());
  }
  // Chunks start on 2 MB boundaries; tensors on 4 KB ones, disjoint.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ts[0].data_ptr()) % (2 << 20), 0u);
  for (const Tensor& t : ts) EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 4096, 0u);
  // Chunks: [1 KB, 192 MB], [192 MB, 300 B], [1200 MB] (its own size).
  EXPECT_EQ(reserved, 2 * models::WeightArena::kChunkBytes + (int64_t{1200} << 20));
  EXPECT_LE(advised, reserved);
  if (!util::huge_pages_wanted()) EXPECT_EQ(advised, 0);
  // Written and read after the arena is gone (the tensors keep their chunks mapped).
  ts[0].fill_(7);
  ts[1].narrow(0, 0, 4096).fill_(1);
  ts[3].fill_(9);
  EXPECT_EQ(ts[0].sum().item<int64_t>(), 7 * 1024);
  EXPECT_EQ(ts[1].narrow(0, 0, 4096).sum().item<int64_t>(), 4096);
  EXPECT_EQ(ts[3].sum().item<int64_t>(), 9 * 300);
  for (size_t i = 0; i + 1 < ts.size(); ++i) {
    const auto* a = static_cast<const char*>(ts[i].data_ptr());
    const auto* b = static_cast<const char*>(ts[i + 1].data_ptr());
    EXPECT_TRUE(b >= a + ts[i].nbytes() || a >= b + ts[i + 1].nbytes()) << i;
  }
}

TEST(HugePages, TunablesAndSwitch) {
  EXPECT_EQ(util::tunables_with_huge_page_heap(nullptr), "glibc.malloc.hugetlb=1");
  EXPECT_EQ(util::tunables_with_huge_page_heap(""), "glibc.malloc.hugetlb=1");
  EXPECT_EQ(util::tunables_with_huge_page_heap("glibc.malloc.arena_max=2"),
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1");
  // Already there (the re-executed run), or the user's own setting: no re-exec.
  EXPECT_EQ(util::tunables_with_huge_page_heap("glibc.malloc.hugetlb=1"), "");
  EXPECT_EQ(util::tunables_with_huge_page_heap("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0"), "");
  const char* prev = std::getenv("S0_HUGE_PAGES");
  const std::string saved = prev ? prev : "";
  ::setenv("S0_HUGE_PAGES", "0", 1);
  EXPECT_FALSE(util::huge_pages_wanted());
  {
    models::WeightArena arena;  // no advice asked for
    arena.empty({16}, at::kFloat);
    EXPECT_EQ(arena.advised_bytes(), 0);
    EXPECT_GT(arena.reserved_bytes(), 0);
  }
  ::setenv("S0_HUGE_PAGES", "1", 1);
  EXPECT_TRUE(util::huge_pages_wanted());
  if (prev) ::setenv("S0_HUGE_PAGES", saved.c_str(), 1);
  else ::unsetenv("S0_HUGE_PAGES");
}

TEST(WeightArena, LoadThroughTheArenaEqualsAPlainLoad) {
  std::string b = write_tiny("md_arena", 12, "bf16");
  io::ModelDir bd(b);
  models::WeightArena arena;
  for (const auto& t : models::qwen35_tensor_shapes(tiny()))
    for (auto dt : {at::kBFloat16, at::kFloat}) {
      Tensor plain = models::load_weight(bd, t.name, t.shape, dt);
      Tensor in_arena = models::load_weight(bd, t.name, t.shape, dt, &arena);
      EXPECT_TRUE(at::equal(plain, in_arena)) << t.name;
      EXPECT_EQ(in_arena.scalar_type(), dt);
    }
  EXPECT_GT(arena.reserved_bytes(), 0);
}

// ---------------------------------------------------------------------------- config

void expect_same_config(const models::Qwen35Config& a, const models::Qwen35Config& b) {
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.layer_types, b.layer_types);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.linear_num_key_heads, b.linear_num_key_heads);
  EXPECT_EQ(a.linear_num_value_heads, b.linear_num_value_heads);
  EXPECT_EQ(a.linear_key_head_dim, b.linear_key_head_dim);
  EXPECT_EQ(a.linear_value_head_dim, b.linear_value_head_dim);
  EXPECT_EQ(a.linear_conv_kernel_dim, b.linear_conv_kernel_dim);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.partial_rotary_factor, b.partial_rotary_factor);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
}

TEST(Qwen35ConfigTest, RoundTripAllPresets) {
  for (std::string p : {"tiny", "0.8b", "2b", "4b", "9b"}) {
    SCOPED_TRACE(p);
    auto c = models::Qwen35Config::preset(p);
    expect_same_config(models::Qwen35Config::from_json(c.to_json(), p), c);
    // Through text, and as a flat config.
    expect_same_config(models::Qwen35Config::from_json(json::parse(c.to_json().dump()), p), c);
    expect_same_config(models::Qwen35Config::from_json(c.to_json()["text_config"], p), c);
  }
  // Every field survives, including non-default values.
  auto c = tiny();
  c.rms_norm_eps = 1.2345e-5;
  c.rope_theta = 123456.75;
  c.partial_rotary_factor = 0.5;
  c.linear_conv_kernel_dim = 3;
  c.max_position_embeddings = 777;
  c.tie_word_embeddings = false;
  c.layer_types = {"full_attention", "linear_attention", "full_attention", "linear_attention"};
  c.eos_token_ids = {5};
  c.num_key_value_heads = 1;
  expect_same_config(models::Qwen35Config::from_json(json::parse(c.to_json().dump()), "c"), c);
  c.eos_token_ids = {};
  expect_same_config(models::Qwen35Config::from_json(c.to_json(), "c"), c);
  // And the checkpoint written from a config gives that config back.
  expect_same_config(models::Qwen35Config::from_json(read_json(base_dir() + "/config.json"), "f"), tiny());
}

TEST(Qwen35ConfigTest, PresetsMatchTheSpec) {
  auto p08 = models::Qwen35Config::preset("0.8b");
  auto p9 = models::Qwen35Config::preset("9b");
  EXPECT_TRUE(p08.tie_word_embeddings);
  EXPECT_FALSE(p9.tie_word_embeddings);
  EXPECT_NEAR(p08.num_parameters() / 0.752e9, 1.0, 0.01) << p08.num_parameters();
  EXPECT_NEAR(p9.num_parameters() / 8.954e9, 1.0, 0.01) << p9.num_parameters();
  auto p9t = p9;
  p9t.tie_word_embeddings = true;
  EXPECT_EQ(p9.num_parameters() - p9t.num_parameters(), p9.vocab_size * p9.hidden_size);
  int64_t prev = 0;
  for (std::string p : {"0.8b", "2b", "4b", "9b"}) {
    auto c = models::Qwen35Config::preset(p);
    EXPECT_GT(c.num_parameters(), prev) << p;
    prev = c.num_parameters();
    EXPECT_EQ(c.vocab_size, 248320);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{248046, 248044}));
    EXPECT_EQ(c.rotary_dim(), 64);
    EXPECT_EQ(c.linear_layers().size() * 4, 3 * c.layer_types.size());
  }
  // The written tiny checkpoint holds exactly num_parameters() values.
  int64_t n = 0;
  for (const auto& t : read_tensors(base_dir() + "/model.safetensors")) n += t.bytes.size() / 4;
  EXPECT_EQ(n, tiny().num_parameters());
  EXPECT_THROW(models::Qwen35Config::preset("7b"), s0::Error);
}

TEST(Qwen35ConfigTest, LayerTypesFromFullAttentionInterval) {
  json c = tiny().to_json();
  c["text_config"].erase("layer_types");
  c["text_config"]["num_hidden_layers"] = 8;
  c["text_config"]["full_attention_interval"] = 2;
  auto cfg = models::Qwen35Config::from_json(c, "c");
  std::vector<std::string> want;
  for (int i = 0; i < 8; ++i) want.push_back(i % 2 ? "full_attention" : "linear_attention");
  EXPECT_EQ(cfg.layer_types, want);
  EXPECT_EQ(cfg.linear_layers(), (std::vector<int64_t>{0, 2, 4, 6}));
  // Default interval 4.
  c["text_config"].erase("full_attention_interval");
  cfg = models::Qwen35Config::from_json(c, "c");
  EXPECT_EQ(cfg.linear_layers(), (std::vector<int64_t>{0, 1, 2, 4, 5, 6}));
  c["text_config"]["full_attention_interval"] = 0;
  EXPECT_HAS(error_of([&] { models::Qwen35Config::from_json(c, "c"); }), "full_attention_interval");
  // Explicit layer_types win over the interval.
  c["text_config"]["full_attention_interval"] = 2;
  c["text_config"]["num_hidden_layers"] = 4;
  c["text_config"]["layer_types"] = {"full_attention", "full_attention", "linear_attention", "full_attention"};
  EXPECT_EQ(models::Qwen35Config::from_json(c, "c").linear_layers(), (std::vector<int64_t>{2}));

  // A checkpoint whose config has no layer_types loads like the one that has them.
  std::string dir = with_config(base_dir(), "md_interval", [](json& c) { c["text_config"].erase("layer_types"); });
  EXPECT_TRUE(at::equal(logits_of(dir), base_logits()));
}

TEST(Qwen35ConfigTest, RopeParametersAndLegacyKeys) {
  json base = tiny().to_json();
  // rope_parameters (HF v5) with mrope extras.
  json v5 = base;
  v5["text_config"].erase("partial_rotary_factor");
  v5["text_config"]["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5},
                                          {"partial_rotary_factor", 0.5},
                                          {"mrope_section", {2, 1, 1}}, {"mrope_interleaved", true}};
  // Legacy top-level keys.
  json legacy = base;
  legacy["text_config"].erase("rope_parameters");
  legacy["text_config"]["rope_theta"] = 5e5;
  legacy["text_config"]["partial_rotary_factor"] = 0.5;
  auto a = models::Qwen35Config::from_json(v5, "v5");
  auto b = models::Qwen35Config::from_json(legacy, "legacy");
  EXPECT_EQ(a.rope_theta, 5e5);
  EXPECT_EQ(a.partial_rotary_factor, 0.5);
  EXPECT_EQ(a.rotary_dim(), 16);
  expect_same_config(a, b);
  // rope_parameters wins over legacy keys; keys absent from it fall back to legacy ones.
  json both = v5;
  both["text_config"]["rope_theta"] = 1e4;
  both["text_config"]["rope_parameters"].erase("partial_rotary_factor");
  both["text_config"]["partial_rotary_factor"] = 0.75;
  auto c = models::Qwen35Config::from_json(both, "both");
  EXPECT_EQ(c.rope_theta, 5e5);
  EXPECT_EQ(c.partial_rotary_factor, 0.75);
  // Neither: defaults 1e7 and 0.25.
  json none = base;
  none["text_config"].erase("rope_parameters");
  none["text_config"].erase("partial_rotary_factor");
  auto d = models::Qwen35Config::from_json(none, "none");
  EXPECT_EQ(d.rope_theta, 1e7);
  EXPECT_EQ(d.partial_rotary_factor, 0.25);

  // At load: both spellings give the same model, and theta matters.
  auto set_v5 = [](json& c) {
    c["text_config"]["rope_parameters"]["rope_theta"] = 1000.0;
  };
  auto set_legacy = [](json& c) {
    c["text_config"].erase("rope_parameters");
    c["text_config"]["rope_theta"] = 1000.0;
  };
  Tensor l5 = logits_of(with_config(base_dir(), "md_rope_v5", set_v5));
  Tensor ll = logits_of(with_config(base_dir(), "md_rope_legacy", set_legacy));
  EXPECT_TRUE(at::equal(l5, ll));
  EXPECT_FALSE(at::equal(l5, base_logits()));
}

TEST(Qwen35ConfigTest, EosTokenIds) {
  json c = tiny().to_json();
  c["text_config"]["eos_token_id"] = 7;
  EXPECT_EQ(models::Qwen35Config::from_json(c, "c").eos_token_ids, (std::vector<int64_t>{7}));
  c["text_config"]["eos_token_id"] = {7, 9};
  EXPECT_EQ(models::Qwen35Config::from_json(c, "c").eos_token_ids, (std::vector<int64_t>{7, 9}));
  // Falls back to the top level.
  c["text_config"].erase("eos_token_id");
  c["eos_token_id"] = 11;
  EXPECT_EQ(models::Qwen35Config::from_json(c, "c").eos_token_ids, (std::vector<int64_t>{11}));
  c.erase("eos_token_id");
  EXPECT_TRUE(models::Qwen35Config::from_json(c, "c").eos_token_ids.empty());
  // The loaded model reports them.
  EXPECT_EQ(models::load_model(base_dir(), at::kFloat)->eos_token_ids(), (std::vector<int64_t>{258, 256}));
}

// ---------------------------------------------------------------------------- tokenizer

// The byte each vocab entry stands for, by decoding its (single) code point.
uint32_t single_code_point(const std::string& s) {
  const auto* u = reinterpret_cast<const unsigned char*>(s.data());
  if (s.size() == 1 && u[0] < 0x80) return u[0];
  if (s.size() == 2 && (u[0] & 0xE0) == 0xC0 && (u[1] & 0xC0) == 0x80)
    return ((u[0] & 0x1F) << 6) | (u[1] & 0x3F);
  ADD_FAILURE() << "not a single 1- or 2-byte code point: " << s;
  return 0xFFFFFFFF;
}

void check_tokenizer(const json& tok, int64_t first_special) {
  ASSERT_TRUE(tok.is_object());
  const json& model = tok["model"];
  EXPECT_EQ(model["type"], "BPE");
  EXPECT_TRUE(model["merges"].is_array());
  ASSERT_TRUE(model["vocab"].is_object());
  EXPECT_EQ(model["vocab"].size(), 256u);
  std::set<int64_t> ids;
  std::set<uint32_t> cps;
  for (const auto& [s, id] : model["vocab"].items()) {
    ASSERT_TRUE(id.is_number_integer());
    int64_t b = id.get<int64_t>();
    ids.insert(b);
    uint32_t cp = single_code_point(s);
    cps.insert(cp);
    // GPT-2 byte<->unicode: printable bytes are themselves, others go to U+0100 + n.
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    if (printable)
      EXPECT_EQ(cp, static_cast<uint32_t>(b)) << "byte " << b;
    else
      EXPECT_GE(cp, 256u) << "byte " << b;
  }
  EXPECT_EQ(ids.size(), 256u);
  EXPECT_EQ(*ids.begin(), 0);
  EXPECT_EQ(*ids.rbegin(), 255);
  EXPECT_EQ(cps.size(), 256u);
  // Well-known entries: space is "Ġ" (U+0120), newline "Ċ" (U+010A), NUL "Ā" (U+0100).
  EXPECT_EQ(model["vocab"].value("\xC4\xA0", -1), 32);
  EXPECT_EQ(model["vocab"].value("\xC4\x8A", -1), 10);
  EXPECT_EQ(model["vocab"].value("\xC4\x80", -1), 0);
  EXPECT_EQ(model["vocab"].value("A", -1), 65);

  const json& added = tok["added_tokens"];
  ASSERT_TRUE(added.is_array());
  ASSERT_EQ(added.size(), 3u);
  const char* names[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(added[i]["id"], first_special + i);
    EXPECT_EQ(added[i]["content"], names[i]);
    EXPECT_EQ(added[i]["special"], true);
  }
  EXPECT_EQ(tok["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(tok["decoder"]["type"], "ByteLevel");
}

TEST(InitModelTokenizer, ByteLevelTokenizerJson) {
  for (int64_t first : {256, 248044}) {
    SCOPED_TRACE(first);
    std::string text = s0::text::byte_level_tokenizer_json(first);
    json tok;
    ASSERT_NO_THROW(tok = json::parse(text));  // also rejects invalid UTF-8 in strings
    check_tokenizer(tok, first);
  }
}

TEST(InitModelTokenizer, WrittenDirectory) {
  const std::string& dir = base_dir();
  check_tokenizer(read_json(dir + "/tokenizer.json"), 256);
  json tc = read_json(dir + "/tokenizer_config.json");
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");
  EXPECT_EQ(tc["pad_token"], "<|endoftext|>");
  // The preset's eos ids are <|im_end|> and <|endoftext|> of that tokenizer.
  json gen = read_json(dir + "/generation_config.json");
  EXPECT_EQ(gen["eos_token_id"].get<std::vector<int64_t>>(), (std::vector<int64_t>{258, 256}));
  json cfg = read_json(dir + "/config.json");
  EXPECT_EQ(cfg["text_config"]["dtype"], "float32");
  EXPECT_EQ(read_json(write_tiny("md_bf16_cfg", 1, "bf16") + "/config.json")["dtype"], "bfloat16");
}

TEST(InitModelTokenizer, RejectsBadOptionsBeforeWritingAnything) {
  auto c = tiny();
  c.vocab_size = 258;  // < 256 bytes + 3 specials
  std::string dir = temp_dir("md_small_vocab");
  models::InitOptions opt;
  opt.dtype = "f32";
  EXPECT_HAS(error_of([&] { models::write_random_qwen35(dir, c, opt); }), "vocab_size");
  EXPECT_TRUE(fs::is_empty(dir)) << "a failed init-model left files behind";
  opt.dtype = "f16";
  EXPECT_HAS(error_of([&] { models::write_random_qwen35(dir, tiny(), opt); }), "f16");
  EXPECT_TRUE(fs::is_empty(dir));
}

}  // namespace
