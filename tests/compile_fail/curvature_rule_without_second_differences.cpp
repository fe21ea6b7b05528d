// SPDX-License-Identifier: Apache-2.0
// expect: zo: this step rule reads second differences
// HiZOO's rule updates its Hessian estimate from (L+ + L- - 2 L0) / eps^2, which only an
// estimator that measures second differences writes: any other is refused where the optimizer
// is formed, not at the first update.
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

#ifdef ZO_COMPILE_FAIL_CONTROL
using estimator = zo::curvature_difference;
#else
using estimator = zo::central_difference;
#endif

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 2);
  zo::hizoo_sgd<> rule;
  zo::zo_optimizer<zo::hessian_scaled_perturbation, estimator, zo::hizoo_sgd<>> opt{
      zo::hessian_scaled_perturbation(rule.diagonal()), estimator(), rule};
  opt.step(store, [] { return 1.0; });
}
