// SPDX-License-Identifier: Apache-2.0
// A decoder-only transformer in the layout of Hugging Face's OPT (pre-LayerNorm as in opt-125m,
// learned positions with OPT's offset of 2, ReLU feed-forward, LM head tied to the token
// embedding), written with Eigen over a zo::eigen_store so that zo's optimizers train it in place.
//
// Layer indices (block_options::layer), the convention zo's layer selectors see: the embeddings
// are layer 0, decoder layer i is layer i + 1, the final layer norm is layer n_layers + 1.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>
#include <zo/core/errors.hpp>
#include <zo/core/float16.hpp>
#include <zo/core/gradient_view.hpp>
#include <zo/selectors/layers.hpp>
#include <zo/stores/eigen_store.hpp>
#include <zo/stores/view_store.hpp>

#include "../common/check.hpp"

namespace opt {

struct opt_config {
  int vocab_size = 0;
  int max_positions = 0;
  int d_model = 0;
  int n_heads = 0;
  int n_layers = 0;
  int d_ffn = 0;
  // The vocabulary's special tokens, which the model never reads but a checkpoint must name:
  // Hugging Face assumes OPT's own ids (2, 2, 1) where config.json is silent. Empty: none.
  std::optional<int> bos_token_id{}, eos_token_id{}, pad_token_id{};

  int head_dim() const { return d_model / n_heads; }
  int layer_count() const { return n_layers + 2; }

  // What makes the configuration unusable, if anything (without the "zo:" prefix, so a caller
  // can put it in its own message).
  std::optional<std::string> problem() const {
    using field = std::pair<int, const char*>;
    for (const auto& [value, name] :
         {field{vocab_size, "vocab_size"}, field{max_positions, "max_positions"},
          field{d_model, "d_model"}, field{n_heads, "n_heads"}, field{n_layers, "n_layers"},
          field{d_ffn, "d_ffn"}}) {
      if (value <= 0)
        return std::string("opt_config: ") + name + " must be positive, got " +
               std::to_string(value);
    }
    if (d_model % n_heads != 0)
      return "opt_config: d_model = " + std::to_string(d_model) +
             " is not divisible by n_heads = " + std::to_string(n_heads);
    using token = std::pair<std::optional<int>, const char*>;
    for (const auto& [id, name] :
         {token{bos_token_id, "bos_token_id"}, token{eos_token_id, "eos_token_id"},
          token{pad_token_id, "pad_token_id"}}) {
      if (id && (*id < 0 || *id >= vocab_size))
        return std::string("opt_config: ") + name + " = " + std::to_string(*id) +
               " is not a token id (vocab_size " + std::to_string(vocab_size) + ")";
    }
    return std::nullopt;
  }

  void validate() const {
    if (const auto what = problem()) throw zo::invalid_argument(*what);
  }
};

inline constexpr int embedding_layer = 0;
inline int decoder_layer(int i) {
  return i + 1;
}
inline int final_norm_layer(const opt_config& config) {
  return config.n_layers + 1;
}

// The tensors of one decoder layer, in the order of Hugging Face's state dict.
namespace tensor {
enum index : int {
  k_weight,
  k_bias,
  v_weight,
  v_bias,
  q_weight,
  q_bias,
  out_weight,
  out_bias,
  attn_norm_weight,
  attn_norm_bias,
  fc1_weight,
  fc1_bias,
  fc2_weight,
  fc2_bias,
  ffn_norm_weight,
  ffn_norm_bias,
  count
};
}  // namespace tensor

inline constexpr std::array<const char*, tensor::count> layer_tensor_names = {
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.out_proj.weight",
    "self_attn.out_proj.bias",
    "self_attn_layer_norm.weight",
    "self_attn_layer_norm.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
    "final_layer_norm.weight",
    "final_layer_norm.bias"};

enum class initial_value { normal, zeros, ones };

struct tensor_spec {
  std::string name;
  int rows = 0;
  int cols = 0;
  int layer = 0;
  bool decay = true;
  initial_value init = initial_value::normal;
};

// Every parameter tensor with its Hugging Face name and shape (Linear weights [out, in], 1-D
// tensors as 1 × n), in the order register_parameters adds them. Following MeZO, biases and
// layer-norm parameters are exempt from weight decay; embeddings are not.
inline std::vector<tensor_spec> parameter_specs(const opt_config& config) {
  config.validate();
  const int d = config.d_model, f = config.d_ffn;
  using enum initial_value;
  std::vector<tensor_spec> specs;
  specs.push_back({"model.decoder.embed_tokens.weight", config.vocab_size, d, 0, true, normal});
  // OPT's learned positions are offset by 2: position p reads row p + 2.
  specs.push_back(
      {"model.decoder.embed_positions.weight", config.max_positions + 2, d, 0, true, normal});
  for (int i = 0; i < config.n_layers; ++i) {
    const std::string prefix = "model.decoder.layers." + std::to_string(i) + ".";
    const int layer = decoder_layer(i);
    for (int t = 0; t < tensor::count; ++t) {
      tensor_spec spec{prefix + layer_tensor_names[t], 1, d, layer, false, zeros};
      switch (t) {
        case tensor::k_weight:
        case tensor::v_weight:
        case tensor::q_weight:
        case tensor::out_weight:
          spec = {spec.name, d, d, layer, true, normal};
          break;
        case tensor::fc1_weight:
          spec = {spec.name, f, d, layer, true, normal};
          break;
        case tensor::fc1_bias:
          spec.cols = f;
          break;
        case tensor::fc2_weight:
          spec = {spec.name, d, f, layer, true, normal};
          break;
        case tensor::attn_norm_weight:
        case tensor::ffn_norm_weight:
          spec.init = ones;
          break;
        default:
          break;
      }
      specs.push_back(spec);
    }
  }
  const int last = final_norm_layer(config);
  specs.push_back({"model.decoder.final_layer_norm.weight", 1, d, last, false, ones});
  specs.push_back({"model.decoder.final_layer_norm.bias", 1, d, last, false, zeros});
  return specs;
}

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// The parameters of a model of 16-bit elements (zo::bfloat16, zo::float16): a zo::view_store,
// which zo's optimizers step in 16 bits, over memory this store owns, one allocation a tensor.
template <class T>
class sixteen_bit_store : public zo::view_store<T> {
  static_assert(zo::is_16bit<T>, "sixteen_bit_store holds zo::bfloat16 or zo::float16");

 public:
  sixteen_bit_store() = default;
  // The view's blocks point into memory_: a copy would share it.
  sixteen_bit_store(const sixteen_bit_store&) = delete;
  sixteen_bit_store& operator=(const sixteen_bit_store&) = delete;

  // Adds a zero-initialised rows × cols block.
  std::size_t add(std::string name, std::size_t rows, std::size_t cols,
                  zo::block_options options = {}) {
    memory_.push_back(std::make_unique<T[]>(rows * cols));
    return zo::view_store<T>::add(std::move(name), std::span<T>(memory_.back().get(), rows * cols),
                                  rows, cols, options);
  }

 private:
  std::vector<std::unique_ptr<T[]>> memory_;
};

// The store a model of element type T reads: Eigen matrices for float and double, a view of 16-bit
// memory for the 16-bit types.
template <class T>
using store_of = std::conditional_t<zo::is_16bit<T>, zo::view_store<T>, zo::eigen_store<T>>;

// The store that holds them: the same, except that 16-bit memory needs an owner.
template <class T>
using owning_store_of =
    std::conditional_t<zo::is_16bit<T>, sixteen_bit_store<T>, zo::eigen_store<T>>;

// Calls add(spec, value) for each of the model's tensors with its value initialised as OPT does
// (weights N(0, 0.02), biases 0, layer-norm weights 1) in T, from one generator seeded with
// init_seed.
template <class T, class Add>
void for_each_initial_value(const opt_config& config, std::uint64_t init_seed, Add&& add) {
  std::mt19937_64 engine(init_seed);
  std::normal_distribution<double> normal(0.0, 0.02);
  for (const auto& spec : parameter_specs(config)) {
    matrix<T> value(spec.rows, spec.cols);
    switch (spec.init) {
      case initial_value::normal:
        for (Eigen::Index e = 0; e < value.size(); ++e)
          value.data()[e] = static_cast<T>(normal(engine));
        break;
      case initial_value::zeros:
        value.setZero();
        break;
      case initial_value::ones:
        value.setOnes();
        break;
    }
    add(spec, std::move(value));
  }
}

// Adds the model's tensors to the store, initialised as OPT does; returns their store indices.
template <class T>
std::vector<std::size_t> register_parameters(zo::eigen_store<T>& store, const opt_config& config,
                                             std::uint64_t init_seed) {
  std::vector<std::size_t> indices;
  for_each_initial_value<T>(config, init_seed, [&](const tensor_spec& spec, matrix<T> value) {
    indices.push_back(
        store.add(spec.name, std::move(value), {.layer = spec.layer, .decay = spec.decay}));
  });
  return indices;
}

// The same in 16 bits: the float model's initial values, each rounded to the nearest.
template <class T>
std::vector<std::size_t> register_parameters(sixteen_bit_store<T>& store, const opt_config& config,
                                             std::uint64_t init_seed) {
  std::vector<std::size_t> indices;
  for_each_initial_value<float>(
      config, init_seed, [&](const tensor_spec& spec, matrix<float> value) {
        const std::size_t index = store.add(spec.name, static_cast<std::size_t>(spec.rows),
                                            static_cast<std::size_t>(spec.cols),
                                            {.layer = spec.layer, .decay = spec.decay});
        std::transform(value.data(), value.data() + value.size(), store.block(index).data(),
                       [](float x) { return zo::round_nearest<T>(x); });
        indices.push_back(index);
      });
  return indices;
}

// What training each layer first-order costs, as zo::memory_budget (LoHO's choice of k) reads
// it, for batches of `batch` sequences of `length` tokens and an Adam-like rule (two moments per
// parameter). The activations are the floats this model keeps per example for a layer's
// backward pass: for a decoder layer its normalised inputs, q, k, v, the attention
// probabilities, the context and the feed-forward hidden layer; for the embeddings and the final
// norm one row per position. `fixed_bytes` is what inference needs besides the parameters.
inline zo::memory_cost_model memory_costs(const opt_config& config, std::size_t batch, int length,
                                          std::size_t fixed_bytes = 0) {
  config.validate();
  zo_examples::require(
      length > 0 && length <= config.max_positions,
      "memory_costs: the length " + std::to_string(length) +
          " is outside 1..max_positions = " + std::to_string(config.max_positions));
  const std::size_t t = static_cast<std::size_t>(length),
                    d = static_cast<std::size_t>(config.d_model);
  zo::memory_cost_model model{.fixed_bytes = fixed_bytes, .batch_size = batch, .layers = {}};
  model.layers.resize(static_cast<std::size_t>(config.layer_count()));
  for (const auto& spec : parameter_specs(config)) {
    auto& layer = model.layers[static_cast<std::size_t>(spec.layer)];
    const std::size_t bytes = static_cast<std::size_t>(spec.rows) * spec.cols * sizeof(float);
    layer.parameter_bytes += bytes;
    layer.gradient_bytes += bytes;
    layer.optimizer_state_bytes += 2 * bytes;
  }
  const std::size_t decoder_floats = 8 * t * d + t * static_cast<std::size_t>(config.d_ffn) +
                                     static_cast<std::size_t>(config.n_heads) * t * t + 2 * t;
  for (std::size_t l = 0; l < model.layers.size(); ++l) {
    const bool decoder = l >= 1 && l + 1 < model.layers.size();
    model.layers[l].activation_bytes_per_example =
        (decoder ? decoder_floats : t * d) * sizeof(float);
  }
  return model;
}

struct target {
  int position = 0;
  int token = 0;
};

struct example {
  std::vector<int> tokens;
  std::vector<target> targets;  // where the loss looks and which token it expects there
};

using batch = std::vector<example>;

// An example's loss is the mean cross-entropy over its targets; a batch's is the mean over its
// examples.
struct loss_options {
  // Token ids the softmax runs over (MeZO's classification loss over the label words); empty
  // means the full vocabulary. Every target token must be one of them.
  std::vector<int> candidates;
};

// The model over parameters of element type T. It computes in zo::compute_t<T>: float for the
// 16-bit types, whose tensors are widened (exactly) one at a time into per-thread scratch right
// before they are used, so that memory holds the 16-bit parameters and one tensor's float copy
// per thread; its results are bit for bit those of the float model holding the widened values.
// Gradients (loss_and_gradients) are for float and double parameters only.
template <class T>
class basic_opt_model {
 public:
  using value_type = T;
  using scalar = zo::compute_t<T>;
  using matrix_type = matrix<scalar>;
  using column_type = Eigen::Matrix<scalar, Eigen::Dynamic, 1>;
  using row_type = Eigen::Matrix<scalar, 1, Eigen::Dynamic>;
  using store_type = store_of<T>;

  // Finds the model's tensors in the store by name and checks their shapes, so a store loaded
  // from a checkpoint works as well as one filled by register_parameters. The store must outlive
  // the model; the model reads its current values on every call.
  basic_opt_model(const opt_config& config, const store_type& store)
      : config_(config), store_(&store), layer_of_block_(store.size(), -1) {
    const auto specs = parameter_specs(config);
    std::vector<std::size_t> indices;
    for (const auto& spec : specs) {
      const auto found = store.find(spec.name);
      const std::string expected = std::to_string(spec.rows) + "x" + std::to_string(spec.cols);
      zo_examples::require(found.has_value(), "the store has no tensor '" + spec.name +
                                                  "' (expected shape " + expected + ")");
      const auto block = store.block(*found);
      zo_examples::require(block.rows() == static_cast<std::size_t>(spec.rows) &&
                               block.cols() == static_cast<std::size_t>(spec.cols),
                           "tensor '" + spec.name + "' has shape " + std::to_string(block.rows()) +
                               "x" + std::to_string(block.cols()) + ", expected " + expected);
      layer_of_block_[*found] = spec.layer;
      indices.push_back(*found);
    }
    blocks_ = indices;
    embed_tokens_ = indices[0];
    embed_positions_ = indices[1];
    layers_.resize(static_cast<std::size_t>(config.n_layers));
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      for (std::size_t t = 0; t < tensor::count; ++t)
        layers_[i][t] = indices[2 + i * tensor::count + t];
    }
    final_norm_weight_ = indices[indices.size() - 2];
    final_norm_bias_ = indices.back();
  }

  basic_opt_model(const basic_opt_model&) = delete;
  basic_opt_model& operator=(const basic_opt_model&) = delete;

  const opt_config& config() const { return config_; }
  const store_type& store() const { return *store_; }
  // Store indices of all the model's tensors, in parameter_specs order: the "full" gradient set.
  const std::vector<std::size_t>& parameter_blocks() const { return blocks_; }
  // The store index of tensor t of decoder layer i.
  std::size_t layer_block(int i, tensor::index t) const {
    return layers_.at(static_cast<std::size_t>(i))[t];
  }

  // Examples are split into this many contiguous chunks (fewer for smaller batches), each
  // accumulating its own gradients, summed in chunk order: the result depends on the chunk
  // count, never on the thread count. More chunks balance threads better and cost one gradient
  // copy each.
  void set_gradient_chunks(std::size_t chunks) {
    zo_examples::require(chunks > 0, "gradient chunks must be positive, got 0");
    gradient_chunks_ = chunks;
  }

  // Observables of the work done, summed over examples since construction or reset_counters():
  // decoder layers whose activations were kept for a backward pass, and decoder layers whose
  // backward pass ran.
  std::uint64_t kept_layer_count() const { return kept_layers_.load(); }
  std::uint64_t backward_layer_count() const { return backward_layers_.load(); }
  void reset_counters() {
    kept_layers_ = 0;
    backward_layers_ = 0;
  }

  // Inference: logits at the given positions only, one row each, over the full vocabulary or
  // over `candidates` (columns in their order). Keeps no activations beyond the current layer,
  // and runs no position after the last one asked for, since attention is causal.
  matrix_type logits(std::span<const int> tokens, std::span<const int> positions,
                     std::span<const int> candidates = {}) const {
    check_sequence(tokens, "the sequence");
    zo_examples::require(!positions.empty(), "logits asked for no position");
    for (int p : positions) {
      zo_examples::require(p >= 0 && static_cast<std::size_t>(p) < tokens.size(),
                           "position " + std::to_string(p) + " is outside the sequence of " +
                               std::to_string(tokens.size()) + " tokens");
    }
    candidate_columns(candidates);
    matrix_type out;
    single_threaded_eigen([&] {
      workspace ws;
      forward(tokens, positions, ws, nullptr);
      head_logits(ws.final_hidden, candidates, ws, out);
    });
    return out;
  }

  // Per-example losses, computed in parallel over examples with inference-mode forwards.
  std::vector<double> example_losses(const batch& examples,
                                     const loss_options& options = {}) const {
    const std::vector<int> columns = check_batch(examples, options);
    std::vector<double> losses(examples.size());
    const auto count = static_cast<std::ptrdiff_t>(examples.size());
#pragma omp parallel
    {
      workspace ws;
#pragma omp for schedule(dynamic)
      for (std::ptrdiff_t i = 0; i < count; ++i) {
        const example& ex = examples[static_cast<std::size_t>(i)];
        target_positions(ex, ws.positions);
        forward(ex.tokens, ws.positions, ws, nullptr);
        head_logits(ws.final_hidden, options.candidates, ws, ws.logits);
        losses[static_cast<std::size_t>(i)] = cross_entropy(ws, ex, columns, 0, false);
      }
    }
    return losses;
  }

  double loss(const batch& examples, const loss_options& options = {}) const {
    return mean(example_losses(examples, options));
  }

  // The batch loss, with its exact gradients added to the buffers of the requested blocks only
  // (zero-initialised by the caller, row-major like the blocks). The backward pass starts at the
  // loss and stops at the lowest layer holding a requested block: layers below it keep no
  // activations and do no backward work.
  double loss_and_gradients(const batch& examples, zo::gradient_view<T>& gradients,
                            const loss_options& options = {}) const requires(!zo::is_16bit<T>) {
    const std::vector<int> columns = check_batch(examples, options);
    const auto requested = gradients.blocks();
    int lowest = config_.layer_count();  // no layer: the loss alone
    for (std::size_t b : requested) {
      zo_examples::require(
          b < layer_of_block_.size() && layer_of_block_[b] >= 0,
          "a gradient was requested for block " + std::to_string(b) +
              (b < store_->size() ? " ('" + std::string(store_->block(b).name()) + "')"
                                  : std::string()) +
              ", which is not a tensor of the model");
      lowest = std::min(lowest, layer_of_block_[b]);
    }
    const std::size_t n = examples.size();
    const std::size_t chunks = std::min(n, gradient_chunks_);
    std::vector<std::vector<std::vector<T>>> partial(chunks);
    std::vector<double> losses(n);
#pragma omp parallel
    {
      workspace ws;
      std::vector<layer_state> kept(static_cast<std::size_t>(config_.n_layers));
#pragma omp for schedule(dynamic)
      for (std::ptrdiff_t c = 0; c < static_cast<std::ptrdiff_t>(chunks); ++c) {
        const auto chunk = static_cast<std::size_t>(c);
        // Chunk 0 adds straight into the caller's buffers: the same sums as a zero buffer.
        std::vector<T*> destination(store_->size(), nullptr);
        for (std::size_t k = 0; k < requested.size(); ++k) {
          if (chunk == 0) {
            destination[requested[k]] = gradients[k];
          } else {
            partial[chunk].emplace_back(store_->block(requested[k]).size(), T(0));
            destination[requested[k]] = partial[chunk].back().data();
          }
        }
        for (std::size_t i = chunk * n / chunks; i < (chunk + 1) * n / chunks; ++i) {
          losses[i] = backward_example(examples[i], options, columns, 1.0 / double(n), lowest,
                                       destination, ws, kept);
        }
      }
    }
    for (std::size_t chunk = 1; chunk < chunks; ++chunk) {
      for (std::size_t k = 0; k < requested.size(); ++k) {
        const auto size = static_cast<Eigen::Index>(partial[chunk][k].size());
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(gradients[k], size) +=
            Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(partial[chunk][k].data(), size);
      }
    }
    return mean(losses);
  }

  // The logits at an example's targets as the backward pass sees them (every layer keeping its
  // activations); for checking that training and inference forwards agree.
  matrix_type training_logits(const example& ex, const loss_options& options = {}) const {
    check_batch(batch{ex}, options);
    matrix_type out;
    single_threaded_eigen([&] {
      workspace ws;
      std::vector<layer_state> kept(static_cast<std::size_t>(config_.n_layers));
      target_positions(ex, ws.positions);
      forward(ex.tokens, ws.positions, ws, &kept, embedding_layer);
      head_logits(ws.final_hidden, options.candidates, ws, out);
    });
    return out;
  }

 private:
  using row_map = Eigen::Map<matrix_type>;
  static constexpr scalar norm_epsilon = scalar(1e-5);

  // What one decoder layer's backward pass needs from its forward pass. Inference reuses one of
  // these for every layer.
  struct layer_state {
    matrix_type attn_xhat, attn_input, q, k, v, probabilities, context;
    matrix_type ffn_xhat, ffn_input, hidden;  // hidden: after the ReLU
    column_type attn_rstd, ffn_rstd;
  };

  // Per-thread scratch, reused across examples so the hot loops do not allocate.
  struct workspace {
    std::vector<int> positions;
    matrix_type x, projection, selected, final_xhat, final_hidden, logits, candidate_embeddings;
    column_type final_rstd;
    layer_state layer;
    // 16-bit parameters widened to float, one weight and one bias (or norm weight and bias) at a
    // time, and two embedding rows; empty for float parameters, which are read in place.
    matrix_type weight, bias;
    row_type first_row, second_row;
    // Backward scratch.
    matrix_type d_logits, d_candidates, d_final, d_selected, dx, d_hidden, d_ffn_input, d_norm,
        d_context, dq, dk, dv, d_scores, d_attn_input, dxhat;
    column_type row_dot, mean1, mean2;
  };

  // A parameter as a matrix of scalars: the store's own, or the 16-bit one widened into
  // `widened`.
  const matrix_type& param(std::size_t block, matrix_type& widened) const {
    if constexpr (zo::is_16bit<T>) {
      const auto b = store_->block(block);
      widened.resize(static_cast<Eigen::Index>(b.rows()), static_cast<Eigen::Index>(b.cols()));
      std::transform(b.data(), b.data() + b.size(), widened.data(),
                     [](T x) { return zo::widen(x); });
      return widened;
    } else {
      (void)widened;
      return store_->matrix(block);
    }
  }
  // The backward pass reads parameters in place.
  const matrix_type& param(std::size_t block) const requires(!zo::is_16bit<T>) {
    return store_->matrix(block);
  }
  // Row r of a parameter: in place, or widened into `widened`.
  Eigen::Ref<const row_type> param_row(std::size_t block, Eigen::Index r, row_type& widened) const {
    if constexpr (zo::is_16bit<T>) {
      const auto b = store_->block(block);
      const T* first = b.data() + static_cast<std::size_t>(r) * b.cols();
      widened.resize(static_cast<Eigen::Index>(b.cols()));
      std::transform(first, first + b.cols(), widened.data(), [](T x) { return zo::widen(x); });
      return widened;
    } else {
      (void)widened;
      return store_->matrix(block).row(r);
    }
  }
  static row_map gradient_map(T* g, const matrix_type& like) {
    return row_map(g, like.rows(), like.cols());
  }

  static double mean(const std::vector<double>& values) {
    double sum = 0;
    for (double v : values)
      sum += v;  // in order, so the result does not depend on how the values were computed
    return sum / double(values.size());
  }

  // Eigen parallelises large products over OpenMP threads unless it already runs inside a
  // parallel region; every product here runs inside one, so results do not depend on Eigen's
  // blocking for the thread count.
  template <class F>
  static void single_threaded_eigen(F&& f) {
#pragma omp parallel
    {
#pragma omp single
      f();
    }
  }

  void check_sequence(std::span<const int> tokens, const std::string& what) const {
    zo_examples::require(!tokens.empty(), what + " has no tokens");
    zo_examples::require(
        tokens.size() <= static_cast<std::size_t>(config_.max_positions),
        what + " has " + std::to_string(tokens.size()) +
            " tokens, more than max_positions = " + std::to_string(config_.max_positions));
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      zo_examples::require(tokens[t] >= 0 && tokens[t] < config_.vocab_size,
                           what + ": token " + std::to_string(tokens[t]) + " at position " +
                               std::to_string(t) + " is outside the vocabulary of " +
                               std::to_string(config_.vocab_size));
    }
  }

  // Column of each token in the candidate logits (-1 when not a candidate); empty for the full
  // vocabulary.
  std::vector<int> candidate_columns(std::span<const int> candidates) const {
    std::vector<int> columns;
    if (candidates.empty()) return columns;
    columns.assign(static_cast<std::size_t>(config_.vocab_size), -1);
    for (std::size_t c = 0; c < candidates.size(); ++c) {
      const int token = candidates[c];
      zo_examples::require(token >= 0 && token < config_.vocab_size,
                           "candidate token " + std::to_string(token) +
                               " is outside the vocabulary of " +
                               std::to_string(config_.vocab_size));
      zo_examples::require(columns[static_cast<std::size_t>(token)] < 0,
                           "candidate token " + std::to_string(token) + " is listed twice");
      columns[static_cast<std::size_t>(token)] = static_cast<int>(c);
    }
    return columns;
  }

  // Everything is checked before any parallel region, where an exception could not escape.
  std::vector<int> check_batch(const batch& examples, const loss_options& options) const {
    zo_examples::require(!examples.empty(), "the batch has no examples");
    const std::vector<int> columns = candidate_columns(options.candidates);
    for (std::size_t i = 0; i < examples.size(); ++i) {
      const example& ex = examples[i];
      const std::string what = "example " + std::to_string(i);
      check_sequence(ex.tokens, what);
      zo_examples::require(!ex.targets.empty(), what + " has no targets");
      for (const target& t : ex.targets) {
        zo_examples::require(
            t.position >= 0 && static_cast<std::size_t>(t.position) < ex.tokens.size(),
            what + ": target position " + std::to_string(t.position) + " is outside its " +
                std::to_string(ex.tokens.size()) + " tokens");
        zo_examples::require(t.token >= 0 && t.token < config_.vocab_size,
                             what + ": target token " + std::to_string(t.token) +
                                 " is outside the vocabulary of " +
                                 std::to_string(config_.vocab_size));
        zo_examples::require(
            columns.empty() || columns[static_cast<std::size_t>(t.token)] >= 0,
            what + ": target token " + std::to_string(t.token) + " is not among the candidates");
      }
    }
    return columns;
  }

  static void target_positions(const example& ex, std::vector<int>& positions) {
    positions.clear();
    for (const target& t : ex.targets)
      positions.push_back(t.position);
  }

  static void linear(const matrix_type& x, const matrix_type& weight, const matrix_type& bias,
                     matrix_type& y) {
    y.noalias() = x * weight.transpose();  // PyTorch's [out, in] weight
    y.rowwise() += bias.row(0);
  }

  // y = LN(x) row by row; keeps x̂ and 1/σ for the backward pass.
  static void layer_norm(const matrix_type& x, const matrix_type& weight, const matrix_type& bias,
                         matrix_type& xhat, column_type& rstd, matrix_type& y) {
    rstd = x.rowwise().mean();  // the mean, until overwritten below
    xhat = x.colwise() - rstd;
    rstd = ((xhat.array().square().rowwise().sum() / scalar(x.cols())) + norm_epsilon)
               .rsqrt()
               .matrix();
    xhat.array().colwise() *= rstd.array();
    y = ((xhat.array().rowwise() * weight.row(0).array()).rowwise() + bias.row(0).array()).matrix();
  }

  // Adds the layer-norm parameters' gradients; sets dx to the input's gradient when asked.
  void layer_norm_backward(const matrix_type& dy, const matrix_type& xhat, const column_type& rstd,
                           std::size_t weight_block, std::size_t bias_block,
                           const std::vector<T*>& grad, bool need_input, workspace& ws,
                           matrix_type& dx) const {
    const matrix_type& weight = param(weight_block);
    if (T* g = grad[weight_block]) {
      gradient_map(g, weight).array() += (dy.array() * xhat.array()).colwise().sum();
    }
    if (T* g = grad[bias_block]) gradient_map(g, weight).array() += dy.array().colwise().sum();
    if (!need_input) return;
    ws.dxhat = (dy.array().rowwise() * weight.row(0).array()).matrix();
    ws.mean1 = ws.dxhat.rowwise().mean();
    ws.mean2 = (ws.dxhat.array() * xhat.array()).rowwise().mean().matrix();
    dx = (((ws.dxhat.array().colwise() - ws.mean1.array()) -
           xhat.array().colwise() * ws.mean2.array())
              .colwise() *
          rstd.array())
             .matrix();
  }

  // Softmax over each row's causal prefix; the masked entries become exact zeros, which the
  // backward pass relies on.
  template <class Scores>
  static void causal_softmax(Scores&& scores) {
    const Eigen::Index length = scores.rows();
    for (Eigen::Index t = 0; t < length; ++t) {
      auto live = scores.row(t).head(t + 1);
      live = (live.array() - live.maxCoeff()).exp().matrix();
      live /= live.sum();
      scores.row(t).tail(length - t - 1).setZero();
    }
  }

  // One decoder layer on x (length × d) in place. Inference and training run this same code, so
  // their logits agree bit for bit.
  void layer_forward(int i, matrix_type& x, layer_state& s, workspace& ws) const {
    const auto& id = layers_[static_cast<std::size_t>(i)];
    const Eigen::Index length = x.rows(), head_dim = config_.head_dim();
    // The layer's parameters, each in place or widened into the workspace just before its use.
    auto weight = [&](tensor::index t) -> const matrix_type& { return param(id[t], ws.weight); };
    auto bias = [&](tensor::index t) -> const matrix_type& { return param(id[t], ws.bias); };
    matrix_type& projection = ws.projection;
    layer_norm(x, weight(tensor::attn_norm_weight), bias(tensor::attn_norm_bias), s.attn_xhat,
               s.attn_rstd, s.attn_input);
    linear(s.attn_input, weight(tensor::q_weight), bias(tensor::q_bias), s.q);
    s.q *=
        scalar(1) / std::sqrt(scalar(head_dim));  // OPT scales the projected query, bias included
    linear(s.attn_input, weight(tensor::k_weight), bias(tensor::k_bias), s.k);
    linear(s.attn_input, weight(tensor::v_weight), bias(tensor::v_bias), s.v);
    s.probabilities.resize(config_.n_heads * length, length);
    s.context.resize(length, config_.d_model);
    for (int h = 0; h < config_.n_heads; ++h) {
      auto p = s.probabilities.middleRows(h * length, length);
      p.noalias() = s.q.middleCols(h * head_dim, head_dim) *
                    s.k.middleCols(h * head_dim, head_dim).transpose();
      causal_softmax(p);
      s.context.middleCols(h * head_dim, head_dim).noalias() =
          p * s.v.middleCols(h * head_dim, head_dim);
    }
    linear(s.context, weight(tensor::out_weight), bias(tensor::out_bias), projection);
    x += projection;
    layer_norm(x, weight(tensor::ffn_norm_weight), bias(tensor::ffn_norm_bias), s.ffn_xhat,
               s.ffn_rstd, s.ffn_input);
    linear(s.ffn_input, weight(tensor::fc1_weight), bias(tensor::fc1_bias), s.hidden);
    s.hidden = s.hidden.cwiseMax(scalar(0));
    linear(s.hidden, weight(tensor::fc2_weight), bias(tensor::fc2_bias), projection);
    x += projection;
  }

  // Runs the model over the tokens up to the last position asked for and leaves the final
  // hidden states of `positions` (one row each) in ws.final_hidden. With `kept`, decoder layers
  // at or above layer index keep_from store their activations there; the others share
  // ws.layer.
  void forward(std::span<const int> tokens, std::span<const int> positions, workspace& ws,
               std::vector<layer_state>* kept, int keep_from = 0) const {
    const Eigen::Index length = *std::max_element(positions.begin(), positions.end()) + 1;
    ws.x.resize(length, config_.d_model);
    for (Eigen::Index t = 0; t < length; ++t)
      ws.x.row(t) = param_row(embed_tokens_, tokens[static_cast<std::size_t>(t)], ws.first_row) +
                    param_row(embed_positions_, t + 2, ws.second_row);
    for (int i = 0; i < config_.n_layers; ++i) {
      const bool keep = kept != nullptr && decoder_layer(i) >= keep_from;
      if (keep) ++kept_layers_;
      layer_forward(i, ws.x, keep ? (*kept)[static_cast<std::size_t>(i)] : ws.layer, ws);
    }
    // The final norm is per position, so only the positions asked for go through it.
    ws.selected.resize(static_cast<Eigen::Index>(positions.size()), config_.d_model);
    for (std::size_t j = 0; j < positions.size(); ++j)
      ws.selected.row(static_cast<Eigen::Index>(j)) = ws.x.row(positions[j]);
    layer_norm(ws.selected, param(final_norm_weight_, ws.weight), param(final_norm_bias_, ws.bias),
               ws.final_xhat, ws.final_rstd, ws.final_hidden);
  }

  void head_logits(const matrix_type& hidden, std::span<const int> candidates, workspace& ws,
                   matrix_type& out) const {
    if (candidates.empty()) {
      out.noalias() = hidden * param(embed_tokens_, ws.weight).transpose();
      return;
    }
    ws.candidate_embeddings.resize(static_cast<Eigen::Index>(candidates.size()), config_.d_model);
    for (std::size_t c = 0; c < candidates.size(); ++c)
      ws.candidate_embeddings.row(static_cast<Eigen::Index>(c)) =
          param_row(embed_tokens_, candidates[c], ws.first_row);
    out.noalias() = hidden * ws.candidate_embeddings.transpose();
  }

  // Mean cross-entropy over the example's targets from ws.logits; with want_gradient, sets
  // ws.d_logits to the gradient of weight × that mean.
  double cross_entropy(workspace& ws, const example& ex, const std::vector<int>& columns,
                       double weight, bool want_gradient) const {
    const auto m = static_cast<Eigen::Index>(ex.targets.size());
    const scalar scale = scalar(weight / double(m));
    if (want_gradient) ws.d_logits.resize(m, ws.logits.cols());
    double total = 0;
    for (Eigen::Index j = 0; j < m; ++j) {
      const auto row = ws.logits.row(j);
      const scalar max = row.maxCoeff();
      const double log_sum =
          double(max) + std::log((row.template cast<double>().array() - double(max)).exp().sum());
      const int token = ex.targets[static_cast<std::size_t>(j)].token;
      const int column = columns.empty() ? token : columns[static_cast<std::size_t>(token)];
      total += log_sum - double(row(column));
      if (want_gradient) {
        ws.d_logits.row(j) = ((row.array() - scalar(log_sum)).exp() * scale).matrix();
        ws.d_logits(j, column) -= scale;
      }
    }
    return total / double(m);
  }

  // One decoder layer's backward pass. dx holds the gradient of the layer's output and, when
  // propagate is set, becomes that of its input. Work that feeds neither a requested gradient nor
  // the layers below is skipped.
  void layer_backward(int i, matrix_type& dx, const layer_state& s, const std::vector<T*>& grad,
                      bool propagate, workspace& ws) const {
    const auto& id = layers_[static_cast<std::size_t>(i)];
    auto requested = [&](std::initializer_list<tensor::index> tensors) {
      for (auto t : tensors) {
        if (grad[id[t]] != nullptr) return true;
      }
      return false;
    };
    auto add_weight_gradient = [&](tensor::index t, const matrix_type& d_out,
                                   const matrix_type& input) {
      if (T* g = grad[id[t]]) gradient_map(g, param(id[t])).noalias() += d_out.transpose() * input;
    };
    auto add_bias_gradient = [&](tensor::index t, const matrix_type& d_out) {
      if (T* g = grad[id[t]]) gradient_map(g, param(id[t])) += d_out.colwise().sum();
    };
    using enum tensor::index;
    const bool want_attn_norm = propagate || requested({attn_norm_weight, attn_norm_bias});
    const bool want_qkv =
        want_attn_norm || requested({q_weight, q_bias, k_weight, k_bias, v_weight, v_bias});
    const bool want_out = want_qkv || requested({out_weight, out_bias});
    const bool want_ffn_norm = want_out || requested({ffn_norm_weight, ffn_norm_bias});
    const bool want_fc1 = want_ffn_norm || requested({fc1_weight, fc1_bias});

    add_weight_gradient(fc2_weight, dx, s.hidden);
    add_bias_gradient(fc2_bias, dx);
    if (!want_fc1) return;
    ws.d_hidden.noalias() = dx * param(id[fc2_weight]);
    ws.d_hidden.array() *= (s.hidden.array() > T(0)).template cast<T>();  // ReLU
    add_weight_gradient(fc1_weight, ws.d_hidden, s.ffn_input);
    add_bias_gradient(fc1_bias, ws.d_hidden);
    if (!want_ffn_norm) return;
    ws.d_ffn_input.noalias() = ws.d_hidden * param(id[fc1_weight]);
    layer_norm_backward(ws.d_ffn_input, s.ffn_xhat, s.ffn_rstd, id[ffn_norm_weight],
                        id[ffn_norm_bias], grad, want_out, ws, ws.d_norm);
    if (!want_out) return;
    dx += ws.d_norm;  // the residual: dx is now the gradient after attention

    add_weight_gradient(out_weight, dx, s.context);
    add_bias_gradient(out_bias, dx);
    if (!want_qkv) return;
    ws.d_context.noalias() = dx * param(id[out_weight]);
    const Eigen::Index length = dx.rows(), head_dim = config_.head_dim();
    ws.dq.resize(length, config_.d_model);
    ws.dk.resize(length, config_.d_model);
    ws.dv.resize(length, config_.d_model);
    for (int h = 0; h < config_.n_heads; ++h) {
      const auto p = s.probabilities.middleRows(h * length, length);
      const auto cols = [&](const matrix_type& m) { return m.middleCols(h * head_dim, head_dim); };
      const auto d_context = cols(ws.d_context);
      ws.d_scores.noalias() = d_context * cols(s.v).transpose();
      ws.dv.middleCols(h * head_dim, head_dim).noalias() = p.transpose() * d_context;
      // Softmax backward; masked entries have p = 0 and so get no gradient.
      ws.row_dot = (p.array() * ws.d_scores.array()).rowwise().sum().matrix();
      ws.d_scores = (p.array() * (ws.d_scores.array().colwise() - ws.row_dot.array())).matrix();
      ws.dq.middleCols(h * head_dim, head_dim).noalias() = ws.d_scores * cols(s.k);
      ws.dk.middleCols(h * head_dim, head_dim).noalias() = ws.d_scores.transpose() * cols(s.q);
    }
    ws.dq *= T(1) / std::sqrt(T(head_dim));  // back through OPT's query scaling
    add_weight_gradient(q_weight, ws.dq, s.attn_input);
    add_bias_gradient(q_bias, ws.dq);
    add_weight_gradient(k_weight, ws.dk, s.attn_input);
    add_bias_gradient(k_bias, ws.dk);
    add_weight_gradient(v_weight, ws.dv, s.attn_input);
    add_bias_gradient(v_bias, ws.dv);
    if (!want_attn_norm) return;
    ws.d_attn_input.noalias() = ws.dq * param(id[q_weight]);
    ws.d_attn_input.noalias() += ws.dk * param(id[k_weight]);
    ws.d_attn_input.noalias() += ws.dv * param(id[v_weight]);
    layer_norm_backward(ws.d_attn_input, s.attn_xhat, s.attn_rstd, id[attn_norm_weight],
                        id[attn_norm_bias], grad, propagate, ws, ws.d_norm);
    if (propagate) dx += ws.d_norm;
  }

  // Forward with activations kept from layer `lowest` up, the loss, and the backward pass down
  // to that layer, adding weight × the example's gradients into `grad` (by store index).
  double backward_example(const example& ex, const loss_options& options,
                          const std::vector<int>& columns, double weight, int lowest,
                          const std::vector<T*>& grad, workspace& ws,
                          std::vector<layer_state>& kept) const {
    target_positions(ex, ws.positions);
    forward(ex.tokens, ws.positions, ws, &kept, lowest);
    head_logits(ws.final_hidden, options.candidates, ws, ws.logits);
    const bool backward = lowest < config_.layer_count();
    const double loss = cross_entropy(ws, ex, columns, weight, backward);
    if (!backward) return loss;

    // The LM head, tied to the token embedding.
    const matrix_type& embed_tokens = param(embed_tokens_);
    T* embed_gradient = grad[embed_tokens_];
    if (options.candidates.empty()) {
      if (embed_gradient) {
        gradient_map(embed_gradient, embed_tokens).noalias() +=
            ws.d_logits.transpose() * ws.final_hidden;
      }
      ws.d_final.noalias() = ws.d_logits * embed_tokens;
    } else {
      if (embed_gradient) {
        ws.d_candidates.noalias() = ws.d_logits.transpose() * ws.final_hidden;
        auto g = gradient_map(embed_gradient, embed_tokens);
        for (std::size_t c = 0; c < options.candidates.size(); ++c)
          g.row(options.candidates[c]) += ws.d_candidates.row(static_cast<Eigen::Index>(c));
      }
      ws.d_final.noalias() = ws.d_logits * ws.candidate_embeddings;
    }
    const bool below_final_norm = lowest < final_norm_layer(config_);
    layer_norm_backward(ws.d_final, ws.final_xhat, ws.final_rstd, final_norm_weight_,
                        final_norm_bias_, grad, below_final_norm, ws, ws.d_selected);
    if (!below_final_norm) return loss;

    ws.dx.setZero(ws.x.rows(), config_.d_model);
    for (std::size_t j = 0; j < ws.positions.size(); ++j)
      ws.dx.row(ws.positions[j]) += ws.d_selected.row(static_cast<Eigen::Index>(j));
    for (int i = config_.n_layers - 1; i >= 0 && decoder_layer(i) >= lowest; --i) {
      layer_backward(i, ws.dx, kept[static_cast<std::size_t>(i)], grad, decoder_layer(i) > lowest,
                     ws);
      ++backward_layers_;
    }
    if (lowest == embedding_layer) {
      T* position_gradient = grad[embed_positions_];
      for (Eigen::Index t = 0; t < ws.dx.rows(); ++t) {
        if (embed_gradient) {
          gradient_map(embed_gradient, embed_tokens).row(ex.tokens[static_cast<std::size_t>(t)]) +=
              ws.dx.row(t);
        }
        if (position_gradient) {
          gradient_map(position_gradient, param(embed_positions_)).row(t + 2) += ws.dx.row(t);
        }
      }
    }
    return loss;
  }

  opt_config config_;
  const store_type* store_;
  std::vector<int> layer_of_block_;  // by store index; -1 for blocks that are not the model's
  std::vector<std::size_t> blocks_;
  std::size_t embed_tokens_ = 0, embed_positions_ = 0, final_norm_weight_ = 0, final_norm_bias_ = 0;
  std::vector<std::array<std::size_t, tensor::count>> layers_;
  std::size_t gradient_chunks_ = 4;
  mutable std::atomic<std::uint64_t> kept_layers_{0}, backward_layers_{0};
};

using opt_model = basic_opt_model<float>;
using bf16_opt_model = basic_opt_model<zo::bfloat16>;

// Gradient buffers for a set of blocks, e.g. parameter_blocks() for first-order training of the
// whole model.
template <class T>
class gradient_buffers {
 public:
  gradient_buffers(const zo::eigen_store<T>& store, std::vector<std::size_t> blocks)
      : blocks_(std::move(blocks)) {
    for (std::size_t b : blocks_) {
      zo_examples::require(b < store.size(), "gradient_buffers: block " + std::to_string(b) +
                                                 " is not in the store of " +
                                                 std::to_string(store.size()) + " blocks");
      buffers_.push_back(matrix<T>::Zero(store.matrix(b).rows(), store.matrix(b).cols()));
    }
    for (auto& buffer : buffers_)
      pointers_.push_back(buffer.data());
  }

  // Zeroes the buffers and returns a view over them, as a hybrid optimizer hands one out.
  zo::gradient_view<T> view() {
    for (auto& buffer : buffers_)
      buffer.setZero();
    return zo::gradient_view<T>(blocks_, pointers_);
  }

  const std::vector<std::size_t>& blocks() const { return blocks_; }
  // The gradient of blocks()[k].
  const matrix<T>& operator[](std::size_t k) const { return buffers_.at(k); }

 private:
  std::vector<std::size_t> blocks_;
  std::vector<matrix<T>> buffers_;
  std::vector<T*> pointers_;
};

// The model's loss on the current batch as a zo objective: a plain objective for zeroth-order
// optimizers (mezo, lozo) and a differentiable one for the hybrid (loho).
template <class T>
class basic_objective {
 public:
  basic_objective(const basic_opt_model<T>& model, batch examples, loss_options options = {})
      : model_(&model), batch_(std::move(examples)), options_(std::move(options)) {}

  void set_batch(batch examples) { batch_ = std::move(examples); }
  const batch& current_batch() const { return batch_; }
  const loss_options& options() const { return options_; }

  double loss() const { return model_->loss(batch_, options_); }
  double operator()() const { return loss(); }
  double loss_and_gradients(zo::gradient_view<T>& gradients) const requires(!zo::is_16bit<T>) {
    return model_->loss_and_gradients(batch_, gradients, options_);
  }

 private:
  const basic_opt_model<T>* model_;
  batch batch_;
  loss_options options_;
};

using lm_objective = basic_objective<float>;
using bf16_objective = basic_objective<zo::bfloat16>;

}  // namespace opt
