// SPDX-License-Identifier: Apache-2.0
// The step engine: what every zeroth-order step does to the parameters, in the order it happens.
//
//   begin(store, step, roles, ...)    the blocks this step perturbs; snapshots ready
//   measure(estimator, evaluate, g)   the estimator moves the parameters and reads losses
//   commit(rule, g, next)             the step rule's update, joined with the move back to the
//                                     base point and, fused, on to the next step's first point
//
// zo_optimizer calls these in sequence; zo::hybrid puts its first-order work between measure
// and commit (after return_to_base); replay measures with logged outcomes. The engine owns what
// a step needs between its passes: the snapshots (exact restore), the offsets memory holds and
// is asked for, and the perturbation a fused step left pending for the next one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "zo/core/concepts.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/pass.hpp"
#include "zo/core/probes.hpp"
#include "zo/core/roles.hpp"
#include "zo/random/keyed.hpp"

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
  // Which keyed generator draws the directions (zo/random/keyed.hpp). Part of the run's identity
  // like the seed: states and trajectory logs record it, and loading either sets it back.
  zo::generator generator = default_generator;
  restore_mode restore = restore_mode::exact;
  // How an update is stored in 16-bit blocks (zo/core/float16.hpp; docs/precision.md): keyed
  // stochastic rounding, whose expected stored value is the float update, or round to nearest,
  // which loses every update below half a unit in the last place of a weight. Float and double
  // blocks store updates as computed.
  zo::rounding rounding = zo::rounding::stochastic;
  // Fused steps (docs/mezo.md, "Fused steps"): each step's update pass also applies the next
  // step's first perturbation, so a central-difference step makes two passes over the parameters
  // instead of three. Between step() calls the parameters then hold that pending perturbation; call
  // remove_pending_perturbation(store) before evaluating or saving them (optimize() does it when
  // it returns). Off by default, so that the parameters between steps are the plain iterate.
  bool fused_steps = false;
};

// What a step is checked against before it changes anything.
struct step_limits {
  double learning_rate = 0;
  std::size_t samples = 1;  // directions per step
  double epsilon = 1;
};

// The outcome of an estimator's run: its loss, or the first non-finite loss it met.
struct measurement {
  double loss = 0;
  bool nonfinite = false;
};

namespace detail {

// A direction's sample index is 8 bits of its key; a larger one would silently alias another.
inline void require_sample(std::size_t sample) {
  require(sample < max_samples_per_step, [&] {
    return "direction sample " + std::to_string(sample) + " is out of range: at most " +
           std::to_string(max_samples_per_step) + " directions per step";
  });
}

template <class T>
struct zero_fill_kernel {
  T* out;
  ZO_HOST_DEVICE void operator()(std::size_t i) const { out[i] = T(0); }
};

// Whether an update of scale·x + Σ alpha·direction + contributions can be applied without making
// a finite weight non-finite through its coefficients: every coefficient finite in the element
// type, and the keyed terms' largest possible change (a Gaussian entry is below 6.7, a Rademacher
// one ±1; 8 is used) below a quarter of the element type's largest value. A scale or a
// contribution's coefficient is only required to be finite: what it multiplies is not known here.
template <class Pass>
bool usable_update(const Pass& change,
                   const std::vector<direction_term<typename Pass::real_type>>& terms) {
  using std::isfinite;
  if (!isfinite(change.scale)) return false;
  if constexpr (pass_accepts_dense_addend<Pass>) {
    if (!isfinite(change.addend.scale)) return false;
  }
  if constexpr (pass_accepts_low_rank_addend<Pass>) {
    if (!isfinite(change.low_rank.scale)) return false;
  }
  const double limit = largest_finite<typename Pass::value_type>() / 4;
  double largest = 0;
  for (const auto& t : terms) {
    if (!isfinite(t.alpha)) return false;
    largest += 8 * std::abs(static_cast<double>(t.alpha));
  }
  return largest < limit;
}

}  // namespace detail

template <class Store, class Perturbation>
class step_engine {
 public:
  using value_type = typename Store::value_type;  // what the blocks store
  using real_type = compute_t<value_type>;        // what passes and step rules compute in
  using backend_type = typename Store::backend_type;
  using pass_type = pass_type_t<Perturbation, value_type>;
  using offset = term_list<real_type>;

  step_engine(Perturbation perturbation, zo_options options)
      : perturbation_(std::move(perturbation)), options_(options) {}

  const Perturbation& perturbation() const { return perturbation_; }
  const zo_options& options() const { return options_; }

  // ---- 1. Begin a step -------------------------------------------------------------------
  // The step perturbs the blocks whose role is zeroth-order or mixed (mixed: the entries `mask`
  // does not select). A pending perturbation applied with other roles is removed first. Checks
  // the store and the limits before any parameter changes.
  void begin(const Store& store, std::uint64_t step, std::span<const block_role> roles,
             const element_mask& mask, const step_limits& limits) {
    if (pending_.size() > 0 && !std::ranges::equal(roles, pending_roles_)) {
      requested_.assign(roles.begin(), roles.end());
      remove_pending(store);
      roles = requested_;
    }
    store_ = &store;
    mask_ = mask;
    check(store, step, limits);
    require(roles.size() == store.size(), "one role per block is needed");
    if (roles.data() != roles_.data()) roles_.assign(roles.begin(), roles.end());
    require(std::ranges::any_of(roles_, [](block_role r) { return r != block_role::frozen; }), [&] {
      return "the layer selector left no block to train at step " + std::to_string(step);
    });
    if constexpr (!pass_accepts_element_mask<pass_type>) {
      require(std::ranges::none_of(roles_, [](block_role r) { return r == block_role::mixed; }),
              "the perturbation policy does not support intra-layer masks (mixed "
              "blocks); use a dense perturbation");
    }
    if (exact()) prepare_snapshots(store);
    step_ = static_cast<std::uint32_t>(step);
    epsilon_ = limits.epsilon;
    samples_ = limits.samples;
    applied_ = pending_;
    desired_.clear();
    next_.clear();
    saved_ = exact() && pending_.size() > 0;
  }

  // ---- 2. Measure --------------------------------------------------------------------------
  // Runs the estimator on a probe over this engine; evaluate() is the caller's loss at the point
  // the probe moved to. The step is over at the first non-finite loss: no later evaluation runs.
  template <class Estimator, class Evaluate>
  measurement measure(const Estimator& estimator, Evaluate&& evaluate, std::span<double> g) {
    measuring_probe<step_engine, std::remove_reference_t<Evaluate>> probe(*this, evaluate);
    const double loss = estimator.estimate(probe, g);
    if (probe.failed()) return {probe.failed_loss(), true};
    return {loss, !std::isfinite(loss)};
  }

  // What a probe does: move the point the next evaluation needs, and bring memory there.
  void shift(std::size_t sample, double alpha) {
    detail::require_sample(sample);
    desired_.add(step_, static_cast<std::uint8_t>(sample), static_cast<real_type>(alpha));
  }
  void reset() { desired_.clear(); }
  void move() { move_all(); }

  // The offset of the first point `estimator` evaluates at `step`, learnt by running it on a
  // recorder instead of the parameters (a fused step ends there).
  template <class Estimator>
  offset first_point(const Estimator& estimator, std::uint64_t step) {
    first_point_probe<real_type> recorder(static_cast<std::uint32_t>(step));
    dry_run_gradients_.assign(measured_values(estimator), 0.0);
    estimator.estimate(recorder, std::span<double>(dry_run_gradients_));
    return recorder.offset();
  }

  // ---- 3. Commit ---------------------------------------------------------------------------
  // The step rule's update (rule.update(context), see update_context), applied in the pass that
  // returns each block to the base point and, when `next` is not empty (a fused step), moves it
  // on to the next step's first point. Returns false when the update was refused (a coefficient
  // usable_update rejects): every block is then back at the base point — bit for bit in exact
  // mode unless the step was fused; blocks updated before the refused one keep their update
  // otherwise.
  template <class Rule>
  bool commit(Rule& rule, std::span<const double> g, const offset& next) {
    next_ = next;
    refused_ = false;
    update_context context(*this, g);
    rule.update(context);
    if (refused_) {
      return_to_base();
      return false;
    }
    move_to(next);
    return true;
  }

  // Moves every block to base + offset (bit for bit from the snapshot in exact mode); does
  // nothing when memory is there already.
  void move_to(const offset& point) {
    desired_ = point;
    move_all();
  }
  void return_to_base() { move_to(offset()); }

  // After a step: the offset memory holds from the new base point (a fused step's next first
  // point), which the next begin() continues from.
  void end_step() {
    pending_ = applied_;
    pending_roles_ = roles_;
  }
  // A step that threw: the parameters are back at the base point and nothing is pending.
  void abandon_step() {
    return_to_base();
    pending_.clear();
  }
  bool has_pending() const { return pending_.size() > 0; }
  // Removes a fused step's pending perturbation (one pass over the blocks it was applied to).
  void remove_pending(const Store& store) {
    if (pending_.size() == 0) return;
    store_ = &store;
    roles_ = pending_roles_;
    applied_ = pending_;
    saved_ = exact();
    return_to_base();
    pending_.clear();
  }

  std::uint32_t step() const { return step_; }
  std::span<const block_role> roles() const { return roles_; }

  // What a step rule sees of a step: the projected gradients and each perturbed block, whose
  // change it describes (scale, keyed directions, and the contributions its perturbation's pass
  // accepts).
  class block_change;
  class update_context {
   public:
    // The type the rule computes in and keeps its state in (float for 16-bit blocks).
    using value_type = typename step_engine::real_type;
    using backend_type = typename step_engine::backend_type;

    // g: the estimator's measured values, the q projected gradients first (begin()'s samples).
    update_context(step_engine& engine, std::span<const double> g)
        : engine_(engine), g_(g.first(engine.samples_)), second_(g.subspan(engine.samples_)) {}
    std::uint64_t step() const { return engine_.step_; }
    std::uint64_t seed() const { return engine_.options_.seed; }
    zo::generator generator() const { return engine_.options_.generator; }
    // The estimator's ε, for rules that turn projected gradients back into loss differences
    // (FZOO divides by the spread of the losses, ε·g_j apart from the base loss).
    double epsilon() const { return engine_.epsilon_; }
    // The store's backend, for the rule's own kernels.
    backend_type backend() const { return backend_of(*engine_.store_); }
    const Perturbation& perturbation() const { return engine_.perturbation_; }
    std::span<const double> projected_gradients() const { return g_; }
    // What the estimator measured after them, when it measures curvature (empty otherwise):
    // (L+ + L− − 2·L0) / ε² per direction (zo::curvature_difference).
    std::span<const double> second_differences() const { return second_; }
    // f(block, change) for every zeroth-order block; each block is moved as soon as its change
    // is known. A change that usable_update refuses ends the loop before its block is touched.
    template <class F>
    void for_each_block(F&& f) {
      engine_.update_blocks(f);
    }
    // The dense estimate ĝ = (1/q) Σ_j g_j·z_j of one block, in the perturbation's own
    // directions, for rules that transform it before applying it (ZO-SignSGD, momentum on ĝ).
    // The buffer is lent by the step and reused for the next block.
    template <class Block>
    value_type* dense_estimate(const Block& block) {
      return engine_.dense_estimate(block, g_);
    }

   private:
    step_engine& engine_;
    std::span<const double> g_, second_;
  };

  class block_change {
   public:
    block_change(std::vector<direction_term<real_type>>& terms, std::uint32_t step)
        : terms_(terms), step_(step) {}
    void scale_by(double factor) { sweep.scale *= static_cast<real_type>(factor); }
    void add_direction(std::size_t sample, double alpha) {
      detail::require_sample(sample);
      terms_.push_back({step_, static_cast<std::uint8_t>(sample), static_cast<real_type>(alpha)});
    }
    // alpha · values, elementwise (values: one per element of the block).
    void add_dense(const real_type* values, double alpha) {
      static_assert(pass_accepts_dense_addend<pass_type>,
                    "zo: the perturbation policy's pass does not accept dense terms from the step "
                    "rule (its pass_type has no with_dense_addend)");
      sweep.addend = {values, static_cast<real_type>(alpha)};
    }
    // alpha · left · rightᵀ with left (rows × rank) and right (cols × rank), row-major.
    void add_low_rank(const real_type* left, const real_type* right, std::size_t rank,
                      double alpha) {
      static_assert(pass_accepts_low_rank_addend<pass_type>,
                    "zo: the perturbation policy's pass does not accept low-rank terms from the "
                    "step rule; pair the rule with zo::low_rank_perturbation");
      sweep.low_rank = {left, right, rank, static_cast<real_type>(alpha)};
    }
    // The change so far: scale and contributions (the keyed terms are kept aside).
    pass_type sweep{};

   private:
    std::vector<direction_term<real_type>>& terms_;
    std::uint32_t step_;
  };

 private:
  bool exact() const { return options_.restore == restore_mode::exact; }
  // Whether passes read the base point from the snapshot rather than recovering it.
  bool from_snapshot() const { return exact() && saved_; }

  template <class F>
  void update_blocks(F& f) {
    desired_ = next_;
    for (std::size_t i = 0; i < store_->size(); ++i) {
      if (!perturbed(roles_[i])) continue;
      terms_.clear();
      block_change change(terms_, step_);
      const auto block = store_->block(i);
      f(block, change);
      if (!detail::usable_update(change.sweep, terms_)) {
        refused_ = true;
        return;
      }
      change.sweep.rounding = options_.rounding;
      change.sweep.rounding_step = step_;
      move(i, block, change.sweep, next_);
    }
    moved_all();
  }

  // One pass in the compute type from the block scaled by zero (so only the directions remain),
  // or several when q exceeds a pass's terms, the later ones adding to what the first wrote. Over
  // 16-bit blocks the pass starts from the cleared buffer instead, which has the compute type.
  template <class Block>
  real_type* dense_estimate(const Block& block, std::span<const double> g) {
    real_type* out = estimate_scratch_.request(block.size());
    pass_type_t<Perturbation, real_type> sweep{};
    if constexpr (is_16bit<value_type>) {
      backend_of(*store_).for_each_index(block.size(), detail::zero_fill_kernel<real_type>{out});
      sweep.source = out;
    } else {
      sweep.source = block.data();
    }
    sweep.target = out;
    sweep.scale = real_type(0);
    sweep.seed = options_.seed;
    sweep.generator = options_.generator;
    const double inverse_q = 1.0 / static_cast<double>(g.size());
    for (std::size_t j = 0; j < g.size(); ++j) {
      if (sweep.terms.full()) {
        perturbation_.apply(backend_of(*store_), block, sweep, scratch_);
        sweep.source = out;
        sweep.scale = real_type(1);
        sweep.terms.clear();
      }
      sweep.terms.items[sweep.terms.count++] = {step_, static_cast<std::uint8_t>(j),
                                                static_cast<real_type>(g[j] * inverse_q)};
    }
    perturbation_.apply(backend_of(*store_), block, sweep, scratch_);
    return out;
  }

  void move_all() {
    if (same_terms(applied_, desired_)) return;
    for (std::size_t i = 0; i < store_->size(); ++i) {
      if (!perturbed(roles_[i])) continue;
      terms_.clear();
      move(i, store_->block(i), pass_type{}, offset());
    }
    moved_all();
  }

  // After a sweep over every block: memory holds the desired point, and from the first sweep on
  // the snapshot holds the base point.
  void moved_all() {
    applied_ = desired_;
    saved_ = exact();
  }

  // One move of block i: block ← scale·base + terms + contributions + next, where base is read
  // from the snapshot in exact mode and recovered as (block − applied) in arithmetic mode, and
  // terms_ holds the step rule's keyed update. Without next, the desired offset (relative to the
  // base, scaled with it) joins the terms. With next (a fused step), the updated base point is
  // also written to the snapshot, and next is added on top of it unscaled.
  template <class Block>
  void move(std::size_t i, const Block& block, const pass_type& change, const offset& next) {
    pass_type sweep = change;
    sweep.seed = options_.seed;
    sweep.generator = options_.generator;
    if constexpr (pass_accepts_element_mask<pass_type>) {
      if (roles_[i] == block_role::mixed) sweep.mask = mask_;
    }
    sweep.target = block.data();
    sweep.source = block.data();
    value_type* snapshot = nullptr;
    if (exact()) {
      snapshot = backend_type::data(snapshots_[i]);
      if (saved_) {
        sweep.source = snapshot;
      } else {
        sweep.save_to = snapshot;
      }
    }
    if (next.size() == 0) {
      for (std::size_t k = 0; k < desired_.size(); ++k)
        merge(desired_[k], sweep.scale);
    }
    if (!from_snapshot()) {
      for (std::size_t k = 0; k < applied_.size(); ++k)
        merge(applied_[k], -sweep.scale);
    }
    std::erase_if(terms_, [](const auto& t) { return t.alpha == real_type(0); });
    pending_terms_.clear();
    for (std::size_t k = 0; k < next.size(); ++k) {
      if (next[k].alpha != real_type(0)) pending_terms_.push_back(next[k]);
    }
    run_passes(block, sweep, snapshot);
  }

  // An offset relative to the source, scaled like it, joins the keyed terms; merging keeps each
  // direction to one generation per pass.
  void merge(const direction_term<real_type>& t, real_type factor) {
    for (auto& existing : terms_) {
      if (existing.step == t.step && existing.sample == t.sample) {
        existing.alpha += factor * t.alpha;
        return;
      }
    }
    terms_.push_back({t.step, t.sample, factor * t.alpha});
  }

  // More terms than a pass holds are split over passes; the next perturbation goes into the last
  // one, which alone writes the base point.
  template <class Block>
  void run_passes(const Block& block, pass_type& sweep, value_type* snapshot) {
    std::size_t taken = 0;
    for (std::uint8_t pass_index = 0;; ++pass_index) {
      // Each pass of an update rounds a 16-bit block with words of its own.
      sweep.rounding_sample = pass_index;
      const std::size_t room = max_terms_per_pass - pending_terms_.size();
      const bool last = terms_.size() - taken <= room;
      const std::size_t count = last ? terms_.size() - taken : max_terms_per_pass;
      for (std::size_t k = 0; k < count; ++k)
        sweep.terms.items[sweep.terms.count++] = terms_[taken + k];
      taken += count;
      if (last) {
        sweep.base_terms = sweep.terms.size();
        for (const auto& t : pending_terms_)
          sweep.terms.items[sweep.terms.count++] = t;
        if (!pending_terms_.empty() && snapshot != nullptr) {
          // The snapshot is to hold the new base point; the old one is no longer needed.
          sweep.base_to = snapshot;
          sweep.save_to = nullptr;
        }
      }
      perturbation_.apply(backend_of(*store_), block, sweep, scratch_);
      if (last) break;
      // Later passes continue from what the first wrote, without the step rule's contributions.
      sweep.source = block.data();
      sweep.save_to = nullptr;
      sweep.scale = real_type(1);
      sweep.terms.clear();
      if constexpr (pass_accepts_dense_addend<pass_type>) sweep.addend = {};
      if constexpr (pass_accepts_low_rank_addend<pass_type>) sweep.low_rank = {};
    }
  }

  static bool same_terms(const offset& a, const offset& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < a.size(); ++k) {
      if (a[k].step != b[k].step || a[k].sample != b[k].sample || a[k].alpha != b[k].alpha) {
        return false;
      }
    }
    return true;
  }

  void check(const Store& store, std::uint64_t step, const step_limits& limits) const;
  void prepare_snapshots(const Store& store) {
    snapshots_.resize(store.size());
    for (std::size_t i = 0; i < store.size(); ++i) {
      const std::size_t n = perturbed(roles_[i]) ? store.block(i).size() : 0;
      if (snapshots_[i].size() != n) snapshots_[i].resize(n);
    }
  }

  Perturbation perturbation_;
  zo_options options_;
  const Store* store_ = nullptr;
  std::uint32_t step_ = 0;
  double epsilon_ = 1;       // the estimator's, as begin() was given it
  std::size_t samples_ = 1;  // its directions per step, as begin() was given them
  std::vector<block_role> roles_, pending_roles_, requested_;
  element_mask mask_;
  std::vector<typename backend_type::template buffer<value_type>> snapshots_;
  scratch_arena<backend_type, real_type> scratch_;           // the perturbation's, per pass
  scratch_arena<backend_type, real_type> estimate_scratch_;  // dense_estimate's
  std::vector<direction_term<real_type>> terms_, pending_terms_;
  std::vector<double> dry_run_gradients_;  // written by first_point's dry run, never read
  offset applied_;                         // the offset memory holds from the base point
  offset desired_;                         // the offset the next evaluation needs
  offset next_;           // where commit leaves memory: the next step's first point, or the base
  offset pending_;        // applied_ as the last step ended
  bool saved_ = false;    // the snapshot holds the base point
  bool refused_ = false;  // the step rule's update was refused
};

// Everything a step checks before it changes a parameter.
template <class Store, class Perturbation>
void step_engine<Store, Perturbation>::check(const Store& store, std::uint64_t step,
                                             const step_limits& limits) const {
  require(store.size() > 0, "the parameter store has no blocks");
  if constexpr (is_16bit<value_type>) {
    // Subtracting a perturbation rounds again in 16 bits, and the residues add up
    // (docs/precision.md measures the drift).
    require(exact(),
            "16-bit blocks need restore_mode::exact: arithmetic restore cannot return them to "
            "their values (each perturbation and its removal round to 8 or 11 bits)");
  }
  require(std::isfinite(limits.learning_rate) && limits.learning_rate >= 0, [&] {
    return "learning rate at step " + std::to_string(step) +
           " must be non-negative and finite, got " + std::to_string(limits.learning_rate);
  });
  require(step < (std::uint64_t{1} << 32), [&] {
    return "step index " + std::to_string(step) + " exceeds the 2^32 steps a key holds";
  });
  const std::size_t q = limits.samples;
  require(q >= 1 && q <= max_samples_per_step, [&] {
    return "the estimator asks for " + std::to_string(q) + " directions per step; 1 to " +
           std::to_string(max_samples_per_step) + " are supported";
  });
  require_positive_finite(limits.epsilon, "estimator epsilon");
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto b = store.block(i);
    auto block = [&](const char* problem) {
      return [&b, problem] { return "block '" + std::string(b.name()) + "' " + problem; };
    };
    require(b.rows() > 0 && b.cols() > 0, block("has an empty shape"));
    require(b.size() == b.rows() * b.cols(), [&] {
      return "block '" + std::string(b.name()) + "' has shape " + std::to_string(b.rows()) + "x" +
             std::to_string(b.cols()) + " but holds " + std::to_string(b.size()) + " elements";
    });
    require(b.data() != nullptr, block("has no storage"));
    require(b.size() < max_elements_per_block, block("has more than 2^48 elements"));
    require(b.id() <= std::numeric_limits<std::uint32_t>::max(), block("has an id above 2^32 - 1"));
    if constexpr (requires { perturbation_.validate(b); }) perturbation_.validate(b);
  }
}

}  // namespace zo
