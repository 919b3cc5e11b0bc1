#pragma once
// Activations: SiLU, and silu(g) * u (the SwiGLU MLP's product): the definition in ATen ops
// and the fused CPU kernel with a hand-written input-gradient backward (one pass over memory
// where ATen takes several).
#include "s0/util/torch.h"

namespace s0::nn {

// SiLU rounded once to x's dtype.
Tensor silu(const Tensor& x);

// silu(g) * u with the reference's roundings: silu(g) rounded to the dtype, the product
// rounded to the dtype. g, u [..., I] of one dtype (bf16, f32 or f64). Differentiable with
// respect to g and u. Always the fused kernel (AVX-512 exp where the CPU has it, else a
// portable build of the same formulas).
Tensor silu_mul(const Tensor& g, const Tensor& u);

// The definition of silu_mul: silu(g) * u in ATen ops (plain autograd).
Tensor silu_mul_reference(const Tensor& g, const Tensor& u);

// Products for the decode step (no autograd), bitwise equal to the ATen expressions in the
// comments for bf16, f32 and f64 tensors on the CPU (each element times s rounded to the
// dtype, as ATen casts the scalar, in f32 math, rounded to the dtype; f64 for f64), without TensorIterator's set-up, which at one row costs more
// than the arithmetic (10-100 us a call: Falcon-H1's seven multipliers and muP vector per
// layer were an eighth of its decode step).
// x * s
Tensor scale(const Tensor& x, double s);
// x * v, v [D] broadcast over x's last dimension (same dtype)
Tensor mul_last(const Tensor& x, const Tensor& v);

}  // namespace s0::nn
