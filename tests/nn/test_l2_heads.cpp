// The L2-normalised heads (src/s0/nn/l2_heads.h): the fused kernel against its definition
// (nn::l2_norm_heads_reference, ATen ops with autograd), values and gradients.
#include <gtest/gtest.h>

#include "s0/nn/l2_heads.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

}  // namespace

TEST(FusedNorms, L2NormHeadsMatchesTheReferenceOpsWithGradients) {
  auto g = gen(7);
  for (auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    const auto acc = dt == at::kDouble ? at::kDouble : at::kFloat;
    // A head-split slice of a wider projection, as the model passes it (strided rows).
    Tensor wide = at::randn({2, 9, 3 * 40}, g).to(dt);
    Tensor up = at::randn({2, 3, 9, 20}, g).to(acc);
    const double scale = 0.3;
    Tensor w1 = wide.clone().requires_grad_(true), w2 = wide.clone().requires_grad_(true);
    Tensor y1 = nn::l2_norm_heads(w1.narrow(2, 40, 60).view({2, 9, 3, 20}), scale);
    Tensor y2 = nn::l2_norm_heads_reference(w2.narrow(2, 40, 60).view({2, 9, 3, 20}), scale);
    ASSERT_EQ(y1.sizes(), y2.sizes());
    EXPECT_TRUE(y1.is_contiguous());
    const double tol = dt == at::kDouble ? 1e-14 : dt == at::kFloat ? 1e-6 : 1e-2;
    EXPECT_LT(max_rel(y1.to(at::kDouble), y2.to(at::kDouble)), tol) << dt;
    Tensor g1 = torch::autograd::grad({(y1 * up).sum()}, {w1})[0];
    Tensor g2 = torch::autograd::grad({(y2 * up).sum()}, {w2})[0];
    EXPECT_LT(max_rel(g1.to(at::kDouble), g2.to(at::kDouble)), tol * 4) << dt;
    EXPECT_EQ(g1.narrow(2, 0, 40).abs().max().item<double>(), 0.0);  // outside the slice
  }
}
