#pragma once
// Private to the Jinja interpreter (jinja_*.cpp): the evaluator. One Renderer renders one
// template once. Statements, expressions and Python's operators are in jinja_eval.cpp; the
// filters, tests, str/dict methods and global functions in jinja_filters.cpp.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "s0/text/jinja_ast.h"
#include "s0/text/jinja_value.h"

namespace s0::text::jinja::detail {

// A variable scope: the globals, the render context, then one per loop iteration and macro call.
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

enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  explicit Renderer(const std::string& name) : name_(name) {}

  // Throws s0::Error("chat template NAME: line N: msg").
  [[noreturn]] void fail(int line, const std::string& msg) const;

  // Appends the output of `body` to `out`.
  Flow exec(const Body& body, const FrameP& fr, std::string& out);

 private:
  // jinja_eval.cpp: statements, expressions, operators.
  Flow exec(const Stmt& s, const FrameP& fr, std::string& out);
  Flow exec_for(const Stmt& s, const FrameP& fr, std::string& out);
  List iterate(const Value& v, int line);
  Value eval(const Expr& e, const FrameP& fr);  // eval_expr + the limits below
  Value eval_expr(const Expr& e, const FrameP& fr);
  Call make_call(const Expr& e, const FrameP& fr, size_t skip);
  [[noreturn]] void undefined_error(const Value& v, int line, const std::string& what) const;
  [[noreturn]] void int_overflow(int line, const std::string& op) const;
  bool contains(const Value& container, const Value& item, int line);
  bool compare(const std::string& op, const Value& l, const Value& r, int line);
  Value binary(const std::string& op, const Value& l, const Value& r, int line);
  // Python's str % args (printf-style); `args` a tuple, a dict or one value.
  std::string percent_format(const std::string& fmt, const Value& args, int line) const;
  Value get_item(const Value& obj, const Value& key, int line);
  Value get_attr(const Value& obj, const std::string& name, int line);
  Value slice(const Value& obj, std::optional<int64_t> start, std::optional<int64_t> stop,
              std::optional<int64_t> step_, int line);
  int64_t length_of(const Value& v, int line);

  // jinja_filters.cpp: methods of dict and str values, filters, tests.
  Value dict_method(const Value& obj, const std::string& name, int line);
  Value str_method(const Value& obj, const std::string& name, int line);
  Value apply_filter(const std::string& f, const Value& v, Call& c);
  bool apply_test(const std::string& t, const Value& v, Call& c);

  // Work and size limits (an s0::Error naming the template, never a hang or gigabytes).
  void step(int line);                            // one statement, expression or loop iteration
  void check_size(size_t bytes, int line) const;  // output / a string value

  std::string name_;
  int depth_ = 0;       // macro call depth
  int64_t steps_ = 0;   // statements + expressions evaluated so far
};

// A render evaluates at most this many statements, expressions and loop iterations (a real
// template on a 1,000-message conversation takes ~2% of it) and produces at most kMaxRenderBytes of output or of any string,
// and no list longer than kMaxListItems.
constexpr int64_t kMaxRenderSteps = 4'000'000;
constexpr size_t kMaxRenderBytes = size_t{64} << 20;
constexpr size_t kMaxListItems = size_t{1} << 20;

// The global functions of the transformers environment: raise_exception, namespace, range,
// dict, strftime_now (jinja_filters.cpp). Errors go through `r`, which must outlive `g`'s use.
void install_globals(Frame& g, Renderer& r);

}  // namespace s0::text::jinja::detail
