// The RMSNorm variants (src/s0/nn/norms.h): the fused kernels behind nn::rms_norm_1p and
// nn::gated_rms_norm_heads against their definitions (the *_reference ATen ops with
// autograd), values and gradients.
#include <gtest/gtest.h>

#include "s0/nn/norms.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

}  // namespace

TEST(FusedNorms, GatedRmsNormHeadsMatchesTheReferenceOpsWithGradients) {
  auto g = gen(8);
  for (auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    const auto acc = dt == at::kDouble ? at::kDouble : at::kFloat;
    const int64_t B = 2, L = 7, H = 3, V = 24;
    Tensor o = at::randn({B, H, L, V}, g).to(acc), z = (at::randn({B, L, H, V}, g) * 2).to(dt);
    Tensor w = (at::randn({V}, g) * 0.2 + 1).to(dt), up = at::randn({B, L, H * V}, g).to(dt);
    Tensor o1 = o.clone().requires_grad_(true), o2 = o.clone().requires_grad_(true);
    Tensor z1 = z.clone().requires_grad_(true), z2 = z.clone().requires_grad_(true);
    Tensor y1 = nn::gated_rms_norm_heads(o1, z1, w, 1e-6);
    Tensor y2 = nn::gated_rms_norm_heads_reference(o2, z2, w, 1e-6);
    const double tol = dt == at::kDouble ? 1e-14 : dt == at::kFloat ? 1e-6 : 1e-2;
    EXPECT_LT(max_rel(y1.to(at::kDouble), y2.to(at::kDouble)), tol) << dt;
    auto g1 = torch::autograd::grad({(y1 * up).sum()}, {o1, z1});
    auto g2 = torch::autograd::grad({(y2 * up).sum()}, {o2, z2});
    EXPECT_LT(max_rel(g1[0].to(at::kDouble), g2[0].to(at::kDouble)), tol * 4) << dt;
    EXPECT_LT(max_rel(g1[1].to(at::kDouble), g2[1].to(at::kDouble)), tol * 4) << dt;
  }
}

TEST(FusedNorms, RmsNorm1pMatchesTheFormulaWithGradients) {
  auto g = gen(9);
  for (auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    Tensor x = (at::randn({2, 5, 3, 64}, g) * 3).to(dt), w = (at::randn({64}, g) * 0.1).to(dt);
    Tensor up = at::randn({2, 5, 3, 64}, g).to(dt);
    Tensor x1 = x.clone().requires_grad_(true), x2 = x.clone().requires_grad_(true);
    Tensor y1 = nn::rms_norm_1p(x1, w, 1e-6);
    Tensor y2 = nn::rms_norm_1p_reference(x2, w, 1e-6);
    const double tol = dt == at::kDouble ? 1e-14 : dt == at::kFloat ? 1e-6 : 1e-2;
    EXPECT_LT(max_rel(y1.to(at::kDouble), y2.to(at::kDouble)), tol) << dt;
    Tensor g1 = torch::autograd::grad({(y1 * up).sum()}, {x1})[0];
    Tensor g2 = torch::autograd::grad({(y2 * up).sum()}, {x2})[0];
    EXPECT_LT(max_rel(g1.to(at::kDouble), g2.to(at::kDouble)), tol * 4) << dt;
  }
}
