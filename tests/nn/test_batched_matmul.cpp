// The small-product batched GEMM (src/s0/nn/batched_matmul.h) against at::bmm, values and
// gradients, every transpose case.
#include <gtest/gtest.h>

#include <vector>

#include "s0/nn/batched_matmul.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

TEST(Ssd, BatchedMatmulMatchesBmmWithGradients) {
  // The oneDNN path for float32 (when present) against at::bmm, every transpose case.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (int tcase = 0; tcase < 3; ++tcase) {
    const bool ta = tcase == 2, tb = tcase == 1;
    Tensor A = at::randn(ta ? std::vector<int64_t>{5, 7, 4} : std::vector<int64_t>{5, 4, 7}, gen).requires_grad_(true);
    Tensor B = at::randn(tb ? std::vector<int64_t>{5, 3, 7} : std::vector<int64_t>{5, 7, 3}, gen).requires_grad_(true);
    Tensor got = nn::batched_matmul(A, ta, B, tb);
    Tensor want = at::bmm(ta ? A.transpose(1, 2) : A, tb ? B.transpose(1, 2) : B);
    EXPECT_LT(max_rel(got, want), 1e-6) << "case " << tcase;
    Tensor w = at::randn(want.sizes(), gen);
    auto g1 = torch::autograd::grad({(got * w).sum()}, {A, B});
    auto g2 = torch::autograd::grad({(want * w).sum()}, {A, B});
    EXPECT_LT(max_rel(g1[0], g2[0]), 1e-6) << "dA, case " << tcase;
    EXPECT_LT(max_rel(g1[1], g2[1]), 1e-6) << "dB, case " << tcase;
  }
  if (!nn::batched_matmul_fast_available()) GTEST_SKIP() << "oneDNN sgemm not found: at::bmm fallback tested only";
}

}  // namespace
