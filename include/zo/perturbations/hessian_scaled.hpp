// SPDX-License-Identifier: Apache-2.0
// HiZOO's directions (Zhao et al., "Second-Order Fine-Tuning without Pain for LLMs: A Hessian
// Informed Zeroth-Order Optimizer", ICLR 2025): MeZO's Gaussian z scaled element by element by
// Σ^{1/2}, where Σ = diag(h)⁻¹ and h is the running estimate of the Hessian's diagonal that
// zo::hizoo_sgd keeps (zo/step_rules/hizoo.hpp). Flat coordinates are perturbed and moved further,
// steep ones less.
//
// The perturbation reads h, the rule writes it: both hold the same zo::hessian_diagonal (copies
// share it too). A block the rule has not updated yet has h = 1, Σ = I, and is perturbed with
// MeZO's dense pass. Since h changes at every update, a step's perturbation cannot be undone by
// subtracting it afterwards: the perturbation needs restore_mode::exact (the optimizer refuses
// arithmetic restore). Extra state: one element per parameter (h), on the store's backend.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "zo/config.hpp"
#include "zo/core/block_state.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/pass.hpp"
#include "zo/perturbations/dense.hpp"
#include "zo/random/keyed.hpp"

namespace zo {

// h, one block's estimate of the Hessian's diagonal (empty until the rule's first update).
template <class Backend, class T>
struct hessian_diagonal_record {
  typename Backend::template buffer<T> h;
  void encode(auto& out) const { out.buffers(h); }
  void decode(auto& in) { in.buffers(h); }
};
using hessian_diagonal = state_io::block_state<hessian_diagonal_record>;

namespace detail {

// dense_pass_kernel with each direction entry z scaled by h^{-1/2}: per group on devices, and a
// run of batches at a time on the CPU, with the same values.
template <class Pass>
struct hessian_scaled_kernel {
  using T = typename Pass::real_type;
  Pass p;
  const T* h;
  std::uint32_t block;
  std::size_t size;

  ZO_HOST_DEVICE direction_key key(std::size_t t) const {
    return {p.seed, p.terms[t].step, block, stream::dense, p.terms[t].sample, p.generator};
  }

  // Width entries of Σ^{1/2}, Stride apart from element first; zero past the block's end.
  // sqrtf and ::sqrt are what both host and device code have.
  template <std::size_t Width, std::size_t Stride>
  ZO_HOST_DEVICE void root_sigma(std::size_t first, std::size_t lanes, T (&out)[Width]) const {
    for (std::size_t k = 0; k < Width; ++k) {
      if (k >= lanes) {
        out[k] = T(0);
      } else if constexpr (std::is_same_v<T, float>) {
        out[k] = 1.0f / sqrtf(h[first + k * Stride]);
      } else {
        out[k] = T(1) / ::sqrt(h[first + k * Stride]);
      }
    }
  }

  ZO_HOST_DEVICE void operator()(std::size_t g) const {
    const std::size_t first = element_of(g, 0);
    if (first >= size) return;
    const std::size_t lanes = words_inside(first, size);
    T scale[group_width];
    root_sigma<group_width, batch_groups>(first, lanes, scale);
    dense_pass_span<group_width, batch_groups>(
        p, first, lanes,
        [&](std::size_t t, T alpha, T* value) {
          T z[group_width];
          gaussian_distribution::group(key(t), g, z);
          for (std::size_t k = 0; k < group_width; ++k)
            value[k] += alpha * (scale[k] * z[k]);
        },
        [](std::size_t) { return false; }, group_rounding_words<Pass>(p, block, g));
  }

  static constexpr std::size_t batch = run_batches * batch_groups;
  static constexpr std::size_t run_width = run_batches * batch_width;

  void run_batch(std::size_t g) const {
    const std::size_t first = element_of(g, 0);
    if (first >= size) return;
    const std::size_t lanes = size - first < run_width ? size - first : run_width;
    T scale[run_width];
    if constexpr (std::is_same_v<T, float>) {
      // A loop of sqrtf does not vectorise (errno); sqrt_in_place does, correctly rounded.
      for (std::size_t k = 0; k < run_width; ++k)
        scale[k] = k < lanes ? h[first + k] : 1.0f;
      sqrt_in_place(scale);
      for (std::size_t k = 0; k < run_width; ++k)
        scale[k] = k < lanes ? 1.0f / scale[k] : 0.0f;
    } else {
      root_sigma<run_width, 1>(first, lanes, scale);
    }
    dense_pass_span<run_width, 1>(
        p, first, lanes,
        [&](std::size_t t, T alpha, T* value) {
          T z[run_width] = {};
          add_scaled_direction_run<run_batches, gaussian_distribution>(key(t), g, T(1), z);
          for (std::size_t k = 0; k < run_width; ++k)
            value[k] += alpha * (scale[k] * z[k]);
        },
        [](std::size_t) { return false; }, run_rounding_words<Pass, run_batches>(p, block, g));
  }
};

}  // namespace detail

class hessian_scaled_perturbation {
 public:
  static constexpr bool needs_exact_restore = true;

  explicit hessian_scaled_perturbation(std::shared_ptr<hessian_diagonal> diagonal)
      : diagonal_(std::move(diagonal)) {
    require(diagonal_ != nullptr, "hessian_scaled_perturbation: no Hessian diagonal given");
  }

  const std::shared_ptr<hessian_diagonal>& diagonal() const { return diagonal_; }

  template <class Backend, class Block, class Pass, class Scratch>
  void apply(const Backend& backend, const Block& block, const Pass& p, Scratch&) const {
    using T = typename Pass::real_type;  // h is kept in the type passes compute in
    const auto& record = diagonal_->template at<Backend, T>(block.id());
    const std::size_t n = block.size();
    if (record.h.size() == 0) {
      detail::apply_dense<gaussian_distribution>(backend, block, p, stream::dense);
      return;
    }
    require(record.h.size() == n, [&] {
      return "hessian_scaled_perturbation: the Hessian diagonal of block '" +
             std::string(block.name()) + "' holds " + std::to_string(record.h.size()) +
             " values for " + std::to_string(n);
    });
    backend.for_each_index(
        groups_for(n),
        detail::hessian_scaled_kernel<Pass>{p, Backend::data(record.h),
                                            static_cast<std::uint32_t>(block.id()), n},
        group_width);
  }

 private:
  std::shared_ptr<hessian_diagonal> diagonal_;
};

}  // namespace zo
