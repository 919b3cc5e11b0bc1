#include "s0/nn/layers.h"
#include "s0/nn/fused.h"
#include "s0/nn/linear.h"

#include <limits>

#include <torch/csrc/autograd/custom_function.h>

namespace s0::nn {

namespace {
// Reduced-precision math happens in float32, float64 models stay in float64 (for tests).
at::ScalarType acc(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }
}  // namespace

Tensor rms_norm_1p(const Tensor& x, const Tensor& w, double eps) {
  if (x.device().is_cpu() && x.scalar_type() == w.scalar_type() && !(grad_enabled() && w.requires_grad()))
    return rms_norm_1p_fused(x, w, eps);
  // The reference ops (a trainable weight: pretraining).
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

Tensor l2_norm(const Tensor& x, double eps) {
  return x * at::rsqrt(x.pow(2).sum(-1, true) + eps);
}

Tensor silu(const Tensor& x) {
  // libtorch 1.13's bf16 SiLU is not vectorised; compute in fp32 and round once, which is
  // what the bf16 kernel computes too.
  if (x.scalar_type() == at::kBFloat16) return at::silu(x.to(at::kFloat)).to(at::kBFloat16);
  return at::silu(x);
}


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

namespace {

// The last Kc-1 raw inputs of [history | x] (a constant for autograd: see layers.h).
Tensor conv_history(const Tensor& x, const Tensor& history, int64_t Kc) {
  NoGrad ng;
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  if (L >= Kc - 1) return x.narrow(1, L - (Kc - 1), Kc - 1).transpose(1, 2).contiguous();
  Tensor hist = history.defined() ? history : at::zeros({B, C, Kc - 1}, x.options());
  return at::cat({hist, x.transpose(1, 2)}, 2).narrow(2, L, Kc - 1).contiguous();
}

// The reference formulation (ATen ops; plain autograd for a trainable weight, bias or
// history): Kc shifted multiply-adds over [history | x] in [B, C, L + Kc - 1].
Tensor conv_silu_reference(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& history) {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), Kc = weight.size(1);
  Tensor hist = history.defined() ? history : at::zeros({B, C, Kc - 1}, x.options());
  Tensor f = at::cat({hist, x.transpose(1, 2)}, 2).to(weight.scalar_type());
  Tensor y = grad_enabled() && f.requires_grad() && !weight.requires_grad() ? ConvTaps::apply(f, weight)
                                                                              : ConvTaps::taps(f, weight, L);
  if (bias.defined()) y = y + bias.view({1, C, 1});
  return nn::silu(y.to(x.scalar_type())).transpose(1, 2);  // [B, L, C]
}

Tensor conv_silu_any(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& history,
                     Tensor& new_history) {
  const bool fused = !weight.requires_grad() && !(bias.defined() && bias.requires_grad()) &&
                     !(history.defined() && history.requires_grad()) && x.device().is_cpu();
  Tensor y = fused ? nn::conv_silu(x, weight, bias, history) : conv_silu_reference(x, weight, bias, history);
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
