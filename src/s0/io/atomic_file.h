#pragma once
// Crash-safe file writing: data goes to "<path>.tmp.<pid>" in the same directory, is fsync'ed,
// then renamed over <path> and the directory is fsync'ed. Readers see either the old file or
// the complete new one, never a partial write.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace s0::io {

// Writes `contents` to `path` atomically. Throws s0::Error naming the path on failure.
void write_file_atomic(const std::string& path, std::string_view contents);

// Reads a whole file. Throws s0::Error("cannot open <path>: <strerror>") and similar on failure,
// and when the file holds more than `max_bytes` (checked before reading it into memory).
std::string read_file(const std::string& path, size_t max_bytes = SIZE_MAX);
// "<path>: larger than N MiB (the limit for <what>)" for the limits above.
std::string too_large_message(const std::string& path, size_t max_bytes, const std::string& what);

// Streaming variant for large files: write() any number of times, then commit(). If the
// object is destroyed without a successful commit(), the temp file is removed and `path`
// is left untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;

  // Buffered append; throws s0::Error on I/O failure or after commit().
  void write(const void* p, size_t n);
  // Flush, fsync, rename over the target, fsync the directory. Throws s0::Error on failure
  // (the temp file is then removed).
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_path_; }
  bool committed() const { return committed_; }
  // Total bytes passed to write() so far.
  uint64_t bytes_written() const { return total_; }

 private:
  void flush_buffer();
  void write_all(const char* p, size_t n);
  void abandon() noexcept;  // close + unlink the temp file

  static constexpr size_t kBufferSize = size_t{4} << 20;  // 4 MiB
  std::string path_, tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t total_ = 0;
  std::vector<char> buf_;  // capacity kBufferSize, size = pending bytes
};

}  // namespace s0::io

namespace s0::io {
// Appends `text` to `path` (created if missing) and fsyncs it: a line appended this way
// survives a crash of the caller. For resumable JSONL logs.
void append_durable(const std::string& path, std::string_view text);
// The complete lines of a log written with append_durable; a torn last line (a crash during
// the append) is dropped and cut from the file. Missing file: empty.
std::vector<std::string> read_complete_lines(const std::string& path);
}  // namespace s0::io
