#pragma once
// Private to the Jinja interpreter (jinja_*.cpp): the runtime values (Python's None, bool,
// int, float, str, list/tuple, dict, namespace(), callables), their Python conversions
// (str(), repr(), truthiness, ==, json.dumps) and the UTF-8 helpers that make strings behave
// as sequences of code points. Not part of s0's API: callers use jinja.h.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace s0::text::jinja::detail {

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers (Python strings are sequences of code points)

// Invalid or truncated sequences decode to U+FFFD, one per byte.
std::vector<char32_t> decode_utf8(const std::string& s);
void append_utf8(std::string& out, char32_t cp);
// Code points [b, e) of `cps`, encoded.
std::string encode_utf8(const std::vector<char32_t>& cps, size_t b, size_t e);

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
  // A List standing for a Python generator (what map/select/reject/selectattr/rejectattr
  // return): always true, no len(), not subscriptable, not JSON serializable; |list makes a
  // list of it.
  bool generator = false;

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

// The arguments of a call to a function, macro, filter or test (the filtered/tested value
// itself is not among them).
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

// Dict keys. Keys are stored as strings: a str key as itself, any other hashable key (int,
// float, bool, None) as a tagged spelling that starts with \x01 and keeps the key's type;
// same_key() equates the keys Python equates (1 == 1.0 == True). dict_key() returns false for
// unhashable keys (list, dict).
bool dict_key(const Value& k, std::string& out);
// The key as the template sees it (the int 512 for a dict literal's {512: ...}).
Value key_value(const std::string& stored);
// Whether two stored keys are the same Python key (1, 1.0 and True are).
bool same_key(const std::string& a, const std::string& b);
// The value stored under `key` (a dict_key() spelling), or nullptr.
const Value* dict_find(const Value& dict, const std::string& key);

// Python's type name, for error messages ("'int' object is not iterable").
const char* type_name(const Value& v);

// A render-context value: objects keep their key order. Throws s0::Error on a JSON value
// with no Python counterpart (discarded/binary) and on nesting deeper than 1,000 levels.
Value from_json(const nlohmann::ordered_json& j);

// Python str(): what {{ x }} prints (undefined prints nothing).
std::string to_str(const Value& v);
// Python repr(): list and dict elements print this way.
std::string repr(const Value& v);

// json.dumps(x, ensure_ascii=False, indent=indent, separators=(item_sep, key_sep),
// sort_keys=...); indent < 0 means none. Throws s0::Error (without a line) for undefined
// values and functions.
void json_dump(const Value& v, std::string& out, int indent, int depth, const std::string& item_sep,
               const std::string& key_sep, bool sort_keys);

// Python bool(x).
bool truthy(const Value& v);
// Python ==: numbers by value across int/float/bool, containers element-wise, namespaces and
// functions by identity.
bool equal(const Value& a, const Value& b);

}  // namespace s0::text::jinja::detail
