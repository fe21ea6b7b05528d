// SPDX-License-Identifier: Apache-2.0
// The kernels of every optimizer, each against a copy of the same bytes measured by the same
// binary with the same threads just before it (docs/benchmarks.md: the ratio, not the absolute
// time, is the figure to quote on a shared machine). The first argument of every benchmark is the
// number of OpenMP threads; the second, where there is one, the direction generator's code
// (zo::generator: 1 philox4x32-10, 2 philox4x32-8). The copy and the dense, fused and Rademacher
// passes also run on zo::bfloat16 blocks (<zo::bfloat16>: 16 bits loaded, float computed, 16
// bits stored; the fused step's base point rounded stochastically), whose x_copy is against a
// copy of the same number of bfloat16 elements.
//
//   copy                   one pass reading and writing the block (the bandwidth limit)
//   generate               Gaussian directions alone, a run of batches at a time as passes
//                          draw them, into an L1-resident buffer: no memory traffic
//   dense_perturb          θ ← θ + ε·z, z generated in the pass (a MeZO perturbation)
//   fused_update_perturb   θ ← s·θ + a·z_k + ε·z_{k+1}, base point also written to the snapshot
//                          (the update pass of a fused step in exact mode)
//   rademacher_perturb     θ ← θ + ε·z, z = ±1 (SPSA)
//   low_rank_apply         θ ← θ + α·U·Vᵀ, rank r (LOZO), factors generated into O(r(m + n))
//   lozo_m_momentum_apply  θ ← s·θ + α·U·Vᵀ + N·Vᵀ (LOZO-M's update with its momentum factor)
//   adam                   AdamW on the block from a stored gradient (LoHO's first-order part)
//
// Counters: x_copy = time per iteration / time of the copy; elements_per_s_per_core for
// generate; bytes_per_second where the kernel's own traffic is known.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>
#include <zo/zo.hpp>

#include "bench_support.hpp"

namespace {

using zo_bench::clock_type;
using zo_bench::thread_scope;
using zo_bench::threads_1_and_2;
using zo_bench::threads_and_generators;

constexpr std::size_t rows = 4096, cols = 4096;  // 64 MiB of float: far beyond the caches
constexpr std::size_t elements = rows * cols;

// Median time of a copy of `count` elements of T with the current threads.
template <class T>
double copy_seconds(std::size_t count) {
  std::vector<T> source(count, zo::round_nearest<T>(1.0f)), target(count);
  return zo_bench::median_seconds(
      [&] { zo_bench::parallel_copy(source.data(), target.data(), count); });
}

// Runs `body` as the timed loop and reports its ratio to a copy of `copy_elements` elements of T.
template <class T = float, class Body>
void timed(benchmark::State& state, std::size_t copy_elements, Body&& body) {
  const double copy = copy_seconds<T>(copy_elements);
  double total = 0;
  for (auto _ : state) {
    const auto start = clock_type::now();
    body();
    benchmark::ClobberMemory();
    total += std::chrono::duration<double>(clock_type::now() - start).count();
  }
  state.counters["x_copy"] = total / static_cast<double>(state.iterations()) / copy;
}

void set_bytes(benchmark::State& state, std::size_t bytes_per_iteration) {
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes_per_iteration));
}

template <class T>
void copy(benchmark::State& state) {
  thread_scope threads(state);
  std::vector<T> source(elements, zo::round_nearest<T>(1.0f)), target(elements);
  timed<T>(state, elements,
           [&] { zo_bench::parallel_copy(source.data(), target.data(), elements); });
  set_bytes(state, 2 * elements * sizeof(T));
}

void generate(benchmark::State& state) {
  thread_scope threads(state);
  const zo::direction_key key{1, 0, 0, zo::stream::dense, 0, zo_bench::generator_argument(state)};
  // zo::run_batches batches at a time, as a host pass generates them.
  constexpr std::size_t runs = elements / (zo::run_batches * zo::batch_width);
  timed(state, elements, [&] {
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < static_cast<std::int64_t>(runs); ++r) {
      float z[zo::run_batches * zo::batch_width];  // stays in L1: no memory traffic
      zo::gaussian_distribution::batches<zo::run_batches>(
          key, static_cast<std::uint64_t>(r) * zo::run_batches * zo::batch_groups, z);
      benchmark::DoNotOptimize(z);
    }
  });
  state.counters["elements_per_s_per_core"] = benchmark::Counter(
      static_cast<double>(state.iterations() * elements) / static_cast<double>(state.range(0)),
      benchmark::Counter::kIsRate);
}

// One pass of `perturbation` over a block of T with the given pass settings, in the pass type the
// step engine gives that perturbation.
template <class T = float, class Perturbation, class Configure>
void run_pass(benchmark::State& state, const Perturbation& perturbation, Configure&& configure) {
  thread_scope threads(state);
  std::vector<T> values(elements, zo::round_nearest<T>(0.5f)), snapshot(values);
  zo::view_store<T> store;
  store.add("w", std::span<T>(values), rows, cols);
  zo::pass_type_t<Perturbation, T> sweep;
  sweep.source = values.data();
  sweep.target = values.data();
  sweep.seed = 1;
  sweep.generator = zo_bench::generator_argument(state);
  configure(sweep, snapshot.data());
  zo::scratch_arena<zo::backends::cpu, float> scratch;
  timed<T>(state, elements,
           [&] { perturbation.apply(zo::backends::cpu{}, store.block(0), sweep, scratch); });
  set_bytes(state, (sweep.base_to != nullptr ? 3 : 2) * elements * sizeof(T));
}

template <class T>
void dense_perturb(benchmark::State& state) {
  run_pass<T>(state, zo::gaussian_perturbation{}, [](auto& p, T*) { p.terms.add(0, 0, 1e-3f); });
}

template <class T>
void fused_update_perturb(benchmark::State& state) {
  // Exact mode: read the snapshot, write the new base point back to it (rounded stochastically
  // in 16 bits, as a step's update is) and the perturbed point to the block.
  run_pass<T>(state, zo::gaussian_perturbation{}, [](auto& p, T* snapshot) {
    p.source = snapshot;
    p.base_to = snapshot;
    p.scale = 0.99999f;
    p.terms.add(0, 0, -1e-5f);
    p.base_terms = 1;
    p.terms.add(1, 0, 1e-3f);
    p.rounding = zo::rounding::stochastic;
  });
}

template <class T>
void rademacher_perturb(benchmark::State& state) {
  run_pass<T>(state, zo::rademacher_perturbation{}, [](auto& p, T*) { p.terms.add(0, 0, 1e-3f); });
}

void low_rank_apply(benchmark::State& state) {
  run_pass(state, zo::low_rank_perturbation(static_cast<std::size_t>(state.range(2)), 50),
           [](auto& p, float*) { p.terms.add(0, 0, 1e-3f); });
}

void lozo_m_momentum_apply(benchmark::State& state) {
  constexpr std::size_t rank = 2;
  static std::vector<float> momentum(rows * rank, 0.01f), factor(cols * rank, 0.02f);
  run_pass(state, zo::low_rank_perturbation(rank, 50), [](auto& p, float*) {
    p.scale = 0.99999f;
    p.terms.add(0, 0, -1e-5f);
    p.low_rank = {momentum.data(), factor.data(), rank, -1e-5f};
  });
}

void adam(benchmark::State& state) {
  thread_scope threads(state);
  std::vector<float> values(elements, 0.5f), gradient(elements, 1e-3f);
  zo::view_store<float> store;
  store.add("w", std::span<float>(values), rows, cols);
  zo::adam rule(1e-5);
  std::uint64_t step = 0;
  rule.apply(zo::backends::cpu{}, store.block(0), gradient.data(), 1.0, step++);  // allocates
  timed(state, elements,
        [&] { rule.apply(zo::backends::cpu{}, store.block(0), gradient.data(), 1.0, step++); });
  // θ, m and v read and written, the gradient read.
  set_bytes(state, 7 * elements * sizeof(float));
}

}  // namespace

BENCHMARK_TEMPLATE(copy, float)->Apply(threads_1_and_2);
BENCHMARK_TEMPLATE(copy, zo::bfloat16)->Apply(threads_1_and_2);
BENCHMARK(generate)->Apply(threads_and_generators);
BENCHMARK_TEMPLATE(dense_perturb, float)->Apply(threads_and_generators);
BENCHMARK_TEMPLATE(dense_perturb, zo::bfloat16)->Apply(threads_and_generators);
BENCHMARK_TEMPLATE(fused_update_perturb, float)->Apply(threads_and_generators);
BENCHMARK_TEMPLATE(fused_update_perturb, zo::bfloat16)->Apply(threads_and_generators);
BENCHMARK_TEMPLATE(rademacher_perturb, float)->Apply(threads_and_generators);
BENCHMARK_TEMPLATE(rademacher_perturb, zo::bfloat16)->Apply(threads_and_generators);
BENCHMARK(low_rank_apply)
    ->ArgNames({"threads", "generator", "rank"})
    ->Args({1, 2, 2})
    ->Args({2, 2, 2})
    ->Args({2, 2, 4})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(lozo_m_momentum_apply)->Apply(threads_and_generators);
BENCHMARK(adam)->Apply(threads_1_and_2);

BENCHMARK_MAIN();
