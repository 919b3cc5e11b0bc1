#pragma once
// Training data: JSONL, one example per line, either
//   {"prompt": "...", "completion": "..."}   prompt rendered raw, or through the chat
//                                             template as one user turn with --chat
//   {"messages": [{"role": ..., "content": ...}, ...]}   (needs --chat) every assistant
//                                             turn is completion, everything else prompt
// The loss mask covers completion tokens only. Torch-free.
#include <optional>
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

// `chat` null: raw mode. Errors name the file and line and say what is wrong.
LoadedData load_jsonl(const std::string& path, const text::Tokenizer& tok, const text::ChatTemplate* chat,
                      const DataOptions& opt = {});

}  // namespace s0::train
