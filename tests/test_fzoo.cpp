// SPDX-License-Identifier: Apache-2.0
// FZOO (zo/optimizers/fzoo.hpp, zo/step_rules/fzoo.hpp): N estimates from N + 1 evaluations, a
// step equal to the paper's update written out from the measured losses, the undefined step (all
// losses equal) refused, and a lowered loss.
#define BOOST_TEST_MODULE fzoo
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <vector>
#include <zo/optimizers/fzoo.hpp>
#include <zo/perturbations/directions.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

// A 9 × 2 weight under least squares, its loss recording every value it returns.
struct recorded_problem {
  std::vector<double> values;
  zo::view_store<double> store;
  Eigen::MatrixXd a;
  Eigen::VectorXd b;
  std::vector<double> losses;

  recorded_problem() : values(18) {
    for (std::size_t e = 0; e < values.size(); ++e)
      values[e] = 0.1 * static_cast<double>(e % 5) - 0.2;
    store.add("w", std::span<double>(values), 9, 2);
    std::tie(a, b) = zo_test::random_problem(40, 18, 3);
  }
  double operator()() {
    losses.push_back(zo_test::least_squares<zo::view_store<double>>{&store, a, b}());
    return losses.back();
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(n_estimates_come_from_n_plus_one_evaluations) {
  for (std::size_t n : {2u, 5u, 12u}) {
    recorded_problem problem;
    auto optimizer = zo::make_fzoo(n, 1e-3, zo::fzoo_sgd<>(1e-4), {.seed = 4});
    for (int step = 0; step < 3; ++step) {
      problem.losses.clear();
      const auto report = optimizer.step(problem.store, [&] { return problem(); });
      BOOST_REQUIRE(!report.skipped());
      BOOST_TEST(problem.losses.size() == n + 1);
      BOOST_TEST(report.projected_gradients.size() == n);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_step_divides_the_one_sided_estimate_by_the_std_of_the_losses) {
  recorded_problem problem;
  const auto before = problem.values;
  constexpr std::size_t n = 6;
  constexpr double eps = 1e-3, lr = 1e-4;
  constexpr std::uint64_t seed = 9;
  auto optimizer = zo::make_fzoo(n, eps, zo::fzoo_sgd<>(lr), {.seed = seed});
  BOOST_REQUIRE(!optimizer.step(problem.store, [&] { return problem(); }).skipped());
  // Evaluation 0 is the base loss l_0, evaluation j + 1 the loss along direction j.
  const double l0 = problem.losses[0];
  double mean = 0;
  for (std::size_t j = 1; j <= n; ++j)
    mean += problem.losses[j] / n;
  double variance = 0;
  for (std::size_t j = 1; j <= n; ++j)
    variance += (problem.losses[j] - mean) * (problem.losses[j] - mean) / (n - 1);
  const double sigma = std::sqrt(variance);
  std::vector<double> expected = before;
  double largest_move = 0, largest_difference = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const auto u = zo::materialize_direction(zo::rademacher_perturbation{}, problem.store.block(0),
                                             seed, 0, j);
    for (std::size_t e = 0; e < u.size(); ++e)
      expected[e] -= (lr / sigma) * (problem.losses[j + 1] - l0) / (eps * n) * u[e];
  }
  for (std::size_t e = 0; e < expected.size(); ++e) {
    largest_move = std::max(largest_move, std::abs(expected[e] - before[e]));
    largest_difference = std::max(largest_difference, std::abs(problem.values[e] - expected[e]));
  }
  BOOST_TEST(largest_move > 1e-3);
  BOOST_TEST(largest_difference < 1e-8 * largest_move);
}

BOOST_AUTO_TEST_CASE(equal_losses_leave_the_step_undefined_and_it_is_refused) {
  std::vector<double> values(8, 0.5);
  zo::view_store<double> store;
  store.add("w", std::span<double>(values));
  auto optimizer = zo::make_fzoo(4, 1e-3, zo::fzoo_sgd<>(1e-3));
  const auto report = optimizer.step(store, [] { return 1.0; });
  BOOST_TEST((report.status == zo::step_status::skipped_nonfinite_update));
  BOOST_TEST(values == std::vector<double>(8, 0.5));
}

BOOST_AUTO_TEST_CASE(fewer_than_two_directions_are_refused) {
  BOOST_CHECK_THROW(zo::make_fzoo(1, 1e-3, zo::fzoo_sgd<>(1e-3)), zo::invalid_argument);
  std::vector<double> values(8, 0.5);
  zo::view_store<double> store;
  store.add("w", std::span<double>(values));
  zo::fzoo single(zo::q_sample<zo::one_sided>(1), zo::fzoo_sgd<>(1e-3));
  double shift = 0;
  BOOST_CHECK_THROW(single.step(store, [&] { return values[0] + (shift += 1); }),
                    zo::invalid_argument);
  BOOST_TEST(values == std::vector<double>(8, 0.5));
}

BOOST_AUTO_TEST_CASE(fzoo_lowers_a_least_squares_loss) {
  BOOST_TEST(zo_test::least_squares_left(zo::make_fzoo(8, 1e-3, zo::fzoo_sgd<>(2e-5), {.seed = 1}),
                                         400) < 0.5);
}
