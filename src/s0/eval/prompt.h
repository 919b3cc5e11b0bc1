#pragma once
// How a problem becomes the model's input (METHOD.md section 4). The instruction is the other
// half of each checker's contract (HumanEval: the body only, no markdown; GSM8K: the number
// after "####"; MATH: \boxed{}; Spider: one SQLite query), so it lives next to the checkers.
// Depends on text/ (chat templates) only; torch-free.
#include <optional>
#include <string>

#include "s0/eval/tasks.h"
#include "s0/text/chat_template.h"

namespace s0::eval {

// With a chat template: one user message (the instruction below + the problem), generation
// prompt on, thinking as set (METHOD.md: off). Without: HumanEval's prompt as is (plain
// completion), others the instruction text.
struct PromptStyle {
  const text::ChatTemplate* chat = nullptr;
  std::optional<bool> enable_thinking = false;
};
std::string instruction(const Task& t);
std::string render_prompt(const Task& t, const PromptStyle& style);

}  // namespace s0::eval
