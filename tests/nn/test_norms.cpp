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

// The decode kernel of the plain RMSNorm (Falcon-H1) against its ATen definition, and each row
// computed alone: a batch equals its rows one at a time, bitwise, with 1 or 2 threads. D = 100
// leaves a tail after the vector lanes.
TEST(FusedNorms, RmsNormRowsMatchesTheDefinitionAndIsRowWise) {
  NoGrad ng;
  auto g = gen(10);
  const int saved = at::get_num_threads();
  for (auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    for (int64_t D : {64, 100}) {
      Tensor x = (at::randn({7, 1, D}, g) * 3).to(dt), w = (at::randn({D}, g) * 0.5 + 1).to(dt);
      Tensor y = nn::rms_norm_rows(x, w, 1e-5);
      const double tol = dt == at::kDouble ? 1e-14 : dt == at::kFloat ? 1e-6 : 1e-2;
      EXPECT_LT(max_rel(y.to(at::kDouble), nn::rms_norm(x, w, 1e-5).to(at::kDouble)), tol) << dt << " D " << D;
      for (int64_t r = 0; r < 7; ++r)
        EXPECT_TRUE(at::equal(y[r], nn::rms_norm_rows(x[r], w, 1e-5))) << dt << " row " << r;
      at::set_num_threads(1);
      Tensor one = nn::rms_norm_rows(x, w, 1e-5);
      at::set_num_threads(std::max(saved, 2));
      EXPECT_TRUE(at::equal(one, nn::rms_norm_rows(x, w, 1e-5))) << dt;
      at::set_num_threads(saved);
    }
  }
}
