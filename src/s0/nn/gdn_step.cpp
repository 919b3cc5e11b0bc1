#include "s0/nn/gdn_step.h"

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
  const Raw *qkv, *z, *b, *a, *norm_w;
  const float *conv_w, *neg_A, *dt_bias;
  std::vector<Raw*> hist;     // per row: [C, Kc-1]
  std::vector<float*> state;  // per row: [Hv, dk, dv]
  Raw* out;                   // [B, Hv dv]
  int64_t C, Kc, Hk, Hv, dk, dv;
  float eps;
};

// Causal conv + SiLU for channels [c0, c0 + n) of row r (step_conv.h; no bias).
template <class T, class Exp>
S0_INLINE void conv_silu_channels(const StepArgs<T>& p, int64_t r, int64_t c0, int64_t n, float* y,
                                  float* e, Exp exp) {
  step_conv::conv_silu_channels<T>(p.hist[r], p.qkv + r * p.C, p.conv_w, nullptr, p.Kc, c0, n, y, e, exp);
}

// q or k of one head: x * scale / sqrt(sum x^2 + eps), eps 1e-6 (l2_norm_heads).
S0_INLINE void l2_normalise(float* x, int64_t d, float scale) {
  const float ss = lane_sum<float>(d, [&](int64_t i) { return x[i] * x[i]; });
  const float rr = 1.f / std::sqrt(ss + 1e-6f);
  for (int64_t i = 0; i < d; ++i) x[i] = x[i] * rr * scale;
}

// The delta-rule step of one head on a [dk, dv] f32 state, columns [c0, c0 + 16 NB) (they
// are independent): pass 1 reads the rows, decays them and accumulates S^T k (storing
// nothing), then delta = beta (v - S^T k), pass 2 decays the rows again (the same product),
// adds k delta^T, stores them and accumulates S^T q into o. One store per element instead
// of two: 1.02-1.10x the step (bench_kernels --decode-only, 1-64 rows, in one process). The
// column sums stay in registers; every element sees the same operations as in the portable
// loops below (FMA).
template <int NB>
__attribute__((target("avx512f"))) inline void recur_cols_avx512(float* st, const float* q,
                                                                 const float* k, const float* v,
                                                                 float beta, float decay, float* o,
                                                                 int64_t dk, int64_t dv,
                                                                 int64_t c0) {
  __m512 acc[NB], del[NB];
  const __m512 dec = _mm512_set1_ps(decay);
  for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_ps();
  for (int64_t i = 0; i < dk; ++i) {
    float* row = st + i * dv + c0;
    const __m512 ki = _mm512_set1_ps(k[i]);
    for (int b = 0; b < NB; ++b) {
      const __m512 s = _mm512_mul_ps(_mm512_loadu_ps(row + 16 * b), dec);
      acc[b] = _mm512_fmadd_ps(ki, s, acc[b]);
    }
  }
  const __m512 bt = _mm512_set1_ps(beta);
  for (int b = 0; b < NB; ++b) {
    del[b] = _mm512_mul_ps(bt, _mm512_sub_ps(_mm512_loadu_ps(v + c0 + 16 * b), acc[b]));
    acc[b] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < dk; ++i) {
    float* row = st + i * dv + c0;
    const __m512 ki = _mm512_set1_ps(k[i]), qi = _mm512_set1_ps(q[i]);
    for (int b = 0; b < NB; ++b) {
      const __m512 s = _mm512_fmadd_ps(ki, del[b], _mm512_mul_ps(_mm512_loadu_ps(row + 16 * b), dec));
      _mm512_storeu_ps(row + 16 * b, s);
      acc[b] = _mm512_fmadd_ps(qi, s, acc[b]);
    }
  }
  for (int b = 0; b < NB; ++b) _mm512_storeu_ps(o + c0 + 16 * b, acc[b]);
}

// The whole head with the AVX-512 column kernels when dv is a multiple of 16; false if not.
inline bool recur_avx512(float* st, const float* q, const float* k, const float* v, float beta,
                         float decay, float* o, int64_t dk, int64_t dv) {
  if (!has_avx512() || dv % 16 != 0) return false;
  for (int64_t c0 = 0; c0 < dv;) {
    const int64_t nb = std::min<int64_t>(8, (dv - c0) / 16);
    switch (nb) {
      case 8:
        recur_cols_avx512<8>(st, q, k, v, beta, decay, o, dk, dv, c0);
        break;
      case 4:
        recur_cols_avx512<4>(st, q, k, v, beta, decay, o, dk, dv, c0);
        break;
      default:
        for (int64_t b = 0; b < nb; ++b)
          recur_cols_avx512<1>(st, q, k, v, beta, decay, o, dk, dv, c0 + 16 * b);
    }
    c0 += 16 * nb;
  }
  return true;
}

// Row r, key head hk and its Hv/Hk value heads. scratch: 2 dk + 3 G dv + max(2 dk, G dv)
// + 2 dv floats.
template <class T, class Exp>
S0_INLINE void gdn_task(const StepArgs<T>& p, int64_t r, int64_t hk, float* scratch, Exp exp) {
  using S = St<T>;
  const int64_t dk = p.dk, dv = p.dv, G = p.Hv / p.Hk, kd = p.Hk * dk;
  float* q = scratch;
  float* k = q + dk;
  float* v = k + dk;       // [G, dv]
  float* ks = v + G * dv;  // S^T k, then delta [dv]
  float* o = ks + dv;      // [dv]
  float* e = o + dv;       // exp scratch, max(2 dk, G dv)
  conv_silu_channels<T>(p, r, hk * dk, dk, q, e, exp);
  conv_silu_channels<T>(p, r, kd + hk * dk, dk, k, e, exp);
  conv_silu_channels<T>(p, r, 2 * kd + hk * G * dv, G * dv, v, e, exp);
  l2_normalise(q, dk, 1.f / std::sqrt(static_cast<float>(dk)));
  l2_normalise(k, dk, 1.f);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t h = hk * G + g;
    // beta = sigmoid(b) rounded to the model dtype; gate = neg_A softplus(a + dt_bias) in
    // f32 (softplus with threshold 20, as at::softplus).
    const float bv = S::load(p.b[r * p.Hv + h]);
    const float beta = S::round(1.f / (1.f + std::exp(-bv)));
    const float av = S::load(p.a[r * p.Hv + h]) + p.dt_bias[h];
    const float sp = av > 20.f ? av : std::log1p(std::exp(av));
    const float decay = std::exp(p.neg_A[h] * sp);
    const float* vh = v + g * dv;
    float* __restrict st = p.state[r] + h * dk * dv;
    float* __restrict oo = o;
    if (!recur_avx512(st, q, k, vh, beta, decay, oo, dk, dv)) {
      // Pass 1: retrieve S^T k from the decayed state. Pass 2: decay it again, write k
      // delta^T, read S^T q.
      float* __restrict kv = ks;
      for (int64_t j = 0; j < dv; ++j) kv[j] = 0;
      for (int64_t i = 0; i < dk; ++i) {
        const float* __restrict row = st + i * dv;
        const float ki = k[i];
        for (int64_t j = 0; j < dv; ++j) {
          const float s = row[j] * decay;
          kv[j] += ki * s;
        }
      }
      for (int64_t j = 0; j < dv; ++j) kv[j] = beta * (vh[j] - kv[j]);
      for (int64_t j = 0; j < dv; ++j) oo[j] = 0;
      for (int64_t i = 0; i < dk; ++i) {
        float* __restrict row = st + i * dv;
        const float ki = k[i], qi = q[i];
        for (int64_t j = 0; j < dv; ++j) {
          const float d = row[j] * decay;
          const float s = d + ki * kv[j];
          row[j] = s;
          oo[j] += qi * s;
        }
      }
    }
    // Gated RMSNorm: o rounded, normalised in f32 and rounded, times w (rounded), times
    // silu(z) in f32, rounded (gated_rms_norm's roundings).
    for (int64_t j = 0; j < dv; ++j) oo[j] = S::round(oo[j]);
    const float ms =
        lane_sum<float>(dv, [&](int64_t j) { return oo[j] * oo[j]; }) / static_cast<float>(dv);
    const float rr = 1.f / std::sqrt(ms + p.eps);
    const auto* zr = p.z + r * p.Hv * dv + h * dv;
    for (int64_t j = 0; j < dv; ++j) e[j] = -S::load(zr[j]);
    exp(e, e, dv);
    auto* out = p.out + r * p.Hv * dv + h * dv;
    for (int64_t j = 0; j < dv; ++j) {
      const float n = S::round(oo[j] * rr);
      const float w = S::round(n * S::load(p.norm_w[j]));
      const float zv = S::load(zr[j]);
      out[j] = S::store(w * (zv / (1.f + e[j])));
    }
  }
}

template <class T>
void run_step(const StepArgs<T>& p, int64_t B) {
  const int64_t G = p.Hv / p.Hk;
  const int64_t scratch = 2 * p.dk + 3 * G * p.dv + std::max(2 * p.dk, G * p.dv) + 2 * p.dv + 64;
  claim_tasks(B * p.Hk, [&](auto&& next) {
    std::vector<float> buf(static_cast<size_t>(scratch));
    for (int64_t t; (t = next()) >= 0;)
      dispatch<T>([&](auto exp) __attribute__((always_inline)) {
        gdn_task<T>(p, t / p.Hk, t % p.Hk, buf.data(), exp);
      });
  });
}

}  // namespace

bool gdn_step_supported(const Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat);
}

Tensor gdn_decode_step(const Tensor& qkv, const Tensor& z, const Tensor& b, const Tensor& a,
                       const Tensor& conv_w, const Tensor& neg_A, const Tensor& dt_bias,
                       const Tensor& norm_w, const GdnStepShape& sh, double norm_eps,
                       const std::vector<GdnStepCache>& caches) {
  TORCH_CHECK(gdn_step_supported(qkv), "gdn_decode_step: CPU bf16 or f32 only");
  const auto dt = qkv.scalar_type();
  const int64_t B = qkv.size(0), C = conv_w.size(0), Kc = conv_w.size(1);
  TORCH_CHECK(sh.Hk > 0 && sh.Hv % sh.Hk == 0 && sh.dk > 0 && sh.dv > 0 && Kc >= 1,
              "gdn_decode_step: shape");
  TORCH_CHECK(qkv.dim() == 2 && C == 2 * sh.Hk * sh.dk + sh.Hv * sh.dv && qkv.size(1) == C,
              "gdn_decode_step: qkv must be [B, 2 Hk dk + Hv dv]");
  TORCH_CHECK(z.dim() == 2 && z.size(0) == B && z.size(1) == sh.Hv * sh.dv && b.dim() == 2 &&
                  b.size(0) == B && b.size(1) == sh.Hv && a.sizes() == b.sizes(),
              "gdn_decode_step: z [B, Hv dv], b and a [B, Hv]");
  for (const Tensor* t : {&z, &b, &a, &norm_w})
    TORCH_CHECK(t->scalar_type() == dt, "gdn_decode_step: dtypes");
  for (const Tensor* t : {&conv_w, &neg_A, &dt_bias})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(),
                "gdn_decode_step: f32 parameters");
  TORCH_CHECK(neg_A.numel() == sh.Hv && dt_bias.numel() == sh.Hv && norm_w.numel() == sh.dv,
              "gdn_decode_step: parameter sizes");
  Tensor qkv_c = qkv.contiguous(), z_c = z.contiguous(), b_c = b.contiguous(), a_c = a.contiguous(),
         w_c = norm_w.contiguous();
  Tensor out = at::empty({B, sh.Hv * sh.dv}, qkv.options());
  simd::dispatch_dtype(dt, "gdn_decode_step", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, double>) {
      using Raw = typename simd::St<T>::Raw;
      StepArgs<T> p{simd::raw<T>(qkv_c),
                    simd::raw<T>(z_c),
                    simd::raw<T>(b_c),
                    simd::raw<T>(a_c),
                    simd::raw<T>(w_c),
                    conv_w.data_ptr<float>(),
                    neg_A.data_ptr<float>(),
                    dt_bias.data_ptr<float>(),
                    {},
                    {},
                    simd::raw<T>(out),
                    C,
                    Kc,
                    sh.Hk,
                    sh.Hv,
                    sh.dk,
                    sh.dv,
                    static_cast<float>(norm_eps)};
      StepRows rows = prepare_step_rows("gdn_decode_step", caches, B, C, Kc, {sh.Hv, sh.dk, sh.dv}, dt);
      for (void* h : rows.hist) p.hist.push_back(static_cast<Raw*>(h));
      p.state = std::move(rows.state);
      (void)sizeof(Raw);
      run_step<T>(p, B);
    } else {
      TORCH_CHECK(false, "gdn_decode_step: f64 is not supported");
    }
  });
  return out;
}

}  // namespace s0::nn
