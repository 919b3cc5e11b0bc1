// Jinja parser: tokens -> syntax tree (recursive descent with Jinja2's operator precedence).
// Anything outside the supported subset is rejected here, naming the construct and the line.
// See jinja_ast.h.
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "s0/text/jinja_ast.h"
#include "s0/util/error.h"

namespace s0::text::jinja::detail {
namespace {

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
    Nest nest(*this);
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
    } else if (kw == "filter") {
      // {% filter f(args) | g %}body{% endfilter %}: the rendered body through the filters,
      // held as a filter chain applied to a variable no template can name.
      s->k = Stmt::K::FilterBlock;
      auto base = node(Expr::K::Name, line);
      base->name = kFilterBlockVar;
      ExprP e = done(std::move(base));
      while (true) {
        int fl = peek().line;
        auto n = node(Expr::K::Filter, fl);
        n->name = ident();
        if (!is_filter(n->name)) fail("unsupported Jinja filter '" + n->name + "'", fl);
        n->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(*n);
        e = done(std::move(n));
        if (!is_op("|")) break;
        ++p_;
      }
      s->expr = std::move(e);
      end_block();
      s->body = parse_body({"endfilter"});
      ident();
      end_block();
    } else if (kw == "break" || kw == "continue") {
      if (loop_depth_ == 0) fail("'" + kw + "' outside a for loop", line);
      s->k = kw == "break" ? Stmt::K::Break : Stmt::K::Continue;
      end_block();
    } else {
      fail("unsupported Jinja construct: {% " + kw +
           " %} (supported statements: if, for, set, macro, filter, break, continue)", line);
    }
    return s;
  }

  // Bounds the parser's own recursion (nested expressions and blocks).
  struct Nest {
    explicit Nest(Parser& p) : p(p) {
      if (++p.nest_ > kMaxDepth)
        p.fail("nested too deeply (more than " + std::to_string(kMaxDepth) + " levels)");
    }
    ~Nest() { --p.nest_; }
    Parser& p;
  };

  // A node is complete: it is one deeper than its deepest child. Bounds the tree's height (the
  // evaluator's recursion), which chains such as `a + b + c + ...` grow without recursing here.
  ExprP done(ExprP e) {
    int h = 0;
    for (const auto& a : e->args)
      if (a) h = std::max(h, a->height);
    for (const auto& kv : e->kwargs) h = std::max(h, kv.second->height);
    e->height = h + 1;
    if (e->height > kMaxDepth)
      fail("expression nested too deeply (more than " + std::to_string(kMaxDepth) + " levels)",
           e->line);
    return e;
  }

  ExprP node(Expr::K k, int line) {
    auto e = std::make_unique<Expr>();
    e->k = k;
    e->line = line;
    return e;
  }

  ExprP parse_expr() { return parse_or_cond(true); }

  ExprP parse_or_cond(bool with_cond) {
    Nest nest(*this);
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
        e = done(std::move(c));
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
      e = done(std::move(n));
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
      e = done(std::move(n));
    }
    return e;
  }
  ExprP parse_not() {
    if (is_name("not")) {
      int line = next().line;
      auto n = node(Expr::K::Not, line);
      Nest nest(*this);
      n->args.push_back(parse_not());
      return done(std::move(n));
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
    return cmp ? done(std::move(cmp)) : std::move(e);
  }
  ExprP binary(const std::string& op, ExprP l, ExprP r, int line) {
    auto n = node(Expr::K::Binary, line);
    n->name = op;
    n->args.push_back(std::move(l));
    n->args.push_back(std::move(r));
    return done(std::move(n));
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
    return done(std::move(n));
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
      Nest nest(*this);
      e->args.push_back(parse_unary(false));
      e = done(std::move(e));
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
      case Tok::Int: return int_lit(t);
      // Python's float(): out of range is inf (or 0.0), never an error.
      case Tok::Float: return lit(Value::real(std::strtod(t.v.c_str(), nullptr)), t.line);
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
            e = done(std::move(n));
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
          return done(std::move(n));
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
          return done(std::move(n));
        }
        break;
      default: break;
    }
    --p_;
    fail("unexpected" + got().substr(5));
  }
  ExprP int_lit(const Token& t) {
    int64_t v = 0;
    auto r = std::from_chars(t.v.data(), t.v.data() + t.v.size(), v);
    if (r.ec != std::errc()) fail("integer literal out of range", t.line);
    return lit(Value::integer(v), t.line);
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
          n->args.push_back(int_lit(next()));
        } else {
          n->name = ident();
          n->args.push_back(std::move(e));
        }
        e = done(std::move(n));
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
          e = done(std::move(n));
        } else {
          if (!parts[0]) fail("empty subscript");
          auto n = node(Expr::K::Item, line);
          n->args.push_back(std::move(e));
          n->args.push_back(std::move(parts[0]));
          e = done(std::move(n));
        }
      } else if (is_op("(")) {
        auto n = node(Expr::K::Call, peek().line);
        n->args.push_back(std::move(e));
        parse_call_args(*n);
        e = done(std::move(n));
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
        if (!is_filter(n->name)) fail("unsupported Jinja filter '" + n->name + "'", line);
        n->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(*n);
        e = parse_postfix(done(std::move(n)));
      } else if (is_name("is")) {
        int line = next().line;
        auto n = node(Expr::K::Test, line);
        if (is_name("not")) {
          ++p_;
          n->negated = true;
        }
        if (peek().kind == Tok::Name) {
          n->name = next().v;
        } else if (peek().kind == Tok::Op && is_test(peek().v)) {
          n->name = next().v;
        } else {
          fail("expected a test name" + got());
        }
        if (!is_test(n->name)) fail("unsupported Jinja test '" + n->name + "'", line);
        n->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*n);
        } else if (peek().kind == Tok::Str || peek().kind == Tok::Int ||
                   peek().kind == Tok::Float || is_op("[") || is_op("{") ||
                   (peek().kind == Tok::Name && !is_name("and") && !is_name("or") &&
                    !is_name("else") && !is_name("if") && !is_name("is") && !is_name("in") &&
                    !is_name("not"))) {
          n->args.push_back(parse_primary());  // `is divisibleby 3`, `is sameas false`, `is in [1, 2]`
          n->args.back() = parse_postfix(std::move(n->args.back()));
        }
        e = done(std::move(n));
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t p_ = 0;
  std::string name_;
  int loop_depth_ = 0;
  int nest_ = 0;
};

}  // namespace

Body parse(std::vector<Token> tokens, const std::string& name) {
  return Parser(std::move(tokens), name).parse_template();
}

}  // namespace s0::text::jinja::detail
