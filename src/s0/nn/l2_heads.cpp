#include "s0/nn/l2_heads.h"

#include <torch/csrc/autograd/custom_function.h>

#include "s0/nn/simd.h"

namespace s0::nn {

// ---- the definitions ---------------------------------------------------------------------

Tensor l2_norm(const Tensor& x, double eps) {
  return x * at::rsqrt(x.pow(2).sum(-1, true) + eps);
}

Tensor l2_norm_heads_reference(const Tensor& x, double scale, double eps) {
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return (l2_norm(x.to(acc), eps) * scale).transpose(1, 2).contiguous();
}

// ---- the fused kernel ----------------------------------------------------------------------

namespace {

using namespace simd;

// y[b, h, l, :] = scale * x r, r = (sum x^2 + eps)^-1/2, for x[b, l, h, :] (any dtype, strided).
template <class T, class A = typename St<T>::A>
S0_INLINE void l2_fwd_rows(const typename St<T>::Raw* x, const View4& v, A* y, A scale, A eps, int64_t r0,
                           int64_t r1) {
  using S = St<T>;
  for (int64_t r = r0; r < r1; ++r) {  // r = (b * H + h) * L + l: output order
    const int64_t l = r % v.L, h = (r / v.L) % v.H, b = r / (v.L * v.H);
    const auto* xs = x + v.at(b, l, h);
    const A ss = lane_sum<A>(v.d, [&](int64_t i) { return S::load(xs[i]) * S::load(xs[i]); });
    const A rr = A(1) / std::sqrt(ss + eps);
    A* o = y + r * v.d;
    for (int64_t i = 0; i < v.d; ++i) o[i] = S::load(xs[i]) * rr * scale;
  }
}

// dx[b, l, h, :] = scale (r dy - x r^3 sum(dy x)), contiguous [B, L, H, d] in x's dtype.
template <class T, class A = typename St<T>::A>
S0_INLINE void l2_bwd_rows(const typename St<T>::Raw* x, const View4& v, const A* dy, typename St<T>::Raw* dx,
                           A scale, A eps, int64_t r0, int64_t r1) {
  using S = St<T>;
  for (int64_t r = r0; r < r1; ++r) {  // r = (b * L + l) * H + h: input order
    const int64_t h = r % v.H, l = (r / v.H) % v.L, b = r / (v.H * v.L);
    const auto* xs = x + v.at(b, l, h);
    const A* g = dy + ((b * v.H + h) * v.L + l) * v.d;
    const A ss = lane_sum<A>(v.d, [&](int64_t i) { return S::load(xs[i]) * S::load(xs[i]); });
    const A dot = lane_sum<A>(v.d, [&](int64_t i) { return g[i] * S::load(xs[i]); });
    const A rr = A(1) / std::sqrt(ss + eps), k = rr * rr * rr * dot;
    auto* o = dx + r * v.d;
    for (int64_t i = 0; i < v.d; ++i) o[i] = S::store(scale * (rr * g[i] - S::load(xs[i]) * k));
  }
}

Tensor l2_heads_forward(const Tensor& x, double scale, double eps) {
  const View4 v(x);
  Tensor y = at::empty({v.B, v.H, v.L, v.d}, x.options().dtype(acc_type(x)));
  dispatch_dtype(x.scalar_type(), "l2_norm_heads", [&](auto tag) {
    using T = decltype(tag);
    using A = typename St<T>::A;
    const auto* xp = raw<T>(x);
    A* yp = y.data_ptr<A>();
    at::parallel_for(0, v.B * v.H * v.L, row_grain(v.d), [&](int64_t r0, int64_t r1) {
      dispatch<T>([&](auto) __attribute__((always_inline)) {
        l2_fwd_rows<T>(xp, v, yp, static_cast<A>(scale), static_cast<A>(eps), r0, r1);
      });
    });
  });
  return y;
}

struct L2HeadsFn : public torch::autograd::Function<L2HeadsFn> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, double scale, double eps) {
    ctx->save_for_backward({x});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["eps"] = eps;
    return l2_heads_forward(x, scale, eps);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const Tensor x = ctx->get_saved_variables()[0];
    const double scale = ctx->saved_data["scale"].toDouble(), eps = ctx->saved_data["eps"].toDouble();
    const View4 v(x);
    Tensor dy = grads[0].to(acc_type(x)).contiguous();
    Tensor dx = at::empty({v.B, v.L, v.H, v.d}, x.options());
    dispatch_dtype(x.scalar_type(), "l2_norm_heads backward", [&](auto tag) {
      using T = decltype(tag);
      using A = typename St<T>::A;
      const auto* xp = raw<T>(x);
      auto* dxp = raw<T>(dx);
      const A* gp = dy.data_ptr<A>();
      at::parallel_for(0, v.B * v.L * v.H, row_grain(v.d), [&](int64_t r0, int64_t r1) {
        dispatch<T>([&](auto) __attribute__((always_inline)) {
          l2_bwd_rows<T>(xp, v, gp, dxp, static_cast<A>(scale), static_cast<A>(eps), r0, r1);
        });
      });
    });
    return {dx, Tensor(), Tensor()};
  }
};

}  // namespace

// ---- entry point -----------------------------------------------------------------------------

Tensor l2_norm_heads(const Tensor& x, double scale, double eps) {
  TORCH_CHECK(x.dim() == 4, "l2_norm_heads: x must be [B, L, H, d]");
  Tensor xc = x.stride(3) == 1 ? x : x.contiguous();
  if (grad_enabled() && x.requires_grad()) return L2HeadsFn::apply(xc, scale, eps);
  return l2_heads_forward(xc, scale, eps);
}

}  // namespace s0::nn
