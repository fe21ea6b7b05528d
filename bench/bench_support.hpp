// SPDX-License-Identifier: Apache-2.0
// Helpers both benchmark programs use: the thread count of one benchmark, the copy every figure
// is compared with, and the median of a few timed runs.
#pragma once

#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>
#include <zo/zo.hpp>

namespace zo_bench {

using clock_type = std::chrono::steady_clock;

// Sets the thread count for one benchmark (its first argument) and restores it afterwards.
class thread_scope {
 public:
  explicit thread_scope(const benchmark::State& state) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(static_cast<int>(state.range(0)));
  }
  ~thread_scope() { omp_set_num_threads(saved_); }
  thread_scope(const thread_scope&) = delete;
  thread_scope& operator=(const thread_scope&) = delete;

 private:
  int saved_;
};

// A copy of `count` floats split over the backend's threads, as every pass is.
template <class T>
void parallel_copy(const T* source, T* target, std::size_t count) {
  constexpr std::size_t chunk = 1 << 14;
  zo::backends::cpu{}.for_each_index((count + chunk - 1) / chunk,
                                     [=](std::size_t c) {
                                       const std::size_t first = c * chunk;
                                       std::memcpy(target + first, source + first,
                                                   std::min(chunk, count - first) * sizeof(T));
                                     },
                                     chunk);
}

// Median of seven timed calls of f.
template <class F>
double median_seconds(F&& f) {
  std::vector<double> times;
  for (int k = 0; k < 7; ++k) {
    const auto start = clock_type::now();
    f();
    benchmark::ClobberMemory();
    times.push_back(std::chrono::duration<double>(clock_type::now() - start).count());
  }
  std::nth_element(times.begin(), times.begin() + 3, times.end());
  return times[3];
}

inline void threads_1_and_2(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
}

// The same with each direction generator (zo::generator's code: 1 philox4x32-10, 2 -8) as the
// second argument, so that both are measured by one binary in one run.
inline void threads_and_generators(benchmark::internal::Benchmark* b) {
  b->ArgNames({"threads", "generator"})->UseRealTime()->Unit(benchmark::kMillisecond);
  for (const int threads : {1, 2}) {
    for (const zo::generator g : {zo::generator::philox4x32_10, zo::generator::philox4x32_8})
      b->Args({threads, static_cast<int>(g)});
  }
}

inline zo::generator generator_argument(const benchmark::State& state) {
  return static_cast<zo::generator>(state.range(1));
}

}  // namespace zo_bench
