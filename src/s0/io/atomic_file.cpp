#include "s0/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "s0/util/error.h"

namespace s0::io {

namespace {

std::string errno_str(int err) { return std::strerror(err); }

// Directory containing `path` ("." for a bare file name).
std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// fsync the directory so the rename itself is durable. Filesystems that cannot fsync a
// directory (EINVAL/ENOTSUP) are tolerated.
void fsync_dir(const std::string& file_path) {
  const std::string dir = parent_dir(file_path);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    throw Error("cannot open directory " + dir + " to sync " + file_path + ": " + errno_str(errno));
  }
  if (::fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) {
    const int err = errno;
    ::close(fd);
    throw Error("cannot fsync directory " + dir + " for " + file_path + ": " + errno_str(err));
  }
  ::close(fd);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// AtomicFileWriter

AtomicFileWriter::AtomicFileWriter(const std::string& path)
    : path_(path), tmp_path_(path + ".tmp." + std::to_string(::getpid())) {
  if (path.empty()) throw Error("cannot write file: empty path");
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd_ < 0) {
    throw Error("cannot create " + tmp_path_ + " (writing " + path_ + "): " + errno_str(errno));
  }
  buf_.reserve(kBufferSize);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) abandon();
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& o) noexcept
    : path_(std::move(o.path_)),
      tmp_path_(std::move(o.tmp_path_)),
      fd_(std::exchange(o.fd_, -1)),
      committed_(std::exchange(o.committed_, true)),  // moved-from: nothing to clean up
      total_(o.total_),
      buf_(std::move(o.buf_)) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& o) noexcept {
  if (this != &o) {
    if (!committed_) abandon();
    path_ = std::move(o.path_);
    tmp_path_ = std::move(o.tmp_path_);
    fd_ = std::exchange(o.fd_, -1);
    committed_ = std::exchange(o.committed_, true);
    total_ = o.total_;
    buf_ = std::move(o.buf_);
  }
  return *this;
}

void AtomicFileWriter::abandon() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
  buf_.clear();
}

void AtomicFileWriter::write_all(const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error("write to " + tmp_path_ + " (writing " + path_ + ") failed: " + errno_str(errno));
    }
    if (w == 0) throw Error("short write to " + tmp_path_ + " (writing " + path_ + ")");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFileWriter::flush_buffer() {
  if (!buf_.empty()) {
    write_all(buf_.data(), buf_.size());
    buf_.clear();
  }
}

void AtomicFileWriter::write(const void* p, size_t n) {
  if (fd_ < 0) throw Error("write to " + path_ + " after commit() or a failed write");
  if (n == 0) return;
  if (p == nullptr) throw Error("write to " + path_ + ": null data pointer");
  const char* src = static_cast<const char*>(p);
  try {
    if (buf_.size() + n <= kBufferSize) {
      buf_.insert(buf_.end(), src, src + n);
    } else {
      flush_buffer();
      if (n >= kBufferSize) {
        write_all(src, n);  // large chunk: bypass the buffer
      } else {
        buf_.insert(buf_.end(), src, src + n);
      }
    }
  } catch (...) {
    abandon();  // the temp file is now incomplete; later write()/commit() throw
    throw;
  }
  total_ += n;
}

void AtomicFileWriter::commit() {
  if (committed_) throw Error("commit of " + path_ + " called twice");
  if (fd_ < 0) throw Error("commit of " + path_ + " after a failure");
  try {
    flush_buffer();
    if (::fsync(fd_) != 0) throw Error("fsync of " + tmp_path_ + " failed: " + errno_str(errno));
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) throw Error("close of " + tmp_path_ + " failed: " + errno_str(errno));
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
      throw Error("cannot rename " + tmp_path_ + " to " + path_ + ": " + errno_str(errno));
    }
  } catch (...) {
    abandon();
    throw;
  }
  committed_ = true;
  buf_ = {};         // release the 4 MiB buffer
  fsync_dir(path_);  // the file is in place; a failure here is still reported
}

// ---------------------------------------------------------------------------------------------

void write_file_atomic(const std::string& path, std::string_view contents) {
  AtomicFileWriter w(path);
  w.write(contents.data(), contents.size());
  w.commit();
}

std::string too_large_message(const std::string& path, size_t max_bytes, const std::string& what) {
  return path + ": larger than " + std::to_string(max_bytes >> 20) + " MiB (the limit for " + what + ")";
}

std::string read_file(const std::string& path, size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw FileNotFound("cannot open " + path + ": " + errno_str(errno));
    throw Error("cannot open " + path + ": " + errno_str(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error("cannot stat " + path + ": " + errno_str(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error("cannot read " + path + ": " + errno_str(EISDIR));
  }
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    throw Error(too_large_message(path, max_bytes, "this kind of file"));
  }
  std::string out;
  if (S_ISREG(st.st_mode) && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char chunk[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, chunk, sizeof chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw Error("cannot read " + path + ": " + errno_str(err));
    }
    if (r == 0) break;
    if (out.size() + static_cast<size_t>(r) > max_bytes) {  // a pipe or a file still growing
      ::close(fd);
      throw Error(too_large_message(path, max_bytes, "this kind of file"));
    }
    out.append(chunk, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

}  // namespace s0::io

namespace s0::io {

void append_durable(const std::string& path, std::string_view text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot open " + path + " for appending: " + std::strerror(errno));
  const char* p = text.data();
  size_t n = text.size();
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      throw Error("write to " + path + " failed: " + std::strerror(e));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    throw Error("fsync of " + path + " failed: " + std::strerror(e));
  }
  ::close(fd);
}

std::vector<std::string> read_complete_lines(const std::string& path) {
  std::vector<std::string> lines;
  if (::access(path.c_str(), F_OK) != 0) return lines;
  std::string text = read_file(path);
  size_t start = 0, nl;
  while ((nl = text.find('\n', start)) != std::string::npos) {
    if (nl > start) lines.emplace_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  if (start < text.size()) {  // torn last line: cut it so later appends start clean
    if (::truncate(path.c_str(), static_cast<off_t>(start)) != 0)
      throw Error("cannot truncate the torn last line of " + path + ": " + std::strerror(errno));
  }
  return lines;
}

}  // namespace s0::io
