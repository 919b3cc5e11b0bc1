#pragma once
// The independent float64 Qwen2 reference (tools/qwen2_reference.py) from the tests.
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "s0/util/torch.h"
#include "test_util.h"

namespace s0::testing {

// Its logits [L, vocab] (float64) for `ids` on the model in `model_dir`, with the PEFT prefix
// adapter directory `prefix` when given.
inline Tensor qwen2_reference_logits(const std::string& model_dir, const std::vector<int64_t>& ids,
                                     const std::string& prefix = "") {
  std::string list;
  for (auto i : ids) list += (list.empty() ? "" : ",") + std::to_string(i);
  auto [rc, out] =
      run_cmd("python3 " + repo_root() + "/tools/qwen2_reference.py logits --model " + model_dir +
              " --ids " + list + (prefix.empty() ? "" : " --prefix " + prefix));
  if (rc != 0) throw std::runtime_error("qwen2_reference.py failed: " + out);
  auto j = nlohmann::json::parse(out);
  std::vector<double> flat;
  for (const auto& row : j["logits"])
    for (const auto& v : row) flat.push_back(v.get<double>());
  return at::tensor(flat, at::kDouble).view({static_cast<int64_t>(j["logits"].size()), -1});
}

}  // namespace s0::testing
