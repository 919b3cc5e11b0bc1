#pragma once
// Checkpoint tensors -> libtorch tensors of the model dtype.
#include <memory>

#include "s0/io/model_dir.h"
#include "s0/util/torch.h"

namespace s0::models {

// Memory for a model's weights, asked to be backed by 2 MB pages (madvise(MADV_HUGEPAGE):
// Linux's default THP mode grants them to memory that asks; see util/huge_pages.h for why
// decode wants them). Tensors are carved out of chunks reserved kChunkBytes at a time, each
// on 2 MB boundaries (only touched pages cost memory); a chunk is unmapped when the arena
// and every tensor in it are gone. With S0_HUGE_PAGES=0, or where THP is off, the chunks
// are ordinary anonymous memory. Not thread-safe (one loader at a time).
class WeightArena {
 public:
  static constexpr int64_t kChunkBytes = int64_t{256} << 20;
  // An uninitialised contiguous tensor of `shape` and `dtype` in the arena.
  Tensor empty(const std::vector<int64_t>& shape, at::ScalarType dtype);
  // Bytes of the chunks reserved so far / of those the kernel took the huge-page advice for.
  int64_t reserved_bytes() const { return reserved_; }
  int64_t advised_bytes() const { return advised_; }

 private:
  struct Chunk;
  std::shared_ptr<Chunk> cur_;
  int64_t used_ = 0, reserved_ = 0, advised_ = 0;
};

// The tensor `name` of `dir`, shape-checked against `shape`, converted to `dtype` (a copy;
// the source may be F32, BF16 or F16 whatever the target). With an arena the copy is placed
// there.
Tensor load_weight(const io::ModelDir& dir, const std::string& name,
                   const std::vector<int64_t>& shape, at::ScalarType dtype,
                   WeightArena* arena = nullptr);

// A view of a safetensors tensor as a libtorch tensor of its stored dtype (no copy; valid
// while the file is mapped; must not be written).
Tensor tensor_view(const io::TensorInfo& t);

}  // namespace s0::models
