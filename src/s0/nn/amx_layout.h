#pragma once
// Private to src/s0/nn and its tests: the data movement around the AMX decode product
// (linear.cpp), each with a plain scalar reference that the tests hold the vector path to,
// bit for bit.
//
// The product takes the batch rows x [M, K] (bf16) as B tiles: for m-block b (16 rows, or
// bw = M rows when M < 16) and k-block j (32 elements), a 16 x bw tile of 32-bit pairs whose
// element [p][m] is (x[bw b + m][32 j + 2 p], x[bw b + m][32 j + 2 p + 1]); rows past M are
// zero. Its results come out of the tiles as ct [weight row][batch row] (f32, row stride
// ldc = 16 x the m-blocks, m-block b in columns [16 b, 16 b + bw)) and go into y [M, N] (bf16,
// rounded to nearest even as c10::BFloat16 rounds, NaN to 0x7FC0).
#include <cstdint>

namespace s0::nn::amx {

// x [M, K] row-major, K a multiple of 32, bw = min(M, 16): out gets 16 * bw * (K / 32) *
// ceil(M / bw) values.
void pack_rows(const uint16_t* x, int64_t M, int64_t K, int64_t bw, uint32_t* out);
void pack_rows_reference(const uint16_t* x, int64_t M, int64_t K, int64_t bw, uint32_t* out);

// What happens to a product's rounded result t = bf16(ct[i][m]) before it is stored, each
// step rounded to bf16 as the separate decode op it replaces rounds: t * scale (nn::scale;
// `scale` is already a bf16 value), t * col[n + i] (nn::mul_last), residual[m][n + i] + t
// (at::add). Skipped where unset.
struct Epilogue {
  bool has_scale = false;
  float scale = 1;
  const uint16_t* col = nullptr;       // [N]
  const uint16_t* residual = nullptr;  // [M, N], row stride N
};

// y[m][n + i] = epilogue(bf16(ct[i][m])) for m < M, i < nrows (nrows <= 32), y (and the
// residual) with row stride N. Bitwise equal to the reference for every non-NaN value; a
// NaN stays a NaN.
void store_block(const float* ct, int64_t ldc, int64_t M, int64_t nrows, uint16_t* y, int64_t N, int64_t n,
                 const Epilogue& e = {});
void store_block_reference(const float* ct, int64_t ldc, int64_t M, int64_t nrows, uint16_t* y, int64_t N,
                           int64_t n, const Epilogue& e = {});

// The vector paths run (AVX-512 F/BW/VL present); otherwise the functions above are the
// references.
bool vector_layout();

}  // namespace s0::nn::amx
