#pragma once
// y = x W^T (no bias), the linear layer of every model. For one row without autograd on
// CPU (the decode hot path) it uses a memory-bandwidth-bound GEMV kernel (AMX tiles or
// AVX-512 when the CPU has them): libtorch 1.13's bf16 path for M = 1 reaches about 20 GB/s here against
// ~33 GB/s of memory bandwidth. fp32 GEMMs without autograd go to oneDNN; everything else
// to at::linear (oneDNN for bf16, BLAS for fp32).
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "s0/nn/task_claims.h"
#include "s0/util/torch.h"

namespace s0::nn {

Tensor linear(const Tensor& x, const Tensor& w);

// Projection outputs kept for training recomputation. While a tape is recording (set with
// LinearTapeScope, autograd off), linear() stores each output under its weight; while it
// replays, a linear() whose weight and output shape match a stored output returns that
// output (as a differentiable op whose input gradient is dy W: weights are frozen) instead
// of recomputing the GEMM. A recomputed layer then redoes only its elementwise work and
// recurrence. Each stored output is handed out once and then dropped.
struct LinearTape {
  enum class Mode { kRecord, kReplay };
  std::map<const void*, Tensor> outputs;  // weight data pointer -> y
  int64_t bytes = 0;                      // held now
  int64_t replayed = 0;                   // outputs handed back so far
};

class LinearTapeScope {
 public:
  LinearTapeScope(LinearTape* tape, LinearTape::Mode mode);
  ~LinearTapeScope();
  LinearTapeScope(const LinearTapeScope&) = delete;
  LinearTapeScope& operator=(const LinearTapeScope&) = delete;

 private:
  LinearTape* prev_tape_;
  LinearTape::Mode prev_mode_;
};

// The GEMV itself, exposed for tests: x [K] (same dtype as w), w [N, K] contiguous,
// bf16 or f32. Accumulates in fp32, rounds the output once to w's dtype.
Tensor gemv(const Tensor& x, const Tensor& w);

// The same kernel for M rows at once: x [..., K] (M rows) -> [..., N]. Row m of the result
// is bitwise equal to gemv(x[m], w): the rows share each block of weights while it is in
// cache (one pass over W for the whole batch) but not their arithmetic.
Tensor gemv_rows(const Tensor& x, const Tensor& w);

// Which kernel computes the decode products of bf16 weights held in rows ([N, K]; a weight
// in the k-pair layout below always takes the k-pair kernel). kAuto: Intel AMX tiles where
// the CPU and kernel allow them (and K % 32 == 0), else the AVX-512 (VDPBF16PS) kernel;
// kAvx512: never AMX. kPairs: the k-pair kernel (VDPBF16PS with an output row per vector
// lane and the input pairs broadcast, so no horizontal sums) on a copy of each weight
// re-laid out in k-pairs, made on its first product and kept (as much memory again as the
// weights it has seen) until clear_pair_weights(); for bf16 weights with an even K on a CPU
// with AVX-512 BF16, else as kAvx512. (Generation avoids the copy by laying the weights out
// in k-pairs themselves: models::use_generation_layout, on CPUs without AMX.) Every kernel
// computes each row the same way for any batch size, but they round differently, so switch
// only between whole generations (benchmarks and tests compare them). f32 weights always
// take the AVX-512 kernel. The starting value comes from S0_DECODE_KERNEL=auto|avx512|pairs
// in the environment (default auto; avx512 also keeps generation's weights in rows).
enum class DecodeKernel { kAuto, kAvx512, kPairs };
// "auto", "avx512" or "pairs" (S0_DECODE_KERNEL's and the benchmarks' spelling); else none.
std::optional<DecodeKernel> parse_decode_kernel(const std::string& name);
// Frees kPairs's copies (a weight changed in place is re-copied on its next product anyway;
// products running meanwhile keep theirs until they end).
void clear_pair_weights();

// ---- The k-pair layout as the weight itself (inference) ----
// A bf16 weight [N, K] with K even can be re-laid IN ITS OWN MEMORY into the layout kPairs
// copies to: where N is a multiple of 32, a [N/32, K/2, 32, 2] tensor whose element
// [b][q][r][e] is w[32 b + r][2 q + e]; else the same whole blocks followed by the last
// t = N % 32 rows as one tight block ([q][r][e] = w[N - t + r][2 q + e]), the memory viewed
// as [1, 1, N, K/2, 2]. Every function of this header takes either layout: a weight in k-pairs
// always goes through the k-pair kernel (decode and prefill alike, whatever the decode kernel
// setting; every row computed as at one row), or, where that kernel cannot run (no AVX-512
// BF16, autograd, non-bf16 rows), through a temporary [N, K] copy (correct, slow). So a
// model's weights can be laid out once for generation with no second copy
// (models::CausalLM::set_pair_layout). The 4-D and 5-D shapes keep code that expects [N, K]
// from reading it by mistake (libtorch's own ops reject them; a gather of token rows from
// dimension 0 has the wrong size or is out of range).
bool is_pair_layout(const Tensor& w);
// w can be re-laid: bf16, contiguous [N, K], N > 0, K > 0 even.
bool can_pair_layout(const Tensor& w);
// N and K of a weight in either layout.
int64_t out_features(const Tensor& w);
int64_t in_features(const Tensor& w);
// Re-lays w's memory into k-pairs and returns the k-pair view of it (above); every other
// tensor viewing that memory as [N, K] (w itself included) is meaningless afterwards. Not
// while products read w. to_row_layout_inplace undoes it (returns the [N, K] view).
Tensor to_pair_layout_inplace(const Tensor& w);
Tensor to_row_layout_inplace(const Tensor& w);
// A fresh [N, K] copy of a weight in either layout.
Tensor row_layout_copy(const Tensor& w);
// Rows ids (any shape, int64) of an embedding table [V, K] in either layout: [ids..., K].
Tensor embedding(const Tensor& table, const Tensor& ids);
// Whether generation should lay bf16 weights out in k-pairs on this CPU: the decode kernel
// is kPairs, or kAuto on a CPU with AVX-512 BF16 and without usable AMX (AMD Zen 4/5: the
// k-pair kernel measured 1.2-1.3x the VDPBF16PS row kernel at 4-16 batch rows on a Zen 5).
bool pair_layout_pays();
void set_decode_kernel(DecodeKernel k);
DecodeKernel decode_kernel();
// The CPU has AMX-BF16 and the OS granted this process the tile state.
bool amx_available();

// How the AVX-512 kernels (bf16 VDPBF16PS, f32 FMA) walk the weights at a few batch rows.
// Results never depend on it (every accumulator sees the same instructions either way); it
// is chosen per CPU for speed, and settable for benchmarks and tests.
//   kOneRow: one weight row at a time at 1-3 batch rows, and at 4-7 where K <= 2048 (bf16):
//     one sequential stream per thread, which an AMD Zen 4's prefetchers need.
//   kBlocked: at one batch row 8 (bf16) or 4 (f32) weight rows side by side, the batch rows
//     sharing each weight-row load at 2-3 rows, groups of 4 weight rows from 4 rows: a few %
//     faster at one batch row on an AMD Zen 5 (both walks measured in one process).
//   kAuto: kOneRow on AMD family 19h (Zen 4, the family's CPUs with AVX-512), else kBlocked.
enum class RowWalk { kAuto, kOneRow, kBlocked };
void set_row_walk(RowWalk w);
RowWalk row_walk();  // as set (kAuto unless set)
// The walk kAuto resolves to on this CPU (kOneRow or kBlocked).
RowWalk auto_row_walk();

// How a product call's weight rows are shared among the threads: set_split_rows and
// split_rows in task_claims.h (they cover the decode steps' tasks too).

// Batched decode: y = x W^T through gemv_rows when it applies (no autograd, CPU, bf16/f32
// weights matching x), else linear(). Each row then equals linear() on that row alone.
Tensor linear_rows(const Tensor& x, const Tensor& w);

// linear_rows(x, w) for each w of ws, equal to it bitwise; where the AMX kernel takes them
// all (bf16, one K), the rows are packed once and every weight goes through one parallel
// region (one fork/join and one tail instead of one per weight).
std::vector<Tensor> linear_rows_multi(const Tensor& x, const std::vector<Tensor>& ws);

// One product of a fused decode call, with the small ops around it that a decode step would
// otherwise run one by one (each a call, an allocation and a pass over the rows):
//   y = linear_rows(scale(x, in_scale), w) ; y = scale(y, out_scale) ; y = mul_last(y, col_scale) ;
//   y = residual + y
// (nn::scale and nn::mul_last of activations.h, at::add; each step skipped where unset:
// scales of 1, undefined tensors). col_scale [N] and residual shaped like y, w's dtype.
struct RowsProduct {
  Tensor w;
  double in_scale = 1, out_scale = 1;
  Tensor col_scale, residual;
};

// The products of x [..., K] (no autograd, CPU), bitwise equal to running the ops above one
// by one for every non-NaN value (a NaN stays a NaN). Where one kernel takes them all (bf16:
// AMX or VDPBF16PS (AVX-512 BF16); f32: AVX-512 FMA; one K, weights in x's dtype), every
// distinct in_scale's rows are scaled (and packed, for AMX) once, all the weights go through
// one parallel region and the rest happens as each output block is stored; otherwise the ops
// run one by one.
std::vector<Tensor> linear_rows_fused(const Tensor& x, const std::vector<RowsProduct>& ps);

}  // namespace s0::nn
