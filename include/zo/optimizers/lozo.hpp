// SPDX-License-Identifier: Apache-2.0
// LOZO and LOZO-M (Chen et al. 2024): low-rank directions U·Vᵀ with V kept for ν steps, with
// plain SGD or with momentum in factor space.
#pragma once

#include "zo/estimators/estimators.hpp"
#include "zo/optimizers/zo_optimizer.hpp"
#include "zo/perturbations/low_rank.hpp"
#include "zo/selectors/all_blocks.hpp"
#include "zo/step_rules/low_rank_momentum.hpp"
#include "zo/step_rules/sgd.hpp"

namespace zo {

using lozo = zo_optimizer<low_rank_perturbation, central_difference, sgd<>, all_blocks>;
using lozo_m =
    zo_optimizer<low_rank_perturbation, central_difference, low_rank_momentum<>, all_blocks>;

}  // namespace zo
