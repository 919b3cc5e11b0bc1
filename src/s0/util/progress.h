#pragma once
// Progress of a long loop on stderr: a self-rewriting line with rate and ETA on a terminal,
// one JSON object per update otherwise (machine-readable logs). A thread may instead install a
// sink (ScopedProgressSink: the Python module's progress callbacks) that receives that JSON
// object and nothing is printed. Torch-free, header-only.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace s0 {

using ProgressSink = std::function<void(const nlohmann::json&)>;

namespace detail {
inline ProgressSink*& progress_sink() {
  thread_local ProgressSink* sink = nullptr;
  return sink;
}
}  // namespace detail

// While in scope, every Progress::update on this thread goes to `sink` instead of stderr.
class ScopedProgressSink {
 public:
  explicit ScopedProgressSink(ProgressSink sink) : sink_(std::move(sink)), prev_(detail::progress_sink()) {
    detail::progress_sink() = &sink_;
  }
  ~ScopedProgressSink() { detail::progress_sink() = prev_; }
  ScopedProgressSink(const ScopedProgressSink&) = delete;
  ScopedProgressSink& operator=(const ScopedProgressSink&) = delete;

 private:
  ProgressSink sink_;
  ProgressSink* prev_;
};

class Progress {
 public:
  Progress(std::string what, int64_t total, std::string unit)
      : what_(std::move(what)), unit_(std::move(unit)), total_(total), tty_(isatty(fileno(stderr)) != 0),
        t0_(std::chrono::steady_clock::now()) {}
  ~Progress() { finish(); }

  // `done` units finished out of total; `note` is appended (TTY) or put in "note" (JSON).
  void update(int64_t done, const std::string& note = "") {
    double el = elapsed();
    double rate = el > 0 ? static_cast<double>(done - start_) / el : 0;
    double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0;
    if (auto* sink = detail::progress_sink()) {
      nlohmann::json j = {{"progress", what_}, {"done", done},     {"total", total_}, {"unit", unit_},
                          {"rate", rate},      {"eta_s", eta},     {"elapsed_s", el}};
      if (!note.empty()) j["note"] = note;
      (*sink)(j);
      return;
    }
    if (tty_) {
      std::fprintf(stderr, "\r[%s] %lld/%lld %s  %.2f %s/s  ETA %s  %s\033[K", what_.c_str(),
                   static_cast<long long>(done), static_cast<long long>(total_), unit_.c_str(), rate, unit_.c_str(),
                   clock(eta).c_str(), note.c_str());
      std::fflush(stderr);
      open_ = true;
    } else {
      nlohmann::json j = {{"progress", what_}, {"done", done},     {"total", total_}, {"unit", unit_},
                          {"rate", rate},      {"eta_s", eta},     {"elapsed_s", el}};
      if (!note.empty()) j["note"] = note;
      std::fprintf(stderr, "%s\n", j.dump().c_str());
    }
  }
  // Units already done before this run (resume): excluded from the rate.
  void set_start(int64_t done) { start_ = done; }
  void finish() {
    if (open_) std::fputc('\n', stderr);
    open_ = false;
  }
  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }
  static std::string clock(double s) {
    char b[32];
    long long t = static_cast<long long>(s);
    std::snprintf(b, sizeof b, "%lld:%02lld", t / 60, t % 60);
    return b;
  }

 private:
  std::string what_, unit_;
  int64_t total_, start_ = 0;
  bool tty_, open_ = false;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace s0
