// The fused GatedDeltaNet decode step (src/s0/nn/gdn_step.h) against the composition of
// the reference ops it replaces (conv + SiLU, L2 heads, sigmoid/softplus, the step-by-step
// gated delta rule, the gated RMSNorm), over several steps with non-zero histories and
// states, grouped value heads (Hv = 2 Hk) and dk != dv; and a batch equals its rows alone,
// bitwise. dv = 144 runs both column blocks of the AVX-512 recurrence (8 x 16, then 1 x 16).
#include <gtest/gtest.h>

#include <cmath>

#include "s0/nn/activations.h"
#include "s0/nn/causal_conv.h"
#include "s0/nn/gated_delta_rule.h"
#include "s0/nn/gdn_step.h"
#include "s0/nn/l2_heads.h"
#include "s0/nn/norms.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

constexpr int64_t Hk = 2, Hv = 4, dk = 24, dv = 144, Kc = 4, C = 2 * Hk * dk + Hv * dv;
const nn::GdnStepShape kShape{Hk, Hv, dk, dv};

struct Params {
  Tensor conv_w, neg_A, dt_bias, norm_w;
};

struct Inputs {
  Tensor qkv, z, b, a;  // [B, ...]
};

// One step through the reference ops for rows [B] continuing hist [B, C, Kc-1] and state
// [B, Hv, dk, dv]; returns the output and updates hist and state.
Tensor reference_step(const Inputs& in, const Params& p, Tensor& hist, Tensor& state, double eps) {
  const int64_t B = in.qkv.size(0);
  Tensor x = in.qkv.view({B, 1, C});
  Tensor mixed = nn::causal_conv_silu_reference(x, p.conv_w, Tensor(), hist);  // [B, 1, C]
  hist = at::cat({hist, x.transpose(1, 2)}, 2).narrow(2, 1, Kc - 1).contiguous();
  auto parts = mixed.split_with_sizes({Hk * dk, Hk * dk, Hv * dv}, 2);
  Tensor q =
      nn::l2_norm_heads_reference(parts[0].reshape({B, 1, Hk, dk}), 1.0 / std::sqrt(double(dk)));
  Tensor k = nn::l2_norm_heads_reference(parts[1].reshape({B, 1, Hk, dk}), 1.0);
  Tensor v = parts[2].reshape({B, 1, Hv, dv}).transpose(1, 2).to(at::kFloat);
  q = q.repeat_interleave(Hv / Hk, 1), k = k.repeat_interleave(Hv / Hk, 1);
  Tensor beta = at::sigmoid(in.b).to(at::kFloat).view({B, Hv, 1});
  Tensor gate = (p.neg_A * at::softplus(in.a.to(at::kFloat) + p.dt_bias)).view({B, Hv, 1});
  auto r = nn::gated_delta_rule_recurrent(q, k, v, gate, beta, state);
  state = r.state;
  return nn::gated_rms_norm_heads_reference(r.out, in.z.view({B, 1, Hv, dv}), p.norm_w, eps)
      .view({B, Hv * dv});
}

Inputs random_inputs(int64_t B, at::ScalarType dt, at::Generator& g) {
  return {at::randn({B, C}, g).to(dt), at::randn({B, Hv * dv}, g).to(dt),
          at::randn({B, Hv}, g).to(dt), at::randn({B, Hv}, g).to(dt)};
}

Params random_params(at::ScalarType dt, at::Generator& g) {
  return {at::randn({C, Kc}, g) * 0.5, -at::rand({Hv}, g).mul(2).add(0.1), at::randn({Hv}, g),
          (at::rand({dv}, g) * 0.4 + 0.8).to(dt)};
}

}  // namespace

TEST(GdnStep, MatchesTheReferenceOpsOverSeveralSteps) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(3);
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    const int64_t B = 3;
    Params p = random_params(dt, g);
    Tensor hist_ref = at::randn({B, C, Kc - 1}, g).to(dt);
    Tensor state_ref = at::randn({B, Hv, dk, dv}, g) * 0.3;
    // Groups of 1 and 2 rows, as a decode step with a 2-row cache and a 1-row cache.
    Tensor h1 = hist_ref.narrow(0, 0, 1).clone(), h2 = hist_ref.narrow(0, 1, 2).clone();
    Tensor s1 = state_ref.narrow(0, 0, 1).clone(), s2 = state_ref.narrow(0, 1, 2).clone();
    for (int step = 0; step < 4; ++step) {
      Inputs in = random_inputs(B, dt, g);
      Tensor want = reference_step(in, p, hist_ref, state_ref, 1e-6);
      Tensor got = nn::gdn_decode_step(in.qkv, in.z, in.b, in.a, p.conv_w, p.neg_A, p.dt_bias,
                                       p.norm_w, kShape, 1e-6, {{&h1, &s1, 1}, {&h2, &s2, 2}});
      ASSERT_EQ(got.sizes(), want.sizes());
      ASSERT_EQ(got.scalar_type(), dt);
      // f32: float rounding only; bf16: the output is rounded to bf16 (8 bits), and an
      // element near a rounding boundary may land one bf16 step away.
      const double tol = dt == at::kFloat ? 1e-5 : 2e-2;
      EXPECT_LT(max_rel(got.to(at::kFloat), want.to(at::kFloat)), tol)
          << "step " << step << " " << dt;
      EXPECT_TRUE(at::equal(at::cat({h1, h2}), hist_ref)) << "conv history, step " << step;
      EXPECT_LT(max_rel(at::cat({s1, s2}), state_ref), dt == at::kFloat ? 1e-5 : 1e-2)
          << "state, step " << step;
    }
  }
}

TEST(GdnStep, FreshCachesStartFromZeros) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(4);
  Params p = random_params(at::kFloat, g);
  Inputs in = random_inputs(2, at::kFloat, g);
  Tensor hist_ref = at::zeros({2, C, Kc - 1}), state_ref = at::zeros({2, Hv, dk, dv});
  Tensor want = reference_step(in, p, hist_ref, state_ref, 1e-6);
  Tensor h, s;  // undefined: a fresh cache
  Tensor got = nn::gdn_decode_step(in.qkv, in.z, in.b, in.a, p.conv_w, p.neg_A, p.dt_bias, p.norm_w,
                                   kShape, 1e-6, {{&h, &s, 2}});
  EXPECT_LT(max_rel(got, want), 1e-5);
  ASSERT_TRUE(h.defined() && s.defined());
  EXPECT_TRUE(at::equal(h, hist_ref));
  EXPECT_LT(max_rel(s, state_ref), 1e-5);
}

TEST(GdnStep, ABatchEqualsItsRowsAloneBitwise) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(5);
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    const int64_t B = 5;
    Params p = random_params(dt, g);
    Tensor hist = at::randn({B, C, Kc - 1}, g).to(dt), state = at::randn({B, Hv, dk, dv}, g) * 0.3;
    std::vector<Tensor> hs, ss;
    for (int64_t r = 0; r < B; ++r)
      hs.push_back(hist[r].unsqueeze(0).clone()), ss.push_back(state[r].unsqueeze(0).clone());
    std::vector<Tensor> hb = hs, sb = ss;
    for (auto& t : hb) t = t.clone();
    for (auto& t : sb) t = t.clone();
    for (int step = 0; step < 3; ++step) {
      Inputs in = random_inputs(B, dt, g);
      std::vector<nn::GdnStepCache> all;
      for (int64_t r = 0; r < B; ++r) all.push_back({&hb[r], &sb[r], 1});
      Tensor batch = nn::gdn_decode_step(in.qkv, in.z, in.b, in.a, p.conv_w, p.neg_A, p.dt_bias,
                                         p.norm_w, kShape, 1e-6, all);
      for (int64_t r = 0; r < B; ++r) {
        auto row = [&](const Tensor& t) { return t.narrow(0, r, 1); };
        Tensor one =
            nn::gdn_decode_step(row(in.qkv), row(in.z), row(in.b), row(in.a), p.conv_w, p.neg_A,
                                p.dt_bias, p.norm_w, kShape, 1e-6, {{&hs[r], &ss[r], 1}});
        EXPECT_TRUE(at::equal(one, row(batch))) << "row " << r << " step " << step;
        EXPECT_TRUE(at::equal(ss[r], sb[r]));
      }
    }
  }
}
