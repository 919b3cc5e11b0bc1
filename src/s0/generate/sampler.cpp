#include "s0/generate/sampler.h"

#include <algorithm>
#include <cmath>

#include "s0/util/error.h"

namespace s0::generate {

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) throw Error("top_p must be in (0, 1]");
  if (p.top_k < 0) throw Error("top_k must be >= 0");
  if (!std::isfinite(p.temperature) || p.temperature < 0) throw Error("temperature must be >= 0");
}

int64_t Sampler::sample(const float* logits, int64_t n) {
  if (n <= 0) throw Error("sampler: empty logits");
  if (p_.temperature <= 0.0) return std::max_element(logits, logits + n) - logits;

  const double inv_t = 1.0 / p_.temperature;
  const float max_logit = *std::max_element(logits, logits + n);
  auto weight = [&](float l) { return std::exp((static_cast<double>(l) - max_logit) * inv_t); };
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += weight(logits[i]);

  if (p_.top_k == 0 && p_.top_p >= 1.0) {  // plain temperature sampling over every token
    double r = std::uniform_real_distribution<double>(0.0, total)(rng_), acc = 0;
    for (int64_t i = 0; i < n; ++i)
      if (r < (acc += weight(logits[i]))) return i;
    return n - 1;
  }

  // Candidates sorted by logit: the top-k, or (top-p only) a top block grown until it holds
  // at least top_p of the mass, so the whole vocabulary is rarely sorted.
  cand_.resize(n);
  for (int64_t i = 0; i < n; ++i) cand_[i] = {logits[i], static_cast<int32_t>(i)};
  auto desc = [](const auto& a, const auto& b) { return a.first > b.first; };
  int64_t k = p_.top_k > 0 ? std::min<int64_t>(p_.top_k, n) : std::min<int64_t>(n, 256);
  while (true) {
    std::partial_sort(cand_.begin(), cand_.begin() + k, cand_.end(), desc);
    if (p_.top_k > 0 || k == n) break;
    double mass = 0;
    for (int64_t i = 0; i < k; ++i) mass += weight(cand_[i].first);
    if (mass >= p_.top_p * total) break;
    k = std::min<int64_t>(n, k * 4);
  }
  probs_.resize(k);
  double z = 0;
  for (int64_t i = 0; i < k; ++i) z += probs_[i] = weight(cand_[i].first);
  if (p_.top_k == 0) z = total;  // top-p alone: probabilities over the full vocabulary
  int64_t keep = k;
  if (p_.top_p < 1.0) {  // smallest prefix with mass >= top_p (at least one token)
    double cum = 0;
    for (int64_t i = 0; i < k; ++i) {
      cum += probs_[i] / z;
      if (cum >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (int64_t i = 0; i < keep; ++i) kept += probs_[i];
  double r = std::uniform_real_distribution<double>(0.0, kept)(rng_), acc = 0;
  for (int64_t i = 0; i < keep; ++i)
    if (r < (acc += probs_[i])) return cand_[i].second;
  return cand_[keep - 1].second;
}

}  // namespace s0::generate
