// The analyses (src/s0/pipeline/analysis.h, probe_math.h) on constructed cases with known
// answers: PCA of a matrix built from a known decomposition, logistic regression against its
// closed form and a brute-force grid, AUC against pair counting, the exponential fit on an
// exact exponential, KL exactly 0 for a zero state set, persistence against full forward
// passes, divergence on hand-made results, probe features against the model's own cache.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "s0/adapters/state_set.h"
#include "s0/eval/stats.h"
#include "s0/io/atomic_file.h"
#include "s0/models/model.h"
#include "s0/pipeline/analysis.h"
#include "s0/pipeline/probe_math.h"
#include "s0/pipeline/report.h"
#include "s0/util/error.h"
#include "test_util.h"

namespace {

using namespace s0;
using namespace s0::pipeline;
using nlohmann::json;
namespace fs = std::filesystem;

// ------------------------------------------------------------------ statistics

// Two-sided binomial sign test by direct enumeration (independent of stats.cpp's lgamma form):
// p = sum of P(X = i) over i with P(X = i) <= P(X = observed), X ~ Bin(n, 1/2) (symmetric, so
// this equals 2 * the smaller tail, capped at 1).
double sign_test_enumerated(int n, int k) {
  std::vector<double> pr(n + 1);
  for (int i = 0; i <= n; ++i) {
    double c = 1;
    for (int j = 1; j <= i; ++j) c = c * (n - i + j) / j;
    pr[i] = c / std::pow(2.0, n);
  }
  double p = 0;
  for (int i = 0; i <= n; ++i)
    if (pr[i] <= pr[k] * (1 + 1e-12)) p += pr[i];
  return std::min(1.0, p);
}

TEST(AnalysisStats, SignTestEqualsEnumeratedBinomial) {
  for (auto [a, b] : std::vector<std::pair<int, int>>{{17, 3}, {5, 5}, {0, 7}, {9, 2}, {1, 0}})
    EXPECT_NEAR(eval::sign_test_p(a, b), sign_test_enumerated(a + b, a), 1e-12) << a << " " << b;
}

TEST(AnalysisStats, AucAndDelongAgainstPairCounting) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd;
  std::vector<double> s;
  std::vector<int> y;
  for (int i = 0; i < 37; ++i) {
    y.push_back(i % 3 == 0);
    s.push_back(std::round(nd(rng) * 2 + y.back()) / 2);  // coarse: many ties
  }
  // Direct O(m n) placement values.
  std::vector<double> pos, neg;
  for (size_t i = 0; i < s.size(); ++i) (y[i] ? pos : neg).push_back(s[i]);
  auto psi = [](double a, double b) { return a > b ? 1.0 : a == b ? 0.5 : 0.0; };
  std::vector<double> v10(pos.size(), 0), v01(neg.size(), 0);
  double total = 0;
  for (size_t i = 0; i < pos.size(); ++i)
    for (size_t j = 0; j < neg.size(); ++j) {
      const double v = psi(pos[i], neg[j]);
      v10[i] += v / neg.size(), v01[j] += v / pos.size(), total += v;
    }
  const double auc = total / (pos.size() * neg.size());
  auto var = [](const std::vector<double>& v) {
    double m = 0, q = 0;
    for (double x : v) m += x / v.size();
    for (double x : v) q += (x - m) * (x - m) / (v.size() - 1);
    return q;
  };
  const double se = std::sqrt(var(v10) / pos.size() + var(v01) / neg.size());
  const eval::Auc r = eval::auc_delong(s, y);
  EXPECT_NEAR(r.auc, auc, 1e-12);
  EXPECT_NEAR(r.se, se, 1e-12);
  EXPECT_NEAR(r.lo, std::max(0.0, auc - 1.959963984540054 * se), 1e-12);
  EXPECT_EQ(r.positives, static_cast<int64_t>(pos.size()));
  // A tiny case by hand: pairs (0.9,0.7) (0.9,0.8) (0.8,0.7) win, (0.8,0.8) ties: 3.5 / 4.
  EXPECT_DOUBLE_EQ(eval::auc_delong({0.9, 0.8, 0.7, 0.8}, {1, 1, 0, 0}).auc, 0.875);
  EXPECT_THROW(eval::auc_delong({1, 2}, {1, 1}), Error);
}

TEST(AnalysisStats, ExponentialFitRecoversAnExactExponential) {
  std::vector<double> x, y;
  for (int t = 0; t < 30; ++t) x.push_back(t), y.push_back(3.0 * std::exp(-0.2 * t));
  y[5] = 0;  // non-positive points are left out
  const eval::ExpFit f = eval::exponential_fit(x, y);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f.points, 29);
  EXPECT_NEAR(f.a, std::log(3.0), 1e-10);
  EXPECT_NEAR(f.b, -0.2, 1e-12);
  EXPECT_NEAR(f.half_life, std::log(2.0) / 0.2, 1e-9);
  EXPECT_NEAR(f.r2, 1.0, 1e-12);
  EXPECT_FALSE(eval::exponential_fit({0, 1, 2}, {0, 0, 1}).ok());
  EXPECT_TRUE(std::isinf(eval::exponential_fit({0, 1}, {1, 2}).half_life));  // growth: no half-life
}

// ------------------------------------------------------------------ PCA, logistic regression, CV AUC

// Columns orthonormal and (optionally) orthogonal to the all-ones vector.
Tensor orthonormal(int64_t n, int64_t r, bool centred, uint64_t seed) {
  at::manual_seed(seed);
  Tensor a = at::randn({n, r}, at::kDouble);
  if (centred) a = at::cat({at::ones({n, 1}, at::kDouble), a}, 1);
  Tensor q = std::get<0>(at::linalg_qr(a));
  return centred ? q.narrow(1, 1, r).contiguous() : q;
}

void check_pca(int64_t n, int64_t d) {
  SCOPED_TRACE("n=" + std::to_string(n) + " d=" + std::to_string(d));
  const int64_t r = 3;
  const Tensor A = orthonormal(n, r, true, 1), B = orthonormal(d, r, false, 2);
  const Tensor s = at::tensor({9.0, 4.0, 1.5}, at::kDouble);
  const Tensor mu = at::randn({d}, at::kDouble);
  const Tensor X = at::matmul(A * s, B.t()) + mu;  // centred part has singular values s
  const Pca p = fit_pca(X, 10);
  ASSERT_EQ(p.components.size(0), r);  // rank 3: only three components with variance
  EXPECT_TRUE(at::allclose(p.variances, s.pow(2) / (n - 1), 1e-10, 1e-12)) << p.variances;
  EXPECT_TRUE(at::allclose(p.mean, mu, 1e-10, 1e-12));
  for (int64_t k = 0; k < r; ++k) {
    // Each component is +-B[:, k]; the sign rule makes its largest-magnitude entry positive.
    const Tensor b = B.select(1, k), c = p.components[k];
    const double dot = (b * c).sum().item<double>();
    EXPECT_NEAR(std::abs(dot), 1.0, 1e-10) << k;
    EXPECT_GT(c[c.abs().argmax().item<int64_t>()].item<double>(), 0);
    // Scores are the known left factor times s (same sign as the component).
    EXPECT_TRUE(at::allclose(p.project(X).select(1, k), A.select(1, k) * s[k] * (dot > 0 ? 1 : -1), 1e-9, 1e-9)) << k;
  }
}

TEST(ProbeMath, PcaReproducesAKnownDecomposition) {
  check_pca(40, 6);   // covariance route (d <= n)
  check_pca(12, 50);  // Gram route (d > n)
}

TEST(ProbeMath, LogisticRegressionMatchesTheClosedForm) {
  // One binary feature, no penalty: the MLE puts each group's fitted rate at its observed rate,
  // b = logit(3/10), b + w = logit(8/10).
  std::vector<double> x;
  std::vector<int> y;
  auto add = [&](double xv, int yv, int times) {
    for (int i = 0; i < times; ++i) x.push_back(xv), y.push_back(yv);
  };
  add(0, 1, 3), add(0, 0, 7), add(1, 1, 8), add(1, 0, 2);
  const Logistic m = fit_logistic(at::tensor(x, at::kDouble).view({-1, 1}), y, 0.0);
  EXPECT_TRUE(m.converged);
  EXPECT_NEAR(m.b, std::log(3.0 / 7.0), 1e-9);
  EXPECT_NEAR(m.w[0].item<double>(), std::log(8.0 / 2.0) - std::log(3.0 / 7.0), 1e-9);
}

TEST(ProbeMath, LogisticRegressionMatchesABruteForceOptimum) {
  // Two features, L2 0.7, noisy labels; the objective evaluated here in plain C++ on a grid,
  // coarse then fine around the best point.
  std::mt19937_64 rng(11);
  std::normal_distribution<double> nd;
  std::vector<double> x1, x2;
  std::vector<int> y;
  for (int i = 0; i < 40; ++i) {
    x1.push_back(nd(rng)), x2.push_back(nd(rng));
    y.push_back(1.2 * x1.back() - 0.8 * x2.back() + 0.3 + nd(rng) > 0);
  }
  const double l2 = 0.7;
  auto obj = [&](double w1, double w2, double b) {
    double f = 0.5 * l2 * (w1 * w1 + w2 * w2);
    for (size_t i = 0; i < y.size(); ++i) {
      const double z = w1 * x1[i] + w2 * x2[i] + b;
      f += std::log1p(std::exp(z)) - y[i] * z;
    }
    return f;
  };
  double best = INFINITY, bw1 = 0, bw2 = 0, bb = 0;
  auto search = [&](double c1, double c2, double cb, double half, double step) {
    for (double w1 = c1 - half; w1 <= c1 + half + 1e-12; w1 += step)
      for (double w2 = c2 - half; w2 <= c2 + half + 1e-12; w2 += step)
        for (double b = cb - half; b <= cb + half + 1e-12; b += step) {
          const double f = obj(w1, w2, b);
          if (f < best) best = f, bw1 = w1, bw2 = w2, bb = b;
        }
  };
  search(0, 0, 0, 4, 0.1);
  search(bw1, bw2, bb, 0.1, 0.004);
  Tensor X = at::stack({at::tensor(x1, at::kDouble), at::tensor(x2, at::kDouble)}, 1);
  const Logistic m = fit_logistic(X, y, l2);
  EXPECT_TRUE(m.converged);
  const double w1 = m.w[0].item<double>(), w2 = m.w[1].item<double>();
  EXPECT_NEAR(w1, bw1, 0.005);
  EXPECT_NEAR(w2, bw2, 0.005);
  EXPECT_NEAR(m.b, bb, 0.005);
  EXPECT_LE(obj(w1, w2, m.b), best + 1e-12);  // no grid point beats the fitted optimum
  EXPECT_NEAR(logistic_objective(X, y, m.w, m.b, l2), obj(w1, w2, m.b), 1e-9);
}

TEST(ProbeMath, CrossValidatedAucIsOneOnTheLabelAndNearHalfOnNoise) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd;
  const int n = 120;
  std::vector<int> y;
  std::vector<double> feat, noise;
  for (int i = 0; i < n; ++i) {
    y.push_back(i % 3 == 0);
    feat.push_back(y.back());  // column 0 = the label
    for (int j = 0; j < 7; ++j) feat.push_back(nd(rng));
    for (int j = 0; j < 30; ++j) noise.push_back(nd(rng));
  }
  ProbeOptions opt;
  const ProbeScore a = cross_validated_auc(at::tensor(feat, at::kDouble).view({n, 8}), y, opt);
  EXPECT_EQ(a.folds, 5);
  EXPECT_EQ(a.auc.auc, 1.0);
  EXPECT_EQ(a.fold_auc.size(), 5u);
  for (double f : a.fold_auc) EXPECT_EQ(f, 1.0);
  const ProbeScore b = cross_validated_auc(at::tensor(noise, at::kDouble).view({n, 30}), y, opt);
  EXPECT_NEAR(b.auc.auc, 0.5, 0.15);
  EXPECT_LE(b.auc.lo, 0.5);
  EXPECT_GE(b.auc.hi, 0.5);
  // Wider than 64 features: PCA caps the dimensions at the training rows' rank.
  std::vector<int> half(20, 0);
  for (int i = 0; i < 10; ++i) half[i] = 1;
  const ProbeScore c = cross_validated_auc(at::randn({20, 300}, at::kDouble), half, opt);
  EXPECT_EQ(c.folds, 5);
  EXPECT_EQ(c.dims, 15);  // 16 training rows, centred: rank 15
  // Fewer than two of a label is refused.
  EXPECT_THROW(cross_validated_auc(at::randn({6, 3}, at::kDouble), {1, 0, 0, 0, 0, 0}, opt), Error);
}

// ------------------------------------------------------------------ persistence

std::vector<std::vector<int64_t>> random_prompts(const models::CausalLM& m, const std::vector<int>& lengths, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> id(0, m.vocab_size() - 1);
  std::vector<std::vector<int64_t>> out;
  for (int L : lengths) {
    out.emplace_back();
    for (int i = 0; i < L; ++i) out.back().push_back(id(rng));
  }
  return out;
}

models::StateMap random_states(const models::CausalLM& m, double scale, uint64_t seed) {
  at::manual_seed(seed);
  models::StateMap s;
  for (int64_t l : m.recurrent_layers()) s[l] = at::randn(m.state_shape(), at::kFloat) * scale;
  return s;
}

TEST(Persistence, AZeroStateSetHasKlExactlyZeroEverywhere) {
  for (const std::string& arch : {"qwen35", "falcon_h1"}) {
    SCOPED_TRACE(arch);
    auto model = models::load_model(arch == "qwen35" ? s0::testing::tiny_qwen35() : s0::testing::tiny_falcon_h1(), at::kFloat);
    models::StateMap zeros;
    for (int64_t l : model->recurrent_layers()) zeros[l] = at::zeros(model->state_shape(), at::kFloat);
    const auto prompts = random_prompts(*model, {7, 12, 3}, 1);
    const json r = persistence(*model, prompts, std::make_shared<models::InitialStates>(zeros));
    ASSERT_EQ(r["kl"].size(), 12u);
    for (double v : r["kl"].get<std::vector<double>>()) EXPECT_EQ(v, 0.0);
    EXPECT_EQ(r["kl_count"].get<std::vector<double>>(), (std::vector<double>{3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1}));
    EXPECT_TRUE(r["fit"].is_null());
    EXPECT_TRUE(r["kl_last_over_first"].is_null());
    ASSERT_EQ(r["layers"].size(), model->recurrent_layers().size());
    for (const auto& l : r["layers"]) {
      EXPECT_EQ(l["initial_norm"].get<double>(), 0.0);
      for (double v : l["diff_norm"].get<std::vector<double>>()) EXPECT_EQ(v, 0.0);
    }
  }
}

TEST(Persistence, MatchesFullForwardPasses) {
  // Independent path: one chunked forward over the whole prompt with and without the states,
  // KL per position from those logits; the final states from the caches.
  auto model = models::load_model(s0::testing::tiny_qwen35(), at::kFloat);
  const auto states = random_states(*model, 0.5, 7);
  auto adapter = std::make_shared<models::InitialStates>(states);
  const auto prompts = random_prompts(*model, {20}, 2);
  const json r = persistence(*model, prompts, adapter);
  NoGrad ng;
  const Tensor ids = at::tensor(prompts[0], at::kLong).view({1, -1});
  models::Cache ct = model->new_cache(1, adapter), cb = model->new_cache(1, nullptr);
  const Tensor lt = at::log_softmax(model->forward(ids, ct).to(at::kDouble)[0], -1);
  const Tensor lb = at::log_softmax(model->forward(ids, cb).to(at::kDouble)[0], -1);
  const Tensor kl = (lt.exp() * (lt - lb)).sum(-1);
  const auto got = r["kl"].get<std::vector<double>>();
  ASSERT_EQ(got.size(), 20u);
  for (int64_t t = 0; t < 20; ++t) EXPECT_NEAR(got[t], kl[t].item<double>(), 1e-6 + 1e-4 * kl[t].item<double>()) << t;
  EXPECT_GT(got[0], 0);
  EXPECT_EQ(r["kl_first"].get<double>(), got[0]);
  EXPECT_EQ(r["kl_last_prompt_token"].get<double>(), got[19]);
  size_t i = 0;
  for (int64_t l : model->recurrent_layers()) {
    const json& lj = r["layers"][i++];
    EXPECT_EQ(lj["layer"].get<int64_t>(), l);
    EXPECT_NEAR(lj["initial_norm"].get<double>(), states.at(l).to(at::kDouble).norm().item<double>(), 1e-9);
    const double last = (ct.layers[l].state.to(at::kDouble) - cb.layers[l].state.to(at::kDouble)).norm().item<double>();
    EXPECT_NEAR(lj["diff_norm"][19].get<double>(), last, 1e-5 * (1 + last)) << l;
    EXPECT_NEAR(lj["last"].get<double>(), lj["diff_norm"][19].get<double>(), 0);
  }
  // The fit is the exponential fit of the curve itself.
  std::vector<double> x;
  for (int t = 0; t < 20; ++t) x.push_back(t);
  const eval::ExpFit f = eval::exponential_fit(x, got);
  ASSERT_TRUE(r["fit"].is_object());
  EXPECT_DOUBLE_EQ(r["fit"]["b"].get<double>(), f.b);
  // max_positions stops each prompt early.
  EXPECT_EQ(persistence(*model, prompts, adapter, 5)["kl"].size(), 5u);
}

// ------------------------------------------------------------------ divergence

json rec(const std::string& cond, const std::string& id, bool passed, const std::string& text, std::vector<int64_t> ids) {
  return {{"condition", cond}, {"task_id", id}, {"passed", passed}, {"completion", text}, {"token_ids", ids}};
}

TEST(Divergence, HandMadeFlipsGiveKnownPositionsAndTests) {
  // Run 1: A flips at character 0 / token 0, B at character 6 / token 2, C passes in both,
  // D flips PASS->FAIL. Run 2: E flips at character 0 / token 0.
  EvalRun r1{"seed_0",
             {rec("base", "A", false, "xyz", {1, 2}), rec("base", "B", false, "    return 1", {3, 4, 5}),
              rec("base", "C", true, "ok", {7}), rec("base", "D", true, "fine", {8}),
              rec("s0", "A", true, "abc", {9, 2}), rec("s0", "B", true, "    result = 1", {3, 4, 6}),
              rec("s0", "C", true, "ok", {7}), rec("s0", "D", false, "bad", {9})}};
  EvalRun r2{"seed_1", {rec("base", "E", false, "a", {1}), rec("s0", "E", true, "b", {2})}};
  const json d = divergence({r1, r2}, nullptr);
  EXPECT_EQ(d["runs"], 2);
  ASSERT_EQ(d["conditions"].size(), 1u);
  const json& c = d["conditions"][0];
  EXPECT_EQ(c["name"], "s0");
  EXPECT_EQ(c["fail_to_pass"], 3);
  EXPECT_EQ(c["pass_to_fail"], 1);
  EXPECT_NEAR(c["flip_sign_test_p"].get<double>(), sign_test_enumerated(4, 3), 1e-12);
  EXPECT_EQ(c["first_char"]["positions"].get<std::vector<int64_t>>(), (std::vector<int64_t>{0, 6, 0}));
  EXPECT_NEAR(c["first_char"]["at_position_0"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(c["first_char"]["median"], 0);
  EXPECT_EQ(c["first_char"]["sign_test"]["at_0"], 2);
  EXPECT_NEAR(c["first_char"]["sign_test"]["p"].get<double>(), sign_test_enumerated(3, 2), 1e-12);
  EXPECT_EQ(c["first_token"]["positions"].get<std::vector<int64_t>>(), (std::vector<int64_t>{0, 2, 0}));
  const json& h = c["first_char"]["histogram"];
  EXPECT_EQ(h[0]["bucket"], "0");
  EXPECT_EQ(h[0]["count"], 2);
  EXPECT_EQ(h[5]["bucket"], "5-9");
  EXPECT_EQ(h[5]["count"], 1);
  int64_t total = 0;
  for (const auto& b : h) total += b["count"].get<int64_t>();
  EXPECT_EQ(total, 3);
  // Without token ids and without a tokenizer there are no token positions.
  for (auto* run : {&r1, &r2})
    for (auto& x : run->records) x.erase("token_ids");
  EXPECT_TRUE(divergence({r1, r2}, nullptr)["conditions"][0]["first_token"].is_null());
  // No base condition: refused.
  EXPECT_THROW(divergence({r1}, nullptr, "nobase"), Error);
  // The Markdown table names the numbers.
  const std::string md = analysis_section("divergence", d, "divergence.svg");
  EXPECT_NE(md.find("| s0 | 3 | 1 | 0.6250 | 66.7% | 0 | 1.0000 | 66.7% | 0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 5-9 | 1 |"), std::string::npos) << md;
  EXPECT_NE(analysis_chart("divergence", d).find("<title>0: 2.00 flips</title>"), std::string::npos);
}

TEST(Divergence, ReadsEvalAndExperimentFolders) {
  const std::string dir = s0::testing::temp_dir("divergence_read");
  auto write = [](const std::string& path, const std::vector<json>& rs) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream f(path);
    for (const auto& r : rs) f << r.dump() << "\n";
  };
  write(dir + "/eval/results.jsonl", {rec("base", "A", false, "x", {1}), rec("s0", "A", true, "y", {2})});
  write(dir + "/exp/base/results.jsonl", {rec("base", "A", false, "x", {1})});
  write(dir + "/exp/seed_0/eval/results.jsonl", {rec("s0", "A", true, "y", {2})});
  write(dir + "/exp/seed_1/eval/results.jsonl", {rec("s0", "A", false, "x", {1})});
  EXPECT_EQ(read_eval_output(dir + "/eval").size(), 1u);
  EXPECT_EQ(read_eval_output(dir + "/eval/results.jsonl").size(), 1u);
  const auto runs = read_eval_output(dir + "/exp");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].label, "seed_0");
  EXPECT_EQ(runs[1].records.size(), 2u);  // base + the seed's records
  EXPECT_EQ(divergence(runs, nullptr)["conditions"][0]["fail_to_pass"], 1);
  EXPECT_THROW(read_eval_output(dir + "/nothing"), Error);
}

// ------------------------------------------------------------------ probe

TEST(Probe, FeaturesAreTheModelsOwnStatesAndResidualStream) {
  auto model = models::load_model(s0::testing::tiny_qwen35(), at::kFloat);
  const auto prompts = random_prompts(*model, {9, 4, 15}, 4);
  const ProbeFeatures f = probe_features(*model, prompts);
  ASSERT_EQ(f.layers, model->recurrent_layers());
  NoGrad ng;
  for (size_t p = 0; p < prompts.size(); ++p) {
    // Independent path: forward() over the prompt, the cache's final states; the residual
    // stream after layer l by running the layers by hand on a fresh cache.
    models::Cache c = model->new_cache(1, nullptr);
    model->forward(at::tensor(prompts[p], at::kLong).view({1, -1}), c);
    for (size_t i = 0; i < f.layers.size(); ++i)
      EXPECT_TRUE(at::allclose(f.state[i][p], c.layers[f.layers[i]].state.reshape({-1}), 1e-5, 1e-6)) << p << " " << i;
  }
  // The residual stream by another path: the prompt in two pieces, the second continuing the
  // caches the first filled (past = 5), layer by layer.
  ASSERT_EQ(f.residual.size(), f.layers.size());
  EXPECT_EQ(f.residual[0].size(0), 3);
  const auto& ids = prompts[2];
  models::Cache c = model->new_cache(1, nullptr);
  Tensor h1 = model->embed(at::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + 5), at::kLong).view({1, -1}));
  Tensor h2 = model->embed(at::tensor(std::vector<int64_t>(ids.begin() + 5, ids.end()), at::kLong).view({1, -1}));
  size_t next = 0;
  for (int64_t l = 0; l < model->num_layers(); ++l) {
    h1 = model->layer(l, h1, c.layers[l], 0, nullptr);
    h2 = model->layer(l, h2, c.layers[l], 5, nullptr);
    if (next < f.layers.size() && f.layers[next] == l) {
      EXPECT_TRUE(at::allclose(f.residual[next][2], h2[0][h2.size(1) - 1], 1e-4, 1e-5)) << l;
      ++next;
    }
  }
  EXPECT_EQ(next, f.layers.size());
}

TEST(Probe, EndToEndOnATinyModel) {
  auto model = models::load_model(s0::testing::tiny_qwen35(), at::kFloat);
  std::vector<int> lengths;
  for (int i = 0; i < 24; ++i) lengths.push_back(5 + i % 7);
  const auto prompts = random_prompts(*model, lengths, 9);
  // Label = the prompt's last token is even: the residual stream at that token can tell.
  std::vector<int> labels;
  for (const auto& p : prompts) labels.push_back(p.back() % 2 == 0);
  ProbeOptions opt;
  opt.folds = 3;
  const json r = probe(probe_features(*model, prompts), labels, opt);
  EXPECT_EQ(r["samples"], 24);
  EXPECT_EQ(r["folds"], 3);
  ASSERT_EQ(r["layers"].size(), model->recurrent_layers().size());
  for (const auto& l : r["layers"])
    for (const char* k : {"state", "residual"}) {
      const double a = l[k]["auc"];
      EXPECT_GE(a, 0.0);
      EXPECT_LE(a, 1.0);
      EXPECT_LE(l[k]["lo"].get<double>(), a);
      EXPECT_GE(l[k]["hi"].get<double>(), a);
      EXPECT_LE(l[k]["dims"].get<int64_t>(), 15);
    }
  const std::string md = analysis_section("probe", r, "probe.svg");
  EXPECT_NE(md.find("## Linear probe"), std::string::npos);
  EXPECT_NE(analysis_chart("probe", r).find(">chance 0.5</text>"), std::string::npos);
}

// ------------------------------------------------------------------ charts

TEST(AnalysisCharts, RoundTicksAndLogScale) {
  for (auto [lo, hi] : std::vector<std::pair<double, double>>{{0.03, 0.15}, {-7.3, 41.2}, {0, 1}, {5, 5}, {123, 4567}}) {
    const auto t = nice_ticks(lo, hi);
    ASSERT_GE(t.size(), 2u);
    EXPECT_LE(t.front(), std::min(lo, hi));
    EXPECT_GE(t.back(), std::max(lo, hi));
    EXPECT_LE(t.size(), 12u);
    const double step = t[1] - t[0];
    const double m = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
    EXPECT_TRUE(std::abs(m - 1) < 1e-9 || std::abs(m - 2) < 1e-9 || std::abs(m - 5) < 1e-9) << step;
    for (double v : t) EXPECT_NEAR(v / step, std::round(v / step), 1e-9);
  }
  const auto alpha_ticks = nice_ticks(0.03, 0.15);  // an alpha sweep's axis: 0, 0.05, 0.1, 0.15
  ASSERT_EQ(alpha_ticks.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(alpha_ticks[i], 0.05 * static_cast<double>(i), 1e-12);
  ChartOptions o;
  o.log_y = true;
  o.title = "t";
  const std::string svg = svg_series_chart({{"kl", {0, 1, 2, 3}, {1e-1, 1e-3, 0, 2e-5}, {}}}, o);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 0, true);
  EXPECT_NE(svg.find(">1e-05</text>"), std::string::npos) << svg;
  EXPECT_NE(svg.find(">0.1</text>"), std::string::npos) << svg;
  size_t circles = 0;
  for (size_t p = svg.find("<circle"); p != std::string::npos; p = svg.find("<circle", p + 1)) ++circles;
  EXPECT_EQ(circles, 3u);  // the zero is left out of a log chart
}

}  // namespace
