#pragma once
// `s0 serve`: an OpenAI-compatible HTTP server over one Engine (see engine.h).
//
//   POST /v1/completions, /v1/chat/completions   (stream: true -> server-sent events)
//   GET  /v1/models                              base + every loaded state set
//   GET  /admin/states   POST /admin/states {"name","path"[,"kind"]}   DELETE /admin/states/NAME
//   (every adapter kind goes through /admin/states: S0 state sets, LoRA and state offsets)
//   GET  /health, /metrics (Prometheus text)
//
// The request's "model" field picks the adapter ("base" = none); "alpha" overrides a state
// set's alpha or an offset's scale. Errors are OpenAI-style JSON bodies {"error": {"message", "type", "param", "code"}}
// with a 4xx status for anything a client can cause. Torch-free header.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "s0/serve/engine.h"

namespace s0::serve {

struct ServerOptions {
  std::string model_dir;
  std::string dtype = "bf16";
  std::vector<std::pair<std::string, std::string>> states;  // (name, directory) loaded at start
  struct AdapterDir {
    std::string name, dir, kind;  // kind "lora" | "offset" | "states" (checked against the directory)
  };
  std::vector<AdapterDir> adapters;  // --lora / --offset, loaded at start
  std::string host = "127.0.0.1";
  int port = 8080;         // 0: any free port (see bind())
  std::string api_key;     // non-empty: every request needs "Authorization: Bearer KEY"
  EngineLimits limits;
  size_t max_body_bytes = 4 << 20;
  int max_n = 8;               // choices per request
  int64_t default_max_tokens = 16;  // when a request gives none
  int http_threads = 64;       // concurrent connections served
  int read_timeout_s = 10;     // a client that stops sending mid-request is dropped
};

class Server {
 public:
  // `model`: an already loaded model (tests, benchmarks); otherwise model_dir is loaded.
  explicit Server(const ServerOptions& opt, std::shared_ptr<models::CausalLM> model = nullptr);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port (port 0 = a free port). Returns the port. Throws s0::Error on failure.
  int bind();
  // Serves until stop() (blocking). bind() first.
  void listen();
  void stop();
  // True once listen() accepts connections (until stop()).
  bool running() const;
  Engine& engine();

  // One request served in-process, without a socket (tests, the fuzz harness): the same
  // authorization, routing, handlers and error bodies as over HTTP; a streamed body is read to
  // its end. `disconnect_after`: the client goes away once that many body bytes were written.
  struct LocalResponse {
    int status = 0;
    std::string content_type;
    std::string body;
  };
  LocalResponse handle_local(const std::string& method, const std::string& path, const std::string& body,
                             const std::string& authorization = "", size_t disconnect_after = SIZE_MAX);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace s0::serve
