// SPDX-License-Identifier: Apache-2.0
// One sweep over a block: target = scale · source + Σ_j alpha_j · direction_j, optionally saving
// source to a snapshot on the way. Every pass of every optimizer (perturb, restore, update, and
// the fused update-plus-next-perturbation) is one of these, so a perturbation policy implements
// a single kernel and the step engine decides only which terms go into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "zo/config.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/float16.hpp"
#include "zo/random/keyed.hpp"

namespace zo {

// One keyed direction of a pass. The block id and the stream come from the block and the
// policy, the seed from the pass, so a term names only what varies inside a run.
template <class T>
struct direction_term {
  std::uint32_t step = 0;
  std::uint8_t sample = 0;
  T alpha = 0;
};

// A fixed-capacity, trivially copyable list, so a pass can be captured by value in a device
// functor. Longer lists are split over several passes by the caller.
inline constexpr std::size_t max_terms_per_pass = 8;

template <class T>
struct term_list {
  direction_term<T> items[max_terms_per_pass] = {};
  std::size_t count = 0;

  ZO_HOST_DEVICE std::size_t size() const { return count; }
  void clear() { count = 0; }
  ZO_HOST_DEVICE bool full() const { return count == max_terms_per_pass; }
  ZO_HOST_DEVICE const direction_term<T>& operator[](std::size_t i) const { return items[i]; }

  // Adds alpha to the term with the same (step, sample), or appends a new term.
  void add(std::uint32_t step, std::uint8_t sample, T alpha) {
    for (std::size_t i = 0; i < count; ++i) {
      if (items[i].step == step && items[i].sample == sample) {
        items[i].alpha += alpha;
        return;
      }
    }
    require(count < max_terms_per_pass, [] {
      return "at most " + std::to_string(max_terms_per_pass) + " directions can be applied at once";
    });
    items[count++] = direction_term<T>{step, sample, alpha};
  }
};

// Which entries of a mixed block are first-order: entry i of block b is, when a keyed uniform
// number (stream `mask`, step 0, so fixed for the run) falls below the first-order fraction.
// Zeroth-order passes leave those entries as they are. The mask is fixed by its seed alone: it
// keeps the first generator whatever generator a run's directions use.
struct element_mask {
  std::uint64_t seed = 0;
  std::uint64_t threshold = 0;  // first-order fraction · 2^32
  bool active = false;

  static element_mask with_fraction(std::uint64_t seed, double first_order_fraction) {
    return {seed, static_cast<std::uint64_t>(first_order_fraction * 4294967296.0), true};
  }

  // The four mask bits of a group of entries, from one Philox call.
  ZO_HOST_DEVICE void group(std::uint32_t block, std::uint64_t g, bool (&first_order)[4]) const {
    const auto w =
        philox_words(direction_key{seed, 0, block, stream::mask, 0, generator::philox4x32_10}, g);
    for (std::size_t l = 0; l < 4; ++l)
      first_order[l] = active && w[l] < threshold;
  }
  ZO_HOST_DEVICE bool is_first_order(std::uint32_t block, std::uint64_t index) const {
    bool bits[4];
    group(block, index / 4, bits);
    return bits[index % 4];
  }
};

// The fused step (docs/mezo.md, "Fused steps") ends one step and begins the next in the same
// pass: the first base_terms keyed terms and scale (and any contribution below) give the new
// base point, which goes to base_to when set (the exact-restore snapshot); the remaining terms,
// the next step's first perturbation, are added on top of it and only reach target.
//
// This is what every kernel honours. What only some methods need is an opt-in contribution
// below, which a perturbation policy accepts by naming a pass type that carries it.
//
// T is the element type the block stores; a pass computes in real_type (compute_t<T>: float for
// the 16-bit types). Over 16-bit elements the base point is narrowed once, as `rounding` says, and
// the next perturbation continues from the narrowed value, so that a fused step stores what the
// update pass and the perturbation pass store one after the other.
template <class T>
struct pass {
  using value_type = T;
  using real_type = compute_t<T>;
  const T* source = nullptr;       // read from: the block itself or its snapshot
  T* target = nullptr;             // written to: the block
  T* save_to = nullptr;            // when set, receives source before anything changes
  T* base_to = nullptr;            // when set, receives the base point (see above)
  real_type scale = real_type(1);  // multiplies source (weight decay folds in here)
  std::uint64_t seed = 0;
  zo::generator generator = default_generator;  // the run's: every key of the pass uses it
  term_list<real_type> terms;
  std::size_t base_terms = max_terms_per_pass;  // terms beyond it are the next perturbation
  // 16-bit elements only: how the base point is narrowed, and for stochastic rounding the key's
  // step and sample (the engine numbers the passes of one update), stream `rounding`.
  zo::rounding rounding = zo::rounding::nearest;
  std::uint32_t rounding_step = 0;
  std::uint8_t rounding_sample = 0;

  ZO_HOST_DEVICE std::size_t base_term_count() const {
    return base_terms < terms.size() ? base_terms : terms.size();
  }
};

// Opt-in contributions. A step rule that computes part of its update itself (LOZO-M's momentum)
// adds it to the base point: target += scale · values (dense), or target += scale · left · rightᵀ
// (left: rows × rank, right: cols × rank, row-major).
template <class T>
struct dense_addend {
  const T* values = nullptr;
  T scale = 0;
};
template <class T>
struct low_rank_addend {
  const T* left = nullptr;
  const T* right = nullptr;
  std::size_t rank = 0;
  T scale = 0;
};
template <class T>
struct with_dense_addend {
  dense_addend<T> addend;
};
template <class T>
struct with_low_rank_addend {
  low_rank_addend<T> low_rank;
};
// LoHO's intra-layer mode: the first-order entries of a mixed block are left as they are.
struct with_element_mask {
  element_mask mask;
};

// A pass carrying some of the contributions above, e.g.
// pass_with<T, with_dense_addend<T>, with_element_mask>.
template <class T, class... Contributions>
struct pass_with : pass<T>, Contributions... {};

template <class Pass>
concept pass_accepts_dense_addend = requires(const Pass& p) {
  p.addend;
};
template <class Pass>
concept pass_accepts_low_rank_addend = requires(const Pass& p) {
  p.low_rank;
};
template <class Pass>
concept pass_accepts_element_mask = requires(const Pass& p) {
  p.mask;
};

// The pass a perturbation policy takes: the one it names (P::pass_type<T>), or the plain pass.
template <class P, class T>
struct pass_type_of {
  using type = pass<T>;
};
template <class P, class T>
requires requires {
  typename P::template pass_type<T>;
}
struct pass_type_of<P, T> {
  using type = typename P::template pass_type<T>;
};
template <class P, class T>
using pass_type_t = typename pass_type_of<P, T>::type;

// Scratch memory a perturbation policy may ask for during a pass (low-rank factors). One buffer
// that only grows, so a run allocates only while the largest request is still growing; peak()
// is what a policy asked for at most, which is how tests check that no m × n temporary appears.
template <class Backend, class T>
class scratch_arena {
 public:
  T* request(std::size_t count) {
    if (count > peak_) peak_ = count;
    if (buffer_.size() < count) buffer_.resize(count);
    return Backend::data(buffer_);
  }
  std::size_t peak() const { return peak_; }

 private:
  typename Backend::template buffer<T> buffer_;
  std::size_t peak_ = 0;
};

}  // namespace zo
