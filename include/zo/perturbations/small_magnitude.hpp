// SPDX-License-Identifier: Apache-2.0
// Sparse-MeZO's directions (Liu et al., "Sparse MeZO: Less Parameters for Better Performance in
// Zeroth-Order LLM Fine-Tuning", 2024): MeZO's Gaussian direction on the entries whose magnitude
// is below their block's threshold h, nothing on the others, which keep their value bit for bit
// (no direction, no weight decay, no dense term). The mask is decided element by element inside
// the pass, from the base point, and never stored; the thresholds are one number per block.
//
// The base point reaches a pass only as its source in restore_mode::exact, in the passes that
// read the snapshot (or write it, on a step's first pass). A pass whose source may have moved
// (arithmetic restore, the later passes of an update with more than 8 terms, a fused step's next
// perturbation, a rule's dense estimate) is refused with zo::invalid_argument rather than masked
// from a moved point, where an entry near h could be perturbed in one pass and not undone in the
// next. Extra state: none per parameter.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "zo/config.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/pass.hpp"
#include "zo/perturbations/dense.hpp"
#include "zo/random/keyed.hpp"

namespace zo {

namespace detail {

// dense_pass_kernel's per-group path, its mask being |source| ≥ threshold.
template <class Pass>
struct small_magnitude_kernel {
  using T = typename Pass::real_type;
  Pass p;  // with its element mask active, so that dense_pass_span asks which entries to keep
  std::uint32_t block;
  std::size_t size;
  T threshold;

  ZO_HOST_DEVICE void operator()(std::size_t g) const {
    const std::size_t first = element_of(g, 0);
    if (first >= size) return;
    const std::size_t lanes = words_inside(first, size);
    dense_pass_span<group_width, batch_groups>(
        p, first, lanes,
        [&](std::size_t t, T alpha, T* value) {
          add_scaled_direction<gaussian_distribution>(
              {p.seed, p.terms[t].step, block, stream::dense, p.terms[t].sample, p.generator}, g,
              alpha, value);
        },
        [&](std::size_t k) {
          const T value = widen(p.source[first + k * batch_groups]);
          return !(value < threshold && -value < threshold);
        },
        group_rounding_words<Pass>(p, block, g));
  }
};

}  // namespace detail

class small_magnitude_perturbation {
 public:
  // thresholds[id]: block id's h (see small_magnitude_thresholds).
  explicit small_magnitude_perturbation(std::vector<double> thresholds)
      : thresholds_(std::make_shared<const std::vector<double>>(std::move(thresholds))) {}

  template <class T>
  using pass_type = pass_with<T, with_dense_addend<compute_t<T>>>;

  double threshold(std::size_t block_id) const { return thresholds_->at(block_id); }

  template <class Block>
  void validate(const Block& block) const {
    require(block.id() < thresholds_->size(), [&] {
      return "small_magnitude_perturbation: no threshold for block '" + std::string(block.name()) +
             "' (id " + std::to_string(block.id()) + ")";
    });
  }

  template <class Backend, class Block, class Pass, class Scratch>
  void apply(const Backend& backend, const Block& block, const Pass& p, Scratch&) const {
    using T = typename Pass::value_type;
    using R = typename Pass::real_type;
    const bool source_is_base = p.save_to != nullptr || (p.source != p.target && p.scale != R(0) &&
                                                         p.base_term_count() == p.terms.size());
    require(source_is_base, [&] {
      return "small_magnitude_perturbation: a pass over block '" + std::string(block.name()) +
             "' does not read the base point, which the mask needs: use restore_mode::exact, "
             "unfused steps, at most 8 directions and a step rule without dense estimates";
    });
    pass_with<T, with_dense_addend<R>, with_element_mask> masked;
    static_cast<pass<T>&>(masked) = p;
    static_cast<with_dense_addend<R>&>(masked) = p;
    masked.mask.active = true;
    const std::size_t n = block.size();
    backend.for_each_index(groups_for(n),
                           detail::small_magnitude_kernel<decltype(masked)>{
                               masked, static_cast<std::uint32_t>(block.id()), n,
                               static_cast<R>(threshold(block.id()))},
                           group_width);
  }

 private:
  std::shared_ptr<const std::vector<double>> thresholds_;  // shared by copies, never changed
};

// Per block (indexed by id), the magnitude below which `fraction` of its entries lie: the
// thresholds of a small_magnitude_perturbation perturbing that fraction of each block. Reads the
// values on the host (CPU stores).
template <class Store>
std::vector<double> small_magnitude_thresholds(const Store& store, double fraction) {
  require(
      fraction > 0 && fraction <= 1,
      "small_magnitude_thresholds: fraction must be in (0, 1], got " + std::to_string(fraction));
  std::size_t ids = 0;
  for (std::size_t i = 0; i < store.size(); ++i)
    ids = std::max<std::size_t>(ids, store.block(i).id() + 1);
  std::vector<double> thresholds(ids, std::numeric_limits<double>::infinity());
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto block = store.block(i);
    std::vector<double> magnitudes(block.size());
    for (std::size_t e = 0; e < block.size(); ++e)
      magnitudes[e] = std::abs(static_cast<double>(widen(block.data()[e])));
    const auto k = static_cast<std::size_t>(fraction * static_cast<double>(block.size()));
    if (k < magnitudes.size()) {
      std::nth_element(magnitudes.begin(), magnitudes.begin() + k, magnitudes.end());
      thresholds[block.id()] = magnitudes[k];
    }
  }
  return thresholds;
}

}  // namespace zo
