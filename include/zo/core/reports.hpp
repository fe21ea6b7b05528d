// SPDX-License-Identifier: Apache-2.0
// What an optimizer tells its caller and its callbacks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <tuple>
#include <type_traits>

#include "zo/core/roles.hpp"

namespace zo {

enum class step_status {
  completed,
  // A loss evaluation returned NaN or ±inf: no update was applied and the parameters were
  // returned to their values before the step (bit for bit with restore_mode::exact).
  skipped_nonfinite_loss,
  // The step rule's update had a non-finite coefficient, or one large enough that the update
  // could overflow the element type: it was not applied (see zo_optimizer's for_each_block).
  // The loss and projected gradients are the step's; a trajectory log records them so that a
  // replay refuses the same update.
  skipped_nonfinite_update,
};

struct evaluation_report {
  std::uint64_t step = 0;
  std::size_t index = 0;  // 0-based count of evaluations within the step
  double loss = 0;
};

struct step_report {
  std::uint64_t step = 0;
  step_status status = step_status::completed;
  double loss = 0;  // the estimator's loss for the step (the non-finite value when skipped)
  double learning_rate = 0;
  // One projected gradient per direction, followed by one second difference per direction when
  // the estimator measures curvature (zo::curvature_difference); empty when skipped for a
  // non-finite loss. Points into the optimizer and stays valid until its next step.
  std::span<const double> projected_gradients;
  std::size_t evaluations = 0;
  // The role each block had in this step (the selector's decision), and the seed the directions
  // were keyed with: with the projected gradients, what replaying the step needs. The span
  // points into the optimizer and stays valid until its next step.
  std::span<const block_role> roles;
  std::uint64_t seed = 0;
  bool stop_requested = false;  // a callback asked to stop after this step

  bool skipped() const { return status != step_status::completed; }
};

struct run_summary {
  std::uint64_t steps = 0;            // steps attempted, skipped ones included
  std::uint64_t skipped_steps = 0;    // steps skipped, for either reason below
  std::uint64_t refused_updates = 0;  // of those, steps whose update was refused (not applied)
  bool stopped_early = false;         // a callback returned true
  double last_loss = 0;
};

namespace detail {

// Calls hook(callback) on every callback the hook applies to; true when one returned true.
template <class Hook, class... Callbacks>
bool ask_each(const Hook& hook, Callbacks&... callbacks) {
  bool stop = false;
  [[maybe_unused]] const auto ask = [&](auto& callback) {
    using call = decltype(callback);
    if constexpr (std::is_invocable_v<const Hook&, call>) {
      if constexpr (std::is_void_v<std::invoke_result_t<const Hook&, call>>) {
        hook(callback);
      } else {
        stop |= static_cast<bool>(hook(callback));
      }
    }
  };
  (ask(callbacks), ...);
  return stop;
}

}  // namespace detail

// ensmallen-style callbacks: a callback implements only the hooks it needs (after_evaluation,
// after_step), and a hook may return void or a bool; true asks the optimizer to stop once the
// current step is complete. These call the hook on every callback that has it and say whether
// one asked to stop.
template <class... Callbacks>
bool notify_after_evaluation(const evaluation_report& report, Callbacks&... callbacks) {
  return detail::ask_each(
      [&](auto& c) -> decltype(c.after_evaluation(report)) { return c.after_evaluation(report); },
      callbacks...);
}
template <class... Callbacks>
bool notify_after_step(const step_report& report, Callbacks&... callbacks) {
  return detail::ask_each(
      [&](auto& c) -> decltype(c.after_step(report)) { return c.after_step(report); },
      callbacks...);
}

// A step's report as the step runs: counts the evaluations and tells the callbacks about each,
// then about the step as it ends, and remembers whether one of them asked to stop.
template <class... Callbacks>
class step_reporter {
 public:
  explicit step_reporter(const step_report& start, Callbacks&... callbacks)
      : report_(start), callbacks_(callbacks...) {}

  double evaluated(double loss) {
    const evaluation_report seen{report_.step, report_.evaluations++, loss};
    stop_ |=
        std::apply([&](auto&... c) { return notify_after_evaluation(seen, c...); }, callbacks_);
    return loss;
  }
  // The projected gradients are reported unless a non-finite loss ended the step.
  step_report finish(step_status status, double loss, std::span<const double> gradients) {
    report_.status = status;
    report_.loss = loss;
    if (status != step_status::skipped_nonfinite_loss) report_.projected_gradients = gradients;
    stop_ |= std::apply([&](auto&... c) { return notify_after_step(report_, c...); }, callbacks_);
    report_.stop_requested = stop_;
    return report_;
  }

 private:
  step_report report_;
  std::tuple<Callbacks&...> callbacks_;
  bool stop_ = false;
};

// The loop every optimizer's optimize() shares: up to `steps` calls of step(), stopping early
// when a callback asked to.
template <class Step>
run_summary run_steps(std::uint64_t steps, Step&& step) {
  run_summary summary;
  for (std::uint64_t k = 0; k < steps; ++k) {
    const step_report r = step();
    ++summary.steps;
    if (r.skipped()) ++summary.skipped_steps;
    if (r.status == step_status::skipped_nonfinite_update) ++summary.refused_updates;
    summary.last_loss = r.loss;
    if (r.stop_requested) {
      summary.stopped_early = true;
      break;
    }
  }
  return summary;
}

}  // namespace zo
