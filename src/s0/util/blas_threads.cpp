#include "s0/util/blas_threads.h"

#include <dlfcn.h>

namespace s0 {

namespace {
using SetFn = void (*)(int);
using GetFn = int (*)();
struct OpenBlas {
  SetFn set = nullptr;
  GetFn get = nullptr;
  OpenBlas() {
    set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    get = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    if (!set || !get) set = nullptr, get = nullptr;
  }
};
const OpenBlas& openblas() {
  static OpenBlas o;
  return o;
}
}  // namespace

SingleThreadedBlas::SingleThreadedBlas() {
  const auto& o = openblas();
  if (!o.set) return;
  saved_ = o.get();
  if (saved_ != 1) o.set(1);
}

void SingleThreadedBlas::set_default_single() {
  if (openblas().set) openblas().set(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  const auto& o = openblas();
  if (o.set && saved_ > 1) o.set(saved_);
}

}  // namespace s0
