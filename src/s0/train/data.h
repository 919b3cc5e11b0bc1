#pragma once
// Training data: JSONL, one example per line, either
//   {"prompt": "...", "completion": "..."}   prompt rendered raw, or through the chat
//                                             template as one user turn with --chat
//   {"messages": [{"role": ..., "content": ...}, ...]}   (needs --chat) every assistant
//                                             turn is completion, everything else prompt
// The loss mask covers completion tokens only. Torch-free.
#include <optional>

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/train/example.h"

namespace s0::train {

struct DataOptions {
  int64_t max_length = 2048;                // longer examples are truncated (and counted)
  std::optional<bool> enable_thinking = false;  // chat rendering (METHOD.md: thinking off)
};

struct LoadedData {
  std::vector<Example> examples;
  int64_t truncated = 0;  // examples cut at max_length
};

// One example from one parsed record ({"prompt", "completion"} or {"messages"}), exactly as
// load_jsonl makes each line's (the Python module's dict examples). `where` names the record
// in errors; *truncated (when given) says whether it was cut at max_length.
Example example_from_json(const nlohmann::json& record, const text::Tokenizer& tok, const text::ChatTemplate* chat,
                          const DataOptions& opt, const std::string& where, bool* truncated = nullptr);

// The reference library's example form: `text` (the whole sequence, tokenized with special
// tokens) whose first `prompt_tokens` tokens are the prompt; every later token is learned.
Example example_from_text(const std::string& text, int64_t prompt_tokens, const text::Tokenizer& tok,
                          const DataOptions& opt, const std::string& where, bool* truncated = nullptr);

// `chat` null: raw mode. Errors name the file and line and say what is wrong.
LoadedData load_jsonl(const std::string& path, const text::Tokenizer& tok, const text::ChatTemplate* chat,
                      const DataOptions& opt = {});

}  // namespace s0::train
