#pragma once
// Reader and streaming writer for the safetensors format:
//   [u64 little-endian header length N][N bytes of JSON header][data section]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data section) plus an optional "__metadata__" object of string -> string.
// Pure C++ (no libtorch); data is raw little-endian bytes.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "s0/io/atomic_file.h"

namespace s0::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType dt);
// Name as spelled in safetensors headers: "F64", "F32", "F16", "BF16", "I64", ..., "BOOL".
const char* dtype_name(DType dt);
// Inverse of dtype_name. Throws s0::Error("<context>: unknown dtype '<s>' ...").
DType dtype_from_name(const std::string& s, const std::string& context);

// "[2, 3]" (used in error messages).
std::string shape_to_string(const std::vector<int64_t>& shape);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;     // [] is a 0-d scalar (numel 1)
  uint64_t begin = 0, end = 0;    // offsets into the data section, as in the header
  const uint8_t* data = nullptr;  // into the mapping; valid while the SafetensorsFile lives.
                                  // NOT necessarily aligned: memcpy, don't reinterpret_cast.
  int64_t numel() const;
  size_t nbytes() const;  // == end - begin (validated)
};

// Memory-maps a .safetensors file read-only and validates the whole header in the constructor
// (types, dtypes, shapes, offsets in bounds, sizes consistent, no overlaps). Any problem throws
// s0::Error naming the file (and the tensor). Gaps between tensors and trailing bytes after the
// last tensor are tolerated.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const;
  // Throws s0::Error("<path>: tensor '<name>' not found").
  const TensorInfo& get(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  void unmap() noexcept;

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  int64_t numel() const;  // throws s0::Error on negative dims / overflow
  size_t nbytes() const;
};

// Streaming writer: the header (all specs) is written up front, then the tensor bytes are
// appended with write() in spec order (chunks may span tensors), then finish() commits the
// file atomically. Destroying the writer before finish() leaves no file behind.
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, std::vector<TensorSpec> specs,
                    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  SafetensorsWriter(SafetensorsWriter&&) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&&) noexcept;

  // Appends bytes to the tensor stream. Throws (writing nothing) if the total would exceed the
  // declared size of all tensors.
  void write(const void* data, size_t nbytes);
  // Throws if fewer bytes than declared were written; otherwise commits atomically.
  void finish();

  uint64_t total_bytes() const { return total_; }
  uint64_t bytes_written() const { return written_; }

 private:
  std::string path_;
  std::vector<TensorSpec> specs_;
  uint64_t total_ = 0, written_ = 0;
  std::unique_ptr<AtomicFileWriter> out_;
};

// One-shot save. Each pointer must hold spec.nbytes() bytes (may be null when that is 0).
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<TensorSpec, const void*>>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace s0::io
