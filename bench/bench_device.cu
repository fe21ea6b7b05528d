// SPDX-License-Identifier: Apache-2.0
// GPU passes against a device-to-device copy of the same bytes, in one binary: the fused
// update-plus-next-perturbation pass (θ ← s·θ + a·z_k + ε·z_{k+1}, two keyed Gaussian directions
// generated in the pass) and the LOZO low-rank apply, on a 4096 × 4096 float block. The figure
// to quote is each pass's bytes/s over the copy's. Built when nvcc is present; without a CUDA
// device it says so and exits.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>
#include <zo/stores/thrust_store.hpp>
#include <zo/zo.hpp>

namespace {

constexpr std::size_t rows = 4096, cols = 4096, elements = rows * cols;

void set_bytes(benchmark::State& state) {
  state.SetBytesProcessed(
      static_cast<std::int64_t>(state.iterations() * 2 * elements * sizeof(float)));
}

void device_copy(benchmark::State& state) {
  thrust::device_vector<float> source(elements, 1.0f), target(elements);
  for (auto _ : state) {
    cudaMemcpy(thrust::raw_pointer_cast(target.data()), thrust::raw_pointer_cast(source.data()),
               elements * sizeof(float), cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
  }
  set_bytes(state);
}

template <class Perturbation>
void device_pass(benchmark::State& state, const Perturbation& perturbation, int terms) {
  zo::thrust_store<float> store;
  store.add("w", rows, cols);
  const auto block = store.block(0);
  zo::pass<float> sweep;
  sweep.source = sweep.target = block.data();
  sweep.seed = 1;
  sweep.scale = 0.999f;
  for (int t = 0; t < terms; ++t)
    sweep.terms.add(static_cast<std::uint32_t>(t), 0, 1e-3f);
  zo::scratch_arena<zo::backends::thrust_device, float> scratch;
  for (auto _ : state) {
    perturbation.apply(zo::backends::thrust_device{}, block, sweep, scratch);
    cudaDeviceSynchronize();
  }
  set_bytes(state);
}

void fused_dense_pass(benchmark::State& state) {
  device_pass(state, zo::gaussian_perturbation{}, 2);
}
void low_rank_pass(benchmark::State& state) {
  device_pass(state, zo::low_rank_perturbation(static_cast<std::size_t>(state.range(0)), 50), 1);
}

}  // namespace

BENCHMARK(device_copy)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(fused_dense_pass)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(low_rank_pass)->Arg(2)->Arg(4)->UseRealTime()->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing to measure\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
