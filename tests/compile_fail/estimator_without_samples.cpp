// SPDX-License-Identifier: Apache-2.0
// expect: zo: the estimator needs samples
// An estimator must say how many directions it measures per step.
#include <span>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

struct estimator_without_samples {
#ifdef ZO_COMPILE_FAIL_CONTROL
  std::size_t samples() const {
    return 1;
  }
#endif
  double epsilon() const {
    return 1e-3;
  }
  template <class Probe>
  double estimate(Probe& probe, std::span<double> g) const {
    return zo::central_difference(1e-3).estimate(probe, g);
  }
};

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 1);
  zo::zo_optimizer<zo::gaussian_perturbation, estimator_without_samples, zo::sgd<>> opt{
      estimator_without_samples{}, zo::sgd<>()};
  opt.step(store, [] { return 1.0; });
}
