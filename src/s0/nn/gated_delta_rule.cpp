#include "s0/nn/gated_delta_rule.h"

#include "s0/util/blas_threads.h"

#include <limits>
#include <vector>

namespace s0::nn {

namespace {

Tensor zeros_state(const Tensor& k, const Tensor& v) {
  return at::zeros({k.size(0), k.size(1), k.size(3), v.size(3)}, k.options());
}

void check_shapes(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                  const Tensor& beta, const Tensor& state0) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes(), "gated_delta_rule: q and k must be [B,H,L,K]");
  TORCH_CHECK(v.dim() == 4 && v.size(0) == q.size(0) && v.size(1) == q.size(1) &&
                  v.size(2) == q.size(2),
              "gated_delta_rule: v must be [B,H,L,V]");
  TORCH_CHECK(g.sizes() == q.sizes().slice(0, 3) && beta.sizes() == g.sizes(),
              "gated_delta_rule: g and beta must be [B,H,L]");
  if (state0.defined()) {
    TORCH_CHECK(state0.dim() == 4 && state0.size(0) == q.size(0) && state0.size(1) == q.size(1) &&
                    state0.size(2) == q.size(3) && state0.size(3) == v.size(3),
                "gated_delta_rule: initial state must be [B,H,K,V]");
  }
}

}  // namespace

GdrResult gated_delta_rule_recurrent(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& g, const Tensor& beta, const Tensor& state0) {
  check_shapes(q, k, v, g, beta, state0);
  const int64_t L = q.size(2);
  Tensor S = state0.defined() ? state0 : zeros_state(k, v);
  std::vector<Tensor> outs;
  outs.reserve(L);
  for (int64_t t = 0; t < L; ++t) {
    Tensor qt = q.select(2, t).unsqueeze(-2);                   // [B,H,1,K]
    Tensor kt = k.select(2, t).unsqueeze(-2);                   // [B,H,1,K]
    Tensor vt = v.select(2, t).unsqueeze(-2);                   // [B,H,1,V]
    Tensor decay = g.select(2, t).exp().unsqueeze(-1).unsqueeze(-1);  // [B,H,1,1]
    Tensor bt = beta.select(2, t).unsqueeze(-1).unsqueeze(-1);        // [B,H,1,1]
    S = S * decay;                                   // decay
    Tensor m = kt.matmul(S);                         // retrieve: S^T k   [B,H,1,V]
    Tensor delta = bt * (vt - m);                    // [B,H,1,V]
    S = S + kt.transpose(-1, -2).matmul(delta);      // write: S + k delta^T
    outs.push_back(qt.matmul(S));                    // read after the write: S^T q
  }
  Tensor out = L > 0 ? at::cat(outs, 2) : at::zeros({q.size(0), q.size(1), 0, v.size(3)}, v.options());
  return {out, S};
}

GdrResult gated_delta_rule_chunked(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& g, const Tensor& beta, const Tensor& state0,
                                   int64_t C) {
  check_shapes(q, k, v, g, beta, state0);
  TORCH_CHECK(C > 0, "gated_delta_rule_chunked: chunk size must be positive");
  const bool needs_grad = grad_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad() ||
                                             g.requires_grad() || beta.requires_grad() ||
                                             (state0.defined() && state0.requires_grad()));
  bool all_cpu_f32 = true;
  for (const Tensor* t : {&q, &k, &v, &g, &beta, &state0})
    if (t->defined()) all_cpu_f32 = all_cpu_f32 && t->is_cpu() && t->scalar_type() == at::kFloat;
  if (all_cpu_f32 && gdr_fast_available()) {
    if (!needs_grad) return gated_delta_rule_chunked_fast(q, k, v, g, beta, state0, C);
    // Training: the same kernel as an autograd Function with a hand-written backward.
    if (q.size(2) > 0) return gated_delta_rule_chunked_fast_grad(q, k, v, g, beta, state0, C);
  }
  return gated_delta_rule_chunked_aten(q, k, v, g, beta, state0, C);
}

GdrResult gated_delta_rule_chunked_aten(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const Tensor& g, const Tensor& beta, const Tensor& state0,
                                        int64_t C) {
  check_shapes(q, k, v, g, beta, state0);
  TORCH_CHECK(C > 0, "gated_delta_rule_chunked: chunk size must be positive");
  SingleThreadedBlas single_threaded_blas;
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), K = q.size(3), V = v.size(3);
  Tensor S = state0.defined() ? state0 : zeros_state(k, v);
  if (L == 0) return {at::zeros({B, H, 0, V}, v.options()), S};
  const int64_t N = (L + C - 1) / C, pad = N * C - L;

  // Zero-pad the tail to whole chunks, then view as [B, H, N, C, .].
  auto pad4 = [&](const Tensor& x) { return pad ? at::constant_pad_nd(x, {0, 0, 0, pad}) : x; };
  auto pad3 = [&](const Tensor& x) { return pad ? at::constant_pad_nd(x, {0, pad}) : x; };
  Tensor qc = pad4(q).reshape({B, H, N, C, K});
  Tensor kc = pad4(k).reshape({B, H, N, C, K});
  Tensor vc = pad4(v).reshape({B, H, N, C, V});
  Tensor gc = pad3(g).reshape({B, H, N, C});
  Tensor bc = pad3(beta).reshape({B, H, N, C}).unsqueeze(-1);

  Tensor kb = kc * bc;                   // beta_r k_r
  Tensor vb = vc * bc;                   // beta_r v_r
  Tensor gam = gc.cumsum(-1);            // inclusive cumulative log-decay within the chunk
  auto opts_bool = at::TensorOptions().dtype(at::kBool).device(q.device());
  Tensor upper = at::ones({C, C}, opts_bool).triu(1);       // s > r
  Tensor upper_incl = at::ones({C, C}, opts_bool).triu(0);  // s >= r
  // Gam[r,s] = exp(gam_r - gam_s) for s <= r, else 0 (masked before exp: no overflow).
  Tensor Gam = (gam.unsqueeze(-1) - gam.unsqueeze(-2))
                   .masked_fill(upper, -std::numeric_limits<double>::infinity())
                   .exp();
  // A[r,s] = (beta_r k_r . k_s) Gam[r,s] for s < r; T = (I + A)^-1 applied by triangular solves.
  Tensor A = (kb.matmul(kc.transpose(-1, -2)) * Gam).masked_fill(upper_incl, 0.0);
  Tensor egam = gam.exp().unsqueeze(-1);
  Tensor U = at::linalg_solve_triangular(A, vb, /*upper=*/false, /*left=*/true,
                                         /*unitriangular=*/true);   // [B,H,N,C,V]
  Tensor W = at::linalg_solve_triangular(A, kb * egam, false, true, true);  // [B,H,N,C,K]
  Tensor Qp = qc * egam;                                            // q_r exp(gam_r)
  Tensor glast = gam.select(-1, C - 1);                             // [B,H,N]
  Tensor Kp = kc * (glast.unsqueeze(-1) - gam).exp().unsqueeze(-1);  // k_r exp(gam_last - gam_r)
  Tensor Aqk = qc.matmul(kc.transpose(-1, -2)) * Gam;               // s <= r, diagonal included
  Tensor chunk_decay = glast.exp().unsqueeze(-1).unsqueeze(-1);     // [B,H,N,1,1]

  // Per-chunk views via unbind: its backward stacks all chunk gradients at once, where
  // select() would allocate and fill a full-size zero gradient per chunk.
  auto Un = U.unbind(2), Wn = W.unbind(2), Qn = Qp.unbind(2), An = Aqk.unbind(2), Kn = Kp.unbind(2),
       Dn = chunk_decay.unbind(2);
  std::vector<Tensor> outs;
  outs.reserve(N);
  for (int64_t n = 0; n < N; ++n) {
    Tensor Vnew = Un[n] - Wn[n].matmul(S);                         // [B,H,C,V]
    outs.push_back(Qn[n].matmul(S) + An[n].matmul(Vnew));          // [B,H,C,V]
    S = S * Dn[n] + Kn[n].transpose(-1, -2).matmul(Vnew);
  }
  Tensor out = at::cat(outs, 2);
  if (pad) out = out.narrow(2, 0, L);
  return {out, S};
}

Tensor gated_delta_rule_step_(Tensor& state, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& g, const Tensor& beta) {
  const int64_t B = state.size(0), H = state.size(1), K = state.size(2), V = state.size(3);
  TORCH_CHECK(q.size(2) == 1, "gated_delta_rule_step_: one token only");
  NoGrad no_grad;
  SingleThreadedBlas single_threaded_blas;
  Tensor S = state.view({B * H, K, V});
  S.mul_(g.reshape({B * H, 1, 1}).exp());
  Tensor kt = k.reshape({B * H, 1, K});
  Tensor delta = at::bmm(kt, S);                                   // S^T k      [BH,1,V]
  delta.neg_().add_(v.reshape({B * H, 1, V})).mul_(beta.reshape({B * H, 1, 1}));
  S.baddbmm_(kt.transpose(1, 2), delta);                            // S += k delta^T
  return at::bmm(q.reshape({B * H, 1, K}), S).view({B, H, 1, V});   // S^T q
}

}  // namespace s0::nn
