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

#include <any>
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <istream>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "zo/config.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/state_io.hpp"
#include "zo/step_rules/schedules.hpp"

namespace zo {

namespace detail {

// Per-block state of a rule, typed by backend and element type once a step reveals them. A
// Record holds `steps` and the buffers that buffers() returns; save/load write them per block, and
// a loaded state waits on the host until the first step reveals the types.
template <template <class, class> class Record>
class block_states {
 public:
  template <class Backend, class T>
  Record<Backend, T>& at(std::size_t block_id) {
    using map = std::map<std::size_t, Record<Backend, T>>;
    if (std::any_cast<map>(&states_) == nullptr) adopt<Backend, T>();
    return (*std::any_cast<map>(&states_))[block_id];
  }

  void save(std::ostream& out) const {
    if (save_ == nullptr) {
      loaded_.write(out);
    } else {
      save_(states_, out);
    }
  }
  void load(std::istream& in, const char* rule) {
    host_image image;
    image.read(in, rule);
    loaded_ = std::move(image);
    states_.reset();
    save_ = nullptr;
  }

 private:
  struct host_block {
    std::uint64_t id = 0, steps = 0;
    std::vector<std::vector<char>> buffers;
  };
  struct host_image {
    std::uint32_t element_size = 0;
    std::vector<host_block> blocks;

    void write(std::ostream& out) const {
      write_value(out, element_size);
      write_value(out, static_cast<std::uint64_t>(blocks.size()));
      for (const auto& b : blocks) {
        write_value(out, b.id);
        write_value(out, b.steps);
        write_value(out, static_cast<std::uint32_t>(b.buffers.size()));
        for (const auto& bytes : b.buffers) {
          write_value(out, static_cast<std::uint64_t>(bytes.size()));
          out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        }
      }
    }
    void read(std::istream& in, const char* rule) {
      element_size = read_value<std::uint32_t>(in, "the element size");
      require(element_size == 0 || element_size == 4 || element_size == 8,
              std::string(rule) + " state has " + std::to_string(element_size) +
                  "-byte elements; 4 and 8 are known (0 when empty)");
      const auto count = read_value<std::uint64_t>(in, "the block count");
      require_fits(in, count, 20, "the first-order state's blocks");
      for (std::uint64_t k = 0; k < count; ++k) {
        host_block b;
        b.id = read_value<std::uint64_t>(in, "a block id");
        b.steps = read_value<std::uint64_t>(in, "a block's step count");
        const auto buffers = read_value<std::uint32_t>(in, "a block's buffer count");
        require(buffers <= 2, std::string(rule) + " state has a block with " +
                                  std::to_string(buffers) + " buffers; at most 2 are known");
        for (std::uint32_t j = 0; j < buffers; ++j) {
          const auto size = read_value<std::uint64_t>(in, "a buffer size");
          require(element_size > 0 && size % element_size == 0,
                  std::string(rule) + " state has a buffer of " + std::to_string(size) +
                      " bytes, not a whole number of elements");
          b.buffers.push_back(read_buffer(in, size, "buffer values"));
        }
        blocks.push_back(std::move(b));
      }
    }
  };

  template <class Backend, class T>
  void adopt() {
    using map = std::map<std::size_t, Record<Backend, T>>;
    map typed;
    if (!loaded_.blocks.empty()) {
      require(loaded_.element_size == sizeof(T),
              "the loaded first-order state has " + std::to_string(loaded_.element_size) +
                  "-byte elements, the store " + std::to_string(sizeof(T)) + "-byte ones");
      for (const auto& b : loaded_.blocks) {
        auto& record = typed[b.id];
        record.steps = b.steps;
        auto targets = record.buffers();
        require(b.buffers.size() <= targets.size(),
                "the loaded first-order state has more buffers per block than this rule keeps");
        for (std::size_t j = 0; j < b.buffers.size(); ++j) {
          std::vector<T> values(b.buffers[j].size() / sizeof(T));
          std::memcpy(values.data(), b.buffers[j].data(), b.buffers[j].size());
          Backend::from_host(values, *targets[j]);
        }
      }
    }
    loaded_ = {};
    states_ = std::move(typed);
    save_ = [](const std::any& any, std::ostream& out) {
      host_image image;
      image.element_size = sizeof(T);
      for (const auto& [id, record] : std::any_cast<const map&>(any)) {
        host_block b;
        b.id = id;
        b.steps = record.steps;
        for (const auto* buffer : const_cast<Record<Backend, T>&>(record).buffers()) {
          std::vector<T> values;
          Backend::to_host(*buffer, values);
          std::vector<char> bytes(values.size() * sizeof(T));
          std::memcpy(bytes.data(), values.data(), bytes.size());
          b.buffers.push_back(std::move(bytes));
        }
        image.blocks.push_back(std::move(b));
      }
      image.write(out);
    };
  }

  std::any states_;
  host_image loaded_;
  void (*save_)(const std::any&, std::ostream&) = nullptr;
};

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
    detail::require(momentum >= 0 && momentum < 1,
                    "fo_sgd: momentum must be in [0, 1), got " + std::to_string(momentum));
    detail::require_non_negative_finite(weight_decay, "fo_sgd: weight decay");
  }
  explicit fo_sgd(double learning_rate = 1e-3, double momentum = 0,
                  double weight_decay = 0) requires std::same_as<Schedule, constant_schedule>
      : fo_sgd(constant_schedule(learning_rate), momentum, weight_decay) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }

  template <class Backend, class Block, class T>
  void apply(const Backend&, const Block& block, const T* gradient, double gradient_scale,
             std::uint64_t step) {
    auto& state = states_.template at<Backend, T>(block.id());
    T* buffer = nullptr;
    if (momentum_ > 0) {
      if (state.buffer.size() != block.size()) state.buffer.resize(block.size());
      buffer = Backend::data(state.buffer);
    }
    Backend::for_each_index(block.size(), detail::sgd_momentum_kernel<T>{
                                              block.data(), gradient, buffer, T(gradient_scale),
                                              T(momentum_), T(block.decay() ? weight_decay_ : 0.0),
                                              T(learning_rate(step)), state.steps == 0});
    ++state.steps;
  }

  // The momentum buffers and per-block step counts, for resuming a run bit for bit.
  void save(std::ostream& out) const {
    detail::write_tag(out, state_tag, 1);
    states_.save(out);
  }
  void load(std::istream& in) {
    detail::read_tag(in, state_tag, 1, "fo_sgd");
    states_.load(in, "fo_sgd");
  }

 private:
  static constexpr std::uint64_t state_tag = 0x666f'2d73'6764'0000ull;  // "fo-sgd"
  template <class Backend, class T>
  struct record {
    typename Backend::template buffer<T> buffer;
    std::uint64_t steps = 0;
    std::array<typename Backend::template buffer<T>*, 1> buffers() { return {&buffer}; }
  };

  Schedule schedule_;
  double momentum_, weight_decay_;
  detail::block_states<record> states_;
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
    detail::require(beta1 >= 0 && beta1 < 1,
                    "adam: beta1 must be in [0, 1), got " + std::to_string(beta1));
    detail::require(beta2 >= 0 && beta2 < 1,
                    "adam: beta2 must be in [0, 1), got " + std::to_string(beta2));
    detail::require_positive_finite(epsilon, "adam: epsilon");
    detail::require_non_negative_finite(weight_decay, "adam: weight decay");
  }
  explicit adam(double learning_rate = 1e-5, double beta1 = 0.9, double beta2 = 0.999,
                double epsilon = 1e-8,
                double weight_decay = 0) requires std::same_as<Schedule, constant_schedule>
      : adam(constant_schedule(learning_rate), beta1, beta2, epsilon, weight_decay) {}

  double learning_rate(std::uint64_t step) const { return schedule_(step); }

  template <class Backend, class Block, class T>
  void apply(const Backend&, const Block& block, const T* gradient, double gradient_scale,
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
    Backend::for_each_index(
        block.size(),
        detail::adam_kernel<T>{block.data(), gradient, Backend::data(state.m),
                               Backend::data(state.v), T(gradient_scale), T(beta1_), T(beta2_),
                               T(epsilon_), T(lr / bias1), T(std::sqrt(bias2)), T(keep)});
  }

  // The moments and per-block step counts (bias corrections), for resuming a run bit for bit.
  void save(std::ostream& out) const {
    detail::write_tag(out, state_tag, 1);
    states_.save(out);
  }
  void load(std::istream& in) {
    detail::read_tag(in, state_tag, 1, "adam");
    states_.load(in, "adam");
  }

 private:
  static constexpr std::uint64_t state_tag = 0x6164'616d'0000'0000ull;  // "adam"
  template <class Backend, class T>
  struct record {
    typename Backend::template buffer<T> m, v;
    std::uint64_t steps = 0;
    std::array<typename Backend::template buffer<T>*, 2> buffers() { return {&m, &v}; }
  };

  Schedule schedule_;
  double beta1_, beta2_, epsilon_, weight_decay_;
  detail::block_states<record> states_;
};

}  // namespace zo
