#include "s0/generate/sampler.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "s0/nn/vec_ops.h"
#include "s0/util/error.h"

namespace s0::generate {

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) throw Error("top_p must be in (0, 1]");
  if (p.top_k < 0) throw Error("top_k must be >= 0");
  if (!std::isfinite(p.temperature) || p.temperature < 0) throw Error("temperature must be >= 0");
}

int64_t Sampler::sample(const float* logits, int64_t n) {
  if (n <= 0) throw Error("sampler: empty logits");
  if (n > INT32_MAX) throw Error("sampler: vocabulary too large");
  // Greedy: the first maximum, NaNs skipped unless the row starts with one (what
  // std::max_element does).
  const float max_logit = nn::max_ignoring_nan(logits, n);
  const int64_t greedy = std::isnan(logits[0]) ? 0 : std::min(n - 1, nn::find_first(logits, n, max_logit));
  if (p_.temperature <= 0.0) return greedy;

  // Every token's weight exp((l - max) / T) once, in f32, and their total in f64.
  w_.resize(static_cast<size_t>(n));
  const double total = nn::exp_shifted(logits, max_logit, static_cast<float>(1.0 / p_.temperature), w_.data(), n);
  const float* w = w_.data();
  // Non-finite logits (NaN, or an infinite maximum) leave no distribution to draw from:
  // the greedy token, as with temperature 0.
  if (!(total >= 1.0 && std::isfinite(total))) return greedy;

  if (p_.top_k == 0 && p_.top_p >= 1.0) {  // plain temperature sampling over every token
    double r = std::uniform_real_distribution<double>(0.0, total)(rng_), acc = 0;
    for (int64_t i = 0; i < n; ++i)
      if (r < (acc += w[i])) return i;
    return n - 1;
  }
  if (p_.top_k == 0) return top_p_only(logits, n, total);

  // Top-k (then top-p within it): the k best by logit, ties by index.
  const int64_t k = std::min<int64_t>(p_.top_k, n);
  cand_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) cand_[i] = {logits[i], static_cast<int32_t>(i)};
  std::partial_sort(cand_.begin(), cand_.begin() + k, cand_.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  probs_.resize(static_cast<size_t>(k));
  double z = 0;
  for (int64_t i = 0; i < k; ++i) z += probs_[i] = w[cand_[i].second];
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

// Top-p alone: the smallest set of best tokens (by logit, ties by index) holding at least
// top_p of the whole vocabulary's mass, then a draw among them. Without sorting the
// vocabulary: (1) tokens lighter than (1 - top_p) * total / n cannot be in the set (all of
// them together hold less than 1 - top_p), so only the heavier ones are kept as
// candidates; (2) the candidates go to buckets by the bits of their weight (16 per octave;
// weights are monotone in the logit, so buckets are ordered as the logits are), and the
// buckets are taken from the heaviest down until the mass is reached; (3) only the bucket
// where it is reached is sorted, and taken token by token.
int64_t Sampler::top_p_only(const float* logits, int64_t n, double total) {
  const float* w = w_.data();
  const double target = p_.top_p * total;
  idx_.resize(static_cast<size_t>(n));
  const int64_t nc =
      nn::indices_at_least(w, n, static_cast<float>((1.0 - p_.top_p) * total / static_cast<double>(n)), idx_.data());
  // Weights lie in (0, 1] (the best is exp(0) = 1): bucket = how far below 1.0's bits, in
  // sixteenths of an octave; 2^-64 and lighter share the last bucket.
  constexpr int kPerOctave = 16, kBuckets = 64 * kPerOctave + 1;
  auto bucket = [&](float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    const int64_t d = (int64_t{0x3f800000} - static_cast<int64_t>(u)) >> (23 - 4);
    return static_cast<int>(std::clamp<int64_t>(d, 0, kBuckets - 1));
  };
  bin_mass_.assign(kBuckets, 0.0);
  for (int64_t c = 0; c < nc; ++c) bin_mass_[bucket(w[idx_[c]])] += w[idx_[c]];
  double cum = 0;
  int edge = 0;
  for (; edge < kBuckets - 1 && cum + bin_mass_[edge] < target; ++edge) cum += bin_mass_[edge];
  // The edge bucket's tokens, best first; taken until the mass is reached (at least one
  // token overall).
  cand_.clear();
  for (int64_t c = 0; c < nc; ++c)
    if (bucket(w[idx_[c]]) == edge) cand_.push_back({logits[idx_[c]], idx_[c]});
  std::sort(cand_.begin(), cand_.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  size_t take = 0;
  while (take < cand_.size() && cum < target) cum += w[cand_[take++].second];
  // The draw: the buckets above the edge in index order, then the edge's tokens taken.
  double r = std::uniform_real_distribution<double>(0.0, cum)(rng_), acc = 0;
  int64_t last = -1;
  for (int64_t c = 0; c < nc; ++c) {
    const int32_t i = idx_[c];
    if (bucket(w[i]) < edge) {
      last = i;
      if (r < (acc += w[i])) return i;
    }
  }
  for (size_t t = 0; t < take; ++t) {
    last = cand_[t].second;
    if (r < (acc += w[last])) return last;
  }
  return last;
}

}  // namespace s0::generate
