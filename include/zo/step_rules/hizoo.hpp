// SPDX-License-Identifier: Apache-2.0
// HiZOO's step rule (Zhao et al., "Second-Order Fine-Tuning without Pain for LLMs: A Hessian
// Informed Zeroth-Order Optimizer", ICLR 2025). The step measured g = (L+ − L−)/(2ε) and the
// second difference d = (L+ + L− − 2·L0)/ε² along the scaled direction Σ^{1/2}z
// (zo::curvature_difference, zo::hessian_scaled_perturbation), Σ = diag(h)⁻¹. Each element's
// curvature sample
//
//   ĥ_i = (d/2)·(z_i² − 1)·h_i
//
// has mean H_ii, the Hessian's diagonal, on a quadratic whatever h is (test_hizoo), and the rule
// keeps, element by element,
//
//   h ← max((1 − α)·h + α·|ĥ|, h_min),   θ ← (1 − ηλ)·θ − η·g·Σ^{1/2}z   with the new Σ = h⁻¹
//
// the update being one keyed direction that the perturbation's pass scales; h_min (zo's) keeps Σ
// finite. docs/variants.md: where the reference code differs, and what the smoothing does.
// Extra state: h, one element per parameter, shared with the perturbation and saved here.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <utility>

#include "zo/config.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/state_io.hpp"
#include "zo/perturbations/hessian_scaled.hpp"
#include "zo/random/keyed.hpp"
#include "zo/step_rules/schedules.hpp"

namespace zo {

namespace detail {

// h ← max((1 − α)·h + α·|ĥ|, h_min) for the four elements of group g, or on the CPU for a run
// of batches.
template <class T>
struct curvature_update {
  T* h;
  direction_key key;
  std::size_t size;
  T half_d, keep, take, floor;

  ZO_HOST_DEVICE void update(T z, T& value) const {
    const T sample = half_d * (z * z - T(1)) * value;
    const T next = keep * value + take * (sample < T(0) ? -sample : sample);
    value = next > floor ? next : floor;
  }
  ZO_HOST_DEVICE void operator()(std::size_t g) const {
    T z[group_width];
    gaussian_distribution::group(key, g, z);
    for (std::size_t k = 0; k < group_width; ++k) {
      const std::size_t e = element_of(g, 0) + k * batch_groups;
      if (e < size) update(z[k], h[e]);
    }
  }

  static constexpr std::size_t batch = run_batches * batch_groups;
  static constexpr std::size_t run_width = run_batches * batch_width;
  void run_batch(std::size_t g) const {
    const std::size_t first = element_of(g, 0);
    if (first >= size) return;
    T z[run_width] = {};
    add_scaled_direction_run<run_batches, gaussian_distribution>(key, g, T(1), z);
    const std::size_t lanes = size - first < run_width ? size - first : run_width;
    for (std::size_t k = 0; k < lanes; ++k)
      update(z[k], h[first + k]);
  }
};

}  // namespace detail

template <class Schedule = constant_schedule>
class hizoo_sgd {
 public:
  static constexpr bool needs_second_differences = true;
  using required_perturbation = hessian_scaled_perturbation;

  explicit hizoo_sgd(Schedule schedule, double smoothing = 1e-6, double weight_decay = 0,
                     double min_curvature = 1e-8)
      : schedule_(std::move(schedule)),
        smoothing_(smoothing),
        weight_decay_(weight_decay),
        min_curvature_(min_curvature) {
    require(smoothing > 0 && smoothing <= 1,
            "hizoo_sgd: smoothing must be in (0, 1], got " + std::to_string(smoothing));
    require_non_negative_finite(weight_decay, "hizoo_sgd: weight decay");
    require_positive_finite(min_curvature, "hizoo_sgd: min_curvature");
  }
  explicit hizoo_sgd(double learning_rate = 1e-6, double smoothing = 1e-6, double weight_decay = 0,
                     double min_curvature = 1e-8) requires std::same_as<Schedule, constant_schedule>
      : hizoo_sgd(constant_schedule(learning_rate), smoothing, weight_decay, min_curvature) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }
  // h, which the perturbation must share: hessian_scaled_perturbation(rule.diagonal()).
  const std::shared_ptr<hessian_diagonal>& diagonal() const { return diagonal_; }

  template <class Update>
  void update(Update& u) const {
    using T = typename Update::value_type;
    using Backend = typename Update::backend_type;
    const auto g = u.projected_gradients();
    const auto d = u.second_differences();
    require(g.size() == 1 && d.size() == 1,
            "hizoo_sgd: needs one direction and its second difference a step "
            "(zo::curvature_difference)");
    require(u.perturbation().diagonal() == diagonal_,
            "hizoo_sgd: the perturbation scales by another Hessian diagonal than the rule's; "
            "build it as hessian_scaled_perturbation(rule.diagonal())");
    const double lr = learning_rate(u.step());
    u.for_each_block([&](const auto& block, auto& change) {
      const std::size_t n = block.size();
      // The perturbation's passes have checked a non-empty h's size.
      auto& h = diagonal_->template at<Backend, T>(block.id()).h;
      if (h.size() == 0) h.resize(n, T(1));
      if (!std::isfinite(d[0])) {
        change.scale_by(std::numeric_limits<double>::quiet_NaN());  // the engine refuses it
        return;
      }
      const direction_key z{u.seed(),
                            static_cast<std::uint32_t>(u.step()),
                            static_cast<std::uint32_t>(block.id()),
                            stream::dense,
                            0,
                            u.generator()};
      const T half_d(d[0] / 2), keep(1 - smoothing_), take(smoothing_), floor(min_curvature_);
      u.backend().for_each_index(
          groups_for(n),
          detail::curvature_update<T>{Backend::data(h), z, n, half_d, keep, take, floor},
          group_width);
      if (block.decay()) change.scale_by(1 - lr * weight_decay_);
      change.add_direction(0, -lr * g[0]);
    });
  }

  void save(std::ostream& out) const {
    state_io::write_tag(out, state_tag, 1);
    diagonal_->save(out);
  }
  void load(std::istream& in) {
    state_io::read_tag(in, state_tag, 1, "hizoo_sgd");
    diagonal_->load(in);
  }

 private:
  static constexpr std::uint64_t state_tag = 0x7a6f'2d68'697a'6f6full;  // "zo-hizoo"
  Schedule schedule_;
  double smoothing_, weight_decay_, min_curvature_;
  std::shared_ptr<hessian_diagonal> diagonal_ = std::make_shared<hessian_diagonal>("hizoo_sgd");
};

}  // namespace zo
