// SPDX-License-Identifier: Apache-2.0
// expect: zo: the first-order step rule needs
// A first-order step rule must update a block from its gradient.
#include <cstdint>
#include <zo/zo.hpp>

struct fo_rule_without_apply {
  double learning_rate(std::uint64_t) const { return 0.1; }
#ifdef ZO_COMPILE_FAIL_CONTROL
  template <class Backend, class Block, class T>
  void apply(const Backend& backend, const Block& block, const T* gradient, double scale,
             std::uint64_t step) {
    zo::fo_sgd<>(0.1).apply(backend, block, gradient, scale, step);
  }
#endif
};

int main() {
  zo::hybrid<zo::mezo, fo_rule_without_apply, zo::deepest_layers> opt(
      zo::mezo(zo::central_difference(), zo::sgd<>()), fo_rule_without_apply{},
      zo::deepest_layers(1));
  (void)opt;
}
