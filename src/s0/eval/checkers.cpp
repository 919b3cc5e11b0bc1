#include "s0/eval/checkers.h"

#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <chrono>
#include <cstring>
#include <regex>

#include "s0/util/error.h"

namespace s0::eval {

namespace {

bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}
std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}
void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  size_t p = 0;
  while ((p = s.find(from, p)) != std::string::npos) {
    s.replace(p, from.size(), to);
    p += to.size();
  }
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::string strip_think(const std::string& text) {
  std::string s = text;
  for (;;) {
    size_t a = s.find("<think>");
    size_t b = s.find("</think>");
    if (b != std::string::npos && (a == std::string::npos || b < a)) {
      // A closing tag without an opening one (the template opened the block): drop up to it.
      s.erase(0, b + 8);
      continue;
    }
    if (a == std::string::npos) break;
    if (b == std::string::npos) {
      s.erase(a);
      break;
    }
    s.erase(a, b + 8 - a);
  }
  return s;
}

std::string postprocess_code(const std::string& completion) {
  std::string s = strip_think(completion);
  // Trailing whitespace, and leading blank lines (not the first line's indentation).
  s.erase(s.find_last_not_of(" \t\r\n") + 1);
  size_t first_nl = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n') first_nl = i + 1;
    else if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') break;
  }
  s.erase(0, first_nl);
  size_t lead = s.find_first_not_of(" \t");
  if (lead != std::string::npos && s.compare(lead, 3, "```") == 0) {
    size_t nl = s.find('\n', lead);
    s = nl == std::string::npos ? "" : s.substr(nl + 1);
  }
  if (ends_with(s, "```")) {
    s.erase(s.size() - 3);
    s.erase(s.find_last_not_of(" \t\r\n") + 1);
  }
  return s;
}

std::string humaneval_program(const Task& task, const std::string& completion) {
  return task.prompt + completion + "\n" + task.test + "\n" + "check(" + task.entry_point + ")\n";
}

// ---------------------------------------------------------------- numbers (GSM8K)

std::optional<std::string> normalize_number(const std::string& in) {
  std::string s = trim(in);
  while (!s.empty() && (s.back() == '.' || s.back() == '%')) s.pop_back();  // "18." "50%"
  bool neg = false;
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
  if (i < s.size() && s[i] == '$') ++i;
  std::string digits, frac;
  bool dot = false, any = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (is_digit(c)) {
      (dot ? frac : digits) += c;
      any = true;
    } else if (c == ',' && !dot) {
      continue;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      return std::nullopt;
    }
  }
  if (!any) return std::nullopt;
  digits.erase(0, digits.find_first_not_of('0'));
  if (digits.empty()) digits = "0";
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  std::string out = digits;
  if (!frac.empty()) out += "." + frac;
  if (neg && out != "0") out = "-" + out;
  return out;
}

namespace {
// Numbers as they appear in text: optional sign, digits with thousands commas, decimals.
const std::regex& number_re() {
  static const std::regex re(R"([-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+)");
  return re;
}
std::optional<std::string> last_number(const std::string& s) {
  std::optional<std::string> last;
  for (auto it = std::sregex_iterator(s.begin(), s.end(), number_re()); it != std::sregex_iterator(); ++it)
    last = it->str();
  return last;
}
}  // namespace

std::optional<std::string> extract_gsm8k_answer(const std::string& text) {
  std::string s = strip_think(text);
  size_t p = s.rfind("####");
  if (p != std::string::npos) {
    // lm-evaluation-harness's strict GSM8K rule: after "####", the run of digits and commas
    // (with its decimals), commas dropped: "#### 2,1251" is 21251, not 2,125.
    static const std::regex after_hashes(R"([-+]?\$?\s*(?:\d[\d,]*(?:\.\d+)?|\.\d+))");
    std::string tail = s.substr(p + 4);
    std::smatch m;
    if (std::regex_search(tail, m, after_hashes)) {
      std::string num = m.str();
      num.erase(std::remove_if(num.begin(), num.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n'; }),
                num.end());
      return normalize_number(num);
    }
  }
  auto n = last_number(s);
  if (!n) return std::nullopt;
  return normalize_number(*n);
}

bool gsm8k_correct(const std::string& completion, const std::string& gold) {
  auto g = normalize_number(gold);
  auto p = extract_gsm8k_answer(completion);
  return g && p && *g == *p;
}

// ---------------------------------------------------------------- MATH

std::optional<std::string> last_boxed(const std::string& text) {
  std::string s = strip_think(text);
  size_t best = std::string::npos;
  size_t len = 0;
  for (const char* tag : {"\\boxed", "\\fbox"}) {
    size_t p = s.rfind(tag);
    if (p != std::string::npos && (best == std::string::npos || p > best)) best = p, len = std::strlen(tag);
  }
  if (best == std::string::npos) return std::nullopt;
  size_t i = best + len;
  if (i < s.size() && s[i] == ' ') {  // "\boxed 5"
    size_t j = i + 1;
    while (j < s.size() && s[j] != '$' && s[j] != ' ' && s[j] != '\n') ++j;
    return s.substr(i + 1, j - i - 1);
  }
  if (i >= s.size() || s[i] != '{') return std::nullopt;
  int depth = 0;
  for (size_t j = i; j < s.size(); ++j) {
    if (s[j] == '\\' && j + 1 < s.size()) {  // escaped brace \{ does not count
      ++j;
      continue;
    }
    if (s[j] == '{') ++depth;
    else if (s[j] == '}' && --depth == 0) return s.substr(i + 1, j - i - 1);
  }
  return std::nullopt;  // unbalanced
}

namespace {

// Removes the command `cmd` (e.g. "\text") keeping its braced argument: \text{cm} -> cm.
void unwrap_command(std::string& s, const std::string& cmd) {
  size_t p;
  while ((p = s.find(cmd + "{")) != std::string::npos) {
    size_t open = p + cmd.size();
    int depth = 0;
    size_t close = std::string::npos;
    for (size_t j = open; j < s.size(); ++j) {
      if (s[j] == '{') ++depth;
      else if (s[j] == '}' && --depth == 0) {
        close = j;
        break;
      }
    }
    if (close == std::string::npos) break;
    s = s.substr(0, p) + s.substr(open + 1, close - open - 1) + s.substr(close + 1);
  }
}

// \frac12 -> \frac{1}{2}, \frac1{2} -> \frac{1}{2}, \fraca b is left alone.
std::string fix_fracs(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, 5, "\\frac") == 0) {
      out += "\\frac";
      i += 5;
      for (int arg = 0; arg < 2 && i < s.size(); ++arg) {
        if (s[i] == '{') {
          int depth = 0;
          size_t j = i;
          for (; j < s.size(); ++j) {
            if (s[j] == '{') ++depth;
            else if (s[j] == '}' && --depth == 0) break;
          }
          out += s.substr(i, j - i + 1);
          i = j + 1;
        } else if (std::isalnum(static_cast<unsigned char>(s[i]))) {
          out += std::string("{") + s[i] + "}";
          ++i;
        } else {
          break;
        }
      }
    } else {
      out += s[i++];
    }
  }
  return out;
}

// \sqrt3 -> \sqrt{3}
std::string fix_sqrt(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, 5, "\\sqrt") == 0 && i + 5 < s.size() && s[i + 5] != '{' && s[i + 5] != '[' &&
        std::isalnum(static_cast<unsigned char>(s[i + 5]))) {
      out += "\\sqrt{";
      out += s[i + 5];
      out += "}";
      i += 6;
    } else {
      out += s[i++];
    }
  }
  return out;
}

// Exact rational value of "12", "-3.25", "\frac{3}{4}", "-\frac{3}{4}", "3/4"; nullopt otherwise.
struct Rational {
  long double num, den;
};
std::optional<Rational> as_rational(const std::string& s) {
  static const std::regex frac_re(R"((-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\})");
  static const std::regex slash_re(R"((-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?))");
  std::smatch m;
  if (std::regex_match(s, m, frac_re)) {
    long double n = std::stold(m[2].str()), d = std::stold(m[3].str());
    if (d == 0) return std::nullopt;
    return Rational{m[1].length() ? -n : n, d};
  }
  if (std::regex_match(s, m, slash_re)) {
    long double d = std::stold(m[2].str());
    if (d == 0) return std::nullopt;
    return Rational{std::stold(m[1].str()), d};
  }
  auto n = normalize_number(s);
  if (!n || s.find('%') != std::string::npos) return std::nullopt;
  return Rational{std::stold(*n), 1};
}

}  // namespace

std::string normalize_math_answer(const std::string& in) {
  std::string s = in;
  replace_all(s, "\n", "");
  replace_all(s, "\\!", "");
  replace_all(s, "\\,", "");
  replace_all(s, "\\;", "");
  replace_all(s, "\\ ", "");
  replace_all(s, "\\\\", "\\");
  replace_all(s, "tfrac", "frac");
  replace_all(s, "dfrac", "frac");
  replace_all(s, "\\left", "");
  replace_all(s, "\\right", "");
  replace_all(s, "^{\\circ}", "");
  replace_all(s, "^\\circ", "");
  replace_all(s, "\xC2\xB0", "");  // U+00B0 degree sign
  replace_all(s, "\\$", "");
  replace_all(s, "$", "");
  replace_all(s, "\\%", "");
  replace_all(s, "%", "");
  // A trailing unit in \text{...} / \mbox{...} after a number: "10\text{ cm}" -> "10".
  {
    static const std::regex unit_re(R"(^(.*\d)\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z ^.]*\}$)");
    std::smatch m;
    if (std::regex_match(s, m, unit_re)) s = m[1].str();
  }
  unwrap_command(s, "\\text");
  unwrap_command(s, "\\textbf");
  unwrap_command(s, "\\mbox");
  unwrap_command(s, "\\mathrm");
  s = trim(s);
  replace_all(s, " .", " 0.");
  replace_all(s, "{.", "{0.");
  if (!s.empty() && s[0] == '.') s = "0" + s;
  // "x = 5" / "k=5": keep the value when the left side is a short variable name.
  {
    size_t eq = s.find('=');
    if (eq != std::string::npos && s.find('=', eq + 1) == std::string::npos) {
      std::string lhs = trim(s.substr(0, eq));
      if (!lhs.empty() && lhs.size() <= 2) s = trim(s.substr(eq + 1));
    }
  }
  s = fix_sqrt(s);
  s.erase(std::remove(s.begin(), s.end(), ' '), s.end());
  s = fix_fracs(s);
  // Plain numbers: commas as thousands separators, trailing zeros after a decimal point.
  if (auto n = normalize_number(s); n && s.find_first_of("0123456789") != std::string::npos) s = *n;
  // "a/b" of integers -> \frac{a}{b}
  {
    static const std::regex slash_re(R"((-?\d+)/(\d+))");
    std::smatch m;
    if (std::regex_match(s, m, slash_re)) s = "\\frac{" + m[1].str() + "}{" + m[2].str() + "}";
  }
  return s;
}

bool math_equivalent(const std::string& a, const std::string& b) {
  std::string na = normalize_math_answer(a), nb = normalize_math_answer(b);
  if (na == nb) return true;
  auto ra = as_rational(na), rb = as_rational(nb);
  if (ra && rb) {
    long double x = ra->num * rb->den, y = rb->num * ra->den;
    long double scale = std::max<long double>({1.0L, std::abs(x), std::abs(y)});
    return std::abs(x - y) <= 1e-12L * scale;
  }
  return false;
}

bool math_correct(const std::string& completion, const std::string& gold) {
  auto b = last_boxed(completion);
  return b && math_equivalent(*b, gold);
}

// ---------------------------------------------------------------- SQL (Spider)

std::string extract_sql(const std::string& completion) {
  std::string s = strip_think(completion);
  size_t f = s.find("```");
  if (f != std::string::npos) {
    size_t nl = s.find('\n', f);
    if (nl != std::string::npos) {
      size_t e = s.find("```", nl);
      s = s.substr(nl + 1, e == std::string::npos ? std::string::npos : e - nl - 1);
    }
  }
  s = trim(s);
  if (!s.empty() && s.back() == ';') s.pop_back();
  return trim(s);
}

namespace {

std::string canonical_value(sqlite3_stmt* st, int c) {
  switch (sqlite3_column_type(st, c)) {
    case SQLITE_NULL: return "NULL";
    case SQLITE_INTEGER: return std::to_string(sqlite3_column_int64(st, c));
    case SQLITE_FLOAT: {
      double v = sqlite3_column_double(st, c);
      if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 9e15)
        return std::to_string(static_cast<long long>(v));
      char b[64];
      snprintf(b, sizeof b, "%.12g", v);
      return b;
    }
    case SQLITE_BLOB: {
      const auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(st, c));
      int n = sqlite3_column_bytes(st, c);
      std::string out = "x'";
      char h[3];
      for (int i = 0; i < n; ++i) snprintf(h, sizeof h, "%02x", p[i]), out += h;
      return out + "'";
    }
    default: {
      const auto* t = sqlite3_column_text(st, c);
      return "'" + std::string(t ? reinterpret_cast<const char*>(t) : "", static_cast<size_t>(sqlite3_column_bytes(st, c)));
    }
  }
}

int read_only_authorizer(void*, int action, const char*, const char*, const char*, const char*) {
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
      return SQLITE_OK;
    default:
      return SQLITE_DENY;
  }
}

struct Deadline {
  std::chrono::steady_clock::time_point until;
};
int progress_check(void* p) {
  return std::chrono::steady_clock::now() > static_cast<Deadline*>(p)->until ? 1 : 0;
}

struct Db {
  sqlite3* db = nullptr;
  ~Db() {
    if (db) sqlite3_close_v2(db);
  }
};
struct Stmt {
  sqlite3_stmt* st = nullptr;
  ~Stmt() {
    if (st) sqlite3_finalize(st);
  }
};

}  // namespace

SqlResult run_sql(const std::string& db_path, const std::string& sql, double seconds, size_t max_rows) {
  SqlResult r;
  Db db;
  if (sqlite3_open_v2(db_path.c_str(), &db.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    r.error = std::string("cannot open database: ") + (db.db ? sqlite3_errmsg(db.db) : db_path);
    return r;
  }
  sqlite3_limit(db.db, SQLITE_LIMIT_ATTACHED, 0);
  sqlite3_limit(db.db, SQLITE_LIMIT_LENGTH, 1 << 24);
  Deadline dl{std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000))};
  sqlite3_progress_handler(db.db, 1000, progress_check, &dl);
  sqlite3_set_authorizer(db.db, read_only_authorizer, nullptr);
  Stmt st;
  const char* tail = nullptr;
  if (sqlite3_prepare_v2(db.db, sql.c_str(), static_cast<int>(sql.size()), &st.st, &tail) != SQLITE_OK) {
    r.error = sqlite3_errmsg(db.db);
    return r;
  }
  if (!st.st) {
    r.error = "empty statement";
    return r;
  }
  if (tail && trim(tail).find_first_not_of(';') != std::string::npos) {
    r.error = "more than one statement";
    return r;
  }
  if (!sqlite3_stmt_readonly(st.st)) {
    r.error = "statement is not read-only";
    return r;
  }
  int cols = sqlite3_column_count(st.st);
  int rc;
  while ((rc = sqlite3_step(st.st)) == SQLITE_ROW) {
    if (r.rows.size() >= max_rows) {
      r.error = "more than " + std::to_string(max_rows) + " rows";
      return r;
    }
    std::vector<std::string> row;
    row.reserve(static_cast<size_t>(cols));
    for (int c = 0; c < cols; ++c) row.push_back(canonical_value(st.st, c));
    r.rows.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) {
    r.error = rc == SQLITE_INTERRUPT ? "time limit exceeded" : sqlite3_errmsg(db.db);
    r.rows.clear();
    return r;
  }
  r.ok = true;
  return r;
}

bool sql_has_order_by(const std::string& sql) {
  static const std::regex re(R"(\border\s+by\b)", std::regex::icase);
  return std::regex_search(sql, re);
}

bool sql_results_match(const SqlResult& gold, const SqlResult& pred, bool ordered) {
  if (!gold.ok || !pred.ok) return false;
  if (gold.rows.size() != pred.rows.size()) return false;
  if (ordered) return gold.rows == pred.rows;
  auto a = gold.rows, b = pred.rows;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

std::string sqlite_schema(const std::string& db_path) {
  SqlResult r = run_sql(db_path, "SELECT sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL ORDER BY rowid", 10);
  if (!r.ok) throw Error(db_path + ": cannot read the schema: " + r.error);
  std::string out;
  for (auto& row : r.rows) out += row[0].substr(1) + ";\n";  // drop the text marker
  return out;
}

// ---------------------------------------------------------------- all checkers

std::vector<Verdict> check_all(const std::vector<const Task*>& tasks, const std::vector<std::string>& completions,
                               const Sandbox& sandbox, const CheckOptions& opt) {
  if (tasks.size() != completions.size()) throw Error("check_all: tasks and completions differ in number");
  std::vector<Verdict> out(tasks.size());
  std::vector<std::pair<std::vector<std::string>, std::string>> jobs;
  std::vector<size_t> job_of;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const Task& t = *tasks[i];
    const std::string& c = completions[i];
    switch (t.kind) {
      case TaskKind::HumanEval:
        jobs.push_back({{opt.python, "-"}, humaneval_program(t, postprocess_code(c))});
        job_of.push_back(i);
        break;
      case TaskKind::GSM8K: {
        auto p = extract_gsm8k_answer(c);
        out[i].passed = gsm8k_correct(c, t.answer);
        out[i].detail = "answer " + (p ? *p : std::string("(none)")) + ", gold " + t.answer;
        break;
      }
      case TaskKind::Math: {
        auto b = last_boxed(c);
        out[i].passed = b && math_equivalent(*b, t.answer);
        out[i].detail = "boxed " + (b ? *b : std::string("(none)")) + ", gold " + t.answer;
        break;
      }
      case TaskKind::Spider: {
        std::string sql = extract_sql(c);
        SqlResult gold = run_sql(t.db_path, t.reference, opt.limits.wall_seconds);
        if (!gold.ok) throw Error(t.id + ": the gold query fails: " + gold.error);
        SqlResult pred = run_sql(t.db_path, sql, opt.limits.wall_seconds);
        out[i].passed = sql_results_match(gold, pred, sql_has_order_by(t.reference));
        out[i].detail = pred.ok ? (std::to_string(pred.rows.size()) + " rows") : ("error: " + pred.error);
        break;
      }
    }
  }
  if (!jobs.empty()) {
    auto res = run_all(sandbox, jobs, opt.limits, opt.workers);
    for (size_t j = 0; j < res.size(); ++j) {
      Verdict& v = out[job_of[j]];
      const RunResult& r = res[j];
      v.passed = r.passed();
      if (r.timed_out) v.detail = "timeout";
      else if (r.output_truncated) v.detail = "output limit";
      else if (r.term_signal) v.detail = "signal " + std::to_string(r.term_signal);
      else {
        v.detail = "exit " + std::to_string(r.exit_code);
        if (!v.passed) {
          std::string e = trim(r.err);
          size_t nl = e.rfind('\n');
          if (nl != std::string::npos) e = e.substr(nl + 1);
          if (e.size() > 200) e = e.substr(0, 200);
          if (!e.empty()) v.detail += ": " + e;
        }
      }
    }
  }
  return out;
}

}  // namespace s0::eval
