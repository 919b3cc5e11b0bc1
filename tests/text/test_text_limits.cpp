// Hostile chat templates and tokenizer files end in an s0::Error within bounded time and
// memory: templates that loop (nearly) forever, render gigabytes, grow strings or lists by
// doubling, recurse; a gzip bomb given as tokenizer.json.gz.
#include <gtest/gtest.h>
#include <zlib.h>

#include <string>

#include <nlohmann/json.hpp>

#include "s0/text/jinja.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"
#include "test_util.h"

using namespace s0;

namespace {

void expect_render_error(const std::string& src, const std::string& needle) {
  text::jinja::Template t(src, "hostile.jinja");
  try {
    (void)t.render(nlohmann::ordered_json::object());
    FAIL() << "rendered without error: " << src;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("hostile.jinja"), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(JinjaLimits, LoopsThatNeverEndStop) {
  // 10^15 iterations: stopped by the work limit, not by time.
  expect_render_error("{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
                      "{% endfor %}{% endfor %}{% endfor %}",
                      "takes too long");
  // Recursion through macros, however it is spelled.
  expect_render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion");
}

TEST(JinjaLimits, GigabytesOfOutputAreRefused) {
  // Each piece is small; the output grows past the limit.
  expect_render_error("{% for a in range(100000) %}{% for b in range(100000) %}{{ 'x' * 1000 }}"
                      "{% endfor %}{% endfor %}",
                      "too much text");
  // A string doubled 40 times (1 TB) is refused when it passes the limit.
  expect_render_error("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                      "{% endfor %}{{ ns.s | length }}",
                      "too much text");
  expect_render_error("{{ 'abc' * 1000000000 }}", "too large");
  // Lists too.
  expect_render_error("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}"
                      "{% endfor %}{{ ns.l | length }}",
                      "too long");
  expect_render_error("{{ ([1] * 100000000) | length }}", "too large");
}

TEST(JinjaLimits, OrdinaryTemplatesAreFarFromTheLimits) {
  // 2,000 messages through a loop with several expressions each render fine.
  nlohmann::ordered_json ctx;
  ctx["messages"] = nlohmann::ordered_json::array();
  for (int i = 0; i < 2000; ++i)
    ctx["messages"].push_back({{"role", i % 2 ? "assistant" : "user"}, {"content", "message " + std::to_string(i)}});
  text::jinja::Template t(
      "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}",
      "ok.jinja");
  EXPECT_GT(t.render(ctx).size(), 2000u * 10);
}

TEST(TokenizerLimits, GzipBombIsRefused) {
  // 1.1 GiB of spaces compresses to ~1 MB; the reader stops at its 1 GiB limit.
  const std::string path = s0::testing::temp_dir("tok_bomb") + "/tokenizer.json.gz";
  gzFile f = gzopen(path.c_str(), "wb1");
  ASSERT_NE(f, nullptr);
  const std::string chunk(1 << 20, ' ');
  for (int i = 0; i < 1100; ++i) ASSERT_EQ(gzwrite(f, chunk.data(), static_cast<unsigned>(chunk.size())), 1 << 20);
  gzclose(f);
  try {
    (void)text::Tokenizer::from_file(path);
    FAIL() << "a gzip bomb was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than 1024 MiB"), std::string::npos) << e.what();
  }
}

TEST(JinjaLimits, IntFilterOfHugeFloatIsAnError) {
  // Found by fuzz/fuzz_jinja.cpp: the float was cast to int64 with undefined behaviour.
  expect_render_error("{{ 1e300 | int }}", "does not fit in a 64-bit integer");
  text::jinja::Template t("{{ 1e18 | int }} {{ -2.5 | int }}", "ok.jinja");
  EXPECT_EQ(t.render(nlohmann::ordered_json::object()), "1000000000000000000 -2");
}

TEST(TokenizerLimits, TokenIdsMustBeSmallIntegers) {
  // Found by fuzz/fuzz_tokenizer.cpp: float ids were converted with undefined behaviour, and a
  // huge id sized the id table (2^31 entries).
  for (const char* id : {"1e300", "2.5", "-1", "2147483647", "18446744073709551615"}) {
    const std::string j = std::string(R"({"model": {"type": "BPE", "vocab": {"a": )") + id + R"(}, "merges": []}})";
    try {
      (void)text::Tokenizer::from_json(j, "t.json");
      FAIL() << "accepted id " << id;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("vocab entry 'a': token id must be an integer in [0, 16777215]"),
                std::string::npos)
          << e.what();
    }
  }
}
