#pragma once
// The Mamba-2 SSD recurrence (Falcon-H1's SSM), twice: the step-by-step recurrence (the
// definition; decode) and the chunked form (prefill and training). Both take an initial
// state and return the final one, and both are differentiable with respect to every input,
// the initial state included (libtorch autograd). Math per shared spec falcon_h1.md 3.4/3.6.
//
// Shapes (H heads in G groups; head h reads group h / (H/G)):
//   x [B, H, L, P]   dt [B, H, L] (after softplus/clamp)   A [H] (negative)
//   Bm, Cm [B, G, L, N]   state [B, H, P, N]  (axis 2 = head dim p, axis 3 = state n)
// Per head, for t = 1..L (D skip and gating are the caller's):
//   S <- exp(dt_t A) S + dt_t x_t B_t^T;   y_t = S C_t
// The math runs in the dtype of the inputs (the model casts to float32; tests use float64).
#include "s0/util/torch.h"

namespace s0::nn {

struct SsdResult {
  Tensor out;    // y [B, H, L, P]
  Tensor state;  // [B, H, P, N], the state after the last token
};

// The definition: one token at a time. `state0` may be undefined (= zeros).
SsdResult ssd_scan_recurrent(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                             const Tensor& Cm, const Tensor& state0);

// The chunked form; chunks are aligned to the start of the call and the tail is
// zero-padded (padded steps have dt = 0: they neither decay nor write the state).
SsdResult ssd_scan_chunked(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& state0, int64_t chunk_size);

// Decode fast path: one token, updating `state` [B, H, P, N] (contiguous) in place, no
// autograd. x [B, H, P], dt [B, H], Bm/Cm [B, G, N] (any strides). Returns y [B, H, P].
Tensor ssd_step_(Tensor& state, const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                 const Tensor& Cm);

}  // namespace s0::nn
