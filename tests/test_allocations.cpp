// SPDX-License-Identifier: Apache-2.0
// A step allocates nothing once the first has run: the workspace, snapshots and caches are sized
// by the first step and reused, and error messages are built only when a check fails. Counted by
// replacing operator new in this binary, over 100 steps of each optimizer and mode, with an
// objective that allocates nothing itself.
#define BOOST_TEST_MODULE allocations
// GCC sees malloc'ed memory freed through the replaced operator delete's free and warns.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <new>
#include <vector>
#include <zo/zo.hpp>

namespace {
std::atomic<std::size_t> allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

namespace {

// Three blocks of a view_store over memory the test owns, and a quadratic loss over them.
struct problem {
  std::vector<float> w = std::vector<float>(64 * 48, 0.5f), b = std::vector<float>(48, 0.1f),
                     head = std::vector<float>(48, -0.2f);
  zo::view_store<float> store;

  problem() {
    store.add("layers.0.weight", std::span<float>(w), 64, 48, {.layer = 0});
    store.add("layers.0.bias", std::span<float>(b), 1, 48, {.layer = 0, .decay = false});
    store.add("head", std::span<float>(head), 48, 1, {.layer = 1});
  }

  double loss() const {
    double sum = 0;
    for (const auto* v : {&w, &b, &head})
      for (float x : *v)
        sum += (double(x) - 0.25) * (double(x) - 0.25);
    return sum;
  }

  // The hybrid's objective: the same loss, and its gradient for the requested blocks.
  double loss_and_gradients(zo::gradient_view<float>& gradients) const {
    const std::vector<float>* values[] = {&w, &b, &head};
    for (std::size_t k = 0; k < gradients.blocks().size(); ++k) {
      const auto& v = *values[gradients.blocks()[k]];
      for (std::size_t e = 0; e < v.size(); ++e)
        gradients[k][e] = 2.0f * (v[e] - 0.25f);
    }
    return loss();
  }
};

// Allocations made by `optimizer` over 100 steps after a first one.
template <class Optimizer>
std::size_t allocations_per_100_steps(Optimizer& optimizer) {
  problem p;
  auto objective = [&p] { return p.loss(); };
  optimizer.step(p.store, objective);
  const std::size_t before = allocations.load();
  for (int k = 0; k < 100; ++k)
    optimizer.step(p.store, objective);
  const std::size_t counted = allocations.load() - before;
  optimizer.remove_pending_perturbation(p.store);
  return counted;
}

template <class Hybrid>
std::size_t hybrid_allocations_per_100_steps(Hybrid& hybrid) {
  problem p;
  hybrid.step(p.store, p);
  const std::size_t before = allocations.load();
  for (int k = 0; k < 100; ++k)
    hybrid.step(p.store, p);
  return allocations.load() - before;
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_counter_counts) {
  // The replaced operator new is the one this binary's allocations go through.
  const std::size_t before = allocations.load();
  auto* v = new std::vector<int>(1000);
  delete v;
  BOOST_TEST(allocations.load() - before == 2u);
}

BOOST_AUTO_TEST_CASE(mezo_and_spsa_steps_allocate_nothing_after_the_first) {
  for (const auto restore : {zo::restore_mode::exact, zo::restore_mode::arithmetic}) {
    for (const bool fused : {false, true}) {
      BOOST_TEST_CONTEXT("restore " << int(restore) << " fused " << fused) {
        const zo::zo_options options{.seed = 3, .restore = restore, .fused_steps = fused};
        zo::mezo mezo(zo::central_difference(1e-3), zo::sgd<>(1e-4), options);
        BOOST_TEST(allocations_per_100_steps(mezo) == 0u);
        zo::spsa spsa(zo::central_difference(1e-3), zo::sgd<>(1e-4), options);
        BOOST_TEST(allocations_per_100_steps(spsa) == 0u);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(estimator_variants_allocate_nothing_after_the_first) {
  zo::zo_optimizer<zo::gaussian_perturbation, zo::one_sided, zo::sgd<>> one_sided(
      zo::one_sided(1e-3), zo::sgd<>(1e-4));
  BOOST_TEST(allocations_per_100_steps(one_sided) == 0u);
  zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::sgd<>> n_spsa(zo::q_sample<>(4),
                                                                                zo::sgd<>(1e-4));
  BOOST_TEST(allocations_per_100_steps(n_spsa) == 0u);
}

BOOST_AUTO_TEST_CASE(lozo_and_lozo_m_steps_allocate_nothing_after_the_first) {
  for (const bool fused : {false, true}) {
    BOOST_TEST_CONTEXT("fused " << fused) {
      zo::lozo lozo(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3), zo::sgd<>(1e-4),
                    {}, {.seed = 4, .fused_steps = fused});
      BOOST_TEST(allocations_per_100_steps(lozo) == 0u);
      zo::lozo_m lozo_m(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3),
                        zo::low_rank_momentum<>(1e-4, 0.9), {}, {.seed = 4, .fused_steps = fused});
      BOOST_TEST(allocations_per_100_steps(lozo_m) == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(loho_steps_allocate_nothing_after_the_first) {
  for (const auto restore : {zo::restore_mode::exact, zo::restore_mode::arithmetic}) {
    BOOST_TEST_CONTEXT("restore " << int(restore)) {
      auto adam = zo::loho(
          zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-4), {.seed = 5, .restore = restore}),
          zo::adam(1e-3), zo::deepest_layers(1));
      BOOST_TEST(hybrid_allocations_per_100_steps(adam) == 0u);
      zo::hybrid<zo::mezo, zo::fo_sgd<>, zo::deepest_layers> sgd(
          zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-4), {.seed = 5, .restore = restore}),
          zo::fo_sgd<>(1e-3, 0.9), zo::deepest_layers(1));
      BOOST_TEST(hybrid_allocations_per_100_steps(sgd) == 0u);
    }
  }
}
