// Task files that would take unbounded memory are refused before being read: a 1 GB file
// (sparse) and a gzip bomb.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <fstream>

#include "s0/eval/tasks.h"
#include "s0/util/error.h"
#include "test_util.h"

using namespace s0;

TEST(EvalTaskLimits, HugeFileIsRefusedUnread) {
  const std::string path = s0::testing::temp_dir("tasks_huge") + "/gsm8k.jsonl";
  { std::ofstream(path) << "{\"question\": \"q\", \"answer\": \"#### 1\"}\n"; }
  ASSERT_EQ(::truncate(path.c_str(), off_t{1} << 30), 0);
  try {
    (void)eval::read_tasks(eval::TaskKind::GSM8K, path);
    FAIL() << "a 1 GB task file was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": larger than 256 MiB"), std::string::npos) << e.what();
  }
}

TEST(EvalTaskLimits, GzipBombIsRefused) {
  const std::string path = s0::testing::temp_dir("tasks_bomb") + "/he.jsonl.gz";
  gzFile f = gzopen(path.c_str(), "wb1");
  ASSERT_NE(f, nullptr);
  const std::string chunk(1 << 20, '\n');
  for (int i = 0; i < 300; ++i) ASSERT_EQ(gzwrite(f, chunk.data(), static_cast<unsigned>(chunk.size())), 1 << 20);
  gzclose(f);
  try {
    (void)eval::read_tasks(eval::TaskKind::HumanEval, path);
    FAIL() << "a gzip bomb was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("larger than 256 MiB (the limit for task files, decompressed)"),
              std::string::npos)
        << e.what();
  }
}
