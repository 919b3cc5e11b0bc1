// The decode steps' task sharing (nn/task_claims.h): every task exactly once, in the order
// the header promises, for any thread count, nested or not, with and without stealing.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <vector>

#include "s0/nn/task_claims.h"

using namespace s0;

// One caller alone takes its own share front to back, then each other share from the back,
// the next thread's first.
TEST(TaskClaims, OneCallerTakesItsShareThenTheOthersFromTheBack) {
  nn::TaskClaims c(10, 3);  // shares [0, 3), [3, 6), [6, 10)
  ASSERT_EQ(c.threads(), 3);
  std::vector<int64_t> got;
  for (int64_t t; (t = c.next(1)) >= 0;) got.push_back(t);
  EXPECT_EQ(got, (std::vector<int64_t>{3, 4, 5, 9, 8, 7, 6, 2, 1, 0}));
  EXPECT_EQ(c.next(0), -1);
  // Fewer tasks than threads: one share per task.
  nn::TaskClaims few(2, 8);
  EXPECT_EQ(few.threads(), 2);
  EXPECT_EQ(few.next(5), 1);  // home 5 % 2
  EXPECT_EQ(few.next(5), 0);
  EXPECT_EQ(few.next(0), -1);
  // Without stealing a caller gets its own share only.
  nn::TaskClaims fixed(10, 3);
  std::vector<int64_t> own;
  for (int64_t t; (t = fixed.next(2, false)) >= 0;) own.push_back(t);
  EXPECT_EQ(own, (std::vector<int64_t>{6, 7, 8, 9}));
  EXPECT_EQ(fixed.next(0, false), 0);
}

TEST(TaskClaims, EveryTaskOnceForAnyThreadCountAndNested) {
  const int saved = at::get_num_threads();
  struct SplitScope {
    ~SplitScope() { nn::set_split_rows(true); }
  } split_scope;
  for (bool split : {true, false}) {
    for (int threads : {1, 2, 3, 5}) {
      nn::set_split_rows(split);
      at::set_num_threads(threads);
      for (int64_t n : {0, 1, 2, 7, 24, 1000}) {
        std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
        nn::claim_tasks(n, [&](auto&& next) {
          for (int64_t t; (t = next()) >= 0;) seen[t].fetch_add(1);
        });
        for (int64_t t = 0; t < n; ++t) ASSERT_EQ(seen[t].load(), 1) << "threads " << threads << " n " << n << " task " << t;
        // From inside a parallel region: each outer task's call runs all of its tasks alone.
        std::vector<std::atomic<int>> nested(static_cast<size_t>(2 * n));
        at::parallel_for(0, 2, 1, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b)
            nn::claim_tasks(n, [&](auto&& next) {
              for (int64_t t; (t = next()) >= 0;) nested[b * n + t].fetch_add(1);
            });
        });
        for (int64_t t = 0; t < 2 * n; ++t) ASSERT_EQ(nested[t].load(), 1) << "nested, threads " << threads << " n " << n;
      }
    }
  }
  at::set_num_threads(saved);
}
