#include "s0/pipeline/report.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <sstream>

#include "s0/eval/stats.h"
#include "s0/eval/tasks.h"

namespace s0::pipeline {

using json = nlohmann::json;

namespace {

// printf into a std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string s(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(s.data(), s.size() + 1, fmt, ap2);
  va_end(ap2);
  return s;
}

}  // namespace

// ------------------------------------------------------------------ numbers as printed

std::string fixed(double v, int decimals) { return format("%.*f", decimals, v); }

std::string percent(double fraction) { return format("%.1f%%", 100 * fraction); }

std::string plus_minus(double mean, double std) { return fixed(mean) + " ± " + fixed(std); }

std::string p_value(double p) { return p < 1e-4 ? format("%.1e", p) : format("%.4f", p); }

// ------------------------------------------------------------------ Markdown tables

std::string md_row(const std::vector<std::string>& cells, bool compact_empty) {
  std::string s = "|";
  for (const auto& c : cells) s += compact_empty && c.empty() ? " |" : " " + c + " |";
  return s + "\n";
}

std::string md_rule(size_t columns) {
  std::string s = "|";
  for (size_t i = 0; i < columns; ++i) s += "---|";
  return s + "\n";
}

// ------------------------------------------------------------------ SVG charts

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

const char* kSvgHead =
    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
    "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n";

std::string head(int w, int h) {
  char b[512];
  snprintf(b, sizeof b, kSvgHead, w, h, w, h);
  return b;
}

// Document head, title and five horizontal grid lines labelled with their values over [a, b]
// (`y` maps a value to its pixel row).
template <class YMap>
std::string frame(const std::string& title, int W, int H, int L, int R, double a, double b, YMap y) {
  std::ostringstream o;
  o << head(W, H) << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << esc(title) << "</text>\n";
  for (int i = 0; i <= 4; ++i) {
    double v = a + (b - a) * i / 4;
    o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << fixed(y(v)) << "\" y2=\"" << fixed(y(v))
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 6 << "\" y=\"" << fixed(y(v) + 4) << "\" text-anchor=\"end\">" << fixed(v)
      << "</text>\n";
  }
  return o.str();
}

// A "nice" axis range containing [lo, hi].
std::pair<double, double> axis(double lo, double hi) {
  if (lo == hi) lo -= 1, hi += 1;
  double span = hi - lo, pad = span * 0.1;
  return {lo - pad, hi + pad};
}

}  // namespace

std::string svg_bar_chart(const std::string& title, const std::vector<std::string>& labels, const std::vector<double>& values,
                          const std::string& unit) {
  const int W = 640, H = 360, L = 60, R = 20, T = 40, B = 60;
  double lo = 0, hi = 0;
  for (double v : values) lo = std::min(lo, v), hi = std::max(hi, v);
  auto [a, b] = axis(lo, hi);
  auto y = [&](double v) { return T + (H - T - B) * (b - v) / (b - a); };
  std::ostringstream o;
  o << frame(title, W, H, L, R, a, b, y);
  o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << fixed(y(0)) << "\" y2=\"" << fixed(y(0)) << "\" stroke=\"#333\"/>\n";
  const double slot = static_cast<double>(W - L - R) / std::max<size_t>(1, values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    double x = L + slot * i + slot * 0.15, w = slot * 0.7, y0 = y(0), y1 = y(values[i]);
    o << "<rect x=\"" << fixed(x) << "\" y=\"" << fixed(std::min(y0, y1)) << "\" width=\"" << fixed(w) << "\" height=\""
      << fixed(std::abs(y1 - y0)) << "\" fill=\"" << (values[i] >= 0 ? "#3a7bd5" : "#d5533a") << "\"><title>" << esc(labels[i])
      << ": " << fixed(values[i], 2) << " " << esc(unit) << "</title></rect>\n";
    o << "<text x=\"" << fixed(x + w / 2) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << esc(labels[i]) << "</text>\n";
    o << "<text x=\"" << fixed(x + w / 2) << "\" y=\"" << fixed(std::min(y0, y1) - 4) << "\" text-anchor=\"middle\" font-size=\"10\">"
      << fixed(values[i]) << "</text>\n";
  }
  o << "<text x=\"16\" y=\"" << (T + H - B) / 2 << "\" transform=\"rotate(-90 16 " << (T + H - B) / 2
    << ")\" text-anchor=\"middle\">" << esc(unit) << "</text>\n</svg>\n";
  return o.str();
}

std::string svg_line_chart(const std::string& title, const std::vector<double>& xs, const std::vector<double>& ys,
                           const std::vector<double>& err, double baseline, const std::string& xlabel,
                           const std::string& ylabel) {
  const int W = 640, H = 360, L = 60, R = 20, T = 40, B = 50;
  double ylo = baseline, yhi = baseline, xlo = xs.empty() ? 0 : xs[0], xhi = xlo;
  for (size_t i = 0; i < ys.size(); ++i) {
    double e = i < err.size() ? err[i] : 0;
    ylo = std::min(ylo, ys[i] - e), yhi = std::max(yhi, ys[i] + e);
    xlo = std::min(xlo, xs[i]), xhi = std::max(xhi, xs[i]);
  }
  auto [a, b] = axis(ylo, yhi);
  auto [c, d] = axis(xlo, xhi);
  auto X = [&](double v) { return L + (W - L - R) * (v - c) / (d - c); };
  auto Y = [&](double v) { return T + (H - T - B) * (b - v) / (b - a); };
  std::ostringstream o;
  o << frame(title, W, H, L, R, a, b, Y);
  for (double v : xs)
    o << "<text x=\"" << fixed(X(v)) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << fixed(v, 3) << "</text>\n";
  o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << fixed(Y(baseline)) << "\" y2=\"" << fixed(Y(baseline))
    << "\" stroke=\"#888\" stroke-dasharray=\"6 4\"/>\n<text x=\"" << W - R << "\" y=\"" << fixed(Y(baseline) - 5)
    << "\" text-anchor=\"end\" fill=\"#666\">base " << fixed(baseline) << "</text>\n";
  std::string path;
  for (size_t i = 0; i < xs.size(); ++i) {
    path += (i ? " L" : "M") + fixed(X(xs[i])) + " " + fixed(Y(ys[i]));
    double e = i < err.size() ? err[i] : 0;
    if (e > 0)
      o << "<line x1=\"" << fixed(X(xs[i])) << "\" x2=\"" << fixed(X(xs[i])) << "\" y1=\"" << fixed(Y(ys[i] - e)) << "\" y2=\""
        << fixed(Y(ys[i] + e)) << "\" stroke=\"#3a7bd5\"/>\n";
    o << "<circle cx=\"" << fixed(X(xs[i])) << "\" cy=\"" << fixed(Y(ys[i])) << "\" r=\"4\" fill=\"#3a7bd5\"><title>alpha "
      << fixed(xs[i], 3) << ": " << fixed(ys[i], 2) << "</title></circle>\n";
  }
  if (!path.empty()) o << "<path d=\"" << path << "\" fill=\"none\" stroke=\"#3a7bd5\" stroke-width=\"2\"/>\n";
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">" << esc(xlabel) << "</text>\n";
  o << "<text x=\"16\" y=\"" << (T + H - B) / 2 << "\" transform=\"rotate(-90 16 " << (T + H - B) / 2
    << ")\" text-anchor=\"middle\">" << esc(ylabel) << "</text>\n</svg>\n";
  return o.str();
}

// ------------------------------------------------------------------ evaluation

std::string evaluation_report(const json& summary) {
  std::ostringstream o;
  o << "# s0 evaluation report\n\n";
  if (summary.contains("meta")) {
    for (auto& [k, v] : summary["meta"].items()) o << "- **" << k << "**: " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
    o << "\n";
  }
  std::vector<std::string> kcols;
  for (const auto& c : summary["conditions"])
    if (c.contains("sampled"))
      for (auto& [k, v] : c["sampled"].items())
        if (std::find(kcols.begin(), kcols.end(), k) == kcols.end()) kcols.push_back(k);
  std::vector<std::string> head = {"condition", "alpha", "greedy pass@1", "delta vs base", "FAIL->PASS", "PASS->FAIL"};
  for (auto& k : kcols) head.push_back("sampled " + k);
  head.push_back("decode tok/s");
  o << md_row(head) << md_rule(head.size());
  for (const auto& c : summary["conditions"]) {
    std::vector<std::string> row = {
        c["name"].get<std::string>(),
        c["alpha"].is_null() ? "" : c["alpha"].dump(),
        percent(c["pass@1"].get<double>()) + " (" + std::to_string(c["greedy_passed"].get<int64_t>()) + "/" +
            std::to_string(c["problems"].get<int64_t>()) + ")",
        c.contains("delta_pp") ? format("%+.1f pp", c["delta_pp"].get<double>()) : "",
        c.contains("fail_to_pass") ? std::to_string(c["fail_to_pass"].size()) : "",
        c.contains("pass_to_fail") ? std::to_string(c["pass_to_fail"].size()) : ""};
    for (auto& k : kcols)
      row.push_back(c.contains("sampled") && c["sampled"].contains(k) ? percent(c["sampled"][k].get<double>()) : "");
    row.push_back(fixed(c["decode_tokens_per_s"].get<double>()));
    o << md_row(row);
  }
  for (const auto& c : summary["conditions"]) {
    if (!c.contains("first_char_divergence") || !c["first_char_divergence"].contains("median")) continue;
    const auto& d = c["first_char_divergence"];
    o << "\n**" << c["name"].get<std::string>() << "**: FAIL->PASS flips first differ from the base output at character "
      << d["median"].get<int64_t>() << " (median); " << percent(d["at_position_0"].get<double>()) << " at position 0.\n";
  }
  return o.str();
}

// ------------------------------------------------------------------ experiment

std::string experiment_report(const json& summary, bool sandboxed) {
  const json& cfg = summary["config"];
  const json& methods = summary["methods"];
  const auto kind = eval::parse_task_kind(cfg["task_kind"].get<std::string>());
  std::ostringstream md;
  md << "# S0 experiment\n\n"
     << "- model: `" << cfg["model"].get<std::string>() << "`\n- tasks: `" << cfg["tasks"].get<std::string>() << "` ("
     << eval::task_kind_name(kind) << "), " << summary["train_problems"].get<int64_t>() << " training problems, "
     << summary["base"]["problems"].get<int64_t>() << " held out\n- seeds: " << cfg["seeds"].dump()
     << "\n- sandbox: " << (sandboxed ? "bubblewrap" : "none") << "\n\n";
  md << md_row({"method", "pass@1 (mean ± std)", "delta vs base (pp)", "Welch p vs base", "McNemar p (max over seeds)",
                "FAIL->PASS", "PASS->FAIL", "params", "file", "train s", "decode tok/s (x base)", "seeds"})
     << md_rule(12);
  const json& bs = summary["base"];
  md << md_row({"base", fixed(bs["pass@1"].get<double>()), "", "", "", "", "", "", "", "",
                bs.contains("decode_tokens_per_s") && bs["decode_tokens_per_s"].is_number()
                    ? fixed(bs["decode_tokens_per_s"].get<double>())
                    : "",
                "(deterministic)"},
               /*compact_empty=*/true);
  for (const auto& m : methods) {
    std::string welch;
    if (m.contains("welch_vs_base"))
      welch = m["welch_vs_base"]["zero_variance"].get<bool>() ? "undefined (zero variance)"
                                                               : p_value(m["welch_vs_base"]["p"].get<double>());
    std::string speed;
    if (m.contains("decode_tokens_per_s"))
      speed = fixed(m["decode_tokens_per_s"].get<double>()) +
              (m.contains("decode_vs_base") ? " (" + fixed(m["decode_vs_base"].get<double>(), 2) + "x)" : "");
    md << md_row({m["name"].get<std::string>(),
                  m.contains("pass@1_mean") ? plus_minus(m["pass@1_mean"].get<double>(), m["pass@1_std"].get<double>())
                                            : "n/a",
                  m.contains("delta_pp_mean")
                      ? plus_minus(m["delta_pp_mean"].get<double>(), m["delta_pp_std"].get<double>())
                      : "n/a",
                  welch, m.contains("mcnemar_p_max") ? p_value(m["mcnemar_p_max"].get<double>()) : "",
                  m["fail_to_pass"].dump(), m["pass_to_fail"].dump(), m.contains("params") ? m["params"].dump() : "",
                  m.contains("bytes") ? fixed(m["bytes"].get<double>() / 1024.0) + " KB" : "",
                  m.contains("train_seconds_mean") ? fixed(m["train_seconds_mean"].get<double>()) : "", speed,
                  m["seeds"].dump()});
  }
  md << "\nWelch's t-test compares the per-seed pass@1 with the (deterministic) base; McNemar's exact test compares "
        "base and each method problem by problem within a seed (FAIL->PASS vs PASS->FAIL), the largest p over seeds "
        "shown. Decode speed: one stream, the first seed's adapter attached, median of 3 interleaved runs.\n";
  for (const auto& p : summary["paired_tests"])
    md << "\nPaired t-test " << p["a"].get<std::string>() << " vs " << p["b"].get<std::string>() << " (same seeds): mean "
       << fixed(p["mean_diff_pp"].get<double>()) << " pp, t = " << fixed(p["t"].get<double>(), 3)
       << ", p = " << p_value(p["p"].get<double>()) << ".\n";
  for (const auto& m : methods)
    if (m.contains("first_char_divergence")) {
      const json& d = m["first_char_divergence"];
      md << "\n" << m["name"].get<std::string>() << ": of " << d["flips"].dump() << " FAIL->PASS flips, "
         << fixed(100 * d["at_position_0"].get<double>()) << "% differ from the base output at the first character (median position "
         << d["median"].dump() << ").\n";
    }
  md << "\n![per-seed deltas](deltas.svg)\n\n![alpha sweep](alpha_sweep.svg)\n\n## Per seed\n\n";
  std::vector<std::string> head = {"seed", "kept examples", "final loss"};
  for (const auto& m : methods) head.push_back(m["name"].get<std::string>() + " pass@1");
  md << md_row(head) << md_rule(head.size());
  for (const auto& s : summary["seeds"]) {
    std::vector<std::string> row = {
        s["seed"].dump(), s["collect"]["kept"].dump(),
        s.contains("final_loss") && s["final_loss"].is_number() ? fixed(s["final_loss"].get<double>(), 4) : ""};
    for (size_t i = 0; i < methods.size(); ++i)
      row.push_back(s.contains("conditions") ? fixed(100 * s["conditions"][i + 1]["pass@1"].get<double>()) : "n/a");
    md << md_row(row);
  }
  return md.str();
}

std::string experiment_deltas_chart(const json& summary) {
  const json& methods = summary["methods"];
  std::vector<std::string> labels;
  std::vector<double> deltas;
  for (const auto& s : summary["seeds"]) {
    if (s.contains("conditions"))
      for (size_t i = 1; i < s["conditions"].size(); ++i) {
        std::string label = "s";
        label += std::to_string(s["seed"].get<uint64_t>());
        if (methods.size() > 1) {
          const json& m = methods[i - 1];
          label += m.contains("alpha") && m["alpha"].is_number() && m.value("kind", std::string("s0")) == "s0"
                       ? " a" + fixed(m["alpha"].get<double>(), 2)
                       : " " + m["name"].get<std::string>();
        }
        labels.push_back(label);
        deltas.push_back(s["conditions"][i]["delta_pp"].get<double>());
      }
  }
  return svg_bar_chart("Greedy pass@1 change vs base, per seed", labels, deltas, "percentage points");
}

std::string experiment_alpha_chart(const json& summary) {
  std::vector<double> alphas, ys, es;
  for (const auto& m : summary["methods"]) {
    if (!m.contains("alpha") || !m["alpha"].is_number()) continue;  // S0 conditions only
    const auto per_seed = m["pass@1_per_seed"].get<std::vector<double>>();
    alphas.push_back(m["alpha"].get<double>());
    ys.push_back(eval::mean(per_seed));
    es.push_back(eval::stddev(per_seed));
  }
  return svg_line_chart("Greedy pass@1 by alpha (mean ± std over seeds)", alphas, ys, es,
                        summary["base"]["pass@1"].get<double>(), "alpha", "pass@1 (%)");
}

// ------------------------------------------------------------------ demo

std::string demo_report(const json& d, const std::string& demo_json_path) {
  auto f1 = [](const json& v) { return v.is_number() ? fixed(v.get<double>()) : std::string("n/a"); };
  auto pv = [](const json& v) { return v.is_number() ? format("%.2g", v.get<double>()) : std::string("n/a"); };
  const int64_t seeds = d["seeds"].get<int64_t>();
  const json& speed = d["decode_tokens_per_s"];
  const std::string welch = d["welch_zero_variance"].is_boolean() && d["welch_zero_variance"].get<bool>()
                                ? "undefined (std 0)"
                                : pv(d["welch_p"]);
  std::ostringstream o;
  o << format("\nS0 tuning on the built-in model: greedy pass@1 on %lld held-out problems, %lld seed%s, alpha %g\n\n",
              static_cast<long long>(d["eval_problems"].get<int64_t>()), static_cast<long long>(seeds),
              seeds > 1 ? "s" : "", d["alpha"].get<double>());
  o << md_row({"base", "S0 (mean ± std)", "delta pp (mean ± std)", "Welch p", "McNemar p (max over seeds)", "state set",
               "decode tok/s base / S0"})
    << md_rule(7)
    << md_row({f1(d["base_pass@1"]) + "%", f1(d["s0_pass@1_mean"]) + " ± " + f1(d["s0_pass@1_std"]) + "%",
               f1(d["delta_pp_mean"]) + " ± " + f1(d["delta_pp_std"]), welch, pv(d["mcnemar_p_max"]),
               fixed(static_cast<double>(d["state_set_bytes"].get<int64_t>()) / 1024.0) + " KB",
               (speed.is_null() ? "n/a" : f1(speed["base"])) + " / " + (speed.is_null() ? "n/a" : f1(speed["s0"]))});
  o << "\nFAIL->PASS " << d["fail_to_pass"].get<int64_t>() << ", PASS->FAIL " << d["pass_to_fail"].get<int64_t>()
    << " (summed over seeds)\n";
  if (d.contains("comparison") && d["comparison"].size() > 1) {
    // Every arm on the same collected data, seeds and held-out problems.
    o << "\nS0 and the paper's baselines, trained on the same data per seed:\n\n"
      << md_row({"method", "pass@1 (mean ± std)", "delta pp", "Welch p", "params", "file", "decode tok/s (x base)"})
      << md_rule(7);
    for (const auto& c : d["comparison"]) {
      const bool zero = c["welch_zero_variance"].is_boolean() && c["welch_zero_variance"].get<bool>();
      o << md_row({c["name"].get<std::string>(),
                   f1(c["pass@1_mean"]) + " ± " + f1(c["pass@1_std"]) + "%",
                   f1(c["delta_pp_mean"]) + " ± " + f1(c["delta_pp_std"]), zero ? "undefined (std 0)" : pv(c["welch_p"]),
                   c["params"].is_number() ? c["params"].dump() : "n/a",
                   c["bytes"].is_number() ? fixed(c["bytes"].get<double>() / 1024.0) + " KB" : "n/a",
                   c["decode_tokens_per_s"].is_number()
                       ? f1(c["decode_tokens_per_s"]) + " (" + fixed(c["decode_vs_base"].get<double>(), 2) + "x)"
                       : "n/a"});
    }
    if (d.contains("paired_tests") && !d["paired_tests"].empty()) o << "\n";
    if (d.contains("paired_tests"))
      for (const auto& p : d["paired_tests"])
        o << "paired t-test " << p["a"].get<std::string>() << " vs " << p["b"].get<std::string>() << ": "
          << fixed(p["mean_diff_pp"].get<double>()) << " pp, p = " << pv(p["p"]) << "\n";
  }
  o << "\nreport:    " << d["report"].get<std::string>() << "\nstate set: " << d["state_set"].get<std::string>()
    << "\nsummary:   " << demo_json_path << "\n";
  return o.str();
}

}  // namespace s0::pipeline
