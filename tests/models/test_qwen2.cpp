// Qwen2 / Qwen2.5 engine: logits against an independent float64 reference
// (tools/qwen2_reference.py, written from the spec and HF semantics), tied and untied;
// prefill + decode == one forward; batch == single; the decode step's rows == each sequence
// alone; sharded == single file; config keys refused clearly; presets' real parameter
// counts; init-model's tokenizer and the Qwen2.5 chat template; S0 refused clearly.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "qwen2_reference.h"
#include "s0/io/atomic_file.h"
#include "s0/io/safetensors.h"
#include "s0/models/model.h"
#include "s0/models/qwen2.h"
#include "s0/models/weights.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/train/trainer.h"
#include "s0/util/error.h"
#include "tensor_util.h"
#include "test_util.h"
#include "train_check.h"

using namespace s0;
using models::Qwen2Config;
using s0::testing::ids_tensor;
using s0::testing::max_rel;
using s0::testing::random_ids;
namespace fs = std::filesystem;

TEST(Qwen2Parity, LogitsMatchTheFloat64ReferenceTiedAndUntied) {
  if (!s0::testing::have_python3()) GTEST_SKIP() << "python3 not available";
  for (bool tied : {true, false}) {
    auto dir = s0::testing::tiny_qwen2_with(
        tied ? "tied" : "untied", [&](Qwen2Config& c) { c.tie_word_embeddings = tied; }, "f32", 21);
    auto model = models::load_model(dir, at::kDouble);
    auto ids = random_ids(9, model->vocab_size(), 5);
    NoGrad ng;
    auto c = model->new_cache(1);
    Tensor ours = model->forward(ids_tensor(ids), c)[0];
    Tensor ref = s0::testing::qwen2_reference_logits(dir, ids);
    EXPECT_LT(max_rel(ours, ref), 1e-10) << "tied=" << tied;
    // The f32 engine is within float rounding of it.
    auto m32 = models::load_model(dir, at::kFloat);
    auto c32 = m32->new_cache(1);
    EXPECT_LT(max_rel(m32->forward(ids_tensor(ids), c32)[0].to(at::kDouble), ref), 1e-5)
        << "tied=" << tied;
  }
}

TEST(Qwen2Parity, BiasesAndRopeThetaMatter) {
  // The reference agrees whatever the biases and theta are; and each changes the logits
  // (so the parity above exercises them).
  if (!s0::testing::have_python3()) GTEST_SKIP() << "python3 not available";
  auto base = s0::testing::tiny_qwen2_with(
      "theta_a", [](Qwen2Config& c) { c.rope_theta = 1e6; }, "f32", 22);
  auto other = s0::testing::tiny_qwen2_with(
      "theta_b", [](Qwen2Config& c) { c.rope_theta = 100.0; }, "f32", 22);
  auto a = models::load_model(base, at::kDouble), b = models::load_model(other, at::kDouble);
  auto ids = random_ids(7, a->vocab_size(), 6);
  NoGrad ng;
  auto ca = a->new_cache(1), cb = b->new_cache(1);
  Tensor la = a->forward(ids_tensor(ids), ca)[0], lb = b->forward(ids_tensor(ids), cb)[0];
  EXPECT_GT(max_rel(la, lb), 1e-6);
  EXPECT_LT(max_rel(lb, s0::testing::qwen2_reference_logits(other, ids)), 1e-10);
  // Zeroed q/k/v biases: a different function, still equal to the reference.
  auto zdir = s0::testing::temp_dir("qwen2_zero_bias");
  for (const auto& e : fs::directory_iterator(base))
    fs::copy(e.path(), zdir + "/" + e.path().filename().string());
  {
    io::SafetensorsFile f(base + "/model.safetensors");
    std::vector<Tensor> keep;
    std::vector<std::pair<io::TensorSpec, const void*>> ts;
    for (const auto& n : f.names()) {
      Tensor t = models::tensor_view(f.get(n)).clone();
      if (n.find("_proj.bias") != std::string::npos) t.zero_();
      keep.push_back(t);
      ts.push_back({io::TensorSpec{n, io::DType::F32, t.sizes().vec()}, keep.back().data_ptr()});
    }
    io::save_safetensors(zdir + "/model.safetensors", ts);
  }
  auto z = models::load_model(zdir, at::kDouble);
  auto cz = z->new_cache(1);
  Tensor lz = z->forward(ids_tensor(ids), cz)[0];
  EXPECT_GT(max_rel(lz, la), 1e-6);
  EXPECT_LT(max_rel(lz, s0::testing::qwen2_reference_logits(zdir, ids)), 1e-10);
}

class TinyQwen2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = new std::string(s0::testing::tiny_qwen2("f32", 3)); }
  static std::string* dir_;
};
std::string* TinyQwen2::dir_ = nullptr;

TEST_F(TinyQwen2, ShapesFromConfig) {
  auto model = models::load_model(*dir_, at::kFloat);
  auto* q = dynamic_cast<models::Qwen2Model*>(model.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(model->model_type(), "qwen2");
  EXPECT_TRUE(model->recurrent_layers().empty());
  EXPECT_EQ(model->attention_layers(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(model->kv_shape(), (std::vector<int64_t>{2, 16}));
  EXPECT_EQ(model->eos_token_ids(), (std::vector<int64_t>{258, 256}));
  // Every linear layer is a LoRA target candidate, with its HF module name.
  auto lin = model->linear_layers();
  ASSERT_EQ(lin.size(), 21u);
  EXPECT_EQ(lin[0].first, "layers.0.self_attn.q_proj");
  EXPECT_EQ(lin[6].first, "layers.0.mlp.down_proj");
}

TEST_F(TinyQwen2, PrefillThenDecodeEqualsFullForward) {
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    auto model = models::load_model(*dir_, dt);
    NoGrad ng;
    for (auto [n, m] : std::vector<std::pair<int, int>>{{1, 5}, {17, 3}, {64, 4}, {70, 6}}) {
      auto ids = random_ids(n + m, model->vocab_size(), n * 31 + m);
      auto full_cache = model->new_cache(1);
      Tensor full = model->forward(ids_tensor(ids), full_cache)[0];
      auto cache = model->new_cache(1);
      std::vector<Tensor> rows{
          model->forward(ids_tensor({ids.begin(), ids.begin() + n}), cache)[0]};
      for (int t = n; t < n + m; ++t)
        rows.push_back(model->forward(ids_tensor({ids[t]}), cache)[0]);
      const double tol = dt == at::kFloat ? 1e-5 : 3e-2;
      EXPECT_LT(max_rel(at::cat(rows, 0), full), tol) << "n=" << n << " m=" << m;
      EXPECT_EQ(cache.length, n + m);
    }
  }
}

TEST_F(TinyQwen2, BatchedEqualsSingleAndDecodeStepRowsEqualEachSequence) {
  auto model = models::load_model(*dir_, at::kFloat);
  NoGrad ng;
  auto a = random_ids(30, model->vocab_size(), 1), b = random_ids(30, model->vocab_size(), 2);
  auto cb = model->new_cache(2);
  Tensor lb = model->forward(at::stack({ids_tensor(a)[0], ids_tensor(b)[0]}), cb);
  for (int i = 0; i < 2; ++i) {
    auto c1 = model->new_cache(1);
    EXPECT_LT(max_rel(lb[i], model->forward(ids_tensor(i == 0 ? a : b), c1)[0]), 1e-5);
  }
  // The batched decode step over sequences of different lengths: row b bitwise equal to the
  // sequence decoded alone.
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    auto m = models::load_model(*dir_, dt);
    std::vector<models::Cache> caches, alone;
    for (int s = 0; s < 3; ++s) {
      auto ids = random_ids(5 + 7 * s, m->vocab_size(), 10 + s);
      caches.push_back(m->new_cache(1));
      alone.push_back(m->new_cache(1));
      m->forward(ids_tensor(ids), caches.back());
      m->forward(ids_tensor(ids), alone.back());
    }
    std::vector<models::Cache*> ptrs;
    for (auto& c : caches) ptrs.push_back(&c);
    Tensor step = m->decode_step(at::tensor({7, 8, 9}, at::kLong), ptrs);
    for (int s = 0; s < 3; ++s) {
      Tensor one = m->forward(ids_tensor({7 + s}), alone[s], true)[0][0];
      EXPECT_TRUE(at::equal(step[s], one)) << "sequence " << s << " dtype " << dt;
    }
  }
}

TEST(Qwen2Variants, ShardedAndSingleFileLoadTheSameWeights) {
  auto one = s0::testing::tiny_qwen2_with(
      "one", [](Qwen2Config&) {}, "f32", 11);
  auto sharded = s0::testing::tiny_qwen2_with(
      "sharded", [](Qwen2Config&) {}, "f32", 11, 60000);
  ASSERT_TRUE(fs::exists(sharded + "/model.safetensors.index.json"));
  ASSERT_FALSE(fs::exists(sharded + "/model.safetensors"));
  auto a = models::load_model(one, at::kFloat), b = models::load_model(sharded, at::kFloat);
  NoGrad ng;
  auto ids = random_ids(20, a->vocab_size(), 1);
  auto ca = a->new_cache(1), cb = b->new_cache(1);
  EXPECT_TRUE(at::equal(a->forward(ids_tensor(ids), ca), b->forward(ids_tensor(ids), cb)));
}

TEST(Qwen2Config, PresetsHaveTheRealParameterCounts) {
  EXPECT_EQ(Qwen2Config::preset("0.5b").num_parameters(), 494032768);
  EXPECT_EQ(Qwen2Config::preset("1.5b").num_parameters(), 1543714304);
  EXPECT_EQ(Qwen2Config::preset("3b").num_parameters(), 3085938688);
  EXPECT_EQ(Qwen2Config::preset("7b").num_parameters(), 7615616512);
  auto c = Qwen2Config::preset("3b");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(Qwen2Config::preset("7b").tie_word_embeddings);
  EXPECT_THROW(Qwen2Config::preset("13b"), Error);
  // Round trip through config.json.
  auto back = Qwen2Config::from_json(c.to_json(), "x");
  EXPECT_EQ(back.num_parameters(), c.num_parameters());
  EXPECT_EQ(back.rope_theta, 1e6);
}

TEST(Qwen2Config, UnsupportedKeysAreRefusedByName) {
  auto base = Qwen2Config::preset("tiny").to_json();
  auto refused = [&](const char* key, nlohmann::json v, const std::string& needle) {
    auto j = base;
    j[key] = v;
    try {
      Qwen2Config::from_json(j, "config.json");
      ADD_FAILURE() << key << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refused("use_sliding_window", true, "use_sliding_window");
  refused("rope_scaling", {{"type", "yarn"}, {"factor", 4.0}}, "rope_scaling");
  refused("hidden_act", "gelu", "hidden_act");
  refused("layer_types", {"full_attention", "sliding_attention", "full_attention"}, "layer_types");
  refused("num_key_value_heads", 3, "multiple of num_key_value_heads");
  refused("hidden_size", "64", "wrong type");
  auto j = base;
  j.erase("vocab_size");
  EXPECT_THROW(Qwen2Config::from_json(j, "config.json"), Error);
  // Disabled sliding window and an explicit default rope type are fine.
  j = base;
  j["use_sliding_window"] = false;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5000.0}};
  EXPECT_EQ(Qwen2Config::from_json(j, "c").rope_theta, 5000.0);
}

TEST(Qwen2Variants, InitModelTokenizerAndQwen25ChatTemplate) {
  auto dir = s0::testing::tiny_qwen2("f32", 3);
  auto tok = text::Tokenizer::from_model_dir(dir);
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 256);
  EXPECT_EQ(tok.token_to_id("<|im_end|>"), 258);
  auto tpl = text::ChatTemplate::from_model_dir(dir);
  EXPECT_EQ(tpl.family(), "qwen2.5");
  EXPECT_EQ(tpl.render({{"user", "Hello"}}),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n"
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
  auto cfg = nlohmann::json::parse(io::read_file(dir + "/config.json"));
  EXPECT_EQ(cfg["model_type"], "qwen2");
  EXPECT_EQ(cfg["architectures"][0], "Qwen2ForCausalLM");
}

TEST(Qwen2Train, S0AndOffsetsAreRefusedClearly) {
  auto model = models::load_model(s0::testing::tiny_qwen2("f32", 4), at::kFloat);
  auto data = s0::testing::toy_data(model->vocab_size(), 2, 1);
  try {
    train::Trainer t(*model, data, train::TrainConfig{});
    ADD_FAILURE() << "S0 training on a pure Transformer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no recurrent layers"), std::string::npos) << e.what();
  }
  models::StateMap s{{0, at::zeros({2, 16, 16})}};
  EXPECT_THROW(model->new_cache(1, &s), Error);
}
