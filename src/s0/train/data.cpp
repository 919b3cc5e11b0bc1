#include "s0/train/data.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "s0/io/lines.h"
#include "s0/util/error.h"

namespace s0::train {

using nlohmann::json;

namespace {

struct Segment {
  std::string text;
  bool completion;
};

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

std::vector<text::ChatMessage> to_messages(const json& arr, const std::string& where) {
  if (!arr.is_array() || arr.empty()) throw Error(where + ": 'messages' must be a non-empty list");
  std::vector<text::ChatMessage> out;
  for (const auto& m : arr) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      throw Error(where + ": every message needs string 'role' and 'content'");
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

// Splits a rendered conversation into prompt/completion segments: assistant turn k spans
// from the end of render(messages[:k], generation prompt) to the end of render(messages[:k+1]).
std::vector<Segment> chat_segments(const std::vector<text::ChatMessage>& msgs, const text::ChatTemplate& chat,
                                   const DataOptions& opt, const std::string& where) {
  text::ChatOptions gen{true, opt.enable_thinking, std::nullopt};
  text::ChatOptions plain{false, opt.enable_thinking, std::nullopt};
  const std::string full = chat.render(msgs, plain);
  std::vector<Segment> segs;
  size_t pos = 0;
  bool any = false;
  for (size_t k = 0; k < msgs.size(); ++k) {
    if (msgs[k].role != "assistant") continue;
    std::vector<text::ChatMessage> head(msgs.begin(), msgs.begin() + k), upto(msgs.begin(), msgs.begin() + k + 1);
    const std::string p = chat.render(head, gen), q = chat.render(upto, plain);
    size_t begin = p.size(), end = q.size();
    if (!starts_with(full, p) || !starts_with(full, q) || p.size() < pos || q.size() < p.size()) {
      // Templates that render earlier assistant turns differently from the last one (Qwen3.x
      // drops the empty think block from history): find the turn's (stripped) content after
      // the previous segment; the completion is that content plus the end-of-turn token.
      const std::string& c = msgs[k].content;
      size_t a = c.find_first_not_of(" \t\r\n"), b = c.find_last_not_of(" \t\r\n");
      const std::string core = a == std::string::npos ? "" : c.substr(a, b - a + 1);
      begin = core.empty() ? std::string::npos : full.find(core, pos);
      if (begin == std::string::npos)
        throw Error(where + ": cannot find assistant turn " + std::to_string(k) + " in the conversation rendered by the " +
                    chat.family() + " chat template");
      end = begin + core.size();
      if (chat.eos_token && full.compare(end, chat.eos_token->size(), *chat.eos_token) == 0) end += chat.eos_token->size();
      segs.push_back({full.substr(pos, begin - pos), false});
      segs.push_back({full.substr(begin, end - begin), true});
      pos = end;
      any = true;
      continue;
    }
    segs.push_back({full.substr(pos, begin - pos), false});
    segs.push_back({full.substr(begin, end - begin), true});
    pos = end;
    any = true;
  }
  if (!any) throw Error(where + ": no assistant message to learn from");
  if (pos < full.size()) segs.push_back({full.substr(pos), false});
  return segs;
}

}  // namespace

Example example_from_json(const nlohmann::json& j, const text::Tokenizer& tok, const text::ChatTemplate* chat,
                          const DataOptions& opt, const std::string& where, bool* truncated) {
  if (truncated) *truncated = false;
  if (!j.is_object()) throw Error(where + ": each line must be a JSON object");
  std::vector<Segment> segs;
  if (j.contains("messages")) {
    if (!chat) throw Error(where + ": 'messages' examples need --chat (a chat template)");
    segs = chat_segments(to_messages(j["messages"], where), *chat, opt, where);
  } else if (j.contains("prompt") && j.contains("completion")) {
    if (!j["prompt"].is_string() || !j["completion"].is_string())
      throw Error(where + ": 'prompt' and 'completion' must be strings");
    const std::string p = j["prompt"], c = j["completion"];
    if (c.empty()) throw Error(where + ": empty completion");
    if (chat) {
      segs = chat_segments({{"user", p}, {"assistant", c}}, *chat, opt, where);
    } else {
      segs = {{p, false}, {c, true}};
    }
  } else {
    throw Error(where + ": expected {\"prompt\", \"completion\"} or {\"messages\"}");
  }
  Example ex;
  bool first = true;
  for (const auto& s : segs) {
    if (s.text.empty()) continue;
    auto ids = tok.encode(s.text, /*add_special_tokens=*/first);
    first = false;
    ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
    ex.target.insert(ex.target.end(), ids.size(), s.completion ? 1 : 0);
  }
  if (static_cast<int64_t>(ex.ids.size()) > opt.max_length) {
    ex.ids.resize(opt.max_length);
    ex.target.resize(opt.max_length);
    if (truncated) *truncated = true;
  }
  if (ex.num_targets() == 0)
    throw Error(where + ": no completion tokens" +
                (static_cast<int64_t>(ex.ids.size()) == opt.max_length ? " within --max-length" : ""));
  return ex;
}

Example example_from_text(const std::string& text, int64_t prompt_tokens, const text::Tokenizer& tok,
                          const DataOptions& opt, const std::string& where, bool* truncated) {
  if (truncated) *truncated = false;
  if (opt.max_length < 2) throw Error("max_length must be at least 2");
  if (prompt_tokens < 0) throw Error(where + ": prompt_len must be >= 0");
  Example ex;
  ex.ids = tok.encode(text, /*add_special_tokens=*/true);
  if (prompt_tokens >= static_cast<int64_t>(ex.ids.size()))
    throw Error(where + ": prompt_len " + std::to_string(prompt_tokens) + " leaves no completion tokens (the text has " +
                std::to_string(ex.ids.size()) + " tokens)");
  ex.target.assign(ex.ids.size(), 0);
  for (size_t t = static_cast<size_t>(prompt_tokens); t < ex.ids.size(); ++t) ex.target[t] = 1;
  if (static_cast<int64_t>(ex.ids.size()) > opt.max_length) {
    ex.ids.resize(opt.max_length);
    ex.target.resize(opt.max_length);
    if (truncated) *truncated = true;
  }
  if (ex.num_targets() == 0) throw Error(where + ": no completion tokens within max_length");
  return ex;
}

LoadedData load_jsonl(const std::string& path, const text::Tokenizer& tok, const text::ChatTemplate* chat,
                      const DataOptions& opt) {
  std::ifstream in(path);
  if (!in) {
    if (!std::filesystem::exists(path)) throw FileNotFound("training data '" + path + "' does not exist");
    throw Error("cannot open training data '" + path + "'");
  }
  if (opt.max_length < 2) throw Error("--max-length must be at least 2");
  LoadedData out;
  std::string line;
  int64_t lineno = 0;
  for (;;) {
    const io::LineStatus st = io::read_line(in, line);
    if (st == io::LineStatus::End) break;
    ++lineno;
    const std::string where = path + ":" + std::to_string(lineno);
    if (st == io::LineStatus::TooLong)
      throw Error(where + ": line longer than " + std::to_string(io::kMaxLineBytes >> 20) +
                  " MiB (one JSON object per line is expected)");
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(where + ": invalid JSON (" + std::string(e.what()) + ")");
    }
    bool cut = false;
    Example ex = example_from_json(j, tok, chat, opt, where, &cut);
    out.truncated += cut ? 1 : 0;
    out.examples.push_back(std::move(ex));
  }
  if (out.examples.empty()) throw Error(path + ": no examples");
  return out;
}

}  // namespace s0::train
