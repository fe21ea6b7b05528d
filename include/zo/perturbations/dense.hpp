// Dense perturbations: every element of a block gets its own i.i.d. direction entry, generated
// on the fly inside the pass and never stored (MeZO's seed trick, made keyed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "zo/config.hpp"
#include "zo/perturbations/pass.hpp"
#include "zo/random/keyed.hpp"

namespace zo {

namespace detail {

// Computes one pass over the elements [first, first + lanes) of a block whose directions are
// given by generate(term, z) (z[i] belongs to element first + i). Shared by the one-group device
// path and the vectorised host batches, so both run the same arithmetic in the same order.
template <std::size_t Width, class T, class Generate, class Mask>
ZO_HOST_DEVICE inline void dense_pass_span(const pass<T>& p, std::size_t first, std::size_t lanes,
                                           const Generate& generate, const Mask& first_order) {
  T value[Width];
  T z[Width];
  for (std::size_t l = 0; l < lanes; ++l)
    value[l] = p.scale * p.source[first + l];
  const std::size_t base_terms = p.base_term_count();
  for (std::size_t t = 0; t < base_terms; ++t) {
    generate(t, z);
    for (std::size_t l = 0; l < lanes; ++l)
      value[l] += p.terms[t].alpha * z[l];
  }
  if (p.extra.addend != nullptr) {
    for (std::size_t l = 0; l < lanes; ++l)
      value[l] += p.extra.addend_scale * p.extra.addend[first + l];
  }
  if (p.base_to != nullptr) {
    if (p.mask.active) {
      for (std::size_t l = 0; l < lanes; ++l)
        p.base_to[first + l] = first_order(l) ? p.source[first + l] : value[l];
    } else {
      for (std::size_t l = 0; l < lanes; ++l)
        p.base_to[first + l] = value[l];
    }
  }
  for (std::size_t t = base_terms; t < p.terms.size(); ++t) {
    generate(t, z);
    for (std::size_t l = 0; l < lanes; ++l)
      value[l] += p.terms[t].alpha * z[l];
  }
  if (p.mask.active) {
    for (std::size_t l = 0; l < lanes; ++l) {
      if (first_order(l)) value[l] = p.source[first + l];
    }
  }
  if (p.save_to != nullptr) {
    for (std::size_t l = 0; l < lanes; ++l)
      p.save_to[first + l] = p.source[first + l];
  }
  for (std::size_t l = 0; l < lanes; ++l)
    p.target[first + l] = value[l];
}

// A pass over one block. The group index is also the Philox counter, so the values do not depend
// on which thread or in which order groups run. Devices call operator() per group of
// group_width elements; the CPU backend calls for_range on each thread's share, which generates
// batch_groups groups at a time so that Philox and Box-Muller vectorise.
template <class Distribution, class T>
struct dense_pass_kernel {
  pass<T> p;
  std::uint32_t block = 0;
  std::size_t size = 0;
  zo::stream stream = zo::stream::dense;

  ZO_HOST_DEVICE direction_key key(std::size_t t) const {
    return {p.seed, p.terms[t].step, block, stream, p.terms[t].sample};
  }

  ZO_HOST_DEVICE void operator()(std::size_t g) const {
    const std::size_t first = g * group_width;
    const std::size_t lanes = size - first < group_width ? size - first : group_width;
    bool first_order[group_width] = {};
    if (p.mask.active) p.mask.group(block, g, first_order);
    dense_pass_span<group_width>(
        p, first, lanes,
        [&](std::size_t t, T(&z)[group_width]) { Distribution::group(key(t), g, z); },
        [&](std::size_t l) { return first_order[l]; });
  }

  void for_range(std::size_t first_group, std::size_t last_group) const {
    for (std::size_t g = first_group; g < last_group; g += batch_groups) {
      const std::size_t first = g * group_width;
      const std::size_t end = last_group * group_width < size ? last_group * group_width : size;
      const std::size_t lanes = end - first < batch_width ? end - first : batch_width;
      bool first_order[batch_width] = {};
      if (p.mask.active) {
        for (std::size_t k = 0; k < batch_groups; ++k) {
          bool bits[group_width];
          p.mask.group(block, g + k, bits);
          for (std::size_t l = 0; l < group_width; ++l)
            first_order[k * group_width + l] = bits[l];
        }
      }
      dense_pass_span<batch_width>(
          p, first, lanes,
          [&](std::size_t t, T(&z)[batch_width]) { Distribution::batch(key(t), g, z); },
          [&](std::size_t l) { return first_order[l]; });
    }
  }
};

// Runs the pass over every element of the block with the distribution's directions.
template <class Distribution, class Backend, class Block, class T>
void apply_dense(const Backend&, const Block& block, const pass<T>& p, zo::stream stream) {
  const std::size_t n = block.size();
  const std::size_t groups = (n + group_width - 1) / group_width;
  Backend::for_each_index(
      groups,
      dense_pass_kernel<Distribution, T>{p, static_cast<std::uint32_t>(block.id()), n, stream},
      group_width);
}

}  // namespace detail

template <class Distribution>
struct dense_perturbation {
  using distribution = Distribution;
  // Honours pass::mask, so it can serve LoHO's intra-layer mode.
  static constexpr bool supports_element_masks = true;

  // Value of element `index` of the direction the given key names, for tests and for users who
  // need to inspect a direction without a pass.
  template <class T>
  static T element(const direction_key& key, std::uint64_t index) {
    return direction_element<Distribution, T>(key, index);
  }

  template <class Backend, class Block, class T, class Scratch>
  void apply(const Backend& backend, const Block& block, const pass<T>& p, Scratch&) const {
    detail::require(p.extra.left == nullptr,
                    "dense_perturbation cannot apply low-rank terms (block '" +
                        std::string(block.name()) + "'); use low_rank_perturbation");
    detail::apply_dense<Distribution>(backend, block, p, stream::dense);
  }
};

// MeZO's N(0, 1) directions.
using gaussian_perturbation = dense_perturbation<gaussian_distribution>;
// SPSA's ±1 directions.
using rademacher_perturbation = dense_perturbation<rademacher_distribution>;

}  // namespace zo
