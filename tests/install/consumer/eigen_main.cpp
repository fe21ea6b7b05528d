// SPDX-License-Identifier: Apache-2.0
// Fails (non-zero exit) unless MeZO lowers a small quadratic kept in an eigen_store, from the
// installed headers and zo::eigen.
#include <cstdio>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

int main() {
  zo::eigen_store<float> store;
  const auto w = store.add("w", zo::eigen_store<float>::matrix_type::Ones(4, 4));
  auto loss = [&] { return double(store.matrix(w).squaredNorm()); };
  const double before = loss();
  zo::mezo(zo::central_difference(1e-3), zo::sgd<>(0.02), {.seed = 1}).optimize(store, loss, 500);
  std::printf("eigen consumer: loss %.4f -> %.4f\n", before, loss());
  return loss() < 0.5 * before ? 0 : 1;
}
