// SPDX-License-Identifier: Apache-2.0
// MeZO fits a least-squares problem using only loss evaluations.
#include <Eigen/Dense>
#include <cstdio>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

int main() {
  // Data: y = A·w_true + noise, 200 samples, 20 features.
  const Eigen::MatrixXd a = Eigen::MatrixXd::Random(200, 20);
  const Eigen::VectorXd w_true = Eigen::VectorXd::LinSpaced(20, -1.0, 1.0);
  const Eigen::VectorXd y = a * w_true + 0.01 * Eigen::VectorXd::Random(200);

  // The parameters live in a zo store: one 20 × 1 block, starting at zero.
  zo::eigen_store<double> store;
  const auto w = store.add("w", 20, 1);

  // The objective only evaluates the loss; zo never asks for a gradient.
  auto loss = [&] { return (a * store.matrix(w) - y).squaredNorm() / 200.0; };

  zo::mezo optimizer(zo::central_difference(1e-3), zo::sgd<>(2e-3), {.seed = 42});
  const double before = loss();
  optimizer.optimize(store, loss, 3000);
  std::printf("loss %.5f -> %.5f after %llu MeZO steps\n", before, loss(),
              static_cast<unsigned long long>(optimizer.step_count()));
  std::printf("distance to the true weights: %.4f\n", (store.matrix(w) - w_true).norm());
}
