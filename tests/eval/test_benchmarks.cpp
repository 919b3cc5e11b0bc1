// The checkers and `s0 check` against the real benchmark files (tests/data/benchmarks/, copied
// unmodified from their public sources with their licences; see the README there): every
// HumanEval canonical solution passes, every GSM8K gold answer and every MATH-500 boxed answer
// and reference solution is accepted, every Spider gold query matches itself; and samples
// files in human-eval's format are checked into <samples>_results.jsonl with pass@k.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "s0/eval/check_samples.h"
#include "s0/eval/checkers.h"
#include "s0/eval/stats.h"
#include "s0/eval/tasks.h"
#include "s0/io/atomic_file.h"
#include "s0/util/error.h"
#include "test_util.h"

namespace {

using namespace s0::eval;
using nlohmann::json;
namespace fs = std::filesystem;

std::string bench(const std::string& f) {
  return (fs::path(S0_FIXTURES_DIR) / ".." / "data" / "benchmarks" / f).lexically_normal().string();
}

const Sandbox& sandbox() {
  static Sandbox sb = Sandbox::create(true);
  return sb;
}

const std::vector<Task>& humaneval() {
  static std::vector<Task> t = read_tasks(TaskKind::HumanEval, bench("HumanEval.jsonl.gz"));
  return t;
}

// Spider tasks from the real gold.sql ("SQL<TAB>db_id" per line; the questions are not in it).
std::string spider_tasks_file(const std::string& dir) {
  std::ifstream in(bench("spider/department_store/gold.sql"));
  std::string line, out;
  int i = 0;
  while (std::getline(in, line)) {
    size_t tab = line.rfind('\t');
    if (tab == std::string::npos) continue;
    out += json{{"question", "q" + std::to_string(i++)}, {"query", line.substr(0, tab)}, {"db_id", line.substr(tab + 1)}}
               .dump() +
           "\n";
  }
  const std::string path = dir + "/spider_gold.jsonl";
  s0::io::write_file_atomic(path, out);
  return path;
}

TEST(RealBenchmarks, FilesReadWithTheirStandardSplits) {
  // What `s0 collect/eval/experiment` read: the files as published, split as METHOD.md says.
  ASSERT_EQ(humaneval().size(), 164u);
  EXPECT_EQ(humaneval()[0].id, "HumanEval/0");
  EXPECT_EQ(standard_split(TaskKind::HumanEval, 164, true).value(), "0-79");
  EXPECT_EQ(standard_split(TaskKind::HumanEval, 164, false).value(), "80-163");
  auto gsm = read_tasks(TaskKind::GSM8K, bench("gsm8k_test.jsonl.gz"));
  EXPECT_EQ(gsm.size(), 1319u);
  auto math = read_tasks(TaskKind::Math, bench("math500_test.jsonl.gz"));
  ASSERT_EQ(math.size(), 500u);
  EXPECT_EQ(math[0].id, "test/precalculus/807.json");
  EXPECT_EQ(standard_split(TaskKind::Math, 500, true).value(), "0-249");
  // The kind is recognised from the records themselves (s0 check --task-kind auto).
  EXPECT_EQ(detect_task_kind(bench("HumanEval.jsonl.gz")), TaskKind::HumanEval);
  EXPECT_EQ(detect_task_kind(bench("gsm8k_test.jsonl.gz")), TaskKind::GSM8K);
  EXPECT_EQ(detect_task_kind(bench("math500_test.jsonl.gz")), TaskKind::Math);
  const std::string dir = s0::testing::temp_dir("bench_detect");
  EXPECT_EQ(detect_task_kind(spider_tasks_file(dir)), TaskKind::Spider);
  s0::io::write_file_atomic(dir + "/odd.jsonl", "{\"x\": 1}\n");
  EXPECT_THROW(detect_task_kind(dir + "/odd.jsonl"), s0::Error);
}

TEST(RealBenchmarks, EveryHumanEvalCanonicalSolutionPassesAndAnEmptyBodyFails) {
  const auto& tasks = humaneval();
  std::vector<const Task*> ts;
  std::vector<std::string> comps;
  for (const auto& t : tasks) {
    ts.push_back(&t);
    comps.push_back(t.reference);
  }
  // An empty body fails (the checker can say no); on 24 problems, to keep the test short.
  for (size_t i = 0; i < tasks.size(); i += 7) {
    ts.push_back(&tasks[i]);
    comps.push_back("    pass\n");
  }
  CheckOptions opt;
  opt.workers = 2;
  auto v = check_all(ts, comps, sandbox(), opt);
  int canonical = 0, empty_failed = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    EXPECT_TRUE(v[i].passed) << tasks[i].id << ": " << v[i].detail;
    canonical += v[i].passed;
  }
  for (size_t i = tasks.size(); i < v.size(); ++i) {
    EXPECT_FALSE(v[i].passed) << ts[i]->id << " passed with an empty body";
    empty_failed += !v[i].passed;
  }
  EXPECT_EQ(canonical, 164);
  EXPECT_EQ(empty_failed, 24);
}

// The gold number as lm-evaluation-harness reads it, computed here on its own: the text after
// the last "#### ", commas removed.
std::string lm_eval_gold(const std::string& answer) {
  std::string s = answer.substr(answer.rfind("####") + 4);
  s.erase(std::remove_if(s.begin(), s.end(), [](char c) { return c == ',' || c == ' ' || c == '\n'; }), s.end());
  return s;
}

TEST(RealBenchmarks, EveryGsm8kGoldAnswerIsAccepted) {
  auto tasks = read_tasks(TaskKind::GSM8K, bench("gsm8k_test.jsonl.gz"));
  int with_commas = 0;
  for (const auto& t : tasks) {
    // The whole worked solution as a completion, and the bare final line.
    EXPECT_TRUE(gsm8k_correct(t.reference, t.answer)) << t.id << ": " << t.answer;
    EXPECT_TRUE(gsm8k_correct("#### " + t.answer, t.answer)) << t.id;
    EXPECT_EQ(extract_gsm8k_answer(t.reference).value_or(""), lm_eval_gold(t.reference)) << t.id;
    with_commas += t.answer.find(',') != std::string::npos;
    // A different number is refused.
    const std::string other = std::to_string(std::stoll(lm_eval_gold(t.reference)) + 1);
    EXPECT_FALSE(gsm8k_correct("#### " + other, t.answer)) << t.id;
  }
  EXPECT_EQ(tasks.size(), 1319u);
  EXPECT_EQ(with_commas, 14) << "the file's comma-grouped gold answers";
}

TEST(RealBenchmarks, EveryMath500BoxedAnswerAndReferenceSolutionIsAccepted) {
  auto tasks = read_tasks(TaskKind::Math, bench("math500_test.jsonl.gz"));
  ASSERT_EQ(tasks.size(), 500u);
  int neighbours_equal = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const auto& t = tasks[i];
    EXPECT_TRUE(math_correct("The answer is $\\boxed{" + t.answer + "}$.", t.answer)) << t.id << ": " << t.answer;
    EXPECT_TRUE(math_correct(t.reference, t.answer)) << t.id << ": " << t.answer;
    const auto& next = tasks[(i + 1) % tasks.size()];
    if (next.answer != t.answer) neighbours_equal += math_correct("\\boxed{" + next.answer + "}", t.answer);
  }
  // Another problem's (different) answer is refused nearly always.
  EXPECT_LE(neighbours_equal, 2);
}

TEST(RealBenchmarks, EverySpiderGoldQueryMatchesItself) {
  const std::string dir = s0::testing::temp_dir("bench_spider");
  auto tasks = read_tasks(TaskKind::Spider, spider_tasks_file(dir), bench("spider"));
  ASSERT_EQ(tasks.size(), 88u);
  std::vector<const Task*> ts;
  std::vector<std::string> comps;
  for (const auto& t : tasks) {
    ts.push_back(&t);
    comps.push_back("```sql\n" + t.reference + ";\n```");
  }
  auto v = check_all(ts, comps, sandbox(), {});
  for (size_t i = 0; i < v.size(); ++i) EXPECT_TRUE(v[i].passed) << i << ": " << tasks[i].reference << ": " << v[i].detail;
}

// ------------------------------------------------------------------ s0 check

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

TEST(CheckSamples, HumanEvalSamplesFileGivesResultsAndPassAtK) {
  const std::string dir = s0::testing::temp_dir("check_he");
  const auto& tasks = humaneval();
  // Problems 0-9, three samples each: canonical, a wrong body, canonical again (in human-eval's
  // samples format, with an extra field that must be carried through).
  std::string samples;
  for (int i = 0; i < 10; ++i)
    for (int s = 0; s < 3; ++s)
      samples += nlohmann::ordered_json{{"task_id", tasks[i].id},
                                        {"completion", s == 1 ? std::string("    return None\n") : tasks[i].reference},
                                        {"sample", s}}
                     .dump() +
                 "\n";
  s0::io::write_file_atomic(dir + "/samples.jsonl", samples);
  auto r = s0::testing::run_cli({"check", "--tasks", bench("HumanEval.jsonl.gz"), "--samples", dir + "/samples.jsonl",
                                 "--k", "1,2,10", "--unsafe-exec"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json summary = json::parse(r.out);
  EXPECT_EQ(summary["task_kind"], "humaneval");
  EXPECT_EQ(summary["samples"], 30);
  EXPECT_EQ(summary["passed"], 20);
  EXPECT_EQ(summary["tasks_attempted"], 10);
  EXPECT_EQ(summary["tasks_total"], 164);
  // n = 3, c = 2 on every problem: pass@1 = 2/3, pass@2 = 1 - C(1,2)/C(3,2) = 1; k = 10 > n.
  EXPECT_NEAR(summary["pass@1"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(summary["pass@2"].get<double>(), 1.0, 1e-12);
  EXPECT_FALSE(summary.contains("pass@10"));
  EXPECT_EQ(summary["skipped_k"], json({10}));

  auto res = read_jsonl(dir + "/samples.jsonl_results.jsonl");
  ASSERT_EQ(res.size(), 30u);
  std::istringstream in(samples);
  std::string line;
  for (size_t i = 0; i < res.size() && std::getline(in, line); ++i) {
    // The input line, with "result" and "passed" added.
    const bool ok = i % 3 != 1;
    json input = json::parse(line);
    json got = res[i];
    got.erase("result");
    got.erase("passed");
    EXPECT_EQ(got, input) << i;
    EXPECT_EQ(res[i]["passed"], ok) << i;
    if (!ok) EXPECT_EQ(res[i]["result"].get<std::string>().rfind("failed: ", 0), 0u) << res[i]["result"];
  }
  // Key order as written: read the first result line raw.
  std::ifstream raw(dir + "/samples.jsonl_results.jsonl");
  std::getline(raw, line);
  EXPECT_EQ(line.rfind("{\"task_id\":\"HumanEval/0\",\"completion\":", 0), 0u) << line;
  EXPECT_NE(line.find(",\"sample\":0,\"result\":\"passed\",\"passed\":true}"), std::string::npos) << line;
}

TEST(CheckSamples, GsmMathSpiderSamples) {
  const std::string dir = s0::testing::temp_dir("check_others");
  // GSM8K by position ("index") and by the reader's ids ("gsm8k/<i>").
  s0::io::write_file_atomic(dir + "/gsm.jsonl",
                            "{\"index\": 0, \"completion\": \"so #### 18\"}\n"
                            "{\"task_id\": \"gsm8k/0\", \"completion\": \"#### 17\"}\n"
                            "{\"task_id\": \"gsm8k/1\", \"completion\": \"It takes 3 bolts.\"}\n");
  auto r = s0::testing::run_cli({"check", "--tasks", bench("gsm8k_test.jsonl.gz"), "--samples", dir + "/gsm.jsonl", "--k", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json s = json::parse(r.out);
  EXPECT_EQ(s["task_kind"], "gsm8k");
  EXPECT_EQ(s["passed"], 2);
  EXPECT_NEAR(s["pass@1"].get<double>(), (0.5 + 1.0) / 2, 1e-12);
  auto res = read_jsonl(dir + "/gsm.jsonl_results.jsonl");
  ASSERT_EQ(res.size(), 3u);
  EXPECT_EQ(res[1]["passed"], false);
  EXPECT_NE(res[1]["result"].get<std::string>().find("answer 17"), std::string::npos) << res[1];

  // MATH-500 by unique_id.
  auto math = read_tasks(TaskKind::Math, bench("math500_test.jsonl.gz"));
  s0::io::write_file_atomic(dir + "/math.jsonl", json{{"task_id", math[0].id}, {"completion", math[0].reference}}.dump() + "\n" +
                                                    json{{"task_id", math[1].id}, {"completion", "\\boxed{7}"}}.dump() + "\n");
  r = s0::testing::run_cli({"check", "--tasks", bench("math500_test.jsonl.gz"), "--samples", dir + "/math.jsonl"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  s = json::parse(r.out);
  EXPECT_EQ(s["passed"], math[1].answer == "7" ? 2 : 1);
  EXPECT_NEAR(s["pass@1"].get<double>(), 0.5, 1e-12);

  // Spider (tasks built from the real gold queries; --db-dir needed).
  const std::string spider = spider_tasks_file(dir);
  s0::io::write_file_atomic(dir + "/sql.jsonl", "{\"task_id\": \"spider/0\", \"completion\": \"SELECT 1\"}\n");
  r = s0::testing::run_cli({"check", "--tasks", spider, "--samples", dir + "/sql.jsonl"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--db-dir"), std::string::npos) << r.err;
  auto sp = read_tasks(TaskKind::Spider, spider, bench("spider"));
  s0::io::write_file_atomic(dir + "/sql.jsonl", json{{"task_id", "spider/3"}, {"completion", sp[3].reference}}.dump() + "\n" +
                                                   "{\"task_id\": \"spider/4\", \"completion\": \"SELECT 1\"}\n");
  r = s0::testing::run_cli({"check", "--tasks", spider, "--db-dir", bench("spider"), "--samples", dir + "/sql.jsonl"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  s = json::parse(r.out);
  EXPECT_EQ(s["task_kind"], "spider");
  EXPECT_EQ(s["passed"], 1);
}

TEST(CheckSamples, BadSamplesNameFileAndLine) {
  const std::string dir = s0::testing::temp_dir("check_bad");
  auto run = [&](const std::string& text) {
    s0::io::write_file_atomic(dir + "/s.jsonl", text);
    return s0::testing::run_cli({"check", "--tasks", bench("gsm8k_test.jsonl.gz"), "--samples", dir + "/s.jsonl"});
  };
  auto r = run("{\"index\": 0, \"completion\": \"1\"}\n{\"task_id\": \"HumanEval/0\", \"completion\": \"x\"}\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("s.jsonl:2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not in the task file"), std::string::npos) << r.err;
  r = run("{\"index\": 0}\n");
  EXPECT_NE(r.err.find("s.jsonl:1: needs \"completion\""), std::string::npos) << r.err;
  r = run("{\"index\": 5000, \"completion\": \"1\"}\n");
  EXPECT_NE(r.err.find("out of range"), std::string::npos) << r.err;
  r = run("not json\n");
  EXPECT_NE(r.err.find("s.jsonl:1: invalid JSON"), std::string::npos) << r.err;
  r = run("");
  EXPECT_NE(r.err.find("no samples"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/s.jsonl_results.jsonl"));
  r = s0::testing::run_cli({"check", "--tasks", bench("gsm8k_test.jsonl.gz"), "--samples", dir + "/s.jsonl", "--k", "0"});
  EXPECT_NE(r.err.find("k must be >= 1"), std::string::npos) << r.err;
}

}  // namespace
