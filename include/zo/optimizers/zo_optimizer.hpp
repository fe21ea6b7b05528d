// SPDX-License-Identifier: Apache-2.0
// The zeroth-order optimizer template: composes a perturbation policy, an estimator, a step rule
// and a layer selector (ensmallen's policy style), and drives the step engine through each step.
// MeZO and its variants are aliases of it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <ostream>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "zo/core/concepts.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/reports.hpp"
#include "zo/core/state_io.hpp"
#include "zo/core/step_engine.hpp"
#include "zo/core/typed_slot.hpp"
#include "zo/selectors/all_blocks.hpp"

namespace zo {

template <class Perturbation, class Estimator, class StepRule, class Selector = all_blocks>
class zo_optimizer {
  static_assert(check_estimator<Estimator>());
  static_assert(check_zo_step_rule<StepRule>());
  static_assert(check_step_rule_pairing<StepRule, Perturbation>());
  static_assert(check_estimator_pairing<StepRule, Estimator>());

 public:
  using perturbation_type = Perturbation;
  using estimator_type = Estimator;
  using step_rule_type = StepRule;
  using selector_type = Selector;
  template <class Store>
  using engine_type = step_engine<Store, Perturbation>;
  template <class Store>
  using offset_type = typename engine_type<Store>::offset;

  zo_optimizer(Perturbation perturbation, Estimator estimator, StepRule rule,
               Selector selector = {}, zo_options options = {})
      : perturbation_(std::move(perturbation)),
        estimator_(std::move(estimator)),
        rule_(std::move(rule)),
        selector_(std::move(selector)),
        options_(options) {
    require_known_generator(static_cast<std::uint32_t>(options_.generator), "zo_options");
    if constexpr (requires { Perturbation::needs_exact_restore; }) {
      require(!Perturbation::needs_exact_restore || options_.restore == restore_mode::exact,
              "this perturbation's directions change at every update (HiZOO's scaling), so a step "
              "cannot be undone by subtracting it: use restore_mode::exact");
    }
  }

  // The common case: default-constructed perturbation and selector.
  zo_optimizer(Estimator estimator, StepRule rule, zo_options options = {})
      : zo_optimizer(Perturbation{}, std::move(estimator), std::move(rule), Selector{}, options) {}

  // One step on the loss `f` (the same mini-batch for every evaluation of the step). Throws
  // zo::invalid_argument before touching any parameter when the store or a hyperparameter is
  // invalid; if `f` throws, the parameters are returned to the base point, the step index is left
  // as it was, and the exception is rethrown.
  template <class Store, class Objective, class... Callbacks>
  step_report step(Store& store, Objective&& f, Callbacks&... callbacks) {
    static_assert(check_parameter_store<Store>());
    static_assert(check_objective<std::remove_reference_t<Objective>>());
    static_assert(check_perturbation_policy<Perturbation, Store>());
    static_assert(check_layer_selector<Selector, Store>());
    select_roles(store, step_, roles_);
    const auto next = begin_step(store, roles_, element_mask{}, options_.fused_steps);
    step_reporter reporter(start_report(store), callbacks...);
    auto evaluate = [&] {
      if constexpr (std::invocable<Objective&, std::uint64_t>) {
        return reporter.evaluated(static_cast<double>(f(step_)));
      } else {
        return reporter.evaluated(static_cast<double>(f()));
      }
    };
    measurement m;
    step_status status = step_status::completed;
    try {
      m = measure_step(store, evaluate);
      status = commit_step(store, m, next);
    } catch (...) {
      abandon_step(store);
      throw;
    }
    return reporter.finish(status, m.loss, gradients_);
  }

  // ---- The phases of a step, for its other clients (zo::hybrid, which does its first-order work
  // between them, and zo::io::replay, which measures logged outcomes): begin_step, measure_step,
  // [return_to_base, own work,] commit_step, or abandon_step when anything in between threw.
  // step() is the three in sequence.

  // Begins step step_count() with the given roles; returns the next step's first point when the
  // step is fused (and the next step perturbs the same blocks), else an empty offset.
  template <class Store>
  offset_type<Store> begin_step(Store& store, std::span<const block_role> roles,
                                const element_mask& mask, bool fuse) {
    auto& engine = engine_for(store);
    engine.begin(store, step_, roles, mask,
                 {rule_.learning_rate(step_), estimator_.samples(), estimator_.epsilon()});
    gradients_.assign(measured_values(estimator_), 0.0);
    if (!fuse || step_ + 1 >= (std::uint64_t{1} << 32)) return offset_type<Store>();
    select_roles(store, step_ + 1, next_roles_);
    if (!std::ranges::equal(engine.roles(), next_roles_)) return offset_type<Store>();
    return engine.first_point(estimator_, step_ + 1);
  }
  // The estimator's evaluations; evaluate() returns the loss at the current parameters.
  template <class Store, class Evaluate>
  measurement measure_step(Store& store, Evaluate&& evaluate) {
    return engine_for(store).measure(estimator_, evaluate, std::span<double>(gradients_));
  }
  template <class Store>
  void return_to_base(Store& store) {
    engine_for(store).return_to_base();
  }
  // Applies the step rule's update unless the measurement was non-finite (the parameters then
  // return to the base point), and advances the step index.
  template <class Store>
  step_status commit_step(Store& store, const measurement& m, const offset_type<Store>& next) {
    auto& engine = engine_for(store);
    step_status status = step_status::completed;
    if (m.nonfinite) {
      engine.return_to_base();
      status = step_status::skipped_nonfinite_loss;
    } else if (!engine.commit(rule_, gradients_, next)) {
      // The projected gradients are kept, so that a replay refuses the same update.
      status = step_status::skipped_nonfinite_update;
    }
    engine.end_step();
    pending_ = engine.has_pending();
    ++step_;
    return status;
  }
  // The step did not happen: parameters back at the base point, the step index unchanged.
  template <class Store>
  void abandon_step(Store& store) {
    engine_for(store).abandon_step();
    pending_ = false;
  }
  // The report of the step begin_step started, before anything is measured.
  template <class Store>
  step_report start_report(Store& store) {
    step_report report;
    report.step = step_;
    report.learning_rate = rule_.learning_rate(step_);
    report.seed = options_.seed;
    report.roles = engine_for(store).roles();
    return report;
  }
  // The step's measured values as the estimator wrote them (the projected gradients, then any
  // second differences); a replay writes the logged ones here before commit_step.
  std::span<double> projected_gradients() { return gradients_; }
  // The selector's roles at `step`; a zeroth-order optimizer refuses first-order ones.
  template <class Store>
  void select_roles(const Store& store, std::uint64_t step, std::vector<block_role>& roles) {
    roles.assign(store.size(), block_role::zeroth_order);
    selector_.select(step, store, std::span<block_role>(roles));
    for (std::size_t i = 0; i < store.size(); ++i) {
      require(roles[i] != block_role::first_order && roles[i] != block_role::mixed, [&] {
        return "the layer selector gave block '" + std::string(store.block(i).name()) +
               "' a first-order role; a zeroth-order optimizer cannot train it (use zo::hybrid)";
      });
    }
  }

  // Fused steps leave the next step's first perturbation in the parameters; this removes it
  // (one pass), so that the parameters are the current iterate. Does nothing when there is none.
  template <class Store>
  void remove_pending_perturbation(Store& store) {
    engine_for(store).remove_pending(store);
    pending_ = false;
  }
  bool has_pending_perturbation() const { return pending_; }

  // Runs up to `steps` steps, stopping early when a callback asks to. Returns with the
  // parameters at the last iterate (a fused run's pending perturbation removed).
  template <class Store, class Objective, class... Callbacks>
  run_summary optimize(Store& store, Objective&& f, std::uint64_t steps, Callbacks&&... callbacks) {
    const auto summary = run_steps(steps, [&] { return step(store, f, callbacks...); });
    remove_pending_perturbation(store);
    return summary;
  }

  // Saves what a resumed run needs besides the parameters: the step index, the directions'
  // generator and the step rule's state (momentum). Loading it into an optimizer built with the
  // same policies and continuing on the same parameters reproduces the uninterrupted run bit for
  // bit; loading sets the optimizer's generator to the saved one (a version-1 state, written
  // before generators were named, to philox4x32-10). The state is framed
  // with its length and a CRC-32 (zo/core/state_io.hpp): a damaged or truncated state is a
  // zo::invalid_argument, raised before anything changes.
  void save(std::ostream& out) const {
    require_no_pending("saving the optimizer state");
    state_io::save_state(out, [&](std::ostream& payload) { save_section(payload); });
  }
  void load(std::istream& in) {
    require_no_pending("loading an optimizer state");
    state_io::load_state(in, state_tag, "zo_optimizer", [&](std::istream& s) { load_body(s); });
  }
  // The same state without the file's frame, as a section of a larger state (the hybrid's).
  void save_section(std::ostream& out) const {
    require_no_pending("saving the optimizer state");
    state_io::write_tag(out, state_tag, 2);
    state_io::write_value(out, step_);
    state_io::write_value(out, static_cast<std::uint32_t>(options_.generator));
    if constexpr (requires { rule_.save(out); }) rule_.save(out);
  }
  void load_section(std::istream& in) {
    require_no_pending("loading an optimizer state");
    require(state_io::read_value<std::uint64_t>(in, "zo_optimizer") == state_tag,
            "the state does not hold zo_optimizer");
    load_body(in);
  }

  // The index of the next step; directions are keyed by it, so setting it resumes a run.
  std::uint64_t step_count() const { return step_; }
  void set_step_count(std::uint64_t step) {
    require_no_pending("setting the step count");
    step_ = step;
  }

  const zo_options& options() const { return options_; }
  const Perturbation& perturbation() const { return perturbation_; }
  const Estimator& estimator() const { return estimator_; }
  const StepRule& step_rule() const { return rule_; }
  const Selector& selector() const { return selector_; }

 private:
  void require_no_pending(const char* what) const {
    require(!pending_, [&] {
      return std::string(
                 "the parameters hold a fused step's pending perturbation; call "
                 "remove_pending_perturbation(store) before ") +
             what;
    });
  }
  // One engine per store type, made at the first step on that type and kept, so that a step
  // allocates nothing once the first has run.
  template <class Store>
  engine_type<Store>& engine_for(const Store&) {
    return engine_.get_or<engine_type<Store>>(
        [&] { return engine_type<Store>(perturbation_, options_); });
  }

  static constexpr std::uint64_t state_tag = 0x7a6f'2d73'7461'7465ull;  // "zo-state" in ASCII

  // A state section after its tag.
  void load_body(std::istream& in) {
    const auto version = state_io::read_value<std::uint32_t>(in, "zo_optimizer");
    require(version == 1 || version == 2, [&] {
      return "zo_optimizer state has version " + std::to_string(version) +
             ", this build reads versions 1 and 2";
    });
    const auto step = state_io::read_value<std::uint64_t>(in, "the step index");
    const auto generator_code =
        version == 1 ? static_cast<std::uint32_t>(generator::philox4x32_10)
                     : state_io::read_value<std::uint32_t>(in, "the directions' generator");
    require_known_generator(generator_code, "the zo_optimizer state");
    if constexpr (requires { rule_.load(in); }) rule_.load(in);
    step_ = step;
    const auto generator = static_cast<zo::generator>(generator_code);
    if (generator != options_.generator) {
      options_.generator = generator;
      engine_.reset();  // its passes carry the options it was made with
    }
  }

  static void require_known_generator(std::uint32_t code, const char* where) {
    require(code <= 0xff && known_generator(static_cast<std::uint8_t>(code)), [&] {
      return std::string(where) + " names direction generator " + std::to_string(code) +
             ", which this build does not know (1: philox4x32-10, 2: philox4x32-8)";
    });
  }

  Perturbation perturbation_;
  Estimator estimator_;
  StepRule rule_;
  Selector selector_;
  zo_options options_;
  std::uint64_t step_ = 0;
  bool pending_ = false;
  std::vector<block_role> roles_, next_roles_;
  std::vector<double> gradients_;
  typed_slot engine_;
};

}  // namespace zo
