// The fused Mamba-2 (SSD) decode step (src/s0/nn/ssd_step.h) against the composition of the
// reference ops it replaces (conv + bias + SiLU, the f32 conversion, softplus and clamp, the
// step-by-step SSD recurrence, the D skip, the gate or the grouped gated RMSNorm before or
// after it), over several steps with non-zero conv histories and states, G = 2 groups of two
// heads, both gate variants, the dt clamp on and off; a batch equals its rows alone and one
// thread equals two, bitwise. N = 48 runs both blocks of the AVX-512 state kernel (32, then
// 16); N = 20 runs the portable loop.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>

#include "s0/nn/causal_conv.h"
#include "s0/nn/ssd_scan.h"
#include "s0/nn/ssd_step.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

constexpr int64_t H = 4, P = 24, G = 2, Kc = 4, Ds = H * P;

enum class Gate { plain, norm_after, norm_before };

struct Case {
  int64_t N = 48;
  Gate gate = Gate::plain;
  bool clamp = false, bias = false;
  int64_t Cd() const { return Ds + 2 * G * N; }
  int64_t W() const { return Ds + Cd() + H; }
  nn::SsdStepShape shape() const { return {H, P, G, N}; }
};

nn::SsdStepLayer random_layer(const Case& c, at::ScalarType dt, at::Generator& g) {
  nn::SsdStepLayer l;
  l.conv_w = at::randn({c.Cd(), Kc}, g) * 0.5;
  if (c.bias) l.conv_b = at::randn({c.Cd()}, g) * 0.2;
  l.dt_bias = at::randn({H}, g) * 0.5;
  l.neg_A = -at::rand({H}, g).mul(2).add(0.1);
  l.D = at::randn({H}, g);
  if (c.gate != Gate::plain) l.norm_w = (at::rand({Ds}, g) * 0.4 + 0.8).to(dt);
  l.norm_before_gate = c.gate == Gate::norm_before;
  l.norm_eps = 1e-5;
  if (c.clamp) l.dt_min = 0.3, l.dt_max = 1.2;  // softplus of N(0, 1.1) crosses both often
  return l;
}

// One step through the reference ops for rows [B] continuing hist [B, Cd, Kc-1] and state
// [B, H, P, N]; returns the output [B, Ds] and updates hist and state.
Tensor reference_step(const Case& c, const Tensor& in, const nn::SsdStepLayer& l, Tensor& hist,
                      Tensor& state) {
  const int64_t B = in.size(0), N = c.N, Cd = c.Cd();
  auto parts = in.view({B, 1, -1}).split_with_sizes({Ds, Cd, H}, 2);
  Tensor xbc_in = parts[1].contiguous();
  Tensor xbc = nn::causal_conv_silu_reference(xbc_in, l.conv_w, l.conv_b, hist);  // [B, 1, Cd]
  hist = at::cat({hist, xbc_in.transpose(1, 2)}, 2).narrow(2, 1, Kc - 1).contiguous();
  auto xs = xbc.to(at::kFloat).split_with_sizes({Ds, G * N, G * N}, 2);
  Tensor x = xs[0].reshape({B, 1, H, P});
  Tensor dt = at::softplus(parts[2].to(at::kFloat) + l.dt_bias);  // [B, 1, H]
  if (c.clamp) dt = dt.clamp(l.dt_min, l.dt_max);
  auto r = nn::ssd_scan_recurrent(x.transpose(1, 2), dt.transpose(1, 2), l.neg_A,
                                  xs[1].reshape({B, 1, G, N}).transpose(1, 2),
                                  xs[2].reshape({B, 1, G, N}).transpose(1, 2), state);
  state = r.state;
  Tensor y = (r.out.transpose(1, 2) + x * l.D.view({1, 1, H, 1})).reshape({B, Ds});
  Tensor z = at::silu(parts[0].reshape({B, Ds}).to(at::kFloat));
  const auto dtype = in.scalar_type();
  if (c.gate == Gate::plain) return (y * z).to(dtype);
  auto group_norm = [&](const Tensor& t) {
    Tensor v = t.view({B, G, Ds / G});
    return (v * at::rsqrt(v.pow(2).mean(-1, true) + l.norm_eps)).view({B, Ds});
  };
  const Tensor wn = l.norm_w.to(at::kFloat);
  return (c.gate == Gate::norm_before ? group_norm(y) * wn * z : group_norm(y * z) * wn).to(dtype);
}

std::vector<Case> all_cases() {
  std::vector<Case> cs;
  for (int64_t N : {48, 20})
    for (Gate gate : {Gate::plain, Gate::norm_after, Gate::norm_before})
      for (bool clamp : {false, true})
        cs.push_back({N, gate, clamp, clamp});  // bias with the clamp
  return cs;
}

std::string name(const Case& c, at::ScalarType dt) {
  return "N " + std::to_string(c.N) + " gate " + std::to_string(static_cast<int>(c.gate)) +
         " clamp " + std::to_string(c.clamp) + " " + std::string(c10::toString(dt));
}

}  // namespace

TEST(SsdStep, MatchesTheReferenceOpsOverSeveralSteps) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(3);
  for (const Case& c : all_cases())
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      const int64_t B = 3;
      nn::SsdStepLayer l = random_layer(c, dt, g);
      Tensor hist_ref = at::randn({B, c.Cd(), Kc - 1}, g).to(dt);
      Tensor state_ref = at::randn({B, H, P, c.N}, g) * 0.3;
      // Groups of 1 and 2 rows, as a decode step with a 1-row cache and a 2-row cache.
      Tensor h1 = hist_ref.narrow(0, 0, 1).clone(), h2 = hist_ref.narrow(0, 1, 2).clone();
      Tensor s1 = state_ref.narrow(0, 0, 1).clone(), s2 = state_ref.narrow(0, 1, 2).clone();
      for (int step = 0; step < 4; ++step) {
        Tensor in = (at::randn({B, c.W()}, g) * 1.1).to(dt);
        Tensor want = reference_step(c, in, l, hist_ref, state_ref);
        Tensor got = nn::ssd_decode_step(in, l, c.shape(), {{&h1, &s1, 1}, {&h2, &s2, 2}});
        ASSERT_EQ(got.sizes(), want.sizes());
        ASSERT_EQ(got.scalar_type(), dt);
        // f32: float rounding only; bf16: the conv output and the result are rounded to bf16
        // (8 bits), and an element near a rounding boundary may land one bf16 step away.
        const double tol = dt == at::kFloat ? 1e-5 : 1e-2;
        EXPECT_LT(max_rel(got.to(at::kFloat), want.to(at::kFloat)), tol)
            << name(c, dt) << " step " << step;
        EXPECT_TRUE(at::equal(at::cat({h1, h2}), hist_ref))
            << name(c, dt) << " conv history, step " << step;
        EXPECT_LT(max_rel(at::cat({s1, s2}), state_ref), dt == at::kFloat ? 1e-5 : 1e-2)
            << name(c, dt) << " state, step " << step;
      }
    }
}

TEST(SsdStep, ClampChangesDt) {
  // The clamp case really clamps: the same inputs without it give another result.
  auto g = at::make_generator<at::CPUGeneratorImpl>(7);
  Case c{48, Gate::plain, true, false};
  nn::SsdStepLayer l = random_layer(c, at::kFloat, g);
  nn::SsdStepLayer free = l;
  free.dt_min = 0, free.dt_max = std::numeric_limits<double>::infinity();
  Tensor in = at::randn({2, c.W()}, g);
  Tensor h1, s1, h2, s2;
  Tensor a = nn::ssd_decode_step(in, l, c.shape(), {{&h1, &s1, 2}});
  Tensor b = nn::ssd_decode_step(in, free, c.shape(), {{&h2, &s2, 2}});
  EXPECT_FALSE(at::allclose(a, b));
}

TEST(SsdStep, FreshCachesStartFromZeros) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(4);
  Case c{48, Gate::norm_after, false, true};
  nn::SsdStepLayer l = random_layer(c, at::kFloat, g);
  Tensor in = at::randn({2, c.W()}, g);
  Tensor hist_ref = at::zeros({2, c.Cd(), Kc - 1}), state_ref = at::zeros({2, H, P, c.N});
  Tensor want = reference_step(c, in, l, hist_ref, state_ref);
  Tensor h, s;  // undefined: a fresh cache
  Tensor got = nn::ssd_decode_step(in, l, c.shape(), {{&h, &s, 2}});
  EXPECT_LT(max_rel(got, want), 1e-5);
  ASSERT_TRUE(h.defined() && s.defined());
  EXPECT_TRUE(at::equal(h, hist_ref));
  EXPECT_LT(max_rel(s, state_ref), 1e-5);
}

TEST(SsdStep, ABatchEqualsItsRowsAloneBitwise) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(5);
  for (const Case& c : {Case{48, Gate::norm_after, true, true}, Case{20, Gate::plain, false, false},
                        Case{48, Gate::norm_before, false, false}})
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      const int64_t B = 5;
      nn::SsdStepLayer l = random_layer(c, dt, g);
      Tensor hist = at::randn({B, c.Cd(), Kc - 1}, g).to(dt),
             state = at::randn({B, H, P, c.N}, g) * 0.3;
      std::vector<Tensor> hs, ss, hb, sb;
      for (int64_t r = 0; r < B; ++r) {
        hs.push_back(hist[r].unsqueeze(0).clone()), ss.push_back(state[r].unsqueeze(0).clone());
        hb.push_back(hs.back().clone()), sb.push_back(ss.back().clone());
      }
      for (int step = 0; step < 3; ++step) {
        Tensor in = at::randn({B, c.W()}, g).to(dt);
        std::vector<nn::SsdStepCache> all;
        for (int64_t r = 0; r < B; ++r) all.push_back({&hb[r], &sb[r], 1});
        Tensor batch = nn::ssd_decode_step(in, l, c.shape(), all);
        for (int64_t r = 0; r < B; ++r) {
          Tensor one = nn::ssd_decode_step(in.narrow(0, r, 1), l, c.shape(), {{&hs[r], &ss[r], 1}});
          EXPECT_TRUE(at::equal(one, batch.narrow(0, r, 1)))
              << name(c, dt) << " row " << r << " step " << step;
          EXPECT_TRUE(at::equal(ss[r], sb[r]));
          EXPECT_TRUE(at::equal(hs[r], hb[r]));
        }
      }
    }
}

TEST(SsdStep, OneThreadEqualsTwoBitwise) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(6);
  const int saved = at::get_num_threads();
  for (const Case& c :
       {Case{48, Gate::norm_after, true, true}, Case{48, Gate::norm_before, false, false}})
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      const int64_t B = 3;
      nn::SsdStepLayer l = random_layer(c, dt, g);
      Tensor hist = at::randn({B, c.Cd(), Kc - 1}, g).to(dt),
             state = at::randn({B, H, P, c.N}, g) * 0.3;
      Tensor h1 = hist.clone(), s1 = state.clone(), h2 = hist.clone(), s2 = state.clone();
      for (int step = 0; step < 3; ++step) {
        Tensor in = at::randn({B, c.W()}, g).to(dt);
        at::set_num_threads(1);
        Tensor a = nn::ssd_decode_step(in, l, c.shape(), {{&h1, &s1, B}});
        at::set_num_threads(std::max(saved, 2));
        Tensor b = nn::ssd_decode_step(in, l, c.shape(), {{&h2, &s2, B}});
        at::set_num_threads(saved);
        EXPECT_TRUE(at::equal(a, b)) << name(c, dt) << " step " << step;
        EXPECT_TRUE(at::equal(s1, s2) && at::equal(h1, h2));
      }
    }
}

TEST(SsdStep, RejectsBadShapes) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(8);
  Case c;
  nn::SsdStepLayer l = random_layer(c, at::kFloat, g);
  Tensor h, s;
  EXPECT_THROW(nn::ssd_decode_step(at::randn({2, c.W() + 1}), l, c.shape(), {{&h, &s, 2}}),
               c10::Error);
  EXPECT_THROW(nn::ssd_decode_step(at::randn({2, c.W()}), l, c.shape(), {{&h, &s, 1}}), c10::Error);
  EXPECT_THROW(nn::ssd_decode_step(at::randn({2, c.W()}, at::kDouble), l, c.shape(), {{&h, &s, 2}}),
               c10::Error);
}
