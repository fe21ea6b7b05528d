// SPDX-License-Identifier: Apache-2.0
// FZOO's step rule (Dang et al., "FZOO: Fast Zeroth-Order Optimizer for Fine-Tuning Large
// Language Models towards Adam-Scale Speed", 2025): from N one-sided measurements around one base
// loss, l_j = L(θ + εu_j) and l_0 = L(θ),
//
//   θ ← θ − (η/σ)·(1/(εN)) Σ_j (l_j − l_0)·u_j = θ − (η/σ)·(1/N) Σ_j g_j·u_j
//
// with σ the standard deviation of the N losses l_j (divisor N − 1). Since l_j − l_0 = ε·g_j,
// σ = ε·std(g), so the rule needs only the projected gradients and the estimator's ε, and the
// update is N keyed directions: no dense estimate, no pass of its own. Dividing by σ takes long
// steps where the losses barely differ and short ones where they spread (a normalised SGD).
// Extra state: none. Pair it with q_sample<one_sided> (zo/optimizers/fzoo.hpp), which takes the N
// losses and the base one in N + 1 evaluations.
//
// When the N losses are all equal σ is 0 and the step is undefined: its coefficients are then not
// finite, and the engine refuses the update (step_status::skipped_nonfinite_update).
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "zo/core/errors.hpp"
#include "zo/step_rules/schedules.hpp"

namespace zo {

template <class Schedule = constant_schedule>
class fzoo_sgd {
 public:
  explicit fzoo_sgd(Schedule schedule) : schedule_(std::move(schedule)) {}
  explicit fzoo_sgd(double learning_rate = 1e-6) requires std::same_as<Schedule, constant_schedule>
      : fzoo_sgd(constant_schedule(learning_rate)) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }

  // σ of the losses l_j = l_0 + ε·g_j: ε times the sample standard deviation of g.
  static double loss_std(std::span<const double> g, double epsilon) {
    double mean = 0;
    for (double x : g)
      mean += x;
    mean /= static_cast<double>(g.size());
    double squares = 0;
    for (double x : g)
      squares += (x - mean) * (x - mean);
    return epsilon * std::sqrt(squares / static_cast<double>(g.size() - 1));
  }

  template <class Update>
  void update(Update& u) const {
    const auto g = u.projected_gradients();
    require(g.size() >= 2, [&] {
      return "fzoo_sgd: the spread of the losses needs at least 2 directions per step, got " +
             std::to_string(g.size());
    });
    const double scale =
        learning_rate(u.step()) / (loss_std(g, u.epsilon()) * static_cast<double>(g.size()));
    u.for_each_block([&](const auto&, auto& change) {
      for (std::size_t j = 0; j < g.size(); ++j)
        change.add_direction(j, -scale * g[j]);
    });
  }

 private:
  Schedule schedule_;
};

}  // namespace zo
