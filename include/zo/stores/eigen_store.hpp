// SPDX-License-Identifier: Apache-2.0
// An owning store whose blocks are row-major Eigen matrices.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "zo/backends/cpu.hpp"
#include "zo/core/errors.hpp"
#include "zo/stores/block.hpp"
#include "zo/stores/block_table.hpp"

namespace zo {

template <class T>
class eigen_store : public detail::table_store {
 public:
  using value_type = T;
  using backend_type = backends::cpu;
  using block_type = block_view<T>;
  using matrix_type = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  // The CPU backend every pass over these blocks runs on (its thread count).
  explicit eigen_store(backends::cpu backend = {}) : backend_(backend) {}
  const backends::cpu& backend() const { return backend_; }

  // Adds a block holding a copy of `value`; its shape is the matrix's shape.
  std::size_t add(std::string name, matrix_type value, block_options options = {}) {
    const auto& info = table_.add(std::move(name), static_cast<std::size_t>(value.rows()),
                                  static_cast<std::size_t>(value.cols()),
                                  static_cast<std::size_t>(value.size()), options);
    // Held through unique_ptr so a block's address survives later additions.
    matrices_.push_back(std::make_unique<matrix_type>(std::move(value)));
    return info.id;
  }

  // Adds a zero-initialised rows × cols block.
  std::size_t add(std::string name, std::size_t rows, std::size_t cols,
                  block_options options = {}) {
    require(rows > 0 && cols > 0, "block '" + name + "' has an empty shape " +
                                      std::to_string(rows) + "x" + std::to_string(cols));
    return add(std::move(name),
               matrix_type::Zero(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols)),
               options);
  }

  block_type block(std::size_t i) const { return block_type(table_[i], matrices_.at(i)->data()); }

  matrix_type& matrix(std::size_t i) { return *matrices_.at(i); }
  const matrix_type& matrix(std::size_t i) const { return *matrices_.at(i); }

  // Replaces a block's values; the new matrix must have the block's shape, since optimizer
  // state (momentum factors, snapshots) is sized from it.
  void assign(std::size_t i, const matrix_type& value) {
    const auto& info = table_[i];
    require(static_cast<std::size_t>(value.rows()) == info.rows &&
                static_cast<std::size_t>(value.cols()) == info.cols,
            "cannot assign a " + std::to_string(value.rows()) + "x" + std::to_string(value.cols()) +
                " matrix to block '" + info.name + "' of shape " + std::to_string(info.rows) + "x" +
                std::to_string(info.cols));
    *matrices_[i] = value;
  }

 private:
  backends::cpu backend_;
  std::vector<std::unique_ptr<matrix_type>> matrices_;
};

}  // namespace zo
