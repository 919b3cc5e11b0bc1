// The Mamba-2 SSD scan: chunked form vs the step-by-step definition (outputs, final states,
// gradients w.r.t. every input and the initial state), finite differences in float64, the
// in-place decode step, and zero initial state == none.
#include <gtest/gtest.h>

#include "s0/nn/ssd_scan.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::ids_tensor;
using s0::testing::max_rel;
using s0::nn::ssd_scan_chunked;
using s0::nn::ssd_scan_recurrent;

namespace {

struct Inputs {
  Tensor x, dt, A, Bm, Cm, s0;
  std::vector<Tensor> all() const { return {x, dt, A, Bm, Cm, s0}; }
  std::vector<Tensor*> ptrs() { return {&x, &dt, &A, &Bm, &Cm, &s0}; }
};

Inputs make_inputs(int64_t B, int64_t H, int64_t G, int64_t L, int64_t P, int64_t N,
                   at::ScalarType dt, uint64_t seed, bool requires_grad) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto o = at::TensorOptions().dtype(dt);
  Inputs in;
  in.x = at::randn({B, H, L, P}, gen, o);
  // Mix slow and fast decays (dt A from ~-0.01 to ~-3) so state carried across chunks matters.
  in.dt = at::softplus(at::randn({B, H, L}, gen, o) * 1.5 - 1.5);
  in.A = -at::exp(at::rand({H}, gen, o) * std::log(16.0));
  in.Bm = at::randn({B, G, L, N}, gen, o);
  in.Cm = at::randn({B, G, L, N}, gen, o);
  in.s0 = at::randn({B, H, P, N}, gen, o);
  if (requires_grad)
    for (Tensor* t : in.ptrs()) *t = t->detach().requires_grad_(true);
  return in;
}

Tensor loss_of(const nn::SsdResult& r, const Tensor& wo, const Tensor& ws) {
  return (r.out * wo).sum() + (r.state * ws).sum();
}

const char* kNames[] = {"x", "dt", "A", "B", "C", "initial state"};

// Chunk size 16; lengths around the chunk boundaries; G = 1 and G = 2 (heads share B/C).
class SsdParam : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, at::ScalarType>> {};

TEST_P(SsdParam, ChunkedMatchesRecurrentWithGradients) {
  auto [L, G, dt] = GetParam();
  const int64_t B = 2, H = 4, P = 5, N = 3, Q = 16;
  Inputs a = make_inputs(B, H, G, L, P, N, dt, 1234 + L, true);
  Inputs b = make_inputs(B, H, G, L, P, N, dt, 1234 + L, true);
  auto ra = ssd_scan_recurrent(a.x, a.dt, a.A, a.Bm, a.Cm, a.s0);
  auto rb = ssd_scan_chunked(b.x, b.dt, b.A, b.Bm, b.Cm, b.s0, Q);
  const double tol = dt == at::kDouble ? 1e-12 : 2e-5;
  EXPECT_LT(max_rel(rb.out, ra.out), tol) << "outputs, L=" << L;
  EXPECT_LT(max_rel(rb.state, ra.state), tol) << "final state, L=" << L;

  auto gen = at::make_generator<at::CPUGeneratorImpl>(99);
  Tensor wo = at::randn(ra.out.sizes(), gen, ra.out.options().requires_grad(false));
  Tensor ws = at::randn(ra.state.sizes(), gen, ra.state.options().requires_grad(false));
  auto ga = torch::autograd::grad({loss_of(ra, wo, ws)}, a.all());
  auto gb = torch::autograd::grad({loss_of(rb, wo, ws)}, b.all());
  for (size_t i = 0; i < ga.size(); ++i)
    EXPECT_LT(max_rel(gb[i], ga[i]), dt == at::kDouble ? 1e-11 : 1e-4)
        << "gradient w.r.t. " << kNames[i] << ", L=" << L;
  EXPECT_GT(ga[5].abs().max().item<double>(), 1e-3);  // the initial state matters
}

INSTANTIATE_TEST_SUITE_P(Lengths, SsdParam,
                         ::testing::Combine(::testing::Values(1, 2, 15, 16, 17, 50),
                                            ::testing::Values(1, 2),
                                            ::testing::Values(at::kDouble, at::kFloat)));

TEST(Ssd, FiniteDifferencesFloat64) {
  const int64_t B = 1, H = 2, G = 1, L = 37, P = 3, N = 4;
  Inputs in = make_inputs(B, H, G, L, P, N, at::kDouble, 7, false);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  Tensor wo = at::randn({B, H, L, P}, gen, at::kDouble);
  Tensor ws = at::randn({B, H, P, N}, gen, at::kDouble);
  for (bool chunked : {false, true}) {
    auto f = [&](const Inputs& v) {
      auto r = chunked ? ssd_scan_chunked(v.x, v.dt, v.A, v.Bm, v.Cm, v.s0, 8)
                       : ssd_scan_recurrent(v.x, v.dt, v.A, v.Bm, v.Cm, v.s0);
      return loss_of(r, wo, ws);
    };
    Inputs gi = in;
    for (Tensor* t : gi.ptrs()) *t = t->clone().requires_grad_(true);
    auto grads = torch::autograd::grad({f(gi)}, gi.all());
    for (int which = 0; which < 6; ++which) {
      Tensor base = in.all()[which];
      for (int sample = 0; sample < 5; ++sample) {
        int64_t idx = (sample * 7919 + which * 104729) % base.numel();
        const double eps = 1e-6;
        auto eval_at = [&](double delta) {
          Inputs v = in;
          Tensor* t = v.ptrs()[which];
          *t = base.clone();
          t->view(-1)[idx] += delta;
          NoGrad ng;
          return f(v).item<double>();
        };
        double fd = (eval_at(eps) - eval_at(-eps)) / (2 * eps);
        double an = grads[which].reshape(-1)[idx].item<double>();
        EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::abs(fd)))
            << (chunked ? "chunked" : "recurrent") << " d/d" << kNames[which] << " element " << idx;
      }
    }
  }
}

TEST(Ssd, InPlaceStepMatchesRecurrent) {
  for (int64_t G : {1, 2}) {
    const int64_t B = 2, H = 4, L = 5, P = 8, N = 6;
    Inputs in = make_inputs(B, H, G, L, P, N, at::kFloat, 3, false);
    auto ref = ssd_scan_recurrent(in.x, in.dt, in.A, in.Bm, in.Cm, in.s0);
    Tensor state = in.s0.clone();
    for (int64_t t = 0; t < L; ++t) {
      Tensor y = nn::ssd_step_(state, in.x.select(2, t), in.dt.select(2, t), in.A, in.Bm.select(2, t),
                               in.Cm.select(2, t));
      EXPECT_LT(max_rel(y, ref.out.select(2, t)), 1e-6) << "G=" << G << " t=" << t;
    }
    EXPECT_LT(max_rel(state, ref.state), 1e-6);
  }
}

TEST(Ssd, ZeroInitialStateEqualsNoneBitForBit) {
  Inputs in = make_inputs(1, 4, 2, 100, 8, 8, at::kFloat, 11, false);
  Tensor zeros = at::zeros_like(in.s0);
  for (bool chunked : {false, true}) {
    auto run = [&](const Tensor& s) {
      return chunked ? ssd_scan_chunked(in.x, in.dt, in.A, in.Bm, in.Cm, s, 32)
                     : ssd_scan_recurrent(in.x, in.dt, in.A, in.Bm, in.Cm, s);
    };
    auto a = run(Tensor()), b = run(zeros);
    EXPECT_TRUE(at::equal(a.out, b.out));
    EXPECT_TRUE(at::equal(a.state, b.state));
  }
}

TEST(Ssd, ChunkSizeDoesNotChangeTheResult) {
  Inputs in = make_inputs(1, 2, 1, 70, 4, 4, at::kDouble, 13, false);
  auto ref = ssd_scan_recurrent(in.x, in.dt, in.A, in.Bm, in.Cm, in.s0);
  for (int64_t Q : {1, 7, 32, 64, 128}) {
    auto r = ssd_scan_chunked(in.x, in.dt, in.A, in.Bm, in.Cm, in.s0, Q);
    EXPECT_LT(max_rel(r.out, ref.out), 1e-12) << "Q=" << Q;
    EXPECT_LT(max_rel(r.state, ref.state), 1e-12) << "Q=" << Q;
  }
}

}  // namespace
