#include "s0/pipeline/report.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <limits>
#include <sstream>

#include "s0/eval/stats.h"
#include "s0/eval/tasks.h"
#include "s0/util/error.h"

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

// Tick labels: as many decimals as the step needs.
std::string tick_label(double v, double step) {
  const int dec = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return fixed(std::abs(v) < step * 1e-6 ? 0.0 : v, dec);
}

// Document head, title and a horizontal grid line at each tick, labelled (`y` maps a tick to
// its pixel row; `labels` the tick texts).
template <class YMap>
std::string frame(const std::string& title, int W, int H, int L, int R, const std::vector<double>& ticks,
                  const std::vector<std::string>& labels, YMap y) {
  std::ostringstream o;
  o << head(W, H) << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << esc(title) << "</text>\n";
  for (size_t i = 0; i < ticks.size(); ++i)
    o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << fixed(y(ticks[i])) << "\" y2=\"" << fixed(y(ticks[i]))
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 6 << "\" y=\"" << fixed(y(ticks[i]) + 4) << "\" text-anchor=\"end\">"
      << labels[i] << "</text>\n";
  return o.str();
}

std::vector<std::string> tick_labels(const std::vector<double>& ticks) {
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 1;
  std::vector<std::string> out;
  for (double t : ticks) out.push_back(tick_label(t, step));
  return out;
}

const char* const kPalette[] = {"#3a7bd5", "#d5533a", "#2a9d5c", "#8e44ad", "#e6a100", "#555555"};
constexpr size_t kColors = sizeof kPalette / sizeof kPalette[0];

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.5;
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  const double a = std::floor(lo / step + 1e-9), b = std::ceil(hi / step - 1e-9);
  std::vector<double> t;
  for (double k = a; k <= b + 0.5; k += 1) t.push_back(k * step);
  if (t.size() < 2) t.push_back(t.back() + step);
  return t;
}

std::string svg_bar_chart(const std::string& title, const std::vector<std::string>& labels, const std::vector<double>& values,
                          const std::string& unit, const std::vector<double>& errors) {
  const int W = 640, H = 360, L = 60, R = 20, T = 40, B = 60;
  auto err = [&](size_t i) { return i < errors.size() && std::isfinite(errors[i]) ? std::abs(errors[i]) : 0.0; };
  double lo = 0, hi = 0;
  for (size_t i = 0; i < values.size(); ++i) lo = std::min(lo, values[i] - err(i)), hi = std::max(hi, values[i] + err(i));
  const auto ticks = nice_ticks(lo, hi);
  const double a = ticks.front(), b = ticks.back();
  auto y = [&](double v) { return T + (H - T - B) * (b - v) / (b - a); };
  std::ostringstream o;
  o << frame(title, W, H, L, R, ticks, tick_labels(ticks), y);
  o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << fixed(y(0)) << "\" y2=\"" << fixed(y(0)) << "\" stroke=\"#333\"/>\n";
  const double slot = static_cast<double>(W - L - R) / std::max<size_t>(1, values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    double x = L + slot * i + slot * 0.15, w = slot * 0.7, y0 = y(0), y1 = y(values[i]);
    o << "<rect x=\"" << fixed(x) << "\" y=\"" << fixed(std::min(y0, y1)) << "\" width=\"" << fixed(w) << "\" height=\""
      << fixed(std::abs(y1 - y0)) << "\" fill=\"" << (values[i] >= 0 ? "#3a7bd5" : "#d5533a") << "\"><title>" << esc(labels[i])
      << ": " << fixed(values[i], 2) << " " << esc(unit) << "</title></rect>\n";
    o << "<text x=\"" << fixed(x + w / 2) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << esc(labels[i]) << "</text>\n";
    double label_y = std::min(y0, y1) - 4;
    if (err(i) > 0) {
      const double ya = y(values[i] + err(i)), yb = y(values[i] - err(i)), xc = x + w / 2;
      o << "<line x1=\"" << fixed(xc) << "\" x2=\"" << fixed(xc) << "\" y1=\"" << fixed(ya) << "\" y2=\"" << fixed(yb)
        << "\" stroke=\"#333\"/>\n";
      for (double yy : {ya, yb})
        o << "<line x1=\"" << fixed(xc - 5) << "\" x2=\"" << fixed(xc + 5) << "\" y1=\"" << fixed(yy) << "\" y2=\"" << fixed(yy)
          << "\" stroke=\"#333\"/>\n";
      label_y = std::min(label_y, std::min(ya, yb) - 4);
    }
    o << "<text x=\"" << fixed(x + w / 2) << "\" y=\"" << fixed(label_y) << "\" text-anchor=\"middle\" font-size=\"10\">"
      << fixed(values[i]) << (err(i) > 0 ? " ± " + fixed(err(i)) : std::string()) << "</text>\n";
  }
  o << "<text x=\"16\" y=\"" << (T + H - B) / 2 << "\" transform=\"rotate(-90 16 " << (T + H - B) / 2
    << ")\" text-anchor=\"middle\">" << esc(unit) << "</text>\n</svg>\n";
  return o.str();
}

std::string svg_series_chart(const std::vector<ChartSeries>& series, const ChartOptions& opt) {
  const int W = 640, H = 360, L = 60, R = 20, T = 40, B = 50;
  const bool lg = opt.log_y;
  auto usable = [&](double v) { return std::isfinite(v) && (!lg || v > 0); };
  const double inf = std::numeric_limits<double>::infinity();
  double ylo = inf, yhi = -inf, xlo = inf, xhi = -inf;
  if (opt.has_baseline && usable(opt.baseline)) ylo = yhi = opt.baseline;
  for (const auto& s : series)
    for (size_t i = 0; i < s.y.size() && i < s.x.size(); ++i) {
      if (!usable(s.y[i])) continue;
      const double e = i < s.err.size() ? s.err[i] : 0;
      ylo = std::min(ylo, lg ? s.y[i] : s.y[i] - e), yhi = std::max(yhi, s.y[i] + e);
      xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
    }
  if (!std::isfinite(ylo)) ylo = lg ? 1 : 0, yhi = lg ? 10 : 1;
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1;
  std::vector<double> yt;  // ticks; on a log axis in log10 units
  std::vector<std::string> ylab;
  if (lg) {
    const int a = static_cast<int>(std::floor(std::log10(ylo) + 1e-9));
    const int b = std::max(a + 1, static_cast<int>(std::ceil(std::log10(yhi) - 1e-9)));
    const int stride = std::max(1, (b - a + 5) / 6);  // at most ~7 labelled decades
    for (int k = a; k < b + stride; k += stride) yt.push_back(k);
    for (double k : yt) ylab.push_back(format("%g", std::pow(10.0, k)));
  } else {
    yt = nice_ticks(ylo, yhi);
    ylab = tick_labels(yt);
  }
  const auto xt = nice_ticks(xlo, xhi);
  const double ya = yt.front(), yb = yt.back(), xa = xt.front(), xb = xt.back();
  auto X = [&](double v) { return L + (W - L - R) * (v - xa) / (xb - xa); };
  auto Yt = [&](double t) { return T + (H - T - B) * (yb - t) / (yb - ya); };
  auto Y = [&](double v) { return Yt(lg ? std::log10(v) : v); };
  std::ostringstream o;
  o << frame(opt.title, W, H, L, R, yt, ylab, Yt);
  const auto xl = tick_labels(xt);
  for (size_t i = 0; i < xt.size(); ++i)
    o << "<text x=\"" << fixed(X(xt[i])) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << xl[i] << "</text>\n";
  if (opt.has_baseline && usable(opt.baseline))
    o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << fixed(Y(opt.baseline)) << "\" y2=\"" << fixed(Y(opt.baseline))
      << "\" stroke=\"#888\" stroke-dasharray=\"6 4\"/>\n<text x=\"" << W - R << "\" y=\"" << fixed(Y(opt.baseline) - 5)
      << "\" text-anchor=\"end\" fill=\"#666\">" << esc(opt.baseline_label) << " " << fixed(opt.baseline) << "</text>\n";
  for (size_t si = 0; si < series.size(); ++si) {
    const ChartSeries& s = series[si];
    const std::string color = kPalette[si % kColors];
    const std::string who = opt.point_label.empty() ? s.name : opt.point_label;
    const char* radius = s.x.size() > 60 ? "2" : "4";  // long series: small markers
    std::string path;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!usable(s.y[i])) continue;
      path += (path.empty() ? "M" : " L") + fixed(X(s.x[i])) + " " + fixed(Y(s.y[i]));
      const double e = i < s.err.size() ? s.err[i] : 0;
      if (e > 0) {
        const double lo = lg ? std::max(s.y[i] - e, std::pow(10.0, ya)) : s.y[i] - e;
        o << "<line x1=\"" << fixed(X(s.x[i])) << "\" x2=\"" << fixed(X(s.x[i])) << "\" y1=\"" << fixed(Y(lo)) << "\" y2=\""
          << fixed(Y(s.y[i] + e)) << "\" stroke=\"" << color << "\"/>\n";
      }
      if (s.markers)
        o << "<circle cx=\"" << fixed(X(s.x[i])) << "\" cy=\"" << fixed(Y(s.y[i])) << "\" r=\"" << radius << "\" fill=\"" << color << "\"><title>"
          << esc(who) << " " << fixed(s.x[i], opt.x_decimals) << ": " << (lg ? format("%.3g", s.y[i]) : fixed(s.y[i], 2))
          << "</title></circle>\n";
    }
    if (!path.empty())
      o << "<path d=\"" << path << "\" fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\""
        << (s.dashed ? " stroke-dasharray=\"5 3\"" : "") << "/>\n";
  }
  if (series.size() > 1)
    for (size_t si = 0; si < series.size(); ++si) {
      const int ly = T + 8 + 16 * static_cast<int>(si);
      o << "<line x1=\"" << W - R - 170 << "\" x2=\"" << W - R - 150 << "\" y1=\"" << ly << "\" y2=\"" << ly << "\" stroke=\""
        << kPalette[si % kColors] << "\" stroke-width=\"2\"" << (series[si].dashed ? " stroke-dasharray=\"5 3\"" : "")
        << "/>\n<text x=\"" << W - R - 145 << "\" y=\"" << ly + 4 << "\">" << esc(series[si].name) << "</text>\n";
    }
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">" << esc(opt.xlabel) << "</text>\n";
  o << "<text x=\"16\" y=\"" << (T + H - B) / 2 << "\" transform=\"rotate(-90 16 " << (T + H - B) / 2
    << ")\" text-anchor=\"middle\">" << esc(opt.ylabel) << "</text>\n</svg>\n";
  return o.str();
}

std::string svg_line_chart(const std::string& title, const std::vector<double>& xs, const std::vector<double>& ys,
                           const std::vector<double>& err, double baseline, const std::string& xlabel,
                           const std::string& ylabel) {
  ChartOptions o;
  o.title = title, o.xlabel = xlabel, o.ylabel = ylabel, o.point_label = xlabel;
  o.has_baseline = true, o.baseline = baseline;
  return svg_series_chart({{"", xs, ys, err}}, o);
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
  md << "\n![pass@1 by method](methods.svg)\n\n![per-seed deltas](deltas.svg)\n\n![alpha sweep](alpha_sweep.svg)\n\n## Per seed\n\n";
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
  if (summary.contains("analyses"))
    for (auto& [name, r] : summary["analyses"].items()) md << "\n" << analysis_section(name, r, "analysis/" + name + ".svg");
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

std::string experiment_methods_chart(const json& summary) {
  std::vector<std::string> labels = {"base"};
  std::vector<double> means = {summary["base"]["pass@1"].get<double>()}, stds = {0.0};
  for (const auto& m : summary["methods"]) {
    if (!m.contains("pass@1_mean") || !m["pass@1_mean"].is_number()) continue;
    labels.push_back(m["name"].get<std::string>());
    means.push_back(m["pass@1_mean"].get<double>());
    stds.push_back(m.contains("pass@1_std") && m["pass@1_std"].is_number() ? m["pass@1_std"].get<double>() : 0.0);
  }
  return svg_bar_chart("Greedy pass@1 by method (mean ± std over seeds)", labels, means, "pass@1 (%)", stds);
}

std::string experiment_alpha_chart(const json& summary) {
  // One line per S0 method (mean ± std over seeds at each of its alphas).
  std::vector<ChartSeries> series;
  for (const auto& m : summary["methods"]) {
    if (!m.contains("alpha") || !m["alpha"].is_number()) continue;  // S0 conditions only
    const auto per_seed = m["pass@1_per_seed"].get<std::vector<double>>();
    const std::string method = m.value("method", std::string("s0"));
    if (series.empty() || series.back().name != method) series.push_back({method});
    series.back().x.push_back(m["alpha"].get<double>());
    series.back().y.push_back(eval::mean(per_seed));
    series.back().err.push_back(eval::stddev(per_seed));
  }
  ChartOptions o;
  o.title = "Greedy pass@1 by alpha (mean ± std over seeds)", o.xlabel = "alpha", o.ylabel = "pass@1 (%)";
  o.point_label = "alpha", o.has_baseline = true, o.baseline = summary["base"]["pass@1"].get<double>();
  return svg_series_chart(series, o);
}

// ------------------------------------------------------------------ analyses

namespace {

std::string num(const json& v, const char* fmt = "%.3g") {
  return v.is_number() ? format(fmt, v.get<double>()) : std::string("n/a");
}

std::string auc_cell(const json& s) {
  return fixed(s["auc"].get<double>(), 3) + " [" + fixed(s["lo"].get<double>(), 2) + ", " + fixed(s["hi"].get<double>(), 2) + "]";
}

std::string persistence_section(const json& r, const std::string& svg) {
  std::ostringstream md;
  md << "## Persistence of the tuned state\n\n"
     << "KL(tuned || base) of the next-token distribution at each prompt position, averaged over "
     << r["prompts"].get<int64_t>() << " prompts: " << num(r["kl_first"]) << " nats after the first prompt token, "
     << num(r["kl_last_prompt_token"]) << " after the last";
  if (r["kl_last_over_first"].is_number())
    md << " (" << format("%.3g", 100 * r["kl_last_over_first"].get<double>()) << "% of the first)";
  md << ".";
  const json& f = r["fit"];
  if (f.is_object())
    md << " Exponential fit over the " << f["points"].get<int64_t>() << " positions most prompts reach: KL ~ "
       << format("%.3g", std::exp(f["a"].get<double>())) << " exp(" << format("%.3g", f["b"].get<double>())
       << " t), half-life " << (f["half_life_tokens"].is_number() ? fixed(f["half_life_tokens"].get<double>()) + " tokens" : "none (no decay)")
       << " (R^2 " << fixed(f["r2"].get<double>(), 2) << ").";
  else
    md << " No exponential fit (fewer than two positions with KL > 0).";
  md << "\n\n![persistence](" << svg << ")\n\n"
     << md_row({"layer", "‖S0‖ (as injected)", "‖S_t(tuned) - S_t(base)‖ at the last common position", "ratio"})
     << md_rule(4);
  for (const auto& l : r["layers"])
    md << md_row({l["layer"].dump(), num(l["initial_norm"]), num(l["last"]),
                  l["last_over_initial"].is_number() ? num(l["last_over_initial"]) : ""});
  return md.str();
}

std::string divergence_section(const json& r, const std::string& svg) {
  std::ostringstream md;
  md << "## Where FAIL->PASS flips diverge\n\n"
     << "For every problem the base model fails and the tuned model passes, the first character (and token) at which "
        "the two greedy outputs differ"
     << (r["runs"].get<int64_t>() > 1 ? ", over " + r["runs"].dump() + " runs" : std::string()) << ". Sign tests: "
     << "FAIL->PASS vs PASS->FAIL, and flips diverging at position 0 vs later (two-sided, H0 p = 1/2).\n\n"
     << md_row({"condition", "FAIL->PASS", "PASS->FAIL", "sign test p", "at character 0", "median character",
                "p (0 vs later)", "at token 0", "median token"})
     << md_rule(9);
  for (const auto& c : r["conditions"]) {
    const json& ch = c["first_char"];
    const json& tk = c["first_token"];
    const bool has = ch.contains("median"), tok = tk.is_object() && tk.contains("median");
    md << md_row({c["name"].get<std::string>(), c["fail_to_pass"].dump(), c["pass_to_fail"].dump(),
                  p_value(c["flip_sign_test_p"].get<double>()), has ? percent(ch["at_position_0"].get<double>()) : "",
                  has ? ch["median"].dump() : "", has ? p_value(ch["sign_test"]["p"].get<double>()) : "",
                  tok ? percent(tk["at_position_0"].get<double>()) : "", tok ? tk["median"].dump() : ""});
  }
  // The character histogram, one column per condition.
  std::vector<std::string> head = {"first differing character"};
  const json* any = nullptr;
  for (const auto& c : r["conditions"])
    if (c["first_char"].contains("histogram")) head.push_back(c["name"].get<std::string>()), any = &c;
  if (any) {
    md << "\n" << md_row(head) << md_rule(head.size());
    for (size_t b = 0; b < (*any)["first_char"]["histogram"].size(); ++b) {
      std::vector<std::string> row = {(*any)["first_char"]["histogram"][b]["bucket"].get<std::string>()};
      for (const auto& c : r["conditions"])
        if (c["first_char"].contains("histogram")) row.push_back(c["first_char"]["histogram"][b]["count"].dump());
      md << md_row(row);
    }
    md << "\n![first differing character](" << svg << ")\n";
  }
  md << "\nToken positions: " << r["token_source"].get<std::string>() << ".\n";
  return md.str();
}

std::string probe_section(const json& r, const std::string& svg) {
  std::ostringstream md;
  md << "## Linear probe: recurrent state vs residual stream\n\n"
     << "Features at the last prompt token of the base model (zero initial state), labels = the base model passes ("
     << r["positives"].get<int64_t>() << " of " << r["samples"].get<int64_t>() << "); per fold PCA to at most "
     << r["pca_dims"].get<int64_t>() << " dimensions (whitened), L2 logistic regression (lambda " << format("%g", r["l2"].get<double>())
     << "), " << r["folds"].get<int64_t>() << "-fold stratified cross-validation; AUC of the pooled out-of-fold scores "
     << "with DeLong's 95% interval.\n\n"
     << md_row({"layer", "state AUC [95% CI]", "residual AUC [95% CI]", "fold AUC state", "fold AUC residual",
                "features (state / residual)"})
     << md_rule(6);
  for (const auto& l : r["layers"])
    md << md_row({l["layer"].dump(), auc_cell(l["state"]), auc_cell(l["residual"]),
                  plus_minus(l["state"]["fold_auc_mean"].get<double>() * 100, l["state"]["fold_auc_std"].get<double>() * 100) + "%",
                  plus_minus(l["residual"]["fold_auc_mean"].get<double>() * 100, l["residual"]["fold_auc_std"].get<double>() * 100) + "%",
                  l["state_features"].dump() + " / " + l["residual_features"].dump()});
  md << "\nBest: state " << fixed(r["best_state"]["auc"].get<double>(), 3) << " (layer " << r["best_state"]["layer"].dump()
     << "), residual " << fixed(r["best_residual"]["auc"].get<double>(), 3) << " (layer "
     << r["best_residual"]["layer"].dump() << ").\n\n![probe AUC by layer](" << svg << ")\n";
  return md.str();
}

std::string ablation_section(const std::string& what, const json& r, const std::string& svg) {
  std::ostringstream md;
  md << "## Ablation: " << what << "\n\n"
     << "Each arm trained on the same collected data per seed (seeds " << r["seeds"].dump() << "), greedy pass@1 on "
     << r["problems"].dump() << " held-out problems; base " << fixed(r["base"].get<double>()) << "%.\n\n"
     << md_row({"arm", "pass@1 (mean ± std)", "delta pp (mean ± std)", "Welch p vs base", "FAIL->PASS", "PASS->FAIL", "per seed"})
     << md_rule(7);
  for (const auto& a : r["arms"]) {
    std::string per;
    for (const auto& v : a["pass@1_per_seed"]) per += (per.empty() ? "" : " ") + fixed(v.get<double>());
    md << md_row({a["arm"].get<std::string>(),
                  a["pass@1_mean"].is_number() ? plus_minus(a["pass@1_mean"].get<double>(), a["pass@1_std"].get<double>()) : "n/a",
                  a["delta_pp_mean"].is_number() ? plus_minus(a["delta_pp_mean"].get<double>(), a["delta_pp_std"].get<double>()) : "n/a",
                  a["welch_p"].is_number() ? p_value(a["welch_p"].get<double>()) : "", a["fail_to_pass"].dump(),
                  a["pass_to_fail"].dump(), per});
  }
  md << "\n![" << what << "](" << svg << ")\n";
  return md.str();
}

}  // namespace

std::string analysis_section(const std::string& name, const json& r, const std::string& svg) {
  if (name == "persistence") return persistence_section(r, svg);
  if (name == "divergence") return divergence_section(r, svg);
  if (name == "probe") return probe_section(r, svg);
  if (name == "ablation_layers") return ablation_section("layer subsets", r, svg);
  if (name == "ablation_size") return ablation_section("training-set size", r, svg);
  throw Error("unknown analysis \"" + name + "\"");
}

std::string analysis_chart(const std::string& name, const json& r) {
  if (name == "persistence") {
    ChartSeries kl{"mean KL", {}, r["kl"].get<std::vector<double>>(), {}};
    for (size_t i = 0; i < kl.y.size(); ++i) kl.x.push_back(static_cast<double>(i));
    std::vector<ChartSeries> s = {kl};
    std::string title = "KL(tuned || base) by prompt position";
    if (r["fit"].is_object()) {
      ChartSeries fit{"exponential fit", {}, {}, {}, true, false};
      const double a = r["fit"]["a"].get<double>(), b = r["fit"]["b"].get<double>();
      const int64_t last = r["fit_positions"].get<int64_t>();
      for (int64_t i = 0; i < last; ++i) fit.x.push_back(static_cast<double>(i)), fit.y.push_back(std::exp(a + b * static_cast<double>(i)));
      s.push_back(fit);
      if (r["fit"]["half_life_tokens"].is_number())
        title += ", half-life " + fixed(r["fit"]["half_life_tokens"].get<double>()) + " tokens";
    }
    ChartOptions o;
    o.title = title, o.xlabel = "prompt position (tokens)", o.ylabel = "KL (nats, log scale)", o.log_y = true;
    o.point_label = "position", o.x_decimals = 0;
    return svg_series_chart(s, o);
  }
  if (name == "divergence") {
    std::vector<std::string> labels;
    std::vector<double> counts;
    std::string cond;
    for (const auto& c : r["conditions"])
      if (c["first_char"].contains("histogram")) {
        cond = c["name"].get<std::string>();
        for (const auto& h : c["first_char"]["histogram"])
          labels.push_back(h["bucket"].get<std::string>()), counts.push_back(h["count"].get<double>());
        break;
      }
    return svg_bar_chart("First differing character of FAIL->PASS flips" + (cond.empty() ? std::string(" (none)") : " (" + cond + ")"),
                         labels, counts, "flips");
  }
  if (name == "probe") {
    ChartSeries st{"recurrent state"}, rs{"residual stream"};
    for (const auto& l : r["layers"]) {
      const double x = l["layer"].get<double>();
      st.x.push_back(x), st.y.push_back(l["state"]["auc"].get<double>()), st.err.push_back(1.959963984540054 * l["state"]["se"].get<double>());
      rs.x.push_back(x), rs.y.push_back(l["residual"]["auc"].get<double>()), rs.err.push_back(1.959963984540054 * l["residual"]["se"].get<double>());
    }
    ChartOptions o;
    o.title = "Probe AUC by layer (5-fold CV, 95% CI)", o.xlabel = "layer", o.ylabel = "AUC";
    o.has_baseline = true, o.baseline = 0.5, o.baseline_label = "chance", o.x_decimals = 0;
    return svg_series_chart({st, rs}, o);
  }
  if (name == "ablation_layers" || name == "ablation_size") {
    std::vector<std::string> labels;
    std::vector<double> deltas;
    for (const auto& a : r["arms"])
      if (a["delta_pp_mean"].is_number()) labels.push_back(a["arm"].get<std::string>()), deltas.push_back(a["delta_pp_mean"].get<double>());
    return svg_bar_chart(name == "ablation_layers" ? "Pass@1 change by layer subset (mean over seeds)"
                                                   : "Pass@1 change by training-set size (mean over seeds)",
                         labels, deltas, "percentage points");
  }
  throw Error("unknown analysis \"" + name + "\"");
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
  if (d.contains("analyses") && !d["analyses"].empty()) {
    const json& a = d["analyses"];
    o << "\nAnalyses (" << "experiment/analysis/):\n";
    if (a.contains("persistence")) {
      const json& p = a["persistence"];
      o << "  persistence: KL(tuned || base) " << num(p["kl_first"]) << " nats after the first prompt token, "
        << num(p["kl_last_prompt_token"]) << " after the last";
      if (p["half_life_tokens"].is_number()) o << "; half-life " << fixed(p["half_life_tokens"].get<double>()) << " tokens";
      o << "\n";
    }
    if (a.contains("divergence"))
      for (const auto& c : a["divergence"])
        o << "  divergence (" << c["name"].get<std::string>() << "): " << c["fail_to_pass"].dump() << " FAIL->PASS flips"
          << (c["at_position_0"].is_number() ? ", " + percent(c["at_position_0"].get<double>()) + " differ at the first character"
                                             : std::string())
          << "\n";
    if (a.contains("probe"))
      o << "  probe AUC (best layer): recurrent state " << fixed(a["probe"]["best_state"]["auc"].get<double>(), 3)
        << ", residual stream " << fixed(a["probe"]["best_residual"]["auc"].get<double>(), 3) << "\n";
  }
  if (d.contains("control")) {
    // The paper's control: prefix tuning on a pure Transformer of the same corpus and size.
    const json& c = d["control"];
    o << "\nThe control: prefix tuning (30 virtual tokens, projection MLP) on the built-in pure Transformer ("
      << (c["parameters"].is_number() ? c["parameters"].dump() + " parameters" : std::string("same corpus")) << " vs "
      << (d.contains("parameters") && d["parameters"].is_number() ? d["parameters"].dump() : std::string("n/a"))
      << " for the hybrid), same protocol:\n\n"
      << md_row({"model", "arm", "base", "pass@1 (mean ± std)", "delta pp", "Welch p", "trained params"}) << md_rule(7);
    auto rows = [&](const std::string& model, const json& base, const json& comparison) {
      for (const auto& r : comparison) {
        const bool zero = r["welch_zero_variance"].is_boolean() && r["welch_zero_variance"].get<bool>();
        o << md_row({model, r["name"].get<std::string>(), f1(base) + "%", f1(r["pass@1_mean"]) + " ± " + f1(r["pass@1_std"]) + "%",
                     f1(r["delta_pp_mean"]) + " ± " + f1(r["delta_pp_std"]), zero ? "undefined (std 0)" : pv(r["welch_p"]),
                     r["params"].is_number() ? r["params"].dump() : "n/a"});
      }
    };
    rows("hybrid", d["base_pass@1"], json::array({d["comparison"][0]}));
    rows("Transformer", c["base_pass@1"], c["comparison"]);
    o << "\ncontrol report: " << c["report"].get<std::string>() << "\n";
  }
  o << "\nreport:    " << d["report"].get<std::string>() << "\nstate set: " << d["state_set"].get<std::string>()
    << "\nsummary:   " << demo_json_path << "\n";
  return o.str();
}

}  // namespace s0::pipeline
