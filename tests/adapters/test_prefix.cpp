// Prefix tuning (PEFT semantics) through the adapter door: logits with a prefix against the
// independent float64 reference (which injects the keys/values itself), a prefix equal to a
// hand-made KV cache on the hybrids' attention layers, a zero-length prefix == base bit for
// bit, prefill + decode == full forward and the batched decode step with several prefixes,
// gradients of both parameterisations against central finite differences (float64), the
// PEFT on-disk layout both ways (a directory written by a script with PEFT's names loads),
// and training through the shared loop (loss down, exact resume).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "qwen2_reference.h"
#include "s0/adapters/prefix.h"
#include "s0/adapters/stack.h"
#include "s0/adapters/state_set.h"
#include "s0/io/atomic_file.h"
#include "s0/train/baselines.h"
#include "s0/util/error.h"
#include "tensor_util.h"
#include "test_util.h"
#include "train_check.h"

using namespace s0;
using s0::testing::ids_tensor;
using s0::testing::max_rel;
using s0::testing::random_ids;
namespace fs = std::filesystem;

namespace {

adapters::PrefixSet random_prefix(const models::CausalLM& m, int64_t n, uint64_t seed,
                                  double scale = 1.0) {
  adapters::PrefixSet set;
  set.shape = adapters::prefix_shape(m);
  set.config.num_virtual_tokens = n;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  set.prompt_embeddings = at::randn({n, set.shape.width()}, gen, at::kFloat) * scale;
  return set;
}

Tensor logits_with(models::CausalLM& m, const std::vector<int64_t>& ids,
                   std::shared_ptr<const models::Adapter> a) {
  NoGrad ng;
  auto c = m.new_cache(1, std::move(a));
  return m.forward(ids_tensor(ids), c)[0];
}

std::string family_dir(const std::string& family, uint64_t seed) {
  if (family == "qwen35") return s0::testing::tiny_qwen35("f32", seed);
  if (family == "falcon_h1") return s0::testing::tiny_falcon_h1("f32", seed);
  return s0::testing::tiny_qwen2("f32", seed);
}

}  // namespace

TEST(Prefix, LogitsMatchTheFloat64ReferenceWithItsOwnKvInjection) {
  if (!s0::testing::have_python3()) GTEST_SKIP() << "python3 not available";
  auto dir = s0::testing::tiny_qwen2("f32", 31);
  auto model = models::load_model(dir, at::kDouble);
  auto set = random_prefix(*model, 5, 7, 0.8);
  auto pdir = s0::testing::temp_dir("prefix_ref");
  adapters::save_prefix(pdir, set);
  auto ids = random_ids(6, model->vocab_size(), 3);
  Tensor ours = logits_with(*model, ids,
                            adapters::load_prefix(pdir, *model).adapter(model->attention_layers()));
  Tensor ref = s0::testing::qwen2_reference_logits(dir, ids, pdir);
  EXPECT_LT(max_rel(ours, ref), 1e-10);
  // The prefix matters (the comparison above is not the base model's).
  EXPECT_GT(max_rel(logits_with(*model, ids, nullptr), ref), 1e-3);
}

TEST(Prefix, APeftLayoutDirectoryWrittenByAScriptLoads) {
  if (!s0::testing::have_python3()) GTEST_SKIP() << "python3 not available";
  auto dir = s0::testing::tiny_qwen2("f32", 32);
  auto model = models::load_model(dir, at::kDouble);
  auto ids = random_ids(5, model->vocab_size(), 4);
  for (const std::string dt : {"F32", "BF16"}) {
    auto pdir = s0::testing::temp_dir("peft_prefix_" + dt);
    auto [rc, out] = s0::testing::run_cmd(
        "python3 " + s0::testing::repo_root() +
        "/tools/qwen2_reference.py write-peft-prefix --out " + pdir +
        " --virtual-tokens 4 --num-layers 3 --kv-heads 2 --head-dim 16 --seed 9 --dtype " + dt);
    ASSERT_EQ(rc, 0) << out;
    auto set = adapters::load_prefix(pdir, *model);
    EXPECT_EQ(set.num_virtual_tokens(), 4);
    EXPECT_TRUE(adapters::is_prefix_dir(pdir));
    EXPECT_LT(max_rel(logits_with(*model, ids, set.adapter(model->attention_layers())),
                      s0::testing::qwen2_reference_logits(dir, ids, pdir)),
              1e-10)
        << dt;
  }
}

TEST(Prefix, EqualsAHandMadeKvCacheOnEveryFamilysAttentionLayers) {
  for (const std::string family : {"qwen2", "qwen35", "falcon_h1"}) {
    auto model = models::load_model(family_dir(family, 33), at::kFloat);
    auto set = random_prefix(*model, 3, 8);
    auto adapter = set.adapter(model->attention_layers());
    auto ids = random_ids(9, model->vocab_size(), 5);
    NoGrad ng;
    // By hand: the prefix's per-layer keys/values from the flat layout, written into a fresh
    // cache at positions 0..n-1, the cache's length set to n.
    const auto kv = model->kv_shape();
    const int64_t n = 3, KV = kv[0], hd = kv[1];
    Tensor P = set.prompt_embeddings;
    auto hand = model->new_cache(1);
    for (int64_t l : model->attention_layers()) {
      Tensor k = at::empty({1, KV, n, hd}), v = at::empty({1, KV, n, hd});
      for (int64_t j = 0; j < n; ++j)
        for (int64_t h = 0; h < KV; ++h)
          for (int64_t d = 0; d < hd; ++d) {
            k[0][h][j][d] = P[j][((l * 2 + 0) * KV + h) * hd + d];
            v[0][h][j][d] = P[j][((l * 2 + 1) * KV + h) * hd + d];
          }
      hand.layers[l].k = k, hand.layers[l].v = v;
    }
    hand.length = n;
    Tensor expect = model->forward(ids_tensor(ids), hand)[0];
    EXPECT_TRUE(at::equal(logits_with(*model, ids, adapter), expect)) << family;
    EXPECT_GT(max_rel(logits_with(*model, ids, nullptr), expect), 1e-4) << family;
  }
}

TEST(Prefix, ZeroLengthIsTheBaseModelBitForBit) {
  for (const std::string family : {"qwen2", "qwen35"}) {
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      auto model = models::load_model(family_dir(family, 34), dt);
      auto shape = adapters::prefix_shape(*model);
      auto adapter =
          adapters::prefix_adapter(shape, at::zeros({0, shape.width()}), model->attention_layers());
      EXPECT_EQ(adapter->prefix_length(), 0);
      auto ids = random_ids(12, model->vocab_size(), 6);
      EXPECT_TRUE(at::equal(logits_with(*model, ids, adapter), logits_with(*model, ids, nullptr)))
          << family;
    }
  }
}

TEST(Prefix, PrefillPlusDecodeEqualsFullForwardAndBatchedRowsEqualEachAlone) {
  for (const std::string family : {"qwen2", "qwen35"}) {
    auto model = models::load_model(family_dir(family, 35), at::kFloat);
    auto a1 = random_prefix(*model, 4, 1).adapter(model->attention_layers());
    auto a2 = random_prefix(*model, 2, 2).adapter(model->attention_layers());
    NoGrad ng;
    auto ids = random_ids(14, model->vocab_size(), 7);
    auto full_cache = model->new_cache(1, a1);
    EXPECT_EQ(full_cache.length, 4);
    Tensor full = model->forward(ids_tensor(ids), full_cache)[0];
    auto c = model->new_cache(1, a1);
    std::vector<Tensor> rows{model->forward(ids_tensor({ids.begin(), ids.begin() + 9}), c)[0]};
    for (int t = 9; t < 14; ++t) rows.push_back(model->forward(ids_tensor({ids[t]}), c)[0]);
    EXPECT_LT(max_rel(at::cat(rows, 0), full), 1e-5) << family;
    EXPECT_EQ(c.length, 4 + 14);
    // One decode step for sequences with a prefix, another prefix, a prefix stacked with S0
    // states (hybrid) and none: each row bitwise equal to that sequence alone.
    std::vector<std::shared_ptr<const models::Adapter>> adapters_ = {a1, a2, nullptr};
    if (!model->recurrent_layers().empty()) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
      models::StateMap st;
      for (auto l : model->recurrent_layers()) st[l] = at::randn(model->state_shape(), gen) * 0.3;
      adapters_.push_back(adapters::stack({std::make_shared<models::InitialStates>(st), a2}));
    }
    std::vector<models::Cache> batch, alone;
    for (size_t s = 0; s < adapters_.size(); ++s) {
      auto p = random_ids(3 + 4 * s, model->vocab_size(), 20 + s);
      batch.push_back(model->new_cache(1, adapters_[s]));
      alone.push_back(model->new_cache(1, adapters_[s]));
      model->forward(ids_tensor(p), batch.back());
      model->forward(ids_tensor(p), alone.back());
    }
    std::vector<models::Cache*> ptrs;
    for (auto& x : batch) ptrs.push_back(&x);
    std::vector<int64_t> next(adapters_.size(), 11);
    Tensor step = model->decode_step(at::tensor(next, at::kLong), ptrs);
    for (size_t s = 0; s < adapters_.size(); ++s)
      EXPECT_TRUE(at::equal(step[s], model->forward(ids_tensor({11}), alone[s], true)[0][0]))
          << family << " " << s;
  }
}

TEST(Prefix, GradientsOfBothParameterisationsMatchFiniteDifferencesFloat64) {
  for (const std::string family : {"qwen2", "falcon_h1"}) {
    auto model = models::load_model(family_dir(family, 36), at::kDouble);
    const auto shape = adapters::prefix_shape(*model);
    const auto layers = model->attention_layers();
    for (bool projection : {true, false}) {
      adapters::PrefixConfig cfg;
      cfg.num_virtual_tokens = 3;
      cfg.prefix_projection = projection;
      cfg.encoder_hidden_size = projection ? 8 : 0;
      train::ParamMap p;
      for (auto& [name, t] : adapters::init_prefix_params(cfg, shape, 5))
        p[name] = t.to(at::kDouble) * 0.5;
      train::AdapterMethod method("prefix", "", [&](const train::ParamMap& q) {
        adapters::PrefixParams pp(q.begin(), q.end());
        return adapters::prefix_adapter(shape, adapters::encode_prefix(cfg, shape, pp), layers);
      });
      s0::testing::expect_grad_matches_fd(*model, method, p,
                                          s0::testing::toy_data(model->vocab_size(), 1, 9)[0],
                                          family + (projection ? " projection" : " direct"));
    }
  }
}

TEST(Prefix, ParameterCountsAndInitFollowPeft) {
  adapters::PrefixShape s{36, 2, 128};  // Qwen2.5-3B
  EXPECT_EQ(s.token_dim(), 256);
  EXPECT_EQ(s.width(), 18432);
  adapters::PrefixConfig c;  // 30 tokens, projection, E = token_dim
  EXPECT_EQ(adapters::encoder_hidden(c, s), 256);
  EXPECT_EQ(adapters::prefix_train_params(c, s),
            30 * 256 + (256 * 256 + 256) + (256 * 18432 + 18432));
  c.prefix_projection = false;
  EXPECT_EQ(adapters::prefix_train_params(c, s), 30 * 18432);
  c.prefix_projection = true;
  c.encoder_hidden_size = 16;
  adapters::PrefixShape tiny{3, 2, 16};
  auto p = adapters::init_prefix_params(c, tiny, 1);
  EXPECT_EQ(p.at("embedding.weight").sizes().vec(), (std::vector<int64_t>{30, 32}));
  EXPECT_EQ(p.at("transform.0.weight").sizes().vec(), (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(p.at("transform.2.weight").sizes().vec(), (std::vector<int64_t>{192, 16}));
  EXPECT_LE(p.at("transform.2.weight").abs().max().item<double>(), 0.25);  // U(+-1/sqrt(16))
  EXPECT_TRUE(at::equal(p.at("embedding.weight"),
                        adapters::init_prefix_params(c, tiny, 1).at("embedding.weight")));
  EXPECT_EQ(adapters::encode_prefix(c, tiny, p).sizes().vec(), (std::vector<int64_t>{30, 192}));
}

TEST(Prefix, BadDirectoriesAndMismatchesAreRefused) {
  auto model = models::load_model(s0::testing::tiny_qwen2("f32", 37), at::kFloat);
  auto set = random_prefix(*model, 2, 3);
  auto dir = s0::testing::temp_dir("prefix_bad");
  adapters::save_prefix(dir, set);
  auto cfg = nlohmann::json::parse(io::read_file(dir + "/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "PREFIX_TUNING");
  EXPECT_EQ(cfg["token_dim"], 32);
  EXPECT_EQ(cfg["num_attention_heads"], 2);
  EXPECT_EQ(cfg["num_layers"], 3);
  // Round trip.
  auto back = adapters::load_prefix(dir, *model);
  EXPECT_TRUE(at::equal(back.prompt_embeddings, set.prompt_embeddings));
  // Another model's shape.
  auto hybrid = models::load_model(s0::testing::tiny_qwen35("f32", 37), at::kFloat);
  EXPECT_THROW(adapters::load_prefix(dir, *hybrid), Error);
  // Config and tensor disagree.
  auto bad = cfg;
  bad["num_virtual_tokens"] = 3;
  io::write_file_atomic(dir + "/adapter_config.json", bad.dump());
  EXPECT_THROW(adapters::load_prefix(dir), Error);
  bad = cfg;
  bad["peft_type"] = "LORA";
  io::write_file_atomic(dir + "/adapter_config.json", bad.dump());
  EXPECT_THROW(adapters::load_prefix(dir), Error);
  EXPECT_FALSE(adapters::is_prefix_dir(dir));
  bad = cfg;
  bad["token_dim"] = 33;
  io::write_file_atomic(dir + "/adapter_config.json", bad.dump());
  EXPECT_THROW(adapters::load_prefix(dir), Error);
  EXPECT_THROW(adapters::load_prefix(dir + "/nope"), Error);
  // A wrong-shaped adapter is refused when a cache is made from it; two prefixes do not stack.
  auto other = adapters::prefix_adapter({3, 2, 8}, at::zeros({2, 96}), model->attention_layers());
  EXPECT_THROW(model->new_cache(1, other), Error);
  auto a = set.adapter(model->attention_layers());
  EXPECT_THROW(adapters::stack({a, a}), Error);
}

TEST(Prefix, TrainingLowersLossResumesExactlyAndSavesThePeftLayout) {
  auto model = models::load_model(s0::testing::tiny_qwen2("f32", 38), at::kFloat);
  auto data = s0::testing::toy_data(model->vocab_size(), 3, 2);
  train::TrainConfig cfg;
  cfg.steps = 6;
  cfg.lr = 1e-2;
  cfg.l2 = 0;
  cfg.seed = 4;
  adapters::PrefixConfig pc;
  pc.num_virtual_tokens = 4;
  pc.encoder_hidden_size = 16;
  std::vector<double> losses;
  auto dir = s0::testing::temp_dir("prefix_train");
  auto set = train::train_prefix(*model, data, cfg, pc, dir, false,
                                 [&](const train::StepReport& r) { losses.push_back(r.loss); });
  ASSERT_EQ(losses.size(), 6u);
  EXPECT_LT(losses.back(), losses.front());
  EXPECT_TRUE(adapters::is_prefix_dir(dir));
  auto loaded = adapters::load_prefix(dir, *model);
  EXPECT_TRUE(at::equal(loaded.prompt_embeddings, set.prompt_embeddings));
  EXPECT_EQ(loaded.s0_info["method"], "prefix");
  // Interrupted after 3 steps and resumed: bit for bit the uninterrupted run.
  auto dir2 = s0::testing::temp_dir("prefix_train_resume");
  auto three = cfg;
  three.steps = 3;
  train::train_prefix(*model, data, three, pc, dir2, false);
  auto resumed = train::train_prefix(*model, data, cfg, pc, dir2, true);
  EXPECT_TRUE(at::equal(resumed.prompt_embeddings, set.prompt_embeddings));
  // The S0 trainer and offsets refuse a pure Transformer; a prefix on a hybrid trains.
  auto hybrid = models::load_model(s0::testing::tiny_qwen35("f32", 38), at::kFloat);
  auto hdir = s0::testing::temp_dir("prefix_train_hybrid");
  cfg.steps = 2;
  auto hs = train::train_prefix(*hybrid, s0::testing::toy_data(hybrid->vocab_size(), 2, 3), cfg, pc,
                                hdir, false);
  EXPECT_EQ(hs.shape.num_layers, hybrid->num_layers());
  EXPECT_THROW(train::train_offset(*model, data, cfg, s0::testing::temp_dir("off_q2"), false),
               Error);
}
