#pragma once
// S0 training (shared spec METHOD.md section 2): one float32 state per chosen recurrent
// layer, zero-initialised, model frozen. Each step is one pass over all examples (each
// forward + backward with loss / N, gradients accumulated), then the L2 term, global
// gradient-norm clipping, one Adam step. A checkpoint after every step makes --resume
// continue exactly where an interrupted run stopped.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "s0/adapters/state_set.h"
#include "s0/train/objective.h"

namespace s0::train {

struct TrainConfig {
  int64_t steps = 20;
  double lr = 1e-3;
  double l2 = 5e-4;         // l2_lambda: + l2 * sum_l ||S_l||^2
  double grad_clip = 1.0;   // global norm over all state tensors; <= 0: off
  std::optional<double> alpha;   // inference scale saved with the states (default per arch)
  bool normalize = false;
  bool alpha_in_training = false;  // the paper's Algorithm 1: alpha * S0 inside the loss
  std::string layers = "all";
  int64_t max_length = 2048;
  uint64_t seed = 0;
  // Examples per optimiser step: 0 = all of them (S0's full batch, loss / N); b > 0 = the
  // next b examples in order, cycling through the data (the paper's LoRA schedule is b = 1).
  int64_t batch = 0;
  bool recompute = true;  // per-layer recomputation: memory of ~one layer's activations
  // With recompute: keep the layers' projection outputs from the forward pass (29.2 KB per
  // token per layer in bf16 at the 0.8B shape) so recomputation redoes no GEMM.
  bool keep_projections = true;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
};

struct StepReport {
  int64_t step = 0, steps = 0;   // 1-based step just finished
  double loss = 0;               // mean completion CE over the examples
  double objective = 0;          // loss + L2 term
  double grad_norm = 0;          // before clipping
  std::vector<std::pair<int64_t, double>> state_norms;  // S0: per layer
  double param_norm = 0;         // every trained tensor together
  int64_t tokens = 0;            // tokens processed this step
  double seconds = 0, tokens_per_s = 0, eta_seconds = 0;  // seconds: the whole step
  double checkpoint_seconds = 0;  // of which writing the checkpoint (once per step, not per example)
  // Data-parallel runs (dist::current()): ranks, and of `seconds` the time in the gradient
  // allreduce (waiting for the slowest rank included) and the bytes this rank sent/received.
  int ranks = 1;
  double comm_seconds = 0;
  int64_t comm_bytes_sent = 0, comm_bytes_received = 0;
};

// A step report as `s0 train` logs it (one JSON object; state_norms keyed by layer).
nlohmann::json to_json(const StepReport& r);

// Parameter names in a stable order: decimal names (S0's and offsets' layer indices)
// numerically, then the rest by name. Sums over parameters (gradient norm, L2) follow it.
struct ParamOrder {
  bool operator()(const std::string& a, const std::string& b) const;
};
using ParamMap = std::map<std::string, Tensor, ParamOrder>;

// What a run learns: named float32 parameters and the objective's gradient w.r.t. them.
// S0 (initial states), LoRA factors and state offsets are the methods; the optimiser,
// schedule, L2, clipping, checkpoints and resume are shared (ParamTrainer).
class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;   // "s0" | "lora" | "offset"
  virtual std::string identity() const = 0;  // settings that change the run (for resume checks)
  // Completion loss of `ex` with parameters `p`; adds weight * d loss / d p into `grads`.
  virtual double loss_and_grad(models::CausalLM& model, const Example& ex, const ParamMap& p, ParamMap& grads,
                               double weight) = 0;
};

// A method whose parameters enter through an adapter built from them (LoRA, state offset):
// the loss is differentiated by autograd through the whole forward pass (memory grows with
// the sequence; S0's per-layer recomputation is specific to initial states).
class AdapterMethod : public Method {
 public:
  using Builder = std::function<std::shared_ptr<const models::Adapter>(const ParamMap&)>;
  AdapterMethod(std::string name, std::string identity, Builder build)
      : name_(std::move(name)), identity_(std::move(identity)), build_(std::move(build)) {}
  std::string name() const override { return name_; }
  std::string identity() const override { return identity_; }
  double loss_and_grad(models::CausalLM& model, const Example& ex, const ParamMap& p, ParamMap& grads,
                       double weight) override;

 private:
  std::string name_, identity_;
  Builder build_;
};

// The optimisation loop: Adam (PyTorch semantics) on every parameter, the schedule of
// cfg.batch, + cfg.l2 * sum ||P||^2, global gradient-norm clipping, a checkpoint (parameters,
// moments, step, fingerprint) after every step so `resume` continues exactly.
class ParamTrainer {
 public:
  ParamTrainer(models::CausalLM& model, std::vector<Example> data, TrainConfig cfg, ParamMap init,
               std::shared_ptr<Method> method);
  // Trains to cfg.steps; returns the parameters. Checkpoints into `out_dir`.
  ParamMap train(const std::string& out_dir, bool resume, const std::function<void(const StepReport&)>& on_step = {});
  double final_loss() const { return last_loss_; }
  int64_t num_examples() const { return static_cast<int64_t>(data_.size()); }

 private:
  void save_checkpoint(const std::string& dir, int64_t step) const;
  int64_t load_checkpoint(const std::string& dir);
  std::string fingerprint() const;

  models::CausalLM& model_;
  std::vector<Example> data_;
  TrainConfig cfg_;
  std::shared_ptr<Method> method_;
  ParamMap P_, m_, v_;
  double last_loss_ = 0;
};

// Throws a clear error naming the model when it has no recurrent layers (S0 and state
// offsets need them). `what` names the method ("S0 states", "state offsets").
void require_recurrent_layers(const models::CausalLM& model, const std::string& what);

// S0: one zero-initialised state per chosen recurrent layer, the model frozen.
class Trainer {
 public:
  Trainer(models::CausalLM& model, std::vector<Example> data, TrainConfig cfg);

  // Trains to cfg.steps. Checkpoints into `out_dir` after every step; `resume` continues from
  // the checkpoint there (refused if it was made with a different config or data). Writes
  // the final state set to `out_dir` (reference layout) and returns it.
  adapters::StateSet train(const std::string& out_dir, bool resume,
                           const std::function<void(const StepReport&)>& on_step = {});

  const std::vector<int64_t>& layers() const { return layers_; }

 private:
  models::CausalLM& model_;
  size_t num_examples_;
  TrainConfig cfg_;
  std::vector<int64_t> layers_;
  std::unique_ptr<ParamTrainer> loop_;
};

}  // namespace s0::train
