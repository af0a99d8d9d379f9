// What the kernels of this folder share: ParallelFor over XLA:CPU's intra-op thread pool, and
// advice that a large fresh buffer be backed by huge pages.

#ifndef TRIPJAX_KERNELS_COMMON_H_
#define TRIPJAX_KERNELS_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include <sys/mman.h>

#include "xla/ffi/api/ffi.h"

namespace tripjax {

// Runs work(i) for i in [0, n) on the calling thread and the pool's threads. Items are claimed
// through an atomic counter, and the caller waits only for items that some running thread has
// claimed, so this cannot deadlock when the pool is busy (the caller then does all the work).
template <typename Work>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t n, const Work& work) {
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  if (helpers <= 0) {
    for (int64_t i = 0; i < n; ++i) work(i);
    return;
  }
  struct Progress {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto progress = std::make_shared<Progress>();
  // A helper that starts after every item is claimed touches only `progress` (kept alive by
  // its shared_ptr), never `work`, which lives on the caller's stack.
  auto run = [progress, n, &work] {
    for (int64_t i; (i = progress->next.fetch_add(1)) < n;) {
      work(i);
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule(decltype(run)(run));
  run();
  while (progress->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// Asks for transparent huge pages over the whole 2 MiB pages inside [data, data + bytes): a
// fresh output's first touch then faults once per 2 MiB instead of once per 4 KiB (a large
// part of a pass over a buffer this size). Advice only: nothing changes where it is refused.
inline void AdviseHugePages(void* data, size_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

}  // namespace tripjax

#endif  // TRIPJAX_KERNELS_COMMON_H_
