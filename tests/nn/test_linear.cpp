// The decode GEMV against libtorch's GEMM, for both dtypes and awkward sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include <limits>

#include "s0/nn/activations.h"
#include "s0/nn/amx_layout.h"
#include "s0/nn/linear.h"
#include "s0/nn/simd.h"

using namespace s0;

TEST(Gemv, MatchesTorchLinear) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 17}, {5, 16}, {67, 100}, {130, 1024}}) {
      Tensor w = at::randn({N, K}, gen).to(dt), x = at::randn({1, 1, K}, gen).to(dt);
      Tensor ref = at::linear(x.to(at::kDouble), w.to(at::kDouble));
      NoGrad ng;
      Tensor got = nn::linear(x, w);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{1, 1, N}));
      ASSERT_EQ(got.scalar_type(), dt);
      // fp32 accumulation, one rounding to the output dtype.
      double tol = dt == at::kFloat ? 1e-5 : 8e-3;
      double err = ((got.to(at::kDouble) - ref).abs() / (ref.abs() + 1.0)).max().item<double>();
      EXPECT_LT(err, tol) << "N=" << N << " K=" << K << " dtype=" << dt;
    }
  }
}

TEST(Gemv, UsedOnlyWithoutAutograd) {
  Tensor w = at::randn({8, 16}), x = at::randn({1, 16}).requires_grad_(true);
  Tensor y = nn::linear(x, w);  // grad mode: must stay differentiable
  ASSERT_TRUE(y.requires_grad());
  auto g = torch::autograd::grad({y.sum()}, {x})[0];
  EXPECT_TRUE(at::allclose(g, w.sum(0, true), 1e-5, 1e-5));  // summation order differs
}

TEST(LinearTape, RecordsWithoutAutogradAndReplaysWithTheLinearInputGradient) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(3);
  Tensor w = at::randn({7, 5}, g, at::kDouble), x = at::randn({2, 3, 5}, g, at::kDouble);
  nn::LinearTape tape;
  Tensor y_rec;
  {
    NoGrad ng;
    nn::LinearTapeScope rec(&tape, nn::LinearTape::Mode::kRecord);
    y_rec = nn::linear(x, w);
    EXPECT_THROW(nn::linear(x, w), c10::Error);  // one output per weight
  }
  EXPECT_EQ(tape.outputs.size(), 1u);
  EXPECT_EQ(tape.bytes, 2 * 3 * 7 * 8);
  // Replay: the kept tensor's values (even if x differs), and dx = dy W.
  Tensor xr = (x * 1.5).requires_grad_(true);
  Tensor up = at::randn({2, 3, 7}, g, at::kDouble);
  Tensor y;
  {
    nn::LinearTapeScope rep(&tape, nn::LinearTape::Mode::kReplay);
    y = nn::linear(xr, w);
  }
  EXPECT_TRUE(at::equal(y, y_rec));
  EXPECT_EQ(tape.replayed, 1);
  EXPECT_TRUE(tape.outputs.empty());
  EXPECT_EQ(tape.bytes, 0);
  Tensor dx = torch::autograd::grad({(y * up).sum()}, {xr})[0];
  EXPECT_LT((dx - at::matmul(up, w)).abs().max().item<double>(), 1e-12);
  // Handed out once: a second call computes.
  {
    nn::LinearTapeScope rep(&tape, nn::LinearTape::Mode::kReplay);
    Tensor again = nn::linear(xr, w);
    EXPECT_LT((again - at::matmul(xr, w.t())).abs().max().item<double>(), 1e-12);
  }
  // A shape mismatch is not replayed.
  {
    NoGrad ng;
    nn::LinearTapeScope rec(&tape, nn::LinearTape::Mode::kRecord);
    nn::linear(x, w);
  }
  {
    nn::LinearTapeScope rep(&tape, nn::LinearTape::Mode::kReplay);
    Tensor x1 = x.narrow(1, 0, 1);
    EXPECT_LT((nn::linear(x1, w) - at::matmul(x1, w.t())).abs().max().item<double>(), 1e-12);
    EXPECT_EQ(tape.replayed, 1);
  }
  // Recording with autograd on keeps nothing.
  nn::LinearTape t2;
  {
    nn::LinearTapeScope rec(&t2, nn::LinearTape::Mode::kRecord);
    nn::linear(x, w);
  }
  EXPECT_TRUE(t2.outputs.empty());
}

namespace {

// Restores the automatic kernel choice when a test ends.
struct KernelScope {
  explicit KernelScope(nn::DecodeKernel k) { nn::set_decode_kernel(k); }
  ~KernelScope() {
    nn::set_decode_kernel(nn::DecodeKernel::kAuto);
    nn::clear_pair_weights();
  }
};

// The same for the AVX-512 kernels' row walk.
struct WalkScope {
  explicit WalkScope(nn::RowWalk w) { nn::set_row_walk(w); }
  ~WalkScope() { nn::set_row_walk(nn::RowWalk::kAuto); }
};

const std::vector<nn::RowWalk> kWalks{nn::RowWalk::kOneRow, nn::RowWalk::kBlocked};

}  // namespace

// Both bf16 decode kernels (AMX tiles where the CPU has them, AVX-512 otherwise) against an
// f64 product, with weight-row tails (N not a multiple of 4, 16 or 32), batch tails (M not a
// multiple of 4 or 16) and k tails (K not a multiple of 32: AVX-512 only), and each batch
// bitwise equal to its rows alone, to any thread count and under either row walk (the CPU's
// choice, so the test holds both on any machine). The outputs are bf16, whose
// rounding hides most f32 differences between two ways of summing; the 768 x 2048 weight
// (K at the one-weight-row regime's limit) has enough outputs that a batch path summing
// differently from the one-row path shows (checked: the 4-row pass done in order fails it).
TEST(Gemv, DecodeKernelsMatchTheProductAndAreBatchInvariant) {
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  std::vector<nn::DecodeKernel> kernels{nn::DecodeKernel::kAvx512, nn::DecodeKernel::kPairs};
  if (nn::amx_available()) kernels.push_back(nn::DecodeKernel::kAuto);
  const int saved = at::get_num_threads();
  for (auto kernel : kernels) {
    KernelScope scope(kernel);
    for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 32}, {15, 64}, {16, 96}, {17, 64}, {33, 128},
                                                                 {70, 1024}, {200, 256},
                                                                 {700, 64}, {37, 100}, {6, 17}, {40, 2080}, {768, 2048}}) {
      Tensor w = at::randn({N, K}, gen).to(at::kBFloat16);
      for (int64_t M : {1, 2, 3, 4, 6, 7, 8, 16, 17, 40}) {
        Tensor x = at::randn({M, K}, gen).to(at::kBFloat16);
        Tensor ref = at::matmul(x.to(at::kDouble), w.to(at::kDouble).t());
        Tensor first;
        for (auto walk : kWalks) {
          WalkScope ws(walk);
          Tensor got = nn::gemv_rows(x, w);
          ASSERT_EQ(got.sizes().vec(), (std::vector<int64_t>{M, N}));
          double err = ((got.to(at::kDouble) - ref).abs() / (ref.abs() + 1.0)).max().item<double>();
          EXPECT_LT(err, 8e-3) << "kernel " << int(kernel) << " N " << N << " K " << K << " M " << M;
          for (int64_t m = 0; m < M; ++m)
            ASSERT_TRUE(at::equal(got[m], nn::gemv(x[m], w)))
                << "kernel " << int(kernel) << " walk " << int(walk) << " N " << N << " M " << M;
          at::set_num_threads(1);
          Tensor one = nn::gemv_rows(x, w);
          at::set_num_threads(std::max(saved, 2));
          EXPECT_TRUE(at::equal(one, nn::gemv_rows(x, w))) << "kernel " << int(kernel) << " N " << N << " M " << M;
          at::set_num_threads(saved);
          // The walk decides only which rows are read together, never a result.
          if (!first.defined()) first = got;
          else EXPECT_TRUE(at::equal(first, got)) << "kernel " << int(kernel) << " N " << N << " M " << M;
        }
      }
    }
  }
}

// The f32 kernel (AVX-512 FMA; a portable loop without AVX-512) against an f64 product, with
// weight-row, batch and k tails, each batch bitwise equal to its rows alone, to any
// thread count and under either row walk.
TEST(Gemv, F32KernelMatchesTheProductAndIsBatchInvariant) {
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  const int saved = at::get_num_threads();
  for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 16}, {15, 64}, {33, 100}, {70, 1024}, {6, 17}}) {
    Tensor w = at::randn({N, K}, gen);
    for (int64_t M : {1, 2, 3, 4, 16, 17, 40}) {
      Tensor x = at::randn({M, K}, gen);
      Tensor ref = at::matmul(x.to(at::kDouble), w.to(at::kDouble).t());
      Tensor first;
      for (auto walk : kWalks) {
        WalkScope ws(walk);
        Tensor got = nn::gemv_rows(x, w);
        ASSERT_EQ(got.scalar_type(), at::kFloat);
        double err = ((got.to(at::kDouble) - ref).abs() / (ref.abs() + 1.0)).max().item<double>();
        // fp32 accumulation over K terms of size ~1: error grows like sqrt(K) ulps.
        EXPECT_LT(err, 4e-6 * std::sqrt(static_cast<double>(K))) << "N " << N << " K " << K << " M " << M;
        for (int64_t m = 0; m < M; ++m)
          ASSERT_TRUE(at::equal(got[m], nn::gemv(x[m], w))) << "walk " << int(walk) << " N " << N << " M " << M;
        at::set_num_threads(1);
        Tensor one = nn::gemv_rows(x, w);
        at::set_num_threads(std::max(saved, 2));
        EXPECT_TRUE(at::equal(one, nn::gemv_rows(x, w))) << "N " << N << " M " << M;
        at::set_num_threads(saved);
        if (!first.defined()) first = got;
        else EXPECT_TRUE(at::equal(first, got)) << "N " << N << " M " << M;
      }
    }
  }
}

// kPairs's copy follows a weight changed in place (the version counter), and a different
// weight never gets another's copy.
TEST(Gemv, PairCopyFollowsTheWeight) {
  NoGrad ng;
  KernelScope scope(nn::DecodeKernel::kPairs);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(14);
  Tensor w = at::randn({40, 64}, gen).to(at::kBFloat16), x = at::randn({3, 64}, gen).to(at::kBFloat16);
  Tensor before = nn::gemv_rows(x, w);
  w.mul_(-2.0);
  Tensor after = nn::gemv_rows(x, w);
  EXPECT_TRUE(at::equal(after, nn::gemv_rows(x, w.clone())));
  EXPECT_FALSE(at::equal(after, before));
  nn::clear_pair_weights();
  EXPECT_TRUE(at::equal(after, nn::gemv_rows(x, w)));
}

TEST(Gemv, DecodeKernelNames) {
  EXPECT_EQ(nn::parse_decode_kernel("auto"), nn::DecodeKernel::kAuto);
  EXPECT_EQ(nn::parse_decode_kernel("avx512"), nn::DecodeKernel::kAvx512);
  EXPECT_EQ(nn::parse_decode_kernel("pairs"), nn::DecodeKernel::kPairs);
  EXPECT_FALSE(nn::parse_decode_kernel("amx").has_value());
  EXPECT_FALSE(nn::parse_decode_kernel("").has_value());
}

// Several weights in one call (one packing of the rows, one parallel region): each output
// bitwise equal to its own product, whatever the weights' row counts (chunk and tile tails).
TEST(Gemv, SeveralWeightsInOneCallEqualTheirProducts) {
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(13);
  std::vector<Tensor> ws;
  for (int64_t N : {300, 16, 7, 129, 1, 1000})
    ws.push_back(at::randn({N, 96}, gen).to(at::kBFloat16));
  for (auto kernel : {nn::DecodeKernel::kAuto, nn::DecodeKernel::kPairs}) {
    for (int64_t M : {1, 5, 16, 33}) {
      KernelScope scope(kernel);
      Tensor x = at::randn({M, 1, 96}, gen).to(at::kBFloat16);
      auto ys = nn::linear_rows_multi(x, ws);
      ASSERT_EQ(ys.size(), ws.size());
      for (size_t i = 0; i < ws.size(); ++i) {
        EXPECT_EQ(ys[i].sizes().vec(), (std::vector<int64_t>{M, 1, ws[i].size(0)}));
        EXPECT_TRUE(at::equal(ys[i], nn::linear_rows(x, ws[i]))) << "M " << M << " weight " << i;
        // And right (every row of every weight written, whichever thread's chunk it fell in).
        Tensor ref = at::matmul(x.to(at::kDouble), ws[i].to(at::kDouble).t());
        EXPECT_LT(((ys[i].to(at::kDouble) - ref).abs() / (ref.abs() + 1.0)).max().item<double>(), 8e-3)
            << "M " << M << " weight " << i;
      }
    }
  }
  // f32 weights (no shared kernel): the same answers through the one-by-one path.
  Tensor x = at::randn({3, 64}, gen), w0 = at::randn({10, 64}, gen), w1 = at::randn({20, 64}, gen);
  auto ys = nn::linear_rows_multi(x, {w0, w1});
  EXPECT_TRUE(at::equal(ys[0], nn::linear_rows(x, w0)));
  EXPECT_TRUE(at::equal(ys[1], nn::linear_rows(x, w1)));
}

// How a call's rows are shared among the threads (one contiguous range per thread, the
// rest taken from the back of the others' ranges; or one shared cursor) never changes a
// result: weights of awkward row counts in one call, 1-5 threads, both schemes, and a call
// from inside a parallel region, where one thread takes every range (its own, then all the
// others from the back). Each result bitwise equal to one thread on one cursor, and right.
TEST(Gemv, RowSharingNeverChangesAResult) {
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
  const int saved = at::get_num_threads();
  struct SplitScope {
    ~SplitScope() { nn::set_split_rows(true); }
  } split_scope;
  std::vector<nn::DecodeKernel> kernels{nn::DecodeKernel::kAvx512, nn::DecodeKernel::kPairs};
  if (nn::amx_available()) kernels.push_back(nn::DecodeKernel::kAuto);
  for (auto dtype : {at::kBFloat16, at::kFloat}) {
    std::vector<Tensor> ws;
    for (int64_t N : {300, 16, 7, 129, 1, 1000, 45}) ws.push_back(at::randn({N, 96}, gen).to(dtype));
    for (auto kernel : dtype == at::kFloat ? std::vector<nn::DecodeKernel>{nn::DecodeKernel::kAuto} : kernels) {
      KernelScope scope(kernel);
      for (int64_t M : {1, 3, 16, 33}) {
        Tensor x = at::randn({M, 96}, gen).to(dtype);
        at::set_num_threads(1);
        nn::set_split_rows(false);
        const auto ref = nn::linear_rows_multi(x, ws);
        for (size_t i = 0; i < ws.size(); ++i) {
          Tensor exact = at::matmul(x.to(at::kDouble), ws[i].to(at::kDouble).t());
          EXPECT_LT(((ref[i].to(at::kDouble) - exact).abs() / (exact.abs() + 1.0)).max().item<double>(), 8e-3);
        }
        auto same = [&](const std::vector<Tensor>& got, const std::string& what) {
          ASSERT_EQ(got.size(), ref.size());
          for (size_t i = 0; i < ws.size(); ++i)
            EXPECT_TRUE(at::equal(got[i], ref[i])) << what << " kernel " << int(kernel) << " M " << M << " weight " << i;
        };
        for (bool split : {true, false}) {
          nn::set_split_rows(split);
          for (int threads : {1, 2, 3, 5}) {
            at::set_num_threads(threads);
            same(nn::linear_rows_multi(x, ws), "threads " + std::to_string(threads) + " split " + std::to_string(split));
            // Nested: each outer task's call runs alone on its thread.
            std::vector<std::vector<Tensor>> nested(2);
            at::parallel_for(0, 2, 1, [&](int64_t b0, int64_t b1) {
              for (int64_t b = b0; b < b1; ++b) nested[b] = nn::linear_rows_multi(x, ws);
            });
            for (const auto& got : nested) same(got, "nested, threads " + std::to_string(threads));
          }
        }
        at::set_num_threads(saved);
      }
    }
  }
  at::set_num_threads(saved);
}

// On an AMX machine the two kernels are different computations (different summation
// order) that agree to fp32 rounding of the same products.
TEST(Gemv, AmxAgreesWithAvx512ToFloatRounding) {
  if (!nn::amx_available()) GTEST_SKIP() << "no AMX-BF16 on this CPU (or the OS refused the tile state)";
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  Tensor w = at::randn({300, 512}, gen).to(at::kBFloat16), x = at::randn({20, 512}, gen).to(at::kBFloat16);
  Tensor amx = nn::gemv_rows(x, w).to(at::kFloat);
  Tensor avx;
  {
    KernelScope scope(nn::DecodeKernel::kAvx512);
    avx = nn::gemv_rows(x, w).to(at::kFloat);
  }
  // Outputs are rounded to bf16 once: at most one bf16 ulp apart.
  EXPECT_TRUE(at::allclose(amx, avx, 8e-3, 1e-2));
}

// The AMX product's data movement (amx_layout.h): the vector packing of the batch rows and
// the vector transposition + rounding of the tile results, bit for bit against their scalar
// references, for every batch shape the product uses (one row, narrow, exactly one m-block,
// m-block tails, several m-blocks) and every block height (tails of 1-15 rows, 16, 32). The
// rounding sees ties, NaN, infinities, denormals and values that carry into the exponent.
TEST(AmxLayout, VectorPathsEqualTheirReferences) {
  if (!nn::amx::vector_layout()) GTEST_SKIP() << "no AVX-512 F/BW/VL: the references are the code";
  std::mt19937 rng(5);
  for (int64_t M : {1, 3, 15, 16, 17, 31, 32, 40, 64}) {
    const int64_t K = 96, bw = std::min<int64_t>(M, 16), MB = (M + bw - 1) / bw;
    std::vector<uint16_t> x(M * K);
    for (auto& v : x) v = static_cast<uint16_t>(rng());
    const size_t n = 16 * bw * (K / 32) * MB;
    std::vector<uint32_t> got(n, 0xDEADBEEF), want(n, 0x12345678);
    nn::amx::pack_rows(x.data(), M, K, bw, got.data());
    nn::amx::pack_rows_reference(x.data(), M, K, bw, want.data());
    EXPECT_EQ(got, want) << "pack M " << M;
  }
  const std::vector<uint32_t> special{0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x7F800000u, 0xFF800000u, 0x00000001u,
                                      0x807FFFFFu, 0x3F808000u, 0x3F818000u, 0x3F80FFFFu, 0x7F7FFFFFu, 0x00000000u,
                                      0x80000000u, 0x3F7FFFFFu, 0x4049FFFFu, 0x7F7F8000u};
  for (int64_t M : {1, 5, 16, 17, 33, 64}) {
    const int64_t ldc = 16 * ((M + 15) / 16), N = 70;
    for (int64_t nrows : {1, 7, 15, 16, 17, 32}) {
      std::vector<float> ct(32 * ldc);
      for (size_t i = 0; i < ct.size(); ++i) {
        const uint32_t bits = i % 5 == 0 ? special[(i / 5) % special.size()] : static_cast<uint32_t>(rng());
        std::memcpy(&ct[i], &bits, 4);
      }
      std::vector<uint16_t> got(M * N, 0xAAAA), want(M * N, 0xAAAA);
      nn::amx::store_block(ct.data(), ldc, M, nrows, got.data(), N, 30);
      nn::amx::store_block_reference(ct.data(), ldc, M, nrows, want.data(), N, 30);
      ASSERT_EQ(got, want) << "store M " << M << " rows " << nrows;
    }
  }
  // The reference is c10's rounding (to nearest even; NaN 0x7FC0): spot-check the ties.
  const float tie_even = 1.00390625f, tie_odd = 1.01171875f;  // 0x3F808000, 0x3F818000
  std::vector<float> ct{tie_even, tie_odd};
  std::vector<uint16_t> y(2);
  nn::amx::store_block_reference(ct.data(), 1, 1, 2, y.data(), 2, 0);
  EXPECT_EQ(y, (std::vector<uint16_t>{0x3F80, 0x3F82}));
}

// The store's epilogue (scale, per-column scale, residual) against its scalar reference,
// bit for bit, on finite values; a NaN result stays a NaN.
TEST(AmxLayout, EpilogueEqualsItsReference) {
  if (!nn::amx::vector_layout()) GTEST_SKIP() << "no AVX-512 F/BW/VL: the reference is the code";
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.f, 3.f);
  auto bf = [](float v) { return c10::BFloat16(v).x; };
  for (int64_t M : {1, 5, 16, 33}) {
    const int64_t ldc = 16 * ((M + 15) / 16), N = 70, n = 30;
    std::vector<uint16_t> col(N), res(M * N);
    for (auto& v : col) v = bf(nd(rng));
    for (auto& v : res) v = bf(nd(rng) * 50);
    for (int variant = 0; variant < 8; ++variant)
      for (int64_t nrows : {7, 16, 32}) {
        std::vector<float> ct(32 * ldc);
        for (auto& v : ct) v = nd(rng) * 10;
        if (variant == 7) ct[3] = std::numeric_limits<float>::quiet_NaN();
        nn::amx::Epilogue e;
        if (variant & 1) e.has_scale = true, e.scale = static_cast<float>(c10::BFloat16(0.3f));
        if (variant & 2) e.col = col.data();
        if (variant & 4) e.residual = res.data();
        std::vector<uint16_t> got(M * N, 0xAAAA), want(M * N, 0xAAAA);
        nn::amx::store_block(ct.data(), ldc, M, nrows, got.data(), N, n, e);
        nn::amx::store_block_reference(ct.data(), ldc, M, nrows, want.data(), N, n, e);
        for (size_t i = 0; i < got.size(); ++i) {
          const bool nan_got = (got[i] & 0x7FFF) > 0x7F80, nan_want = (want[i] & 0x7FFF) > 0x7F80;
          ASSERT_EQ(nan_got, nan_want) << "M " << M << " variant " << variant << " at " << i;
          if (!nan_want) ASSERT_EQ(got[i], want[i]) << "M " << M << " variant " << variant << " rows " << nrows << " at " << i;
        }
      }
  }
}

// linear_rows_fused: each output equal, bit for bit, to the decode ops it replaces run one by
// one (nn::scale of the input, the product, nn::scale, nn::mul_last, at::add), for several
// weights with different input scales in one call, bf16 and f32. The AMX, VDPBF16PS and
// f32 FMA kernels have a fused path (one region, the epilogue as blocks are stored); on a
// CPU without AVX-512 (BF16, for bf16) the call runs those same ops itself, so there the
// test checks only its bookkeeping (which scaled input each product gets, output order).
TEST(Gemv, FusedProductsEqualTheOpsOneByOne) {
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  std::vector<nn::DecodeKernel> kernels{nn::DecodeKernel::kAvx512, nn::DecodeKernel::kPairs};
  if (nn::amx_available()) kernels.push_back(nn::DecodeKernel::kAuto);
  for (auto kernel : kernels)
    for (auto dt : {at::kBFloat16, at::kFloat}) {
      KernelScope scope(kernel);
      for (int64_t M : {1, 2, 3, 4, 16, 17, 40}) {
        const int64_t K = 96;
        Tensor x = at::randn({M, 1, K}, gen).to(dt);
        Tensor w0 = at::randn({70, K}, gen).to(dt), w1 = at::randn({33, K}, gen).to(dt),
               w2 = at::randn({16, K}, gen).to(dt);
        Tensor col = (at::rand({70}, gen) * 4).to(dt);
        Tensor r1 = (at::randn({M, 1, 33}, gen) * 20).to(dt), r2 = at::randn({M, 1, 16}, gen).to(dt);
        std::vector<nn::RowsProduct> ps(4);
        ps[0].w = w0, ps[0].in_scale = 0.3, ps[0].col_scale = col;
        ps[1].w = w1, ps[1].in_scale = 1.7, ps[1].out_scale = 0.11, ps[1].residual = r1;
        ps[2].w = w2, ps[2].residual = r2;
        ps[3].w = w1, ps[3].in_scale = 0.3, ps[3].out_scale = 2.5;
        auto got = nn::linear_rows_fused(x, ps);
        ASSERT_EQ(got.size(), ps.size());
        std::vector<Tensor> want{
            nn::mul_last(nn::linear_rows(nn::scale(x, 0.3), w0), col),
            r1 + nn::scale(nn::linear_rows(nn::scale(x, 1.7), w1), 0.11),
            r2 + nn::linear_rows(x, w2),
            nn::scale(nn::linear_rows(nn::scale(x, 0.3), w1), 2.5),
        };
        for (size_t i = 0; i < ps.size(); ++i) {
          ASSERT_EQ(got[i].sizes(), want[i].sizes()) << i;
          EXPECT_TRUE(at::equal(got[i], want[i]))
              << "kernel " << int(kernel) << " dtype " << dt << " M " << M << " product " << i;
        }
      }
    }
}

// ---- The k-pair layout as the weight itself -------------------------------------------------

// Whether the k-pair kernel runs here (else k-pair weights go through [N, K] copies).
static bool pairs_kernel_here() { return nn::simd::cpu_avx512f() && nn::simd::cpu_avx512bf16(); }

TEST(PairLayout, InPlaceRoundTripKeepsEveryValue) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(31);
  Tensor w = at::randn({96, 70}, gen).to(at::kBFloat16);
  const Tensor orig = w.clone();
  ASSERT_TRUE(nn::can_pair_layout(w));
  Tensor p = nn::to_pair_layout_inplace(w);
  EXPECT_EQ(p.sizes().vec(), (std::vector<int64_t>{3, 35, 32, 2}));
  EXPECT_EQ(p.data_ptr(), w.data_ptr());  // no copy
  EXPECT_TRUE(nn::is_pair_layout(p));
  EXPECT_FALSE(nn::is_pair_layout(orig));
  EXPECT_EQ(nn::out_features(p), 96);
  EXPECT_EQ(nn::in_features(p), 70);
  EXPECT_EQ(nn::out_features(orig), 96);
  // [b][q][r][e] = w[32 b + r][2 q + e]
  EXPECT_TRUE(at::equal(p[2][17][5][1], orig[69][35]));
  EXPECT_TRUE(at::equal(p[0][0][31][0], orig[31][0]));
  EXPECT_FALSE(at::equal(w, orig));  // the memory really was re-laid
  EXPECT_TRUE(at::equal(nn::row_layout_copy(p), orig));
  Tensor back = nn::to_row_layout_inplace(p);
  EXPECT_EQ(back.sizes().vec(), (std::vector<int64_t>{96, 70}));
  EXPECT_TRUE(at::equal(back, orig));
  // What cannot be re-laid is refused, and left alone.
  for (Tensor bad : {at::randn({32, 63}).to(at::kBFloat16), at::randn({0, 64}).to(at::kBFloat16),
                     at::randn({32, 64}), at::randn({64, 32}).to(at::kBFloat16).t()}) {
    EXPECT_FALSE(nn::can_pair_layout(bad));
    EXPECT_THROW(nn::to_pair_layout_inplace(bad), c10::Error);
  }
  EXPECT_THROW(nn::to_row_layout_inplace(orig), c10::Error);
}

// N not a multiple of 32: whole blocks, then the last N % 32 rows as one tight block
// ([q][r][e] over those rows), in the same N K values; a 5-D shape carries N.
TEST(PairLayout, TightLastBlockRoundTrip) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(36);
  for (int64_t N : {100, 152, 16, 7, 33}) {
    Tensor w = at::randn({N, 70}, gen).to(at::kBFloat16);
    const Tensor orig = w.clone();
    ASSERT_TRUE(nn::can_pair_layout(w)) << N;
    Tensor p = nn::to_pair_layout_inplace(w);
    EXPECT_EQ(p.sizes().vec(), (std::vector<int64_t>{1, 1, N, 35, 2})) << N;
    EXPECT_EQ(p.data_ptr(), w.data_ptr());
    EXPECT_TRUE(nn::is_pair_layout(p));
    EXPECT_EQ(nn::out_features(p), N);
    EXPECT_EQ(nn::in_features(p), 70);
    // The element mapping, written out: rows of whole blocks, then the tight block.
    const int64_t full = N / 32 * 32, t = N - full;
    const auto* mem = reinterpret_cast<const uint16_t*>(p.data_ptr<at::BFloat16>());
    const auto* ref = reinterpret_cast<const uint16_t*>(orig.data_ptr<at::BFloat16>());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < 70; ++k) {
        const int64_t b = n / 32, r = n % 32, width = n < full ? 32 : t;
        ASSERT_EQ(mem[b * 32 * 70 + ((k / 2) * width + r) * 2 + k % 2], ref[n * 70 + k]) << N << " " << n << " " << k;
      }
    EXPECT_TRUE(at::equal(nn::row_layout_copy(p), orig)) << N;
    Tensor back = nn::to_row_layout_inplace(p);
    EXPECT_EQ(back.sizes().vec(), (std::vector<int64_t>{N, 70}));
    EXPECT_TRUE(at::equal(back, orig)) << N;
  }
}

// A weight in k-pairs computes exactly what the k-pair kernel computes from the same weight
// in rows (kPairs's copy), at any batch size, through every entry point; prefill (linear()
// with many rows) included, so every row equals that row alone.
TEST(PairLayout, ProductsEqualTheKPairKernelOnRows) {
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(32);
  // 152, 100, 16: a tight last block of 24 (two panels), 4 and 16 rows. kPairs copies a rows
  // weight into the same layout, so the tight block is also checked against the weight
  // zero-padded to whole blocks (every block full: the kernel's unmasked path).
  for (int64_t N : {160, 152, 100, 16}) {
    const Tensor plain = at::randn({N, 128}, gen).to(at::kBFloat16);
    const Tensor packed = nn::to_pair_layout_inplace(plain.clone());
    const int64_t whole = (N + 31) / 32 * 32;
    const Tensor padded =
        nn::to_pair_layout_inplace(at::cat({plain, at::zeros({whole - N, 128}, at::kBFloat16)}).contiguous());
    // Where the k-pair kernel cannot run, the k-pair weight goes through a rows copy, i.e. the
    // default kernel.
    const nn::DecodeKernel ref_kernel = pairs_kernel_here() ? nn::DecodeKernel::kPairs : nn::DecodeKernel::kAuto;
    for (int64_t M : {1, 3, 8, 13, 40, 300}) {  // 300: in row tiles (kPairTileRows)
      Tensor x = at::randn({M, 128}, gen).to(at::kBFloat16);
      Tensor ref;
      {
        KernelScope scope(ref_kernel);
        ref = nn::gemv_rows(x, plain);
      }
      EXPECT_TRUE(at::equal(nn::gemv_rows(x, packed), ref)) << "N " << N << " M " << M;
      EXPECT_TRUE(at::equal(nn::gemv_rows(x, padded).narrow(1, 0, N), ref)) << "N " << N << " M " << M;
      EXPECT_TRUE(at::equal(nn::linear_rows(x, packed), ref)) << "N " << N << " M " << M;
      EXPECT_TRUE(at::equal(nn::linear(x.view({1, M, 128}), packed).view({M, N}), ref)) << "N " << N << " M " << M;
      for (int64_t m = 0; m < M; ++m)
        ASSERT_TRUE(at::equal(nn::linear(x[m], packed), ref[m])) << "N " << N << " M " << M << " row " << m;
      // Whatever decode kernel is set, the layout decides.
      KernelScope avx(nn::DecodeKernel::kAvx512);
      EXPECT_TRUE(at::equal(nn::linear_rows(x, packed), ref)) << "N " << N << " M " << M;
      // Right, not only consistent.
      Tensor dref = at::matmul(x.to(at::kDouble), plain.to(at::kDouble).t());
      EXPECT_LT(((ref.to(at::kDouble) - dref).abs() / (dref.abs() + 1.0)).max().item<double>(), 8e-3);
    }
  }
}

// A fused call mixing layouts: each product as it is alone (a weight in rows keeps its own
// kernel), epilogues included.
TEST(PairLayout, FusedCallWithBothLayoutsEqualsTheOpsOneByOne) {
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(33);
  const Tensor packed = nn::to_pair_layout_inplace(at::randn({64, 96}, gen).to(at::kBFloat16));
  const Tensor small = at::randn({4, 96}, gen).to(at::kBFloat16);  // left in rows
  const Tensor tight = nn::to_pair_layout_inplace(at::randn({40, 96}, gen).to(at::kBFloat16));  // 8-row last block
  for (int64_t M : {1, 5, 16}) {
    Tensor x = at::randn({M, 1, 96}, gen).to(at::kBFloat16);
    Tensor col = at::randn({64}, gen).to(at::kBFloat16), res = at::randn({M, 1, 64}, gen).to(at::kBFloat16);
    std::vector<nn::RowsProduct> ps(4);
    ps[0].w = small, ps[0].out_scale = 0.5;
    ps[1].w = packed, ps[1].col_scale = col, ps[1].residual = res;
    ps[2].w = packed, ps[2].in_scale = 2.0;
    ps[3].w = tight, ps[3].out_scale = 0.25;
    auto ys = nn::linear_rows_fused(x, ps);
    ASSERT_EQ(ys.size(), 4u);
    EXPECT_TRUE(at::equal(ys[3], nn::scale(nn::linear_rows(x, tight), 0.25))) << M;
    EXPECT_EQ(ys[3].sizes().vec(), (std::vector<int64_t>{M, 1, 40}));
    EXPECT_TRUE(at::equal(ys[0], nn::scale(nn::linear_rows(x, small), 0.5))) << M;
    EXPECT_TRUE(at::equal(ys[1], res + nn::mul_last(nn::linear_rows(x, packed), col))) << M;
    EXPECT_TRUE(at::equal(ys[2], nn::linear_rows(nn::scale(x, 2.0), packed))) << M;
    EXPECT_EQ(ys[1].sizes().vec(), (std::vector<int64_t>{M, 1, 64}));
    auto multi = nn::linear_rows_multi(x, {packed, small});
    EXPECT_TRUE(at::equal(multi[0], nn::linear_rows(x, packed)));
    EXPECT_TRUE(at::equal(multi[1], nn::linear_rows(x, small)));
  }
}

TEST(PairLayout, EmbeddingRowsAndAutogradReadTheSameWeight) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(34);
  const Tensor plain = at::randn({96, 40}, gen).to(at::kBFloat16);
  const Tensor packed = nn::to_pair_layout_inplace(plain.clone());
  Tensor ids = at::tensor(std::vector<int64_t>{0, 95, 33, 33, 64, 31}, at::kLong).view({2, 3});
  EXPECT_TRUE(at::equal(nn::embedding(packed, ids), nn::embedding(plain, ids)));
  {  // a tight last block (rows 96..104)
    const Tensor plain9 = at::randn({105, 40}, gen).to(at::kBFloat16);
    const Tensor packed9 = nn::to_pair_layout_inplace(plain9.clone());
    Tensor ids9 = at::tensor(std::vector<int64_t>{104, 96, 0, 95, 100}, at::kLong);
    EXPECT_TRUE(at::equal(nn::embedding(packed9, ids9), plain9.index_select(0, ids9)));
    EXPECT_THROW(nn::embedding(packed9, at::tensor(std::vector<int64_t>{105}, at::kLong)), c10::Error);
  }
  EXPECT_EQ(nn::embedding(packed, ids).sizes().vec(), (std::vector<int64_t>{2, 3, 40}));
  EXPECT_TRUE(at::equal(nn::embedding(plain, ids)[0][1], plain[95]));
  EXPECT_THROW(nn::embedding(packed, at::tensor(std::vector<int64_t>{96}, at::kLong)), c10::Error);
  EXPECT_THROW(nn::embedding(packed, at::tensor(std::vector<int64_t>{-1}, at::kLong)), c10::Error);
  // Under autograd (training through a frozen weight): the rows' values and dx = dy W.
  Tensor x = at::randn({3, 40}, gen).to(at::kBFloat16).requires_grad_(true);
  Tensor y = nn::linear(x, packed);
  ASSERT_TRUE(y.requires_grad());
  EXPECT_TRUE(at::equal(y, at::linear(x, plain)));
  auto g = torch::autograd::grad({y.sum()}, {x})[0];
  auto g_ref = torch::autograd::grad({at::linear(x, plain).sum()}, {x})[0];
  EXPECT_TRUE(at::equal(g, g_ref));
}

// Many rows with a long K (prefill of a down projection): row tiles of 48, each row as alone.
TEST(PairLayout, RowTilesComputeEachRowAsAlone) {
  NoGrad ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(35);
  const Tensor plain = at::randn({96, 2080}, gen).to(at::kBFloat16);
  const Tensor packed = nn::to_pair_layout_inplace(plain.clone());
  Tensor x = at::randn({1, 211, 2080}, gen).to(at::kBFloat16);
  Tensor y = nn::linear(x, packed);
  ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{1, 211, 96}));
  for (int64_t m = 0; m < 211; ++m) ASSERT_TRUE(at::equal(y[0][m], nn::linear(x[0][m], packed))) << m;
  Tensor dref = at::matmul(x.to(at::kDouble), plain.to(at::kDouble).t());
  EXPECT_LT(((y.to(at::kDouble) - dref).abs() / (dref.abs() + 1.0)).max().item<double>(), 8e-3);
}
