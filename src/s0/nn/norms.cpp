#include "s0/nn/norms.h"

#include <vector>

#include <torch/csrc/autograd/custom_function.h>

#include "s0/nn/simd.h"

namespace s0::nn {

// ---- the definitions ---------------------------------------------------------------------

namespace {
// Reduced-precision math happens in float32, float64 models stay in float64 (for tests).
at::ScalarType acc(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }
}  // namespace

Tensor rms_norm_1p_reference(const Tensor& x, const Tensor& w, double eps) {
  const auto a = acc(x.scalar_type());
  Tensor x32 = x.to(a);
  Tensor r = at::rsqrt(x32.pow(2).mean(-1, true) + eps);
  return (x32 * r * (w.to(a) + 1.0)).to(x.scalar_type());
}

Tensor rms_norm(const Tensor& x, const Tensor& w, double eps) {
  const auto a = acc(x.scalar_type());
  Tensor x32 = x.to(a);
  return w * (x32 * at::rsqrt(x32.pow(2).mean(-1, true) + eps)).to(x.scalar_type());
}

Tensor gated_rms_norm(const Tensor& o, const Tensor& z, const Tensor& w, double eps,
                      at::ScalarType dtype) {
  const auto a = acc(dtype);
  Tensor o32 = o.to(dtype).to(a);
  Tensor n = (o32 * at::rsqrt(o32.pow(2).mean(-1, true) + eps)).to(dtype);
  Tensor p = n * w;  // model dtype product, w used as is
  return (p.to(a) * at::silu(z.to(a))).to(dtype);
}

Tensor gated_rms_norm_heads_reference(const Tensor& o, const Tensor& z, const Tensor& w, double eps) {
  return gated_rms_norm(o.transpose(1, 2), z, w, eps, z.scalar_type()).flatten(2);
}

// ---- the fused kernels -------------------------------------------------------------------

namespace {

using namespace simd;

// Gated RMSNorm of GatedDeltaNet per (b, l, h) row of V values, the reference's roundings:
// o32 = round(o); n = round(o32 r); p = round(n w); y = round(p silu(z)).
template <class T, class Exp, class A = typename St<T>::A>
S0_INLINE void grms_fwd_rows(const A* o, const typename St<T>::Raw* z, const View4& zv,
                             const typename St<T>::Raw* w, typename St<T>::Raw* y, A eps, int64_t r0, int64_t r1,
                             Exp exp) {
  using S = St<T>;
  const int64_t V = zv.d;
  std::vector<A> e(V);
  for (int64_t r = r0; r < r1; ++r) {  // r = (b * L + l) * H + h
    const int64_t h = r % zv.H, l = (r / zv.H) % zv.L, b = r / (zv.H * zv.L);
    const A* os = o + ((b * zv.H + h) * zv.L + l) * V;
    const auto* zs = z + zv.at(b, l, h);
    const A ss = lane_sum<A>(V, [&](int64_t i) { return S::round(os[i]) * S::round(os[i]); });
    const A rr = A(1) / std::sqrt(ss / V + eps);
    for (int64_t i = 0; i < V; ++i) e[i] = -S::load(zs[i]);
    exp(e.data(), e.data(), V);
    auto* ys = y + r * V;
    for (int64_t i = 0; i < V; ++i) {
      const A p = S::round(S::round(S::round(os[i]) * rr) * S::load(w[i]));
      const A zz = S::load(zs[i]);
      ys[i] = S::store(p * (zz / (A(1) + e[i])));
    }
  }
}

template <class T, class Exp, class A = typename St<T>::A>
S0_INLINE void grms_bwd_rows(const A* o, const typename St<T>::Raw* z, const View4& zv,
                             const typename St<T>::Raw* w, const typename St<T>::Raw* dy, A* dout,
                             typename St<T>::Raw* dz, A eps, int64_t r0, int64_t r1, Exp exp) {
  using S = St<T>;
  const int64_t V = zv.d;
  std::vector<A> e(V), dn(V);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t h = r % zv.H, l = (r / zv.H) % zv.L, b = r / (zv.H * zv.L);
    const int64_t orow = ((b * zv.H + h) * zv.L + l) * V;
    const A* os = o + orow;
    const auto* zs = z + zv.at(b, l, h);
    const auto* g = dy + r * V;
    const A ss = lane_sum<A>(V, [&](int64_t i) { return S::round(os[i]) * S::round(os[i]); });
    const A rr = A(1) / std::sqrt(ss / V + eps);
    for (int64_t i = 0; i < V; ++i) e[i] = -S::load(zs[i]);
    exp(e.data(), e.data(), V);
    auto* dzs = dz + r * V;
    for (int64_t i = 0; i < V; ++i) {
      const A ov = S::round(os[i]), zz = S::load(zs[i]), sg = A(1) / (A(1) + e[i]);
      const A p = S::round(S::round(ov * rr) * S::load(w[i]));
      const A gy = S::load(g[i]);
      dzs[i] = S::store(gy * p * (sg * (A(1) + zz * (A(1) - sg))));
      dn[i] = S::round(S::round(gy * zz * sg) * S::load(w[i]));
    }
    const A dot = lane_sum<A>(V, [&](int64_t i) { return dn[i] * S::round(os[i]); });
    const A k = rr * rr * rr * dot / V;
    A* d = dout + orow;
    for (int64_t i = 0; i < V; ++i) d[i] = S::round(rr * dn[i] - S::round(os[i]) * k);
  }
}

Tensor gated_rms_forward(const Tensor& o, const Tensor& z, const Tensor& w, double eps) {
  const View4 zv(z);
  Tensor y = at::empty({zv.B, zv.L, zv.H * zv.d}, z.options());
  dispatch_dtype(z.scalar_type(), "gated_rms_norm", [&](auto tag) {
    using T = decltype(tag);
    using A = typename St<T>::A;
    const auto *zp = raw<T>(z), *wp = raw<T>(w);
    auto* yp = raw<T>(y);
    const A* op = o.data_ptr<A>();
    at::parallel_for(0, zv.B * zv.L * zv.H, row_grain(zv.d), [&](int64_t r0, int64_t r1) {
      dispatch<T>([&](auto exp) __attribute__((always_inline)) {
        grms_fwd_rows<T>(op, zp, zv, wp, yp, static_cast<A>(eps), r0, r1, exp);
      });
    });
  });
  return y;
}

struct GatedRmsFn : public torch::autograd::Function<GatedRmsFn> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& o, const Tensor& z, const Tensor& w,
                        double eps) {
    ctx->save_for_backward({o, z, w});
    ctx->saved_data["eps"] = eps;
    return gated_rms_forward(o, z, w, eps);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto sv = ctx->get_saved_variables();
    const Tensor &o = sv[0], &z = sv[1], &w = sv[2];
    const double eps = ctx->saved_data["eps"].toDouble();
    const View4 zv(z);
    Tensor dy = grads[0].contiguous();
    Tensor dout = at::empty_like(o), dz = at::empty({zv.B, zv.L, zv.H, zv.d}, z.options());
    dispatch_dtype(z.scalar_type(), "gated_rms_norm backward", [&](auto tag) {
      using T = decltype(tag);
      using A = typename St<T>::A;
      const auto *zp = raw<T>(z), *wp = raw<T>(w), *gp = raw<T>(dy);
      auto* dzp = raw<T>(dz);
      const A* op = o.data_ptr<A>();
      A* dop = dout.data_ptr<A>();
      at::parallel_for(0, zv.B * zv.L * zv.H, row_grain(zv.d), [&](int64_t r0, int64_t r1) {
        dispatch<T>([&](auto exp) __attribute__((always_inline)) {
          grms_bwd_rows<T>(op, zp, zv, wp, gp, dop, dzp, static_cast<A>(eps), r0, r1, exp);
        });
      });
    });
    return {dout, dz, Tensor(), Tensor()};
  }
};

// RMSNorm rows: y_i = round(f(x_i r, w_i)), r = (mean(x^2) + eps)^-1/2, with f the variant's
// weighting in the accumulation type: (1 + w) x r (Qwen3.5), or w round(x r) (plain).
template <class T, class F, class A = typename St<T>::A>
S0_INLINE void rms_rows(const typename St<T>::Raw* x, const typename St<T>::Raw* w, typename St<T>::Raw* y,
                        int64_t D, A eps, int64_t r0, int64_t r1, F f) {
  using S = St<T>;
  for (int64_t r = r0; r < r1; ++r) {
    const auto* xs = x + r * D;
    const A ss = lane_sum<A>(D, [&](int64_t i) { return S::load(xs[i]) * S::load(xs[i]); });
    const A rr = A(1) / std::sqrt(ss / D + eps);
    auto* ys = y + r * D;
    for (int64_t i = 0; i < D; ++i) ys[i] = S::store(f(S::load(xs[i]) * rr, S::load(w[i])));
  }
}

// (1 + w) RMSNorm rows: y = round((x r) (1 + w)).
template <class T, class A = typename St<T>::A>
S0_INLINE void rms1p_fwd_rows(const typename St<T>::Raw* x, const typename St<T>::Raw* w, typename St<T>::Raw* y,
                              int64_t D, A eps, int64_t r0, int64_t r1) {
  rms_rows<T>(x, w, y, D, eps, r0, r1, [](A xr, A wi) { return xr * (wi + A(1)); });
}

// dx = r (1 + w) dy - x r^3 / D sum(x (1 + w) dy).
template <class T, class A = typename St<T>::A>
S0_INLINE void rms1p_bwd_rows(const typename St<T>::Raw* x, const typename St<T>::Raw* w,
                              const typename St<T>::Raw* dy, typename St<T>::Raw* dx, int64_t D, A eps, int64_t r0,
                              int64_t r1) {
  using S = St<T>;
  for (int64_t r = r0; r < r1; ++r) {
    const auto *xs = x + r * D, *g = dy + r * D;
    const A ss = lane_sum<A>(D, [&](int64_t i) { return S::load(xs[i]) * S::load(xs[i]); });
    const A dot = lane_sum<A>(D, [&](int64_t i) { return S::load(xs[i]) * (S::load(w[i]) + A(1)) * S::load(g[i]); });
    const A rr = A(1) / std::sqrt(ss / D + eps), k = rr * rr * rr * dot / D;
    auto* o = dx + r * D;
    for (int64_t i = 0; i < D; ++i) o[i] = S::store(rr * (S::load(w[i]) + A(1)) * S::load(g[i]) - S::load(xs[i]) * k);
  }
}

// Plain RMSNorm rows: y = round(w round(x r)).
template <class T, class A = typename St<T>::A>
S0_INLINE void rms_fwd_rows(const typename St<T>::Raw* x, const typename St<T>::Raw* w, typename St<T>::Raw* y,
                            int64_t D, A eps, int64_t r0, int64_t r1) {
  rms_rows<T>(x, w, y, D, eps, r0, r1, [](A xr, A wi) { return wi * St<T>::round(xr); });
}

// Every row of x [..., D] normalised (x and w contiguous, one dtype), rows in parallel: the
// (1 + w) form of Qwen3.5 (OnePlus) or the plain one.
template <bool OnePlus>
Tensor rms_forward(const Tensor& x, const Tensor& w, double eps, const char* what) {
  Tensor y = at::empty_like(x);
  const int64_t D = x.size(-1), N = D ? x.numel() / D : 0;
  dispatch_dtype(x.scalar_type(), what, [&](auto tag) {
    using T = decltype(tag);
    using A = typename St<T>::A;
    const auto *xp = raw<T>(x), *wp = raw<T>(w);
    auto* yp = raw<T>(y);
    at::parallel_for(0, N, row_grain(D), [&](int64_t r0, int64_t r1) {
      dispatch<T>([&](auto) __attribute__((always_inline)) {
        if constexpr (OnePlus)
          rms1p_fwd_rows<T>(xp, wp, yp, D, static_cast<A>(eps), r0, r1);
        else
          rms_fwd_rows<T>(xp, wp, yp, D, static_cast<A>(eps), r0, r1);
      });
    });
  });
  return y;
}

Tensor rms1p_forward(const Tensor& x, const Tensor& w, double eps) { return rms_forward<true>(x, w, eps, "rms_norm_1p"); }

struct RmsNorm1pFn : public torch::autograd::Function<RmsNorm1pFn> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& w, double eps) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["eps"] = eps;
    return rms1p_forward(x, w, eps);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto sv = ctx->get_saved_variables();
    const Tensor &x = sv[0], &w = sv[1];
    const double eps = ctx->saved_data["eps"].toDouble();
    Tensor dy = grads[0].contiguous(), dx = at::empty_like(x);
    const int64_t D = x.size(-1), N = D ? x.numel() / D : 0;
    dispatch_dtype(x.scalar_type(), "rms_norm_1p backward", [&](auto tag) {
      using T = decltype(tag);
      using A = typename St<T>::A;
      const auto *xp = raw<T>(x), *wp = raw<T>(w), *gp = raw<T>(dy);
      auto* dxp = raw<T>(dx);
      at::parallel_for(0, N, row_grain(D), [&](int64_t r0, int64_t r1) {
        dispatch<T>([&](auto) __attribute__((always_inline)) {
          rms1p_bwd_rows<T>(xp, wp, gp, dxp, D, static_cast<A>(eps), r0, r1);
        });
      });
    });
    return {dx, Tensor(), Tensor()};
  }
};

Tensor rms_norm_1p_fused(const Tensor& x, const Tensor& w, double eps) {
  TORCH_CHECK(x.dim() >= 1 && w.numel() == x.size(-1) && w.scalar_type() == x.scalar_type(),
              "rms_norm_1p: w must be [D] of x's dtype");
  Tensor xc = x.contiguous(), wc = w.contiguous();
  if (grad_enabled() && x.requires_grad()) return RmsNorm1pFn::apply(xc, wc, eps);
  return rms1p_forward(xc, wc, eps);
}

}  // namespace

// ---- entry points ----------------------------------------------------------------------------

Tensor rms_norm_1p(const Tensor& x, const Tensor& w, double eps) {
  if (x.device().is_cpu() && x.scalar_type() == w.scalar_type() && !(grad_enabled() && w.requires_grad()))
    return rms_norm_1p_fused(x, w, eps);
  // The reference ops: a trainable weight (pretraining), another device, mixed dtypes.
  return rms_norm_1p_reference(x, w, eps);
}

Tensor rms_norm_rows(const Tensor& x, const Tensor& w, double eps) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() >= 1 && w.numel() == x.size(-1) && w.scalar_type() == x.scalar_type(),
              "rms_norm_rows: x [..., D] on the CPU and w [D] of x's dtype");
  TORCH_CHECK(!(grad_enabled() && (x.requires_grad() || w.requires_grad())), "rms_norm_rows: inference only");
  return rms_forward<false>(x.contiguous(), w.contiguous(), eps, "rms_norm_rows");
}

Tensor gated_rms_norm_heads(const Tensor& o, const Tensor& z, const Tensor& w, double eps) {
  TORCH_CHECK(o.dim() == 4 && z.dim() == 4 && o.size(0) == z.size(0) && o.size(1) == z.size(2) &&
                  o.size(2) == z.size(1) && o.size(3) == z.size(3) && w.numel() == z.size(3) &&
                  o.scalar_type() == acc_type(z) && w.scalar_type() == z.scalar_type(),
              "gated_rms_norm_heads: o [B, H, L, V] f32 (f64 for f64), z [B, L, H, V] and w [V] of the model dtype");
  if (grad_enabled() && w.requires_grad())  // a trainable weight (pretraining): the reference ops
    return gated_rms_norm_heads_reference(o, z, w, eps);
  Tensor oc = o.contiguous(), zc = z.stride(3) == 1 ? z : z.contiguous(), wc = w.contiguous();
  if (grad_enabled() && (o.requires_grad() || z.requires_grad())) return GatedRmsFn::apply(oc, zc, wc, eps);
  return gated_rms_forward(oc, zc, wc, eps);
}

}  // namespace s0::nn
