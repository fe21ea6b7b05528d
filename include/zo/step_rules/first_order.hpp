// SPDX-License-Identifier: Apache-2.0
// First-order step rules for the blocks a hybrid optimizer trains with gradients (LoHO's FO
// part): SGD with optional momentum, and Adam with decoupled weight decay (AdamW). Both follow
// PyTorch's update formulas, so a hybrid's FO part matches a plain torch.optim step.
//
// Rules keep per-block state (momentum, moments) created at the first step they see a block, on
// the store's backend; a block's Adam step count advances only when that block is updated, so
// selectors that change the first-order set between steps (round-robin) keep exact bias
// corrections.
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
#include "zo/step_rules/schedules.hpp"

namespace zo {

namespace detail {

template <class T>
struct adam_kernel {
  T* theta;
  const T* gradient;
  T *m, *v;
  T gradient_scale, beta1, beta2, epsilon, step_size, bias2_sqrt, keep;

  ZO_HOST_DEVICE void operator()(std::size_t i) const {
    const T g = gradient_scale * gradient[i];
    m[i] = beta1 * m[i] + (T(1) - beta1) * g;
    v[i] = beta2 * v[i] + (T(1) - beta2) * g * g;
    const T denominator = std::sqrt(v[i]) / bias2_sqrt + epsilon;
    theta[i] = keep * theta[i] - step_size * m[i] / denominator;
  }
};

// Adam's hyperparameters, checked alike by every rule that keeps Adam's moments (`who` names it).
inline void require_adam_hyperparameters(const std::string& who, double beta1, double beta2,
                                         double epsilon, double weight_decay) {
  require(beta1 >= 0 && beta1 < 1,
          [&] { return who + ": beta1 must be in [0, 1), got " + std::to_string(beta1); });
  require(beta2 >= 0 && beta2 < 1,
          [&] { return who + ": beta2 must be in [0, 1), got " + std::to_string(beta2); });
  require_positive_finite(epsilon, (who + ": epsilon").c_str());
  require_non_negative_finite(weight_decay, (who + ": weight decay").c_str());
}

// One block's Adam state: the moments m and v and the block's step count (its bias
// corrections), in the state format of adam and zo_adam.
template <class Backend, class T>
struct adam_record {
  typename Backend::template buffer<T> m, v;
  std::uint64_t steps = 0;

  void encode(auto& out) const {
    out.u64(steps);
    out.buffers(m, v);
  }
  void decode(auto& in) {
    steps = in.u64("a block's step count");
    in.buffers(m, v);
  }
};

template <class T>
struct sgd_momentum_kernel {
  T* theta;
  const T* gradient;
  T* buffer;  // null without momentum
  T gradient_scale, momentum, decay, lr;
  bool first;

  ZO_HOST_DEVICE void operator()(std::size_t i) const {
    T g = gradient_scale * gradient[i] + decay * theta[i];
    if (buffer != nullptr) {
      buffer[i] = first ? g : momentum * buffer[i] + g;
      g = buffer[i];
    }
    theta[i] -= lr * g;
  }
};

}  // namespace detail

// θ ← θ − η·b with b = μ·b + (g + λθ) (b = g + λθ at a block's first step); μ = 0 is plain SGD.
// λ (coupled, as in torch.optim.SGD) applies only to blocks flagged for decay.
template <class Schedule = constant_schedule>
class fo_sgd {
 public:
  explicit fo_sgd(Schedule schedule, double momentum = 0, double weight_decay = 0)
      : schedule_(std::move(schedule)), momentum_(momentum), weight_decay_(weight_decay) {
    require(momentum >= 0 && momentum < 1,
            "fo_sgd: momentum must be in [0, 1), got " + std::to_string(momentum));
    require_non_negative_finite(weight_decay, "fo_sgd: weight decay");
  }
  explicit fo_sgd(double learning_rate = 1e-3, double momentum = 0,
                  double weight_decay = 0) requires std::same_as<Schedule, constant_schedule>
      : fo_sgd(constant_schedule(learning_rate), momentum, weight_decay) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }

  template <class Backend, class Block, class T>
  void apply(const Backend& backend, const Block& block, const T* gradient, double gradient_scale,
             std::uint64_t step) {
    auto& state = states_.template at<Backend, T>(block.id());
    T* buffer = nullptr;
    if (momentum_ > 0) {
      if (state.buffer.size() != block.size()) state.buffer.resize(block.size());
      buffer = Backend::data(state.buffer);
    }
    backend.for_each_index(block.size(), detail::sgd_momentum_kernel<T>{
                                             block.data(), gradient, buffer, T(gradient_scale),
                                             T(momentum_), T(block.decay() ? weight_decay_ : 0.0),
                                             T(learning_rate(step)), state.steps == 0});
    ++state.steps;
  }

  // The momentum buffers and per-block step counts, for resuming a run bit for bit.
  void save(std::ostream& out) const {
    state_io::write_tag(out, state_tag, 1);
    states_.save(out);
  }
  void load(std::istream& in) {
    state_io::read_tag(in, state_tag, 1, "fo_sgd");
    states_.load(in);
  }

 private:
  static constexpr std::uint64_t state_tag = 0x666f'2d73'6764'0000ull;  // "fo-sgd"
  template <class Backend, class T>
  struct record {
    typename Backend::template buffer<T> buffer;  // empty without momentum
    std::uint64_t steps = 0;

    void encode(auto& out) const {
      out.u64(steps);
      out.buffers(buffer);
    }
    void decode(auto& in) {
      steps = in.u64("a block's step count");
      in.buffers(buffer);
    }
  };

  Schedule schedule_;
  double momentum_, weight_decay_;
  state_io::block_state<record> states_{"fo_sgd"};
};

// Adam with decoupled weight decay (AdamW): θ ← θ·(1 − ηλ), then θ ← θ − η·m̂/(√v̂ + ε), with
// PyTorch's bias corrections. LoHO's reference uses ε = 1e-4.
template <class Schedule = constant_schedule>
class adam {
 public:
  adam(Schedule schedule, double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8,
       double weight_decay = 0)
      : schedule_(std::move(schedule)),
        beta1_(beta1),
        beta2_(beta2),
        epsilon_(epsilon),
        weight_decay_(weight_decay) {
    detail::require_adam_hyperparameters("adam", beta1, beta2, epsilon, weight_decay);
  }
  explicit adam(double learning_rate = 1e-5, double beta1 = 0.9, double beta2 = 0.999,
                double epsilon = 1e-8,
                double weight_decay = 0) requires std::same_as<Schedule, constant_schedule>
      : adam(constant_schedule(learning_rate), beta1, beta2, epsilon, weight_decay) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }

  template <class Backend, class Block, class T>
  void apply(const Backend& backend, const Block& block, const T* gradient, double gradient_scale,
             std::uint64_t step) {
    auto& state = states_.template at<Backend, T>(block.id());
    if (state.m.size() != block.size()) {
      state.m.resize(block.size());
      state.v.resize(block.size());
    }
    const double t = static_cast<double>(++state.steps);
    const double lr = learning_rate(step);
    const double bias1 = 1 - std::pow(beta1_, t), bias2 = 1 - std::pow(beta2_, t);
    const double keep = block.decay() ? 1 - lr * weight_decay_ : 1.0;
    backend.for_each_index(
        block.size(),
        detail::adam_kernel<T>{block.data(), gradient, Backend::data(state.m),
                               Backend::data(state.v), T(gradient_scale), T(beta1_), T(beta2_),
                               T(epsilon_), T(lr / bias1), T(std::sqrt(bias2)), T(keep)});
  }

  // The moments and per-block step counts (bias corrections), for resuming a run bit for bit.
  void save(std::ostream& out) const {
    state_io::write_tag(out, state_tag, 1);
    states_.save(out);
  }
  void load(std::istream& in) {
    state_io::read_tag(in, state_tag, 1, "adam");
    states_.load(in);
  }

 private:
  static constexpr std::uint64_t state_tag = 0x6164'616d'0000'0000ull;  // "adam"

  Schedule schedule_;
  double beta1_, beta2_, epsilon_, weight_decay_;
  state_io::block_state<detail::adam_record> states_{"adam"};
};

}  // namespace zo
