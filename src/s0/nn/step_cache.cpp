#include "s0/nn/step_cache.h"

#include <string>

namespace s0::nn {

StepRows prepare_step_rows(const char* who, const std::vector<RecurrentStepCache>& caches, int64_t B, int64_t C,
                           int64_t Kc, at::IntArrayRef state_shape, at::ScalarType dt) {
  int64_t per_state = 1;
  for (int64_t d : state_shape) per_state *= d;
  const int64_t per_hist = C * (Kc - 1);
  const auto opt = at::TensorOptions().dtype(dt);
  StepRows out;
  int64_t rows = 0;
  for (const RecurrentStepCache& c : caches) {
    TORCH_CHECK(c.conv && c.state && c.rows > 0, who, ": cache");
    Tensor& hist = *c.conv;
    Tensor& st = *c.state;
    std::vector<int64_t> shape{c.rows};
    shape.insert(shape.end(), state_shape.begin(), state_shape.end());
    if (!hist.defined()) hist = at::zeros({c.rows, C, Kc - 1}, opt);
    if (!st.defined()) st = at::zeros(shape, opt.dtype(at::kFloat));
    TORCH_CHECK(hist.scalar_type() == dt && hist.numel() == c.rows * per_hist, who,
                ": conv history [rows, C, Kc-1] in the model dtype");
    TORCH_CHECK(st.scalar_type() == at::kFloat && st.numel() == c.rows * per_state, who, ": state ", at::IntArrayRef(shape),
                " float32");
    if (!hist.is_contiguous()) hist = hist.contiguous();
    if (!st.is_contiguous()) st = st.contiguous();
    auto* h = static_cast<char*>(hist.data_ptr());
    const int64_t hist_bytes = per_hist * static_cast<int64_t>(hist.element_size());
    for (int64_t i = 0; i < c.rows; ++i) {
      out.hist.push_back(h + i * hist_bytes);
      out.state.push_back(st.data_ptr<float>() + i * per_state);
    }
    rows += c.rows;
  }
  TORCH_CHECK(rows == B, who, ": the caches hold ", rows, " rows for ", B, " inputs");
  return out;
}

}  // namespace s0::nn
