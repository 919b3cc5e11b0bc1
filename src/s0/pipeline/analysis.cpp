#include "s0/pipeline/analysis.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "s0/eval/stats.h"
#include "s0/io/atomic_file.h"
#include "s0/pipeline/common.h"
#include "s0/pipeline/report.h"
#include "s0/util/error.h"
#include "s0/util/progress.h"

namespace s0::pipeline {

using json = nlohmann::json;
namespace fs = std::filesystem;

// ------------------------------------------------------------------ persistence

namespace {

// ||a - b||_F with an undefined tensor meaning zeros.
double diff_norm(const Tensor& a, const Tensor& b) {
  if (!a.defined() && !b.defined()) return 0;
  if (!a.defined()) return b.to(at::kDouble).norm().item<double>();
  if (!b.defined()) return a.to(at::kDouble).norm().item<double>();
  return (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>();
}

}  // namespace

json persistence(models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                 std::shared_ptr<const models::Adapter> tuned, int64_t max_positions) {
  NoGrad ng;
  if (prompts.empty()) throw Error("persistence: no prompts");
  const std::vector<int64_t> rec = model.recurrent_layers();
  std::vector<double> kl_sum, kl_n;
  std::vector<std::vector<double>> state_sum(rec.size());
  double first_sum = 0, last_sum = 0;
  Progress prog("persistence", static_cast<int64_t>(prompts.size()), "prompts");
  int64_t done = 0;
  for (const auto& ids_all : prompts) {
    if (ids_all.empty()) throw Error("persistence: an empty prompt");
    const int64_t L = max_positions > 0 ? std::min<int64_t>(max_positions, ids_all.size()) : ids_all.size();
    models::Cache t = model.new_cache(1, tuned), b = model.new_cache(1, nullptr);
    if (kl_sum.size() < static_cast<size_t>(L)) {
      kl_sum.resize(L, 0.0), kl_n.resize(L, 0.0);
      for (auto& v : state_sum) v.resize(L, 0.0);
    }
    double kl = 0;
    for (int64_t pos = 0; pos < L; ++pos) {
      const Tensor id = at::full({2}, ids_all[static_cast<size_t>(pos)], at::kLong);
      const Tensor logp = at::log_softmax(model.decode_step(id, {&t, &b}).to(at::kDouble), -1);  // [2, V]
      // KL(p_tuned || p_base) = sum p_t (log p_t - log p_b); identical rows give exactly 0.
      kl = (logp[0].exp() * (logp[0] - logp[1])).sum().item<double>();
      kl_sum[pos] += kl, kl_n[pos] += 1;
      if (pos == 0) first_sum += kl;
      for (size_t i = 0; i < rec.size(); ++i)
        state_sum[i][pos] += diff_norm(t.layers[rec[i]].state, b.layers[rec[i]].state);
    }
    last_sum += kl;
    prog.update(++done);
  }
  prog.finish();
  const double n = static_cast<double>(prompts.size());
  json out = {{"prompts", static_cast<int64_t>(prompts.size())}, {"max_positions", max_positions}};
  std::vector<double> kl(kl_sum.size()), xs, ys;
  for (size_t p = 0; p < kl.size(); ++p) {
    kl[p] = kl_sum[p] / kl_n[p];
    if (kl_n[p] * 2 >= n) xs.push_back(static_cast<double>(p)), ys.push_back(kl[p]);
  }
  out["kl"] = kl;
  out["kl_count"] = kl_n;
  out["kl_first"] = first_sum / n;
  out["kl_last_prompt_token"] = last_sum / n;
  out["kl_last_over_first"] = first_sum > 0 ? json(last_sum / first_sum) : json(nullptr);
  const eval::ExpFit f = eval::exponential_fit(xs, ys);
  out["fit"] = f.ok() ? json({{"a", f.a}, {"b", f.b}, {"r2", f.r2}, {"points", f.points},
                              {"half_life_tokens", std::isfinite(f.half_life) ? json(f.half_life) : json(nullptr)}})
                      : json(nullptr);
  json layers = json::array();
  for (size_t i = 0; i < rec.size(); ++i) {
    const Tensor init_state = tuned ? tuned->initial_state(rec[i]) : Tensor();
    const double init = init_state.defined() ? init_state.to(at::kDouble).norm().item<double>() : 0.0;
    std::vector<double> d(kl.size());
    for (size_t p = 0; p < d.size(); ++p) d[p] = state_sum[i][p] / kl_n[p];
    // "last": the last position at least half of the prompts reach (the fit's range)
    const double last = xs.empty() ? 0.0 : d[static_cast<size_t>(xs.back())];
    layers.push_back({{"layer", rec[i]}, {"initial_norm", init}, {"diff_norm", d}, {"last", last},
                      {"last_over_initial", init > 0 ? json(last / init) : json(nullptr)}});
  }
  out["layers"] = layers;
  out["fit_positions"] = static_cast<int64_t>(xs.size());
  return out;
}

// ------------------------------------------------------------------ divergence

std::vector<EvalRun> read_eval_output(const std::string& path) {
  std::vector<EvalRun> runs;
  const fs::path p(path);
  if (fs::is_regular_file(p)) return {{"", read_jsonl(path)}};
  if (fs::is_regular_file(p / "results.jsonl")) return {{"", read_jsonl((p / "results.jsonl").string())}};
  if (fs::is_regular_file(p / "base" / "results.jsonl")) {
    const auto base = read_jsonl((p / "base" / "results.jsonl").string());
    std::vector<fs::path> seeds;
    for (const auto& e : fs::directory_iterator(p))
      if (e.is_directory() && e.path().filename().string().rfind("seed_", 0) == 0 &&
          fs::is_regular_file(e.path() / "eval" / "results.jsonl"))
        seeds.push_back(e.path());
    std::sort(seeds.begin(), seeds.end());
    for (const auto& s : seeds) {
      EvalRun r{s.filename().string(), base};
      for (auto& rec : read_jsonl((s / "eval" / "results.jsonl").string())) r.records.push_back(std::move(rec));
      runs.push_back(std::move(r));
    }
    if (!runs.empty()) return runs;
  }
  throw Error(path + ": not an eval output (expected results.jsonl, a folder holding one, or an experiment folder "
                     "with base/results.jsonl and seed_*/eval/results.jsonl)");
}

namespace {

// Distribution of first-difference positions: histogram, share at 0, median, mean, sign test.
json positions_summary(std::vector<int64_t> pos) {
  json d = {{"positions", pos}, {"flips", static_cast<int64_t>(pos.size())}};
  if (pos.empty()) return d;
  std::sort(pos.begin(), pos.end());
  const int64_t at0 = std::count(pos.begin(), pos.end(), 0), n = static_cast<int64_t>(pos.size());
  static const std::vector<std::pair<int64_t, int64_t>> buckets = {{0, 0}, {1, 1}, {2, 2},  {3, 3},   {4, 4},
                                                                   {5, 9}, {10, 19}, {20, 49}, {50, -1}};
  json hist = json::array();
  for (auto [lo, hi] : buckets) {
    const int64_t c = std::count_if(pos.begin(), pos.end(), [&](int64_t v) { return v >= lo && (hi < 0 || v <= hi); });
    std::string label = hi < 0 ? std::to_string(lo) + "+" : lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
    hist.push_back({{"bucket", label}, {"count", c}});
  }
  double sum = 0;
  for (int64_t v : pos) sum += static_cast<double>(v);
  d["histogram"] = hist;
  d["at_position_0"] = static_cast<double>(at0) / static_cast<double>(n);
  d["median"] = pos[pos.size() / 2];
  d["mean"] = sum / static_cast<double>(n);
  d["sign_test"] = {{"at_0", at0}, {"later", n - at0}, {"p", eval::sign_test_p(at0, n - at0)}};
  return d;
}

}  // namespace

json divergence(const std::vector<EvalRun>& runs, const text::Tokenizer* tok, const std::string& base) {
  std::vector<std::string> order;  // conditions in first-seen order
  std::map<std::string, std::vector<int64_t>> chars, tokens;
  std::map<std::string, int64_t> up, down;
  std::map<std::string, bool> token_ok;
  std::string token_source = "token_ids";
  int64_t base_records = 0;
  for (const auto& run : runs) {
    std::map<std::string, const json*> b;
    for (const auto& r : run.records)
      if (r.at("condition").get<std::string>() == base) b[r.at("task_id").get<std::string>()] = &r;
    base_records += static_cast<int64_t>(b.size());
    for (const auto& r : run.records) {
      const std::string c = r.at("condition").get<std::string>();
      if (c == base) continue;
      if (!up.count(c)) order.push_back(c), up[c] = 0, down[c] = 0, token_ok[c] = true;
      auto it = b.find(r.at("task_id").get<std::string>());
      if (it == b.end()) continue;
      const json& br = *it->second;
      const bool bp = br.at("passed").get<bool>(), tp = r.at("passed").get<bool>();
      if (bp && !tp) ++down[c];
      if (bp || !tp) continue;
      ++up[c];
      const std::string bt = br.value("completion", ""), tt = r.value("completion", "");
      chars[c].push_back(first_difference(bt, tt));
      std::vector<int64_t> bi, ti;
      if (br.contains("token_ids") && r.contains("token_ids")) {
        bi = br["token_ids"].get<std::vector<int64_t>>(), ti = r["token_ids"].get<std::vector<int64_t>>();
      } else if (tok) {
        bi = tok->encode(bt, false), ti = tok->encode(tt, false);
        token_source = "re-encoded completions";
      } else {
        token_ok[c] = false;
        continue;
      }
      tokens[c].push_back(first_difference(bi, ti));
    }
  }
  if (base_records == 0) throw Error("divergence: the eval output has no \"" + base + "\" condition to compare with");
  json conds = json::array();
  for (const auto& c : order) {
    json j = {{"name", c}, {"fail_to_pass", up[c]}, {"pass_to_fail", down[c]},
              {"flip_sign_test_p", eval::sign_test_p(up[c], down[c])}, {"first_char", positions_summary(chars[c])}};
    j["first_token"] = token_ok[c] ? positions_summary(tokens[c]) : json(nullptr);
    conds.push_back(j);
  }
  return {{"runs", static_cast<int64_t>(runs.size())}, {"base", base}, {"token_source", token_source}, {"conditions", conds}};
}

// ------------------------------------------------------------------ probe

ProbeFeatures probe_features(models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts) {
  NoGrad ng;
  ProbeFeatures f;
  f.layers = model.recurrent_layers();
  std::vector<std::vector<Tensor>> st(f.layers.size()), rs(f.layers.size());
  Progress prog("probe features", static_cast<int64_t>(prompts.size()), "prompts");
  int64_t done = 0;
  for (const auto& ids : prompts) {
    if (ids.empty()) throw Error("probe: an empty prompt");
    models::Cache cache = model.new_cache(1, nullptr);
    Tensor h = model.embed(at::tensor(ids, at::kLong).view({1, -1}));
    const int64_t L = h.size(1);
    size_t next = 0;
    for (int64_t l = 0; l < model.num_layers(); ++l) {
      h = model.layer(l, h, cache.layers[static_cast<size_t>(l)], 0, nullptr);
      if (next < f.layers.size() && f.layers[next] == l) {
        rs[next].push_back(h[0][L - 1].to(at::kFloat).clone());
        const Tensor& s = cache.layers[static_cast<size_t>(l)].state;
        st[next].push_back(s.defined() ? s.to(at::kFloat).reshape({-1}).clone() : Tensor());
        ++next;
      }
    }
    prog.update(++done);
  }
  prog.finish();
  for (size_t i = 0; i < f.layers.size(); ++i) {
    for (auto& s : st[i])
      if (!s.defined()) throw Error("probe: layer " + std::to_string(f.layers[i]) + " kept no recurrent state");
    f.state.push_back(at::stack(st[i]));
    f.residual.push_back(at::stack(rs[i]));
  }
  return f;
}

namespace {

json score_json(const ProbeScore& s) {
  return {{"auc", s.auc.auc}, {"lo", s.auc.lo}, {"hi", s.auc.hi}, {"se", s.auc.se},
          {"fold_auc_mean", eval::mean(s.fold_auc)}, {"fold_auc_std", eval::stddev(s.fold_auc)},
          {"folds", s.folds}, {"dims", s.dims}};
}

}  // namespace

json probe(const ProbeFeatures& f, const std::vector<int>& labels, const ProbeOptions& opt) {
  const int64_t pos = std::count(labels.begin(), labels.end(), 1);
  json layers = json::array();
  double best_s = -1, best_r = -1;
  int64_t ls = -1, lr = -1, folds = 0;
  for (size_t i = 0; i < f.layers.size(); ++i) {
    const ProbeScore s = cross_validated_auc(f.state[i], labels, opt), r = cross_validated_auc(f.residual[i], labels, opt);
    folds = s.folds;
    layers.push_back({{"layer", f.layers[i]}, {"state", score_json(s)}, {"residual", score_json(r)},
                      {"state_features", f.state[i].size(1)}, {"residual_features", f.residual[i].size(1)}});
    if (s.auc.auc > best_s) best_s = s.auc.auc, ls = f.layers[i];
    if (r.auc.auc > best_r) best_r = r.auc.auc, lr = f.layers[i];
  }
  return {{"samples", static_cast<int64_t>(labels.size())}, {"positives", pos},
          {"negatives", static_cast<int64_t>(labels.size()) - pos}, {"folds", folds}, {"pca_dims", opt.pca_dims},
          {"l2", opt.l2}, {"seed", opt.seed}, {"layers", layers},
          {"best_state", {{"layer", ls}, {"auc", best_s}}}, {"best_residual", {{"layer", lr}, {"auc", best_r}}}};
}

// ------------------------------------------------------------------ files

std::string write_analysis(const std::string& dir, const std::string& name, const json& result) {
  fs::create_directories(dir);
  const fs::path d(dir);
  io::write_file_atomic((d / (name + ".json")).string(), result.dump(2) + "\n");
  io::write_file_atomic((d / (name + ".svg")).string(), analysis_chart(name, result));
  std::string md = analysis_section(name, result, name + ".svg");
  io::write_file_atomic((d / (name + ".md")).string(), md);
  return md;
}

}  // namespace s0::pipeline
