#pragma once
// Progress of a long loop on stderr: a self-rewriting line with rate and ETA on a terminal,
// one JSON object per update otherwise (machine-readable logs). Torch-free, header-only.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace s0 {

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
