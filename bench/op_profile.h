#pragma once
// The legacy operator profiler's events summed per operator (self CPU time and calls), for
// the benchmarks' --profile options. Only operators that go through the ATen dispatcher are
// seen (s0's own kernels appear as the ATen calls they make, if any).
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>

namespace s0::bench {

// Self CPU time per operator name over the profiled events of every thread (legacy
// profiler: push/pop pairs, nested per thread).
inline std::string shapes_of(const torch::autograd::profiler::LegacyEvent& e) {
  std::string s;
  for (const auto& sh : e.shapes()) {
    s += s.empty() ? "[" : ", [";
    for (size_t i = 0; i < sh.size(); ++i) s += (i ? "," : "") + std::to_string(sh[i]);
    s += "]";
  }
  return s;
}

// with_shapes: one row per (operator, input shapes) instead of per operator.
inline nlohmann::json op_profile(const torch::autograd::profiler::thread_event_lists& lists, size_t top,
                                 bool with_shapes) {
  using torch::autograd::profiler::EventKind;
  std::map<std::string, std::pair<double, int64_t>> self;  // name -> (us, calls)
  for (const auto& events : lists) {
    struct Open { const torch::autograd::profiler::LegacyEvent* e; double child_us; };
    std::vector<Open> stack;
    for (const auto& e : events) {
      if (e.kind() == EventKind::PushRange) {
        stack.push_back({&e, 0.0});
      } else if (e.kind() == EventKind::PopRange && !stack.empty()) {
        Open o = stack.back();
        stack.pop_back();
        const double us = o.e->cpuElapsedUs(e);
        auto& s = self[with_shapes ? std::string(o.e->name()) + " " + shapes_of(*o.e) : std::string(o.e->name())];
        s.first += us - o.child_us, s.second += 1;
        if (!stack.empty()) stack.back().child_us += us;
      }
    }
  }
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> v(self.begin(), self.end());
  std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second.first > b.second.first; });
  double total = 0;
  for (auto& x : v) total += x.second.first;
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < std::min(top, v.size()); ++i)
    out.push_back({{"op", v[i].first}, {"self_ms", v[i].second.first / 1e3}, {"calls", v[i].second.second},
                   {"share", v[i].second.first / std::max(total, 1e-9)}});
  return out;
}

}  // namespace s0::bench
