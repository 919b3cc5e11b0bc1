// The gated delta rule's fast kernels (declared in gated_delta_rule.h).
//
// Chunked gated delta rule on CPU float32: the same WY algorithm as
// gated_delta_rule_chunked, written per head and run for all heads in parallel. The small
// matrix products go to oneDNN's thread-safe sgemm (found at run time) or, without it, to
// an in-house AVX-512 register-blocked kernel. libtorch's path for these small batched
// products goes through OpenBLAS, which serialises concurrent callers.
//
// Training: a custom autograd Function. Its forward is the inference kernel that also
// keeps the state at the start of every chunk and every row's U, W and Vn; its backward
// walks the chunks from last to first, recomputes the rest of each chunk's intra-chunk
// quantities (decays, A, Aqk, T = (I + A)^-1) from the saved inputs and back-propagates
// through them by hand (matrix products with the kernel above, the rest in loops).
#include <atomic>
#include <cmath>
#include <vector>

#include <torch/csrc/autograd/custom_function.h>

#include "s0/nn/gated_delta_rule.h"
#include "s0/nn/simd.h"

namespace s0::nn {

namespace {

using simd::SgemmFn;

// In-house AVX-512 sgemm for the kernel's small products (tens to a few hundred rows and
// columns, all in cache): C (MR rows x up to 32 columns) accumulated in registers over the
// whole K loop, A broadcast one element at a time (any row/k strides, so op(A) = A^T costs
// nothing), op(B) rows loaded as two masked 16-float vectors. No packing, no dispatch: at
// these sizes oneDNN's per-call overhead dominated. Each C element is a plain sequential
// FMA chain over k, so results do not depend on threads or blocking.
constexpr int kMR = 8, kNR = 32;

// One tile: mr <= 8 rows (rows past mr repeat the last one and are not stored) by the
// columns in masks m0, m1. Accumulators are named variables, not an array, so that the
// compiler keeps all sixteen in registers.
__attribute__((target("avx512f"))) void tile(int64_t mr, int64_t K, const float* A, int64_t ars, int64_t aks,
                                              const float* B, int64_t ldb, float* C, int64_t ldc, float alpha,
                                              float beta, __mmask16 m0, __mmask16 m1) {
  const float* a[kMR];
  for (int i = 0; i < kMR; ++i) a[i] = A + std::min<int64_t>(i, mr - 1) * ars;
  const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5], *a6 = a[6], *a7 = a[7];
  __m512 x0 = _mm512_setzero_ps(), y0 = x0, x1 = x0, y1 = x0, x2 = x0, y2 = x0, x3 = x0, y3 = x0, x4 = x0,
         y4 = x0, x5 = x0, y5 = x0, x6 = x0, y6 = x0, x7 = x0, y7 = x0;
  for (int64_t k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
    const int64_t o = k * aks;
#define S0_GDR_ROW(i)                                  \
  {                                                    \
    const __m512 ai = _mm512_set1_ps(a##i[o]);         \
    x##i = _mm512_fmadd_ps(ai, b0, x##i);              \
    y##i = _mm512_fmadd_ps(ai, b1, y##i);              \
  }
    S0_GDR_ROW(0) S0_GDR_ROW(1) S0_GDR_ROW(2) S0_GDR_ROW(3) S0_GDR_ROW(4) S0_GDR_ROW(5) S0_GDR_ROW(6) S0_GDR_ROW(7)
#undef S0_GDR_ROW
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const __m512 xs[kMR] = {x0, x1, x2, x3, x4, x5, x6, x7}, ys[kMR] = {y0, y1, y2, y3, y4, y5, y6, y7};
  for (int64_t i = 0; i < mr; ++i) {
    float* c = C + i * ldc;
    __m512 r0 = _mm512_mul_ps(va, xs[i]), r1 = _mm512_mul_ps(va, ys[i]);
    if (beta != 0.f) {
      r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, c), r0);
      r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16), r1);
    }
    _mm512_mask_storeu_ps(c, m0, r0);
    _mm512_mask_storeu_ps(c + 16, m1, r1);
  }
}

// dst[k, j] = src[j, k] for j < n, k < m (row strides ls, ld): 8x8 blocks transposed in
// registers, the edges elementwise.
__attribute__((target("avx512f"))) void transpose(const float* src, int64_t ls, int64_t n, int64_t m, float* dst,
                                                   int64_t ld) {
  const int64_t n8 = n & ~int64_t(7), m8 = m & ~int64_t(7);
  for (int64_t j = 0; j < n8; j += 8)
    for (int64_t k = 0; k < m8; k += 8) {
      const float* s = src + j * ls + k;
      __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ls), r2 = _mm256_loadu_ps(s + 2 * ls),
             r3 = _mm256_loadu_ps(s + 3 * ls), r4 = _mm256_loadu_ps(s + 4 * ls), r5 = _mm256_loadu_ps(s + 5 * ls),
             r6 = _mm256_loadu_ps(s + 6 * ls), r7 = _mm256_loadu_ps(s + 7 * ls);
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
                   t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
                   t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                   t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                   u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                   u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                   u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      r0 = _mm256_permute2f128_ps(u0, u4, 0x20), r1 = _mm256_permute2f128_ps(u1, u5, 0x20);
      r2 = _mm256_permute2f128_ps(u2, u6, 0x20), r3 = _mm256_permute2f128_ps(u3, u7, 0x20);
      r4 = _mm256_permute2f128_ps(u0, u4, 0x31), r5 = _mm256_permute2f128_ps(u1, u5, 0x31);
      r6 = _mm256_permute2f128_ps(u2, u6, 0x31), r7 = _mm256_permute2f128_ps(u3, u7, 0x31);
      float* d = dst + k * ld + j;
      _mm256_storeu_ps(d, r0), _mm256_storeu_ps(d + ld, r1), _mm256_storeu_ps(d + 2 * ld, r2);
      _mm256_storeu_ps(d + 3 * ld, r3), _mm256_storeu_ps(d + 4 * ld, r4), _mm256_storeu_ps(d + 5 * ld, r5);
      _mm256_storeu_ps(d + 6 * ld, r6), _mm256_storeu_ps(d + 7 * ld, r7);
    }
  for (int64_t j = 0; j < n; ++j)
    for (int64_t k = j < n8 ? m8 : 0; k < m; ++k) dst[k * ld + j] = src[j * ls + k];
}

int avx512_sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return 0;
  if (K <= 0) {  // C = beta C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return 0;
  }
  // op(B) = B^T: transpose into per-thread scratch ([K, N], row stride N).
  thread_local std::vector<float> bt;
  if (tb == 'T' || tb == 't') {
    if (bt.size() < size_t(K * N)) bt.resize(K * N);
    transpose(B, ldb, N, K, bt.data(), N);
    B = bt.data(), ldb = N;
  }
  const bool at = ta == 'T' || ta == 't';
  const int64_t ars = at ? 1 : lda, aks = at ? lda : 1;
  for (int64_t j = 0; j < N; j += kNR) {
    const int64_t nr = std::min<int64_t>(kNR, N - j);
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : __mmask16((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr > 16 ? __mmask16((1u << (nr - 16)) - 1) : 0;
    for (int64_t i = 0; i < M; i += kMR) {
      const int64_t mr = std::min<int64_t>(kMR, M - i);
      tile(mr, K, A + i * ars, ars, aks, B + j, ldb, C + i * ldc + j, ldc, alpha, beta, m0, m1);
    }
  }
  return 0;
}

bool has_avx512() { return simd::cpu_avx512f(); }  // what the kernels above need

// oneDNN's sgemm where the process has it: measured on a quiet 2-core AVX-512 machine at the
// 0.8B model's shape it is ~15% faster than the kernel above (whose advantage is that it
// never spins: on an oversubscribed machine it held up far better). The kernel otherwise.
SgemmFn pick_sgemm() {
  if (SgemmFn f = simd::dnnl_sgemm()) return f;
  return has_avx512() ? avx512_sgemm : nullptr;
}

SgemmFn sgemm() {
  static const SgemmFn f = pick_sgemm();
  return f;
}

// y -= a x over n floats: the forward substitutions' inner loop. Also built for AVX2 and
// picked at run time; AVX2 without FMA rounds exactly as the baseline SSE build does.
__attribute__((target_clones("avx2", "default"))) void sub_scaled(float* y, const float* x, float a,
                                                                  int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] -= a * x[i];
}

// sum_i a_i b_i in eight float lanes (vectorisable without reassociation flags).
double dot(const float* a, const float* b, int64_t n) {
  float lane[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lane[l] += a[i + l] * b[i + l];
  double acc = 0.0;
  for (; i < n; ++i) acc += double(a[i]) * b[i];
  for (int l = 0; l < 8; ++l) acc += lane[l];
  return acc;
}

// Decaying states underflow into denormals, which are ~100x slower to compute with; flush
// them to zero while a kernel runs (they are below 1e-38 of values of order 1).
struct FlushDenormals {
  unsigned csr = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(csr | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(csr); }
};

// One chunk's intra-chunk quantities (c rows, row-major), computed from the inputs alone:
//   gam = cumsum(g);  D[r,s] = exp(gam_r - gam_s) (s <= r, else 0);  kb = beta k;
//   A = strict_lower((kb k^T) o D);  Aqk = lower((q k^T) o D);
//   U = (I + A)^-1 beta v;  W = (I + A)^-1 beta exp(gam) k;
//   Qp = exp(gam) q;  Kp = exp(glast - gam) k.
struct Chunk {
  int64_t K, V, c = 0;
  std::vector<float> gam, e, el, D, A, Aqk, kb, W, U, Qp, Kp;
  float glast = 0.f;
  Chunk(int64_t C, int64_t K_, int64_t V_, bool keep_D)
      : K(K_), V(V_), gam(C), e(C), el(C), D(keep_D ? C * C : 0), A(C * C), Aqk(C * C), kb(C * K_), W(C * K_),
        U(C * V_), Qp(C * K_), Kp(C * K_) {}

  // solve = false leaves U = beta v, W = beta exp(gam) k (the right-hand sides).
  // T = (I + A)^-1 (lower unitriangular, c x c) by forward substitution on the identity.
  void inverse(float* T) const {
    std::fill(T, T + c * c, 0.f);
    for (int64_t r = 0; r < c; ++r) {
      float* Tr = T + r * c;
      Tr[r] = 1.f;
      for (int64_t s = 0; s < r; ++s) {
        const float a = A[r * c + s];
        if (a == 0.f) continue;
        const float* Ts = T + s * c;
        for (int64_t j = 0; j <= s; ++j) Tr[j] -= a * Ts[j];
      }
    }
  }

  void compute(const float* q, const float* k, const float* v, const float* g, const float* beta, int64_t c_,
               bool solve = true) {
    const SgemmFn mm = sgemm();
    c = c_;
    float acc = 0.f;
    for (int64_t r = 0; r < c; ++r) gam[r] = acc += g[r];
    glast = gam[c - 1];
    for (int64_t r = 0; r < c; ++r) {
      const float b = beta[r];
      e[r] = std::exp(gam[r]), el[r] = std::exp(glast - gam[r]);
      for (int64_t i = 0; i < K; ++i) {
        kb[r * K + i] = k[r * K + i] * b;
        W[r * K + i] = kb[r * K + i] * e[r];
        Qp[r * K + i] = q[r * K + i] * e[r];
        Kp[r * K + i] = k[r * K + i] * el[r];
      }
      for (int64_t j = 0; j < V; ++j) U[r * V + j] = v[r * V + j] * b;
    }
    mm('N', 'T', c, c, K, 1.f, kb.data(), K, k, K, 0.f, A.data(), c);
    mm('N', 'T', c, c, K, 1.f, q, K, k, K, 0.f, Aqk.data(), c);
    const bool keep_D = !D.empty();
    for (int64_t r = 0; r < c; ++r)
      for (int64_t s = 0; s < c; ++s) {
        const float d = s <= r ? std::exp(gam[r] - gam[s]) : 0.f;
        if (keep_D) D[r * c + s] = d;
        A[r * c + s] = s < r ? A[r * c + s] * d : 0.f;
        Aqk[r * c + s] *= d;
      }
    if (!solve) return;
    // (I + A) U = beta v and (I + A) W = beta k exp(gam): forward substitution.
    for (int64_t r = 1; r < c; ++r)
      for (int64_t s = 0; s < r; ++s) {
        const float a = A[r * c + s];
        if (a == 0.f) continue;
        sub_scaled(&U[r * V], &U[s * V], a, V);
        sub_scaled(&W[r * K], &W[s * K], a, K);
      }
  }
};

// Forward, one head: q, k [L, K], v [L, V], g, beta [L] (row-major float32); S [K, V]
// in/out; out [L, V]. `states` (optional) receives the state at the start of every chunk
// ([N, K, V]) followed by every row's [U | W | Vn] ([L, 2V + K]), for the backward.
void head_forward(const float* q, const float* k, const float* v, const float* g, const float* beta, float* S,
                  float* out, float* states, int64_t L, int64_t K, int64_t V, int64_t C) {
  const SgemmFn mm = sgemm();
  Chunk ch(C, K, V, false);
  for (int64_t r0 = 0, n = 0; r0 < L; r0 += C, ++n) {
    if (states) std::copy(S, S + K * V, states + n * K * V);
    const int64_t c = std::min(C, L - r0), R = 2 * V + K;
    ch.compute(q + r0 * K, k + r0 * K, v + r0 * V, g + r0, beta + r0, c);
    float* U = ch.U.data();
    float* rows = states ? states + ((L + C - 1) / C) * K * V + r0 * R : nullptr;
    if (rows)
      for (int64_t r = 0; r < c; ++r) {
        std::copy(&U[r * V], &U[r * V] + V, rows + r * R);
        std::copy(&ch.W[r * K], &ch.W[r * K] + K, rows + r * R + V);
      }
    // Vnew = U - W S;  O = Qp S + Aqk Vnew;  S = exp(glast) S + Kp^T Vnew.
    mm('N', 'N', c, V, K, -1.f, ch.W.data(), K, S, V, 1.f, U, V);
    if (rows)
      for (int64_t r = 0; r < c; ++r) std::copy(&U[r * V], &U[r * V] + V, rows + r * R + V + K);
    float* oc = out + r0 * V;
    mm('N', 'N', c, V, K, 1.f, ch.Qp.data(), K, S, V, 0.f, oc, V);
    mm('N', 'N', c, V, c, 1.f, ch.Aqk.data(), c, U, V, 1.f, oc, V);
    const float dl = std::exp(ch.glast);
    for (int64_t i = 0; i < K * V; ++i) S[i] *= dl;
    mm('T', 'N', K, V, c, 1.f, ch.Kp.data(), K, U, V, 1.f, S, V);
  }
}

// Backward, one head. `states` as saved by head_forward; dout [L, V]; dS [K, V]: in, the
// gradient of the final state; out, the gradient of the initial state. Writes dq, dk [L, K],
// dv [L, V], dg, dbeta [L] unless dq is null (only the initial state's gradient wanted).
void head_backward(const float* q, const float* k, const float* v, const float* g, const float* beta,
                   const float* states, const float* dout, float* dS, float* dq, float* dk, float* dv, float* dg,
                   float* dbeta, int64_t L, int64_t K, int64_t V, int64_t C) {
  const SgemmFn mm = sgemm();
  Chunk ch(C, K, V, true);
  // Products are fused where operands can sit side by side: [U | W], [dU | dW], [dX | dY]
  // are [c, V + K] (row stride P); [dA; dAqk] is [2c, c]; [kb; q] and [dkb; dq'] are [2c, K].
  const int64_t P = V + K;
  std::vector<float> T(C * C), dUW(C * P), dXY(C * P), dAA(2 * C * C);
  std::vector<float> dQp(C * K), dKp(C * K), KBQ(2 * C * K), DKQ(2 * C * K);
  std::vector<double> dgam(C), colsum(C);
  const int64_t N = (L + C - 1) / C;
  for (int64_t n = N - 1; n >= 0; --n) {
    const int64_t r0 = n * C, c = std::min(C, L - r0);
    const float *qc = q + r0 * K, *kc = k + r0 * K, *vc = v + r0 * V, *S = states + n * K * V;
    const int64_t R = 2 * V + K;  // saved rows [U | W | Vn]
    const float* UW = states + N * K * V + r0 * R;
    const float* dO = dout + r0 * V;
    float *dqc = dq + r0 * K, *dkc = dk + r0 * K, *dvc = dv + r0 * V;
    // The chunk's intra-chunk quantities (U, W and Vn = U - W S come saved from the forward);
    // T = (I + A)^-1 for the solves' backward.
    ch.compute(qc, kc, vc, g + r0, beta + r0, c, /*solve=*/false);
    ch.inverse(T.data());
    const float *W = UW + V, *Vn = UW + V + K, *A = ch.A.data(), *Aqk = ch.Aqk.data(), *D = ch.D.data();
    float *dU = dUW.data(), *dW = dUW.data() + V, *dA = dAA.data(), *dAqk = dAA.data() + c * c;

    // Through O = Qp S + Aqk Vn and S' = exp(glast) S + Kp^T Vn (dS holds dS').
    // dVn = Aqk^T dO + Kp dS'  (= dU: the gradient of U is that of Vn)
    mm('T', 'N', c, V, c, 1.f, Aqk, c, dO, V, 0.f, dU, P);
    mm('N', 'N', c, V, K, 1.f, ch.Kp.data(), K, dS, V, 1.f, dU, P);
    const float dl = std::exp(ch.glast);
    double dglast = 0.0;
    if (dq) {
      mm('N', 'T', c, c, V, 1.f, dO, V, Vn, R, 0.f, dAqk, c);                     // dAqk = dO Vn^T
      mm('N', 'T', c, K, V, 1.f, dO, V, S, V, 0.f, dQp.data(), K);                // dQp = dO S^T
      mm('N', 'T', c, K, V, 1.f, Vn, R, dS, V, 0.f, dKp.data(), K);               // dKp = Vn dS'^T
      mm('N', 'T', c, K, V, -1.f, dU, P, S, V, 0.f, dW, P);                       // dW = -dVn S^T
      dglast = dl * dot(S, dS, K * V);
    }
    // dS = exp(glast) dS' + Qp^T dO - W^T dVn.
    for (int64_t i = 0; i < K * V; ++i) dS[i] *= dl;
    mm('T', 'N', K, V, c, 1.f, ch.Qp.data(), K, dO, V, 1.f, dS, V);
    mm('T', 'N', K, V, c, -1.f, W, R, dU, P, 1.f, dS, V);
    if (!dq) continue;

    // Through the solves U = (I+A)^-1 X, W = (I+A)^-1 Y: [dX | dY] = (I+A)^-T [dU | dW]
    // (a product with T^T), dA = -(dX U^T + dY W^T) on the strict lower triangle.
    mm('T', 'N', c, P, c, 1.f, T.data(), c, dUW.data(), P, 0.f, dXY.data(), P);
    mm('N', 'T', c, c, P, -1.f, dXY.data(), P, UW, R, 0.f, dA, c);
    const float *dX = dXY.data(), *dY = dXY.data() + V;

    // Through the decayed products A = (kb k^T) o D, Aqk = (q k^T) o D: the decay's share goes
    // to gam (d log D[r,s] = d gam_r - d gam_s), the rest becomes dA o D, dAqk o D (in place).
    std::fill(colsum.begin(), colsum.begin() + c, 0.0);
    for (int64_t r = 0; r < c; ++r) {
      double row = 0.0;
      for (int64_t s = 0; s < c; ++s) {
        const int64_t i = r * c + s;
        if (s > r) {
          dA[i] = dAqk[i] = 0.f;
          continue;
        }
        const double p = (s < r ? double(dA[i]) * A[i] : 0.0) + double(dAqk[i]) * Aqk[i];
        row += p, colsum[s] += p;
        dA[i] = s < r ? dA[i] * D[i] : 0.f;
        dAqk[i] *= D[i];
      }
      dgam[r] = row;
    }
    // [d(kb); dq'] = [dA; dAqk] k;  dk' = [dA; dAqk]^T [kb; q] = dA^T kb + dAqk^T q.
    std::copy(ch.kb.data(), ch.kb.data() + c * K, KBQ.data());
    std::copy(qc, qc + c * K, KBQ.data() + c * K);
    mm('N', 'N', 2 * c, K, c, 1.f, dAA.data(), c, kc, K, 0.f, DKQ.data(), K);
    mm('T', 'N', c, K, 2 * c, 1.f, dAA.data(), c, KBQ.data(), K, 0.f, dkc, K);
    const float *dkb = DKQ.data(), *dqa = DKQ.data() + c * K;

    // Row scalings: kb = beta k, Y = beta exp(gam) k, X = beta v, Qp = exp(gam) q,
    // Kp = exp(glast - gam) k.
    for (int64_t r = 0; r < c; ++r) {
      const float b = beta[r0 + r], e = ch.e[r], el = ch.el[r];
      const int64_t x = r * K;
      const float *dXr = dX + r * P, *dYr = dY + r * P;
      const double sY = dot(dYr, kc + x, K), skb = dot(&dkb[x], kc + x, K);
      const double sQ = dot(&dQp[x], &ch.Qp[x], K), sK = dot(&dKp[x], &ch.Kp[x], K);
      const double sX = dot(dXr, vc + r * V, V);
      for (int64_t i = 0; i < K; ++i) {
        dqc[x + i] = dqa[x + i] + e * dQp[x + i];
        dkc[x + i] += b * dkb[x + i] + b * e * dYr[i] + el * dKp[x + i];
      }
      for (int64_t j = 0; j < V; ++j) dvc[r * V + j] = b * dXr[j];
      dbeta[r0 + r] = float(sX + e * sY + skb);
      dgam[r] += -colsum[r] + b * e * sY + sQ - sK;
      dglast += sK;
    }
    dgam[c - 1] += dglast;  // glast = gam_{c-1}
    double acc = 0.0;       // gam = cumsum(g): dg = reverse cumsum of dgam
    for (int64_t r = c - 1; r >= 0; --r) dg[r0 + r] = float(acc += dgam[r]);
  }
}

// fn(h) for h in [0, n) on the intra-op threads, denormals flushed. Heads are handed out one
// at a time (not in fixed blocks), so a thread that the OS deschedules on a busy machine
// does not hold the others up.
template <typename Fn>
void for_each_head(int64_t n, const Fn& fn) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(n, at::get_num_threads());
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    FlushDenormals ftz;
    for (int64_t h; (h = next.fetch_add(1)) < n;) fn(h);
  });
}

struct Inputs {
  Tensor q, k, v, g, beta;
  Inputs(const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& g_, const Tensor& b_)
      : q(q_.contiguous()), k(k_.contiguous()), v(v_.contiguous()), g(g_.contiguous()), beta(b_.contiguous()) {}
};

// Runs the forward for all heads; `states` (optional) is [B, H, N K V + L (2V + K)]: per
// head, what head_forward saves.
GdrResult run_forward(const Inputs& in, const Tensor& state0, int64_t C, Tensor* states) {
  const int64_t B = in.q.size(0), H = in.q.size(1), L = in.q.size(2), K = in.q.size(3), V = in.v.size(3);
  Tensor S = state0.defined() ? state0.contiguous().clone() : at::zeros({B, H, K, V}, in.q.options());
  Tensor out = at::empty({B, H, L, V}, in.v.options());
  const int64_t N = (L + C - 1) / C;
  const int64_t per_head = N * K * V + L * (2 * V + K);
  if (states) *states = at::empty({B, H, per_head}, in.q.options());
  const float *qp = in.q.data_ptr<float>(), *kp = in.k.data_ptr<float>(), *vp = in.v.data_ptr<float>();
  const float *gp = in.g.data_ptr<float>(), *bp = in.beta.data_ptr<float>();
  float *sp = S.data_ptr<float>(), *op = out.data_ptr<float>();
  float* stp = states ? states->data_ptr<float>() : nullptr;
  for_each_head(B * H, [&](int64_t h) {
    head_forward(qp + h * L * K, kp + h * L * K, vp + h * L * V, gp + h * L, bp + h * L, sp + h * K * V,
                 op + h * L * V, stp ? stp + h * per_head : nullptr, L, K, V, C);
  });
  return {out, S};
}

struct GdrFunction : public torch::autograd::Function<GdrFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& q,
                                                const Tensor& k, const Tensor& v, const Tensor& g,
                                                const Tensor& beta, const Tensor& state0, int64_t C,
                                                bool has_state0) {
    Inputs in(q, k, v, g, beta);
    Tensor states;
    GdrResult r = run_forward(in, state0, C, &states);
    ctx->save_for_backward({in.q, in.k, in.v, in.g, in.beta, states});
    ctx->saved_data["C"] = C;
    ctx->saved_data["has_state0"] = has_state0;
    return {r.out, r.state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &g = saved[3], &beta = saved[4], &states = saved[5];
    const int64_t C = ctx->saved_data["C"].toInt();
    bool inputs_grad = false;  // q, k, v, g, beta (S0 training's first layer wants none)
    for (size_t i = 0; i < 5; ++i) inputs_grad = inputs_grad || ctx->needs_input_grad(i);
    const int64_t B = q.size(0), H = q.size(1), L = q.size(2), K = q.size(3), V = v.size(3), per_head = states.size(2);
    Tensor dout = grads[0].defined() ? grads[0].contiguous() : at::zeros({B, H, L, V}, v.options());
    Tensor dS = grads[1].defined() ? grads[1].contiguous().clone() : at::zeros({B, H, K, V}, v.options());
    Tensor dq, dk, dv, dg, db;
    if (inputs_grad)
      dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v), dg = at::empty_like(g),
      db = at::empty_like(beta);
    auto ptr = [](Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
    auto at_h = [](float* p, int64_t off) { return p ? p + off : nullptr; };
    const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
    const float *gp = g.data_ptr<float>(), *bp = beta.data_ptr<float>(), *stp = states.data_ptr<float>();
    const float* dop = dout.data_ptr<float>();
    float *dsp = dS.data_ptr<float>(), *dqp = ptr(dq), *dkp = ptr(dk), *dvp = ptr(dv), *dgp = ptr(dg),
          *dbp = ptr(db);
    for_each_head(B * H, [&](int64_t h) {
      head_backward(qp + h * L * K, kp + h * L * K, vp + h * L * V, gp + h * L, bp + h * L, stp + h * per_head,
                    dop + h * L * V, dsp + h * K * V, at_h(dqp, h * L * K), at_h(dkp, h * L * K),
                    at_h(dvp, h * L * V), at_h(dgp, h * L), at_h(dbp, h * L), L, K, V, C);
    });
    if (!ctx->saved_data["has_state0"].toBool()) dS = Tensor();
    return {dq, dk, dv, dg, db, dS, Tensor(), Tensor()};
  }
};

}  // namespace

bool gdr_fast_available() { return sgemm() != nullptr; }  // oneDNN found, or AVX-512

void gdr_sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  (has_avx512() ? avx512_sgemm : sgemm())(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

GdrResult gated_delta_rule_chunked_fast(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                        const Tensor& beta, const Tensor& state0, int64_t C) {
  NoGrad ng;
  return run_forward(Inputs(q, k, v, g, beta), state0, C, nullptr);
}

GdrResult gated_delta_rule_chunked_fast_grad(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                             const Tensor& beta, const Tensor& state0, int64_t C) {
  TORCH_CHECK(q.size(2) > 0, "gated_delta_rule_chunked_fast_grad: empty sequence");
  // libtorch 1.13's custom Functions take no undefined tensors: zeros stand in (no gradient).
  const bool has_state0 = state0.defined();
  Tensor s0 = has_state0 ? state0 : at::zeros({q.size(0), q.size(1), q.size(3), v.size(3)}, q.options());
  auto r = GdrFunction::apply(q, k, v, g, beta, s0, C, has_state0);
  return {r[0], r[1]};
}

}  // namespace s0::nn
