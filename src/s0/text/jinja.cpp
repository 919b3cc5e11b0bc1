// Jinja2 subset interpreter; see jinja.h for the supported language. Semantics follow Python
// Jinja2 3.1 as configured by transformers (the reference the chat-template goldens come from).
//
// The stages, one file each: jinja_lexer.cpp (text -> tokens), jinja_parser.cpp (tokens ->
// syntax tree, jinja_ast.h), jinja_eval.cpp (statements and expressions, jinja_eval.h),
// jinja_filters.cpp (filters, tests, str/dict methods, globals), over the values of
// jinja_value.{h,cpp}.
#include "s0/text/jinja.h"

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "s0/text/jinja_ast.h"
#include "s0/text/jinja_eval.h"
#include "s0/text/jinja_value.h"
#include "s0/util/error.h"

namespace s0::text::jinja {

struct Template::Impl {
  std::string name;
  detail::Body body;
};

Template::Template(const std::string& source, const std::string& name) : impl_(std::make_unique<Impl>()) {
  impl_->name = name;
  impl_->body = detail::parse(detail::lex(source, name), name);
}

Template::~Template() = default;

const std::string& Template::name() const { return impl_->name; }

std::string Template::render(const nlohmann::ordered_json& context) const {
  using namespace detail;
  if (!context.is_object()) throw Error("chat template " + impl_->name + ": render context must be a JSON object");
  Renderer r(impl_->name);
  auto globals = std::make_shared<Frame>();
  install_globals(*globals, r);
  auto top = std::make_shared<Frame>();
  top->parent = globals;
  try {
    for (auto it = context.begin(); it != context.end(); ++it)
      top->vars[it.key()] = from_json(it.value());
  } catch (const Error& e) {
    throw Error("chat template " + impl_->name + ": " + e.what());
  }
  std::string out;
  r.exec(impl_->body, top, out);
  return out;
}

}  // namespace s0::text::jinja
