// The paper's baselines through the adapter door: LoRA and the state offset. Gradients
// against central finite differences (float64, both families), identities (B = 0 and a zero
// offset are the base model bit for bit, merged == unmerged, offset decode == offset
// prefill), the PEFT on-disk layout both ways, a mixed batch of every adapter kind, and
// training through the shared loop (loss down, exact resume).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "s0/adapters/lora.h"
#include "s0/adapters/stack.h"
#include "s0/adapters/state_offset.h"
#include "s0/adapters/state_set.h"
#include "s0/generate/engine.h"
#include "s0/io/atomic_file.h"
#include "s0/io/safetensors.h"
#include "s0/train/baselines.h"
#include "s0/util/error.h"
#include "test_util.h"
#include "train_check.h"

using namespace s0;
using train::Example;
using s0::testing::expect_grad_matches_fd;
using s0::testing::toy_data;

namespace {

std::string family_dir(const std::string& family, uint64_t seed) {
  return family == "qwen35" ? s0::testing::tiny_qwen35("f32", seed) : s0::testing::tiny_falcon_h1("f32", seed);
}

// A LoRA set with random A and B (B = 0 would give A no gradient), in `dt`.
adapters::LoraSet random_lora(const models::CausalLM& m, const std::vector<std::string>& targets, uint64_t seed,
                              double b_scale, at::ScalarType dt = at::kFloat) {
  adapters::LoraConfig c;
  c.r = 3;
  c.lora_alpha = 6;
  c.target_modules = targets;
  auto set = adapters::init_lora(m, c, seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 100);
  for (auto& [name, f] : set.modules) {
    f.A = f.A.to(dt);
    f.B = (at::randn(f.B.sizes(), gen, at::kFloat) * b_scale).to(dt);
  }
  return set;
}

models::StateMap random_map(const models::CausalLM& m, uint64_t seed, double scale, at::ScalarType dt = at::kFloat) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  models::StateMap s;
  for (auto l : m.recurrent_layers()) s[l] = (at::randn(m.state_shape(), gen, at::kFloat) * scale).to(dt);
  return s;
}

Tensor logits_with(models::CausalLM& m, const std::vector<int64_t>& ids, std::shared_ptr<const models::Adapter> a) {
  NoGrad ng;
  auto c = m.new_cache(1, std::move(a));
  return m.forward(at::tensor(ids, at::kLong).view({1, -1}), c);
}

TEST(Lora, GradientMatchesFiniteDifferencesFloat64) {
  for (const std::string family : {"qwen35", "falcon_h1"}) {
    auto model = models::load_model(family_dir(family, 51), at::kDouble);
    // The family's defaults plus an MLP projection (any linear can be a target).
    auto targets = adapters::default_lora_targets(*model);
    targets.push_back("down_proj");
    auto set = random_lora(*model, targets, 3, 0.05, at::kDouble);
    train::ParamMap p;
    for (const auto& [name, f] : set.modules) p[name + ".lora_A"] = f.A, p[name + ".lora_B"] = f.B;
    train::AdapterMethod method("lora", "", [&](const train::ParamMap& q) {
      adapters::LoraSet s;
      s.config = set.config;
      for (const auto& [name, f] : set.modules) s.modules[name] = {q.at(name + ".lora_A"), q.at(name + ".lora_B")};
      return s.adapter();
    });
    expect_grad_matches_fd(*model, method, p, toy_data(model->vocab_size(), 1, 4)[0], family);
  }
}

TEST(StateOffset, GradientMatchesFiniteDifferencesFloat64) {
  for (const std::string family : {"qwen35", "falcon_h1"}) {
    auto model = models::load_model(family_dir(family, 52), at::kDouble);
    train::ParamMap p;
    for (const auto& [l, t] : random_map(*model, 5, 0.2, at::kDouble)) p[std::to_string(l)] = t;
    const std::string arch = model->recurrent_arch();
    train::AdapterMethod method("offset", "", [&](const train::ParamMap& q) {
      models::StateMap d;
      for (const auto& [n, t] : q) d[std::stoll(n)] = t;
      return adapters::offset_adapter(arch, d);
    });
    expect_grad_matches_fd(*model, method, p, toy_data(model->vocab_size(), 1, 6)[0], family);
  }
}

TEST(Lora, ZeroBIsTheBaseModelAndMergedEqualsUnmerged) {
  for (const std::string family : {"qwen35", "falcon_h1"}) {
    const std::string dir = family_dir(family, 53);
    auto model = models::load_model(dir, at::kFloat);
    const std::vector<int64_t> ids = {3, 14, 15, 92, 65, 35, 89, 79};
    const Tensor base = logits_with(*model, ids, nullptr);
    // PEFT's initialisation (B = 0) changes nothing, bit for bit.
    adapters::LoraConfig c;
    auto fresh = adapters::init_lora(*model, c, 1);
    ASSERT_FALSE(fresh.modules.empty());
    EXPECT_TRUE(at::equal(base, logits_with(*model, ids, fresh.adapter()))) << family;
    // A trained-looking adapter changes the logits; merging it into the weights gives the
    // same logits as applying it unmerged.
    auto targets = adapters::default_lora_targets(*model);
    targets.push_back("up_proj");
    auto set = random_lora(*model, targets, 7, 0.2);
    const Tensor unmerged = logits_with(*model, ids, set.adapter());
    EXPECT_FALSE(at::allclose(base, unmerged, 1e-3, 1e-3)) << family;
    const std::string out = s0::testing::temp_dir("lora_merged_" + family);
    adapters::merge_lora(dir, set, out);
    auto merged_model = models::load_model(out, at::kFloat);
    const Tensor merged = logits_with(*merged_model, ids, nullptr);
    const double scale = unmerged.abs().max().item<double>();
    EXPECT_LE((merged - unmerged).abs().max().item<double>(), 1e-5 * scale) << family;
    // Files other than the weights are copied unchanged.
    EXPECT_EQ(io::read_file(dir + "/config.json"), io::read_file(out + "/config.json"));
  }
}

TEST(StateOffset, ZeroIsTheBaseModelAndDecodeEqualsPrefill) {
  for (const std::string family : {"qwen35", "falcon_h1"}) {
    auto model = models::load_model(family_dir(family, 54), at::kFloat);
    const std::vector<int64_t> ids = {3, 14, 15, 92, 65, 35, 89, 79, 32, 38};
    const Tensor base = logits_with(*model, ids, nullptr);
    auto zeros = random_map(*model, 1, 0.0);
    EXPECT_TRUE(at::equal(base, logits_with(*model, ids, adapters::offset_adapter(model->recurrent_arch(), zeros))))
        << family;
    auto off = adapters::offset_adapter(model->recurrent_arch(), random_map(*model, 2, 0.3));
    const Tensor full = logits_with(*model, ids, off);
    EXPECT_FALSE(at::allclose(base, full, 1e-3, 1e-3)) << family;
    // Prefill 6 tokens, then decode the rest one at a time with decode_step.
    NoGrad ng;
    auto c = model->new_cache(1, off);
    std::vector<int64_t> head(ids.begin(), ids.begin() + 6);
    model->forward(at::tensor(head, at::kLong).view({1, -1}), c);
    for (size_t t = 6; t < ids.size(); ++t) {
      Tensor step = model->decode_step(at::tensor(std::vector<int64_t>{ids[t]}, at::kLong), {&c});
      const double scale = full.abs().max().item<double>();
      EXPECT_LE((step[0] - full[0][t]).abs().max().item<double>(), 1e-5 * scale) << family << " t=" << t;
    }
  }
}

TEST(Lora, PeftLayoutBothWays) {
  for (const std::string family : {"qwen35", "falcon_h1"}) {
    auto model = models::load_model(family_dir(family, 55), at::kFloat);
    // s0's output: exactly PEFT's names (checked-in listing) and config fields.
    auto set = random_lora(*model, adapters::default_lora_targets(*model), 9, 0.1);
    const std::string out = s0::testing::temp_dir("peft_out_" + family);
    adapters::save_lora(out, set);
    io::SafetensorsFile f(out + "/adapter_model.safetensors");
    std::ifstream listing(std::string(S0_FIXTURES_DIR) + "/../data/peft/" + family + "_tiny_keys.txt");
    ASSERT_TRUE(listing.good()) << family;
    std::vector<std::string> want;
    for (std::string line; std::getline(listing, line);)
      if (!line.empty() && line[0] != '#') want.push_back(line);
    EXPECT_EQ(f.names(), want) << family;
    auto cfg = nlohmann::json::parse(io::read_file(out + "/adapter_config.json"));
    EXPECT_EQ(cfg["peft_type"], "LORA");
    EXPECT_EQ(cfg["r"], 3);
    EXPECT_EQ(cfg["lora_alpha"], 6.0);
    EXPECT_EQ(cfg["target_modules"], adapters::default_lora_targets(*model));
    EXPECT_TRUE(cfg.contains("base_model_name_or_path"));
    // Round trip: what s0 wrote loads back to the same logits.
    auto back = adapters::load_lora(out, *model);
    const std::vector<int64_t> ids = {1, 2, 3, 4, 5};
    EXPECT_TRUE(at::equal(logits_with(*model, ids, set.adapter()), logits_with(*model, ids, back.adapter())));

    // A directory as PEFT writes it (written here by hand, not by save_lora): bf16 factors,
    // a VL checkpoint's decoder prefix, PEFT's extra config fields.
    const std::string peft = s0::testing::temp_dir("peft_in_" + family);
    std::vector<Tensor> keep;
    std::vector<std::pair<io::TensorSpec, const void*>> tensors;
    for (const auto& [name, fac] : set.modules)
      for (auto [part, t] : {std::pair<std::string, Tensor>{"lora_A", fac.A}, {"lora_B", fac.B}}) {
        keep.push_back(t.to(at::kBFloat16).contiguous());
        tensors.push_back({io::TensorSpec{"base_model.model.model.language_model." + name + "." + part + ".weight",
                                          io::DType::BF16, t.sizes().vec()},
                           keep.back().data_ptr()});
      }
    io::save_safetensors(peft + "/adapter_model.safetensors", tensors);
    nlohmann::json pc = {{"alpha_pattern", nlohmann::json::object()}, {"auto_mapping", nullptr},
                         {"base_model_name_or_path", "Qwen/Qwen3.5-4B"}, {"bias", "none"},
                         {"fan_in_fan_out", false}, {"inference_mode", true}, {"init_lora_weights", true},
                         {"layer_replication", nullptr}, {"layers_pattern", nullptr},
                         {"layers_to_transform", nullptr}, {"loftq_config", nlohmann::json::object()},
                         {"lora_alpha", 6}, {"lora_dropout", 0.0}, {"megatron_config", nullptr},
                         {"megatron_core", "megatron.core"}, {"modules_to_save", nullptr}, {"peft_type", "LORA"},
                         {"r", 3}, {"rank_pattern", nlohmann::json::object()}, {"revision", nullptr},
                         {"target_modules", {"v_proj", "q_proj", "k_proj"}}, {"task_type", "CAUSAL_LM"},
                         {"use_dora", false}, {"use_rslora", false}};
    io::write_file_atomic(peft + "/adapter_config.json", pc.dump());
    auto theirs = adapters::load_lora(peft, *model);
    EXPECT_EQ(theirs.modules.size(), set.modules.size());
    for (const auto& [name, fac] : set.modules)
      EXPECT_TRUE(at::equal(theirs.modules.at(name).A, fac.A.to(at::kBFloat16).to(at::kFloat))) << name;
    // What cannot be applied exactly is refused, naming the reason.
    pc["use_dora"] = true;
    io::write_file_atomic(peft + "/adapter_config.json", pc.dump());
    EXPECT_THROW(adapters::load_lora(peft), s0::Error);
  }
}

TEST(Lora, BadTargetsAndShapesAreRefused) {
  auto model = models::load_model(family_dir("qwen35", 56), at::kFloat);
  adapters::LoraConfig c;
  c.target_modules = {"q_proj", "no_such_proj"};
  try {
    adapters::init_lora(*model, c, 0);
    FAIL() << "expected an error";
  } catch (const s0::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_proj"), std::string::npos);
  }
  auto falcon = models::load_model(family_dir("falcon_h1", 56), at::kFloat);
  auto set = adapters::init_lora(*falcon, adapters::LoraConfig{}, 0);  // in_proj is Falcon's
  EXPECT_THROW(adapters::check_lora(set, *model, "x"), s0::Error);
}

TEST(Baselines, MixedBatchEqualsEachRequestAlone) {
  auto model = models::load_model(family_dir("qwen35", 57), at::kFloat);
  auto& m = *model;
  auto lora1 = random_lora(m, {"q_proj", "v_proj"}, 11, 0.3).adapter();
  auto lora2 = random_lora(m, {"in_proj_qkv", "down_proj"}, 12, 0.3).adapter();
  auto s0set = std::make_shared<models::InitialStates>(random_map(m, 13, 0.5));
  auto offset = adapters::offset_adapter(m.recurrent_arch(), random_map(m, 14, 0.3));
  auto both = adapters::stack({s0set, offset});
  // Requests 6 and 7 share request 2's and 3's LoRA, away from them in the batch: the engine
  // hands each LoRA all of its rows at once (rows 2 and 6, 3 and 7), and still every request
  // gets what it gets alone.
  std::vector<std::shared_ptr<const models::Adapter>> kinds = {nullptr, s0set, lora1, lora2, offset, both, lora1, lora2};
  auto run = [&](const std::vector<size_t>& which) {
    generate::EngineOptions eo;
    eo.max_batch = 8;
    generate::Engine engine(m, eo);
    for (size_t i : which) {
      generate::Request r;
      r.prompt = {static_cast<int64_t>(3 + i), 9, 27, static_cast<int64_t>(40 + i)};
      r.adapter = kinds[i];
      r.sampling = {0.0, 0, 1.0, 0};  // greedy
      r.max_new_tokens = 8;
      r.ignore_eos = true;
      r.tag = i;
      engine.submit(r);
    }
    std::map<uint64_t, std::vector<int64_t>> out;
    engine.run([&](const generate::Event& e) {
      if (e.token >= 0) out[e.tag].push_back(e.token);
    });
    return out;
  };
  auto together = run({0, 1, 2, 3, 4, 5, 6, 7});
  std::set<std::vector<int64_t>> distinct;
  for (size_t i = 0; i < kinds.size(); ++i) {
    auto alone = run({i});
    EXPECT_EQ(together.at(i), alone.at(i)) << "request " << i;
    distinct.insert(alone.at(i));
  }
  EXPECT_GE(distinct.size(), 4u) << "the adapters should change what is generated";
}

TEST(Baselines, TrainingLowersLossAndResumesExactly) {
  auto model = models::load_model(family_dir("falcon_h1", 58), at::kFloat);
  auto data = toy_data(model->vocab_size(), 3, 8);
  train::TrainConfig cfg;
  cfg.steps = 8;
  cfg.lr = 2e-2;
  cfg.l2 = 0;
  cfg.batch = 1;  // the paper's LoRA schedule: one example per step, cycling
  adapters::LoraConfig lc;
  lc.r = 4;
  lc.lora_alpha = 8;
  std::vector<double> losses;
  const std::string a = s0::testing::temp_dir("lora_train_a");
  auto full = train::train_lora(*model, data, cfg, lc, a, false, [&](const train::StepReport& r) {
    losses.push_back(r.loss);
  });
  ASSERT_EQ(losses.size(), 8u);
  EXPECT_LT(losses[6], losses[0]);  // the same example (cycling) at steps 1, 4, 7
  EXPECT_LT(losses[7], losses[1]);
  // Interrupted after 5 steps and resumed: bit for bit the uninterrupted run.
  const std::string b = s0::testing::temp_dir("lora_train_b");
  auto five = cfg;
  five.steps = 5;
  train::train_lora(*model, data, five, lc, b, false);
  auto resumed = train::train_lora(*model, data, cfg, lc, b, true);
  for (const auto& [name, f] : full.modules) {
    EXPECT_TRUE(at::equal(f.A, resumed.modules.at(name).A)) << name;
    EXPECT_TRUE(at::equal(f.B, resumed.modules.at(name).B)) << name;
  }
  // Other settings refuse to resume.
  auto other = cfg;
  other.lr = 1e-3;
  EXPECT_THROW(train::train_lora(*model, data, other, lc, b, true), s0::Error);
  // The state offset, full batch: loss down, saved and loaded back.
  cfg.batch = 0;
  cfg.steps = 6;
  std::vector<double> ol;
  const std::string o = s0::testing::temp_dir("offset_train");
  auto off = train::train_offset(*model, data, cfg, o, false, [&](const train::StepReport& r) { ol.push_back(r.loss); });
  EXPECT_LT(ol.back(), ol.front());
  EXPECT_TRUE(adapters::is_offset_dir(o));
  auto loaded = adapters::load_offset_set(o, *model);
  for (const auto& [l, t] : off.offsets) EXPECT_TRUE(at::equal(t, loaded.offsets.at(l)));
  EXPECT_THROW(adapters::load_state_set(o, *model), s0::Error);  // not an S0 state set
}

}  // namespace
