#include "s0/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "s0/util/error.h"

namespace s0::io {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as the reference implementation
constexpr int kMaxJsonDepth = 64;                  // a valid header nests 3 levels deep

struct DTypeEntry {
  DType dt;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8},   {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

const DTypeEntry& entry(DType dt) {
  for (const auto& e : kDTypes) {
    if (e.dt == dt) return e;
  }
  throw Error("invalid DType value " + std::to_string(static_cast<int>(dt)));
}

// Product of dims; throws `Error(context + ...)` on negative dims or int64 overflow.
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& context) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      throw Error(context + ": negative dimension " + std::to_string(d) + " in shape " +
                  shape_to_string(shape));
    }
    if (__builtin_mul_overflow(n, d, &n)) {
      throw Error(context + ": shape " + shape_to_string(shape) +
                  " has too many elements (numel overflows int64)");
    }
  }
  return n;
}

// numel * dtype_size, with overflow check.
uint64_t checked_nbytes(DType dt, const std::vector<int64_t>& shape, const std::string& context) {
  const int64_t n = checked_numel(shape, context);
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(n), static_cast<uint64_t>(dtype_size(dt)),
                             &bytes) ||
      bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    throw Error(context + ": shape " + shape_to_string(shape) + " of " + dtype_name(dt) +
                " is too large (byte size overflows)");
  }
  return bytes;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// DType helpers

size_t dtype_size(DType dt) { return entry(dt).size; }
const char* dtype_name(DType dt) { return entry(dt).name; }

DType dtype_from_name(const std::string& s, const std::string& context) {
  for (const auto& e : kDTypes) {
    if (s == e.name) return e.dt;
  }
  std::string known;
  for (const auto& e : kDTypes) known += std::string(known.empty() ? "" : ", ") + e.name;
  throw Error(context + ": unknown dtype " + quoted(s) + " (supported: " + known + ")");
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}
size_t TensorInfo::nbytes() const { return static_cast<size_t>(end - begin); }

int64_t TensorSpec::numel() const { return checked_numel(shape, "tensor " + quoted(name)); }
size_t TensorSpec::nbytes() const {
  return static_cast<size_t>(checked_nbytes(dtype, shape, "tensor " + quoted(name)));
}

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

// RAII fd for the constructor.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Parses and validates one tensor entry of the header. `data_size` is the size of the data
// section; the caller fills in `data` and checks overlaps.
TensorInfo parse_tensor(const std::string& path, const std::string& name, const json& j,
                        uint64_t data_size, uint64_t data_start, uint64_t file_size) {
  const std::string ctx = path + ": tensor " + quoted(name);
  if (!j.is_object()) {
    throw Error(ctx + ": header entry must be a JSON object, found " + j.type_name());
  }
  auto field = [&](const char* key) -> const json& {
    auto it = j.find(key);
    if (it == j.end()) throw Error(ctx + ": missing \"" + key + "\" in header entry");
    return *it;
  };
  const json& jd = field("dtype");
  const json& js = field("shape");
  const json& jo = field("data_offsets");

  TensorInfo t;
  t.name = name;
  if (!jd.is_string()) throw Error(ctx + ": \"dtype\" must be a string, found " + jd.type_name());
  t.dtype = dtype_from_name(jd.get<std::string>(), ctx);

  if (!js.is_array()) throw Error(ctx + ": \"shape\" must be an array, found " + js.type_name());
  for (const json& d : js) {
    if (d.is_number_unsigned()) {
      const uint64_t u = d.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        throw Error(ctx + ": dimension " + std::to_string(u) + " in shape " + js.dump() +
                    " is too large");
      }
      t.shape.push_back(static_cast<int64_t>(u));
    } else if (d.is_number_integer()) {
      t.shape.push_back(d.get<int64_t>());  // negative: rejected below
    } else {
      throw Error(ctx + ": \"shape\" must contain integers, found " + js.dump());
    }
  }
  const uint64_t expected = checked_nbytes(t.dtype, t.shape, ctx);

  if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() ||
      !jo[1].is_number_unsigned()) {
    throw Error(ctx + ": \"data_offsets\" must be [begin, end] with non-negative integers, found " +
                jo.dump());
  }
  t.begin = jo[0].get<uint64_t>();
  t.end = jo[1].get<uint64_t>();
  if (t.begin > t.end) {
    throw Error(ctx + ": data_offsets begin " + std::to_string(t.begin) + " > end " +
                std::to_string(t.end));
  }
  if (t.end - t.begin != expected) {
    throw Error(ctx + ": expected " + std::to_string(expected) + " bytes for " +
                dtype_name(t.dtype) + " " + shape_to_string(t.shape) + ", found " +
                std::to_string(t.end - t.begin) + " (data_offsets [" + std::to_string(t.begin) +
                "," + std::to_string(t.end) + "])");
  }
  if (t.end > data_size) {
    // data_start + end cannot overflow: data_start <= file_size and end <= INT64_MAX.
    throw Error(path + ": truncated file: tensor " + quoted(name) + " ends at data offset " +
                std::to_string(t.end) + " but the data section has only " +
                std::to_string(data_size) + " bytes (expected at least " +
                std::to_string(data_start + t.end) + " bytes, file has " +
                std::to_string(file_size) + ")");
  }
  return t;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  Fd fd;
  fd.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd.fd < 0) {
    if (errno == ENOENT) throw FileNotFound("cannot open " + path + ": " + std::strerror(errno));
    throw Error("cannot open " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) throw Error("cannot stat " + path + ": " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw Error("cannot read " + path + ": is a directory");
  if (!S_ISREG(st.st_mode)) throw Error("cannot read " + path + ": not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    throw Error(path + ": not a safetensors file: " + std::to_string(file_size) +
                " bytes, need at least 8 for the header length");
  }

  map_size_ = static_cast<size_t>(file_size);
  void* m = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (m == MAP_FAILED) {
    map_size_ = 0;
    throw Error("cannot mmap " + path + ": " + std::strerror(errno));
  }
  map_ = m;
  // From here on, failures must unmap (the destructor does not run for a throwing ctor).
  try {
    const auto* base = static_cast<const uint8_t*>(map_);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
    if (header_len > file_size - 8) {
      throw Error(path + ": header length " + std::to_string(header_len) +
                  " exceeds the file size (" + std::to_string(file_size) +
                  " bytes; not a safetensors file or truncated)");
    }
    if (header_len > kMaxHeaderBytes) {
      throw Error(path + ": header length " + std::to_string(header_len) +
                  " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
    }
    const uint64_t data_start = 8 + header_len;
    const uint64_t data_size = file_size - data_start;
    const char* hbegin = reinterpret_cast<const char*>(base + 8);

    // Parse with a callback that limits nesting (no unbounded memory on hostile input) and
    // rejects duplicate top-level keys (which nlohmann would otherwise silently overwrite).
    std::set<std::string> seen;
    json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
      if ((ev == json::parse_event_t::object_start || ev == json::parse_event_t::array_start) &&
          depth > kMaxJsonDepth) {
        throw Error(path + ": header JSON nests deeper than " + std::to_string(kMaxJsonDepth) +
                    " levels");
      }
      if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
        if (!seen.insert(parsed.get<std::string>()).second) {
          throw Error(path + ": duplicate entry " + quoted(parsed.get<std::string>()) +
                      " in header");
        }
      }
      return true;
    };
    json header;
    try {
      header = json::parse(hbegin, hbegin + header_len, cb);
    } catch (const json::exception& e) {
      throw Error(path + ": header is not valid JSON (" + e.what() + ")");
    }
    if (!header.is_object()) {
      throw Error(path + ": header must be a JSON object, found " + header.type_name());
    }

    for (const auto& [key, val] : header.items()) {
      if (key == "__metadata__") {
        if (!val.is_object()) {
          throw Error(path + ": \"__metadata__\" must be an object, found " + val.type_name());
        }
        for (const auto& [mk, mv] : val.items()) {
          if (!mv.is_string()) {
            throw Error(path + ": \"__metadata__\" value for key " + quoted(mk) +
                        " must be a string, found " + mv.type_name());
          }
          metadata_[mk] = mv.get<std::string>();
        }
        continue;
      }
      TensorInfo t = parse_tensor(path, key, val, data_size, data_start, file_size);
      t.data = base + data_start + t.begin;
      tensors_.emplace(key, std::move(t));
    }

    // Overlap check on non-empty ranges, sorted by begin.
    std::vector<const TensorInfo*> order;
    for (const auto& [_, t] : tensors_) {
      if (t.end > t.begin) order.push_back(&t);
    }
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    for (size_t i = 1; i < order.size(); ++i) {
      const TensorInfo& a = *order[i - 1];
      const TensorInfo& b = *order[i];
      if (b.begin < a.end) {
        throw Error(path + ": tensors " + quoted(a.name) + " [" + std::to_string(a.begin) + "," +
                    std::to_string(a.end) + ") and " + quoted(b.name) + " [" +
                    std::to_string(b.begin) + "," + std::to_string(b.end) +
                    ") overlap in the data section");
      }
    }
  } catch (...) {
    unmap();
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() { unmap(); }

void SafetensorsFile::unmap() noexcept {
  if (map_ != nullptr) ::munmap(map_, map_size_);
  map_ = nullptr;
  map_size_ = 0;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept
    : path_(std::move(o.path_)),
      map_(std::exchange(o.map_, nullptr)),
      map_size_(std::exchange(o.map_size_, 0)),
      tensors_(std::move(o.tensors_)),
      metadata_(std::move(o.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_size_ = std::exchange(o.map_size_, 0);
    tensors_ = std::move(o.tensors_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

bool SafetensorsFile::has(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorInfo& SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_ + ": tensor " + quoted(name) + " not found");
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, _] : tensors_) out.push_back(name);
  return out;  // std::map iteration order: sorted
}

// ---------------------------------------------------------------------------------------------
// Writer

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<TensorSpec> specs,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), specs_(std::move(specs)) {
  // Header in spec order (ordered_json), "__metadata__" first as other writers do.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    header["__metadata__"] = std::move(md);
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorSpec& s : specs_) {
    const std::string ctx = path + ": tensor " + quoted(s.name);
    if (s.name == "__metadata__") throw Error(ctx + ": name is reserved");
    if (!seen.insert(s.name).second) throw Error(ctx + ": duplicate tensor name");
    const uint64_t n = checked_nbytes(s.dtype, s.shape, ctx);
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, n, &end)) throw Error(ctx + ": total size overflows");
    header[s.name] = {
        {"dtype", dtype_name(s.dtype)}, {"shape", s.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  total_ = offset;

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": cannot encode header (tensor names and metadata must be valid UTF-8): " +
                e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data section is 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));

  out_ = std::make_unique<AtomicFileWriter>(path);
  out_->write(len, sizeof len);
  out_->write(text.data(), text.size());
}

SafetensorsWriter::~SafetensorsWriter() = default;
SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&&) noexcept = default;
SafetensorsWriter& SafetensorsWriter::operator=(SafetensorsWriter&&) noexcept = default;

void SafetensorsWriter::write(const void* data, size_t nbytes) {
  if (!out_ || out_->committed()) throw Error(path_ + ": write after finish()");
  if (nbytes > total_ - written_) {
    throw Error(path_ + ": more tensor bytes than declared: declared " + std::to_string(total_) +
                " bytes in total, already wrote " + std::to_string(written_) + ", got " +
                std::to_string(nbytes) + " more");
  }
  out_->write(data, nbytes);
  written_ += nbytes;
}

void SafetensorsWriter::finish() {
  if (!out_ || out_->committed()) throw Error(path_ + ": finish() called twice");
  if (written_ != total_) {
    throw Error(path_ + ": fewer tensor bytes than declared: expected " + std::to_string(total_) +
                " bytes, wrote " + std::to_string(written_));
  }
  out_->commit();
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<TensorSpec, const void*>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const auto& [spec, _] : tensors) specs.push_back(spec);
  SafetensorsWriter w(path, std::move(specs), metadata);
  for (const auto& [spec, ptr] : tensors) {
    const size_t n = spec.nbytes();
    if (n > 0 && ptr == nullptr) {
      throw Error(path + ": tensor " + quoted(spec.name) + ": null data pointer for " +
                  std::to_string(n) + " bytes");
    }
    w.write(ptr, n);
  }
  w.finish();
}

}  // namespace s0::io
