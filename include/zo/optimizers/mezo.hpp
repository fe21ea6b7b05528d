// SPDX-License-Identifier: Apache-2.0
// MeZO (Malladi et al. 2023): Gaussian directions, central difference, SGD, every block.
#pragma once

#include "zo/estimators/estimators.hpp"
#include "zo/optimizers/zo_optimizer.hpp"
#include "zo/perturbations/dense.hpp"
#include "zo/selectors/all_blocks.hpp"
#include "zo/step_rules/sgd.hpp"

namespace zo {

using mezo = zo_optimizer<gaussian_perturbation, central_difference, sgd<>, all_blocks>;

// SPSA with ±1 directions, otherwise MeZO.
using spsa = zo_optimizer<rademacher_perturbation, central_difference, sgd<>, all_blocks>;

}  // namespace zo
