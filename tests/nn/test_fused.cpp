// The fused training kernels (src/s0/nn/fused.h) against independent formulations: plain
// loops / ATen ops with libtorch autograd, in float64 where exactness is expected, and
// against central finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "s0/nn/fused.h"
#include "s0/nn/layers.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// The conv as the definition says, tap by tap over [history | x] (ATen ops, autograd-able):
// out[b, l, c] = silu(round(bias[c] + sum_j w[c, j] * src[b, l + j, c])), src = [history | x]
// along time, math in `acc`.
Tensor conv_reference(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& hist, at::ScalarType acc) {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), Kc = w.size(1);
  Tensor h = hist.defined() ? hist.transpose(1, 2) : at::zeros({B, Kc - 1, C}, x.options());
  Tensor src = at::cat({h, x}, 1).to(acc);  // [B, L + Kc - 1, C]
  Tensor y = at::zeros({B, L, C}, x.options().dtype(acc));
  for (int64_t j = 0; j < Kc; ++j) y = y + src.narrow(1, j, L) * w.select(1, j).to(acc);
  if (bias.defined()) y = y + bias.to(acc);
  Tensor pre = y.to(x.scalar_type()).to(acc);
  return (pre * at::sigmoid(pre)).to(x.scalar_type());
}

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
          Tensor want = conv_reference(x, w, bias, hist, acc);
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
  Tensor gb = torch::autograd::grad({(conv_reference(xb, w, bias, hist, at::kDouble) * up).sum()}, {xb})[0];
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

TEST(FusedSiluMul, ValuesAndGradientsMatchTheUnfusedOps) {
  auto g = gen(5);
  for (auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    Tensor a = (at::randn({3, 5, 301}, g) * 4).to(dt), b = at::randn({3, 5, 301}, g).to(dt);
    Tensor up = at::randn({3, 5, 301}, g).to(dt);
    Tensor a1 = a.clone().requires_grad_(true), b1 = b.clone().requires_grad_(true);
    Tensor a2 = a.clone().requires_grad_(true), b2 = b.clone().requires_grad_(true);
    Tensor y1 = nn::silu_mul(a1, b1), y2 = nn::silu(a2) * b2;
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

TEST(FusedCrossEntropy, LossAndGradientMatchAutogradAcrossChunksAndBlocks) {
  auto g = gen(6);
  const int64_t M = 7, D = 24, V = 5000;  // V spans several internal blocks of 2048
  for (auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    for (double mult : {1.0, 0.37}) {
      Tensor h = at::randn({M, D}, g).to(dt), w = (at::randn({V, D}, g) * 0.3).to(dt);
      Tensor labels = at::tensor(std::vector<int64_t>{0, 2047, 2048, 4095, 4096, 4999, 17}, at::kLong);
      const double scale = 1.0 / M;
      auto got = nn::cross_entropy_rows(h, w, labels, scale, /*chunk=*/3, mult);
      const auto acc = dt == at::kDouble ? at::kDouble : at::kFloat;
      Tensor hr = h.clone().requires_grad_(true);
      Tensor logits = at::matmul(hr, w.t()).to(acc) * mult;  // rounded to the dtype first
      Tensor loss = at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum);
      Tensor want = torch::autograd::grad({loss * scale}, {hr})[0];
      const double tol = dt == at::kDouble ? 1e-12 : dt == at::kFloat ? 1e-5 : 2e-2;
      EXPECT_NEAR(got.loss_sum, loss.item<double>(), tol * std::abs(loss.item<double>())) << dt << " " << mult;
      EXPECT_LT(max_rel(got.grad.to(at::kDouble), want.to(at::kDouble)), tol) << dt << " " << mult;
    }
  }
}

TEST(FusedCrossEntropy, RejectsLabelsOutOfRange) {
  Tensor h = at::randn({2, 4}), w = at::randn({10, 4});
  EXPECT_THROW(nn::cross_entropy_rows(h, w, at::tensor(std::vector<int64_t>{1, 10}, at::kLong), 1.0), c10::Error);
  EXPECT_THROW(nn::cross_entropy_rows(h, w, at::tensor(std::vector<int64_t>{-1, 0}, at::kLong), 1.0), c10::Error);
}

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
    Tensor y2 = (nn::l2_norm(w2.narrow(2, 40, 60).reshape({2, 9, 3, 20}).to(acc)) * scale).transpose(1, 2);
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
    Tensor y2 = nn::gated_rms_norm(o2.transpose(1, 2), z2, w, 1e-6, dt).reshape({B, L, H * V});
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
    const auto acc = dt == at::kDouble ? at::kDouble : at::kFloat;
    Tensor x = (at::randn({2, 5, 3, 64}, g) * 3).to(dt), w = (at::randn({64}, g) * 0.1).to(dt);
    Tensor up = at::randn({2, 5, 3, 64}, g).to(dt);
    Tensor x1 = x.clone().requires_grad_(true), x2 = x.clone().requires_grad_(true);
    Tensor y1 = nn::rms_norm_1p(x1, w, 1e-6);
    Tensor x32 = x2.to(acc);
    Tensor y2 = (x32 * at::rsqrt(x32.pow(2).mean(-1, true) + 1e-6) * (w.to(acc) + 1.0)).to(dt);
    const double tol = dt == at::kDouble ? 1e-14 : dt == at::kFloat ? 1e-6 : 1e-2;
    EXPECT_LT(max_rel(y1.to(at::kDouble), y2.to(at::kDouble)), tol) << dt;
    Tensor g1 = torch::autograd::grad({(y1 * up).sum()}, {x1})[0];
    Tensor g2 = torch::autograd::grad({(y2 * up).sum()}, {x2})[0];
    EXPECT_LT(max_rel(g1.to(at::kDouble), g2.to(at::kDouble)), tol * 4) << dt;
  }
}
