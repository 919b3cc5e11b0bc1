#include "s0/util/huge_pages.h"

#include <gnu/libc-version.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace s0::util {

namespace {
constexpr const char* kTunable = "glibc.malloc.hugetlb=1";

bool thp_never() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s;
  std::getline(f, s);
  return !f || s.find("[never]") != std::string::npos;
}

bool glibc_has_hugetlb() {
  int major = 0, minor = 0;
  return std::sscanf(gnu_get_libc_version(), "%d.%d", &major, &minor) == 2 && (major > 2 || (major == 2 && minor >= 35));
}
}  // namespace

bool huge_pages_wanted() {
  const char* v = std::getenv("S0_HUGE_PAGES");
  return !(v && std::strcmp(v, "0") == 0);
}

bool huge_page_heap() {
  const char* t = std::getenv("GLIBC_TUNABLES");
  return t && std::strstr(t, kTunable) != nullptr && glibc_has_hugetlb();
}

std::string tunables_with_huge_page_heap(const char* current) {
  if (current && std::strstr(current, "glibc.malloc.hugetlb") != nullptr) return "";
  return current && *current ? std::string(current) + ":" + kTunable : std::string(kTunable);
}

void enable_huge_page_heap(char** argv) {
  if (!huge_pages_wanted() || !glibc_has_hugetlb() || thp_never()) return;
  const char* t = std::getenv("GLIBC_TUNABLES");
  const bool had = t != nullptr;
  const std::string old = had ? t : "";  // a copy: setenv may replace the string t points to
  const std::string v = tunables_with_huge_page_heap(t);
  if (v.empty() || ::setenv("GLIBC_TUNABLES", v.c_str(), 1) != 0) return;
  std::fflush(nullptr);
  ::execv("/proc/self/exe", argv);
  // The exec failed (no /proc, a sandbox without it): run on without the heap tunable, and
  // leave the environment as it was for any children.
  if (had) ::setenv("GLIBC_TUNABLES", old.c_str(), 1);
  else ::unsetenv("GLIBC_TUNABLES");
}

}  // namespace s0::util
