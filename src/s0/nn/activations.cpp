#include "s0/nn/activations.h"

#include <torch/csrc/autograd/custom_function.h>

#include "s0/nn/simd.h"

namespace s0::nn {

// ---- the definition ----------------------------------------------------------------------

Tensor silu(const Tensor& x) {
  // libtorch 1.13's bf16 SiLU is not vectorised; compute in fp32 and round once, which is
  // what the bf16 kernel computes too.
  if (x.scalar_type() == at::kBFloat16) return at::silu(x.to(at::kFloat)).to(at::kBFloat16);
  return at::silu(x);
}

Tensor silu_mul_reference(const Tensor& g, const Tensor& u) { return nn::silu(g) * u; }

// ---- the fused kernel ----------------------------------------------------------------------

namespace {

using namespace simd;

// For elements [i0, i1) in blocks: e = exp(-g) for the block, then body(index, g, e).
template <class T, class Exp, class Body>
S0_INLINE void with_exp_neg(const typename St<T>::Raw* g, int64_t i0, int64_t i1, Exp exp, Body body) {
  using S = St<T>;
  using A = typename S::A;
  A e[kBlock];
  for (int64_t s = i0; s < i1; s += kBlock) {
    const int64_t n = std::min(kBlock, i1 - s);
    for (int64_t i = 0; i < n; ++i) e[i] = -S::load(g[s + i]);
    exp(e, e, n);
    for (int64_t i = 0; i < n; ++i) body(s + i, S::load(g[s + i]), e[i]);
  }
}

template <class T, class Exp>
S0_INLINE void silu_mul_fwd(const typename St<T>::Raw* g, const typename St<T>::Raw* u, typename St<T>::Raw* out,
                            int64_t i0, int64_t i1, Exp exp) {
  using S = St<T>;
  using A = typename S::A;
  with_exp_neg<T>(g, i0, i1, exp, [&](int64_t i, A gv, A e) S0_INLINE_LAMBDA {
    out[i] = S::store(S::round(gv / (A(1) + e)) * S::load(u[i]));
  });
}

// dg = round(round(da u) silu'(g)), du = round(da round(silu(g))): the reference's rounding.
template <class T, class Exp>
S0_INLINE void silu_mul_bwd(const typename St<T>::Raw* da, const typename St<T>::Raw* g,
                            const typename St<T>::Raw* u, typename St<T>::Raw* dg, typename St<T>::Raw* du,
                            int64_t i0, int64_t i1, Exp exp) {
  using S = St<T>;
  using A = typename S::A;
  with_exp_neg<T>(g, i0, i1, exp, [&](int64_t i, A gv, A e) S0_INLINE_LAMBDA {
    const A d = S::load(da[i]), sg = A(1) / (A(1) + e);
    du[i] = S::store(d * S::round(gv * sg));
    dg[i] = S::store(S::round(d * S::load(u[i])) * (sg * (A(1) + gv * (A(1) - sg))));
  });
}

Tensor silu_mul_forward(const Tensor& g, const Tensor& u) {
  Tensor out = at::empty_like(g);
  dispatch_dtype(g.scalar_type(), "silu_mul", [&](auto tag) {
    using T = decltype(tag);
    const auto *gp = raw<T>(g), *up = raw<T>(u);
    auto* op = raw<T>(out);
    at::parallel_for(0, g.numel(), kBlock, [&](int64_t i0, int64_t i1) {
      dispatch<T>([&](auto exp) __attribute__((always_inline)) { silu_mul_fwd<T>(gp, up, op, i0, i1, exp); });
    });
  });
  return out;
}

struct SiluMulFn : public torch::autograd::Function<SiluMulFn> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& g, const Tensor& u) {
    ctx->save_for_backward({g, u});
    return silu_mul_forward(g, u);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &g = saved[0], &u = saved[1];
    Tensor da = grads[0].contiguous(), dg = at::empty_like(g), du = at::empty_like(u);
    dispatch_dtype(g.scalar_type(), "silu_mul backward", [&](auto tag) {
      using T = decltype(tag);
      const auto *dap = raw<T>(da), *gp = raw<T>(g), *up = raw<T>(u);
      auto *dgp = raw<T>(dg), *dup = raw<T>(du);
      at::parallel_for(0, g.numel(), kBlock, [&](int64_t i0, int64_t i1) {
        dispatch<T>([&](auto exp) __attribute__((always_inline)) { silu_mul_bwd<T>(dap, gp, up, dgp, dup, i0, i1, exp); });
      });
    });
    return {dg, du};
  }
};

}  // namespace

// ---- entry point -----------------------------------------------------------------------------

Tensor scale(const Tensor& x_in, double s) {
  TORCH_CHECK(!grad_enabled() || !x_in.requires_grad(), "nn::scale: no autograd (decode only)");
  TORCH_CHECK(x_in.device().is_cpu(), "nn::scale: CPU tensors");
  const Tensor x = x_in.contiguous();
  Tensor out = at::empty_like(x);
  dispatch_dtype(x.scalar_type(), "nn::scale", [&](auto tag) {
    using T = decltype(tag);
    using S = St<T>;
    using A = typename S::A;
    const auto* xp = raw<T>(x);
    auto* op = raw<T>(out);
    // ATen casts the scalar to the tensor's dtype first (a bf16 tensor times 0.3 multiplies
    // by bf16(0.3) = 0.30078125).
    const A m = S::round(static_cast<A>(s));
    at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) op[i] = S::store(S::load(xp[i]) * m);
    });
  });
  return out;
}

Tensor mul_last(const Tensor& x_in, const Tensor& v_in) {
  TORCH_CHECK(!grad_enabled() || (!x_in.requires_grad() && !v_in.requires_grad()),
              "nn::mul_last: no autograd (decode only)");
  TORCH_CHECK(x_in.device().is_cpu() && v_in.device().is_cpu() && v_in.dim() == 1 && x_in.dim() >= 1 &&
                  x_in.size(-1) == v_in.size(0) && x_in.scalar_type() == v_in.scalar_type(),
              "nn::mul_last: x [..., D] and v [D] of one dtype on the CPU");
  const Tensor x = x_in.contiguous(), v = v_in.contiguous();
  Tensor out = at::empty_like(x);
  const int64_t D = v.numel(), rows = D == 0 ? 0 : x.numel() / D;
  dispatch_dtype(x.scalar_type(), "nn::mul_last", [&](auto tag) {
    using T = decltype(tag);
    using S = St<T>;
    const auto *xp = raw<T>(x), *vp = raw<T>(v);
    auto* op = raw<T>(out);
    at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t i = 0; i < D; ++i) op[r * D + i] = S::store(S::load(xp[r * D + i]) * S::load(vp[i]));
    });
  });
  return out;
}

Tensor silu_mul(const Tensor& g, const Tensor& u) {
  TORCH_CHECK(g.sizes() == u.sizes() && g.scalar_type() == u.scalar_type(), "silu_mul: g and u must match");
  if (grad_enabled() && (g.requires_grad() || u.requires_grad()))
    return SiluMulFn::apply(g.contiguous(), u.contiguous());
  return silu_mul_forward(g.contiguous(), u.contiguous());
}

}  // namespace s0::nn
