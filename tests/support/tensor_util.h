#pragma once
// Tensor helpers shared by the numerical tests.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "s0/util/torch.h"

namespace s0::testing {

// max |a - b| / max |b| (the parity and form-equality measure of the tests).
inline double max_rel(const Tensor& a, const Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
}

// Token ids as a [1, L] int64 tensor.
inline Tensor ids_tensor(const std::vector<int64_t>& ids) {
  return at::tensor(ids, at::kLong).view({1, -1}).clone();
}

// n token ids drawn uniformly from [0, vocab), seeded.
inline std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Tensor t = at::randint(0, vocab, {n}, gen, at::kLong);
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
}

}  // namespace s0::testing
