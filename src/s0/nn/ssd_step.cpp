#include "s0/nn/ssd_step.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "s0/nn/simd.h"
#include "s0/nn/step_conv.h"
#include "s0/nn/task_claims.h"

namespace s0::nn {

namespace {

using namespace simd;

// Everything one task reads or writes, as raw pointers (row-major, see the header).
template <class T>
struct StepArgs {
  using Raw = typename St<T>::Raw;
  const Raw *in, *norm_w;  // in: [B, W] rows z | x | B | C | dt
  const float *conv_w, *conv_b, *dt_bias, *neg_A, *D;
  std::vector<Raw*> hist;     // per row: [Cd, Kc-1]
  std::vector<float*> state;  // per row: [H, P, N]
  float* bc;                  // [B, G, 2 N] f32: each row's groups' B and C after conv + SiLU
  float* buf;                 // [B, Ds] f32: what the norm reads (norm_w only)
  Raw* out;                   // [B, Ds]
  int64_t H, P, G, N, Ds, Cd, W, Kc;
  bool before_gate;
  float eps, dt_min, dt_max;
};

// Causal conv + SiLU for conv channels [c0, c0 + n) of row r (step_conv.h).
template <class T, class Exp>
S0_INLINE void conv_silu_channels(const StepArgs<T>& p, int64_t r, int64_t c0, int64_t n, float* y, float* e,
                                  Exp exp) {
  const auto* x = p.in + r * p.W + p.Ds;  // the conv channels start after z
  step_conv::conv_silu_channels<T>(p.hist[r], x, p.conv_w, p.conv_b, p.Kc, c0, n, y, e, exp);
}

// The SSD step of one head on its [P, N] f32 state, AVX-512 (N a multiple of 16): each
// state row is loaded once, decayed, given dt x_p B^T, stored, and dotted with C in two
// register accumulators (summed at the end of the row). The same operations per element as
// the portable loop in ssd_task.
__attribute__((target("avx512f"))) inline void ssd_head_avx512(float* st, const float* xdt,
                                                               const float* Bv, const float* Cv,
                                                               float decay, float* y, int64_t P,
                                                               int64_t N) {
  const __m512 dec = _mm512_set1_ps(decay);
  // The state 8 KB ahead is prefetched (past the head's end: the next head's, which the
  // thread's next task reads): the hardware prefetcher alone kept this read-modify-write
  // stream at 0.80-0.90 of the rate with it (bench_kernels --decode-only, 1-64 rows, in
  // one process; GatedDeltaNet's step measured no gain from the same).
  const int64_t ahead = std::max<int64_t>(1, 2048 / N) * N;
  for (int64_t i = 0; i < P; ++i) {
    float* row = st + i * N;
    for (int64_t l = 0; l < N; l += 16) _mm_prefetch(reinterpret_cast<const char*>(row + ahead + l), _MM_HINT_T0);
    const __m512 xi = _mm512_set1_ps(xdt[i]);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t n = 0;
    for (; n + 32 <= N; n += 32) {
      const __m512 s0 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(Bv + n),
                                        _mm512_mul_ps(_mm512_loadu_ps(row + n), dec));
      const __m512 s1 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(Bv + n + 16),
                                        _mm512_mul_ps(_mm512_loadu_ps(row + n + 16), dec));
      _mm512_storeu_ps(row + n, s0);
      _mm512_storeu_ps(row + n + 16, s1);
      acc0 = _mm512_fmadd_ps(s0, _mm512_loadu_ps(Cv + n), acc0);
      acc1 = _mm512_fmadd_ps(s1, _mm512_loadu_ps(Cv + n + 16), acc1);
    }
    if (n < N) {  // one block of 16 left
      const __m512 s0 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(Bv + n),
                                        _mm512_mul_ps(_mm512_loadu_ps(row + n), dec));
      _mm512_storeu_ps(row + n, s0);
      acc0 = _mm512_fmadd_ps(s0, _mm512_loadu_ps(Cv + n), acc0);
    }
    y[i] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  }
}

// softplus with at::softplus's threshold (beta 1, threshold 20), then the clamp (a NaN stays
// NaN, as with at::clamp).
S0_INLINE float softplus_clamped(float v, float lo, float hi) {
  const float sp = v > 20.f ? v : std::log1p(std::exp(v));
  return sp < lo ? lo : (sp > hi ? hi : sp);
}

// Row r, group g, before any head task: conv + SiLU of the group's B and C channels (shared
// by its heads) into p.bc, their history moved on. scratch: N floats.
template <class T, class Exp>
S0_INLINE void bc_task(const StepArgs<T>& p, int64_t r, int64_t g, float* scratch, Exp exp) {
  const int64_t N = p.N, GN = p.G * N;
  float* out = p.bc + (r * p.G + g) * 2 * N;
  conv_silu_channels<T>(p, r, p.Ds + g * N, N, out, scratch, exp);
  conv_silu_channels<T>(p, r, p.Ds + GN + g * N, N, out + N, scratch, exp);
}

// Row r, head h: conv + SiLU of the head's x channels (their history moved on), dt, the
// state update and readout with its group's B and C (bc_task), the D skip and the gate.
// Writes the output (plain gate) or the f32 norm input into p.buf. scratch: 3 P floats.
template <class T, class Exp>
S0_INLINE void ssd_task(const StepArgs<T>& p, int64_t r, int64_t h, float* scratch, Exp exp) {
  using S = St<T>;
  const int64_t P = p.P, N = p.N, GN = p.G * N, g = h / (p.H / p.G);
  float* x = scratch;  // [P]
  float* xdt = x + P;  // [P]
  float* y = xdt + P;  // [P]
  float* e = y + P;    // exp scratch [P]
  const float* Bv = p.bc + (r * p.G + g) * 2 * N;
  const float* Cv = Bv + N;
  conv_silu_channels<T>(p, r, h * P, P, x, e, exp);
  const auto* row_in = p.in + r * p.W;
  // dt in f32 from the model-dtype input; decay = exp(dt A) (ssd_step_'s exp((dt * A))).
  const float dt =
      softplus_clamped(S::load(row_in[2 * p.Ds + 2 * GN + h]) + p.dt_bias[h], p.dt_min, p.dt_max);
  const float decay = std::exp(dt * p.neg_A[h]);
  for (int64_t i = 0; i < P; ++i) xdt[i] = x[i] * dt;
  float* __restrict st = p.state[r] + h * P * N;
  if (has_avx512() && N % 16 == 0) {
    ssd_head_avx512(st, xdt, Bv, Cv, decay, y, P, N);
  } else {
    for (int64_t i = 0; i < P; ++i) {
      float* __restrict srow = st + i * N;
      const float xi = xdt[i];
      y[i] = lane_sum<float>(N, [&](int64_t n) S0_INLINE_LAMBDA {
        const float s = srow[n] * decay + xi * Bv[n];
        srow[n] = s;
        return s * Cv[n];
      });
    }
  }
  // D skip on the post-conv x, then silu(z) in f32 (at::silu of the f32 z).
  const float Dh = p.D[h];
  for (int64_t i = 0; i < P; ++i) y[i] = y[i] + x[i] * Dh;
  const auto* z = row_in + h * P;
  for (int64_t i = 0; i < P; ++i) e[i] = -S::load(z[i]);
  exp(e, e, P);
  const int64_t o = r * p.Ds + h * P;
  if (!p.norm_w) {
    for (int64_t i = 0; i < P; ++i) p.out[o + i] = S::store(y[i] * (S::load(z[i]) / (1.f + e[i])));
  } else if (p.before_gate) {
    for (int64_t i = 0; i < P; ++i) p.buf[o + i] = y[i];
  } else {
    for (int64_t i = 0; i < P; ++i) p.buf[o + i] = y[i] * (S::load(z[i]) / (1.f + e[i]));
  }
}

// Row r, group g, after every head task (norm_w only): the grouped RMSNorm of the group's
// Ds/G values, v * (1/sqrt(mean v^2 + eps)) * w, times silu(z) when the norm comes before the
// gate. scratch: Ds/G floats.
template <class T, class Exp>
S0_INLINE void group_task(const StepArgs<T>& p, int64_t r, int64_t g, float* scratch, Exp exp) {
  using S = St<T>;
  const int64_t n = p.Ds / p.G, o = r * p.Ds + g * n;
  const float* v = p.buf + o;
  const float ms =
      lane_sum<float>(n, [&](int64_t i) { return v[i] * v[i]; }) / static_cast<float>(n);
  const float rr = 1.f / std::sqrt(ms + p.eps);
  const auto* w = p.norm_w + g * n;
  if (!p.before_gate) {
    for (int64_t i = 0; i < n; ++i) p.out[o + i] = S::store(v[i] * rr * S::load(w[i]));
    return;
  }
  const auto* z = p.in + r * p.W + g * n;
  float* e = scratch;
  for (int64_t i = 0; i < n; ++i) e[i] = -S::load(z[i]);
  exp(e, e, n);
  for (int64_t i = 0; i < n; ++i)
    p.out[o + i] = S::store(v[i] * rr * S::load(w[i]) * (S::load(z[i]) / (1.f + e[i])));
}

// B and C once per (row, group) (a few rows' worth inline: a region costs more), then the
// heads, then the norm where there is one.
template <class T>
void run_step(const StepArgs<T>& p, int64_t B) {
  at::parallel_for(0, B * p.G, 4, [&](int64_t t0, int64_t t1) {
    std::vector<float> buf(static_cast<size_t>(p.N + 16));
    for (int64_t t = t0; t < t1; ++t)
      dispatch<T>([&](auto exp) S0_INLINE_LAMBDA { bc_task<T>(p, t / p.G, t % p.G, buf.data(), exp); });
  });
  claim_tasks(B * p.H, [&](auto&& next) {
    std::vector<float> buf(static_cast<size_t>(4 * p.P + 16));
    for (int64_t t; (t = next()) >= 0;)
      dispatch<T>([&](auto exp)
                      S0_INLINE_LAMBDA { ssd_task<T>(p, t / p.H, t % p.H, buf.data(), exp); });
  });
  if (!p.norm_w) return;
  at::parallel_for(0, B * p.G, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> buf(static_cast<size_t>(p.norm_w && p.before_gate ? p.Ds / p.G : 0));
    for (int64_t t = t0; t < t1; ++t)
      dispatch<T>([&](auto exp)
                      S0_INLINE_LAMBDA { group_task<T>(p, t / p.G, t % p.G, buf.data(), exp); });
  });
}

}  // namespace

bool ssd_step_supported(const Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat);
}

Tensor ssd_decode_step(const Tensor& zxbcdt, const SsdStepLayer& l, const SsdStepShape& sh,
                       const std::vector<SsdStepCache>& caches) {
  TORCH_CHECK(ssd_step_supported(zxbcdt), "ssd_decode_step: CPU bf16 or f32 only");
  const auto dt = zxbcdt.scalar_type();
  TORCH_CHECK(sh.H > 0 && sh.P > 0 && sh.G > 0 && sh.N > 0 && sh.H % sh.G == 0,
              "ssd_decode_step: shape");
  const int64_t Ds = sh.H * sh.P, Cd = Ds + 2 * sh.G * sh.N, W = Ds + Cd + sh.H;
  TORCH_CHECK(zxbcdt.dim() == 2 && zxbcdt.size(1) == W,
              "ssd_decode_step: zxbcdt must be [B, 2 H P + 2 G N + H]");
  const int64_t B = zxbcdt.size(0);
  TORCH_CHECK(l.conv_w.dim() == 2 && l.conv_w.size(0) == Cd && l.conv_w.size(1) >= 1,
              "ssd_decode_step: conv weight must be [H P + 2 G N, Kc]");
  const int64_t Kc = l.conv_w.size(1);
  for (const Tensor* t : {&l.conv_w, &l.dt_bias, &l.neg_A, &l.D})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(),
                "ssd_decode_step: f32 parameters");
  TORCH_CHECK(l.dt_bias.numel() == sh.H && l.neg_A.numel() == sh.H && l.D.numel() == sh.H,
              "ssd_decode_step: dt_bias, neg_A and D must be [H]");
  if (l.conv_b.defined())
    TORCH_CHECK(
        l.conv_b.scalar_type() == at::kFloat && l.conv_b.is_contiguous() && l.conv_b.numel() == Cd,
        "ssd_decode_step: conv bias must be [H P + 2 G N] f32");
  if (l.norm_w.defined())
    TORCH_CHECK(l.norm_w.scalar_type() == dt && l.norm_w.numel() == Ds,
                "ssd_decode_step: norm weight must be [H P] in the model dtype");
  Tensor in = zxbcdt.contiguous();
  Tensor norm_w = l.norm_w.defined() ? l.norm_w.contiguous() : Tensor();
  Tensor out = at::empty({B, Ds}, zxbcdt.options());
  // The call's f32 scratch, kept per calling thread (no allocation per step): B and C after
  // the conv [B, G, 2 N], then the norm's input [B, Ds] where there is a norm.
  thread_local std::vector<float> scratch;
  const int64_t bc_n = B * sh.G * 2 * sh.N;
  scratch.resize(static_cast<size_t>(bc_n + (norm_w.defined() ? B * Ds : 0)));
  simd::dispatch_dtype(dt, "ssd_decode_step", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, double>) {
      StepArgs<T> p{simd::raw<T>(in),
                    norm_w.defined() ? simd::raw<T>(norm_w) : nullptr,
                    l.conv_w.data_ptr<float>(),
                    l.conv_b.defined() ? l.conv_b.data_ptr<float>() : nullptr,
                    l.dt_bias.data_ptr<float>(),
                    l.neg_A.data_ptr<float>(),
                    l.D.data_ptr<float>(),
                    {},
                    {},
                    scratch.data(),
                    norm_w.defined() ? scratch.data() + bc_n : nullptr,
                    simd::raw<T>(out),
                    sh.H,
                    sh.P,
                    sh.G,
                    sh.N,
                    Ds,
                    Cd,
                    W,
                    Kc,
                    l.norm_before_gate,
                    static_cast<float>(l.norm_eps),
                    static_cast<float>(l.dt_min),
                    static_cast<float>(l.dt_max)};
      StepRows rows = prepare_step_rows("ssd_decode_step", caches, B, Cd, Kc, {sh.H, sh.P, sh.N}, dt);
      for (void* h : rows.hist) p.hist.push_back(static_cast<typename simd::St<T>::Raw*>(h));
      p.state = std::move(rows.state);
      run_step<T>(p, B);
    } else {
      TORCH_CHECK(false, "ssd_decode_step: f64 is not supported");
    }
  });
  return out;
}

}  // namespace s0::nn
