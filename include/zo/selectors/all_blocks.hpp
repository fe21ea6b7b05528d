// SPDX-License-Identifier: Apache-2.0
// Layer selectors decide, per step, which blocks are trained zeroth-order, first-order, or not
// at all.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>

#include "zo/core/roles.hpp"

namespace zo {

// Every block is zeroth-order at every step (MeZO, LOZO).
struct all_blocks {
  template <class Store>
  void select(std::uint64_t /*step*/, const Store& /*store*/, std::span<block_role> roles) const {
    std::fill(roles.begin(), roles.end(), block_role::zeroth_order);
  }
};

}  // namespace zo
