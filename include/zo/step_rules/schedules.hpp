// Learning-rate schedules: callables from a step index to a learning rate. Parameters are
// checked when a schedule is built, so a bad schedule fails before any step runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

#include "zo/errors.hpp"

namespace zo {

class constant_schedule {
 public:
  explicit constant_schedule(double learning_rate = 1e-6) : lr_(learning_rate) {
    detail::require_non_negative_finite(learning_rate, "learning rate");
  }
  double operator()(std::uint64_t) const { return lr_; }

 private:
  double lr_;
};

// Decays linearly from learning_rate at step 0 to final_learning_rate at total_steps, then stays.
class linear_schedule {
 public:
  linear_schedule(double learning_rate, std::uint64_t total_steps, double final_learning_rate = 0)
      : lr_(learning_rate), final_(final_learning_rate), total_(total_steps) {
    detail::require_non_negative_finite(learning_rate, "linear_schedule: learning rate");
    detail::require_non_negative_finite(final_learning_rate,
                                        "linear_schedule: final learning rate");
    detail::require(total_steps > 0, "linear_schedule: total_steps must be positive, got 0");
  }
  double operator()(std::uint64_t step) const {
    if (step >= total_) return final_;
    const double t = static_cast<double>(step) / static_cast<double>(total_);
    return lr_ + (final_ - lr_) * t;
  }

 private:
  double lr_, final_;
  std::uint64_t total_;
};

// Half a cosine from learning_rate at step 0 to min_learning_rate at total_steps, then stays.
class cosine_schedule {
 public:
  cosine_schedule(double learning_rate, std::uint64_t total_steps, double min_learning_rate = 0)
      : lr_(learning_rate), min_(min_learning_rate), total_(total_steps) {
    detail::require_non_negative_finite(learning_rate, "cosine_schedule: learning rate");
    detail::require_non_negative_finite(min_learning_rate,
                                        "cosine_schedule: minimum learning rate");
    detail::require(total_steps > 0, "cosine_schedule: total_steps must be positive, got 0");
  }
  double operator()(std::uint64_t step) const {
    if (step >= total_) return min_;
    const double t = static_cast<double>(step) / static_cast<double>(total_);
    return min_ + (lr_ - min_) * 0.5 * (1 + std::cos(std::numbers::pi * t));
  }

 private:
  double lr_, min_;
  std::uint64_t total_;
};

}  // namespace zo
