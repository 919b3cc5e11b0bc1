// S0 state sets: save/load round trip, the reference-library layout (fixture), scaling
// (alpha, normalize, defaults), the mismatches a user can cause (each an s0::Error saying
// what differs), and atomic writes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/wait.h>

#include <cstdio>
#include <limits>
#include <tuple>

#include <nlohmann/json.hpp>
#include <torch/csrc/jit/serialization/pickle.h>

#include "s0/adapters/state_set.h"
#include "s0/io/atomic_file.h"
#include "s0/io/safetensors.h"
#include "s0/models/model.h"
#include "s0/models/weights.h"
#include "s0/util/error.h"
#include "test_util.h"

using namespace s0;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The tiny Qwen3.5 preset (layers [linear, linear, linear, full], states [4, 16, 16]),
// written and loaded once per process.
const models::CausalLM& tiny_model() {
  static std::unique_ptr<models::CausalLM> m = models::load_model(s0::testing::tiny_qwen35(), at::kFloat);
  return *m;
}

// Random float32 states for `layers` of shape `shape` (deterministic per seed).
models::StateMap random_states(const std::vector<int64_t>& layers, const std::vector<int64_t>& shape,
                               uint64_t seed = 3) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  models::StateMap m;
  for (auto l : layers) m[l] = at::randn(shape, gen);
  return m;
}

adapters::StateSet tiny_set(uint64_t seed = 3) {
  const auto& model = tiny_model();
  adapters::StateSet set;
  set.arch = model.recurrent_arch();
  set.state_shape = model.state_shape();
  set.states = random_states(model.recurrent_layers(), set.state_shape, seed);
  set.config = {{"n_steps", 20}, {"lr", 1e-3}, {"alpha", 0.5}, {"normalize", false}, {"note", "round trip"}};
  return set;
}

// Writes a state-set directory by hand (to build the malformed ones the loader must reject).
// `meta` / `config` are written verbatim when given; tensors are float32.
void write_raw(const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
               const std::optional<std::string>& meta, const std::optional<std::string>& config = {}) {
  fs::create_directories(dir);
  std::vector<Tensor> keep;
  std::vector<std::pair<io::TensorSpec, const void*>> specs;
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.to(at::kFloat).contiguous());
    specs.push_back({io::TensorSpec{name, io::DType::F32, keep.back().sizes().vec()}, keep.back().data_ptr()});
  }
  io::save_safetensors(dir + "/states.safetensors", specs);
  if (meta) io::write_file_atomic(dir + "/meta.json", *meta);
  if (config) io::write_file_atomic(dir + "/config.json", *config);
}

std::string meta_json(const std::string& arch, const std::vector<int64_t>& layers,
                      const std::vector<int64_t>& shape) {
  return json{{"arch", arch}, {"recurrent_layers", layers}, {"state_shape", shape}}.dump();
}

// Runs `f`, expecting an s0::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& f, std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected s0::Error, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "expected s0::Error, nothing thrown";
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  auto ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

double fro(const Tensor& t) { return t.to(at::kDouble).norm().item<double>(); }

// ---------------------------------------------------------------------------- round trip

TEST(StateSet, SaveLoadRoundTripIsBitIdentical) {
  const auto& model = tiny_model();
  const std::string dir = s0::testing::temp_dir("ss_roundtrip");
  auto set = tiny_set();
  adapters::save_state_set(dir, set);

  for (const char* f : {"states.safetensors", "meta.json", "config.json"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  // meta.json in the reference layout.
  json meta = json::parse(io::read_file(dir + "/meta.json"));
  EXPECT_EQ(meta.at("arch"), "gated_delta_net");
  EXPECT_EQ(meta.at("recurrent_layers").get<std::vector<int64_t>>(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(meta.at("state_shape").get<std::vector<int64_t>>(), (std::vector<int64_t>{4, 16, 16}));
  // Tensors keyed by decimal layer index, float32, unscaled.
  io::SafetensorsFile f(dir + "/states.safetensors");
  EXPECT_EQ(f.names(), (std::vector<std::string>{"0", "1", "2"}));
  for (const auto& name : f.names()) EXPECT_EQ(f.get(name).dtype, io::DType::F32);

  auto loaded = adapters::load_state_set(dir, model);
  EXPECT_EQ(loaded.arch, set.arch);
  EXPECT_EQ(loaded.state_shape, set.state_shape);
  EXPECT_EQ(loaded.config, set.config);  // every key preserved, values included
  EXPECT_EQ(loaded.config.at("note"), "round trip");
  EXPECT_DOUBLE_EQ(loaded.alpha(), 0.5);
  EXPECT_FALSE(loaded.normalize());
  ASSERT_EQ(loaded.states.size(), set.states.size());
  for (const auto& [l, s] : set.states) {
    ASSERT_TRUE(loaded.states.count(l)) << l;
    EXPECT_TRUE(bit_equal(loaded.states.at(l), s)) << "layer " << l;
  }
  EXPECT_EQ(loaded.num_bytes(), 3 * 4 * 16 * 16 * 4);

  // The model-free overload reads the same thing; the states are owned (not views of the
  // mapping, which is closed by now).
  auto again = adapters::load_state_set(dir);
  for (const auto& [l, s] : set.states) EXPECT_TRUE(bit_equal(again.states.at(l), s));

  // The loaded states go into a cache.
  NoGrad ng;
  auto scaled = loaded.scaled();
  auto cache = model.new_cache(2, &scaled);
  EXPECT_TRUE(cache.layers[0].state.defined());
  EXPECT_FALSE(cache.layers[3].state.defined());
}

TEST(StateSet, SaveOverwritesAndLeavesNoTempFiles) {
  const std::string dir = s0::testing::temp_dir("ss_atomic");
  auto a = tiny_set(3);
  adapters::save_state_set(dir, a);
  // Save again into the same directory: fewer layers, different config.
  auto b = tiny_set(4);
  b.states.erase(2);
  b.config = {{"alpha", 0.25}};
  adapters::save_state_set(dir, b);

  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"config.json", "meta.json", "states.safetensors"}));

  auto loaded = adapters::load_state_set(dir, tiny_model());
  EXPECT_EQ(loaded.states.size(), 2u);
  EXPECT_EQ(loaded.config, b.config);
  EXPECT_TRUE(bit_equal(loaded.states.at(0), b.states.at(0)));
  json meta = json::parse(io::read_file(dir + "/meta.json"));
  EXPECT_EQ(meta.at("recurrent_layers").get<std::vector<int64_t>>(), (std::vector<int64_t>{0, 1}));

  // save_state_set creates missing parent directories.
  adapters::save_state_set(dir + "/nested/deeper", b);
  EXPECT_TRUE(fs::exists(dir + "/nested/deeper/meta.json"));
}

TEST(StateSet, SaveRejectsInconsistentSets) {
  const std::string dir = s0::testing::temp_dir("ss_save_bad");
  auto set = tiny_set();
  set.states[1] = at::zeros({2, 16, 16});
  expect_error([&] { adapters::save_state_set(dir, set); }, {"layer 1", "[2,16,16]", "[4,16,16]"});
  auto set2 = tiny_set();
  set2.config = json::array();
  expect_error([&] { adapters::save_state_set(dir, set2); }, {"config"});
  // Nothing was written by either.
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(StateSet, SaveConvertsToFloat32) {
  const std::string dir = s0::testing::temp_dir("ss_save_dtype");
  auto set = tiny_set();
  for (auto& [l, s] : set.states) s = s.to(at::kDouble).requires_grad_(true);  // e.g. training leaves
  adapters::save_state_set(dir, set);
  auto loaded = adapters::load_state_set(dir);
  for (const auto& [l, s] : set.states) {
    EXPECT_EQ(loaded.states.at(l).scalar_type(), at::kFloat);
    EXPECT_TRUE(bit_equal(loaded.states.at(l), s.detach().to(at::kFloat)));
  }
}

// ---------------------------------------------------------------------------- reference layout

TEST(StateSet, LoadsReferenceLayoutFixture) {
  const std::string mdir = s0::testing::fixtures_dir() + "/qwen35/q35-tiny-a";
  const std::string sdir = mdir + "/s0";
  if (!fs::exists(mdir + "/config.json") || !fs::exists(sdir + "/meta.json"))
    GTEST_SKIP() << "no fixture at " << sdir;
  auto model = models::load_model(mdir, at::kFloat);
  auto set = adapters::load_state_set(sdir, *model);
  EXPECT_EQ(set.arch, "gated_delta_net");
  EXPECT_EQ(set.state_shape, (std::vector<int64_t>{2, 16, 16}));
  EXPECT_DOUBLE_EQ(set.alpha(), 1.0);  // from its config.json, not the 0.07 default
  EXPECT_FALSE(set.normalize());
  EXPECT_EQ(set.config.at("n_steps"), 20);
  ASSERT_EQ(set.states.size(), 3u);
  io::SafetensorsFile raw(sdir + "/states.safetensors");
  auto scaled = set.scaled();
  for (int64_t l : {0, 1, 2}) {
    Tensor want = models::tensor_view(raw.get(std::to_string(l)));
    EXPECT_TRUE(bit_equal(set.states.at(l), want)) << l;
    EXPECT_TRUE(bit_equal(scaled.at(l), want)) << "alpha 1 leaves layer " << l << " unchanged";
  }
  // The fixture's states do not fit the tiny preset ([4,16,16]).
  expect_error([&] { adapters::load_state_set(sdir, tiny_model()); },
               {"state_shape", "[2,16,16]", "[4,16,16]"});
}

// ---------------------------------------------------------------------------- scaling

TEST(StateSet, ScaledMultipliesByAlpha) {
  auto set = tiny_set();
  set.config = {{"alpha", 0.3}};
  auto out = set.scaled();
  ASSERT_EQ(out.size(), set.states.size());
  for (const auto& [l, s] : set.states) {
    EXPECT_TRUE(at::allclose(out.at(l), s * 0.3, 1e-6, 0)) << l;
    EXPECT_EQ(out.at(l).scalar_type(), at::kFloat);
  }
  // Override wins over the config.
  auto o = set.scaled(2.0);
  for (const auto& [l, s] : set.states) EXPECT_TRUE(at::allclose(o.at(l), s * 2.0, 1e-6, 0)) << l;
  // alpha 0 gives zero states; the originals are untouched.
  auto z = set.scaled(0.0);
  for (const auto& [l, s] : set.states) {
    EXPECT_EQ(z.at(l).abs().max().item<float>(), 0.f);
    EXPECT_GT(s.abs().max().item<float>(), 0.f);
  }
}

TEST(StateSet, ScaledNormalizePerLayer) {
  auto set = tiny_set();
  set.states[1] = set.states[1] * 37.0;  // layers of very different norms
  set.states[2] = at::zeros(set.state_shape);
  set.config = {{"alpha", 0.4}, {"normalize", true}};
  ASSERT_TRUE(set.normalize());
  auto out = set.scaled();
  for (int64_t l : {0, 1}) {
    EXPECT_NEAR(fro(out.at(l)), 0.4, 1e-5) << "layer " << l;
    // Same direction: alpha * S / ||S||_F.
    EXPECT_TRUE(at::allclose(out.at(l), set.states.at(l) * (0.4 / fro(set.states.at(l))), 1e-5, 1e-7)) << l;
  }
  // A zero state stays zero (no 0/0 NaN).
  EXPECT_FALSE(at::isnan(out.at(2)).any().item<bool>());
  EXPECT_EQ(out.at(2).abs().max().item<float>(), 0.f);
  // With an override, the norm is the override.
  auto o = set.scaled(1.5);
  EXPECT_NEAR(fro(o.at(0)), 1.5, 1e-5);
  EXPECT_NEAR(fro(o.at(1)), 1.5, 1e-5);
}

TEST(StateSet, AlphaDefaultsAndValidation) {
  auto set = tiny_set();
  set.config = json::object();  // absent
  EXPECT_DOUBLE_EQ(set.alpha(), 0.07);
  EXPECT_FALSE(set.normalize());
  set.config = {{"alpha", nullptr}};  // null, as the reference writes when unset
  EXPECT_DOUBLE_EQ(set.alpha(), 0.07);
  auto out = set.scaled();
  for (const auto& [l, s] : set.states) EXPECT_TRUE(at::allclose(out.at(l), s * 0.07, 1e-6, 0)) << l;
  EXPECT_DOUBLE_EQ(adapters::default_alpha("gated_delta_net"), 0.07);
  EXPECT_DOUBLE_EQ(adapters::default_alpha("mamba2"), 0.65);
  expect_error([] { adapters::default_alpha("lstm"); }, {"lstm"});
  // A non-number alpha is an error -- unless an override makes it irrelevant.
  set.config = {{"alpha", "big"}};
  expect_error([&] { set.alpha(); }, {"alpha"});
  expect_error([&] { set.scaled(); }, {"alpha"});
  auto o = set.scaled(1.0);
  EXPECT_TRUE(bit_equal(o.at(0), set.states.at(0) * 1.0));
  // An integer alpha is a number too.
  set.config = {{"alpha", 2}};
  EXPECT_DOUBLE_EQ(set.alpha(), 2.0);
}

TEST(StateSet, AlphaNullInConfigFileGivesDefault) {
  const std::string dir = s0::testing::temp_dir("ss_alpha_null");
  auto set = tiny_set();
  write_raw(dir, {{"0", set.states.at(0)}}, meta_json("gated_delta_net", {0}, {4, 16, 16}),
            R"({"alpha": null, "normalize": false})");
  EXPECT_DOUBLE_EQ(adapters::load_state_set(dir, tiny_model()).alpha(), 0.07);
  // And without a config.json at all.
  fs::remove(dir + "/config.json");
  auto loaded = adapters::load_state_set(dir, tiny_model());
  EXPECT_TRUE(loaded.config.is_object());
  EXPECT_DOUBLE_EQ(loaded.alpha(), 0.07);
}

// ---------------------------------------------------------------------------- mismatches

class StateSetErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = s0::testing::temp_dir(std::string("ss_err_") +
                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    s = at::randn({4, 16, 16});
  }
  void load() { adapters::load_state_set(dir, tiny_model()); }
  std::string dir;
  Tensor s;
};

TEST_F(StateSetErrors, WrongArch) {
  write_raw(dir, {{"0", s}}, meta_json("mamba2", {0}, {4, 16, 16}));
  EXPECT_NO_THROW(adapters::load_state_set(dir));  // consistent on its own
  expect_error([&] { load(); }, {"mamba2", "gated_delta_net"});
}

TEST_F(StateSetErrors, WrongStateShape) {
  Tensor t = at::randn({4, 16, 8});
  write_raw(dir, {{"0", t}, {"1", t}}, meta_json("gated_delta_net", {0, 1}, {4, 16, 8}));
  expect_error([&] { load(); }, {"state_shape", "[4,16,8]", "[4,16,16]"});
}

TEST_F(StateSetErrors, TensorShapeDisagreesWithMeta) {
  write_raw(dir, {{"0", s}, {"1", at::randn({4, 16, 8})}}, meta_json("gated_delta_net", {0, 1}, {4, 16, 16}));
  expect_error([&] { adapters::load_state_set(dir); }, {"'1'", "[4,16,8]", "[4,16,16]"});
}

TEST_F(StateSetErrors, AttentionLayer) {
  write_raw(dir, {{"0", s}, {"3", s}}, meta_json("gated_delta_net", {0, 3}, {4, 16, 16}));
  expect_error([&] { load(); }, {"layer 3", "attention", "[0,1,2]"});
}

TEST_F(StateSetErrors, LayerOutOfRange) {
  write_raw(dir, {{"7", s}}, meta_json("gated_delta_net", {7}, {4, 16, 16}));
  expect_error([&] { load(); }, {"layer 7", "4 layers"});
}

TEST_F(StateSetErrors, MetaLayersDisagreeWithTensors) {
  write_raw(dir, {{"0", s}, {"1", s}}, meta_json("gated_delta_net", {0, 1, 2}, {4, 16, 16}));
  expect_error([&] { adapters::load_state_set(dir); }, {"recurrent_layers", "[0,1,2]", "[0,1]"});
  // An empty list does not switch the check off.
  write_raw(dir, {{"0", s}}, meta_json("gated_delta_net", {}, {4, 16, 16}));
  expect_error([&] { adapters::load_state_set(dir); }, {"recurrent_layers", "[]", "[0]"});
  // Not a list of ints.
  write_raw(dir, {{"0", s}}, R"({"arch": "gated_delta_net", "recurrent_layers": "0", "state_shape": [4,16,16]})");
  expect_error([&] { adapters::load_state_set(dir); }, {"recurrent_layers"});
  // Absent: the tensors alone say which layers (older files).
  write_raw(dir, {{"0", s}}, R"({"arch": "gated_delta_net", "state_shape": [4,16,16]})");
  EXPECT_EQ(adapters::load_state_set(dir, tiny_model()).states.size(), 1u);
}

TEST_F(StateSetErrors, NonIntegerKeys) {
  for (const std::string key : {"layer0", "x", "1.0", "-1", "+1", " 1", "01", ""}) {
    const std::string d = dir + "/k" + std::to_string(std::hash<std::string>{}(key));
    write_raw(d, {{key, s}}, meta_json("gated_delta_net", {1}, {4, 16, 16}));
    expect_error([&] { adapters::load_state_set(d); }, {"'" + key + "'", "not a layer index"});
  }
}

TEST_F(StateSetErrors, MissingFiles) {
  expect_error([&] { adapters::load_state_set(dir + "/nope", tiny_model()); }, {"nope", "does not exist"});
  write_raw(dir, {{"0", s}}, std::nullopt);
  expect_error([&] { load(); }, {"meta.json"});
  const std::string d2 = dir + "/no_states";
  fs::create_directories(d2);
  io::write_file_atomic(d2 + "/meta.json", meta_json("gated_delta_net", {0}, {4, 16, 16}));
  expect_error([&] { adapters::load_state_set(d2, tiny_model()); }, {"states.safetensors"});
}

TEST_F(StateSetErrors, InvalidJson) {
  write_raw(dir, {{"0", s}}, std::string(R"({"arch": "gated_delta_net", )"));
  expect_error([&] { load(); }, {"meta.json", "invalid JSON"});
  write_raw(dir, {{"0", s}}, meta_json("gated_delta_net", {0}, {4, 16, 16}), std::string("{alpha: 1}"));
  expect_error([&] { load(); }, {"config.json", "invalid JSON"});
  write_raw(dir, {{"0", s}}, meta_json("gated_delta_net", {0}, {4, 16, 16}), std::string("[1, 2]"));
  expect_error([&] { load(); }, {"config.json", "object"});
  // Valid JSON but missing / mistyped fields.
  write_raw(dir, {{"0", s}}, std::string(R"({"state_shape": [4,16,16]})"), std::string("{}"));
  expect_error([&] { load(); }, {"meta.json", "arch"});
  write_raw(dir, {{"0", s}}, std::string(R"({"arch": "gated_delta_net", "state_shape": "4x16x16"})"));
  expect_error([&] { load(); }, {"meta.json", "state_shape"});
  write_raw(dir, {{"0", s}}, std::string("[]"));
  expect_error([&] { load(); }, {"meta.json"});
}

TEST_F(StateSetErrors, CorruptSafetensors) {
  write_raw(dir, {{"0", s}}, meta_json("gated_delta_net", {0}, {4, 16, 16}));
  io::write_file_atomic(dir + "/states.safetensors", "not a safetensors file");
  expect_error([&] { load(); }, {"states.safetensors"});
}

}  // namespace

TEST(StateSetDtype, NonFloat32StatesAreRefused) {
  const std::string dir = s0::testing::temp_dir("ss_bf16");
  std::vector<uint16_t> half(2 * 16 * 16, 0);
  s0::io::save_safetensors(dir + "/states.safetensors",
                           {{s0::io::TensorSpec{"0", s0::io::DType::BF16, {2, 16, 16}}, half.data()}});
  s0::io::write_file_atomic(dir + "/meta.json",
                            R"({"arch": "gated_delta_net", "recurrent_layers": [0], "state_shape": [2, 16, 16]})");
  try {
    s0::adapters::load_state_set(dir);
    FAIL() << "bf16 states accepted";
  } catch (const s0::Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected F32"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------- the reference library
// tools/reference_state_set.py stands in for the s0-tuning library: `write` produces what its
// S0Trainer.save() writes (states.safetensors, or a torch.save() zip with --format pt),
// `load` applies its S0Trainer.load() checks and prints what it read. Python only, no torch.

namespace {

using s0::testing::have_python3;
using s0::testing::repo_root;
using s0::testing::run_cmd;

std::pair<int, std::string> reference(const std::string& args) {
  return run_cmd("python3 " + repo_root() + "/tools/reference_state_set.py " + args);
}

// The values the script writes, computed here independently: ((7919 l + 104729 i) mod 2001 - 1000) / 256.
Tensor expected_values(int64_t layer, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(((layer * 7919 + i * 104729) % 2001 - 1000) / 256.0);
  return at::from_blob(v.data(), shape, at::kFloat).clone();
}

#define REQUIRE_PYTHON3() \
  if (!have_python3()) GTEST_SKIP() << "python3 not available"

void check_reference_values(const adapters::StateSet& set, const std::vector<int64_t>& layers) {
  ASSERT_EQ(set.states.size(), layers.size());
  for (auto l : layers) {
    ASSERT_TRUE(set.states.count(l)) << l;
    EXPECT_TRUE(bit_equal(set.states.at(l), expected_values(l, {4, 16, 16}))) << "layer " << l;
  }
}

TEST(ReferenceStateSet, LoadsWhatTheReferenceSaves) {
  REQUIRE_PYTHON3();
  const std::string dir = s0::testing::temp_dir("ref_save_st");
  auto [rc, out] = reference("write " + dir + " --layers 0,1,2 --shape 4,16,16");
  ASSERT_EQ(rc, 0) << out;
  auto set = adapters::load_state_set(dir, tiny_model());
  check_reference_values(set, {0, 1, 2});
  EXPECT_EQ(set.recurrent_layers, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_DOUBLE_EQ(set.alpha(), 0.07);  // null: the architecture default
  EXPECT_EQ(set.config.size(), 7u);
  EXPECT_EQ(set.config.at("n_steps"), 20);
  EXPECT_EQ(set.config.at("max_length"), 2048);
  // With an explicit alpha.
  const std::string dir2 = s0::testing::temp_dir("ref_save_alpha");
  ASSERT_EQ(reference("write " + dir2 + " --layers 0,1,2 --shape 4,16,16 --alpha 0.25").first, 0);
  EXPECT_DOUBLE_EQ(adapters::load_state_set(dir2, tiny_model()).alpha(), 0.25);
}

TEST(ReferenceStateSet, LoadsATorchSavePickle) {
  REQUIRE_PYTHON3();
  // states.pt as torch.save() lays it out (zip: data.pkl, data/<key>, version, byteorder),
  // produced by Python's own pickler under torch's global names.
  const std::string dir = s0::testing::temp_dir("ref_save_pt");
  auto [rc, out] = reference("write " + dir + " --layers 0,1,2 --shape 4,16,16 --format pt");
  ASSERT_EQ(rc, 0) << out;
  ASSERT_FALSE(fs::exists(dir + "/states.safetensors"));
  auto set = adapters::load_state_set(dir, tiny_model());
  check_reference_values(set, {0, 1, 2});
  // states.safetensors wins when both are present (as in the reference).
  const std::string dir2 = s0::testing::temp_dir("ref_save_both");
  ASSERT_EQ(reference("write " + dir2 + " --layers 0,1,2 --shape 4,16,16 --format pt").first, 0);
  write_raw(dir2, {{"0", at::ones({4, 16, 16})}}, meta_json("gated_delta_net", {0}, {4, 16, 16}));
  EXPECT_EQ(adapters::load_state_set(dir2).recurrent_layers, std::vector<int64_t>{0}) << "safetensors first";
}

TEST(ReferenceStateSet, LoadsLibtorchPickleSaveWithIntOrStringKeys) {
  // libtorch's own torch.save-compatible writer (the Python one cannot run here: no torch).
  for (bool int_keys : {false, true}) {
    const std::string dir = s0::testing::temp_dir(std::string("ref_pickle_") + (int_keys ? "int" : "str"));
    c10::TypePtr key_type = c10::StringType::get();
    if (int_keys) key_type = c10::IntType::get();
    c10::impl::GenericDict d(key_type, c10::TensorType::get());
    for (int64_t l : {0, 2}) {
      if (int_keys) d.insert(l, expected_values(l, {4, 16, 16}));
      else d.insert(std::to_string(l), expected_values(l, {4, 16, 16}));
    }
    auto bytes = torch::jit::pickle_save(c10::IValue(d));
    io::write_file_atomic(dir + "/states.pt", std::string(bytes.begin(), bytes.end()));
    io::write_file_atomic(dir + "/meta.json", meta_json("gated_delta_net", {0, 2}, {4, 16, 16}));
    auto set = adapters::load_state_set(dir, tiny_model());
    check_reference_values(set, {0, 2});
  }
  // Garbage in states.pt: an s0::Error naming the file.
  const std::string bad = s0::testing::temp_dir("ref_pickle_bad");
  io::write_file_atomic(bad + "/states.pt", "PK\x03\x04 not really a zip");
  io::write_file_atomic(bad + "/meta.json", meta_json("gated_delta_net", {0}, {4, 16, 16}));
  expect_error([&] { adapters::load_state_set(bad); }, {"states.pt"});
}

// A set as `s0 train --layers 1` makes it: trained layer 1 only, s0's own settings.
adapters::StateSet trained_subset_set() {
  const auto& model = tiny_model();
  adapters::StateSet set;
  set.arch = model.recurrent_arch();
  set.state_shape = model.state_shape();
  set.recurrent_layers = model.recurrent_layers();
  set.states[1] = expected_values(1, set.state_shape);
  set.config = {{"n_steps", 20},      {"lr", 1e-3},         {"l2_lambda", 5e-4},        {"alpha", 0.07},
                {"normalize", false}, {"grad_clip", 1.0},   {"max_length", 2048},       {"alpha_in_training", false},
                {"layers", "1"},      {"seed", 7},          {"num_examples", 3},        {"final_loss", 1.25}};
  return set;
}

TEST(ReferenceStateSet, TheReferenceLoadsWhatS0Saves) {
  REQUIRE_PYTHON3();
  const std::string dir = s0::testing::temp_dir("ref_load_s0");
  auto set = trained_subset_set();
  adapters::save_state_set(dir, set);
  auto [rc, out] = reference("load " + dir + " --layers 0,1,2 --shape 4,16,16");
  ASSERT_EQ(rc, 0) << out;
  json got = json::parse(out);
  // Exactly the seven keys, alpha null (the default), the reference's types.
  std::vector<std::string> keys;
  for (auto& [k, v] : got.at("config").items()) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"alpha", "grad_clip", "l2_lambda", "lr", "max_length", "n_steps",
                                            "normalize"}));
  EXPECT_TRUE(got["config"]["alpha"].is_null());
  EXPECT_TRUE(got["config"]["n_steps"].is_number_integer());
  EXPECT_TRUE(got["config"]["grad_clip"].is_number_float());
  EXPECT_EQ(got["meta"]["recurrent_layers"], json({0, 1, 2}));
  // Every recurrent layer stored; the untrained ones as zeros.
  for (int64_t l : {0, 1, 2}) {
    auto vals = got["states"].at(std::to_string(l)).get<std::vector<float>>();
    Tensor t = at::from_blob(vals.data(), {4, 16, 16}, at::kFloat).clone();
    EXPECT_TRUE(bit_equal(t, l == 1 ? expected_values(1, {4, 16, 16}) : at::zeros({4, 16, 16}))) << l;
  }
  // config.json byte for byte as the reference's json.dumps(indent=2) writes the same values.
  const std::string ref_dir = s0::testing::temp_dir("ref_load_s0_bytes");
  ASSERT_EQ(reference("write " + ref_dir + " --layers 0,1,2 --shape 4,16,16").first, 0);
  EXPECT_EQ(io::read_file(dir + "/config.json"), io::read_file(ref_dir + "/config.json"));
  EXPECT_EQ(io::read_file(dir + "/meta.json"), io::read_file(ref_dir + "/meta.json"));
  // s0's own settings are in s0.json, and s0 reads everything back.
  json extra = json::parse(io::read_file(dir + "/s0.json"));
  EXPECT_EQ(extra, json({{"alpha_in_training", false}, {"layers", "1"}, {"seed", 7}, {"num_examples", 3},
                         {"final_loss", 1.25}}));
  auto back = adapters::load_state_set(dir, tiny_model());
  EXPECT_EQ(back.states.size(), 1u) << "zero layers are not kept";
  EXPECT_TRUE(bit_equal(back.states.at(1), set.states.at(1)));
  EXPECT_EQ(back.recurrent_layers, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_DOUBLE_EQ(back.alpha(), 0.07);
  EXPECT_EQ(back.config.at("final_loss"), 1.25);
  EXPECT_EQ(back.config.at("seed"), 7);
  // And saving it again gives the same files.
  const std::string dir2 = s0::testing::temp_dir("ref_load_s0_again");
  adapters::save_state_set(dir2, back);
  for (const char* f : {"states.safetensors", "config.json", "meta.json", "s0.json"})
    EXPECT_EQ(io::read_file(dir + "/" + f), io::read_file(dir2 + "/" + f)) << f;
}

TEST(ReferenceStateSet, OlderS0LayoutStillLoadsButTheReferenceRefusesIt) {
  REQUIRE_PYTHON3();
  // What s0 wrote before: every setting in config.json, only the trained layer listed.
  const std::string dir = s0::testing::temp_dir("ref_old_layout");
  auto set = trained_subset_set();
  write_raw(dir, {{"1", set.states.at(1)}}, meta_json("gated_delta_net", {1}, {4, 16, 16}), set.config.dump());
  auto loaded = adapters::load_state_set(dir, tiny_model());
  EXPECT_EQ(loaded.config, set.config);
  EXPECT_TRUE(bit_equal(loaded.states.at(1), set.states.at(1)));
  // The stand-in reference loader can fail: it refuses this layout on both counts.
  auto [rc, out] = reference("load " + dir + " --layers 0,1,2 --shape 4,16,16");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("Layer index mismatch"), std::string::npos) << out;
  io::write_file_atomic(dir + "/meta.json", meta_json("gated_delta_net", {0, 1, 2}, {4, 16, 16}));
  std::tie(rc, out) = reference("load " + dir + " --layers 0,1,2 --shape 4,16,16");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("Unknown config keys"), std::string::npos) << out;
  // Re-saved by s0 it becomes loadable by the reference.
  const std::string dir2 = s0::testing::temp_dir("ref_old_layout_resaved");
  loaded.recurrent_layers = tiny_model().recurrent_layers();
  adapters::save_state_set(dir2, loaded);
  EXPECT_EQ(reference("load " + dir2 + " --layers 0,1,2 --shape 4,16,16").first, 0);
}

TEST(ReferenceStateSet, NonFiniteValuesAreRefusedNamingTheTensor) {
  const std::string dir = s0::testing::temp_dir("ss_nonfinite");
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {std::nan(""), inf, -inf}) {
    Tensor t = at::randn({4, 16, 16});
    t.view(-1)[37] = bad;
    t.view(-1)[40] = bad;
    write_raw(dir, {{"0", at::randn({4, 16, 16})}, {"2", t}}, meta_json("gated_delta_net", {0, 2}, {4, 16, 16}));
    expect_error([&] { adapters::load_state_set(dir); },
                 {"states.safetensors", "tensor '2'", "2 non-finite values",
                  std::isnan(bad) ? "NaN" : bad > 0 ? "+Inf" : "-Inf", "index 37"});
  }
  // The same through states.pt.
  const std::string pdir = s0::testing::temp_dir("ss_nonfinite_pt");
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  Tensor t = at::zeros({4, 16, 16});
  t.view(-1)[5] = std::nan("");
  d.insert("1", t);
  auto bytes = torch::jit::pickle_save(c10::IValue(d));
  io::write_file_atomic(pdir + "/states.pt", std::string(bytes.begin(), bytes.end()));
  io::write_file_atomic(pdir + "/meta.json", meta_json("gated_delta_net", {1}, {4, 16, 16}));
  expect_error([&] { adapters::load_state_set(pdir); }, {"states.pt", "tensor '1'", "NaN"});
}

TEST(ReferenceStateSet, SaveWritesAlphaNullOnlyForTheDefaultAndChecksTypes) {
  const std::string dir = s0::testing::temp_dir("ss_alpha_save");
  auto set = trained_subset_set();
  set.config["alpha"] = 0.5;
  adapters::save_state_set(dir, set);
  EXPECT_EQ(json::parse(io::read_file(dir + "/config.json")).at("alpha"), 0.5);
  set.config["n_steps"] = "twenty";
  expect_error([&] { adapters::save_state_set(dir, set); }, {"n_steps", "integer"});
  set.config["n_steps"] = 20.0;  // an integral float becomes the int the reference expects
  adapters::save_state_set(dir, set);
  EXPECT_TRUE(json::parse(io::read_file(dir + "/config.json")).at("n_steps").is_number_integer());
  // A state for a layer outside recurrent_layers is refused.
  set.states[3] = at::ones({4, 16, 16});
  expect_error([&] { adapters::save_state_set(dir, set); }, {"layer 3", "[0,1,2]"});
}

}  // namespace
