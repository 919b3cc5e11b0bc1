#pragma once
// A way to stop long loops from outside (the Python module's Ctrl-C): the thread that runs a
// loop installs a hook; the loops call poll_interrupt() between units of work (an engine
// step, a training example, a problem), and a hook that wants the work stopped throws. The
// hook is per thread, so two threads running two loops each have their own (or none).
// Torch-free, header-only.
//
// Progress: every poll_interrupt(), and note_progress() where a long operation advances
// without a loop hook (a sandboxed check starting), adds to one counter per process; a
// distributed job publishes it so that its peers can tell a stuck rank from a slow one.
#include <atomic>
#include <cstdint>
#include <functional>
#include <utility>

namespace s0 {

// Units of work this process has started (any thread); never throws.
inline std::atomic<uint64_t>& progress_counter() {
  static std::atomic<uint64_t> n{0};
  return n;
}
inline void note_progress() { progress_counter().fetch_add(1, std::memory_order_relaxed); }

namespace detail {
inline std::function<void()>*& interrupt_hook() {
  thread_local std::function<void()>* hook = nullptr;
  return hook;
}
}  // namespace detail

// Calls this thread's hook, if any (it may throw to stop the loop).
inline void poll_interrupt() {
  note_progress();
  if (auto* h = detail::interrupt_hook()) (*h)();
}

// Installs `hook` for the current thread while in scope (the previous one is restored).
class ScopedInterruptHook {
 public:
  explicit ScopedInterruptHook(std::function<void()> hook)
      : hook_(std::move(hook)), prev_(detail::interrupt_hook()) {
    detail::interrupt_hook() = &hook_;
  }
  ~ScopedInterruptHook() { detail::interrupt_hook() = prev_; }
  ScopedInterruptHook(const ScopedInterruptHook&) = delete;
  ScopedInterruptHook& operator=(const ScopedInterruptHook&) = delete;

 private:
  std::function<void()> hook_;
  std::function<void()>* prev_;
};

}  // namespace s0
