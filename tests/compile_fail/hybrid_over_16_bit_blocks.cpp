// SPDX-License-Identifier: Apache-2.0
// expect: zo: the hybrid's first-order rules update float or double blocks
// LoHO's first-order rules update blocks in their own element type; over bfloat16 blocks that is
// refused where the step is formed, not left to round every gradient step to nearest.
#include <span>
#include <vector>
#include <zo/zo.hpp>

#ifdef ZO_COMPILE_FAIL_CONTROL
using element = float;
#else
using element = zo::bfloat16;
#endif

struct objective {
  double loss() { return 1.0; }
  double loss_and_gradients(zo::gradient_view<element>&) { return 1.0; }
};

int main() {
  std::vector<element> weights(4);
  zo::view_store<element> store;
  store.add("w", std::span<element>(weights), 2, 2, {.layer = 0});
  objective f;
  zo::loho opt(zo::mezo(zo::central_difference(), zo::sgd<>()), zo::adam<>(),
               zo::deepest_layers(1));
  opt.step(store, f);
}
