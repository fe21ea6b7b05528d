// SPDX-License-Identifier: Apache-2.0
// LoHO's intra-layer mode: inside the matrix blocks an inner selector makes first-order, only a
// fixed random fraction (1 − p) of the entries is trained first-order; the other entries are
// trained zeroth-order (the reference code's masked zeroth-order branch never ran — here both
// parts are updated). Vector blocks the inner selector makes first-order stay first-order.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "zo/core/errors.hpp"
#include "zo/core/pass.hpp"
#include "zo/selectors/all_blocks.hpp"

namespace zo {

template <class Inner>
class intra_layer_mask {
 public:
  // p: the fraction of a first-order matrix's entries left to zeroth-order, 0 ≤ p < 1.
  intra_layer_mask(Inner inner, double p, std::uint64_t seed = 0)
      : inner_(std::move(inner)), p_(p), mask_{} {
    require(p >= 0 && p < 1,
                    "intra_layer_mask: p must be in [0, 1), got " + std::to_string(p));
    mask_ = element_mask::with_fraction(seed, 1 - p);
  }

  double p() const { return p_; }
  const element_mask& mask() const { return mask_; }
  const Inner& inner() const { return inner_; }

  template <class Store>
  void select(std::uint64_t step, const Store& store, std::span<block_role> roles) const {
    inner_.select(step, store, roles);
    for (std::size_t i = 0; i < store.size(); ++i) {
      const auto b = store.block(i);
      if (roles[i] == block_role::first_order && b.rows() > 1 && b.cols() > 1) {
        roles[i] = block_role::mixed;
      }
    }
  }

 private:
  Inner inner_;
  double p_;
  element_mask mask_;
};

}  // namespace zo
