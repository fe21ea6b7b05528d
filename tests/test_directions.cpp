// SPDX-License-Identifier: Apache-2.0
// The direction helpers give the numbers a step's passes apply: checked against the keyed
// generator element by element, against LOZO's factors, and against the point a live step
// measures first.
#define BOOST_TEST_MODULE directions
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>
#include <zo/perturbations/directions.hpp>
#include <zo/zo.hpp>

namespace {

constexpr std::uint64_t seed = 42;

struct fixture {
  std::vector<float> weight, bias;
  zo::view_store<float> store;
  fixture() : weight(12 * 7), bias(12) {
    for (std::size_t e = 0; e < weight.size(); ++e)
      weight[e] = 0.01f * static_cast<float>(e % 13) - 0.05f;
    for (std::size_t e = 0; e < bias.size(); ++e)
      bias[e] = 0.02f * static_cast<float>(e);
    store.add("weight", std::span<float>(weight), 12, 7);
    store.add("bias", std::span<float>(bias));
  }
};

// The parameters at the first point a step measures, and at the base point.
template <class Optimizer>
std::vector<std::vector<float>> first_measured_point(Optimizer optimizer, fixture& f) {
  std::vector<std::vector<float>> seen;
  optimizer.step(f.store, [&] {
    if (seen.empty()) seen = {f.weight, f.bias};
    return 1.0;
  });
  return seen;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_dense_direction_is_the_keyed_generator_element_by_element) {
  fixture f;
  for (const std::size_t sample : {0u, 3u}) {
    const auto z =
        zo::materialize_direction(zo::gaussian_perturbation{}, f.store.block(0), seed, 17, sample);
    const zo::direction_key key{seed, 17, 0, zo::stream::dense, static_cast<std::uint8_t>(sample)};
    BOOST_REQUIRE_EQUAL(z.size(), f.weight.size());
    std::size_t differing = 0;
    for (std::size_t e = 0; e < z.size(); ++e)
      differing += z[e] != zo::gaussian_perturbation::element<float>(key, e);
    BOOST_TEST(differing == 0u);
  }
  const auto signs =
      zo::materialize_direction(zo::rademacher_perturbation{}, f.store.block(1), seed, 2, 0);
  for (const float s : signs)
    BOOST_TEST((s == 1.0f || s == -1.0f));
  BOOST_TEST(f.weight[3] == 0.01f * 3 - 0.05f);  // the block itself is untouched
}

BOOST_AUTO_TEST_CASE(a_low_rank_direction_is_its_factors_product) {
  fixture f;
  const zo::low_rank_perturbation policy(3, 5, true);
  const auto dense = zo::materialize_direction(policy, f.store.block(0), seed, 6, 1);
  const auto factors = zo::materialize_factors(policy, f.store.block(0), seed, 6, 1);
  BOOST_TEST(factors.rank == 3u);
  double worst = 0;
  for (std::size_t i = 0; i < 12; ++i) {
    for (std::size_t j = 0; j < 7; ++j) {
      double product = 0;
      for (std::size_t k = 0; k < 3; ++k)
        product += double(factors.u[i * 3 + k]) * double(factors.v[j * 3 + k]);
      worst = std::max(worst, std::abs(product - double(dense[i * 7 + j])));
    }
  }
  BOOST_TEST(worst < 1e-5);
  // V is kept for the ν-step window (steps 5 to 9 here); U is redrawn every step.
  const auto later = zo::materialize_factors(policy, f.store.block(0), seed, 7, 1);
  BOOST_TEST((later.v == factors.v));
  BOOST_TEST((later.u != factors.u));
  // A vector block has a dense direction, and no factors.
  BOOST_CHECK_THROW(zo::materialize_factors(policy, f.store.block(1), seed, 6, 1),
                    zo::invalid_argument);
}

BOOST_AUTO_TEST_CASE(a_step_measures_first_at_the_base_plus_epsilon_times_the_direction) {
  for (const bool low_rank : {false, true}) {
    fixture f;
    const auto base_weight = f.weight, base_bias = f.bias;
    std::vector<std::vector<float>> seen;
    std::vector<float> z_weight, z_bias;
    const zo::zo_options options{.seed = seed};
    if (low_rank) {
      const zo::low_rank_perturbation policy(2, 4);
      seen = first_measured_point(
          zo::lozo(policy, zo::central_difference(1e-2), zo::sgd<>(1e-3), {}, options), f);
      z_weight = zo::materialize_direction(policy, f.store.block(0), seed, 0, 0);
      z_bias = zo::materialize_direction(policy, f.store.block(1), seed, 0, 0);
    } else {
      seen =
          first_measured_point(zo::mezo(zo::central_difference(1e-2), zo::sgd<>(1e-3), options), f);
      z_weight =
          zo::materialize_direction(zo::gaussian_perturbation{}, f.store.block(0), seed, 0, 0);
      z_bias = zo::materialize_direction(zo::gaussian_perturbation{}, f.store.block(1), seed, 0, 0);
    }
    double worst = 0;
    for (std::size_t e = 0; e < base_weight.size(); ++e)
      worst = std::max(worst, std::abs(double(seen[0][e]) - (base_weight[e] + 1e-2 * z_weight[e])));
    for (std::size_t e = 0; e < base_bias.size(); ++e)
      worst = std::max(worst, std::abs(double(seen[1][e]) - (base_bias[e] + 1e-2 * z_bias[e])));
    BOOST_TEST_CONTEXT(low_rank) {
      BOOST_TEST(worst < 1e-6);
    }
  }
}
