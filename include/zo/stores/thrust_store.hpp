// SPDX-License-Identifier: Apache-2.0
// Stores whose blocks live where the Thrust backend runs: an owning one (thrust::device_vector)
// and a view over device memory a framework already holds. Include after configuring Thrust.
#pragma once

#include <cstddef>
#include <deque>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "zo/backends/thrust.hpp"
#include "zo/core/errors.hpp"
#include "zo/stores/block.hpp"
#include "zo/stores/block_table.hpp"
#include "zo/stores/view_store.hpp"

namespace zo {

// An owning store whose blocks live in thrust::device_vector (device memory under CUDA).
template <class T, class Backend = backends::thrust_device>
class thrust_store : public detail::table_store {
 public:
  using value_type = T;
  using backend_type = Backend;
  using block_type = block_view<T>;

  // The backend every pass over these blocks runs on: its execution policy (and stream).
  explicit thrust_store(Backend backend = Backend{}) : backend_(std::move(backend)) {}
  const Backend& backend() const { return backend_; }

  // Adds a block initialised from host values (rows × cols, row-major).
  std::size_t add(std::string name, std::size_t rows, std::size_t cols, std::span<const T> values,
                  block_options options = {}) {
    const auto& info = table_.add(std::move(name), rows, cols, values.size(), options);
    blocks_.emplace_back(values.begin(), values.end());
    return info.id;
  }
  // Adds a zero-initialised block.
  std::size_t add(std::string name, std::size_t rows, std::size_t cols,
                  block_options options = {}) {
    const std::vector<T> zeros(rows * cols, T{});  // value-initialised: zero bits for every T
    return add(std::move(name), rows, cols, std::span<const T>(zeros), options);
  }

  block_type block(std::size_t i) const {
    return block_type(table_[i], thrust::raw_pointer_cast(blocks_.at(i).data()));
  }

  // Copies of a block's values to and from the host.
  std::vector<T> to_host(std::size_t i) const {
    std::vector<T> out;
    Backend::to_host(blocks_.at(i), out);
    return out;
  }
  void assign(std::size_t i, std::span<const T> values) {
    const auto& info = table_[i];
    require(values.size() == info.rows * info.cols,
            "cannot assign " + std::to_string(values.size()) + " values to block '" + info.name +
                "' of shape " + std::to_string(info.rows) + "x" + std::to_string(info.cols));
    blocks_[i].assign(values.begin(), values.end());
  }

 private:
  // A deque keeps each device_vector in place as blocks are added. Mutable because a block
  // view hands out a writable pointer from a const store, as the other stores do: the store's
  // constness is its shape, not the values the optimizer writes.
  mutable std::deque<thrust::device_vector<T>> blocks_;
  Backend backend_;
};

// A non-owning store over device memory a framework already holds (e.g. a CUDA tensor's data
// pointer): add(name, std::span<T>(device_pointer, count), rows, cols, options).
template <class T, class Backend = backends::thrust_device>
using device_view_store = view_store<T, Backend>;

}  // namespace zo
