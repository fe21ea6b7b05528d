// SPDX-License-Identifier: Apache-2.0
// ZO-SGD with momentum (zo/step_rules/zo_momentum.hpp): two steps against the update written out
// from materialised directions, a resumed run against an uninterrupted one, and a lowered loss.
#define BOOST_TEST_MODULE zo_momentum
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <vector>
#include <zo/step_rules/zo_momentum.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

using momentum_optimizer =
    zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::zo_momentum<>>;

}  // namespace

BOOST_AUTO_TEST_CASE(two_steps_follow_heavy_ball_momentum_on_the_dense_estimate) {
  zo_test::weight_and_bias problem;
  auto loss = problem.loss();
  constexpr double lr = 1e-2, mu = 0.8, decay = 0.1;
  constexpr std::uint64_t seed = 5;
  // q = 11: more directions than one pass holds, so each estimate takes two passes.
  momentum_optimizer optimizer(zo::q_sample<>(11), zo::zo_momentum<>(lr, mu, decay),
                               {.seed = seed});
  std::vector<std::vector<double>> theta{problem.weight, problem.bias}, m(2), without_momentum(2);
  for (std::uint64_t step = 0; step < 2; ++step) {
    const auto report = optimizer.step(problem.store, loss);
    BOOST_REQUIRE(!report.skipped());
    for (std::size_t i = 0; i < 2; ++i) {
      const auto estimate =
          zo_test::dense_estimate(problem.store, i, seed, step, report.projected_gradients);
      if (step == 0) m[i].assign(estimate.size(), 0.0);
      const double keep = problem.store.block(i).decay() ? 1 - lr * decay : 1.0;
      without_momentum[i] = theta[i];
      for (std::size_t e = 0; e < estimate.size(); ++e) {
        m[i][e] = mu * m[i][e] + estimate[e];
        without_momentum[i][e] = keep * theta[i][e] - lr * estimate[e];
        theta[i][e] = keep * theta[i][e] - lr * m[i][e];
      }
    }
  }
  auto largest_difference = [](const std::vector<double>& x, const std::vector<double>& y) {
    double largest = 0;
    for (std::size_t e = 0; e < x.size(); ++e)
      largest = std::max(largest, std::abs(x[e] - y[e]));
    return largest;
  };
  const auto actual = zo_test::snapshot(problem.store);
  BOOST_TEST(largest_difference(actual, zo_test::widen(theta)) < 1e-13);
  // The second step carried the first one's momentum: plain SGD from there lands elsewhere.
  BOOST_TEST(largest_difference(actual, zo_test::widen(without_momentum)) > 1e-6);
}

BOOST_AUTO_TEST_CASE(a_resumed_run_matches_the_uninterrupted_one_bit_for_bit) {
  zo_test::weight_and_bias straight, resumed;
  auto straight_loss = straight.loss();
  auto resumed_loss = resumed.loss();
  auto make = [] {
    return momentum_optimizer(zo::q_sample<>(3), zo::zo_momentum<>(1e-2, 0.9), {.seed = 2});
  };
  auto first = make();
  first.optimize(straight.store, straight_loss, 3);
  std::stringstream state;
  first.save(state);
  // The state holds every parameter's momentum, not just the step index.
  BOOST_TEST(state.str().size() > (18 + 4) * sizeof(double));
  resumed.weight = straight.weight;
  resumed.bias = straight.bias;
  first.optimize(straight.store, straight_loss, 3);

  auto second = make();
  second.load(state);
  second.optimize(resumed.store, resumed_loss, 3);
  BOOST_TEST(zo_test::snapshot(resumed.store) == zo_test::snapshot(straight.store));
}

BOOST_AUTO_TEST_CASE(zo_sgd_with_momentum_lowers_a_least_squares_loss) {
  zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::zo_momentum<>> optimizer(
      zo::q_sample<>(4), zo::zo_momentum<>(2e-3, 0.9), {.seed = 1});
  BOOST_TEST(zo_test::least_squares_left(optimizer, 400) < 0.5);
}

BOOST_AUTO_TEST_CASE(a_momentum_outside_zero_to_one_is_refused) {
  BOOST_CHECK_THROW(zo::zo_momentum<>(1e-3, 1.0), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::zo_momentum<>(1e-3, -0.1), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::zo_momentum<>(1e-3, 0.9, -1.0), zo::invalid_argument);
}
