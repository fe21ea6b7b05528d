// SPDX-License-Identifier: Apache-2.0
// ZO-SGD: θ ← θ − η(ḡ + λθ) with ḡ = (1/q) Σ_j g_j·z_j, λ applied only to blocks flagged for
// decay (MeZO exempts biases and normalisation weights).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "zo/core/errors.hpp"
#include "zo/step_rules/schedules.hpp"

namespace zo {

template <class Schedule = constant_schedule>
class sgd {
 public:
  explicit sgd(Schedule schedule, double weight_decay = 0)
      : schedule_(std::move(schedule)), weight_decay_(weight_decay) {
    require_non_negative_finite(weight_decay, "sgd: weight decay");
  }

  // Constant learning rate; the MeZO reference default is 1e-6.
  explicit sgd(double learning_rate = 1e-6,
               double weight_decay = 0) requires std::same_as<Schedule, constant_schedule>
      : sgd(constant_schedule(learning_rate), weight_decay) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }
  double weight_decay() const { return weight_decay_; }
  const Schedule& schedule() const { return schedule_; }

  // The whole update is keyed directions plus a scale, so it fuses into the pass that returns
  // each block from its last measured point (see zo_optimizer).
  template <class Update>
  void update(Update& u) const {
    const double lr = learning_rate(u.step());
    const auto g = u.projected_gradients();
    const double inverse_q = 1.0 / static_cast<double>(g.size());
    u.for_each_block([&](const auto& block, auto& change) {
      if (block.decay()) change.scale_by(1 - lr * weight_decay_);
      for (std::size_t j = 0; j < g.size(); ++j)
        change.add_direction(j, -lr * g[j] * inverse_q);
    });
  }

 private:
  Schedule schedule_;
  double weight_decay_;
};

}  // namespace zo
