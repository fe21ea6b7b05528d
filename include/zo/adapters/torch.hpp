// SPDX-License-Identifier: Apache-2.0
// zo inside libtorch (target zo::torch): a store over a module's named_parameters() that wraps the
// tensors' memory without copying it, objectives from closures returning a loss tensor (with
// autograd for the hybrid's first-order part), a torch::optim-like step(closure), and checkpoints
// that hold a module's tensors and an optimizer's state together. docs/torch.md shows its use.
//
// CPU tensors of float32 (zo::torch_store), bfloat16 (zo::torch_store_bf16) or float16
// (zo::torch_store_f16) are served; a CUDA store on the Thrust backend is not written yet, so
// CUDA tensors are refused with a message saying so, before any parameter changes.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <istream>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "zo/backends/cpu.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/float16.hpp"
#include "zo/core/gradient_view.hpp"
#include "zo/core/reports.hpp"
#include "zo/io/trajectory.hpp"
#include "zo/stores/block.hpp"
#include "zo/stores/view_store.hpp"

namespace zo {

// The layer index in a parameter's name: N in "<prefix>.N." where <prefix> is a whole component
// of the name (at its start or after a dot), e.g. 3 in "model.decoder.layers.3.fc1.weight" with
// the prefix "layers". Prefixes are tried in their order; a name none matches has no layer.
inline std::optional<int> layer_from_name(std::string_view name,
                                          const std::vector<std::string>& prefixes) {
  for (const auto& prefix : prefixes) {
    const std::string key = prefix + ".";
    for (std::size_t at = name.find(key); at != std::string_view::npos;
         at = name.find(key, at + 1)) {
      if (at != 0 && name[at - 1] != '.') continue;
      std::size_t end = at + key.size();
      int layer = 0;
      std::size_t digits = 0;
      for (; end < name.size() && name[end] >= '0' && name[end] <= '9' && digits < 9; ++end) {
        layer = layer * 10 + (name[end] - '0');
        ++digits;
      }
      if (digits > 0 && end < name.size() && name[end] == '.') return layer;
    }
  }
  return std::nullopt;
}

// Whether weight decay applies, from the name alone: biases and normalisation weights (a module
// whose name contains "norm", or GPT-2's ln_1, ln_f) are exempt. Hugging Face's trainer, which
// MeZO's reference runs in, makes the same split by module type; a store sees only names.
inline bool decays_by_name(std::string_view name) {
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = name.find('.', start);
    const std::string_view part =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    std::string lower(part);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const bool last = dot == std::string_view::npos;
    if (last && lower == "bias") return false;
    if (!last &&
        (lower.find("norm") != std::string::npos || lower == "ln" || lower.starts_with("ln_"))) {
      return false;
    }
    if (last) return true;
    start = dot + 1;
  }
}

struct torch_store_options {
  // Name components that carry the layer index after them (Hugging Face's OPT/Llama, BERT, GPT-2).
  std::vector<std::string> layer_prefixes = {"layers", "layer", "h"};
  // Replaces the prefix rule when set.
  std::function<std::optional<int>(std::string_view)> layer_of;
  // Replaces decays_by_name when set.
  std::function<bool(std::string_view)> decay_of;
};

namespace detail {
// The torch dtype of each element type zo serves; at::BFloat16 and at::Half are the bits of
// zo::bfloat16 and zo::float16, so their memory is wrapped as it is.
template <class T>
constexpr at::ScalarType torch_dtype() {
  if constexpr (std::is_same_v<T, bfloat16>) {
    static_assert(sizeof(at::BFloat16) == sizeof(bfloat16) &&
                  alignof(at::BFloat16) == alignof(bfloat16));
    return at::kBFloat16;
  } else if constexpr (std::is_same_v<T, float16>) {
    static_assert(sizeof(at::Half) == sizeof(float16) && alignof(at::Half) == alignof(float16));
    return at::kHalf;
  } else {
    static_assert(std::is_same_v<T, float>,
                  "zo: a torch store holds float, zo::bfloat16 or zo::float16 parameters");
    return at::kFloat;
  }
}
}  // namespace detail

// The blocks of a torch store: the tensors' own memory, in the order named_parameters() gives.
// A parameter with requires_grad == false is left out (left_out() names it), so it is never
// perturbed. The store holds a reference to each tensor, which keeps its memory alive; the
// tensors must not be resized or given new storage (set_, a load that replaces .data) while the
// store is used, since the store reads their data pointers once. load_checkpoint copies in place.
// T is the parameters' element type: every trained tensor must have its dtype.
template <class T>
class basic_torch_store {
 public:
  using value_type = T;
  using backend_type = backends::cpu;
  using block_type = block_view<T>;
  using named_tensors = std::vector<std::pair<std::string, at::Tensor>>;

  explicit basic_torch_store(named_tensors parameters, torch_store_options options = {},
                             backends::cpu backend = {})
      : view_(backend) {
    std::vector<std::size_t> trained;
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      if (parameters[i].second.defined() && parameters[i].second.requires_grad()) {
        trained.push_back(i);
      } else {
        left_out_.push_back(parameters[i].first);
      }
    }
    check_one_device(parameters, trained);
    for (std::size_t i : trained)
      check_tensor(parameters[i].first, parameters[i].second);
    check_disjoint(parameters, trained);
    for (std::size_t i : trained)
      add(std::move(parameters[i].first), std::move(parameters[i].second), options);
  }

  explicit basic_torch_store(const torch::OrderedDict<std::string, at::Tensor>& parameters,
                             torch_store_options options = {}, backends::cpu backend = {})
      : basic_torch_store(pairs_of(parameters), std::move(options), backend) {}

  explicit basic_torch_store(const torch::nn::Module& module, torch_store_options options = {},
                             backends::cpu backend = {})
      : basic_torch_store(module.named_parameters(), std::move(options), backend) {}

  std::size_t size() const { return view_.size(); }
  block_type block(std::size_t i) const { return view_.block(i); }
  std::optional<std::size_t> find(std::string_view name) const { return view_.find(name); }
  std::size_t parameter_count() const { return view_.parameter_count(); }
  const backends::cpu& backend() const { return view_.backend(); }

  // The tensor of block i (the module's own parameter, not a copy).
  const at::Tensor& tensor(std::size_t i) const { return tensors_.at(i); }
  // Parameters given with requires_grad == false (or undefined), which the store does not hold.
  const std::vector<std::string>& left_out() const { return left_out_; }

 private:
  static named_tensors pairs_of(const torch::OrderedDict<std::string, at::Tensor>& dict) {
    named_tensors out;
    for (const auto& item : dict)
      out.emplace_back(item.key(), item.value());
    return out;
  }

  static void check_tensor(const std::string& name, const at::Tensor& t) {
    require(t.defined(), [&] { return "parameter '" + name + "' is an undefined tensor"; });
    require(t.layout() == at::kStrided, [&] {
      return "parameter '" + name + "' is not a dense (strided) tensor; zo::torch_store needs one";
    });
    require(t.device().is_cpu(), [&] {
      return "parameter '" + name + "' is on " + t.device().str() +
             "; zo::torch_store serves CPU tensors only (a CUDA store on the Thrust backend is "
             "not built yet): move the module to the CPU";
    });
    require(t.scalar_type() == detail::torch_dtype<T>(), [&] {
      return "parameter '" + name + "' has dtype " + std::string(c10::toString(t.scalar_type())) +
             "; this store holds " + std::string(c10::toString(detail::torch_dtype<T>())) +
             " parameters only (zo::torch_store: float32; zo::torch_store_bf16, "
             "zo::torch_store_f16: bfloat16, float16): use the store of the module's dtype, or "
             "convert the module";
    });
    require(t.is_contiguous(), [&] {
      return "parameter '" + name +
             "' is not contiguous; zo perturbs a tensor's elements in memory order, so it needs a "
             "contiguous one (make the parameter contiguous before building the store)";
    });
  }

  static void check_one_device(const named_tensors& parameters,
                               const std::vector<std::size_t>& trained) {
    for (std::size_t i : trained) {
      // Named references, not structured bindings: Clang before 16 refuses to capture those.
      const std::string& name = parameters[i].first;
      const at::Tensor& t = parameters[i].second;
      const std::string& first_name = parameters[trained.front()].first;
      const at::Tensor& first = parameters[trained.front()].second;
      require(t.device() == first.device(), [&] {
        return "parameters '" + first_name + "' (" + first.device().str() + ") and '" + name +
               "' (" + t.device().str() +
               ") are on different devices; zo::torch_store needs "
               "every trained parameter on one device";
      });
    }
  }

  // Tied weights (one tensor under two names) would be perturbed and updated twice per step.
  static void check_disjoint(const named_tensors& parameters,
                             const std::vector<std::size_t>& trained) {
    std::vector<std::size_t> order = trained;
    const auto begin = [&](std::size_t i) {
      return reinterpret_cast<std::uintptr_t>(parameters[i].second.data_ptr());
    };
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return begin(a) < begin(b); });
    for (std::size_t k = 1; k < order.size(); ++k) {
      const std::size_t a = order[k - 1], b = order[k];
      const auto end_of_a = begin(a) + parameters[a].second.numel() * sizeof(T);
      require(begin(b) >= end_of_a, [&] {
        return "parameters '" + parameters[a].first + "' and '" + parameters[b].first +
               "' share memory (tied weights?); list the shared tensor once";
      });
    }
  }

  // rows × cols as the tensor lies in memory: dimension 0 by the rest (a Linear weight
  // [out, in] is out × in, a vector n × 1, a scalar 1 × 1).
  void add(std::string name, at::Tensor t, const torch_store_options& options) {
    const std::size_t n = static_cast<std::size_t>(t.numel());
    const std::size_t rows = t.dim() >= 2 ? static_cast<std::size_t>(t.size(0)) : n;
    const std::size_t cols = t.dim() >= 2 && rows > 0 ? n / rows : 1;
    block_options block;
    block.layer =
        options.layer_of ? options.layer_of(name) : layer_from_name(name, options.layer_prefixes);
    block.decay = options.decay_of ? options.decay_of(name) : decays_by_name(name);
    view_.add(std::move(name), std::span<T>(static_cast<T*>(t.data_ptr()), n), rows, cols, block);
    tensors_.push_back(std::move(t));
  }

  view_store<T> view_;
  std::vector<at::Tensor> tensors_;
  std::vector<std::string> left_out_;
};

using torch_store = basic_torch_store<float>;
using torch_store_bf16 = basic_torch_store<bfloat16>;
using torch_store_f16 = basic_torch_store<float16>;

namespace detail {

// For the duration of one first-order evaluation: each requested block's .grad is a tensor over
// zo's gradient buffer, so autograd accumulates into the buffer zo reads (the buffer is zeroed,
// and a defined .grad is added to in place); the store's other blocks stop requiring gradients,
// so backward goes no further than the requested ones need. Everything is put back afterwards.
class gradients_into_buffers {
 public:
  gradients_into_buffers(const torch_store& store, const gradient_view<float>& gradients)
      : store_(store) {
    std::vector<bool> requested(store.size(), false);
    for (std::size_t k = 0; k < gradients.blocks().size(); ++k) {
      const std::size_t i = gradients.blocks()[k];
      requested.at(i) = true;
      at::Tensor t = store.tensor(i);
      saved_.push_back({i, t.grad(), true});
      t.mutable_grad() =
          torch::from_blob(gradients[k], t.sizes(), t.options().requires_grad(false));
    }
    for (std::size_t i = 0; i < store.size(); ++i) {
      if (requested[i]) continue;
      at::Tensor t = store.tensor(i);
      saved_.push_back({i, at::Tensor(), false});
      t.set_requires_grad(false);
    }
  }
  ~gradients_into_buffers() {
    for (auto& s : saved_) {
      at::Tensor t = store_.tensor(s.index);
      if (s.requested) {
        t.mutable_grad() = s.grad;
      } else {
        t.set_requires_grad(true);
      }
    }
  }
  // Autograd adds into a defined .grad in place; were that ever to change, the gradient would be
  // somewhere zo does not read, so it is refused rather than copied silently.
  void require_written_in_place(const gradient_view<float>& gradients) const {
    for (std::size_t k = 0; k < gradients.blocks().size(); ++k) {
      const std::size_t i = gradients.blocks()[k];
      const at::Tensor& grad = store_.tensor(i).grad();
      require(grad.defined() && grad.data_ptr() == gradients[k], [&] {
        return "autograd did not accumulate the gradient of '" +
               std::string(store_.block(i).name()) + "' into zo's buffer";
      });
    }
  }
  gradients_into_buffers(const gradients_into_buffers&) = delete;
  gradients_into_buffers& operator=(const gradients_into_buffers&) = delete;

 private:
  struct saved {
    std::size_t index;
    at::Tensor grad;
    bool requested;
  };
  const torch_store& store_;
  std::vector<saved> saved_;
};

inline double scalar_loss(const at::Tensor& loss) {
  require(loss.defined() && loss.numel() == 1, [&] {
    return std::string("the closure must return a loss tensor with one element, got ") +
           (loss.defined() ? "shape " + c10::str(loss.sizes()) : "an undefined tensor");
  });
  return loss.item<double>();
}

}  // namespace detail

// An objective from a closure returning the loss tensor, called either with no argument or with
// the step index (to pick that step's mini-batch). Zeroth-order evaluations run under
// NoGradGuard, so no graph is built; for the hybrid, loss_and_gradients runs the closure with
// autograd on and backpropagates into zo's gradient buffers (detail::gradients_into_buffers).
// Backward runs the backpropagation; a caller that holds a lock autograd's threads may need
// (Python's GIL) passes one that releases it around loss.backward().
struct plain_backward {
  void operator()(const at::Tensor& loss) const { loss.backward(); }
};

// Store is the torch store the parameters are in; gradients (the hybrid) need a float one.
template <class Closure, class Backward = plain_backward, class Store = torch_store>
class torch_objective {
 public:
  torch_objective(const Store& store, Closure closure, Backward backward = {})
      : store_(&store), closure_(std::move(closure)), backward_(std::move(backward)) {}

  double operator()() requires std::invocable<Closure&> { return loss(); }
  double operator()(std::uint64_t step) requires std::invocable<Closure&, std::uint64_t> {
    return loss(step);
  }

  double loss() requires std::invocable<Closure&> {
    torch::NoGradGuard no_grad;
    return detail::scalar_loss(closure_());
  }
  double loss(std::uint64_t step) requires std::invocable<Closure&, std::uint64_t> {
    torch::NoGradGuard no_grad;
    return detail::scalar_loss(closure_(step));
  }

  double loss_and_gradients(gradient_view<float>& gradients) requires std::invocable<Closure&> {
    return backward([&] { return closure_(); }, gradients);
  }
  double loss_and_gradients(gradient_view<float>& gradients,
                            std::uint64_t step) requires std::invocable<Closure&, std::uint64_t> {
    return backward([&] { return closure_(step); }, gradients);
  }

 private:
  template <class Call>
  double backward(Call&& call, gradient_view<float>& gradients) {
    if (gradients.blocks().empty()) {
      torch::NoGradGuard no_grad;
      return detail::scalar_loss(call());
    }
    detail::gradients_into_buffers binding(*store_, gradients);
    torch::AutoGradMode with_grad(true);
    const at::Tensor loss = call();
    const double value = detail::scalar_loss(loss);
    require(loss.requires_grad(),
            "the loss does not depend on any first-order parameter, so it has no gradient; "
            "check that the closure uses the module's parameters");
    backward_(loss);
    binding.require_written_in_place(gradients);
    return value;
  }

  const Store* store_;
  Closure closure_;
  Backward backward_;
};

// A torch::optim-like optimizer: a store and a zo optimizer (zo::mezo, zo::lozo, zo::lozo_m,
// zo::loho, or any composition; LoHO over float parameters only), stepped with a closure that
// returns the loss tensor:
//   zo::torch_optimizer opt(zo::torch_store(*model), zo::mezo(...));
//   auto loss = opt.step([&] { return torch::mse_loss(model->forward(x), y); });
template <class Optimizer, class T = float>
class torch_optimizer {
 public:
  using store_type = basic_torch_store<T>;

  torch_optimizer(store_type store, Optimizer optimizer)
      : store_(std::make_unique<store_type>(std::move(store))), optimizer_(std::move(optimizer)) {}

  // One step; returns the loss zo reports for it (the estimator's), as a float64 scalar tensor.
  // backward is torch_objective's.
  template <class Closure, class Backward = plain_backward>
  at::Tensor step(Closure&& closure, Backward backward = {}) {
    torch_objective<std::remove_cvref_t<Closure>, Backward, store_type> f(
        *store_, std::forward<Closure>(closure), std::move(backward));
    if (log_) {
      last_ = optimizer_.step(*store_, f, *log_);
    } else {
      last_ = optimizer_.step(*store_, f);
    }
    return torch::tensor(last_.loss, torch::kFloat64);
  }

  // Logs every following step to a trajectory file (zo/io/trajectory.hpp), whose header records
  // the optimizer's seed and generator and a fingerprint of the parameters as they are now;
  // finish_trajectory() ends it.
  void log_trajectory(const std::filesystem::path& path, std::string description = {}) {
    log_ = std::make_unique<io::trajectory_writer>(
        path, io::run_header(*store_, zeroth_order_options(), std::move(description)));
  }
  void finish_trajectory() {
    require(log_ != nullptr, "no trajectory is being logged");
    log_->finish();
    log_.reset();
  }

  void save(std::ostream& out) const { optimizer_.save(out); }
  void load(std::istream& in) { optimizer_.load(in); }

  const step_report& last_report() const { return last_; }
  const store_type& store() const { return *store_; }
  Optimizer& optimizer() { return optimizer_; }
  const Optimizer& optimizer() const { return optimizer_; }

 private:
  // The options that key the directions: a hybrid's are its zeroth-order part's.
  const zo_options& zeroth_order_options() const {
    if constexpr (requires { optimizer_.zeroth_order_part(); }) {
      return optimizer_.zeroth_order_part().options();
    } else {
      return optimizer_.options();
    }
  }

  // Held by pointer so that moving the wrapper never moves the store an objective points at.
  std::unique_ptr<store_type> store_;
  Optimizer optimizer_;
  std::unique_ptr<io::trajectory_writer> log_;
  step_report last_;
};

namespace detail {

inline constexpr const char* checkpoint_module_key = "zo_module";
inline constexpr const char* checkpoint_optimizer_key = "zo_optimizer";

inline std::vector<std::pair<std::string, at::Tensor>> module_tensors(
    const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : module.named_parameters())
    out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers())
    out.emplace_back(b.key(), b.value());
  return out;
}

// The saved tensor of each of the module's names, checked against the module's own (same names,
// shapes and dtypes) before anything is copied.
inline std::vector<at::Tensor> matching_tensors(const c10::Dict<std::string, at::Tensor>& saved,
                                                const torch::nn::Module& module) {
  const auto own = module_tensors(module);
  require(saved.size() == own.size(), [&] {
    return "the checkpoint holds " + std::to_string(saved.size()) + " tensors, the module " +
           std::to_string(own.size());
  });
  std::vector<at::Tensor> out;
  for (const auto& entry : own) {  // not a structured binding: the lambdas below capture it
    const std::string& name = entry.first;
    const at::Tensor& t = entry.second;
    const auto it = saved.find(name);
    require(it != saved.end(), [&] { return "the checkpoint has no tensor '" + name + "'"; });
    const at::Tensor& s = it->value();
    require(s.sizes() == t.sizes() && s.scalar_type() == t.scalar_type(), [&] {
      return "tensor '" + name + "' is " + c10::str(s.sizes()) + " " +
             std::string(c10::toString(s.scalar_type())) + " in the checkpoint but " +
             c10::str(t.sizes()) + " " + std::string(c10::toString(t.scalar_type())) +
             " in the module";
    });
    out.push_back(s);
  }
  return out;
}

}  // namespace detail

// A module's parameters and buffers and an optimizer's state (its save(), zo/core/state_io.hpp)
// in one file, written with torch's own archive.
template <class Optimizer>
void save_checkpoint(const std::filesystem::path& path, const torch::nn::Module& module,
                     const Optimizer& optimizer) {
  c10::Dict<std::string, at::Tensor> tensors;
  for (const auto& [name, t] : detail::module_tensors(module))
    tensors.insert(name, t.detach());
  std::ostringstream state(std::ios::binary);
  optimizer.save(state);
  const std::string bytes = state.str();
  const at::Tensor state_tensor =
      torch::from_blob(const_cast<char*>(bytes.data()), {static_cast<std::int64_t>(bytes.size())},
                       torch::kUInt8)
          .clone();
  torch::serialize::OutputArchive archive;
  archive.write(detail::checkpoint_module_key, c10::IValue(tensors));
  archive.write(detail::checkpoint_optimizer_key, state_tensor);
  archive.save_to(path.string());
}

// Loads a save_checkpoint file: the tensors are copied into the module's own (so a torch_store
// over them stays valid) and the optimizer's state is loaded. Everything is checked before the
// module changes; a state the optimizer refuses leaves both as they were.
template <class Optimizer>
void load_checkpoint(const std::filesystem::path& path, torch::nn::Module& module,
                     Optimizer& optimizer) {
  torch::serialize::InputArchive archive;
  archive.load_from(path.string());
  c10::IValue saved;
  require(archive.try_read(detail::checkpoint_module_key, saved) && saved.isGenericDict(),
          "checkpoint " + path.string() + " holds no module tensors");
  const auto tensors = detail::matching_tensors(
      c10::impl::toTypedDict<std::string, at::Tensor>(saved.toGenericDict()), module);
  at::Tensor state_tensor;
  require(archive.try_read(detail::checkpoint_optimizer_key, state_tensor),
          "checkpoint " + path.string() + " holds no optimizer state");
  state_tensor = state_tensor.contiguous();
  std::istringstream state(std::string(static_cast<const char*>(state_tensor.data_ptr()),
                                       static_cast<std::size_t>(state_tensor.numel())),
                           std::ios::binary);
  optimizer.load(state);
  torch::NoGradGuard no_grad;
  const auto own = detail::module_tensors(module);
  for (std::size_t i = 0; i < own.size(); ++i) {
    at::Tensor target = own[i].second;
    target.copy_(tensors[i]);
  }
}

}  // namespace zo
