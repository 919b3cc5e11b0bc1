// Hugging Face tokenizer.json (byte-level BPE) — see tokenizer.h for what is supported.
// Pipeline (as the `tokenizers` library runs it):
//   repair invalid UTF-8 -> split on normalized:false added tokens (raw text) -> per remaining
//   segment: normalize -> split on normalized:true added tokens -> pre-tokenize (Split regex,
//   ByteLevel) -> BPE per piece (cached) -> post-processor template (add_special_tokens).
#include "s0/text/tokenizer.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uregex.h>
#include <unicode/ustring.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "s0/util/error.h"

namespace s0::text {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8

namespace {

enum class U8 { Ok, Invalid, Incomplete };

// Decodes one scalar at p[0..n). Ok: cp and len set. Invalid: len = length of the maximal
// subpart to replace by one U+FFFD (>= 1). Incomplete: the bytes are a valid prefix that ran
// out (len = n).
inline U8 utf8_next(const unsigned char* p, size_t n, uint32_t& cp, size_t& len) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) {
    cp = b0;
    len = 1;
    return U8::Ok;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    len = 1;
    return U8::Invalid;
  }
  for (size_t i = 1; i <= need; ++i) {
    if (i >= n) {
      len = n;
      return U8::Incomplete;
    }
    const unsigned char b = p[i];
    const unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) {
      len = i;
      return U8::Invalid;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  len = need + 1;
  return U8::Ok;
}

inline void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool utf8_valid(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    uint32_t cp;
    size_t len;
    if (utf8_next(p + i, n - i, cp, len) != U8::Ok) return false;
    i += len;
  }
  return true;
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Valid UTF-8 -> UTF-16 with off[k] = byte offset of UTF-16 unit k (off[len] = s.size()).
void to_utf16(std::string_view s, std::vector<UChar>& u, std::vector<uint32_t>& off) {
  u.clear();
  off.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    uint32_t cp;
    size_t len;
    if (p[i] < 0x80) {
      cp = p[i];
      len = 1;
    } else if (utf8_next(p + i, n - i, cp, len) != U8::Ok) {
      cp = 0xFFFD;  // cannot happen on repaired text
    }
    if (cp < 0x10000) {
      u.push_back(static_cast<UChar>(cp));
      off.push_back(static_cast<uint32_t>(i));
    } else {
      u.push_back(static_cast<UChar>(0xD7C0 + (cp >> 10)));
      u.push_back(static_cast<UChar>(0xDC00 | (cp & 0x3FF)));
      off.push_back(static_cast<uint32_t>(i));
      off.push_back(static_cast<uint32_t>(i));
    }
    i += len;
  }
  off.push_back(static_cast<uint32_t>(n));
}

std::string from_utf16(const UChar* u, int32_t n) {
  std::string s;
  s.reserve(n * 3);
  for (int32_t i = 0; i < n; ++i) {
    uint32_t c = u[i];
    if (c >= 0xD800 && c <= 0xDBFF && i + 1 < n && u[i + 1] >= 0xDC00 && u[i + 1] <= 0xDFFF) {
      c = 0x10000 + ((c - 0xD800) << 10) + (u[i + 1] - 0xDC00);
      ++i;
    } else if (c >= 0xD800 && c <= 0xDFFF) {
      c = 0xFFFD;
    }
    append_utf8(s, c);
  }
  return s;
}

// GPT-2 bytes_to_unicode.
struct ByteMap {
  std::array<std::string, 256> str;  // byte -> UTF-8 of its symbol
  std::array<int16_t, 512> back;     // symbol code point (< 0x200) -> byte, -1 if none
  ByteMap() {
    back.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? b : 256 + extra++;
      append_utf8(str[b], cp);
      back[cp] = static_cast<int16_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// Rust char::is_whitespace == Unicode White_Space.
bool is_ws(uint32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }
// The single_word test of tokenizers is the regex crate's `\w` on the neighbouring char:
// Alphabetic, marks, Nd, connector punctuation, Join_Control (UTS #18).
bool is_word_char(uint32_t c) {
  const UChar32 u = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL)) return true;
  const int8_t t = u_charType(u);
  return t == U_NON_SPACING_MARK || t == U_COMBINING_SPACING_MARK || t == U_ENCLOSING_MARK ||
         t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION;
}
// Last code point of valid UTF-8 text (s non-empty).
uint32_t last_cp(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  uint32_t cp = 0xFFFD;
  size_t len;
  utf8_next(reinterpret_cast<const unsigned char*>(s.data()) + i, s.size() - i, cp, len);
  return cp;
}
uint32_t first_cp(std::string_view s, size_t* len_out = nullptr) {
  uint32_t cp;
  size_t len;
  if (utf8_next(reinterpret_cast<const unsigned char*>(s.data()), s.size(), cp, len) != U8::Ok) {
    cp = 0xFFFD;
    len = 1;
  }
  if (len_out) *len_out = len;
  return cp;
}

// tokenizer.json files are tens of MB at most; more (or a gzip bomb) is refused.
constexpr size_t kMaxTokenizerBytes = size_t{1} << 30;

std::string read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) {
    if (!std::filesystem::exists(path)) throw FileNotFound("tokenizer file '" + path + "' does not exist");
    throw Error("cannot open tokenizer file '" + path + "'");
  }
  const auto size = f.tellg();
  if (size > 0 && static_cast<uint64_t>(size) > kMaxTokenizerBytes)
    throw Error("tokenizer file '" + path + "' is larger than " + std::to_string(kMaxTokenizerBytes >> 20) + " MiB");
  f.seekg(0);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string gunzip(const std::string& data, const std::string& path) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error("zlib init failed for '" + path + "'");
  std::string out;
  out.resize(std::max<size_t>(data.size() * 4, 1 << 16));
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.total_out >= out.size()) {
      if (out.size() >= kMaxTokenizerBytes) {
        inflateEnd(&zs);
        throw Error("'" + path + "': decompresses to more than " + std::to_string(kMaxTokenizerBytes >> 20) + " MiB");
      }
      out.resize(std::min(out.size() * 2, kMaxTokenizerBytes));
    }
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + zs.total_out);
    zs.avail_out = static_cast<uInt>(out.size() - zs.total_out);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      throw Error("'" + path + "': corrupt gzip data");
    }
  }
  out.resize(zs.total_out);
  inflateEnd(&zs);
  return out;
}

// Hash for unordered_map<std::string, ...> lookups by string_view.
struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Open-addressing map (a, b) -> (rank, new id) for the merges.
class MergeMap {
 public:
  struct Val {
    int32_t rank = -1, id = -1;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, Val{});
    mask_ = cap - 1;
  }
  void set(int32_t a, int32_t b, Val v) {  // later duplicates overwrite (as a HashMap collect)
    uint64_t k = key(a, b);
    size_t i = slot(k);
    while (keys_[i] != kEmpty && keys_[i] != k) i = (i + 1) & mask_;
    keys_[i] = k;
    vals_[i] = v;
  }
  const Val* get(int32_t a, int32_t b) const {
    if (keys_.empty()) return nullptr;
    uint64_t k = key(a, b);
    size_t i = slot(k);
    while (true) {
      if (keys_[i] == k) return &vals_[i];
      if (keys_[i] == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t slot(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  std::vector<uint64_t> keys_;
  std::vector<Val> vals_;
  size_t mask_ = 0;
};

// A compiled ICU regex and a pool of clones (a URegularExpression holds its text).
class RegexPool {
 public:
  RegexPool(const std::string& pattern, bool literal, const std::string& origin) {
    std::vector<UChar> u;
    std::vector<uint32_t> off;
    to_utf16(pattern, u, off);
    UParseError pe{};
    UErrorCode st = U_ZERO_ERROR;
    proto_ = uregex_open(u.data(), static_cast<int32_t>(u.size()), literal ? UREGEX_LITERAL : 0, &pe, &st);
    if (U_FAILURE(st))
      throw Error("tokenizer '" + origin + "': cannot compile pre-tokenizer regex '" + pattern +
                  "' with ICU: " + u_errorName(st) + " at offset " + std::to_string(pe.offset));
  }
  ~RegexPool() {
    for (auto* r : free_) uregex_close(r);
    if (proto_) uregex_close(proto_);
  }
  URegularExpression* acquire() {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!free_.empty()) {
        auto* r = free_.back();
        free_.pop_back();
        return r;
      }
    }
    UErrorCode st = U_ZERO_ERROR;
    auto* r = uregex_clone(proto_, &st);
    if (U_FAILURE(st)) throw Error(std::string("ICU uregex_clone failed: ") + u_errorName(st));
    return r;
  }
  void release(URegularExpression* r) {
    std::lock_guard<std::mutex> g(mu_);
    free_.push_back(r);
  }

 private:
  URegularExpression* proto_ = nullptr;
  std::mutex mu_;
  std::vector<URegularExpression*> free_;
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// Hand-written matcher for the split regexes of the Qwen2/2.5/3, Qwen3.5 and Llama-3/Falcon-H1
// families (recognised by their exact pattern text), ~2x faster than ICU; same Unicode 15
// classes as ICU (u_charType / White_Space). The golden tests cover all three patterns.
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?LETTER+|\p{N}{1,D}| ?[^\s LETTER \p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+           with LETTER = \p{L} (or [\p{L}\p{M}] for Qwen3.5)
struct FastSplit {
  bool marks = false;  // \p{M} joins the letter class
  int max_digits = 1;
};

const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* kQwen35Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

enum : uint8_t { kL = 1, kN = 2, kM = 4, kWS = 8, kCRLF = 16 };
inline uint8_t char_class(uint32_t cp) {
  static const std::array<uint8_t, 128> ascii = [] {
    std::array<uint8_t, 128> t{};
    for (int c = 0; c < 128; ++c) {
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) t[c] = kL;
      else if (c >= '0' && c <= '9') t[c] = kN;
      else if (c == ' ' || (c >= 9 && c <= 13)) t[c] = kWS;
    }
    t['\r'] |= kCRLF;
    t['\n'] |= kCRLF;
    return t;
  }();
  if (cp < 128) return ascii[cp];
  if (u_isUWhiteSpace(static_cast<UChar32>(cp))) return kWS;
  switch (u_charType(static_cast<UChar32>(cp))) {
    case U_UPPERCASE_LETTER: case U_LOWERCASE_LETTER: case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER: case U_OTHER_LETTER:
      return kL;
    case U_DECIMAL_DIGIT_NUMBER: case U_LETTER_NUMBER: case U_OTHER_NUMBER:
      return kN;
    case U_NON_SPACING_MARK: case U_COMBINING_SPACING_MARK: case U_ENCLOSING_MARK:
      return kM;
    default:
      return 0;
  }
}

// End of the match at byte i (valid UTF-8), or i if none.
size_t fast_match(std::string_view s, size_t i, const FastSplit& f) {
  const size_t n = s.size();
  const uint8_t letter = f.marks ? (kL | kM) : kL;
  auto at = [&](size_t j, size_t& len) -> uint32_t {
    const unsigned char b = static_cast<unsigned char>(s[j]);
    if (b < 0x80) {
      len = 1;
      return b;
    }
    uint32_t cp = 0xFFFD;
    utf8_next(reinterpret_cast<const unsigned char*>(s.data()) + j, n - j, cp, len);
    return cp;
  };
  size_t len;
  const uint32_t c = at(i, len);
  const uint8_t cc = char_class(c);
  // 1. contractions, case-insensitive (ſ U+017F folds to s)
  if (c == '\'' && i + 1 < n) {
    size_t l2;
    const uint32_t d = at(i + 1, l2);
    auto lower = [](uint32_t x) { return x < 128 ? static_cast<uint32_t>(std::tolower(static_cast<int>(x))) : x; };
    const uint32_t dl = d == 0x17F ? 's' : lower(d);
    if (dl == 's' || dl == 't' || dl == 'm' || dl == 'd') return i + 1 + l2;
    if ((dl == 'r' || dl == 'v' || dl == 'l') && i + 1 + l2 < n) {
      size_t l3;
      const uint32_t e = lower(at(i + 1 + l2, l3));
      if ((dl == 'r' && e == 'e') || (dl == 'v' && e == 'e') || (dl == 'l' && e == 'l')) return i + 1 + l2 + l3;
    }
  }
  auto letter_run = [&](size_t j) {
    while (j < n) {
      size_t l;
      if (!(char_class(at(j, l)) & letter)) break;
      j += l;
    }
    return j;
  };
  // 2. [^\r\n\p{L}\p{N}]?LETTER+
  if (cc & letter) return letter_run(i + len);
  if (!(cc & (kCRLF | kL | kN)) && i + len < n) {
    size_t l;
    if (char_class(at(i + len, l)) & letter) return letter_run(i + len + l);
  }
  // 3. \p{N}{1,D}
  if (cc & kN) {
    size_t j = i + len;
    for (int k = 1; k < f.max_digits && j < n; ++k) {
      size_t l;
      if (!(char_class(at(j, l)) & kN)) break;
      j += l;
    }
    return j;
  }
  // 4.  ?[^\s LETTER \p{N}]+[\r\n]*
  auto is_punct = [&](uint8_t k) { return !(k & (kWS | letter | kN)); };
  size_t j = i;
  if (c == ' ' && i + 1 < n) {
    size_t l;
    if (is_punct(char_class(at(i + 1, l)))) j = i + 1;
  }
  {
    size_t l;
    if (j < n && is_punct(char_class(at(j, l)))) {
      while (j < n && is_punct(char_class(at(j, l)))) j += l;
      while (j < n && (s[j] == '\r' || s[j] == '\n')) ++j;
      return j;
    }
  }
  if (!(cc & kWS)) return i;
  // whitespace run [i, w); last \r or \n inside it
  size_t w = i, last_nl = std::string_view::npos, last_start = i;
  while (w < n) {
    size_t l;
    const uint32_t x = at(w, l);
    if (!(char_class(x) & kWS)) break;
    if (x == '\r' || x == '\n') last_nl = w;
    last_start = w;
    w += l;
  }
  // 5. \s*[\r\n]+
  if (last_nl != std::string_view::npos) return last_nl + 1;
  // 6. \s+(?!\S)   7. \s+
  if (w == n) return n;
  if (last_start > i) return last_start;
  return w;
}

struct PreStep {
  enum Kind { Split, ByteLevel } kind = Split;
  std::shared_ptr<RegexPool> regex;  // Split pattern, or the GPT-2 regex for ByteLevel use_regex
  std::optional<FastSplit> fast;     // hand-written equivalent of `regex`
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;
};

const char* kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum class NormKind { NFC, NFD, NFKC, NFKD };

struct AddedToken {
  int32_t id;
  std::string content;  // as matched (normalized content for normalized:true tokens)
  bool special, lstrip, rstrip, single_word, normalized;
};

// Leftmost-longest matcher over a set of added tokens.
struct AddedMatcher {
  std::vector<const AddedToken*> tokens;
  std::array<std::vector<const AddedToken*>, 256> by_first;  // sorted by length, longest first
  std::array<bool, 256> first{};
  bool empty() const { return tokens.empty(); }
  void build() {
    for (auto* t : tokens) {
      if (t->content.empty()) continue;
      unsigned char c = static_cast<unsigned char>(t->content[0]);
      by_first[c].push_back(t);
      first[c] = true;
    }
    for (auto& v : by_first)
      std::stable_sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->content.size() > b->content.size(); });
  }
  // Next match at or after `from`: returns the token and sets start.
  const AddedToken* find(std::string_view s, size_t from, size_t& start) const {
    const size_t n = s.size();
    for (size_t i = from; i < n; ++i) {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if (!first[c]) continue;
      for (auto* t : by_first[c]) {
        const size_t L = t->content.size();
        if (L <= n - i && std::memcmp(s.data() + i, t->content.data(), L) == 0) {
          start = i;
          return t;
        }
      }
    }
    return nullptr;
  }
};

// Regex lease: one matcher per pre-tokenizer step for one encode call, plus its buffers.
struct StepState {
  URegularExpression* re = nullptr;
  RegexPool* pool = nullptr;
  std::vector<UChar> u16;
  std::vector<uint32_t> off;
  std::vector<std::array<uint32_t, 3>> parts;  // (start, end, is_match) in bytes
  ~StepState() {
    if (re) pool->release(re);
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct TokenizerImpl {
  std::string origin;
  // model
  std::unordered_map<std::string, int32_t, SvHash, std::equal_to<>> vocab;
  std::vector<std::string> vocab_r;  // id -> token (model vocab)
  MergeMap merges;
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  std::array<int32_t, 256> byte_id{};  // byte-level symbol -> id (-1 missing)
  // pipeline
  std::vector<NormKind> normalizers;
  std::vector<PreStep> steps;
  bool byte_level_pretok = false;  // the pieces reaching BPE are byte-level mapped
  enum class Dec { None, ByteLevel } decoder = Dec::None;
  std::vector<int64_t> post_prefix, post_suffix;
  // added tokens
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  std::unordered_map<std::string, int32_t, SvHash, std::equal_to<>> added_by_content;
  AddedMatcher raw_matcher, norm_matcher;
  int64_t size = 0;
  // BPE cache: raw piece bytes -> ids
  mutable std::shared_mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>, SvHash, std::equal_to<>> cache;
  static constexpr size_t kCacheMax = 200000, kCacheMaxLen = 128;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error("tokenizer '" + origin + "': " + what);
  }
  // A token id from the file: an integer in [0, kMaxTokenId]. (A float or an out-of-range
  // number would be converted with undefined behaviour, found by fuzz/fuzz_tokenizer.cpp;
  // a huge id would size the id table.) The largest real vocabularies have ~2^18 entries.
  static constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;
  int32_t token_id(const json& v, const std::string& what) const {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(kMaxTokenId)) ||
        v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxTokenId)
      fail(what + ": token id must be an integer in [0, " + std::to_string(kMaxTokenId) + "], found " + v.dump());
    return static_cast<int32_t>(v.get<int64_t>());
  }


  // ---- loading
  void load(const json& j);
  void load_model(const json& m);
  void load_normalizer(const json& n);
  void load_pre_tokenizer(const json& p);
  void load_post_processor(const json& p);
  void load_decoder(const json& d);

  // ---- encoding
  std::string normalize(std::string_view s) const;
  void split_added(std::string_view s, const AddedMatcher& m,
                   const std::function<void(const AddedToken*, std::string_view)>& f) const;
  void encode_segment(std::string_view seg, std::vector<StepState>& st, std::vector<int64_t>& out) const;
  template <class F>
  void run_steps(size_t k, std::string_view piece, std::vector<StepState>& st, F&& emit) const;
  template <class F>
  void split_step(size_t k, std::string_view piece, std::vector<StepState>& st, F&& emit) const;
  template <class F>
  void split_apply(size_t k, std::string_view piece, std::vector<StepState>& st, F&& emit) const;
  void split_icu(const PreStep& step, StepState& S, std::string_view piece) const;
  void bpe(std::string_view piece, std::vector<int64_t>& out) const;
  void bpe_uncached(std::string_view piece, std::vector<int32_t>& ids) const;
  std::string token_str(int64_t id, bool* found) const;
  std::string token_bytes(int64_t id) const;
};

namespace {

std::string jstr(const json& j, const char* key, const std::string& dflt = "") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_string()) return dflt;
  return it->get<std::string>();
}
bool jbool(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_boolean()) return dflt;
  return it->get<bool>();
}

}  // namespace

void TokenizerImpl::load(const json& j) {
  if (!j.is_object()) fail("not a JSON object");
  if (!j.contains("model")) fail("no 'model'");
  load_model(j["model"]);
  // added tokens
  if (auto it = j.find("added_tokens"); it != j.end() && !it->is_null()) {
    for (const auto& a : *it) {
      AddedToken t;
      t.id = token_id(a.at("id"), "added token");
      t.content = a.at("content").get<std::string>();
      t.special = jbool(a, "special", false);
      t.lstrip = jbool(a, "lstrip", false);
      t.rstrip = jbool(a, "rstrip", false);
      t.single_word = jbool(a, "single_word", false);
      t.normalized = jbool(a, "normalized", !t.special);
      if (t.id < 0) fail("added token '" + t.content + "' has a negative id");
      added.push_back(std::move(t));
    }
  }
  load_normalizer(j.contains("normalizer") ? j["normalizer"] : json());
  load_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json());
  load_post_processor(j.contains("post_processor") ? j["post_processor"] : json());
  load_decoder(j.contains("decoder") ? j["decoder"] : json());
  // Ids as the tokenizers library assigns them when it loads the file (AddedVocabulary::
  // add_tokens): the id in the JSON is only checked (with a warning) there; the token gets its
  // model-vocab id if its content is in the vocab, else max(added id) + 1, starting at the
  // number of vocab entries. For files written by tokenizers itself these agree.
  {
    std::vector<AddedToken> in = std::move(added);
    added.clear();
    const int64_t model_len = static_cast<int64_t>(vocab.size());
    int64_t max_added = -1;
    for (auto& t : in) {
      if (t.content.empty()) continue;
      bool dup = false;
      for (const auto& a : added)
        dup |= a.content == t.content && a.special == t.special && a.lstrip == t.lstrip && a.rstrip == t.rstrip &&
               a.single_word == t.single_word && a.normalized == t.normalized;
      if (dup) continue;
      int64_t id;
      if (auto it = added_by_content.find(t.content); it != added_by_content.end()) id = it->second;
      else if (auto iv = vocab.find(t.content); iv != vocab.end()) id = iv->second;
      else if (max_added < 0) id = model_len;
      else id = (max_added >= model_len || model_len == 0) ? max_added + 1 : model_len;
      t.id = static_cast<int32_t>(id);
      max_added = std::max(max_added, id);
      if (auto it = added_by_id.find(t.id); it != added_by_id.end()) {
        added[it->second] = t;  // same id: the later token replaces the earlier one
      } else {
        added_by_id[t.id] = added.size();
        added.push_back(t);
      }
      added_by_content[t.content] = t.id;
      size = std::max<int64_t>(size, id + 1);
    }
  }
  for (auto& t : added) {
    if (t.normalized) {
      t.content = normalize(t.content);  // matched against normalized text
      norm_matcher.tokens.push_back(&t);
    } else {
      raw_matcher.tokens.push_back(&t);
    }
  }
  raw_matcher.build();
  norm_matcher.build();
}

void TokenizerImpl::load_model(const json& m) {
  std::string type = jstr(m, "type", "BPE");
  if (type != "BPE") fail("unsupported model type '" + type + "' (supported: BPE)");
  if (auto it = m.find("dropout"); it != m.end() && !it->is_null() && it->get<double>() != 0.0)
    fail("unsupported model component: BPE dropout");
  if (!jstr(m, "continuing_subword_prefix").empty())
    fail("unsupported model component: BPE continuing_subword_prefix");
  if (!jstr(m, "end_of_word_suffix").empty()) fail("unsupported model component: BPE end_of_word_suffix");
  if (jbool(m, "byte_fallback", false)) fail("unsupported model component: BPE byte_fallback");
  ignore_merges = jbool(m, "ignore_merges", false);
  fuse_unk = jbool(m, "fuse_unk", false);
  const json& v = m.at("vocab");
  if (!v.is_object()) fail("model.vocab is not an object");
  vocab.reserve(v.size() * 2);
  int32_t max_id = -1;
  for (auto it = v.begin(); it != v.end(); ++it) {
    int32_t id = token_id(it.value(), "vocab entry '" + it.key() + "'");
    vocab[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  vocab_r.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [k, id] : vocab) vocab_r[id] = k;
  size = max_id + 1;
  std::string unk = jstr(m, "unk_token");
  if (!unk.empty()) {
    auto it = vocab.find(unk);
    if (it == vocab.end()) fail("unk_token '" + unk + "' is not in the vocab");
    unk_id = it->second;
  }
  const auto& bm = byte_map();
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(bm.str[b]);
    byte_id[b] = it == vocab.end() ? -1 : it->second;
  }
  const json& mg = m.contains("merges") ? m["merges"] : json::array();
  merges.reserve(mg.size());
  int32_t rank = 0;
  std::string a, b;
  for (const auto& e : mg) {
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) fail("merge '" + s + "' is not of the form 'a b'");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      fail("merge #" + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    auto ia = vocab.find(a), ib = vocab.find(b), ic = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || ic == vocab.end())
      fail("merge #" + std::to_string(rank) + " ('" + a + "', '" + b + "') uses a token missing from the vocab");
    merges.set(ia->second, ib->second, {rank, ic->second});
    ++rank;
  }
}

void TokenizerImpl::load_normalizer(const json& n) {
  if (n.is_null()) return;
  std::string type = jstr(n, "type");
  if (type == "Sequence") {
    for (const auto& x : n.at("normalizers")) load_normalizer(x);
  } else if (type == "NFC") {
    normalizers.push_back(NormKind::NFC);
  } else if (type == "NFD") {
    normalizers.push_back(NormKind::NFD);
  } else if (type == "NFKC") {
    normalizers.push_back(NormKind::NFKC);
  } else if (type == "NFKD") {
    normalizers.push_back(NormKind::NFKD);
  } else {
    fail("unsupported normalizer '" + type + "' (supported: NFC, NFD, NFKC, NFKD, Sequence)");
  }
}

void TokenizerImpl::load_pre_tokenizer(const json& p) {
  if (p.is_null()) return;
  std::string type = jstr(p, "type");
  if (!steps.empty() && steps.back().kind == PreStep::ByteLevel)
    fail("unsupported pre_tokenizer: '" + type + "' after ByteLevel");
  if (type == "Sequence") {
    for (const auto& x : p.at("pretokenizers")) load_pre_tokenizer(x);
  } else if (type == "Split") {
    PreStep s;
    s.kind = PreStep::Split;
    const json& pat = p.at("pattern");
    if (pat.contains("Regex")) {
      const std::string re = pat["Regex"].get<std::string>();
      s.regex = std::make_shared<RegexPool>(re, false, origin);
      if (!std::getenv("S0_TOKENIZER_ICU_ONLY")) {
        if (re == kQwen2Regex) s.fast = FastSplit{false, 1};
        else if (re == kQwen35Regex) s.fast = FastSplit{true, 1};
        else if (re == kLlama3Regex) s.fast = FastSplit{false, 3};
      }
    } else if (pat.contains("String")) {
      s.regex = std::make_shared<RegexPool>(pat["String"].get<std::string>(), true, origin);
    } else {
      fail("unsupported Split pattern " + pat.dump());
    }
    std::string b = jstr(p, "behavior", "Isolated");
    if (b == "Isolated") s.behavior = SplitBehavior::Isolated;
    else if (b == "Removed") s.behavior = SplitBehavior::Removed;
    else if (b == "MergedWithPrevious") s.behavior = SplitBehavior::MergedWithPrevious;
    else if (b == "MergedWithNext") s.behavior = SplitBehavior::MergedWithNext;
    else if (b == "Contiguous") s.behavior = SplitBehavior::Contiguous;
    else fail("unsupported Split behavior '" + b + "'");
    s.invert = jbool(p, "invert", false);
    steps.push_back(std::move(s));
  } else if (type == "ByteLevel") {
    PreStep s;
    s.kind = PreStep::ByteLevel;
    s.add_prefix_space = jbool(p, "add_prefix_space", true);
    if (jbool(p, "use_regex", true)) s.regex = std::make_shared<RegexPool>(kGpt2Regex, false, origin);
    steps.push_back(std::move(s));
    byte_level_pretok = true;
  } else {
    fail("unsupported pre_tokenizer '" + type + "' (supported: Split, ByteLevel, Sequence)");
  }
}

void TokenizerImpl::load_post_processor(const json& p) {
  if (p.is_null()) return;
  std::string type = jstr(p, "type");
  if (type == "Sequence") {
    for (const auto& x : p.at("processors")) load_post_processor(x);
  } else if (type == "ByteLevel") {
    // offsets only
  } else if (type == "TemplateProcessing") {
    std::unordered_map<std::string, std::vector<int64_t>> specials;
    if (auto it = p.find("special_tokens"); it != p.end() && !it->is_null()) {
      auto add = [&](const json& st) {
        std::vector<int64_t> ids;
        for (const auto& x : st.at("ids")) ids.push_back(token_id(x, "post_processor special token"));
        specials[st.at("id").get<std::string>()] = ids;
      };
      if (it->is_object())
        for (const auto& [k, st] : it->items()) add(st);
      else
        for (const auto& st : *it) add(st);
    }
    bool seen_a = false;
    for (const auto& piece : p.at("single")) {
      if (piece.contains("SpecialToken")) {
        std::string id = piece["SpecialToken"].at("id").get<std::string>();
        auto f = specials.find(id);
        if (f == specials.end()) fail("TemplateProcessing: special token '" + id + "' not in special_tokens");
        auto& dst = seen_a ? post_suffix : post_prefix;
        dst.insert(dst.end(), f->second.begin(), f->second.end());
      } else if (piece.contains("Sequence")) {
        std::string id = piece["Sequence"].at("id").get<std::string>();
        if (id != "A" || seen_a) fail("unsupported TemplateProcessing single template (sequence '" + id + "')");
        seen_a = true;
      } else {
        fail("unsupported TemplateProcessing piece " + piece.dump());
      }
    }
    if (!seen_a) fail("TemplateProcessing single template has no $A");
  } else {
    fail("unsupported post_processor '" + type + "' (supported: ByteLevel, TemplateProcessing, Sequence)");
  }
}

void TokenizerImpl::load_decoder(const json& d) {
  if (d.is_null()) return;
  std::string type = jstr(d, "type");
  if (type == "Sequence") {
    for (const auto& x : d.at("decoders")) load_decoder(x);
  } else if (type == "ByteLevel") {
    if (decoder == Dec::ByteLevel) fail("unsupported decoder: ByteLevel twice");
    decoder = Dec::ByteLevel;
  } else {
    fail("unsupported decoder '" + type + "' (supported: ByteLevel, Sequence)");
  }
}

// ---- normalization

std::string TokenizerImpl::normalize(std::string_view s) const {
  std::string cur(s);
  if (normalizers.empty()) return cur;
  for (NormKind k : normalizers) {
    if (is_ascii(cur)) continue;  // ASCII is invariant under every normalization form
    UErrorCode st = U_ZERO_ERROR;
    const UNormalizer2* n = k == NormKind::NFC    ? unorm2_getNFCInstance(&st)
                            : k == NormKind::NFD  ? unorm2_getNFDInstance(&st)
                            : k == NormKind::NFKC ? unorm2_getNFKCInstance(&st)
                                                  : unorm2_getNFKDInstance(&st);
    if (U_FAILURE(st)) fail(std::string("ICU normalizer unavailable: ") + u_errorName(st));
    std::vector<UChar> u;
    std::vector<uint32_t> off;
    to_utf16(cur, u, off);
    const int32_t n16 = static_cast<int32_t>(u.size());
    if (unorm2_isNormalized(n, u.data(), n16, &st) && U_SUCCESS(st)) continue;
    st = U_ZERO_ERROR;
    std::vector<UChar> o(static_cast<size_t>(n16) * 3 + 16);
    int32_t len = unorm2_normalize(n, u.data(), n16, o.data(), static_cast<int32_t>(o.size()), &st);
    if (st == U_BUFFER_OVERFLOW_ERROR) {
      o.resize(len);
      st = U_ZERO_ERROR;
      len = unorm2_normalize(n, u.data(), n16, o.data(), len, &st);
    }
    if (U_FAILURE(st)) fail(std::string("ICU normalization failed: ") + u_errorName(st));
    cur = from_utf16(o.data(), len);
  }
  return cur;
}

// ---- added tokens (tokenizers' AddedVocabulary::find_matches)

void TokenizerImpl::split_added(std::string_view s, const AddedMatcher& m,
                                const std::function<void(const AddedToken*, std::string_view)>& f) const {
  if (m.empty()) {
    if (!s.empty()) f(nullptr, s);
    return;
  }
  size_t start_offset = 0, pos = 0, mstart = 0;
  while (pos < s.size()) {
    const AddedToken* t = m.find(s, pos, mstart);
    if (!t) break;
    size_t start = mstart, stop = mstart + t->content.size();
    pos = stop;  // the automaton resumes after the match, whatever the strips do
    if (t->single_word) {
      bool start_space = start == 0 || !is_word_char(last_cp(s.substr(0, start)));
      bool stop_space = stop == s.size() || !is_word_char(first_cp(s.substr(stop)));
      if (!start_space || !stop_space) continue;
    }
    if (t->lstrip) {
      size_t ns = start;
      while (ns > 0) {
        size_t i = ns - 1;
        while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
        if (!is_ws(first_cp(s.substr(i)))) break;
        ns = i;
      }
      start = std::max(ns, start_offset);
    }
    if (t->rstrip) {
      while (stop < s.size()) {
        size_t len;
        uint32_t c = first_cp(s.substr(stop), &len);
        if (!is_ws(c)) break;
        stop += len;
      }
    }
    if (start < start_offset) start = start_offset;  // overlapping strip (defensive)
    if (start > start_offset) f(nullptr, s.substr(start_offset, start - start_offset));
    f(t, s.substr(start, stop - start));
    start_offset = std::max(start_offset, stop);
  }
  if (start_offset < s.size()) f(nullptr, s.substr(start_offset));
}

// ---- pre-tokenization

template <class F>
void TokenizerImpl::run_steps(size_t k, std::string_view piece, std::vector<StepState>& st, F&& emit) const {
  if (piece.empty()) return;
  if (k == steps.size()) {
    emit(piece);
    return;
  }
  const PreStep& step = steps[k];
  if (step.kind == PreStep::ByteLevel && step.add_prefix_space && piece[0] != ' ') {
    const std::string local = " " + std::string(piece);  // lives until the recursion returns
    split_step(k, local, st, emit);
    return;
  }
  split_step(k, piece, st, emit);
}

template <class F>
void TokenizerImpl::split_step(size_t k, std::string_view piece, std::vector<StepState>& st, F&& emit) const {
  const PreStep& step = steps[k];
  StepState& S = st[k];
  if (!step.regex) {  // ByteLevel without regex
    run_steps(k + 1, piece, st, emit);
    return;
  }
  auto& parts = S.parts;
  parts.clear();
  if (step.fast) {
    uint32_t prev = 0;
    size_t i = 0;
    while (i < piece.size()) {
      const size_t e = fast_match(piece, i, *step.fast);
      if (e > i) {
        if (i > prev) parts.push_back({prev, static_cast<uint32_t>(i), 0});
        parts.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(e), 1});
        prev = static_cast<uint32_t>(e);
        i = e;
      } else {
        size_t l = 1;
        while (i + l < piece.size() && (static_cast<unsigned char>(piece[i + l]) & 0xC0) == 0x80) ++l;
        i += l;
      }
    }
    if (prev < piece.size()) parts.push_back({prev, static_cast<uint32_t>(piece.size()), 0});
  } else {
    split_icu(step, S, piece);
  }
  split_apply(k, piece, st, emit);
}

void TokenizerImpl::split_icu(const PreStep& step, StepState& S, std::string_view piece) const {
  auto& parts = S.parts;
  if (!S.re) {
    S.pool = step.regex.get();
    S.re = S.pool->acquire();
  }
  to_utf16(piece, S.u16, S.off);
  UErrorCode e = U_ZERO_ERROR;
  uregex_setText(S.re, S.u16.data(), static_cast<int32_t>(S.u16.size()), &e);
  if (U_FAILURE(e)) fail(std::string("ICU uregex_setText: ") + u_errorName(e));
  uint32_t prev = 0;
  while (uregex_findNext(S.re, &e)) {
    const uint32_t a = S.off[uregex_start(S.re, 0, &e)], b = S.off[uregex_end(S.re, 0, &e)];
    if (U_FAILURE(e)) fail(std::string("ICU regex: ") + u_errorName(e));
    if (a > prev) parts.push_back({prev, a, 0});
    if (b > a) parts.push_back({a, b, 1});
    prev = b;
  }
  if (U_FAILURE(e)) fail(std::string("ICU regex: ") + u_errorName(e));
  if (prev < piece.size()) parts.push_back({prev, static_cast<uint32_t>(piece.size()), 0});
}

template <class F>
void TokenizerImpl::split_apply(size_t k, std::string_view piece, std::vector<StepState>& st, F&& emit) const {
  const PreStep& step = steps[k];
  auto& parts = st[k].parts;
  if (step.invert)
    for (auto& p : parts) p[2] ^= 1;
  const bool byte_level = step.kind == PreStep::ByteLevel;
  const SplitBehavior beh = byte_level ? SplitBehavior::Isolated : step.behavior;
  // Apply the behaviour (tokenizers' NormalizedString::split), then recurse.
  if (beh == SplitBehavior::Isolated) {  // recursion only touches later steps' state
    for (auto& p : parts) run_steps(k + 1, piece.substr(p[0], p[1] - p[0]), st, emit);
    return;
  }
  std::vector<std::array<uint32_t, 3>> out;
  switch (beh) {
    case SplitBehavior::Isolated:
      break;
    case SplitBehavior::Removed:
      for (auto& p : parts)
        if (!p[2]) out.push_back(p);
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (auto& p : parts) {
        if (p[2] && !prev_match && !out.empty()) out.back()[1] = p[1];
        else out.push_back({p[0], p[1], 0});
        prev_match = p[2];
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool prev_match = false;
      for (size_t i = parts.size(); i-- > 0;) {
        auto& p = parts[i];
        if (p[2] && !prev_match && !out.empty()) out.back()[0] = p[0];
        else out.push_back({p[0], p[1], 0});
        prev_match = p[2];
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool prev_match = false;
      for (auto& p : parts) {
        if (static_cast<bool>(p[2]) == prev_match && !out.empty()) out.back()[1] = p[1];
        else out.push_back({p[0], p[1], 0});
        prev_match = p[2];
      }
      break;
    }
  }
  for (auto& p : out) run_steps(k + 1, piece.substr(p[0], p[1] - p[0]), st, emit);
}

// ---- BPE

void TokenizerImpl::bpe_uncached(std::string_view piece, std::vector<int32_t>& ids) const {
  ids.clear();
  const auto& bm = byte_map();
  if (ignore_merges) {
    std::string mapped;
    if (byte_level_pretok) {
      for (unsigned char c : piece) mapped += bm.str[c];
    } else {
      mapped.assign(piece);
    }
    if (auto it = vocab.find(mapped); it != vocab.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  // initial symbols
  struct Sym {
    int32_t id, prev, next;
  };
  std::vector<Sym> sym;
  sym.reserve(piece.size());
  auto push_sym = [&](int32_t id) {
    if (id < 0) {
      if (unk_id < 0) return;  // no unk: the symbol is dropped (as tokenizers does)
      if (fuse_unk && !sym.empty() && sym.back().id == unk_id) return;
      id = unk_id;
    }
    sym.push_back({id, static_cast<int32_t>(sym.size()) - 1, static_cast<int32_t>(sym.size()) + 1});
  };
  if (byte_level_pretok) {
    for (unsigned char c : piece) push_sym(byte_id[c]);
  } else {
    size_t i = 0;
    while (i < piece.size()) {
      size_t len;
      first_cp(piece.substr(i), &len);
      auto it = vocab.find(piece.substr(i, len));
      push_sym(it == vocab.end() ? -1 : it->second);
      i += len;
    }
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  const int32_t n = static_cast<int32_t>(sym.size());
  if (n <= 24) {
    // Small words: rescan for the lowest (rank, position) pair each round.
    int32_t live = n;
    while (live > 1) {
      int32_t best = -1, best_rank = INT32_MAX, best_id = -1;
      for (int32_t i = 0; i != -1 && sym[i].next != -1; i = sym[i].next) {
        const MergeMap::Val* v = merges.get(sym[i].id, sym[sym[i].next].id);
        if (v && v->rank < best_rank) {
          best_rank = v->rank;
          best = i;
          best_id = v->id;
        }
      }
      if (best < 0) break;
      const int32_t nx = sym[best].next;
      sym[best].id = best_id;
      sym[best].next = sym[nx].next;
      if (sym[nx].next != -1) sym[sym[nx].next].prev = best;
      --live;
    }
  } else {
    // Priority queue of (rank, position), validated when popped (tokenizers' Word::merge_all).
    struct Cand {
      int32_t rank, pos, left, right;  // left/right: ids the pair had when pushed
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> q;
    std::vector<char> dead(n, 0);
    auto push_pair = [&](int32_t i) {
      if (i < 0 || sym[i].next == -1) return;
      const MergeMap::Val* v = merges.get(sym[i].id, sym[sym[i].next].id);
      if (v) q.push({v->rank, i, sym[i].id, sym[sym[i].next].id});
    };
    for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
    while (!q.empty()) {
      Cand c = q.top();
      q.pop();
      if (dead[c.pos] || sym[c.pos].id != c.left || sym[c.pos].next == -1) continue;
      const int32_t nx = sym[c.pos].next;
      if (sym[nx].id != c.right) continue;
      const MergeMap::Val* v = merges.get(c.left, c.right);
      sym[c.pos].id = v->id;
      sym[c.pos].next = sym[nx].next;
      if (sym[nx].next != -1) sym[sym[nx].next].prev = c.pos;
      dead[nx] = 1;
      push_pair(sym[c.pos].prev);
      push_pair(c.pos);
    }
  }
  for (int32_t i = 0; i != -1; i = sym[i].next) ids.push_back(sym[i].id);
}

void TokenizerImpl::bpe(std::string_view piece, std::vector<int64_t>& out) const {
  if (piece.size() <= kCacheMaxLen) {
    std::shared_lock<std::shared_mutex> g(cache_mu);
    auto it = cache.find(piece);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  thread_local std::vector<int32_t> ids;
  bpe_uncached(piece, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (piece.size() <= kCacheMaxLen) {
    std::unique_lock<std::shared_mutex> g(cache_mu);
    if (cache.size() < kCacheMax) cache.emplace(std::string(piece), ids);
  }
}

void TokenizerImpl::encode_segment(std::string_view seg, std::vector<StepState>& st,
                                   std::vector<int64_t>& out) const {
  auto pretok_bpe = [&](std::string_view s) {
    run_steps(0, s, st, [&](std::string_view piece) { bpe(piece, out); });
  };
  if (normalizers.empty() || is_ascii(seg)) {
    if (norm_matcher.empty()) {
      pretok_bpe(seg);
      return;
    }
    split_added(seg, norm_matcher, [&](const AddedToken* t, std::string_view s) {
      if (t) out.push_back(t->id);
      else pretok_bpe(s);
    });
    return;
  }
  std::string norm = normalize(seg);
  if (norm_matcher.empty()) {
    pretok_bpe(norm);
    return;
  }
  split_added(norm, norm_matcher, [&](const AddedToken* t, std::string_view s) {
    if (t) out.push_back(t->id);
    else pretok_bpe(s);
  });
}

std::string TokenizerImpl::token_str(int64_t id, bool* found) const {
  if (auto it = added_by_id.find(static_cast<int32_t>(id)); id >= 0 && id <= INT32_MAX && it != added_by_id.end()) {
    *found = true;
    return added[it->second].content;
  }
  if (id >= 0 && id < static_cast<int64_t>(vocab_r.size()) && !(vocab_r[id].empty() && !vocab.count(""))) {
    *found = true;
    return vocab_r[id];
  }
  *found = false;
  return {};
}

std::string TokenizerImpl::token_bytes(int64_t id) const {
  bool found = false;
  std::string t = token_str(id, &found);
  if (!found || decoder != Dec::ByteLevel) return t;
  // ByteLevel decoder: every char mapped back to its byte; if any char is not a byte symbol,
  // the token's own UTF-8 is used as is.
  const auto& bm = byte_map();
  std::string b;
  b.reserve(t.size());
  size_t i = 0;
  while (i < t.size()) {
    size_t len;
    uint32_t cp = first_cp(std::string_view(t).substr(i), &len);
    if (cp >= bm.back.size() || bm.back[cp] < 0) return t;
    b += static_cast<char>(bm.back[cp]);
    i += len;
  }
  return b;
}

// ---------------------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json(const std::string& json_text, const std::string& origin) {
  auto impl = std::make_unique<TokenizerImpl>();
  impl->origin = origin;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error("tokenizer '" + origin + "': invalid JSON: " + e.what());
  }
  try {
    impl->load(j);
  } catch (const json::exception& e) {
    throw Error("tokenizer '" + origin + "': malformed field: " + e.what());
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::string data = read_file_bytes(path);
  if (data.size() >= 2 && static_cast<unsigned char>(data[0]) == 0x1f && static_cast<unsigned char>(data[1]) == 0x8b)
    data = gunzip(data, path);
  return from_json(data, path);
}

Tokenizer Tokenizer::from_model_dir(const std::string& dir) {
  std::string p = dir + "/tokenizer.json";
  std::ifstream f(p);
  if (!f) throw Error("model directory '" + dir + "' has no readable tokenizer.json");
  return from_file(p);
}

std::vector<int64_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const TokenizerImpl& I = *impl_;
  std::string repaired;
  if (!utf8_valid(text)) {
    repaired = utf8_repair(text);
    text = repaired;
  }
  std::vector<int64_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special_tokens) out.insert(out.end(), I.post_prefix.begin(), I.post_prefix.end());
  std::vector<StepState> st(I.steps.size());
  I.split_added(text, I.raw_matcher, [&](const AddedToken* t, std::string_view s) {
    if (t) out.push_back(t->id);
    else I.encode_segment(s, st, out);
  });
  if (add_special_tokens) out.insert(out.end(), I.post_suffix.begin(), I.post_suffix.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const TokenizerImpl& I = *impl_;
  std::string bytes;
  bool first = true;
  for (int64_t id : ids) {
    bool found = false;
    I.token_str(id, &found);
    if (!found) continue;
    if (skip_special_tokens && is_special(id)) continue;
    if (I.decoder == TokenizerImpl::Dec::None && !first) bytes += ' ';
    bytes += I.token_bytes(id);
    first = false;
  }
  return utf8_repair(bytes);
}

int64_t Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) return it->second;
  if (auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return -1;
}

std::string Tokenizer::id_to_token(int64_t id) const {
  bool found = false;
  return impl_->token_str(id, &found);
}

bool Tokenizer::is_special(int64_t id) const {
  if (id < 0 || id > INT32_MAX) return false;
  auto it = impl_->added_by_id.find(static_cast<int32_t>(id));
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

int64_t Tokenizer::vocab_size() const { return impl_->size; }

std::string Tokenizer::normalize(std::string_view text) const {
  std::string r = utf8_valid(text) ? std::string(text) : utf8_repair(text);
  return impl_->normalize(r);
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  const TokenizerImpl& I = *impl_;
  std::string norm = normalize(text);
  std::vector<StepState> st(I.steps.size());
  std::vector<std::string> out;
  const auto& bm = byte_map();
  I.run_steps(0, norm, st, [&](std::string_view piece) {
    if (!I.byte_level_pretok) {
      out.emplace_back(piece);
      return;
    }
    std::string m;
    for (unsigned char c : piece) m += bm.str[c];
    out.push_back(std::move(m));
  });
  return out;
}

std::string Tokenizer::token_bytes(int64_t id) const { return impl_->token_bytes(id); }
bool Tokenizer::has_byte_level_decoder() const { return impl_->decoder == TokenizerImpl::Dec::ByteLevel; }

// ---------------------------------------------------------------------------------------------

std::string utf8_repair(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    if (p[i] < 0x80) {
      out += static_cast<char>(p[i++]);
      continue;
    }
    uint32_t cp;
    size_t len;
    if (utf8_next(p + i, n - i, cp, len) == U8::Ok) {
      out.append(s.data() + i, len);
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += len;
  }
  return out;
}

size_t utf8_incomplete_suffix(std::string_view s) {
  const size_t n = s.size();
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    const unsigned char b = static_cast<unsigned char>(s[n - k]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: look further back
    uint32_t cp;
    size_t len;
    return utf8_next(reinterpret_cast<const unsigned char*>(s.data()) + n - k, k, cp, len) == U8::Incomplete ? k : 0;
  }
  return 0;
}

StreamDecoder::StreamDecoder(const Tokenizer& t, bool skip_special_tokens)
    : tok_(&t), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::push(int64_t id) {
  if (skip_special_ && tok_->is_special(id)) return {};
  if (tok_->id_to_token(id).empty() && tok_->token_to_id("") != id) return {};
  if (!tok_->has_byte_level_decoder() && !first_) pending_ += ' ';
  pending_ += tok_->token_bytes(id);
  first_ = false;
  const size_t keep = utf8_incomplete_suffix(pending_);
  std::string out = utf8_repair(std::string_view(pending_).substr(0, pending_.size() - keep));
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = utf8_repair(pending_);
  pending_.clear();
  return out;
}

}  // namespace s0::text
