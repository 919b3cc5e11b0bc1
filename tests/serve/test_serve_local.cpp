// Server::handle_local (in-process requests, used by the fuzz harness): the same answers as
// over HTTP for every endpoint, errors as 4xx with OpenAI-style bodies, oversized requests
// refused before any work (a prompt longer than the limit, a body larger than the limit).
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "s0/models/model.h"
#include "s0/serve/server.h"
#include "test_util.h"

using namespace s0;
using nlohmann::json;

namespace {

serve::Server& local_server() {
  static std::unique_ptr<serve::Server> s = [] {
    serve::ServerOptions o;
    o.model_dir = s0::testing::tiny_qwen35("f32", 21);
    o.api_key = "secret";
    o.limits.max_prompt_tokens = 64;
    o.limits.max_tokens_cap = 512;
    o.max_body_bytes = 16 << 10;
    return std::make_unique<serve::Server>(o, models::load_model(o.model_dir, at::kFloat));
  }();
  return *s;
}

const std::string kAuth = "Bearer secret";

}  // namespace

TEST(ServeLocal, EndpointsAnswerAsOverHttp) {
  auto& s = local_server();
  auto r = s.handle_local("GET", "/health", "", kAuth);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body)["status"], "ok");
  r = s.handle_local("GET", "/v1/models", "", kAuth);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body)["data"][0]["id"], "base");
  r = s.handle_local("POST", "/v1/completions", R"({"prompt": "hello", "max_tokens": 3, "temperature": 0})", kAuth);
  ASSERT_EQ(r.status, 200) << r.body;
  json b = json::parse(r.body);
  EXPECT_EQ(b["choices"][0]["token_ids"].size(), 3u);
  // Streamed: server-sent events ending in [DONE].
  r = s.handle_local("POST", "/v1/completions", R"({"prompt": "hello", "max_tokens": 3, "stream": true})", kAuth);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/event-stream");
  EXPECT_NE(r.body.find("data: [DONE]"), std::string::npos) << r.body;
  r = s.handle_local("GET", "/metrics", "", kAuth);
  EXPECT_NE(r.body.find("s0_requests_total{endpoint=\"/v1/completions\",status=\"200\"}"), std::string::npos);
}

TEST(ServeLocal, ErrorsAre4xxWithBodies) {
  auto& s = local_server();
  auto r = s.handle_local("GET", "/health", "");
  EXPECT_EQ(r.status, 401);
  r = s.handle_local("GET", "/nowhere", "", kAuth);
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("no such endpoint"), std::string::npos);
  r = s.handle_local("POST", "/v1/completions", "{", kAuth);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("not valid JSON"), std::string::npos);
  r = s.handle_local("DELETE", "/admin/states/none", "", kAuth);
  EXPECT_EQ(r.status, 404);
}

TEST(ServeLocal, OversizedPromptsAndBodiesAreRefused) {
  auto& s = local_server();
  // 65 token ids: over the prompt limit of 64, refused before any decoding.
  json ids = json::array();
  for (int i = 0; i < 65; ++i) ids.push_back(1);
  auto r = s.handle_local("POST", "/v1/completions", json{{"prompt", ids}, {"max_tokens", 1}}.dump(), kAuth);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("more than the server's limit of 64"), std::string::npos) << r.body;
  // A body over the limit (e.g. the text of a 2^31-token prompt would be): 413, never read.
  r = s.handle_local("POST", "/v1/completions", std::string(17 << 10, ' '), kAuth);
  EXPECT_EQ(r.status, 413);
  // max_tokens beyond the cap.
  r = s.handle_local("POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 2147483648})", kAuth);
  EXPECT_EQ(r.status, 400);
}

TEST(ServeLocal, ClientGoneCancelsTheSequence) {
  auto& s = local_server();
  const auto before = s.engine().stats();
  auto r = s.handle_local("POST", "/v1/completions",
                          R"({"prompt": "x", "max_tokens": 500, "ignore_eos": true, "stream": true})", kAuth, 20);
  EXPECT_EQ(r.status, 200);
  EXPECT_LE(r.body.size(), 20u);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (s.engine().stats().sequences_cancelled == before.sequences_cancelled &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(s.engine().stats().sequences_cancelled, before.sequences_cancelled + 1);
}
