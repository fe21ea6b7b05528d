// SPDX-License-Identifier: Apache-2.0
// expect: zo: this step rule needs the perturbation policy named by its required_perturbation
// LOZO-M's momentum lives in the factor space of low-rank directions: the rule names
// low_rank_perturbation as the one it needs, and any other is refused where the optimizer is
// formed.
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

#ifdef ZO_COMPILE_FAIL_CONTROL
using perturbation = zo::low_rank_perturbation;
#else
using perturbation = zo::gaussian_perturbation;
#endif

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 2);
  zo::zo_optimizer<perturbation, zo::central_difference, zo::low_rank_momentum<>> opt{
      zo::central_difference(), zo::low_rank_momentum<>()};
  opt.step(store, [] { return 1.0; });
}
