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
#include <memory>

namespace s0::nn {

// How the threads share a region's work. On (the default): each thread takes its own
// contiguous share and then helps with what the others have left; product calls
// (linear.cpp) share weight rows so, the decode steps' head tasks below likewise. Off, the
// earlier schemes, kept for benchmarks: product rows in alternate chunks from one shared
// cursor, step tasks in fixed contiguous shares (at::parallel_for's static split). Results
// never depend on it. Defined in linear.cpp.
void set_split_rows(bool on);
bool split_rows();

// Contiguous shares of [0, n) that threads claim pieces of, front to back from their own
// share and back to front from the others': each share one 64-bit atomic (front, back), so
// a claim is one compare-and-swap. The shares live inline up to 16 threads (no allocation
// per region). The mechanism under TaskClaims below and the product calls' row claims
// (linear.cpp). n < 2^31.
class Shares {
 public:
  // count shares, share i = [border(i), border(i + 1)): border(0) = 0, non-decreasing,
  // border(count) = n.
  template <class Border>
  Shares(int64_t count, Border&& border) : count_(count) {
    TORCH_CHECK(count_ >= 1 && border(count_) < (int64_t{1} << 31), "Shares: too many items for one region");
    if (count_ > kInline) heap_ = std::make_unique<std::atomic<uint64_t>[]>(static_cast<size_t>(count_));
    int64_t lo = border(0);
    for (int64_t i = 0; i < count_; ++i) {
      const int64_t hi = border(i + 1);
      at(i).store(pack(lo, hi), std::memory_order_relaxed);
      lo = hi;
    }
  }
  Shares(const Shares&) = delete;
  int64_t count() const { return count_; }

  // [a, b) from the front of share i, b = cut(lo, hi) in (lo, hi] for what the share has
  // left, [lo, hi); false once it is empty.
  template <class Cut>
  bool front(int64_t i, Cut&& cut, int64_t& a, int64_t& b) {
    std::atomic<uint64_t>& r = at(i);
    for (uint64_t cur = r.load(std::memory_order_relaxed);;) {
      const int64_t lo = lo_of(cur), hi = hi_of(cur);
      if (lo >= hi) return false;
      const int64_t end = cut(lo, hi);
      if (r.compare_exchange_weak(cur, pack(end, hi), std::memory_order_relaxed)) return a = lo, b = end, true;
    }
  }
  // [a, b) from the back of share i, a = cut(lo, hi) in [lo, hi).
  template <class Cut>
  bool back(int64_t i, Cut&& cut, int64_t& a, int64_t& b) {
    std::atomic<uint64_t>& r = at(i);
    for (uint64_t cur = r.load(std::memory_order_relaxed);;) {
      const int64_t lo = lo_of(cur), hi = hi_of(cur);
      if (lo >= hi) return false;
      const int64_t start = cut(lo, hi);
      if (r.compare_exchange_weak(cur, pack(lo, start), std::memory_order_relaxed)) return a = start, b = hi, true;
    }
  }

 private:
  static constexpr int64_t kInline = 16;
  static uint64_t pack(int64_t lo, int64_t hi) { return static_cast<uint64_t>(lo) | static_cast<uint64_t>(hi) << 32; }
  static int64_t lo_of(uint64_t v) { return static_cast<int64_t>(v & 0xffffffffu); }
  static int64_t hi_of(uint64_t v) { return static_cast<int64_t>(v >> 32); }
  std::atomic<uint64_t>& at(int64_t i) { return heap_ ? heap_[i] : inline_[i]; }

  int64_t count_;
  std::atomic<uint64_t> inline_[kInline];
  std::unique_ptr<std::atomic<uint64_t>[]> heap_;
};

// One task at a time: next(home) is the next task for the thread whose share is `home` (its
// own share front to back, then the others' from the back, the next share's first), or -1
// when none is left; thread-safe.
class TaskClaims {
 public:
  TaskClaims(int64_t n, int64_t nt)
      : shares_(std::max<int64_t>(1, std::min(nt, n)), [n, k = std::max<int64_t>(1, std::min(nt, n))](int64_t i) { return n * i / k; }) {}
  int64_t threads() const { return shares_.count(); }

  // steal = false: only the home share (each share then needs its own caller).
  int64_t next(int64_t home, bool steal = true) {
    const int64_t k = shares_.count();
    int64_t a, b;
    if (shares_.front(home % k, [](int64_t lo, int64_t) { return lo + 1; }, a, b)) return a;
    for (int64_t j = 1; steal && j < k; ++j)
      if (shares_.back((home + j) % k, [](int64_t, int64_t hi) { return hi - 1; }, a, b)) return a;
    return -1;
  }

 private:
  Shares shares_;
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
