// SPDX-License-Identifier: Apache-2.0
// expect: zo: the layer selector needs select
// A layer selector must assign every block a role.
#include <cstdint>
#include <span>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

struct selector_without_select {
#ifdef ZO_COMPILE_FAIL_CONTROL
  template <class Store>
  void select(std::uint64_t step, const Store& store, std::span<zo::block_role> roles) const {
    zo::all_blocks{}.select(step, store, roles);
  }
#endif
};

int main() {
  zo::eigen_store<double> store;
  store.add("w", 2, 1);
  zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, zo::sgd<>,
                   selector_without_select>
      opt{zo::central_difference(), zo::sgd<>()};
  opt.step(store, [] { return 1.0; });
}
