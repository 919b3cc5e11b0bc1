#include "s0/models/weights.h"

#include <sys/mman.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "s0/util/error.h"
#include "s0/util/huge_pages.h"

namespace s0::models {

struct WeightArena::Chunk {
  void* base = nullptr;
  size_t bytes = 0;
  ~Chunk() {
    if (base) ::munmap(base, bytes);
  }
};

Tensor WeightArena::empty(const std::vector<int64_t>& shape, at::ScalarType dtype) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const int64_t bytes = std::max<int64_t>(n * static_cast<int64_t>(c10::elementSize(dtype)), 1);
  const int64_t aligned = (bytes + 4095) / 4096 * 4096;  // each tensor on its own 4 KB pages
  if (!cur_ || used_ + aligned > static_cast<int64_t>(cur_->bytes)) {
    constexpr int64_t kHuge = int64_t{2} << 20;
    const int64_t want = (std::max(kChunkBytes, aligned) + kHuge - 1) / kHuge * kHuge;
    // Reserve 2 MB more and trim, so the chunk starts on a 2 MB boundary (a huge page can
    // back only an aligned 2 MB range).
    void* p = ::mmap(nullptr, want + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      throw Error("cannot reserve " + std::to_string(want >> 20) + " MB for the model weights: " + std::strerror(errno));
    const uintptr_t a = reinterpret_cast<uintptr_t>(p), start = (a + kHuge - 1) / kHuge * kHuge;
    if (start > a) ::munmap(p, start - a);
    if (const uintptr_t end = a + want + kHuge; end > start + want) ::munmap(reinterpret_cast<void*>(start + want), end - (start + want));
    auto c = std::make_shared<Chunk>();
    c->base = reinterpret_cast<void*>(start);
    c->bytes = static_cast<size_t>(want);
    reserved_ += want;
    if (util::huge_pages_wanted() && ::madvise(c->base, c->bytes, MADV_HUGEPAGE) == 0) advised_ += want;
    cur_ = std::move(c);
    used_ = 0;
  }
  void* p = static_cast<char*>(cur_->base) + used_;
  used_ += aligned;
  std::shared_ptr<Chunk> keep = cur_;
  return at::from_blob(p, shape, [keep](void*) mutable { keep.reset(); }, at::TensorOptions().dtype(dtype));
}

Tensor tensor_view(const io::TensorInfo& t) {
  at::ScalarType st;
  switch (t.dtype) {
    case io::DType::F32: st = at::kFloat; break;
    case io::DType::BF16: st = at::kBFloat16; break;
    case io::DType::F16: st = at::kHalf; break;
    case io::DType::F64: st = at::kDouble; break;
    case io::DType::I64: st = at::kLong; break;
    case io::DType::I32: st = at::kInt; break;
    default:
      throw Error("tensor '" + t.name + "' has dtype " + io::dtype_name(t.dtype) +
                  ", expected F32, BF16, F16, F64, I64 or I32");
  }
  return at::from_blob(const_cast<uint8_t*>(t.data), t.shape, at::TensorOptions().dtype(st));
}

Tensor load_weight(const io::ModelDir& dir, const std::string& name,
                   const std::vector<int64_t>& shape, at::ScalarType dtype, WeightArena* arena) {
  const io::TensorInfo& t = dir.get(name, shape);
  if (t.dtype != io::DType::F32 && t.dtype != io::DType::BF16 && t.dtype != io::DType::F16 &&
      t.dtype != io::DType::F64)
    throw Error(dir.file_of(name) + ": tensor '" + t.name + "' has dtype " +
                io::dtype_name(t.dtype) + ", expected a floating type (F32, BF16, F16)");
  Tensor w;
  if (arena) {
    w = arena->empty(shape, dtype);
    w.copy_(tensor_view(t));
  } else {
    w = tensor_view(t).to(dtype, /*non_blocking=*/false, /*copy=*/true);
  }
  // A NaN or infinity in a frozen weight makes every output (and S0's gradients) NaN: refuse
  // the checkpoint by name. max/min propagate NaN and see +-inf; two reductions, no temporary.
  if (w.numel() > 0) {
    const double hi = w.max().item<double>(), lo = w.min().item<double>();
    if (!std::isfinite(hi) || !std::isfinite(lo))
      throw Error(dir.file_of(name) + ": tensor '" + t.name + "' contains NaN or infinite values" +
                  (tensor_view(t).scalar_type() != dtype ? " (as " + std::string(c10::toString(dtype)) + ")" : "") +
                  "; the checkpoint is corrupt or does not fit this dtype");
  }
  return w;
}

}  // namespace s0::models
