// Qwen3.5 engine: parity with the reference fixtures (with and without injected S0),
// prefill + decode == one forward, cache continuation, zero states == none, gradients.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "s0/io/atomic_file.h"
#include "s0/io/safetensors.h"
#include "s0/models/model.h"
#include "s0/models/qwen35.h"
#include "s0/models/weights.h"
#include "s0/util/error.h"
#include "test_util.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::ids_tensor;
using s0::testing::max_rel;
namespace fs = std::filesystem;

namespace {

models::StateMap load_states(const std::string& path) {
  io::SafetensorsFile f(path);
  models::StateMap m;
  for (const auto& name : f.names()) m[std::stoll(name)] = models::tensor_view(f.get(name)).clone();
  return m;
}

// ---------------------------------------------------------------------------- parity
class Qwen35Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Qwen35Parity, LogitsMatchReference) {
  const std::string dir = s0::testing::fixtures_dir() + "/qwen35/" + GetParam();
  if (!fs::exists(dir + "/config.json")) GTEST_SKIP() << "no fixture at " << dir;
  auto model = models::load_model(dir, at::kFloat);
  auto inputs = nlohmann::json::parse(io::read_file(dir + "/inputs.json"))["sequences"];
  io::SafetensorsFile expected(dir + "/expected.safetensors");
  io::SafetensorsFile expected_s0(dir + "/expected_s0.safetensors");
  models::StateMap states = load_states(dir + "/s0/states.safetensors");
  NoGrad ng;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto ids = inputs[i].get<std::vector<int64_t>>();
    Tensor want = models::tensor_view(expected.get("logits_" + std::to_string(i)));
    // One full-sequence forward.
    auto cache = model->new_cache(1);
    Tensor got = model->forward(ids_tensor(ids), cache)[0];
    EXPECT_LT(max_rel(got, want), 1e-3) << GetParam() << " sequence " << i;
    std::cout << "[parity] " << GetParam() << " seq " << i << " L=" << ids.size()
              << " max_rel=" << max_rel(got, want) << "\n";
    // Prefill of half, then one-token decode steps.
    size_t n = ids.size() / 2 + 1;
    auto cache2 = model->new_cache(1);
    std::vector<Tensor> rows{model->forward(ids_tensor({ids.begin(), ids.begin() + n}), cache2)[0]};
    for (size_t t = n; t < ids.size(); ++t) rows.push_back(model->forward(ids_tensor({ids[t]}), cache2)[0]);
    EXPECT_LT(max_rel(at::cat(rows, 0), want), 1e-3) << GetParam() << " prefill+decode, sequence " << i;

    std::string key = "logits_" + std::to_string(i);
    if (expected_s0.has(key)) {
      auto cs = model->new_cache(1, &states);
      Tensor got_s0 = model->forward(ids_tensor(ids), cs)[0];
      Tensor want_s0 = models::tensor_view(expected_s0.get(key));
      EXPECT_LT(max_rel(got_s0, want_s0), 1e-3) << GetParam() << " with S0, sequence " << i;
      std::cout << "[parity] " << GetParam() << " seq " << i << " with S0 max_rel="
                << max_rel(got_s0, want_s0) << "\n";
      // The states matter: without them the logits are far from the S0 reference.
      EXPECT_GT(max_rel(got, want_s0), 1e-2);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Qwen35Parity, ::testing::Values("q35-tiny-a", "q35-tiny-b"));

// ---------------------------------------------------------------------------- tiny model
class TinyQwen35 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(s0::testing::tiny_qwen35("f32", 3));
    dir64_ = new std::string(s0::testing::tiny_qwen35("f32", 4));  // loaded as float64
  }
  static std::string* dir_;
  static std::string* dir64_;

  static models::StateMap random_states(const models::CausalLM& m, uint64_t seed, at::ScalarType dt = at::kFloat) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    models::StateMap s;
    for (auto l : m.recurrent_layers()) s[l] = at::randn(m.state_shape(), gen, dt) * 0.5;
    return s;
  }
  static std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    Tensor t = at::randint(0, vocab, {n}, gen, at::kLong);
    return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
  }
};
std::string* TinyQwen35::dir_ = nullptr;
std::string* TinyQwen35::dir64_ = nullptr;

TEST_F(TinyQwen35, PrefillThenDecodeEqualsFullForward) {
  auto model = models::load_model(*dir_, at::kFloat);
  NoGrad ng;
  auto states = random_states(*model, 1);
  for (bool with_states : {false, true}) {
    for (auto [n, m] : std::vector<std::pair<int, int>>{{1, 5}, {63, 3}, {64, 2}, {70, 10}, {130, 4}}) {
      auto ids = random_ids(n + m, model->vocab_size(), n * 31 + m);
      const models::StateMap* sp = with_states ? &states : nullptr;
      auto full_cache = model->new_cache(1, sp);
      Tensor full = model->forward(ids_tensor(ids), full_cache)[0];
      auto cache = model->new_cache(1, sp);
      std::vector<Tensor> rows{model->forward(ids_tensor({ids.begin(), ids.begin() + n}), cache)[0]};
      for (int t = n; t < n + m; ++t) rows.push_back(model->forward(ids_tensor({ids[t]}), cache)[0]);
      EXPECT_LT(max_rel(at::cat(rows, 0), full), 1e-4) << "n=" << n << " m=" << m << " states=" << with_states;
      EXPECT_EQ(cache.length, n + m);
      // Multi-token continuation of a populated cache == the same tokens one by one.
      auto cache3 = model->new_cache(1, sp);
      model->forward(ids_tensor({ids.begin(), ids.begin() + n}), cache3);
      Tensor cont = model->forward(ids_tensor({ids.begin() + n, ids.end()}), cache3)[0];
      EXPECT_LT(max_rel(cont, at::cat(rows, 0).narrow(0, n, m)), 1e-4) << "continuation n=" << n;
    }
  }
}

TEST_F(TinyQwen35, BatchedEqualsSingle) {
  auto model = models::load_model(*dir_, at::kFloat);
  NoGrad ng;
  auto states = random_states(*model, 2);
  auto a = random_ids(40, model->vocab_size(), 1), b = random_ids(40, model->vocab_size(), 2);
  Tensor both = at::stack({ids_tensor(a)[0], ids_tensor(b)[0]});
  auto cb = model->new_cache(2, &states);
  Tensor lb = model->forward(both, cb);
  for (int i = 0; i < 2; ++i) {
    auto c1 = model->new_cache(1, &states);
    Tensor l1 = model->forward(ids_tensor(i == 0 ? a : b), c1)[0];
    EXPECT_LT(max_rel(lb[i], l1), 1e-5);
  }
}

TEST_F(TinyQwen35, ZeroStatesEqualNoStatesBitForBit) {
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    auto model = models::load_model(*dir_, dt);
    NoGrad ng;
    models::StateMap zeros;
    for (auto l : model->recurrent_layers()) zeros[l] = at::zeros(model->state_shape());
    auto ids = random_ids(100, model->vocab_size(), 9);
    auto c0 = model->new_cache(1), c1 = model->new_cache(1, &zeros);
    Tensor a = model->forward(ids_tensor(ids), c0), b = model->forward(ids_tensor(ids), c1);
    EXPECT_TRUE(at::equal(a, b));
    Tensor a2 = model->forward(ids_tensor({5}), c0), b2 = model->forward(ids_tensor({5}), c1);
    EXPECT_TRUE(at::equal(a2, b2));
  }
}

TEST_F(TinyQwen35, NonZeroStatesChangeOutputAndOnlyStatesGetGradients) {
  auto model = models::load_model(*dir_, at::kFloat);
  auto ids = random_ids(80, model->vocab_size(), 4);
  auto states = random_states(*model, 5);
  for (auto& [l, s] : states) s.requires_grad_(true);
  auto cache = model->new_cache(1, &states);
  Tensor logits = model->forward(ids_tensor(ids), cache);
  Tensor loss = at::cross_entropy_loss(logits[0].narrow(0, 0, 79), ids_tensor(ids)[0].narrow(0, 1, 79));
  std::vector<Tensor> leaves;
  for (auto& [l, s] : states) leaves.push_back(s);
  auto grads = torch::autograd::grad({loss}, leaves);
  for (auto& g : grads) EXPECT_GT(g.abs().max().item<double>(), 0.0);
  NoGrad ng;
  auto c0 = model->new_cache(1);
  EXPECT_GT(max_rel(model->forward(ids_tensor(ids), c0), logits.detach()), 1e-3);
}

TEST_F(TinyQwen35, StateGradientMatchesFiniteDifferencesFloat64) {
  auto model = models::load_model(*dir64_, at::kDouble);
  auto ids = random_ids(70, model->vocab_size(), 6);
  Tensor input = ids_tensor(ids), target = input[0].narrow(0, 1, 69);
  auto base = random_states(*model, 7, at::kDouble);
  auto loss_of = [&](models::StateMap& s) {
    // float64 all the way: the cache copies the states as given (no float32 cast) in f64 models.
    auto c = model->new_cache(1, &s);
    Tensor lg = model->forward(input, c);
    return at::cross_entropy_loss(lg[0].narrow(0, 0, 69).to(at::kDouble), target);
  };
  auto leaf = base;
  for (auto& [l, s] : leaf) s = s.clone().requires_grad_(true);
  std::vector<Tensor> leaves;
  for (auto& [l, s] : leaf) leaves.push_back(s);
  auto grads = torch::autograd::grad({loss_of(leaf)}, leaves);
  NoGrad ng;
  int li = 0;
  for (auto& [l, s] : base) {
    for (int sample = 0; sample < 4; ++sample) {
      int64_t idx = (sample * 7919 + l * 131) % s.numel();
      const double eps = 1e-6;
      auto eval = [&](double d) {
        auto p = base;
        p[l] = s.clone();
        p[l].view(-1)[idx] += d;
        return loss_of(p).item<double>();
      };
      double fd = (eval(eps) - eval(-eps)) / (2 * eps);
      double an = grads[li].reshape(-1)[idx].item<double>();
      EXPECT_NEAR(an, fd, 1e-6 + 1e-5 * std::abs(fd)) << "layer " << l << " element " << idx;
    }
    ++li;
  }
}

// The pretraining tool trains every weight through this model code: each weight gets a
// gradient, and the conv taps' weight gradient (plain autograd path) matches finite differences.
TEST_F(TinyQwen35, EveryWeightTrainableForPretraining) {
  auto owned = models::load_model(*dir64_, at::kDouble);
  auto* model = dynamic_cast<models::Qwen35Model*>(owned.get());
  ASSERT_NE(model, nullptr);
  auto weights = model->mutable_weights();
  EXPECT_EQ(weights.size(), models::qwen35_tensor_shapes(model->config()).size());  // lm_head listed iff untied
  for (auto& [name, t] : weights) t->requires_grad_(true);
  auto ids = random_ids(40, model->vocab_size(), 9);
  Tensor input = ids_tensor(ids), target = input[0].narrow(0, 1, 39);
  auto loss_of = [&]() {
    auto c = model->new_cache(1);
    return at::cross_entropy_loss(model->forward(input, c)[0].narrow(0, 0, 39).to(at::kDouble), target);
  };
  std::vector<Tensor> leaves;
  for (auto& [name, t] : weights) leaves.push_back(*t);
  auto grads = torch::autograd::grad({loss_of()}, leaves, {}, false, false, /*allow_unused=*/true);
  for (size_t i = 0; i < weights.size(); ++i) {
    ASSERT_TRUE(grads[i].defined()) << weights[i].first;
    EXPECT_GT(grads[i].abs().max().item<double>(), 0) << weights[i].first;
  }
  NoGrad ng;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i].first.find("conv1d") == std::string::npos) continue;
    Tensor w = *weights[i].second;
    for (int64_t idx : {int64_t{0}, w.numel() / 2, w.numel() - 1}) {
      const double eps = 1e-6, orig = w.view(-1)[idx].item<double>();
      w.view(-1)[idx] = orig + eps;
      double up = loss_of().item<double>();
      w.view(-1)[idx] = orig - eps;
      double down = loss_of().item<double>();
      w.view(-1)[idx] = orig;
      double fd = (up - down) / (2 * eps), an = grads[i].view(-1)[idx].item<double>();
      EXPECT_NEAR(an, fd, 1e-6 + 1e-5 * std::abs(fd)) << weights[i].first << " element " << idx;
    }
  }
}

TEST_F(TinyQwen35, DecodeNeverWritesTheCallersStates) {
  auto model = models::load_model(*dir_, at::kFloat);
  NoGrad ng;
  auto states = random_states(*model, 8);
  std::map<int64_t, Tensor> before;
  for (auto& [l, s] : states) before[l] = s.clone();
  auto cache = model->new_cache(1, &states);
  model->forward(ids_tensor({1}), cache);  // one-token path updates the cache state in place
  model->forward(ids_tensor({2}), cache);
  for (auto& [l, s] : states) EXPECT_TRUE(at::equal(s, before[l])) << "layer " << l;
}

TEST_F(TinyQwen35, RejectsBadStates) {
  auto model = models::load_model(*dir_, at::kFloat);
  models::StateMap wrong_layer{{3, at::zeros(model->state_shape())}};  // layer 3 is attention
  EXPECT_THROW(model->new_cache(1, &wrong_layer), s0::Error);
  models::StateMap wrong_shape{{0, at::zeros({1, 2, 3})}};
  EXPECT_THROW(model->new_cache(1, &wrong_shape), s0::Error);
}

}  // namespace
