// Training data: JSONL prompt/completion and messages, raw and through the chat template,
// loss masks, truncation, and errors that name file:line.
#include <gtest/gtest.h>

#include <fstream>

#include "s0/train/data.h"
#include "s0/util/error.h"
#include "test_util.h"

using namespace s0;

namespace {

struct Fixture {
  std::string dir = s0::testing::tiny_qwen35("f32", 31);
  text::Tokenizer tok = text::Tokenizer::from_model_dir(dir);
  text::ChatTemplate chat = text::ChatTemplate::from_model_dir(dir);
};
Fixture& fx() {
  static Fixture f;
  return f;
}

std::string write(const std::string& name, const std::string& content) {
  std::string p = s0::testing::temp_dir("data_" + name) + "/data.jsonl";
  std::ofstream(p) << content;
  return p;
}

// The text of the tokens whose mask equals `want`.
std::string masked_text(const train::Example& ex, bool want) {
  std::vector<int64_t> ids;
  for (size_t i = 0; i < ex.ids.size(); ++i)
    if (static_cast<bool>(ex.target[i]) == want) ids.push_back(ex.ids[i]);
  return fx().tok.decode(ids);
}

TEST(TrainData, RawPromptCompletion) {
  auto p = write("raw", "{\"prompt\": \"Add 1 and 2.\", \"completion\": \" 3\"}\n\n{\"prompt\": \"x\", \"completion\": \"yz\"}\n");
  auto d = train::load_jsonl(p, fx().tok, nullptr);
  ASSERT_EQ(d.examples.size(), 2u);
  EXPECT_EQ(masked_text(d.examples[0], false), "Add 1 and 2.");
  EXPECT_EQ(masked_text(d.examples[0], true), " 3");
  EXPECT_EQ(d.examples[1].num_targets(), 2);
}

TEST(TrainData, ChatPromptCompletionMasksTheAssistantTurn) {
  auto p = write("chat", "{\"prompt\": \"Hello\", \"completion\": \"Hi there\"}\n");
  auto d = train::load_jsonl(p, fx().tok, &fx().chat);
  const auto& ex = d.examples.at(0);
  std::string prompt = fx().chat.render({{"user", "Hello"}}, {true, false, std::nullopt});
  EXPECT_EQ(masked_text(ex, false), prompt);
  EXPECT_EQ(masked_text(ex, true), "Hi there<|im_end|>\n");
}

TEST(TrainData, MessagesMaskEveryAssistantTurn) {
  auto p = write("msgs",
                 "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"a\"},"
                 " {\"role\": \"assistant\", \"content\": \"first answer\"}, {\"role\": \"user\", \"content\": \"b\"},"
                 " {\"role\": \"assistant\", \"content\": \"second answer\"}]}\n");
  auto d = train::load_jsonl(p, fx().tok, &fx().chat);
  std::string learned = masked_text(d.examples.at(0), true);
  EXPECT_NE(learned.find("first answer<|im_end|>"), std::string::npos) << learned;
  EXPECT_NE(learned.find("second answer"), std::string::npos) << learned;
  std::string context = masked_text(d.examples.at(0), false);
  EXPECT_EQ(context.find("answer"), std::string::npos) << context;
  EXPECT_NE(context.find("Be brief."), std::string::npos);
}

TEST(TrainData, TruncationIsCounted) {
  auto p = write("trunc", "{\"prompt\": \"ab\", \"completion\": \"cdefghij\"}\n{\"prompt\": \"a\", \"completion\": \"b\"}\n");
  train::DataOptions opt;
  opt.max_length = 5;
  auto d = train::load_jsonl(p, fx().tok, nullptr, opt);
  EXPECT_EQ(d.truncated, 1);
  EXPECT_EQ(d.examples[0].ids.size(), 5u);
  opt.max_length = 2;  // the completion starts after the limit
  auto p2 = write("trunc2", "{\"prompt\": \"abc\", \"completion\": \"d\"}\n");
  EXPECT_THROW(train::load_jsonl(p2, fx().tok, nullptr, opt), s0::Error);
}

TEST(TrainData, BadLinesNameFileLineAndReason) {
  auto expect_error = [](const std::string& content, const std::string& needle, bool chat = false) {
    auto p = write("bad", content);
    try {
      train::load_jsonl(p, fx().tok, chat ? &fx().chat : nullptr);
      ADD_FAILURE() << "no error for " << content;
    } catch (const s0::Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(p + ":"), std::string::npos) << m;
      EXPECT_NE(m.find(needle), std::string::npos) << m;
    }
  };
  expect_error("{\"prompt\": \"a\", \"completion\": \"b\"}\n{oops\n", ":2: invalid JSON");
  expect_error("[1, 2]\n", ":1: each line must be a JSON object");
  expect_error("{\"text\": \"a\"}\n", "expected {\"prompt\", \"completion\"}");
  expect_error("{\"prompt\": 1, \"completion\": \"b\"}\n", "must be strings");
  expect_error("{\"prompt\": \"a\", \"completion\": \"\"}\n", "empty completion");
  expect_error("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n", "need --chat");
  expect_error("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n", "no assistant message", true);
  expect_error("{\"messages\": [{\"role\": \"user\"}]}\n", "'role' and 'content'", true);
  EXPECT_THROW(train::load_jsonl("/nonexistent/x.jsonl", fx().tok, nullptr), s0::Error);
}

}  // namespace
