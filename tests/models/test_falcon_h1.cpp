// Falcon-H1 engine: parity with the reference fixture (with and without injected S0),
// prefill + decode == one forward, zero states == none, every muP multiplier changes the
// output, gradients w.r.t. the states, sharded/tied loading, S0 training, state sets,
// init-model's tokenizer and chat template.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "s0/adapters/state_set.h"
#include "s0/io/atomic_file.h"
#include "s0/io/safetensors.h"
#include "s0/models/falcon_h1.h"
#include "s0/models/model.h"
#include "s0/models/weights.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/train/trainer.h"
#include "s0/util/error.h"
#include "test_util.h"
#include "tensor_util.h"
#include "train_check.h"

using namespace s0;
using s0::testing::ids_tensor;
using s0::testing::max_rel;
using s0::testing::random_ids;
namespace fs = std::filesystem;
using models::FalconH1Config;

namespace {

models::StateMap random_states(const models::CausalLM& m, uint64_t seed, double scale = 0.5,
                               at::ScalarType dt = at::kFloat) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  models::StateMap s;
  for (auto l : m.recurrent_layers()) s[l] = at::randn(m.state_shape(), gen, dt) * scale;
  return s;
}

// ---------------------------------------------------------------------------- parity
TEST(FalconH1Parity, LogitsMatchReference) {
  const std::string dir = s0::testing::fixtures_dir() + "/falcon_h1/fh1-tiny-a";
  if (!fs::exists(dir + "/config.json")) GTEST_SKIP() << "no fixture at " << dir;
  auto model = models::load_model(dir, at::kFloat);
  EXPECT_EQ(model->model_type(), "falcon_h1");
  EXPECT_EQ(model->recurrent_arch(), "mamba2");
  EXPECT_EQ(model->state_shape(), (std::vector<int64_t>{4, 16, 8}));
  auto inputs = nlohmann::json::parse(io::read_file(dir + "/inputs.json"))["sequences"];
  io::SafetensorsFile expected(dir + "/expected.safetensors");
  io::SafetensorsFile expected_s0(dir + "/expected_s0.safetensors");
  // The fixture's state set in the reference layout (alpha 1, no normalisation).
  auto set = adapters::load_state_set(dir + "/s0", *model);
  ASSERT_EQ(set.alpha(), 1.0);
  models::StateMap states = set.scaled();
  const double tol = 1e-5;  // fixtures README, float32 Falcon-H1
  NoGrad ng;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto ids = inputs[i].get<std::vector<int64_t>>();
    Tensor want = models::tensor_view(expected.get("logits_" + std::to_string(i)));
    auto cache = model->new_cache(1);
    Tensor got = model->forward(ids_tensor(ids), cache)[0];
    EXPECT_LT(max_rel(got, want), tol) << "sequence " << i;
    std::cout << "[parity] fh1-tiny-a seq " << i << " L=" << ids.size() << " max_rel=" << max_rel(got, want)
              << "\n";
    // Prefill of half, then one-token decode steps.
    size_t n = ids.size() / 2 + 1;
    auto c2 = model->new_cache(1);
    std::vector<Tensor> rows{model->forward(ids_tensor({ids.begin(), ids.begin() + n}), c2)[0]};
    for (size_t t = n; t < ids.size(); ++t) rows.push_back(model->forward(ids_tensor({ids[t]}), c2)[0]);
    EXPECT_LT(max_rel(at::cat(rows, 0), want), tol) << "prefill+decode, sequence " << i;
    std::cout << "[parity] fh1-tiny-a seq " << i << " prefill+decode max_rel=" << max_rel(at::cat(rows, 0), want)
              << "\n";

    const std::string key = "logits_" + std::to_string(i);
    if (expected_s0.has(key)) {
      Tensor want_s0 = models::tensor_view(expected_s0.get(key));
      auto cs = model->new_cache(1, &states);
      Tensor got_s0 = model->forward(ids_tensor(ids), cs)[0];
      EXPECT_LT(max_rel(got_s0, want_s0), tol) << "with S0, sequence " << i;
      std::cout << "[parity] fh1-tiny-a seq " << i << " with S0 max_rel=" << max_rel(got_s0, want_s0) << "\n";
      EXPECT_GT(max_rel(got, want_s0), 1e-2);  // the states matter
      // With S0 through the one-token decode path from the first token.
      auto cd = model->new_cache(1, &states);
      std::vector<Tensor> drows;
      for (auto id : ids) drows.push_back(model->forward(ids_tensor({id}), cd)[0]);
      EXPECT_LT(max_rel(at::cat(drows, 0), want_s0), tol) << "with S0, token by token, sequence " << i;
    }
  }
}

// ---------------------------------------------------------------------------- tiny model
class TinyFalconH1 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(s0::testing::tiny_falcon_h1("f32", 3));
  }
  static std::string* dir_;
};
std::string* TinyFalconH1::dir_ = nullptr;

TEST_F(TinyFalconH1, ShapesFromConfig) {
  auto model = models::load_model(*dir_, at::kFloat);
  auto* f = dynamic_cast<models::FalconH1Model*>(model.get());
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->config().head_dim, 24);  // != hidden / heads = 16
  EXPECT_EQ(model->recurrent_layers(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(model->state_shape(), (std::vector<int64_t>{4, 16, 8}));
  EXPECT_EQ(model->eos_token_ids(), (std::vector<int64_t>{11, 13}));
}

TEST_F(TinyFalconH1, PrefillThenDecodeEqualsFullForward) {
  auto model = models::load_model(*dir_, at::kFloat);
  NoGrad ng;
  auto states = random_states(*model, 1);
  for (bool with_states : {false, true}) {
    for (auto [n, m] : std::vector<std::pair<int, int>>{{1, 5}, {31, 3}, {32, 2}, {45, 8}, {70, 4}}) {
      auto ids = random_ids(n + m, model->vocab_size(), n * 31 + m);
      const models::StateMap* sp = with_states ? &states : nullptr;
      auto full_cache = model->new_cache(1, sp);
      Tensor full = model->forward(ids_tensor(ids), full_cache)[0];
      auto cache = model->new_cache(1, sp);
      std::vector<Tensor> rows{model->forward(ids_tensor({ids.begin(), ids.begin() + n}), cache)[0]};
      for (int t = n; t < n + m; ++t) rows.push_back(model->forward(ids_tensor({ids[t]}), cache)[0]);
      EXPECT_LT(max_rel(at::cat(rows, 0), full), 1e-5) << "n=" << n << " m=" << m << " states=" << with_states;
      EXPECT_EQ(cache.length, n + m);
      // A multi-token continuation of a populated cache == the same tokens one by one.
      auto c3 = model->new_cache(1, sp);
      model->forward(ids_tensor({ids.begin(), ids.begin() + n}), c3);
      Tensor cont = model->forward(ids_tensor({ids.begin() + n, ids.end()}), c3)[0];
      EXPECT_LT(max_rel(cont, full.narrow(0, n, m)), 1e-5) << "continuation n=" << n;
    }
  }
}

TEST_F(TinyFalconH1, BatchedEqualsSingle) {
  auto model = models::load_model(*dir_, at::kFloat);
  NoGrad ng;
  auto states = random_states(*model, 2);
  auto a = random_ids(40, model->vocab_size(), 1), b = random_ids(40, model->vocab_size(), 2);
  Tensor both = at::stack({ids_tensor(a)[0], ids_tensor(b)[0]});
  auto cb = model->new_cache(2, &states);
  Tensor lb = model->forward(both, cb);
  Tensor lb2 = model->forward(at::tensor({3, 4}, at::kLong).view({2, 1}), cb);  // batched decode
  for (int i = 0; i < 2; ++i) {
    auto c1 = model->new_cache(1, &states);
    EXPECT_LT(max_rel(lb[i], model->forward(ids_tensor(i == 0 ? a : b), c1)[0]), 1e-5);
    EXPECT_LT(max_rel(lb2[i], model->forward(ids_tensor({3 + i}), c1)[0]), 1e-5);
  }
}

TEST_F(TinyFalconH1, ZeroStatesEqualNoStatesBitForBit) {
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    auto model = models::load_model(*dir_, dt);
    NoGrad ng;
    models::StateMap zeros;
    for (auto l : model->recurrent_layers()) zeros[l] = at::zeros(model->state_shape());
    auto ids = random_ids(70, model->vocab_size(), 9);
    auto c0 = model->new_cache(1), c1 = model->new_cache(1, &zeros);
    EXPECT_TRUE(at::equal(model->forward(ids_tensor(ids), c0), model->forward(ids_tensor(ids), c1)));
    EXPECT_TRUE(at::equal(model->forward(ids_tensor({5}), c0), model->forward(ids_tensor({5}), c1)));
    // Decode from the very first token too.
    auto d0 = model->new_cache(1), d1 = model->new_cache(1, &zeros);
    EXPECT_TRUE(at::equal(model->forward(ids_tensor({7}), d0), model->forward(ids_tensor({7}), d1)));
  }
}

TEST_F(TinyFalconH1, Bf16RunsCloseToF32) {
  auto m32 = models::load_model(*dir_, at::kFloat);
  auto m16 = models::load_model(*dir_, at::kBFloat16);
  NoGrad ng;
  auto ids = random_ids(50, m32->vocab_size(), 19);
  auto c32 = m32->new_cache(1), c16 = m16->new_cache(1);
  Tensor a = m32->forward(ids_tensor(ids), c32), b = m16->forward(ids_tensor(ids), c16);
  EXPECT_EQ(b.scalar_type(), at::kFloat);
  EXPECT_LT(max_rel(b, a), 0.1);
}

TEST_F(TinyFalconH1, StatesChangeOutputAndOnlyStatesGetGradients) {
  auto model = models::load_model(*dir_, at::kFloat);
  auto ids = random_ids(60, model->vocab_size(), 4);
  auto states = random_states(*model, 5);
  for (auto& [l, s] : states) s.requires_grad_(true);
  auto cache = model->new_cache(1, &states);
  Tensor logits = model->forward(ids_tensor(ids), cache);
  Tensor loss = at::cross_entropy_loss(logits[0].narrow(0, 0, 59), ids_tensor(ids)[0].narrow(0, 1, 59));
  std::vector<Tensor> leaves;
  for (auto& [l, s] : states) leaves.push_back(s);
  auto grads = torch::autograd::grad({loss}, leaves);
  for (auto& g : grads) EXPECT_GT(g.abs().max().item<double>(), 0.0);
  NoGrad ng;
  auto c0 = model->new_cache(1);
  EXPECT_GT(max_rel(model->forward(ids_tensor(ids), c0), logits.detach()), 1e-3);
}

TEST_F(TinyFalconH1, StateGradientMatchesFiniteDifferencesFloat64) {
  auto model = models::load_model(*dir_, at::kDouble);
  auto ids = random_ids(45, model->vocab_size(), 6);  // crosses the chunk boundary (32)
  Tensor input = ids_tensor(ids), target = input[0].narrow(0, 1, 44);
  auto base = random_states(*model, 7, 0.5, at::kDouble);
  auto loss_of = [&](models::StateMap& s) {
    auto c = model->new_cache(1, &s);
    return at::cross_entropy_loss(model->forward(input, c)[0].narrow(0, 0, 44), target);
  };
  auto leaf = base;
  std::vector<Tensor> leaves;
  for (auto& [l, s] : leaf) leaves.push_back(s = s.clone().requires_grad_(true));
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
      EXPECT_NEAR(an, fd, 1e-7 + 1e-5 * std::abs(fd)) << "layer " << l << " element " << idx;
    }
    ++li;
  }
}

TEST_F(TinyFalconH1, DecodeNeverWritesTheCallersStates) {
  auto model = models::load_model(*dir_, at::kFloat);
  NoGrad ng;
  auto states = random_states(*model, 8);
  std::map<int64_t, Tensor> before;
  for (auto& [l, s] : states) before[l] = s.clone();
  auto cache = model->new_cache(1, &states);
  model->forward(ids_tensor({1}), cache);
  model->forward(ids_tensor({2}), cache);
  for (auto& [l, s] : states) EXPECT_TRUE(at::equal(s, before[l])) << "layer " << l;
}

TEST_F(TinyFalconH1, RejectsBadStatesAndConfigs) {
  auto model = models::load_model(*dir_, at::kFloat);
  models::StateMap wrong_layer{{3, at::zeros(model->state_shape())}};
  EXPECT_THROW(model->new_cache(1, &wrong_layer), s0::Error);
  models::StateMap transposed{{0, at::zeros({4, 8, 16})}};  // [H, N, P]
  EXPECT_THROW(model->new_cache(1, &transposed), s0::Error);
  auto j = nlohmann::json::parse(io::read_file(*dir_ + "/config.json"));
  auto expect_error = [&](nlohmann::json cfg, const std::string& needle) {
    try {
      FalconH1Config::from_json(cfg, "config.json");
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const s0::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto c1 = j;
  c1.erase("mamba_d_state");
  expect_error(c1, "mamba_d_state");
  auto c2 = j;
  c2["mamba_d_head"] = 8;
  expect_error(c2, "mamba_d_ssm");
  auto c3 = j;
  c3["ssm_multipliers"] = {1.0, 2.0};
  expect_error(c3, "ssm_multipliers");
  auto c4 = j;
  c4["mamba_d_head"] = "auto";
  EXPECT_EQ(FalconH1Config::from_json(c4, "config.json").mamba_d_head, 16);
  // transformers writes time_step_limit with Python's non-standard Infinity.
  {
    const std::string d = s0::testing::temp_dir("fh1_inf");
    for (const char* f : {"model.safetensors"})
      fs::copy_file(*dir_ + "/" + f, d + "/" + f, fs::copy_options::overwrite_existing);
    std::string text = j.dump(2);
    text.insert(text.rfind('}'), ", \"time_step_limit\": [0.0, Infinity], \"note\": \"NaN Infinity\"\n");
    io::write_file_atomic(d + "/config.json", text);
    auto m = models::load_model(d, at::kFloat);
    auto* f = dynamic_cast<models::FalconH1Model*>(m.get());
    ASSERT_NE(f, nullptr);
    EXPECT_LT(f->config().time_step_max_clamp, 0);  // unbounded
    io::write_file_atomic(d + "/config.json", text + "x");
    EXPECT_THROW(models::load_model(d, at::kFloat), s0::Error);
  }
  auto c6 = j;
  c6["time_step_limit"] = {0.01, 0.05};
  auto cl = FalconH1Config::from_json(c6, "config.json");
  EXPECT_EQ(cl.time_step_min_clamp, 0.01);
  EXPECT_EQ(cl.time_step_max_clamp, 0.05);
  auto c5 = j;
  c5.erase("rope_theta");
  c5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 123.0}};
  EXPECT_EQ(FalconH1Config::from_json(c5, "config.json").rope_theta, 123.0);
}

// ---------------------------------------------------------------------------- multipliers
// One case per multiplier: the same weights with that one value changed give other logits,
// so none is silently ignored.
struct MultiplierCase {
  std::string key;
  int index;  // element of a vector-valued key, -1 for scalars
};

class FalconH1Multiplier : public ::testing::TestWithParam<MultiplierCase> {
 protected:
  static void SetUpTestSuite() { dir_ = new std::string(s0::testing::tiny_falcon_h1("f32", 5)); }
  static std::string* dir_;
};
std::string* FalconH1Multiplier::dir_ = nullptr;

TEST_P(FalconH1Multiplier, ChangesTheOutput) {
  const auto& p = GetParam();
  const std::string changed = s0::testing::temp_dir("fh1_mult_" + p.key + std::to_string(p.index));
  for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(*dir_ + "/" + f, changed + "/" + f, fs::copy_options::overwrite_existing);
  auto j = nlohmann::json::parse(io::read_file(*dir_ + "/config.json"));
  auto& v = p.index < 0 ? j[p.key] : j[p.key][p.index];
  v = v.get<double>() * 1.5;
  io::write_file_atomic(changed + "/config.json", j.dump(2));

  auto base = models::load_model(*dir_, at::kFloat), other = models::load_model(changed, at::kFloat);
  NoGrad ng;
  auto ids = random_ids(40, base->vocab_size(), 3);
  auto states = random_states(*base, 4, 0.2);
  for (bool decode : {false, true}) {
    auto c0 = base->new_cache(1, &states), c1 = other->new_cache(1, &states);
    Tensor a = base->forward(ids_tensor(ids), c0), b = other->forward(ids_tensor(ids), c1);
    if (decode) a = base->forward(ids_tensor({9}), c0), b = other->forward(ids_tensor({9}), c1);
    EXPECT_GT(max_rel(b, a), 1e-3) << p.key << (p.index >= 0 ? "[" + std::to_string(p.index) + "]" : "")
                                   << (decode ? " (decode)" : " (prefill)");
  }
}

INSTANTIATE_TEST_SUITE_P(
    EachOne, FalconH1Multiplier,
    ::testing::Values(MultiplierCase{"embedding_multiplier", -1}, MultiplierCase{"lm_head_multiplier", -1},
                      MultiplierCase{"attention_in_multiplier", -1}, MultiplierCase{"attention_out_multiplier", -1},
                      MultiplierCase{"key_multiplier", -1}, MultiplierCase{"ssm_in_multiplier", -1},
                      MultiplierCase{"ssm_out_multiplier", -1}, MultiplierCase{"ssm_multipliers", 0},
                      MultiplierCase{"ssm_multipliers", 1}, MultiplierCase{"ssm_multipliers", 2},
                      MultiplierCase{"ssm_multipliers", 3}, MultiplierCase{"ssm_multipliers", 4},
                      MultiplierCase{"mlp_multipliers", 0}, MultiplierCase{"mlp_multipliers", 1}),
    [](const ::testing::TestParamInfo<MultiplierCase>& i) {
      return i.param.key + (i.param.index >= 0 ? "_" + std::to_string(i.param.index) : "");
    });

// ---------------------------------------------------------------------------- variants
TEST(FalconH1Variants, ShardedAndSingleFileLoadTheSameWeights) {
  auto one = s0::testing::tiny_falcon_h1_with("one", [](FalconH1Config&) {}, "f32", 11);
  auto sharded = s0::testing::tiny_falcon_h1_with("sharded", [](FalconH1Config&) {}, "f32", 11, 100000);
  ASSERT_TRUE(fs::exists(sharded + "/model.safetensors.index.json"));
  ASSERT_FALSE(fs::exists(sharded + "/model.safetensors"));
  auto a = models::load_model(one, at::kFloat), b = models::load_model(sharded, at::kFloat);
  NoGrad ng;
  auto ids = random_ids(20, a->vocab_size(), 1);
  auto ca = a->new_cache(1), cb = b->new_cache(1);
  EXPECT_TRUE(at::equal(a->forward(ids_tensor(ids), ca), b->forward(ids_tensor(ids), cb)));
}

TEST(FalconH1Variants, TiedEmbeddingsBiasesAndGatedNorm) {
  // Tied lm_head, every optional bias, the grouped gated RMSNorm in both orders.
  for (bool before_gate : {false, true}) {
    auto dir = s0::testing::tiny_falcon_h1_with(
        before_gate ? "variant_b" : "variant_a",
        [&](FalconH1Config& c) {
          c.tie_word_embeddings = true;
          c.attention_bias = c.mlp_bias = c.projectors_bias = c.mamba_proj_bias = true;
          c.mamba_rms_norm = true;
          c.mamba_norm_before_gate = before_gate;
        },
        "f32", 12);
    auto model = models::load_model(dir, at::kFloat);
    NoGrad ng;
    auto states = random_states(*model, 3);
    auto ids = random_ids(40, model->vocab_size(), 2);
    auto cf = model->new_cache(1, &states);
    Tensor full = model->forward(ids_tensor(ids), cf)[0];
    EXPECT_TRUE(at::isfinite(full).all().item<bool>());
    auto cd = model->new_cache(1, &states);
    std::vector<Tensor> rows{model->forward(ids_tensor({ids.begin(), ids.begin() + 35}), cd)[0]};
    for (int t = 35; t < 40; ++t) rows.push_back(model->forward(ids_tensor({ids[t]}), cd)[0]);
    EXPECT_LT(max_rel(at::cat(rows, 0), full), 1e-5) << "norm_before_gate=" << before_gate;
  }
}

TEST(FalconH1Variants, TimeStepLimitClampsDt) {
  auto dir = s0::testing::tiny_falcon_h1("f32", 3);
  const std::string clamped = s0::testing::temp_dir("fh1_clamp");
  fs::copy_file(dir + "/model.safetensors", clamped + "/model.safetensors", fs::copy_options::overwrite_existing);
  auto j = nlohmann::json::parse(io::read_file(dir + "/config.json"));
  j["time_step_limit"] = {0.05, 0.06};
  io::write_file_atomic(clamped + "/config.json", j.dump(2));
  auto a = models::load_model(dir, at::kFloat), b = models::load_model(clamped, at::kFloat);
  NoGrad ng;
  auto ids = random_ids(40, a->vocab_size(), 8);
  auto ca = a->new_cache(1), cb = b->new_cache(1);
  EXPECT_GT(max_rel(b->forward(ids_tensor(ids), cb), a->forward(ids_tensor(ids), ca)), 1e-3);
  // Prefill + decode still agree under the clamp.
  auto c1 = b->new_cache(1), c2 = b->new_cache(1);
  Tensor full = b->forward(ids_tensor(ids), c1)[0];
  std::vector<Tensor> rows{b->forward(ids_tensor({ids.begin(), ids.begin() + 30}), c2)[0]};
  for (int t = 30; t < 40; ++t) rows.push_back(b->forward(ids_tensor({ids[t]}), c2)[0]);
  EXPECT_LT(max_rel(at::cat(rows, 0), full), 1e-5);
}

TEST(FalconH1Variants, InitModelTokenizerAndChatTemplate) {
  auto dir = s0::testing::tiny_falcon_h1("f32", 3);
  auto tok = text::Tokenizer::from_model_dir(dir);
  EXPECT_EQ(tok.token_to_id("<|begin_of_text|>"), 1);
  EXPECT_EQ(tok.token_to_id("<|end_of_text|>"), 11);
  EXPECT_EQ(tok.token_to_id("<|im_end|>"), 13);
  auto tpl = text::ChatTemplate::from_model_dir(dir);
  EXPECT_EQ(tpl.family(), "falcon-h1");
  std::string prompt = tpl.render({{"user", "Hello"}});
  EXPECT_EQ(prompt, "<|begin_of_text|><|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
  auto ids = tok.encode(prompt, false);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(tok.decode(ids), prompt);
  EXPECT_EQ(tok.pre_tokenize("abc 12345").size(), 4u);  // Llama-3 regex: digits in threes
}

// ---------------------------------------------------------------------------- training
std::vector<train::Example> toy_data(int64_t vocab, int n, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<train::Example> out;
  for (int i = 0; i < n; ++i) {
    train::Example ex;
    Tensor p = at::randint(0, vocab, {6 + i}, gen, at::kLong);
    for (int64_t t = 0; t < p.size(0); ++t) ex.ids.push_back(p[t].item<int64_t>()), ex.target.push_back(0);
    for (int64_t t = 0; t < 8; ++t) ex.ids.push_back((7 * t + 3) % vocab), ex.target.push_back(1);
    out.push_back(ex);
  }
  return out;
}

TEST(FalconH1Train, S0TrainingLowersTheLossAndRoundTrips) {
  auto dir = s0::testing::tiny_falcon_h1("f32", 21);
  auto model = models::load_model(dir, at::kFloat);
  auto data = toy_data(model->vocab_size(), 4, 5);
  train::TrainConfig cfg;
  cfg.steps = 10;
  cfg.lr = 0.1;
  std::vector<double> losses;
  const std::string out = s0::testing::temp_dir("fh1_train");
  auto set = train::Trainer(*model, data, cfg).train(out, false, [&](const train::StepReport& r) {
    losses.push_back(r.loss);
  });
  ASSERT_EQ(losses.size(), 10u);
  std::cout << "[train] falcon_h1 tiny loss " << losses.front() << " -> " << losses.back() << "\n";
  for (size_t i = 3; i < losses.size(); ++i) EXPECT_LT(losses[i], losses[0]) << "step " << i + 1;
  EXPECT_LT(losses.back(), 0.9 * losses.front());
  // The saved set: reference layout, arch mamba2, [H, P, N], default alpha 0.65.
  auto meta = nlohmann::json::parse(io::read_file(out + "/meta.json"));
  EXPECT_EQ(meta["arch"], "mamba2");
  EXPECT_EQ(meta["state_shape"], (std::vector<int64_t>{4, 16, 8}));
  EXPECT_EQ(meta["recurrent_layers"], (std::vector<int64_t>{0, 1, 2}));
  auto loaded = adapters::load_state_set(out, *model);
  EXPECT_DOUBLE_EQ(loaded.alpha(), 0.65);
  for (auto& [l, s] : set.states) EXPECT_TRUE(at::equal(s, loaded.states.at(l)));
  // Save/load round trip of a set written by hand.
  adapters::StateSet hand;
  hand.arch = "mamba2";
  hand.state_shape = model->state_shape();
  hand.states = random_states(*model, 9);
  const std::string d2 = s0::testing::temp_dir("fh1_set");
  adapters::save_state_set(d2, hand);
  auto back = adapters::load_state_set(d2, *model);
  for (auto& [l, s] : hand.states) EXPECT_TRUE(at::equal(s, back.states.at(l)));
  // A GatedDeltaNet set is refused by name.
  hand.arch = "gated_delta_net";
  adapters::save_state_set(d2, hand);
  EXPECT_THROW(adapters::load_state_set(d2, *model), s0::Error);
}

TEST(FalconH1Train, RecomputedGradientsEqualPlainAutograd) {
  auto dir = s0::testing::tiny_falcon_h1("f32", 22);
  auto model = models::load_model(dir, at::kDouble);
  auto states = random_states(*model, 6, 0.5, at::kDouble);
  states.erase(1);
  for (const auto& ex : toy_data(model->vocab_size(), 2, 12)) {
    models::StateMap leaf;
    std::vector<Tensor> leaves;
    for (auto& [l, x] : states) leaves.push_back(leaf[l] = x.clone().requires_grad_(true));
    Tensor loss = train::completion_loss(*model, ex, &leaf);
    auto ref = torch::autograd::grad({loss}, leaves);
    auto got = train::completion_loss_and_grad(*model, ex, states);
    // Kept projection outputs (the default) change no value here: the replayed GEMM outputs
    // are the ones recomputation produces, bit for bit (f64: at::linear either way).
    s0::testing::expect_kept_projections_match(*model, ex, states, got, 0.0);
    EXPECT_NEAR(got.loss, loss.item<double>(), 1e-12 * std::abs(got.loss));
    size_t i = 0;
    for (auto& [l, x] : states) {
      EXPECT_LT((got.grads.at(l) - ref[i]).abs().max().item<double>(), 1e-12 * ref[i].abs().max().item<double>())
          << "layer " << l;
      ++i;
    }
  }
}

}  // namespace
