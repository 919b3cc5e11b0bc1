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

}  // namespace s0::eval
