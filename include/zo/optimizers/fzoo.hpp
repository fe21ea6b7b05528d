// SPDX-License-Identifier: Apache-2.0
// FZOO (Dang et al., "FZOO: Fast Zeroth-Order Optimizer for Fine-Tuning Large Language Models
// towards Adam-Scale Speed", 2025): N Rademacher directions, each measured one-sided around one
// shared base loss (N + 1 evaluations a step, q_sample<one_sided>), and a step divided by the
// standard deviation of the N losses (fzoo_sgd). The paper's batching of the N perturbed forwards
// into one is the objective's business, not the optimizer's. Extra state: none.
#pragma once

#include <cstddef>
#include <string>

#include "zo/core/errors.hpp"
#include "zo/estimators/estimators.hpp"
#include "zo/optimizers/zo_optimizer.hpp"
#include "zo/perturbations/dense.hpp"
#include "zo/selectors/all_blocks.hpp"
#include "zo/step_rules/fzoo.hpp"

namespace zo {

using fzoo = zo_optimizer<rademacher_perturbation, q_sample<one_sided>, fzoo_sgd<>, all_blocks>;

// FZOO with N directions a step (at least 2: σ needs two losses).
inline fzoo make_fzoo(std::size_t directions, double epsilon, fzoo_sgd<> rule,
                      zo_options options = {}) {
  require(directions >= 2, [&] {
    return "make_fzoo: the spread of the losses needs at least 2 directions, got " +
           std::to_string(directions);
  });
  return fzoo(q_sample<one_sided>(directions, one_sided(epsilon)), rule, options);
}

}  // namespace zo
