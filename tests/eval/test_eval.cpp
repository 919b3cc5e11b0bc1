// Evaluation pieces: task readers, answer checkers (code, GSM8K, MATH, SQL), statistics.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "s0/eval/checkers.h"
#include "s0/eval/stats.h"
#include "s0/eval/tasks.h"
#include "s0/util/error.h"
#include "test_util.h"

namespace {

using namespace s0::eval;
using nlohmann::json;

std::string data(const std::string& f) { return std::string(S0_FIXTURES_DIR) + "/../data/eval/" + f; }

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Our own programs: isolated when bubblewrap works here, else plain processes.
const Sandbox& sandbox() {
  static Sandbox sb = Sandbox::create(true);
  return sb;
}

// ------------------------------------------------------------------ readers

TEST(EvalTasks, ReadsHumanEvalJsonlAndGz) {
  auto tasks = read_tasks(TaskKind::HumanEval, data("humaneval_mini.jsonl"));
  ASSERT_EQ(tasks.size(), 12u);
  EXPECT_EQ(tasks[0].id, "Mini/0");
  EXPECT_EQ(tasks[0].entry_point, "add");
  EXPECT_EQ(tasks[11].index, 11);
  std::string dir = s0::testing::temp_dir("eval_gz");
  std::string gz = dir + "/he.jsonl.gz";
  std::string text = read_text_file(data("humaneval_mini.jsonl"));
  gzFile f = gzopen(gz.c_str(), "wb");
  gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
  gzclose(f);
  auto tz = read_tasks(TaskKind::HumanEval, gz);
  ASSERT_EQ(tz.size(), 12u);
  EXPECT_EQ(tz[5].prompt, tasks[5].prompt);
  EXPECT_EQ(tz[5].test, tasks[5].test);
  // A truncated gzip stream is an error, not a silently shorter task list.
  std::ifstream in(gz, std::ios::binary);
  std::string comp((std::istreambuf_iterator<char>(in)), {});
  write(dir + "/cut.jsonl.gz", comp.substr(0, comp.size() / 2));
  EXPECT_THROW(read_tasks(TaskKind::HumanEval, dir + "/cut.jsonl.gz"), s0::Error);
}

TEST(EvalTasks, BadInputNamesFileLineAndField) {
  std::string dir = s0::testing::temp_dir("eval_bad");
  write(dir + "/a.jsonl", "{\"task_id\":\"x\",\"prompt\":\"p\",\"test\":\"t\",\"entry_point\":\"f\"}\n{not json}\n");
  try {
    read_tasks(TaskKind::HumanEval, dir + "/a.jsonl");
    FAIL();
  } catch (const s0::Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.jsonl:2"), std::string::npos) << e.what();
  }
  write(dir + "/b.jsonl", "{\"task_id\":\"x\",\"prompt\":\"p\",\"entry_point\":\"f\"}\n");
  try {
    read_tasks(TaskKind::HumanEval, dir + "/b.jsonl");
    FAIL();
  } catch (const s0::Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"test\""), std::string::npos) << e.what();
  }
  write(dir + "/g.jsonl", "{\"question\":\"q\",\"answer\":\"no marker\"}\n");
  EXPECT_THROW(read_tasks(TaskKind::GSM8K, dir + "/g.jsonl"), s0::Error);
  EXPECT_THROW(read_tasks(TaskKind::HumanEval, dir + "/missing.jsonl"), s0::Error);
  write(dir + "/empty.jsonl", "\n");
  EXPECT_THROW(read_tasks(TaskKind::HumanEval, dir + "/empty.jsonl"), s0::Error);
}

TEST(EvalTasks, GsmMathSpiderReaders) {
  std::string dir = s0::testing::temp_dir("eval_readers");
  write(dir + "/g.jsonl", "{\"question\":\"How many?\",\"answer\":\"2+2=4\\n#### 1,204\"}\n");
  auto g = read_tasks(TaskKind::GSM8K, dir + "/g.jsonl");
  EXPECT_EQ(g[0].answer, "1,204");
  EXPECT_EQ(g[0].id, "gsm8k/0");
  write(dir + "/m.jsonl",
        "{\"problem\":\"p\",\"solution\":\"s \\\\boxed{3}\",\"answer\":\"3\",\"level\":1,\"subject\":\"Algebra\",\"unique_id\":\"test/algebra/1.json\"}\n");
  auto m = read_tasks(TaskKind::Math, dir + "/m.jsonl");
  EXPECT_EQ(m[0].answer, "3");
  EXPECT_EQ(m[0].id, "test/algebra/1.json");
  std::filesystem::create_directories(dir + "/db/shop");
  write(dir + "/db/shop/shop.sqlite", "");
  write(dir + "/s.json", R"([{"question":"q","query":"SELECT 1","db_id":"shop"}])");
  auto s = read_tasks(TaskKind::Spider, dir + "/s.json", dir + "/db");
  EXPECT_EQ(s[0].db_path, dir + "/db/shop/shop.sqlite");
  write(dir + "/s2.json", R"([{"question":"q","query":"SELECT 1","db_id":"nope"}])");
  EXPECT_THROW(read_tasks(TaskKind::Spider, dir + "/s2.json", dir + "/db"), s0::Error);
  write(dir + "/s3.json", R"([{"question":"q","query":"SELECT 1","db_id":"../x"}])");
  EXPECT_THROW(read_tasks(TaskKind::Spider, dir + "/s3.json", dir + "/db"), s0::Error);
}

TEST(EvalTasks, Ranges) {
  EXPECT_EQ(parse_ranges("0-2,5", 10, "--train"), (std::vector<int64_t>{0, 1, 2, 5}));
  EXPECT_EQ(parse_ranges("3,1-2,2", 10, "--train"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(parse_ranges("all", 3, "--eval"), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_THROW(parse_ranges("80-163", 100, "--eval"), s0::Error);
  EXPECT_THROW(parse_ranges("5-3", 10, "--eval"), s0::Error);
  EXPECT_THROW(parse_ranges("a", 10, "--eval"), s0::Error);
  EXPECT_THROW(parse_ranges("-1", 10, "--eval"), s0::Error);
}

// ------------------------------------------------------------------ code

TEST(EvalCode, PostProcessing) {
  EXPECT_EQ(postprocess_code("<think>hmm</think>\n\n    return 1\n\n"), "    return 1");
  EXPECT_EQ(postprocess_code("```python\n    return 1\n```"), "    return 1");
  EXPECT_EQ(postprocess_code("```\ndef f():\n    return 1\n```\n"), "def f():\n    return 1");
  EXPECT_EQ(postprocess_code("    x = 1\n    return x"), "    x = 1\n    return x");
  EXPECT_EQ(postprocess_code("<think>unterminated"), "");
  EXPECT_EQ(strip_think("a</think>b"), "b");
}

TEST(EvalCode, CorrectPassesWrongFailsForEveryProblem) {
  auto tasks = read_tasks(TaskKind::HumanEval, data("humaneval_mini.jsonl"));
  std::ifstream in(data("humaneval_mini.jsonl"));
  std::string line;
  std::vector<const Task*> ts;
  std::vector<std::string> comps;
  for (size_t i = 0; std::getline(in, line); ++i) {
    json j = json::parse(line);
    ts.push_back(&tasks[i]);
    comps.push_back(j["canonical_solution"].get<std::string>());
    ts.push_back(&tasks[i]);
    comps.push_back(j["wrong_solution"].get<std::string>());
    // The model's usual decorations around a correct body: still a pass.
    ts.push_back(&tasks[i]);
    comps.push_back("<think>\nplan\n</think>\n```python\n" + j["canonical_solution"].get<std::string>() + "```\n");
  }
  CheckOptions opt;
  opt.workers = 2;
  auto v = check_all(ts, comps, sandbox(), opt);
  for (size_t i = 0; i < v.size(); i += 3) {
    EXPECT_TRUE(v[i].passed) << tasks[i / 3].id << ": " << v[i].detail;
    EXPECT_FALSE(v[i + 1].passed) << tasks[i / 3].id << " wrong solution passed";
    EXPECT_TRUE(v[i + 2].passed) << tasks[i / 3].id << " decorated: " << v[i + 2].detail;
  }
}

TEST(EvalCode, HostileCompletionsFailAndHarnessSurvives) {
  auto tasks = read_tasks(TaskKind::HumanEval, data("humaneval_mini.jsonl"));
  std::vector<std::string> comps = {
      "    while True:\n        pass\n",                                      // infinite loop
      "    import os\n    os._exit(0) if False else None\n    raise SystemExit(3)\n",
      "    x = bytearray(20 * 1024**3)\n    return a + b\n",                   // 20 GB
      "    print('x' * (1 << 30))\n    return a + b\n",                        // 1 GB of output
      "    return a + b\n",                                                   // still fine after all that
  };
  std::vector<const Task*> ts(comps.size(), &tasks[0]);
  CheckOptions opt;
  opt.limits.wall_seconds = 3;
  opt.limits.cpu_seconds = 3;
  auto v = check_all(ts, comps, sandbox(), opt);
  EXPECT_FALSE(v[0].passed);
  EXPECT_EQ(v[0].detail, "timeout");
  EXPECT_FALSE(v[1].passed);
  EXPECT_FALSE(v[2].passed);
  EXPECT_FALSE(v[3].passed);
  EXPECT_TRUE(v[4].passed) << v[4].detail;
}

// ------------------------------------------------------------------ GSM8K

TEST(EvalGsm8k, NumberNormalisation) {
  EXPECT_EQ(normalize_number("1,234.50").value(), "1234.5");
  EXPECT_EQ(normalize_number("-0").value(), "0");
  EXPECT_EQ(normalize_number("+7").value(), "7");
  EXPECT_EQ(normalize_number("$12").value(), "12");
  EXPECT_EQ(normalize_number("-$3.00").value(), "-3");
  EXPECT_EQ(normalize_number(".5").value(), "0.5");
  EXPECT_EQ(normalize_number("007").value(), "7");
  EXPECT_EQ(normalize_number("18.").value(), "18");
  EXPECT_FALSE(normalize_number("12a").has_value());
  EXPECT_FALSE(normalize_number("").has_value());
}

TEST(EvalGsm8k, ExtractionAndVerdicts) {
  EXPECT_EQ(extract_gsm8k_answer("so 3 + 4 = 7\n#### 7").value(), "7");
  EXPECT_EQ(extract_gsm8k_answer("#### $1,200.00 dollars").value(), "1200");
  EXPECT_EQ(extract_gsm8k_answer("first 5 then 12 apples").value(), "12");  // last-number fallback
  EXPECT_EQ(extract_gsm8k_answer("It drops by -3.").value(), "-3");
  EXPECT_EQ(extract_gsm8k_answer("#### 1 then 2 and 9").value(), "1");  // strict: first after ####
  // lm-eval's rule after ####: digits and commas, commas dropped (not thousands groups).
  EXPECT_EQ(extract_gsm8k_answer("#### 2,1251").value(), "21251");
  EXPECT_EQ(extract_gsm8k_answer("#### 1,450,000").value(), "1450000");
  EXPECT_EQ(extract_gsm8k_answer("#### 12,5.").value(), "125");
  EXPECT_EQ(extract_gsm8k_answer("#### -3,0.50").value(), "-30.5");
  EXPECT_FALSE(gsm8k_correct("#### 2,1251", "2125"));
  EXPECT_EQ(extract_gsm8k_answer("<think>maybe 99</think>The answer is 42.").value(), "42");
  EXPECT_FALSE(extract_gsm8k_answer("no numbers here").has_value());
  EXPECT_TRUE(gsm8k_correct("The total is 1,204.", "1204"));
  EXPECT_TRUE(gsm8k_correct("#### 18.0", "18"));
  EXPECT_FALSE(gsm8k_correct("#### 17", "18"));
  EXPECT_FALSE(gsm8k_correct("#### -18", "18"));
  EXPECT_FALSE(gsm8k_correct("18 people but #### 19", "18"));
  EXPECT_FALSE(gsm8k_correct("", "18"));
}

// ------------------------------------------------------------------ MATH

TEST(EvalMath, BoxedExtraction) {
  EXPECT_EQ(last_boxed("so \\boxed{\\frac{1}{2}} and").value(), "\\frac{1}{2}");
  EXPECT_EQ(last_boxed("\\boxed{1} then \\boxed{{a}+\\{b\\}}").value(), "{a}+\\{b\\}");
  EXPECT_EQ(last_boxed("$\\boxed 5$").value(), "5");
  EXPECT_EQ(last_boxed("\\fbox{7}").value(), "7");
  EXPECT_FALSE(last_boxed("\\boxed{unbalanced").has_value());
  EXPECT_FALSE(last_boxed("no box").has_value());
}

TEST(EvalMath, Equivalence) {
  EXPECT_TRUE(math_equivalent("\\dfrac{1}{2}", "\\frac12"));
  EXPECT_TRUE(math_equivalent("\\frac{1}{2}", "0.5"));
  EXPECT_TRUE(math_equivalent("1/2", "\\frac{1}{2}"));
  EXPECT_TRUE(math_equivalent("\\left( 1, 2 \\right)", "(1,2)"));
  EXPECT_TRUE(math_equivalent("10\\text{ cm}", "10"));
  EXPECT_TRUE(math_equivalent("30^\\circ", "30"));
  EXPECT_TRUE(math_equivalent("50\\%", "50"));
  EXPECT_TRUE(math_equivalent("5.0", "5"));
  EXPECT_TRUE(math_equivalent("x = 5", "5"));
  EXPECT_TRUE(math_equivalent("1,000", "1000"));
  EXPECT_TRUE(math_equivalent("\\sqrt3", "\\sqrt{3}"));
  EXPECT_TRUE(math_equivalent("\\text{(B)}", "(B)"));
  EXPECT_TRUE(math_equivalent("-\\frac{3}{4}", "-0.75"));
  EXPECT_FALSE(math_equivalent("\\frac{1}{3}", "0.33"));
  EXPECT_FALSE(math_equivalent("2", "3"));
  EXPECT_FALSE(math_equivalent("\\sqrt{2}", "\\sqrt{3}"));
  EXPECT_FALSE(math_equivalent("(1,2)", "(2,1)"));
  // Model text is compared, never evaluated: an expression is not "equal" to its value.
  EXPECT_FALSE(math_equivalent("2+3", "5"));
  EXPECT_TRUE(math_correct("... so \\boxed{\\dfrac{3}{4}}.", "\\frac{3}{4}"));
  EXPECT_FALSE(math_correct("the answer is 3/4", "\\frac{3}{4}"));  // no box, no credit
}

// ------------------------------------------------------------------ SQL

std::string make_db(const std::string& dir) {
  std::string path = dir + "/shop.sqlite";
  sqlite3* db;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* sql =
      "CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INTEGER);"
      "INSERT INTO item VALUES (1,'apple',1.5,10),(2,'pear',2.0,0),(3,'fig',3.25,7),(4,'kiwi',2.0,3);"
      "CREATE TABLE big(x INTEGER);"
      "INSERT INTO big VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10);";
  EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  return path;
}

TEST(EvalSql, ExecutionAccuracy) {
  std::string dir = s0::testing::temp_dir("eval_sql");
  std::string db = make_db(dir);
  auto gold = run_sql(db, "SELECT name FROM item WHERE qty > 0");
  ASSERT_TRUE(gold.ok) << gold.error;
  EXPECT_EQ(gold.rows.size(), 3u);
  // Same multiset in another order: a match when the gold query has no ORDER BY.
  auto pred = run_sql(db, "SELECT name FROM item WHERE qty >= 1 ORDER BY name DESC");
  EXPECT_TRUE(sql_results_match(gold, pred, sql_has_order_by("SELECT name FROM item WHERE qty > 0")));
  // Ordered gold: order matters.
  std::string og = "SELECT name FROM item ORDER BY price, id";
  auto g2 = run_sql(db, og);
  EXPECT_TRUE(sql_has_order_by(og));
  EXPECT_FALSE(sql_results_match(g2, run_sql(db, "SELECT name FROM item ORDER BY id"), true));
  EXPECT_TRUE(sql_results_match(g2, run_sql(db, "select name from item order by price asc, id"), true));
  // 2.0 (REAL) equals 2 (INTEGER), as Python's sqlite3 rows compare.
  EXPECT_TRUE(sql_results_match(run_sql(db, "SELECT price FROM item WHERE id = 2"), run_sql(db, "SELECT 2"), false));
  // Duplicates count (multiset, not set).
  EXPECT_FALSE(sql_results_match(run_sql(db, "SELECT price FROM item WHERE price = 2"), run_sql(db, "SELECT 2.0"), false));
  EXPECT_EQ(extract_sql("<think>x</think>```sql\nSELECT 1;\n```"), "SELECT 1");
}

TEST(EvalSql, HostileQueriesRefused) {
  std::string dir = s0::testing::temp_dir("eval_sql_hostile");
  std::string db = make_db(dir);
  EXPECT_FALSE(run_sql(db, "DELETE FROM item").ok);
  EXPECT_FALSE(run_sql(db, "DROP TABLE item").ok);
  EXPECT_FALSE(run_sql(db, "ATTACH DATABASE '" + dir + "/other.sqlite' AS o").ok);
  EXPECT_FALSE(std::filesystem::exists(dir + "/other.sqlite"));
  EXPECT_FALSE(run_sql(db, "PRAGMA writable_schema = 1").ok);
  EXPECT_FALSE(run_sql(db, "SELECT 1; DELETE FROM item").ok);
  EXPECT_FALSE(run_sql(db, "SELECT load_extension('/tmp/x.so')").ok);
  // Runaway query: stopped by the progress handler.
  auto r = run_sql(db, "SELECT count(*) FROM big a, big b, big c, big d, big e, big f, big g, big h, big i", 0.3);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "time limit exceeded");
  EXPECT_EQ(run_sql(db, "SELECT count(*) FROM item").rows.at(0).at(0), "4");  // database intact
  EXPECT_NE(sqlite_schema(db).find("CREATE TABLE item"), std::string::npos);
}

TEST(EvalSql, CheckAllSpider) {
  std::string dir = s0::testing::temp_dir("eval_sql_all");
  std::filesystem::create_directories(dir + "/db/shop");
  make_db(dir + "/db/shop");
  write(dir + "/dev.json", R"([{"question":"Names in stock","query":"SELECT name FROM item WHERE qty > 0","db_id":"shop"}])");
  auto tasks = read_tasks(TaskKind::Spider, dir + "/dev.json", dir + "/db");
  std::vector<const Task*> ts = {&tasks[0], &tasks[0], &tasks[0]};
  auto v = check_all(ts, {"```sql\nSELECT name FROM item WHERE qty != 0;\n```", "SELECT name FROM item", "DELETE FROM item"},
                     sandbox(), {});
  EXPECT_TRUE(v[0].passed) << v[0].detail;
  EXPECT_FALSE(v[1].passed);
  EXPECT_FALSE(v[2].passed);
}

// ------------------------------------------------------------------ statistics

// Exact binomial coefficient for small arguments (independent of the product formula).
double binom(int n, int k) {
  if (k < 0 || k > n) return 0;
  unsigned long long r = 1;
  for (int i = 1; i <= k; ++i) r = r * static_cast<unsigned long long>(n - k + i) / static_cast<unsigned long long>(i);
  return static_cast<double>(r);
}

TEST(EvalStats, PassAtKMatchesBinomials) {
  for (int n : {1, 5, 16, 40})
    for (int c = 0; c <= n; ++c)
      for (int k = 1; k <= n; ++k) {
        double expect = 1.0 - binom(n - c, k) / binom(n, k);
        EXPECT_NEAR(pass_at_k(n, c, k), expect, 1e-12) << n << " " << c << " " << k;
      }
  EXPECT_DOUBLE_EQ(pass_at_k(16, 3, 1), 3.0 / 16);  // pass@1 = c / n
  // Large n (binomials overflow 64 bits): against log-gamma binomials.
  auto lnC = [](double n, double k) { return std::lgamma(n + 1) - std::lgamma(k + 1) - std::lgamma(n - k + 1); };
  EXPECT_NEAR(pass_at_k(200, 10, 100), 1.0 - std::exp(lnC(190, 100) - lnC(200, 100)), 1e-9);
  EXPECT_THROW(pass_at_k(5, 6, 1), s0::Error);
  EXPECT_THROW(pass_at_k(5, 1, 6), s0::Error);
}

TEST(EvalStats, StudentTClosedForms) {
  // df = 1 is the Cauchy distribution: p = 1 - (2/pi) atan|t|; df = 2: p = 1 - |t| / sqrt(2 + t^2).
  for (double t : {0.0, 0.3, 1.0, 2.5, 10.0}) {
    EXPECT_NEAR(student_t_two_sided_p(t, 1), 1 - 2 / M_PI * std::atan(t), 1e-12) << t;
    EXPECT_NEAR(student_t_two_sided_p(-t, 2), 1 - t / std::sqrt(2 + t * t), 1e-12) << t;
  }
  // Large df approaches the normal: two-sided p at 1.959964 is 0.05.
  EXPECT_NEAR(student_t_two_sided_p(1.959963984540054, 1e7), 0.05, 1e-6);
  // Textbook table value: t(0.975; 10) = 2.228139.
  EXPECT_NEAR(student_t_two_sided_p(2.228138851986, 10), 0.05, 1e-9);
}

TEST(EvalStats, McNemarExact) {
  // By hand: b=1, c=9 -> 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024; b=0, c=48 -> 2 / 2^48.
  EXPECT_NEAR(mcnemar_exact_p(1, 9), 22.0 / 1024, 1e-15);
  EXPECT_NEAR(mcnemar_exact_p(9, 1), 22.0 / 1024, 1e-15);
  EXPECT_NEAR(mcnemar_exact_p(0, 48) / std::ldexp(2.0, -48), 1.0, 1e-9);
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(5, 5), 1.0);  // min(1, ...)
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(0, 0), 1.0);
  // R: binom.test(3, 20)$p.value = 0.002576828
  EXPECT_NEAR(mcnemar_exact_p(3, 17), 0.002576828, 1e-9);
}

TEST(EvalStats, TTestsMatchR) {
  // R's `sleep` data (Cushny & Peebles); expected values are R's printed output of
  // t.test(extra ~ group, data = sleep)  -> t = -1.8608, df = 17.776, p-value = 0.07939
  // t.test(g1, g2, paired = TRUE)        -> t = -4.0621, df = 9,      p-value = 0.002833
  std::vector<double> g1 = {0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0};
  std::vector<double> g2 = {1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4};
  auto w = welch_t_test(g1, g2);
  EXPECT_NEAR(w.t, -1.8608, 1e-4);
  EXPECT_NEAR(w.df, 17.776, 1e-3);
  EXPECT_NEAR(w.p, 0.07939, 1e-5);
  EXPECT_NEAR(w.mean_diff, 0.75 - 2.33, 1e-12);
  auto p = paired_t_test(g1, g2);
  EXPECT_NEAR(p.t, -4.0621, 1e-4);
  EXPECT_DOUBLE_EQ(p.df, 9);
  EXPECT_NEAR(p.p, 0.002833, 1e-6);
  // Degenerate: zero variance on both sides.
  EXPECT_DOUBLE_EQ(welch_t_test({1, 1}, {1, 1}).p, 1);
  EXPECT_DOUBLE_EQ(welch_t_test({2, 2}, {1, 1}).p, 0);
  EXPECT_THROW(welch_t_test({1}, {1, 2}), s0::Error);
  EXPECT_NEAR(stddev({1, 2, 3, 4}), std::sqrt(5.0 / 3.0), 1e-15);
}

}  // namespace
