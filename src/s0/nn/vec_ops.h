#pragma once
// Passes over one float array that the token sampler makes over a vocabulary-sized row
// (248k entries for Qwen3.5): AVX-512 where the CPU has it, plain loops otherwise. Torch-free.
#include <cstdint>

namespace s0::nn {

// Widens n bf16 values (raw bits) to f32 (exact).
void widen_bf16(const uint16_t* x, float* y, int64_t n);

// The largest of x[0, n) with NaNs ignored (-inf when n == 0 or all are NaN).
float max_ignoring_nan(const float* x, int64_t n);

// The first i with x[i] == v, or n when there is none.
int64_t find_first(const float* x, int64_t n, float v);

// y[i] = exp((x[i] - shift) * scale) in f32 (~1 ulp), returned summed in f64 (16 fixed
// lanes: the sum depends only on the values). x == y is allowed.
double exp_shifted(const float* x, float shift, float scale, float* y, int64_t n);

// Writes to idx, in increasing order, every i with y[i] >= thr; returns how many.
int64_t indices_at_least(const float* y, int64_t n, float thr, int32_t* idx);

}  // namespace s0::nn
