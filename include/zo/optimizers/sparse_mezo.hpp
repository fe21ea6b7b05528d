// SPDX-License-Identifier: Apache-2.0
// Sparse-MeZO (Liu et al., "Sparse MeZO: Less Parameters for Better Performance in Zeroth-Order
// LLM Fine-Tuning", 2024): MeZO perturbing and updating only the entries of small magnitude
// (small_magnitude_perturbation), the others untouched. Extra state: none per parameter, one
// threshold per block.
#pragma once

#include <cstddef>

#include "zo/core/errors.hpp"
#include "zo/estimators/estimators.hpp"
#include "zo/optimizers/zo_optimizer.hpp"
#include "zo/perturbations/small_magnitude.hpp"
#include "zo/selectors/all_blocks.hpp"
#include "zo/step_rules/sgd.hpp"

namespace zo {

using sparse_mezo =
    zo_optimizer<small_magnitude_perturbation, central_difference, sgd<>, all_blocks>;

// Sparse-MeZO on `store` perturbing the `fraction` of each block's entries of smallest magnitude
// now (thresholds fixed from these values). The mask is read from the exact restore's snapshot,
// so other options are refused here, before any step.
template <class Store>
sparse_mezo make_sparse_mezo(const Store& store, double fraction, central_difference estimator,
                             sgd<> rule, zo_options options = {}) {
  require(options.restore == restore_mode::exact && !options.fused_steps,
          "make_sparse_mezo: the magnitude mask needs restore_mode::exact and unfused steps");
  return sparse_mezo(small_magnitude_perturbation(small_magnitude_thresholds(store, fraction)),
                     estimator, rule, all_blocks{}, options);
}

}  // namespace zo
