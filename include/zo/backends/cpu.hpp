// The CPU backend: where a policy's element functor runs when the store's memory is host memory.
//
// The seam between policies and backends is deliberately narrow (the Boost.Odeint
// state/algebra split): a policy builds a functor that updates the elements it is given an index
// for, and a backend only decides how the indices are scheduled. The Thrust backend implements
// the same two members with thrust::for_each, so policies never change between backends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace zo::backends {

struct cpu {
  // Scratch memory the optimizers need on this backend (e.g. the exact-restore snapshot).
  template <class T>
  using buffer = std::vector<T>;

  // Below this many indices a parallel region costs more than it saves.
  static constexpr std::size_t parallel_threshold = 1 << 12;

  // Calls f(i) for every i in [0, count). Each index is handled by exactly one thread and f
  // must not depend on the order, so results do not depend on the number of threads.
  template <class F>
  static void for_each_index(std::size_t count, const F& f) {
    const auto n = static_cast<std::int64_t>(count);
    if (count < parallel_threshold) {
      for (std::int64_t i = 0; i < n; ++i)
        f(static_cast<std::size_t>(i));
      return;
    }
#if defined(_OPENMP)
    // Contiguous equal shares, one per thread, as schedule(static) would give.
#pragma omp parallel
    {
      const auto threads = static_cast<std::int64_t>(omp_get_num_threads());
      const auto t = static_cast<std::int64_t>(omp_get_thread_num());
      const std::int64_t begin = n * t / threads, end = n * (t + 1) / threads;
      for (std::int64_t i = begin; i < end; ++i)
        f(static_cast<std::size_t>(i));
    }
#else
    for (std::int64_t i = 0; i < n; ++i)
      f(static_cast<std::size_t>(i));
#endif
  }

  template <class T>
  static T* data(buffer<T>& b) {
    return b.data();
  }
};

}  // namespace zo::backends
