#pragma once
// Statistics for evaluation reports. Torch-free.
#include <cstdint>
#include <vector>

namespace s0::eval {

// Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k), computed as
// 1 - prod_{i=n-c+1..n} (1 - k/i) (no overflowing binomials). Requires 0 <= c <= n, 1 <= k <= n.
double pass_at_k(int64_t n, int64_t c, int64_t k);

double mean(const std::vector<double>& x);
// Sample standard deviation (n - 1 denominator); 0 for fewer than two values.
double stddev(const std::vector<double>& x);

// Regularized incomplete beta function I_x(a, b).
double incomplete_beta(double a, double b, double x);
// Two-sided p-value of Student's t with df degrees of freedom (df may be fractional).
double student_t_two_sided_p(double t, double df);

struct TTest {
  double t = 0, df = 0, p = 1;
  double mean_diff = 0;  // mean(a) - mean(b)
};
// Welch's unequal-variance two-sample t-test (two-sided). Each sample needs >= 2 values.
// Both variances zero: p = 1 when the means are equal, else 0 (t = +-inf).
TTest welch_t_test(const std::vector<double>& a, const std::vector<double>& b);
// Paired t-test on a[i] - b[i] (two-sided), df = n - 1.
TTest paired_t_test(const std::vector<double>& a, const std::vector<double>& b);

// Exact McNemar test (two-sided) for paired binary outcomes on the same problems: b and c are
// the discordant counts (FAIL->PASS, PASS->FAIL); p = min(1, 2 P(X <= min(b, c))), X ~ Bin(b+c, 1/2).
// b + c = 0: p = 1.
double mcnemar_exact_p(int64_t b, int64_t c);
// The two-sided sign test: `pos` successes against `neg` failures under H0 p = 1/2. The same
// binomial computation as McNemar's exact test (which is a sign test on the discordant pairs).
inline double sign_test_p(int64_t pos, int64_t neg) { return mcnemar_exact_p(pos, neg); }

// Area under the ROC curve of `scores` for binary `labels` (1 positive, 0 negative): the
// Mann-Whitney probability that a positive outscores a negative, ties counting 1/2. With
// DeLong's variance (the placement values' variances over positives and negatives) and the
// normal 95% interval clipped to [0, 1]. Needs at least one positive and one negative.
struct Auc {
  double auc = 0.5, se = 0, lo = 0, hi = 1;
  int64_t positives = 0, negatives = 0;
};
Auc auc_delong(const std::vector<double>& scores, const std::vector<int>& labels);

// Least-squares fit of log(y) = a + b x over the points with y > 0 (at least two distinct x):
// y ~ exp(a) exp(b x). half_life = ln 2 / -b when b < 0 (x units), else infinity.
// `points` says how many points were used (0 or 1: no fit, a = b = 0).
struct ExpFit {
  double a = 0, b = 0, half_life = 0, r2 = 0;
  int64_t points = 0;
  bool ok() const { return points >= 2; }
};
ExpFit exponential_fit(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace s0::eval
