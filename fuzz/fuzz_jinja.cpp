// Jinja lexer, parser and renderer (chat templates). Input: a template, optionally followed by
// "\n#####\n" and a JSON context object (without one: a small conversation). Every template
// is also tried as a chat template (family detection + render).
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "s0/text/chat_template.h"
#include "s0/text/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto [src, ctx_text] = s0::fuzz::split(in, "\n#####\n");
  nlohmann::ordered_json ctx;
  try {
    ctx = nlohmann::ordered_json::parse(ctx_text);
  } catch (const nlohmann::json::exception&) {
  }
  if (!ctx.is_object()) {
    ctx = {{"messages",
            {{{"role", "system"}, {"content", "You are helpful."}},
             {{"role", "user"}, {"content", "Hi <think>x</think>"}},
             {{"role", "assistant"}, {"content", "Hello!"}}}},
           {"add_generation_prompt", true},
           {"bos_token", "<s>"},
           {"eos_token", "</s>"}};
  }
  const std::string source(src);
  s0::fuzz::expect_clean("jinja", [&] {
    s0::text::jinja::Template t(source, "fuzz.jinja");
    (void)t.render(ctx);
  });
  s0::fuzz::expect_clean("jinja/chat", [&] {
    auto chat = s0::text::ChatTemplate::from_string(source, "fuzz.jinja");
    (void)chat.render({{"user", "2+2?"}, {"assistant", "4"}, {"user", "and 3+3?"}});
    (void)chat.render_context(ctx);
  });
  return 0;
}
