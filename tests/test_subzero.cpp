// SPDX-License-Identifier: Apache-2.0
// SubZero's directions (zo/perturbations/subzero.hpp): a matrix block's direction is U·Z·Vᵀ with
// U and V orthonormal (its singular values are the keyed core's), U and V are shared within a
// ν-step window and redrawn after it, vector blocks get MeZO's dense direction, and the loss
// falls.
#define BOOST_TEST_MODULE subzero
#include <boost/test/unit_test.hpp>

#include <Eigen/Dense>
#include <cstdint>
#include <vector>
#include <zo/perturbations/directions.hpp>
#include <zo/perturbations/subzero.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

constexpr std::uint64_t seed = 3;
constexpr std::size_t rank = 3, interval = 4;

struct matrix_block {
  std::vector<double> values = std::vector<double>(12 * 7, 0.5);
  zo::view_store<double> store;
  matrix_block() { store.add("w", std::span<double>(values), 12, 7); }
};

Eigen::MatrixXd direction(const zo::view_store<double>& store, std::uint32_t step,
                          std::size_t sample, zo::generator generator = zo::default_generator) {
  const auto z = zo::materialize_direction(zo::subzero_perturbation(rank, interval), store.block(0),
                                           seed, step, sample, generator);
  return Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
      z.data(), 12, 7);
}

// What of `d` lies outside the column space of `basis`'s first `rank` left singular vectors.
double outside_columns(const Eigen::MatrixXd& basis, const Eigen::MatrixXd& d) {
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(basis, Eigen::ComputeThinU);
  const Eigen::MatrixXd u = svd.matrixU().leftCols(rank);
  return (d - u * (u.transpose() * d)).norm() / d.norm();
}

}  // namespace

// With each generator: the run's generator must reach the core's key too.
BOOST_AUTO_TEST_CASE(a_direction_is_u_z_vt_with_orthonormal_factors_and_the_keyed_core) {
  matrix_block block;
  for (const auto generator : {zo::generator::philox4x32_10, zo::generator::philox4x32_8}) {
    for (std::uint32_t step : {0u, 5u}) {
      for (std::size_t sample : {0u, 2u}) {
        const Eigen::MatrixXd d = direction(block.store, step, sample, generator);
        // The core: r × r entries keyed by (step, sample) on the dense stream.
        const zo::direction_key key{
            seed, step, 0, zo::stream::dense, static_cast<std::uint8_t>(sample), generator};
        Eigen::MatrixXd core(rank, rank);
        for (std::size_t e = 0; e < rank * rank; ++e)
          core(e / rank, e % rank) =
              zo::direction_element<zo::gaussian_distribution, double>(key, e);
        const Eigen::VectorXd expected = core.jacobiSvd().singularValues();
        const Eigen::VectorXd actual = d.jacobiSvd().singularValues();
        BOOST_TEST_CONTEXT(zo::generator_name(generator)
                           << ", step " << step << ", sample " << sample) {
          // Orthonormal U and V keep Z's singular values, and add no others.
          BOOST_TEST((actual.head(rank) - expected).norm() < 1e-12 * expected.norm());
          BOOST_TEST(actual.tail(actual.size() - rank).norm() < 1e-12 * expected.norm());
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(u_and_v_are_kept_for_a_window_of_steps_and_redrawn_after_it) {
  matrix_block block;
  const Eigen::MatrixXd first = direction(block.store, 4, 0);
  // Steps 4 to 7 share U and V: another sample, another step, the same column and row spaces.
  for (const auto& d : {direction(block.store, 4, 1), direction(block.store, 7, 0)}) {
    BOOST_TEST(outside_columns(first, d) < 1e-10);
    BOOST_TEST(outside_columns(first.transpose(), d.transpose()) < 1e-10);
    BOOST_TEST((d - first).norm() > 0.1 * first.norm());
  }
  // Step 8 opens a new window.
  BOOST_TEST(outside_columns(first, direction(block.store, 8, 0)) > 0.1);
}

BOOST_AUTO_TEST_CASE(vector_blocks_get_mezos_dense_direction) {
  std::vector<double> bias(9, 0.0);
  zo::view_store<double> store;
  store.add("b", std::span<double>(bias));
  const auto expected =
      zo::materialize_direction(zo::gaussian_perturbation{}, store.block(0), seed, 2, 1);
  BOOST_TEST(zo::materialize_direction(zo::subzero_perturbation(rank, interval), store.block(0),
                                       seed, 2, 1) == expected);
}

BOOST_AUTO_TEST_CASE(subzero_lowers_a_least_squares_loss) {
  zo::zo_optimizer<zo::subzero_perturbation, zo::q_sample<>, zo::sgd<>> optimizer(
      zo::subzero_perturbation(2, 10), zo::q_sample<>(4), zo::sgd<>(5e-2), {}, {.seed = 1});
  BOOST_TEST(zo_test::least_squares_left(optimizer, 400) < 0.5);
}

BOOST_AUTO_TEST_CASE(a_rank_above_the_smaller_side_is_refused) {
  matrix_block block;
  zo::subzero optimizer(zo::subzero_perturbation(8, 10), zo::central_difference(), zo::sgd<>(1e-3));
  BOOST_CHECK_THROW(optimizer.step(block.store, [] { return 1.0; }), zo::invalid_argument);
}
