// Server soak test: the in-process `s0 serve` server on loopback, driven by many concurrent
// HTTP clients for a fixed time, mixing base / state sets / alphas, completions and chat,
// streaming and not, clients that hang up, malformed requests, and an admin thread that
// unloads and reloads state sets while they are in use. Ends with an overload burst (more
// choices than the queue holds: 429 expected, quickly). Prints one JSON object:
//   served (by kind), intended 4xx (by status), errors by kind (must be 0), cross-talk checks
//   (every greedy answer equal to the same request served alone), latency p50/p99, RSS.
//
//   bench_soak [--clients 64] [--seconds 600] [--model DIR | --preset tiny] [--max-tokens 12]
//              [--churn-ms 250] [--cache-dir /tmp/s0-bench] [--seed 1]
// Exit status 1 when any error or cross-talk mismatch was seen.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "s0/adapters/state_set.h"
#include "s0/models/model.h"
#include "s0/serve/server.h"
#include "s0/util/error.h"

using namespace s0;
using bench::Clock;
using bench::secs;
using nlohmann::json;

namespace {

double rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1e3;
  return 0;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

adapters::StateSet random_set(const models::CausalLM& m, uint64_t seed, double alpha) {
  adapters::StateSet set;
  set.arch = m.recurrent_arch();
  set.state_shape = m.state_shape();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto l : m.recurrent_layers()) set.states[l] = at::randn(set.state_shape, gen);
  set.config = {{"alpha", alpha}, {"normalize", false}};
  return set;
}

// Counters shared by every client.
struct Tally {
  std::mutex mu;
  std::map<std::string, int64_t> served, intended, errors;
  std::map<std::string, std::string> first_error;  // kind -> one example
  std::vector<double> latency_ms;
  int64_t crosstalk_checked = 0, crosstalk_mismatch = 0;
  void ok(const std::string& kind, double ms) {
    std::lock_guard<std::mutex> lk(mu);
    ++served[kind];
    latency_ms.push_back(ms);
  }
  void intend(int status) {
    std::lock_guard<std::mutex> lk(mu);
    ++intended[std::to_string(status)];
  }
  void error(const std::string& kind, const std::string& example) {
    std::lock_guard<std::mutex> lk(mu);
    if (++errors[kind] == 1) first_error[kind] = example.substr(0, 400);
  }
};

// The ids of choice 0 of a non-streamed reply.
std::vector<int64_t> ids_of(const json& body) { return body.at("choices").at(0).at("token_ids").get<std::vector<int64_t>>(); }

httplib::Result post_receive(httplib::Client& cli, const std::string& path, const std::string& body,
                             std::function<bool(const char*, size_t)> receiver) {
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [receiver](const char* data, size_t n, uint64_t, uint64_t) { return receiver(data, n); };
  return cli.send(req);
}

}  // namespace

int main(int argc, char** argv) {
  int clients = 64;
  double seconds = 600;
  std::string model_dir, preset = "tiny", cache = "/tmp/s0-bench";
  int64_t max_tokens = 12;
  int churn_ms = 250;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--clients") clients = std::stoi(next());
    else if (a == "--seconds") seconds = std::stod(next());
    else if (a == "--model") model_dir = next();
    else if (a == "--preset") preset = next();
    else if (a == "--max-tokens") max_tokens = std::stoll(next());
    else if (a == "--churn-ms") churn_ms = std::stoi(next());
    else if (a == "--cache-dir") cache = next();
    else if (a == "--seed") seed = std::stoull(next());
    else {
      std::fprintf(stderr, "usage: bench_soak [--clients N] [--seconds S] [--model DIR | --preset P] [--max-tokens N]\n"
                           "                  [--churn-ms MS] [--cache-dir DIR] [--seed S]\n");
      return 2;
    }
  }
  at::set_num_threads(1);
  if (model_dir.empty()) {
    model_dir = cache + "/qwen35-" + preset + "-f32";
    bench::ensure_preset_dir(model_dir, preset, "f32");
  }
  std::shared_ptr<models::CausalLM> model = models::load_model(model_dir, at::kFloat);
  const std::string sets_dir = cache + "/soak-sets";
  std::map<std::string, std::string> set_dirs;
  int k = 0;
  for (const char* name : {"A", "B", "C"}) {
    set_dirs[name] = sets_dir + "/" + name;
    adapters::save_state_set(set_dirs[name], random_set(*model, 100 + k, 0.5 + 0.25 * k));
    ++k;
  }

  serve::ServerOptions opt;
  opt.model_dir = model_dir;
  opt.host = "127.0.0.1";
  opt.port = 0;
  opt.states = {{"A", set_dirs["A"]}, {"B", set_dirs["B"]}, {"C", set_dirs["C"]}};
  opt.limits.max_prompt_tokens = 256;
  opt.limits.max_tokens_cap = 256;
  opt.limits.max_queue = 256;
  opt.max_body_bytes = 64 << 10;
  opt.read_timeout_s = 5;
  opt.http_threads = clients + 8;
  serve::Server server(opt, model);
  const int port = server.bind();
  std::thread listener([&] { server.listen(); });
  auto client = [&] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    c.set_connection_timeout(10, 0);
    return c;
  };

  // Reference answers: every greedy request of the mix, served alone before the soak.
  const std::vector<std::string> prompts = {"def add(a, b):", "Once upon a time", "1, 2, 3,", "The capital of",
                                            "import numpy as", "SELECT * FROM"};
  const std::vector<std::string> models_ = {"base", "A", "B", "C"};
  const std::vector<double> alphas = {-1, 0.3, 1.0};  // -1: the set's own
  auto greedy_request = [&](size_t p, size_t m, size_t a, bool chat) {
    json r = {{"model", models_[m]}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}};
    if (chat)
      r["messages"] = json::array({{{"role", "user"}, {"content", prompts[p]}}});
    else
      r["prompt"] = prompts[p];
    if (m > 0 && alphas[a] >= 0) r["alpha"] = alphas[a];
    return r;
  };
  std::map<std::string, std::vector<int64_t>> reference;  // request dump -> ids
  bool chat_ok = true;
  {
    auto c = client();
    for (size_t p = 0; p < prompts.size(); ++p)
      for (size_t m = 0; m < models_.size(); ++m)
        for (size_t a = 0; a < (m == 0 ? 1 : alphas.size()); ++a)
          for (bool chat : {false, true}) {
            if (chat && !chat_ok) continue;
            json r = greedy_request(p, m, a, chat);
            auto res = c.Post(chat ? "/v1/chat/completions" : "/v1/completions", r.dump(), "application/json");
            if (chat && res && res->status == 400) {  // a model without a chat template
              chat_ok = false;
              continue;
            }
            if (!res || res->status != 200) throw Error("reference request failed: " + r.dump());
            reference[r.dump()] = ids_of(json::parse(res->body));
          }
  }
  const double rss_start = rss_mb();

  Tally t;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> churn_cycles{0};
  const auto t0 = Clock::now();
  // Admin churn: B and C are unloaded and loaded again (from the same files) over and over
  // while clients use them. A request naming one while it is away gets 404 (intended).
  std::thread admin([&] {
    auto c = client();
    std::mt19937_64 rng(seed * 7 + 1);
    while (!stop) {
      const std::string name = rng() % 2 ? "B" : "C";
      auto d = c.Delete(("/admin/states/" + name).c_str());
      if (!d || d->status != 200) t.error("admin_unload", d ? d->body : "no reply");
      std::this_thread::sleep_for(std::chrono::milliseconds(churn_ms / 5 + 1));
      json body = {{"name", name}, {"path", set_dirs[name]}};
      auto l = c.Post("/admin/states", body.dump(), "application/json");
      if (!l || l->status != 200) t.error("admin_load", l ? l->body : "no reply");
      ++churn_cycles;
      auto g = c.Get("/admin/states");
      if (!g || g->status != 200) t.error("admin_list", g ? g->body : "no reply");
      std::this_thread::sleep_for(std::chrono::milliseconds(churn_ms));
    }
  });

  const std::vector<std::string> malformed = {
      "{\"prompt\": ",
      "[]",
      "{\"prompt\": 5}",
      "{\"prompt\": \"x\", \"max_tokens\": 100000000}",
      "{\"prompt\": \"x\", \"temperature\": -1}",
      "{\"prompt\": \"x\", \"model\": \"no-such-set\"}",
      "{\"prompt\": [999999999]}",
      "{\"prompt\": \"x\", \"alpha\": 0.5}",
      "{\"messages\": []}",
      "{\"prompt\": \"x\", \"stop\": [1, 2]}",
      "{\"prompt\": \"x\", \"n\": 1000}",
      "{\"prompt\": \"x\", \"top_p\": 0}",
      std::string("{\"prompt\": \"") + std::string(300 * 4, 'z') + " " + std::string(300 * 4, 'y') + "\"}",
  };

  std::vector<std::thread> ts;
  for (int ci = 0; ci < clients; ++ci)
    ts.emplace_back([&, ci] {
      std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(ci));
      auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
      while (!stop) {
        const size_t roll = pick(100);
        auto c = client();
        const auto start = Clock::now();
        if (roll < 8) {  // malformed: must be a 4xx with an error body
          const std::string& body = malformed[pick(malformed.size())];
          auto res = c.Post(pick(2) ? "/v1/completions" : "/v1/chat/completions", body, "application/json");
          if (!res) t.error("malformed_no_reply", body + " -> " + httplib::to_string(res.error()));
          else if (res->status >= 400 && res->status < 500 && res->body.find("\"error\"") != std::string::npos)
            t.intend(res->status);
          else t.error("malformed_not_4xx", body + " -> " + std::to_string(res->status) + " " + res->body);
          continue;
        }
        if (roll < 16) {  // a client that hangs up mid-stream
          json r = {{"prompt", prompts[pick(prompts.size())]}, {"max_tokens", 200}, {"ignore_eos", true},
                    {"stream", true}, {"model", models_[pick(models_.size())]}};
          int chunks = 0;
          auto res = post_receive(c, "/v1/completions", r.dump(), [&](const char*, size_t) { return ++chunks < 2; });
          std::lock_guard<std::mutex> lk(t.mu);
          ++t.served["disconnect"];
          continue;
        }
        // A real request: greedy (checked against the reference) or sampled.
        const bool chat = chat_ok && pick(3) == 0;
        const bool stream = pick(3) == 0;
        const size_t m = pick(models_.size());
        const size_t a = m == 0 ? 0 : pick(alphas.size());
        json r = greedy_request(pick(prompts.size()), m, a, chat);
        const std::string key = r.dump();
        const bool greedy = pick(2) == 0;
        if (!greedy) r["temperature"] = 0.8, r["seed"] = static_cast<int64_t>(rng() % 1000), r["top_p"] = 0.95;
        if (stream) r["stream"] = true;
        const char* path = chat ? "/v1/chat/completions" : "/v1/completions";
        std::string buf;
        auto res = post_receive(c, path, r.dump(), [&](const char* d, size_t n) {
          buf.append(d, n);
          return true;
        });
        const double ms = secs(start) * 1e3;
        if (!res) {
          t.error("no_reply", r.dump() + " -> " + httplib::to_string(res.error()));
          continue;
        }
        if (res->status == 404 && (models_[m] == "B" || models_[m] == "C")) {  // unloaded by the churn
          t.intend(404);
          continue;
        }
        if (res->status != 200) {
          t.error("status_" + std::to_string(res->status), r.dump() + " -> " + buf);
          continue;
        }
        std::vector<int64_t> ids;
        try {
          if (stream) {
            // SSE: the last data event before [DONE] has finish_reason; an error event fails.
            if (buf.find("\"error\"") != std::string::npos) throw Error("error event: " + buf);
            if (buf.find("data: [DONE]") == std::string::npos) throw Error("no [DONE]");
          } else {
            json body = json::parse(buf);
            if (body.contains("error")) throw Error("error body");
            ids = ids_of(body);
          }
        } catch (const std::exception& e) {
          t.error(stream ? "bad_stream" : "bad_body", std::string(e.what()) + ": " + buf.substr(0, 300));
          continue;
        }
        if (greedy && !stream) {
          const bool same = ids == reference.at(key);
          std::lock_guard<std::mutex> lk(t.mu);
          ++t.crosstalk_checked;
          if (!same) {
            ++t.crosstalk_mismatch;
            if (++t.errors["crosstalk"] == 1) t.first_error["crosstalk"] = key;
          }
        }
        t.ok(std::string(chat ? "chat" : "completion") + (stream ? "_stream" : "") + (greedy ? "_greedy" : "_sampled"),
             ms);
      }
    });

  // RSS over time (the soak's memory must stay flat).
  std::vector<double> rss_trace;
  while (secs(t0) < seconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (rss_trace.size() < static_cast<size_t>(secs(t0) / 10)) rss_trace.push_back(rss_mb());
  }
  stop = true;
  for (auto& th : ts) th.join();
  admin.join();
  const double soak_s = secs(t0);
  const double rss_end = rss_mb();

  // Overload: every client asks for 8 long choices at once; the queue (256) cannot hold them.
  std::atomic<int64_t> o200{0}, o429{0}, oother{0};
  std::vector<double> o429_ms;
  std::mutex omu;
  std::vector<std::thread> burst;
  for (int ci = 0; ci < clients; ++ci)
    burst.emplace_back([&] {
      auto c = client();
      json r = {{"prompt", "overload"}, {"max_tokens", 64}, {"ignore_eos", true}, {"n", 8}};
      const auto s = Clock::now();
      auto res = c.Post("/v1/completions", r.dump(), "application/json");
      const double ms = secs(s) * 1e3;
      if (res && res->status == 200) ++o200;
      else if (res && res->status == 429) {
        ++o429;
        std::lock_guard<std::mutex> lk(omu);
        o429_ms.push_back(ms);
      } else ++oother;
    });
  for (auto& th : burst) th.join();
  if (oother > 0) t.error("overload_other", std::to_string(oother.load()) + " replies neither 200 nor 429");

  const auto stats = server.engine().stats();
  server.stop();
  listener.join();

  int64_t served_total = 0, error_total = 0;
  for (auto& [k2, v] : t.served) served_total += v;
  for (auto& [k2, v] : t.errors) error_total += v;
  json out = {{"clients", clients},
              {"seconds", soak_s},
              {"model", model_dir},
              {"max_tokens", max_tokens},
              {"served_total", served_total},
              {"served", t.served},
              {"requests_per_second", served_total / soak_s},
              {"intended_4xx", t.intended},
              {"errors_total", error_total},
              {"errors", t.errors},
              {"error_examples", t.first_error},
              {"crosstalk_checked", t.crosstalk_checked},
              {"crosstalk_mismatch", t.crosstalk_mismatch},
              {"latency_ms_p50", percentile(t.latency_ms, 0.5)},
              {"latency_ms_p99", percentile(t.latency_ms, 0.99)},
              {"admin_churn_cycles", churn_cycles.load()},
              {"rss_mb_start", rss_start},
              {"rss_mb_end", rss_end},
              {"rss_mb_every_10s", rss_trace},
              {"overload", {{"ok", o200.load()}, {"busy_429", o429.load()}, {"other", oother.load()},
                            {"busy_429_ms_max", o429_ms.empty() ? 0 : *std::max_element(o429_ms.begin(), o429_ms.end())}}},
              {"engine", {{"sequences_started", stats.sequences_started},
                          {"sequences_finished", stats.sequences_finished},
                          {"sequences_cancelled", stats.sequences_cancelled},
                          {"generated_tokens", stats.generated_tokens},
                          {"active_at_end", stats.active},
                          {"queued_at_end", stats.queued}}}};
  std::printf("%s\n", out.dump(2).c_str());
  return error_total == 0 && t.crosstalk_mismatch == 0 ? 0 : 1;
}
