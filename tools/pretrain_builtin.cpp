// Pretrains the project's built-in model (issue 8): a small Qwen3.5-architecture hybrid
// (GatedDeltaNet + gated attention, 3:1) trained from scratch, full weights, with libtorch
// autograd through the very model code s0 runs (src/s0/models/qwen35.cpp), on the synthetic
// corpus of tools/builtin/corpus.py. With --arch qwen2 the same recipe trains the pure-
// Transformer control (src/s0/models/qwen2.cpp; the prefix-tuning baseline's model, issue 15).
// A tool, not part of s0's API.
//
//   s0_pretrain --corpus corpus.jsonl --tokenizer tokenizer.json --out DIR \
//       [--hidden 256 --intermediate 512 --layers 4 --steps 3000 --batch 16 --lr 3e-3 --seed 0]
//
// Writes DIR as a Hugging Face-style model directory (config.json, model.safetensors,
// tokenizer.json, tokenizer_config.json with a ChatML template, generation_config.json).
// Loss: next-token cross-entropy on the completion tokens (+ the closing <|im_end|>), the
// chat-rendered prompt being context. AdamW, linear warm-up then cosine decay, grad clip 1.
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/optim.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "s0/io/atomic_file.h"
#include "s0/io/safetensors.h"
#include "s0/models/init_model.h"
#include "s0/models/model.h"
#include "s0/models/qwen2.h"
#include "s0/models/qwen35.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

using namespace s0;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Seq {
  std::vector<int64_t> ids;
  int64_t prompt_len;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A trainable leaf and how the model's held tensor derives from it.
struct Param {
  std::string name;  // canonical name
  Tensor leaf;       // in the file's form
  Tensor* held;
  enum Kind { Same, Conv, ALog } kind;
  void refresh() const {
    if (kind == Conv) *held = leaf.squeeze(1);
    else if (kind == ALog) *held = -leaf.exp();
  }
};

void init_param(Param& p, int64_t n_layers, bool plain_norms) {
  NoGrad ng;
  auto ends = [&](const char* s) {
    std::string t(s);
    return p.name.size() >= t.size() && p.name.compare(p.name.size() - t.size(), t.size(), t) == 0;
  };
  Tensor& t = p.leaf;
  if (ends("A_log")) t.uniform_(std::log(1.0), std::log(16.0));
  else if (ends("dt_bias")) {
    // softplus^-1 of dt log-uniform in [1e-3, 1e-1]
    Tensor dt = at::exp(at::rand(t.sizes(), t.options()) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3));
    t.copy_(dt + at::log(-at::expm1(-dt)));
  } else if (ends("linear_attn.norm.weight")) t.fill_(1.0);
  else if (ends("norm.weight") || ends("layernorm.weight")) t.fill_(plain_norms ? 1.0 : 0.0);  // w or (1 + w)
  else if (ends(".bias")) t.zero_();
  else if (ends("conv1d.weight")) t.uniform_(-0.5, 0.5);
  else if (ends("embed_tokens.weight")) t.normal_(0, 0.02);
  else if (ends("out_proj.weight") || ends("o_proj.weight") || ends("down_proj.weight"))
    t.normal_(0, 0.02 / std::sqrt(2.0 * static_cast<double>(n_layers)));
  else t.normal_(0, 0.02);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Pretrain the s0 built-in model on the synthetic corpus"};
  std::string corpus, tokenizer, out, arch = "qwen35";
  int64_t hidden = 256, inter = 512, layers = 4, steps = 3000, batch = 16, seed = 0, log_every = 25;
  int64_t max_examples = 0, threads = 0;
  double lr = 3e-3, wd = 0.01, warmup = 100, save_every_s = 300;
  app.add_option("--corpus", corpus, "JSONL {prompt, completion}")->required();
  app.add_option("--tokenizer", tokenizer, "tokenizer.json")->required();
  app.add_option("--out", out, "Model directory to write")->required();
  app.add_option("--arch", arch, "qwen35 (the hybrid) or qwen2 (the pure-Transformer control)")
      ->check(CLI::IsMember({"qwen35", "qwen2"}))
      ->capture_default_str();
  app.add_option("--hidden", hidden)->capture_default_str();
  app.add_option("--intermediate", inter)->capture_default_str();
  app.add_option("--layers", layers, "Decoder layers (qwen35: every 4th is attention)")->capture_default_str();
  app.add_option("--steps", steps)->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--lr", lr)->capture_default_str();
  app.add_option("--weight-decay", wd)->capture_default_str();
  app.add_option("--warmup", warmup)->capture_default_str();
  app.add_option("--seed", seed)->capture_default_str();
  app.add_option("--max-examples", max_examples, "Use only the first N corpus lines (0: all)")->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--log-every", log_every)->capture_default_str();
  std::string profile;
  app.add_option("--profile", profile, "Write a legacy autograd profiler trace of the whole run to this file");
  app.add_option("--save-every-s", save_every_s, "Write the model directory every this many seconds")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    models::configure_runtime(static_cast<int>(threads));
    at::manual_seed(static_cast<uint64_t>(seed));
    auto tok = text::Tokenizer::from_file(tokenizer);
    const int64_t n_vocab = tok.vocab_size();
    auto chat = text::ChatTemplate::builtin("chatml");
    auto id_of = [&](const char* s) {
      auto ids = tok.encode(s, false);
      if (ids.size() != 1) throw Error(std::string("tokenizer has no single token for ") + s);
      return ids[0];
    };
    const int64_t im_end = id_of("<|im_end|>"), eot = id_of("<|endoftext|>");

    // Data.
    std::vector<Seq> data;
    {
      std::ifstream in(corpus);
      if (!in) throw Error("cannot read " + corpus);
      std::string line;
      while (std::getline(in, line)) {
        if (line.empty()) continue;
        json j = json::parse(line);
        std::string p = chat.render({{"user", j.at("prompt").get<std::string>()}}, {});
        auto pi = tok.encode(p, false);
        auto ci = tok.encode(j.at("completion").get<std::string>() + "<|im_end|>\n", false);
        Seq s{pi, static_cast<int64_t>(pi.size())};
        s.ids.insert(s.ids.end(), ci.begin(), ci.end());
        data.push_back(std::move(s));
        if (max_examples > 0 && static_cast<int64_t>(data.size()) >= max_examples) break;
      }
    }
    if (data.empty()) throw Error(corpus + ": no examples");
    double mean_len = 0;
    for (auto& s : data) mean_len += static_cast<double>(s.ids.size());
    mean_len /= static_cast<double>(data.size());

    // Config, files, model.
    models::Qwen35Config cfg = models::Qwen35Config::preset("tiny");
    cfg.vocab_size = (n_vocab + 63) / 64 * 64;
    cfg.hidden_size = hidden;
    cfg.intermediate_size = inter;
    cfg.num_hidden_layers = layers;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = hidden / 4;
    cfg.linear_num_key_heads = 4;
    cfg.linear_num_value_heads = 4;
    cfg.linear_key_head_dim = hidden / 4;
    cfg.linear_value_head_dim = hidden / 4;
    cfg.max_position_embeddings = 4096;
    cfg.eos_token_ids = {im_end, eot};
    cfg.layer_types.clear();
    for (int64_t i = 0; i < layers; ++i) cfg.layer_types.push_back((i + 1) % 4 == 0 ? "full_attention" : "linear_attention");
    cfg.validate("pretrain config");
    fs::create_directories(out);
    models::InitOptions io_opt;
    io_opt.seed = static_cast<uint64_t>(seed);
    io_opt.dtype = "f32";
    const bool control = arch == "qwen2";
    if (control) {
      // The pure-Transformer control: the same widths, heads and tokenizer, every layer attention.
      models::Qwen2Config q = models::Qwen2Config::preset("tiny");
      q.vocab_size = cfg.vocab_size;
      q.hidden_size = hidden;
      q.intermediate_size = inter;
      q.num_hidden_layers = layers;
      q.num_attention_heads = 4;
      q.num_key_value_heads = 2;
      q.head_dim = hidden / 4;
      q.max_position_embeddings = cfg.max_position_embeddings;
      q.eos_token_ids = cfg.eos_token_ids;
      q.bos_token_id = -1;
      q.tie_word_embeddings = true;
      q.validate("pretrain config");
      models::write_random_qwen2(out, q, io_opt);
    } else {
      models::write_random_qwen35(out, cfg, io_opt);
    }
    io::write_file_atomic(out + "/tokenizer.json", io::read_file(tokenizer));
    json tcfg = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                 {"eos_token", "<|im_end|>"},
                 {"pad_token", "<|endoftext|>"},
                 {"bos_token", nullptr},
                 {"chat_template", chat.source()},
                 {"model_max_length", cfg.max_position_embeddings}};
    io::write_file_atomic(out + "/tokenizer_config.json", tcfg.dump(2));
    auto model_ptr = models::load_model(out, at::kFloat);
    auto* model = model_ptr.get();
    auto weights = control ? dynamic_cast<models::Qwen2Model&>(*model).mutable_weights()
                           : dynamic_cast<models::Qwen35Model&>(*model).mutable_weights();

    std::vector<Param> params;
    for (auto& [name, held] : weights) {
      Param p{name, Tensor(), held, Param::Same};
      if (name.find("conv1d.weight") != std::string::npos) {
        p.kind = Param::Conv;
        p.leaf = held->unsqueeze(1).clone();
      } else if (name.find("A_log") != std::string::npos) {
        p.kind = Param::ALog;
        p.leaf = at::log(-*held).clone();
      } else {
        p.leaf = *held;  // same tensor (tied lm_head shares it)
      }
      init_param(p, layers, control);
      p.leaf.requires_grad_(true);
      p.refresh();
      params.push_back(std::move(p));
    }
    std::vector<Tensor> decay, no_decay;
    int64_t n_params = 0;
    for (auto& p : params) {
      n_params += p.leaf.numel();
      (p.leaf.dim() >= 2 && p.kind != Param::Conv ? decay : no_decay).push_back(p.leaf);
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                   torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(wd)));
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                      torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(0.0)));
    torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(lr));
    std::fprintf(stderr,
                 "{\"params\": %lld, \"examples\": %zu, \"mean_tokens\": %.1f, \"vocab\": %lld, \"tokens_per_step\": %.0f}\n",
                 static_cast<long long>(n_params), data.size(), mean_len, static_cast<long long>(cfg.vocab_size),
                 mean_len * static_cast<double>(batch));

    auto save = [&](int64_t step, double loss) {
      NoGrad ng;
      std::vector<std::pair<io::TensorSpec, const void*>> tensors;
      std::vector<Tensor> keep;
      for (auto& p : params) {
        Tensor t = p.leaf.detach().contiguous();
        keep.push_back(t);
        std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
        tensors.push_back({{(control ? "model." : "model.language_model.") + p.name, io::DType::F32, shape}, t.data_ptr()});
      }
      io::save_safetensors(out + "/model.safetensors", tensors,
                           {{"format", "pt"}, {"step", std::to_string(step)}, {"loss", std::to_string(loss)},
                            {"seed", std::to_string(seed)}});
    };

    std::mt19937_64 rng(static_cast<uint64_t>(seed));
    std::vector<size_t> order(data.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    size_t cursor = 0;
    std::unique_ptr<torch::autograd::profiler::RecordProfile> prof;
    if (!profile.empty()) prof = std::make_unique<torch::autograd::profiler::RecordProfile>(profile);
    double t0 = now(), last_save = now(), ema = 0;
    int64_t tokens_seen = 0;
    for (int64_t step = 1; step <= steps; ++step) {
      // Learning rate: linear warm-up, cosine to 10%.
      double f = step <= warmup ? step / warmup
                                : 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * (step - warmup) / std::max(1.0, steps - warmup)));
      for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr * f);
      std::vector<const Seq*> b;
      for (int64_t i = 0; i < batch; ++i) {
        if (cursor == order.size()) std::shuffle(order.begin(), order.end(), rng), cursor = 0;
        b.push_back(&data[order[cursor++]]);
      }
      int64_t L = 0;
      for (auto* s : b) L = std::max<int64_t>(L, static_cast<int64_t>(s->ids.size()));
      Tensor ids = at::full({batch, L}, eot, at::kLong), tgt = at::full({batch, L}, -100, at::kLong);
      auto ia = ids.accessor<int64_t, 2>();
      auto ta = tgt.accessor<int64_t, 2>();
      for (int64_t i = 0; i < batch; ++i) {
        const auto& s = *b[static_cast<size_t>(i)];
        for (size_t t = 0; t < s.ids.size(); ++t) {
          ia[i][static_cast<int64_t>(t)] = s.ids[t];
          // position t predicts token t+1; learned only where t+1 is a completion token
          if (static_cast<int64_t>(t) + 1 >= s.prompt_len && t + 1 < s.ids.size()) ta[i][static_cast<int64_t>(t)] = s.ids[t + 1];
        }
        tokens_seen += static_cast<int64_t>(s.ids.size());
      }
      for (auto& p : params) p.refresh();
      models::Cache cache = model->new_cache(batch);
      Tensor logits = model->forward(ids, cache);  // [B, L, V] f32
      Tensor loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), tgt.reshape(-1), {}, at::Reduction::Mean, -100);
      opt.zero_grad();
      loss.backward();
      std::vector<Tensor> leaves;
      for (auto& p : params) leaves.push_back(p.leaf);
      double gn = 0;
      {
        NoGrad ng;
        for (auto& l : leaves) gn += l.grad().pow(2).sum().item<double>();
        gn = std::sqrt(gn);
        if (gn > 1.0)
          for (auto& l : leaves) l.grad().mul_(1.0 / gn);
      }
      opt.step();
      const double lv = loss.item<double>();
      if (!std::isfinite(lv)) throw Error("loss is not finite at step " + std::to_string(step));
      ema = step == 1 ? lv : 0.95 * ema + 0.05 * lv;
      if (step % log_every == 0 || step == steps) {
        double el = now() - t0;
        std::fprintf(stderr,
                     "{\"step\": %lld, \"loss\": %.4f, \"loss_ema\": %.4f, \"grad_norm\": %.3f, \"lr\": %.2e, "
                     "\"tok_per_s\": %.0f, \"elapsed_s\": %.0f, \"eta_s\": %.0f}\n",
                     static_cast<long long>(step), lv, ema, gn, lr * f, tokens_seen / el, el,
                     el / step * (steps - step));
      }
      if (now() - last_save > save_every_s) save(step, ema), last_save = now();
    }
    prof.reset();
    save(steps, ema);
    {
      std::string cmd;
      for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
      const std::string what = control ? "s0 built-in pure-Transformer control (Qwen2 architecture, "
                                       : "s0 built-in Qwen3.5-architecture hybrid (";
      json info = {{"description", what + std::to_string(layers) + " layers, " + std::to_string(n_params) +
                                       " parameters), pretrained by tools/pretrain_builtin.cpp"},
                   {"parameters", n_params},
                   {"steps", steps},
                   {"batch", batch},
                   {"seed", seed},
                   {"final_loss_ema", ema},
                   {"command", cmd},
                   {"alpha", 0.07}};
      const std::string path = out + "/builtin.json";
      if (fs::exists(path)) {  // keep fields set by hand later (e.g. a tuned alpha)
        json old = json::parse(io::read_file(path));
        for (auto& [k, v] : old.items())
          if (!info.contains(k) || k == "alpha") info[k] = v;
      }
      io::write_file_atomic(path, info.dump(2) + "\n");
    }
    std::printf("{\"out\": \"%s\", \"params\": %lld, \"final_loss_ema\": %.4f, \"seconds\": %.0f}\n", out.c_str(),
                static_cast<long long>(n_params), ema, now() - t0);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
