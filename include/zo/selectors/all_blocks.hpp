// SPDX-License-Identifier: Apache-2.0
// Layer selectors decide, per step, which blocks are trained zeroth-order, first-order, or not
// at all.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>

namespace zo {

enum class block_role : std::uint8_t {
  zeroth_order,
  first_order,
  frozen,
  // First-order on a fixed random subset of the entries, zeroth-order on the others (LoHO's
  // intra-layer mode, see intra_layer_mask).
  mixed,
};

// Whether zeroth-order passes touch a block with this role.
inline constexpr bool perturbed(block_role role) {
  return role == block_role::zeroth_order || role == block_role::mixed;
}

// Every block is zeroth-order at every step (MeZO, LOZO).
struct all_blocks {
  template <class Store>
  void select(std::uint64_t /*step*/, const Store& /*store*/, std::span<block_role> roles) const {
    std::fill(roles.begin(), roles.end(), block_role::zeroth_order);
  }
};

}  // namespace zo
