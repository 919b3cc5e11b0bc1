// Serving benchmark: the in-process `s0 serve` server on loopback, driven by HTTP clients.
// Aggregate decode tokens/s with 1, 4, 16 and 64 concurrent sequences, all on the base model
// vs. spread over 8 different state sets (the S0 promise: the ratio is ~1.0), the time to load
// a state set and to start a sequence from one, and the memory per loaded set. Prints JSON.
// With the rooflines measured in the same run (bench_engine's: the streaming read's best of 5
// passes and the GEMM rate), each decode rate also as `roofline`: bandwidth_fraction (weight
// bytes per step / step time / bandwidth), gemm_fraction (B x 2 x params per step / step
// time / GEMM rate) and roofline_fraction (the larger bound over the step time), with B the
// concurrency for the decode step alone and the engine's mean batch through the server.
//
//   bench_serve [--preset 0.8b] [--dtype bf16] [--threads 0] [--tokens 32] [--prompt-len 16]
//               [--concurrency 1,4,16,64] [--sets 8] [--repeats 3] [--cache-dir /tmp/s0-bench]
//               [--huge-pages 1|0]   (0: weights and heap on 4 KB pages, util/huge_pages.h)
//               [--layout auto|rows] (auto: the weights laid out as `s0 serve` lays them,
//               models::use_generation_layout; rows: kept in rows)
// Each configuration runs `repeats` times, base and mixed alternating; medians are reported.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <cstdio>
#include <fstream>
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

static double rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1e3;
  return 0;
}

using bench::median;

int main(int argc, char** argv) {
  bench::huge_pages_from_args(argc, argv);
  std::string preset = "0.8b", dtype = "bf16", cache_dir = "/tmp/s0-bench", layout = "auto";
  int threads = 0, tokens = 32, prompt_len = 16, nsets = 8, repeats = 3;
  std::vector<int> conc = {1, 4, 16, 64};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error("missing value after " + a);
      return argv[++i];
    };
    if (a == "--preset") preset = next();
    else if (a == "--dtype") dtype = next();
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--tokens") tokens = std::stoi(next());
    else if (a == "--prompt-len") prompt_len = std::stoi(next());
    else if (a == "--sets") nsets = std::stoi(next());
    else if (a == "--repeats") repeats = std::stoi(next());
    else if (a == "--cache-dir") cache_dir = next();
    else if (a == "--huge-pages") next();  // 0: 4 KB pages (applied by huge_pages_from_args)
    else if (a == "--layout") {
      layout = next();
      if (layout != "auto" && layout != "rows") {
        std::fprintf(stderr, "bench_serve: --layout takes auto or rows\n");
        return 2;
      }
    }
    else if (a == "--concurrency") {
      conc.clear();
      std::string s = next();
      for (size_t p = 0; p < s.size();) {
        size_t q = s.find(',', p);
        conc.push_back(std::stoi(s.substr(p, q - p)));
        p = q == std::string::npos ? s.size() : q + 1;
      }
    } else {
      std::fprintf(stderr,
                   "usage: bench_serve [--preset 0.8b] [--dtype bf16] [--threads 0] [--tokens 32] [--prompt-len 16]\n"
                   "                   [--concurrency 1,4,16,64] [--sets 8] [--repeats 3] [--cache-dir /tmp/s0-bench]\n"
                   "                   [--huge-pages 1|0] [--layout auto|rows]\n");
      return 2;
    }
  }
  try {
    models::configure_runtime(threads);
    json out;
    const std::string model_dir = cache_dir + "/qwen35-" + preset + "-" + dtype;
    if (double s = bench::ensure_preset_dir(model_dir, preset, dtype); s > 0) out["init_model_seconds"] = s;
    auto t0 = Clock::now();
    std::shared_ptr<models::CausalLM> model = models::load_model(model_dir, models::parse_dtype(dtype));
    out["load_model_seconds"] = secs(t0);
    if (layout == "auto") models::use_generation_layout(*model);  // as `s0 serve` does
    out["weight_layout"] = model->pair_layout() ? "pairs" : "rows";
    out["model"] = model_dir;
    out["dtype"] = dtype;
    out["threads"] = at::get_num_threads();
    out["decode_tokens_per_sequence"] = tokens;
    out["prompt_len"] = prompt_len;

    // The rooflines (as bench_engine measures them) and what one step must read and compute.
    const at::ScalarType st = models::parse_dtype(dtype);
    const double bw = bench::stream_read_gbps();
    const double gemm = bench::gemm_gflops(128, 1024, 4096, st, [](auto& x, auto& w) { return nn::linear(x, w); });
    const double params = static_cast<double>(bench::decode_params(*model));
    const double bytes_per_step = params * static_cast<double>(at::elementSize(st));
    out["bandwidth_gbps"] = bw;
    out["gemm_gflops"] = gemm;
    out["gemm_shape"] = {128, 1024, 4096};
    out["weight_bytes_per_step"] = bytes_per_step;
    out["flops_per_token"] = 2 * params;
    // A decode rate of tok_s tokens/s at `batch` rows per step against both rooflines.
    auto roofline = [&](double tok_s, double batch) {
      if (!(tok_s > 0) || !(batch > 0)) return json();
      const double step_s = batch / tok_s;
      const auto b = bench::step_bounds(bytes_per_step, batch, 2 * params, bw, gemm);
      return json{{"bandwidth_fraction", b.mem_s / step_s},
                  {"gemm_fraction", b.gemm_s / step_s},
                  {"roofline_fraction", b.roof_s() / step_s}};
    };

    // State sets with random states at the S0 scale, written once.
    std::vector<std::string> set_dirs;
    for (int k = 0; k < nsets; ++k) {
      const std::string d = cache_dir + "/serve-states-" + preset + "-" + std::to_string(k);
      if (!std::filesystem::exists(d + "/states.safetensors")) {
        adapters::StateSet set;
        set.arch = model->recurrent_arch();
        set.state_shape = model->state_shape();
        auto gen = at::make_generator<at::CPUGeneratorImpl>(100 + k);
        for (auto l : model->recurrent_layers()) set.states[l] = at::randn(set.state_shape, gen);
        set.config = {{"alpha", 0.07}, {"normalize", false}};
        adapters::save_state_set(d, set);
      }
      set_dirs.push_back(d);
    }

    serve::ServerOptions opt;
    opt.model_dir = model_dir;
    opt.port = 0;
    opt.limits.max_batch = 64;
    serve::Server server(opt, model);
    const int port = server.bind();
    std::thread listener([&] { server.listen(); });
    httplib::Client admin("127.0.0.1", port);
    admin.set_read_timeout(600, 0);

    // Loading: through the admin endpoint, with the resident memory it adds.
    std::vector<double> load_s;
    const double rss0 = rss_mb();
    int64_t set_bytes = 0;
    for (int k = 0; k < nsets; ++k) {
      auto t = Clock::now();
      auto r = admin.Post("/admin/states", json{{"name", "s" + std::to_string(k)}, {"path", set_dirs[k]}}.dump(),
                          "application/json");
      load_s.push_back(secs(t));
      if (!r || r->status != 200) throw Error("loading a state set failed: " + (r ? r->body : std::string("no reply")));
      set_bytes = json::parse(r->body)["bytes"];
    }
    out["state_set"] = {{"bytes", set_bytes},
                        {"load_seconds_median", median(load_s)},
                        {"rss_mb_added_per_set", (rss_mb() - rss0) / nsets}};

    // Starting a sequence from a set vs. from zeros: scaled states + the cache's own copy
    // (the only per-request work a state set adds; nothing per token).
    {
      NoGrad ng;
      auto set = adapters::load_state_set(set_dirs[0], *model);
      std::vector<double> with, without;
      for (int i = 0; i < 20; ++i) {
        auto t = Clock::now();
        auto states = set.scaled();
        auto c = model->new_cache(1, &states);
        with.push_back(secs(t));
        t = Clock::now();
        auto c0 = model->new_cache(1);
        without.push_back(secs(t));
      }
      out["state_set"]["switch_seconds_median"] = median(with) - median(without);
    }

    // The decode step alone (no HTTP, no scheduler): B caches started from zeros or from B
    // different sets, prefilled, then timed over `tokens` batched steps; alternating.
    {
      NoGrad ng;
      std::vector<adapters::StateSet> sets;
      for (int k = 0; k < nsets; ++k) sets.push_back(adapters::load_state_set(set_dirs[k], *model));
      std::vector<int64_t> p(prompt_len);
      for (int i = 0; i < prompt_len; ++i) p[i] = 1000 + 37 * i;
      json rows = json::array();
      for (int c : conc) {
        auto once = [&](bool mixed) {
          std::vector<models::Cache> caches;
          std::vector<int64_t> last(c);
          for (int b = 0; b < c; ++b) {
            models::StateMap st;
            if (mixed) st = sets[b % nsets].scaled();
            caches.push_back(model->new_cache(1, mixed ? &st : nullptr));
            last[b] = model->forward(at::tensor(p, at::kLong).view({1, -1}), caches.back(), true)
                          .reshape(-1).argmax().item<int64_t>();
          }
          std::vector<models::Cache*> ptrs;
          for (auto& cc : caches) ptrs.push_back(&cc);
          auto t = Clock::now();
          for (int i = 0; i < tokens; ++i) {
            Tensor lg = model->decode_step(at::tensor(last, at::kLong), ptrs);
            Tensor nx = lg.argmax(-1);
            for (int b = 0; b < c; ++b) last[b] = nx[b].item<int64_t>();
          }
          return c * tokens / secs(t);
        };
        std::vector<double> b, m;
        for (int r = 0; r < repeats; ++r) b.push_back(once(false)), m.push_back(once(true));
        rows.push_back({{"concurrency", c},
                        {"base_decode_tokens_per_s", median(b)},
                        {"mixed_decode_tokens_per_s", median(m)},
                        {"mixed_over_base", median(m) / median(b)},
                        {"roofline", roofline(median(b), c)},
                        {"base_runs", b},
                        {"mixed_runs", m}});
        std::fprintf(stderr, "engine %s\n", rows.back().dump().c_str());
      }
      out["decode_step_only"] = rows;
    }

    std::vector<int64_t> prompt(prompt_len);
    for (int i = 0; i < prompt_len; ++i) prompt[i] = 1000 + 37 * i;
    // One run: `c` concurrent requests of `tokens` tokens each (eos ignored).
    auto run = [&](int c, bool mixed) {
      const auto before = server.engine().stats();
      std::vector<std::thread> ts;
      std::atomic<int> errors{0};
      auto t = Clock::now();
      for (int i = 0; i < c; ++i)
        ts.emplace_back([&, i] {
          httplib::Client cli("127.0.0.1", port);
          cli.set_read_timeout(600, 0);
          json req = {{"model", mixed ? "s" + std::to_string(i % nsets) : std::string("base")},
                      {"prompt", prompt},
                      {"max_tokens", tokens},
                      {"temperature", 0},
                      {"ignore_eos", true}};
          auto r = cli.Post("/v1/completions", req.dump(), "application/json");
          if (!r || r->status != 200 || r->body.find("\"error\"") != std::string::npos) {
            ++errors;
            std::fprintf(stderr, "request failed: %s\n",
                         r ? (std::to_string(r->status) + " " + r->body.substr(0, 300)).c_str()
                           : httplib::to_string(r.error()).c_str());
          }
        });
      for (auto& th : ts) th.join();
      const double wall = secs(t);
      const auto after = server.engine().stats();
      const double dsec = after.decode_seconds - before.decode_seconds;
      const int64_t dtok = after.decode_tokens - before.decode_tokens;
      const int64_t steps = after.decode_steps - before.decode_steps;
      return json{{"concurrency", c},
                  {"errors", errors.load()},
                  {"wall_seconds", wall},
                  {"tokens_per_s_wall", c * tokens / wall},
                  {"decode_tokens_per_s", dsec > 0 ? dtok / dsec : 0.0},
                  {"mean_batch", steps > 0 ? static_cast<double>(dtok) / steps : 0.0}};
    };
    run(1, false);  // warm-up
    json rows = json::array();
    for (int c : conc) {
      // base and mixed alternate so that machine noise hits both alike; medians over repeats.
      std::vector<json> bs, ms;
      for (int r = 0; r < repeats; ++r) bs.push_back(run(c, false)), ms.push_back(run(c, true));
      auto summary = [&](const std::vector<json>& v) {
        std::vector<double> dec, wall, batch;
        int errors = 0;
        for (const auto& j : v) {
          dec.push_back(j["decode_tokens_per_s"]), wall.push_back(j["tokens_per_s_wall"]);
          batch.push_back(j["mean_batch"]), errors += j["errors"].get<int>();
        }
        return json{{"decode_tokens_per_s", median(dec)},
                    {"tokens_per_s_wall", median(wall)},
                    {"mean_batch", median(batch)},
                    {"errors", errors},
                    {"decode_tokens_per_s_runs", dec}};
      };
      json b = summary(bs), m = summary(ms);
      rows.push_back({{"concurrency", c},
                      {"base", b},
                      {"mixed_sets", m},
                      {"sets_used", std::min(c, nsets)},
                      {"mixed_over_base_decode", m["decode_tokens_per_s"].get<double>() /
                                                     std::max(1e-9, b["decode_tokens_per_s"].get<double>())},
                      {"roofline", roofline(b["decode_tokens_per_s"].get<double>(), b["mean_batch"].get<double>())}});
      std::fprintf(stderr, "%s\n", rows.back().dump().c_str());
    }
    out["repeats"] = repeats;
    out["runs"] = rows;
    out["rss_mb"] = rss_mb();
    server.stop();
    listener.join();
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
