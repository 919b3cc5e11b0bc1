#pragma once
// The exception types for errors a user can cause (bad paths, malformed files, shape
// mismatches, bad arguments). Messages name the file/field and what was expected.
// FileNotFound is the Error for a file or directory that does not exist (the Python module
// raises FileNotFoundError for it, ValueError for every other Error).
#include <stdexcept>
#include <string>

namespace s0 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

class FileNotFound : public Error {
 public:
  explicit FileNotFound(const std::string& what) : Error(what) {}
};

}  // namespace s0
