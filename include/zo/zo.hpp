// SPDX-License-Identifier: Apache-2.0
// Umbrella header: the CPU optimizers and their parts, which need no library besides Random123.
// Headers that need another are included on their own, so that zo::zo needs none of them:
// zo/stores/eigen_store.hpp (Eigen, target zo::eigen), zo/io/safetensors.hpp (nlohmann-json),
// zo/distributed/mpi.hpp (MPI, target zo::mpi) and the Thrust backend.
#pragma once

#include "zo/config.hpp"

#include "zo/random/keyed.hpp"

#include "zo/core/concepts.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/gradient_view.hpp"
#include "zo/core/pass.hpp"
#include "zo/core/reports.hpp"
#include "zo/core/roles.hpp"
#include "zo/core/state_io.hpp"

#include "zo/backends/cpu.hpp"
#include "zo/stores/block.hpp"
#include "zo/stores/view_store.hpp"

#include "zo/perturbations/dense.hpp"
#include "zo/perturbations/directions.hpp"
#include "zo/perturbations/hessian_scaled.hpp"
#include "zo/perturbations/low_rank.hpp"
#include "zo/perturbations/small_magnitude.hpp"
#include "zo/perturbations/subzero.hpp"

#include "zo/estimators/estimators.hpp"

#include "zo/step_rules/first_order.hpp"
#include "zo/step_rules/fzoo.hpp"
#include "zo/step_rules/hizoo.hpp"
#include "zo/step_rules/low_rank_momentum.hpp"
#include "zo/step_rules/schedules.hpp"
#include "zo/step_rules/sgd.hpp"
#include "zo/step_rules/sign_sgd.hpp"
#include "zo/step_rules/zo_adam.hpp"
#include "zo/step_rules/zo_momentum.hpp"

#include "zo/selectors/all_blocks.hpp"
#include "zo/selectors/intra_layer_mask.hpp"
#include "zo/selectors/layers.hpp"

#include "zo/optimizers/fzoo.hpp"
#include "zo/optimizers/hizoo.hpp"
#include "zo/optimizers/hybrid.hpp"
#include "zo/optimizers/lezo.hpp"
#include "zo/optimizers/lozo.hpp"
#include "zo/optimizers/mezo.hpp"
#include "zo/optimizers/sparse_mezo.hpp"
#include "zo/optimizers/subzero.hpp"
#include "zo/optimizers/zo_optimizer.hpp"
