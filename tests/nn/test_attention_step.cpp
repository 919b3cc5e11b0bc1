// The fused attention decode step (src/s0/nn/attention_step.h) against the unfused ops it
// replaces (apply_rope, kv_append, causal_attention): several steps from prefilled caches of
// different lengths, GQA (H = 2 KV), partial rotary dims, strided q (a head-split slice); a
// batch equals its rows alone, bitwise; the cache grows past its capacity.
#include <gtest/gtest.h>

#include <cmath>

#include "s0/nn/attention.h"
#include "s0/nn/attention_step.h"
#include "tensor_util.h"

using namespace s0;
using s0::testing::max_rel;

namespace {

constexpr int64_t H = 4, KV = 2, hd = 32, R = 16;

// The unfused decode path of one group (as models/blocks.cpp's rope_attention without the
// kernel): q [b, 1, H, hd], k, v [b, 1, KV, hd].
Tensor reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& inv_freq,
                 Tensor& kb, Tensor& vb, int64_t past, double scale) {
  Tensor qg = nn::apply_rope(q, inv_freq, past).transpose(1, 2).contiguous();
  Tensor kg = nn::apply_rope(k, inv_freq, past).transpose(1, 2);
  Tensor vg = v.transpose(1, 2);
  Tensor k_all, v_all;
  nn::kv_append(kb, vb, kg, vg, past, k_all, v_all);
  return nn::causal_attention(qg, k_all, v_all, past, scale);
}

}  // namespace

TEST(AttentionStep, MatchesTheUnfusedOpsOverSeveralSteps) {
  NoGrad ng;
  auto g = at::make_generator<at::CPUGeneratorImpl>(11);
  const Tensor inv_freq = nn::rope_inv_freq(R, 10000.0);
  const double scale = 1.0 / std::sqrt(double(hd));
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    // Two groups: one row prefilled with 70 tokens (capacity 70: the first step grows it),
    // two rows with 5.
    const int64_t pa = 70, pb = 5;
    Tensor ka = at::randn({1, KV, pa, hd}, g).to(dt), va = at::randn({1, KV, pa, hd}, g).to(dt);
    Tensor kb = at::randn({2, KV, pb, hd}, g).to(dt), vb = at::randn({2, KV, pb, hd}, g).to(dt);
    Tensor ka_ref = ka.clone(), va_ref = va.clone(), kb_ref = kb.clone(), vb_ref = vb.clone();
    for (int step = 0; step < 3; ++step) {
      Tensor wide = at::randn({3, 1, H, 2 * hd}, g).to(dt);
      Tensor q = wide.narrow(3, 0, hd);  // strided, as the model's [query | gate] split
      Tensor k = at::randn({3, 1, KV, hd}, g).to(dt), v = at::randn({3, 1, KV, hd}, g).to(dt);
      Tensor want = at::cat({reference(q.narrow(0, 0, 1), k.narrow(0, 0, 1), v.narrow(0, 0, 1),
                                       inv_freq, ka_ref, va_ref, pa + step, scale),
                             reference(q.narrow(0, 1, 2), k.narrow(0, 1, 2), v.narrow(0, 1, 2),
                                       inv_freq, kb_ref, vb_ref, pb + step, scale)});
      Tensor got = nn::attention_decode_step(q, k, v, inv_freq, scale,
                                             {{&ka, &va, pa + step, 1}, {&kb, &vb, pb + step, 2}});
      ASSERT_EQ(got.sizes(), want.sizes());
      const double tol = dt == at::kFloat ? 1e-5 : 2e-2;
      EXPECT_LT(max_rel(got.to(at::kFloat), want.to(at::kFloat)), tol)
          << "step " << step << " " << dt;
      // The caches hold the same rotated keys and values.
      const int64_t n = pa + step + 1, m = pb + step + 1;
      EXPECT_LT(max_rel(ka.narrow(2, 0, n).to(at::kFloat), ka_ref.narrow(2, 0, n).to(at::kFloat)),
                tol);
      EXPECT_TRUE(at::equal(va.narrow(2, 0, n), va_ref.narrow(2, 0, n)));
      EXPECT_LT(max_rel(kb.narrow(2, 0, m).to(at::kFloat), kb_ref.narrow(2, 0, m).to(at::kFloat)),
                tol);
    }
    EXPECT_GE(ka.size(2), 128) << "grown geometrically";
  }
}

TEST(AttentionStep, ABatchEqualsItsRowsAloneBitwise) {
  NoGrad ng;
  auto g = at::make_generator<at::CPUGeneratorImpl>(12);
  const Tensor inv_freq = nn::rope_inv_freq(R, 10000.0);
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    const int64_t B = 4;
    std::vector<Tensor> ks, vs, kb, vb;
    std::vector<int64_t> past;
    for (int64_t r = 0; r < B; ++r) {
      past.push_back(3 + 7 * r);
      ks.push_back(at::randn({1, KV, past[r], hd}, g).to(dt)),
          vs.push_back(at::randn({1, KV, past[r], hd}, g).to(dt));
      kb.push_back(ks[r].clone()), vb.push_back(vs[r].clone());
    }
    for (int step = 0; step < 2; ++step) {
      Tensor q = at::randn({B, 1, H, hd}, g).to(dt), k = at::randn({B, 1, KV, hd}, g).to(dt),
             v = at::randn({B, 1, KV, hd}, g).to(dt);
      std::vector<nn::KvStepCache> all;
      for (int64_t r = 0; r < B; ++r) all.push_back({&kb[r], &vb[r], past[r] + step, 1});
      Tensor batch = nn::attention_decode_step(q, k, v, inv_freq, 0.2, all);
      for (int64_t r = 0; r < B; ++r) {
        Tensor one =
            nn::attention_decode_step(q.narrow(0, r, 1), k.narrow(0, r, 1), v.narrow(0, r, 1),
                                      inv_freq, 0.2, {{&ks[r], &vs[r], past[r] + step, 1}});
        EXPECT_TRUE(at::equal(one, batch.narrow(0, r, 1))) << "row " << r;
      }
    }
  }
}

// The AVX-512 scores' dot products (16 positions' lane sums at once, through a transpose)
// against a scalar std::fma reference of the same arithmetic, bit for bit; then the whole
// step on the AVX-512 path against the portable loop, which agrees to float rounding (bitwise
// in the release build, where GCC fuses the portable loop's multiply-adds the same way).
TEST(AttentionStep, VectorScoresEqualTheirReference) {
  NoGrad ng;
  at::manual_seed(17);
  for (int64_t hd : {16, 64, 256})
    for (int64_t T1 : {1, 5, 15, 16, 17, 40, 130}) {
      const int64_t G = 4;
      Tensor q = at::randn({G, hd}) * 3, kf = at::randn({T1, hd}), kb = kf.to(at::kBFloat16);
      for (bool bf16 : {true, false}) {
        const void* k = bf16 ? static_cast<const void*>(kb.data_ptr<at::BFloat16>()) : kf.data_ptr<float>();
        std::vector<float> got(G * T1, -1.f), want(G * T1, -2.f);
        if (!nn::attention_key_dots(k, bf16, T1, hd, q.data_ptr<float>(), G, got.data(), false))
          GTEST_SKIP() << "no AVX-512 on this CPU";
        nn::attention_key_dots(k, bf16, T1, hd, q.data_ptr<float>(), G, want.data(), true);
        ASSERT_EQ(got, want) << "hd " << hd << " T1 " << T1 << " bf16 " << bf16;
      }
    }
  for (auto dt : {at::kBFloat16, at::kFloat})
    for (int64_t past : {0, 5, 15, 16, 17, 40, 130}) {
      const int64_t B = 3, H = 8, KV = 2, hd = 64;
      std::vector<Tensor> k0(B), v0(B);
      for (int64_t b = 0; b < B; ++b)
        k0[b] = at::randn({1, KV, past + 4, hd}).to(dt), v0[b] = at::randn({1, KV, past + 4, hd}).to(dt);
      Tensor q = (at::randn({B, 1, H, hd}) * 3).to(dt), k = at::randn({B, 1, KV, hd}).to(dt),
             v = at::randn({B, 1, KV, hd}).to(dt);
      Tensor inv = at::pow(10000.0, -at::arange(0, 16, 2, at::kFloat) / 16.0);
      auto run = [&](bool vector) {
        std::vector<Tensor> kc, vc;
        for (int64_t b = 0; b < B; ++b) kc.push_back(k0[b].clone()), vc.push_back(v0[b].clone());
        std::vector<nn::KvStepCache> caches;
        for (int64_t b = 0; b < B; ++b) caches.push_back({&kc[b], &vc[b], past, 1});
        nn::attention_step_vector_scores(vector);
        Tensor out = nn::attention_decode_step(q, k, v, inv, 0.125, caches);
        nn::attention_step_vector_scores(true);
        return out.to(at::kFloat);
      };
      const double tol = dt == at::kFloat ? 1e-5 : 2e-2;
      EXPECT_TRUE(at::allclose(run(true), run(false), tol, tol)) << dt << " past " << past;
    }
}
