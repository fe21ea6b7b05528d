// SPDX-License-Identifier: Apache-2.0
// The CPU backend: where a policy's element functor runs when the store's memory is host memory.
//
// The seam between policies and backends is deliberately narrow (the Boost.Odeint
// state/algebra split): a policy builds a functor that updates the elements it is given an index
// for, and a backend only decides how the indices are scheduled. A backend is a value (Thrust's
// execution policies are the model): this one carries its thread count, the Thrust backend its
// execution policy, and the store hands its backend to every pass.
#pragma once

#include <concepts>
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

  // OpenMP threads for this backend's loops; 0 leaves it to OpenMP (OMP_NUM_THREADS). Without
  // OpenMP every loop runs on the calling thread.
  int threads = 0;

  // Calls f(i) for every i in [0, count). Each index is handled by exactly one thread and f
  // must not depend on the order, so results do not depend on the number of threads.
  // work_per_index is a hint (elements touched per call) for deciding whether to go parallel.
  // A functor that can run `batch` consecutive indices at once (run_batch, see run_share) is
  // given each thread's share as one contiguous range instead.
  template <class F>
  void for_each_index(std::size_t count, const F& f, std::size_t work_per_index = 1) const {
    const bool parallel = count * work_per_index >= parallel_threshold;
#if defined(_OPENMP)
    const int team = threads > 0 ? threads : omp_get_max_threads();
    if constexpr (batched<F>) {
#pragma omp parallel if (parallel) num_threads(team)
      {
        const auto size = static_cast<std::size_t>(omp_get_num_threads());
        const auto thread = static_cast<std::size_t>(omp_get_thread_num());
        const std::size_t share = (count + size - 1) / size;
        const std::size_t first = thread * share < count ? thread * share : count;
        const std::size_t last = first + share < count ? first + share : count;
        if (first < last) run_share(f, first, last);
      }
    } else {
      const auto n = static_cast<std::int64_t>(count);
#pragma omp parallel for schedule(static) if (parallel) num_threads(team)
      for (std::int64_t i = 0; i < n; ++i)
        f(static_cast<std::size_t>(i));
    }
#else
    (void)parallel;
    if constexpr (batched<F>) {
      if (count > 0) run_share(f, 0, count);
    } else {
      for (std::size_t i = 0; i < count; ++i)
        f(i);
    }
#endif
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

 private:
  // A functor whose indices vectorise in batches: run_batch(i) does what f(i), …,
  // f(i + batch − 1) would, for i a multiple of batch.
  template <class F>
  static constexpr bool batched = requires(const F& f, std::size_t i) {
    { F::batch } -> std::convertible_to<std::size_t>;
    f.run_batch(i);
  };

  // One thread's share: single indices up to the first batch boundary, whole batches, then the
  // single indices left, so every index is computed exactly as f(i) would compute it.
  template <class F>
  static void run_share(const F& f, std::size_t first, std::size_t last) {
    std::size_t i = first;
    for (; i < last && i % F::batch != 0; ++i)
      f(i);
    for (; i + F::batch <= last; i += F::batch)
      f.run_batch(i);
    for (; i < last; ++i)
      f(i);
  }
};

}  // namespace zo::backends
