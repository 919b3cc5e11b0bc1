// The fused cross-entropy rows (src/s0/nn/cross_entropy.h) against its definition
// (nn::cross_entropy_rows_reference: all logits, at::cross_entropy_loss, autograd).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "s0/nn/cross_entropy.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

}  // namespace

TEST(FusedCrossEntropy, LossAndGradientMatchAutogradAcrossChunksAndBlocks) {
  auto g = gen(6);
  const int64_t M = 7, D = 24, V = 5000;  // V spans several internal blocks of 2048
  for (auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    for (double mult : {1.0, 0.37}) {
      Tensor h = at::randn({M, D}, g).to(dt), w = (at::randn({V, D}, g) * 0.3).to(dt);
      Tensor labels = at::tensor(std::vector<int64_t>{0, 2047, 2048, 4095, 4096, 4999, 17}, at::kLong);
      const double scale = 1.0 / M;
      auto got = nn::cross_entropy_rows(h, w, labels, scale, /*chunk=*/3, mult);
      auto want = nn::cross_entropy_rows_reference(h, w, labels, scale, mult);
      const double tol = dt == at::kDouble ? 1e-12 : dt == at::kFloat ? 1e-5 : 2e-2;
      EXPECT_NEAR(got.loss_sum, want.loss_sum, tol * std::abs(want.loss_sum)) << dt << " " << mult;
      EXPECT_LT(max_rel(got.grad.to(at::kDouble), want.grad.to(at::kDouble)), tol) << dt << " " << mult;
    }
  }
}

TEST(FusedCrossEntropy, RejectsLabelsOutOfRange) {
  Tensor h = at::randn({2, 4}), w = at::randn({10, 4});
  EXPECT_THROW(nn::cross_entropy_rows(h, w, at::tensor(std::vector<int64_t>{1, 10}, at::kLong), 1.0), c10::Error);
  EXPECT_THROW(nn::cross_entropy_rows(h, w, at::tensor(std::vector<int64_t>{-1, 0}, at::kLong), 1.0), c10::Error);
}
