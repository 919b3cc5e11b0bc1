// Pipeline pieces without a model: the summary of per-problem results (pass@1, sampled pass@k,
// flips against base, first-character divergence), the resume header, and the reports (every
// Markdown table and SVG chart the pipeline writes or prints), byte for byte.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "s0/io/atomic_file.h"
#include "s0/pipeline/common.h"
#include "s0/pipeline/evaluate.h"
#include "s0/pipeline/report.h"
#include "s0/util/error.h"
#include "test_util.h"

namespace {

using namespace s0::pipeline;
using nlohmann::json;

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// Three problems under base and one state set: A and C flip FAIL->PASS (A's outputs share
// "    re", C's nothing), B flips PASS->FAIL; the state set also has 4 samples per problem.
std::vector<json> results() {
  auto rec = [](const std::string& cond, const std::string& id, bool passed, const std::string& completion,
                int64_t tokens) {
    return json{{"condition", cond}, {"alpha", cond == "base" ? json(nullptr) : json(0.5)},
                {"task_id", id},     {"passed", passed},
                {"completion", completion}, {"tokens", tokens},
                {"decode_seconds", 0.5}};
  };
  std::vector<json> r = {rec("base", "A", false, "    return x", 10), rec("base", "B", true, "ok", 10),
                         rec("base", "C", false, "abc", 10),          rec("s0@0.5", "A", true, "    result = x", 20),
                         rec("s0@0.5", "B", false, "no", 20),         rec("s0@0.5", "C", true, "xyz", 20)};
  for (int i = 3; i < 6; ++i) r[i]["samples"] = 4;
  r[3]["sample_passes"] = 4;
  r[4]["sample_passes"] = 0;
  r[5]["sample_passes"] = 2;
  return r;
}

TEST(PipelineSummary, PassRatesFlipsAndDivergence) {
  json s = summarize(results(), {"base", "s0@0.5"}, {1, 2, 8});
  ASSERT_EQ(s["conditions"].size(), 2u);
  const json& b = s["conditions"][0];
  EXPECT_EQ(b["name"], "base");
  EXPECT_EQ(b["problems"], 3);
  EXPECT_EQ(b["greedy_passed"], 1);
  EXPECT_DOUBLE_EQ(b["pass@1"].get<double>(), 1.0 / 3);
  EXPECT_TRUE(b["alpha"].is_null());
  EXPECT_DOUBLE_EQ(b["decode_tokens_per_s"].get<double>(), 20.0);
  EXPECT_FALSE(b.contains("sampled"));
  EXPECT_FALSE(b.contains("delta_pp"));  // base is not compared with itself
  const json& c = s["conditions"][1];
  EXPECT_EQ(c["greedy_passed"], 2);
  EXPECT_EQ(c["alpha"], 0.5);
  EXPECT_DOUBLE_EQ(c["decode_tokens_per_s"].get<double>(), 40.0);
  EXPECT_NEAR(c["delta_pp"].get<double>(), 100.0 / 3, 1e-12);
  EXPECT_EQ(c["fail_to_pass"], json({"A", "C"}));
  EXPECT_EQ(c["pass_to_fail"], json({"B"}));
  EXPECT_EQ(c["first_char_divergence"]["positions"], json({6, 0}));
  EXPECT_EQ(c["first_char_divergence"]["median"], 6);
  EXPECT_DOUBLE_EQ(c["first_char_divergence"]["at_position_0"].get<double>(), 0.5);
  // pass@k from 4 samples with 4, 0 and 2 passes; k = 8 > n is left out.
  EXPECT_DOUBLE_EQ(c["sampled"]["pass@1"].get<double>(), (1.0 + 0 + 0.5) / 3);
  EXPECT_NEAR(c["sampled"]["pass@2"].get<double>(), (1.0 + 0 + 5.0 / 6) / 3, 1e-12);
  EXPECT_FALSE(c["sampled"].contains("pass@8"));
  // A condition missing from the results counts zero problems.
  json e = summarize(results(), {"base", "other"}, {1});
  EXPECT_EQ(e["conditions"][1]["problems"], 0);
  EXPECT_TRUE(e["conditions"][1]["fail_to_pass"].empty());
}

TEST(PipelineCommon, ResumeHeaderRefusesOtherSettings) {
  const std::string path = s0::testing::temp_dir("pipeline_header") + "/out.config.json";
  check_or_write_header(path, {{"samples", 4}});
  EXPECT_EQ(json::parse(s0::io::read_file(path)), json({{"samples", 4}}));
  EXPECT_NO_THROW(check_or_write_header(path, {{"samples", 4}}));
  try {
    check_or_write_header(path, {{"samples", 8}});
    FAIL() << "other settings accepted";
  } catch (const s0::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + " was written with other settings"), std::string::npos) << e.what();
  }
  EXPECT_NE(problem_seed(0, 1), problem_seed(0, 2));
  EXPECT_NE(problem_seed(0, 1), problem_seed(1, 1));
}

// ------------------------------------------------------------------ formatting

TEST(PipelineReport, NumbersAndTables) {
  EXPECT_EQ(fixed(2.26), "2.3");
  EXPECT_EQ(fixed(1.0 / 3, 3), "0.333");
  EXPECT_EQ(percent(0.25), "25.0%");
  EXPECT_EQ(plus_minus(72, 0), "72.0 ± 0.0");
  EXPECT_EQ(p_value(0.07939), "0.0794");
  EXPECT_EQ(p_value(7.1e-15), "7.1e-15");
  EXPECT_EQ(md_row({"a", "", "b"}), "| a |  | b |\n");
  EXPECT_EQ(md_row({"a", "", "b"}, true), "| a | | b |\n");
  EXPECT_EQ(md_rule(3), "|---|---|---|\n");
}

TEST(PipelineReport, Charts) {
  std::string bar = svg_bar_chart("T <1>", {"up", "down"}, {2.5, -1}, "pp");
  EXPECT_EQ(bar.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"360\"", 0), 0u) << bar;
  EXPECT_EQ(bar.substr(bar.size() - 7), "</svg>\n");
  EXPECT_NE(bar.find(">T &lt;1&gt;</text>"), std::string::npos) << bar;
  EXPECT_NE(bar.find("fill=\"#3a7bd5\"><title>up: 2.50 pp</title>"), std::string::npos) << bar;
  EXPECT_NE(bar.find("fill=\"#d5533a\"><title>down: -1.00 pp</title>"), std::string::npos) << bar;
  // Whiskers: one vertical and two caps per bar with a non-zero error, the value labelled "m ± e".
  std::string whisk = svg_bar_chart("W", {"a", "b"}, {40, 60}, "%", {5, 0});
  EXPECT_EQ(count(whisk, "stroke=\"#333\"/>"), 1u + 3u) << "the zero line and one bar's three whisker lines";
  EXPECT_NE(whisk.find(">40.0 ± 5.0</text>"), std::string::npos) << whisk;
  EXPECT_NE(whisk.find(">60.0</text>"), std::string::npos) << whisk;
  std::string line = svg_line_chart("L", {0.1, 1}, {30, 50}, {5, 0}, 20, "alpha", "pass@1 (%)");
  EXPECT_EQ(count(line, "<circle"), 2u);
  EXPECT_NE(line.find("<title>alpha 0.100: 30.00</title>"), std::string::npos) << line;
  EXPECT_NE(line.find(">base 20.0</text>"), std::string::npos) << line;
  EXPECT_EQ(count(line, "stroke=\"#3a7bd5\"/>"), 1u) << "one error bar (the other is 0)";
  EXPECT_EQ(count(line, "<path d=\"M"), 1u);
}

// ------------------------------------------------------------------ reports, byte for byte

TEST(PipelineReport, EvaluationReport) {
  json s = summarize(results(), {"base", "s0@0.5"}, {1, 2});
  s["meta"] = {{"model", "m"}, {"problems", 3}};
  EXPECT_EQ(evaluation_report(s),
            "# s0 evaluation report\n\n"
            "- **model**: m\n"
            "- **problems**: 3\n\n"
            "| condition | alpha | greedy pass@1 | delta vs base | FAIL->PASS | PASS->FAIL | sampled pass@1 | sampled "
            "pass@2 | decode tok/s |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
            "| base |  | 33.3% (1/3) |  |  |  |  |  | 20.0 |\n"
            "| s0@0.5 | 0.5 | 66.7% (2/3) | +33.3 pp | 2 | 1 | 50.0% | 61.1% | 40.0 |\n"
            "\n**s0@0.5**: FAIL->PASS flips first differ from the base output at character 6 (median); 50.0% at "
            "position 0.\n");
}

json experiment_summary() {
  json m1 = {{"name", "s0@0.07"},
             {"alpha", 0.07},
             {"seeds", 2},
             {"pass@1_per_seed", {60.0, 80.0}},
             {"pass@1_mean", 70.0},
             {"pass@1_std", 14.142135623730951},
             {"delta_pp_mean", 30.0},
             {"delta_pp_std", 14.142135623730951},
             {"welch_vs_base", {{"t", 3.0}, {"df", 1.0}, {"p", 0.2048}, {"zero_variance", false}}},
             {"mcnemar_p_max", 0.5},
             {"fail_to_pass", 3},
             {"pass_to_fail", 0},
             {"first_char_divergence", {{"flips", 3}, {"median", 6}, {"at_position_0", 1.0 / 3}}}};
  json m2 = {{"name", "s0@1"},
             {"alpha", 1.0},
             {"seeds", 2},
             {"pass@1_per_seed", {40.0, 40.0}},
             {"pass@1_mean", 40.0},
             {"pass@1_std", 0.0},
             {"delta_pp_mean", 0.0},
             {"delta_pp_std", 0.0},
             {"welch_vs_base", {{"t", 0.0}, {"df", 1.0}, {"p", 1.0}, {"zero_variance", true}}},
             {"mcnemar_p_max", 1e-5},
             {"fail_to_pass", 1},
             {"pass_to_fail", 1}};
  json seed0 = {{"seed", 0},
                {"collect", {{"kept", 3}}},
                {"final_loss", 1.25},
                {"conditions", {{{"name", "base"}}, {{"pass@1", 0.6}, {"delta_pp", 20.0}}, {{"pass@1", 0.4}, {"delta_pp", 0.0}}}}};
  json seed1 = {{"seed", 1}, {"collect", {{"kept", 0}}}, {"error", "no verified training solutions"}};
  return {{"base", {{"pass@1", 40.0}, {"passed", 2}, {"problems", 5}}},
          {"methods", {m1, m2}},
          {"paired_tests", {{{"a", "s0@0.07"}, {"b", "s0@1"}, {"mean_diff_pp", 30.0}, {"t", 3.0}, {"df", 1}, {"p", 0.2048}}}},
          {"seeds", {seed0, seed1}},
          {"train_problems", 3},
          {"config", {{"model", "/m"}, {"tasks", "/t.jsonl"}, {"task_kind", "he"}, {"seeds", {0, 1}}}}};
}

TEST(PipelineReport, ExperimentReport) {
  EXPECT_EQ(experiment_report(experiment_summary(), false),
            "# S0 experiment\n\n"
            "- model: `/m`\n"
            "- tasks: `/t.jsonl` (humaneval), 3 training problems, 5 held out\n"
            "- seeds: [0,1]\n"
            "- sandbox: none\n\n"
            "| method | pass@1 (mean ± std) | delta vs base (pp) | Welch p vs base | McNemar p (max over seeds) | "
            "FAIL->PASS | PASS->FAIL | params | file | train s | decode tok/s (x base) | seeds |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            "| base | 40.0 | | | | | | | | | | (deterministic) |\n"
            "| s0@0.07 | 70.0 ± 14.1 | 30.0 ± 14.1 | 0.2048 | 0.5000 | 3 | 0 |  |  |  |  | 2 |\n"
            "| s0@1 | 40.0 ± 0.0 | 0.0 ± 0.0 | undefined (zero variance) | 1.0e-05 | 1 | 1 |  |  |  |  | 2 |\n"
            "\nWelch's t-test compares the per-seed pass@1 with the (deterministic) base; McNemar's exact test "
            "compares base and each method problem by problem within a seed (FAIL->PASS vs PASS->FAIL), the largest p "
            "over seeds shown. Decode speed: one stream, the first seed's adapter attached, median of 3 interleaved "
            "runs.\n"
            "\nPaired t-test s0@0.07 vs s0@1 (same seeds): mean 30.0 pp, t = 3.000, p = 0.2048.\n"
            "\ns0@0.07: of 3 FAIL->PASS flips, 33.3% differ from the base output at the first character (median "
            "position 6).\n"
            "\n![pass@1 by method](methods.svg)\n\n![per-seed deltas](deltas.svg)\n\n![alpha sweep](alpha_sweep.svg)\n\n## Per seed\n\n"
            "| seed | kept examples | final loss | s0@0.07 pass@1 | s0@1 pass@1 |\n"
            "|---|---|---|---|---|\n"
            "| 0 | 3 | 1.2500 | 60.0 | 40.0 |\n"
            "| 1 | 0 |  | n/a | n/a |\n");
  EXPECT_NE(experiment_report(experiment_summary(), true).find("- sandbox: bubblewrap\n"), std::string::npos);
}

TEST(PipelineReport, ExperimentCharts) {
  json s = experiment_summary();
  std::string deltas = experiment_deltas_chart(s);
  EXPECT_NE(deltas.find(">Greedy pass@1 change vs base, per seed</text>"), std::string::npos) << deltas;
  EXPECT_NE(deltas.find("<title>s0 a0.07: 20.00 percentage points</title>"), std::string::npos) << deltas;
  EXPECT_NE(deltas.find("<title>s0 a1.00: 0.00 percentage points</title>"), std::string::npos) << deltas;
  EXPECT_EQ(count(deltas, "<rect x="), 2u);  // seed 1 has no conditions
  std::string sweep = experiment_alpha_chart(s);
  EXPECT_NE(sweep.find("<title>alpha 0.070: 70.00</title>"), std::string::npos) << sweep;
  EXPECT_NE(sweep.find("<title>alpha 1.000: 40.00</title>"), std::string::npos) << sweep;
  EXPECT_NE(sweep.find(">base 40.0</text>"), std::string::npos) << sweep;
  // One alpha: bars are labelled by seed alone.
  s["methods"].erase(1);
  s["seeds"][0]["conditions"].erase(2);
  std::string one = experiment_deltas_chart(s);
  EXPECT_NE(one.find("<title>s0: 20.00 percentage points</title>"), std::string::npos) << one;
}

TEST(PipelineReport, DemoReport) {
  json d = {{"eval_problems", 10},
            {"seeds", 1},
            {"alpha", 1.0},
            {"base_pass@1", 20.0},
            {"s0_pass@1_mean", 50.0},
            {"s0_pass@1_std", 0.0},
            {"delta_pp_mean", 30.0},
            {"delta_pp_std", 0.0},
            {"welch_p", nullptr},
            {"welch_zero_variance", nullptr},
            {"mcnemar_p_max", 0.071},
            {"fail_to_pass", 3},
            {"pass_to_fail", 0},
            {"state_set_bytes", 49152},
            {"decode_tokens_per_s", {{"base", 3163.24}, {"s0", 3167.46}, {"s0_over_base", 1.0013}}},
            {"report", "/o/experiment/report.md"},
            {"state_set", "/o/experiment/seed_0/states"}};
  EXPECT_EQ(demo_report(d, "/o/demo.json"),
            "\nS0 tuning on the built-in model: greedy pass@1 on 10 held-out problems, 1 seed, alpha 1\n\n"
            "| base | S0 (mean ± std) | delta pp (mean ± std) | Welch p | McNemar p (max over seeds) | state set | "
            "decode tok/s base / S0 |\n"
            "|---|---|---|---|---|---|---|\n"
            "| 20.0% | 50.0 ± 0.0% | 30.0 ± 0.0 | n/a | 0.071 | 48.0 KB | 3163.2 / 3167.5 |\n"
            "\nFAIL->PASS 3, PASS->FAIL 0 (summed over seeds)\n"
            "\nreport:    /o/experiment/report.md\nstate set: /o/experiment/seed_0/states\nsummary:   /o/demo.json\n");
  // Several seeds with zero spread; no state set trained (no speed, no mean).
  d["seeds"] = 5;
  d["welch_zero_variance"] = true;
  d["welch_p"] = 1.0;
  d["s0_pass@1_mean"] = nullptr;
  d["decode_tokens_per_s"] = nullptr;
  std::string r = demo_report(d, "/o/demo.json");
  EXPECT_NE(r.find(", 5 seeds, alpha 1\n"), std::string::npos) << r;
  EXPECT_NE(r.find("| 20.0% | n/a ± 0.0% | 30.0 ± 0.0 | undefined (std 0) | 0.071 | 48.0 KB | n/a / n/a |\n"),
            std::string::npos)
      << r;
}

TEST(PipelineReport, DemoReportComparesEveryArm) {
  json row = {{"pass@1_mean", 50.0}, {"pass@1_std", 2.0}, {"delta_pp_mean", 30.0}, {"delta_pp_std", 2.0},
              {"welch_p", 0.001}, {"welch_zero_variance", false}, {"params", 512}, {"bytes", 2048},
              {"decode_tokens_per_s", 100.0}, {"decode_vs_base", 1.0}};
  json s0 = row, lora = row;
  s0["name"] = "s0@1", s0["kind"] = "s0";
  lora["name"] = "lora", lora["kind"] = "lora", lora["pass@1_mean"] = 40.0, lora["params"] = 9000;
  lora["decode_tokens_per_s"] = 80.0, lora["decode_vs_base"] = 0.8, lora["welch_zero_variance"] = true;
  json d = {{"eval_problems", 10}, {"seeds", 3}, {"alpha", 1.0}, {"base_pass@1", 20.0}, {"s0_pass@1_mean", 50.0},
            {"s0_pass@1_std", 2.0}, {"delta_pp_mean", 30.0}, {"delta_pp_std", 2.0}, {"welch_p", 0.001},
            {"welch_zero_variance", false}, {"mcnemar_p_max", 0.071}, {"fail_to_pass", 3}, {"pass_to_fail", 0},
            {"state_set_bytes", 2048}, {"decode_tokens_per_s", nullptr}, {"report", "r"}, {"state_set", "s"},
            {"comparison", {s0, lora}},
            {"paired_tests", {{{"a", "s0@1"}, {"b", "lora"}, {"mean_diff_pp", 10.0}, {"t", 5.0}, {"df", 2.0}, {"p", 0.04}}}}};
  std::string r = demo_report(d, "/o/demo.json");
  EXPECT_NE(r.find("| method | pass@1 (mean ± std) | delta pp | Welch p | params | file | decode tok/s (x base) |\n"
                   "|---|---|---|---|---|---|---|\n"
                   "| s0@1 | 50.0 ± 2.0% | 30.0 ± 2.0 | 0.001 | 512 | 2.0 KB | 100.0 (1.00x) |\n"
                   "| lora | 40.0 ± 2.0% | 30.0 ± 2.0 | undefined (std 0) | 9000 | 2.0 KB | 80.0 (0.80x) |\n"
                   "\npaired t-test s0@1 vs lora: 10.0 pp, p = 0.04\n"),
            std::string::npos)
      << r;
}

}  // namespace
