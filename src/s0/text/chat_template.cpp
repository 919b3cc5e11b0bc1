#include "s0/text/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "s0/text/jinja.h"
#include "s0/util/error.h"

namespace s0::text {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

// Built-in templates: byte-identical copies of tests/data/chat/<family>.jinja (a test checks it).
// They are reference texts written from the specs (see the comment at the top of each).
struct Builtin {
  const char* family;  // builtin() name
  const char* bos;     // special tokens of that family's tokenizer (nullptr: none)
  const char* eos;
  const char* pad;
  const char* source;
};

// @@BUILTINS_BEGIN@@
const Builtin kBuiltins[] = {
    {"qwen3.5", nullptr, "<|im_end|>", "<|endoftext|>",
     R"JINJA({#- Qwen3.5 chat template (4B/9B behaviour: thinking on unless enable_thinking is false).
    RECONSTRUCTED REFERENCE, not the official file: the official Qwen3.5 template is not available
    offline. Written from ../shared/spec/qwen35.md section 6.2 (message format, trimmed content,
    no default system prompt, think prefix) and the structure of the Qwen3 template (history
    assistant turns before the last user query lose their <think> block). Tool calling and
    image/video content are not reconstructed (they raise). UNVERIFIED byte-for-byte against the
    real checkpoint: a model directory's own template is always used in preference to this one. -#}
{%- macro render_content(content) %}
    {%- if content is string %}
        {{- content }}
    {%- elif content is none or content is undefined %}
        {{- '' }}
    {%- elif content is iterable and content is not mapping %}
        {%- for item in content %}
            {%- if item.type == 'text' or 'text' in item %}
                {{- item.text }}
            {%- else %}
                {{- raise_exception('Only text content is supported by this template.') }}
            {%- endif %}
        {%- endfor %}
    {%- else %}
        {{- raise_exception('Unexpected content type.') }}
    {%- endif %}
{%- endmacro %}
{%- if not messages %}
    {{- raise_exception('No messages provided.') }}
{%- endif %}
{%- if tools %}
    {{- raise_exception('Tools are not covered by this reconstructed template.') }}
{%- endif %}
{%- if messages[0].role == 'system' %}
    {%- set content = render_content(messages[0].content)|trim %}
    {{- '<|im_start|>system\n' + content + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" %}
        {%- set content = render_content(message.content)|trim %}
        {%- if not(content.startswith('<tool_response>') and content.endswith('</tool_response>')) %}
            {%- set ns.multi_step_tool = false %}
            {%- set ns.last_query_index = index %}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if ns.multi_step_tool %}
    {{- raise_exception('No user query found in messages.') }}
{%- endif %}
{%- for message in messages %}
    {%- set content = render_content(message.content)|trim %}
    {%- if message.role == "system" %}
        {%- if not loop.first %}
            {{- raise_exception('System message must be at the beginning.') }}
        {%- endif %}
    {%- elif message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- set reasoning_content = reasoning_content|trim %}
        {%- if loop.index0 > ns.last_query_index %}
            {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content + '\n</think>\n\n' + content }}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- raise_exception('Unexpected message role.') }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- else %}
        {{- '<think>\n' }}
    {%- endif %}
{%- endif %}
)JINJA"},
    {"qwen3.5-small", nullptr, "<|im_end|>", "<|endoftext|>",
     R"JINJA({#- Qwen3.5 chat template, 0.8B/2B behaviour: thinking OFF unless enable_thinking is true.
    RECONSTRUCTED REFERENCE, not the official file: the official Qwen3.5 template is not available
    offline. Written from ../shared/spec/qwen35.md section 6.2 (message format, trimmed content,
    no default system prompt, think prefix) and the structure of the Qwen3 template (history
    assistant turns before the last user query lose their <think> block). Tool calling and
    image/video content are not reconstructed (they raise). UNVERIFIED byte-for-byte against the
    real checkpoint: a model directory's own template is always used in preference to this one. -#}
{%- macro render_content(content) %}
    {%- if content is string %}
        {{- content }}
    {%- elif content is none or content is undefined %}
        {{- '' }}
    {%- elif content is iterable and content is not mapping %}
        {%- for item in content %}
            {%- if item.type == 'text' or 'text' in item %}
                {{- item.text }}
            {%- else %}
                {{- raise_exception('Only text content is supported by this template.') }}
            {%- endif %}
        {%- endfor %}
    {%- else %}
        {{- raise_exception('Unexpected content type.') }}
    {%- endif %}
{%- endmacro %}
{%- if not messages %}
    {{- raise_exception('No messages provided.') }}
{%- endif %}
{%- if tools %}
    {{- raise_exception('Tools are not covered by this reconstructed template.') }}
{%- endif %}
{%- if messages[0].role == 'system' %}
    {%- set content = render_content(messages[0].content)|trim %}
    {{- '<|im_start|>system\n' + content + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" %}
        {%- set content = render_content(message.content)|trim %}
        {%- if not(content.startswith('<tool_response>') and content.endswith('</tool_response>')) %}
            {%- set ns.multi_step_tool = false %}
            {%- set ns.last_query_index = index %}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if ns.multi_step_tool %}
    {{- raise_exception('No user query found in messages.') }}
{%- endif %}
{%- for message in messages %}
    {%- set content = render_content(message.content)|trim %}
    {%- if message.role == "system" %}
        {%- if not loop.first %}
            {{- raise_exception('System message must be at the beginning.') }}
        {%- endif %}
    {%- elif message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- set reasoning_content = reasoning_content|trim %}
        {%- if loop.index0 > ns.last_query_index %}
            {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content + '\n</think>\n\n' + content }}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- raise_exception('Unexpected message role.') }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is true %}
        {{- '<think>\n' }}
    {%- else %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
)JINJA"},
    {"qwen2.5", nullptr, "<|im_end|>", "<|endoftext|>",
     R"JINJA({#- Qwen2.5-Instruct chat template. REFERENCE WRITTEN FROM THE SPEC (../shared/spec/qwen2.md
    section 4: ChatML, default system prompt when the first message is not a system message) and
    the publicly documented structure of the official template (tool section, tool_call JSON lines,
    consecutive tool messages grouped into one user turn). The official file is not available
    offline: UNVERIFIED byte-for-byte. -#}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)JINJA"},
    {"falcon-h1", "<|begin_of_text|>", "<|end_of_text|>", nullptr,
     R"JINJA({#- Falcon-H1 chat template. REFERENCE WRITTEN FROM THE SPEC (../shared/spec/falcon_h1.md
    section 5: BOS token, then ChatML; no default system prompt; a leading system message renders
    right after the BOS). The official tiiuae/Falcon-H1-*-Instruct template (with its tool-calling
    branch) is not available offline: UNVERIFIED byte-for-byte, tools not covered. -#}
{{- bos_token }}
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)JINJA"},
    {"chatml", nullptr, nullptr, nullptr,
     R"JINJA({#- Generic ChatML template (no BOS, no default system prompt), as used by many checkpoints. -#}
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)JINJA"},
};
// @@BUILTINS_END@@

bool has(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

std::string recognise(const std::string& src) {
  if (!has(src, "<|im_start|>")) return "";
  if (has(src, "<think>") && (has(src, "render_content") || has(src, "<|vision_start|>") ||
                              has(src, "<function=")))
    return "qwen3.5";
  if (has(src, "<think>")) return "qwen3";
  if (has(src, "You are Qwen, created by Alibaba Cloud")) return "qwen2.5";
  if (has(src, "bos_token")) return "falcon-h1";
  if (has(src, "<|im_end|>")) return "chatml";
  return "";
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (auto& x : v) out += (out.empty() ? "" : ", ") + x;
  return out;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error("cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ojson parse_json_file(const fs::path& p) {
  std::string text = read_file(p);
  try {
    return ojson::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(p.string() + ": malformed JSON: " + e.what());
  }
}

// A token entry in tokenizer_config.json: a string, {"content": ...} (AddedToken), or null.
std::optional<std::string> token_string(const ojson& cfg, const char* key, const fs::path& file) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  throw Error(file.string() + ": '" + key + "' must be a string, an object with \"content\", or null");
}

// "chat_template": a string or a list of {"name": ..., "template": ...}.
std::string template_field(const ojson& v, const fs::path& file) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array() && !v.empty()) {
    const ojson* pick = nullptr;
    for (auto& t : v) {
      if (!t.is_object() || !t.contains("name") || !t.contains("template") || !t["template"].is_string())
        throw Error(file.string() + ": 'chat_template' list entries must be {\"name\", \"template\"}");
      if (t["name"] == "default") pick = &t;
    }
    if (!pick) pick = &v[0];
    return (*pick)["template"].get<std::string>();
  }
  throw Error(file.string() + ": 'chat_template' must be a string or a non-empty list of named templates");
}

}  // namespace

std::vector<std::string> ChatTemplate::supported_families() {
  return {"qwen3.5", "qwen3", "qwen2.5", "falcon-h1", "chatml"};
}

std::vector<std::string> ChatTemplate::builtin_families() {
  std::vector<std::string> out;
  for (auto& b : kBuiltins) out.push_back(b.family);
  return out;
}

ChatTemplate ChatTemplate::from_string(const std::string& jinja_source, const std::string& source_name) {
  ChatTemplate t;
  t.family_ = recognise(jinja_source);
  if (t.family_.empty())
    throw Error(source_name + ": chat template not recognised (supported families: " +
                join(supported_families()) +
                "; these are ChatML templates using <|im_start|>/<|im_end|>). Use the raw (no template) mode "
                "for other models.");
  t.source_ = jinja_source;
  t.source_name_ = source_name;
  t.tmpl_ = std::make_shared<const jinja::Template>(jinja_source, source_name);
  return t;
}

ChatTemplate ChatTemplate::builtin(const std::string& family) {
  for (auto& b : kBuiltins) {
    if (family != b.family) continue;
    ChatTemplate t = from_string(b.source, std::string("builtin:") + b.family);
    if (b.bos) t.bos_token = b.bos;
    if (b.eos) t.eos_token = b.eos;
    if (b.pad) t.pad_token = b.pad;
    return t;
  }
  throw Error("no built-in chat template '" + family + "' (built-in: " + join(builtin_families()) + ")");
}

ChatTemplate ChatTemplate::from_model_dir(const std::string& dir) {
  fs::path d(dir);
  fs::path cfg_path = d / "tokenizer_config.json";
  ojson cfg = ojson::object();
  bool have_cfg = fs::exists(cfg_path);
  if (have_cfg) {
    cfg = parse_json_file(cfg_path);
    if (!cfg.is_object()) throw Error(cfg_path.string() + ": expected a JSON object");
  }
  std::string src, name;
  if (fs::path p = d / "chat_template.jinja"; fs::exists(p)) {
    src = read_file(p);
    name = p.string();
  } else if (have_cfg && cfg.contains("chat_template") && !cfg["chat_template"].is_null()) {
    src = template_field(cfg["chat_template"], cfg_path);
    name = cfg_path.string();
  } else if (fs::path pj = d / "chat_template.json"; fs::exists(pj)) {
    ojson j = parse_json_file(pj);
    if (!j.is_object() || !j.contains("chat_template"))
      throw Error(pj.string() + ": expected an object with a 'chat_template' field");
    src = template_field(j["chat_template"], pj);
    name = pj.string();
  } else {
    throw Error("no chat template in " + d.string() +
                " (looked for chat_template.jinja, a 'chat_template' field in tokenizer_config.json, "
                "and chat_template.json); use the raw (no template) mode or a built-in template (" +
                join(builtin_families()) + ")");
  }
  ChatTemplate t = from_string(src, name);
  if (have_cfg) {
    t.bos_token = token_string(cfg, "bos_token", cfg_path);
    t.eos_token = token_string(cfg, "eos_token", cfg_path);
    t.pad_token = token_string(cfg, "pad_token", cfg_path);
    t.unk_token = token_string(cfg, "unk_token", cfg_path);
  }
  return t;
}

std::string ChatTemplate::family() const { return family_; }
const std::string& ChatTemplate::source() const { return source_; }
const std::string& ChatTemplate::source_name() const { return source_name_; }

std::string ChatTemplate::render_context(const ojson& context) const {
  if (!context.is_object()) throw Error(source_name_ + ": render context must be a JSON object");
  ojson ctx = context;
  if (!ctx.contains("add_generation_prompt")) ctx["add_generation_prompt"] = false;
  auto put = [&](const char* k, const std::optional<std::string>& v) {
    if (v && !ctx.contains(k)) ctx[k] = *v;
  };
  put("bos_token", bos_token);
  put("eos_token", eos_token);
  put("pad_token", pad_token);
  put("unk_token", unk_token);
  return tmpl_->render(ctx);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, const ChatOptions& opt) const {
  ojson msgs = ojson::array();
  if (opt.system_default && (messages.empty() || messages[0].role != "system"))
    msgs.push_back({{"role", "system"}, {"content", *opt.system_default}});
  for (auto& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  ojson ctx = ojson::object();
  ctx["messages"] = std::move(msgs);
  ctx["add_generation_prompt"] = opt.add_generation_prompt;
  if (opt.enable_thinking) ctx["enable_thinking"] = *opt.enable_thinking;
  return render_context(ctx);
}

}  // namespace s0::text
