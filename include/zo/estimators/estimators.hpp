// SPDX-License-Identifier: Apache-2.0
// Estimators turn loss evaluations at perturbed parameters into projected-gradient scalars.
//
// An estimator drives a probe (see concepts.hpp): shift(j, a) moves the parameters by a·z_j,
// reset() returns them to the base point, evaluate() returns the loss at the current point.
// The probe decides how moves are carried out (fused, from a snapshot), so an estimator states
// only the evaluation pattern of its scheme.
#pragma once

#include <cstddef>
#include <limits>
#include <span>

#include "zo/core/concepts.hpp"
#include "zo/core/errors.hpp"
#include "zo/random/keyed.hpp"

namespace zo {

// g = (L(θ + εz) − L(θ − εz)) / (2ε): MeZO's estimator, two evaluations per direction.
class central_difference {
 public:
  explicit central_difference(double epsilon = 1e-3) : epsilon_(epsilon) {
    require_positive_finite(epsilon, "central_difference: epsilon");
  }

  double epsilon() const { return epsilon_; }
  std::size_t samples() const { return 1; }

  // Nothing is shared between directions of a central difference.
  template <class Probe>
  double baseline(Probe&) const {
    return std::numeric_limits<double>::quiet_NaN();
  }

  // Measures direction j; returns the loss this direction reports, (L+ + L−) / 2.
  template <class Probe>
  double measure(Probe& probe, std::size_t j, double /*baseline*/, double& g) const {
    probe.shift(j, epsilon_);
    const double plus = probe.evaluate();
    probe.shift(j, -2 * epsilon_);
    const double minus = probe.evaluate();
    probe.reset();
    g = (plus - minus) / (2 * epsilon_);
    return (plus + minus) / 2;
  }

  template <class Probe>
  double estimate(Probe& probe, std::span<double> g) const {
    return measure(probe, 0, baseline(probe), g[0]);
  }

 private:
  double epsilon_;
};

// g = (L(θ + εz) − L(θ)) / ε: one evaluation per direction plus one shared at θ.
class one_sided {
 public:
  explicit one_sided(double epsilon = 1e-3) : epsilon_(epsilon) {
    require_positive_finite(epsilon, "one_sided: epsilon");
  }

  double epsilon() const { return epsilon_; }
  std::size_t samples() const { return 1; }

  template <class Probe>
  double baseline(Probe& probe) const {
    return probe.evaluate();
  }

  template <class Probe>
  double measure(Probe& probe, std::size_t j, double baseline, double& g) const {
    probe.shift(j, epsilon_);
    const double plus = probe.evaluate();
    probe.reset();
    g = (plus - baseline) / epsilon_;
    return baseline;
  }

  template <class Probe>
  double estimate(Probe& probe, std::span<double> g) const {
    return measure(probe, 0, baseline(probe), g[0]);
  }

 private:
  double epsilon_;
};

// The central difference with the base loss beside it, three evaluations per step (HiZOO's):
// g = (L+ − L−) / (2ε) and the second difference (L+ + L− − 2·L0) / ε², the curvature along the
// direction, written after g. Reports L0, the loss at the parameters themselves.
class curvature_difference {
 public:
  explicit curvature_difference(double epsilon = 1e-3) : epsilon_(epsilon) {
    require_positive_finite(epsilon, "curvature_difference: epsilon");
  }

  double epsilon() const { return epsilon_; }
  std::size_t samples() const { return 1; }
  std::size_t second_differences() const { return 1; }

  // measured: g, then the second difference.
  template <class Probe>
  double estimate(Probe& probe, std::span<double> measured) const {
    const double base = probe.evaluate();
    probe.shift(0, epsilon_);
    const double plus = probe.evaluate();
    probe.shift(0, -2 * epsilon_);
    const double minus = probe.evaluate();
    probe.reset();
    measured[0] = (plus - minus) / (2 * epsilon_);
    measured[1] = (plus + minus - 2 * base) / (epsilon_ * epsilon_);
    return base;
  }

 private:
  double epsilon_;
};

// n-SPSA: q independent directions per step measured with the base scheme; the step rule
// averages g_j·z_j over them. The base scheme's baseline (one-sided's L(θ)) is taken once.
template <class Base = central_difference>
class q_sample {
  static_assert(check_measuring_estimator<Base>());

 public:
  explicit q_sample(std::size_t q, Base base = Base{}) : base_(std::move(base)), q_(q) {
    require(q >= 1, "q_sample: q must be at least 1, got 0");
    require(q <= max_samples_per_step, "q_sample: q must be at most " +
                                           std::to_string(max_samples_per_step) + ", got " +
                                           std::to_string(q));
  }

  double epsilon() const { return base_.epsilon(); }
  std::size_t samples() const { return q_; }
  const Base& base() const { return base_; }

  template <class Probe>
  double estimate(Probe& probe, std::span<double> g) const {
    const double shared = base_.baseline(probe);
    double loss = 0;
    for (std::size_t j = 0; j < q_; ++j)
      loss += base_.measure(probe, j, shared, g[j]);
    return loss / static_cast<double>(q_);
  }

 private:
  Base base_;
  std::size_t q_;
};

}  // namespace zo
