// SPDX-License-Identifier: Apache-2.0
// The Thrust backend: the same policy functors, scheduled by thrust::for_each on the device
// system Thrust is configured for — CUDA when built with nvcc, or OpenMP / C++ threads when built
// with a host compiler (THRUST_DEVICE_SYSTEM), which is how CI tests this code without a GPU.
//
// Include it after configuring Thrust; it is not part of zo/zo.hpp, so CPU-only users need no
// Thrust headers.
#pragma once

#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include <cstddef>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "zo/errors.hpp"
#include "zo/stores/block.hpp"
#include "zo/stores/block_table.hpp"
#include "zo/stores/view_store.hpp"

namespace zo::backends {

struct thrust_device {
  template <class T>
  using buffer = thrust::device_vector<T>;

  // The work hint is for host backends; a device launch is always parallel.
  template <class F>
  static void for_each_index(std::size_t count, const F& f, std::size_t /*work_per_index*/ = 1) {
    if (count == 0) return;
    thrust::for_each(thrust::device, thrust::counting_iterator<std::size_t>(0),
                     thrust::counting_iterator<std::size_t>(count), f);
  }

  template <class T>
  static T* data(buffer<T>& b) {
    return thrust::raw_pointer_cast(b.data());
  }
  template <class T>
  static const T* data(const buffer<T>& b) {
    return thrust::raw_pointer_cast(b.data());
  }

  template <class T>
  static void to_host(const buffer<T>& from, std::vector<T>& to) {
    to.resize(from.size());
    thrust::copy(from.begin(), from.end(), to.begin());
  }
  template <class T>
  static void from_host(const std::vector<T>& from, buffer<T>& to) {
    to.assign(from.begin(), from.end());
  }
};

}  // namespace zo::backends

namespace zo {

// An owning store whose blocks live in thrust::device_vector (device memory under CUDA).
template <class T>
class thrust_store : public detail::table_store {
 public:
  using value_type = T;
  using backend_type = backends::thrust_device;
  using block_type = block_view<T>;

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
    const std::vector<T> zeros(rows * cols, T(0));
    return add(std::move(name), rows, cols, std::span<const T>(zeros), options);
  }

  block_type block(std::size_t i) const {
    return block_type(table_[i], thrust::raw_pointer_cast(blocks_.at(i).data()));
  }

  // Copies of a block's values to and from the host.
  std::vector<T> to_host(std::size_t i) const {
    std::vector<T> out;
    backends::thrust_device::to_host(blocks_.at(i), out);
    return out;
  }
  void assign(std::size_t i, std::span<const T> values) {
    const auto& info = table_[i];
    detail::require(values.size() == info.rows * info.cols,
                    "cannot assign " + std::to_string(values.size()) + " values to block '" +
                        info.name + "' of shape " + std::to_string(info.rows) + "x" +
                        std::to_string(info.cols));
    blocks_[i].assign(values.begin(), values.end());
  }

 private:
  // A deque keeps each device_vector in place as blocks are added. Mutable because a block
  // view hands out a writable pointer from a const store, as the other stores do: the store's
  // constness is its shape, not the values the optimizer writes.
  mutable std::deque<thrust::device_vector<T>> blocks_;
};

// A non-owning store over device memory a framework already holds (e.g. a CUDA tensor's data
// pointer): add(name, std::span<T>(device_pointer, count), rows, cols, options).
template <class T>
using device_view_store = view_store<T, backends::thrust_device>;

}  // namespace zo
