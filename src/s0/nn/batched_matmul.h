#pragma once
// Batched matrix products for the chunked recurrences, with autograd: C[i] = op(A[i]) op(B[i])
// for 3-D A, B (op = identity or transpose). float32 CPU products run as one oneDNN sgemm
// per batch entry, the batch spread over libtorch's threads; libtorch 1.13's CPU bmm loops
// over the batch on one core through OpenBLAS, which serialises concurrent callers. Other
// dtypes/devices (and processes without oneDNN's sgemm) use at::bmm.
#include "s0/util/torch.h"

namespace s0::nn {

// A [Bt, M, K] (or [Bt, K, M] with ta), B [Bt, K, N] (or [Bt, N, K] with tb) -> [Bt, M, N].
// Not both transposed.
Tensor batched_matmul(const Tensor& A, bool ta, const Tensor& B, bool tb);

// Whether the oneDNN path is available in this process.
bool batched_matmul_fast_available();

}  // namespace s0::nn
