// Jinja lexer: template text -> tokens, with transformers' whitespace rules (trim_blocks,
// lstrip_blocks, keep_trailing_newline=False) and `-`/`+` tag modifiers. See jinja_ast.h.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string>
#include <vector>

#include "s0/text/jinja_ast.h"
#include "s0/text/jinja_value.h"
#include "s0/util/error.h"

namespace s0::text::jinja::detail {
namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string rstrip_ws(const std::string& s) {
  size_t e = s.size();
  while (e > 0 && is_ws(s[e - 1])) --e;
  return s.substr(0, e);
}

class Lexer {
 public:
  Lexer(const std::string& src, const std::string& name) : name_(name) {
    // Newlines normalised to \n and one trailing newline dropped (keep_trailing_newline=False).
    src_.reserve(src.size());
    for (size_t k = 0; k < src.size(); ++k) {
      if (src[k] == '\r') {
        src_ += '\n';
        if (k + 1 < src.size() && src[k + 1] == '\n') ++k;
      } else {
        src_ += src[k];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    size_t pos = 0;
    while (true) {
      size_t start = find_tag(pos);
      std::string text = src_.substr(pos, start == std::string::npos ? std::string::npos : start - pos);
      if (start == std::string::npos) {
        emit_text(text, pos);
        break;
      }
      char kind = src_[start + 1];
      char sign = start + 2 < src_.size() ? src_[start + 2] : '\0';
      if (sign == '-') {
        text = rstrip_ws(text);
      } else if (sign != '+' && kind != '{') {  // lstrip_blocks
        bool line_starting = pos == 0 || src_[pos - 1] == '\n';
        size_t lpos = text.rfind('\n');
        lpos = lpos == std::string::npos ? 0 : lpos + 1;
        if (lpos > 0 || line_starting) {
          bool only_ws = lpos < text.size();
          for (size_t k = lpos; k < text.size(); ++k)
            if (!is_ws(text[k])) only_ws = false;
          if (only_ws) text = text.substr(0, lpos);
        }
      }
      emit_text(text, pos);
      line_ += count_nl(pos, start);
      size_t p = start + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        size_t end = src_.find("#}", p);
        if (end == std::string::npos) fail("unterminated comment");
        line_ += count_nl(p, end);
        bool strip = end > p && src_[end - 1] == '-';
        bool keep = end > p && src_[end - 1] == '+';
        pos = end + 2;
        pos = after_tag_end(pos, strip, !keep);
        continue;
      }
      out_.push_back({kind == '{' ? Tok::VarBegin : Tok::BlockBegin, "", line_});
      pos = lex_inside(p, kind == '{');
    }
    out_.push_back({Tok::Eof, "", line_});
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(const std::string& msg) {
    throw Error("chat template " + name_ + ": line " + std::to_string(line_) + ": " + msg);
  }
  size_t find_tag(size_t pos) const {
    while (true) {
      size_t k = src_.find('{', pos);
      if (k == std::string::npos || k + 1 >= src_.size()) return std::string::npos;
      char c = src_[k + 1];
      if (c == '{' || c == '%' || c == '#') return k;
      pos = k + 1;
    }
  }
  int count_nl(size_t a, size_t b) const {
    return static_cast<int>(std::count(src_.begin() + a, src_.begin() + b, '\n'));
  }
  void emit_text(const std::string& text, size_t) {
    if (!text.empty()) out_.push_back({Tok::Text, text, line_});
  }
  // After `%}`, `}}` or `#}`: `-` strips all following whitespace; trim_blocks drops one newline
  // after a block or comment tag.
  size_t after_tag_end(size_t pos, bool strip, bool trim) {
    if (strip) {
      size_t e = pos;
      while (e < src_.size() && is_ws(src_[e])) ++e;
      line_ += count_nl(pos, e);
      return e;
    }
    if (trim && pos < src_.size() && src_[pos] == '\n') {
      ++line_;
      return pos + 1;
    }
    return pos;
  }

  size_t lex_inside(size_t p, bool var) {
    int depth = 0;
    while (true) {
      while (p < src_.size() && is_ws(src_[p])) {
        if (src_[p] == '\n') ++line_;
        ++p;
      }
      if (p >= src_.size()) fail(var ? "unterminated '{{'" : "unterminated '{%'");
      if (depth == 0) {
        const char* end = var ? "}}" : "%}";
        if (src_.compare(p, 3, std::string("-") + end) == 0) {
          out_.push_back({var ? Tok::VarEnd : Tok::BlockEnd, "", line_});
          return after_tag_end(p + 3, true, false);
        }
        if (!var && src_.compare(p, 3, "+%}") == 0) {
          out_.push_back({Tok::BlockEnd, "", line_});
          return p + 3;
        }
        if (src_.compare(p, 2, end) == 0) {
          out_.push_back({var ? Tok::VarEnd : Tok::BlockEnd, "", line_});
          return after_tag_end(p + 2, false, !var);
        }
      }
      char c = src_[p];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = p;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        out_.push_back({Tok::Name, src_.substr(p, e - p), line_});
        p = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t e = p;
        bool is_float = false;
        while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
          is_float = true;
          ++e;
          while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        }
        if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
          size_t q = e + 1;
          if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
          if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
            is_float = true;
            e = q;
            while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
          }
        }
        std::string num;
        for (size_t k = p; k < e; ++k)
          if (src_[k] != '_') num += src_[k];
        out_.push_back({is_float ? Tok::Float : Tok::Int, num, line_});
        p = e;
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        static const char* two[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* t : two)
          if (src_.compare(p, 2, t) == 0) op = t;
        if (op.empty()) {
          if (std::string("+-*/%~<>=()[]{},.:|").find(c) == std::string::npos)
            fail(std::string("unexpected character '") + c + "'");
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") --depth;
        out_.push_back({Tok::Op, op, line_});
        p += op.size();
      }
    }
  }

  // Python string literal escapes (Jinja decodes literals with unicode-escape).
  size_t lex_string(size_t p) {
    char q = src_[p];
    int start_line = line_;
    std::string out;
    size_t k = p + 1;
    while (true) {
      if (k >= src_.size()) fail("unterminated string literal");
      char c = src_[k];
      if (c == q) break;
      if (c == '\n') ++line_;
      if (c != '\\') {
        out += c;
        ++k;
        continue;
      }
      if (k + 1 >= src_.size()) fail("unterminated string literal");
      char e = src_[k + 1];
      k += 2;
      auto hex = [&](int n) {
        if (k + n > src_.size()) fail("bad escape in string literal");
        uint32_t v = 0;
        for (int j = 0; j < n; ++j) {
          char h = src_[k + j];
          if (!std::isxdigit(static_cast<unsigned char>(h))) fail("bad escape in string literal");
          v = v * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        k += n;
        if (v > 0x10FFFF) fail("illegal Unicode character in string literal");
        append_utf8(out, v);
      };
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\n': ++line_; break;  // line continuation
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = e - '0';
            for (int j = 0; j < 2 && k < src_.size() && src_[k] >= '0' && src_[k] <= '7'; ++j, ++k)
              v = v * 8 + (src_[k] - '0');
            append_utf8(out, v);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    out_.push_back({Tok::Str, out, start_line});
    return k + 1;
  }

  std::string src_;
  std::string name_;
  int line_ = 1;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> lex(const std::string& source, const std::string& name) {
  return Lexer(source, name).run();
}

}  // namespace s0::text::jinja::detail
