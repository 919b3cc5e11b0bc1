// `s0 check`: verify completions produced elsewhere (human-eval style samples files).
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "s0/eval/check_samples.h"
#include "s0/eval/tasks.h"
#include "s0/util/error.h"

namespace s0::cli {

Action add_check(CLI::App& app) {
  struct Opts {
    std::string tasks, samples, kind = "auto", db_dir, ks = "1,10,100";
    double timeout = 10;
    int workers = 2;
    bool unsafe_exec = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--tasks", o->tasks, "Task file (HumanEval JSONL/JSONL.GZ, GSM8K, MATH-500 JSONL, Spider JSON/JSONL)")
      ->required();
  app.add_option("--samples", o->samples,
                 "JSONL, one {\"task_id\" (or \"index\"), \"completion\"} per line; results go to <samples>_results.jsonl")
      ->required();
  app.add_option("--task-kind", o->kind, "auto | humaneval | gsm8k | math | spider")->capture_default_str();
  app.add_option("--db-dir", o->db_dir, "Spider: folder of SQLite databases (<db_id>/<db_id>.sqlite)");
  app.add_option("--k", o->ks, "pass@k for these k (reported when every attempted problem has >= k samples)")
      ->capture_default_str();
  app.add_option("--timeout", o->timeout, "Wall-clock seconds per program run")->capture_default_str();
  app.add_option("--workers", o->workers, "Parallel sandboxed runs")->capture_default_str();
  app.add_flag("--unsafe-exec", o->unsafe_exec,
               "Run the code WITHOUT the bubblewrap sandbox when it is unavailable (limits still apply)");
  return [o]() {
    if (o->timeout <= 0) throw Error("--timeout must be > 0");
    if (o->workers < 1) throw Error("--workers must be >= 1");
    const auto ks = parse_id_list(o->ks, "--k");
    const auto kind = o->kind == "auto" ? eval::detect_task_kind(o->tasks) : eval::parse_task_kind(o->kind);
    const auto tasks = eval::read_tasks(kind, o->tasks, o->db_dir);
    eval::Sandbox sandbox;
    if (kind == eval::TaskKind::HumanEval) {
      sandbox = eval::Sandbox::create(o->unsafe_exec);
      if (!sandbox.isolated())
        std::fprintf(stderr, "warning: bubblewrap unavailable; --unsafe-exec: the code runs unsandboxed (rlimits only)\n");
    }
    eval::CheckOptions opt;
    opt.workers = o->workers;
    opt.limits.wall_seconds = o->timeout;
    opt.limits.cpu_seconds = o->timeout;
    auto s = eval::check_samples(tasks, o->samples, ks, sandbox, opt);
    nlohmann::ordered_json j = {{"task_kind", eval::task_kind_name(kind)},
                                {"results", s.results_path},
                                {"samples", s.samples},
                                {"passed", s.passed},
                                {"tasks_attempted", s.tasks_attempted},
                                {"tasks_total", s.tasks_total}};
    for (const auto& [k, v] : s.pass_at_k) j["pass@" + std::to_string(k)] = v;
    if (!s.skipped_ks.empty()) j["skipped_k"] = s.skipped_ks;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  };
}

}  // namespace s0::cli
