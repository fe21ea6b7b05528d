// SPDX-License-Identifier: Apache-2.0
// Low-rank directions (LOZO, Chen et al. 2024): a matrix block W (m × n) moves along U·Vᵀ with
// U (m × r) redrawn every step and V (n × r) redrawn every ν steps; vector blocks (biases, norms)
// move along a dense Gaussian direction as in MeZO.
//
// U, V and dense z come from separate keyed streams, and V's key holds the first step of its
// ν-step window, so every pass of a step — perturbations and the update alike — regenerates
// exactly the direction that was measured. (The reference code drew U for the update from a
// different stream position on the steps where V was redrawn.)
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "zo/config.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/pass.hpp"
#include "zo/perturbations/dense.hpp"
#include "zo/random/keyed.hpp"

namespace zo {

namespace detail {

// Writes scale · (keyed factor element idx) for idx in [0, rows · rank) of a row-major
// rows × rank factor to out[(idx / rank) · row_stride + (offset + idx % rank) · col_stride], so
// the same generator fills a factor as it is (row_stride = rank, col_stride = 1), as columns of
// a wider matrix, or transposed.
template <class T>
struct factor_fill_kernel {
  direction_key key;
  T scale;
  std::size_t count, rank, row_stride, col_stride, offset;
  T* out;

  ZO_HOST_DEVICE void operator()(std::size_t g) const {
    T z[group_width];
    gaussian_distribution::group(key, g, z);
    for (std::size_t w = 0; w < group_width; ++w) {
      const std::size_t idx = element_of(g, w);
      if (idx >= count) break;
      out[(idx / rank) * row_stride + (offset + idx % rank) * col_stride] = scale * z[w];
    }
  }
};

// Copies scale · in (rows × rank, row-major) into the same strided layout.
template <class T>
struct factor_copy_kernel {
  const T* in;
  T scale;
  std::size_t rank, row_stride, col_stride, offset;
  T* out;

  ZO_HOST_DEVICE void operator()(std::size_t idx) const {
    out[(idx / rank) * row_stride + (offset + idx % rank) * col_stride] = scale * in[idx];
  }
};

// One row of target = scale · source + addend_scale · addend + A · Bᵀ, with A (m × R) row-major
// and B stored transposed (R × n) so the inner loop runs over contiguous memory. The first
// base_rank columns of A give the base point (pass::base_to); the rest are the next
// perturbation.
template <class Pass>
struct low_rank_row_kernel {
  using T = typename Pass::value_type;
  using R = typename Pass::real_type;
  Pass p;
  const R* a;
  const R* bt;
  std::size_t cols, total_rank, base_rank;
  std::uint32_t block = 0;  // the block's id, which keys stochastic rounding

  ZO_HOST_DEVICE void operator()(std::size_t row) const {
    if constexpr (is_16bit<T>) {
      narrow_row(row);
    } else {
      wide_row(row);
    }
  }

  // 16-bit elements: element by element in float, the base point narrowed as the pass says and
  // the next perturbation rounded to nearest from it (as dense_pass_narrow does).
  ZO_HOST_DEVICE void narrow_row(std::size_t row) const {
    const std::size_t base = row * cols;
    const bool stochastic = rounds_stochastically(p);
    const direction_key key = rounding_key(p, block);
    const std::size_t base_end = base_rank < total_rank ? base_rank : total_rank;
    for (std::size_t c = 0; c < cols; ++c) {
      const T source = p.source[base + c];
      if (p.save_to != nullptr) p.save_to[base + c] = source;
      R value = p.scale * widen(source);
      if constexpr (pass_accepts_dense_addend<Pass>) {
        if (p.addend.values != nullptr) value += p.addend.scale * p.addend.values[base + c];
      }
      for (std::size_t k = 0; k < base_end; ++k)
        value += a[row * total_rank + k] * bt[k * cols + c];
      const std::uint64_t e = base + c;
      const T rounded = stochastic
                            ? round_stochastic<T>(value, philox_words(key, group_of(e))[word_of(e)])
                            : round_nearest<T>(value);
      if (p.base_to != nullptr) p.base_to[base + c] = rounded;
      if (base_end == total_rank) {
        p.target[base + c] = rounded;
        continue;
      }
      R next = widen(rounded);
      for (std::size_t k = base_end; k < total_rank; ++k)
        next += a[row * total_rank + k] * bt[k * cols + c];
      p.target[base + c] = round_nearest<T>(next);
    }
  }

  ZO_HOST_DEVICE void wide_row(std::size_t row) const {
    const std::size_t base = row * cols;
    const T* source = p.source + base;
    T* target = p.target + base;
    if (p.save_to != nullptr) {
      for (std::size_t c = 0; c < cols; ++c)
        p.save_to[base + c] = source[c];
    }
    for (std::size_t c = 0; c < cols; ++c)
      target[c] = p.scale * source[c];
    if constexpr (pass_accepts_dense_addend<Pass>) {
      if (p.addend.values != nullptr) {
        for (std::size_t c = 0; c < cols; ++c) {
          target[c] += p.addend.scale * p.addend.values[base + c];
        }
      }
    }
    for (std::size_t k = 0; k < total_rank; ++k) {
      if (k == base_rank && p.base_to != nullptr) {
        for (std::size_t c = 0; c < cols; ++c)
          p.base_to[base + c] = target[c];
      }
      const T coefficient = a[row * total_rank + k];
      const T* b = bt + k * cols;
      for (std::size_t c = 0; c < cols; ++c)
        target[c] += coefficient * b[c];
    }
    if (base_rank >= total_rank && p.base_to != nullptr) {
      for (std::size_t c = 0; c < cols; ++c)
        p.base_to[base + c] = target[c];
    }
  }
};

}  // namespace detail

class low_rank_perturbation {
 public:
  // rank r ≥ 1; interval ν ≥ 1 (steps V is kept for); scale_by_sqrt_rank divides U·Vᵀ by √r so
  // its entries have unit variance (off by default, as in the reference).
  explicit low_rank_perturbation(std::size_t rank = 2, std::size_t interval = 50,
                                 bool scale_by_sqrt_rank = false)
      : rank_(rank), interval_(interval), scaled_(scale_by_sqrt_rank) {
    require(rank >= 1, "low_rank_perturbation: rank must be at least 1, got 0");
    require(interval >= 1, "low_rank_perturbation: interval must be at least 1, got 0");
  }

  // A step rule may add terms of its own: low-rank ones (LOZO-M's momentum N·Vᵀ) on matrix
  // blocks, dense ones on vector blocks.
  template <class T>
  using pass_type =
      pass_with<T, with_dense_addend<compute_t<T>>, with_low_rank_addend<compute_t<T>>>;

  std::size_t rank() const { return rank_; }
  std::size_t interval() const { return interval_; }
  bool scale_by_sqrt_rank() const { return scaled_; }

  // Matrix blocks get U·Vᵀ; anything with a single row or column gets a dense direction.
  template <class Block>
  static bool is_matrix(const Block& block) {
    return block.rows() > 1 && block.cols() > 1;
  }

  // Called by the optimizer for every block before a step changes anything.
  template <class Block>
  void validate(const Block& block) const {
    if (!is_matrix(block)) return;
    const std::size_t limit = block.rows() < block.cols() ? block.rows() : block.cols();
    require(rank_ <= limit, [&] {
      return "low_rank_perturbation: rank " + std::to_string(rank_) +
             " exceeds min(rows, cols) = " + std::to_string(limit) + " of block '" +
             std::string(block.name()) + "'";
    });
  }

  // The step whose key V uses at `step`: the first step of its ν-step window.
  std::uint32_t factor_step(std::uint32_t step) const {
    return step - static_cast<std::uint32_t>(step % interval_);
  }
  // U is scaled by this, so that U·Vᵀ is the direction.
  double u_scale() const { return scaled_ ? 1.0 / std::sqrt(static_cast<double>(rank_)) : 1.0; }

  direction_key u_key(std::uint64_t seed, zo::generator generator, std::uint32_t step,
                      std::uint32_t block, std::uint8_t sample) const {
    return {seed, step, block, stream::low_rank_u, sample, generator};
  }
  // V is shared by the q directions of a step, so momentum can live in one factor space.
  direction_key v_key(std::uint64_t seed, zo::generator generator, std::uint32_t step,
                      std::uint32_t block) const {
    return {seed, factor_step(step), block, stream::low_rank_v, 0, generator};
  }

  // Writes scale · factor (rows × rank, keyed by `key`) into out with the given layout (see
  // detail::factor_fill_kernel).
  template <class Backend, class T>
  void fill_factor(const Backend& backend, const direction_key& key, T scale, std::size_t rows,
                   T* out, std::size_t row_stride, std::size_t col_stride,
                   std::size_t offset) const {
    const std::size_t count = rows * rank_;
    backend.for_each_index(groups_for(count),
                           detail::factor_fill_kernel<T>{key, scale, count, rank_, row_stride,
                                                         col_stride, offset, out},
                           group_width);
  }

  template <class Backend, class Block, class Pass, class Scratch>
  void apply(const Backend& backend, const Block& block, const Pass& p, Scratch& scratch) const {
    using T = typename Pass::real_type;  // the factors are kept in the type passes compute in
    low_rank_addend<T> explicit_factors;
    if constexpr (pass_accepts_low_rank_addend<Pass>) explicit_factors = p.low_rank;
    if (!is_matrix(block)) {
      require(explicit_factors.left == nullptr, [&] {
        return "low-rank terms given for vector block '" + std::string(block.name()) + "'";
      });
      detail::apply_dense<gaussian_distribution>(backend, block, p, stream::dense);
      return;
    }
    const std::size_t m = block.rows(), n = block.cols();
    const std::size_t base_terms = p.base_term_count();
    const std::size_t extra_rank = explicit_factors.left != nullptr ? explicit_factors.rank : 0;
    const std::size_t total = rank_ * p.terms.size() + extra_rank;
    // O(r·(m + n)) scratch per direction: the factors, never their m × n product. Columns: the
    // base point's keyed directions, the step rule's explicit factors, then the next
    // perturbation's directions.
    T* a = scratch.request((m + n) * total);
    T* bt = a + m * total;
    const auto id = static_cast<std::uint32_t>(block.id());
    for (std::size_t t = 0; t < p.terms.size(); ++t) {
      const auto& term = p.terms[t];
      const T alpha = term.alpha * static_cast<T>(u_scale());
      const std::size_t column = t * rank_ + (t < base_terms ? 0 : extra_rank);
      fill_factor(backend, u_key(p.seed, p.generator, term.step, id, term.sample), alpha, m, a,
                  total, 1, column);
      fill_factor(backend, v_key(p.seed, p.generator, term.step, id), T(1), n, bt, 1, n, column);
    }
    if (extra_rank > 0) {
      const std::size_t column = base_terms * rank_;
      backend.for_each_index(m * extra_rank, detail::factor_copy_kernel<T>{
                                                 explicit_factors.left, explicit_factors.scale,
                                                 extra_rank, total, 1, column, a});
      backend.for_each_index(
          n * extra_rank, detail::factor_copy_kernel<T>{explicit_factors.right, T(1), extra_rank, 1,
                                                        n, column, bt});
    }
    backend.for_each_index(
        m,
        detail::low_rank_row_kernel<Pass>{p, a, bt, n, total, base_terms * rank_ + extra_rank, id},
        n * (total + 1));
  }

 private:
  std::size_t rank_;
  std::size_t interval_;
  bool scaled_;
};

}  // namespace zo
