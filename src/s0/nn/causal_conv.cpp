#include "s0/nn/causal_conv.h"

#include <vector>

#include <torch/csrc/autograd/custom_function.h>

#include "s0/nn/activations.h"
#include "s0/nn/simd.h"

namespace s0::nn {

// ---- the definition ----------------------------------------------------------------------

namespace {

// y[:, :, t] = sum_j w[:, j] * f[:, :, t + j] for f [B, C, L + Kc - 1], w [C, Kc] (frozen).
// A hand-written backward (input gradient only): as plain autograd, each tap's slice would
// allocate and fill a full-size zero gradient.
struct ConvTaps : public torch::autograd::Function<ConvTaps> {
  static Tensor taps(const Tensor& f, const Tensor& w, int64_t L) {
    const int64_t C = w.size(0), Kc = w.size(1);
    Tensor y = f.narrow(2, 0, L) * w.select(1, 0).view({1, C, 1});
    for (int64_t j = 1; j < Kc; ++j) y.add_(f.narrow(2, j, L) * w.select(1, j).view({1, C, 1}));
    return y;
  }
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& f, const Tensor& w) {
    const int64_t L = f.size(2) - w.size(1) + 1;
    ctx->save_for_backward({w});
    ctx->saved_data["full_len"] = f.size(2);
    return taps(f, w, L);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const Tensor w = ctx->get_saved_variables()[0];
    const Tensor g = grads[0].contiguous();  // [B, C, L] (arrives as a transposed view)
    const int64_t C = w.size(0), Kc = w.size(1), L = g.size(2);
    Tensor df = at::zeros({g.size(0), C, ctx->saved_data["full_len"].toInt()}, g.options());
    for (int64_t j = 0; j < Kc; ++j) df.narrow(2, j, L).addcmul_(g, w.select(1, j).view({1, C, 1}));
    return {df, Tensor()};
  }
};

}  // namespace

// The reference formulation (ATen ops; plain autograd for a trainable weight, bias or
// history): Kc shifted multiply-adds over [history | x] in [B, C, L + Kc - 1].
Tensor causal_conv_silu_reference(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                  const Tensor& history) {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), Kc = weight.size(1);
  Tensor hist = history.defined() ? history : at::zeros({B, C, Kc - 1}, x.options());
  Tensor f = at::cat({hist, x.transpose(1, 2)}, 2).to(weight.scalar_type());
  Tensor y = grad_enabled() && f.requires_grad() && !weight.requires_grad() ? ConvTaps::apply(f, weight)
                                                                              : ConvTaps::taps(f, weight, L);
  if (bias.defined()) y = y + bias.view({1, C, 1});
  return nn::silu(y.to(x.scalar_type())).transpose(1, 2);  // [B, L, C]
}

// ---- the fused kernel ----------------------------------------------------------------------

namespace {

using namespace simd;

// pre[r, c] = round(bias[c] + sum_j wt[j, c] x[b, l - (Kc-1) + j, c]) (history before l = 0),
// out = round(silu(pre)). x/pre/out [B*L, C]; wt [Kc, C]; hist [B, C, Kc-1] or null.
template <class T, class Exp>
S0_INLINE void conv_fwd_rows(const typename St<T>::Raw* x, const typename St<T>::Raw* hist,
                             const typename St<T>::A* wt, const typename St<T>::A* bias,
                             typename St<T>::Raw* pre, typename St<T>::Raw* out, int64_t L, int64_t C, int64_t Kc,
                             int64_t r0, int64_t r1, Exp exp) {
  using S = St<T>;
  using A = typename S::A;
  std::vector<A> acc(C), e(C);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / L, l = r % L;
    for (int64_t c = 0; c < C; ++c) acc[c] = 0;
    for (int64_t j = 0; j < Kc; ++j) {
      const int64_t p = l - (Kc - 1) + j;
      const A* w = wt + j * C;
      if (p >= 0) {
        const auto* xs = x + (b * L + p) * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += w[c] * S::load(xs[c]);
      } else if (hist) {
        const auto* hs = hist + b * C * (Kc - 1) + (Kc - 1 + p);
        for (int64_t c = 0; c < C; ++c) acc[c] += w[c] * S::load(hs[c * (Kc - 1)]);
      }
    }
    if (bias)
      for (int64_t c = 0; c < C; ++c) acc[c] += bias[c];
    for (int64_t c = 0; c < C; ++c) acc[c] = S::round(acc[c]), e[c] = -acc[c];
    exp(e.data(), e.data(), C);
    auto* o = out + r * C;
    auto* pr = pre ? pre + r * C : nullptr;
    for (int64_t c = 0; c < C; ++c) o[c] = S::store(acc[c] / (A(1) + e[c]));
    if (pr)
      for (int64_t c = 0; c < C; ++c) pr[c] = S::store(acc[c]);
  }
}

// dpre = dy * silu'(pre) for rows [r0, r1) (f32/f64 scratch [B*L, C]).
template <class T, class Exp>
S0_INLINE void silu_bwd_rows(const typename St<T>::Raw* dy, const typename St<T>::Raw* pre,
                             typename St<T>::A* dpre, int64_t C, int64_t r0, int64_t r1, Exp exp) {
  using S = St<T>;
  using A = typename S::A;
  std::vector<A> e(C);
  for (int64_t r = r0; r < r1; ++r) {
    const auto *p = pre + r * C, *d = dy + r * C;
    for (int64_t c = 0; c < C; ++c) e[c] = -S::load(p[c]);
    exp(e.data(), e.data(), C);
    A* o = dpre + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const A s = A(1) / (A(1) + e[c]), v = S::load(p[c]);
      o[c] = S::load(d[c]) * s * (A(1) + v * (A(1) - s));
    }
  }
}

// dx[b, p, c] = sum_j wt[j, c] dpre[b, p + (Kc-1) - j, c] over the taps that land in [0, L).
template <class T>
S0_INLINE void conv_bwd_rows(const typename St<T>::A* dpre, const typename St<T>::A* wt, typename St<T>::Raw* dx,
                             int64_t L, int64_t C, int64_t Kc, int64_t r0, int64_t r1) {
  using S = St<T>;
  using A = typename S::A;
  std::vector<A> acc(C);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / L, p = r % L;
    for (int64_t c = 0; c < C; ++c) acc[c] = 0;
    for (int64_t j = 0; j < Kc; ++j) {
      const int64_t l = p + (Kc - 1) - j;
      if (l >= L) continue;
      const A *w = wt + j * C, *d = dpre + (b * L + l) * C;
      for (int64_t c = 0; c < C; ++c) acc[c] += w[c] * d[c];
    }
    auto* o = dx + r * C;
    for (int64_t c = 0; c < C; ++c) o[c] = S::store(acc[c]);
  }
}

// Returns out (and pre when wanted) for contiguous x/hist, transposed weights wt [Kc, C].
void conv_silu_forward(const Tensor& x, const Tensor& hist, const Tensor& wt, const Tensor& bias, Tensor* pre,
                       Tensor& out) {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), Kc = wt.size(0);
  out = at::empty_like(x);
  if (pre) *pre = at::empty_like(x);
  dispatch_dtype(x.scalar_type(), "conv_silu", [&](auto tag) {
    using T = decltype(tag);
    using A = typename St<T>::A;
    const auto* xp = raw<T>(x);
    const auto* hp = hist.defined() ? raw<T>(hist) : nullptr;
    const A* wp = wt.data_ptr<A>();
    const A* bp = bias.defined() ? bias.data_ptr<A>() : nullptr;
    auto* prp = pre ? raw<T>(*pre) : nullptr;
    auto* op = raw<T>(out);
    at::parallel_for(0, B * L, row_grain(C), [&](int64_t r0, int64_t r1) {
      dispatch<T>([&](auto exp) __attribute__((always_inline)) { conv_fwd_rows<T>(xp, hp, wp, bp, prp, op, L, C, Kc, r0, r1, exp); });
    });
  });
}

Tensor conv_silu_backward(const Tensor& dy, const Tensor& pre, const Tensor& wt) {
  const int64_t B = pre.size(0), L = pre.size(1), C = pre.size(2), Kc = wt.size(0);
  Tensor dx = at::empty_like(pre);
  const auto acc_t = pre.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Tensor dpre = at::empty({B * L, C}, pre.options().dtype(acc_t));
  dispatch_dtype(pre.scalar_type(), "conv_silu backward", [&](auto tag) {
    using T = decltype(tag);
    using A = typename St<T>::A;
    const auto *dyp = raw<T>(dy), *pp = raw<T>(pre);
    A* dp = dpre.data_ptr<A>();
    const A* wp = wt.data_ptr<A>();
    auto* dxp = raw<T>(dx);
    at::parallel_for(0, B * L, row_grain(C), [&](int64_t r0, int64_t r1) {
      dispatch<T>([&](auto exp) __attribute__((always_inline)) { silu_bwd_rows<T>(dyp, pp, dp, C, r0, r1, exp); });
    });
    at::parallel_for(0, B * L, row_grain(C), [&](int64_t r0, int64_t r1) {
      dispatch<T>([&](auto) __attribute__((always_inline)) { conv_bwd_rows<T>(dp, wp, dxp, L, C, Kc, r0, r1); });
    });
  });
  return dx;
}

// Constants of the conv (possibly undefined tensors, which autograd's apply() does not take).
struct ConvConsts {
  Tensor hist, bias;
};

struct ConvSiluFn : public torch::autograd::Function<ConvSiluFn> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& wt,
                        const ConvConsts& k) {
    Tensor pre, out;
    conv_silu_forward(x, k.hist, wt, k.bias, &pre, out);
    ctx->save_for_backward({pre, wt});
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    return {conv_silu_backward(grads[0].contiguous(), saved[0], saved[1]), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor conv_silu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& history) {
  TORCH_CHECK(x.dim() == 3 && weight.dim() == 2 && weight.size(0) == x.size(2), "conv_silu: shapes");
  const int64_t B = x.size(0), C = x.size(2), Kc = weight.size(1);
  const auto acc_t = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(!history.defined() || (history.dim() == 3 && history.size(0) == B && history.size(1) == C &&
                                     history.size(2) == Kc - 1),
              "conv_silu: history must be [B, C, Kc-1]");
  TORCH_CHECK(!bias.defined() || bias.numel() == C, "conv_silu: bias must be [C]");
  Tensor xc = x.contiguous();
  Tensor hist = history.defined() ? history.to(x.scalar_type()).contiguous() : Tensor();
  Tensor wt = weight.detach().to(acc_t).t().contiguous();  // [Kc, C]
  Tensor b = bias.defined() ? bias.detach().to(acc_t).contiguous() : Tensor();
  if (grad_enabled() && x.requires_grad()) return ConvSiluFn::apply(xc, wt, ConvConsts{hist, b});
  Tensor out;
  conv_silu_forward(xc, hist, wt, b, nullptr, out);
  return out;
}

// ---- entry point -----------------------------------------------------------------------------

namespace {

// The last Kc-1 raw inputs of [history | x] (a constant for autograd: see causal_conv.h).
Tensor conv_history(const Tensor& x, const Tensor& history, int64_t Kc) {
  NoGrad ng;
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  if (L >= Kc - 1) return x.narrow(1, L - (Kc - 1), Kc - 1).transpose(1, 2).contiguous();
  Tensor hist = history.defined() ? history : at::zeros({B, C, Kc - 1}, x.options());
  return at::cat({hist, x.transpose(1, 2)}, 2).narrow(2, L, Kc - 1).contiguous();
}

Tensor conv_silu_any(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& history,
                     Tensor& new_history) {
  const bool fused = !weight.requires_grad() && !(bias.defined() && bias.requires_grad()) &&
                     !(history.defined() && history.requires_grad()) && x.device().is_cpu();
  Tensor y = fused ? conv_silu(x, weight, bias, history) : causal_conv_silu_reference(x, weight, bias, history);
  new_history = conv_history(x, history, weight.size(1));
  return y;
}

}  // namespace

Tensor causal_conv_silu(const Tensor& x, const Tensor& weight, const Tensor& history, Tensor& new_history) {
  return conv_silu_any(x, weight, Tensor(), history, new_history);
}

Tensor causal_conv_bias_silu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& history,
                             Tensor& new_history) {
  return conv_silu_any(x, weight, bias, history, new_history);
}

}  // namespace s0::nn
