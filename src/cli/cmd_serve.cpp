#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <thread>

#include "commands.h"
#include "s0/models/model.h"
#include "s0/serve/server.h"
#include "s0/util/error.h"

namespace s0::cli {

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }  // async-signal-safe: only a flag
}  // namespace

Action add_serve(CLI::App& app) {
  struct Opts {
    serve::ServerOptions s;
    std::vector<std::string> states, lora, offset, prefix;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->s.model_dir, "Model directory (Hugging Face layout)")->required();
  app.add_option("--dtype", o->s.dtype, "Weight dtype: bf16 or f32")->capture_default_str();
  app.add_option("--states", o->states, "NAME=DIR: a state set to load at start (repeatable)");
  app.add_option("--lora", o->lora, "NAME=DIR: a LoRA adapter (PEFT layout) to load at start (repeatable)");
  app.add_option("--offset", o->offset, "NAME=DIR: a state offset to load at start (repeatable)");
  app.add_option("--prefix", o->prefix, "NAME=DIR: a prefix-tuning adapter (PEFT layout) to load at start (repeatable)");
  app.add_option("--host", o->s.host, "Address to bind (loopback unless told otherwise)")->capture_default_str();
  app.add_option("--port", o->s.port, "TCP port (0 = any free port)")->capture_default_str();
  app.add_option("--api-key", o->s.api_key, "Require 'Authorization: Bearer KEY' on every request");
  app.add_option("--max-batch", o->s.limits.max_batch, "Sequences decoded together")->capture_default_str();
  app.add_option("--max-queue", o->s.limits.max_queue, "Sequences queued or running before 429")->capture_default_str();
  app.add_option("--max-prompt-tokens", o->s.limits.max_prompt_tokens, "Longest prompt accepted")->capture_default_str();
  app.add_option("--max-tokens-cap", o->s.limits.max_tokens_cap, "Largest max_tokens accepted")->capture_default_str();
  app.add_option("--max-body-bytes", o->s.max_body_bytes, "Largest request body")->capture_default_str();
  app.add_option("--threads", o->threads, "Intra-op threads (0 = all cores)")->capture_default_str();
  return [o]() {
    auto split = [](const std::string& flag, const std::string& spec) {
      const auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
        throw Error(flag + ": expected NAME=DIR, got '" + spec + "'");
      return std::pair<std::string, std::string>(spec.substr(0, eq), spec.substr(eq + 1));
    };
    for (const auto& spec : o->states) o->s.states.push_back(split("--states", spec));
    for (const auto& spec : o->lora) {
      auto [name, dir] = split("--lora", spec);
      o->s.adapters.push_back({name, dir, "lora"});
    }
    for (const auto& spec : o->offset) {
      auto [name, dir] = split("--offset", spec);
      o->s.adapters.push_back({name, dir, "offset"});
    }
    for (const auto& spec : o->prefix) {
      auto [name, dir] = split("--prefix", spec);
      o->s.adapters.push_back({name, dir, "prefix"});
    }
    models::configure_runtime(o->threads);
    serve::Server server(o->s);
    const int port = server.bind();
    std::fprintf(stderr, "s0 serve: listening on http://%s:%d (model %s, %zu adapters)\n", o->s.host.c_str(), port,
                 o->s.model_dir.c_str(), server.engine().state_sets().size());
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    // SIGINT/SIGTERM: a watcher stops the server (running sequences end as cancelled).
    std::atomic<bool> done{false};
    std::thread watcher([&] {
      while (!g_stop && !done) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      server.stop();
    });
    server.listen();
    done = true;
    watcher.join();
    return 0;
  };
}

}  // namespace s0::cli
