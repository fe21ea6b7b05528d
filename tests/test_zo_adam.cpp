// SPDX-License-Identifier: Apache-2.0
// ZO-Adam (zo/step_rules/zo_adam.hpp): two steps against Adam written out from materialised
// directions, a resumed run against an uninterrupted one, and a lowered loss.
#define BOOST_TEST_MODULE zo_adam
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <vector>
#include <zo/step_rules/zo_adam.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

using adam_optimizer = zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::zo_adam<>>;

}  // namespace

BOOST_AUTO_TEST_CASE(two_steps_follow_adam_on_the_dense_estimate) {
  zo_test::weight_and_bias problem;
  auto loss = problem.loss();
  constexpr double lr = 1e-2, beta1 = 0.8, beta2 = 0.9, epsilon = 1e-3, decay = 0.1;
  constexpr std::uint64_t seed = 5;
  adam_optimizer optimizer(zo::q_sample<>(11), zo::zo_adam<>(lr, beta1, beta2, epsilon, decay),
                           {.seed = seed});
  std::vector<std::vector<double>> theta{problem.weight, problem.bias}, m(2), v(2);
  for (std::uint64_t step = 0; step < 2; ++step) {
    const auto report = optimizer.step(problem.store, loss);
    BOOST_REQUIRE(!report.skipped());
    const double t = static_cast<double>(step + 1);
    const double bias1 = 1 - std::pow(beta1, t), bias2 = 1 - std::pow(beta2, t);
    for (std::size_t i = 0; i < 2; ++i) {
      const auto estimate =
          zo_test::dense_estimate(problem.store, i, seed, step, report.projected_gradients);
      if (step == 0) {
        m[i].assign(estimate.size(), 0.0);
        v[i].assign(estimate.size(), 0.0);
      }
      const double keep = problem.store.block(i).decay() ? 1 - lr * decay : 1.0;
      for (std::size_t e = 0; e < estimate.size(); ++e) {
        m[i][e] = beta1 * m[i][e] + (1 - beta1) * estimate[e];
        v[i][e] = beta2 * v[i][e] + (1 - beta2) * estimate[e] * estimate[e];
        const double m_hat = m[i][e] / bias1, v_hat = v[i][e] / bias2;
        theta[i][e] = keep * theta[i][e] - lr * m_hat / (std::sqrt(v_hat) + epsilon);
      }
    }
  }
  const auto expected = zo_test::widen(theta);
  const auto actual = zo_test::snapshot(problem.store);
  double largest_difference = 0;
  for (std::size_t e = 0; e < expected.size(); ++e)
    largest_difference = std::max(largest_difference, std::abs(actual[e] - expected[e]));
  BOOST_TEST(largest_difference < 1e-12);
}

BOOST_AUTO_TEST_CASE(a_resumed_run_matches_the_uninterrupted_one_bit_for_bit) {
  zo_test::weight_and_bias straight, resumed;
  auto straight_loss = straight.loss();
  auto resumed_loss = resumed.loss();
  auto make = [] { return adam_optimizer(zo::q_sample<>(3), zo::zo_adam<>(1e-2), {.seed = 2}); };
  auto first = make();
  first.optimize(straight.store, straight_loss, 3);
  std::stringstream state;
  first.save(state);
  // The state holds both moments of every parameter, not just the step index.
  BOOST_TEST(state.str().size() > 2 * (18 + 4) * sizeof(double));
  resumed.weight = straight.weight;
  resumed.bias = straight.bias;
  first.optimize(straight.store, straight_loss, 3);

  auto second = make();
  second.load(state);
  second.optimize(resumed.store, resumed_loss, 3);
  BOOST_TEST(zo_test::snapshot(resumed.store) == zo_test::snapshot(straight.store));
}

BOOST_AUTO_TEST_CASE(zo_adam_lowers_a_least_squares_loss) {
  adam_optimizer optimizer(zo::q_sample<>(4), zo::zo_adam<>(1e-2), {.seed = 1});
  BOOST_TEST(zo_test::least_squares_left(optimizer, 400) < 0.5);
}

BOOST_AUTO_TEST_CASE(bad_hyperparameters_are_refused) {
  BOOST_CHECK_THROW(zo::zo_adam<>(1e-3, 1.0), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::zo_adam<>(1e-3, 0.9, -0.5), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::zo_adam<>(1e-3, 0.9, 0.999, 0.0), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::zo_adam<>(1e-3, 0.9, 0.999, 1e-8, -1.0), zo::invalid_argument);
}
