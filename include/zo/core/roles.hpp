// SPDX-License-Identifier: Apache-2.0
// The role a layer selector gives each block at a step: the word every part of a step shares.
#pragma once

#include <cstdint>

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

}  // namespace zo
