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

// The key of a pass's stochastic rounding words. Word w of Philox group g rounds element
// element_of(g, w), the element the same word of a direction's group gives, on every path.
template <class Pass>
ZO_HOST_DEVICE inline direction_key rounding_key(const Pass& p, std::uint32_t block) {
  return {p.seed, p.rounding_step, block, stream::rounding, p.rounding_sample, p.generator};
}
template <class Pass>
ZO_HOST_DEVICE inline bool rounds_stochastically(const Pass& p) {
  return is_16bit<typename Pass::value_type> && p.rounding == rounding::stochastic;
}

// to = from for one element. A 16-bit element is copied as its bits: GCC does not vectorise a
// loop of struct assignments.
template <class T>
ZO_HOST_DEVICE inline void copy_element(T& to, const T& from) {
  if constexpr (is_16bit<T>) {
    to.bits = from.bits;
  } else {
    to = from;
  }
}

// The end of a pass over 16-bit elements, from the base point's values in float: the base point
// is narrowed (as the pass's rounding says) and stored, and the next perturbation, if any,
// continues from the narrowed values and is rounded to nearest. A mixed block's first-order
// entries keep their source bits.
template <std::size_t Width, std::size_t Stride, class Pass, class Lanes, class AddTerm, class Mask,
          class RandomWord>
ZO_HOST_DEVICE inline void dense_pass_narrow(const Pass& p, std::size_t first, Lanes lanes,
                                             const AddTerm& add_term, const Mask& first_order,
                                             const RandomWord& random_word,
                                             typename Pass::real_type* value) {
  using T = typename Pass::value_type;
  const T* source = p.source + first;
  // One loop per case, each without a branch inside, so that they vectorise.
  T base[Width];
  if (rounds_stochastically(p)) {
    for (std::size_t k = 0; k < lanes; ++k)
      base[k] = round_stochastic<T>(value[k], random_word(k));
  } else {
    for (std::size_t k = 0; k < lanes; ++k)
      base[k] = round_nearest<T>(value[k]);
  }
  if (masked(p)) {
    for (std::size_t k = 0; k < lanes; ++k) {
      if (first_order(k)) copy_element(base[k], source[k * Stride]);
    }
  }
  if (p.base_to != nullptr) {
    T* base_to = p.base_to + first;
    for (std::size_t k = 0; k < lanes; ++k)
      copy_element(base_to[k * Stride], base[k]);
  }
  T* target = p.target + first;
  if (p.base_term_count() == p.terms.size()) {
    for (std::size_t k = 0; k < lanes; ++k)
      copy_element(target[k * Stride], base[k]);
    return;
  }
  for (std::size_t k = 0; k < lanes; ++k)
    value[k] = widen(base[k]);
  for (std::size_t t = p.base_term_count(); t < p.terms.size(); ++t)
    add_term(t, p.terms[t].alpha, value);
  for (std::size_t k = 0; k < lanes; ++k)
    target[k * Stride] = round_nearest<T>(value[k]);
  if (masked(p)) {
    for (std::size_t k = 0; k < lanes; ++k) {
      if (first_order(k)) copy_element(target[k * Stride], base[k]);
    }
  }
}

// Computes one pass over the elements first + k·Stride, k < lanes, of a block whose directions
// are added by add_term(t, alpha, value), value[k] += alpha·z_t[k] for the element first +
// k·Stride, k < Width (entries from lanes on are zero and may take anything). Shared by the
// one-group device path (Stride = batch_groups) and the host batches (Stride = 1), so both run the
// same arithmetic in the same order. A whole host batch without a mask is computed in the target
// itself, which saves copying it there. Over 16-bit elements random_word(k) is element k's
// stochastic rounding word, asked for only when the pass rounds stochastically.
template <std::size_t Width, std::size_t Stride, class Pass, class Lanes, class AddTerm, class Mask,
          class RandomWord>
ZO_HOST_DEVICE inline void dense_pass_span(const Pass& p, std::size_t first, Lanes lanes,
                                           const AddTerm& add_term, const Mask& first_order,
                                           const RandomWord& random_word) {
  using T = typename Pass::value_type;
  using R = typename Pass::real_type;
  constexpr bool whole = std::is_same_v<Lanes, std::integral_constant<std::size_t, Width>>;
  const T* source = p.source + first;
  // Before anything is written: the target may be the source.
  if (p.save_to != nullptr) {
    T* save_to = p.save_to + first;
    for (std::size_t k = 0; k < lanes; ++k)
      copy_element(save_to[k * Stride], source[k * Stride]);
  }
  R local[Width];
  R* value = local;
  if constexpr (Stride == 1 && whole && !is_16bit<T>) {
    if (!masked(p)) value = p.target + first;
  }
  const R scale = p.scale;
  for (std::size_t k = 0; k < lanes; ++k)
    value[k] = scale * widen(source[k * Stride]);
  for (std::size_t k = lanes; k < Width; ++k)
    value[k] = R(0);
  const std::size_t base_terms = p.base_term_count();
  for (std::size_t t = 0; t < base_terms; ++t)
    add_term(t, p.terms[t].alpha, value);
  if constexpr (pass_accepts_dense_addend<Pass>) {
    if (p.addend.values != nullptr) {
      const R* addend = p.addend.values + first;
      for (std::size_t k = 0; k < lanes; ++k)
        value[k] += p.addend.scale * addend[k * Stride];
    }
  }
  if constexpr (is_16bit<T>) {
    dense_pass_narrow<Width, Stride>(p, first, lanes, add_term, first_order, random_word, value);
  } else {
    (void)random_word;
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
}

// Stochastic rounding words for the paths of a pass: one group's four (the device path's lanes),
// or a host run's (run_batches batches, in element order). Empty, and never read, unless the pass
// rounds stochastically.
template <class Pass>
struct group_rounding_words {
  std::uint32_t words[group_width] = {};
  ZO_HOST_DEVICE group_rounding_words(const Pass& p, std::uint32_t block, std::uint64_t g) {
    if (rounds_stochastically(p)) {
      const auto w = philox_words(rounding_key(p, block), g);
      for (std::size_t k = 0; k < group_width; ++k)
        words[k] = w[k];
    }
  }
  ZO_HOST_DEVICE std::uint32_t operator()(std::size_t k) const { return words[k]; }
};
template <class Pass, std::size_t Batches>
struct run_rounding_words {
  static constexpr std::size_t groups = Batches * batch_groups;
  std::uint32_t in_element_order[Batches * batch_width];
  run_rounding_words(const Pass& p, std::uint32_t block, std::uint64_t first_group) {
    if (!rounds_stochastically(p)) return;
    std::uint32_t words[group_width][groups];
    philox_batch(rounding_key(p, block), first_group, words);
    // Element b·64 + w·16 + i of the run is word w of group 16·b + i (group_of).
    for (std::size_t b = 0; b < Batches; ++b) {
      for (std::size_t w = 0; w < group_width; ++w) {
        for (std::size_t i = 0; i < batch_groups; ++i)
          in_element_order[b * batch_width + w * batch_groups + i] = words[w][b * batch_groups + i];
      }
    }
  }
  // Host code only, as run_batch is; marked for the host-device span it is handed to.
  ZO_HOST_DEVICE std::uint32_t operator()(std::size_t k) const { return in_element_order[k]; }
};

// A pass over one block, indexed by Philox group (groups_for(size) of them). The values do not
// depend on which thread or in which order groups run. Devices call operator() per group: the
// four elements of its words, batch_groups apart.
template <class Distribution, class Pass>
struct dense_pass_kernel {
  using T = typename Pass::value_type;
  using R = typename Pass::real_type;
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
        [&](std::size_t t, R alpha, R* value) {
          add_scaled_direction<Distribution>(key(t), g, alpha, value);
        },
        [&](std::size_t k) { return first_order[k]; }, group_rounding_words<Pass>(p, block, g));
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
    const auto add_term = [&](std::size_t t, R alpha, R* value) {
      add_scaled_direction_run<run_batches, Distribution>(key(t), g, alpha, value);
    };
    const auto mask = [&](std::size_t k) { return first_order[k]; };
    const run_rounding_words<Pass, run_batches> words(p, block, g);
    // A whole run is the common case: its loops have constant trip counts, and it is computed in
    // the target (see dense_pass_span).
    if (size - first >= run_width) {
      dense_pass_span<run_width, 1>(p, first, std::integral_constant<std::size_t, run_width>{},
                                    add_term, mask, words);
    } else {
      dense_pass_span<run_width, 1>(p, first, size - first, add_term, mask, words);
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
  using pass_type = pass_with<T, with_dense_addend<compute_t<T>>, with_element_mask>;

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
