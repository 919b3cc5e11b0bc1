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

void enable_huge_page_heap(char** argv) {
  if (!huge_pages_wanted() || !glibc_has_hugetlb() || thp_never()) return;
  const char* t = std::getenv("GLIBC_TUNABLES");
  if (t && std::strstr(t, "glibc.malloc.hugetlb") != nullptr) return;  // set: by us or by the user
  const std::string v = t && *t ? std::string(t) + ":" + kTunable : std::string(kTunable);
  if (::setenv("GLIBC_TUNABLES", v.c_str(), 1) != 0) return;
  std::fflush(nullptr);
  ::execv("/proc/self/exe", argv);
  // The exec failed (no /proc, a sandbox without it): run on without the heap tunable, and
  // leave the environment as it was for any children.
  if (t) ::setenv("GLIBC_TUNABLES", t, 1);
  else ::unsetenv("GLIBC_TUNABLES");
}

}  // namespace s0::util
