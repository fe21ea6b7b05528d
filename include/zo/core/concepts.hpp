// SPDX-License-Identifier: Apache-2.0
// Every requirement zo places on user types, in one place.
//
// Each role is a C++20 concept. The public entry points (zo_optimizer and the stores' users)
// do not constrain their templates with these directly; they call the check_* functions below,
// whose static_asserts name the exact member that is missing, so a user composing a custom
// policy gets "zo: ... needs ..." instead of a page of substitution failures.
// docs/concepts.md gives the same requirements as tables of valid expressions.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>

#include "zo/config.hpp"
#include "zo/core/gradient_view.hpp"
#include "zo/core/pass.hpp"
#include "zo/core/roles.hpp"
#include "zo/random/keyed.hpp"

namespace zo {

// ---------------------------------------------------------------------------------------------
// What a block may store: float or double, computed in as stored, or a 16-bit type
// (zo::bfloat16, zo::float16) computed in float.
template <class T>
concept element_type = std::floating_point<T> || is_16bit<T>;

// Block: one tensor of the model.
template <class B>
concept parameter_block = requires(const B& b) {
  typename B::value_type;
  requires element_type<typename B::value_type>;
  { b.id() } -> std::convertible_to<std::size_t>;
  { b.name() } -> std::convertible_to<std::string_view>;
  { b.layer() } -> std::convertible_to<std::optional<int>>;
  { b.rows() } -> std::convertible_to<std::size_t>;
  { b.cols() } -> std::convertible_to<std::size_t>;
  { b.size() } -> std::convertible_to<std::size_t>;
  { b.decay() } -> std::convertible_to<bool>;
  { b.data() } -> std::same_as<typename B::value_type*>;
};

// Backend: schedules a policy's element functor over an index range; owns scratch buffers.
namespace archetypes {
// The least an element functor is: callable with an index on host and device.
struct index_functor {
  ZO_HOST_DEVICE void operator()(std::size_t) const {}
};
}  // namespace archetypes

// A backend is a value (a thread count, an execution policy with its stream) that a store hands
// to every pass.
template <class B>
concept execution_backend = std::copy_constructible<B> &&
    requires(const B& b, std::size_t n, const archetypes::index_functor& f) {
  typename B::template buffer<float>;
  b.for_each_index(n, f);
  b.for_each_index(n, f, n);
};

// Parameter store: an indexed sequence of blocks of one element type on one backend.
template <class S>
concept parameter_store = requires(const S& s, std::size_t i) {
  typename S::value_type;
  typename S::backend_type;
  requires execution_backend<typename S::backend_type>;
  { s.size() } -> std::convertible_to<std::size_t>;
  { s.block(i) } -> parameter_block;
  requires std::same_as<typename decltype(s.block(i))::value_type, typename S::value_type>;
};

// The backend a store's passes run on: the store's own value (backend()), or, for a store that
// carries none, a default-constructed one.
template <class Store>
auto backend_of(const Store& store) {
  if constexpr (requires { store.backend(); }) {
    return typename Store::backend_type(store.backend());
  } else {
    return typename Store::backend_type{};
  }
}

// Objective: the loss at the store's current values, called either with no argument or with
// the step index (to pick that step's mini-batch). It must not modify the store.
template <class F>
concept objective = (std::invocable<F&> && std::convertible_to<std::invoke_result_t<F&>, double>) ||
                    (std::invocable<F&, std::uint64_t> &&
                     std::convertible_to<std::invoke_result_t<F&, std::uint64_t>, double>);

// ---------------------------------------------------------------------------------------------
// Archetypes: the least a policy may rely on. Concepts are checked against these, so a policy
// that needs more than the archetype offers is rejected even before it meets a real optimizer.
namespace archetypes {

struct block {
  using value_type = float;
  std::size_t id() const { return 0; }
  std::string_view name() const { return {}; }
  std::optional<int> layer() const { return std::nullopt; }
  std::size_t rows() const { return 1; }
  std::size_t cols() const { return 1; }
  std::size_t size() const { return 1; }
  bool decay() const { return true; }
  float* data() const { return nullptr; }
};

struct backend {
  template <class T>
  struct buffer {};
  template <class F>
  void for_each_index(std::size_t, const F&, std::size_t = 1) const {}
};

struct perturbation {};

struct store {
  using value_type = float;
  using backend_type = backend;
  std::size_t size() const { return 0; }
  archetypes::block block(std::size_t) const { return {}; }
};

// What an estimator may do: move along direction j, return to base, evaluate the loss (or, as
// a distributed estimator does, measure it without ending the step at a non-finite value), and
// ask whether evaluations are real (false while a fused step learns where the next one starts).
struct probe {
  static constexpr bool measures = true;
  void shift(std::size_t /*sample*/, double /*alpha*/) {}
  void reset() {}
  double evaluate() { return 0; }
  double measure() { return 0; }
};

// What a step rule's per-block callback may do to one block's update.
struct block_change {
  void scale_by(double) {}
  void add_direction(std::size_t /*sample*/, double /*alpha*/) {}
};

// What a zeroth-order step rule sees of a step.
struct zo_update {
  using value_type = float;
  using backend_type = backend;
  archetypes::perturbation policy;
  std::uint64_t step() const { return 0; }
  std::uint64_t seed() const { return 0; }
  const archetypes::perturbation& perturbation() const { return policy; }
  std::span<const double> projected_gradients() const { return {}; }
  template <class F>
  void for_each_block(F&& f) {
    block_change change;
    f(archetypes::block{}, change);
  }
};

}  // namespace archetypes

// ---------------------------------------------------------------------------------------------
// Perturbation policy: runs one pass (pass.hpp) over a block with its own directions, taking
// any temporary memory from the scratch arena.
template <class P, class Store = archetypes::store>
concept perturbation_policy = std::copy_constructible<P> &&
    requires(const P& p, const typename Store::backend_type& backend,
             const decltype(std::declval<const Store&>().block(0))& block,
             const pass_type_t<P, typename Store::value_type>& sweep,
             scratch_arena<typename Store::backend_type, typename Store::value_type>& scratch) {
  p.apply(backend, block, sweep, scratch);
};

// Estimator: drives a probe through its evaluation pattern and fills one projected gradient per
// direction; returns the loss it reports for the step.
template <class E>
concept estimator = std::copy_constructible<E> &&
    requires(const E& e, archetypes::probe& probe, std::span<double> g) {
  { e.samples() } -> std::convertible_to<std::size_t>;
  { e.epsilon() } -> std::convertible_to<double>;
  { e.estimate(probe, g) } -> std::convertible_to<double>;
};

// An estimator may also measure curvature along its directions: second_differences() says how
// many values it writes after the q projected gradients (HiZOO's (L+ + L− − 2·L0) / ε²), which the
// step rule reads as u.second_differences(). measured_values(e) is the length of the span
// estimate() fills: the projected gradients and those second differences.
template <class E>
std::size_t measured_values(const E& e) {
  if constexpr (requires { e.second_differences(); }) {
    return e.samples() + e.second_differences();
  } else {
    return e.samples();
  }
}

// An estimator that measures one direction at a time, which q_sample and the MPI estimators
// repeat over directions: baseline(probe) evaluates what the directions share (one-sided's L(θ),
// or NaN when nothing is), measure(probe, j, baseline, g) measures direction j, writes its
// projected gradient to g and returns the loss it reports.
template <class E>
concept measuring_estimator = estimator<E> &&
    requires(const E& e, archetypes::probe& probe, std::size_t j, double& g) {
  { e.baseline(probe) } -> std::convertible_to<double>;
  { e.measure(probe, j, 0.0, g) } -> std::convertible_to<double>;
};

// Distribution of a dense perturbation's direction entries: the four entries of one Philox group
// (any thread, any device) and, on the host, a batch of batch_groups groups at once, which must
// equal the groups one by one (the CPU backend vectorises over batches).
template <class D>
concept direction_distribution = requires(const direction_key& key, std::uint64_t g,
                                          float (&four)[group_width], double (&four_d)[group_width],
                                          float (&many)[batch_width],
                                          double (&many_d)[batch_width]) {
  D::group(key, g, four);
  D::group(key, g, four_d);
  D::batch(key, g, many);
  D::batch(key, g, many_d);
};

// Zeroth-order step rule: a learning rate per step and an update expressed per block. update may
// change the rule's own state (momentum), so it is called on a non-const rule.
template <class R>
concept zo_step_rule = std::copy_constructible<R> &&
    requires(R& r, const R& cr, archetypes::zo_update& u, std::uint64_t step) {
  { cr.learning_rate(step) } -> std::convertible_to<double>;
  r.update(u);
};

// Layer selector: assigns every block a role for the given step.
template <class S, class Store = archetypes::store>
concept layer_selector = std::copy_constructible<S> &&
    requires(const S& s, const Store& store, std::uint64_t step, std::span<block_role> roles) {
  s.select(step, store, roles);
};

// The hybrid's objective: the loss for zeroth-order evaluations, and the loss with gradients
// for the requested blocks only (the objective decides how; a transformer backprops from the
// loss down to the lowest requested layer and no further). As zo_optimizer's objective, each may
// take the step index (to pick that step's mini-batch): loss(step), loss_and_gradients(g, step).
template <class F>
concept step_loss = requires(F& f, std::uint64_t step) {
  { f.loss() } -> std::convertible_to<double>;
}
|| requires(F& f, std::uint64_t step) {
  { f.loss(step) } -> std::convertible_to<double>;
};
template <class F, class T>
concept step_loss_and_gradients = requires(F& f, gradient_view<T>& gradients) {
  { f.loss_and_gradients(gradients) } -> std::convertible_to<double>;
}
|| requires(F& f, gradient_view<T>& gradients, std::uint64_t step) {
  { f.loss_and_gradients(gradients, step) } -> std::convertible_to<double>;
};
template <class F, class T>
concept differentiable_objective = step_loss<F> && step_loss_and_gradients<F, T>;

// First-order step rule: a learning rate per step and an update of one block from its gradient
// (scaled by gradient_scale, the clipping factor).
template <class R>
concept fo_step_rule = std::copy_constructible<R> &&
    requires(R& r, const R& cr, const archetypes::block& block, const float* gradient,
             std::uint64_t step) {
  { cr.learning_rate(step) } -> std::convertible_to<double>;
  r.apply(archetypes::backend{}, block, gradient, 1.0, step);
};

// ---------------------------------------------------------------------------------------------
// Readable diagnostics. Each assertion names the missing piece; the concept check that follows
// it catches anything the list does not spell out.
template <class S>
constexpr bool check_parameter_store() {
  static_assert(
      requires { typename S::value_type; },
      "zo: the parameter store needs a member type value_type (float, double, zo::bfloat16 or "
      "zo::float16)");
  static_assert(
      requires { typename S::backend_type; },
      "zo: the parameter store needs a member type backend_type (e.g. "
      "zo::backends::cpu)");
  static_assert(
      requires(const S& s) {
        { s.size() } -> std::convertible_to<std::size_t>;
      },
      "zo: the parameter store needs size() returning the number of blocks");
  static_assert(
      requires(const S& s, std::size_t i) { s.block(i); },
      "zo: the parameter store needs block(i) returning a block");
  if constexpr (requires(const S& s, std::size_t i) { s.block(i); }) {
    using B = std::remove_cvref_t<decltype(std::declval<const S&>().block(0))>;
    static_assert(
        requires(const B& b) {
          { b.id() } -> std::convertible_to<std::size_t>;
        },
        "zo: a block needs id() returning its stable id");
    static_assert(
        requires(const B& b) {
          { b.name() } -> std::convertible_to<std::string_view>;
        },
        "zo: a block needs name() returning its name");
    static_assert(
        requires(const B& b) {
          { b.layer() } -> std::convertible_to<std::optional<int>>;
        },
        "zo: a block needs layer() returning std::optional<int>");
    static_assert(
        requires(const B& b) {
          { b.rows() } -> std::convertible_to<std::size_t>;
          { b.cols() } -> std::convertible_to<std::size_t>;
          { b.size() } -> std::convertible_to<std::size_t>;
        },
        "zo: a block needs rows(), cols() and size()");
    static_assert(
        requires(const B& b) {
          { b.decay() } -> std::convertible_to<bool>;
        },
        "zo: a block needs decay() saying whether weight decay applies");
    static_assert(
        requires(const B& b) { b.data(); },
        "zo: a block needs data() returning a pointer to its elements");
    static_assert(
        requires {
          typename B::value_type;
          requires element_type<typename B::value_type>;
        },
        "zo: a block needs a value_type naming its elements: float, double, zo::bfloat16 or "
        "zo::float16 (zo/core/float16.hpp; at::BFloat16 and at::Half memory is wrapped as the "
        "latter two)");
    static_assert(parameter_block<B>, "zo: the store's block type does not model parameter_block");
  }
  static_assert(parameter_store<S>, "zo: the type does not model zo::parameter_store");
  return true;
}

template <class F>
constexpr bool check_objective() {
  static_assert(objective<F>,
                "zo: the objective must be callable as f() or f(std::uint64_t step) and return "
                "a loss convertible to double");
  return true;
}

template <class P, class Store>
constexpr bool check_perturbation_policy() {
  static_assert(
      perturbation_policy<P, Store>,
      "zo: the perturbation policy needs apply(backend, block, pass, scratch) const, pass being "
      "its pass_type<T> (zo::pass<T> unless it names one)");
  return true;
}

template <class E>
constexpr bool check_estimator() {
  static_assert(
      requires(const E& e) {
        { e.samples() } -> std::convertible_to<std::size_t>;
      },
      "zo: the estimator needs samples() returning the directions per step");
  static_assert(
      requires(const E& e) {
        { e.epsilon() } -> std::convertible_to<double>;
      },
      "zo: the estimator needs epsilon() returning the perturbation scale");
  static_assert(
      requires(const E& e, archetypes::probe& p, std::span<double> g) {
        { e.estimate(p, g) } -> std::convertible_to<double>;
      },
      "zo: the estimator needs estimate(probe, std::span<double> g) returning the loss");
  static_assert(estimator<E>, "zo: the type does not model zo::estimator");
  return true;
}

template <class E>
constexpr bool check_measuring_estimator() {
  check_estimator<E>();
  static_assert(
      requires(const E& e, archetypes::probe& p) {
        { e.baseline(p) } -> std::convertible_to<double>;
      },
      "zo: a base estimator (of q_sample or an MPI estimator) needs baseline(probe) returning the "
      "loss its directions share (NaN when none)");
  static_assert(
      requires(const E& e, archetypes::probe& p, std::size_t j, double& g) {
        { e.measure(p, j, 0.0, g) } -> std::convertible_to<double>;
      },
      "zo: a base estimator (of q_sample or an MPI estimator) needs measure(probe, j, baseline, "
      "double& g) measuring direction j and returning its loss");
  static_assert(measuring_estimator<E>, "zo: the type does not model zo::measuring_estimator");
  return true;
}

template <class D>
constexpr bool check_direction_distribution() {
  static_assert(
      requires(const direction_key& key, std::uint64_t g, float(&four)[group_width]) {
        D::group(key, g, four);
      },
      "zo: a direction distribution needs static group(key, g, T (&)[group_width]) giving the "
      "four entries of Philox group g");
  static_assert(
      requires(const direction_key& key, std::uint64_t g, float(&many)[batch_width]) {
        D::batch(key, g, many);
      },
      "zo: a direction distribution needs static batch(key, first_group, T (&)[batch_width]) "
      "giving batch_groups groups at once, equal to group() one by one");
  static_assert(direction_distribution<D>,
                "zo: the type does not model zo::direction_distribution (group and batch for "
                "float and double)");
  return true;
}

template <class R>
constexpr bool check_zo_step_rule() {
  static_assert(
      requires(const R& r, std::uint64_t s) {
        { r.learning_rate(s) } -> std::convertible_to<double>;
      },
      "zo: the step rule needs learning_rate(step) returning the learning rate");
  static_assert(
      requires(R & r, archetypes::zo_update & u) { r.update(u); },
      "zo: the step rule needs update(u), applying its change through "
      "u.for_each_block(...)");
  static_assert(zo_step_rule<R>, "zo: the type does not model zo::zo_step_rule");
  return true;
}

// A step rule that works only with one perturbation (LOZO-M's momentum lives in the factor space
// of low_rank_perturbation) names it as required_perturbation.
template <class R, class P>
constexpr bool check_step_rule_pairing() {
  if constexpr (requires { typename R::required_perturbation; }) {
    static_assert(std::same_as<typename R::required_perturbation, P>,
                  "zo: this step rule needs the perturbation policy named by its "
                  "required_perturbation (low_rank_momentum: zo::low_rank_perturbation)");
  }
  return true;
}

// A step rule that reads second differences (u.second_differences()) says so with
// needs_second_differences; the estimator must measure them.
template <class R, class E>
constexpr bool check_estimator_pairing() {
  if constexpr (requires { R::needs_second_differences; }) {
    static_assert(
        !R::needs_second_differences || requires(const E& e) { e.second_differences(); },
        "zo: this step rule reads second differences (L+ + L- - 2 L0), which the "
        "estimator does not measure; pair it with zo::curvature_difference");
  }
  return true;
}

template <class S, class Store>
constexpr bool check_layer_selector() {
  static_assert(layer_selector<S, Store>,
                "zo: the layer selector needs select(step, store, std::span<zo::block_role>) "
                "const");
  return true;
}

}  // namespace zo
