#include "s0/pipeline/probe_math.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "s0/util/error.h"

namespace s0::pipeline {

namespace {

Tensor as_f64(const Tensor& X) { return X.to(at::kDouble).contiguous(); }

Tensor labels_tensor(const std::vector<int>& y) {
  std::vector<double> v(y.begin(), y.end());
  return at::tensor(v, at::kDouble);
}

}  // namespace

Tensor Pca::project(const Tensor& Y) const { return at::matmul(as_f64(Y) - mean, components.t()); }

Pca fit_pca(const Tensor& X_in, int64_t k) {
  NoGrad ng;
  if (X_in.dim() != 2 || X_in.size(0) < 2) throw Error("PCA: needs a matrix of at least two rows");
  const Tensor X = as_f64(X_in);
  const int64_t n = X.size(0), d = X.size(1);
  Pca p;
  p.mean = X.mean(0);
  const Tensor Xc = X - p.mean;
  Tensor vals, dirs;  // eigenvalues of Xc^T Xc (descending) and unit directions [d, r]
  if (d <= n) {
    auto [ev, V] = at::linalg_eigh(at::matmul(Xc.t(), Xc));
    vals = ev.flip(0), dirs = V.flip(1);
  } else {
    // Gram route: Xc Xc^T = U L U^T, and the directions are Xc^T U L^(-1/2).
    auto [ev, U] = at::linalg_eigh(at::matmul(Xc, Xc.t()));
    vals = ev.flip(0), dirs = U.flip(1);
  }
  const double top = vals.numel() ? std::max(vals[0].item<double>(), 0.0) : 0.0;
  int64_t r = 0;
  while (r < vals.numel() && vals[r].item<double>() > top * 1e-10 && vals[r].item<double>() > 0) ++r;
  k = std::min(k, r);
  if (k < 1) throw Error("PCA: the rows have no variance");
  vals = vals.narrow(0, 0, k);
  dirs = dirs.narrow(1, 0, k);
  if (d > n) dirs = at::matmul(Xc.t(), dirs) / vals.sqrt();
  // Deterministic signs: the largest-magnitude entry of each direction positive.
  Tensor idx = dirs.abs().argmax(0);
  Tensor sgn = dirs.gather(0, idx.unsqueeze(0)).sign().squeeze(0);
  p.components = (dirs * sgn).t().contiguous();
  p.variances = vals / static_cast<double>(n - 1);
  return p;
}

Tensor Logistic::decision(const Tensor& X) const { return at::matmul(as_f64(X), w) + b; }

double logistic_objective(const Tensor& X, const std::vector<int>& y, const Tensor& w, double b, double l2) {
  NoGrad ng;
  const Tensor z = at::matmul(as_f64(X), w.to(at::kDouble)) + b;
  // log(1 + e^z) computed stably
  const Tensor sp = at::clamp_min(z, 0) + at::log1p(at::exp(-z.abs()));
  return (sp - labels_tensor(y) * z).sum().item<double>() + 0.5 * l2 * w.to(at::kDouble).pow(2).sum().item<double>();
}

Logistic fit_logistic(const Tensor& X_in, const std::vector<int>& y, double l2, int64_t max_iter) {
  NoGrad ng;
  const Tensor X = as_f64(X_in);
  if (X.dim() != 2 || X.size(0) != static_cast<int64_t>(y.size()) || y.empty())
    throw Error("logistic regression: X must be [n, p] with one label per row");
  for (int v : y)
    if (v != 0 && v != 1) throw Error("logistic regression: labels must be 0 or 1");
  const int64_t n = X.size(0), p = X.size(1);
  const Tensor A = at::cat({X, at::ones({n, 1}, X.options())}, 1);  // [n, p + 1], intercept last
  const Tensor Y = labels_tensor(y);
  Tensor pen = at::full({p + 1}, l2, X.options());
  pen[p] = 0;
  Tensor theta = at::zeros({p + 1}, X.options());
  auto objective = [&](const Tensor& th) {
    return logistic_objective(X, y, th.narrow(0, 0, p), th[p].item<double>(), l2);
  };
  Logistic m;
  double f = objective(theta);
  for (m.iterations = 0; m.iterations < max_iter; ++m.iterations) {
    const Tensor z = at::matmul(A, theta);
    const Tensor s = at::sigmoid(z);
    const Tensor grad = at::matmul(A.t(), s - Y) + pen * theta;
    if (grad.abs().max().item<double>() < 1e-10) {
      m.converged = true;
      break;
    }
    const Tensor H = at::matmul(A.t() * (s * (1 - s)), A) + at::diag(pen) +
                     1e-12 * at::eye(p + 1, X.options());
    const Tensor step = at::linalg_solve(H, grad);
    const double slope = (grad * step).sum().item<double>();
    double t = 1;
    Tensor next = theta - step;
    double fn = objective(next);
    while (fn > f - 1e-4 * t * slope && t > 1e-12) {
      t *= 0.5;
      next = theta - t * step;
      fn = objective(next);
    }
    const double moved = (t * step).abs().max().item<double>();
    theta = next;
    const double df = f - fn;
    f = fn;
    if (moved < 1e-12 || df <= 1e-15 * std::max(1.0, std::abs(f))) {
      m.converged = true;
      ++m.iterations;
      break;
    }
  }
  m.w = theta.narrow(0, 0, p).clone();
  m.b = theta[p].item<double>();
  return m;
}

ProbeScore cross_validated_auc(const Tensor& X_in, const std::vector<int>& y, const ProbeOptions& opt) {
  NoGrad ng;
  const Tensor X = as_f64(X_in.reshape({X_in.size(0), -1}));
  const int64_t n = X.size(0);
  if (n != static_cast<int64_t>(y.size())) throw Error("probe: one label per sample expected");
  std::vector<int64_t> pos, neg;
  for (int64_t i = 0; i < n; ++i) (y[static_cast<size_t>(i)] ? pos : neg).push_back(i);
  const int64_t smaller = static_cast<int64_t>(std::min(pos.size(), neg.size()));
  if (smaller < 2)
    throw Error("probe: needs at least two samples of each label (have " + std::to_string(pos.size()) + " positive, " +
                std::to_string(neg.size()) + " negative)");
  ProbeScore r;
  r.folds = std::min<int64_t>(std::max<int64_t>(opt.folds, 2), smaller);
  // Stratified assignment: each class shuffled, then dealt round-robin over the folds.
  std::mt19937_64 rng(0x9e3779b97f4a7c15ULL ^ opt.seed);
  std::vector<int64_t> fold(static_cast<size_t>(n));
  int64_t next = 0;
  for (auto* cls : {&pos, &neg}) {
    std::shuffle(cls->begin(), cls->end(), rng);
    for (int64_t i : *cls) fold[static_cast<size_t>(i)] = next++ % r.folds;
  }
  r.scores.assign(static_cast<size_t>(n), 0.0);
  for (int64_t f = 0; f < r.folds; ++f) {
    std::vector<int64_t> tr, te;
    for (int64_t i = 0; i < n; ++i) (fold[static_cast<size_t>(i)] == f ? te : tr).push_back(i);
    const Tensor itr = at::tensor(tr, at::kLong), ite = at::tensor(te, at::kLong);
    const Pca pca = fit_pca(X.index_select(0, itr), opt.pca_dims);
    const Tensor sd = pca.variances.sqrt();
    const Tensor ztr = pca.project(X.index_select(0, itr)) / sd, zte = pca.project(X.index_select(0, ite)) / sd;
    std::vector<int> ytr, yte;
    for (int64_t i : tr) ytr.push_back(y[static_cast<size_t>(i)]);
    for (int64_t i : te) yte.push_back(y[static_cast<size_t>(i)]);
    if (f == 0) r.dims = pca.components.size(0);
    const Logistic lr = fit_logistic(ztr, ytr, opt.l2);
    const Tensor s = lr.decision(zte).contiguous();
    std::vector<double> sv(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
    for (size_t k = 0; k < te.size(); ++k) r.scores[static_cast<size_t>(te[k])] = sv[k];
    if (std::count(yte.begin(), yte.end(), 1) > 0 && std::count(yte.begin(), yte.end(), 0) > 0)
      r.fold_auc.push_back(eval::auc_delong(sv, yte).auc);
  }
  r.auc = eval::auc_delong(r.scores, y);
  return r;
}

}  // namespace s0::pipeline
