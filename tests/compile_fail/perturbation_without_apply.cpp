// SPDX-License-Identifier: Apache-2.0
// expect: zo: the perturbation policy needs apply
// A perturbation policy must implement the pass kernel.
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

struct perturbation_without_apply {
#ifdef ZO_COMPILE_FAIL_CONTROL
  template <class Backend, class Block, class T, class Scratch>
  void apply(const Backend& backend, const Block& block, const zo::pass<T>& p,
             Scratch& scratch) const {
    zo::gaussian_perturbation{}.apply(backend, block, p, scratch);
  }
#endif
};

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 1);
  zo::zo_optimizer<perturbation_without_apply, zo::central_difference, zo::sgd<>> opt{
      zo::central_difference(), zo::sgd<>()};
  opt.step(store, [] { return 1.0; });
}
