// Jinja filters, tests, the methods of str and dict values, and the global functions, with
// Python's semantics for the strings they return. See jinja_eval.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "s0/text/jinja_ast.h"
#include "s0/text/jinja_eval.h"
#include "s0/text/jinja_value.h"
#include "s0/util/error.h"

namespace s0::text::jinja::detail {
namespace {

const std::set<std::string> kFilters = {
    "length", "count", "tojson", "trim", "string", "lower", "upper", "capitalize", "title",
    "first", "last", "join", "default", "d", "items", "list", "replace", "int", "float",
    "abs", "safe", "reverse", "unique", "sort", "dictsort", "map", "selectattr", "rejectattr",
    "select", "reject", "indent", "round", "sum", "min", "max", "wordcount", "center", "e", "escape", "format"};
const std::set<std::string> kTests = {
    "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true",
    "false", "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq",
    "equalto", "==", "ne", "!=", "lt", "<", "lessthan", "le", "<=", "gt", ">", "greaterthan",
    "ge", ">=", "in", "sameas", "lower", "upper"};

// Indent widths beyond this (Python would try to allocate them) are refused.
constexpr int64_t kMaxIndent = 1 << 20;

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

std::string need_str(const Renderer* r, const Call& c, size_t k, const char* fn) {
  if (k >= c.args.size() || c.args[k].t != Value::T::Str)
    r->fail(c.line, std::string(fn) + "() argument " + std::to_string(k + 1) + " must be a string");
  return c.args[k].s;
}

// Python str.upper()/lower() for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic (the
// rest of Unicode is left unchanged: a documented approximation).
char32_t case_cp(char32_t c, bool up) {
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
std::string ascii_case(const std::string& s, bool up) {
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

std::string replace_all(const std::string& s, const std::string& a, const std::string& b, int64_t count) {
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

}  // namespace

namespace {

// Python's printf-style formatting (str % args) for the conversions templates use:
// %s %r %d %i %f %F %e %E %g %G %x %X %o %c %%, with flags (-, +, space, 0), width and
// precision; `%(name)s` takes values from a dict.
std::string py_percent_format(const Renderer* r, int line, const std::string& fmt, const Value& args) {
  std::vector<Value> pos;
  const Value* mapping = nullptr;
  if (args.t == Value::T::List && args.tuple) pos = *args.list;
  else if (args.t == Value::T::Dict) mapping = &args;
  else pos.push_back(args);
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size()) r->fail(line, "incomplete format");
    const Value* arg = nullptr;
    if (fmt[i] == '(') {
      size_t e = fmt.find(')', i);
      if (e == std::string::npos || !mapping) r->fail(line, "format requires a mapping");
      arg = mapping->find(fmt.substr(i + 1, e - i - 1));
      if (!arg) r->fail(line, "KeyError: '" + fmt.substr(i + 1, e - i - 1) + "'");
      i = e + 1;
    }
    std::string flags;
    while (i < fmt.size() && std::string("-+ 0#").find(fmt[i]) != std::string::npos) flags += fmt[i++];
    int width = 0, prec = -1;
    while (i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9') width = width * 10 + (fmt[i++] - '0');
    if (i < fmt.size() && fmt[i] == '.') {
      prec = 0;
      ++i;
      while (i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9') prec = prec * 10 + (fmt[i++] - '0');
    }
    if (i >= fmt.size()) r->fail(line, "incomplete format");
    const char conv = fmt[i];
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (!arg) {
      if (mapping) r->fail(line, "format requires a mapping");
      if (next >= pos.size()) r->fail(line, "not enough arguments for format string");
      arg = &pos[next++];
    }
    std::string body;
    const bool left = flags.find('-') != std::string::npos, zero = flags.find('0') != std::string::npos && !left;
    bool numeric = false;
    switch (conv) {
      case 's': body = to_str(*arg); break;
      case 'r': case 'a': body = repr(*arg); break;
      case 'd': case 'i': case 'u': case 'x': case 'X': case 'o': case 'c': {
        if (!arg->is_num()) r->fail(line, std::string("%") + conv + " format: a number is required, not " + type_name(*arg));
        if (conv == 'c') {
          append_utf8(body, static_cast<char32_t>(arg->as_int()));
          break;
        }
        numeric = true;
        int64_t v = arg->t == Value::T::Float ? static_cast<int64_t>(std::trunc(arg->f)) : arg->as_int();
        char buf[64];
        const char* spec = conv == 'x' ? "%llx" : conv == 'X' ? "%llX" : conv == 'o' ? "%llo" : "%llu";
        unsigned long long mag = v < 0 ? 0ULL - static_cast<unsigned long long>(v) : static_cast<unsigned long long>(v);
        std::snprintf(buf, sizeof buf, spec, mag);
        body = buf;
        if (prec > static_cast<int>(body.size())) body = std::string(prec - body.size(), '0') + body;
        if (v < 0) body = "-" + body;
        else if (flags.find('+') != std::string::npos) body = "+" + body;
        else if (flags.find(' ') != std::string::npos) body = " " + body;
        break;
      }
      case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': {
        if (!arg->is_num()) r->fail(line, std::string("%") + conv + " format: a real number is required, not " + type_name(*arg));
        numeric = true;
        std::string spec = "%";
        if (flags.find('+') != std::string::npos) spec += '+';
        else if (flags.find(' ') != std::string::npos) spec += ' ';
        if (flags.find('#') != std::string::npos) spec += '#';
        spec += "." + std::to_string(prec < 0 ? 6 : prec) + conv;
        char buf[512];
        std::snprintf(buf, sizeof buf, spec.c_str(), arg->as_double());
        body = buf;
        break;
      }
      default: r->fail(line, std::string("unsupported format character '") + conv + "'");
    }
    if (!numeric && prec >= 0) {
      auto cps = decode_utf8(body);
      if (static_cast<size_t>(prec) < cps.size()) body = encode_utf8(cps, 0, prec);
    }
    const int len = static_cast<int>(decode_utf8(body).size());
    if (len < width) {
      const size_t pad = width - len;
      if (left) body += std::string(pad, ' ');
      else if (zero && numeric) {
        size_t sign = !body.empty() && (body[0] == '-' || body[0] == '+' || body[0] == ' ') ? 1 : 0;
        body.insert(sign, std::string(pad, '0'));
      } else body = std::string(pad, ' ') + body;
    }
    out += body;
  }
  if (!mapping && next < pos.size() && !(args.t == Value::T::List && !args.tuple && pos.size() == 1))
    r->fail(line, "not all arguments converted during string formatting");
  return out;
}

}  // namespace

std::string Renderer::percent_format(const std::string& fmt, const Value& args, int line) const {
  return py_percent_format(this, line, fmt, args);
}

bool is_filter(const std::string& name) { return kFilters.count(name) > 0; }
bool is_test(const std::string& name) { return kTests.count(name) > 0; }

Value Renderer::dict_method(const Value& obj, const std::string& name, int /*line*/) {
  auto d = obj.dict;
  if (name == "items")
    return Value::func("items", [d](Call&) {
      List l;
      for (auto& kv : *d) {
        Value pair = Value::make_list({key_value(kv.first), kv.second});
        pair.tuple = true;  // Python's dict.items() yields (key, value) tuples
        l.push_back(std::move(pair));
      }
      return Value::make_list(std::move(l));
    });
  if (name == "keys")
    return Value::func("keys", [d](Call&) {
      List l;
      for (auto& kv : *d) l.push_back(key_value(kv.first));
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
      std::string ks;
      if (c.args.empty()) fail(c.line, "dict.get needs a key");
      if (!dict_key(c.args[0], ks)) fail(c.line, std::string("unhashable type: '") + type_name(c.args[0]) + "'");
      for (auto& kv : *d)
        if (same_key(kv.first, ks)) return kv.second;
      return c.args.size() > 1 ? c.args[1] : Value::none();
    });
  return Value::undefined(name);
}

Value Renderer::str_method(const Value& obj, const std::string& name, int line) {
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
              words.emplace_back(k, cps.size());  // the rest, trailing whitespace included
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
              words.emplace_back(0, k);  // the rest, leading whitespace included
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

Value Renderer::apply_filter(const std::string& f, const Value& v, Call& c) {
  const int line = c.line;
  if (f == "length" || f == "count") return Value::integer(length_of(v, line));
  if (f == "safe") return v;
  if (f == "string") return Value::str(to_str(v));
  if (f == "tojson") {
    const Value* ind = c.arg(0, "indent");
    if (ind && ind->t == Value::T::Int && ind->i > kMaxIndent)
      fail(line, "tojson: indent " + std::to_string(ind->i) + " is too large");
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
    if (v.t == Value::T::Float && !std::isnan(v.f)) {  // NaN: Python's ValueError -> the default
      // Python's int() is unbounded; ours is 64-bit (an out-of-range cast would be undefined).
      if (!(std::fabs(v.f) < 9.2e18)) fail(line, "int: " + to_str(v) + " does not fit in a 64-bit integer");
      return Value::integer(static_cast<int64_t>(v.f));
    }
    if (v.is_num()) return Value::integer(v.as_int());
    if (v.t == Value::T::Str) {
      // Jinja2: int(s), else int(float(s)) ('1.5' -> 1).
      std::string s = py_strip(v.s, nullptr, true, true);
      try {
        size_t k = 0;
        int64_t x = std::stoll(s, &k);
        if (k == s.size()) return Value::integer(x);
      } catch (...) {
      }
      try {
        size_t k = 0;
        double x = std::stod(s, &k);
        // (Not hex floats, nan or inf, which std::stod reads and Python's int(float()) refuses.)
        if (k == s.size() && s.find_first_of("xXnN") == std::string::npos && std::fabs(x) < 9.2e18)
          return Value::integer(static_cast<int64_t>(x));
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
    if (v.t == Value::T::Float) return Value::real(std::fabs(v.f));
    if (v.as_int() == INT64_MIN) fail(line, "integer overflow (abs)");
    return Value::integer(std::llabs(v.as_int()));
  }
  if (f == "map" || f == "selectattr" || f == "rejectattr" || f == "select" || f == "reject") {
    // Jinja2 returns a generator, and yields nothing for a false value (None, "", []).
    auto generator = [](List l) {
      Value g = Value::make_list(std::move(l));
      g.generator = true;
      return g;
    };
    List in = truthy(v) ? iterate(v, line) : List{}, out;
    if (f == "map") {
      const Value* attr = c.kw("attribute");
      if (attr && attr->t == Value::T::Str) {
        const Value* def = c.kw("default");
        for (auto& x : in) {
          Value y = get_attr(x, attr->s, line);
          out.push_back(y.is_undef() && def ? *def : y);
        }
        return generator(std::move(out));
      }
      if (c.args.empty() || c.args[0].t != Value::T::Str) fail(line, "map: expected a filter name or attribute=");
      std::string fname = c.args[0].s;
      if (!kFilters.count(fname)) fail(line, "unsupported Jinja filter '" + fname + "'");
      Call sub;
      sub.line = line;
      sub.args.assign(c.args.begin() + 1, c.args.end());
      sub.kwargs = c.kwargs;
      for (auto& x : in) out.push_back(apply_filter(fname, x, sub));
      return generator(std::move(out));
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
    return generator(std::move(out));
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
    const int64_t width = w && w->t != Value::T::Str ? w->as_int() : 4;
    if (width > kMaxIndent) fail(line, "indent: width " + std::to_string(width) + " is too large");
    std::string pad =
        w && w->t == Value::T::Str ? w->s : std::string(std::max<int64_t>(width, 0), ' ');
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
  // Sorting and reductions, with Jinja's defaults: strings compare case-insensitively unless
  // case_sensitive=true; `attribute` (dotted, or an index) picks what is compared.
  auto by_attribute = [&](const Value& x, const Value* attr) -> Value {
    if (!attr || attr->is_undef() || attr->t == Value::T::None) return x;
    if (attr->t == Value::T::Int) return get_item(x, *attr, line);
    Value cur = x;
    std::string path = to_str(*attr);
    size_t b = 0;
    while (b <= path.size()) {
      size_t e = path.find('.', b);
      if (e == std::string::npos) e = path.size();
      std::string part = path.substr(b, e - b);
      bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
      cur = digits ? get_item(cur, Value::integer(std::stoll(part)), line) : get_item(cur, Value::str(part), line);
      b = e + 1;
    }
    return cur;
  };
  auto sort_key = [&](const Value& x, bool case_sensitive) {
    return !case_sensitive && x.t == Value::T::Str ? Value::str(ascii_case(x.s, false)) : x;
  };
  auto less = [&](const Value& a, const Value& b) { return compare("<", a, b, line); };
  if (f == "sort" || f == "dictsort") {
    const bool dict = f == "dictsort";
    const Value* rev = c.kw("reverse");
    const Value* cs = c.kw("case_sensitive");
    const Value* attr = dict ? nullptr : c.kw("attribute");
    const Value* by = dict ? c.kw("by") : nullptr;
    if (!dict) {
      if (!rev && c.args.size() > 0) rev = &c.args[0];
      if (!cs && c.args.size() > 1) cs = &c.args[1];
      if (!attr && c.args.size() > 2) attr = &c.args[2];
    } else {
      if (!cs && c.args.size() > 0) cs = &c.args[0];
      if (!by && c.args.size() > 1) by = &c.args[1];
      if (!rev && c.args.size() > 2) rev = &c.args[2];
    }
    const bool case_sensitive = cs && truthy(*cs), reverse = rev && truthy(*rev);
    List items;
    size_t pick = 0;
    if (dict) {
      if (v.t != Value::T::Dict) fail(line, "dictsort: expected a dict, got " + std::string(type_name(v)));
      for (auto& kv : *v.dict) {
        Value pair = Value::make_list({key_value(kv.first), kv.second});
        pair.tuple = true;
        items.push_back(std::move(pair));
      }
      std::string b = by ? to_str(*by) : "key";
      if (b != "key" && b != "value") fail(line, "dictsort: 'by' must be 'key' or 'value'");
      pick = b == "key" ? 0 : 1;
    } else {
      items = iterate(v, line);
    }
    std::vector<std::pair<Value, Value>> keyed;
    for (auto& x : items)
      keyed.emplace_back(sort_key(dict ? (*x.list)[pick] : by_attribute(x, attr), case_sensitive), x);
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
      return reverse ? less(b.first, a.first) : less(a.first, b.first);
    });
    List out;
    for (auto& kx : keyed) out.push_back(kx.second);
    return Value::make_list(std::move(out));
  }
  if (f == "min" || f == "max") {
    const Value* cs = c.arg(0, "case_sensitive");
    const Value* attr = c.arg(1, "attribute");
    const bool case_sensitive = cs && truthy(*cs);
    List items = iterate(v, line);
    if (items.empty()) return Value::undefined("No " + std::string(f == "min" ? "smallest" : "largest") + " item, sequence was empty.");
    size_t best = 0;
    for (size_t k = 1; k < items.size(); ++k) {
      Value a = sort_key(by_attribute(items[k], attr), case_sensitive);
      Value b = sort_key(by_attribute(items[best], attr), case_sensitive);
      if (f == "min" ? less(a, b) : less(b, a)) best = k;
    }
    return items[best];
  }
  if (f == "sum") {
    const Value* attr = c.arg(0, "attribute");
    const Value* start = c.arg(1, "start");
    Value acc = start ? *start : Value::integer(0);
    for (auto& x : iterate(v, line)) acc = binary("+", acc, by_attribute(x, attr), line);
    return acc;
  }
  if (f == "round") {
    const Value* pr = c.arg(0, "precision");
    const Value* method = c.arg(1, "method");
    const int64_t precision = pr ? pr->as_int() : 0;
    const std::string m = method ? to_str(*method) : "common";
    if (m != "common" && m != "ceil" && m != "floor") fail(line, "method must be common, ceil or floor");
    if (!v.is_num()) fail(line, std::string("type ") + type_name(v) + " doesn't define __round__ method");
    const double scale = std::pow(10.0, static_cast<double>(precision));
    if (m == "common") {
      if (v.t != Value::T::Float) return Value::integer(v.as_int());  // round(int, n) is the int
      // Python's round(): exact ties go to the even neighbour.
      double x = v.f * scale, r = std::nearbyint(x);
      return Value::real(r / scale);
    }
    double x = v.as_double() * scale;
    return Value::real((m == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
  }
  if (f == "format") {
    if (!c.kwargs.empty()) {
      Dict d;
      for (auto& kv : c.kwargs) d.emplace_back(kv.first, kv.second);
      return Value::str(py_percent_format(this, line, to_str(v), Value::make_dict(std::move(d))));
    }
    Value args = Value::make_list(c.args);
    args.tuple = true;
    return Value::str(py_percent_format(this, line, to_str(v), args));
  }
  if (f == "center") {
    const Value* w = c.arg(0, "width");
    const int64_t width = w ? w->as_int() : 80;
    if (width > kMaxIndent) fail(line, "center: width too large");
    std::string str = to_str(v);
    const int64_t len = static_cast<int64_t>(decode_utf8(str).size());
    if (width <= len) return Value::str(str);
    const int64_t total = width - len;
    // CPython: left = total / 2 + (total & width & 1)
    const int64_t left_pad = total / 2 + (total & width & 1);
    return Value::str(std::string(left_pad, ' ') + str + std::string(total - left_pad, ' '));
  }
  if (f == "wordcount") {
    // len(re.findall(r"\w+", s)): runs of letters, digits and underscores (ASCII and any
    // non-ASCII code point counted as a word character).
    int64_t n = 0;
    bool in = false;
    for (char32_t ch : decode_utf8(to_str(v))) {
      bool w = ch == '_' || (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
               (ch >= 0x80 && !py_isspace(ch));
      if (w && !in) ++n;
      in = w;
    }
    return Value::integer(n);
  }
  if (f == "e" || f == "escape") {
    std::string out;
    for (char ch : to_str(v)) {
      switch (ch) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += ch;
      }
    }
    return Value::str(out);
  }
  fail(line, "unsupported Jinja filter '" + f + "'");
}

bool Renderer::apply_test(const std::string& t, const Value& v, Call& c) {
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
    return v.t == Value::T::Str || (v.t == Value::T::List && !v.generator) || v.t == Value::T::Dict || v.is_undef();
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
    if (d.as_int() == -1) return true;  // INT64_MIN % -1 would trap
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
    for (int64_t k = start; step > 0 ? k < stop : k > stop;) {
      l.push_back(Value::integer(k));
      if (l.size() > 100000) r.fail(c.line, "range() too large");
      if (__builtin_add_overflow(k, step, &k)) break;  // beyond the int64 range is beyond stop
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

}  // namespace s0::text::jinja::detail
