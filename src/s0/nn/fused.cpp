#include "s0/nn/fused.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <torch/csrc/autograd/custom_function.h>

#include "s0/nn/layers.h"
#include "s0/nn/linear.h"

// GCC 12's AVX-512 intrinsic headers trip these (known false positives).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"  // __m512 values passed between AVX-512 functions only
#include <immintrin.h>

namespace s0::nn {

namespace {

#define S0_INLINE inline __attribute__((always_inline))
#define S0_INLINE_LAMBDA __attribute__((always_inline))

bool has_avx512() {
  static const bool v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512bw");
  return v;
}

// ---- storage types: raw element type in memory, math type, conversions ------------------

S0_INLINE float bf16_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

S0_INLINE uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : r);
}

template <class T>
struct St;
template <>
struct St<at::BFloat16> {
  using Raw = uint16_t;
  using A = float;
  static S0_INLINE float load(uint16_t v) { return bf16_to_f32(v); }
  static S0_INLINE uint16_t store(float v) { return f32_to_bf16(v); }
  static S0_INLINE float round(float v) { return bf16_to_f32(f32_to_bf16(v)); }
};
template <>
struct St<float> {
  using Raw = float;
  using A = float;
  static S0_INLINE float load(float v) { return v; }
  static S0_INLINE float store(float v) { return v; }
  static S0_INLINE float round(float v) { return v; }
};
template <>
struct St<double> {
  using Raw = double;
  using A = double;
  static S0_INLINE double load(double v) { return v; }
  static S0_INLINE double store(double v) { return v; }
  static S0_INLINE double round(double v) { return v; }
};

template <class T>
typename St<T>::Raw* raw(const Tensor& t) {
  return reinterpret_cast<typename St<T>::Raw*>(t.data_ptr<T>());
}

// ---- exp over arrays: AVX-512 (range reduction to [-ln2/2, ln2/2], degree-6 Taylor
// polynomial, 2^n by scalef; ~1 ulp) or libm -------------------------------------------

__attribute__((target("avx512f,avx512dq"))) inline __m512 exp16(__m512 v) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), ln2_hi = _mm512_set1_ps(0.693359375f),
               ln2_lo = _mm512_set1_ps(-2.12194440e-4f), one = _mm512_set1_ps(1.f);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __m512 x = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-104.f)), _mm512_set1_ps(89.f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, ln2_hi, x);
  r = _mm512_fnmadd_ps(k, ln2_lo, r);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.f / 720), r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, one);
  p = _mm512_fmadd_ps(p, r, one);
  return _mm512_mask_mov_ps(_mm512_scalef_ps(p, k), nan, v);  // NaN in, NaN out
}

__attribute__((target("avx512f,avx512dq"))) void exp_avx512(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

void exp_libm(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}
void exp_libm(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}
struct ExpVec {
  void operator()(const float* x, float* y, int64_t n) const { exp_avx512(x, y, n); }
};
struct ExpLibm {
  template <class A>
  void operator()(const A* x, A* y, int64_t n) const { exp_libm(x, y, n); }
};

// Runs body(ExpVec) in an AVX-512 compiled function when the CPU has it and the math is
// f32, else body(ExpLibm). The bodies are always_inline templates, so the plain loops in
// them are vectorised for the instruction set of the function they are inlined into.
template <class F>
__attribute__((target("avx512f,avx512dq,avx512bw"))) void run_avx512(const F& body) {
  body(ExpVec{});
}
template <class F>
void run_portable(const F& body) {
  body(ExpLibm{});
}
template <class T, class F>
void dispatch(const F& body) {
  if constexpr (std::is_same_v<typename St<T>::A, float>) {
    if (has_avx512()) return run_avx512(body);
  }
  run_portable(body);
}

template <class F>
void dispatch_dtype(at::ScalarType t, const char* what, const F& f) {
  switch (t) {
    case at::kBFloat16: return f(at::BFloat16{});
    case at::kFloat: return f(float{});
    case at::kDouble: return f(double{});
    default: TORCH_CHECK(false, what, ": dtype must be bf16, f32 or f64");
  }
}

// Rows [r0, r1) in blocks of at most this many elements (keeps the scratch in L1/L2).
constexpr int64_t kBlock = 2048;

// sum_i f(i) over [0, n) in 16 fixed lanes (lane i % 16, lanes added in order at the end):
// the compiler vectorises it without reassociating anything (a plain `s += f(i)` loop
// stays scalar), and the result depends only on n and the values, never on where the row
// sits in memory (batched decode relies on that).
template <class A, class F>
S0_INLINE A lane_sum(int64_t n, F f) {
  A acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += f(i + j);
  for (int j = 0; i + j < n; ++j) acc[j] += f(i + j);
  A s = 0;
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

template <class A, class F>
S0_INLINE A lane_max(int64_t n, F f) {
  A acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = -std::numeric_limits<A>::infinity();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) {
      const A v = f(i + j);
      acc[j] = v > acc[j] ? v : acc[j];
    }
  for (int j = 0; i + j < n; ++j) acc[j] = std::max(acc[j], f(i + j));
  A m = acc[0];
  for (int j = 1; j < 16; ++j) m = std::max(m, acc[j]);
  return m;
}

// ---- conv + SiLU ---------------------------------------------------------------------

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

int64_t row_grain(int64_t C) { return std::max<int64_t>(1, kBlock / std::max<int64_t>(C, 1)); }

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

// ---- silu(g) * u -----------------------------------------------------------------------

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

// ---- cross-entropy rows ------------------------------------------------------------------

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


// ---- norms ---------------------------------------------------------------------------------

at::ScalarType acc_type(const Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Strided [B, L, H, d] view with a contiguous last dim (a head-split slice of a projection).
struct View4 {
  int64_t B, L, H, d, sb, sl, sh;
  explicit View4(const Tensor& t)
      : B(t.size(0)), L(t.size(1)), H(t.size(2)), d(t.size(3)), sb(t.stride(0)), sl(t.stride(1)), sh(t.stride(2)) {
    TORCH_CHECK(t.stride(3) == 1, "fused norm: the last dim must be contiguous");
  }
  int64_t at(int64_t b, int64_t l, int64_t h) const { return b * sb + l * sl + h * sh; }
};

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


// (1 + w) RMSNorm rows: y = round((x r) (1 + w)), r = (mean(x^2) + eps)^-1/2.
template <class T, class A = typename St<T>::A>
S0_INLINE void rms1p_fwd_rows(const typename St<T>::Raw* x, const typename St<T>::Raw* w, typename St<T>::Raw* y,
                              int64_t D, A eps, int64_t r0, int64_t r1) {
  using S = St<T>;
  for (int64_t r = r0; r < r1; ++r) {
    const auto* xs = x + r * D;
    const A ss = lane_sum<A>(D, [&](int64_t i) { return S::load(xs[i]) * S::load(xs[i]); });
    const A rr = A(1) / std::sqrt(ss / D + eps);
    auto* ys = y + r * D;
    for (int64_t i = 0; i < D; ++i) ys[i] = S::store(S::load(xs[i]) * rr * (S::load(w[i]) + A(1)));
  }
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

Tensor rms1p_forward(const Tensor& x, const Tensor& w, double eps) {
  Tensor y = at::empty_like(x);
  const int64_t D = x.size(-1), N = D ? x.numel() / D : 0;
  dispatch_dtype(x.scalar_type(), "rms_norm_1p", [&](auto tag) {
    using T = decltype(tag);
    using A = typename St<T>::A;
    const auto *xp = raw<T>(x), *wp = raw<T>(w);
    auto* yp = raw<T>(y);
    at::parallel_for(0, N, row_grain(D), [&](int64_t r0, int64_t r1) {
      dispatch<T>([&](auto) __attribute__((always_inline)) {
        rms1p_fwd_rows<T>(xp, wp, yp, D, static_cast<A>(eps), r0, r1);
      });
    });
  });
  return y;
}

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
}  // namespace

Tensor rms_norm_1p_fused(const Tensor& x, const Tensor& w, double eps) {
  TORCH_CHECK(x.dim() >= 1 && w.numel() == x.size(-1) && w.scalar_type() == x.scalar_type(),
              "rms_norm_1p: w must be [D] of x's dtype");
  Tensor xc = x.contiguous(), wc = w.contiguous();
  if (grad_enabled() && x.requires_grad()) return RmsNorm1pFn::apply(xc, wc, eps);
  return rms1p_forward(xc, wc, eps);
}

Tensor l2_norm_heads(const Tensor& x, double scale, double eps) {
  TORCH_CHECK(x.dim() == 4, "l2_norm_heads: x must be [B, L, H, d]");
  Tensor xc = x.stride(3) == 1 ? x : x.contiguous();
  if (grad_enabled() && x.requires_grad()) return L2HeadsFn::apply(xc, scale, eps);
  return l2_heads_forward(xc, scale, eps);
}

Tensor gated_rms_norm_heads(const Tensor& o, const Tensor& z, const Tensor& w, double eps) {
  TORCH_CHECK(o.dim() == 4 && z.dim() == 4 && o.size(0) == z.size(0) && o.size(1) == z.size(2) &&
                  o.size(2) == z.size(1) && o.size(3) == z.size(3) && w.numel() == z.size(3) &&
                  o.scalar_type() == acc_type(z) && w.scalar_type() == z.scalar_type(),
              "gated_rms_norm_heads: o [B, H, L, V] f32 (f64 for f64), z [B, L, H, V] and w [V] of the model dtype");
  if (grad_enabled() && w.requires_grad())  // a trainable weight (pretraining): the reference ops
    return gated_rms_norm(o.transpose(1, 2), z, w, eps, z.scalar_type()).flatten(2);
  Tensor oc = o.contiguous(), zc = z.stride(3) == 1 ? z : z.contiguous(), wc = w.contiguous();
  if (grad_enabled() && (o.requires_grad() || z.requires_grad())) return GatedRmsFn::apply(oc, zc, wc, eps);
  return gated_rms_forward(oc, zc, wc, eps);
}

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

Tensor silu_mul(const Tensor& g, const Tensor& u) {
  TORCH_CHECK(g.sizes() == u.sizes() && g.scalar_type() == u.scalar_type(), "silu_mul: g and u must match");
  if (grad_enabled() && (g.requires_grad() || u.requires_grad()))
    return SiluMulFn::apply(g.contiguous(), u.contiguous());
  return silu_mul_forward(g.contiguous(), u.contiguous());
}

RowsCrossEntropy cross_entropy_rows(const Tensor& h, const Tensor& w, const Tensor& labels, double scale,
                                    int64_t chunk, double logit_multiplier) {
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
