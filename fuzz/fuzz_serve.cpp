// The server's request handling for every endpoint, in-process (Server::handle_local: no
// socket), on the built-in model with one state set "A" loaded. Needs libtorch, so it is built
// only with the plain driver (CTest replay, scripts/fuzz.sh --plain, the sanitizer build).
// First input byte: bits 0-2 endpoint, bit 3 client disconnects after a few bytes, bit 4
// wrong API key; the rest is the request body (for DELETE: the state-set name).
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "s0/adapters/state_set.h"
#include "s0/models/model.h"
#include "s0/serve/server.h"

namespace {
std::unique_ptr<s0::serve::Server> g_server;
std::string g_set_dir;
nlohmann::json g_parsed;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  s0::serve::ServerOptions opt;
  opt.model_dir = std::string(S0_FUZZ_SOURCE_DIR) + "/assets/builtin/model";
  opt.dtype = "f32";
  opt.api_key = "k";
  opt.limits.max_prompt_tokens = 512;
  opt.limits.max_tokens_cap = 4;
  opt.max_body_bytes = 64 << 10;
  opt.default_max_tokens = 2;
  opt.max_n = 3;
  std::shared_ptr<s0::models::CausalLM> model = s0::models::load_model(opt.model_dir, at::kFloat);
  s0::adapters::StateSet set;
  set.arch = model->recurrent_arch();
  set.state_shape = model->state_shape();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  for (auto l : model->recurrent_layers()) set.states[l] = at::randn(set.state_shape, gen) * 0.1;
  set.config = {{"alpha", 1.0}, {"normalize", false}};
  g_set_dir = s0::fuzz::scratch_dir() + "/set";
  s0::adapters::save_state_set(g_set_dir, set);
  opt.states = {{"A", g_set_dir}};
  g_server = std::make_unique<s0::serve::Server>(opt, model);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t b = data[0];
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  static const char* const methods[] = {"POST", "POST", "GET", "GET", "POST", "DELETE", "GET", "GET"};
  static const char* const paths[] = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/admin/states",
                                      "/admin/states", "/admin/states/", "/health", "/metrics"};
  const int ep = b & 7;
  std::string path = paths[ep];
  if (ep == 5) path += rest.substr(0, rest.find('\n'));
  const std::string auth = (b & 16) ? "Bearer wrong" : "Bearer k";
  const size_t disconnect = (b & 8) ? 7 : SIZE_MAX;
  s0::fuzz::expect_clean("serve", [&] {
    if (!g_server->engine().has_state_set("A")) g_server->engine().load_state_set("A", g_set_dir);
    auto r = g_server->handle_local(methods[ep], path, rest, auth, disconnect);
    if (r.status >= 500 || r.status < 200) {
      std::fprintf(stderr, "serve: HTTP %d for %s %s: %s\n", r.status, methods[ep], path.c_str(), r.body.c_str());
      std::abort();
    }
    if ((b & 16) && r.status != 401) std::abort();
    if (r.content_type == "application/json" && disconnect == SIZE_MAX) {
      try {
        g_parsed = nlohmann::json::parse(r.body);  // keep-alive spaces before the object are fine
      } catch (const nlohmann::json::exception& e) {
        std::fprintf(stderr, "serve: response is not JSON (%s): %s\n", e.what(), r.body.c_str());
        std::abort();
      }
    }
  });
  return 0;
}
