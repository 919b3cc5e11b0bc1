// The gated delta rule: chunked form vs the step-by-step definition (outputs, final states,
// gradients w.r.t. every input and the initial state), and finite differences in float64.
#include <gtest/gtest.h>

#include "s0/nn/gated_delta_rule.h"
#include "tensor_util.h"

#include <torch/csrc/autograd/function.h>

#include <limits>

using namespace s0;
using s0::testing::ids_tensor;
using s0::testing::max_rel;
using s0::nn::gated_delta_rule_chunked;
using s0::nn::gated_delta_rule_recurrent;

namespace {

struct Inputs {
  Tensor q, k, v, g, beta, s0;
  std::vector<Tensor> all() const { return {q, k, v, g, beta, s0}; }
};

Inputs make_inputs(int64_t B, int64_t H, int64_t L, int64_t K, int64_t V, at::ScalarType dt,
                   uint64_t seed, bool requires_grad) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto o = at::TensorOptions().dtype(dt);
  auto l2 = [](const Tensor& x) { return x / x.norm(2, -1, true); };
  Inputs in;
  in.q = l2(at::randn({B, H, L, K}, gen, o)) * (1.0 / std::sqrt(double(K)));
  in.k = l2(at::randn({B, H, L, K}, gen, o));
  in.v = at::randn({B, H, L, V}, gen, o);
  // Mix slow and fast decays so state carried across chunk boundaries matters.
  in.g = -at::softplus(at::randn({B, H, L}, gen, o) * 2.0 - 2.0);
  in.beta = at::sigmoid(at::randn({B, H, L}, gen, o));
  in.s0 = at::randn({B, H, K, V}, gen, o);
  if (requires_grad)
    for (Tensor* t : {&in.q, &in.k, &in.v, &in.g, &in.beta, &in.s0})
      *t = t->detach().requires_grad_(true);
  return in;
}

// Loss touching outputs and final state with random weights.
Tensor loss_of(const nn::GdrResult& r, const Tensor& wo, const Tensor& ws) {
  return (r.out * wo).sum() + (r.state * ws).sum();
}

// Central difference of f at element idx of input `which` (0..5 = q, k, v, g, beta, s0).
template <class F>
double central_difference(const Inputs& in, const F& f, int which, int64_t idx, double eps = 1e-6) {
  auto eval_at = [&](double delta) {
    Inputs x = in;
    Tensor* ts[] = {&x.q, &x.k, &x.v, &x.g, &x.beta, &x.s0};
    *ts[which] = ts[which]->clone();
    ts[which]->view(-1)[idx] += delta;
    NoGrad ng;
    return f(x).template item<double>();
  };
  return (eval_at(eps) - eval_at(-eps)) / (2 * eps);
}

class GdrParam : public ::testing::TestWithParam<std::tuple<int64_t, at::ScalarType>> {};

TEST_P(GdrParam, ChunkedMatchesRecurrentWithGradients) {
  auto [L, dt] = GetParam();
  const int64_t B = 2, H = 3, K = 8, V = 6;
  Inputs a = make_inputs(B, H, L, K, V, dt, 1234 + L, true);
  Inputs b = make_inputs(B, H, L, K, V, dt, 1234 + L, true);
  auto ra = gated_delta_rule_recurrent(a.q, a.k, a.v, a.g, a.beta, a.s0);
  auto rb = gated_delta_rule_chunked(b.q, b.k, b.v, b.g, b.beta, b.s0, 64);
  const double tol = dt == at::kDouble ? 1e-11 : 2e-5;
  EXPECT_LT(max_rel(rb.out, ra.out), tol) << "outputs, L=" << L;
  EXPECT_LT(max_rel(rb.state, ra.state), tol) << "final state, L=" << L;

  auto gen = at::make_generator<at::CPUGeneratorImpl>(99);
  Tensor wo = at::randn(ra.out.sizes(), gen, ra.out.options().requires_grad(false));
  Tensor ws = at::randn(ra.state.sizes(), gen, ra.state.options().requires_grad(false));
  auto ga = torch::autograd::grad({loss_of(ra, wo, ws)}, a.all());
  auto gb = torch::autograd::grad({loss_of(rb, wo, ws)}, b.all());
  const char* names[] = {"q", "k", "v", "g", "beta", "initial state"};
  for (size_t i = 0; i < ga.size(); ++i)
    EXPECT_LT(max_rel(gb[i], ga[i]), dt == at::kDouble ? 1e-10 : 1e-4)
        << "gradient w.r.t. " << names[i] << ", L=" << L;
  // The initial state matters (a non-trivial gradient reaches it).
  EXPECT_GT(ga[5].abs().max().item<double>(), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Lengths, GdrParam,
                         ::testing::Combine(::testing::Values(1, 2, 63, 64, 65, 200),
                                            ::testing::Values(at::kDouble, at::kFloat)));

TEST(Gdr, FiniteDifferencesFloat64) {
  // Central differences of a scalar loss w.r.t. sampled elements of every input, for both forms.
  const int64_t B = 1, H = 2, L = 70, K = 4, V = 3;
  Inputs in = make_inputs(B, H, L, K, V, at::kDouble, 7, false);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  Tensor wo = at::randn({B, H, L, V}, gen, at::kDouble);
  Tensor ws = at::randn({B, H, K, V}, gen, at::kDouble);
  for (bool chunked : {false, true}) {
    auto f = [&](const Inputs& x) {
      auto r = chunked ? gated_delta_rule_chunked(x.q, x.k, x.v, x.g, x.beta, x.s0, 16)
                       : gated_delta_rule_recurrent(x.q, x.k, x.v, x.g, x.beta, x.s0);
      return loss_of(r, wo, ws);
    };
    Inputs gi = in;
    for (Tensor* t : {&gi.q, &gi.k, &gi.v, &gi.g, &gi.beta, &gi.s0})
      *t = t->clone().requires_grad_(true);
    auto grads = torch::autograd::grad({f(gi)}, gi.all());
    for (int which = 0; which < 6; ++which) {
      Tensor base = in.all()[which];
      for (int sample = 0; sample < 6; ++sample) {
        int64_t idx = (sample * 7919 + which * 104729) % base.numel();
        double fd = central_difference(in, f, which, idx);
        double an = grads[which].reshape(-1)[idx].item<double>();
        EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::abs(fd)))
            << (chunked ? "chunked" : "recurrent") << " input " << which << " element " << idx;
      }
    }
  }
}

TEST(Gdr, InPlaceStepMatchesRecurrent) {
  const int64_t B = 2, H = 3, L = 5, K = 8, V = 8;
  Inputs in = make_inputs(B, H, L, K, V, at::kFloat, 3, false);
  auto ref = gated_delta_rule_recurrent(in.q, in.k, in.v, in.g, in.beta, in.s0);
  Tensor state = in.s0.clone();
  for (int64_t t = 0; t < L; ++t) {
    Tensor o = nn::gated_delta_rule_step_(state, in.q.narrow(2, t, 1), in.k.narrow(2, t, 1),
                                          in.v.narrow(2, t, 1), in.g.narrow(2, t, 1),
                                          in.beta.narrow(2, t, 1));
    EXPECT_LT(max_rel(o, ref.out.narrow(2, t, 1)), 1e-6);
  }
  EXPECT_LT(max_rel(state, ref.state), 1e-6);
}

TEST(Gdr, ZeroInitialStateEqualsNoneBitForBit) {
  Inputs in = make_inputs(1, 2, 100, 8, 8, at::kFloat, 11, false);
  Tensor zeros = at::zeros_like(in.s0);
  for (bool chunked : {false, true}) {
    auto run = [&](const Tensor& s) {
      return chunked ? gated_delta_rule_chunked(in.q, in.k, in.v, in.g, in.beta, s)
                     : gated_delta_rule_recurrent(in.q, in.k, in.v, in.g, in.beta, s);
    };
    auto a = run(Tensor()), b = run(zeros);
    EXPECT_TRUE(at::equal(a.out, b.out));
    EXPECT_TRUE(at::equal(a.state, b.state));
  }
}

}  // namespace

namespace {

TEST(GdrFast, MatchesRecurrentWithoutAutograd) {
  if (!s0::nn::gdr_fast_available()) GTEST_SKIP() << "oneDNN sgemm not found in this process";
  for (int64_t L : {1, 2, 63, 64, 65, 200}) {
    Inputs in = make_inputs(2, 3, L, 16, 8, at::kFloat, 77 + L, false);
    auto ref = gated_delta_rule_recurrent(in.q, in.k, in.v, in.g, in.beta, in.s0);
    for (const Tensor& s0 : {in.s0, Tensor()}) {
      auto fast = s0::nn::gated_delta_rule_chunked_fast(in.q, in.k, in.v, in.g, in.beta, s0, 64);
      if (!s0.defined()) ref = gated_delta_rule_recurrent(in.q, in.k, in.v, in.g, in.beta, Tensor());
      EXPECT_LT(max_rel(fast.out, ref.out), 2e-5) << "L=" << L;
      EXPECT_LT(max_rel(fast.state, ref.state), 2e-5) << "L=" << L;
    }
    // Non-contiguous inputs (the model passes transposed views) and the dispatch from
    // gated_delta_rule_chunked when no gradient is needed.
    NoGrad ng;
    auto t = [](const Tensor& x) { return x.transpose(1, 2).contiguous().transpose(1, 2); };
    auto via = gated_delta_rule_chunked(t(in.q), t(in.k), t(in.v), in.g, in.beta, in.s0);
    auto with_state = gated_delta_rule_recurrent(in.q, in.k, in.v, in.g, in.beta, in.s0);
    EXPECT_LT(max_rel(via.out, with_state.out), 2e-5) << "L=" << L;
    // The caller's initial state is not modified.
    Inputs again = make_inputs(2, 3, L, 16, 8, at::kFloat, 77 + L, false);
    EXPECT_TRUE(at::equal(in.s0, again.s0));
  }
}

}  // namespace

namespace {

// The differentiable fast path (float32, hand-written backward) against autograd through
// the ATen chunked form in float64 (the reference; the finite-difference test checks it).
struct GradCase {
  int64_t B, H, L, K, V, C;
};

Inputs to_double(const Inputs& in) {
  Inputs d;
  Tensor* dst[] = {&d.q, &d.k, &d.v, &d.g, &d.beta, &d.s0};
  auto src = in.all();
  for (size_t i = 0; i < 6; ++i)
    if (src[i].defined()) *dst[i] = src[i].detach().to(at::kDouble).requires_grad_(true);
  return d;
}

std::vector<Tensor> defined_of(const std::vector<Tensor>& ts) {
  std::vector<Tensor> r;
  for (const Tensor& t : ts)
    if (t.defined()) r.push_back(t);
  return r;
}

// Gradients of sum(out * wo) (+ sum(state * ws) when ws is defined) w.r.t. the defined inputs.
std::vector<Tensor> grads_of(const nn::GdrResult& r, const Inputs& in, const Tensor& wo, const Tensor& ws) {
  Tensor loss = (r.out * wo.to(r.out.scalar_type())).sum();
  if (ws.defined()) loss = loss + (r.state * ws.to(r.state.scalar_type())).sum();
  return torch::autograd::grad({loss}, defined_of(in.all()));
}

void expect_fast_grads_match(const GradCase& gc, bool with_state0, bool state_grad, uint64_t seed,
                             double g_scale = 1.0, double fwd_tol = 2e-5) {
  const auto [B, H, L, K, V, C] = gc;
  Inputs f = make_inputs(B, H, L, K, V, at::kFloat, seed, true);
  if (g_scale != 1.0) f.g = (f.g.detach() * g_scale).requires_grad_(true);
  if (!with_state0) f.s0 = Tensor();
  Inputs d = to_double(f);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
  Tensor wo = at::randn({B, H, L, V}, gen, at::kDouble);
  Tensor ws = state_grad ? at::randn({B, H, K, V}, gen, at::kDouble) : Tensor();

  auto rf = gated_delta_rule_chunked(f.q, f.k, f.v, f.g, f.beta, f.s0, C);
  ASSERT_TRUE(rf.out.grad_fn() != nullptr);
  EXPECT_NE(rf.out.grad_fn()->name().find("GdrFunction"), std::string::npos)
      << "float32 with gradients should take the fast path, got " << rf.out.grad_fn()->name();
  auto rd = gated_delta_rule_chunked(d.q, d.k, d.v, d.g, d.beta, d.s0, C);
  auto rec = gated_delta_rule_recurrent(d.q, d.k, d.v, d.g, d.beta, d.s0);
  std::string where = "B=" + std::to_string(B) + " H=" + std::to_string(H) + " L=" + std::to_string(L) +
                      " K=" + std::to_string(K) + " V=" + std::to_string(V) + " C=" + std::to_string(C) +
                      (with_state0 ? " state0" : " no state0") + (state_grad ? " +dstate" : "");
  EXPECT_LT(max_rel(rf.out.to(at::kDouble), rec.out), fwd_tol) << "output vs recurrence, " << where;
  EXPECT_LT(max_rel(rf.state.to(at::kDouble), rec.state), fwd_tol) << "final state vs recurrence, " << where;

  auto gf = grads_of(rf, f, wo, ws);
  auto gd = grads_of(rd, d, wo, ws);
  ASSERT_EQ(gf.size(), gd.size());
  const char* names[] = {"q", "k", "v", "g", "beta", "initial state"};
  for (size_t i = 0; i < gf.size(); ++i) {
    EXPECT_EQ(gf[i].scalar_type(), at::kFloat);
    EXPECT_LT(max_rel(gf[i].to(at::kDouble), gd[i]), 1e-4) << "gradient w.r.t. " << names[i] << ", " << where;
  }
  if (with_state0) EXPECT_GT(gd[5].abs().max().item<double>(), 1e-3) << where;
}

TEST(GdrFastGrad, MatchesFloat64Autograd) {
  if (!s0::nn::gdr_fast_available()) GTEST_SKIP() << "oneDNN sgemm not found in this process";
  const GradCase cases[] = {{2, 3, 100, 16, 24, 64}, {2, 3, 30, 16, 24, 64}, {2, 3, 1, 16, 24, 64},
                            {2, 3, 64, 16, 24, 64},  {2, 3, 200, 16, 24, 64}, {1, 2, 70, 24, 16, 16},
                            {1, 2, 37, 8, 8, 5}};
  uint64_t seed = 500;
  for (const GradCase& c : cases) expect_fast_grads_match(c, true, true, seed++);
}

TEST(GdrFastGrad, OutputGradientOnlyAndNoInitialState) {
  if (!s0::nn::gdr_fast_available()) GTEST_SKIP() << "oneDNN sgemm not found in this process";
  const GradCase c{2, 3, 100, 16, 24, 64};
  expect_fast_grads_match(c, true, false, 900);   // training: only `out` gets a gradient
  expect_fast_grads_match(c, false, true, 901);   // no initial state (zeros, no gradient)
  expect_fast_grads_match(c, false, false, 902);
}

TEST(GdrFastGrad, StrongDecays) {
  // Log-decays of tens per step: in-chunk cumulative sums reach the thousands, where
  // exp(-gam) would overflow; only exponentials of differences may be formed. (At such
  // magnitudes float32 cumulative sums lose digits to cancellation in gam_r - gam_s, in the
  // forward as in the ATen float32 form: a looser forward tolerance for the second case.)
  if (!s0::nn::gdr_fast_available()) GTEST_SKIP() << "oneDNN sgemm not found in this process";
  expect_fast_grads_match({2, 3, 100, 16, 24, 64}, true, true, 950, 30.0);
  expect_fast_grads_match({1, 2, 130, 16, 8, 64}, true, true, 951, 100.0, 1e-4);
}

TEST(GdrFastGrad, NonContiguousInputsAndPartialRequiresGrad) {
  if (!s0::nn::gdr_fast_available()) GTEST_SKIP() << "oneDNN sgemm not found in this process";
  const int64_t B = 2, H = 3, L = 90, K = 16, V = 24;
  Inputs in = make_inputs(B, H, L, K, V, at::kFloat, 31, false);
  // Only the initial state trains (S0); q, k, v arrive as transposed views.
  auto t = [](const Tensor& x) { return x.transpose(1, 2).contiguous().transpose(1, 2); };
  Tensor s0f = in.s0.clone().requires_grad_(true);
  auto rf = gated_delta_rule_chunked(t(in.q), t(in.k), t(in.v), in.g, in.beta, s0f, 64);
  Tensor s0d = in.s0.to(at::kDouble).requires_grad_(true);
  auto dd = [](const Tensor& x) { return x.to(at::kDouble); };
  auto rd = gated_delta_rule_chunked(dd(in.q), dd(in.k), dd(in.v), dd(in.g), dd(in.beta), s0d, 64);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  Tensor wo = at::randn({B, H, L, V}, gen, at::kDouble);
  Tensor gf = torch::autograd::grad({(rf.out * wo.to(at::kFloat)).sum()}, {s0f})[0];
  Tensor gd = torch::autograd::grad({(rd.out * wo).sum()}, {s0d})[0];
  EXPECT_LT(max_rel(gf.to(at::kDouble), gd), 1e-4);
  EXPECT_LT(max_rel(rf.out.to(at::kDouble), rd.out), 2e-5);
}

TEST(GdrFastGrad, MatchesFiniteDifferenceCheckedFloat64Gradients) {
  // The setup of Gdr.FiniteDifferencesFloat64: float64 analytic gradients of the ATen
  // chunked form, checked here against central differences, and the float32 fast path's
  // gradients held against them.
  if (!s0::nn::gdr_fast_available()) GTEST_SKIP() << "oneDNN sgemm not found in this process";
  const int64_t B = 1, H = 2, L = 70, K = 4, V = 3, C = 16;
  Inputs in = make_inputs(B, H, L, K, V, at::kDouble, 7, false);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  Tensor wo = at::randn({B, H, L, V}, gen, at::kDouble);
  Tensor ws = at::randn({B, H, K, V}, gen, at::kDouble);
  auto f = [&](const Inputs& x) {
    return loss_of(gated_delta_rule_chunked(x.q, x.k, x.v, x.g, x.beta, x.s0, C), wo.to(x.q.scalar_type()),
                   ws.to(x.q.scalar_type()));
  };
  Inputs gi = in, fi = in;
  for (Tensor* t : {&gi.q, &gi.k, &gi.v, &gi.g, &gi.beta, &gi.s0}) *t = t->clone().requires_grad_(true);
  for (Tensor* t : {&fi.q, &fi.k, &fi.v, &fi.g, &fi.beta, &fi.s0}) *t = t->to(at::kFloat).requires_grad_(true);
  auto gd = torch::autograd::grad({f(gi)}, gi.all());
  auto gf = torch::autograd::grad({f(fi)}, fi.all());
  for (int which = 0; which < 6; ++which) {
    Tensor base = in.all()[which];
    for (int sample = 0; sample < 4; ++sample) {
      int64_t idx = (sample * 7919 + which * 104729 + 17) % base.numel();
      const double fd = central_difference(in, f, which, idx);
      EXPECT_NEAR(gd[which].reshape(-1)[idx].item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd)))
          << "float64 input " << which << " element " << idx;
    }
    EXPECT_LT(max_rel(gf[which].to(at::kDouble), gd[which]), 1e-4) << "float32 fast path, input " << which;
  }
}

}  // namespace

namespace {

// The kernel's small-matrix product against a float64 product, for sizes that are not
// multiples of the register blocks (including 1), both operand layouts, padded leading
// dimensions, and beta = 0 with a NaN-filled output (must be ignored, as in BLAS).
TEST(GdrFast, SmallSgemmMatchesFloat64) {
  if (!s0::nn::gdr_fast_available()) GTEST_SKIP() << "no sgemm in this process";
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const int64_t sizes[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 130};
  int64_t cases = 0;
  for (int64_t M : sizes)
    for (int64_t N : sizes)
      for (int64_t K : {int64_t(1), int64_t(5), int64_t(64), int64_t(129)}) {
        if ((M * N * K) % 3 != 0 && M > 9 && N > 9) continue;  // keep the sweep short
        for (char ta : {'N', 'T'})
          for (char tb : {'N', 'T'})
            for (float beta : {0.f, 1.f, -0.5f}) {
              const float alpha = -1.25f;
              // Stored shapes with padding on the leading dimension (+3).
              const int64_t ar = ta == 'N' ? M : K, ac = ta == 'N' ? K : M;
              const int64_t br = tb == 'N' ? K : N, bc = tb == 'N' ? N : K;
              Tensor A = at::randn({ar, ac + 3}, gen, at::kFloat), B = at::randn({br, bc + 3}, gen, at::kFloat);
              Tensor C = at::randn({M, N + 3}, gen, at::kFloat);
              if (beta == 0.f) C.narrow(1, 0, N).fill_(std::numeric_limits<float>::quiet_NaN());
              Tensor C0 = C.clone();
              s0::nn::gdr_sgemm(ta, tb, M, N, K, alpha, A.data_ptr<float>(), ac + 3, B.data_ptr<float>(), bc + 3,
                                beta, C.data_ptr<float>(), N + 3);
              Tensor a = A.narrow(1, 0, ac).to(at::kDouble), b = B.narrow(1, 0, bc).to(at::kDouble);
              if (ta == 'T') a = a.t();
              if (tb == 'T') b = b.t();
              Tensor c0 = C0.narrow(1, 0, N).to(at::kDouble);
              Tensor ref = alpha * at::mm(a, b), bound = std::abs(alpha) * at::mm(a.abs(), b.abs());
              if (beta != 0.f) ref = ref + beta * c0, bound = bound + std::abs(beta) * c0.abs();
              Tensor err = (C.narrow(1, 0, N).to(at::kDouble) - ref).abs();
              const double worst = (err / (bound + 1e-30)).max().item<double>();
              EXPECT_LT(worst, 1.2e-7 * (K + 2)) << "M=" << M << " N=" << N << " K=" << K << " " << ta << tb
                                                 << " beta=" << beta;
              // The padding columns are untouched.
              EXPECT_TRUE(at::equal(C.narrow(1, N, 3), C0.narrow(1, N, 3)));
              ++cases;
            }
      }
  EXPECT_GT(cases, 100);
}

}  // namespace
