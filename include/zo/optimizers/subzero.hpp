// SPDX-License-Identifier: Apache-2.0
// SubZero (Yu et al., "SubZero: Random Subspace Zeroth-Order Optimization for Memory-Efficient
// LLM Fine-Tuning", 2024): MeZO's estimator and SGD along subzero_perturbation's U·Z·Vᵀ.
// Extra state: none.
#pragma once

#include "zo/estimators/estimators.hpp"
#include "zo/optimizers/zo_optimizer.hpp"
#include "zo/perturbations/subzero.hpp"
#include "zo/selectors/all_blocks.hpp"
#include "zo/step_rules/sgd.hpp"

namespace zo {

using subzero = zo_optimizer<subzero_perturbation, central_difference, sgd<>, all_blocks>;

}  // namespace zo
