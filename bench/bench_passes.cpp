// Cost of one pass of each perturbation against a plain copy of the same bytes, in one binary,
// so the ratio (not the absolute time) is the figure to quote (DESIGN.md §2).
//
//   copy            memcpy of the block (one thread)
//   parallel_copy   the same copy split over the CPU backend's threads, as the passes are
//   gaussian_pass   θ ← θ + α·z, z generated in the pass (MeZO), with 1 or 2 directions
//   rademacher_pass the same with ±1 directions
//   low_rank_pass   θ ← θ + α·U·Vᵀ (LOZO), factors generated into O(r(m + n)) scratch
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>
#include <zo/zo.hpp>

namespace {

constexpr std::size_t rows = 4096, cols = 4096;  // 64 MiB of float: far beyond the caches
constexpr std::size_t elements = rows * cols;

void set_bytes(benchmark::State& state) {
  // Every pass reads and writes the block once, like the copy.
  state.SetBytesProcessed(
      static_cast<std::int64_t>(state.iterations() * 2 * elements * sizeof(float)));
}

void copy(benchmark::State& state) {
  std::vector<float> source(elements, 1.0f), target(elements);
  for (auto _ : state) {
    std::memcpy(target.data(), source.data(), elements * sizeof(float));
    benchmark::DoNotOptimize(target.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state);
}

void parallel_copy(benchmark::State& state) {
  std::vector<float> source(elements, 1.0f), target(elements);
  constexpr std::size_t chunk = 4096;
  const auto kernel = [s = source.data(), t = target.data()](std::size_t c) {
    std::memcpy(t + c * chunk, s + c * chunk, chunk * sizeof(float));
  };
  for (auto _ : state) {
    zo::backends::cpu::for_each_index(elements / chunk, kernel, chunk);
    benchmark::ClobberMemory();
  }
  set_bytes(state);
}

template <class Perturbation>
void run_pass(benchmark::State& state, const Perturbation& perturbation) {
  std::vector<float> values(elements, 0.5f);
  zo::view_store<float> store;
  store.add("w", std::span<float>(values), rows, cols);
  zo::pass<float> sweep;
  sweep.source = values.data();
  sweep.target = values.data();
  sweep.seed = 1;
  for (std::int64_t t = 0; t < state.range(0); ++t) {
    sweep.terms.add(static_cast<std::uint32_t>(t), 0, 1e-3f);
  }
  zo::scratch_arena<zo::backends::cpu, float> scratch;
  for (auto _ : state) {
    perturbation.apply(zo::backends::cpu{}, store.block(0), sweep, scratch);
    benchmark::ClobberMemory();
  }
  set_bytes(state);
}

void gaussian_pass(benchmark::State& state) {
  run_pass(state, zo::gaussian_perturbation{});
}
void rademacher_pass(benchmark::State& state) {
  run_pass(state, zo::rademacher_perturbation{});
}
void low_rank_pass(benchmark::State& state) {
  run_pass(state, zo::low_rank_perturbation(static_cast<std::size_t>(state.range(1)), 50));
}

}  // namespace

BENCHMARK(copy)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(parallel_copy)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(gaussian_pass)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(rademacher_pass)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(low_rank_pass)
    ->Args({1, 2})
    ->Args({2, 2})
    ->Args({1, 4})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
