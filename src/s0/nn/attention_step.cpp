#include "s0/nn/attention_step.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "s0/nn/simd.h"
#include "s0/nn/task_claims.h"

namespace s0::nn {

namespace {

using namespace simd;

std::atomic<bool> g_vector_scores{true};

template <class T>
struct AttnArgs {
  using Raw = typename St<T>::Raw;
  const Raw *q, *k, *v;
  View4 qv, kv, vv;
  const float* inv_freq;
  int64_t R;  // rotary dims
  float scale;
  std::vector<Raw*> kc, vc;       // per row: [KV, cap, hd]
  std::vector<int64_t> cap, pos;  // per row: capacity, position of the new token
  Raw* out;                       // [B, H hd]
  int64_t H, KV, hd;
};

// Partial NeoX RoPE of one head x (raw, hd values) at `pos` into y (f32 holding rounded
// values): y_i = round(round(x_i cos_i) + round(rot_i sin_i)) on the first R dims, where
// cos/sin are rounded to the dtype and rot = [-x2, x1]; the rest copied.
template <class T>
S0_INLINE void rope_head(const typename St<T>::Raw* x, float* y, const float* cs, const float* sn,
                         int64_t R, int64_t hd) {
  using S = St<T>;
  const int64_t half = R / 2;
  for (int64_t i = 0; i < R; ++i) {
    const float rot = i < half ? -S::load(x[i + half]) : S::load(x[i - half]);
    const float a = S::round(S::load(x[i]) * cs[i]);
    const float b = S::round(rot * sn[i]);
    y[i] = S::round(a + b);
  }
  for (int64_t i = R; i < hd; ++i) y[i] = S::load(x[i]);
}

// The raw dot products of G query heads (qr [G, hd], f32) with the cached keys at positions
// [0, T1) (row stride hd, model dtype), for hd a multiple of 16: d[g * T1 + t]. Lane j
// accumulates q[i + j] k[i + j] over the 16-wide chunks in order with a fused multiply-add,
// then the 16 lanes are added in order to 0 (attention_key_dots' reference defines it; the
// portable loop below computes the same where the compiler fuses its multiply-adds, GCC at
// -O2 and above), 16 positions at a time: their lane accumulators are transposed so that the
// in-order lane sums run across the 16 positions at once.
template <class Raw>
__attribute__((target("avx512f,avx512dq,avx512bw"))) void key_dots_avx512(const Raw* kbase, int64_t T1, int64_t hd,
                                                                            const float* qr, int64_t G, float* d,
                                                                            float* acc) {
  const int64_t C = hd / 16;
  for (int64_t t0 = 0; t0 < T1; t0 += 16) {
    const int64_t nt = std::min<int64_t>(16, T1 - t0);
    for (int64_t tt = 0; tt < nt; ++tt) {
      const Raw* kt = kbase + (t0 + tt) * hd;
      for (int64_t g = 0; g < G; ++g) {
        const float* qg = qr + g * hd;
        __m512 a = _mm512_setzero_ps();
        for (int64_t c = 0; c < C; ++c) {
          __m512 kv;
          if constexpr (sizeof(Raw) == 2)
            kv = _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kt + 16 * c))), 16));
          else
            kv = _mm512_loadu_ps(reinterpret_cast<const float*>(kt) + 16 * c);
          a = _mm512_fmadd_ps(_mm512_loadu_ps(qg + 16 * c), kv, a);
        }
        _mm512_storeu_ps(acc + (g * 16 + tt) * 16, a);
      }
    }
    for (int64_t g = 0; g < G; ++g) {
      __m512 r[16];
      for (int64_t tt = 0; tt < 16; ++tt) r[tt] = tt < nt ? _mm512_loadu_ps(acc + (g * 16 + tt) * 16) : _mm512_setzero_ps();
      transpose16(r);
      __m512 sum = _mm512_add_ps(_mm512_setzero_ps(), r[0]);
      for (int j = 1; j < 16; ++j) sum = _mm512_add_ps(sum, r[j]);
      _mm512_mask_storeu_ps(d + g * T1 + t0, static_cast<__mmask16>(nt == 16 ? 0xFFFF : (1u << nt) - 1), sum);
    }
  }
}

// Row r, KV head j and its G = H / KV query heads. Each cached key and value row is read
// (and widened to f32) once for the G heads, which run side by side.
template <class T, class Exp>
S0_INLINE void attn_task(const AttnArgs<T>& p, int64_t r, int64_t j, float* scratch, Exp exp) {
  using S = St<T>;
  using Raw = typename St<T>::Raw;
  const int64_t hd = p.hd, R = p.R, G = p.H / p.KV, pos = p.pos[r], T1 = pos + 1;
  float* cs = scratch;      // [R] cos, rounded
  float* sn = cs + R;       // [R] sin, rounded
  float* kr = sn + R;       // [hd] the new key, rotated; then each cached row widened
  float* qr = kr + hd;      // [G, hd]
  float* ctx = qr + G * hd; // [G, hd]
  float* s = ctx + G * hd;  // [G, T1] scores, then probabilities
  for (int64_t i = 0; i < R; ++i) {
    const float ang = static_cast<float>(pos) * p.inv_freq[i % (R / 2)];
    cs[i] = S::round(std::cos(ang));
    sn[i] = S::round(std::sin(ang));
  }
  // The new key (rotated) and value go to position `pos` of this row's cache.
  Raw* kbase = p.kc[r] + j * p.cap[r] * hd;
  Raw* vbase = p.vc[r] + j * p.cap[r] * hd;
  rope_head<T>(p.k + p.kv.at(r, 0, j), kr, cs, sn, R, hd);
  for (int64_t i = 0; i < hd; ++i) kbase[pos * hd + i] = S::store(kr[i]);
  const Raw* vx = p.v + p.vv.at(r, 0, j);
  for (int64_t i = 0; i < hd; ++i) vbase[pos * hd + i] = vx[i];
  for (int64_t g = 0; g < G; ++g) rope_head<T>(p.q + p.qv.at(r, 0, j * G + g), qr + g * hd, cs, sn, R, hd);
  // Scores rounded to the dtype, then scaled and rounded (matmul, then * scale).
  if (hd % 16 == 0 && has_avx512() && g_vector_scores.load(std::memory_order_relaxed)) {
    float* acc = s + G * T1;  // [G, 16, 16] lane accumulators
    key_dots_avx512<Raw>(kbase, T1, hd, qr, G, s, acc);
    for (int64_t i = 0; i < G * T1; ++i) s[i] = S::round(S::round(s[i]) * p.scale);
  } else {
    for (int64_t t = 0; t < T1; ++t) {
      const Raw* kt = kbase + t * hd;
      for (int64_t i = 0; i < hd; ++i) kr[i] = S::load(kt[i]);
      for (int64_t g = 0; g < G; ++g) {
        const float* qg = qr + g * hd;
        const float d = lane_sum<float>(hd, [&](int64_t i) { return qg[i] * kr[i]; });
        s[g * T1 + t] = S::round(S::round(d) * p.scale);
      }
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    float* sg = s + g * T1;
    const float m = lane_max<float>(T1, [&](int64_t t) { return sg[t]; });
    for (int64_t t = 0; t < T1; ++t) sg[t] -= m;
    exp(sg, sg, T1);
    const float z = lane_sum<float>(T1, [&](int64_t t) { return sg[t]; });
    for (int64_t t = 0; t < T1; ++t) sg[t] = S::round(sg[t] / z);
  }
  for (int64_t i = 0; i < G * hd; ++i) ctx[i] = 0;
  for (int64_t t = 0; t < T1; ++t) {
    const Raw* vt = vbase + t * hd;
    for (int64_t i = 0; i < hd; ++i) kr[i] = S::load(vt[i]);
    for (int64_t g = 0; g < G; ++g) {
      const float pt = s[g * T1 + t];
      float* __restrict cg = ctx + g * hd;
      const float* __restrict vw = kr;
      for (int64_t i = 0; i < hd; ++i) cg[i] += pt * vw[i];
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    Raw* o = p.out + r * p.H * hd + (j * G + g) * hd;
    for (int64_t i = 0; i < hd; ++i) o[i] = S::store(ctx[g * hd + i]);
  }
}

// Grows a cache buffer pair to hold `need` positions (kv_append's geometric growth).
void ensure_capacity(Tensor& kb, Tensor& vb, int64_t rows, int64_t KV, int64_t hd, int64_t past,
                     int64_t need, const at::TensorOptions& opt) {
  const bool ok = kb.defined() && vb.defined() && kb.size(2) >= need && vb.size(2) == kb.size(2) &&
                  kb.is_contiguous() && vb.is_contiguous();
  if (ok) return;
  const int64_t cap = std::max<int64_t>({need, 64, kb.defined() ? 2 * kb.size(2) : 0});
  Tensor nk = at::empty({rows, KV, cap, hd}, opt), nv = at::empty({rows, KV, cap, hd}, opt);
  if (past > 0) {
    nk.narrow(2, 0, past).copy_(kb.narrow(2, 0, past));
    nv.narrow(2, 0, past).copy_(vb.narrow(2, 0, past));
  }
  kb = nk, vb = nv;
}

}  // namespace

void attention_step_vector_scores(bool on) { g_vector_scores.store(on); }

bool attention_key_dots(const void* k, bool bf16, int64_t T1, int64_t hd, const float* q, int64_t G, float* d,
                        bool reference) {
  TORCH_CHECK(hd % 16 == 0 && T1 >= 0 && G > 0, "attention_key_dots: hd % 16 == 0");
  if (!reference) {
    if (!has_avx512()) return false;
    std::vector<float> acc(static_cast<size_t>(G * 256));
    if (bf16)
      key_dots_avx512<uint16_t>(static_cast<const uint16_t*>(k), T1, hd, q, G, d, acc.data());
    else
      key_dots_avx512<float>(static_cast<const float*>(k), T1, hd, q, G, d, acc.data());
    return true;
  }
  for (int64_t g = 0; g < G; ++g)
    for (int64_t t = 0; t < T1; ++t) {
      float lane[16] = {};
      for (int64_t i = 0; i < hd; ++i) {
        const float kv = bf16 ? bf16_to_f32(static_cast<const uint16_t*>(k)[t * hd + i])
                              : static_cast<const float*>(k)[t * hd + i];
        lane[i % 16] = std::fma(q[g * hd + i], kv, lane[i % 16]);
      }
      float sum = 0;
      for (int j = 0; j < 16; ++j) sum += lane[j];
      d[g * T1 + t] = sum;
    }
  return true;
}

bool attention_step_supported(const Tensor& q) {
  return q.device().is_cpu() && (q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kFloat);
}

Tensor attention_decode_step(const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& inv_freq, double scale,
                             const std::vector<KvStepCache>& caches) {
  TORCH_CHECK(attention_step_supported(q), "attention_decode_step: CPU bf16 or f32 only");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && q.size(1) == 1 &&
                  k.size(1) == 1 && k.size(0) == q.size(0) && k.size(3) == q.size(3) &&
                  q.size(2) % k.size(2) == 0,
              "attention_decode_step: q [B, 1, H, hd], k and v [B, 1, KV, hd]");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "attention_decode_step: dtypes");
  TORCH_CHECK(inv_freq.scalar_type() == at::kFloat && inv_freq.is_contiguous() &&
                  2 * inv_freq.numel() <= q.size(3),
              "attention_decode_step: inv_freq");
  const int64_t B = q.size(0), H = q.size(2), KV = k.size(2), hd = q.size(3),
                R = 2 * inv_freq.numel();
  Tensor out = at::empty({B, 1, H * hd}, q.options());
  dispatch_dtype(q.scalar_type(), "attention_decode_step", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, double>) {
      AttnArgs<T> p{raw<T>(q),
                    raw<T>(k),
                    raw<T>(v),
                    View4(q),
                    View4(k),
                    View4(v),
                    inv_freq.data_ptr<float>(),
                    R,
                    static_cast<float>(scale),
                    {},
                    {},
                    {},
                    {},
                    raw<T>(out),
                    H,
                    KV,
                    hd};
      int64_t rows = 0, max_t = 0;
      for (const KvStepCache& c : caches) {
        TORCH_CHECK(c.k && c.v && c.rows > 0 && c.past >= 0, "attention_decode_step: cache");
        ensure_capacity(*c.k, *c.v, c.rows, KV, hd, c.past, c.past + 1, q.options());
        TORCH_CHECK(c.k->size(0) == c.rows && c.k->size(1) == KV && c.k->size(3) == hd &&
                        c.k->scalar_type() == q.scalar_type(),
                    "attention_decode_step: KV cache [rows, KV, capacity, hd] in the model dtype");
        const int64_t cap = c.k->size(2);
        for (int64_t i = 0; i < c.rows; ++i) {
          p.kc.push_back(raw<T>(*c.k) + i * KV * cap * hd);
          p.vc.push_back(raw<T>(*c.v) + i * KV * cap * hd);
          p.cap.push_back(cap);
          p.pos.push_back(c.past);
        }
        rows += c.rows;
        max_t = std::max(max_t, c.past + 1);
      }
      TORCH_CHECK(rows == B, "attention_decode_step: the caches hold ", rows, " rows for ", B,
                  " inputs");
      const int64_t G = H / KV, scratch = 2 * R + hd + 2 * G * hd + G * max_t + G * 256 + 16;
      claim_tasks(B * KV, [&](auto&& next) {
        std::vector<float> buf(static_cast<size_t>(scratch));
        for (int64_t t; (t = next()) >= 0;)
          dispatch<T>([&](auto exp) __attribute__((always_inline)) {
            attn_task<T>(p, t / KV, t % KV, buf.data(), exp);
          });
      });
    } else {
      TORCH_CHECK(false, "attention_decode_step: f64 is not supported");
    }
  });
  return out;
}

}  // namespace s0::nn
