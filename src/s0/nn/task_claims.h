// Independent tasks [0, n) on libtorch's intra-op threads, shared so that no thread waits at
// the end of the region for one that started late: each thread takes its own contiguous share
// front to back (so consecutive tasks, e.g. heads whose states lie one after another, stay on
// one thread), then takes the other threads' leftovers one at a time from the back. A static
// split (at::parallel_for's) leaves the thread that entered the region first waiting at the
// join for the other's whole share. Which thread runs a task never changes its result.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace s0::nn {

// How the threads share a region's work. On (the default): each thread takes its own
// contiguous share and then helps with what the others have left; product calls
// (linear.cpp) share weight rows so, the decode steps' head tasks below likewise. Off, the
// earlier schemes, kept for benchmarks: product rows in alternate chunks from one shared
// cursor, step tasks in fixed contiguous shares (at::parallel_for's static split). Results
// never depend on it. Defined in linear.cpp.
void set_split_rows(bool on);
bool split_rows();

// The claim state of one region: per thread a range of tasks as one 64-bit atomic (front,
// back). next(home) is the next task for the thread whose share is `home`, or -1 when none
// is left anywhere; thread-safe.
class TaskClaims {
 public:
  TaskClaims(int64_t n, int64_t nt) : nt_(std::max<int64_t>(1, std::min(nt, n))), ranges_(static_cast<size_t>(nt_)) {
    TORCH_CHECK(n < (int64_t{1} << 31), "claim_tasks: too many tasks for one region");
    for (int64_t t = 0; t < nt_; ++t) ranges_[t].store(pack(n * t / nt_, n * (t + 1) / nt_), std::memory_order_relaxed);
  }
  TaskClaims(const TaskClaims&) = delete;
  int64_t threads() const { return nt_; }

  // steal = false: only the home share (each share then needs its own caller).
  int64_t next(int64_t home, bool steal = true) {
    home %= nt_;
    std::atomic<uint64_t>& own = ranges_[home];
    for (uint64_t cur = own.load(std::memory_order_relaxed);;) {
      const int64_t lo = lo_of(cur), hi = hi_of(cur);
      if (lo >= hi) break;
      if (own.compare_exchange_weak(cur, pack(lo + 1, hi), std::memory_order_relaxed)) return lo;
    }
    for (int64_t k = 1; steal && k < nt_; ++k) {
      std::atomic<uint64_t>& r = ranges_[(home + k) % nt_];
      for (uint64_t cur = r.load(std::memory_order_relaxed);;) {
        const int64_t lo = lo_of(cur), hi = hi_of(cur);
        if (lo >= hi) break;
        if (r.compare_exchange_weak(cur, pack(lo, hi - 1), std::memory_order_relaxed)) return hi - 1;
      }
    }
    return -1;
  }

 private:
  static uint64_t pack(int64_t lo, int64_t hi) { return static_cast<uint64_t>(lo) | static_cast<uint64_t>(hi) << 32; }
  static int64_t lo_of(uint64_t v) { return static_cast<int64_t>(v & 0xffffffffu); }
  static int64_t hi_of(uint64_t v) { return static_cast<int64_t>(v >> 32); }

  int64_t nt_;
  std::vector<std::atomic<uint64_t>> ranges_;
};

// body(next) once per participating thread, next() giving that thread's tasks one by one
// (-1 at the end): per-thread set-up (scratch buffers) goes before the loop.
template <class Body>
void claim_tasks(int64_t n, Body&& body) {
  if (n <= 0) return;
  TaskClaims claims(n, at::get_num_threads());
  const bool steal = split_rows();
  // Share h is the home of the caller handed index h (one caller has them all when the
  // region runs inline, e.g. nested: with stealing it takes the others' from its first).
  at::parallel_for(0, claims.threads(), 1, [&](int64_t h0, int64_t h1) {
    if (steal) {
      body([&] { return claims.next(h0); });
      return;
    }
    for (int64_t h = h0; h < h1; ++h) body([&] { return claims.next(h, false); });
  });
}

}  // namespace s0::nn
