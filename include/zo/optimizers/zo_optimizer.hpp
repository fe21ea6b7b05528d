// SPDX-License-Identifier: Apache-2.0
// The zeroth-order optimizer template: composes a perturbation policy, an estimator, a step rule
// and a layer selector (ensmallen's policy style). MeZO and its variants are aliases of it.
#pragma once

#include <algorithm>
#include <any>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <ostream>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "zo/core/concepts.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/reports.hpp"
#include "zo/core/state_io.hpp"
#include "zo/core/pass.hpp"
#include "zo/random/keyed.hpp"
#include "zo/selectors/all_blocks.hpp"

namespace zo {

// How the parameters are returned to the base point after measuring.
enum class restore_mode {
  // Keep a snapshot of the zeroth-order blocks, written during the first perturbation pass of
  // each step. Every measured point and the update are computed from it, so perturbations leave
  // no rounding residue and a skipped step restores the parameters bit for bit. Costs one copy
  // of the zeroth-order parameters.
  exact,
  // Undo each perturbation by applying its negative (as the MeZO reference does). No memory
  // beyond the parameters; each step leaves a rounding residue of a few ulps (see docs), and a
  // skipped step restores the parameters only up to that residue.
  arithmetic,
};

struct zo_options {
  std::uint64_t seed = 0;
  restore_mode restore = restore_mode::exact;
  // Fused steps (docs/mezo.md, "Fused steps"): each step's update pass also applies the next
  // step's first perturbation, so a central-difference step makes two passes over the parameters
  // instead of three. Between step() calls the parameters then hold that pending perturbation; call
  // remove_pending_perturbation(store) before evaluating or saving them (optimize() does it when
  // it returns). Off by default, so that the parameters between steps are the plain iterate.
  bool fused_steps = false;
};

namespace detail {

// A zeroth-order-only step has nothing between its estimate and its update.
struct nothing_between {
  void operator()() const {}
};

// Thrown inside a step when a loss is NaN or infinite; caught by the step itself.
struct nonfinite_loss {
  double loss;
};

// Thrown inside a step when the step rule's update for a block is refused; caught by the step.
struct refused_update {};

// Whether an update of scale·x + Σ alpha·direction + extra can be applied without making a
// finite weight non-finite through its coefficients: every coefficient finite in the element
// type, and the keyed terms' largest possible change (a Gaussian entry is below 6.7, a Rademacher
// one ±1; 8 is used) below a quarter of the type's largest value. A scale or an explicit term's
// coefficient is only required to be finite: what it multiplies is not known here.
template <class T>
bool usable_update(T scale, const std::vector<direction_term<T>>& terms,
                   const explicit_terms<T>& extra) {
  using std::isfinite;
  if (!isfinite(scale)) return false;
  if (!isfinite(extra.addend_scale) || !isfinite(extra.low_rank_scale)) return false;
  const double limit = static_cast<double>(std::numeric_limits<T>::max()) / 4;
  double largest = 0;
  for (const auto& t : terms) {
    if (!isfinite(t.alpha)) return false;
    largest += 8 * std::abs(static_cast<double>(t.alpha));
  }
  return largest < limit;
}

// Scratch kept between steps so that a step allocates nothing once the first one has run.
template <class Store>
struct zo_workspace {
  using value_type = typename Store::value_type;
  using backend = typename Store::backend_type;

  std::vector<typename backend::template buffer<value_type>> snapshots;
  std::vector<block_role> roles;
  std::vector<double> gradients;
  std::vector<double> dry_run_gradients;  // written by the estimator's dry run, never read
  std::vector<direction_term<value_type>> terms;
  std::vector<direction_term<value_type>> pending_terms;
  // The perturbation a fused step left in memory (offset from the base point, which is then in
  // the snapshot in exact mode) and the roles it was applied with.
  term_list<value_type> pending;
  std::vector<block_role> pending_roles;
  scratch_arena<backend, value_type> scratch;
  element_mask mask;  // for mixed blocks
};

// A direction's sample index is 8 bits of its key; a larger one would silently alias another.
inline void require_sample(std::size_t sample) {
  require(sample < max_samples_per_step, [&] {
    return "direction sample " + std::to_string(sample) + " is out of range: at most " +
           std::to_string(max_samples_per_step) + " directions per step";
  });
}

// Stands in for the probe while an estimator is run only to learn where it evaluates first:
// records the offset of the first evaluation and ignores everything after it.
template <class T>
class first_point_recorder {
 public:
  explicit first_point_recorder(std::uint32_t step) : step_(step) {}
  void shift(std::size_t sample, double alpha) {
    if (!done_) offset_.add(step_, static_cast<std::uint8_t>(sample), static_cast<T>(alpha));
  }
  void reset() {
    if (!done_) offset_.clear();
  }
  double evaluate() {
    done_ = true;
    return 0.0;
  }
  const term_list<T>& offset() const { return offset_; }

 private:
  std::uint32_t step_;
  term_list<T> offset_;
  bool done_ = false;
};

// Carries the parameters through one step's perturbations. It tracks two offsets from the base
// point, the one in memory (applied) and the one the next evaluation needs (desired), and moves
// between them in a single pass per block; the update of the step rule joins the last move.
template <class Store, class Perturbation, class Evaluate>
class probe {
 public:
  using value_type = typename Store::value_type;
  using backend = typename Store::backend_type;

  probe(const Store& store, const Perturbation& perturbation, zo_workspace<Store>& workspace,
        const zo_options& options, std::uint32_t step, Evaluate& evaluate)
      : store_(store),
        perturbation_(perturbation),
        workspace_(workspace),
        options_(options),
        step_(step),
        evaluate_(evaluate),
        applied_(workspace.pending),
        saved_(options.restore == restore_mode::exact && workspace.pending.size() > 0) {}

  // Estimator interface (concepts.hpp, archetypes::probe).
  void shift(std::size_t sample, double alpha) {
    require_sample(sample);
    desired_.add(step_, static_cast<std::uint8_t>(sample), static_cast<value_type>(alpha));
  }
  void reset() { desired_.clear(); }
  double evaluate() {
    move_all();
    return evaluate_();
  }

  // Step-rule interface (archetypes::zo_update): f(block, change) describes each zeroth-order
  // block's update; it is applied in the same pass that returns the block to the base point,
  // and that moves it on to the next step's first point when one was set (fused steps).
  // A change that usable_update refuses throws refused_update before its block is touched; the
  // step then returns every block to the base point. Blocks before it were already updated:
  // they are restored bit for bit in exact mode unless the step was fused (and kept otherwise).
  // sgd gives every block the same keyed terms, so an overflowing lr·g is refused at the first.
  template <class F>
  void for_each_block(F&& f) {
    desired_ = next_;
    for (std::size_t i = 0; i < store_.size(); ++i) {
      if (!perturbed(workspace_.roles[i])) continue;
      workspace_.terms.clear();
      block_change change{workspace_.terms, step_};
      const auto block = store_.block(i);
      f(block, change);
      if (!usable_update(change.scale, workspace_.terms, change.extra)) throw refused_update{};
      move(i, block, change.scale, workspace_.terms, change.extra, next_);
    }
    moved_all();
  }

  // Where the update should leave the parameters: the next step's first perturbation (an
  // offset from the updated base point, keyed by the next step).
  void set_next_point(const term_list<value_type>& next) { next_ = next; }

  // Moves every block to base + offset (bit for bit from the snapshot in exact mode); does
  // nothing when memory is there already.
  void finish_at(const term_list<value_type>& offset) {
    desired_ = offset;
    move_all();
  }
  void return_to_base() { finish_at(term_list<value_type>()); }

  // The offset memory holds from the base point.
  const term_list<value_type>& applied() const { return applied_; }

  class block_change {
   public:
    block_change(std::vector<direction_term<value_type>>& terms, std::uint32_t step)
        : terms_(terms), step_(step) {}
    void scale_by(double factor) { scale *= static_cast<value_type>(factor); }
    void add_direction(std::size_t sample, double alpha) {
      require_sample(sample);
      terms_.push_back({step_, static_cast<std::uint8_t>(sample), static_cast<value_type>(alpha)});
    }
    // Terms the step rule computed itself (see explicit_terms): alpha · values, elementwise.
    void add_dense(const value_type* values, double alpha) {
      extra.addend = values;
      extra.addend_scale = static_cast<value_type>(alpha);
    }
    // alpha · left · rightᵀ with left (rows × rank) and right (cols × rank), row-major.
    void add_low_rank(const value_type* left, const value_type* right, std::size_t rank,
                      double alpha) {
      extra.left = left;
      extra.right = right;
      extra.rank = rank;
      extra.low_rank_scale = static_cast<value_type>(alpha);
    }
    value_type scale = 1;
    explicit_terms<value_type> extra;

   private:
    std::vector<direction_term<value_type>>& terms_;
    std::uint32_t step_;
  };

 private:
  bool from_snapshot() const { return options_.restore == restore_mode::exact && saved_; }

  void move_all() {
    if (same_terms(applied_, desired_)) return;
    for (std::size_t i = 0; i < store_.size(); ++i) {
      if (!perturbed(workspace_.roles[i])) continue;
      workspace_.terms.clear();
      move(i, store_.block(i), value_type(1), workspace_.terms, explicit_terms<value_type>(),
           term_list<value_type>());
    }
    moved_all();
  }

  // After a sweep over every block: memory holds the desired point, and from the first sweep on
  // the snapshot holds the base point.
  void moved_all() {
    applied_ = desired_;
    saved_ = options_.restore == restore_mode::exact;
  }

  // One pass: block ← scale·base + terms + extra + next, where base is read from the snapshot in
  // exact mode and recovered as (block − applied) in arithmetic mode, and terms holds the step
  // rule's keyed update. Without next, desired offsets (relative to the base, scaled with it) join
  // terms. With next (a fused step), the updated base point is also written to the snapshot, and
  // next is added on top of it unscaled.
  template <class Block>
  void move(std::size_t i, const Block& block, value_type scale,
            std::vector<direction_term<value_type>>& terms, const explicit_terms<value_type>& extra,
            const term_list<value_type>& next) {
    pass<value_type> sweep;
    sweep.seed = options_.seed;
    sweep.scale = scale;
    sweep.extra = extra;
    if (workspace_.roles[i] == block_role::mixed) sweep.mask = workspace_.mask;
    sweep.target = block.data();
    sweep.source = block.data();
    const bool exact = options_.restore == restore_mode::exact;
    value_type* snapshot = nullptr;
    if (exact) {
      snapshot = backend::data(workspace_.snapshots[i]);
      if (saved_) {
        sweep.source = snapshot;
      } else {
        sweep.save_to = snapshot;
      }
    }
    // Offsets relative to the source, scaled like it, join the caller's terms; merging keeps
    // each direction to one generation per pass.
    const auto merge = [&](const direction_term<value_type>& t, value_type factor) {
      for (auto& existing : terms) {
        if (existing.step == t.step && existing.sample == t.sample) {
          existing.alpha += factor * t.alpha;
          return;
        }
      }
      terms.push_back({t.step, t.sample, factor * t.alpha});
    };
    if (next.size() == 0) {
      for (std::size_t k = 0; k < desired_.size(); ++k)
        merge(desired_[k], scale);
    }
    if (!from_snapshot()) {
      for (std::size_t k = 0; k < applied_.size(); ++k)
        merge(applied_[k], -scale);
    }
    std::erase_if(terms, [](const auto& t) { return t.alpha == value_type(0); });
    auto& pending = workspace_.pending_terms;
    pending.clear();
    for (std::size_t k = 0; k < next.size(); ++k) {
      if (next[k].alpha != value_type(0)) pending.push_back(next[k]);
    }
    // More terms than a pass holds are split over passes; the next perturbation goes into the
    // last one, which alone writes the base point.
    std::size_t taken = 0;
    for (;;) {
      const std::size_t room = max_terms_per_pass - pending.size();
      const bool last = terms.size() - taken <= room;
      const std::size_t count = last ? terms.size() - taken : max_terms_per_pass;
      for (std::size_t k = 0; k < count; ++k)
        sweep.terms.items[sweep.terms.count++] = terms[taken + k];
      taken += count;
      if (last) {
        sweep.base_terms = sweep.terms.size();
        for (const auto& t : pending)
          sweep.terms.items[sweep.terms.count++] = t;
        if (!pending.empty() && snapshot != nullptr) {
          // The snapshot is to hold the new base point; the old one is no longer needed.
          sweep.base_to = snapshot;
          sweep.save_to = nullptr;
        }
      }
      perturbation_.apply(backend{}, block, sweep, workspace_.scratch);
      if (last) break;
      // Later passes continue from what the first wrote.
      sweep.source = block.data();
      sweep.save_to = nullptr;
      sweep.scale = value_type(1);
      sweep.terms.clear();
      sweep.extra = {};
    }
  }

  static bool same_terms(const term_list<value_type>& a, const term_list<value_type>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < a.size(); ++k) {
      if (a[k].step != b[k].step || a[k].sample != b[k].sample || a[k].alpha != b[k].alpha) {
        return false;
      }
    }
    return true;
  }

  const Store& store_;
  const Perturbation& perturbation_;
  zo_workspace<Store>& workspace_;
  const zo_options& options_;
  std::uint32_t step_;
  Evaluate& evaluate_;
  term_list<value_type> applied_;
  term_list<value_type> desired_;
  term_list<value_type> next_;
  bool saved_ = false;
};

}  // namespace detail

template <class Perturbation, class Estimator, class StepRule, class Selector = all_blocks>
class zo_optimizer {
  static_assert(check_estimator<Estimator>());
  static_assert(check_zo_step_rule<StepRule>());

 public:
  using perturbation_type = Perturbation;
  using estimator_type = Estimator;
  using step_rule_type = StepRule;
  using selector_type = Selector;

  zo_optimizer(Perturbation perturbation, Estimator estimator, StepRule rule,
               Selector selector = {}, zo_options options = {})
      : perturbation_(std::move(perturbation)),
        estimator_(std::move(estimator)),
        rule_(std::move(rule)),
        selector_(std::move(selector)),
        options_(options) {}

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

    auto& ws = workspace_for(store);
    select_roles(store, step_, ws.roles);
    detail::nothing_between nothing;
    return run_step(store, f, ws.roles, element_mask{}, nothing, options_.fused_steps, {},
                    callbacks...);
  }

  // Repeats a logged step without evaluating the loss: the step's passes run as they did live,
  // but the update uses the logged projected gradients. Replaying a run's steps in order on its
  // starting parameters, with an optimizer built as the live one was, reproduces the live
  // parameters bit for bit. `step` must be step_count(); `evaluations` is the number of
  // evaluations the live step made, so a step that was skipped for a non-finite loss repeats
  // the same moves (the replayed evaluation at that index reports NaN). Roles, when given, must
  // equal the selector's for this step.
  template <class Store>
  step_report replay_step(Store& store, std::uint64_t step, std::span<const double> gradients,
                          std::size_t evaluations, bool skipped,
                          std::span<const block_role> roles = {}) {
    auto& ws = workspace_for(store);
    select_roles(store, step_, ws.roles);
    detail::require(
        roles.empty() || std::equal(roles.begin(), roles.end(), ws.roles.begin(), ws.roles.end()),
        [&] {
          return "the logged roles of step " + std::to_string(step) +
                 " differ from the selector's: the log was recorded with another selector";
        });
    detail::nothing_between nothing;
    return replay(store, step, gradients, evaluations, skipped, ws.roles, element_mask{}, nothing,
                  options_.fused_steps);
  }

  // replay_step with roles decided by the caller, as step_with_roles is (zo::hybrid): `between`
  // stands where the caller's first-order work was, so the same passes are made.
  template <class Store, class Between>
  step_report replay_with_roles(Store& store, std::uint64_t step, std::span<const double> gradients,
                                std::size_t evaluations, bool skipped,
                                std::span<const block_role> roles, const element_mask& mask,
                                Between&& between) {
    return replay(store, step, gradients, evaluations, skipped, roles, mask, between, false);
  }

  // One step with roles decided by the caller (zo::hybrid): only zeroth-order blocks are
  // perturbed and updated. `between()` runs after the estimate, with every block back at its
  // base point, and before the zeroth-order update: the hybrid's first-order forward and
  // backward. Validation, skipping and restoring are as for step(); steps are never fused here,
  // since the caller's roles for the next step are not known.
  template <class Store, class Objective, class Between, class... Callbacks>
  step_report step_with_roles(Store& store, Objective&& f, std::span<const block_role> roles,
                              const element_mask& mask, Between&& between,
                              Callbacks&... callbacks) {
    return run_step(store, f, roles, mask, between, false, {}, callbacks...);
  }

  // Fused steps leave the next step's first perturbation in the parameters; this removes it
  // (one pass), so that the parameters are the current iterate. Does nothing when there is none.
  template <class Store>
  void remove_pending_perturbation(Store& store) {
    auto& ws = workspace_for(store);
    if (ws.pending.size() == 0) return;
    detail::nothing_between no_evaluation;
    ws.roles = ws.pending_roles;
    detail::probe<Store, Perturbation, detail::nothing_between> probe(
        store, perturbation_, ws, options_, static_cast<std::uint32_t>(step_), no_evaluation);
    probe.return_to_base();
    ws.pending.clear();
    pending_ = false;
  }

  // Whether the parameters hold a fused step's pending perturbation.
  bool has_pending_perturbation() const { return pending_; }

  // Runs up to `steps` steps, stopping early when a callback asks to. Returns with the
  // parameters at the last iterate (a fused run's pending perturbation removed).
  template <class Store, class Objective, class... Callbacks>
  run_summary optimize(Store& store, Objective&& f, std::uint64_t steps, Callbacks&&... callbacks) {
    const auto summary = detail::run_steps(steps, [&] { return step(store, f, callbacks...); });
    remove_pending_perturbation(store);
    return summary;
  }

  // Saves what a resumed run needs besides the parameters: the step index and the step rule's
  // state (momentum). Loading it into an optimizer built with the same policies and continuing
  // on the same parameters reproduces the uninterrupted run bit for bit. The state is framed
  // with its length and a CRC-32 (zo/core/state_io.hpp): a damaged or truncated state is
  // a zo::invalid_argument, raised before anything changes.
  void save(std::ostream& out) const {
    require_no_pending("saving the optimizer state");
    detail::save_state(out, [&](std::ostream& payload) { save_section(payload); });
  }
  void load(std::istream& in) {
    require_no_pending("loading an optimizer state");
    detail::load_state(in, state_tag, "zo_optimizer", [&](std::istream& s) { load_body(s); });
  }
  // The same state without the file's frame, as a section of a larger state (the hybrid's).
  void save_section(std::ostream& out) const {
    require_no_pending("saving the optimizer state");
    detail::write_tag(out, state_tag, 1);
    detail::write_value(out, step_);
    if constexpr (requires { rule_.save(out); }) rule_.save(out);
  }
  void load_section(std::istream& in) {
    require_no_pending("loading an optimizer state");
    detail::require(detail::read_value<std::uint64_t>(in, "zo_optimizer") == state_tag,
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
  template <class Store, class Objective, class Between, class... Callbacks>
  step_report run_step(Store& store, Objective& f, std::span<const block_role> roles,
                       const element_mask& mask, Between& between, bool fuse,
                       std::span<const double> logged_gradients, Callbacks&... callbacks) {
    auto& ws = workspace_for(store);
    // A pending perturbation applied with other roles is removed before anything else.
    if (ws.pending.size() > 0 &&
        !std::equal(roles.begin(), roles.end(), ws.pending_roles.begin(), ws.pending_roles.end())) {
      std::vector<block_role> requested(roles.begin(), roles.end());
      remove_pending_perturbation(store);
      ws.roles = std::move(requested);
    }
    ws.mask = mask;
    const double lr = rule_.learning_rate(step_);
    validate(store, lr);
    detail::require(roles.size() == store.size(), "one role per block is needed");
    if (roles.data() != ws.roles.data()) ws.roles.assign(roles.begin(), roles.end());
    detail::require(std::any_of(ws.roles.begin(), ws.roles.end(),
                                [](block_role r) { return r != block_role::frozen; }),
                    [&] {
                      return "the layer selector left no block to train at step " +
                             std::to_string(step_);
                    });
    if constexpr (!requires { requires Perturbation::supports_element_masks; }) {
      detail::require(std::none_of(ws.roles.begin(), ws.roles.end(),
                                   [](block_role r) { return r == block_role::mixed; }),
                      "the perturbation policy does not support intra-layer masks (mixed "
                      "blocks); use a dense perturbation");
    }
    if (options_.restore == restore_mode::exact) prepare_snapshots(store, ws);
    ws.gradients.assign(estimator_.samples(), 0.0);
    // A fused step ends at the next step's first point, which is only known when the next
    // step perturbs the same blocks.
    term_list<value_type_of<Store>> next;
    if (fuse && step_ + 1 < (std::uint64_t{1} << 32)) {
      ws.pending_roles.resize(store.size());
      select_roles(store, step_ + 1, ws.pending_roles);
      if (std::equal(ws.roles.begin(), ws.roles.end(), ws.pending_roles.begin())) {
        next = first_point(static_cast<std::uint32_t>(step_ + 1), ws);
      }
    }

    step_report report;
    report.step = step_;
    report.learning_rate = lr;
    report.seed = options_.seed;
    report.roles = ws.roles;
    bool stop = false;
    auto evaluate = [&]() -> double {
      double loss;
      if constexpr (std::invocable<Objective&, std::uint64_t>) {
        loss = static_cast<double>(f(step_));
      } else {
        loss = static_cast<double>(f());
      }
      [[maybe_unused]] const evaluation_report seen{step_, report.evaluations++, loss};
      ((stop |= detail::asks_to_stop([&] { return cb_after_evaluation(callbacks, seen); })), ...);
      if (!std::isfinite(loss)) throw detail::nonfinite_loss{loss};
      return loss;
    };
    detail::probe<Store, Perturbation, decltype(evaluate)> probe(
        store, perturbation_, ws, options_, static_cast<std::uint32_t>(step_), evaluate);
    try {
      report.loss = estimator_.estimate(probe, std::span<double>(ws.gradients));
      if (!logged_gradients.empty()) {
        std::copy(logged_gradients.begin(), logged_gradients.end(), ws.gradients.begin());
      }
      if constexpr (!std::is_same_v<std::remove_cvref_t<Between>, detail::nothing_between>) {
        probe.return_to_base();
        between();
      }
      probe.set_next_point(next);
      update_context<decltype(probe)> update{probe, step_, ws.gradients, *this};
      rule_.update(update);
      probe.finish_at(next);
      report.projected_gradients = ws.gradients;
    } catch (const detail::nonfinite_loss& bad) {
      probe.return_to_base();
      report.status = step_status::skipped_nonfinite_loss;
      report.loss = bad.loss;
    } catch (const detail::refused_update&) {
      // Every block back at the base point (see for_each_block for when that is bit for bit);
      // the projected gradients are kept, so that a replay refuses the same update.
      probe.return_to_base();
      report.status = step_status::skipped_nonfinite_update;
      report.projected_gradients = ws.gradients;
    } catch (...) {
      // The step did not happen: parameters back at the base point, the step index unchanged.
      probe.return_to_base();
      ws.pending.clear();
      pending_ = false;
      throw;
    }
    ws.pending = probe.applied();
    pending_ = ws.pending.size() > 0;
    ++step_;
    ((stop |= detail::asks_to_stop([&] { return cb_after_step(callbacks, report); })), ...);
    report.stop_requested = stop;
    return report;
  }

  template <class Store, class Between>
  step_report replay(Store& store, std::uint64_t step, std::span<const double> gradients,
                     std::size_t evaluations, bool skipped, std::span<const block_role> roles,
                     const element_mask& mask, Between& between, bool fuse) {
    detail::require(step == step_, [&] {
      return "the log's step " + std::to_string(step) + " is not the optimizer's next step " +
             std::to_string(step_);
    });
    detail::require(skipped || gradients.size() == estimator_.samples(), [&] {
      return "step " + std::to_string(step) + " logged " + std::to_string(gradients.size()) +
             " projected gradients; the estimator makes " + std::to_string(estimator_.samples());
    });
    std::size_t calls = 0;
    const auto logged_loss = [&]() -> double {
      return skipped && ++calls == evaluations ? std::numeric_limits<double>::quiet_NaN() : 0.0;
    };
    return run_step(store, logged_loss, roles, mask, between, fuse,
                    skipped ? std::span<const double>() : gradients);
  }

  template <class Store>
  using value_type_of = typename Store::value_type;

  void require_no_pending(const char* what) const {
    detail::require(!pending_, std::string("the parameters hold a fused step's pending "
                                           "perturbation; call remove_pending_perturbation(store) "
                                           "before ") +
                                   what);
  }

  template <class Store>
  void select_roles(const Store& store, std::uint64_t step, std::vector<block_role>& roles) {
    roles.assign(store.size(), block_role::zeroth_order);
    selector_.select(step, store, std::span<block_role>(roles));
    for (std::size_t i = 0; i < store.size(); ++i) {
      detail::require(roles[i] != block_role::first_order && roles[i] != block_role::mixed, [&] {
        return "the layer selector gave block '" + std::string(store.block(i).name()) +
               "' a first-order role; a zeroth-order optimizer cannot train it (use zo::hybrid)";
      });
    }
  }

  // The offset of the first point the estimator evaluates at `step`, found by running it on a
  // recorder instead of the parameters.
  template <class Store>
  term_list<value_type_of<Store>> first_point(std::uint32_t step, detail::zo_workspace<Store>& ws) {
    detail::first_point_recorder<value_type_of<Store>> recorder(step);
    ws.dry_run_gradients.assign(estimator_.samples(), 0.0);
    estimator_.estimate(recorder, std::span<double>(ws.dry_run_gradients));
    return recorder.offset();
  }

  template <class Probe>
  class update_context {
   public:
    using value_type = typename Probe::value_type;
    using backend_type = typename Probe::backend;

    update_context(Probe& probe, std::uint64_t step, std::span<const double> g,
                   const zo_optimizer& optimizer)
        : probe_(probe), step_(step), g_(g), optimizer_(optimizer) {}
    std::uint64_t step() const { return step_; }
    std::uint64_t seed() const { return optimizer_.options_.seed; }
    const Perturbation& perturbation() const { return optimizer_.perturbation_; }
    std::span<const double> projected_gradients() const { return g_; }
    template <class F>
    void for_each_block(F&& f) {
      probe_.for_each_block(std::forward<F>(f));
    }

   private:
    Probe& probe_;
    std::uint64_t step_;
    std::span<const double> g_;
    const zo_optimizer& optimizer_;
  };

  template <class Callback, class Report>
  static auto cb_after_evaluation(Callback& cb, const Report& r) {
    if constexpr (requires { cb.after_evaluation(r); }) return cb.after_evaluation(r);
  }
  template <class Callback, class Report>
  static auto cb_after_step(Callback& cb, const Report& r) {
    if constexpr (requires { cb.after_step(r); }) return cb.after_step(r);
  }

  template <class Store>
  detail::zo_workspace<Store>& workspace_for(const Store&) {
    using workspace = detail::zo_workspace<Store>;
    if (auto* ws = std::any_cast<workspace>(&workspace_)) return *ws;
    workspace_ = workspace{};
    return *std::any_cast<workspace>(&workspace_);
  }

  template <class Store>
  void validate(const Store& store, double lr) const {
    detail::require(store.size() > 0, "the parameter store has no blocks");
    detail::require(std::isfinite(lr) && lr >= 0, [&] {
      return "learning rate at step " + std::to_string(step_) +
             " must be non-negative and finite, got " + std::to_string(lr);
    });
    detail::require(step_ < (std::uint64_t{1} << 32), [&] {
      return "step index " + std::to_string(step_) + " exceeds the 2^32 steps a key holds";
    });
    const std::size_t q = estimator_.samples();
    detail::require(q >= 1 && q <= max_samples_per_step, [&] {
      return "the estimator asks for " + std::to_string(q) + " directions per step; 1 to " +
             std::to_string(max_samples_per_step) + " are supported";
    });
    detail::require_positive_finite(estimator_.epsilon(), "estimator epsilon");
    for (std::size_t i = 0; i < store.size(); ++i) {
      const auto b = store.block(i);
      auto block = [&](const char* problem) {
        return [&b, problem] { return "block '" + std::string(b.name()) + "' " + problem; };
      };
      detail::require(b.rows() > 0 && b.cols() > 0, block("has an empty shape"));
      detail::require(b.size() == b.rows() * b.cols(), [&] {
        return "block '" + std::string(b.name()) + "' has shape " + std::to_string(b.rows()) + "x" +
               std::to_string(b.cols()) + " but holds " + std::to_string(b.size()) + " elements";
      });
      detail::require(b.data() != nullptr, block("has no storage"));
      detail::require(b.size() < max_elements_per_block, block("has more than 2^48 elements"));
      detail::require(b.id() <= std::numeric_limits<std::uint32_t>::max(),
                      block("has an id above 2^32 - 1"));
      if constexpr (requires { perturbation_.validate(b); }) perturbation_.validate(b);
    }
  }

  template <class Store>
  static void prepare_snapshots(const Store& store, detail::zo_workspace<Store>& ws) {
    ws.snapshots.resize(store.size());
    for (std::size_t i = 0; i < store.size(); ++i) {
      const std::size_t n = perturbed(ws.roles[i]) ? store.block(i).size() : 0;
      if (ws.snapshots[i].size() != n) ws.snapshots[i].resize(n);
    }
  }

  static constexpr std::uint64_t state_tag = 0x7a6f'2d73'7461'7465ull;  // "zo-state" in ASCII

  // A state section after its tag.
  void load_body(std::istream& in) {
    detail::read_version(in, 1, "zo_optimizer");
    const auto step = detail::read_value<std::uint64_t>(in, "the step index");
    if constexpr (requires { rule_.load(in); }) rule_.load(in);
    step_ = step;
  }

  Perturbation perturbation_;
  Estimator estimator_;
  StepRule rule_;
  Selector selector_;
  zo_options options_;
  std::uint64_t step_ = 0;
  bool pending_ = false;
  std::any workspace_;
};

}  // namespace zo
