// SPDX-License-Identifier: Apache-2.0
// expect: zo: a base estimator .*needs measure
// q_sample repeats its base estimator's measure() over directions; a base without it is refused
// where the optimizer is formed.
#include <span>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

struct estimate_only {
  std::size_t samples() const { return 1; }
  double epsilon() const { return 1e-3; }
  template <class Probe>
  double baseline(Probe& probe) const {
    return zo::central_difference(1e-3).baseline(probe);
  }
#ifdef ZO_COMPILE_FAIL_CONTROL
  template <class Probe>
  double measure(Probe& probe, std::size_t j, double baseline, double& g) const {
    return zo::central_difference(1e-3).measure(probe, j, baseline, g);
  }
#endif
  template <class Probe>
  double estimate(Probe& probe, std::span<double> g) const {
    return zo::central_difference(1e-3).estimate(probe, g);
  }
};

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 1);
  using optimizer =
      zo::zo_optimizer<zo::gaussian_perturbation, zo::q_sample<estimate_only>, zo::sgd<>>;
  optimizer opt{zo::q_sample<estimate_only>(2), zo::sgd<>()};
  opt.step(store, [] { return 1.0; });
}
