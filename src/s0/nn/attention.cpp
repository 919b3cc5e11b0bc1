#include "s0/nn/attention.h"

#include <algorithm>
#include <limits>

namespace s0::nn {

namespace {
// Reduced-precision math happens in float32, float64 models stay in float64 (for tests).
at::ScalarType acc(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }
}  // namespace

Tensor rope_inv_freq(int64_t rotary_dim, double theta) {
  Tensor expo = at::arange(0, rotary_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(rotary_dim);
  return 1.0 / at::pow(at::scalar_tensor(theta, at::kFloat), expo);
}

Tensor apply_rope(const Tensor& x, const Tensor& inv_freq, int64_t start) {
  const int64_t L = x.size(1), R = 2 * inv_freq.size(0), half = R / 2;
  if (R == 0) return x;
  Tensor pos = at::arange(start, start + L, at::kLong).to(inv_freq.scalar_type());
  Tensor ang = pos.unsqueeze(1) * inv_freq.unsqueeze(0);  // [L, R/2]
  Tensor emb = at::cat({ang, ang}, -1);                    // [L, R]
  Tensor cos = emb.cos().to(x.scalar_type()).view({1, L, 1, R});
  Tensor sin = emb.sin().to(x.scalar_type()).view({1, L, 1, R});
  Tensor xr = x.narrow(-1, 0, R);
  Tensor rot = at::cat({-xr.narrow(-1, half, half), xr.narrow(-1, 0, half)}, -1);
  Tensor y = xr * cos + rot * sin;
  if (R == x.size(-1)) return y;
  return at::cat({y, x.narrow(-1, R, x.size(-1) - R)}, -1);
}

void kv_append(Tensor& kbuf, Tensor& vbuf, const Tensor& k, const Tensor& v, int64_t past,
               Tensor& k_all, Tensor& v_all) {
  const int64_t L = k.size(2), need = past + L;
  if (grad_enabled()) {
    if (past == 0) {
      kbuf = k, vbuf = v;
    } else {
      kbuf = at::cat({kbuf.narrow(2, 0, past), k}, 2);
      vbuf = at::cat({vbuf.narrow(2, 0, past), v}, 2);
    }
    k_all = kbuf, v_all = vbuf;
    return;
  }
  NoGrad ng;
  if (!kbuf.defined() || kbuf.size(2) < need) {
    int64_t cap = std::max<int64_t>({need, 64, kbuf.defined() ? 2 * kbuf.size(2) : 0});
    Tensor nk = at::empty({k.size(0), k.size(1), cap, k.size(3)}, k.options());
    Tensor nv = at::empty({v.size(0), v.size(1), cap, v.size(3)}, v.options());
    if (past > 0) {
      nk.narrow(2, 0, past).copy_(kbuf.narrow(2, 0, past));
      nv.narrow(2, 0, past).copy_(vbuf.narrow(2, 0, past));
    }
    kbuf = nk, vbuf = nv;
  }
  kbuf.narrow(2, past, L).copy_(k);
  vbuf.narrow(2, past, L).copy_(v);
  k_all = kbuf.narrow(2, 0, need);
  v_all = vbuf.narrow(2, 0, need);
}

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t past,
                        double scale) {
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), hd = q.size(3);
  const int64_t KV = k.size(1), T = k.size(2), G = H / KV;
  // Query heads h = kv * G + j share KV head kv: group them as rows of one matmul.
  Tensor qg = q.reshape({B, KV, G * L, hd});
  Tensor scores = at::matmul(qg, k.transpose(-1, -2)) * scale;  // [B, KV, G*L, T]
  if (L > 1) {
    Tensor qpos = at::arange(past, past + L, at::kLong).unsqueeze(1);  // [L, 1]
    Tensor kpos = at::arange(0, T, at::kLong).unsqueeze(0);            // [1, T]
    Tensor masked = (kpos > qpos).repeat({G, 1});                     // [G*L, T]
    scores = scores.masked_fill(masked, -std::numeric_limits<double>::infinity());
  }
  Tensor probs = at::softmax(scores, -1, acc(q.scalar_type())).to(q.scalar_type());
  Tensor ctx = at::matmul(probs, v);  // [B, KV, G*L, hd]
  return ctx.view({B, H, L, hd}).transpose(1, 2).reshape({B, L, H * hd});
}

}  // namespace s0::nn
