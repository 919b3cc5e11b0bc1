// The decode GEMV against libtorch's GEMM, for both dtypes and awkward sizes.
#include <gtest/gtest.h>

#include "s0/nn/linear.h"

using namespace s0;

TEST(Gemv, MatchesTorchLinear) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 17}, {5, 16}, {67, 100}, {130, 1024}}) {
      Tensor w = at::randn({N, K}, gen).to(dt), x = at::randn({1, 1, K}, gen).to(dt);
      Tensor ref = at::linear(x.to(at::kDouble), w.to(at::kDouble));
      NoGrad ng;
      Tensor got = nn::linear(x, w);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{1, 1, N}));
      ASSERT_EQ(got.scalar_type(), dt);
      // fp32 accumulation, one rounding to the output dtype.
      double tol = dt == at::kFloat ? 1e-5 : 8e-3;
      double err = ((got.to(at::kDouble) - ref).abs() / (ref.abs() + 1.0)).max().item<double>();
      EXPECT_LT(err, tol) << "N=" << N << " K=" << K << " dtype=" << dt;
    }
  }
}

TEST(Gemv, UsedOnlyWithoutAutograd) {
  Tensor w = at::randn({8, 16}), x = at::randn({1, 16}).requires_grad_(true);
  Tensor y = nn::linear(x, w);  // grad mode: must stay differentiable
  ASSERT_TRUE(y.requires_grad());
  auto g = torch::autograd::grad({y.sum()}, {x})[0];
  EXPECT_TRUE(at::allclose(g, w.sum(0, true), 1e-5, 1e-5));  // summation order differs
}
