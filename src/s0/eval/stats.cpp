#include "s0/eval/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "s0/util/error.h"

namespace s0::eval {

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  if (n < 1 || c < 0 || c > n || k < 1 || k > n)
    throw Error("pass@k needs 0 <= c <= n and 1 <= k <= n (n=" + std::to_string(n) + ", c=" + std::to_string(c) +
                ", k=" + std::to_string(k) + ")");
  if (n - c < k) return 1.0;
  double prod = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i) prod *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - prod;
}

double mean(const std::vector<double>& x) {
  if (x.empty()) return 0;
  double s = 0;
  for (double v : x) s += v;
  return s / static_cast<double>(x.size());
}

double stddev(const std::vector<double>& x) {
  if (x.size() < 2) return 0;
  double m = mean(x), s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return std::sqrt(s / static_cast<double>(x.size() - 1));
}

namespace {

// Continued fraction for I_x(a, b) (modified Lentz), valid for x < (a + 1) / (a + b + 2).
double beta_cf(double a, double b, double x) {
  const double tiny = 1e-300, eps = 1e-15;
  double qab = a + b, qap = a + 1, qam = a - 1;
  double c = 1, d = 1 - qab * x / qap;
  if (std::abs(d) < tiny) d = tiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 10000; ++m) {
    double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (std::abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (std::abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1 / d;
    double del = d * c;
    h *= del;
    if (std::abs(del - 1) < eps) break;
  }
  return h;
}

}  // namespace

double incomplete_beta(double a, double b, double x) {
  if (!(a > 0) || !(b > 0)) throw Error("incomplete_beta needs a, b > 0");
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  double lbt = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  double bt = std::exp(lbt);
  if (x < (a + 1) / (a + b + 2)) return bt * beta_cf(a, b, x) / a;
  return 1 - bt * beta_cf(b, a, 1 - x) / b;
}

double student_t_two_sided_p(double t, double df) {
  if (!(df > 0)) throw Error("t distribution needs df > 0");
  if (std::isnan(t)) return std::numeric_limits<double>::quiet_NaN();
  if (std::isinf(t)) return 0;
  return incomplete_beta(df / 2, 0.5, df / (df + t * t));
}

TTest welch_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() < 2 || b.size() < 2) throw Error("Welch's t-test needs at least two values per group");
  TTest r;
  double na = static_cast<double>(a.size()), nb = static_cast<double>(b.size());
  double va = std::pow(stddev(a), 2) / na, vb = std::pow(stddev(b), 2) / nb;
  r.mean_diff = mean(a) - mean(b);
  double se2 = va + vb;
  if (se2 == 0) {
    r.df = na + nb - 2;
    r.t = r.mean_diff == 0 ? 0 : std::copysign(std::numeric_limits<double>::infinity(), r.mean_diff);
    r.p = r.mean_diff == 0 ? 1 : 0;
    return r;
  }
  r.t = r.mean_diff / std::sqrt(se2);
  r.df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1));
  r.p = student_t_two_sided_p(r.t, r.df);
  return r;
}

TTest paired_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) throw Error("paired t-test needs samples of equal size");
  if (a.size() < 2) throw Error("paired t-test needs at least two pairs");
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  TTest r;
  r.mean_diff = mean(d);
  r.df = static_cast<double>(d.size() - 1);
  double se = stddev(d) / std::sqrt(static_cast<double>(d.size()));
  if (se == 0) {
    r.t = r.mean_diff == 0 ? 0 : std::copysign(std::numeric_limits<double>::infinity(), r.mean_diff);
    r.p = r.mean_diff == 0 ? 1 : 0;
    return r;
  }
  r.t = r.mean_diff / se;
  r.p = student_t_two_sided_p(r.t, r.df);
  return r;
}

double mcnemar_exact_p(int64_t b, int64_t c) {
  if (b < 0 || c < 0) throw Error("McNemar test needs non-negative counts");
  const int64_t n = b + c, k = std::min(b, c);
  if (n == 0) return 1.0;
  // log C(n, i) - n log 2, summed in probability space (each term <= 1, no overflow)
  double tail = 0;
  for (int64_t i = 0; i <= k; ++i)
    tail += std::exp(std::lgamma(n + 1.0) - std::lgamma(i + 1.0) - std::lgamma(n - i + 1.0) - n * std::log(2.0));
  return std::min(1.0, 2 * tail);
}

Auc auc_delong(const std::vector<double>& scores, const std::vector<int>& labels) {
  if (scores.size() != labels.size()) throw Error("AUC: scores and labels differ in length");
  std::vector<double> pos, neg;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (labels[i] != 0 && labels[i] != 1) throw Error("AUC: labels must be 0 or 1");
    (labels[i] ? pos : neg).push_back(scores[i]);
  }
  if (pos.empty() || neg.empty()) throw Error("AUC: needs at least one positive and one negative label");
  const size_t m = pos.size(), n = neg.size();
  // Placement values: V10[i] = P(neg < pos[i]) (+1/2 ties), V01[j] = P(pos > neg[j]). Sorted
  // lookups make this O((m + n) log(m + n)).
  std::vector<double> sp = pos, sn = neg;
  std::sort(sp.begin(), sp.end());
  std::sort(sn.begin(), sn.end());
  auto below_and_equal = [](const std::vector<double>& sorted, double v) {
    auto lo = std::lower_bound(sorted.begin(), sorted.end(), v), hi = std::upper_bound(sorted.begin(), sorted.end(), v);
    return std::pair<double, double>(static_cast<double>(lo - sorted.begin()), static_cast<double>(hi - lo));
  };
  std::vector<double> v10(m), v01(n);
  for (size_t i = 0; i < m; ++i) {
    auto [b, e] = below_and_equal(sn, pos[i]);
    v10[i] = (b + 0.5 * e) / static_cast<double>(n);
  }
  for (size_t j = 0; j < n; ++j) {
    auto [b, e] = below_and_equal(sp, neg[j]);
    v01[j] = (static_cast<double>(m) - b - e + 0.5 * e) / static_cast<double>(m);
  }
  Auc r;
  r.positives = static_cast<int64_t>(m), r.negatives = static_cast<int64_t>(n);
  r.auc = mean(v10);
  const double s10 = m > 1 ? stddev(v10) : 0, s01 = n > 1 ? stddev(v01) : 0;
  r.se = std::sqrt(s10 * s10 / static_cast<double>(m) + s01 * s01 / static_cast<double>(n));
  r.lo = std::max(0.0, r.auc - 1.959963984540054 * r.se);
  r.hi = std::min(1.0, r.auc + 1.959963984540054 * r.se);
  return r;
}

ExpFit exponential_fit(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) throw Error("exponential fit: x and y differ in length");
  std::vector<double> xs, ls;
  for (size_t i = 0; i < x.size(); ++i)
    if (y[i] > 0 && std::isfinite(y[i])) xs.push_back(x[i]), ls.push_back(std::log(y[i]));
  ExpFit f;
  f.points = static_cast<int64_t>(xs.size());
  const double mx = mean(xs), ml = mean(ls);
  double sxx = 0, sxl = 0, sll = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    sxx += (xs[i] - mx) * (xs[i] - mx), sxl += (xs[i] - mx) * (ls[i] - ml), sll += (ls[i] - ml) * (ls[i] - ml);
  }
  if (xs.size() < 2 || sxx == 0) {
    f.points = std::min<int64_t>(f.points, 1);
    f.half_life = std::numeric_limits<double>::infinity();
    return f;
  }
  f.b = sxl / sxx;
  f.a = ml - f.b * mx;
  f.r2 = sll > 0 ? sxl * sxl / (sxx * sll) : 1.0;
  f.half_life = f.b < 0 ? std::log(2.0) / -f.b : std::numeric_limits<double>::infinity();
  return f;
}

}  // namespace s0::eval
