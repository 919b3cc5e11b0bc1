#pragma once
// A small Jinja2 interpreter covering the subset that Hugging Face chat templates use, with the
// environment transformers configures for apply_chat_template: trim_blocks, lstrip_blocks,
// keep_trailing_newline=False, loop controls (break/continue), no autoescape, `tojson` as
// json.dumps(ensure_ascii=False), globals raise_exception / namespace / strftime_now / range.
//
// Supported statements: if/elif/else, for (with `else`, inline `if` filter, tuple targets,
// loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem), set (name,
// ns.attr, block set), macro (positional/keyword parameters with defaults), break, continue,
// comments, whitespace control (`-` and `+`). Expressions: literals, lists, dicts, tuples,
// attribute/item access, slicing, calls, filters, tests, arithmetic, `~`, comparisons, `in`,
// and/or/not, inline if-else. Python string methods used by the templates (strip, split,
// startswith, ...) and dict methods (items, keys, values, get).
// Anything else is rejected when the template is parsed, with the template name and line.
// Limits (an s0::Error, never a crash): integers are 64-bit (overflow is an error, not
// wrap-around), nesting deeper than 256 levels is rejected when parsed, render contexts nested
// deeper than 1,000 levels when rendered.
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace s0::text::jinja {

class Template {
 public:
  // Parses `source`; `name` appears in every error message. Throws s0::Error.
  Template(const std::string& source, const std::string& name);
  ~Template();
  Template(const Template&) = delete;
  Template& operator=(const Template&) = delete;

  // Renders with the top-level variables of `context` (a JSON object). Throws s0::Error on a
  // runtime error, including raise_exception("...") called by the template.
  std::string render(const nlohmann::ordered_json& context) const;

  const std::string& name() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace s0::text::jinja
