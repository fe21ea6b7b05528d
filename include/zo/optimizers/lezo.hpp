// SPDX-License-Identifier: Apache-2.0
// LeZO (Wang et al., "Simultaneous Computation and Memory Efficient Zeroth-Order Optimizer for
// Fine-Tuning Large Language Models", 2024): MeZO on a random subset of the transformer layers,
// drawn afresh at every step. The layers left out are frozen for the step: the engine gives them
// no snapshot and no pass, so their cost is saved rather than multiplied by zero, and they stay
// bit for bit as they were. Blocks without a layer (embeddings, final norm, head) are trained at
// every step.
//
// The whole variant is the selector random_layer_subset (zo/selectors/layers.hpp), keyed by
// (selector seed, step) so that a fused step, a replay and a resumed run draw the same layers.
// Extra state: none.
#pragma once

#include <cstddef>
#include <cstdint>

#include "zo/estimators/estimators.hpp"
#include "zo/optimizers/zo_optimizer.hpp"
#include "zo/perturbations/dense.hpp"
#include "zo/selectors/layers.hpp"
#include "zo/step_rules/sgd.hpp"

namespace zo {

using lezo = zo_optimizer<gaussian_perturbation, central_difference, sgd<>, random_layer_subset>;

// A LeZO optimizer perturbing `layers_per_step` layers at every step; the selector draws from the
// run's seed.
inline lezo make_lezo(std::size_t layers_per_step, central_difference estimator, sgd<> rule,
                      zo_options options = {}) {
  return lezo(gaussian_perturbation{}, estimator, rule,
              random_layer_subset(layers_per_step, options.seed), options);
}

}  // namespace zo
