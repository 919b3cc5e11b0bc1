// Generation and sampling: cached greedy decoding against recomputing the whole sequence,
// stop conditions, and the sampler's distribution.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <algorithm>
#include <limits>
#include <numeric>
#include <random>
#include <set>

#include "s0/generate/generate.h"
#include "s0/generate/sampler.h"
#include "s0/util/error.h"
#include "test_util.h"

using namespace s0;
using generate::Sampler;
using generate::SamplingParams;

namespace {

std::unique_ptr<models::CausalLM>& tiny() {
  static std::unique_ptr<models::CausalLM> m =
      models::load_model(s0::testing::tiny_qwen35("f32", 11), at::kFloat);
  return m;
}

// Greedy continuation computed without any cache reuse: a fresh full forward per token.
std::vector<int64_t> greedy_by_recompute(models::CausalLM& m, std::vector<int64_t> ids, int n,
                                         const models::StateMap* states) {
  NoGrad ng;
  std::vector<int64_t> out;
  for (int i = 0; i < n; ++i) {
    auto cache = m.new_cache(1, states);
    Tensor logits = m.forward(at::tensor(ids, at::kLong).view({1, -1}), cache, true);
    int64_t tok = logits.reshape(-1).argmax().item<int64_t>();
    out.push_back(tok);
    ids.push_back(tok);
  }
  return out;
}

TEST(Generate, GreedyEqualsRecomputation) {
  auto& m = *tiny();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  models::StateMap states;
  for (auto l : m.recurrent_layers()) states[l] = at::randn(m.state_shape(), gen);
  generate::GenerateOptions opt;
  opt.max_new_tokens = 12;
  opt.eos_ids = {-1};
  std::vector<std::vector<int64_t>> prompts = {{1, 2, 3, 4, 5}, {300, 17}, {9}};
  for (const models::StateMap* s : std::vector<const models::StateMap*>{nullptr, &states}) {
    auto gens = generate::generate(m, prompts, opt, s);
    ASSERT_EQ(gens.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(gens[i].tokens, greedy_by_recompute(m, prompts[i], 12, s)) << "prompt " << i;
      EXPECT_EQ(gens[i].finish_reason, "length");
    }
  }
  // The states change what is generated (random states of unit scale are far from zero).
  auto a = generate::generate(m, prompts, opt, nullptr), b = generate::generate(m, prompts, opt, &states);
  bool differ = false;
  for (size_t i = 0; i < prompts.size(); ++i) differ |= a[i].tokens != b[i].tokens;
  EXPECT_TRUE(differ);
}

TEST(Generate, StopsOnEosAndStopStringsAndLength) {
  auto& m = *tiny();
  generate::GenerateOptions opt;
  opt.max_new_tokens = 10;
  opt.eos_ids = {-1};
  auto ref = generate::generate(m, {{5, 6, 7}}, opt)[0].tokens;
  ASSERT_EQ(ref.size(), 10u);

  auto o2 = opt;
  o2.eos_ids = {ref[2]};
  size_t first = std::find(ref.begin(), ref.end(), ref[2]) - ref.begin();
  auto g = generate::generate(m, {{5, 6, 7}}, o2)[0];
  EXPECT_EQ(g.finish_reason, "eos");
  EXPECT_EQ(g.tokens, std::vector<int64_t>(ref.begin(), ref.begin() + first + 1));

  auto o3 = opt;
  o3.decode = [](const std::vector<int64_t>& ids) {
    std::string s;
    for (auto i : ids) s += "<" + std::to_string(i) + ">";
    return s;
  };
  o3.stop_strings = {"<" + std::to_string(ref[1]) + ">"};
  g = generate::generate(m, {{5, 6, 7}}, o3)[0];
  EXPECT_EQ(g.finish_reason, "stop");
  size_t first1 = std::find(ref.begin(), ref.end(), ref[1]) - ref.begin();
  EXPECT_EQ(g.tokens.size(), first1 + 1);

  auto o4 = opt;
  o4.max_new_tokens = 0;
  EXPECT_TRUE(generate::generate(m, {{5}}, o4)[0].tokens.empty());
  auto o5 = opt;
  o5.stop_strings = {"x"};  // no decode function
  EXPECT_THROW(generate::generate(m, {{5}}, o5), s0::Error);
  EXPECT_THROW(generate::generate(m, {{}}, opt), s0::Error);
}

TEST(Generate, SamplingIsSeededAndDeterministic) {
  auto& m = *tiny();
  generate::GenerateOptions opt;
  opt.max_new_tokens = 16;
  opt.eos_ids = {-1};
  opt.sampling = {1.0, 0, 0.95, 123};
  auto a = generate::generate(m, {{1, 2}, {1, 2}}, opt);
  auto b = generate::generate(m, {{1, 2}, {1, 2}}, opt);
  EXPECT_EQ(a[0].tokens, b[0].tokens);
  EXPECT_EQ(a[1].tokens, b[1].tokens);
  EXPECT_NE(a[0].tokens, a[1].tokens);  // prompt i samples with seed + i
}

// Batched sampling of one prompt equals sampling it n times alone (row i with seed + i),
// including rows that stop early (eos) and are dropped from the batch, with and without S0.
TEST(Generate, SampleNEqualsOneAtATime) {
  auto& m = *tiny();
  generate::GenerateOptions opt;
  opt.max_new_tokens = 12;
  opt.sampling = {1.0, 0, 0.95, 77};
  // Three frequent-ish tokens end a row, so rows finish at different steps.
  std::vector<int64_t> prompt = {5, 9, 33, 2};
  at::manual_seed(3);
  for (int with_states = 0; with_states < 2; ++with_states) {
    models::StateMap states;
    auto shape = m.state_shape();
    for (int64_t l : m.recurrent_layers()) states[l] = at::randn(shape, at::kFloat) * 0.5;
    const models::StateMap* sp = with_states ? &states : nullptr;
    // Pick eos ids from a real sample of all 12 steps (-1 is never generated, so the model's
    // own eos cannot end it early and leave fewer than 9 tokens).
    auto popt = opt;
    popt.eos_ids = {-1};
    auto base = generate::generate(m, {prompt}, popt, sp);
    ASSERT_GE(base[0].tokens.size(), 9u);
    opt.eos_ids = {base[0].tokens[3], base[0].tokens[5], base[0].tokens[8]};
    auto batch = generate::sample_n(m, prompt, 6, opt, sp);
    ASSERT_EQ(batch.size(), 6u);
    std::set<size_t> lengths;
    for (int64_t i = 0; i < 6; ++i) {
      auto o = opt;
      o.sampling.seed += static_cast<uint64_t>(i);
      auto single = generate::generate(m, {prompt}, o, sp);
      EXPECT_EQ(batch[i].tokens, single[0].tokens) << "row " << i << " states " << with_states;
      EXPECT_EQ(batch[i].finish_reason, single[0].finish_reason);
      lengths.insert(batch[i].tokens.size());
    }
    EXPECT_GT(lengths.size(), 1u) << "rows should finish at different steps";
    opt.eos_ids.clear();
  }
}

// n samples of several prompts decoded together (a prompt admitted when its n samples fit)
// equal sample_n() of each prompt alone with its own seed, with and without S0.
TEST(Generate, SampleNManyEqualsSampleNOfEachPrompt) {
  auto& m = *tiny();
  at::manual_seed(8);
  models::StateMap states;
  for (int64_t l : m.recurrent_layers()) states[l] = at::randn(m.state_shape(), at::kFloat) * 0.5;
  const std::vector<std::vector<int64_t>> prompts = {{5, 9, 33, 2}, {7}, {100, 3, 3, 3, 8}, {42, 1, 6}};
  const std::vector<uint64_t> seeds = {11, 2000, 37, 11};  // a repeated seed on another prompt too
  generate::GenerateOptions opt;
  opt.max_new_tokens = 9;
  opt.sampling = {1.0, 0, 0.95, 0};
  // Rows end at different steps: two tokens prompt 0 generates become eos ids.
  auto popt = opt;
  popt.eos_ids = {-1};
  popt.sampling.seed = seeds[0];
  auto probe = generate::generate(m, {prompts[0]}, popt);
  ASSERT_GE(probe[0].tokens.size(), 6u);
  opt.eos_ids = {probe[0].tokens[2], probe[0].tokens[5]};
  for (const models::StateMap* sp : std::vector<const models::StateMap*>{nullptr, &states})
    for (int64_t max_batch : {3, 7, 64}) {  // 3 < n: one prompt at a time; 7: one, then the next as rows free
      auto many = generate::sample_n_many(m, prompts, 3, seeds, opt, sp, max_batch);
      ASSERT_EQ(many.size(), prompts.size());
      for (size_t p = 0; p < prompts.size(); ++p) {
        auto o = opt;
        o.sampling.seed = seeds[p];
        auto alone = generate::sample_n(m, prompts[p], 3, o, sp);
        ASSERT_EQ(many[p].size(), 3u);
        for (size_t i = 0; i < 3; ++i) {
          EXPECT_EQ(many[p][i].tokens, alone[i].tokens) << "prompt " << p << " sample " << i << " batch " << max_batch;
          EXPECT_EQ(many[p][i].finish_reason, alone[i].finish_reason);
        }
      }
    }
  EXPECT_THROW(generate::sample_n_many(m, prompts, 3, {1, 2}, opt), Error);
  EXPECT_THROW(generate::sample_n_many(m, {{1}, {}}, 2, {1, 2}, opt), Error);
}

// Several prompts decoded together through decode_step (admitting new prompts as others
// finish) give exactly generate()'s tokens for each prompt: greedy and sampled, with and
// without S0, with rows stopping at different steps.
TEST(Generate, BatchedEqualsOneAtATime) {
  auto& m = *tiny();
  at::manual_seed(5);
  models::StateMap states;
  for (int64_t l : m.recurrent_layers()) states[l] = at::randn(m.state_shape(), at::kFloat) * 0.5;
  std::vector<std::vector<int64_t>> prompts = {{5, 9, 33, 2}, {7}, {100, 3, 3, 3, 3, 3, 8}, {42, 1}, {9, 9}, {300, 2, 1}};
  for (double temp : {0.0, 1.0})
    for (const models::StateMap* sp : std::vector<const models::StateMap*>{nullptr, &states}) {
      generate::GenerateOptions opt;
      opt.max_new_tokens = 10;
      opt.sampling = {temp, 0, 0.95, 31};
      // Two of the tokens prompt 0 generates become the eos ids, so rows stop at different
      // steps. The probe runs all 10 steps (-1 is never generated); with the model's own eos
      // ids it stopped after 2 tokens and the next line read past the vector (found by ASan).
      generate::GenerateOptions popt = opt;
      popt.eos_ids = {-1};
      auto probe = generate::generate(m, {prompts[0]}, popt, sp);
      ASSERT_GE(probe[0].tokens.size(), 7u);
      opt.eos_ids = {probe[0].tokens[2], probe[0].tokens[6]};
      auto single = generate::generate(m, prompts, opt, sp);
      std::vector<size_t> done_order;
      auto batched = generate::generate_batched(m, prompts, opt, sp, /*max_batch=*/3,
                                                [&](size_t i, const generate::Generation&) { done_order.push_back(i); });
      ASSERT_EQ(batched.size(), prompts.size());
      for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_EQ(batched[i].tokens, single[i].tokens) << "prompt " << i << " temp " << temp << " states " << (sp != nullptr);
        EXPECT_EQ(batched[i].finish_reason, single[i].finish_reason);
      }
      EXPECT_EQ(done_order.size(), prompts.size());
    }
}

std::vector<double> frequencies(const SamplingParams& p, const std::vector<float>& logits, int n) {
  Sampler s(p);
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < n; ++i) f[s.sample(logits.data(), logits.size())] += 1.0 / n;
  return f;
}

TEST(Sampler, GreedyAndDegenerateSettingsPickTheArgmax) {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 1.9f};
  EXPECT_EQ(Sampler({0.0, 0, 1.0, 0}).sample(l.data(), 4), 1);
  for (int seed = 0; seed < 20; ++seed) {
    EXPECT_EQ(Sampler({1.0, 1, 1.0, uint64_t(seed)}).sample(l.data(), 4), 1);    // top-k 1
    EXPECT_EQ(Sampler({1.0, 0, 1e-6, uint64_t(seed)}).sample(l.data(), 4), 1);   // tiny top-p
  }
}

TEST(Sampler, DistributionsMatchSoftmaxTopKTopP) {
  const int n = 40000;
  // probabilities 0.5, 0.3, 0.2 (and a near-zero fourth token)
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f), -30.f};
  auto f = frequencies({1.0, 0, 1.0, 1}, l, n);
  EXPECT_NEAR(f[0], 0.5, 0.015);
  EXPECT_NEAR(f[1], 0.3, 0.015);
  EXPECT_NEAR(f[2], 0.2, 0.015);
  f = frequencies({1.0, 2, 1.0, 2}, l, n);  // top-k 2: renormalised 0.625 / 0.375
  EXPECT_NEAR(f[0], 0.625, 0.015);
  EXPECT_NEAR(f[1], 0.375, 0.015);
  EXPECT_EQ(f[2], 0.0);
  f = frequencies({1.0, 0, 0.6, 3}, l, n);  // top-p 0.6 keeps {0.5, 0.3}
  EXPECT_NEAR(f[0], 0.625, 0.015);
  EXPECT_EQ(f[2], 0.0);
  f = frequencies({2.0, 0, 1.0, 4}, l, n);  // temperature 2: p ~ sqrt(p)
  double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.2);
  EXPECT_NEAR(f[0], std::sqrt(0.5) / z, 0.015);
  // A large vocabulary with top-p alone (the growing candidate block).
  std::vector<float> big(5000, 0.f);
  big[7] = 9.f;  // p = e^9 / (e^9 + 4999) = 0.62
  f = frequencies({1.0, 0, 0.5, 5}, big, 2000);
  EXPECT_NEAR(f[7], 1.0, 1e-9);  // token 7 alone covers top_p = 0.5
  f = frequencies({1.0, 0, 0.7, 6}, big, 4000);  // needs token 7 plus ~1000 of the rest
  EXPECT_NEAR(f[7], 0.618 / 0.7, 0.03);
}

// Top-p over a large vocabulary (the bucketed selection, no full sort) against the set
// defined by brute force: sort every token by logit (ties by index), keep the smallest
// prefix holding top_p of the mass. Every draw must fall in that set, and the draws must
// follow the renormalised probabilities. Includes ties at the edge and a flat row.
TEST(Sampler, TopPKeepsExactlyTheSmallestBestSet) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 2.5f);
  for (int round = 0; round < 3; ++round) {
    const int V = 3001;
    std::vector<float> l(V);
    for (auto& v : l) v = round == 2 ? 0.01f * nd(rng) : nd(rng);
    if (round == 1)
      for (int i = 0; i < V; i += 3) l[i] = 1.25f;  // a thousand ties
    const double T = 0.8, top_p = round == 2 ? 0.9 : 0.6;
    std::vector<int> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    const float mx = l[order[0]];
    std::vector<double> w(V);
    double total = 0;
    for (int i = 0; i < V; ++i) total += w[i] = std::exp((double(l[i]) - mx) / T);
    std::set<int> keep;
    double cum = 0, kept = 0;
    for (int i : order) {
      keep.insert(i);
      kept += w[i];
      if ((cum += w[i]) >= top_p * total) break;
    }
    const int draws = 30000;
    auto f = frequencies({T, 0, top_p, uint64_t(round)}, l, draws);
    double off = 0, err = 0;
    for (int i = 0; i < V; ++i) {
      if (!keep.count(i)) off += f[i];
      else err = std::max(err, std::abs(f[i] - w[i] / kept));
    }
    EXPECT_EQ(off, 0.0) << "round " << round << ": draws outside the top-p set";
    std::printf("round %d: set of %zu, max frequency error %.4f\n", round, keep.size(), err);
    EXPECT_LT(err, 0.012) << "round " << round << " (set of " << keep.size() << ")";
  }
}

// Rows with NaN or infinite logits have no distribution: every setting gives the greedy
// token (the first maximum, NaNs skipped), always a valid index.
TEST(Sampler, NonFiniteRowsGiveTheGreedyToken) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> a = {0.5f, nan, 3.f, 3.f, nan, 1.f};
  std::vector<float> b = {nan, 2.f, 5.f};
  std::vector<float> c = {1.f, inf, 2.f};
  std::vector<float> d(40, -inf);
  for (auto p : {SamplingParams{0.0, 0, 1.0, 1}, SamplingParams{0.7, 0, 1.0, 1}, SamplingParams{0.7, 0, 0.95, 1},
                 SamplingParams{0.7, 5, 0.95, 1}}) {
    EXPECT_EQ(Sampler(p).sample(a.data(), a.size()), 2);
    EXPECT_EQ(Sampler(p).sample(b.data(), b.size()), 0);  // as std::max_element: a leading NaN wins
    EXPECT_EQ(Sampler(p).sample(c.data(), c.size()), 1);
    EXPECT_EQ(Sampler(p).sample(d.data(), d.size()), 0);
  }
  // The greedy pick over long rows (the vector path and its tail) is std::max_element's.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-4.f, 4.f);
  for (int n : {1, 15, 16, 17, 1000, 4099}) {
    std::vector<float> l(n);
    for (auto& v : l) v = std::round(u(rng) * 4.f) / 4.f;  // many ties
    if (n > 20) l[n / 3] = nan;
    EXPECT_EQ(Sampler({0.0, 0, 1.0, 0}).sample(l.data(), n), std::max_element(l.begin(), l.end()) - l.begin()) << n;
  }
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_THROW(Sampler({1.0, 0, 0.0, 0}), s0::Error);
  EXPECT_THROW(Sampler({1.0, 0, 1.5, 0}), s0::Error);
  EXPECT_THROW(Sampler({-1.0, 0, 1.0, 0}), s0::Error);
  EXPECT_THROW(Sampler({1.0, -2, 1.0, 0}), s0::Error);
}

}  // namespace
