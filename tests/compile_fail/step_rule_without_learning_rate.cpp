// SPDX-License-Identifier: Apache-2.0
// expect: zo: the step rule needs learning_rate
// A zeroth-order step rule must report its learning rate for each step.
#include <cstdint>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

struct step_rule_without_learning_rate {
#ifdef ZO_COMPILE_FAIL_CONTROL
  double learning_rate(std::uint64_t) const {
    return 0.1;
  }
#endif
  template <class Update>
  void update(Update& u) const {
    zo::sgd<>(0.1).update(u);
  }
};

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 1);
  zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference,
                   step_rule_without_learning_rate>
      opt{zo::central_difference(), step_rule_without_learning_rate{}};
  opt.step(store, [] { return 1.0; });
}
