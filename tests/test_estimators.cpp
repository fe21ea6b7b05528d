// SPDX-License-Identifier: Apache-2.0
// One-sided and q-sample estimators: a single step against the dense reference, and the number
// of evaluations each scheme spends.
#define BOOST_TEST_MODULE estimators
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <vector>
#include <zo/zo.hpp>

#include "support.hpp"

using element_types = boost::mpl::list<float, double>;

namespace {

struct evaluation_counter {
  std::size_t count = 0;
  void after_evaluation(const zo::evaluation_report&) { ++count; }
};

// Runs one step of `opt` on the two-block problem and compares it with the dense reference.
template <class T, class Optimizer>
void check_against_reference(Optimizer opt, std::size_t q, bool one_sided,
                             std::size_t expected_evaluations, double g_tolerance = 1e-12) {
  zo_test::two_block_problem<T> problem;
  auto live = problem.values;
  zo::view_store<T> store;
  store.add("weight", std::span<T>(live[0]), 7, 5);
  store.add("bias", std::span<T>(live[1]), 5, 1, {.decay = false});
  evaluation_counter counter;
  const auto report = opt.step(
      store, [&] { return problem.loss(live); }, counter);

  auto expected = problem.values;
  const zo_test::dense_reference<T> reference{
      opt.options().seed, 0, opt.estimator().epsilon(), 0.05, 0.1, q, one_sided};
  const auto g =
      reference.run(expected, {true, false}, [&](const auto& v) { return problem.loss(v); });
  BOOST_TEST(counter.count == expected_evaluations);
  BOOST_REQUIRE_EQUAL(report.projected_gradients.size(), q);
  for (std::size_t j = 0; j < q; ++j) {
    BOOST_TEST(report.projected_gradients[j] == g[j], boost::test_tools::tolerance(g_tolerance));
  }
  BOOST_TEST(zo_test::relative_difference(zo_test::widen(live), zo_test::widen(expected)) < 1e-6);
}

}  // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(one_sided_step_matches_the_reference, T, element_types) {
  using optimizer = zo::zo_optimizer<zo::gaussian_perturbation, zo::one_sided, zo::sgd<>>;
  check_against_reference<T>(optimizer(zo::one_sided(1e-3), zo::sgd<>(0.05, 0.1), {.seed = 3}), 1,
                             true, 2);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(q_sample_central_step_matches_the_reference, T, element_types) {
  using optimizer = zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::sgd<>>;
  check_against_reference<T>(
      optimizer(zo::q_sample<>(5, zo::central_difference(2e-3)), zo::sgd<>(0.05, 0.1), {.seed = 4}),
      5, false, 10);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(q_sample_one_sided_shares_one_baseline, T, element_types) {
  using estimator = zo::q_sample<zo::one_sided>;
  using optimizer = zo::zo_optimizer<zo::gaussian_perturbation, estimator, zo::sgd<>>;
  check_against_reference<T>(
      optimizer(estimator(3, zo::one_sided(1e-3)), zo::sgd<>(0.05, 0.1), {.seed = 6}), 3, true, 4);
}

// More directions than one pass carries (max_terms_per_pass): the update is split over passes.
BOOST_AUTO_TEST_CASE(q_above_the_pass_capacity_matches_the_reference) {
  using optimizer = zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::sgd<>>;
  static_assert(zo::max_terms_per_pass < 20);
  check_against_reference<double>(optimizer(zo::q_sample<>(20), zo::sgd<>(0.05, 0.1), {.seed = 9}),
                                  20, false, 40);
}

// Arithmetic mode reaches each measured point from the previous one, so the points carry the
// rounding residue of up to 2q = 24 moves (≈ 24·u·|θ| ≈ 3e-15 per element in double); through
// |∇L|·√n ≈ 6 that is ≈ 2e-14 in the loss, which the central difference divides by 2ε = 2e-3:
// ≈ 1e-11 absolute, ≈ 2e-10 relative to g ≈ 0.06. Exact mode needs no such allowance.
BOOST_AUTO_TEST_CASE(q_sample_in_arithmetic_mode_matches_the_reference_in_double) {
  using optimizer = zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<>, zo::sgd<>>;
  check_against_reference<double>(optimizer(zo::q_sample<>(12), zo::sgd<>(0.05, 0.1),
                                            {.seed = 10, .restore = zo::restore_mode::arithmetic}),
                                  12, false, 24, 2e-10);
}
