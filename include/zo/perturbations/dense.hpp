// SPDX-License-Identifier: Apache-2.0
// Dense perturbations: every element of a block gets its own i.i.d. direction entry, generated
// on the fly inside the pass and never stored (MeZO's seed trick, made keyed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "zo/config.hpp"
#include "zo/core/concepts.hpp"
#include "zo/core/pass.hpp"
#include "zo/random/keyed.hpp"

namespace zo {

namespace detail {

// Whether a pass leaves some entries alone (a mixed block's first-order entries).
template <class Pass>
ZO_HOST_DEVICE inline bool masked(const Pass& p) {
  if constexpr (pass_accepts_element_mask<Pass>) {
    return p.mask.active;
  } else {
    return false;
  }
}

// Computes one pass over the elements first + k·Stride, k < lanes, of a block whose directions
// are added by add_term(t, alpha, value), value[k] += alpha·z_t[k] for the element first +
// k·Stride, k < Width (entries from lanes on are zero and may take anything). Shared by the
// one-group device path (Stride = batch_groups) and the host batches (Stride = 1), so both run the
// same arithmetic in the same order. A whole host batch without a mask is computed in the target
// itself, which saves copying it there.
template <std::size_t Width, std::size_t Stride, class Pass, class Lanes, class AddTerm, class Mask>
ZO_HOST_DEVICE inline void dense_pass_span(const Pass& p, std::size_t first, Lanes lanes,
                                           const AddTerm& add_term, const Mask& first_order) {
  using T = typename Pass::value_type;
  constexpr bool whole = std::is_same_v<Lanes, std::integral_constant<std::size_t, Width>>;
  const T* source = p.source + first;
  // Before anything is written: the target may be the source.
  if (p.save_to != nullptr) {
    T* save_to = p.save_to + first;
    for (std::size_t k = 0; k < lanes; ++k)
      save_to[k * Stride] = source[k * Stride];
  }
  T local[Width];
  T* value = local;
  if constexpr (Stride == 1 && whole) {
    if (!masked(p)) value = p.target + first;
  }
  for (std::size_t k = 0; k < lanes; ++k)
    value[k] = p.scale * source[k * Stride];
  for (std::size_t k = lanes; k < Width; ++k)
    value[k] = T(0);
  const std::size_t base_terms = p.base_term_count();
  for (std::size_t t = 0; t < base_terms; ++t)
    add_term(t, p.terms[t].alpha, value);
  if constexpr (pass_accepts_dense_addend<Pass>) {
    if (p.addend.values != nullptr) {
      const T* addend = p.addend.values + first;
      for (std::size_t k = 0; k < lanes; ++k)
        value[k] += p.addend.scale * addend[k * Stride];
    }
  }
  if (p.base_to != nullptr) {
    T* base_to = p.base_to + first;
    if (masked(p)) {
      for (std::size_t k = 0; k < lanes; ++k)
        base_to[k * Stride] = first_order(k) ? source[k * Stride] : value[k];
    } else {
      for (std::size_t k = 0; k < lanes; ++k)
        base_to[k * Stride] = value[k];
    }
  }
  for (std::size_t t = base_terms; t < p.terms.size(); ++t)
    add_term(t, p.terms[t].alpha, value);
  if (value == local) {
    T* target = p.target + first;
    for (std::size_t k = 0; k < lanes; ++k)
      target[k * Stride] = masked(p) && first_order(k) ? source[k * Stride] : value[k];
  }
}

// A pass over one block, indexed by Philox group (groups_for(size) of them). The values do not
// depend on which thread or in which order groups run. Devices call operator() per group: the
// four elements of its words, batch_groups apart.
template <class Distribution, class Pass>
struct dense_pass_kernel {
  using T = typename Pass::value_type;
  Pass p;
  std::uint32_t block = 0;
  std::size_t size = 0;
  zo::stream stream = zo::stream::dense;

  ZO_HOST_DEVICE direction_key key(std::size_t t) const {
    return {p.seed, p.terms[t].step, block, stream, p.terms[t].sample, p.generator};
  }

  ZO_HOST_DEVICE void operator()(std::size_t g) const {
    const std::size_t first = element_of(g, 0);
    if (first >= size) return;
    // Words are batch_groups elements apart; those past the end of the block are skipped.
    const std::size_t lanes = words_inside(first, size);
    bool first_order[group_width] = {};
    if constexpr (pass_accepts_element_mask<Pass>) {
      if (p.mask.active) {
        for (std::size_t k = 0; k < lanes; ++k)
          first_order[k] = p.mask.is_first_order(block, first + k * batch_groups);
      }
    }
    dense_pass_span<group_width, batch_groups>(
        p, first, lanes,
        [&](std::size_t t, T alpha, T* value) {
          add_scaled_direction<Distribution>(key(t), g, alpha, value);
        },
        [&](std::size_t k) { return first_order[k]; });
  }

  // The CPU backend runs run_batches batches of batch_groups groups at a time, so that Philox and
  // Box-Muller vectorise over several registers (backends::cpu, run_share) and a distribution
  // that draws more than a batch from one Philox call (philox4x32-8's Rademacher signs) draws it
  // once.
  static constexpr std::size_t batch = run_batches * batch_groups;
  static constexpr std::size_t run_width = run_batches * batch_width;

  void run_batch(std::size_t g) const {
    const std::size_t first = element_of(g, 0);
    if (first >= size) return;
#if defined(__GNUC__)
    // Generating a batch takes long enough that the hardware prefetcher alone leaves the cores
    // waiting for memory at each batch; asking for the batch a few ahead overlaps the two.
    constexpr std::size_t ahead = 4 * run_width;
    if (first + ahead + run_width <= size) {
      const bool target_apart = p.target != p.source;
      const bool base_apart = p.base_to != nullptr && p.base_to != p.source;
      for (std::size_t k = 0; k < run_width; k += 64 / sizeof(T)) {
        __builtin_prefetch(p.source + first + ahead + k, 0);
        if (target_apart) __builtin_prefetch(p.target + first + ahead + k, 1);
        if (base_apart) __builtin_prefetch(p.base_to + first + ahead + k, 1);
      }
    }
#endif
    bool first_order[run_width] = {};
    if constexpr (pass_accepts_element_mask<Pass>) {
      if (p.mask.active) {
        for (std::size_t k = 0; k < run_width; k += group_width) {
          bool bits[group_width];
          p.mask.group(block, (first + k) / group_width, bits);
          for (std::size_t l = 0; l < group_width; ++l)
            first_order[k + l] = bits[l];
        }
      }
    }
    const auto add_term = [&](std::size_t t, T alpha, T* value) {
      add_scaled_direction_run<run_batches, Distribution>(key(t), g, alpha, value);
    };
    const auto mask = [&](std::size_t k) { return first_order[k]; };
    // A whole run is the common case: its loops have constant trip counts, and it is computed in
    // the target (see dense_pass_span).
    if (size - first >= run_width) {
      dense_pass_span<run_width, 1>(p, first, std::integral_constant<std::size_t, run_width>{},
                                    add_term, mask);
    } else {
      dense_pass_span<run_width, 1>(p, first, size - first, add_term, mask);
    }
  }
};

// Runs the pass over every element of the block with the distribution's directions.
template <class Distribution, class Backend, class Block, class Pass>
void apply_dense(const Backend& backend, const Block& block, const Pass& p, zo::stream stream) {
  const std::size_t n = block.size();
  backend.for_each_index(
      groups_for(n),
      dense_pass_kernel<Distribution, Pass>{p, static_cast<std::uint32_t>(block.id()), n, stream},
      group_width);
}

}  // namespace detail

template <class Distribution>
struct dense_perturbation {
  static_assert(check_direction_distribution<Distribution>());

  using distribution = Distribution;
  // A step rule may add a dense term of its own (LOZO-M's momentum on vector blocks), and
  // honouring the element mask lets it serve LoHO's intra-layer mode.
  template <class T>
  using pass_type = pass_with<T, with_dense_addend<T>, with_element_mask>;

  // Value of element `index` of the direction the given key names, for tests and for users who
  // need to inspect a direction without a pass.
  template <class T>
  static T element(const direction_key& key, std::uint64_t index) {
    return direction_element<Distribution, T>(key, index);
  }

  template <class Backend, class Block, class Pass, class Scratch>
  void apply(const Backend& backend, const Block& block, const Pass& p, Scratch&) const {
    detail::apply_dense<Distribution>(backend, block, p, stream::dense);
  }
};

// MeZO's N(0, 1) directions.
using gaussian_perturbation = dense_perturbation<gaussian_distribution>;
// SPSA's ±1 directions.
using rademacher_perturbation = dense_perturbation<rademacher_distribution>;

}  // namespace zo
