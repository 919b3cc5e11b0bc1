#pragma once
// Multi-threaded OpenBLAS is slow on the many small matrix products of the chunked
// recurrences (thread hand-off per 64x128 product costs more than the product): measured
// 84 ms -> 31 ms for one 0.8B GatedDeltaNet layer at 512 tokens on 2 cores. This guard
// makes OpenBLAS single-threaded for a scope and restores it after. It finds OpenBLAS at
// run time (dlsym), so builds against MKL/CUDA libtorch simply skip it.
namespace s0 {

class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

  // Makes OpenBLAS single-threaded for the rest of the process (no-op without OpenBLAS).
  static void set_default_single();

 private:
  int saved_ = -1;
};

}  // namespace s0
