#include "s0/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "s0/dist/dist.h"
#include "s0/io/safetensors.h"
#include "s0/models/weights.h"
#include "s0/util/error.h"
#include "s0/util/interrupt.h"

namespace s0::train {

namespace {

constexpr const char* kCheckpoint = "checkpoint.safetensors";

double now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

uint64_t fnv(uint64_t h, const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

// ---------------------------------------------------------------------------------------
// S0: the states enter as initial states; gradients by per-layer recomputation (or autograd
// through the whole pass without --recompute).
class S0Method : public Method {
 public:
  S0Method(const TrainConfig& cfg, double alpha) : cfg_(cfg), alpha_(alpha) {}
  std::string name() const override { return "s0"; }
  std::string identity() const override {
    return "ait=" + std::to_string(cfg_.alpha_in_training ? 1 : 0) + " layers=" + cfg_.layers;
  }
  double loss_and_grad(models::CausalLM& model, const Example& ex, const ParamMap& p, ParamMap& grads,
                       double weight) override {
    // The states the model sees: S, or alpha * S with --alpha-in-training (chained below).
    const double chain = cfg_.alpha_in_training ? alpha_ : 1.0;
    models::StateMap inj;
    std::vector<Tensor> leaves;
    for (const auto& [name, t] : p) {
      Tensor s = cfg_.recompute ? t : leaves.emplace_back(t.detach().requires_grad_(true));
      inj[std::stoll(name)] = cfg_.alpha_in_training ? adapters::scale_state(s, alpha_, false) : s;
    }
    if (cfg_.recompute) {
      auto r = completion_loss_and_grad(model, ex, inj, cfg_.keep_projections);
      for (auto& [name, g] : grads) g.add_(r.grads.at(std::stoll(name)), chain * weight);
      return r.loss;
    }
    Tensor loss = completion_loss(model, ex, &inj);
    auto g = torch::autograd::grad({loss}, leaves);
    size_t i = 0;
    for (auto& [name, acc] : grads) acc.add_(g[i++], weight);
    return loss.item<double>();
  }

 private:
  TrainConfig cfg_;
  double alpha_;
};

}  // namespace

bool ParamOrder::operator()(const std::string& a, const std::string& b) const {
  auto digits = [](const std::string& s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
  };
  const bool da = digits(a), db = digits(b);
  if (da != db) return da;
  if (da && a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

double AdapterMethod::loss_and_grad(models::CausalLM& model, const Example& ex, const ParamMap& p, ParamMap& grads,
                                    double weight) {
  at::AutoGradMode grad_on(true);
  ParamMap leaves;
  std::vector<Tensor> wrt;
  for (const auto& [name, t] : p) wrt.push_back(leaves[name] = t.detach().requires_grad_(true));
  Tensor loss = completion_loss(model, ex, build_(leaves));
  auto g = torch::autograd::grad({loss}, wrt, {}, false, false, /*allow_unused=*/true);
  size_t i = 0;
  for (auto& [name, acc] : grads) {
    if (g[i].defined()) acc.add_(g[i], weight);
    ++i;
  }
  return loss.item<double>();
}

ParamTrainer::ParamTrainer(models::CausalLM& model, std::vector<Example> data, TrainConfig cfg, ParamMap init,
                           std::shared_ptr<Method> method)
    : model_(model), data_(std::move(data)), cfg_(std::move(cfg)), method_(std::move(method)), P_(std::move(init)) {
  if (data_.empty()) throw Error("training: no examples");
  if (cfg_.steps < 0) throw Error("training: --steps must be >= 0");
  if (!(cfg_.lr > 0)) throw Error("training: --lr must be positive");
  if (cfg_.l2 < 0) throw Error("training: --l2 must be >= 0");
  if (cfg_.batch < 0) throw Error("training: --batch must be >= 0 (0: all examples per step)");
  if (P_.empty()) throw Error("training: nothing to train");
  for (size_t i = 0; i < data_.size(); ++i)
    if (data_[i].num_targets() == 0)
      throw Error("training example " + std::to_string(i) + " has no completion tokens");
  for (auto& [name, p] : P_) {
    p = p.detach().to(at::kFloat).clone();
    m_[name] = at::zeros_like(p);
    v_[name] = at::zeros_like(p);
  }
}

std::string ParamTrainer::fingerprint() const {
  uint64_t h = 1469598103934665603ULL;
  for (const auto& ex : data_) {
    h = fnv(h, ex.ids.data(), ex.ids.size() * sizeof(int64_t));
    h = fnv(h, ex.target.data(), ex.target.size());
  }
  std::string names;
  for (const auto& [name, p] : P_) names += name + io::shape_to_string(p.sizes().vec()) + ";";
  const uint64_t hp = fnv(1469598103934665603ULL, names.data(), names.size());
  char buf[512];
  // recompute changes rounding only, so it is not part of the fingerprint.
  snprintf(buf, sizeof buf, "method=%s data=%016llx params=%016llx lr=%.17g l2=%.17g clip=%.17g batch=%lld b1=%.17g b2=%.17g eps=%.17g ",
           method_->name().c_str(), static_cast<unsigned long long>(h), static_cast<unsigned long long>(hp), cfg_.lr,
           cfg_.l2, cfg_.grad_clip, static_cast<long long>(cfg_.batch), cfg_.beta1, cfg_.beta2, cfg_.adam_eps);
  return buf + method_->identity();
}

void ParamTrainer::save_checkpoint(const std::string& dir, int64_t step) const {
  std::vector<std::pair<io::TensorSpec, const void*>> t;
  for (const auto* group : {&P_, &m_, &v_}) {
    const char* prefix = group == &P_ ? "S." : group == &m_ ? "m." : "v.";
    for (const auto& [name, x] : *group)
      t.push_back({io::TensorSpec{prefix + name, io::DType::F32, x.sizes().vec()}, x.data_ptr()});
  }
  // One file holds parameters, moments, step, the step's loss and fingerprint: it is replaced
  // atomically. (The loss: a run resumed from its last step's checkpoint still reports it.)
  char loss[64];
  snprintf(loss, sizeof loss, "%.17g", last_loss_);
  io::save_safetensors(dir + "/" + kCheckpoint, t,
                       {{"format", "pt"}, {"step", std::to_string(step)}, {"loss", loss}, {"fingerprint", fingerprint()}});
}

int64_t ParamTrainer::load_checkpoint(const std::string& dir) {
  const std::string path = dir + "/" + kCheckpoint;
  if (!std::filesystem::exists(path)) throw Error("--resume: no checkpoint at " + path);
  io::SafetensorsFile f(path);
  const auto& meta = f.metadata();
  if (!meta.count("step") || !meta.count("fingerprint")) throw Error(path + ": not an s0 training checkpoint");
  if (meta.at("fingerprint") != fingerprint())
    throw Error(path + ": checkpoint was made with other data or settings (" + meta.at("fingerprint") +
                "), now: " + fingerprint());
  for (auto* group : {&P_, &m_, &v_}) {
    const char* prefix = group == &P_ ? "S." : group == &m_ ? "m." : "v.";
    for (auto& [name, x] : *group) {
      const auto& t = f.get(prefix + name);
      if (t.shape != x.sizes().vec() || t.dtype != io::DType::F32)
        throw Error(path + ": tensor '" + t.name + "' does not match the parameter's shape");
      x.copy_(models::tensor_view(t));
    }
  }
  last_loss_ = meta.count("loss") ? std::strtod(meta.at("loss").c_str(), nullptr) : std::nan("");
  return std::stoll(meta.at("step"));
}

ParamMap ParamTrainer::train(const std::string& out_dir, bool resume,
                             const std::function<void(const StepReport&)>& on_step) {
  // Rows for training's GEMMs and autograd (generation may have laid the weights out in
  // k-pairs, under autograd read through a copy per product); the one place every trainer
  // (S0 and the baselines) passes before computing anything.
  model_.set_pair_layout(false);
  // Data-parallel (dist::current()): each rank takes a contiguous share of every step's
  // examples; their gradients, loss and token counts are summed in rank order (one allreduce
  // per step), so every rank applies the same Adam step. Rank 0 writes the checkpoints and
  // reports the steps; on resume it sends its checkpoint to the others.
  dist::World* world = dist::current();
  const int W = world ? world->size() : 1, R = world ? world->rank() : 0;
  int64_t start = 0;
  last_loss_ = std::nan("");
  auto prepare = [&] {
    if (R != 0) return;
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) throw Error("cannot create output directory '" + out_dir + "': " + ec.message());
    start = resume ? load_checkpoint(out_dir) : 0;
  };
  if (W == 1) {
    prepare();
  } else {
    world->agree("training checkpoint", prepare);
    if (resume) {
      std::string blob;
      if (R == 0) {
        blob.append(reinterpret_cast<const char*>(&start), sizeof start);
        for (const auto* group : {&P_, &m_, &v_})
          for (const auto& [name, x] : *group)
            blob.append(static_cast<const char*>(x.data_ptr()), static_cast<size_t>(x.numel()) * sizeof(float));
      }
      blob = world->broadcast("training checkpoint", blob);
      size_t off = 0;
      std::memcpy(&start, blob.data(), sizeof start);
      off += sizeof start;
      for (auto* group : {&P_, &m_, &v_})
        for (auto& [name, x] : *group) {
          const size_t n = static_cast<size_t>(x.numel()) * sizeof(float);
          if (off + n > blob.size()) throw Error("training: rank 0's checkpoint does not match this rank's parameters");
          std::memcpy(x.data_ptr(), blob.data() + off, n);
          off += n;
        }
    }
  }
  if (start > cfg_.steps)
    throw Error("--resume: the checkpoint is at step " + std::to_string(start) + ", beyond --steps " +
                std::to_string(cfg_.steps));
  const int64_t N = static_cast<int64_t>(data_.size());
  const int64_t per_step = cfg_.batch > 0 ? cfg_.batch : N;
  double elapsed = 0;

  for (int64_t step = start + 1; step <= cfg_.steps; ++step) {
    const double t0 = now();
    ParamMap grads;
    for (const auto& [name, p] : P_) grads[name] = at::zeros_like(p);
    double loss_sum = 0;
    int64_t tokens = 0;
    const int64_t lo = per_step * R / W, hi = per_step * (R + 1) / W;  // this rank's share
    for (int64_t i = lo; i < hi; ++i) {
      // Full batch: every example; batch b: examples (step-1)*b ... cycling through the data.
      poll_interrupt();  // stops between examples; the last checkpoint stays valid
      const Example& ex = data_[cfg_.batch > 0 ? ((step - 1) * cfg_.batch + i) % N : i];
      loss_sum += method_->loss_and_grad(model_, ex, P_, grads, 1.0 / per_step) / per_step;
      tokens += static_cast<int64_t>(ex.ids.size());
    }
    NoGrad ng;
    dist::CommStats comm0;
    if (W > 1) {
      comm0 = world->stats();
      // Summed in place (Gloo for CPU tensors, NCCL for CUDA tensors when built with it).
      std::vector<Tensor> gs;
      for (auto& [name, g] : grads) gs.push_back(g);
      std::vector<double> d = {loss_sum, static_cast<double>(tokens)};
      world->allreduce_sum(gs, d);
      loss_sum = d[0];
      tokens = static_cast<int64_t>(d[1]);
    }
    double l2_term = 0;
    if (cfg_.l2 > 0)
      for (auto& [name, g] : grads) {
        const Tensor& p = P_.at(name);
        l2_term += cfg_.l2 * p.pow(2).sum().item<double>();
        g.add_(p, 2.0 * cfg_.l2);
      }
    double gn2 = 0;
    for (const auto& [name, g] : grads) gn2 += g.pow(2).sum().item<double>();
    const double gnorm = std::sqrt(gn2);
    if (!std::isfinite(loss_sum) || !std::isfinite(gnorm))
      throw Error("training diverged at step " + std::to_string(step) + ": loss " + std::to_string(loss_sum) +
                  ", gradient norm " + std::to_string(gnorm) + " (try a lower --lr)");
    if (cfg_.grad_clip > 0) {
      const double coef = cfg_.grad_clip / (gnorm + 1e-6);
      if (coef < 1.0)
        for (auto& [name, g] : grads) g.mul_(coef);
    }
    // Adam (PyTorch semantics, no weight decay).
    const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(step));
    for (auto& [name, p] : P_) {
      const Tensor& g = grads.at(name);
      m_[name].mul_(cfg_.beta1).add_(g, 1.0 - cfg_.beta1);
      v_[name].mul_(cfg_.beta2).addcmul_(g, g, 1.0 - cfg_.beta2);
      Tensor denom = (v_[name] / bc2).sqrt_().add_(cfg_.adam_eps);
      p.addcdiv_(m_[name], denom, -cfg_.lr / bc1);
    }
    last_loss_ = loss_sum;
    const double t_ckpt = now();
    if (R == 0) save_checkpoint(out_dir, step);
    const double ckpt_seconds = now() - t_ckpt;

    StepReport r;
    r.step = step;
    r.steps = cfg_.steps;
    r.loss = loss_sum;
    r.objective = loss_sum + l2_term;
    r.grad_norm = gnorm;
    double pn2 = 0;
    for (const auto& [name, p] : P_) {
      const double n = p.norm().item<double>();
      pn2 += n * n;
      if (method_->name() == "s0") r.state_norms.push_back({std::stoll(name), n});
    }
    r.param_norm = std::sqrt(pn2);
    r.tokens = tokens;
    r.seconds = now() - t0;
    r.checkpoint_seconds = ckpt_seconds;
    elapsed += r.seconds;
    r.tokens_per_s = tokens / std::max(r.seconds, 1e-9);
    r.eta_seconds = elapsed / (step - start) * (cfg_.steps - step);
    if (W > 1) {
      const dist::CommStats c = world->stats();
      r.ranks = W;
      r.comm_seconds = c.seconds - comm0.seconds;
      r.comm_bytes_sent = c.bytes_sent - comm0.bytes_sent;
      r.comm_bytes_received = c.bytes_received - comm0.bytes_received;
    }
    if (on_step && R == 0) on_step(r);
  }
  ParamMap out;
  for (const auto& [name, p] : P_) out[name] = p.clone();
  return out;
}

// ---------------------------------------------------------------------------------------

void require_recurrent_layers(const models::CausalLM& model, const std::string& what) {
  if (model.recurrent_layers().empty())
    throw Error("training " + what + ": this " + model.model_type() +
                " model has no recurrent layers (a pure Transformer); train LoRA or a prefix on it instead");
}

Trainer::Trainer(models::CausalLM& model, std::vector<Example> data, TrainConfig cfg)
    : model_(model), num_examples_(data.size()), cfg_(std::move(cfg)) {
  require_recurrent_layers(model_, "S0 states");
  layers_ = adapters::select_layers(cfg_.layers, model_.recurrent_layers());
  if (layers_.empty()) throw Error("training: --layers '" + cfg_.layers + "' selects no layer");
  ParamMap init;
  for (auto l : layers_) init[std::to_string(l)] = at::zeros(model_.state_shape(), at::kFloat);
  const double a = cfg_.alpha.value_or(adapters::default_alpha(model_.recurrent_arch()));
  loop_ = std::make_unique<ParamTrainer>(model_, std::move(data), cfg_, std::move(init),
                                         std::make_shared<S0Method>(cfg_, a));
}

adapters::StateSet Trainer::train(const std::string& out_dir, bool resume,
                                  const std::function<void(const StepReport&)>& on_step) {
  ParamMap p = loop_->train(out_dir, resume, on_step);
  adapters::StateSet set;
  set.arch = model_.recurrent_arch();
  set.state_shape = model_.state_shape();
  set.recurrent_layers = model_.recurrent_layers();  // untrained layers are saved as zeros
  for (const auto& [name, s] : p) set.states[std::stoll(name)] = s;
  set.config = {{"n_steps", cfg_.steps},
                {"lr", cfg_.lr},
                {"l2_lambda", cfg_.l2},
                {"alpha", cfg_.alpha.value_or(adapters::default_alpha(set.arch))},
                {"normalize", cfg_.normalize},
                {"grad_clip", cfg_.grad_clip},
                {"max_length", cfg_.max_length},
                {"alpha_in_training", cfg_.alpha_in_training},
                {"layers", cfg_.layers},
                {"seed", cfg_.seed},
                {"num_examples", num_examples_},
                {"final_loss", loop_->final_loss()}};
  if (!dist::current() || dist::current()->root()) adapters::save_state_set(out_dir, set);
  return set;
}

nlohmann::json to_json(const StepReport& r) {
  nlohmann::json j = {{"step", r.step},           {"steps", r.steps},
                      {"loss", r.loss},           {"objective", r.objective},
                      {"grad_norm", r.grad_norm}, {"param_norm", r.param_norm},
                      {"tokens_per_s", r.tokens_per_s},
                      {"seconds", r.seconds},     {"eta_seconds", r.eta_seconds}};
  if (r.ranks > 1) {
    j["ranks"] = r.ranks;
    j["comm_seconds"] = r.comm_seconds;
    j["comm_bytes_sent"] = r.comm_bytes_sent;
    j["comm_bytes_received"] = r.comm_bytes_received;
  }
  if (!r.state_norms.empty()) {
    nlohmann::json norms = nlohmann::json::object();
    for (const auto& [l, n] : r.state_norms) norms[std::to_string(l)] = n;
    j["state_norms"] = norms;
  }
  return j;
}

}  // namespace s0::train
