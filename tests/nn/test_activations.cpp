// silu(g) * u (src/s0/nn/activations.h): the fused kernel against its definition
// (nn::silu_mul_reference, ATen ops with autograd), values and gradients, and the AVX-512 exp
// against float64 over the whole range.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "s0/nn/activations.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

}  // namespace

TEST(FusedSiluMul, ValuesAndGradientsMatchTheUnfusedOps) {
  auto g = gen(5);
  for (auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    Tensor a = (at::randn({3, 5, 301}, g) * 4).to(dt), b = at::randn({3, 5, 301}, g).to(dt);
    Tensor up = at::randn({3, 5, 301}, g).to(dt);
    Tensor a1 = a.clone().requires_grad_(true), b1 = b.clone().requires_grad_(true);
    Tensor a2 = a.clone().requires_grad_(true), b2 = b.clone().requires_grad_(true);
    Tensor y1 = nn::silu_mul(a1, b1), y2 = nn::silu_mul_reference(a2, b2);
    const double tol = dt == at::kDouble ? 1e-14 : dt == at::kFloat ? 1e-6 : 1e-2;
    EXPECT_LT(max_rel(y1.to(at::kDouble), y2.to(at::kDouble)), tol) << dt;
    auto g1 = torch::autograd::grad({(y1 * up).sum()}, {a1, b1});
    auto g2 = torch::autograd::grad({(y2 * up).sum()}, {a2, b2});
    EXPECT_LT(max_rel(g1[0].to(at::kDouble), g2[0].to(at::kDouble)), tol * 4) << dt;
    EXPECT_LT(max_rel(g1[1].to(at::kDouble), g2[1].to(at::kDouble)), tol * 4) << dt;
  }
}

TEST(FusedSiluMul, FloatExpIsAccurateOverTheWholeRange) {
  // silu(x) for x over [-110, 100] (exp under- and overflow on both ends) against float64.
  NoGrad ng;
  Tensor x = at::linspace(-110, 100, 200001, at::kFloat);
  Tensor got = nn::silu_mul(x, at::ones_like(x)).to(at::kDouble);
  Tensor xd = x.to(at::kDouble), want = xd * at::sigmoid(xd);
  Tensor rel = (got - want).abs() / want.abs().clamp_min(1e-30);
  // Where silu is far from 0 its value is representable: a few ulp at most.
  Tensor big = want.abs() > 1e-30;
  const double worst = rel.masked_select(big).max().item<double>();
  std::printf("silu f32 worst relative error %.3g\n", worst);
  EXPECT_LT(worst, 3e-7);  // ~2.5 ulp (measured 2.67e-7)
  EXPECT_TRUE(at::isnan(nn::silu_mul(at::full({17}, NAN), at::ones({17}))).all().item<bool>());
}

// The decode-step products against the ATen expressions they replace, bitwise: x * s with
// multipliers that bf16 cannot hold exactly (Falcon-H1's muP values are such), x * v with v
// broadcast over the last dimension, for every dtype, one row and many.
TEST(DecodeProducts, ScaleAndMulLastEqualATenBitwise) {
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  for (auto dt : {at::kBFloat16, at::kFloat, at::kDouble})
    for (auto shape : std::vector<std::vector<int64_t>>{{1, 1, 1000}, {64, 1, 3333}, {7}}) {
      Tensor x = (at::randn(shape, gen) * 3).to(dt);
      for (double s : {0.3141592653589793, 1.0 / 3.0, 2.5, -1e-3, 0.7071067811865476, 1.0})
        EXPECT_TRUE(at::equal(nn::scale(x, s), x * s)) << dt << " " << s << " " << x.sizes();
      Tensor v = (at::randn({shape.back()}, gen) * 0.37).to(dt);
      EXPECT_TRUE(at::equal(nn::mul_last(x, v), x * v)) << dt << " " << x.sizes();
    }
  // A strided input is read as its values.
  Tensor x = at::randn({8, 6}, gen).to(at::kBFloat16).t();
  EXPECT_TRUE(at::equal(nn::scale(x, 0.3), x * 0.3));
  EXPECT_THROW(nn::mul_last(at::ones({2, 3}), at::ones({4})), c10::Error);
}
