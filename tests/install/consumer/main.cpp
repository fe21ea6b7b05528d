// SPDX-License-Identifier: Apache-2.0
// Fails (non-zero exit) unless MeZO from the installed headers lowers a small quadratic.
#include <cstdio>
#include <vector>
#include <zo/zo.hpp>

// zo::zo needs neither Eigen nor OpenMP: the umbrella header must not pull Eigen in, and OpenMP is
// used exactly where the consumer has it.
#if defined(EIGEN_WORLD_VERSION)
#error "zo/zo.hpp included Eigen"
#endif
#if defined(_OPENMP) != ZO_CONSUMER_EXPECT_OPENMP
#error "zo::zo brought OpenMP where it should not, or did not where it should"
#endif

int main() {
  std::vector<float> x(16, 1.0f);
  zo::view_store<float> store;
  store.add("x", std::span<float>(x));
  auto loss = [&] {
    double s = 0;
    for (float v : x)
      s += double(v) * v;
    return s;
  };
  const double before = loss();
  zo::mezo(zo::central_difference(1e-3), zo::sgd<>(0.02), {.seed = 1}).optimize(store, loss, 500);
  std::printf("consumer: loss %.4f -> %.4f\n", before, loss());
  return loss() < 0.5 * before ? 0 : 1;
}
