// SPDX-License-Identifier: Apache-2.0
// Hybrid first-order / zeroth-order optimizer (LoHO): a selector splits the blocks per step into
// first-order (gradients from backprop), zeroth-order (the ZO part's perturbations) and frozen
// blocks. One step follows the LoHO reference order: ZO estimate (forwards with only ZO blocks
// perturbed), FO forward + backward at the unperturbed point, ZO update, FO step.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "zo/core/concepts.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/gradient_view.hpp"
#include "zo/core/reports.hpp"
#include "zo/core/state_io.hpp"
#include "zo/core/step_engine.hpp"
#include "zo/core/typed_slot.hpp"
#include "zo/optimizers/mezo.hpp"
#include "zo/optimizers/zo_optimizer.hpp"
#include "zo/selectors/layers.hpp"
#include "zo/step_rules/first_order.hpp"

namespace zo {

struct hybrid_options {
  // Global gradient-norm clipping of the first-order gradients (LoHO: 1.0); 0 turns it off.
  double clip_norm = 1.0;
};

namespace detail {

// Zeroes the gradient at a mixed block's zeroth-order entries.
template <class T>
struct mask_gradient_kernel {
  T* gradient;
  std::size_t size;
  std::uint32_t block;
  element_mask mask;
  ZO_HOST_DEVICE void operator()(std::size_t g) const {
    bool first_order[4];
    mask.group(block, g, first_order);
    for (std::size_t l = 0; l < 4 && g * 4 + l < size; ++l) {
      if (!first_order[l]) gradient[g * 4 + l] = T(0);
    }
  }
};

// A mixed block as the first-order rule sees it: without weight decay, which would otherwise
// reach its zeroth-order entries too.
template <class Block>
struct without_decay : Block {
  explicit without_decay(const Block& b) : Block(b) {}
  bool decay() const { return false; }
};

template <class T>
struct fill_kernel {
  T* out;
  T value;
  ZO_HOST_DEVICE void operator()(std::size_t i) const { out[i] = value; }
};

// Partial sums of squares over fixed chunks, so the total does not depend on the thread count.
template <class T>
struct square_sum_kernel {
  const T* values;
  std::size_t size, chunk;
  double* partial;
  ZO_HOST_DEVICE void operator()(std::size_t c) const {
    double sum = 0;
    const std::size_t end = (c + 1) * chunk < size ? (c + 1) * chunk : size;
    for (std::size_t i = c * chunk; i < end; ++i)
      sum += double(values[i]) * double(values[i]);
    partial[c] = sum;
  }
};

}  // namespace detail

template <class ZoPart, class FoRule, class Selector>
class hybrid {
  static_assert(fo_step_rule<FoRule>,
                "zo: the first-order step rule needs learning_rate(step) and "
                "apply(backend, block, gradient, gradient_scale, step)");

 public:
  hybrid(ZoPart zo_part, FoRule fo_rule, Selector selector, hybrid_options options = {})
      : zo_(std::move(zo_part)),
        fo_(std::move(fo_rule)),
        selector_(std::move(selector)),
        options_(options) {
    require_non_negative_finite(options.clip_norm, "hybrid: clip_norm");
  }

  // One hybrid step. The report is the zeroth-order part's; first_order_loss() and
  // gradient_norm() give the first-order part's loss and (unclipped) gradient norm. The objective
  // and callbacks take the forms zo_optimizer's do (differentiable_objective: each entry point
  // with or without the step index); callbacks' after_step runs once the whole step is applied.
  template <class Store, class Objective, class... Callbacks>
  step_report step(Store& store, Objective&& f, Callbacks&... callbacks) {
    using T = typename Store::value_type;
    static_assert(check_parameter_store<Store>());
    static_assert(!is_16bit<T>,
                  "zo: the hybrid's first-order rules update float or double blocks; 16-bit "
                  "blocks are served by the zeroth-order optimizers (docs/precision.md)");
    static_assert(differentiable_objective<std::remove_reference_t<Objective>, T>,
                  "zo: the hybrid's objective needs loss() and "
                  "loss_and_gradients(zo::gradient_view<T>&), both returning the loss (each may "
                  "also take the step index)");
    const std::uint64_t step = zo_.step_count();
    const element_mask mask = select_roles(store, step);
    zo_.begin_step(store, roles_, mask, false);
    step_reporter reporter(zo_.start_report(store), callbacks...);
    auto evaluate = [&] { return reporter.evaluated(call_loss(f, step)); };
    double gradient_scale = 1;
    measurement m;
    step_status status = step_status::completed;
    try {
      m = zo_.measure_step(store, evaluate);
      if (!m.nonfinite) {
        // LoHO's order: the first-order forward and backward at the unperturbed point.
        zo_.return_to_base(store);
        first_order_loss_ = first_order_gradients(store, f, mask, step, gradient_scale);
        if (!std::isfinite(first_order_loss_)) m = {first_order_loss_, true};
      }
      status = zo_.commit_step(store, m, no_next_point<Store>());
    } catch (...) {
      zo_.abandon_step(store);
      throw;
    }
    if (status == step_status::completed) apply_first_order(store, gradient_scale, step);
    return reporter.finish(status, m.loss, zo_.projected_gradients());
  }

  template <class Store, class Objective, class... Callbacks>
  run_summary optimize(Store& store, Objective&& f, std::uint64_t steps, Callbacks&&... callbacks) {
    return run_steps(steps, [&] { return step(store, f, callbacks...); });
  }

  // Saves what a resumed run needs besides the parameters: the zeroth-order part's state (step
  // index, step-rule state) and the first-order rule's (momentum, Adam moments, step counts).
  // The selectors zo provides decide from the step index alone, so they have no state.
  // The file is framed and checked as the zo_optimizer's (zo/core/state_io.hpp).
  void save(std::ostream& out) const {
    state_io::save_state(out, [&](std::ostream& payload) {
      state_io::write_tag(payload, state_tag, 1);
      zo_.save_section(payload);
      if constexpr (requires { fo_.save(payload); }) fo_.save(payload);
      if constexpr (requires { selector_.save(payload); }) selector_.save(payload);
    });
  }
  void load(std::istream& in) {
    state_io::load_state(in, state_tag, "hybrid", [&](std::istream& s) {
      state_io::read_version(s, 1, "hybrid");
      // A state refused part way (a section that does not parse) leaves every part as it was.
      std::stringstream before(std::ios::in | std::ios::out | std::ios::binary);
      zo_.save_section(before);
      if constexpr (requires { fo_.save(before); }) fo_.save(before);
      if constexpr (requires { selector_.save(before); }) selector_.save(before);
      try {
        zo_.load_section(s);
        if constexpr (requires { fo_.load(s); }) fo_.load(s);
        if constexpr (requires { selector_.load(s); }) selector_.load(s);
      } catch (const zo::invalid_argument&) {
        zo_.load_section(before);
        if constexpr (requires { fo_.load(before); }) fo_.load(before);
        if constexpr (requires { selector_.load(before); }) selector_.load(before);
        throw;
      }
    });
  }

  std::uint64_t step_count() const { return zo_.step_count(); }
  const std::vector<block_role>& roles() const { return roles_; }  // of the last step
  // Store indices of the last step's first-order (and mixed) blocks.
  const std::vector<std::size_t>& first_order_blocks() const { return first_order_; }
  double first_order_loss() const { return first_order_loss_; }
  double gradient_norm() const { return gradient_norm_; }
  const ZoPart& zeroth_order_part() const { return zo_; }
  // The zeroth-order part's step phases, for zo::io::replay.
  ZoPart& zeroth_order_part() { return zo_; }
  const FoRule& first_order_rule() const { return fo_; }
  const Selector& selector() const { return selector_; }
  // The selector's mask of the mixed blocks' first-order entries (inactive when it has none).
  element_mask selector_mask() const {
    if constexpr (requires { selector_.mask(); }) {
      return selector_.mask();
    } else {
      return {};
    }
  }

 private:
  // The hybrid's steps are never fused: the roles of the next step are not known here.
  template <class Store>
  static typename ZoPart::template offset_type<Store> no_next_point() {
    return typename ZoPart::template offset_type<Store>();
  }

  // The selector's roles for `step` (roles_), the first-order and mixed blocks (first_order_),
  // and the mask of the mixed blocks' first-order entries.
  template <class Store>
  element_mask select_roles(const Store& store, std::uint64_t step) {
    const double fo_lr = fo_.learning_rate(step);
    require(std::isfinite(fo_lr) && fo_lr >= 0, [&] {
      return "first-order learning rate at step " + std::to_string(step) +
             " must be non-negative and finite, got " + std::to_string(fo_lr);
    });
    roles_.assign(store.size(), block_role::zeroth_order);
    selector_.select(step, store, std::span<block_role>(roles_));
    first_order_.clear();
    for (std::size_t i = 0; i < store.size(); ++i) {
      if (roles_[i] == block_role::first_order || roles_[i] == block_role::mixed) {
        first_order_.push_back(i);
      }
    }
    const element_mask mask = selector_mask();
    for (std::size_t i : first_order_) {
      require(roles_[i] != block_role::mixed || mask.active, [&] {
        return "the layer selector gave block '" + std::string(store.block(i).name()) +
               "' the mixed role but has no mask()";
      });
    }
    return mask;
  }

  template <class Objective>
  static double call_loss(Objective& f, std::uint64_t step) {
    if constexpr (requires { f.loss(step); }) {
      return static_cast<double>(f.loss(step));
    } else {
      return static_cast<double>(f.loss());
    }
  }

  // The first-order blocks' gradients into the workspace, masked for mixed blocks; returns the
  // loss, and sets the clipping factor of gradient-norm clipping.
  template <class Store, class Objective>
  double first_order_gradients(const Store& store, Objective& f, const element_mask& mask,
                               std::uint64_t step, double& scale) {
    using T = typename Store::value_type;
    using Backend = typename Store::backend_type;
    auto& ws = workspace<Backend, T>();
    ws.gradients.resize(first_order_.size());
    ws.pointers.assign(first_order_.size(), nullptr);
    for (std::size_t k = 0; k < first_order_.size(); ++k) {
      const std::size_t n = store.block(first_order_[k]).size();
      if (ws.gradients[k].size() != n) ws.gradients[k].resize(n);
      ws.pointers[k] = Backend::data(ws.gradients[k]);
      backend_of(store).for_each_index(n, detail::fill_kernel<T>{ws.pointers[k], T(0)});
    }
    gradient_view<T> view(first_order_, ws.pointers);
    double loss;
    if constexpr (requires { f.loss_and_gradients(view, step); }) {
      loss = static_cast<double>(f.loss_and_gradients(view, step));
    } else {
      loss = static_cast<double>(f.loss_and_gradients(view));
    }
    if (!std::isfinite(loss)) return loss;
    for (std::size_t k = 0; k < first_order_.size(); ++k) {
      if (roles_[first_order_[k]] != block_role::mixed) continue;
      const auto block = store.block(first_order_[k]);
      backend_of(store).for_each_index(
          (block.size() + 3) / 4,
          detail::mask_gradient_kernel<T>{ws.pointers[k], block.size(),
                                          static_cast<std::uint32_t>(block.id()), mask},
          4);
    }
    gradient_norm_ = std::sqrt(sum_of_squares<Backend>(store, ws));
    if (options_.clip_norm > 0 && gradient_norm_ > options_.clip_norm) {
      scale = options_.clip_norm / (gradient_norm_ + 1e-6);  // as torch's clip_grad_norm_
    }
    return loss;
  }

  template <class Store>
  void apply_first_order(const Store& store, double scale, std::uint64_t step) {
    using T = typename Store::value_type;
    using Backend = typename Store::backend_type;
    auto& ws = workspace<Backend, T>();
    for (std::size_t k = 0; k < first_order_.size(); ++k) {
      const auto block = store.block(first_order_[k]);
      if (roles_[first_order_[k]] == block_role::mixed) {
        fo_.apply(backend_of(store), detail::without_decay(block), ws.pointers[k], scale, step);
      } else {
        fo_.apply(backend_of(store), block, ws.pointers[k], scale, step);
      }
    }
  }

  // The first-order part's buffers for one backend and element type, kept across steps so that
  // a step after the first allocates nothing.
  template <class Backend, class T>
  struct first_order_workspace {
    std::vector<typename Backend::template buffer<T>> gradients;
    std::vector<T*> pointers;
    typename Backend::template buffer<double> partial;  // the gradient norm's partial sums
    std::vector<double> host;
  };

  template <class Backend, class T>
  first_order_workspace<Backend, T>& workspace() {
    using type = first_order_workspace<Backend, T>;
    return workspace_.get_or<type>([] { return type{}; });
  }

  template <class Backend, class Store, class T>
  double sum_of_squares(const Store& store, first_order_workspace<Backend, T>& ws) {
    constexpr std::size_t chunk = 1 << 14;
    double total = 0;
    for (std::size_t k = 0; k < first_order_.size(); ++k) {
      const std::size_t n = store.block(first_order_[k]).size();
      const std::size_t chunks = (n + chunk - 1) / chunk;
      ws.partial.resize(chunks);
      backend_of(store).for_each_index(
          chunks, detail::square_sum_kernel<T>{ws.pointers[k], n, chunk, Backend::data(ws.partial)},
          chunk);
      Backend::to_host(ws.partial, ws.host);
      for (double s : ws.host)
        total += s;
    }
    return total;
  }

  static constexpr std::uint64_t state_tag = 0x6879'6272'6964'0000ull;  // "hybrid"

  ZoPart zo_;
  FoRule fo_;
  Selector selector_;
  hybrid_options options_;
  std::vector<block_role> roles_;
  std::vector<std::size_t> first_order_;
  typed_slot workspace_;
  double first_order_loss_ = 0, gradient_norm_ = 0;
};

// LoHO inter-layer: MeZO on the shallow layers, Adam on the deepest k.
using loho = hybrid<mezo, adam<>, deepest_layers>;

}  // namespace zo
