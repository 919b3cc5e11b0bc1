#include "s0/nn/linear.h"

#include <cpuid.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/csrc/autograd/custom_function.h>

#include "s0/nn/activations.h"
#include "s0/nn/amx_layout.h"
#include "s0/nn/simd.h"
#include "s0/util/huge_pages.h"

namespace s0::nn {

namespace {

bool has_avx512bf16() { return simd::cpu_avx512f() && simd::cpu_avx512bf16(); }

bool has_avx512() { return simd::cpu_avx512f() && simd::cpu_avx512bw(); }

using simd::bf16_to_f32;

// Every kernel below computes rows [r0, r1) of y = x W^T for M input rows x [M, K] at once
// (y [M, N]). Each (input row, output row) pair is computed by exactly the same sequence of
// operations whatever M is, so a batched call is bitwise equal to M single-row calls; the
// batch only changes how often a block of weight rows is re-read from cache instead of
// memory (the decode throughput win of batching).

// An element as fp32: f32 as it is, bf16 (its bits) widened exactly.
inline float as_f32(float v) { return v; }
inline float as_f32(uint16_t v) { return bf16_to_f32(v); }

// One output with one fp32 accumulator over k in order: the portable fallback's every output,
// and the rows past a vector kernel's last whole group of 4. Never inlined (and compiled for
// the baseline ISA), so no multiply and add fuse and the result is the same wherever it is
// called from.
template <typename X, typename W>
__attribute__((noinline)) float dot_in_order(const X* x, const W* w, int64_t K) {
  float acc = 0.f;
  for (int64_t k = 0; k < K; ++k) acc += as_f32(w[k]) * as_f32(x[k]);
  return acc;
}

// Portable fallback: fp32 accumulation, one output at a time.
template <typename X, typename W>
void gemv_rows_generic(const X* x, int64_t M, const W* w, float* y, int64_t N, int64_t r0, int64_t r1, int64_t K) {
  for (int64_t n = r0; n < r1; ++n)
    for (int64_t m = 0; m < M; ++m) y[m * N + n] = dot_in_order(x + m * K, w + n * K, K);
}

__attribute__((target("avx512f,avx512bw"))) inline __m512 load_bf16x16(const uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Rows [r0, r1) of a bf16 matrix, 4 rows per pass (4 independent accumulator streams).
__attribute__((target("avx512f,avx512bw"))) void gemv_bf16_avx512(const float* x, int64_t M, const uint16_t* w,
                                                                   float* y, int64_t N, int64_t r0, int64_t r1,
                                                                   int64_t K) {
  const int64_t K16 = K & ~int64_t(15);
  int64_t n = r0;
  for (; n + 4 <= r1; n += 4) {
    const uint16_t* a = w + n * K;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (int64_t k = 0; k < K16; k += 16) {
        __m512 xv = _mm512_loadu_ps(xm + k);
        s0 = _mm512_fmadd_ps(load_bf16x16(a + k), xv, s0);
        s1 = _mm512_fmadd_ps(load_bf16x16(a + K + k), xv, s1);
        s2 = _mm512_fmadd_ps(load_bf16x16(a + 2 * K + k), xv, s2);
        s3 = _mm512_fmadd_ps(load_bf16x16(a + 3 * K + k), xv, s3);
      }
      float r[4] = {_mm512_reduce_add_ps(s0), _mm512_reduce_add_ps(s1), _mm512_reduce_add_ps(s2),
                    _mm512_reduce_add_ps(s3)};
      for (int64_t k = K16; k < K; ++k)
        for (int j = 0; j < 4; ++j) r[j] += bf16_to_f32(a[j * K + k]) * xm[k];
      for (int j = 0; j < 4; ++j) y[m * N + n + j] = r[j];
    }
  }
  gemv_rows_generic(x, M, w, y, N, n, r1, K);
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline __m512bh ld(const uint16_t* p) {
  return (__m512bh)_mm512_loadu_si512(p);
}

// bf16 x bf16 pair dot products accumulated in fp32 (VDPBF16PS), 32 elements per step;
// x is the layer input, already bf16 in a bf16 model. R input rows share each load of J
// weight rows (register blocking); every (input row, weight row) accumulator sees the same
// instruction sequence for any R and J, so results depend on neither (nor on the batch).
// Results go to y[r + j * ldc] (input row r, weight row j): the fused products' [weight
// row][batch row] block. Prefetch: during
// k-step i, lines [i c, i c + c) of the pf_lines 64-byte lines from pf (none when c = 0).
template <int R, int J = 4>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void dp_block(const uint16_t* x, const uint16_t* a,
                                                                            float* y, int64_t ldc,
                                                                            int64_t K, const char* pf = nullptr,
                                                                            int64_t c = 0, int64_t pf_lines = 0) {
  const int64_t K32 = K & ~int64_t(31);
  __m512 s[R][J];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) s[r][j] = _mm512_setzero_ps();
  for (int64_t k = 0, i = 0; k < K32; k += 32, ++i) {
    for (int64_t l = i * c; l < std::min(i * c + c, pf_lines); ++l) _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
    __m512bh w[J];
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) w[j] = ld(a + j * K + k);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512bh xv = ld(x + r * K + k);
#pragma GCC unroll 8
      for (int j = 0; j < J; ++j) s[r][j] = _mm512_dpbf16_ps(s[r][j], w[j], xv);
    }
  }
  for (int r = 0; r < R; ++r) {
    const uint16_t* xm = x + r * K;
    for (int j = 0; j < J; ++j) {
      float o = _mm512_reduce_add_ps(s[r][j]);
      for (int64_t k = K32; k < K; ++k) o += bf16_to_f32(a[j * K + k]) * bf16_to_f32(xm[k]);
      y[r + j * ldc] = o;
    }
  }
}

// All M batch rows against one weight row a (4 per pass, then the 1-3 left): the weight row is
// loaded once per pass and read as one sequential stream. Results to y[m] (m < M).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void dp_one_row(const uint16_t* x, int64_t M,
                                                                              const uint16_t* a, float* y,
                                                                              int64_t ldc, int64_t K) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) dp_block<4, 1>(x + m * K, a, y + m, ldc, K);
  if (M - m == 3) dp_block<3, 1>(x + m * K, a, y + m, ldc, K);
  else if (M - m == 2) dp_block<2, 1>(x + m * K, a, y + m, ldc, K);
  else if (M - m == 1) dp_block<1, 1>(x + m * K, a, y + m, ldc, K);
}

// ---- AMX (Intel Advanced Matrix Extensions) ------------------------------------------------
//
// C^T = W X^T in 16 x 16 fp32 tiles: the weight block is the tiles' A operand, loaded as it
// lies in memory (16 weight rows x 32 k, row stride K), and the batch rows are the B
// operand, packed once per call into the pair-interleaved layout TDPBF16PS wants (zero rows
// pad M up to 16). Each output element is accumulated by TDPBF16PS over the k-blocks in
// order 0, 1, ..., K/32 - 1 from a zeroed tile, an element's arithmetic involving only its
// own weight row and input row: the same instructions for any M, any grouping of rows into
// tiles and any split across threads, so the batch is bitwise equal to its rows alone on
// this path too. Used for every M (one row included) when it is used at all, so that a
// request alone and in a batch take the same path.

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// LDTILECFG through an asm statement that names all 64 bytes of the configuration: GCC 12's
// _tile_loadconfig names only its first 8 bytes as the operand, which lets the compiler
// drop or sink the stores that fill the rest (a stand-alone test of the same code at -O2
// faulted in ldtilecfg; with this asm it ran).
inline void load_tile_config(const TileConfig& cfg) { asm volatile("ldtilecfg %0" ::"m"(cfg)); }

bool amx_usable() {
  static const bool v = [] {
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) return false;
    // Linux hands out the tile data state only on request (ARCH_REQ_XCOMP_PERM for
    // XFEATURE_XTILEDATA); granted for the whole process.
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return v;
}

// The starting kernel: S0_DECODE_KERNEL in the environment, else kAuto.
DecodeKernel kernel_from_env() {
  const char* v = std::getenv("S0_DECODE_KERNEL");
  if (!v || !*v) return DecodeKernel::kAuto;
  if (auto k = parse_decode_kernel(v)) return *k;
  std::fprintf(stderr, "s0: S0_DECODE_KERNEL=%s is not auto, avx512 or pairs; using auto\n", v);
  return DecodeKernel::kAuto;
}

std::atomic<DecodeKernel> g_kernel{kernel_from_env()};
std::atomic<RowWalk> g_walk{RowWalk::kAuto};
std::atomic<bool> g_split_rows{true};

// AMD family 19h: Zen 3 and Zen 4, of which only Zen 4 has AVX-512 (so reaches the kernels
// that ask).
bool amd_family_19h() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
  const bool amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163;  // "AuthenticAMD"
  if (!amd || !__get_cpuid(1, &a, &b, &c, &d)) return false;
  const unsigned base = (a >> 8) & 0xF, ext = (a >> 20) & 0xFF;
  return (base == 0xF ? base + ext : base) == 0x19;
}

RowWalk resolved_row_walk() {
  const RowWalk w = g_walk.load(std::memory_order_relaxed);
  return w == RowWalk::kAuto ? auto_row_walk() : w;
}

// AMX takes the products of bf16 weights whose K is a whole number of 32-element k-blocks,
// unless the AVX-512 kernel was asked for. The choice depends on the weight only (never on M).
bool amx_applies(int64_t K) {
  return K > 0 && K % 32 == 0 && g_kernel.load(std::memory_order_relaxed) == DecodeKernel::kAuto && amx_usable();
}

// Weight rows [n0, n0 + 16 * NT) (NT = 1 or 2 tiles of 16, `a` pointing at row n0 with row
// stride lda elements) against the batch's m-blocks [mb0, mb0 + MT) (MT = 1 or 2). The fp32
// results go to ct, [weight row][batch row] with row stride ldc = 16 x the m-blocks, m-block
// b from column 16 b (each is one tile store; amx::store_block transposes them into y).
// [head, head + head_rows rows): the next block's rows, whose first lines are prefetched
// during the last k-steps (head_rows 0: none). No other software prefetch: prefetching the
// whole next block into L2 during the first m-pass (above 32 batch rows) cost 10-20% of the
// 64-row rate here (bench_gemv, 4096 x 1024: ~750 -> ~850 GFLOP/s without it).
constexpr int64_t kHeadLines = 4;

template <int NT, int MT>
__attribute__((target("amx-tile,amx-bf16"))) void amx_block(const uint16_t* a, int64_t lda, const uint32_t* xp,
                                                             int64_t KB, int64_t bw, int64_t mb0, float* ct,
                                                             int64_t ldc, const char* head, int64_t head_rows) {
  _tile_zero(0);
  if (MT > 1) _tile_zero(1);
  if (NT > 1) _tile_zero(2);
  if (NT > 1 && MT > 1) _tile_zero(3);
  const int64_t bstep = 16 * bw;  // one B tile
  const uint32_t* b0 = xp + mb0 * KB * bstep;
  const uint32_t* b1 = b0 + KB * bstep;
  const int64_t stride = lda * 2;
  for (int64_t j = 0; j < KB; ++j) {
    if (const int64_t l = j - (KB - kHeadLines); head_rows > 0 && l >= 0)
      for (int64_t r = 0; r < head_rows; ++r) _mm_prefetch(head + r * stride + 64 * l, _MM_HINT_T0);
    _tile_loadd(4, a + 32 * j, stride);
    _tile_loadd(6, b0 + bstep * j, bw * 4);
    _tile_dpbf16ps(0, 4, 6);
    if (MT > 1) {
      _tile_loadd(7, b1 + bstep * j, bw * 4);
      _tile_dpbf16ps(1, 4, 7);
    }
    if (NT > 1) {
      _tile_loadd(5, a + 16 * lda + 32 * j, stride);
      _tile_dpbf16ps(2, 5, 6);
      if (MT > 1) _tile_dpbf16ps(3, 5, 7);
    }
  }
  float* c = ct + 16 * mb0;
  _tile_stored(0, c, ldc * 4);
  if (MT > 1) _tile_stored(1, c + 16, ldc * 4);
  if (NT > 1) _tile_stored(2, c + 16 * ldc, ldc * 4);
  if (NT > 1 && MT > 1) _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
}

// amx::Epilogue's f32 counterpart: out_scale, column scale and residual, in f32.
struct F32Epilogue {
  bool has_scale = false;
  float scale = 1;
  const float* col = nullptr;       // [N]
  const float* residual = nullptr;  // [M, N]
};

// One weight of a call: y [M, N] = x W^T, W [N, K]; its rows are rows [first, first + N) of
// the call's rows (all its weights' rows, one after the other).
struct ProductJob {
  const uint16_t* w;
  uint16_t* y;
  int64_t N, first;
  const uint32_t* xp;  // AMX: the packed rows this weight multiplies
  const uint16_t* x;   // VDPBF16PS: the rows themselves, [M, K]
  const uint16_t* wp = nullptr;  // kPairs: the weight in k-pair blocks (pair_weight)
  amx::Epilogue epi;
  // f32 weights (the AVX-512 FMA kernel): the weight, rows, output and epilogue in f32.
  const float* wf = nullptr;
  const float* xf = nullptr;
  float* yf = nullptr;
  F32Epilogue fepi;
};

// The call's rows (the jobs' weight rows one after another, `total` in all), claimed by the
// threads in chunks as they ask. Each thread has a home range, one contiguous share of the
// rows, which it claims front to back; a thread whose range is empty takes chunks from the
// back of the others' ranges. So that one memory stream per thread runs as far as it can
// (one shared cursor handed the threads alternate chunks: 5-8% slower at one batch row on a
// Zen 5 streaming 70+ GB/s), and the threads still finish together when one starts late or
// runs slow. Chunks are 128 rows while plenty are left, then smaller (down to 32, a whole
// number of 16-row tiles and 4-row groups): one thread's last 128-row chunk could otherwise
// leave the other waiting for it (25-90 us at one batch row, by K). A chunk lies in one job
// and starts a multiple of 32 rows into its weight, whatever the thread count, so every
// weight row goes through the same 32-row block whoever computes it.
class RowClaims {
 public:
  // One share per thread (one for all under set_split_rows(false): every thread then claims
  // from its front, as from one cursor).
  RowClaims(const std::vector<ProductJob>& jobs, int64_t total, int64_t nt)
      : RowClaims(jobs, total, split_rows() ? std::max<int64_t>(nt, 1) : int64_t{1}, 0) {}

  // Every chunk this thread claims, run(job, r0, r1) with weight rows [r0, r1) of the job:
  // its home share first, then the others' leftovers. Any number of callers may share the
  // work (a caller already inside a parallel region runs it all alone).
  template <class Run>
  void run(Run&& run) {
    const int64_t k = shares_.count(), home = at::get_thread_num() % k;
    int64_t a, b;
    auto chunk = [&] {
      const ProductJob& j = job_of(a);
      run(j, a - j.first, b - j.first);
    };
    // From the front: up to `want` rows, to the end of the job at most.
    auto front = [&](int64_t lo, int64_t hi) {
      const ProductJob& j = job_of(lo);
      return std::min({lo + want(lo, hi), hi, j.first + j.N});
    };
    while (shares_.front(home, front, a, b)) chunk();
    // From the back: the block start at or after max(lo, job start, hi - want) in the job
    // of row hi - 1. lo and a job's start are block starts; a share's end is a block start
    // or its job's end.
    auto back = [&](int64_t lo, int64_t hi) {
      const ProductJob& j = job_of(hi - 1);
      const int64_t from = std::max({lo, j.first, hi - want(lo, hi)});
      return j.first + (from - j.first + 31) / 32 * 32;
    };
    for (int64_t i = 1; i < k; ++i)
      while (shares_.back((home + i) % k, back, a, b)) chunk();
  }

 private:
  // k shares, the borders rounded down to a block start of the weight they fall in.
  RowClaims(const std::vector<ProductJob>& jobs, int64_t total, int64_t k, int)
      : jobs_(jobs), shares_(k, [&](int64_t t) {
          if (t == 0) return int64_t{0};
          if (t == k) return total;
          const ProductJob& j = job_of(total * t / k);
          return j.first + (total * t / k - j.first) / 32 * 32;
        }) {}
  // Half of what the share has left (two threads may be taking from it), 32 to 128 rows.
  static int64_t want(int64_t lo, int64_t hi) { return std::clamp<int64_t>((hi - lo) / 2 / 32 * 32, 32, 128); }
  const ProductJob& job_of(int64_t row) const {
    auto it = std::upper_bound(jobs_.begin(), jobs_.end(), row,
                               [](int64_t r, const ProductJob& j) { return r < j.first; });
    return *(it - 1);
  }

  const std::vector<ProductJob>& jobs_;
  Shares shares_;
};

// RowClaims::run, then each claimed chunk in blocks of up to 32 weight rows (the unit of the
// AVX-512 kernels' results buffer and stores): run(job, n0, nrows, r1), rows [n0, n0 + nrows)
// of the job, r1 the chunk's end.
template <class Run>
inline void claim_blocks(RowClaims& claims, Run&& run) {
  claims.run([&](const ProductJob& job, int64_t r0, int64_t r1) {
    for (int64_t n0 = r0; n0 < r1; n0 += 32) run(job, n0, std::min<int64_t>(32, r1 - n0), r1);
  });
}

// One block's results, [32 weight rows][ldc batch rows] (f32), written into y after the block.
inline float* block_buffer(int64_t ldc) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < 32 * ldc) buf.resize(32 * ldc);
  return buf.data();
}

__attribute__((target("amx-tile,amx-bf16"))) void gemv_bf16_amx(int64_t M, int64_t bw, int64_t K,
                                                                RowClaims& claims) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.rows[t] = 16;
  for (int t : {0, 1, 2, 3, 6, 7}) cfg.colsb[t] = static_cast<uint16_t>(4 * bw);  // C and B tiles
  cfg.colsb[4] = cfg.colsb[5] = 64;                                                // A: 32 bf16 k
  load_tile_config(cfg);
  const int64_t KB = K / 32, MB = (M + bw - 1) / bw, ldc = 16 * MB;
  // Weight rows per block (measured with bench_gemv): 16 below 16 batch rows and at 17-32
  // (half as many rows streamed side by side, which the hardware prefetcher follows better:
  // +5-15% of bandwidth at 1 and 32 rows here); 32 at exactly one full m-block (two A tiles
  // per B tile, a few % better there) and above 32 rows.
  const int64_t block = (MB == 1 && bw == 16) || MB > 2 ? 32 : 16;
  float* ct = block_buffer(ldc);
  claims.run([&](const ProductJob& job, int64_t r0, int64_t r1) {
    const uint16_t* w = job.w;
    auto run = [&](const uint16_t* a, int64_t lda, int64_t n, int64_t nrows) {
      const bool two_n = nrows > 16;
      float* c = ct;
      // Below 16 batch rows the first lines of the next block's rows are prefetched during the
      // last k-steps, so their streams start before the block does (+3-10% of bandwidth at 1-8
      // rows here; none at 16 or more).
      const int64_t nb = n + nrows;  // the next block's first row
      const int64_t head_rows = bw < 16 && KB >= kHeadLines ? std::min(block, r1 - std::min(nb, r1)) : 0;
      const char* head = reinterpret_cast<const char*>(w + std::min(nb, r1) * K);
      // m-passes in pairs of m-blocks.
      for (int64_t mb = 0; mb < MB; mb += 2) {
        const bool pair = mb + 2 <= MB;
        if (two_n)
          pair ? amx_block<2, 2>(a, lda, job.xp, KB, bw, mb, c, ldc, head, head_rows)
               : amx_block<2, 1>(a, lda, job.xp, KB, bw, mb, c, ldc, head, head_rows);
        else
          pair ? amx_block<1, 2>(a, lda, job.xp, KB, bw, mb, c, ldc, head, head_rows)
               : amx_block<1, 1>(a, lda, job.xp, KB, bw, mb, c, ldc, head, head_rows);
      }
      amx::store_block(ct, ldc, M, nrows, job.y, job.N, n, job.epi);
    };
    int64_t n = r0;
    for (; n + block <= r1; n += block) run(w + n * K, K, n, block);
    if (n + 16 <= r1) run(w + n * K, K, n, 16), n += 16;
    if (n < r1) {
      // A last block of fewer than 16 weight rows: through a zero-padded copy (the rows'
      // arithmetic is unchanged; the padding rows' results are dropped).
      thread_local std::vector<uint16_t> pad;
      pad.assign(16 * K, 0);
      std::memcpy(pad.data(), w + n * K, sizeof(uint16_t) * (r1 - n) * K);
      run(pad.data(), K, n, r1 - n);
    }
  });
  _tile_release();
}

// The same region through VDPBF16PS (AVX-512 BF16; where AMX is not used): each block of
// up to 32 weight rows in groups of 4 (dp_block, 4 batch rows at a time; the rows past the
// last whole group by dot_in_order; a chunk starts a multiple of 32 rows into its weight, so
// a row's group, and so its arithmetic, is the same for any M and thread count), then the
// block's epilogue as the AMX path stores it.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void gemv_bf16_dp_jobs(int64_t M, int64_t K,
                                                                              RowClaims& claims) {
  const int64_t ldc = 16 * ((M + 15) / 16);
  float* ct = block_buffer(ldc);
  // Which weight rows go together (RowWalk in linear.h; never changes a result). One weight
  // row at a time (dp_one_row; every row of the whole groups of 4, the rest as below) reads
  // the weights as one sequential stream per thread. On an AMD Zen 4 here blocking 8 rows
  // side by side reads 8 streams of K elements each, too short for its prefetchers at K =
  // 1024 (0.60-0.68 of a plain streaming sum at one batch row against 0.96-0.98 for one row
  // at a time; bench_engine per round 1.11-1.55x at 4-6 rows, 7 rows 0.95-1.28x); with larger
  // K the input rows crowd the weight row out of L1 (4 rows at K = 3584: 0.75x), and from 8
  // rows the groups below win. On an AMD Zen 5 the 8-row blocks are a little faster at one
  // row (bench_gemv 6144 x 1024, both walks in one run: 1.00-1.07x; bench_engine 1.01-1.06x
  // in three of four rounds) and the two about level at 4-7 rows. At 2-3 rows, where the
  // rows share each weight-row load, one row at a time on both. Otherwise groups of 4 with
  // 4 batch rows per pass, and the next group's lines prefetched, spread over the passes:
  // the hardware prefetcher does not run ahead of a group re-read from L1 pass after pass
  // (+11-37% at 4-16 rows on the Zen 5, about even at 64).
  const bool one_row = resolved_row_walk() == RowWalk::kOneRow;
  const bool by_row = M == 2 || M == 3 || (one_row && (M == 1 || (M < 8 && K <= 2048)));
  const int64_t passes = M / 4, KS = K / 32, lines = K / 8;  // a group of 4 rows: K / 8 lines
  const int64_t c = passes > 0 && KS > 0 ? ((lines + passes - 1) / passes + KS - 1) / KS : 0;
  claim_blocks(claims, [&](const ProductJob& job, int64_t n0, int64_t nrows, int64_t r1) {
    int64_t i = 0;
    if (by_row)
      for (const int64_t whole = nrows / 4 * 4; i < whole; ++i)
        dp_one_row(job.x, M, job.w + (n0 + i) * K, ct + i * ldc, ldc, K);
    else if (M == 1)
      for (; i + 8 <= nrows; i += 8) dp_block<1, 8>(job.x, job.w + (n0 + i) * K, ct + i * ldc, ldc, K);
    for (; i + 4 <= nrows; i += 4) {
      const uint16_t* a = job.w + (n0 + i) * K;
      // The next group's lines, up to the end of the chunk.
      const char* pf = reinterpret_cast<const char*>(a + 4 * K);
      const int64_t pf_lines = std::clamp<int64_t>((r1 - n0 - i - 4) * K / 32, 0, lines);
      int64_t m = 0;
      for (int64_t p = 0; m + 4 <= M; m += 4, ++p)
        dp_block<4>(job.x + m * K, a, ct + i * ldc + m, ldc, K, pf + 64 * p * c * KS, c,
                    std::clamp<int64_t>(pf_lines - p * c * KS, 0, c * KS));
      for (; m < M; ++m) dp_block<1>(job.x + m * K, a, ct + i * ldc + m, ldc, K);
    }
    for (; i < nrows; ++i)
      for (int64_t m = 0; m < M; ++m)
        ct[i * ldc + m] = dot_in_order(job.x + m * K, job.w + (n0 + i) * K, K);
    amx::store_block(ct, ldc, M, nrows, job.y, job.N, n0, job.epi);
  });
}

// ---- k-pair layout (DecodeKernel::kPairs) ---------------------------------------------------
//
// A bf16 weight [N, K] (K even) as blocks of 32 rows: element [b][q][r][e] = w[32 b + r][2 q + e],
// i.e. for each k-pair q the 32 rows' pairs side by side (64 bf16, two vectors), each block
// the same 32 K values as its rows. The last block, where N is not a multiple of 32, is packed
// tight: its t = N % 32 rows' pairs side by side, 2 t bf16 a k-pair, read by masked loads
// (the lanes past t load zeros, as zero rows would). One VDPBF16PS then multiplies
// 16 rows' pairs by one input pair broadcast to every lane: lane i accumulates output row i
// over q = 0, 1, ..., K/2 - 1 from zero, the same instructions for any batch size, block
// grouping or thread, and no horizontal sum at the end.

// R batch rows x J (1 or 2) 16-row panels of one block; results to tb[32 r + 16 j + i] (batch
// row r, weight row 16 j + i). During k-pair q, lines [q c, q c + c) of the pf_lines 64-byte
// lines from pf are prefetched (PF only: without, the loop's body is two loads and two dot
// products a k-pair at one row, and the prefetch's bookkeeping cost 10-15% there). TAIL: a
// tight last block of `width` (< 32) rows, 2 width bf16 a k-pair, loaded under masks.
template <int R, int J, bool PF, bool TAIL = false>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void pair_block(const uint16_t* x, int64_t K,
                                                                              const uint16_t* blk, float* tb,
                                                                              const char* pf, int64_t c,
                                                                              int64_t pf_lines, int64_t width = 32) {
  __m512 s[R][J];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < J; ++j) s[r][j] = _mm512_setzero_ps();
  const int64_t KP = K / 2, step = TAIL ? 2 * width : 64;
  __mmask16 mask[J];
  for (int j = 0; j < J; ++j)
    mask[j] = static_cast<__mmask16>((1u << std::clamp<int64_t>(width - 16 * j, 0, 16)) - 1);
  const uint16_t* wq = blk;
  for (int64_t q = 0; q < KP; ++q, wq += step) {
    if (PF)
      for (int64_t l = q * c; l < std::min(q * c + c, pf_lines); ++l) _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
    __m512bh w[J];
#pragma GCC unroll 2
    for (int j = 0; j < J; ++j)
      w[j] = TAIL ? (__m512bh)_mm512_maskz_loadu_epi32(mask[j], wq + 32 * j) : ld(wq + 32 * j);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, x + r * K + 2 * q, sizeof pair);
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 2
      for (int j = 0; j < J; ++j) s[r][j] = _mm512_dpbf16_ps(s[r][j], w[j], xv);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < J; ++j) _mm512_storeu_ps(tb + 32 * r + 16 * j, s[r][j]);
}

// All M batch rows against one block, results to tb [M][32]: passes of 8 rows (16
// accumulators; 12 rows, 24, measured no faster), then 4, 2, 1. With more than one pass the
// next block (pf, 32 K bytes) is prefetched, spread evenly over the passes: the hardware
// prefetcher does not run ahead while a block is re-read from cache pass after pass. A tight
// last block (width < 32 rows, see above) has no next block to prefetch.
template <int J, bool TAIL = false>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void pair_rows(const uint16_t* x, int64_t M, int64_t K,
                                                                             const uint16_t* blk, float* tb,
                                                                             const char* pf, int64_t width = 32) {
  if (TAIL) pf = nullptr;
  const int64_t passes = M / 8 + (M % 8 >= 4) + (M % 4 >= 2) + (M % 2);
  const int64_t KP = K / 2, lines = pf && passes > 1 ? K : 0, per = (lines + passes - 1) / passes;
  const int64_t c = KP > 0 ? (per + KP - 1) / KP : 0;
  int64_t m = 0, p = 0;
  auto pass = [&](auto rows) {
    constexpr int R = decltype(rows)::value;
    const int64_t n = std::clamp<int64_t>(lines - p * per, 0, per);
    if (TAIL)
      pair_block<R, J, false, true>(x + m * K, K, blk, tb + 32 * m, nullptr, 0, 0, width);
    else if (n > 0)
      pair_block<R, J, true>(x + m * K, K, blk, tb + 32 * m, pf + 64 * p * per, c, n);
    else
      pair_block<R, J, false>(x + m * K, K, blk, tb + 32 * m, nullptr, 0, 0);
    m += R, ++p;
  };
  while (m + 8 <= M) pass(std::integral_constant<int, 8>{});
  if (M - m >= 4) pass(std::integral_constant<int, 4>{});
  if (M - m >= 2) pass(std::integral_constant<int, 2>{});
  if (M - m >= 1) pass(std::integral_constant<int, 1>{});
}

// tb [M][32] (batch row, weight row) into ct [32][ldc] (weight row, batch row), the layout
// amx::store_block reads: 16 x 16 transposes, or below 4 batch rows plain copies.
__attribute__((target("avx512f"))) inline void pair_results(const float* tb, int64_t M, int J, float* ct,
                                                           int64_t ldc) {
  if (M < 4) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < 16 * J; ++i) ct[i * ldc + m] = tb[32 * m + i];
    return;
  }
  __m512 r[16];
  for (int64_t m0 = 0; m0 < M; m0 += 16) {
    const int64_t mc = std::min<int64_t>(16, M - m0);
    for (int j = 0; j < J; ++j) {
      for (int64_t i = 0; i < 16; ++i) r[i] = i < mc ? _mm512_loadu_ps(tb + 32 * (m0 + i) + 16 * j) : _mm512_setzero_ps();
      simd::transpose16(r);
      for (int64_t i = 0; i < 16; ++i) _mm512_storeu_ps(ct + (16 * j + i) * ldc + m0, r[i]);
    }
  }
}

// The fused region through the k-pair weights: each claimed chunk (a multiple of 32 rows into
// its weight, at most 128 rows) block by block, each block's results stored with the other
// kernels' epilogue once all batch rows are done. Up to kPairTileRows batch rows go in one
// tile, the next block prefetched while this one is re-read pass after pass; above, the rows
// go in tiles sized to stay in L2 with the chunk's blocks (each tile against every block of
// the chunk; the blocks stay in L2 between tiles): without, every block streamed all M rows
// from L3 (bench_gemv, 4096 x 1024 on a Zen 5: 665 GFLOP/s at 128 rows, 612 at 512, 571 at
// 2048). A row's arithmetic is the same in any tile or pass.
constexpr int64_t kPairTileRows = 128;

__attribute__((target("avx512f,avx512bw,avx512bf16"))) void gemv_bf16_pairs_jobs(int64_t M, int64_t K,
                                                                                 RowClaims& claims) {
  const int64_t ldc = 16 * ((M + 15) / 16);
  // Tiles of a multiple of 16 rows (pair_results transposes 16 at a time) whose rows take
  // about 256 KB.
  const int64_t tile =
      M <= kPairTileRows ? M : std::clamp<int64_t>((256 << 10) / (2 * K) / 16 * 16, 16, kPairTileRows);
  thread_local std::vector<float> tbuf, cbuf;  // a tile's results [rows][32]; the chunk's [block][32][ldc]
  if (static_cast<int64_t>(tbuf.size()) < 32 * tile) tbuf.resize(32 * tile);
  if (static_cast<int64_t>(cbuf.size()) < 4 * 32 * ldc) cbuf.resize(4 * 32 * ldc);
  float* tb = tbuf.data();
  claims.run([&](const ProductJob& job, int64_t r0, int64_t r1) {
    for (int64_t m0 = 0; m0 < M; m0 += tile) {
      const int64_t mt = std::min(tile, M - m0);
      for (int64_t n0 = r0, b = 0; n0 < r1; n0 += 32, ++b) {
        const int64_t nrows = std::min<int64_t>(32, r1 - n0);
        const uint16_t* blk = job.wp + n0 * K;
        const char* pf = tile == M && n0 + 32 < r1 ? reinterpret_cast<const char*>(blk + 32 * K) : nullptr;
        float* ct = cbuf.data() + b * 32 * ldc;
        if (nrows < 32) {  // only the weight's last block can be short
          if (nrows > 16) pair_rows<2, true>(job.x + m0 * K, mt, K, blk, tb, pf, nrows);
          else pair_rows<1, true>(job.x + m0 * K, mt, K, blk, tb, pf, nrows);
        } else if (nrows > 16) {
          pair_rows<2>(job.x + m0 * K, mt, K, blk, tb, pf);
        } else {
          pair_rows<1>(job.x + m0 * K, mt, K, blk, tb, pf);
        }
        pair_results(tb, mt, nrows > 16 ? 2 : 1, ct + m0, ldc);
        if (m0 + mt == M) amx::store_block(ct, ldc, M, nrows, job.y, job.N, n0, job.epi);
      }
    }
  });
}

// Every 32-row block of data (N rows of K bf16) between row order and k-pairs, in place, the
// last N % 32 rows as one tight block of that many rows: a block holds the same values in both
// layouts, so each is copied to a block-sized buffer and written back re-laid.
void relayout_blocks(uint16_t* data, int64_t N, int64_t K, bool to_pairs) {
  const int64_t KP = K / 2;
  at::parallel_for(0, (N + 31) / 32, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint32_t> buf(32 * KP);  // the block as k-pairs (32-bit units)
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t width = std::min<int64_t>(32, N - 32 * b);
      char* blk = reinterpret_cast<char*>(data + b * 32 * K);
      std::memcpy(buf.data(), blk, width * KP * sizeof(uint32_t));
      for (int64_t r = 0; r < width; ++r)
        for (int64_t q = 0; q < KP; ++q) {
          const int64_t rows_at = r * KP + q, pairs_at = q * width + r;
          std::memcpy(blk + 4 * (to_pairs ? pairs_at : rows_at), &buf[to_pairs ? rows_at : pairs_at], 4);
        }
    }
  });
}

// The k-pair copies, one per weight seen (keyed by its data; the entry holds the weight, so
// the address cannot be reused while it is cached, and its version, so an in-place change
// is re-copied). On 2 MB pages where the kernel grants them, as the weights are (unless
// S0_HUGE_PAGES=0, util/huge_pages.h).
struct PairCopy {
  Tensor w;
  int64_t version = 0;
  std::shared_ptr<uint16_t> data;
};
std::mutex g_pairs_mu;
std::unordered_map<const void*, PairCopy> g_pairs;

// The copy of w (made now if there is none or w changed since); the caller holds it while the
// products run, so a concurrent re-copy or clear_pair_weights() cannot free it under them.
std::shared_ptr<uint16_t> pair_weight(const Tensor& w) {
  if (is_pair_layout(w))  // the weight itself, which the caller holds (a pointer owning nothing)
    return std::shared_ptr<uint16_t>(std::shared_ptr<void>(), reinterpret_cast<uint16_t*>(w.data_ptr<at::BFloat16>()));
  std::lock_guard<std::mutex> lock(g_pairs_mu);
  auto it = g_pairs.find(w.data_ptr());
  if (it != g_pairs.end() && it->second.version == static_cast<int64_t>(w._version()) &&
      it->second.w.sizes() == w.sizes())
    return it->second.data;
  const int64_t N = w.size(0), K = w.size(1);
  const size_t bytes = sizeof(uint16_t) * static_cast<size_t>(N * K);
  constexpr size_t kPage = size_t(1) << 21;
  void* mem = std::aligned_alloc(kPage, (bytes + kPage - 1) / kPage * kPage);
  TORCH_CHECK(mem, "kPairs: out of memory for a ", bytes, "-byte weight copy");
  if (util::huge_pages_wanted()) madvise(mem, bytes, MADV_HUGEPAGE);
  std::shared_ptr<uint16_t> data(static_cast<uint16_t*>(mem), [](uint16_t* p) { std::free(p); });
  // The rows, re-laid in place as a weight laid out in its own memory is.
  std::memcpy(data.get(), w.data_ptr<at::BFloat16>(), bytes);
  relayout_blocks(data.get(), N, K, true);
  g_pairs[w.data_ptr()] = {w, static_cast<int64_t>(w._version()), data};
  return data;
}

// f32 x f32 dot products, J weight rows x R input rows, fp32 FMA accumulators over k in
// 16-element steps (each accumulator's instruction sequence independent of R and J); results
// to y[r + j * ldc], as dp_block.
template <int R, int J = 4>
__attribute__((target("avx512f"))) inline void f32_block(const float* x, const float* a, float* y, int64_t ldc,
                                                          int64_t K) {
  const int64_t K16 = K & ~int64_t(15);
  __m512 s[R][J];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) s[r][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K16; k += 16) {
    __m512 w[J];
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) w[j] = _mm512_loadu_ps(a + j * K + k);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_loadu_ps(x + r * K + k);
#pragma GCC unroll 4
      for (int j = 0; j < J; ++j) s[r][j] = _mm512_fmadd_ps(w[j], xv, s[r][j]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const float* xm = x + r * K;
    for (int j = 0; j < J; ++j) {
      float o = _mm512_reduce_add_ps(s[r][j]);
      for (int64_t k = K16; k < K; ++k) o += a[j * K + k] * xm[k];
      y[r + j * ldc] = o;
    }
  }
}

// dp_one_row's f32 counterpart (below 4 batch rows only: at 4 and more the f32 4 x 4 blocks
// were not measured against it).
__attribute__((target("avx512f"))) inline void f32_one_row(const float* x, int64_t M, const float* a, float* y,
                                                            int64_t ldc, int64_t K) {
  if (M == 3) f32_block<3, 1>(x, a, y, ldc, K);
  else if (M == 2) f32_block<2, 1>(x, a, y, ldc, K);
  else if (M == 1) f32_block<1, 1>(x, a, y, ldc, K);
}

// A block's f32 results ct [nrows][ldc] into y [M, N] at column n, each epilogue step one
// f32 operation as the separate op it replaces computes it (nn::scale, nn::mul_last,
// at::add). Not inlined into the FMA-enabled kernels, so that no multiply and add fuse.
__attribute__((noinline)) void store_block_f32(const float* ct, int64_t ldc, int64_t M, int64_t nrows, float* y,
                                               int64_t N, int64_t n, const F32Epilogue& e) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < nrows; ++i) {
      float t = ct[i * ldc + m];
      if (e.has_scale) t = t * e.scale;
      if (e.col) t = t * e.col[n + i];
      if (e.residual) t = e.residual[m * N + n + i] + t;
      y[m * N + n + i] = t;
    }
}

// The fused region for f32 weights: blocks of up to 32 rows, each in groups of 4 (f32_block,
// 4 batch rows at a time, or below 4 batch rows one weight row at a time; the rows past the
// last whole group by dot_in_order; a chunk starts a multiple of 32 rows into its weight, so
// a row's group is the same for any M and thread count), then the epilogue.
__attribute__((target("avx512f"))) void gemv_f32_jobs(int64_t M, int64_t K, RowClaims& claims) {
  const int64_t ldc = M;
  float* ct = block_buffer(ldc);
  // As gemv_bf16_dp_jobs: at 2-3 batch rows one weight row at a time (the rows share each
  // load), at one row as the walk says (level on a Zen 5: bench_gemv --dtype f32 1.00-1.03x),
  // from 4 rows groups of 4 (one row at a time not measured there).
  const bool by_row = M == 2 || M == 3 || (M == 1 && resolved_row_walk() == RowWalk::kOneRow);
  claim_blocks(claims, [&](const ProductJob& job, int64_t n0, int64_t nrows, int64_t) {
    int64_t i = 0;
    for (; i + 4 <= nrows; i += 4) {
      const float* a = job.wf + (n0 + i) * K;
      if (by_row) {  // one weight row at a time, as in gemv_bf16_dp_jobs
        for (int64_t j = 0; j < 4; ++j) f32_one_row(job.xf, M, a + j * K, ct + (i + j) * ldc, ldc, K);
        continue;
      }
      int64_t m = 0;
      for (; m + 4 <= M; m += 4) f32_block<4>(job.xf + m * K, a, ct + i * ldc + m, ldc, K);
      for (; m < M; ++m) f32_block<1>(job.xf + m * K, a, ct + i * ldc + m, ldc, K);
    }
    for (; i < nrows; ++i)
      for (int64_t m = 0; m < M; ++m)
        ct[i * ldc + m] = dot_in_order(job.xf + m * K, job.wf + (n0 + i) * K, K);
    store_block_f32(ct, ldc, M, nrows, job.yf, job.N, n0, job.fepi);
  });
}

// One product of a fused call: y = inputs[input] W^T, W [N, K] bf16 contiguous, then the
// epilogue (amx_layout.h).
struct FusedProduct {
  const Tensor* w;
  size_t input;
  amx::Epilogue epi;                 // bf16
  F32Epilogue fepi;                  // f32
};

// Which kernel takes fused products of weights of dtype dt and inner size K: for bf16 the
// AMX tiles, or VDPBF16PS (AVX-512 BF16, also where AMX exists but the AVX-512 kernel was
// asked for); for f32 the AVX-512 FMA kernel; or none (the ops run one by one). The choice
// depends on the dtype, K, the CPU and whether a weight is in k-pairs (then only the k-pair
// kernel can read it), never on M.
enum class FusedKernel { kNone, kAmx, kDp, kPairs, kF32 };

FusedKernel fused_kernel(at::ScalarType dt, int64_t K, bool pair_laid = false) {
  if (K <= 0) return FusedKernel::kNone;
  if (pair_laid) return dt == at::kBFloat16 && K % 2 == 0 && has_avx512bf16() ? FusedKernel::kPairs : FusedKernel::kNone;
  if (dt == at::kBFloat16) {
    if (amx_applies(K)) return FusedKernel::kAmx;
    if (K % 2 == 0 && g_kernel.load(std::memory_order_relaxed) == DecodeKernel::kPairs && has_avx512bf16())
      return FusedKernel::kPairs;
    if (has_avx512bf16()) return FusedKernel::kDp;
  }
  if (dt == at::kFloat && has_avx512()) return FusedKernel::kF32;
  return FusedKernel::kNone;
}

// The products for inputs [M, K] (contiguous, one M and K, the weights' dtype) through
// kernel `kern` (not kNone): each input packed once (AMX), and one parallel region for all the weights, whose
// rows the threads claim in chunks as they ask.
std::vector<Tensor> fused_products(FusedKernel kern, const std::vector<Tensor>& inputs,
                                   const std::vector<FusedProduct>& ps) {
  const int64_t M = inputs.at(0).size(0), K = inputs.at(0).size(1);
  // AMX: B tiles 16 rows wide, or M wide when the batch is smaller. The packed rows are
  // kept per calling thread between calls (no allocation per product).
  const int64_t bw = std::min<int64_t>(M, 16);
  thread_local std::vector<std::vector<uint32_t>> packed;
  if (kern == FusedKernel::kAmx) {
    const size_t per = 16 * bw * (K / 32) * ((M + bw - 1) / bw);
    if (packed.size() < inputs.size()) packed.resize(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      packed[i].resize(std::max(packed[i].size(), per));
      amx::pack_rows(reinterpret_cast<const uint16_t*>(inputs[i].data_ptr<at::BFloat16>()), M, K, bw,
                     packed[i].data());
    }
  }
  std::vector<Tensor> ys;
  std::vector<ProductJob> jobs;
  std::vector<std::shared_ptr<uint16_t>> held;  // kPairs: the copies, alive until the region ends
  int64_t total = 0;
  for (const FusedProduct& p : ps) {
    const Tensor& w = *p.w;
    // The workers see this thread's buffers through the jobs' pointers.
    ProductJob job{};
    const int64_t N = out_features(w);
    job.N = N, job.first = total;
    if (kern == FusedKernel::kF32) {
      ys.push_back(at::empty({M, N}, at::kFloat));
      job.wf = w.data_ptr<float>(), job.xf = inputs[p.input].data_ptr<float>(), job.yf = ys.back().data_ptr<float>();
      job.fepi = p.fepi;
    } else {
      ys.push_back(at::empty({M, N}, at::kBFloat16));
      job.w = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
      job.y = reinterpret_cast<uint16_t*>(ys.back().data_ptr<at::BFloat16>());
      job.xp = kern == FusedKernel::kAmx ? packed[p.input].data() : nullptr;
      if (kern == FusedKernel::kPairs) {
        held.push_back(pair_weight(w));
        job.wp = held.back().get();
      }
      job.x = reinterpret_cast<const uint16_t*>(inputs[p.input].data_ptr<at::BFloat16>());
      job.epi = p.epi;
    }
    jobs.push_back(job);
    total += N;
  }
  const int64_t nt = std::min<int64_t>(at::get_num_threads(), (total + 31) / 32);
  RowClaims claims(jobs, total, nt);
  at::parallel_for(0, nt, 1, [&](int64_t, int64_t) {
    if (kern == FusedKernel::kAmx)
      gemv_bf16_amx(M, bw, K, claims);
    else if (kern == FusedKernel::kDp)
      gemv_bf16_dp_jobs(M, K, claims);
    else if (kern == FusedKernel::kPairs)
      gemv_bf16_pairs_jobs(M, K, claims);
    else
      gemv_f32_jobs(M, K, claims);
  });
  return ys;
}

std::vector<Tensor> fused_products(FusedKernel kern, const Tensor& x, const std::vector<Tensor>& ws) {
  std::vector<FusedProduct> ps;
  for (const Tensor& w : ws) ps.push_back({&w, 0, {}, {}});
  return fused_products(kern, std::vector<Tensor>{x}, ps);
}

}  // namespace

// ---- Data movement around the AMX product (amx_layout.h) ------------------------------------

namespace amx {

namespace {

using simd::transpose16;

bool avx512_layout() { return simd::cpu_avx512f() && simd::cpu_avx512bw() && __builtin_cpu_supports("avx512vl"); }

// Full 16-row m-blocks: each 16 x 16 tile of pairs is a transposed 16 x 16 block of x viewed
// as 32-bit pairs; rows past M load as zeros.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void pack_rows_avx512(const uint16_t* x, int64_t M,
                                                                           int64_t K, uint32_t* out) {
  const int64_t KB = K / 32, MB = (M + 15) / 16;
  for (int64_t b = 0; b < MB; ++b)
    for (int64_t j = 0; j < KB; ++j) {
      __m512 r[16];
      for (int64_t m = 0; m < 16; ++m)
        r[m] = 16 * b + m < M ? _mm512_loadu_ps(x + (16 * b + m) * K + 32 * j) : _mm512_setzero_ps();
      transpose16(r);
      float* tile = reinterpret_cast<float*>(out + (b * KB + j) * 256);
      for (int p = 0; p < 16; ++p) _mm512_storeu_ps(tile + 16 * p, r[p]);
    }
}

// bf16 rounding of 16 floats, kept as floats (low 16 bits zero): c10's rule (NaN to
// 0x7FC0) or s0's kernels' rule (simd::f32_to_bf16: a NaN keeps its sign and payload, quieted).
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512i rne_bits(__m512 v, bool c10_nan) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_and_si512(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))),
                               _mm512_set1_epi32(static_cast<int>(0xFFFF0000u)));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __m512i nan_bits = c10_nan ? _mm512_set1_epi32(0x7FC00000)
                                   : _mm512_or_si512(_mm512_and_si512(b, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))),
                                                     _mm512_set1_epi32(0x00400000));
  return _mm512_mask_mov_epi32(r, nan, nan_bits);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 widen16(const uint16_t* p, __mmask16 k) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void store_block_avx512(const float* ct, int64_t ldc, int64_t M,
                                                                             int64_t nrows, uint16_t* y, int64_t N,
                                                                             int64_t n, const Epilogue& e) {
  const __m512 sc = _mm512_set1_ps(e.scale);
  // Element i of a block column: row i of ct (the gathers below 4 batch rows).
  const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32(static_cast<int>(ldc)));
  for (int64_t i0 = 0; i0 < nrows; i0 += 16) {
    const int64_t ic = std::min<int64_t>(16, nrows - i0);
    const __mmask16 mask = static_cast<__mmask16>(ic == 16 ? 0xFFFF : (1u << ic) - 1);
    const __m512 col = e.col ? widen16(e.col + n + i0, mask) : _mm512_setzero_ps();
    for (int64_t m0 = 0; m0 < M; m0 += 16) {
      const int64_t mc = std::min<int64_t>(16, M - m0);
      // Columns past M within the 16 are whatever the buffer holds; their results are dropped.
      __m512 r[16];
      if (mc < 4) {
        // A few batch rows (the one-row decode step): each one's 16 results gathered from
        // their column of the block (a transpose of 16 vectors would do 16 rows' work).
        for (int64_t m = 0; m < mc; ++m)
          r[m] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, idx, ct + i0 * ldc + m0 + m, 4);
      } else {
        for (int64_t i = 0; i < 16; ++i) r[i] = i < ic ? _mm512_loadu_ps(ct + (i0 + i) * ldc + m0) : _mm512_setzero_ps();
        transpose16(r);
      }
      for (int64_t m = 0; m < mc; ++m) {
        __m512i t = rne_bits(r[m], true);
        if (e.has_scale) t = rne_bits(_mm512_mul_ps(_mm512_castsi512_ps(t), sc), false);
        if (e.col) t = rne_bits(_mm512_mul_ps(_mm512_castsi512_ps(t), col), false);
        uint16_t* out = y + (m0 + m) * N + n + i0;
        if (e.residual)
          t = rne_bits(_mm512_add_ps(widen16(e.residual + (m0 + m) * N + n + i0, mask), _mm512_castsi512_ps(t)), true);
        _mm256_mask_storeu_epi16(out, mask, _mm512_cvtepi32_epi16(_mm512_srli_epi32(t, 16)));
      }
    }
  }
}

}  // namespace

bool vector_layout() {
  static const bool v = avx512_layout();
  return v;
}

void pack_rows_reference(const uint16_t* x, int64_t M, int64_t K, int64_t bw, uint32_t* out) {
  const int64_t KB = K / 32, MB = (M + bw - 1) / bw;
  std::memset(out, 0, sizeof(uint32_t) * 16 * bw * KB * MB);
  for (int64_t m = 0; m < M; ++m) {
    const uint16_t* xm = x + m * K;
    uint32_t* blk = out + (m / bw) * KB * 16 * bw + (m % bw);
    for (int64_t j = 0; j < KB; ++j)
      for (int p = 0; p < 16; ++p) {
        uint32_t v;
        std::memcpy(&v, xm + 32 * j + 2 * p, 4);
        blk[(j * 16 + p) * bw] = v;
      }
  }
}

void pack_rows(const uint16_t* x, int64_t M, int64_t K, int64_t bw, uint32_t* out) {
  // Narrow batches (bw = M < 16) are small: the scalar loop is the whole cost of nothing.
  if (bw == 16 && vector_layout()) return pack_rows_avx512(x, M, K, out);
  pack_rows_reference(x, M, K, bw, out);
}

void store_block_reference(const float* ct, int64_t ldc, int64_t M, int64_t nrows, uint16_t* y, int64_t N,
                           int64_t n, const Epilogue& e) {
  using simd::bf16_to_f32;
  using simd::f32_to_bf16;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < nrows; ++i) {
      uint16_t t = at::BFloat16(ct[i * ldc + m]).x;  // the product's rounding
      if (e.has_scale) t = f32_to_bf16(bf16_to_f32(t) * e.scale);
      if (e.col) t = f32_to_bf16(bf16_to_f32(t) * bf16_to_f32(e.col[n + i]));
      if (e.residual) t = at::BFloat16(bf16_to_f32(e.residual[m * N + n + i]) + bf16_to_f32(t)).x;
      y[m * N + n + i] = t;
    }
}

void store_block(const float* ct, int64_t ldc, int64_t M, int64_t nrows, uint16_t* y, int64_t N, int64_t n,
                 const Epilogue& e) {
  if (vector_layout()) return store_block_avx512(ct, ldc, M, nrows, y, N, n, e);
  store_block_reference(ct, ldc, M, nrows, y, N, n, e);
}

}  // namespace amx

Tensor gemv_rows(const Tensor& x, const Tensor& w) {
  const bool pairs = is_pair_layout(w);
  TORCH_CHECK((w.dim() == 2 || pairs) && w.is_contiguous() && x.dim() >= 1 && x.size(-1) == in_features(w),
              "gemv_rows: shapes");
  const int64_t N = out_features(w), K = in_features(w), M = K == 0 ? 0 : x.numel() / K;
  const bool bf16 = w.scalar_type() == at::kBFloat16;
  if (M == 0 || N == 0) return at::empty({M, N}, w.scalar_type());
  if (pairs) {  // only the k-pair kernel reads it; else through an [N, K] copy
    if (fused_kernel(at::kBFloat16, K, true) == FusedKernel::kPairs && x.scalar_type() == at::kBFloat16)
      return fused_products(FusedKernel::kPairs, x.reshape({M, K}).contiguous(), {w})[0];
    return gemv_rows(x, row_layout_copy(w));
  }
  // Through the fused region where a kernel takes this dtype (AMX or VDPBF16PS for bf16 rows
  // x, FMA for f32, x in f32 as the other kernels read it; output in the weight's dtype); the
  // other kernels want x in fp32 (one conversion of M*K values per call).
  const FusedKernel fk = fused_kernel(w.scalar_type(), K);
  if (fk != FusedKernel::kNone && (!bf16 || x.scalar_type() == at::kBFloat16))
    return fused_products(fk, x.reshape({M, K}).to(w.scalar_type()).contiguous(), {w})[0];
  Tensor xv = x.reshape({M, K}).to(at::kFloat).contiguous();
  const float* xp = xv.data_ptr<float>();
  Tensor y = at::empty({M, N}, at::kFloat);
  float* yp = y.data_ptr<float>();
  // Rows split across threads in whole blocks of 4 (the kernels' unit), 64 rows at least:
  // every row is computed the same way whatever M and whatever the thread count.
  at::parallel_for(0, (N + 3) / 4, 16, [&](int64_t b0, int64_t b1) {
    const int64_t r0 = 4 * b0, r1 = std::min(N, 4 * b1);
    if (bf16) {
      auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
      if (has_avx512())
        gemv_bf16_avx512(xp, M, wp, yp, N, r0, r1, K);
      else
        gemv_rows_generic(xp, M, wp, yp, N, r0, r1, K);
    } else {  // f32 weights without AVX-512
      gemv_rows_generic(xp, M, w.data_ptr<float>(), yp, N, r0, r1, K);
    }
  });
  return y.to(w.scalar_type());
}

std::optional<DecodeKernel> parse_decode_kernel(const std::string& name) {
  if (name == "auto") return DecodeKernel::kAuto;
  if (name == "avx512") return DecodeKernel::kAvx512;
  if (name == "pairs") return DecodeKernel::kPairs;
  return std::nullopt;
}

void set_decode_kernel(DecodeKernel k) { g_kernel.store(k); }

void clear_pair_weights() {
  std::lock_guard<std::mutex> lock(g_pairs_mu);
  g_pairs.clear();
}

DecodeKernel decode_kernel() { return g_kernel.load(); }

// A weight in k-pairs is [N/32, K/2, 32, 2] where N is a multiple of 32, else (the last block
// tight) [1, 1, N, K/2, 2]: a shape no [N, K] reader takes for a weight (at::linear, t(),
// index_select by token then a view to [..., K]: every id past 0 is out of range).
bool is_pair_layout(const Tensor& w) {
  if (!w.defined() || w.scalar_type() != at::kBFloat16) return false;
  if (w.dim() == 4) return w.size(2) == 32 && w.size(3) == 2;
  return w.dim() == 5 && w.size(0) == 1 && w.size(1) == 1 && w.size(2) % 32 != 0 && w.size(4) == 2;
}

bool can_pair_layout(const Tensor& w) {
  return w.defined() && w.dim() == 2 && w.scalar_type() == at::kBFloat16 && w.device().is_cpu() &&
         w.is_contiguous() && w.size(0) > 0 && w.size(1) > 0 && w.size(1) % 2 == 0;
}

int64_t out_features(const Tensor& w) {
  if (!is_pair_layout(w)) return w.size(0);
  return w.dim() == 4 ? 32 * w.size(0) : w.size(2);
}

int64_t in_features(const Tensor& w) {
  if (!is_pair_layout(w)) return w.size(1);
  return 2 * w.size(w.dim() == 4 ? 1 : 3);
}

namespace {

// A weight about to change layout in place: drop any kPairs copy of its memory.
void forget_pair_copy(const Tensor& w) {
  std::lock_guard<std::mutex> lock(g_pairs_mu);
  g_pairs.erase(w.data_ptr());
}

}  // namespace

Tensor to_pair_layout_inplace(const Tensor& w) {
  TORCH_CHECK(can_pair_layout(w), "to_pair_layout_inplace: need a contiguous bf16 CPU weight [N, K] with K even, got ",
              w.sizes(), " ", w.scalar_type());
  const int64_t N = w.size(0), K = w.size(1);
  forget_pair_copy(w);
  relayout_blocks(reinterpret_cast<uint16_t*>(w.data_ptr<at::BFloat16>()), N, K, true);
  w.unsafeGetTensorImpl()->bump_version();
  return N % 32 == 0 ? w.view({N / 32, K / 2, 32, 2}) : w.view({1, 1, N, K / 2, 2});
}

Tensor to_row_layout_inplace(const Tensor& w) {
  TORCH_CHECK(is_pair_layout(w) && w.is_contiguous() && w.device().is_cpu(),
              "to_row_layout_inplace: not a weight in k-pairs: ", w.sizes());
  const int64_t N = out_features(w), K = in_features(w);
  forget_pair_copy(w);
  relayout_blocks(reinterpret_cast<uint16_t*>(w.data_ptr<at::BFloat16>()), N, K, false);
  w.unsafeGetTensorImpl()->bump_version();
  return w.view({N, K});
}

Tensor row_layout_copy(const Tensor& w) {
  if (!is_pair_layout(w)) return w.clone(at::MemoryFormat::Contiguous);
  const int64_t N = out_features(w), K = in_features(w);
  Tensor out = w.reshape(-1).clone().view({N, K});
  relayout_blocks(reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()), N, K, false);
  return out;
}

Tensor embedding(const Tensor& table, const Tensor& ids) {
  auto shape = ids.sizes().vec();
  shape.push_back(in_features(table));
  if (!is_pair_layout(table)) return table.index_select(0, ids.reshape(-1)).view(shape);
  const int64_t V = out_features(table), K = in_features(table), KP = K / 2;
  Tensor flat = ids.reshape(-1).to(at::kLong).contiguous();
  const int64_t n = flat.numel();
  const int64_t* id = flat.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) TORCH_CHECK(id[i] >= 0 && id[i] < V, "embedding: index ", id[i], " out of range [0, ", V, ")");
  Tensor out = at::empty({n, K}, at::kBFloat16);
  const char* src = reinterpret_cast<const char*>(table.data_ptr<at::BFloat16>());
  char* dst = reinterpret_cast<char*>(out.data_ptr<at::BFloat16>());
  for (int64_t i = 0; i < n; ++i) {
    const char* blk = src + (id[i] / 32) * 32 * K * 2;
    const int64_t r = id[i] % 32, width = std::min<int64_t>(32, V - id[i] / 32 * 32);  // the last block may be tight
    for (int64_t q = 0; q < KP; ++q) std::memcpy(dst + (i * KP + q) * 4, blk + (q * width + r) * 4, 4);
  }
  return out.view(shape);
}

bool pair_layout_pays() {
  const DecodeKernel k = g_kernel.load();
  return has_avx512bf16() && (k == DecodeKernel::kPairs || (k == DecodeKernel::kAuto && !amx_usable()));
}

void set_row_walk(RowWalk w) { g_walk.store(w); }

RowWalk row_walk() { return g_walk.load(); }

void set_split_rows(bool on) { g_split_rows.store(on); }

bool split_rows() { return g_split_rows.load(std::memory_order_relaxed); }

RowWalk auto_row_walk() {
  static const RowWalk w = amd_family_19h() ? RowWalk::kOneRow : RowWalk::kBlocked;
  return w;
}

bool amx_available() { return amx_usable(); }

Tensor gemv(const Tensor& x, const Tensor& w) {
  TORCH_CHECK((w.dim() == 2 || is_pair_layout(w)) && w.is_contiguous() && x.numel() == in_features(w), "gemv: shapes");
  return gemv_rows(x.reshape({1, in_features(w)}), w).view({out_features(w)});
}

std::vector<Tensor> linear_rows_multi(const Tensor& x, const std::vector<Tensor>& ws) {
  // The fused call without scales or residuals (one packing, one region where AMX takes
  // them all; linear_rows one by one otherwise).
  std::vector<Tensor> out;
  if (grad_enabled() || !x.device().is_cpu()) {
    for (const Tensor& w : ws) out.push_back(linear_rows(x, w));
    return out;
  }
  std::vector<RowsProduct> ps;
  for (const Tensor& w : ws) {
    RowsProduct p;
    p.w = w;
    ps.push_back(std::move(p));
  }
  return linear_rows_fused(x, ps);
}

namespace {

// The ops of a RowsProduct one by one (what the fused path must equal).
Tensor fused_reference(const Tensor& x_scaled, const RowsProduct& p) {
  Tensor y = linear_rows(x_scaled, p.w);
  if (p.out_scale != 1) y = scale(y, p.out_scale);
  if (p.col_scale.defined()) y = mul_last(y, p.col_scale);
  if (p.residual.defined()) y = p.residual + y;
  return y;
}

bool fusable(const Tensor& x, const RowsProduct& p, int64_t M) {
  const Tensor& w = p.w;
  const int64_t K = x.size(-1);
  const auto dt = x.scalar_type();  // bf16 or f32 (the caller's kernel choice)
  const int64_t N = out_features(w);
  if (!(w.device().is_cpu() && w.is_contiguous() && (w.dim() == 2 || is_pair_layout(w)) && w.scalar_type() == dt &&
        in_features(w) == K && N > 0))
    return false;
  if (p.col_scale.defined() &&
      !(p.col_scale.device().is_cpu() && p.col_scale.scalar_type() == dt && p.col_scale.is_contiguous() &&
        p.col_scale.dim() == 1 && p.col_scale.size(0) == N))
    return false;
  if (p.residual.defined() &&
      !(p.residual.device().is_cpu() && p.residual.scalar_type() == dt && p.residual.is_contiguous() &&
        p.residual.numel() == M * N && p.residual.size(-1) == N))
    return false;
  return true;
}

}  // namespace

std::vector<Tensor> linear_rows_fused(const Tensor& x, const std::vector<RowsProduct>& ps) {
  TORCH_CHECK(!grad_enabled() && x.device().is_cpu() && x.dim() >= 1, "linear_rows_fused: CPU, no autograd");
  const int64_t K = x.size(-1), M = K == 0 ? 0 : x.numel() / K;
  // The distinct input scales, each input scaled once (as nn::scale would).
  std::vector<double> scales;
  std::vector<size_t> input_of;
  for (const RowsProduct& p : ps) {
    auto it = std::find(scales.begin(), scales.end(), p.in_scale);
    input_of.push_back(static_cast<size_t>(it - scales.begin()));
    if (it == scales.end()) scales.push_back(p.in_scale);
  }
  std::vector<Tensor> inputs;
  for (double s : scales) inputs.push_back(s == 1 ? x : scale(x, s));
  size_t pair_laid = 0;
  for (const RowsProduct& p : ps) pair_laid += is_pair_layout(p.w);
  if (pair_laid > 0 && pair_laid < ps.size()) {
    // Weights in both layouts: each layout's own call, so that a product is computed as it
    // would be one by one (a weight in rows never borrows the k-pair kernel for company).
    std::vector<RowsProduct> part[2];
    for (const RowsProduct& p : ps) part[is_pair_layout(p.w)].push_back(p);
    std::vector<Tensor> ys[2] = {linear_rows_fused(x, part[0]), linear_rows_fused(x, part[1])};
    std::vector<Tensor> out;
    size_t next[2] = {0, 0};
    for (const RowsProduct& p : ps) {
      const int k = is_pair_layout(p.w);
      out.push_back(ys[k][next[k]++]);
    }
    return out;
  }
  const FusedKernel fk = fused_kernel(x.scalar_type(), K, pair_laid > 0);
  bool together = !ps.empty() && fk != FusedKernel::kNone && M > 0;
  for (const RowsProduct& p : ps) together = together && fusable(x, p, M);
  std::vector<Tensor> out;
  if (!together) {
    for (size_t i = 0; i < ps.size(); ++i) out.push_back(fused_reference(inputs[input_of[i]], ps[i]));
    return out;
  }
  std::vector<Tensor> rows;
  for (const Tensor& in : inputs) rows.push_back(in.reshape({M, K}).contiguous());
  std::vector<FusedProduct> aps;
  for (size_t i = 0; i < ps.size(); ++i) {
    const RowsProduct& p = ps[i];
    FusedProduct fp{&p.w, input_of[i], {}, {}};
    if (fk == FusedKernel::kF32) {
      auto& e = fp.fepi;  // the scalar as nn::scale casts it to f32
      if (p.out_scale != 1) e.has_scale = true, e.scale = static_cast<float>(p.out_scale);
      if (p.col_scale.defined()) e.col = p.col_scale.data_ptr<float>();
      if (p.residual.defined()) e.residual = p.residual.data_ptr<float>();
    } else {
      auto& e = fp.epi;
      if (p.out_scale != 1)
        e.has_scale = true, e.scale = static_cast<float>(c10::BFloat16(static_cast<float>(p.out_scale)));
      if (p.col_scale.defined()) e.col = reinterpret_cast<const uint16_t*>(p.col_scale.data_ptr<at::BFloat16>());
      if (p.residual.defined()) e.residual = reinterpret_cast<const uint16_t*>(p.residual.data_ptr<at::BFloat16>());
    }
    aps.push_back(fp);
  }
  out = fused_products(fk, rows, aps);
  for (size_t i = 0; i < ps.size(); ++i) {
    auto shape = x.sizes().vec();
    shape.back() = out_features(ps[i].w);
    out[i] = out[i].view(shape);
  }
  return out;
}

Tensor linear_rows(const Tensor& x, const Tensor& w) {
  if (!grad_enabled() && w.device().is_cpu() && w.is_contiguous() &&
      (w.scalar_type() == at::kBFloat16 || w.scalar_type() == at::kFloat) &&
      x.scalar_type() == w.scalar_type()) {
    auto shape = x.sizes().vec();
    shape.back() = out_features(w);
    return gemv_rows(x, w).view(shape);
  }
  return nn::linear(x, w);
}

namespace {

thread_local LinearTape* g_tape = nullptr;
thread_local LinearTape::Mode g_tape_mode = LinearTape::Mode::kRecord;

// Returns a kept projection output y = x W^T; backward: dx = dy W.
struct ReplayLinear : public torch::autograd::Function<ReplayLinear> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& w, const Tensor& y) {
    ctx->saved_data["w"] = w;
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    Tensor w = ctx->saved_data["w"].toTensor();
    if (is_pair_layout(w)) w = row_layout_copy(w);
    const auto sizes = ctx->saved_data["x_sizes"].toIntVector();
    Tensor dx = at::matmul(grads[0], w).view(sizes);
    return {dx, Tensor(), Tensor()};
  }
};

Tensor linear_compute(const Tensor& x, const Tensor& w);

}  // namespace

LinearTapeScope::LinearTapeScope(LinearTape* tape, LinearTape::Mode mode) : prev_tape_(g_tape), prev_mode_(g_tape_mode) {
  g_tape = tape, g_tape_mode = mode;
}

LinearTapeScope::~LinearTapeScope() { g_tape = prev_tape_, g_tape_mode = prev_mode_; }

Tensor linear(const Tensor& x, const Tensor& w) {
  if (!g_tape) return linear_compute(x, w);
  LinearTape& t = *g_tape;
  const void* key = w.data_ptr();
  if (g_tape_mode == LinearTape::Mode::kRecord) {
    Tensor y = linear_compute(x, w);
    if (!grad_enabled()) {
      auto [it, fresh] = t.outputs.emplace(key, y);
      TORCH_CHECK(fresh, "LinearTape: a weight was used twice while recording");
      t.bytes += y.numel() * y.element_size();
    }
    return y;
  }
  auto it = t.outputs.find(key);
  if (it != t.outputs.end()) {
    Tensor y = it->second;
    auto want = x.sizes().vec();
    want.back() = out_features(w);
    if (y.sizes().vec() == want && y.scalar_type() == x.scalar_type()) {
      t.outputs.erase(it);
      t.bytes -= y.numel() * y.element_size();
      t.replayed += 1;
      if (grad_enabled() && x.requires_grad()) return ReplayLinear::apply(x, w.detach(), y);
      return y;
    }
  }
  return linear_compute(x, w);
}

namespace {

Tensor linear_compute(const Tensor& x, const Tensor& w) {
  if (is_pair_layout(w)) {
    // Every row through the k-pair kernel (prefill as decode), or an [N, K] copy where it
    // cannot run (autograd: the weight is frozen, dx = dy W through the copy).
    if (!grad_enabled() && w.device().is_cpu() && x.scalar_type() == at::kBFloat16) {
      auto shape = x.sizes().vec();
      shape.back() = out_features(w);
      return gemv_rows(x, w).view(shape);
    }
    return at::linear(x, row_layout_copy(w));
  }
  const int64_t K = w.size(1);
  if (!grad_enabled() && x.numel() == K && w.device().is_cpu() && w.is_contiguous() &&
      (w.scalar_type() == at::kBFloat16 || w.scalar_type() == at::kFloat) &&
      x.scalar_type() == w.scalar_type()) {
    auto shape = x.sizes().vec();
    shape.back() = w.size(0);
    return gemv(x, w).view(shape);
  }
  if (!grad_enabled() && w.device().is_cpu() && w.scalar_type() == at::kFloat &&
      x.scalar_type() == at::kFloat && at::hasMKLDNN()) {
    // fp32 GEMM through oneDNN: ~1.3x OpenBLAS here, and no OpenBLAS worker threads left
    // spinning against libtorch's own pool (which halved decode speed in f32).
    auto shape = x.sizes().vec();
    shape.back() = w.size(0);
    Tensor x2 = x.reshape({-1, K}).contiguous();
    return at::mkldnn_linear(x2.to_mkldnn(), w, {}).to_dense().view(shape);
  }
  return at::linear(x, w);
}

}  // namespace

}  // namespace s0::nn
