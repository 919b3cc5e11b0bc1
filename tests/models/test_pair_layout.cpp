// Generation's weight layout (CausalLM::set_pair_layout): the k-pair layout in place, for
// every family, tied heads included; what a model computes in it against the same model in
// rows; the way back; trainers laying the weights back.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "s0/models/model.h"
#include "s0/nn/linear.h"
#include "s0/train/trainer.h"
#include "test_util.h"

using namespace s0;

namespace {

std::string tiny(const std::string& family) {
  if (family == "qwen35") return s0::testing::tiny_qwen35("bf16", 41);
  if (family == "falcon_h1") return s0::testing::tiny_falcon_h1("bf16", 41);
  return s0::testing::tiny_qwen2("bf16", 41);
}

struct KernelScope {
  explicit KernelScope(nn::DecodeKernel k) { nn::set_decode_kernel(k); }
  ~KernelScope() {
    nn::set_decode_kernel(nn::DecodeKernel::kAuto);
    nn::clear_pair_weights();
  }
};

// Logits of tokens fed one at a time (every product a one-row product).
std::vector<Tensor> one_by_one(models::CausalLM& m, const std::vector<int64_t>& ids) {
  auto cache = m.new_cache(1);
  std::vector<Tensor> out;
  for (int64_t id : ids) out.push_back(m.forward(at::full({1, 1}, id, at::kLong), cache, true).view(-1));
  return out;
}

double rel_err(const Tensor& a, const Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() /
         (b.to(at::kDouble).abs().max().item<double>() + 1e-12);
}

}  // namespace

TEST(PairLayout, EveryFamilyComputesInKPairsWhatTheKPairKernelDoesOnRows) {
  NoGrad ng;
  const std::vector<int64_t> ids = {5, 17, 300, 2, 511, 64, 64, 9};
  for (const std::string family : {"qwen35", "falcon_h1", "qwen2"}) {
    auto rows = models::load_model(tiny(family), at::kBFloat16);
    auto laid = models::load_model(tiny(family), at::kBFloat16);
    std::map<std::string, Tensor> before;
    for (const auto& [name, w] : laid->linear_layers()) before[name] = w.clone();
    const Tensor prompt = at::tensor(ids, at::kLong).view({1, -1});
    auto c0 = laid->new_cache(1);
    const Tensor prefill_rows = laid->forward(prompt, c0);

    EXPECT_FALSE(laid->pair_layout());
    const int64_t changed = laid->set_pair_layout(true);
    EXPECT_GT(changed, 0) << family;
    EXPECT_TRUE(laid->pair_layout()) << family;
    EXPECT_EQ(laid->set_pair_layout(true), 0) << family;  // nothing left to re-lay
    // Every weight that can be re-laid was; the others stay in rows.
    for (const auto& [name, w] : laid->linear_layers())
      EXPECT_EQ(nn::is_pair_layout(w), nn::can_pair_layout(before.at(name))) << family << " " << name;

    // One token at a time with the k-pair kernel asked for: every product through the same
    // kernel both ways (weights in rows through kPairs's copies, the ones left in rows here
    // too), so bitwise equal; embedding (tied or not) and head included.
    std::vector<Tensor> ref, got;
    {
      KernelScope scope(nn::DecodeKernel::kPairs);
      ref = one_by_one(*rows, ids);
      got = one_by_one(*laid, ids);
    }
    for (size_t i = 0; i < ids.size(); ++i) ASSERT_TRUE(at::equal(got[i], ref[i])) << family << " token " << i;
    // A prompt at once (prefill through the k-pair kernel, in rows through oneDNN): close.
    auto c1 = laid->new_cache(1);
    EXPECT_LT(rel_err(laid->forward(prompt, c1), prefill_rows), 0.05) << family;

    // And back: the very same weights and results as before.
    EXPECT_EQ(laid->set_pair_layout(false), changed) << family;
    EXPECT_FALSE(laid->pair_layout());
    for (const auto& [name, w] : laid->linear_layers()) EXPECT_TRUE(at::equal(w, before.at(name))) << name;
    auto c2 = laid->new_cache(1);
    EXPECT_TRUE(at::equal(laid->forward(prompt, c2), prefill_rows)) << family;
  }
}

TEST(PairLayout, GenerationLayoutFollowsTheCpuAndTheDtype) {
  auto f32 = models::load_model(s0::testing::tiny_qwen35("f32", 41), at::kFloat);
  EXPECT_FALSE(models::use_generation_layout(*f32));  // bf16 weights only
  auto bf16 = models::load_model(tiny("qwen35"), at::kBFloat16);
  EXPECT_EQ(models::use_generation_layout(*bf16), nn::pair_layout_pays());
  {
    KernelScope scope(nn::DecodeKernel::kAvx512);  // asked for the row kernel: rows
    auto again = models::load_model(tiny("qwen35"), at::kBFloat16);
    EXPECT_FALSE(models::use_generation_layout(*again));
  }
}

TEST(PairLayout, TrainersLayTheWeightsBackInRows) {
  auto model = models::load_model(tiny("qwen35"), at::kBFloat16);
  train::Example ex;
  for (int64_t t = 0; t < 12; ++t) ex.ids.push_back(t + 3), ex.target.push_back(t >= 6);
  train::TrainConfig cfg;
  cfg.steps = 1;
  train::Trainer trainer(*model, {ex}, cfg);
  ASSERT_GT(model->set_pair_layout(true), 0);  // generation in between (Python: generate(), then train())
  trainer.train(s0::testing::temp_dir("pair_layout_train"), false);
  EXPECT_FALSE(model->pair_layout());
}
