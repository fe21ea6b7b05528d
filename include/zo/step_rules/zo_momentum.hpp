// SPDX-License-Identifier: Apache-2.0
// ZO-SGD with momentum, ZO-SGD-MMT in ZO-Bench (Zhang et al., "Revisiting Zeroth-Order
// Optimization for Memory-Efficient LLM Fine-Tuning: A Benchmark", ICML 2024): heavy-ball momentum
// on the step's dense estimate ĝ = (1/q) Σ_j g_j·z_j,
//
//   m ← μ·m + ĝ   (m = ĝ at a block's first step),   θ ← (1 − ηλ)·θ − η·m
//
// the momentum buffer of torch.optim.SGD. Extra state: one element per parameter (m), kept on the
// store's backend. Weight decay scales the base point, as sgd's does, instead of entering m: the
// rule never sees the base point itself (in exact mode it lives in the engine's snapshot).
#pragma once

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
#include "zo/step_rules/schedules.hpp"

namespace zo {

template <class Schedule = constant_schedule>
class zo_momentum {
 public:
  explicit zo_momentum(Schedule schedule, double momentum = 0.9, double weight_decay = 0)
      : schedule_(std::move(schedule)), momentum_(momentum), weight_decay_(weight_decay) {
    require(momentum >= 0 && momentum < 1,
            "zo_momentum: momentum must be in [0, 1), got " + std::to_string(momentum));
    require_non_negative_finite(weight_decay, "zo_momentum: weight decay");
  }
  explicit zo_momentum(double learning_rate = 1e-6, double momentum = 0.9,
                       double weight_decay = 0) requires std::same_as<Schedule, constant_schedule>
      : zo_momentum(constant_schedule(learning_rate), momentum, weight_decay) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }
  double momentum() const { return momentum_; }

  template <class Update>
  void update(Update& u) {
    using T = typename Update::value_type;
    using Backend = typename Update::backend_type;
    const double lr = learning_rate(u.step());
    u.for_each_block([&](const auto& block, auto& change) {
      auto& record = states_.template at<Backend, T>(block.id());
      const bool first = record.m.size() != block.size();
      if (first) record.m.resize(block.size());
      const T* estimate = u.dense_estimate(block);
      u.backend().for_each_index(
          block.size(), accumulate<T>{Backend::data(record.m), estimate, T(first ? 0 : momentum_)});
      if (block.decay()) change.scale_by(1 - lr * weight_decay_);
      // m is the rule's own memory, so it outlives the block's pass.
      change.add_dense(Backend::data(record.m), -lr);
    });
  }

  // The momentum of every block, for resuming a run bit for bit.
  void save(std::ostream& out) const {
    state_io::write_tag(out, state_tag, 1);
    states_.save(out);
  }
  void load(std::istream& in) {
    state_io::read_tag(in, state_tag, 1, "zo_momentum");
    states_.load(in);
  }

 private:
  template <class Backend, class T>
  struct record {
    typename Backend::template buffer<T> m;
    void encode(auto& out) const { out.buffers(m); }
    void decode(auto& in) { in.buffers(m); }
  };
  // m ← μ·m + ĝ; μ = 0 at the first step, when m holds no history.
  template <class T>
  struct accumulate {
    T* m;
    const T* estimate;
    T momentum;
    ZO_HOST_DEVICE void operator()(std::size_t i) const {
      m[i] = momentum == T(0) ? estimate[i] : momentum * m[i] + estimate[i];
    }
  };

  static constexpr std::uint64_t state_tag = 0x7a6f'2d6d'6d74'0000ull;  // "zo-mmt"
  Schedule schedule_;
  double momentum_, weight_decay_;
  state_io::block_state<record> states_{"zo_momentum"};
};

}  // namespace zo
