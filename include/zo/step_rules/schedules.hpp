// SPDX-License-Identifier: Apache-2.0
// Learning-rate schedules: callables from a step index to a learning rate. Parameters are
// checked when a schedule is built, so a bad schedule fails before any step runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>

#include "zo/core/errors.hpp"

namespace zo {

class constant_schedule {
 public:
  explicit constant_schedule(double learning_rate = 1e-6) : lr_(learning_rate) {
    require_non_negative_finite(learning_rate, "learning rate");
  }
  double operator()(std::uint64_t) const { return lr_; }

 private:
  double lr_;
};

namespace detail {

// Moves from `start` at step 0 to `end` at total_steps along Shape, a map of [0, 1] onto [0, 1];
// holds `end` afterwards.
template <class Shape>
class decaying_schedule {
 public:
  decaying_schedule(double start, std::uint64_t total_steps, double end = 0)
      : start_(start), end_(end), total_(total_steps) {
    const std::string name = Shape::name;
    require_non_negative_finite(start, (name + ": learning rate").c_str());
    require_non_negative_finite(end, (name + ": final learning rate").c_str());
    require(total_steps > 0, name + ": total_steps must be positive, got 0");
  }
  double operator()(std::uint64_t step) const {
    if (step >= total_) return end_;
    const double t = static_cast<double>(step) / static_cast<double>(total_);
    return start_ + (end_ - start_) * Shape{}(t);
  }

 private:
  double start_, end_;
  std::uint64_t total_;
};

struct linear_shape {
  static constexpr const char* name = "linear_schedule";
  double operator()(double t) const { return t; }
};

// Half a cosine period.
struct cosine_shape {
  static constexpr const char* name = "cosine_schedule";
  double operator()(double t) const { return 0.5 * (1 - std::cos(std::numbers::pi * t)); }
};

}  // namespace detail

// linear_schedule(lr, total_steps, final_lr = 0): straight line from lr to final_lr.
using linear_schedule = detail::decaying_schedule<detail::linear_shape>;
// cosine_schedule(lr, total_steps, min_lr = 0): half a cosine from lr down to min_lr.
using cosine_schedule = detail::decaying_schedule<detail::cosine_shape>;

}  // namespace zo
