#include "s0/eval/prompt.h"

#include "s0/eval/checkers.h"

namespace s0::eval {

std::string instruction(const Task& t) {
  switch (t.kind) {
    case TaskKind::HumanEval:
      return "Complete the following Python function. Only output the function body, no explanation. No markdown.\n\n" +
             t.prompt;
    case TaskKind::GSM8K:
      return "Solve the following problem. Reason step by step, then write the final answer as a number after "
             "\"####\" on the last line.\n\n" +
             t.prompt;
    case TaskKind::Math:
      return "Solve the following problem. Reason step by step and put the final answer in \\boxed{}.\n\n" + t.prompt;
    case TaskKind::Spider:
      return "Write one SQLite query that answers the question. Only output the SQL query, no explanation. No "
             "markdown.\n\nDatabase schema:\n" +
             sqlite_schema(t.db_path) + "\nQuestion: " + t.prompt;
  }
  return t.prompt;
}

std::string render_prompt(const Task& t, const PromptStyle& style) {
  if (style.chat) {
    text::ChatOptions co;
    co.add_generation_prompt = true;
    co.enable_thinking = style.enable_thinking;
    return style.chat->render({{"user", instruction(t)}}, co);
  }
  if (t.kind == TaskKind::HumanEval) return t.prompt;
  return instruction(t) + "\n";
}

}  // namespace s0::eval
