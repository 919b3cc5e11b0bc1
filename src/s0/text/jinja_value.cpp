// Jinja runtime values: UTF-8 helpers and the Python conversions of values (str(), repr(),
// json.dumps, truthiness, ==). See jinja_value.h.
#include "s0/text/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "s0/util/error.h"

namespace s0::text::jinja::detail {

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

const char* type_name(const Value& v) {
  switch (v.t) {
    case Value::T::Undefined: return "undefined";
    case Value::T::None: return "NoneType";
    case Value::T::Bool: return "bool";
    case Value::T::Int: return "int";
    case Value::T::Float: return "float";
    case Value::T::Str: return "str";
    case Value::T::List: return v.generator ? "generator" : v.tuple ? "tuple" : "list";
    case Value::T::Dict: return "dict";
    case Value::T::Ns: return "Namespace";
    case Value::T::Func: return "function";
  }
  return "?";
}

namespace {

// Deeper render contexts are refused: the conversions below recurse. (Python's json module
// cannot even read JSON nested 1,000 deep.)
constexpr int kMaxJsonDepth = 1000;

Value from_json(const nlohmann::ordered_json& j, int depth) {
  if (depth > kMaxJsonDepth)
    throw Error("render context nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
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
      for (auto& e : j) l.push_back(from_json(e, depth + 1));
      return Value::make_list(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it)
        d.emplace_back(it.key(), from_json(it.value(), depth + 1));
      return Value::make_dict(std::move(d));
    }
    default: throw Error("unsupported JSON value in the render context");
  }
}

}  // namespace

Value from_json(const nlohmann::ordered_json& j) { return from_json(j, 0); }

namespace {

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

}  // namespace

// Python str(): what {{ x }} prints.
bool dict_key(const Value& k, std::string& out) {
  switch (k.t) {
    case Value::T::Str: out = k.s; return true;
    case Value::T::None: out = "\x01none"; return true;
    case Value::T::Bool: out = std::string("\x01i:") + (k.b ? "1" : "0") + "|b"; return true;
    case Value::T::Int: out = "\x01i:" + std::to_string(k.i); return true;
    case Value::T::Float:
      if (std::isfinite(k.f) && k.f == std::floor(k.f) && std::fabs(k.f) < 9.2e18) {
        out = "\x01i:" + std::to_string(static_cast<int64_t>(k.f)) + "|f";
      } else {
        out = "\x01" "f:" + py_float_repr(k.f, false);
      }
      return true;
    case Value::T::List:
      if (!k.tuple) return false;
      out = "\x01t:" + repr(k);
      return true;
    default: return false;
  }
}

bool same_key(const std::string& a, const std::string& b) {
  auto canon = [](const std::string& s) -> std::string {
    if (s.size() > 2 && s[0] == '\x01' && s[s.size() - 2] == '|') return s.substr(0, s.size() - 2);
    return s;
  };
  if (a == b) return true;
  if (a.empty() || b.empty() || a[0] != '\x01' || b[0] != '\x01') return false;
  return canon(a) == canon(b);
}

const Value* dict_find(const Value& d, const std::string& key) {
  if (!d.dict) return nullptr;
  for (auto& kv : *d.dict)
    if (same_key(kv.first, key)) return &kv.second;
  return nullptr;
}

Value key_value(const std::string& s) {
  if (s.empty() || s[0] != '\x01') return Value::str(s);
  if (s == "\x01none") return Value::none();
  if (s.compare(0, 3, "\x01i:") == 0) {
    const bool tagged = s.size() > 2 && s[s.size() - 2] == '|';
    const int64_t n = std::stoll(s.substr(3, tagged ? s.size() - 5 : std::string::npos));
    if (tagged && s.back() == 'b') return Value::boolean(n != 0);
    if (tagged && s.back() == 'f') return Value::real(static_cast<double>(n));
    return Value::integer(n);
  }
  if (s.compare(0, 3, "\x01" "f:") == 0) {
    const std::string x = s.substr(3);
    if (x == "inf") return Value::real(INFINITY);
    if (x == "-inf") return Value::real(-INFINITY);
    if (x == "nan") return Value::real(NAN);
    return Value::real(std::strtod(x.c_str(), nullptr));
  }
  return Value::str(s.substr(3));  // a tuple key: its repr (tuples as keys are rare)
}

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
        out += (first ? "" : ", ") + repr(key_value(kv.first)) + ": " + repr(kv.second);
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
      if (v.generator) throw Error("tojson: Object of type generator is not JSON serializable");
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
        // json.dumps turns int/float/bool/None keys into their JSON spelling.
        const Value key = key_value(items[k]->first);
        std::string ks;
        if (key.t == Value::T::Str) ks = key.s;
        else if (key.t == Value::T::None) ks = "null";
        else if (key.t == Value::T::Bool) ks = key.b ? "true" : "false";
        else if (key.t == Value::T::Float) {
          std::string t;
          json_dump(key, t, -1, 0, ", ", ": ", false);
          ks = t;
        } else ks = std::to_string(key.i);
        json_dump(Value::str(ks), out, indent, depth + 1, item_sep, key_sep, sort_keys);
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
    case Value::T::List: return v.generator || !v.list->empty();
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

}  // namespace s0::text::jinja::detail
