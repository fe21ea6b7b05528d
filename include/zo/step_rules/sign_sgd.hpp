// SPDX-License-Identifier: Apache-2.0
// ZO-SignSGD (Liu et al., "signSGD via Zeroth-Order Oracle", ICLR 2019): θ ← θ − η·sign(ĝ) with
// ĝ = (1/q) Σ_j g_j·z_j, the step's dense estimate in the perturbation's own directions. It keeps
// no state: the estimate is formed per block in a buffer the step lends.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "zo/config.hpp"
#include "zo/step_rules/schedules.hpp"

namespace zo {

template <class Schedule = constant_schedule>
class sign_sgd {
 public:
  explicit sign_sgd(Schedule schedule) : schedule_(std::move(schedule)) {}
  explicit sign_sgd(double learning_rate = 1e-6) requires std::same_as<Schedule, constant_schedule>
      : sign_sgd(constant_schedule(learning_rate)) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }

  template <class Update>
  void update(Update& u) const {
    using T = typename Update::value_type;
    const double lr = learning_rate(u.step());
    u.for_each_block([&](const auto& block, auto& change) {
      T* estimate = u.dense_estimate(block);
      u.backend().for_each_index(block.size(), sign_of<T>{estimate});
      change.add_dense(estimate, -lr);
    });
  }

 private:
  template <class T>
  struct sign_of {
    T* values;
    ZO_HOST_DEVICE void operator()(std::size_t i) const {
      values[i] = T((values[i] > T(0)) - (values[i] < T(0)));
    }
  };

  Schedule schedule_;
};

}  // namespace zo
