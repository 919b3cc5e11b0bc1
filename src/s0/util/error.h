#pragma once
// The one exception type for errors a user can cause (bad paths, malformed files, shape
// mismatches, bad arguments). Messages name the file/field and what was expected.
#include <stdexcept>
#include <string>

namespace s0 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace s0
