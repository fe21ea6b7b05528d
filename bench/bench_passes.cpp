// Cost of one pass of the dense perturbation against a plain copy of the same bytes, in one
// binary, so the ratio (not the absolute time) is the figure to quote (DESIGN.md §2).
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>
#include <zo/zo.hpp>

namespace {

constexpr std::size_t elements = std::size_t{1} << 22;  // 16 MiB of float: beyond the caches

void copy(benchmark::State& state) {
  std::vector<float> source(elements, 1.0f), target(elements);
  for (auto _ : state) {
    std::memcpy(target.data(), source.data(), elements * sizeof(float));
    benchmark::DoNotOptimize(target.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * elements * sizeof(float)));
}

// θ ← θ + α·z with `terms` keyed Gaussian directions generated in the pass.
template <class Distribution>
void dense_pass(benchmark::State& state) {
  std::vector<float> values(elements, 0.5f);
  zo::view_store<float> store;
  store.add("w", std::span<float>(values));
  zo::pass<float> sweep;
  sweep.source = values.data();
  sweep.target = values.data();
  sweep.seed = 1;
  for (std::int64_t t = 0; t < state.range(0); ++t) {
    sweep.terms.add(static_cast<std::uint32_t>(t), 0, 1e-3f);
  }
  const zo::dense_perturbation<Distribution> perturbation;
  zo::scratch_arena<zo::backends::cpu, float> scratch;
  for (auto _ : state) {
    perturbation.apply(zo::backends::cpu{}, store.block(0), sweep, scratch);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * elements * sizeof(float)));
}

}  // namespace

BENCHMARK(copy)->UseRealTime();
BENCHMARK(dense_pass<zo::gaussian_distribution>)->Name("gaussian_pass")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(dense_pass<zo::rademacher_distribution>)->Name("rademacher_pass")->Arg(1)->UseRealTime();

BENCHMARK_MAIN();
