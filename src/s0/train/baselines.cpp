#include "s0/train/baselines.h"

#include "s0/dist/dist.h"
#include "s0/util/error.h"

namespace s0::train {

namespace {

nlohmann::json settings(const TrainConfig& cfg, size_t n, double final_loss) {
  return {{"n_steps", cfg.steps}, {"lr", cfg.lr},   {"l2_lambda", cfg.l2},      {"grad_clip", cfg.grad_clip},
          {"batch", cfg.batch},   {"seed", cfg.seed}, {"max_length", cfg.max_length}, {"num_examples", n},
          {"final_loss", final_loss}};
}

}  // namespace

adapters::LoraSet train_lora(models::CausalLM& model, std::vector<Example> data, const TrainConfig& cfg,
                             adapters::LoraConfig lora, const std::string& out_dir, bool resume,
                             const std::function<void(const StepReport&)>& on_step, const std::string& prefix) {
  adapters::LoraSet set = adapters::init_lora(model, std::move(lora), cfg.seed);
  ParamMap init;
  for (const auto& [name, f] : set.modules) {
    init[name + ".lora_A"] = f.A;
    init[name + ".lora_B"] = f.B;
  }
  const double scale = set.config.scale();
  std::string identity = "r=" + std::to_string(set.config.r) + " scale=" + std::to_string(scale);
  auto method = std::make_shared<AdapterMethod>("lora", identity, [&set, scale](const ParamMap& p) {
    adapters::LoraSet s;
    s.config = set.config;
    for (const auto& [name, f] : set.modules) s.modules[name] = {p.at(name + ".lora_A"), p.at(name + ".lora_B")};
    return s.adapter();
  });
  const size_t n = data.size();
  ParamTrainer loop(model, std::move(data), cfg, std::move(init), method);
  ParamMap p = loop.train(out_dir, resume, on_step);
  for (auto& [name, f] : set.modules) f = {p.at(name + ".lora_A"), p.at(name + ".lora_B")};
  set.s0_info = settings(cfg, n, loop.final_loss());
  set.s0_info["method"] = "lora";
  if (!dist::current() || dist::current()->root()) adapters::save_lora(out_dir, set, prefix);
  return set;
}

adapters::OffsetSet train_offset(models::CausalLM& model, std::vector<Example> data, const TrainConfig& cfg,
                                 const std::string& out_dir, bool resume,
                                 const std::function<void(const StepReport&)>& on_step) {
  require_recurrent_layers(model, "state offsets");
  const auto layers = adapters::select_layers(cfg.layers, model.recurrent_layers());
  if (layers.empty()) throw Error("training: --layers '" + cfg.layers + "' selects no layer");
  ParamMap init;
  for (auto l : layers) init[std::to_string(l)] = at::zeros(model.state_shape(), at::kFloat);
  const std::string arch = model.recurrent_arch();
  auto method = std::make_shared<AdapterMethod>("offset", "layers=" + cfg.layers, [arch](const ParamMap& p) {
    models::StateMap d;
    for (const auto& [name, t] : p) d[std::stoll(name)] = t;
    return adapters::offset_adapter(arch, std::move(d));
  });
  const size_t n = data.size();
  ParamTrainer loop(model, std::move(data), cfg, std::move(init), method);
  ParamMap p = loop.train(out_dir, resume, on_step);
  adapters::OffsetSet set;
  set.arch = arch;
  set.state_shape = model.state_shape();
  for (const auto& [name, t] : p) set.offsets[std::stoll(name)] = t;
  set.config = settings(cfg, n, loop.final_loss());
  set.config["layers"] = cfg.layers;
  set.config["scale"] = 1.0;
  if (!dist::current() || dist::current()->root()) adapters::save_offset_set(out_dir, set);
  return set;
}

adapters::PrefixSet train_prefix(models::CausalLM& model, std::vector<Example> data, const TrainConfig& cfg,
                                 adapters::PrefixConfig prefix, const std::string& out_dir, bool resume,
                                 const std::function<void(const StepReport&)>& on_step) {
  const adapters::PrefixShape shape = adapters::prefix_shape(model);
  ParamMap init;
  for (auto& [name, t] : adapters::init_prefix_params(prefix, shape, cfg.seed)) init[name] = t;
  const auto layers = model.attention_layers();
  const std::string identity = "n=" + std::to_string(prefix.num_virtual_tokens) +
                               " projection=" + std::to_string(prefix.prefix_projection) +
                               " E=" + std::to_string(adapters::encoder_hidden(prefix, shape));
  auto encode = [prefix, shape](const ParamMap& p) {
    adapters::PrefixParams pp(p.begin(), p.end());
    return adapters::encode_prefix(prefix, shape, pp);
  };
  auto method = std::make_shared<AdapterMethod>("prefix", identity, [shape, layers, encode](const ParamMap& p) {
    return adapters::prefix_adapter(shape, encode(p), layers);
  });
  const size_t n = data.size();
  ParamTrainer loop(model, std::move(data), cfg, std::move(init), method);
  ParamMap p = loop.train(out_dir, resume, on_step);
  adapters::PrefixSet set;
  set.config = prefix;
  set.shape = shape;
  {
    NoGrad ng;
    set.prompt_embeddings = encode(p).detach().to(at::kFloat).contiguous();
  }
  set.s0_info = settings(cfg, n, loop.final_loss());
  set.s0_info["method"] = "prefix";
  set.s0_info["train_params"] = adapters::prefix_train_params(prefix, shape);
  if (!dist::current() || dist::current()->root()) adapters::save_prefix(out_dir, set);
  return set;
}

}  // namespace s0::train
