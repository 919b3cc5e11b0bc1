// Training data that would take unbounded memory is refused with file:line: a JSONL line of
// 1 GB (a sparse file, so the test writes almost nothing to disk).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "s0/io/lines.h"
#include "s0/train/data.h"
#include "s0/util/error.h"
#include "test_util.h"

using namespace s0;

TEST(TrainDataLimits, OneGigabyteLineIsRefused) {
  const std::string dir = s0::testing::tiny_qwen35("f32", 31);
  const auto tok = text::Tokenizer::from_model_dir(dir);
  const std::string path = s0::testing::temp_dir("data_1gb_line") + "/data.jsonl";
  {
    std::ofstream out(path);
    out << "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"";
  }
  ASSERT_EQ(::truncate(path.c_str(), off_t{1} << 30), 0);  // then 1 GB of NUL bytes, no newline
  try {
    (void)train::load_jsonl(path, tok, nullptr);
    FAIL() << "a 1 GB line was read";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path + ":2: line longer than 64 MiB"), std::string::npos) << m;
  }
}

TEST(TrainDataLimits, LineReaderSplitsAndBounds) {
  std::istringstream in("ab\n\ncd\nefgh");
  std::string line;
  EXPECT_EQ(io::read_line(in, line, 4), io::LineStatus::Line);
  EXPECT_EQ(line, "ab");
  EXPECT_EQ(io::read_line(in, line, 4), io::LineStatus::Line);
  EXPECT_EQ(line, "");
  EXPECT_EQ(io::read_line(in, line, 4), io::LineStatus::Line);
  EXPECT_EQ(line, "cd");
  EXPECT_EQ(io::read_line(in, line, 4), io::LineStatus::Line);  // last line, no newline, exactly 4
  EXPECT_EQ(line, "efgh");
  EXPECT_EQ(io::read_line(in, line, 4), io::LineStatus::End);
  std::istringstream big("abcde\n");
  EXPECT_EQ(io::read_line(big, line, 4), io::LineStatus::TooLong);
}
