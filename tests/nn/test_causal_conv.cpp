// The causal conv + SiLU (src/s0/nn/causal_conv.h): the fused kernel against the definition
// (nn::causal_conv_silu_reference: the taps over [history | x], ATen ops with autograd), in
// float64 where exactness is expected, and against central finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "s0/nn/causal_conv.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

}  // namespace

TEST(FusedConvSilu, MatchesTheTapDefinitionForEveryDtypeHistoryAndBias) {
  auto g = gen(1);
  for (auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    const auto acc = dt == at::kDouble ? at::kDouble : at::kFloat;
    for (int64_t L : {1, 2, 3, 7, 40}) {
      for (bool with_hist : {false, true}) {
        for (bool with_bias : {false, true}) {
          const int64_t B = 2, C = 37, Kc = 4;
          Tensor x = at::randn({B, L, C}, g).to(dt);
          Tensor w = at::randn({C, Kc}, g).to(acc) * 0.5;
          Tensor bias = with_bias ? at::randn({C}, g).to(acc) : Tensor();
          Tensor hist = with_hist ? at::randn({B, C, Kc - 1}, g).to(dt) : Tensor();
          Tensor got = nn::conv_silu(x, w, bias, hist);
          Tensor want = nn::causal_conv_silu_reference(x, w, bias, hist);
          ASSERT_EQ(got.sizes(), want.sizes());
          // f64: the same sums in another order; f32/bf16: our exp (~1 ulp) and the pre
          // rounding boundary can differ by one unit of the dtype.
          const double tol = dt == at::kDouble ? 1e-13 : dt == at::kFloat ? 2e-6 : 1e-2;
          EXPECT_LT(max_rel(got.to(at::kDouble), want.to(at::kDouble)), tol)
              << dt << " L " << L << " hist " << with_hist << " bias " << with_bias;
        }
      }
    }
  }
}

TEST(FusedConvSilu, InputGradientEqualsAutogradOfTheDefinitionAndFiniteDifferences) {
  auto g = gen(2);
  const int64_t B = 2, L = 9, C = 21, Kc = 4;
  Tensor x = at::randn({B, L, C}, g).to(at::kDouble);
  Tensor w = at::randn({C, Kc}, g).to(at::kDouble) * 0.5;
  Tensor bias = at::randn({C}, g).to(at::kDouble);
  Tensor hist = at::randn({B, C, Kc - 1}, g).to(at::kDouble);
  Tensor up = at::randn({B, L, C}, g).to(at::kDouble);

  Tensor xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
  Tensor ga = torch::autograd::grad({(nn::conv_silu(xa, w, bias, hist) * up).sum()}, {xa})[0];
  Tensor gb = torch::autograd::grad({(nn::causal_conv_silu_reference(xb, w, bias, hist) * up).sum()}, {xb})[0];
  EXPECT_LT(max_rel(ga, gb), 1e-12);

  NoGrad ng;
  auto f = [&](const Tensor& xx) { return (nn::conv_silu(xx, w, bias, hist) * up).sum().item<double>(); };
  const double h = 1e-6;
  for (int64_t i : {0L, 5L, 17L, B * L * C / 2, B * L * C - 1}) {
    Tensor xp = x.clone(), xm = x.clone();
    xp.view(-1)[i] += h;
    xm.view(-1)[i] -= h;
    const double fd = (f(xp) - f(xm)) / (2 * h);
    EXPECT_NEAR(ga.view(-1)[i].item<double>(), fd, 1e-7 * std::max(1.0, std::abs(fd))) << i;
  }
}

TEST(FusedConvSilu, ReducedPrecisionGradientsAreCloseToFloat64) {
  auto g = gen(3);
  const int64_t B = 1, L = 33, C = 64, Kc = 4;
  Tensor x = at::randn({B, L, C}, g), w = at::randn({C, Kc}, g) * 0.5, up = at::randn({B, L, C}, g);
  auto grad_of = [&](at::ScalarType dt) {
    const auto acc = dt == at::kDouble ? at::kDouble : at::kFloat;
    Tensor xx = x.to(dt).requires_grad_(true);
    Tensor y = nn::conv_silu(xx, w.to(acc), Tensor(), Tensor());
    return torch::autograd::grad({(y.to(at::kDouble) * up.to(at::kDouble)).sum()}, {xx})[0].to(at::kDouble);
  };
  Tensor ref = grad_of(at::kDouble);
  EXPECT_LT(max_rel(grad_of(at::kFloat), ref), 1e-5);
  EXPECT_LT(max_rel(grad_of(at::kBFloat16), ref), 3e-2);
}

TEST(FusedConvSilu, EachRowIsComputedTheSameWayWhateverTheBatch) {
  // Batched decode relies on it: row b of a batch equals the row computed alone, bitwise.
  auto g = gen(4);
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    const int64_t B = 5, C = 6144 + 3, Kc = 4;
    Tensor x = at::randn({B, 1, C}, g).to(dt), hist = at::randn({B, C, Kc - 1}, g).to(dt);
    Tensor w = at::randn({C, Kc}, g);
    NoGrad ng;
    Tensor all = nn::conv_silu(x, w, Tensor(), hist);
    for (int64_t b = 0; b < B; ++b)
      EXPECT_TRUE(at::equal(all[b], nn::conv_silu(x.narrow(0, b, 1), w, Tensor(), hist.narrow(0, b, 1))[0])) << b;
  }
}
