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
#include <vector>

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
