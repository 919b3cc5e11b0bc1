#pragma once
// Checkpoint tensors -> libtorch tensors of the model dtype.
#include "s0/io/model_dir.h"
#include "s0/util/torch.h"

namespace s0::models {

// The tensor `name` of `dir`, shape-checked against `shape`, converted to `dtype` (a copy;
// the source may be F32, BF16 or F16 whatever the target).
Tensor load_weight(const io::ModelDir& dir, const std::string& name,
                   const std::vector<int64_t>& shape, at::ScalarType dtype);

// A view of a safetensors tensor as a libtorch tensor of its stored dtype (no copy; valid
// while the file is mapped; must not be written).
Tensor tensor_view(const io::TensorInfo& t);

}  // namespace s0::models
