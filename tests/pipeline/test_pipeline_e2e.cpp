// The pipeline end to end on a tiny random model through the CLI: collect -> train -> eval,
// every artefact written and well-formed, and resumption after a kill giving the same files
// as an uninterrupted run.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "s0/io/atomic_file.h"

namespace {

using nlohmann::json;
using s0::testing::run_cli;
namespace fs = std::filesystem;

std::string describe(const s0::testing::CliResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

// Problems a random model can pass: its completion lands inside a string literal, so any text
// without '"""' (or a NUL byte) gives a valid program whose check passes.
std::string write_tasks(const std::string& dir, int n) {
  std::string path = dir + "/tasks.jsonl";
  std::ofstream f(path);
  for (int i = 0; i < n; ++i) {
    json j = {{"task_id", "Str/" + std::to_string(i)},
              {"prompt", "def f():\n    return " + std::to_string(i) + "\n\nNOTE = \"\"\"\n"},
              {"canonical_solution", "note"},
              {"test", "\"\"\"\n\ndef check(candidate):\n    assert candidate() == " + std::to_string(i) + "\n"},
              {"entry_point", "f"}};
    f << j.dump() << "\n";
  }
  return path;
}

std::vector<json> jsonl(const std::string& path) {
  std::vector<json> out;
  for (auto& l : s0::io::read_complete_lines(path)) out.push_back(json::parse(l));
  return out;
}

std::vector<std::string> collect_args(const std::string& model, const std::string& tasks, const std::string& out) {
  return {"collect", "--model", model, "--tasks", tasks, "--out", out, "--samples", "4", "--max-new-tokens", "6",
          "--dtype", "f32", "--threads", "1", "--timeout", "5", "--unsafe-exec", "--seed", "5"};
}

// A small experiment on `model` over the 5 tasks write_tasks() writes (3 training, 2 held out).
json small_experiment(const std::string& model, const json& seeds, const json& training, const json& alphas) {
  return {{"model", model},
          {"tasks", "tasks.jsonl"},  // relative to the config file
          {"train_problems", "0-2"},
          {"eval_problems", "3-4"},
          {"seeds", seeds},
          {"dtype", "f32"},
          {"threads", 1},
          {"unsafe_exec", true},
          {"collect", {{"samples", 3}, {"max_new_tokens", 5}}},
          {"training", training},
          {"eval", {{"alphas", alphas}, {"max_new_tokens", 5}}}};
}

TEST(PipelineE2E, CollectTrainEvalAndResume) {
  const std::string dir = s0::testing::temp_dir("pipeline_e2e");
  const std::string model = s0::testing::tiny_qwen35("f32", 4);
  const std::string tasks = write_tasks(dir, 5);

  // collect
  auto r = run_cli(collect_args(model, tasks, dir + "/train.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  json sum = json::parse(r.out);
  EXPECT_EQ(sum["problems"], 5);
  EXPECT_EQ(sum["samples"], 20);
  EXPECT_EQ(sum["weight_layout"], "rows");  // f32 weights are never laid out in k-pairs
  auto train = jsonl(dir + "/train.jsonl");
  ASSERT_GE(train.size(), 2u) << "a random model should pass some string-literal problems";
  EXPECT_EQ(static_cast<int64_t>(train.size()), sum["kept"].get<int64_t>());
  EXPECT_LE(train.size(), 5u);  // at most one kept per problem
  for (auto& t : train) {
    EXPECT_TRUE(t["prompt"].is_string() && t["completion"].is_string());
    EXPECT_NE(t["prompt"].get<std::string>().find("<|im_start|>user"), std::string::npos);  // chat template
    EXPECT_TRUE(t.contains("task_id") && t.contains("sample") && t.contains("seed"));
  }
  EXPECT_EQ(jsonl(dir + "/train.jsonl.progress.jsonl").size(), 5u);
  for (auto& p : jsonl(dir + "/train.jsonl.progress.jsonl")) EXPECT_EQ(p["weight_layout"], "rows");
  // Verifying every sample keeps the same solutions (the first passing ones) and counts all.
  auto all_args = collect_args(model, tasks, dir + "/train_all.jsonl");
  all_args.push_back("--check-all");
  auto ra = run_cli(all_args);
  ASSERT_EQ(ra.exit_code, 0) << describe(ra);
  EXPECT_EQ(s0::io::read_file(dir + "/train_all.jsonl"), s0::io::read_file(dir + "/train.jsonl"));
  json sa = json::parse(ra.out);
  EXPECT_EQ(sa["checked"], 20);
  EXPECT_LE(sum["checked"].get<int64_t>(), 20);
  EXPECT_GE(sa["passed_samples"].get<int64_t>(), sum["passed_samples"].get<int64_t>());
  // Problems sampled together (the default here: all 5 at once) or in other groups (--batch
  // 1: one at a time, as before; --batch 2: 2 + 2 + 1) write the same files.
  for (const std::string b : {"1", "2"}) {
    auto args = collect_args(model, tasks, dir + "/train_b" + b + ".jsonl");
    args.insert(args.end(), {"--check-all", "--batch", b});
    auto rb = run_cli(args);
    ASSERT_EQ(rb.exit_code, 0) << describe(rb);
    EXPECT_EQ(s0::io::read_file(dir + "/train_b" + b + ".jsonl"), s0::io::read_file(dir + "/train_all.jsonl")) << b;
    json sb = json::parse(rb.out);
    for (const char* k : {"kept", "passed_samples", "checked", "solved"}) EXPECT_EQ(sb[k], sa[k]) << b << " " << k;
    auto pa = jsonl(dir + "/train_all.jsonl.progress.jsonl"), pb = jsonl(dir + "/train_b" + b + ".jsonl.progress.jsonl");
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      pa[i].erase("seconds"), pb[i].erase("seconds");
      EXPECT_EQ(pa[i], pb[i]) << b << " " << i;
    }
  }

  // train on what was collected
  r = run_cli({"train", "--model", model, "--data", dir + "/train.jsonl", "--out", dir + "/states", "--steps", "2",
               "--dtype", "f32", "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_TRUE(fs::exists(dir + "/states/states.safetensors"));

  // eval: base + an alpha sweep, greedy and sampled pass@k
  std::vector<std::string> eval_args = {"eval", "--model", model, "--tasks", tasks, "--states", dir + "/states",
                                        "--alpha", "0.07,0.5", "--samples", "2", "--k", "1,2", "--out", dir + "/eval",
                                        "--max-new-tokens", "6", "--dtype", "f32", "--threads", "1", "--unsafe-exec"};
  r = run_cli(eval_args);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  json s = json::parse(s0::io::read_file(dir + "/eval/summary.json"));
  ASSERT_EQ(s["conditions"].size(), 3u);
  EXPECT_EQ(s["weight_layout"], "rows");
  EXPECT_EQ(s["conditions"][0]["name"], "base");
  EXPECT_EQ(s["conditions"][1]["name"], "s0@0.07");
  EXPECT_EQ(s["conditions"][2]["alpha"], 0.5);
  for (auto& c : s["conditions"]) {
    EXPECT_EQ(c["problems"], 5);
    double p1 = c["pass@1"];
    EXPECT_GE(p1, 0.0);
    EXPECT_LE(p1, 1.0);
    EXPECT_TRUE(c["sampled"].contains("pass@2"));
  }
  EXPECT_TRUE(s["conditions"][1].contains("delta_pp"));
  auto results = jsonl(dir + "/eval/results.jsonl");
  EXPECT_EQ(results.size(), 15u);
  for (auto& rec : results) EXPECT_EQ(rec["weight_layout"], "rows");
  std::string report = s0::io::read_file(dir + "/eval/report.md");
  EXPECT_NE(report.find("| s0@0.5 |"), std::string::npos) << report;
  // Re-running is a resume: nothing is evaluated twice, the summary is the same.
  r = run_cli(eval_args);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(jsonl(dir + "/eval/results.jsonl").size(), 15u);
  json s2 = json::parse(s0::io::read_file(dir + "/eval/summary.json"));
  EXPECT_EQ(s2["conditions"], s["conditions"]);

  // Killed mid-run, then resumed: the same training file as the uninterrupted run.
  const std::string out2 = dir + "/train2.jsonl";
  int errpipe[2];
  ASSERT_EQ(pipe(errpipe), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(errpipe[1], 2);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    auto args = collect_args(model, tasks, out2);
    std::vector<char*> argv;
    std::string bin = S0_CLI_PATH;
    argv.push_back(bin.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(errpipe[1]);
  std::string err;
  char buf[4096];
  ssize_t n;
  while ((n = read(errpipe[0], buf, sizeof buf)) > 0) {
    err.append(buf, static_cast<size_t>(n));
    if (err.find("\"progress\":\"collect\"") != std::string::npos) break;  // one problem done
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  close(errpipe[0]);
  ASSERT_TRUE(WIFSIGNALED(status)) << "collect finished before it could be killed:\n" << err;
  size_t partial = jsonl(out2 + ".progress.jsonl").size();
  EXPECT_GE(partial, 1u);
  EXPECT_LT(partial, 5u);
  // A torn last line (crash during an append) is also tolerated.
  { std::ofstream(out2, std::ios::app) << "{\"prompt\": \"torn"; }
  // The finished problems as if decoded in k-pairs (another CPU): resumed, not refused, and
  // the summary and stderr say the run mixed layouts.
  {
    std::string text;
    for (auto p : jsonl(out2 + ".progress.jsonl")) p["weight_layout"] = "pairs", text += p.dump() + "\n";
    s0::io::write_file_atomic(out2 + ".progress.jsonl", text);
  }
  r = run_cli(collect_args(model, tasks, out2));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(s0::io::read_file(out2), s0::io::read_file(dir + "/train.jsonl"));
  EXPECT_EQ(json::parse(r.out)["weight_layout"], "mixed");
  EXPECT_NE(r.err.find("records were decoded with the weights in pairs, this run in rows"), std::string::npos) << r.err;
  // Other settings on the same output are refused, not mixed in.
  auto bad = collect_args(model, tasks, out2);
  bad[8] = "8";  // --samples
  r = run_cli(bad);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("other settings"), std::string::npos) << r.err;
}

TEST(PipelineE2E, ExperimentComparesMethodsOnTheSameDataAndResumesPerMethod) {
  const std::string dir = s0::testing::temp_dir("pipeline_methods");
  const std::string model = s0::testing::tiny_qwen35("f32", 4);
  write_tasks(dir, 5);
  json cfg = small_experiment(model, {0, 1}, {{"steps", 2}}, {0.5});
  cfg["decode_speed_tokens"] = 8;
  cfg["methods"] = {{{"name", "s0"}, {"kind", "s0"}},
                    {{"name", "lora"}, {"kind", "lora"}, {"rank", 2}, {"steps", 3}, {"batch", 1}, {"lr", 1e-2}},
                    {{"name", "offset"}, {"kind", "offset"}, {"scales", {1.0, 3.0}}}};
  std::ofstream(dir + "/exp.json") << cfg.dump();
  auto r = run_cli({"experiment", "--config", dir + "/exp.json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string out = dir + "/exp";
  for (const char* f : {"seed_0/states/states.safetensors", "seed_0/lora/adapter_model.safetensors",
                        "seed_0/lora/adapter_config.json", "seed_1/offset/offsets.safetensors", "seed_1/lora.done",
                        "decode_speed.json"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  json s = json::parse(s0::io::read_file(out + "/summary.json"));
  std::vector<std::string> names;
  for (auto& m : s["methods"]) names.push_back(m["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"s0@0.5", "lora", "offset@1", "offset@3"}));
  for (auto& m : s["methods"]) {
    EXPECT_EQ(m["pass@1_per_seed"].size(), 2u) << m["name"];
    EXPECT_GT(m["params"].get<int64_t>(), 0) << m["name"];
    EXPECT_GT(m["decode_tokens_per_s"].get<double>(), 0) << m["name"];
    EXPECT_TRUE(m.contains("welch_vs_base")) << m["name"];
  }
  EXPECT_EQ(s["paired_tests"].size(), 6u);  // every pair of the 4 conditions
  // Every method of a seed trained on that seed's one collected file.
  EXPECT_EQ(jsonl(out + "/seed_0/eval/results.jsonl").size(), 8u);  // 4 conditions x 2 problems
  const std::string md = s0::io::read_file(out + "/report.md");
  EXPECT_NE(md.find("| lora |"), std::string::npos) << md;
  // Resume per method and seed: with seed 1's offset gone, only that is trained again.
  fs::remove_all(out + "/seed_1/offset");
  fs::remove(out + "/seed_1/offset.done");
  r = run_cli({"experiment", "--config", dir + "/exp.json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("seed 1: train offset"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("train lora"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("train s0"), std::string::npos) << r.err;
  // Unknown method keys and kinds are refused, naming them.
  cfg["methods"] = {{{"name", "x"}, {"kind", "dora"}}};
  cfg["out"] = "exp2";
  std::ofstream(dir + "/exp2.json") << cfg.dump();
  r = run_cli({"experiment", "--config", dir + "/exp2.json"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("dora"), std::string::npos) << r.err;
}

TEST(PipelineE2E, ExperimentOverSeedsWritesReportAndResumes) {
  const std::string dir = s0::testing::temp_dir("pipeline_exp");
  const std::string model = s0::testing::tiny_qwen35("f32", 4);
  write_tasks(dir, 5);
  json cfg = small_experiment(model, {0, 1}, {{"steps", 2}}, {0.07, 0.6});
  std::ofstream(dir + "/exp.json") << cfg.dump();
  auto r = run_cli({"experiment", "--config", dir + "/exp.json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string out = dir + "/exp";
  for (const char* f : {"summary.json", "report.md", "methods.svg", "deltas.svg", "alpha_sweep.svg", "experiment.json",
                        "base/results.jsonl", "seed_0/train.jsonl", "seed_0/states/states.safetensors",
                        "seed_1/eval/summary.json"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  json s = json::parse(s0::io::read_file(out + "/summary.json"));
  ASSERT_EQ(s["methods"].size(), 2u);
  for (auto& m : s["methods"]) {
    EXPECT_EQ(m["seeds"], 2);
    EXPECT_EQ(m["pass@1_per_seed"].size(), 2u);
    EXPECT_TRUE(m.contains("welch_vs_base"));
    double p = m["welch_vs_base"]["p"];
    EXPECT_TRUE(p >= 0 && p <= 1);
  }
  EXPECT_EQ(s["paired_tests"].size(), 1u);
  EXPECT_EQ(s["base"]["problems"], 2);
  for (const char* svg : {"methods.svg", "deltas.svg", "alpha_sweep.svg"}) {
    std::string t = s0::io::read_file(out + "/" + svg);
    EXPECT_EQ(t.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u) << svg;
    EXPECT_NE(t.find("</svg>"), std::string::npos);
  }
  std::string md = s0::io::read_file(out + "/report.md");
  EXPECT_NE(md.find("| s0@0.6 |"), std::string::npos) << md;
  EXPECT_NE(md.find("![alpha sweep](alpha_sweep.svg)"), std::string::npos);
  // Rerun = resume: every stage is found done; same numbers.
  r = run_cli({"experiment", "--config", dir + "/exp.json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(json::parse(s0::io::read_file(out + "/summary.json"))["methods"], s["methods"]);
  EXPECT_EQ(r.err.find("step 1/2"), std::string::npos) << "training ran again:\n" << r.err;
  // A changed config on the same output folder is refused.
  cfg["seeds"] = {0, 1, 2};
  std::ofstream(dir + "/exp.json") << cfg.dump();
  r = run_cli({"experiment", "--config", dir + "/exp.json"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("another experiment"), std::string::npos) << r.err;
  // Unknown keys are errors naming the key.
  std::ofstream(dir + "/bad.json") << R"({"model": "m", "tasks": "t", "eval": {"alpha": [1]}})";
  r = run_cli({"experiment", "--config", dir + "/bad.json"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("unknown key \"alpha\""), std::string::npos) << r.err;
  // A method's kind or name of the wrong JSON type is an error naming the field.
  cfg["methods"] = json::array({{{"kind", 3}}});
  cfg["out"] = dir + "/bad_kind";
  std::ofstream(dir + "/bad_kind.json") << cfg.dump();
  r = run_cli({"experiment", "--config", dir + "/bad_kind.json"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("\"kind\" must be a string"), std::string::npos) << r.err;
}

// The analyses: added to a finished experiment (no retraining), in its report, and from `s0
// analyze` on the same outputs.
TEST(PipelineE2E, AnalysesInAnExperimentAndFromTheCli) {
  const std::string dir = s0::testing::temp_dir("pipeline_analyses");
  const std::string model = s0::testing::tiny_qwen35("f32", 4);
  const std::string tasks = write_tasks(dir, 5);
  json cfg = small_experiment(model, {0}, {{"steps", 2}, {"lr", 0.05}}, {1.0});
  cfg["decode_speed_tokens"] = 0;
  std::ofstream(dir + "/exp.json") << cfg.dump();
  auto r = run_cli({"experiment", "--config", dir + "/exp.json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string out = dir + "/exp";
  EXPECT_FALSE(fs::exists(out + "/analysis"));
  cfg["analyses"] = {{"persistence", {{"prompts", 2}}}, {"divergence", true}, {"probe", {{"folds", 2}}}};
  std::ofstream(dir + "/exp.json") << cfg.dump();
  r = run_cli({"experiment", "--config", dir + "/exp.json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.err.find("step 1/2"), std::string::npos) << "training ran again:\n" << r.err;
  for (const char* f : {"persistence.json", "persistence.svg", "persistence.md", "divergence.json", "divergence.svg",
                        "divergence.md"})
    EXPECT_TRUE(fs::exists(out + "/analysis/" + f)) << f;
  json s = json::parse(s0::io::read_file(out + "/summary.json"));
  ASSERT_TRUE(s["analyses"].contains("persistence"));
  EXPECT_EQ(s["analyses"]["persistence"]["prompts"], 2);
  EXPECT_EQ(s["analyses"]["persistence"]["condition"], "s0@1");
  EXPECT_GT(s["analyses"]["persistence"]["kl_first"].get<double>(), 0);
  const std::string md = s0::io::read_file(out + "/report.md");
  EXPECT_NE(md.find("## Persistence of the tuned state"), std::string::npos) << md;
  EXPECT_NE(md.find("![persistence](analysis/persistence.svg)"), std::string::npos) << md;
  EXPECT_NE(md.find("## Where FAIL->PASS flips diverge"), std::string::npos) << md;
  // An unknown analysis is refused, naming it.
  json bad = cfg;
  bad["analyses"] = {{"saliency", true}};
  bad["out"] = "exp";
  std::ofstream(dir + "/exp_bad.json") << bad.dump();
  r = run_cli({"experiment", "--config", dir + "/exp_bad.json"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("saliency"), std::string::npos) << r.err;

  // s0 analyze on the same outputs.
  r = run_cli({"analyze", "divergence", "--results", out, "--out", dir + "/div"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("## Where FAIL->PASS flips diverge"), std::string::npos) << r.out;
  EXPECT_EQ(json::parse(s0::io::read_file(dir + "/div/divergence.json"))["conditions"][0]["name"], "s0@1");
  r = run_cli({"analyze", "persistence", "--model", model, "--tasks", tasks, "--problems", "3-4", "--states",
               out + "/seed_0/states", "--alpha", "1", "--dtype", "f32", "--threads", "1", "--out", dir + "/pers"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  json p = json::parse(s0::io::read_file(dir + "/pers/persistence.json"));
  // The same prompts, states and alpha as the experiment's analysis: the same numbers.
  EXPECT_EQ(p["kl"], s["analyses"]["persistence"]["kl"]);
  EXPECT_TRUE(fs::exists(dir + "/pers/persistence.svg"));
  // probe: labels from a results file with both verdicts
  {
    std::ofstream f(dir + "/labels.jsonl");
    for (int i = 0; i < 5; ++i)
      f << json({{"condition", "base"}, {"task_id", "Str/" + std::to_string(i)}, {"passed", i % 2 == 0}}).dump() << "\n";
  }
  r = run_cli({"analyze", "probe", "--model", model, "--tasks", tasks, "--problems", "all", "--results",
               dir + "/labels.jsonl", "--folds", "2", "--dtype", "f32", "--threads", "1", "--out", dir + "/probe"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  json pr = json::parse(s0::io::read_file(dir + "/probe/probe.json"));
  EXPECT_EQ(pr["samples"], 5);
  EXPECT_EQ(pr["positives"], 3);
  EXPECT_EQ(pr["folds"], 2);
  EXPECT_FALSE(pr["layers"].empty());
  // Errors a user can cause exit non-zero with a message.
  r = run_cli({"analyze", "divergence", "--results", dir + "/nowhere", "--out", dir + "/x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not an eval output"), std::string::npos) << r.err;
}

TEST(PipelineE2E, AblationsOverLayerSubsetsAndTrainingSetSizes) {
  const std::string dir = s0::testing::temp_dir("pipeline_ablation");
  const std::string model = s0::testing::tiny_qwen35("f32", 4);
  write_tasks(dir, 5);
  json cfg = small_experiment(model, {0}, {{"steps", 1}}, {0.5});
  cfg["decode_speed_tokens"] = 0;
  std::ofstream(dir + "/exp.json") << cfg.dump();
  auto r = run_cli({"analyze", "ablation", "--config", dir + "/exp.json", "--kind", "layers"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("## Ablation: layer subsets"), std::string::npos) << r.out;
  json a = json::parse(s0::io::read_file(dir + "/exp/ablation_layers/ablation_layers.json"));
  std::vector<std::string> arms;
  for (const auto& x : a["arms"]) arms.push_back(x["arm"]);
  EXPECT_EQ(arms, (std::vector<std::string>{"early", "middle", "late", "all"}));
  EXPECT_TRUE(fs::exists(dir + "/exp/ablation_layers/ablation_layers.svg"));
  // The early arm's state set holds only the first third of the recurrent layers.
  json es = json::parse(s0::io::read_file(dir + "/exp/ablation_layers/seed_0/early/s0.json"));
  EXPECT_EQ(es["layers"], "early");

  r = run_cli({"analyze", "ablation", "--config", dir + "/exp.json", "--kind", "size", "--sizes", "1,2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  json b = json::parse(s0::io::read_file(dir + "/exp/ablation_size/ablation_size.json"));
  ASSERT_EQ(b["arms"].size(), 2u);
  EXPECT_EQ(b["arms"][0]["arm"], "n1");
  EXPECT_EQ(b["arms"][0]["examples_used"], json::array({1}));
  json n1 = json::parse(s0::io::read_file(dir + "/exp/ablation_size/seed_0/n1/s0.json"));
  EXPECT_EQ(n1["num_examples"], 1);
  r = run_cli({"analyze", "ablation", "--config", dir + "/exp.json", "--kind", "heads"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("heads"), std::string::npos) << r.err;
}

}  // namespace
