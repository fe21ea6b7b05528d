// SPDX-License-Identifier: Apache-2.0
// SubZero's directions (Yu et al., "SubZero: Random Subspace Zeroth-Order Optimization for
// Memory-Efficient LLM Fine-Tuning", 2024): a matrix block (m × n) moves along U·Z·Vᵀ, U (m × r)
// and V (n × r) with orthonormal columns (Gram-Schmidt of keyed Gaussians, which is QR) kept for
// ν steps, the r × r core Z Gaussian and fresh for every direction; vector blocks move along
// MeZO's dense direction. Every pass regenerates U and V from their window's key and
// orthonormalises them again (one serial kernel per factor, O((m + n)·r²)), so nothing is stored:
// extra state none, scratch (m + n)·r per direction, never m × n. The core is keyed by (step,
// sample) on the dense stream, unused on matrix blocks otherwise. As ‖U·Z·Vᵀ‖ = ‖Z‖, entries are
// far smaller than MeZO's; ε and the learning rate scale accordingly.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "zo/config.hpp"
#include "zo/core/pass.hpp"
#include "zo/perturbations/dense.hpp"
#include "zo/perturbations/low_rank.hpp"
#include "zo/random/keyed.hpp"

namespace zo {

namespace detail {

// Modified Gram-Schmidt on the `rank` columns of x, element (i, k) at
// x[i · row_stride + (offset + k) · col_stride]; one index does all, in a fixed order, so every
// thread count and backend gets the same bits.
template <class T>
struct orthonormalize_kernel {
  T* x;
  std::size_t rows, rank, row_stride, col_stride, offset;

  ZO_HOST_DEVICE T& at(std::size_t i, std::size_t k) const {
    return x[i * row_stride + (offset + k) * col_stride];
  }
  ZO_HOST_DEVICE void operator()(std::size_t) const {
    for (std::size_t k = 0; k < rank; ++k) {
      for (std::size_t j = 0; j < k; ++j) {
        double dot = 0;
        for (std::size_t i = 0; i < rows; ++i)
          dot += double(at(i, j)) * double(at(i, k));
        for (std::size_t i = 0; i < rows; ++i)
          at(i, k) = T(double(at(i, k)) - dot * double(at(i, j)));
      }
      double norm = 0;
      for (std::size_t i = 0; i < rows; ++i)
        norm += double(at(i, k)) * double(at(i, k));
      norm = std::sqrt(norm);
      for (std::size_t i = 0; i < rows; ++i)
        at(i, k) = T(double(at(i, k)) / norm);
    }
  }
};

// Row i of U·Z (U m × r, Z r × r, both row-major) into columns [column, column + r) of a.
template <class T>
struct times_core_kernel {
  const T* u;
  const T* core;
  std::size_t rank, a_stride, column;
  T* a;

  ZO_HOST_DEVICE void operator()(std::size_t i) const {
    for (std::size_t k = 0; k < rank; ++k) {
      T sum = 0;
      for (std::size_t l = 0; l < rank; ++l)
        sum += u[i * rank + l] * core[l * rank + k];
      a[i * a_stride + column + k] = sum;
    }
  }
};

}  // namespace detail

class subzero_perturbation {
 public:
  // rank r ≥ 1; interval ν ≥ 1 (steps U and V are kept for).
  explicit subzero_perturbation(std::size_t rank = 2, std::size_t interval = 50)
      : factors_(rank, interval) {}

  // A step rule may add a dense term (ZO-SignSGD, momentum on the dense estimate).
  template <class T>
  using pass_type = pass_with<T, with_dense_addend<compute_t<T>>>;

  std::size_t rank() const { return factors_.rank(); }
  std::size_t interval() const { return factors_.interval(); }
  template <class Block>
  void validate(const Block& block) const {
    factors_.validate(block);
  }

  template <class Backend, class Block, class Pass, class Scratch>
  void apply(const Backend& backend, const Block& block, const Pass& p, Scratch& scratch) const {
    using T = typename Pass::real_type;  // the factors are kept in the type passes compute in
    if (!low_rank_perturbation::is_matrix(block)) {
      detail::apply_dense<gaussian_distribution>(backend, block, p, stream::dense);
      return;
    }
    const std::size_t m = block.rows(), n = block.cols(), r = rank();
    const std::size_t total = r * p.terms.size();
    T* a = scratch.request((m + n) * total + (m + r) * r);
    T* bt = a + m * total;
    T* u = bt + n * total;
    T* core = u + m * r;
    const auto id = static_cast<std::uint32_t>(block.id());
    for (std::size_t t = 0; t < p.terms.size(); ++t) {
      const auto& term = p.terms[t];
      const std::uint32_t window = factors_.factor_step(term.step);
      factors_.fill_factor(backend, {p.seed, window, id, stream::low_rank_u, 0, p.generator}, T(1),
                           m, u, r, 1, 0);
      backend.for_each_index(1, detail::orthonormalize_kernel<T>{u, m, r, r, 1, 0}, m * r * r);
      factors_.fill_factor(backend, {p.seed, window, id, stream::low_rank_v, 0, p.generator}, T(1),
                           n, bt, 1, n, t * r);
      backend.for_each_index(1, detail::orthonormalize_kernel<T>{bt, n, r, 1, n, t * r}, n * r * r);
      factors_.fill_factor(backend,
                           {p.seed, term.step, id, stream::dense, term.sample, p.generator},
                           term.alpha, r, core, r, 1, 0);
      backend.for_each_index(m, detail::times_core_kernel<T>{u, core, r, total, t * r, a}, r * r);
    }
    backend.for_each_index(
        m, detail::low_rank_row_kernel<Pass>{p, a, bt, n, total, p.base_term_count() * r, id},
        n * (total + 1));
  }

 private:
  // LOZO's factor generator and ν-step windows, with U kept for the window too.
  low_rank_perturbation factors_;
};

}  // namespace zo
