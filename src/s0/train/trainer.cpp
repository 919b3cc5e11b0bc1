#include "s0/train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include "s0/io/safetensors.h"
#include "s0/models/weights.h"
#include "s0/util/error.h"

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

}  // namespace

Trainer::Trainer(models::CausalLM& model, std::vector<Example> data, TrainConfig cfg)
    : model_(model), data_(std::move(data)), cfg_(std::move(cfg)) {
  if (data_.empty()) throw Error("training: no examples");
  if (cfg_.steps < 0) throw Error("training: --steps must be >= 0");
  if (!(cfg_.lr > 0)) throw Error("training: --lr must be positive");
  if (cfg_.l2 < 0) throw Error("training: --l2 must be >= 0");
  for (size_t i = 0; i < data_.size(); ++i)
    if (data_[i].num_targets() == 0)
      throw Error("training example " + std::to_string(i) + " has no completion tokens");
  layers_ = adapters::select_layers(cfg_.layers, model_.recurrent_layers());
  if (layers_.empty()) throw Error("training: --layers '" + cfg_.layers + "' selects no layer");
  for (auto l : layers_) {
    S_[l] = at::zeros(model_.state_shape(), at::kFloat);
    m_[l] = at::zeros_like(S_[l]);
    v_[l] = at::zeros_like(S_[l]);
  }
}

std::string Trainer::fingerprint() const {
  uint64_t h = 1469598103934665603ULL;
  for (const auto& ex : data_) {
    h = fnv(h, ex.ids.data(), ex.ids.size() * sizeof(int64_t));
    h = fnv(h, ex.target.data(), ex.target.size());
  }
  char buf[512];
  // recompute changes rounding only, so it is not part of the fingerprint.
  snprintf(buf, sizeof buf, "data=%016llx lr=%.17g l2=%.17g clip=%.17g ait=%d layers=%s b1=%.17g b2=%.17g eps=%.17g",
           static_cast<unsigned long long>(h), cfg_.lr, cfg_.l2, cfg_.grad_clip, cfg_.alpha_in_training ? 1 : 0,
           io::shape_to_string(layers_).c_str(), cfg_.beta1, cfg_.beta2, cfg_.adam_eps);
  return buf;
}

void Trainer::save_checkpoint(const std::string& dir, int64_t step) const {
  std::vector<std::pair<io::TensorSpec, const void*>> t;
  for (const auto* group : {&S_, &m_, &v_}) {
    const char* prefix = group == &S_ ? "S." : group == &m_ ? "m." : "v.";
    for (const auto& [l, x] : *group)
      t.push_back({io::TensorSpec{prefix + std::to_string(l), io::DType::F32, x.sizes().vec()}, x.data_ptr()});
  }
  // One file holds parameters, moments, step and fingerprint: it is replaced atomically.
  io::save_safetensors(dir + "/" + kCheckpoint, t,
                       {{"format", "pt"}, {"step", std::to_string(step)}, {"fingerprint", fingerprint()}});
}

int64_t Trainer::load_checkpoint(const std::string& dir) {
  const std::string path = dir + "/" + kCheckpoint;
  if (!std::filesystem::exists(path)) throw Error("--resume: no checkpoint at " + path);
  io::SafetensorsFile f(path);
  const auto& meta = f.metadata();
  if (!meta.count("step") || !meta.count("fingerprint")) throw Error(path + ": not an s0 training checkpoint");
  if (meta.at("fingerprint") != fingerprint())
    throw Error(path + ": checkpoint was made with other data or settings (" + meta.at("fingerprint") +
                "), now: " + fingerprint());
  for (auto* group : {&S_, &m_, &v_}) {
    const char* prefix = group == &S_ ? "S." : group == &m_ ? "m." : "v.";
    for (auto& [l, x] : *group) {
      const auto& t = f.get(prefix + std::to_string(l));
      if (t.shape != x.sizes().vec() || t.dtype != io::DType::F32)
        throw Error(path + ": tensor '" + t.name + "' does not match the model's state shape");
      x.copy_(models::tensor_view(t));
    }
  }
  return std::stoll(meta.at("step"));
}

adapters::StateSet Trainer::state_set(int64_t steps_done, double final_loss) const {
  adapters::StateSet set;
  set.arch = model_.recurrent_arch();
  set.state_shape = model_.state_shape();
  set.recurrent_layers = model_.recurrent_layers();  // untrained layers are saved as zeros
  for (const auto& [l, s] : S_) set.states[l] = s.clone();
  set.config = {{"n_steps", steps_done},
                {"lr", cfg_.lr},
                {"l2_lambda", cfg_.l2},
                {"alpha", cfg_.alpha.value_or(adapters::default_alpha(set.arch))},
                {"normalize", cfg_.normalize},
                {"grad_clip", cfg_.grad_clip},
                {"max_length", cfg_.max_length},
                {"alpha_in_training", cfg_.alpha_in_training},
                {"layers", cfg_.layers},
                {"seed", cfg_.seed},
                {"num_examples", data_.size()},
                {"final_loss", final_loss}};
  return set;
}

adapters::StateSet Trainer::train(const std::string& out_dir, bool resume,
                                  const std::function<void(const StepReport&)>& on_step) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create output directory '" + out_dir + "': " + ec.message());
  int64_t start = resume ? load_checkpoint(out_dir) : 0;
  if (start > cfg_.steps)
    throw Error("--resume: the checkpoint is at step " + std::to_string(start) + ", beyond --steps " +
                std::to_string(cfg_.steps));
  const double N = static_cast<double>(data_.size());
  double last_loss = std::nan(""), elapsed = 0;
  std::vector<int64_t> order(layers_.begin(), layers_.end());

  for (int64_t step = start + 1; step <= cfg_.steps; ++step) {
    const double t0 = now();
    std::vector<Tensor> leaves, grads;  // leaves: autograd handles (plain-autograd path only)
    for (auto l : order) {
      if (!cfg_.recompute) leaves.push_back(S_.at(l).detach().requires_grad_(true));
      grads.push_back(at::zeros_like(S_.at(l)));
    }
    // The states the model sees: S, or alpha * S with --alpha-in-training.
    models::StateMap inj;
    const double a = cfg_.alpha.value_or(adapters::default_alpha(model_.recurrent_arch()));
    double loss_sum = 0;
    int64_t tokens = 0;
    for (const auto& ex : data_) {
      if (cfg_.recompute) {
        // Gradients w.r.t. the injected states, chained through the alpha scale.
        for (size_t i = 0; i < order.size(); ++i)
          inj[order[i]] = cfg_.alpha_in_training ? adapters::scale_state(S_.at(order[i]), a, false) : S_.at(order[i]);
        auto r = completion_loss_and_grad(model_, ex, inj, cfg_.keep_projections);
        const double chain = (cfg_.alpha_in_training ? a : 1.0) / N;
        for (size_t i = 0; i < order.size(); ++i) grads[i].add_(r.grads.at(order[i]), chain);
        loss_sum += r.loss / N;
      } else {
        for (size_t i = 0; i < order.size(); ++i)
          inj[order[i]] = cfg_.alpha_in_training ? adapters::scale_state(leaves[i], a, false) : leaves[i];
        Tensor loss = completion_loss(model_, ex, &inj) / N;
        auto g = torch::autograd::grad({loss}, leaves);
        for (size_t i = 0; i < g.size(); ++i) grads[i].add_(g[i]);
        loss_sum += loss.item<double>();
      }
      tokens += static_cast<int64_t>(ex.ids.size());
    }
    NoGrad ng;
    double l2_term = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      const Tensor& s = S_.at(order[i]);
      l2_term += cfg_.l2 * s.pow(2).sum().item<double>();
      grads[i].add_(s, 2.0 * cfg_.l2);
    }
    double gn2 = 0;
    for (const auto& g : grads) gn2 += g.pow(2).sum().item<double>();
    const double gnorm = std::sqrt(gn2);
    if (!std::isfinite(loss_sum) || !std::isfinite(gnorm))
      throw Error("training diverged at step " + std::to_string(step) + ": loss " + std::to_string(loss_sum) +
                  ", gradient norm " + std::to_string(gnorm) + " (try a lower --lr)");
    if (cfg_.grad_clip > 0) {
      const double coef = cfg_.grad_clip / (gnorm + 1e-6);
      if (coef < 1.0)
        for (auto& g : grads) g.mul_(coef);
    }
    // Adam (PyTorch semantics, no weight decay).
    const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(step));
    for (size_t i = 0; i < order.size(); ++i) {
      const int64_t l = order[i];
      m_[l].mul_(cfg_.beta1).add_(grads[i], 1.0 - cfg_.beta1);
      v_[l].mul_(cfg_.beta2).addcmul_(grads[i], grads[i], 1.0 - cfg_.beta2);
      Tensor denom = (v_[l] / bc2).sqrt_().add_(cfg_.adam_eps);
      S_[l].addcdiv_(m_[l], denom, -cfg_.lr / bc1);
    }
    const double t_ckpt = now();
    save_checkpoint(out_dir, step);
    const double ckpt_seconds = now() - t_ckpt;
    last_loss = loss_sum;

    StepReport r;
    r.step = step;
    r.steps = cfg_.steps;
    r.loss = loss_sum;
    r.objective = loss_sum + l2_term;
    r.grad_norm = gnorm;
    for (auto l : order) r.state_norms.push_back({l, S_.at(l).norm().item<double>()});
    r.tokens = tokens;
    r.seconds = now() - t0;
    r.checkpoint_seconds = ckpt_seconds;
    elapsed += r.seconds;
    r.tokens_per_s = tokens / std::max(r.seconds, 1e-9);
    r.eta_seconds = elapsed / (step - start) * (cfg_.steps - step);
    if (on_step) on_step(r);
  }
  adapters::StateSet set = state_set(cfg_.steps, last_loss);
  adapters::save_state_set(out_dir, set);
  return set;
}

}  // namespace s0::train
