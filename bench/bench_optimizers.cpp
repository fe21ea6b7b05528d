// SPDX-License-Identifier: Apache-2.0
// What each optimizer costs besides the model: the time of a step with a free objective (the
// step overhead), its ratio to one copy of all parameters, and the memory it holds or allocates
// beyond the parameters. The parameters have the shapes of two OPT-125m decoder layers
// (14.2 million floats; bench/compare_pytorch.py runs the MeZO reference loop on the same
// shapes), and for mezo_bf16 the same in bfloat16. The first argument is the number of OpenMP
// threads.
//
// Counters:
//   x_copy           step time / time of a copy of every parameter (same threads, same binary)
//   state_bytes      bytes the optimizer still holds after three steps (snapshots, momentum,
//                    moments, scratch), counted by replacing operator new
//   peak_extra_bytes the most bytes it held at once during those steps
//   ns_per_parameter step time / number of parameters
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <vector>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

#include "bench_support.hpp"

namespace {

using zo_bench::clock_type;
using zo_bench::thread_scope;
using zo_bench::threads_1_and_2;

std::atomic<std::int64_t> live_bytes{0};
std::atomic<std::int64_t> peak_bytes{0};

void count_allocation(std::int64_t bytes) {
  const std::int64_t now = live_bytes.fetch_add(bytes) + bytes;
  std::int64_t peak = peak_bytes.load();
  while (now > peak && !peak_bytes.compare_exchange_weak(peak, now)) {
  }
}

}  // namespace

// Every allocation carries its size in a 16-byte header, so frees can be counted too.
void* operator new(std::size_t size) {
  void* raw = std::malloc(size + 16);
  if (raw == nullptr) throw std::bad_alloc();
  *static_cast<std::size_t*>(raw) = size;
  count_allocation(static_cast<std::int64_t>(size));
  return static_cast<char*>(raw) + 16;
}
void operator delete(void* p) noexcept {
  if (p == nullptr) return;
  void* raw = static_cast<char*>(p) - 16;
  live_bytes.fetch_sub(static_cast<std::int64_t>(*static_cast<std::size_t*>(raw)));
  std::free(raw);
}
void operator delete(void* p, std::size_t) noexcept {
  operator delete(p);
}

namespace {

using store_t = zo::eigen_store<float>;
// Two OPT-125m decoder layers: q, k, v, out (768 × 768), fc1 (3072 × 768), fc2 (768 × 3072),
// their biases and two LayerNorms each.
store_t opt_layers(int layers) {
  store_t store;
  constexpr std::size_t d = 768, ffn = 3072;
  for (int l = 0; l < layers; ++l) {
    const std::string prefix = "layers." + std::to_string(l) + ".";
    const zo::block_options weight{.layer = l}, vector{.layer = l, .decay = false};
    for (const char* name : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      store.add(prefix + name + ".weight", store_t::matrix_type::Constant(d, d, 0.01f), weight);
      store.add(prefix + name + ".bias", 1, d, vector);
    }
    store.add(prefix + "fc1.weight", store_t::matrix_type::Constant(ffn, d, 0.01f), weight);
    store.add(prefix + "fc1.bias", 1, ffn, vector);
    store.add(prefix + "fc2.weight", store_t::matrix_type::Constant(d, ffn, 0.01f), weight);
    store.add(prefix + "fc2.bias", 1, d, vector);
    for (const char* name : {"self_attn_layer_norm", "final_layer_norm"}) {
      store.add(prefix + name + ".weight", store_t::matrix_type::Ones(1, d), vector);
      store.add(prefix + name + ".bias", 1, d, vector);
    }
  }
  return store;
}

// The same layers in bfloat16 (rounded to nearest), in vectors a view_store wraps.
struct bf16_layers {
  std::vector<std::vector<zo::bfloat16>> values;
  zo::view_store<zo::bfloat16> store;

  explicit bf16_layers(const store_t& from) {
    values.reserve(from.size());
    for (std::size_t i = 0; i < from.size(); ++i) {
      const auto b = from.block(i);
      auto& v = values.emplace_back(b.size());
      for (std::size_t e = 0; e < b.size(); ++e)
        v[e] = zo::round_nearest<zo::bfloat16>(b.data()[e]);
      store.add(std::string(b.name()), std::span<zo::bfloat16>(v), b.rows(), b.cols(),
                {.layer = b.layer(), .decay = b.decay()});
    }
  }
};

template <class Store>
std::size_t parameter_count(const Store& store) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < store.size(); ++i)
    n += store.block(i).size();
  return n;
}

// Median time of copying every parameter once (block by block, over the backend's threads).
template <class Store>
double copy_seconds(const Store& store) {
  std::vector<std::vector<typename Store::value_type>> targets;
  for (std::size_t i = 0; i < store.size(); ++i)
    targets.emplace_back(store.block(i).size());
  return zo_bench::median_seconds([&] {
    for (std::size_t i = 0; i < store.size(); ++i)
      zo_bench::parallel_copy(store.block(i).data(), targets[i].data(), targets[i].size());
  });
}

// A loss that costs nothing but still gives every step a non-zero projected gradient, so the
// update pass generates its direction as in a real run.
struct free_loss {
  std::uint64_t calls = 0;
  double operator()() { return (calls++ % 2) == 0 ? 1.0 : 0.999; }
};

// LoHO's first-order blocks get a zero gradient: the cost measured is the optimizer's.
struct free_differentiable_loss {
  free_loss zo_part;
  double loss() { return zo_part(); }
  double loss_and_gradients(zo::gradient_view<float>&) { return 1.0; }
};

// The layers as floats, or (Sixteen) as bfloat16, whose x_copy is against a copy of the 16-bit
// parameters.
template <bool Sixteen = false, class Optimizer, class Objective>
void step_overhead(benchmark::State& state, Optimizer optimizer, Objective objective) {
  thread_scope threads(state);
  store_t floats = opt_layers(2);
  std::optional<bf16_layers> narrow;
  if constexpr (Sixteen) narrow.emplace(floats);
  auto& store = [&]() -> auto& {
    if constexpr (Sixteen) {
      return narrow->store;
    } else {
      return floats;
    }
  }
  ();
  const double copy = copy_seconds(store);
  const std::int64_t before = live_bytes.load();
  peak_bytes.store(before);
  for (int k = 0; k < 3; ++k)
    optimizer.step(store, objective);
  state.counters["state_bytes"] = static_cast<double>(live_bytes.load() - before);
  state.counters["peak_extra_bytes"] = static_cast<double>(peak_bytes.load() - before);
  double total = 0;
  for (auto _ : state) {
    const auto start = clock_type::now();
    optimizer.step(store, objective);
    total += std::chrono::duration<double>(clock_type::now() - start).count();
  }
  const double step_seconds = total / static_cast<double>(state.iterations());
  state.counters["x_copy"] = step_seconds / copy;
  state.counters["parameters"] = static_cast<double>(parameter_count(store));
  state.counters["ns_per_parameter"] =
      step_seconds * 1e9 / static_cast<double>(parameter_count(store));
}

constexpr double lr = 1e-9;  // keeps the parameters finite over many benchmark steps

zo::zo_options options(zo::restore_mode restore, bool fused) {
  return {.seed = 1, .restore = restore, .fused_steps = fused};
}

void mezo(benchmark::State& state) {
  step_overhead(state,
                zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(lr)),
                         options(zo::restore_mode::exact, false)),
                free_loss{});
}
// MeZO on the layers in bfloat16: exact restore (a 16-bit snapshot), updates rounded
// stochastically.
void mezo_bf16(benchmark::State& state) {
  step_overhead<true>(state,
                      zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(lr)),
                               options(zo::restore_mode::exact, false)),
                      free_loss{});
}
void mezo_bf16_fused(benchmark::State& state) {
  step_overhead<true>(state,
                      zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(lr)),
                               options(zo::restore_mode::exact, true)),
                      free_loss{});
}
void mezo_fused(benchmark::State& state) {
  step_overhead(state,
                zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(lr)),
                         options(zo::restore_mode::exact, true)),
                free_loss{});
}
void mezo_arithmetic_fused(benchmark::State& state) {
  step_overhead(state,
                zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(lr)),
                         options(zo::restore_mode::arithmetic, true)),
                free_loss{});
}
// SPSA: Rademacher directions, which cost a fraction of a Gaussian's to generate.
void spsa(benchmark::State& state) {
  step_overhead(state,
                zo::spsa(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(lr)),
                         options(zo::restore_mode::exact, false)),
                free_loss{});
}
void spsa_arithmetic_fused(benchmark::State& state) {
  step_overhead(state,
                zo::spsa(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(lr)),
                         options(zo::restore_mode::arithmetic, true)),
                free_loss{});
}
void lozo(benchmark::State& state) {
  step_overhead(
      state,
      zo::lozo(zo::low_rank_perturbation(2, 50), zo::central_difference(1e-3),
               zo::sgd(zo::constant_schedule(lr)), {}, options(zo::restore_mode::exact, true)),
      free_loss{});
}
void lozo_m(benchmark::State& state) {
  step_overhead(state,
                zo::lozo_m(zo::low_rank_perturbation(2, 50), zo::central_difference(1e-3),
                           zo::low_rank_momentum(zo::constant_schedule(lr), 0.9), {},
                           options(zo::restore_mode::exact, true)),
                free_loss{});
}
void loho(benchmark::State& state) {
  // The deepest of the two layers first-order with Adam, the other zeroth-order (MeZO).
  step_overhead(state,
                zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(lr)),
                                  options(zo::restore_mode::exact, false)),
                         zo::adam(lr), zo::deepest_layers(1)),
                free_differentiable_loss{});
}

// The variants composed from the roles (docs/variants.md): their state_bytes against MeZO's.
void zo_sgd_momentum(benchmark::State& state) {
  using optimizer =
      zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, zo::zo_momentum<>>;
  step_overhead(state,
                optimizer(zo::central_difference(1e-3), zo::zo_momentum<>(lr, 0.9),
                          options(zo::restore_mode::exact, false)),
                free_loss{});
}
void zo_adam(benchmark::State& state) {
  using optimizer =
      zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, zo::zo_adam<>>;
  step_overhead(state,
                optimizer(zo::central_difference(1e-3), zo::zo_adam<>(lr),
                          options(zo::restore_mode::exact, false)),
                free_loss{});
}
void lezo(benchmark::State& state) {
  // One of the two layers a step; the blocks without a layer are none here.
  step_overhead(state,
                zo::make_lezo(1, zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(lr)),
                              options(zo::restore_mode::exact, false)),
                free_loss{});
}
void fzoo(benchmark::State& state) {
  step_overhead(state,
                zo::make_fzoo(4, 1e-3, zo::fzoo_sgd<>(lr), options(zo::restore_mode::exact, false)),
                free_loss{});
}

void hizoo(benchmark::State& state) {
  // Three evaluations a step and h, one element per parameter, beside the snapshot.
  step_overhead(
      state,
      zo::make_hizoo(1e-3, zo::hizoo_sgd<>(lr, 1e-3), options(zo::restore_mode::exact, false)),
      free_loss{});
}

void subzero(benchmark::State& state) {
  step_overhead(
      state,
      zo::subzero(zo::subzero_perturbation(2, 50), zo::central_difference(1e-3),
                  zo::sgd(zo::constant_schedule(lr)), {}, options(zo::restore_mode::exact, false)),
      free_loss{});
}

}  // namespace

BENCHMARK(mezo)->Apply(threads_1_and_2);
BENCHMARK(mezo_fused)->Apply(threads_1_and_2);
BENCHMARK(mezo_bf16)->Apply(threads_1_and_2);
BENCHMARK(mezo_bf16_fused)->Apply(threads_1_and_2);
BENCHMARK(mezo_arithmetic_fused)->Apply(threads_1_and_2);
BENCHMARK(spsa)->Apply(threads_1_and_2);
BENCHMARK(spsa_arithmetic_fused)->Apply(threads_1_and_2);
BENCHMARK(lozo)->Apply(threads_1_and_2);
BENCHMARK(lozo_m)->Apply(threads_1_and_2);
BENCHMARK(loho)->Apply(threads_1_and_2);
BENCHMARK(zo_sgd_momentum)->Apply(threads_1_and_2);
BENCHMARK(zo_adam)->Apply(threads_1_and_2);
BENCHMARK(lezo)->Apply(threads_1_and_2);
BENCHMARK(fzoo)->Apply(threads_1_and_2);
BENCHMARK(subzero)->Apply(threads_1_and_2);
BENCHMARK(hizoo)->Apply(threads_1_and_2);

BENCHMARK_MAIN();
