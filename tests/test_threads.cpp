// SPDX-License-Identifier: Apache-2.0
// Results do not depend on the number of OpenMP threads: every element is computed by one
// thread from its own key and counter, and no reduction crosses threads.
#define BOOST_TEST_MODULE threads
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <vector>
#include <zo/zo.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "support.hpp"

namespace {

using element_types = boost::mpl::list<float, double>;
using sixteen_bit_types = boost::mpl::list<zo::bfloat16, zo::float16>;

// Blocks well above the CPU backend's parallel threshold, plus a small one and odd sizes so
// thread shares end inside a group of four; OpenMP's default thread count set to `threads`, and
// the store on `backend`. Over 16-bit blocks the values are rounded to nearest and the loss reads
// them widened.
template <class T>
std::vector<T> run_with_threads(int threads, zo::zo_options options,
                                zo::backends::cpu backend = {}) {
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#endif
  using R = zo::compute_t<T>;
  std::vector<T> big(300007), medium(65536 + 3), small(5);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = zo::round_nearest<T>(R(0.001) * R(i % 1000));
  for (std::size_t i = 0; i < medium.size(); ++i)
    medium[i] = zo::round_nearest<T>(R(-0.5) + R(i % 7));
  zo::view_store<T> store(backend);
  store.add("big", std::span<T>(big), 300007, 1);
  store.add("medium", std::span<T>(medium), 65539, 1, {.decay = false});
  store.add("small", std::span<T>(small));
  auto loss = [&] {
    double s = 0;
    for (std::size_t i = 0; i < big.size(); i += 101)
      s += double(zo::widen(big[i])) * zo::widen(big[i]);
    for (std::size_t i = 0; i < medium.size(); i += 13)
      s += double(zo::widen(medium[i]));
    return s + double(zo::widen(small[0]));
  };
  zo::mezo opt(zo::central_difference(1e-3), zo::sgd<>(1e-4, 0.01), options);
  opt.optimize(store, loss, 8);
  return zo_test::snapshot(store);
}

}  // namespace

BOOST_AUTO_TEST_CASE(built_with_openmp) {
#if defined(_OPENMP)
  omp_set_num_threads(4);
  int seen = 0;
#pragma omp parallel
  {
#pragma omp single
    seen = omp_get_num_threads();
  }
  BOOST_TEST(seen == 4);  // otherwise the tests below would compare a run with itself
#else
  BOOST_FAIL(
      "the test suite must be built with OpenMP for the thread-count tests to mean anything");
#endif
}

BOOST_AUTO_TEST_CASE_TEMPLATE(parameters_are_bit_identical_for_1_2_and_4_threads, T,
                              element_types) {
  for (auto mode : {zo::restore_mode::exact, zo::restore_mode::arithmetic}) {
    const auto one = run_with_threads<T>(1, {.seed = 77, .restore = mode});
    for (int threads : {2, 4}) {
      const auto many = run_with_threads<T>(threads, {.seed = 77, .restore = mode});
      BOOST_TEST_CONTEXT(threads << " threads") {
        BOOST_REQUIRE_EQUAL(one.size(), many.size());
        BOOST_TEST(std::memcmp(one.data(), many.data(), one.size() * sizeof(T)) == 0);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(sixteen_bit_parameters_are_bit_identical_for_1_2_and_4_threads, T,
                              sixteen_bit_types) {
  for (const bool fused : {false, true}) {
    // Stochastic rounding takes each element's word from its own key and counter too.
    const auto one = run_with_threads<T>(1, {.seed = 77, .fused_steps = fused});
    for (int threads : {2, 4}) {
      const auto many = run_with_threads<T>(threads, {.seed = 77, .fused_steps = fused});
      BOOST_TEST_CONTEXT(threads << " threads, fused " << fused) {
        BOOST_REQUIRE_EQUAL(one.size(), many.size());
        BOOST_TEST(std::memcmp(one.data(), many.data(), one.size() * sizeof(T)) == 0);
      }
    }
  }
}

// The CPU backend is a value that carries its thread count: a store built with cpu{.threads = n}
// runs its passes on n threads whatever OpenMP's default, with the same results.
BOOST_AUTO_TEST_CASE(a_store_s_backend_carries_its_thread_count) {
#if defined(_OPENMP)
  omp_set_num_threads(4);
  for (const int threads : {1, 3}) {
    const zo::backends::cpu backend{.threads = threads};
    int team = 0;
    backend.for_each_index(1 << 20, [&](std::size_t i) {
      if (i == 0) team = omp_get_num_threads();
    });
    BOOST_TEST(team == threads);
  }
#endif
  const auto reference = run_with_threads<float>(4, {.seed = 77});
  const auto mine = run_with_threads<float>(4, {.seed = 77}, {.threads = 1});
  BOOST_REQUIRE_EQUAL(mine.size(), reference.size());
  BOOST_TEST(std::memcmp(mine.data(), reference.data(), mine.size() * sizeof(float)) == 0);
}
