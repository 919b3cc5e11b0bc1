#pragma once
// The recurrent caches a fused decode step (gdn_step.h, ssd_step.h) continues: per group of
// consecutive rows, a conv history [rows, C, Kc-1] in the model dtype and a float32 state
// [rows, ...]. Shared by the kernels so that both prepare and check them the same way.
#include <vector>

#include "s0/util/torch.h"

namespace s0::nn {

// A group of consecutive rows continuing one cache. Undefined tensors (a fresh cache)
// become zeros; both are made contiguous (in the cache) and then updated in place.
struct RecurrentStepCache {
  Tensor* conv = nullptr;
  Tensor* state = nullptr;
  int64_t rows = 1;
};

// Every row's history and state, in row order.
struct StepRows {
  std::vector<void*> hist;    // [C, Kc-1] of the model dtype
  std::vector<float*> state;  // state_shape, float32
};

// Creates (zeros), checks and makes contiguous each cache's history and state for B input
// rows of dtype `dt`; errors name `who`. state_shape excludes the row dimension.
StepRows prepare_step_rows(const char* who, const std::vector<RecurrentStepCache>& caches, int64_t B, int64_t C,
                           int64_t Kc, at::IntArrayRef state_shape, at::ScalarType dt);

}  // namespace s0::nn
