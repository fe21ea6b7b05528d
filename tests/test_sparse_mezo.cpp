// SPDX-License-Identifier: Apache-2.0
// Sparse-MeZO (zo/perturbations/small_magnitude.hpp, zo/optimizers/sparse_mezo.hpp): entries at
// or above their block's threshold keep their bits, the others take MeZO's step along their part
// of the direction, passes that do not read the base point are refused, and the loss falls.
#define BOOST_TEST_MODULE sparse_mezo
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <vector>
#include <zo/optimizers/sparse_mezo.hpp>
#include <zo/perturbations/directions.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

// A 9 × 4 weight with magnitudes spread over [0, 0.4], under least squares.
struct spread_problem {
  std::vector<double> values = std::vector<double>(36);
  zo::view_store<double> store;
  Eigen::MatrixXd a;
  Eigen::VectorXd b;

  spread_problem() {
    for (std::size_t e = 0; e < values.size(); ++e)
      values[e] = 0.05 * static_cast<double>((e * 7) % 17) - 0.4;
    store.add("w", std::span<double>(values), 9, 4);
    std::tie(a, b) = zo_test::random_problem(30, 36, 5);
  }
  zo_test::least_squares<zo::view_store<double>> loss() { return {&store, a, b}; }
};

}  // namespace

BOOST_AUTO_TEST_CASE(large_entries_keep_their_bits_and_small_ones_take_mezos_step) {
  spread_problem problem;
  auto loss = problem.loss();
  constexpr double lr = 1e-2;
  constexpr std::uint64_t seed = 4;
  const auto thresholds = zo::small_magnitude_thresholds(problem.store, 0.5);
  auto optimizer = zo::make_sparse_mezo(problem.store, 0.5, zo::central_difference(1e-3),
                                        zo::sgd<>(lr), {.seed = seed});
  for (std::uint32_t step = 0; step < 3; ++step) {
    const auto before = problem.values;
    const auto report = optimizer.step(problem.store, loss);
    BOOST_REQUIRE(!report.skipped());
    const double alpha = -lr * report.projected_gradients[0];
    const auto z = zo::materialize_direction(zo::gaussian_perturbation{}, problem.store.block(0),
                                             seed, step, 0);
    std::size_t small = 0, wrong = 0;
    for (std::size_t e = 0; e < before.size(); ++e) {
      if (std::abs(before[e]) < thresholds[0]) {
        ++small;
        wrong += std::abs(problem.values[e] - (before[e] + alpha * z[e])) > 1e-15;
      } else {
        wrong += problem.values[e] != before[e];
      }
    }
    BOOST_TEST_CONTEXT("step " << step) {
      BOOST_TEST(wrong == 0u);
      BOOST_TEST(small > 10u);
      BOOST_TEST(small < 26u);
    }
  }
}

BOOST_AUTO_TEST_CASE(the_thresholds_leave_the_fraction_below_them) {
  spread_problem problem;
  const double h = zo::small_magnitude_thresholds(problem.store, 0.25)[0];
  std::size_t below = 0;
  for (double v : problem.values)
    below += std::abs(v) < h;
  BOOST_TEST(below <= 9u);
  BOOST_TEST(below >= 6u);
  BOOST_TEST(std::isinf(zo::small_magnitude_thresholds(problem.store, 1.0)[0]));
  BOOST_CHECK_THROW(zo::small_magnitude_thresholds(problem.store, 0.0), zo::invalid_argument);
}

BOOST_AUTO_TEST_CASE(passes_that_do_not_read_the_base_point_are_refused) {
  spread_problem problem;
  auto loss = problem.loss();
  const auto before = problem.values;
  BOOST_CHECK_THROW(
      zo::make_sparse_mezo(problem.store, 0.5, zo::central_difference(), zo::sgd<>(1e-3),
                           {.restore = zo::restore_mode::arithmetic}),
      zo::invalid_argument);
  const zo::small_magnitude_perturbation sparse(zo::small_magnitude_thresholds(problem.store, 0.5));
  // Arithmetic restore moves the block in place: refused at the first pass.
  zo::sparse_mezo arithmetic(sparse, zo::central_difference(), zo::sgd<>(1e-3), {},
                             {.restore = zo::restore_mode::arithmetic});
  BOOST_CHECK_THROW(arithmetic.step(problem.store, loss), zo::invalid_argument);
  BOOST_TEST(problem.values == before);
  // A rule's dense estimate reads the block at its last measured point: refused at the update.
  zo::zo_optimizer<zo::small_magnitude_perturbation, zo::central_difference, zo::sign_sgd<>> sign(
      sparse, zo::central_difference(), zo::sign_sgd<>(1e-3));
  BOOST_CHECK_THROW(sign.step(problem.store, loss), zo::invalid_argument);
  BOOST_TEST(problem.values == before);
}

BOOST_AUTO_TEST_CASE(sparse_mezo_lowers_a_loss_whose_optimum_moves_only_small_entries) {
  spread_problem problem;
  // The planted optimum keeps the large entries as they are and moves the small ones within the
  // threshold, so the entries Sparse-MeZO trains are the ones that need training.
  const double h = zo::small_magnitude_thresholds(problem.store, 0.5)[0];
  Eigen::VectorXd optimum(36);
  for (std::size_t e = 0; e < 36; ++e) {
    const double v = problem.values[e];
    optimum[static_cast<Eigen::Index>(e)] = std::abs(v) < h ? 0.5 * h * std::sin(3.0 * e) : v;
  }
  problem.b = problem.a * optimum;
  const auto base = problem.values;
  // With either generator's directions: the bound is about the method, not one draw of them
  // (measured: 26-fold with philox4x32-10, 7.5-fold with philox4x32-8, where the step's noise
  // floor stops it).
  for (const auto generator : {zo::generator::philox4x32_10, zo::generator::philox4x32_8}) {
    problem.values = base;
    auto loss = problem.loss();
    const double start = loss();
    auto optimizer = zo::make_sparse_mezo(problem.store, 0.5, zo::central_difference(1e-3),
                                          zo::sgd<>(2e-2), {.seed = 1, .generator = generator});
    optimizer.optimize(problem.store, loss, 400);
    BOOST_TEST_MESSAGE(zo::generator_name(generator) << ": loss " << start << " -> " << loss());
    BOOST_TEST(loss() < 0.2 * start, zo::generator_name(generator));
  }
}
