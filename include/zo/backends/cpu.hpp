// SPDX-License-Identifier: Apache-2.0
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

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace zo::backends {

struct cpu {
  // Scratch memory the optimizers need on this backend (e.g. the exact-restore snapshot).
  template <class T>
  using buffer = std::vector<T>;

  // Below this much work (indices × work per index) a parallel region costs more than it saves.
  static constexpr std::size_t parallel_threshold = 1 << 14;

  // Calls f(i) for every i in [0, count). Each index is handled by exactly one thread and f
  // must not depend on the order, so results do not depend on the number of threads.
  // work_per_index is a hint (elements touched per call) for deciding whether to go parallel;
  // compiled without OpenMP nothing goes parallel, and it is unused.
  // A functor with for_range(first, last) is given each thread's share of the indices as one
  // contiguous range instead (the dense passes vectorise over it); it must do exactly what
  // calling f(i) for every i in the range would.
  template <class F>
  static void for_each_index(std::size_t count, const F& f,
                             [[maybe_unused]] std::size_t work_per_index = 1) {
    if constexpr (requires { f.for_range(std::size_t{}, std::size_t{}); }) {
#if defined(_OPENMP)
#pragma omp parallel if (count * work_per_index >= parallel_threshold)
      {
        const auto threads = static_cast<std::size_t>(omp_get_num_threads());
        const auto thread = static_cast<std::size_t>(omp_get_thread_num());
        const std::size_t share = (count + threads - 1) / threads;
        const std::size_t first = thread * share < count ? thread * share : count;
        const std::size_t last = first + share < count ? first + share : count;
        if (first < last) f.for_range(first, last);
      }
#else
      if (count > 0) f.for_range(0, count);
#endif
      return;
    }
    const auto n = static_cast<std::int64_t>(count);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (count * work_per_index >= parallel_threshold)
#endif
    for (std::int64_t i = 0; i < n; ++i)
      f(static_cast<std::size_t>(i));
  }

  template <class T>
  static T* data(buffer<T>& b) {
    return b.data();
  }
  template <class T>
  static const T* data(const buffer<T>& b) {
    return b.data();
  }

  // Moving state between the backend and the host (saving and loading optimizer state).
  template <class T>
  static void to_host(const buffer<T>& from, std::vector<T>& to) {
    to.assign(from.begin(), from.end());
  }
  template <class T>
  static void from_host(const std::vector<T>& from, buffer<T>& to) {
    to.assign(from.begin(), from.end());
  }
};

}  // namespace zo::backends
