// Jinja evaluator: statements (output, if, for with loop.*, set, macro, break/continue),
// expressions, and Python's semantics for operators, comparisons, `in`, subscripts and slices.
// Filters, tests and methods are in jinja_filters.cpp. See jinja_eval.h.
#include "s0/text/jinja_eval.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "s0/util/error.h"

namespace s0::text::jinja::detail {
namespace {

int64_t norm_index(int64_t idx, int64_t n) { return idx < 0 ? idx + n : idx; }

}  // namespace

[[noreturn]] void Renderer::fail(int line, const std::string& msg) const {
  throw Error("chat template " + name_ + ": line " + std::to_string(line) + ": " + msg);
}

void Renderer::step(int line) {
  if (++steps_ > kMaxRenderSteps)
    fail(line, "rendering takes too long (more than " + std::to_string(kMaxRenderSteps) +
                   " steps; a loop that never ends?)");
}

void Renderer::check_size(size_t bytes, int line) const {
  if (bytes > kMaxRenderBytes)
    fail(line, "rendering produces too much text (more than " + std::to_string(kMaxRenderBytes >> 20) + " MiB)");
}

Flow Renderer::exec(const Body& body, const FrameP& fr, std::string& out) {
  for (auto& s : body) {
    Flow f = exec(*s, fr, out);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Flow Renderer::exec(const Stmt& s, const FrameP& fr, std::string& out) {
  step(s.line);
  switch (s.k) {
    case Stmt::K::Text:
      check_size(out.size() + s.text.size(), s.line);
      out += s.text;
      return Flow::Normal;
    case Stmt::K::Output: {
      const std::string v = to_str(eval(*s.expr, fr));
      check_size(out.size() + v.size(), s.line);
      out += v;
      return Flow::Normal;
    }
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
    case Stmt::K::FilterBlock: {
      std::string buf;
      Flow flow = exec(s.body, fr, buf);
      auto f = std::make_shared<Frame>();
      f->parent = fr;
      f->vars[kFilterBlockVar] = Value::str(buf);
      out += to_str(eval(*s.expr, f));
      return flow;
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

Flow Renderer::exec_for(const Stmt& s, const FrameP& fr, std::string& out) {
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
      step(s.line);
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
    step(s.line);  // an empty body still costs work
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

List Renderer::iterate(const Value& v, int line) {
  switch (v.t) {
    case Value::T::Undefined: return {};
    case Value::T::List: return *v.list;
    case Value::T::Dict: {
      List l;
      for (auto& kv : *v.dict) l.push_back(key_value(kv.first));
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

Value Renderer::eval(const Expr& e, const FrameP& fr) {
  step(e.line);
  Value v = eval_expr(e, fr);
  if (v.t == Value::T::Str) check_size(v.s.size(), e.line);
  if (v.t == Value::T::List && v.list->size() > kMaxListItems)
    fail(e.line, "a list grows too long (more than " + std::to_string(kMaxListItems) + " items)");
  return v;
}

Value Renderer::eval_expr(const Expr& e, const FrameP& fr) {
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
        std::string ks;
        if (!dict_key(key, ks)) fail(e.line, std::string("unhashable type: '") + type_name(key) + "'");
        Value val = eval(*e.args[k + 1], fr);
        bool found = false;
        for (auto& kv : d)
          if (same_key(kv.first, ks)) {  // Python keeps the first key and the last value
            kv.second = val;
            found = true;
          }
        if (!found) d.emplace_back(ks, val);
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
      if (v.t == Value::T::Float) return Value::real(-v.f);
      if (v.as_int() == INT64_MIN) int_overflow(e.line, "-");
      return Value::integer(-v.as_int());
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

Call Renderer::make_call(const Expr& e, const FrameP& fr, size_t skip) {
  Call c;
  c.line = e.line;
  for (size_t k = skip; k < e.args.size(); ++k) c.args.push_back(eval(*e.args[k], fr));
  for (auto& kv : e.kwargs) c.kwargs.emplace_back(kv.first, eval(*kv.second, fr));
  return c;
}

// Python integers are unbounded; s0's are 64-bit and refuse to wrap around.
[[noreturn]] void Renderer::int_overflow(int line, const std::string& op) const {
  fail(line, "integer overflow in '" + op + "' (s0 integers are 64-bit)");
}

[[noreturn]] void Renderer::undefined_error(const Value& v, int line, const std::string& what) const {
  fail(line, "'" + (v.s.empty() ? std::string("value") : v.s) + "' is undefined" + what);
}

bool Renderer::contains(const Value& container, const Value& item, int line) {
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
      if (std::string ks; container.t == Value::T::Dict && dict_key(item, ks)) return dict_find(container, ks) != nullptr;
      return item.t == Value::T::Str && container.find(item.s) != nullptr;
    case Value::T::Undefined: return false;
    default: fail(line, std::string("argument of type '") + type_name(container) + "' is not iterable");
  }
}

bool Renderer::compare(const std::string& op, const Value& l, const Value& r, int line) {
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

Value Renderer::binary(const std::string& op, const Value& l, const Value& r, int line) {
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
      const int64_t size = s->t == Value::T::Str ? static_cast<int64_t>(s->s.size())
                                                 : static_cast<int64_t>(s->list->size());
      const int64_t cap = s->t == Value::T::Str ? static_cast<int64_t>(kMaxRenderBytes)
                                                : static_cast<int64_t>(kMaxListItems);
      if (size > 0 && times > cap / size) fail(line, "'*': result too large");
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
  if (op == "%" && l.t == Value::T::Str) return Value::str(percent_format(l.s, r, line));
  if (!l.is_num() || !r.is_num()) return type_err();
  bool fl = l.t == Value::T::Float || r.t == Value::T::Float;
  double a = l.as_double(), b = r.as_double();
  int64_t x = l.as_int(), y = r.as_int();
  int64_t z = 0;
  if (op == "+") {
    if (fl) return Value::real(a + b);
    if (__builtin_add_overflow(x, y, &z)) int_overflow(line, op);
    return Value::integer(z);
  }
  if (op == "-") {
    if (fl) return Value::real(a - b);
    if (__builtin_sub_overflow(x, y, &z)) int_overflow(line, op);
    return Value::integer(z);
  }
  if (op == "*") {
    if (fl) return Value::real(a * b);
    if (__builtin_mul_overflow(x, y, &z)) int_overflow(line, op);
    return Value::integer(z);
  }
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
    if (x == INT64_MIN && y == -1) {  // the quotient overflows (and x / y would trap)
      if (op == "%") return Value::integer(0);
      int_overflow(line, op);
    }
    int64_t q = x / y;
    if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
    return op == "//" ? Value::integer(q) : Value::integer(x - q * y);
  }
  if (op == "**") {
    if (a == 0 && b < 0) fail(line, "0.0 cannot be raised to a negative power");
    if (!fl && y >= 0) {  // by squaring: exact, and quick for any exponent
      int64_t res = 1, base = x;
      for (int64_t e = y; e > 0; e >>= 1) {
        if ((e & 1) && __builtin_mul_overflow(res, base, &res)) int_overflow(line, op);
        if (e > 1 && __builtin_mul_overflow(base, base, &base)) int_overflow(line, op);
      }
      return Value::integer(res);
    }
    return Value::real(std::pow(a, b));
  }
  return type_err();
}

Value Renderer::get_item(const Value& obj, const Value& key, int line) {
  switch (obj.t) {
    case Value::T::Undefined: undefined_error(obj, line, " (subscripted)");
    case Value::T::List:
      if (obj.generator) return Value::undefined("generator item");  // not subscriptable
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
      if (std::string ks; obj.t == Value::T::Dict && dict_key(key, ks))
        if (const Value* v = dict_find(obj, ks)) return *v;
      return Value::undefined("dict item");
    default: return Value::undefined("item");
  }
}

Value Renderer::get_attr(const Value& obj, const std::string& name, int line) {
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

Value Renderer::slice(const Value& obj, std::optional<int64_t> start, std::optional<int64_t> stop,
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
    Value v = Value::make_list(std::move(l));
    v.tuple = obj.tuple;  // a slice of a tuple is a tuple
    return v;
  }
  std::string out;
  for (int64_t k : idx) append_utf8(out, cps[k]);
  return Value::str(out);
}

int64_t Renderer::length_of(const Value& v, int line) {
  switch (v.t) {
    case Value::T::Undefined: return 0;
    case Value::T::Str: return static_cast<int64_t>(decode_utf8(v.s).size());
    case Value::T::List:
      if (v.generator) fail(line, "object of type 'generator' has no len()");
      return static_cast<int64_t>(v.list->size());
    case Value::T::Dict:
    case Value::T::Ns: return static_cast<int64_t>(v.dict->size());
    default: fail(line, std::string("object of type '") + type_name(v) + "' has no len()");
  }
}

}  // namespace s0::text::jinja::detail
