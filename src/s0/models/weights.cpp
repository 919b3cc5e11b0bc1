#include "s0/models/weights.h"

#include <cmath>

#include "s0/util/error.h"

namespace s0::models {

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
                   const std::vector<int64_t>& shape, at::ScalarType dtype) {
  const io::TensorInfo& t = dir.get(name, shape);
  if (t.dtype != io::DType::F32 && t.dtype != io::DType::BF16 && t.dtype != io::DType::F16 &&
      t.dtype != io::DType::F64)
    throw Error(dir.file_of(name) + ": tensor '" + t.name + "' has dtype " +
                io::dtype_name(t.dtype) + ", expected a floating type (F32, BF16, F16)");
  Tensor w = tensor_view(t).to(dtype, /*non_blocking=*/false, /*copy=*/true);
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
