// The CPU backend: where a policy's element functor runs when the store's memory is host memory.
//
// The seam between policies and backends is deliberately narrow (the Boost.Odeint
// state/algebra split): a policy builds a functor that updates the elements it is given an index
// for, and a backend only decides how the indices are scheduled. A Thrust backend needs only the
// same members (for_each_index through thrust::for_each, a device buffer), so policies are
// written once for every backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

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
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (count >= parallel_threshold)
#endif
    for (std::int64_t i = 0; i < n; ++i)
      f(static_cast<std::size_t>(i));
  }

  template <class T>
  static T* data(buffer<T>& b) {
    return b.data();
  }
};

}  // namespace zo::backends
