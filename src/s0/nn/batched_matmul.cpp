#include "s0/nn/batched_matmul.h"

#include <torch/csrc/autograd/custom_function.h>

#include "s0/nn/simd.h"

namespace s0::nn {

namespace {

using simd::SgemmFn;

SgemmFn sgemm() { return simd::dnnl_sgemm(); }

// The product itself; A and B contiguous float32.
Tensor product(const Tensor& A, bool ta, const Tensor& B, bool tb) {
  const int64_t Bt = A.size(0);
  const int64_t M = ta ? A.size(2) : A.size(1), K = ta ? A.size(1) : A.size(2);
  const int64_t N = tb ? B.size(1) : B.size(2);
  TORCH_CHECK((tb ? B.size(2) : B.size(1)) == K && B.size(0) == Bt, "batched_matmul: shapes do not match");
  Tensor C = at::empty({Bt, M, N}, A.options());
  if (Bt == 0 || M == 0 || N == 0) return C;
  if (K == 0) return C.zero_();
  const float* a = A.data_ptr<float>();
  const float* b = B.data_ptr<float>();
  float* c = C.data_ptr<float>();
  const int64_t sa = A.size(1) * A.size(2), sb = B.size(1) * B.size(2), lda = A.size(2), ldb = B.size(2);
  const SgemmFn mm = sgemm();
  at::parallel_for(0, Bt, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t i = b0; i < b1; ++i)
      mm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.0f, a + i * sa, lda, b + i * sb, ldb, 0.0f, c + i * M * N, N);
  });
  return C;
}

struct FastBmm : public torch::autograd::Function<FastBmm> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& A, const Tensor& B, bool ta, bool tb) {
    ctx->save_for_backward({A, B});
    ctx->saved_data["ta"] = ta;
    ctx->saved_data["tb"] = tb;
    return product(A, ta, B, tb);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &A = saved[0], &B = saved[1];
    const bool ta = ctx->saved_data["ta"].toBool(), tb = ctx->saved_data["tb"].toBool();
    const Tensor g = grads[0].contiguous();
    Tensor gA, gB;
    if (!ta && !tb) {  // C = A B
      if (A.requires_grad()) gA = product(g, false, B, true);
      if (B.requires_grad()) gB = product(A, true, g, false);
    } else if (!ta && tb) {  // C = A B^T
      if (A.requires_grad()) gA = product(g, false, B, false);
      if (B.requires_grad()) gB = product(g, true, A, false);
    } else {  // C = A^T B
      if (A.requires_grad()) gA = product(B, false, g, true);
      if (B.requires_grad()) gB = product(A, false, g, false);
    }
    return {gA, gB, Tensor(), Tensor()};
  }
};

}  // namespace

bool batched_matmul_fast_available() { return sgemm() != nullptr; }

Tensor batched_matmul(const Tensor& A, bool ta, const Tensor& B, bool tb) {
  TORCH_CHECK(A.dim() == 3 && B.dim() == 3, "batched_matmul: A and B must be 3-D");
  TORCH_CHECK(!(ta && tb), "batched_matmul: at most one operand transposed");
  if (A.scalar_type() != at::kFloat || B.scalar_type() != at::kFloat || !A.is_cpu() || !B.is_cpu() || !sgemm())
    return at::bmm(ta ? A.transpose(1, 2) : A, tb ? B.transpose(1, 2) : B);
  Tensor a = A.contiguous(), b = B.contiguous();
  if (grad_enabled() && (a.requires_grad() || b.requires_grad())) return FastBmm::apply(a, b, ta, tb);
  return product(a, ta, b, tb);
}

}  // namespace s0::nn
