#pragma once
// Private to the Jinja interpreter (jinja_*.cpp): the tokens the lexer hands the parser and the
// syntax tree the parser hands the evaluator. Template source -> lex() -> parse() -> Body.
// Both stages throw s0::Error("chat template NAME: line N: what was wrong").
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "s0/text/jinja_value.h"

namespace s0::text::jinja::detail {

// ---------------------------------------------------------------------------------------------
// Tokens (jinja_lexer.cpp)

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, Str, Int, Float, Op, Eof };

struct Token {
  Tok kind;
  std::string v;  // Text: the text; Name/Op: as written; Str: decoded; Int/Float: digits
  int line;
};

// Splits `source` into text and tag tokens, ending with Eof. Applies the environment
// transformers uses: newlines normalised to \n, one trailing newline dropped, trim_blocks,
// lstrip_blocks, and the `-`/`+` whitespace control of each tag; comments are dropped.
std::vector<Token> lex(const std::string& source, const std::string& name);

// ---------------------------------------------------------------------------------------------
// Syntax tree (jinja_parser.cpp)

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
  int height = 1;                   // 1 + the deepest child's height
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class K { Text, Output, If, For, Set, SetAttr, SetBlock, Macro, FilterBlock, Break, Continue };
  K k;
  int line = 0;
  std::string text;                       // Text; Set/SetBlock/Macro name; SetAttr object
  std::string attr;                       // SetAttr attribute
  std::vector<std::string> targets;       // For targets
  ExprP expr;                             // Output / Set value / For iterable / FilterBlock chain
  ExprP cond;                             // For inline filter
  std::vector<std::pair<ExprP, Body>> branches;  // If (cond, body)
  Body body;                              // For / SetBlock / Macro body; If else
  Body else_body;                         // For else
  std::vector<std::pair<std::string, ExprP>> params;  // Macro
};

// The template's statements. Unsupported statements, filters and tests are rejected here,
// and so is nesting deeper than kMaxDepth (blocks in blocks, expressions in expressions,
// `a + b + c` is two deep): the evaluator recurses that deep. (Python Jinja2 reaches its
// recursion limit near 100 nested parentheses.)
constexpr int kMaxDepth = 256;
// The variable a {% filter %} block's rendered body is bound to (not a valid identifier).
inline const char* const kFilterBlockVar = "\x01" "filter block";
Body parse(std::vector<Token> tokens, const std::string& name);

// The filter and test names the parser accepts (jinja_filters.cpp); it rejects any other.
bool is_filter(const std::string& name);
bool is_test(const std::string& name);

}  // namespace s0::text::jinja::detail
