// Jinja2 subset interpreter; see jinja.h for the supported language. Semantics follow Python
// Jinja2 3.1 as configured by transformers (the reference the chat-template goldens come from).
#include "s0/text/jinja.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/util/error.h"

namespace s0::text::jinja {
namespace {

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers (Python strings are sequences of code points)

std::vector<char32_t> decode_utf8(const std::string& s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) {  // invalid byte: keep it as U+FFFD-free raw code point
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = true;
    for (int k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += n;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string encode_utf8(const std::vector<char32_t>& cps, size_t b, size_t e) {
  std::string out;
  for (size_t i = b; i < e; ++i) append_utf8(out, cps[i]);
  return out;
}

// Python str.isspace(): bidi class WS/B/S or category Zs.
bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python str.strip/lstrip/rstrip; chars == nullptr strips whitespace.
std::string py_strip(const std::string& s, const std::string* chars, bool left, bool right) {
  auto cps = decode_utf8(s);
  std::vector<char32_t> set;
  if (chars) set = decode_utf8(*chars);
  auto strip_it = [&](char32_t c) {
    return chars ? std::find(set.begin(), set.end(), c) != set.end() : py_isspace(c);
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return encode_utf8(cps, b, e);
}

// ---------------------------------------------------------------------------------------------
// Values

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion-ordered
struct Call;
using Func = std::function<Value(Call&)>;

struct Value {
  enum class T { Undefined, None, Bool, Int, Float, Str, List, Dict, Ns, Func };
  T t = T::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // string value; for Undefined the name that was looked up; for Func its name
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // Dict and Ns (namespace objects are mutable)
  std::shared_ptr<Func> fn;
  bool tuple = false;  // a List written as (a, b): printed with parentheses

  static Value undefined(std::string what = "") {
    Value v;
    v.s = std::move(what);
    return v;
  }
  static Value none() {
    Value v;
    v.t = T::None;
    return v;
  }
  static Value boolean(bool x) {
    Value v;
    v.t = T::Bool;
    v.b = x;
    return v;
  }
  static Value integer(int64_t x) {
    Value v;
    v.t = T::Int;
    v.i = x;
    return v;
  }
  static Value real(double x) {
    Value v;
    v.t = T::Float;
    v.f = x;
    return v;
  }
  static Value str(std::string x) {
    Value v;
    v.t = T::Str;
    v.s = std::move(x);
    return v;
  }
  static Value make_list(List l) {
    Value v;
    v.t = T::List;
    v.list = std::make_shared<List>(std::move(l));
    return v;
  }
  static Value make_dict(Dict d) {
    Value v;
    v.t = T::Dict;
    v.dict = std::make_shared<Dict>(std::move(d));
    return v;
  }
  static Value func(std::string name, Func f) {
    Value v;
    v.t = T::Func;
    v.s = std::move(name);
    v.fn = std::make_shared<Func>(std::move(f));
    return v;
  }
  bool is_undef() const { return t == T::Undefined; }
  bool is_num() const { return t == T::Int || t == T::Float || t == T::Bool; }
  double as_double() const { return t == T::Float ? f : t == T::Bool ? (b ? 1 : 0) : double(i); }
  int64_t as_int() const { return t == T::Bool ? (b ? 1 : 0) : i; }
  const Value* find(const std::string& key) const {
    if (!dict) return nullptr;
    for (auto& kv : *dict)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
};

const char* type_name(const Value& v) {
  switch (v.t) {
    case Value::T::Undefined: return "undefined";
    case Value::T::None: return "NoneType";
    case Value::T::Bool: return "bool";
    case Value::T::Int: return "int";
    case Value::T::Float: return "float";
    case Value::T::Str: return "str";
    case Value::T::List: return "list";
    case Value::T::Dict: return "dict";
    case Value::T::Ns: return "Namespace";
    case Value::T::Func: return "function";
  }
  return "?";
}

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value::integer(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value::real(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      for (auto& e : j) l.push_back(from_json(e));
      return Value::make_list(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.emplace_back(it.key(), from_json(it.value()));
      return Value::make_dict(std::move(d));
    }
    default: throw Error("jinja: unsupported JSON value in the render context");
  }
}

// Python float repr (shortest round-trip; scientific outside 1e-4 <= |x| < 1e16).
std::string py_float_repr(double x, bool json) {
  if (std::isnan(x)) return json ? "NaN" : "nan";
  if (std::isinf(x)) return json ? (x > 0 ? "Infinity" : "-Infinity") : (x > 0 ? "inf" : "-inf");
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // d.ddde[+-]XX
  bool neg = sci[0] == '-';
  if (neg) sci = sci.substr(1);
  size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      if (static_cast<int>(digits.size()) <= exp + 1) {
        out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
      }
    } else {
      out = "0." + std::string(-exp - 1, '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += eb;
  }
  return neg ? "-" + out : out;
}

// Python str.isprintable() for the characters that matter in practice: controls, separators
// other than the ASCII space, format characters and private use are escaped by repr().
// (Unassigned code points, also escaped by Python, are not tracked.)
bool py_isprintable(char32_t c) {
  if (c < 0x20 || (c >= 0x7F && c <= 0xA0)) return false;
  if (c == 0xAD || c == 0x1680 || (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
      (c >= 0x205F && c <= 0x2064) || (c >= 0x2066 && c <= 0x206F) || c == 0x3000 || c == 0xFEFF ||
      (c >= 0x600 && c <= 0x605) || c == 0x61C || c == 0x6DD || c == 0x70F || c == 0x180E ||
      (c >= 0xFFF9 && c <= 0xFFFB) || (c >= 0xD800 && c <= 0xF8FF) || c == 0xE0001 ||
      (c >= 0xE0020 && c <= 0xE007F) || c >= 0xF0000)
    return false;
  return true;
}

std::string py_str_repr(const std::string& s) {
  bool has_sq = s.find('\'') != std::string::npos, has_dq = s.find('"') != std::string::npos;
  char q = (has_sq && !has_dq) ? '"' : '\'';
  std::string out(1, q);
  for (char32_t c : decode_utf8(s)) {
    if (c == static_cast<char32_t>(q) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!py_isprintable(c)) {
      char b[16];
      if (c < 0x100)
        std::snprintf(b, sizeof b, "\\x%02x", static_cast<unsigned>(c));
      else if (c < 0x10000)
        std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
      else
        std::snprintf(b, sizeof b, "\\U%08x", static_cast<unsigned>(c));
      out += b;
    } else {
      append_utf8(out, c);
    }
  }
  out += q;
  return out;
}

std::string repr(const Value& v);

// Python str(): what {{ x }} prints.
std::string to_str(const Value& v) {
  switch (v.t) {
    case Value::T::Undefined: return "";
    case Value::T::None: return "None";
    case Value::T::Bool: return v.b ? "True" : "False";
    case Value::T::Int: return std::to_string(v.i);
    case Value::T::Float: return py_float_repr(v.f, false);
    case Value::T::Str: return v.s;
    case Value::T::List: {
      std::string out = v.tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) out += (k ? ", " : "") + repr((*v.list)[k]);
      if (v.tuple) return out + (v.list->size() == 1 ? ",)" : ")");
      return out + "]";
    }
    case Value::T::Dict: {
      std::string out = "{";
      bool first = true;
      for (auto& kv : *v.dict) {
        out += (first ? "" : ", ") + py_str_repr(kv.first) + ": " + repr(kv.second);
        first = false;
      }
      return out + "}";
    }
    case Value::T::Ns: {
      std::string out = "<Namespace {";
      bool first = true;
      for (auto& kv : *v.dict) {
        out += (first ? "" : ", ") + py_str_repr(kv.first) + ": " + repr(kv.second);
        first = false;
      }
      return out + "}>";
    }
    case Value::T::Func: return "<function " + v.s + ">";
  }
  return "";
}

std::string repr(const Value& v) {
  if (v.t == Value::T::Undefined) return "Undefined";
  return v.t == Value::T::Str ? py_str_repr(v.s) : to_str(v);
}

// json.dumps(x, ensure_ascii=False, indent=indent, separators=..., sort_keys=...)
void json_dump(const Value& v, std::string& out, int indent, int depth, const std::string& item_sep,
               const std::string& key_sep, bool sort_keys) {
  auto newline = [&](int d) {
    out += '\n';
    out += std::string(static_cast<size_t>(indent) * d, ' ');
  };
  switch (v.t) {
    case Value::T::None: out += "null"; return;
    case Value::T::Bool: out += v.b ? "true" : "false"; return;
    case Value::T::Int: out += std::to_string(v.i); return;
    case Value::T::Float: out += py_float_repr(v.f, true); return;
    case Value::T::Str: {
      out += '"';
      for (unsigned char c : v.s) {
        switch (c) {
          case '"': out += "\\\""; break;
          case '\\': out += "\\\\"; break;
          case '\n': out += "\\n"; break;
          case '\r': out += "\\r"; break;
          case '\t': out += "\\t"; break;
          case '\b': out += "\\b"; break;
          case '\f': out += "\\f"; break;
          default:
            if (c < 0x20) {
              char b[8];
              std::snprintf(b, sizeof b, "\\u%04x", c);
              out += b;
            } else {
              out += static_cast<char>(c);
            }
        }
      }
      out += '"';
      return;
    }
    case Value::T::List: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += item_sep;
        if (indent >= 0) newline(depth + 1);
        json_dump((*v.list)[k], out, indent, depth + 1, item_sep, key_sep, sort_keys);
      }
      if (indent >= 0) newline(depth);
      out += ']';
      return;
    }
    case Value::T::Dict:
    case Value::T::Ns: {
      if (v.dict->empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (auto& kv : *v.dict) items.push_back(&kv);
      if (sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += item_sep;
        if (indent >= 0) newline(depth + 1);
        json_dump(Value::str(items[k]->first), out, indent, depth + 1, item_sep, key_sep,
                  sort_keys);
        out += key_sep;
        json_dump(items[k]->second, out, indent, depth + 1, item_sep, key_sep, sort_keys);
      }
      if (indent >= 0) newline(depth);
      out += '}';
      return;
    }
    case Value::T::Undefined: throw Error("tojson: value is undefined");
    case Value::T::Func: throw Error("tojson: a function is not JSON serializable");
  }
}

bool truthy(const Value& v) {
  switch (v.t) {
    case Value::T::Undefined:
    case Value::T::None: return false;
    case Value::T::Bool: return v.b;
    case Value::T::Int: return v.i != 0;
    case Value::T::Float: return v.f != 0;
    case Value::T::Str: return !v.s.empty();
    case Value::T::List: return !v.list->empty();
    case Value::T::Dict: return !v.dict->empty();
    case Value::T::Ns:
    case Value::T::Func: return true;
  }
  return false;
}

bool equal(const Value& a, const Value& b) {
  if (a.is_num() && b.is_num()) {
    if (a.t == Value::T::Float || b.t == Value::T::Float) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.t != b.t) return false;
  switch (a.t) {
    case Value::T::Undefined:
    case Value::T::None: return true;
    case Value::T::Str: return a.s == b.s;
    case Value::T::List:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equal((*a.list)[k], (*b.list)[k])) return false;
      return true;
    case Value::T::Dict:
      if (a.dict->size() != b.dict->size()) return false;
      for (auto& kv : *a.dict) {
        const Value* o = b.find(kv.first);
        if (!o || !equal(kv.second, *o)) return false;
      }
      return true;
    case Value::T::Ns: return a.dict == b.dict;
    case Value::T::Func: return a.fn == b.fn;
    default: return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Lexer

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, Str, Int, Float, Op, Eof };

struct Token {
  Tok kind;
  std::string v;
  int line;
};

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

// ---------------------------------------------------------------------------------------------
// AST

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
  enum class K {
    Literal, Name, ListLit, DictLit, Attr, Item, Slice, Call, Filter, Test, Neg, Pos, Not,
    Binary, And, Or, Compare, Cond, Concat
  };
  K k;
  int line = 0;
  Value lit;
  std::string name;                 // Name, Attr, Filter, Test, Binary op
  std::vector<ExprP> args;          // children / positional arguments
  std::vector<std::pair<std::string, ExprP>> kwargs;
  std::vector<std::string> ops;     // Compare operators
  bool negated = false;             // Test: `is not`
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class K { Text, Output, If, For, Set, SetAttr, SetBlock, Macro, Break, Continue };
  K k;
  int line = 0;
  std::string text;                       // Text; Set/SetBlock/Macro name; SetAttr object
  std::string attr;                       // SetAttr attribute
  std::vector<std::string> targets;       // For targets
  ExprP expr;                             // Output / Set value / For iterable
  ExprP cond;                             // For inline filter
  std::vector<std::pair<ExprP, Body>> branches;  // If (cond, body)
  Body body;                              // For / SetBlock / Macro body; If else
  Body else_body;                         // For else
  std::vector<std::pair<std::string, ExprP>> params;  // Macro
};

const std::set<std::string> kFilters = {
    "length", "count", "tojson", "trim", "string", "lower", "upper", "capitalize", "title",
    "first", "last", "join", "default", "d", "items", "list", "replace", "int", "float",
    "abs", "safe", "reverse", "unique", "sort", "dictsort", "map", "selectattr", "rejectattr",
    "select", "reject", "indent", "round", "sum", "min", "max", "wordcount", "center", "e", "escape"};
const std::set<std::string> kTests = {
    "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true",
    "false", "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq",
    "equalto", "==", "ne", "!=", "lt", "<", "lessthan", "le", "<=", "gt", ">", "greaterthan",
    "ge", ">=", "in", "sameas", "lower", "upper"};

class Parser {
 public:
  Parser(std::vector<Token> toks, const std::string& name) : t_(std::move(toks)), name_(name) {}

  Body parse_template() {
    Body b = parse_body({});
    if (peek().kind != Tok::Eof) fail("unexpected tag");
    return b;
  }

 private:
  [[noreturn]] void fail(const std::string& msg, int line = -1) {
    throw Error("chat template " + name_ + ": line " + std::to_string(line < 0 ? peek().line : line) +
                ": " + msg);
  }
  const Token& peek(size_t ahead = 0) const { return t_[std::min(p_ + ahead, t_.size() - 1)]; }
  Token next() { return t_[std::min(p_++, t_.size() - 1)]; }
  bool is_op(const std::string& op, size_t ahead = 0) const {
    return peek(ahead).kind == Tok::Op && peek(ahead).v == op;
  }
  bool is_name(const std::string& n, size_t ahead = 0) const {
    return peek(ahead).kind == Tok::Name && peek(ahead).v == n;
  }
  void expect_op(const std::string& op) {
    if (!is_op(op)) fail("expected '" + op + "'" + got());
    ++p_;
  }
  void expect_name(const std::string& n) {
    if (!is_name(n)) fail("expected '" + n + "'" + got());
    ++p_;
  }
  std::string got() const {
    const Token& t = peek();
    switch (t.kind) {
      case Tok::BlockEnd: return ", got end of tag";
      case Tok::VarEnd: return ", got '}}'";
      case Tok::Eof: return ", got end of template";
      default: return ", got '" + t.v + "'";
    }
  }
  std::string ident() {
    if (peek().kind != Tok::Name) fail("expected a name" + got());
    return next().v;
  }
  void end_block() {
    if (peek().kind != Tok::BlockEnd) fail("expected end of tag" + got());
    ++p_;
  }

  // Parses statements until a `{% name %}` with name in `ends` (left unconsumed: p_ at the name).
  Body parse_body(const std::set<std::string>& ends) {
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.kind == Tok::Eof) {
        if (!ends.empty()) {
          std::string want;
          for (auto& e : ends) want += (want.empty() ? "" : "/") + e;
          fail("missing {% " + want + " %}");
        }
        return body;
      }
      if (t.kind == Tok::Text) {
        auto s = std::make_unique<Stmt>();
        s->k = Stmt::K::Text;
        s->text = t.v;
        body.push_back(std::move(s));
        ++p_;
      } else if (t.kind == Tok::VarBegin) {
        ++p_;
        auto s = std::make_unique<Stmt>();
        s->k = Stmt::K::Output;
        s->line = t.line;
        s->expr = parse_expr();
        if (peek().kind != Tok::VarEnd) fail("expected '}}'" + got());
        ++p_;
        body.push_back(std::move(s));
      } else if (t.kind == Tok::BlockBegin) {
        if (peek(1).kind == Tok::Name && ends.count(peek(1).v)) {
          ++p_;
          return body;
        }
        ++p_;
        body.push_back(parse_statement());
      } else {
        fail("unexpected token");
      }
    }
  }

  std::unique_ptr<Stmt> parse_statement() {
    int line = peek().line;
    std::string kw = ident();
    auto s = std::make_unique<Stmt>();
    s->line = line;
    if (kw == "if") {
      s->k = Stmt::K::If;
      ExprP cond = parse_expr();
      end_block();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"});
        s->branches.emplace_back(std::move(cond), std::move(b));
        std::string e = ident();
        if (e == "elif") {
          cond = parse_expr();
          end_block();
          continue;
        }
        if (e == "else") {
          end_block();
          s->body = parse_body({"endif"});
          ident();
        }
        end_block();
        break;
      }
    } else if (kw == "for") {
      s->k = Stmt::K::For;
      s->targets.push_back(ident());
      while (is_op(",")) {
        ++p_;
        s->targets.push_back(ident());
      }
      expect_name("in");
      s->expr = parse_or_cond(false);
      if (is_name("if")) {
        ++p_;
        s->cond = parse_expr();
      }
      if (is_name("recursive")) fail("unsupported Jinja construct: recursive for loops");
      end_block();
      ++loop_depth_;
      s->body = parse_body({"else", "endfor"});
      --loop_depth_;
      if (ident() == "else") {
        end_block();
        s->else_body = parse_body({"endfor"});
        ident();
      }
      end_block();
    } else if (kw == "set") {
      std::string target = ident();
      if (is_op(".")) {
        ++p_;
        s->k = Stmt::K::SetAttr;
        s->text = target;
        s->attr = ident();
        expect_op("=");
        s->expr = parse_expr();
        end_block();
      } else if (is_op("=")) {
        ++p_;
        s->k = Stmt::K::Set;
        s->text = target;
        s->expr = parse_expr();
        end_block();
      } else if (peek().kind == Tok::BlockEnd) {
        ++p_;
        s->k = Stmt::K::SetBlock;
        s->text = target;
        s->body = parse_body({"endset"});
        ident();
        end_block();
      } else {
        fail("unsupported Jinja construct: this form of {% set %}");
      }
    } else if (kw == "macro") {
      s->k = Stmt::K::Macro;
      s->text = ident();
      expect_op("(");
      while (!is_op(")")) {
        std::string pn = ident();
        ExprP def;
        if (is_op("=")) {
          ++p_;
          def = parse_expr();
        }
        s->params.emplace_back(pn, std::move(def));
        if (!is_op(",")) break;
        ++p_;
      }
      expect_op(")");
      end_block();
      s->body = parse_body({"endmacro"});
      ident();
      end_block();
    } else if (kw == "break" || kw == "continue") {
      if (loop_depth_ == 0) fail("'" + kw + "' outside a for loop", line);
      s->k = kw == "break" ? Stmt::K::Break : Stmt::K::Continue;
      end_block();
    } else {
      fail("unsupported Jinja construct: {% " + kw +
           " %} (supported statements: if, for, set, macro, break, continue)", line);
    }
    return s;
  }

  ExprP node(Expr::K k, int line) {
    auto e = std::make_unique<Expr>();
    e->k = k;
    e->line = line;
    return e;
  }

  ExprP parse_expr() { return parse_or_cond(true); }

  ExprP parse_or_cond(bool with_cond) {
    ExprP e = parse_or();
    if (with_cond) {
      while (is_name("if")) {
        int line = peek().line;
        ++p_;
        auto c = node(Expr::K::Cond, line);
        c->args.push_back(parse_or());  // condition
        c->args.push_back(std::move(e));
        if (is_name("else")) {
          ++p_;
          c->args.push_back(parse_or_cond(true));
        }
        e = std::move(c);
      }
    }
    return e;
  }
  ExprP parse_or() {
    ExprP e = parse_and();
    while (is_name("or")) {
      int line = next().line;
      auto n = node(Expr::K::Or, line);
      n->args.push_back(std::move(e));
      n->args.push_back(parse_and());
      e = std::move(n);
    }
    return e;
  }
  ExprP parse_and() {
    ExprP e = parse_not();
    while (is_name("and")) {
      int line = next().line;
      auto n = node(Expr::K::And, line);
      n->args.push_back(std::move(e));
      n->args.push_back(parse_not());
      e = std::move(n);
    }
    return e;
  }
  ExprP parse_not() {
    if (is_name("not")) {
      int line = next().line;
      auto n = node(Expr::K::Not, line);
      n->args.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }
  ExprP parse_compare() {
    int line = peek().line;
    ExprP e = parse_math1();
    ExprP cmp;
    while (true) {
      std::string op;
      if (peek().kind == Tok::Op &&
          (peek().v == "==" || peek().v == "!=" || peek().v == "<" || peek().v == ">" ||
           peek().v == "<=" || peek().v == ">=")) {
        op = next().v;
      } else if (is_name("in")) {
        ++p_;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        p_ += 2;
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(Expr::K::Compare, line);
        cmp->args.push_back(std::move(e));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(e);
  }
  ExprP binary(const std::string& op, ExprP l, ExprP r, int line) {
    auto n = node(Expr::K::Binary, line);
    n->name = op;
    n->args.push_back(std::move(l));
    n->args.push_back(std::move(r));
    return n;
  }
  ExprP parse_math1() {
    ExprP e = parse_concat();
    while (is_op("+") || is_op("-")) {
      Token t = next();
      e = binary(t.v, std::move(e), parse_concat(), t.line);
    }
    return e;
  }
  ExprP parse_concat() {
    ExprP e = parse_math2();
    if (!is_op("~")) return e;
    auto n = node(Expr::K::Concat, peek().line);
    n->args.push_back(std::move(e));
    while (is_op("~")) {
      ++p_;
      n->args.push_back(parse_math2());
    }
    return n;
  }
  ExprP parse_math2() {
    ExprP e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      Token t = next();
      e = binary(t.v, std::move(e), parse_pow(), t.line);
    }
    return e;
  }
  ExprP parse_pow() {
    ExprP e = parse_unary(true);
    while (is_op("**")) {
      Token t = next();
      e = binary("**", std::move(e), parse_unary(true), t.line);
    }
    return e;
  }
  ExprP parse_unary(bool with_filter) {
    ExprP e;
    if (is_op("-") || is_op("+")) {
      Token t = next();
      e = node(t.v == "-" ? Expr::K::Neg : Expr::K::Pos, t.line);
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
      e = parse_postfix(std::move(e));
    }
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }
  ExprP parse_primary() {
    Token t = next();
    switch (t.kind) {
      case Tok::Name: {
        if (t.v == "true" || t.v == "True") return lit(Value::boolean(true), t.line);
        if (t.v == "false" || t.v == "False") return lit(Value::boolean(false), t.line);
        if (t.v == "none" || t.v == "None") return lit(Value::none(), t.line);
        auto n = node(Expr::K::Name, t.line);
        n->name = t.v;
        return n;
      }
      case Tok::Str: {
        std::string s = t.v;
        while (peek().kind == Tok::Str) s += next().v;  // adjacent literals concatenate
        return lit(Value::str(s), t.line);
      }
      case Tok::Int: {
        int64_t v = 0;
        auto r = std::from_chars(t.v.data(), t.v.data() + t.v.size(), v);
        if (r.ec != std::errc()) fail("integer literal out of range", t.line);
        return lit(Value::integer(v), t.line);
      }
      case Tok::Float: return lit(Value::real(std::stod(t.v)), t.line);
      case Tok::Op:
        if (t.v == "(") {
          if (is_op(")")) {
            ++p_;
            auto n = node(Expr::K::ListLit, t.line);
            n->name = "tuple";
            return n;
          }
          ExprP e = parse_expr();
          if (is_op(",")) {  // tuple (represented as a list)
            auto n = node(Expr::K::ListLit, t.line);
            n->name = "tuple";
            n->args.push_back(std::move(e));
            while (is_op(",")) {
              ++p_;
              if (is_op(")")) break;
              n->args.push_back(parse_expr());
            }
            e = std::move(n);
          }
          expect_op(")");
          return e;
        }
        if (t.v == "[") {
          auto n = node(Expr::K::ListLit, t.line);
          while (!is_op("]")) {
            n->args.push_back(parse_expr());
            if (!is_op(",")) break;
            ++p_;
          }
          expect_op("]");
          return n;
        }
        if (t.v == "{") {
          auto n = node(Expr::K::DictLit, t.line);
          while (!is_op("}")) {
            n->args.push_back(parse_expr());
            expect_op(":");
            n->args.push_back(parse_expr());
            if (!is_op(",")) break;
            ++p_;
          }
          expect_op("}");
          return n;
        }
        break;
      default: break;
    }
    --p_;
    fail("unexpected" + got().substr(5));
  }
  ExprP lit(Value v, int line) {
    auto n = node(Expr::K::Literal, line);
    n->lit = std::move(v);
    return n;
  }
  void parse_call_args(Expr& call) {
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) fail("unsupported Jinja construct: *args/**kwargs in a call");
      if (peek().kind == Tok::Name && is_op("=", 1)) {
        std::string k = next().v;
        ++p_;
        call.kwargs.emplace_back(k, parse_expr());
      } else {
        if (!call.kwargs.empty()) fail("positional argument after keyword argument");
        call.args.push_back(parse_expr());
      }
      if (!is_op(",")) break;
      ++p_;
    }
    expect_op(")");
  }
  ExprP parse_postfix(ExprP e) {
    while (true) {
      if (is_op(".")) {
        int line = next().line;
        auto n = node(Expr::K::Attr, line);
        if (peek().kind == Tok::Int) {  // foo.0 == foo[0]
          n->k = Expr::K::Item;
          n->args.push_back(std::move(e));
          n->args.push_back(lit(Value::integer(std::stoll(next().v)), line));
        } else {
          n->name = ident();
          n->args.push_back(std::move(e));
        }
        e = std::move(n);
      } else if (is_op("[")) {
        int line = next().line;
        ExprP parts[3];
        bool slice = false;
        int idx = 0;
        while (true) {
          if (is_op(":")) {
            slice = true;
            ++p_;
            if (++idx > 2) fail("bad slice");
            continue;
          }
          if (is_op("]")) break;
          if (parts[idx]) fail("bad subscript");
          parts[idx] = parse_expr();
        }
        expect_op("]");
        if (slice) {
          auto n = node(Expr::K::Slice, line);
          n->args.push_back(std::move(e));
          for (auto& pp : parts) n->args.push_back(std::move(pp));  // may be null
          e = std::move(n);
        } else {
          if (!parts[0]) fail("empty subscript");
          auto n = node(Expr::K::Item, line);
          n->args.push_back(std::move(e));
          n->args.push_back(std::move(parts[0]));
          e = std::move(n);
        }
      } else if (is_op("(")) {
        auto n = node(Expr::K::Call, peek().line);
        n->args.push_back(std::move(e));
        parse_call_args(*n);
        e = std::move(n);
      } else {
        return e;
      }
    }
  }
  ExprP parse_filter_expr(ExprP e) {
    while (true) {
      if (is_op("|")) {
        int line = next().line;
        auto n = node(Expr::K::Filter, line);
        n->name = ident();
        if (!kFilters.count(n->name)) fail("unsupported Jinja filter '" + n->name + "'", line);
        n->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(*n);
        e = parse_postfix(std::move(n));
      } else if (is_name("is")) {
        int line = next().line;
        auto n = node(Expr::K::Test, line);
        if (is_name("not")) {
          ++p_;
          n->negated = true;
        }
        if (peek().kind == Tok::Name) {
          n->name = next().v;
        } else if (peek().kind == Tok::Op && kTests.count(peek().v)) {
          n->name = next().v;
        } else {
          fail("expected a test name" + got());
        }
        if (!kTests.count(n->name)) fail("unsupported Jinja test '" + n->name + "'", line);
        n->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*n);
        } else if (peek().kind == Tok::Str || peek().kind == Tok::Int ||
                   peek().kind == Tok::Float ||
                   (peek().kind == Tok::Name && !is_name("and") && !is_name("or") &&
                    !is_name("else") && !is_name("if") && !is_name("is") && !is_name("in") &&
                    !is_name("not"))) {
          n->args.push_back(parse_primary());  // `is divisibleby 3`, `is sameas false`
          n->args.back() = parse_postfix(std::move(n->args.back()));
        }
        e = std::move(n);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t p_ = 0;
  std::string name_;
  int loop_depth_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Evaluation

struct Frame {
  std::shared_ptr<Frame> parent;
  std::map<std::string, Value> vars;
  Value* lookup(const std::string& n) {
    for (Frame* f = this; f; f = f->parent.get()) {
      auto it = f->vars.find(n);
      if (it != f->vars.end()) return &it->second;
    }
    return nullptr;
  }
};
using FrameP = std::shared_ptr<Frame>;

struct Call {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
  int line = 0;
  const Value* kw(const std::string& k) const {
    for (auto& kv : kwargs)
      if (kv.first == k) return &kv.second;
    return nullptr;
  }
  // Positional-or-keyword argument `pos`/`k`.
  const Value* arg(size_t pos, const std::string& k) const {
    if (pos < args.size()) return &args[pos];
    return kw(k);
  }
};

enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  explicit Renderer(const std::string& name) : name_(name) {}

  [[noreturn]] void fail(int line, const std::string& msg) const {
    throw Error("chat template " + name_ + ": line " + std::to_string(line) + ": " + msg);
  }

  Flow exec(const Body& body, const FrameP& fr, std::string& out) {
    for (auto& s : body) {
      Flow f = exec(*s, fr, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Stmt& s, const FrameP& fr, std::string& out) {
    switch (s.k) {
      case Stmt::K::Text: out += s.text; return Flow::Normal;
      case Stmt::K::Output: out += to_str(eval(*s.expr, fr)); return Flow::Normal;
      case Stmt::K::If:
        for (auto& br : s.branches)
          if (truthy(eval(*br.first, fr))) return exec(br.second, fr, out);
        return exec(s.body, fr, out);
      case Stmt::K::Set: fr->vars[s.text] = eval(*s.expr, fr); return Flow::Normal;
      case Stmt::K::SetAttr: {
        Value* ns = fr->lookup(s.text);
        if (!ns || ns->t != Value::T::Ns)
          fail(s.line, "cannot assign attribute '" + s.attr + "' on '" + s.text +
                           "': only namespace() objects support attribute assignment");
        Value v = eval(*s.expr, fr);
        for (auto& kv : *ns->dict)
          if (kv.first == s.attr) {
            kv.second = std::move(v);
            return Flow::Normal;
          }
        ns->dict->emplace_back(s.attr, std::move(v));
        return Flow::Normal;
      }
      case Stmt::K::SetBlock: {
        std::string buf;
        exec(s.body, fr, buf);
        fr->vars[s.text] = Value::str(buf);
        return Flow::Normal;
      }
      case Stmt::K::Macro: {
        const Stmt* m = &s;
        FrameP def_frame = fr;
        std::weak_ptr<Frame> weak = def_frame;
        fr->vars[s.text] = Value::func(s.text, [this, m, weak](Call& c) -> Value {
          FrameP parent = weak.lock();
          auto f = std::make_shared<Frame>();
          f->parent = parent;
          if (c.args.size() > m->params.size())
            fail(c.line, "macro '" + m->text + "' takes " + std::to_string(m->params.size()) +
                             " arguments, got " + std::to_string(c.args.size()));
          for (size_t k = 0; k < m->params.size(); ++k) {
            const auto& [pn, def] = m->params[k];
            if (k < c.args.size()) {
              f->vars[pn] = c.args[k];
            } else if (const Value* kv = c.kw(pn)) {
              f->vars[pn] = *kv;
            } else if (def) {
              f->vars[pn] = eval(*def, f);
            } else {
              f->vars[pn] = Value::undefined(pn);
            }
          }
          for (auto& kv : c.kwargs) {
            bool known = false;
            for (auto& p : m->params) known = known || p.first == kv.first;
            if (!known) fail(c.line, "macro '" + m->text + "' has no parameter '" + kv.first + "'");
          }
          if (++depth_ > 64) fail(c.line, "macro '" + m->text + "': recursion deeper than 64 calls");
          std::string buf;
          exec(m->body, f, buf);
          --depth_;
          return Value::str(buf);
        });
        return Flow::Normal;
      }
      case Stmt::K::Break: return Flow::Break;
      case Stmt::K::Continue: return Flow::Continue;
      case Stmt::K::For: return exec_for(s, fr, out);
    }
    return Flow::Normal;
  }

  Flow exec_for(const Stmt& s, const FrameP& fr, std::string& out) {
    Value it = eval(*s.expr, fr);
    List items = iterate(it, s.line);
    auto bind = [&](const FrameP& f, const Value& item) {
      if (s.targets.size() == 1) {
        f->vars[s.targets[0]] = item;
        return;
      }
      List parts = iterate(item, s.line);
      if (parts.size() != s.targets.size())
        fail(s.line, "cannot unpack " + std::to_string(parts.size()) + " values into " +
                         std::to_string(s.targets.size()) + " loop variables");
      for (size_t k = 0; k < parts.size(); ++k) f->vars[s.targets[k]] = parts[k];
    };
    if (s.cond) {
      List kept;
      for (auto& item : items) {
        auto f = std::make_shared<Frame>();
        f->parent = fr;
        bind(f, item);
        if (truthy(eval(*s.cond, f))) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(s.else_body, fr, out);
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      auto f = std::make_shared<Frame>();
      f->parent = fr;
      bind(f, items[k]);
      Dict loop;
      loop.emplace_back("index0", Value::integer(k));
      loop.emplace_back("index", Value::integer(k + 1));
      loop.emplace_back("revindex0", Value::integer(n - k - 1));
      loop.emplace_back("revindex", Value::integer(n - k));
      loop.emplace_back("first", Value::boolean(k == 0));
      loop.emplace_back("last", Value::boolean(k == n - 1));
      loop.emplace_back("length", Value::integer(n));
      loop.emplace_back("depth", Value::integer(1));
      loop.emplace_back("depth0", Value::integer(0));
      loop.emplace_back("previtem", k > 0 ? items[k - 1] : Value::undefined("loop.previtem"));
      loop.emplace_back("nextitem", k + 1 < n ? items[k + 1] : Value::undefined("loop.nextitem"));
      f->vars["loop"] = Value::make_dict(std::move(loop));
      Flow fl = exec(s.body, f, out);
      if (fl == Flow::Break) break;
    }
    return Flow::Normal;
  }

  List iterate(const Value& v, int line) {
    switch (v.t) {
      case Value::T::Undefined: return {};
      case Value::T::List: return *v.list;
      case Value::T::Dict: {
        List l;
        for (auto& kv : *v.dict) l.push_back(Value::str(kv.first));
        return l;
      }
      case Value::T::Str: {
        List l;
        for (char32_t c : decode_utf8(v.s)) {
          std::string one;
          append_utf8(one, c);
          l.push_back(Value::str(one));
        }
        return l;
      }
      default: fail(line, std::string("'") + type_name(v) + "' object is not iterable");
    }
  }

  Value eval(const Expr& e, const FrameP& fr) {
    switch (e.k) {
      case Expr::K::Literal: return e.lit;
      case Expr::K::Name: {
        if (Value* v = fr->lookup(e.name)) return *v;
        return Value::undefined(e.name);
      }
      case Expr::K::ListLit: {
        List l;
        for (auto& a : e.args) l.push_back(eval(*a, fr));
        Value v = Value::make_list(std::move(l));
        v.tuple = e.name == "tuple";
        return v;
      }
      case Expr::K::DictLit: {
        Dict d;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = eval(*e.args[k], fr);
          if (key.t != Value::T::Str) fail(e.line, "only string keys are supported in dict literals");
          Value val = eval(*e.args[k + 1], fr);
          bool found = false;
          for (auto& kv : d)
            if (kv.first == key.s) {
              kv.second = val;
              found = true;
            }
          if (!found) d.emplace_back(key.s, val);
        }
        return Value::make_dict(std::move(d));
      }
      case Expr::K::Attr: return get_attr(eval(*e.args[0], fr), e.name, e.line);
      case Expr::K::Item: return get_item(eval(*e.args[0], fr), eval(*e.args[1], fr), e.line);
      case Expr::K::Slice: {
        Value obj = eval(*e.args[0], fr);
        std::optional<int64_t> sl[3];
        for (int k = 0; k < 3; ++k) {
          if (!e.args[k + 1]) continue;
          Value v = eval(*e.args[k + 1], fr);
          if (v.t == Value::T::None) continue;
          if (v.t != Value::T::Int && v.t != Value::T::Bool) fail(e.line, "slice indices must be integers");
          sl[k] = v.as_int();
        }
        return slice(obj, sl[0], sl[1], sl[2], e.line);
      }
      case Expr::K::Call: {
        Value callee = eval(*e.args[0], fr);
        Call c = make_call(e, fr, 1);
        if (callee.t != Value::T::Func) {
          std::string what = e.args[0]->k == Expr::K::Name ? e.args[0]->name
                             : e.args[0]->k == Expr::K::Attr ? e.args[0]->name
                                                              : std::string("value");
          if (callee.is_undef()) fail(e.line, "'" + what + "' is undefined (not a supported function)");
          fail(e.line, std::string("'") + type_name(callee) + "' object is not callable");
        }
        return (*callee.fn)(c);
      }
      case Expr::K::Filter: {
        Value v = eval(*e.args[0], fr);
        Call c = make_call(e, fr, 1);
        return apply_filter(e.name, v, c);
      }
      case Expr::K::Test: {
        Value v = eval(*e.args[0], fr);
        Call c = make_call(e, fr, 1);
        bool r = apply_test(e.name, v, c);
        return Value::boolean(e.negated ? !r : r);
      }
      case Expr::K::Neg:
      case Expr::K::Pos: {
        Value v = eval(*e.args[0], fr);
        if (!v.is_num()) fail(e.line, std::string("bad operand type for unary ") + (e.k == Expr::K::Neg ? "-" : "+") + ": '" + type_name(v) + "'");
        if (e.k == Expr::K::Pos) return v.t == Value::T::Bool ? Value::integer(v.as_int()) : v;
        return v.t == Value::T::Float ? Value::real(-v.f) : Value::integer(-v.as_int());
      }
      case Expr::K::Not: return Value::boolean(!truthy(eval(*e.args[0], fr)));
      case Expr::K::And: {
        Value l = eval(*e.args[0], fr);
        return truthy(l) ? eval(*e.args[1], fr) : l;
      }
      case Expr::K::Or: {
        Value l = eval(*e.args[0], fr);
        return truthy(l) ? l : eval(*e.args[1], fr);
      }
      case Expr::K::Cond: {
        if (truthy(eval(*e.args[0], fr))) return eval(*e.args[1], fr);
        if (e.args.size() > 2) return eval(*e.args[2], fr);
        return Value::undefined("inline if");
      }
      case Expr::K::Concat: {
        std::string s;
        for (auto& a : e.args) s += to_str(eval(*a, fr));
        return Value::str(s);
      }
      case Expr::K::Compare: {
        Value l = eval(*e.args[0], fr);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value r = eval(*e.args[k + 1], fr);
          if (!compare(e.ops[k], l, r, e.line)) return Value::boolean(false);
          l = std::move(r);
        }
        return Value::boolean(true);
      }
      case Expr::K::Binary: return binary(e.name, eval(*e.args[0], fr), eval(*e.args[1], fr), e.line);
    }
    return Value::undefined();
  }

  Call make_call(const Expr& e, const FrameP& fr, size_t skip) {
    Call c;
    c.line = e.line;
    for (size_t k = skip; k < e.args.size(); ++k) c.args.push_back(eval(*e.args[k], fr));
    for (auto& kv : e.kwargs) c.kwargs.emplace_back(kv.first, eval(*kv.second, fr));
    return c;
  }

  [[noreturn]] void undefined_error(const Value& v, int line, const std::string& what) const {
    fail(line, "'" + (v.s.empty() ? std::string("value") : v.s) + "' is undefined" + what);
  }

  bool contains(const Value& container, const Value& item, int line) {
    switch (container.t) {
      case Value::T::Str:
        if (item.t != Value::T::Str) fail(line, "'in <string>' requires string as left operand");
        return container.s.find(item.s) != std::string::npos;
      case Value::T::List:
        for (auto& x : *container.list)
          if (equal(x, item)) return true;
        return false;
      case Value::T::Dict:
      case Value::T::Ns:
        if (item.t == Value::T::List && !item.tuple) fail(line, "unhashable type: 'list'");
        if (item.t == Value::T::Dict) fail(line, "unhashable type: 'dict'");
        return item.t == Value::T::Str && container.find(item.s) != nullptr;
      case Value::T::Undefined: return false;
      default: fail(line, std::string("argument of type '") + type_name(container) + "' is not iterable");
    }
  }

  bool compare(const std::string& op, const Value& l, const Value& r, int line) {
    if (op == "==") return equal(l, r);
    if (op == "!=") return !equal(l, r);
    if (op == "in") return contains(r, l, line);
    if (op == "notin") return !contains(r, l, line);
    int c;
    if (l.is_num() && r.is_num()) {
      double a = l.as_double(), b = r.as_double();
      if (l.t != Value::T::Float && r.t != Value::T::Float) {
        int64_t x = l.as_int(), y = r.as_int();
        c = x < y ? -1 : x > y ? 1 : 0;
      } else {
        c = a < b ? -1 : a > b ? 1 : 0;
      }
    } else if (l.t == Value::T::Str && r.t == Value::T::Str) {
      c = l.s.compare(r.s);  // UTF-8 byte order == code point order
    } else {
      fail(line, "'" + op + "' not supported between instances of '" + type_name(l) + "' and '" + type_name(r) + "'");
    }
    if (op == "<") return c < 0;
    if (op == ">") return c > 0;
    if (op == "<=") return c <= 0;
    return c >= 0;
  }

  Value binary(const std::string& op, const Value& l, const Value& r, int line) {
    if (l.is_undef()) undefined_error(l, line, " (used with '" + op + "')");
    if (r.is_undef()) undefined_error(r, line, " (used with '" + op + "')");
    auto type_err = [&]() -> Value {
      fail(line, "unsupported operand type(s) for " + op + ": '" + type_name(l) + "' and '" + type_name(r) + "'");
    };
    if (op == "+") {
      if (l.t == Value::T::Str && r.t == Value::T::Str) return Value::str(l.s + r.s);
      if (l.t == Value::T::List && r.t == Value::T::List) {
        List x = *l.list;
        x.insert(x.end(), r.list->begin(), r.list->end());
        return Value::make_list(std::move(x));
      }
    }
    if (op == "*") {
      const Value* s = l.t == Value::T::Str || l.t == Value::T::List ? &l : r.t == Value::T::Str || r.t == Value::T::List ? &r : nullptr;
      const Value* n = s == &l ? &r : &l;
      if (s && (n->t == Value::T::Int || n->t == Value::T::Bool)) {
        int64_t times = std::max<int64_t>(0, n->as_int());
        if (s->t == Value::T::Str) {
          std::string x;
          for (int64_t k = 0; k < times; ++k) x += s->s;
          return Value::str(x);
        }
        List x;
        for (int64_t k = 0; k < times; ++k) x.insert(x.end(), s->list->begin(), s->list->end());
        return Value::make_list(std::move(x));
      }
    }
    if (!l.is_num() || !r.is_num()) return type_err();
    bool fl = l.t == Value::T::Float || r.t == Value::T::Float;
    double a = l.as_double(), b = r.as_double();
    int64_t x = l.as_int(), y = r.as_int();
    if (op == "+") return fl ? Value::real(a + b) : Value::integer(x + y);
    if (op == "-") return fl ? Value::real(a - b) : Value::integer(x - y);
    if (op == "*") return fl ? Value::real(a * b) : Value::integer(x * y);
    if (op == "/") {
      if (b == 0) fail(line, "division by zero");
      return Value::real(a / b);
    }
    if (op == "//" || op == "%") {
      if (b == 0) fail(line, "integer division or modulo by zero");
      if (fl) {  // CPython float_divmod
        double mod = std::fmod(a, b), div = (a - mod) / b, fdiv;
        if (mod != 0) {
          if ((b < 0) != (mod < 0)) {
            mod += b;
            div -= 1.0;
          }
        } else {
          mod = std::copysign(0.0, b);
        }
        if (div != 0) {
          fdiv = std::floor(div);
          if (div - fdiv > 0.5) fdiv += 1.0;
        } else {
          fdiv = std::copysign(0.0, a / b);
        }
        return op == "//" ? Value::real(fdiv) : Value::real(mod);
      }
      int64_t q = x / y;
      if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
      return op == "//" ? Value::integer(q) : Value::integer(x - q * y);
    }
    if (op == "**") {
      if (!fl && y >= 0) {
        int64_t res = 1;
        for (int64_t k = 0; k < y; ++k) res *= x;
        return Value::integer(res);
      }
      return Value::real(std::pow(a, b));
    }
    return type_err();
  }

  static int64_t norm_index(int64_t idx, int64_t n) { return idx < 0 ? idx + n : idx; }

  Value get_item(const Value& obj, const Value& key, int line) {
    switch (obj.t) {
      case Value::T::Undefined: undefined_error(obj, line, " (subscripted)");
      case Value::T::List:
        if (key.t == Value::T::Int || key.t == Value::T::Bool) {
          int64_t n = static_cast<int64_t>(obj.list->size());
          int64_t k = norm_index(key.as_int(), n);
          if (k >= 0 && k < n) return (*obj.list)[k];
        }
        return Value::undefined("list item");
      case Value::T::Str:
        if (key.t == Value::T::Int || key.t == Value::T::Bool) {
          auto cps = decode_utf8(obj.s);
          int64_t n = static_cast<int64_t>(cps.size());
          int64_t k = norm_index(key.as_int(), n);
          if (k >= 0 && k < n) return Value::str(encode_utf8(cps, k, k + 1));
          return Value::undefined("string index");
        }
        if (key.t == Value::T::Str) return get_attr(obj, key.s, line);
        return Value::undefined("string item");
      case Value::T::Dict:
      case Value::T::Ns:
        if (key.t == Value::T::Str) {
          if (const Value* v = obj.find(key.s)) return *v;
          if (obj.t == Value::T::Dict) return dict_method(obj, key.s, line);
          return Value::undefined(key.s);
        }
        return Value::undefined("dict item");
      default: return Value::undefined("item");
    }
  }

  Value get_attr(const Value& obj, const std::string& name, int line) {
    switch (obj.t) {
      case Value::T::Undefined: undefined_error(obj, line, " (has no attribute '" + name + "')");
      case Value::T::Dict: {
        Value m = dict_method(obj, name, line);
        if (!m.is_undef()) return m;
        if (const Value* v = obj.find(name)) return *v;
        return Value::undefined(name);
      }
      case Value::T::Ns: {
        if (const Value* v = obj.find(name)) return *v;
        return Value::undefined(name);
      }
      case Value::T::Str: return str_method(obj, name, line);
      default: return Value::undefined(name);
    }
  }

  Value dict_method(const Value& obj, const std::string& name, int /*line*/) {
    auto d = obj.dict;
    if (name == "items")
      return Value::func("items", [d](Call&) {
        List l;
        for (auto& kv : *d) l.push_back(Value::make_list({Value::str(kv.first), kv.second}));
        return Value::make_list(std::move(l));
      });
    if (name == "keys")
      return Value::func("keys", [d](Call&) {
        List l;
        for (auto& kv : *d) l.push_back(Value::str(kv.first));
        return Value::make_list(std::move(l));
      });
    if (name == "values")
      return Value::func("values", [d](Call&) {
        List l;
        for (auto& kv : *d) l.push_back(kv.second);
        return Value::make_list(std::move(l));
      });
    if (name == "get")
      return Value::func("get", [d, this](Call& c) {
        if (c.args.empty() || c.args[0].t != Value::T::Str) fail(c.line, "dict.get needs a string key");
        for (auto& kv : *d)
          if (kv.first == c.args[0].s) return kv.second;
        return c.args.size() > 1 ? c.args[1] : Value::none();
      });
    return Value::undefined(name);
  }

  static std::string need_str(const Renderer* r, const Call& c, size_t k, const char* fn) {
    if (k >= c.args.size() || c.args[k].t != Value::T::Str)
      r->fail(c.line, std::string(fn) + "() argument " + std::to_string(k + 1) + " must be a string");
    return c.args[k].s;
  }

  Value str_method(const Value& obj, const std::string& name, int line) {
    std::string s = obj.s;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      bool left = name != "rstrip", right = name != "lstrip";
      return Value::func(name, [s, left, right, this](Call& c) {
        if (c.args.empty() || c.args[0].t == Value::T::None) return Value::str(py_strip(s, nullptr, left, right));
        if (c.args[0].t != Value::T::Str) fail(c.line, "strip arg must be None or str");
        return Value::str(py_strip(s, &c.args[0].s, left, right));
      });
    }
    if (name == "startswith" || name == "endswith") {
      bool start = name == "startswith";
      return Value::func(name, [s, start, this](Call& c) {
        if (c.args.empty()) fail(c.line, "startswith/endswith need an argument");
        List cands = c.args[0].t == Value::T::List ? *c.args[0].list : List{c.args[0]};
        for (auto& v : cands) {
          if (v.t != Value::T::Str) fail(c.line, "startswith/endswith arguments must be strings");
          if (v.s.size() <= s.size() &&
              (start ? s.compare(0, v.s.size(), v.s) == 0 : s.compare(s.size() - v.s.size(), v.s.size(), v.s) == 0))
            return Value::boolean(true);
        }
        return Value::boolean(false);
      });
    }
    if (name == "split" || name == "rsplit") {
      bool rev = name == "rsplit";
      return Value::func(name, [s, rev, this](Call& c) {
        const Value* sep = c.arg(0, "sep");
        const Value* mx = c.arg(1, "maxsplit");
        int64_t maxsplit = mx && mx->t == Value::T::Int ? mx->i : -1;
        List out;
        if (!sep || sep->t == Value::T::None) {
          auto cps = decode_utf8(s);
          std::vector<std::pair<size_t, size_t>> words;
          if (!rev) {
            size_t k = 0;
            while (k < cps.size()) {
              while (k < cps.size() && py_isspace(cps[k])) ++k;
              if (k >= cps.size()) break;
              if (maxsplit >= 0 && static_cast<int64_t>(words.size()) == maxsplit) {
                size_t e = cps.size();
                while (e > k && py_isspace(cps[e - 1])) --e;
                words.emplace_back(k, e);
                break;
              }
              size_t b = k;
              while (k < cps.size() && !py_isspace(cps[k])) ++k;
              words.emplace_back(b, k);
            }
          } else {
            size_t k = cps.size();
            while (k > 0) {
              while (k > 0 && py_isspace(cps[k - 1])) --k;
              if (k == 0) break;
              if (maxsplit >= 0 && static_cast<int64_t>(words.size()) == maxsplit) {
                size_t b = 0;
                while (b < k && py_isspace(cps[b])) ++b;
                words.emplace_back(b, k);
                break;
              }
              size_t e = k;
              while (k > 0 && !py_isspace(cps[k - 1])) --k;
              words.emplace_back(k, e);
            }
            std::reverse(words.begin(), words.end());
          }
          for (auto& w : words) out.push_back(Value::str(encode_utf8(cps, w.first, w.second)));
          return Value::make_list(std::move(out));
        }
        if (sep->t != Value::T::Str) fail(c.line, "split separator must be a string");
        if (sep->s.empty()) fail(c.line, "empty separator");
        const std::string& p = sep->s;
        std::vector<std::string> parts;
        if (!rev) {
          size_t b = 0;
          int64_t n = 0;
          while (true) {
            size_t k = (maxsplit >= 0 && n >= maxsplit) ? std::string::npos : s.find(p, b);
            if (k == std::string::npos) {
              parts.push_back(s.substr(b));
              break;
            }
            parts.push_back(s.substr(b, k - b));
            b = k + p.size();
            ++n;
          }
        } else {
          size_t e = s.size();
          int64_t n = 0;
          while (true) {
            size_t k = (maxsplit >= 0 && n >= maxsplit) || e < p.size() ? std::string::npos : s.rfind(p, e - p.size());
            if (k == std::string::npos) {
              parts.push_back(s.substr(0, e));
              break;
            }
            parts.push_back(s.substr(k + p.size(), e - k - p.size()));
            e = k;
            ++n;
          }
          std::reverse(parts.begin(), parts.end());
        }
        for (auto& x : parts) out.push_back(Value::str(x));
        return Value::make_list(std::move(out));
      });
    }
    if (name == "upper" || name == "lower") {
      bool up = name == "upper";
      return Value::func(name, [s, up](Call&) { return Value::str(ascii_case(s, up)); });
    }
    if (name == "replace") {
      return Value::func(name, [s, this](Call& c) {
        std::string a = need_str(this, c, 0, "replace"), b = need_str(this, c, 1, "replace");
        int64_t count = c.args.size() > 2 && c.args[2].t == Value::T::Int ? c.args[2].i : -1;
        return Value::str(replace_all(s, a, b, count));
      });
    }
    if (name == "find" || name == "count") {
      bool find = name == "find";
      return Value::func(name, [s, find, this](Call& c) {
        std::string a = need_str(this, c, 0, find ? "find" : "count");
        if (find) {
          size_t k = s.find(a);
          if (k == std::string::npos) return Value::integer(-1);
          return Value::integer(static_cast<int64_t>(decode_utf8(s.substr(0, k)).size()));
        }
        if (a.empty()) return Value::integer(static_cast<int64_t>(decode_utf8(s).size()) + 1);
        int64_t n = 0;
        for (size_t k = s.find(a); k != std::string::npos; k = s.find(a, k + a.size())) ++n;
        return Value::integer(n);
      });
    }
    (void)line;
    return Value::undefined(name);
  }

  // Python str.upper()/lower() for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic (the
  // rest of Unicode is left unchanged: a documented approximation).
  static char32_t case_cp(char32_t c, bool up) {
    if (c < 0x80) return up ? (c >= 'a' && c <= 'z' ? c - 32 : c) : (c >= 'A' && c <= 'Z' ? c + 32 : c);
    if (up) {
      if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 0x20;
      if (c == 0xFF) return 0x178;
      if (c == 0xB5) return 0x39C;
      if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17F) {
        bool odd_lower = (c < 0x138) || (c > 0x178);
        if (c >= 0x139 && c <= 0x148) return (c % 2 == 0) ? c - 1 : c;
        if (c >= 0x179 && c <= 0x17E) return (c % 2 == 0) ? c - 1 : c;
        if (odd_lower && c < 0x138) return (c % 2 == 1) ? c - 1 : c;
        if (c >= 0x14A && c <= 0x177) return (c % 2 == 1) ? c - 1 : c;
        return c;
      }
      if (c == 0x131) return 'I';
      if (c == 0x17F) return 'S';
      if (c >= 0x3B1 && c <= 0x3CB && c != 0x3C2) return c - 0x20;
      if (c == 0x3C2) return 0x3A3;
      if (c >= 0x3AD && c <= 0x3AF) return c - 0x25;
      if (c == 0x3AC) return 0x386;
      if (c == 0x3CC) return 0x38C;
      if (c == 0x3CD || c == 0x3CE) return c - 0x3F;
      if (c >= 0x430 && c <= 0x44F) return c - 0x20;
      if (c >= 0x450 && c <= 0x45F) return c - 0x50;
      return c;
    }
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 0x20;
    if (c == 0x178) return 0xFF;
    if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17F) {
      if (c >= 0x139 && c <= 0x148) return (c % 2 == 1) ? c + 1 : c;
      if (c >= 0x179 && c <= 0x17E) return (c % 2 == 1) ? c + 1 : c;
      if (c < 0x138) return (c % 2 == 0) ? c + 1 : c;
      if (c >= 0x14A && c <= 0x177) return (c % 2 == 0) ? c + 1 : c;
      return c;
    }
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 0x20;
    if (c >= 0x388 && c <= 0x38A) return c + 0x25;
    if (c == 0x386) return 0x3AC;
    if (c == 0x38C) return 0x3CC;
    if (c == 0x38E || c == 0x38F) return c + 0x3F;
    if (c >= 0x410 && c <= 0x42F) return c + 0x20;
    if (c >= 0x400 && c <= 0x40F) return c + 0x50;
    return c;
  }
  static std::string ascii_case(const std::string& s, bool up) {
    std::string out;
    auto cps = decode_utf8(s);
    auto cased = [](char32_t x) { return case_cp(x, true) != x || case_cp(x, false) != x; };
    for (size_t k = 0; k < cps.size(); ++k) {
      char32_t c = cps[k];
      if (!up && c == 0x3A3) {  // final sigma: after a cased letter and not before one
        bool after = k > 0 && cased(cps[k - 1]);
        bool before = k + 1 < cps.size() && cased(cps[k + 1]);
        append_utf8(out, after && !before ? 0x3C2 : 0x3C3);
        continue;
      }
      if (up && c == 0xDF) {
        out += "SS";
        continue;
      }
      if (!up && c == 0x130) {
        out += "i\xCC\x87";
        continue;
      }
      append_utf8(out, case_cp(c, up));
    }
    return out;
  }

  static std::string replace_all(const std::string& s, const std::string& a, const std::string& b, int64_t count) {
    if (a.empty()) {
      // Python: insert b between every code point (and at both ends).
      auto cps = decode_utf8(s);
      std::string out;
      int64_t n = 0;
      for (size_t k = 0; k <= cps.size(); ++k) {
        if (count < 0 || n < count) {
          out += b;
          ++n;
        }
        if (k < cps.size()) append_utf8(out, cps[k]);
      }
      return out;
    }
    std::string out;
    size_t pos = 0;
    int64_t n = 0;
    while (count < 0 || n < count) {
      size_t k = s.find(a, pos);
      if (k == std::string::npos) break;
      out += s.substr(pos, k - pos) + b;
      pos = k + a.size();
      ++n;
    }
    return out + s.substr(pos);
  }

  Value slice(const Value& obj, std::optional<int64_t> start, std::optional<int64_t> stop,
              std::optional<int64_t> step_, int line) {
    int64_t step = step_.value_or(1);
    if (step == 0) fail(line, "slice step cannot be zero");
    std::vector<char32_t> cps;
    int64_t n;
    if (obj.t == Value::T::List) {
      n = static_cast<int64_t>(obj.list->size());
    } else if (obj.t == Value::T::Str) {
      cps = decode_utf8(obj.s);
      n = static_cast<int64_t>(cps.size());
    } else if (obj.is_undef()) {
      undefined_error(obj, line, " (sliced)");
    } else {
      fail(line, std::string("'") + type_name(obj) + "' object is not subscriptable");
    }
    auto adj = [&](std::optional<int64_t> v, int64_t def) {
      if (!v) return def;
      int64_t x = *v;
      if (x < 0) {
        x += n;
        if (x < 0) x = step < 0 ? -1 : 0;
      } else if (x >= n) {
        x = step < 0 ? n - 1 : n;
      }
      return x;
    };
    int64_t b = adj(start, step < 0 ? n - 1 : 0);
    int64_t e = adj(stop, step < 0 ? -1 : n);
    std::vector<int64_t> idx;
    if (step > 0)
      for (int64_t k = b; k < e; k += step) idx.push_back(k);
    else
      for (int64_t k = b; k > e; k += step) idx.push_back(k);
    if (obj.t == Value::T::List) {
      List l;
      for (int64_t k : idx) l.push_back((*obj.list)[k]);
      return Value::make_list(std::move(l));
    }
    std::string out;
    for (int64_t k : idx) append_utf8(out, cps[k]);
    return Value::str(out);
  }

  int64_t length_of(const Value& v, int line) {
    switch (v.t) {
      case Value::T::Undefined: return 0;
      case Value::T::Str: return static_cast<int64_t>(decode_utf8(v.s).size());
      case Value::T::List: return static_cast<int64_t>(v.list->size());
      case Value::T::Dict:
      case Value::T::Ns: return static_cast<int64_t>(v.dict->size());
      default: fail(line, std::string("object of type '") + type_name(v) + "' has no len()");
    }
  }

  Value apply_filter(const std::string& f, const Value& v, Call& c) {
    const int line = c.line;
    if (f == "length" || f == "count") return Value::integer(length_of(v, line));
    if (f == "safe") return v;
    if (f == "string") return Value::str(to_str(v));
    if (f == "tojson") {
      const Value* ind = c.arg(0, "indent");
      int indent = ind && ind->t == Value::T::Int ? static_cast<int>(ind->i) : -1;
      const Value* sk = c.kw("sort_keys");
      std::string item_sep = indent >= 0 ? "," : ", ", key_sep = ": ";
      if (const Value* seps = c.kw("separators"); seps && seps->t == Value::T::List && seps->list->size() == 2) {
        item_sep = (*seps->list)[0].s;
        key_sep = (*seps->list)[1].s;
      }
      std::string out;
      try {
        json_dump(v, out, indent, 0, item_sep, key_sep, sk && truthy(*sk));
      } catch (const Error& err) {
        fail(line, err.what());
      }
      return Value::str(out);
    }
    if (f == "trim") {
      if (v.is_undef()) return Value::str("");
      std::string s = to_str(v);
      const Value* chars = c.arg(0, "chars");
      if (chars && chars->t == Value::T::Str) return Value::str(py_strip(s, &chars->s, true, true));
      return Value::str(py_strip(s, nullptr, true, true));
    }
    if (f == "lower" || f == "upper") return Value::str(ascii_case(to_str(v), f == "upper"));
    if (f == "capitalize") {
      auto cps = decode_utf8(to_str(v));
      std::string out;
      for (size_t k = 0; k < cps.size(); ++k) append_utf8(out, case_cp(cps[k], k == 0));
      return Value::str(out);
    }
    if (f == "title") {  // Jinja: words split at whitespace, ( [ { < - ; word[0].upper() + rest.lower()
      auto cps = decode_utf8(to_str(v));
      std::string out;
      bool start = true;
      for (char32_t c : cps) {
        append_utf8(out, case_cp(c, start));
        start = py_isspace(c) || c == '(' || c == '[' || c == '{' || c == '<' || c == '-';
      }
      return Value::str(out);
    }
    if (f == "default" || f == "d") {
      const Value* def = c.arg(0, "default_value");
      const Value* boolean = c.arg(1, "boolean");
      bool use = v.is_undef() || (boolean && truthy(*boolean) && !truthy(v));
      return use ? (def ? *def : Value::str("")) : v;
    }
    if (f == "first" || f == "last") {
      List l = iterate(v, line);
      if (l.empty()) return Value::undefined(f);
      return f == "first" ? l.front() : l.back();
    }
    if (f == "join") {
      const Value* sep = c.arg(0, "d");
      const Value* attr = c.arg(1, "attribute");
      std::string out;
      bool first = true;
      for (auto& x : iterate(v, line)) {
        if (!first) out += sep ? to_str(*sep) : "";
        out += to_str(attr ? get_attr(x, to_str(*attr), line) : x);
        first = false;
      }
      return Value::str(out);
    }
    if (f == "items") {
      if (v.is_undef()) return Value::make_list({});
      if (v.t != Value::T::Dict) fail(line, "items filter: can only get item pairs from a mapping");
      return (*dict_method(v, "items", line).fn)(c);
    }
    if (f == "list") return Value::make_list(iterate(v, line));
    if (f == "reverse") {
      if (v.t == Value::T::Str) {
        auto cps = decode_utf8(v.s);
        std::reverse(cps.begin(), cps.end());
        return Value::str(encode_utf8(cps, 0, cps.size()));
      }
      List l = iterate(v, line);
      std::reverse(l.begin(), l.end());
      return Value::make_list(std::move(l));
    }
    if (f == "replace") {
      std::string a = need_str(this, c, 0, "replace"), b = need_str(this, c, 1, "replace");
      int64_t count = c.args.size() > 2 && c.args[2].t == Value::T::Int ? c.args[2].i : -1;
      return Value::str(replace_all(to_str(v), a, b, count));
    }
    if ((f == "int" || f == "float" || f == "abs") && v.is_undef()) undefined_error(v, line, " (filter '" + f + "')");
    if (f == "int") {
      if (v.t == Value::T::Float) return Value::integer(static_cast<int64_t>(v.f));
      if (v.is_num()) return Value::integer(v.as_int());
      if (v.t == Value::T::Str) {
        try {
          size_t k = 0;
          std::string s = py_strip(v.s, nullptr, true, true);
          int64_t x = std::stoll(s, &k);
          if (k == s.size()) return Value::integer(x);
        } catch (...) {
        }
      }
      const Value* def = c.arg(0, "default");
      return def ? *def : Value::integer(0);
    }
    if (f == "float") {
      if (v.is_num()) return Value::real(v.as_double());
      if (v.t == Value::T::Str) {
        try {
          return Value::real(std::stod(v.s));
        } catch (...) {
        }
      }
      return Value::real(0);
    }
    if (f == "abs") {
      if (!v.is_num()) fail(line, "abs: not a number");
      return v.t == Value::T::Float ? Value::real(std::fabs(v.f)) : Value::integer(std::llabs(v.as_int()));
    }
    if (f == "map" || f == "selectattr" || f == "rejectattr" || f == "select" || f == "reject") {
      List in = iterate(v, line), out;
      if (f == "map") {
        const Value* attr = c.kw("attribute");
        if (attr && attr->t == Value::T::Str) {
          const Value* def = c.kw("default");
          for (auto& x : in) {
            Value y = get_attr(x, attr->s, line);
            out.push_back(y.is_undef() && def ? *def : y);
          }
          return Value::make_list(std::move(out));
        }
        if (c.args.empty() || c.args[0].t != Value::T::Str) fail(line, "map: expected a filter name or attribute=");
        std::string fname = c.args[0].s;
        if (!kFilters.count(fname)) fail(line, "unsupported Jinja filter '" + fname + "'");
        Call sub;
        sub.line = line;
        sub.args.assign(c.args.begin() + 1, c.args.end());
        sub.kwargs = c.kwargs;
        for (auto& x : in) out.push_back(apply_filter(fname, x, sub));
        return Value::make_list(std::move(out));
      }
      bool attr_mode = f == "selectattr" || f == "rejectattr";
      bool keep_if = f == "select" || f == "selectattr";
      size_t k = 0;
      std::string attr;
      if (attr_mode) {
        if (c.args.empty() || c.args[0].t != Value::T::Str) fail(line, f + ": expected an attribute name");
        attr = c.args[0].s;
        k = 1;
      }
      std::string test = c.args.size() > k ? to_str(c.args[k]) : "";
      if (!test.empty() && !kTests.count(test)) fail(line, "unsupported Jinja test '" + test + "'");
      Call sub;
      sub.line = line;
      if (c.args.size() > k + 1) sub.args.assign(c.args.begin() + k + 1, c.args.end());
      for (auto& x : in) {
        Value y = attr_mode ? get_attr(x, attr, line) : x;
        bool r = test.empty() ? truthy(y) : apply_test(test, y, sub);
        if (r == keep_if) out.push_back(x);
      }
      return Value::make_list(std::move(out));
    }
    if (f == "unique") {
      List out;
      for (auto& x : iterate(v, line)) {
        bool seen = false;
        for (auto& y : out) seen = seen || equal(x, y);
        if (!seen) out.push_back(x);
      }
      return Value::make_list(std::move(out));
    }
    if (f == "indent") {
      const Value* w = c.arg(0, "width");
      const Value* first = c.arg(1, "first");
      const Value* blank = c.arg(2, "blank");
      std::string pad = w ? (w->t == Value::T::Str ? w->s : std::string(w->as_int(), ' ')) : std::string(4, ' ');
      std::string s = to_str(v), out;
      // Jinja: newline-joined lines; every line but the first is indented unless blank.
      std::vector<std::string> lines;
      size_t b = 0;
      while (true) {
        size_t k = s.find('\n', b);
        if (k == std::string::npos) {
          lines.push_back(s.substr(b));
          break;
        }
        lines.push_back(s.substr(b, k - b));
        b = k + 1;
      }
      for (size_t k = 0; k < lines.size(); ++k) {
        if (k) out += '\n';
        bool do_pad = k == 0 ? (first && truthy(*first)) : (!lines[k].empty() || (blank && truthy(*blank)));
        if (do_pad) out += pad;
        out += lines[k];
      }
      return Value::str(out);
    }
    fail(line, "unsupported Jinja filter '" + f + "'");
  }

  bool apply_test(const std::string& t, const Value& v, Call& c) {
    const int line = c.line;
    auto arg0 = [&]() -> const Value& {
      if (c.args.empty()) fail(line, "test '" + t + "' needs an argument");
      return c.args[0];
    };
    if (t == "defined") return !v.is_undef();
    if (t == "undefined") return v.is_undef();
    if (t == "none") return v.t == Value::T::None;
    if (t == "string") return v.t == Value::T::Str;
    if (t == "number") return v.is_num();
    if (t == "integer") return v.t == Value::T::Int;
    if (t == "float") return v.t == Value::T::Float;
    if (t == "boolean") return v.t == Value::T::Bool;
    if (t == "true") return v.t == Value::T::Bool && v.b;
    if (t == "false") return v.t == Value::T::Bool && !v.b;
    if (t == "mapping") return v.t == Value::T::Dict;
    if (t == "iterable")
      return v.t == Value::T::Str || v.t == Value::T::List || v.t == Value::T::Dict || v.is_undef();
    if (t == "sequence")
      return v.t == Value::T::Str || v.t == Value::T::List || v.t == Value::T::Dict || v.is_undef();
    if (t == "callable") return v.t == Value::T::Func;
    if (t == "lower") return v.t == Value::T::Str && ascii_case(v.s, false) == v.s;
    if (t == "upper") return v.t == Value::T::Str && ascii_case(v.s, true) == v.s;
    if ((t == "odd" || t == "even") && v.t == Value::T::Float) {
      double m = v.f - 2.0 * std::floor(v.f / 2.0);  // Python float % 2
      return t == "odd" ? m == 1.0 : m == 0.0;
    }
    if (t == "odd" || t == "even" || t == "divisibleby") {
      if (v.t != Value::T::Int && v.t != Value::T::Bool) fail(line, "test '" + t + "' needs a number");
      int64_t x = v.as_int();
      if (t == "odd") return ((x % 2) + 2) % 2 == 1;
      if (t == "even") return x % 2 == 0;
      const Value& d = arg0();
      if (d.as_int() == 0) fail(line, "divisibleby 0");
      return x % d.as_int() == 0;
    }
    if (t == "eq" || t == "equalto" || t == "==") return equal(v, arg0());
    if (t == "ne" || t == "!=") return !equal(v, arg0());
    if (t == "lt" || t == "<" || t == "lessthan") return compare("<", v, arg0(), line);
    if (t == "le" || t == "<=") return compare("<=", v, arg0(), line);
    if (t == "gt" || t == ">" || t == "greaterthan") return compare(">", v, arg0(), line);
    if (t == "ge" || t == ">=") return compare(">=", v, arg0(), line);
    if (t == "in") return contains(arg0(), v, line);
    if (t == "sameas") {
      const Value& o = arg0();
      if (v.t != o.t) return false;
      if (v.t == Value::T::None || v.t == Value::T::Undefined) return true;
      if (v.t == Value::T::Bool) return v.b == o.b;
      if (v.t == Value::T::List) return v.list == o.list;
      if (v.t == Value::T::Dict || v.t == Value::T::Ns) return v.dict == o.dict;
      return equal(v, o);
    }
    fail(line, "unsupported Jinja test '" + t + "'");
  }

  std::string name_;
  int depth_ = 0;
};

void install_globals(Frame& g, Renderer& r) {
  g.vars["raise_exception"] = Value::func("raise_exception", [&r](Call& c) -> Value {
    std::string msg = c.args.empty() ? std::string() : to_str(c.args[0]);
    r.fail(c.line, "template raised an error: " + msg);
  });
  g.vars["namespace"] = Value::func("namespace", [](Call& c) {
    Value ns;
    ns.t = Value::T::Ns;
    ns.dict = std::make_shared<Dict>();
    for (auto& a : c.args)
      if (a.t == Value::T::Dict)
        for (auto& kv : *a.dict) ns.dict->push_back(kv);
    for (auto& kv : c.kwargs) ns.dict->push_back(kv);
    return ns;
  });
  g.vars["range"] = Value::func("range", [&r](Call& c) {
    int64_t start = 0, stop = 0, step = 1;
    for (auto& a : c.args)
      if (a.t != Value::T::Int && a.t != Value::T::Bool) r.fail(c.line, "range() arguments must be integers");
    if (c.args.size() == 1) {
      stop = c.args[0].as_int();
    } else if (c.args.size() >= 2) {
      start = c.args[0].as_int();
      stop = c.args[1].as_int();
      if (c.args.size() > 2) step = c.args[2].as_int();
    }
    if (step == 0) r.fail(c.line, "range() step must not be zero");
    List l;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
      l.push_back(Value::integer(k));
      if (l.size() > 100000) r.fail(c.line, "range() too large");
    }
    return Value::make_list(std::move(l));
  });
  g.vars["dict"] = Value::func("dict", [](Call& c) {
    Dict d;
    for (auto& kv : c.kwargs) d.push_back(kv);
    return Value::make_dict(std::move(d));
  });
  g.vars["strftime_now"] = Value::func("strftime_now", [&r](Call& c) {
    if (c.args.empty() || c.args[0].t != Value::T::Str) r.fail(c.line, "strftime_now needs a format string");
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    size_t n = std::strftime(buf, sizeof buf, c.args[0].s.c_str(), &tm);
    return Value::str(std::string(buf, n));
  });
}

}  // namespace

struct Template::Impl {
  std::string name;
  Body body;
};

Template::Template(const std::string& source, const std::string& name) : impl_(std::make_unique<Impl>()) {
  impl_->name = name;
  Lexer lx(source, name);
  Parser ps(lx.run(), name);
  impl_->body = ps.parse_template();
}

Template::~Template() = default;

const std::string& Template::name() const { return impl_->name; }

std::string Template::render(const nlohmann::ordered_json& context) const {
  if (!context.is_object()) throw Error("chat template " + impl_->name + ": render context must be a JSON object");
  Renderer r(impl_->name);
  auto globals = std::make_shared<Frame>();
  install_globals(*globals, r);
  auto top = std::make_shared<Frame>();
  top->parent = globals;
  for (auto it = context.begin(); it != context.end(); ++it) top->vars[it.key()] = from_json(it.value());
  std::string out;
  r.exec(impl_->body, top, out);
  return out;
}

}  // namespace s0::text::jinja
