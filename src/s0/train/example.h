#pragma once
// One training sequence (torch-free: the JSONL reader and its fuzz harness need no libtorch).
#include <cstdint>
#include <vector>

namespace s0::train {

// target[t] = 1 when token t belongs to the completion (it is then predicted from position
// t-1 and counted in the loss); prompt tokens have 0.
struct Example {
  std::vector<int64_t> ids;
  std::vector<uint8_t> target;
  // Completion tokens after the first position.
  int64_t num_targets() const {
    int64_t n = 0;
    for (size_t t = 1; t < target.size(); ++t) n += target[t] != 0;
    return n;
  }
};

}  // namespace s0::train
