// SPDX-License-Identifier: Apache-2.0
// The Thrust backend: the same policy functors, scheduled by thrust::for_each on the device
// system Thrust is configured for — CUDA when built with nvcc, or OpenMP / C++ threads when built
// with a host compiler (THRUST_DEVICE_SYSTEM), which is how CI tests this code without a GPU.
//
// Include it after configuring Thrust; it is not part of zo/zo.hpp, so CPU-only users need no
// Thrust headers. The stores over its memory are in zo/stores/thrust_store.hpp.
#pragma once

#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

namespace zo::backends {

// Thrust's device system through an execution policy, a value the backend carries: thrust::device
// (the legacy default stream) unless given another, e.g. a CUDA stream a framework owns,
//   thrust_backend(thrust::cuda::par_nosync.on(stream))
// or an allocator with it, thrust::cuda::par(allocator).on(stream). Every pass's kernel runs
// through thrust::for_each on that policy; buffers are device_vectors, and the copies to and from
// the host made when saving and loading optimizer state synchronise (Thrust's default).
template <class Policy = std::remove_cvref_t<decltype(thrust::device)>>
struct thrust_backend {
  template <class T>
  using buffer = thrust::device_vector<T>;

  Policy policy{};

  thrust_backend() = default;
  explicit thrust_backend(Policy p) : policy(std::move(p)) {}

  // The work hint is for host backends; a device launch is always parallel.
  template <class F>
  void for_each_index(std::size_t count, const F& f, std::size_t /*work_per_index*/ = 1) const {
    if (count == 0) return;
    thrust::for_each(policy, thrust::counting_iterator<std::size_t>(0),
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

// The backend on Thrust's default device policy.
using thrust_device = thrust_backend<>;

}  // namespace zo::backends
