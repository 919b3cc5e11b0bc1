#pragma once
// S0 training (shared spec METHOD.md section 2): one float32 state per chosen recurrent
// layer, zero-initialised, model frozen. Each step is one pass over all examples (each
// forward + backward with loss / N, gradients accumulated), then the L2 term, global
// gradient-norm clipping, one Adam step. A checkpoint after every step makes --resume
// continue exactly where an interrupted run stopped.
#include <functional>
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
  std::vector<std::pair<int64_t, double>> state_norms;
  int64_t tokens = 0;            // tokens processed this step
  double seconds = 0, tokens_per_s = 0, eta_seconds = 0;  // seconds: the whole step
  double checkpoint_seconds = 0;  // of which writing the checkpoint (once per step, not per example)
};

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
  void save_checkpoint(const std::string& dir, int64_t step) const;
  int64_t load_checkpoint(const std::string& dir);
  std::string fingerprint() const;  // config + data identity, for resume checks
  adapters::StateSet state_set(int64_t steps_done, double final_loss) const;

  models::CausalLM& model_;
  std::vector<Example> data_;
  TrainConfig cfg_;
  std::vector<int64_t> layers_;
  models::StateMap S_, m_, v_;  // parameters and Adam moments (float32)
};

}  // namespace s0::train
