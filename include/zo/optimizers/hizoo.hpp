// SPDX-License-Identifier: Apache-2.0
// HiZOO (Zhao et al., "Second-Order Fine-Tuning without Pain for LLMs: A Hessian Informed
// Zeroth-Order Optimizer", ICLR 2025): MeZO's step preconditioned by a running estimate h of the
// Hessian's diagonal. Each step measures L0, L+ and L− (three evaluations,
// zo::curvature_difference) along Σ^{1/2}z with Σ = diag(h)⁻¹ (zo::hessian_scaled_perturbation),
// updates h from the second difference and steps along the rescaled direction (zo::hizoo_sgd).
// Extra state: h, one element per parameter. Needs restore_mode::exact.
#pragma once

#include "zo/estimators/estimators.hpp"
#include "zo/optimizers/zo_optimizer.hpp"
#include "zo/perturbations/hessian_scaled.hpp"
#include "zo/selectors/all_blocks.hpp"
#include "zo/step_rules/hizoo.hpp"

namespace zo {

using hizoo =
    zo_optimizer<hessian_scaled_perturbation, curvature_difference, hizoo_sgd<>, all_blocks>;

// HiZOO with perturbation scale epsilon; the perturbation shares the rule's Hessian diagonal.
inline hizoo make_hizoo(double epsilon, hizoo_sgd<> rule, zo_options options = {}) {
  hessian_scaled_perturbation perturbation(rule.diagonal());
  return hizoo(std::move(perturbation), curvature_difference(epsilon), std::move(rule),
               all_blocks{}, options);
}

}  // namespace zo
