// SPDX-License-Identifier: Apache-2.0
// ZO-SignSGD, the variant written as one step rule (zo/step_rules/sign_sgd.hpp) on the step
// engine: its update is −η·sign(ĝ) element by element, and it lowers a loss.
#define BOOST_TEST_MODULE sign_sgd
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <vector>
#include <zo/perturbations/directions.hpp>
#include <zo/step_rules/sign_sgd.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

using sign_optimizer = zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::sign_sgd<>>;

}  // namespace

BOOST_AUTO_TEST_CASE(a_step_moves_every_element_by_the_rate_against_the_sign_of_the_estimate) {
  auto [a, b] = zo_test::random_problem(40, 9 * 2, 3);
  std::vector<double> values(18);
  for (std::size_t e = 0; e < values.size(); ++e)
    values[e] = 0.1 * static_cast<double>(e % 4);
  const auto before = values;
  zo::view_store<double> store;
  store.add("w", std::span<double>(values), 9, 2);
  zo_test::least_squares<zo::view_store<double>> loss{&store, a, b};
  constexpr double lr = 1e-2;
  // q = 11 directions: more than one pass holds, so the estimate is built over two.
  sign_optimizer optimizer(zo::q_sample<>(11), zo::sign_sgd<>(lr), {.seed = 5});
  const auto report = optimizer.step(store, loss);
  BOOST_REQUIRE(!report.skipped());
  std::vector<double> estimate(values.size(), 0.0);
  for (std::size_t j = 0; j < 11; ++j) {
    const auto z = zo::materialize_direction(zo::gaussian_perturbation{}, store.block(0), 5, 0, j);
    for (std::size_t e = 0; e < z.size(); ++e)
      estimate[e] += (report.projected_gradients[j] / 11.0) * z[e];
  }
  std::size_t differing = 0, zero = 0;
  for (std::size_t e = 0; e < values.size(); ++e) {
    const double sign = (estimate[e] > 0) - (estimate[e] < 0);
    zero += sign == 0;
    differing += values[e] != before[e] + (-lr) * sign;
  }
  BOOST_TEST(zero == 0u);
  BOOST_TEST(differing == 0u);
}

BOOST_AUTO_TEST_CASE(zo_sign_sgd_lowers_a_least_squares_loss) {
  using linear_sign = zo::sign_sgd<zo::linear_schedule>;
  zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, linear_sign> optimizer(
      zo::q_sample<>(4), linear_sign(zo::linear_schedule(2e-2, 400)), {.seed = 1});
  BOOST_TEST(zo_test::least_squares_left(optimizer, 400) < 0.5);
}
