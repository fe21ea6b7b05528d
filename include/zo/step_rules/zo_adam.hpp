// SPDX-License-Identifier: Apache-2.0
// ZO-Adam, as ZO-Bench runs it (Zhang et al., "Revisiting Zeroth-Order Optimization for
// Memory-Efficient LLM Fine-Tuning: A Benchmark", ICML 2024; after Chen et al., "ZO-AdaMM:
// Zeroth-Order Adaptive Momentum Method for Black-Box Optimization", NeurIPS 2019): Adam's moments
// on the step's dense estimate ĝ = (1/q) Σ_j g_j·z_j, with PyTorch's bias corrections,
//
//   m ← β1·m + (1 − β1)·ĝ,   v ← β2·v + (1 − β2)·ĝ²,   θ ← (1 − ηλ)·θ − η·m̂ / (√v̂ + ε)
//
// and decoupled weight decay (AdamW) on blocks flagged for decay. Extra state: two elements per
// parameter (m, v) and a step count per block, on the store's backend. A block's count advances
// only when it is updated, so a layer selector that skips it keeps its bias corrections exact.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <ostream>
#include <string>
#include <utility>

#include "zo/config.hpp"
#include "zo/core/block_state.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/state_io.hpp"
#include "zo/step_rules/first_order.hpp"
#include "zo/step_rules/schedules.hpp"

namespace zo {

template <class Schedule = constant_schedule>
class zo_adam {
 public:
  zo_adam(Schedule schedule, double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8,
          double weight_decay = 0)
      : schedule_(std::move(schedule)),
        beta1_(beta1),
        beta2_(beta2),
        epsilon_(epsilon),
        weight_decay_(weight_decay) {
    detail::require_adam_hyperparameters("zo_adam", beta1, beta2, epsilon, weight_decay);
  }
  explicit zo_adam(double learning_rate = 1e-5, double beta1 = 0.9, double beta2 = 0.999,
                   double epsilon = 1e-8,
                   double weight_decay = 0) requires std::same_as<Schedule, constant_schedule>
      : zo_adam(constant_schedule(learning_rate), beta1, beta2, epsilon, weight_decay) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }

  template <class Update>
  void update(Update& u) {
    using T = typename Update::value_type;
    using Backend = typename Update::backend_type;
    const double lr = learning_rate(u.step());
    u.for_each_block([&](const auto& block, auto& change) {
      auto& record = states_.template at<Backend, T>(block.id());
      if (record.m.size() != block.size()) {
        record.m.resize(block.size());
        record.v.resize(block.size());
      }
      const double t = static_cast<double>(++record.steps);
      const double bias1 = 1 - std::pow(beta1_, t), bias2 = 1 - std::pow(beta2_, t);
      // The lent estimate buffer is overwritten with the step m̂/(√v̂ + ε), which the block's
      // pass reads right after this callback.
      T* estimate = u.dense_estimate(block);
      u.backend().for_each_index(
          block.size(),
          moments<T>{estimate, Backend::data(record.m), Backend::data(record.v), T(beta1_),
                     T(beta2_), T(epsilon_), T(bias1), T(std::sqrt(bias2))});
      if (block.decay()) change.scale_by(1 - lr * weight_decay_);
      change.add_dense(estimate, -lr);
    });
  }

  // The moments and per-block step counts, for resuming a run bit for bit.
  void save(std::ostream& out) const {
    state_io::write_tag(out, state_tag, 1);
    states_.save(out);
  }
  void load(std::istream& in) {
    state_io::read_tag(in, state_tag, 1, "zo_adam");
    states_.load(in);
  }

 private:
  // Reads ĝ from `step`, advances m and v, and leaves m̂/(√v̂ + ε) in `step`.
  template <class T>
  struct moments {
    T* step;
    T *m, *v;
    T beta1, beta2, epsilon, bias1, bias2_sqrt;
    ZO_HOST_DEVICE void operator()(std::size_t i) const {
      const T g = step[i];
      m[i] = beta1 * m[i] + (T(1) - beta1) * g;
      v[i] = beta2 * v[i] + (T(1) - beta2) * g * g;
      step[i] = (m[i] / bias1) / (std::sqrt(v[i]) / bias2_sqrt + epsilon);
    }
  };

  static constexpr std::uint64_t state_tag = 0x7a6f'2d61'6461'6d00ull;  // "zo-adam"
  Schedule schedule_;
  double beta1_, beta2_, epsilon_, weight_decay_;
  // The same record as adam's: m, v and the block's step count.
  state_io::block_state<detail::adam_record> states_{"zo_adam"};
};

}  // namespace zo
