// SPDX-License-Identifier: Apache-2.0
// The Thrust backend against the CPU backend: every optimizer, 100 steps, same seed. Built with a
// host compiler and Thrust's OMP device system the parameters must be bit-identical (same
// functors, same arithmetic); built with nvcc for a GPU (tests/cuda/test_thrust_cuda.cu) they
// must agree within the bound docs/backends.md states, since the device's logf and sincosf
// differ from the host's in the last bits.
#ifndef ZO_TEST_CUSTOM_MAIN
#define BOOST_TEST_MODULE thrust
#endif
#include <thrust/copy.h>
#include <thrust/device_ptr.h>
#if defined(__CUDACC__)
#include <thrust/system/cuda/execution_policy.h>
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
#include <thrust/system/omp/execution_policy.h>
#else
#include <thrust/system/cpp/execution_policy.h>
#endif

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <vector>
#include <zo/stores/eigen_store.hpp>
#include <zo/stores/thrust_store.hpp>
#include <zo/zo.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

// Shapes of the layered test model: two layers of (6 × 5 weight, 5 bias), and a head.
struct shape {
  std::size_t rows, cols;
  std::optional<int> layer;
  bool decay;
};
const std::vector<shape> shapes{
    {6, 5, 0, true}, {5, 1, 0, false}, {6, 5, 1, true}, {5, 1, 1, false}, {5, 1, {}, true}};

std::vector<float> initial(std::size_t b, std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = 0.1f * float((i * 7 + b * 3) % 11) - 0.5f;
  return v;
}

// Host copies of every block, from either store.
std::vector<std::vector<float>> values(const zo::eigen_store<float>& s) {
  std::vector<std::vector<float>> out;
  for (std::size_t b = 0; b < s.size(); ++b) {
    out.emplace_back(s.block(b).data(), s.block(b).data() + s.block(b).size());
  }
  return out;
}
template <class Backend>
std::vector<std::vector<float>> values(const zo::thrust_store<float, Backend>& s) {
  std::vector<std::vector<float>> out;
  for (std::size_t b = 0; b < s.size(); ++b)
    out.push_back(s.to_host(b));
  return out;
}

void write(const zo::eigen_store<float>&, const std::vector<float>& from, float* to) {
  std::copy(from.begin(), from.end(), to);
}
template <class Backend>
void write(const zo::thrust_store<float, Backend>&, const std::vector<float>& from, float* to) {
  thrust::copy(from.begin(), from.end(), thrust::device_pointer_cast(to));
}

// ½ Σ_b c_b ‖θ_b − t_b‖² + 0.05 (Σ θ)², with its gradient, computed on the host.
template <class Store>
struct layered_objective {
  const Store* store;

  double loss() const { return evaluate(nullptr); }
  double loss_and_gradients(zo::gradient_view<float>& g) const { return evaluate(&g); }

  double evaluate(zo::gradient_view<float>* g) const {
    const auto v = values(*store);
    double total = 0, sum = 0;
    for (std::size_t b = 0; b < v.size(); ++b) {
      for (std::size_t i = 0; i < v[b].size(); ++i) {
        const double d = v[b][i] - 0.2 * double(b) + 0.1;
        total += 0.5 * double(b + 1) * d * d;
        sum += v[b][i];
      }
    }
    if (g != nullptr) {
      for (std::size_t k = 0; k < g->blocks().size(); ++k) {
        const std::size_t b = g->blocks()[k];
        std::vector<float> grad(v[b].size());
        for (std::size_t i = 0; i < grad.size(); ++i) {
          grad[i] = float(double(b + 1) * (v[b][i] - 0.2 * double(b) + 0.1) + 0.1 * sum);
        }
        write(*store, grad, (*g)[k]);
      }
    }
    return total + 0.05 * sum * sum;
  }
};

template <class Store>
Store make_store();
template <>
zo::eigen_store<float> make_store() {
  zo::eigen_store<float> s;
  for (std::size_t b = 0; b < shapes.size(); ++b) {
    const auto v = initial(b, shapes[b].rows * shapes[b].cols);
    s.add("b" + std::to_string(b),
          Eigen::Map<const zo::eigen_store<float>::matrix_type>(v.data(), shapes[b].rows,
                                                                shapes[b].cols),
          {.layer = shapes[b].layer, .decay = shapes[b].decay});
  }
  return s;
}
template <>
zo::thrust_store<float> make_store() {
  zo::thrust_store<float> s;
  for (std::size_t b = 0; b < shapes.size(); ++b) {
    const auto v = initial(b, shapes[b].rows * shapes[b].cols);
    s.add("b" + std::to_string(b), shapes[b].rows, shapes[b].cols, std::span<const float>(v),
          {.layer = shapes[b].layer, .decay = shapes[b].decay});
  }
  return s;
}

// Runs `make()`'s optimizer for 100 steps on both stores and compares.
template <class Make>
void compare_backends(Make make) {
  auto cpu = make_store<zo::eigen_store<float>>();
  auto device = make_store<zo::thrust_store<float>>();
  layered_objective<zo::eigen_store<float>> cpu_objective{&cpu};
  layered_objective<zo::thrust_store<float>> device_objective{&device};
  auto cpu_optimizer = make();
  auto device_optimizer = make();
  cpu_optimizer.optimize(cpu, cpu_objective, 100);
  device_optimizer.optimize(device, device_objective, 100);
  const auto a = values(cpu), b = values(device);
  bool moved = false;
  for (std::size_t k = 0; k < a.size(); ++k) {
    moved |= a[k] != initial(k, a[k].size());
#if defined(__CUDACC__)
    // docs/backends.md: relative difference below 1e-4 after 100 steps.
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a[k].size(); ++i) {
      num += double(a[k][i] - b[k][i]) * double(a[k][i] - b[k][i]);
      den += double(a[k][i]) * double(a[k][i]);
    }
    BOOST_TEST(std::sqrt(num / den) < 1e-4);
#else
    BOOST_TEST(std::memcmp(a[k].data(), b[k].data(), a[k].size() * sizeof(float)) == 0);
#endif
  }
  BOOST_TEST(moved);
}

// Adapts a zeroth-order optimizer to the objective object the hybrid uses.
template <class Optimizer>
struct zo_only {
  Optimizer optimizer;
  template <class Store, class Objective>
  void optimize(Store& store, Objective& f, std::uint64_t steps) {
    optimizer.optimize(
        store, [&] { return f.loss(); }, steps);
  }
};
template <class Optimizer>
zo_only<Optimizer> wrap(Optimizer o) {
  return {std::move(o)};
}

}  // namespace

BOOST_AUTO_TEST_CASE(mezo_matches_across_backends) {
  compare_backends([] {
    return wrap(zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2, 0.1), {.seed = 5}));
  });
  compare_backends([] {
    return wrap(zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2),
                         {.seed = 5, .restore = zo::restore_mode::arithmetic}));
  });
}

BOOST_AUTO_TEST_CASE(lozo_and_lozo_m_match_across_backends) {
  compare_backends([] {
    return wrap(zo::lozo(zo::low_rank_perturbation(2, 7), zo::central_difference(1e-3),
                         zo::sgd<>(1e-2, 0.1), {}, {.seed = 6}));
  });
  compare_backends([] {
    return wrap(zo::lozo_m(zo::low_rank_perturbation(2, 7), zo::central_difference(1e-3),
                           zo::low_rank_momentum<>(1e-2, 0.9, 0.1), {}, {.seed = 6}));
  });
}

// HiZOO's h lives on the store's backend: its kernels and the scaled passes run there.
BOOST_AUTO_TEST_CASE(hizoo_matches_across_backends) {
  compare_backends(
      [] { return wrap(zo::make_hizoo(1e-3, zo::hizoo_sgd<>(1e-2, 0.1, 0.1), {.seed = 7})); });
}

BOOST_AUTO_TEST_CASE(loho_matches_across_backends) {
  compare_backends([] {
    return zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2), {.seed = 7}),
                    zo::adam<>(1e-2, 0.9, 0.999, 1e-4, 0.01), zo::deepest_layers(1));
  });
  using masked = zo::intra_layer_mask<zo::deepest_layers>;
  compare_backends([] {
    return zo::hybrid<zo::mezo, zo::fo_sgd<>, masked>(
        zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2), {.seed = 7}),
        zo::fo_sgd<>(1e-2, 0.9, 0.01), masked(zo::deepest_layers(1), 0.5, 3));
  });
}

#if !defined(__CUDACC__) && defined(_OPENMP)
BOOST_AUTO_TEST_CASE(thrust_omp_results_do_not_depend_on_the_thread_count) {
  std::vector<std::vector<float>> first;
  for (int threads : {1, 2, 4}) {
    omp_set_num_threads(threads);
    auto store = make_store<zo::thrust_store<float>>();
    layered_objective<zo::thrust_store<float>> f{&store};
    zo::lozo_m(zo::low_rank_perturbation(2, 3), zo::central_difference(1e-3),
               zo::low_rank_momentum<>(1e-2))
        .optimize(
            store, [&] { return f.loss(); }, 30);
    const auto v = values(store);
    if (first.empty()) first = v;
    for (std::size_t k = 0; k < v.size(); ++k) {
      BOOST_TEST(std::memcmp(v[k].data(), first[k].data(), v[k].size() * sizeof(float)) == 0);
    }
  }
}
#endif

// The Thrust backend is a value carrying an execution policy: a store built on an explicit
// policy (the device system's own parallel policy here, a CUDA stream's under nvcc) runs every
// pass through it and reproduces the default policy's results.
BOOST_AUTO_TEST_CASE(a_store_runs_on_the_execution_policy_its_backend_carries) {
  auto reference = make_store<zo::thrust_store<float>>();
  layered_objective<zo::thrust_store<float>> f{&reference};
  const auto run = [](auto& store, auto& objective) {
    zo::lozo_m(zo::low_rank_perturbation(2, 3), zo::central_difference(1e-3),
               zo::low_rank_momentum<>(1e-2))
        .optimize(
            store, [&] { return objective.loss(); }, 20);
  };
  run(reference, f);
#if defined(__CUDACC__)
  cudaStream_t stream;
  BOOST_REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  zo::backends::thrust_backend backend(thrust::cuda::par.on(stream));
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
  zo::backends::thrust_backend backend(thrust::omp::par);
#else
  zo::backends::thrust_backend backend(thrust::cpp::par);
#endif
  using store_type = zo::thrust_store<float, decltype(backend)>;
  store_type store(backend);
  for (std::size_t b = 0; b < shapes.size(); ++b) {
    store.add("b" + std::to_string(b), shapes[b].rows, shapes[b].cols,
              std::span<const float>(initial(b, shapes[b].rows * shapes[b].cols)),
              {.layer = shapes[b].layer, .decay = shapes[b].decay});
  }
  layered_objective<store_type> g{&store};
  run(store, g);
#if defined(__CUDACC__)
  cudaStreamDestroy(stream);
#endif
  BOOST_TEST((values(store) == values(reference)));
}

// ---- 16-bit blocks ----------------------------------------------------------------------------

namespace {

// Blocks of `T` with the layered model's shapes and a few thousand more elements, so passes run
// whole host batches and device groups alike; their values on the host, and a loss from them.
template <class T>
std::vector<std::vector<T>> sixteen_bit_initial() {
  std::vector<std::vector<T>> blocks;
  for (std::size_t b = 0; b < shapes.size(); ++b) {
    std::vector<T> v;
    for (const float x : initial(b, shapes[b].rows * shapes[b].cols))
      v.push_back(zo::round_nearest<T>(x));
    blocks.push_back(v);
  }
  std::vector<T> big(4099);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = zo::round_nearest<T>(0.01f * float(i % 37) - 0.15f);
  blocks.push_back(big);
  return blocks;
}
template <class T>
double sixteen_bit_loss(const std::vector<std::vector<T>>& blocks) {
  double total = 0;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    for (const T x : blocks[b])
      total += 0.5 * double(b + 1) * std::pow(double(zo::widen(x)) - 0.05 * double(b), 2);
  }
  return total;
}
template <class T>
std::vector<std::vector<T>> host_values(const zo::thrust_store<T>& s) {
  std::vector<std::vector<T>> out;
  for (std::size_t b = 0; b < s.size(); ++b)
    out.push_back(s.to_host(b));
  return out;
}
template <class T>
bool same_bits(const std::vector<std::vector<T>>& a, const std::vector<std::vector<T>>& b) {
  for (std::size_t k = 0; k < a.size(); ++k) {
    if (std::memcmp(a[k].data(), b[k].data(), a[k].size() * sizeof(T)) != 0) return false;
  }
  return a.size() == b.size();
}

// `make()`'s optimizer for `steps` steps on a view_store over host memory and on a thrust_store:
// the two 16-bit results, host first.
template <class T, class Make>
std::pair<std::vector<std::vector<T>>, std::vector<std::vector<T>>> run_both_16_bit(
    Make make, std::uint64_t steps) {
  auto host = sixteen_bit_initial<T>();
  zo::view_store<T> cpu;
  zo::thrust_store<T> device;
  for (std::size_t b = 0; b < host.size(); ++b) {
    const bool shaped = b < shapes.size();
    const std::size_t rows = shaped ? shapes[b].rows : host[b].size();
    const std::size_t cols = shaped ? shapes[b].cols : 1;
    const zo::block_options options{.layer = shaped ? shapes[b].layer : std::nullopt};
    cpu.add("b" + std::to_string(b), std::span<T>(host[b]), rows, cols, options);
    device.add("b" + std::to_string(b), rows, cols, std::span<const T>(host[b]), options);
  }
  make().optimize(
      cpu, [&] { return sixteen_bit_loss(host); }, steps);
  make().optimize(
      device, [&] { return sixteen_bit_loss(host_values(device)); }, steps);
  return {host, host_values(device)};
}

template <class T>
void compare_16_bit_backends() {
  const auto mezo = [] {
    return zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-3, 0.1), {.seed = 5});
  };
  const auto fused_spsa = [] {
    return zo::spsa(zo::central_difference(1e-3), zo::sgd<>(1e-3),
                    {.seed = 5, .fused_steps = true});
  };
  const auto lozo_m = [] {
    return zo::lozo_m(zo::low_rank_perturbation(2, 7), zo::central_difference(1e-3),
                      zo::low_rank_momentum<>(1e-3, 0.9, 0.1), {}, {.seed = 6});
  };
  const auto nearest = [] {
    return zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-3),
                    {.seed = 5, .rounding = zo::rounding::nearest});
  };
  for (const auto& [name, result] :
       {std::pair{"mezo", run_both_16_bit<T>(mezo, 60)},
        std::pair{"fused spsa", run_both_16_bit<T>(fused_spsa, 60)},
        std::pair{"lozo-m", run_both_16_bit<T>(lozo_m, 60)},
        std::pair{"mezo, round to nearest", run_both_16_bit<T>(nearest, 60)}}) {
    BOOST_TEST_CONTEXT(name) {
      const auto& [cpu, device] = result;
      BOOST_TEST(!same_bits(cpu, sixteen_bit_initial<T>()));
#if defined(__CUDACC__)
      // The device's logf and sincosf differ in the last bits, which may move a rounding by a
      // unit: a relative difference of a few units of 2^−8 at most.
      double num = 0, den = 0;
      for (std::size_t k = 0; k < cpu.size(); ++k) {
        for (std::size_t i = 0; i < cpu[k].size(); ++i) {
          const double d = double(zo::widen(cpu[k][i])) - zo::widen(device[k][i]);
          num += d * d;
          den += double(zo::widen(cpu[k][i])) * zo::widen(cpu[k][i]);
        }
      }
      BOOST_TEST(std::sqrt(num / den) < 1e-2);
#else
      BOOST_TEST(same_bits(cpu, device));
#endif
    }
  }
}

// 10,000 steps at learning rate 0 on a thrust_store: every bit restored.
template <class T>
void restore_16_bit_on_thrust() {
  const auto initial_values = sixteen_bit_initial<T>();
  zo::thrust_store<T> device;
  for (std::size_t b = 0; b < initial_values.size(); ++b) {
    device.add("b" + std::to_string(b), initial_values[b].size(), 1,
               std::span<const T>(initial_values[b]));
  }
  const double base = sixteen_bit_loss(initial_values);
  std::size_t evaluations = 0, moved = 0;
  zo::mezo(zo::central_difference(1e-3), zo::sgd<>(0.0), {.seed = 13})
      .optimize(
          device,
          [&] {
            ++evaluations;
            const double loss = sixteen_bit_loss(host_values(device));
            moved += loss != base;
            return loss;
          },
          10000);
  BOOST_TEST(evaluations == 20000u);
  BOOST_TEST(moved == evaluations);
  BOOST_TEST(same_bits(host_values(device), initial_values));
}

}  // namespace

BOOST_AUTO_TEST_CASE(sixteen_bit_runs_match_across_backends) {
  compare_16_bit_backends<zo::bfloat16>();
  compare_16_bit_backends<zo::float16>();
}

BOOST_AUTO_TEST_CASE(ten_thousand_16_bit_cycles_at_learning_rate_zero_restore_every_bit) {
  restore_16_bit_on_thrust<zo::bfloat16>();
  restore_16_bit_on_thrust<zo::float16>();
}

BOOST_AUTO_TEST_CASE(device_view_store_wraps_framework_memory) {
  thrust::device_vector<float> weights(12, 1.0f);
  zo::device_view_store<float> store;
  store.add("w", std::span<float>(thrust::raw_pointer_cast(weights.data()), weights.size()), 3, 4);
  BOOST_CHECK_THROW(
      store.add("x", std::span<float>(thrust::raw_pointer_cast(weights.data()), 12), 5, 2),
      zo::invalid_argument);
  auto loss = [&] {
    std::vector<float> host(weights.size());
    thrust::copy(weights.begin(), weights.end(), host.begin());
    double s = 0;
    for (float x : host)
      s += double(x) * x;
    return s;
  };
  const double before = loss();
  zo::mezo(zo::central_difference(1e-3), zo::sgd<>(2e-2), {.seed = 1}).optimize(store, loss, 200);
  BOOST_TEST(loss() < 0.5 * before);
}
