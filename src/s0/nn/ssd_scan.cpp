#include "s0/nn/ssd_scan.h"

#include <limits>

#include <torch/csrc/autograd/custom_function.h>
#include <vector>

#include "s0/nn/batched_matmul.h"
#include "s0/util/blas_threads.h"

namespace s0::nn {

namespace {

void check_shapes(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                  const Tensor& Cm, const Tensor& state0) {
  TORCH_CHECK(x.dim() == 4, "ssd_scan: x must be [B,H,L,P]");
  const int64_t B = x.size(0), H = x.size(1), L = x.size(2);
  TORCH_CHECK(dt.dim() == 3 && dt.size(0) == B && dt.size(1) == H && dt.size(2) == L,
              "ssd_scan: dt must be [B,H,L]");
  TORCH_CHECK(A.dim() == 1 && A.size(0) == H, "ssd_scan: A must be [H]");
  TORCH_CHECK(Bm.dim() == 4 && Bm.size(0) == B && Bm.size(2) == L && Bm.size(1) > 0 &&
                  H % Bm.size(1) == 0,
              "ssd_scan: B must be [B,G,L,N] with G dividing H");
  TORCH_CHECK(Cm.sizes() == Bm.sizes(), "ssd_scan: C must have the shape of B");
  if (state0.defined())
    TORCH_CHECK(state0.dim() == 4 && state0.size(0) == B && state0.size(1) == H &&
                    state0.size(2) == x.size(3) && state0.size(3) == Bm.size(3),
                "ssd_scan: initial state must be [B,H,P,N]");
}

Tensor zeros_state(const Tensor& x, const Tensor& Bm) {
  return at::zeros({x.size(0), x.size(1), x.size(3), Bm.size(3)}, x.options());
}

// seg[.., t, s] = exp(lam_t - lam_s) for s <= t, else 0 (masked before the exp: no overflow).
// One fused forward and a two-reduction backward (d lam = rowsum(G) - colsum(G) with
// G = grad * seg) instead of autograd's sub / masked_fill / exp chain over [.., Q, Q].
struct SegExp : public torch::autograd::Function<SegExp> {
  static Tensor compute(const Tensor& lam) {
    const int64_t Q = lam.size(-1);
    Tensor upper = at::ones({Q, Q}, lam.options().dtype(at::kBool)).triu(1);
    Tensor seg = lam.unsqueeze(-1) - lam.unsqueeze(-2);
    seg.masked_fill_(upper, -std::numeric_limits<double>::infinity());
    return seg.exp_();
  }
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& lam) {
    Tensor seg = compute(lam);
    ctx->save_for_backward({seg});
    return seg;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    Tensor G = grads[0] * ctx->get_saved_variables()[0];
    return {G.sum(-1) - G.sum(-2)};
  }
};

Tensor seg_exp(const Tensor& lam) {
  return grad_enabled() && lam.requires_grad() ? SegExp::apply(lam) : SegExp::compute(lam);
}

}  // namespace

SsdResult ssd_scan_recurrent(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                             const Tensor& Cm, const Tensor& state0) {
  check_shapes(x, dt, A, Bm, Cm, state0);
  const int64_t H = x.size(1), L = x.size(2), Hg = H / Bm.size(1);
  Tensor S = state0.defined() ? state0 : zeros_state(x, Bm);
  // Head h reads group h / Hg (repeat-interleave over heads).
  Tensor Bh = Hg > 1 ? Bm.repeat_interleave(Hg, 1) : Bm;  // [B,H,L,N]
  Tensor Ch = Hg > 1 ? Cm.repeat_interleave(Hg, 1) : Cm;
  std::vector<Tensor> ys;
  ys.reserve(L);
  for (int64_t t = 0; t < L; ++t) {
    Tensor dtt = dt.select(2, t);                                   // [B,H]
    Tensor decay = (dtt * A).exp().unsqueeze(-1).unsqueeze(-1);     // [B,H,1,1]
    Tensor xdt = (x.select(2, t) * dtt.unsqueeze(-1)).unsqueeze(-1);  // [B,H,P,1]
    S = S * decay + xdt * Bh.select(2, t).unsqueeze(-2);            // + dt x B^T
    ys.push_back(S.matmul(Ch.select(2, t).unsqueeze(-1)).squeeze(-1));  // S C  [B,H,P]
  }
  Tensor out = L > 0 ? at::stack(ys, 2) : at::zeros({x.size(0), H, 0, x.size(3)}, x.options());
  return {out, S};
}

SsdResult ssd_scan_chunked(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& state0, int64_t Q) {
  check_shapes(x, dt, A, Bm, Cm, state0);
  TORCH_CHECK(Q > 0, "ssd_scan_chunked: chunk size must be positive");
  SingleThreadedBlas single_threaded_blas;
  const int64_t Bz = x.size(0), H = x.size(1), L = x.size(2), P = x.size(3);
  const int64_t G = Bm.size(1), N = Bm.size(3), Hg = H / G;
  Tensor S = state0.defined() ? state0 : zeros_state(x, Bm);
  if (L == 0) return {at::zeros({Bz, H, 0, P}, x.options()), S};
  const int64_t Nc = (L + Q - 1) / Q, pad = Nc * Q - L;

  // Zero-pad the tail to whole chunks (dt = 0 there: no decay, no write), then view heads
  // as [G, Hg]: B and C are shared by the heads of a group.
  auto pad4 = [&](const Tensor& t) { return pad ? at::constant_pad_nd(t, {0, 0, 0, pad}) : t; };
  auto pad3 = [&](const Tensor& t) { return pad ? at::constant_pad_nd(t, {0, pad}) : t; };
  Tensor xc = pad4(x).reshape({Bz, G, Hg, Nc, Q, P});
  Tensor dtc = pad3(dt).reshape({Bz, G, Hg, Nc, Q});
  Tensor Bc = pad4(Bm).reshape({Bz * G * Nc, Q, N});  // one matrix per (batch, group, chunk)
  Tensor Cc = pad4(Cm).reshape({Bz * G * Nc, Q, N});

  Tensor a = dtc * A.view({1, G, Hg, 1, 1});  // log-decay per step (<= 0)
  Tensor xb = xc * dtc.unsqueeze(-1);         // dt_s x_s
  Tensor lam = a.cumsum(-1);                  // inclusive in-chunk cumulative log-decay
  Tensor seg = seg_exp(lam);                  // [Bz,G,Hg,Nc,Q(t),Q(s)]
  // 1. Intra-chunk: y_t = sum_{s<=t} (C_t . B_s) exp(lam_t - lam_s) dt_s x_s.
  Tensor CB = batched_matmul(Cc, false, Bc, true).view({Bz, G, 1, Nc, Q, Q});
  Tensor y = batched_matmul((CB * seg).reshape({-1, Q, Q}), false, xb.reshape({-1, Q, P}), false)
                 .view({Bz, G, Hg, Nc, Q, P});
  // 2. Each chunk's own contribution to the state at its end, all heads of a group in one
  //    product: [Q, Hg*P]^T [Q, N].
  Tensor lam_end = lam.select(-1, Q - 1);                            // [Bz,G,Hg,Nc]
  Tensor w_end = (lam_end.unsqueeze(-1) - lam).exp().unsqueeze(-1);  // exp(lam_end - lam_s)
  Tensor xw = (xb * w_end).permute({0, 1, 3, 4, 2, 5}).reshape({Bz * G * Nc, Q, Hg * P});
  Tensor dS = batched_matmul(xw, true, Bc, false)                    // [Bz*G*Nc, Hg*P, N]
                  .view({Bz, G, Nc, Hg, P, N});
  Tensor decay = lam_end.exp().unsqueeze(-1).unsqueeze(-1);          // [Bz,G,Hg,Nc,1,1]
  // 3. State passing; the state entering each chunk feeds its off-diagonal outputs.
  auto dSn = dS.unbind(2), decn = decay.unbind(3);
  S = S.reshape({Bz, G, Hg, P, N});
  std::vector<Tensor> enter;
  enter.reserve(Nc);
  for (int64_t c = 0; c < Nc; ++c) {
    enter.push_back(S);
    S = S * decn[c] + dSn[c];
  }
  Tensor Se = at::stack(enter, 2).reshape({Bz * G * Nc, Hg * P, N});  // [Bz,G,Nc,Hg,P,N]
  // 4. Off-diagonal: y_t += exp(lam_t) S_enter C_t, all heads of a group in one product.
  Tensor yoff = batched_matmul(Cc, false, Se, true)                   // [Bz*G*Nc, Q, Hg*P]
                    .view({Bz, G, Nc, Q, Hg, P})
                    .permute({0, 1, 4, 2, 3, 5});
  y = y + yoff * lam.exp().unsqueeze(-1);
  Tensor out = y.reshape({Bz, H, Nc * Q, P});
  if (pad) out = out.narrow(2, 0, L);
  return {out, S.reshape({Bz, H, P, N})};
}

Tensor ssd_step_(Tensor& state, const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                 const Tensor& Cm) {
  const int64_t Bz = state.size(0), H = state.size(1), P = state.size(2), N = state.size(3);
  const int64_t G = Bm.size(1), Hg = H / G;
  TORCH_CHECK(state.is_contiguous(), "ssd_step_: state must be contiguous");
  NoGrad no_grad;
  SingleThreadedBlas single_threaded_blas;
  state.mul_((dt * A).exp().view({Bz, H, 1, 1}));
  Tensor S = state.view({Bz * G, Hg * P, N});
  Tensor xdt = (x * dt.unsqueeze(-1)).reshape({Bz * G, Hg * P, 1});
  S.baddbmm_(xdt, Bm.reshape({Bz * G, 1, N}));                           // += dt x B^T
  return at::bmm(S, Cm.reshape({Bz * G, N, 1})).view({Bz, H, P});         // S C
}

}  // namespace s0::nn
