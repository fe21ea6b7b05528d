// SPDX-License-Identifier: Apache-2.0
// expect: zo: the hybrid's objective needs loss
// A hybrid's objective must also return gradients for the first-order blocks.
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

struct objective_without_gradients {
  zo::eigen_store<double>* store;
  double loss() { return store->matrix(0).squaredNorm(); }
#ifdef ZO_COMPILE_FAIL_CONTROL
  double loss_and_gradients(zo::gradient_view<double>&) {
    return loss();
  }
#endif
};

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 2, {.layer = 0});
  objective_without_gradients f{&store};
  zo::loho opt(zo::mezo(zo::central_difference(), zo::sgd<>()), zo::adam<>(),
               zo::deepest_layers(1));
  opt.step(store, f);
}
