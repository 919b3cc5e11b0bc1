#include "s0/nn/cross_entropy.h"

#include <vector>

#include "s0/nn/linear.h"
#include "s0/nn/simd.h"

namespace s0::nn {

// ---- the definition ----------------------------------------------------------------------

RowsCrossEntropy cross_entropy_rows_reference(const Tensor& h, const Tensor& w, const Tensor& labels, double scale,
                                              double logit_multiplier) {
  at::AutoGradMode grad_on(true);
  const auto acc = h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Tensor hr = h.detach().requires_grad_(true);
  Tensor logits = at::matmul(hr, w.t()).to(acc) * logit_multiplier;  // rounded to the dtype first
  Tensor loss = at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum);
  RowsCrossEntropy out;
  out.grad = torch::autograd::grad({loss * scale}, {hr})[0];
  out.loss_sum = loss.item<double>();
  return out;
}

// ---- the fused kernel ----------------------------------------------------------------------

namespace {

using namespace simd;

// One row of logits z (raw, length V): returns its CE against `label` and overwrites z with
// d(scale * CE)/dz (rounded to the dtype, as the reference's gradient of the rounding is).
template <class T, class Exp>
S0_INLINE double ce_row(typename St<T>::Raw* z, int64_t V, int64_t label, double mult, double scale, Exp exp) {
  using S = St<T>;
  using A = typename S::A;
  A buf[kBlock];
  const A m = static_cast<A>(mult);
  const A mx = lane_max<A>(V, [&](int64_t i) { return S::load(z[i]) * m; });
  double sum = 0;
  for (int64_t s = 0; s < V; s += kBlock) {
    const int64_t n = std::min(kBlock, V - s);
    for (int64_t i = 0; i < n; ++i) buf[i] = S::load(z[s + i]) * m - mx;
    exp(buf, buf, n);
    sum += lane_sum<A>(n, [&](int64_t i) { return buf[i]; });
  }
  const double lse = static_cast<double>(mx) + std::log(sum);
  const double loss = lse - static_cast<double>(S::load(z[label]) * m);
  const A shift = static_cast<A>(lse), gs = static_cast<A>(scale * mult);
  for (int64_t s = 0; s < V; s += kBlock) {
    const int64_t n = std::min(kBlock, V - s);
    for (int64_t i = 0; i < n; ++i) buf[i] = S::load(z[s + i]) * m - shift;
    exp(buf, buf, n);
    if (label >= s && label < s + n) buf[label - s] -= A(1);
    for (int64_t i = 0; i < n; ++i) z[s + i] = S::store(buf[i] * gs);
  }
  return loss;
}

}  // namespace

// ---- entry point -----------------------------------------------------------------------------

RowsCrossEntropy cross_entropy_rows(const Tensor& h, const Tensor& head, const Tensor& labels, double scale,
                                    int64_t chunk, double logit_multiplier) {
  // dL/dh = dL/dz W needs the rows of W: a head in k-pairs (generation's layout) through a copy.
  const Tensor w = is_pair_layout(head) ? row_layout_copy(head) : head;
  TORCH_CHECK(h.dim() == 2 && w.dim() == 2 && h.size(1) == w.size(1) && labels.dim() == 1 &&
                  labels.size(0) == h.size(0) && h.scalar_type() == w.scalar_type(),
              "cross_entropy_rows: shapes or dtypes");
  NoGrad ng;
  const int64_t M = h.size(0), V = w.size(0);
  Tensor lab = labels.to(at::kLong).contiguous();
  const int64_t* lp = lab.data_ptr<int64_t>();
  for (int64_t i = 0; i < M; ++i)
    TORCH_CHECK(lp[i] >= 0 && lp[i] < V, "cross_entropy_rows: label ", lp[i], " out of range");
  RowsCrossEntropy out;
  out.grad = at::empty_like(h);
  Tensor hc = h.contiguous();
  for (int64_t m0 = 0; m0 < M; m0 += chunk) {
    const int64_t mc = std::min(chunk, M - m0);
    Tensor z = nn::linear(hc.narrow(0, m0, mc), w).contiguous();  // [mc, V], model dtype
    std::vector<double> losses(mc);
    dispatch_dtype(z.scalar_type(), "cross_entropy_rows", [&](auto tag) {
      using T = decltype(tag);
      auto* zp = raw<T>(z);
      at::parallel_for(0, mc, 1, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          dispatch<T>([&](auto exp) __attribute__((always_inline)) {
            losses[r] = ce_row<T>(zp + r * V, V, lp[m0 + r], logit_multiplier, scale, exp);
          });
      });
    });
    for (double l : losses) out.loss_sum += l;
    out.grad.narrow(0, m0, mc).copy_(at::mm(z, w));
  }
  return out;
}

}  // namespace s0::nn
