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

// Handles one group of group_width elements; the group index is also the Philox counter, so
// the values do not depend on which thread or in which order groups run.
template <class Distribution, class T>
struct dense_pass_kernel {
  pass<T> p;
  std::uint32_t block = 0;
  std::size_t size = 0;
  zo::stream stream = zo::stream::dense;

  ZO_HOST_DEVICE void operator()(std::size_t g) const {
    const std::size_t first = g * group_width;
    const std::size_t lanes = size - first < group_width ? size - first : group_width;
    T value[group_width];
    for (std::size_t l = 0; l < lanes; ++l)
      value[l] = p.scale * p.source[first + l];
    for (std::size_t t = 0; t < p.terms.size(); ++t) {
      const direction_key key{p.seed, p.terms[t].step, block, stream, p.terms[t].sample};
      T z[group_width];
      Distribution::group(key, g, z);
      for (std::size_t l = 0; l < lanes; ++l)
        value[l] += p.terms[t].alpha * z[l];
    }
    if (p.extra.addend != nullptr) {
      for (std::size_t l = 0; l < lanes; ++l)
        value[l] += p.extra.addend_scale * p.extra.addend[first + l];
    }
    if (p.mask.active) {
      bool first_order[group_width];
      p.mask.group(block, g, first_order);
      for (std::size_t l = 0; l < lanes; ++l) {
        if (first_order[l]) value[l] = p.source[first + l];
      }
    }
    if (p.save_to != nullptr) {
      for (std::size_t l = 0; l < lanes; ++l)
        p.save_to[first + l] = p.source[first + l];
    }
    for (std::size_t l = 0; l < lanes; ++l)
      p.target[first + l] = value[l];
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
