// `s0 train`: learn an S0 state set from JSONL examples on a frozen model.
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "s0/adapters/state_set.h"
#include "s0/interop/llama_state.h"
#include "s0/models/model.h"
#include "s0/train/data.h"
#include "s0/train/baselines.h"
#include "s0/train/trainer.h"
#include "s0/util/error.h"

namespace s0::cli {

namespace {

std::string fmt_time(double s) {
  char b[32];
  int m = static_cast<int>(s / 60);
  snprintf(b, sizeof b, "%d:%02d", m, static_cast<int>(s) % 60);
  return b;
}

// `s0 states export`: the state set, scaled as s0 injects it, in the target runtime's file.
int export_states(const std::string& dir, const std::string& model_dir, const std::string& format,
                  const std::string& out, std::optional<double> alpha, uint32_t n_stream, uint32_t extra_layers) {
  if (format != "llama.cpp") throw Error("unknown --format '" + format + "' (supported: llama.cpp)");
  if (n_stream < 1) throw Error("--n-stream must be >= 1");
  if (alpha && !(*alpha >= 0 && std::isfinite(*alpha))) throw Error("--alpha must be a finite number >= 0");
  const auto layout = interop::llama_state_layout_for_model(model_dir, extra_layers);
  const auto set = adapters::load_state_set(dir);
  // The checks load_state_set(dir, model) makes, against config.json alone (no weights loaded).
  const std::string what = "state set " + dir + " does not match model " + model_dir;
  if (set.arch != layout.state_arch)
    throw Error(what + ": its arch is '" + set.arch + "', the model's '" + layout.state_arch + "'");
  if (set.state_shape != layout.state_shape)
    throw Error(what + ": its state_shape is " + nlohmann::json(set.state_shape).dump() + ", the model's " +
                nlohmann::json(layout.state_shape).dump());
  if (!set.recurrent_layers.empty() && set.recurrent_layers != layout.recurrent_layers)
    throw Error(what + ": its recurrent layers are " + nlohmann::json(set.recurrent_layers).dump() +
                ", the model's " + nlohmann::json(layout.recurrent_layers).dump());
  std::map<int64_t, std::vector<float>> states;
  const auto scaled = set.scaled(alpha);
  for (const auto& [l, t] : scaled) {
    if (!std::binary_search(layout.recurrent_layers.begin(), layout.recurrent_layers.end(), l))
      throw Error(what + ": layer " + std::to_string(l) + " is not one of the model's recurrent layers " +
                  nlohmann::json(layout.recurrent_layers).dump());
    at::Tensor c = t.to(at::kFloat).contiguous();
    states[l].assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  interop::LlamaStateSeqOptions opt;
  opt.n_stream = n_stream;
  const uint64_t bytes = interop::save_llama_state_seq(out, layout, states, opt);
  nlohmann::ordered_json j = {{"out", out},
                              {"format", format},
                              {"llama_arch", layout.arch},
                              {"bytes", bytes},
                              {"n_layer", layout.n_layer},
                              {"recurrent_layers", layout.recurrent_layers},
                              {"trained_layers", nlohmann::json::array()},
                              {"alpha", alpha ? *alpha : set.alpha()},
                              {"normalize", set.normalize()},
                              {"n_stream", n_stream},
                              {"usage", "llama_state_seq_load_file(ctx, \"" + out +
                                            "\", seq_id, tokens, capacity, &n) into a sequence, then decode "
                                            "the prompt on that sequence from position 0"}};
  for (const auto& [l, s] : states) j["trained_layers"].push_back(l);
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace

Action add_train(CLI::App& app) {
  struct Opts {
    std::string model, data, out, dtype = "bf16", layers = "all", method = "s0", targets;
    train::TrainConfig cfg;
    adapters::LoraConfig lora;
    adapters::PrefixConfig prefix;
    bool no_projection = false;
    double alpha = -1, lora_alpha = -1;
    bool chat = false, resume = false, no_recompute = false, recompute_projections = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "Model directory (Hugging Face layout)")->required();
  app.add_option("--data", o->data, "Training JSONL ({prompt, completion} or {messages})")->required();
  app.add_option("--out", o->out, "Output directory (also holds the resume checkpoint)")->required();
  app.add_option("--method", o->method,
                 "What to learn: s0 (initial states), lora (PEFT-layout adapter), offset (per-step state offset) "
                 "or prefix (PEFT prefix tuning, any model with attention layers)")
      ->check(CLI::IsMember({"s0", "lora", "offset", "prefix"}))
      ->capture_default_str();
  auto* steps = app.add_option("--steps", o->cfg.steps, "Optimisation steps (LoRA default: 50, the paper's)")
                    ->capture_default_str();
  auto* batch = app.add_option("--batch", o->cfg.batch,
                               "Examples per step: 0 = all (full batch); b = the next b, cycling (LoRA default: 1, "
                               "the paper's)")
                    ->capture_default_str();
  app.add_option("--rank", o->lora.r, "LoRA rank")->capture_default_str();
  app.add_option("--lora-alpha", o->lora_alpha, "LoRA scale numerator (default 2 * rank)");
  app.add_option("--targets", o->targets,
                 "LoRA target modules, comma-separated (default: Qwen3.5 q,k,v,o_proj; Falcon-H1 q,k,v_proj,in_proj)");
  app.add_option("--virtual-tokens", o->prefix.num_virtual_tokens, "Prefix: number of virtual tokens")
      ->capture_default_str();
  app.add_flag("--no-projection", o->no_projection,
               "Prefix: learn the keys/values directly (default: PEFT's prefix projection MLP)");
  app.add_option("--encoder-hidden", o->prefix.encoder_hidden_size,
                 "Prefix: hidden size of the projection MLP (0: token_dim = KV heads x head_dim)")
      ->capture_default_str();
  auto* lr = app.add_option("--lr", o->cfg.lr,
                            "Adam learning rate (LoRA default: the paper's 5e-4 on Qwen, 1e-4 on Falcon-H1)")
                 ->capture_default_str();
  auto* l2 = app.add_option("--l2", o->cfg.l2, "L2 penalty lambda on the trained tensors (LoRA/offset/prefix default: 0)")
                 ->capture_default_str();
  app.add_option("--clip", o->cfg.grad_clip, "Global gradient-norm clip (0: off)")->capture_default_str();
  app.add_option("--alpha", o->alpha, "Inference scale saved with the states (default: 0.07 GDN, 0.65 Mamba-2)");
  app.add_flag("--normalize", o->cfg.normalize, "At inference use alpha * S / ||S||");
  app.add_flag("--alpha-in-training", o->cfg.alpha_in_training, "Train with alpha * S inside the loss (paper's Algorithm 1)");
  app.add_option("--layers", o->layers, "all | early | middle | late | layer list like 0-7,12")->capture_default_str();
  app.add_option("--max-length", o->cfg.max_length, "Truncate examples to this many tokens")->capture_default_str();
  app.add_option("--seed", o->cfg.seed, "Seed (recorded; training is full-batch and deterministic)")->capture_default_str();
  app.add_flag("--resume", o->resume, "Continue from the checkpoint in --out");
  app.add_flag("--chat", o->chat, "Render prompts through the model's chat template");
  app.add_flag("--no-recompute", o->no_recompute, "Keep all activations (most memory)");
  app.add_flag("--recompute-projections", o->recompute_projections,
               "Recompute the layers' projection GEMMs too (least memory: ~one layer's activations)");
  app.add_option("--dtype", o->dtype, "Weight dtype: bf16 or f32")->capture_default_str();
  app.add_option("--threads", o->threads, "Intra-op threads (0 = all cores)")->capture_default_str();
  return [o, l2, steps, batch, lr]() {
    if (o->method != "s0" && l2->count() == 0) o->cfg.l2 = 0;  // the baselines' own default
    models::configure_runtime(o->threads);
    auto model = models::load_model(o->model, models::parse_dtype(o->dtype));
    auto tok = text::Tokenizer::from_model_dir(o->model);
    std::optional<text::ChatTemplate> chat;
    if (o->chat) chat = text::ChatTemplate::from_model_dir(o->model);
    train::DataOptions dopt;
    dopt.max_length = o->cfg.max_length;
    auto data = train::load_jsonl(o->data, tok, chat ? &*chat : nullptr, dopt);
    if (data.truncated)
      std::fprintf(stderr, "warning: %lld of %zu examples truncated to --max-length %lld\n",
                   static_cast<long long>(data.truncated), data.examples.size(),
                   static_cast<long long>(o->cfg.max_length));
    auto cfg = o->cfg;
    cfg.layers = o->layers;
    cfg.recompute = !o->no_recompute;
    cfg.keep_projections = !o->recompute_projections;
    if (o->alpha >= 0) cfg.alpha = o->alpha;
    const bool tty = isatty(fileno(stderr));
    auto on_step = [&](const train::StepReport& r) {
      if (tty) {
        const int width = 30, done = static_cast<int>(width * r.step / std::max<int64_t>(1, r.steps));
        std::fprintf(stderr, "\r[%s%s] step %lld/%lld  loss %.4f  |g| %.3g  %.0f tok/s  ETA %s   ",
                     std::string(done, '#').c_str(), std::string(width - done, '.').c_str(),
                     static_cast<long long>(r.step), static_cast<long long>(r.steps), r.loss, r.grad_norm,
                     r.tokens_per_s, fmt_time(r.eta_seconds).c_str());
        if (r.step == r.steps) std::fprintf(stderr, "\n");
      } else {
        nlohmann::json j = train::to_json(r);
        std::fprintf(stderr, "%s\n", j.dump().c_str());
      }
    };
    if (o->method == "lora") {
      // The paper's LoRA schedule for what the user left unset (S0's full batch stays one flag away).
      const auto paper = adapters::paper_lora_schedule(*model);
      if (steps->count() == 0) cfg.steps = paper.steps;
      if (batch->count() == 0) cfg.batch = paper.batch;
      if (lr->count() == 0) cfg.lr = paper.lr;
      adapters::LoraConfig lc = o->lora;
      lc.lora_alpha = o->lora_alpha > 0 ? o->lora_alpha : 2.0 * static_cast<double>(lc.r);
      lc.base_model = o->model;
      for (size_t a = 0; a < o->targets.size();) {
        size_t b = o->targets.find(',', a);
        if (b == std::string::npos) b = o->targets.size();
        if (b > a) lc.target_modules.push_back(o->targets.substr(a, b - a));
        a = b + 1;
      }
      std::fprintf(stderr, "training LoRA r=%lld on %s examples for %lld steps (batch %lld, lr %g)\n",
                   static_cast<long long>(lc.r), o->data.c_str(), static_cast<long long>(cfg.steps),
                   static_cast<long long>(cfg.batch), cfg.lr);
      auto set = train::train_lora(*model, std::move(data.examples), cfg, lc, o->out, o->resume, on_step,
                                   adapters::decoder_prefix(o->model));
      nlohmann::json summary = {{"out", o->out}, {"method", "lora"}, {"r", set.config.r},
                                {"lora_alpha", set.config.lora_alpha}, {"target_modules", set.config.target_modules},
                                {"modules", set.modules.size()}, {"params", set.num_params()},
                                {"bytes", set.num_bytes()}, {"steps", cfg.steps},
                                {"final_loss", set.s0_info.value("final_loss", nlohmann::json())}};
      std::printf("%s\n", summary.dump().c_str());
      return 0;
    }
    if (o->method == "prefix") {
      adapters::PrefixConfig pc = o->prefix;
      pc.prefix_projection = !o->no_projection;
      pc.base_model = o->model;
      std::fprintf(stderr, "training a %lld-token prefix%s on %s examples for %lld steps\n",
                   static_cast<long long>(pc.num_virtual_tokens), pc.prefix_projection ? " (projection MLP)" : "",
                   o->data.c_str(), static_cast<long long>(cfg.steps));
      auto set = train::train_prefix(*model, std::move(data.examples), cfg, pc, o->out, o->resume, on_step);
      nlohmann::json summary = {{"out", o->out},
                                {"method", "prefix"},
                                {"virtual_tokens", set.num_virtual_tokens()},
                                {"prefix_projection", pc.prefix_projection},
                                {"train_params", set.s0_info.value("train_params", nlohmann::json())},
                                {"params", set.num_params()},
                                {"bytes", set.num_bytes()},
                                {"steps", cfg.steps},
                                {"final_loss", set.s0_info.value("final_loss", nlohmann::json())}};
      std::printf("%s\n", summary.dump().c_str());
      return 0;
    }
    if (o->method == "offset") {
      std::fprintf(stderr, "training state offsets on %s examples for %lld steps\n", o->data.c_str(),
                   static_cast<long long>(cfg.steps));
      auto set = train::train_offset(*model, std::move(data.examples), cfg, o->out, o->resume, on_step);
      nlohmann::json summary = {{"out", o->out}, {"method", "offset"}, {"layers", set.offsets.size()},
                                {"params", set.num_params()}, {"bytes", set.num_bytes()}, {"steps", cfg.steps},
                                {"final_loss", set.config.value("final_loss", nlohmann::json())}};
      std::printf("%s\n", summary.dump().c_str());
      return 0;
    }
    train::Trainer trainer(*model, std::move(data.examples), cfg);
    std::fprintf(stderr, "training %zu state tensors %s on %s examples for %lld steps\n", trainer.layers().size(),
                 model->model_type().c_str(), o->data.c_str(), static_cast<long long>(cfg.steps));
    auto set = trainer.train(o->out, o->resume, on_step);
    nlohmann::json summary = {{"out", o->out},
                              {"method", "s0"},
                              {"layers", trainer.layers()},
                              {"steps", cfg.steps},
                              {"final_loss", set.config.value("final_loss", nlohmann::json())},
                              {"alpha", set.alpha()},
                              {"bytes", set.num_bytes()}};
    std::printf("%s\n", summary.dump().c_str());
    return 0;
  };
}

Action add_lora(CLI::App& app) {
  struct Opts {
    std::string model, lora, out;
  };
  auto o = std::make_shared<Opts>();
  auto* merge = app.add_subcommand("merge", "Write a model directory with a LoRA adapter merged into its weights");
  merge->add_option("--model", o->model, "Base model directory")->required();
  merge->add_option("--lora", o->lora, "LoRA adapter directory (PEFT layout)")->required();
  merge->add_option("--out", o->out, "Output model directory")->required();
  auto* inspect = app.add_subcommand("inspect", "Print a LoRA adapter's rank, scale, modules and size");
  inspect->add_option("dir", o->lora, "LoRA adapter directory (PEFT layout)")->required();
  app.require_subcommand(1);
  return [o, merge]() {
    if (merge->parsed()) {
      auto model = models::load_model(o->model, at::kBFloat16);
      auto set = adapters::load_lora(o->lora, *model);
      model.reset();
      adapters::merge_lora(o->model, set, o->out);
      std::printf("%s\n", nlohmann::json({{"out", o->out}, {"merged_modules", set.modules.size()}}).dump().c_str());
      return 0;
    }
    auto set = adapters::load_lora(o->lora);
    nlohmann::json j = adapters::inspect_json(set, o->lora);
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  };
}

Action add_states(CLI::App& app) {
  struct Opts {
    std::string dir, model, format, out;
    double alpha = -1;
    uint32_t n_stream = 1, extra_layers = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* inspect = app.add_subcommand("inspect", "Print a state set's arch, layers, shapes, norms and size");
  inspect->add_option("dir", o->dir, "State-set directory")->required();
  inspect->add_option("--model", o->model, "Also check it against this model directory");
  auto* exp = app.add_subcommand(
      "export", "Write a state set as another runtime's file (llama.cpp: a sequence-state file to load with "
                "llama_state_seq_load_file or llama-server's slot restore, then decode the prompt from position 0)");
  exp->add_option("dir", o->dir, "State-set directory")->required();
  exp->add_option("--format", o->format, "Target format: llama.cpp")->required();
  exp->add_option("--model", o->model, "The model directory the state set was trained on (its config.json is read)")
      ->required();
  exp->add_option("--out", o->out, "Output file (written atomically)")->required();
  exp->add_option("--alpha", o->alpha, "Scale (default: the state set's alpha; its normalize flag applies)");
  exp->add_option("--n-stream", o->n_stream,
                  "KV-cache streams of the llama.cpp context that loads it: 1 for one sequence or a unified KV "
                  "cache, else its n_seq_max (--parallel)")
      ->capture_default_str();
  exp->add_option("--extra-layers", o->extra_layers,
                  "Layers the GGUF has after the model's own (a Qwen3.5 GGUF converted with its MTP layer: 1)")
      ->capture_default_str();
  app.require_subcommand(1);
  return [o, exp]() {
    if (exp->parsed()) {
      std::optional<double> alpha;
      if (exp->get_option("--alpha")->count() > 0) alpha = o->alpha;
      return export_states(o->dir, o->model, o->format, o->out, alpha, o->n_stream, o->extra_layers);
    }
    adapters::StateSet set;
    if (o->model.empty()) {
      set = adapters::load_state_set(o->dir);
    } else {
      auto m = models::load_model(o->model, at::kBFloat16);
      set = adapters::load_state_set(o->dir, *m);
    }
    nlohmann::json j = adapters::inspect_json(set, o->dir);
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  };
}

}  // namespace s0::cli
