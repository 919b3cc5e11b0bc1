// Scaling of the distributed pipeline on one machine: `s0 eval` problems/s and `s0 train`
// step time at 1, 2, 4 ranks (started by `s0 launch`), with the per-rank work and the
// communication split out, and the bytes a training step communicates vs the adapter size.
// Prints one JSON object. On a machine with fewer cores than ranks x threads the ranks share
// cores: read the numbers as a check that the work divides and what communication costs.
//
//   build/bench_dist [--s0 build/s0] [--model assets/builtin/model] [--tasks
//   assets/builtin/tasks/eval.jsonl]
//                    [--problems 32] [--ranks 1,2,4] [--threads 1] [--steps 5] [--examples 8]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "s0/io/atomic_file.h"

namespace fs = std::filesystem;
using nlohmann::json;
using s0::bench::Clock;
using s0::bench::secs;

namespace {

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `s0 [launch --nproc W --] args`; returns wall seconds; stderr kept in `err`.
double run(const std::string& s0, int W, const std::vector<std::string>& args,
           const std::string& err) {
  std::string cmd = quote(s0);
  if (W > 1) cmd += " launch --nproc " + std::to_string(W) + " --";
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " >/dev/null 2>" + quote(err);
  const auto t0 = Clock::now();
  const int st = std::system(cmd.c_str());
  const double s = secs(t0);
  if (st != 0) {
    std::fprintf(stderr, "bench_dist: command failed (%d): %s\n%s\n", st, cmd.c_str(),
                 fs::exists(err) ? s0::io::read_file(err).c_str() : "");
    std::exit(1);
  }
  return s;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string s0 = (fs::path(argv[0]).parent_path() / "s0").string();
  std::string model = std::string(S0_SOURCE_DIR) + "/assets/builtin/model";
  std::string tasks = std::string(S0_SOURCE_DIR) + "/assets/builtin/tasks/eval.jsonl";
  std::string ranks = "1,2,4", threads = "1";
  int problems = 32, steps = 5, examples = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--s0")
      s0 = v;
    else if (k == "--model")
      model = v;
    else if (k == "--tasks")
      tasks = v;
    else if (k == "--problems")
      problems = std::stoi(v);
    else if (k == "--ranks")
      ranks = v;
    else if (k == "--threads")
      threads = v;
    else if (k == "--steps")
      steps = std::stoi(v);
    else if (k == "--examples")
      examples = std::stoi(v);
    else {
      std::fprintf(stderr, "bench_dist: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  std::vector<int> Ws;
  for (size_t a = 0; a < ranks.size();) {
    size_t b = ranks.find(',', a);
    if (b == std::string::npos) b = ranks.size();
    Ws.push_back(std::stoi(ranks.substr(a, b - a)));
    a = b + 1;
  }
  const std::string dir =
      (fs::temp_directory_path() / ("bench_dist_" + std::to_string(getpid()))).string();
  fs::create_directories(dir);
  // Training data: the first `examples` tasks with their reference solutions.
  const std::string data = dir + "/train.jsonl";
  {
    std::ofstream o(data);
    int n = 0;
    for (const auto& l : s0::io::read_complete_lines(tasks)) {
      if (n++ >= examples) break;
      json t = json::parse(l);
      o << json{{"prompt", t["prompt"]}, {"completion", t["canonical_solution"]}}.dump() << "\n";
    }
  }
  json out = {{"model", model},
              {"tasks", tasks},
              {"problems", problems},
              {"threads_per_rank", threads},
              {"train_examples", examples},
              {"train_steps", steps},
              {"cores", std::thread::hardware_concurrency()}};
  json evals = json::array(), trains = json::array();
  double eval1 = 0, step1 = 0;
  for (int W : Ws) {
    const std::string e = dir + "/eval" + std::to_string(W);
    const double wall = run(s0, W,
                            {"eval", "--model", model, "--tasks", tasks, "--eval",
                             "0-" + std::to_string(problems - 1), "--out", e, "--max-new-tokens",
                             "96", "--threads", threads, "--unsafe-exec", "--dtype", "f32"},
                            e + ".err");
    // Rank 0's last progress line: seconds from its first problem to the merged files, i.e.
    // without process start and model loading (which the wall time includes).
    double work = wall;
    for (const auto& l : s0::io::read_complete_lines(e + ".err")) {
      json j = json::parse(l, nullptr, false);
      if (!j.is_discarded() && j.is_object() && j.contains("elapsed_s"))
        work = j["elapsed_s"].get<double>();
    }
    const double rate = problems / work;
    if (W == Ws.front()) eval1 = rate;
    evals.push_back({{"ranks", W},
                     {"wall_seconds", wall},
                     {"eval_seconds", work},
                     {"startup_seconds", wall - work},
                     {"problems_per_s", rate},
                     {"speedup", rate / eval1}});
    const std::string t = dir + "/train" + std::to_string(W);
    run(s0, W,
        {"train", "--model", model, "--data", data, "--out", t, "--steps", std::to_string(steps),
         "--threads", threads, "--dtype", "f32"},
        t + ".err");
    std::vector<double> step, comm;
    int64_t sent = 0, received = 0;
    for (const auto& l : s0::io::read_complete_lines(t + ".err")) {
      if (l.empty() || l[0] != '{') continue;
      json j = json::parse(l, nullptr, false);
      if (j.is_discarded() || !j.contains("step")) continue;
      step.push_back(j["seconds"].get<double>());
      comm.push_back(j.value("comm_seconds", 0.0));
      sent = j.value("comm_bytes_sent", int64_t{0});
      received = j.value("comm_bytes_received", int64_t{0});
    }
    const double ms = median(step), mc = median(comm);
    if (W == Ws.front()) step1 = ms;
    const auto state_bytes = fs::file_size(t + "/states.safetensors");
    trains.push_back({{"ranks", W},
                      {"median_step_seconds", ms},
                      {"median_comm_seconds", mc},
                      {"comm_fraction", ms > 0 ? mc / ms : 0.0},
                      {"work_seconds_per_rank", ms - mc},
                      {"speedup", ms > 0 ? step1 / ms : 0.0},
                      {"bytes_sent_per_step_per_rank", sent},
                      {"bytes_received_per_step_per_rank", received},
                      {"states_file_bytes", state_bytes}});
  }
  out["eval"] = evals;
  out["train"] = trains;
  std::printf("%s\n", out.dump(2).c_str());
  fs::remove_all(dir);
  return 0;
}
