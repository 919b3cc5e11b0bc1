#pragma once
// The linear probe's math (METHOD.md section 6): PCA, L2-regularised logistic regression and
// stratified k-fold cross-validated AUC, all in float64 on ATen tensors. Small problems only
// (a few hundred samples, features of any width): PCA goes through the n x n Gram matrix when
// there are more features than samples.
#include <cstdint>
#include <vector>

#include "s0/eval/stats.h"
#include "s0/util/torch.h"

namespace s0::pipeline {

// Principal components of the rows of X [n, d]: the k directions of largest variance.
struct Pca {
  Tensor mean;        // [d]
  Tensor components;  // [k, d], orthonormal rows, each with its largest-magnitude entry positive
  Tensor variances;   // [k], descending, sample variance (n - 1) along each component
  // Scores of rows Y [m, d]: (Y - mean) components^T, [m, k].
  Tensor project(const Tensor& Y) const;
};
// k is capped at the number of components with non-negligible variance (rank of centred X).
Pca fit_pca(const Tensor& X, int64_t k);

// Logistic regression by Newton's method (with backtracking): minimises
//   sum_i [log(1 + exp(z_i)) - y_i z_i] + l2/2 ||w||^2,   z_i = x_i . w + b
// (the intercept b is not penalised; l2 = 0 is plain maximum likelihood, which diverges on
// separable data: the iterations stop at `max_iter`).
struct Logistic {
  Tensor w;  // [p] float64
  double b = 0;
  int64_t iterations = 0;
  bool converged = false;
  Tensor decision(const Tensor& X) const;  // X w + b, [n]
};
Logistic fit_logistic(const Tensor& X, const std::vector<int>& y, double l2, int64_t max_iter = 100);
// The objective above at (w, b).
double logistic_objective(const Tensor& X, const std::vector<int>& y, const Tensor& w, double b, double l2);

struct ProbeOptions {
  int64_t folds = 5;
  int64_t pca_dims = 64;
  double l2 = 1.0;  // on the whitened PCA scores
  uint64_t seed = 0;
};
struct ProbeScore {
  eval::Auc auc;                 // of the pooled out-of-fold decision values
  std::vector<double> fold_auc;  // per fold (folds with both classes in their test part)
  std::vector<double> scores;    // out-of-fold decision value per sample
  int64_t folds = 0, dims = 0;   // folds used; PCA dimensions of the first fold
};
// Stratified k-fold cross-validation (seeded shuffle within each class; folds reduced to the
// smaller class's count when it has fewer): per fold PCA to `pca_dims` on the training part,
// scores whitened by the training variances, logistic regression, decision values on the test
// part. Needs at least two samples of each label.
ProbeScore cross_validated_auc(const Tensor& X, const std::vector<int>& y, const ProbeOptions& opt);

}  // namespace s0::pipeline
