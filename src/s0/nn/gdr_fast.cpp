// Inference-only chunked gated delta rule: the same WY algorithm as
// gated_delta_rule_chunked, written per head with oneDNN's thread-safe sgemm and run for
// all heads in parallel. libtorch's path for these small batched products goes through
// OpenBLAS, which serialises concurrent callers and so keeps the recurrence on one core.
#include "s0/nn/gdr_fast.h"

#include <dlfcn.h>
#include <xmmintrin.h>

#include <cmath>
#include <vector>

namespace s0::nn {

namespace {

using SgemmFn = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                        int64_t, float, float*, int64_t);

SgemmFn find_sgemm() {
  void* p = dlsym(RTLD_DEFAULT, "dnnl_sgemm");
  if (!p) {
    if (void* h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_NOLOAD)) p = dlsym(h, "dnnl_sgemm");
  }
  return reinterpret_cast<SgemmFn>(p);
}

SgemmFn sgemm() {
  static const SgemmFn f = find_sgemm();
  return f;
}

// One head: q, k [L, K], v [L, V], g, beta [L] (row-major float32); S [K, V] in/out; out [L, V].
void head(const float* q, const float* k, const float* v, const float* g, const float* beta, float* S, float* out,
          int64_t L, int64_t K, int64_t V, int64_t C) {
  const SgemmFn mm = sgemm();
  std::vector<float> gam(C), A(C * C), Aqk(C * C), kb(C * K), W(C * K), U(C * V), Qp(C * K), Kp(C * K);
  for (int64_t r0 = 0; r0 < L; r0 += C) {
    const int64_t c = std::min(C, L - r0);
    const float *qc = q + r0 * K, *kc = k + r0 * K, *vc = v + r0 * V;
    float acc = 0.f;
    for (int64_t r = 0; r < c; ++r) gam[r] = acc += g[r0 + r];
    const float glast = gam[c - 1];
    for (int64_t r = 0; r < c; ++r) {
      const float b = beta[r0 + r], e = std::exp(gam[r]), el = std::exp(glast - gam[r]);
      for (int64_t i = 0; i < K; ++i) {
        kb[r * K + i] = kc[r * K + i] * b;
        W[r * K + i] = kb[r * K + i] * e;
        Qp[r * K + i] = qc[r * K + i] * e;
        Kp[r * K + i] = kc[r * K + i] * el;
      }
      for (int64_t j = 0; j < V; ++j) U[r * V + j] = vc[r * V + j] * b;
    }
    // A = (beta k) k^T, strictly lower, decayed; Aqk = q k^T, lower with diagonal, decayed.
    mm('N', 'T', c, c, K, 1.f, kb.data(), K, kc, K, 0.f, A.data(), c);
    mm('N', 'T', c, c, K, 1.f, qc, K, kc, K, 0.f, Aqk.data(), c);
    for (int64_t r = 0; r < c; ++r)
      for (int64_t s = 0; s < c; ++s) {
        const float d = s <= r ? std::exp(gam[r] - gam[s]) : 0.f;
        A[r * c + s] = s < r ? A[r * c + s] * d : 0.f;
        Aqk[r * c + s] *= d;
      }
    // (I + A) U = beta v and (I + A) W = beta k exp(gam): forward substitution.
    for (int64_t r = 1; r < c; ++r)
      for (int64_t s = 0; s < r; ++s) {
        const float a = A[r * c + s];
        if (a == 0.f) continue;
        for (int64_t j = 0; j < V; ++j) U[r * V + j] -= a * U[s * V + j];
        for (int64_t i = 0; i < K; ++i) W[r * K + i] -= a * W[s * K + i];
      }
    // Vnew = U - W S;  O = Qp S + Aqk Vnew;  S = exp(glast) S + Kp^T Vnew.
    mm('N', 'N', c, V, K, -1.f, W.data(), K, S, V, 1.f, U.data(), V);
    float* oc = out + r0 * V;
    mm('N', 'N', c, V, K, 1.f, Qp.data(), K, S, V, 0.f, oc, V);
    mm('N', 'N', c, V, c, 1.f, Aqk.data(), c, U.data(), V, 1.f, oc, V);
    const float dl = std::exp(glast);
    for (int64_t i = 0; i < K * V; ++i) S[i] *= dl;
    mm('T', 'N', K, V, c, 1.f, Kp.data(), K, U.data(), V, 1.f, S, V);
  }
}

}  // namespace

bool gdr_fast_available() { return sgemm() != nullptr; }

GdrResult gated_delta_rule_chunked_fast(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                        const Tensor& beta, const Tensor& state0, int64_t C) {
  NoGrad ng;
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), K = q.size(3), V = v.size(3);
  Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous(), gc = g.contiguous(), bc = beta.contiguous();
  Tensor S = state0.defined() ? state0.contiguous().clone() : at::zeros({B, H, K, V}, q.options());
  Tensor out = at::empty({B, H, L, V}, v.options());
  const float *qp = qc.data_ptr<float>(), *kp = kc.data_ptr<float>(), *vp = vc.data_ptr<float>();
  const float *gp = gc.data_ptr<float>(), *bp = bc.data_ptr<float>();
  float *sp = S.data_ptr<float>(), *op = out.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t h0, int64_t h1) {
    // Decaying states underflow into denormals, which are ~100x slower to compute with;
    // flush them to zero here (they are below 1e-38 of values of order 1).
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);  // FTZ | DAZ
    for (int64_t h = h0; h < h1; ++h)
      head(qp + h * L * K, kp + h * L * K, vp + h * L * V, gp + h * L, bp + h * L, sp + h * K * V,
           op + h * L * V, L, K, V, C);
    _mm_setcsr(csr);
  });
  return {out, S};
}

}  // namespace s0::nn
