#pragma once
// Token choice from a row of logits: greedy, or temperature -> top-k -> top-p sampling
// (the order Hugging Face's logits processors apply) with a seeded generator. Torch-free.
#include <cstdint>
#include <random>
#include <vector>

namespace s0::generate {

struct SamplingParams {
  double temperature = 0.0;  // <= 0: greedy (argmax)
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // Chooses a token id from logits[0..n). Deterministic for a given seed and input.
  int64_t sample(const float* logits, int64_t n);

 private:
  int64_t top_p_only(const float* logits, int64_t n, double total);

  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<float> w_;  // exp((logit - max) / temperature) of the row
  std::vector<int32_t> idx_;
  std::vector<std::pair<float, int32_t>> cand_;
  std::vector<double> probs_, bin_mass_;
};

}  // namespace s0::generate
