// Chat templates: every golden case (tests/data/chat/goldens.json, rendered by Python Jinja2
// configured like transformers; see tools/make_chat_goldens.py) byte for byte, the Jinja feature
// goldens (jinja_features.json), real templates of ~30 model families (corpus/ and
// corpus_goldens.json.gz), the exact strings the specs give, loading from model directories, and
// the errors a user can cause.
#include <gtest/gtest.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/eval/tasks.h"  // read_text_file: gunzips the corpus goldens
#include "s0/text/chat_template.h"
#include "s0/text/jinja.h"
#include "s0/util/error.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using s0::text::ChatMessage;
using s0::text::ChatOptions;
using s0::text::ChatTemplate;

fs::path data_dir() { return fs::path(S0_FIXTURES_DIR) / ".." / "data" / "chat"; }

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  EXPECT_TRUE(in.good()) << p;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ordered_json load_json(const fs::path& p) { return ordered_json::parse(read(p)); }

void write(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

fs::path fresh_dir(const std::string& name) { return s0::testing::temp_dir("chat_" + name); }

// Runs f and returns the s0::Error message ("" and a test failure when nothing is thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const s0::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an s0::Error";
  return "";
}

const ChatTemplate& template_for(const std::string& name, const std::string& source) {
  static std::map<std::string, ChatTemplate> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    ChatTemplate t = source == "model_dir:qwen3" ? ChatTemplate::from_model_dir((data_dir() / "qwen3").string())
                                                 : ChatTemplate::builtin(name);
    it = cache.emplace(name, std::move(t)).first;
  }
  return it->second;
}

TEST(ChatTemplate, GoldenCasesByteIdentical) {
  ordered_json g = load_json(data_dir() / "goldens.json");
  const auto& convs = g["conversations"];
  int rendered = 0, errors = 0, via_messages = 0;
  for (const auto& c : g["cases"]) {
    std::string tname = c["template"], conv = c["conversation"];
    std::string label = tname + "/" + conv + " agp=" + c["add_generation_prompt"].dump() +
                        " thinking=" + (c.contains("enable_thinking") ? c["enable_thinking"].dump() : "unset");
    SCOPED_TRACE(label);
    const ChatTemplate& t = template_for(tname, c["source"]);
    ordered_json ctx = ordered_json::object();
    ctx["messages"] = convs[conv];
    ctx["add_generation_prompt"] = c["add_generation_prompt"];
    if (c.contains("enable_thinking")) ctx["enable_thinking"] = c["enable_thinking"];
    bool with_tools = g["tools"].contains(conv);
    if (with_tools) ctx["tools"] = g["tools"][conv];
    if (c.contains("text")) {
      const std::string want = c["text"];
      EXPECT_EQ(t.render_context(ctx), want);
      ++rendered;
      // The same conversation through the ChatMessage API when it has only role + content.
      bool plain = !with_tools;
      std::vector<ChatMessage> msgs;
      for (auto& m : convs[conv]) {
        plain = plain && m.size() == 2 && m.contains("role") && m.contains("content") && m["content"].is_string();
        if (plain) msgs.push_back({m["role"], m["content"]});
      }
      if (plain) {
        ChatOptions opt;
        opt.add_generation_prompt = c["add_generation_prompt"];
        if (c.contains("enable_thinking")) opt.enable_thinking = c["enable_thinking"].get<bool>();
        EXPECT_EQ(t.render(msgs, opt), want);
        ++via_messages;
      }
    } else {
      std::string msg = error_of([&] { t.render_context(ctx); });
      if (c["raised"].get<bool>()) {
        EXPECT_NE(msg.find(c["error"].get<std::string>()), std::string::npos) << msg;
      }
      ++errors;
    }
  }
  EXPECT_GE(rendered, 500);
  EXPECT_GE(errors, 50);
  EXPECT_GE(via_messages, 300);
}

TEST(ChatTemplate, JinjaFeatureGoldens) {
  ordered_json g = load_json(data_dir() / "jinja_features.json");
  for (const auto& c : g["cases"]) {
    std::string name = c["name"];
    SCOPED_TRACE(name);
    s0::text::jinja::Template t(c["template"].get<std::string>(), "feature:" + name);
    if (c.contains("text")) {
      EXPECT_EQ(t.render(c["context"]), c["text"].get<std::string>());
    } else {
      std::string msg = error_of([&] { t.render(c["context"]); });
      EXPECT_NE(msg.find("feature:" + name), std::string::npos) << msg;
      if (c["raised"].get<bool>()) EXPECT_NE(msg.find(c["error"].get<std::string>()), std::string::npos) << msg;
    }
  }
  for (const auto& c : g["unsupported"]) {
    std::string name = c["name"];
    std::string msg = error_of([&] { s0::text::jinja::Template(c["template"].get<std::string>(), "u:" + name); });
    EXPECT_NE(msg.find("unsupported"), std::string::npos) << name << ": " << msg;
    EXPECT_NE(msg.find("u:" + name), std::string::npos) << msg;
    EXPECT_NE(msg.find("line 1"), std::string::npos) << msg;
  }
}

TEST(ChatTemplate, BuiltinsAreTheReferenceFiles) {
  for (const auto& f : ChatTemplate::builtin_families()) {
    SCOPED_TRACE(f);
    EXPECT_EQ(ChatTemplate::builtin(f).source(), read(data_dir() / (f + ".jinja")));
  }
  EXPECT_EQ(ChatTemplate::builtin("qwen3.5").family(), "qwen3.5");
  EXPECT_EQ(ChatTemplate::builtin("qwen3.5-small").family(), "qwen3.5");
  EXPECT_EQ(ChatTemplate::builtin("qwen2.5").family(), "qwen2.5");
  EXPECT_EQ(ChatTemplate::builtin("qwen3-next").family(), "chatml");
  // The official files (../shared/data/chat_templates/, copied into tests/data/chat/).
  EXPECT_NE(ChatTemplate::builtin("qwen3.5").source().find("<|vision_start|>"), std::string::npos);
  EXPECT_NE(ChatTemplate::builtin("qwen3-next").source().find("<tool_call>"), std::string::npos);
  EXPECT_EQ(ChatTemplate::builtin("falcon-h1").family(), "falcon-h1");
  EXPECT_EQ(ChatTemplate::builtin("chatml").family(), "chatml");
  std::string msg = error_of([] { ChatTemplate::builtin("llama3"); });
  EXPECT_NE(msg.find("llama3"), std::string::npos);
  EXPECT_NE(msg.find("qwen3.5"), std::string::npos);
}

// The exact strings the issue and the specs give.
TEST(ChatTemplate, SpecStrings) {
  std::vector<ChatMessage> hello{{"user", "Hello"}};
  ChatOptions off;
  off.enable_thinking = false;
  ChatOptions on;
  on.enable_thinking = true;
  const std::string q35_off = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
  const std::string q35_on = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n";
  auto q35 = ChatTemplate::builtin("qwen3.5"), q35s = ChatTemplate::builtin("qwen3.5-small");
  EXPECT_EQ(q35.render(hello, off), q35_off);
  EXPECT_EQ(q35s.render(hello, off), q35_off);
  EXPECT_EQ(q35.render(hello), q35_on);    // 4B/9B: thinking unless explicitly false
  EXPECT_EQ(q35s.render(hello), q35_off);  // 0.8B/2B: no thinking unless explicitly true
  EXPECT_EQ(q35s.render(hello, on), q35_on);
  EXPECT_EQ(ChatTemplate::builtin("qwen2.5").render(hello),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ChatTemplate::builtin("falcon-h1").render(hello),
            "<|begin_of_text|><|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
  auto q3 = ChatTemplate::from_model_dir((data_dir() / "qwen3").string());
  EXPECT_EQ(q3.family(), "qwen3");
  EXPECT_EQ(q3.render({{"user", "Hi"}}, off),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(q3.render({{"user", "Hi"}}), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, SystemDefaultOption) {
  ChatOptions opt;
  opt.system_default = "Be nice.";
  opt.add_generation_prompt = false;
  auto t = ChatTemplate::builtin("chatml");
  EXPECT_EQ(t.render({{"user", "Hi"}}, opt),
            "<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  // An explicit system message wins.
  EXPECT_EQ(t.render({{"system", "S"}, {"user", "Hi"}}, opt),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  // Qwen2.5: the option replaces the template's own default.
  EXPECT_EQ(ChatTemplate::builtin("qwen2.5").render({{"user", "Hi"}}, opt),
            "<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplate, BadRoleRaisesWhereTheTemplateDoes) {
  std::string msg = error_of([] { ChatTemplate::builtin("qwen3.5").render({{"user", "Hi"}, {"moderator", "x"}}); });
  EXPECT_NE(msg.find("Unexpected message role."), std::string::npos) << msg;
  EXPECT_NE(msg.find("builtin:qwen3.5"), std::string::npos) << msg;
  msg = error_of([] { ChatTemplate::builtin("qwen3.5").render({}); });
  EXPECT_NE(msg.find("No messages provided."), std::string::npos) << msg;
}

TEST(ChatTemplate, ModelDirSources) {
  const std::string q3cfg = read(data_dir() / "qwen3" / "tokenizer_config.json");
  // tokenizer_config.json with a string template (plus its special tokens).
  fs::path d = fresh_dir("cfg");
  write(d / "tokenizer_config.json", q3cfg);
  auto t = ChatTemplate::from_model_dir(d.string());
  EXPECT_EQ(t.family(), "qwen3");
  EXPECT_EQ(t.eos_token.value_or(""), "<|im_end|>");
  EXPECT_FALSE(t.bos_token.has_value());
  EXPECT_NE(t.source_name().find("tokenizer_config.json"), std::string::npos);

  // chat_template.jinja takes precedence; bos_token from the config reaches the template.
  ordered_json cfg = {{"bos_token", {{"content", "<|begin_of_text|>"}, {"special", true}}},
                      {"eos_token", "<|end_of_text|>"},
                      {"chat_template", "{{ bos_token }}garbage that must not be used"}};
  write(d / "tokenizer_config.json", cfg.dump());
  write(d / "chat_template.jinja", read(data_dir() / "falcon-h1.jinja"));
  t = ChatTemplate::from_model_dir(d.string());
  EXPECT_EQ(t.family(), "falcon-h1");
  EXPECT_EQ(t.render({{"user", "Hello"}}),
            "<|begin_of_text|><|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");

  // A list of named templates: "default" is used.
  fs::path d2 = fresh_dir("list");
  ordered_json list_cfg = {{"chat_template", ordered_json::array({
      {{"name", "tool_use"}, {"template", "{{ '<|im_start|>' }}tools"}},
      {{"name", "default"}, {"template", read(data_dir() / "chatml.jinja")}}})}};
  write(d2 / "tokenizer_config.json", list_cfg.dump());
  EXPECT_EQ(ChatTemplate::from_model_dir(d2.string()).render({{"user", "x"}}),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");

  // chat_template.json (processor file) is used only when tokenizer_config.json has no template.
  fs::path d3 = fresh_dir("procjson");
  write(d3 / "chat_template.json", ordered_json{{"chat_template", read(data_dir() / "qwen2.5.jinja")}}.dump());
  write(d3 / "tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  EXPECT_EQ(ChatTemplate::from_model_dir(d3.string()).family(), "qwen2.5");
  write(d3 / "tokenizer_config.json", ordered_json{{"chat_template", read(data_dir() / "chatml.jinja")}}.dump());
  EXPECT_EQ(ChatTemplate::from_model_dir(d3.string()).family(), "chatml");
}

TEST(ChatTemplate, Errors) {
  // A template of no known family is used as it is (family "other").
  fs::path d = fresh_dir("unknown");
  write(d / "tokenizer_config.json",
        R"({"chat_template": "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"})");
  auto other = ChatTemplate::from_model_dir(d.string());
  EXPECT_EQ(other.family(), "other");
  EXPECT_EQ(other.render({{"user", "a"}, {"assistant", "b"}}), "[INST] a [/INST][INST] b [/INST]");
  std::string msg;

  // Malformed tokenizer_config.json.
  fs::path d2 = fresh_dir("malformed");
  write(d2 / "tokenizer_config.json", R"({"chat_template": "x", )");
  msg = error_of([&] { ChatTemplate::from_model_dir(d2.string()); });
  EXPECT_NE(msg.find((d2 / "tokenizer_config.json").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("malformed JSON"), std::string::npos) << msg;
  write(d2 / "tokenizer_config.json", R"({"chat_template": 42})");
  msg = error_of([&] { ChatTemplate::from_model_dir(d2.string()); });
  EXPECT_NE(msg.find("chat_template"), std::string::npos) << msg;

  // No template at all.
  fs::path d3 = fresh_dir("none");
  write(d3 / "tokenizer_config.json", R"({"eos_token": "</s>"})");
  msg = error_of([&] { ChatTemplate::from_model_dir(d3.string()); });
  EXPECT_NE(msg.find("no chat template"), std::string::npos) << msg;

  // A recognised family using an unsupported construct fails at load, with file and line.
  msg = error_of([] {
    ChatTemplate::from_string("<|im_start|><|im_end|>\n{% call x() %}{% endcall %}", "my.jinja");
  });
  EXPECT_NE(msg.find("my.jinja: line 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unsupported"), std::string::npos) << msg;
  msg = error_of([] { ChatTemplate::from_string("<|im_start|><|im_end|>{% if x %}", "t.jinja"); });
  EXPECT_NE(msg.find("endif"), std::string::npos) << msg;
  msg = error_of([] { ChatTemplate::from_string("<|im_start|><|im_end|>{{ x.y }}", "t.jinja").render({{"user", "a"}}); });
  EXPECT_NE(msg.find("'x' is undefined"), std::string::npos) << msg;
  msg = error_of([] { ChatTemplate::from_string("<|im_start|><|im_end|>{% break %}", "t.jinja"); });
  EXPECT_NE(msg.find("outside a for loop"), std::string::npos) << msg;
  msg = error_of([] {
    ChatTemplate::from_string("<|im_start|><|im_end|>{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "t.jinja")
        .render({{"user", "a"}});
  });
  EXPECT_NE(msg.find("recursion"), std::string::npos) << msg;
}

// Real templates: byte-identical to Python Jinja2, or an error where Jinja2 raises one.
std::string today(const std::string& fmt) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[128];
  size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
  return std::string(buf, n);
}

std::string with_dates(std::string s) {
  size_t p;
  while ((p = s.find("@@STRFTIME(")) != std::string::npos) {
    size_t e = s.find(")@@", p);
    if (e == std::string::npos) break;
    s.replace(p, e + 3 - p, today(s.substr(p + 11, e - p - 11)));
  }
  return s;
}

TEST(ChatTemplate, CorpusRendersLikeJinja2) {
  ordered_json g = ordered_json::parse(s0::eval::read_text_file((data_dir() / "corpus_goldens.json.gz").string()));
  std::map<std::string, ChatTemplate> cache;
  std::map<std::string, int> failures;
  int rendered = 0, errors = 0;
  for (const auto& c : g["cases"]) {
    const std::string name = c["template"], conv = c["conversation"];
    SCOPED_TRACE(name + "/" + conv + " agp=" + c["add_generation_prompt"].dump() +
                 (c.contains("enable_thinking") ? " thinking=false" : ""));
    auto it = cache.find(name);
    if (it == cache.end()) {
      try {
        it = cache.emplace(name, ChatTemplate::from_string(read(data_dir() / "corpus" / name), name)).first;
      } catch (const s0::Error& e) {
        ADD_FAILURE() << name << ": " << e.what();
        ++failures[name];
        continue;
      }
    }
    ordered_json ctx = ordered_json::object();
    ctx["messages"] = g["conversations"][conv];
    ctx["add_generation_prompt"] = c["add_generation_prompt"];
    if (c.contains("enable_thinking")) ctx["enable_thinking"] = c["enable_thinking"];
    if (g["tools"].contains(conv)) ctx["tools"] = g["tools"][conv];
    for (auto& [k, v] : g["tokens"].items()) ctx[k] = v;
    if (c.contains("text")) {
      std::string got;
      try {
        got = it->second.render_context(ctx);
      } catch (const s0::Error& e) {
        got = std::string("ERROR: ") + e.what();
      }
      const std::string want = with_dates(c["text"]);
      EXPECT_EQ(got, want);
      if (got != want) ++failures[name];
      ++rendered;
    } else {
      std::string msg = error_of([&] { it->second.render_context(ctx); });
      if (c["raised"].get<bool>()) EXPECT_NE(msg.find(c["error"].get<std::string>()), std::string::npos) << msg;
      ++errors;
    }
  }
  for (const auto& [n, k] : failures) ADD_FAILURE() << n << ": " << k << " cases differ";
  EXPECT_GE(rendered, 1300);
  EXPECT_GE(errors, 100);
  EXPECT_GE(cache.size(), 30u);
}

}  // namespace
