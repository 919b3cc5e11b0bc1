#pragma once
// Transparent huge pages (2 MB) for the memory a decode step streams. A step reads every
// weight and each sequence's f32 recurrent state once; on this project's reference machine
// (a 2-core KVM guest) memory on 4 KB pages streamed at 20-28 GB/s depending on where it
// landed, on 2 MB pages at 29-30 GB/s; decode got ~3-5% faster for Qwen3.5-0.8B at batch
// 16-64 and 3-27% for Falcon-H1-0.5B (docs/performance.md).
// Linux's default THP mode ("madvise") grants them only to memory that asks:
//   - model weights ask through models::WeightArena (every way of loading a model);
//   - the rest of the heap (states, KV caches, activations, logits) asks through glibc's
//     malloc tunable glibc.malloc.hugetlb=1 (glibc 2.35+), which can only be set before the
//     process starts: enable_huge_page_heap re-executes the program once with it set.
// S0_HUGE_PAGES=0 in the environment turns both off.

#include <string>

namespace s0::util {

// False when S0_HUGE_PAGES=0 is set, true otherwise.
bool huge_pages_wanted();

// For main(), before anything else: re-executes the program (same pid, argv and
// environment, plus GLIBC_TUNABLES=glibc.malloc.hugetlb=1) unless huge pages are not
// wanted, the tunable is already set (the re-executed run), glibc predates it, this
// machine's THP mode is "never", or the exec fails; then it returns and the program runs
// on as it is.
void enable_huge_page_heap(char** argv);

// Whether this process's heap was started with the tunable (for benchmark reports).
bool huge_page_heap();

// The GLIBC_TUNABLES value to re-execute with, given the current one (null: unset), or ""
// when the current value already says something about glibc.malloc.hugetlb (ours, or the
// user's own choice, which is kept).
std::string tunables_with_huge_page_heap(const char* current);

}  // namespace s0::util
