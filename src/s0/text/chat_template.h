#pragma once
// Chat templates: renders a conversation to the prompt text exactly as Hugging Face
// transformers' apply_chat_template does (Python Jinja2 with trim_blocks/lstrip_blocks,
// raise_exception, tojson, loop controls, namespace()).
//
// Approach: the template text shipped with the model is rendered by an in-house Jinja subset
// interpreter (jinja.h), so a checkpoint's own template (e.g. the Qwen3.5 0.8B/2B vs 4B/9B
// thinking default, which differs only in the template text) is honoured as written. Any
// template Python Jinja2 renders is accepted (tested byte for byte on real templates of ~30
// model families, tests/data/chat/corpus/); the family is only recognised for messages
// ("other" when it is none of the ChatML families). Built-in templates (tests/data/chat/*.jinja:
// the official Qwen3.5-4B, Qwen3-Next and Qwen2.5 files, a 0.8B/2B variant of Qwen3.5, and
// Falcon-H1 / ChatML texts written from the specs) exist for model directories that ship none.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace s0::text {

namespace jinja {
class Template;
}

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatOptions {
  bool add_generation_prompt = true;
  // Unset: the variable is undefined in the template (the template's own default applies).
  std::optional<bool> enable_thinking;
  // When set and the conversation does not start with a system message, a system message with
  // this content is prepended before rendering (on top of whatever default the template has).
  std::optional<std::string> system_default;
};

class ChatTemplate {
 public:
  // Template source, in order of precedence (what transformers' tokenizer uses):
  // DIR/chat_template.jinja, DIR/tokenizer_config.json "chat_template" (a string, or a list of
  // {"name","template"} where "default" is used, else the first), then DIR/chat_template.json
  // ({"chat_template": ...}, the processor file of multimodal checkpoints). Special tokens (bos_token,
  // eos_token, pad_token, unk_token) come from tokenizer_config.json when present.
  static ChatTemplate from_model_dir(const std::string& dir);
  static ChatTemplate from_string(const std::string& jinja_source, const std::string& source_name);
  // "qwen3.5" (official 4B/9B file: thinking on by default), "qwen3.5-small" (0.8B/2B: thinking
  // off by default), "qwen3-next", "qwen2.5", "falcon-h1", "chatml".
  static ChatTemplate builtin(const std::string& family);
  static std::vector<std::string> builtin_families();
  static std::vector<std::string> supported_families();

  // "qwen3.5", "qwen3", "qwen2.5", "falcon-h1", "chatml", or "other" (any other template).
  std::string family() const;
  const std::string& source() const;
  const std::string& source_name() const;

  std::string render(const std::vector<ChatMessage>& messages, const ChatOptions& opt = {}) const;
  // Full control: `context` is the template's variable set (messages with any fields such as
  // tool_calls / reasoning_content, tools, add_generation_prompt, enable_thinking, ...). The
  // special-token variables are added when absent.
  std::string render_context(const nlohmann::ordered_json& context) const;

  // Special-token strings passed to the template (undefined there when unset/null).
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  std::optional<std::string> unk_token;

 private:
  ChatTemplate() = default;
  std::shared_ptr<const jinja::Template> tmpl_;
  std::string family_;
  std::string source_;
  std::string source_name_;
};

}  // namespace s0::text
