#pragma once
// Line-by-line reading with a bound on the line length, so that a file with a 1 GB line (or
// none at all) is refused with an error instead of being read whole into memory.
#include <cstddef>
#include <istream>
#include <string>

namespace s0::io {

// One JSONL record longer than this is refused (a training example of 64 MiB of text is
// ~16M tokens, far beyond any context length).
constexpr size_t kMaxLineBytes = size_t{64} << 20;

enum class LineStatus { Line, End, TooLong };

// Reads the next line (without its '\n') into `line`. End: nothing left. TooLong: the line
// has more than `max_bytes` bytes (`line` then holds its first max_bytes bytes; the stream is
// left inside the line).
inline LineStatus read_line(std::istream& in, std::string& line, size_t max_bytes = kMaxLineBytes) {
  line.clear();
  std::streambuf* sb = in.rdbuf();
  if (!sb || !in.good()) return LineStatus::End;
  bool any = false;
  for (;;) {
    const int c = sb->sbumpc();
    if (c == std::char_traits<char>::eof()) {
      in.setstate(std::ios::eofbit);
      return any ? LineStatus::Line : LineStatus::End;
    }
    any = true;
    if (c == '\n') return LineStatus::Line;
    if (line.size() >= max_bytes) return LineStatus::TooLong;
    line.push_back(static_cast<char>(c));
  }
}

}  // namespace s0::io
