// SPDX-License-Identifier: Apache-2.0
// Layer selectors that use the blocks' layer indices: LoHO's deepest-k split, the memory-budget
// choice of k, and LeZO-style round-robin and random layer subsets.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "zo/core/errors.hpp"
#include "zo/random/keyed.hpp"
#include "zo/selectors/all_blocks.hpp"

namespace zo {

// Number of layers a store spans: one more than the largest layer index (0 without layers).
template <class Store>
std::size_t layer_count(const Store& store) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < store.size(); ++i) {
    if (const auto layer = store.block(i).layer(); layer && *layer >= 0) {
      count = std::max(count, static_cast<std::size_t>(*layer) + 1);
    }
  }
  return count;
}

// LoHO inter-layer: the deepest k layers (those next to the head) first-order, every other block
// — shallower layers and blocks without a layer (embeddings, final norm, head) — zeroth-order.
class deepest_layers {
 public:
  explicit deepest_layers(std::size_t k) : k_(k) {}
  std::size_t k() const { return k_; }

  template <class Store>
  void select(std::uint64_t, const Store& store, std::span<block_role> roles) const {
    const std::size_t layers = layer_count(store);
    require(k_ <= layers, [&] {
      return "deepest_layers: k = " + std::to_string(k_) + " exceeds the " +
             std::to_string(layers) + " layers of the store";
    });
    for (std::size_t i = 0; i < store.size(); ++i) {
      const auto layer = store.block(i).layer();
      const bool deep = layer && *layer >= 0 && static_cast<std::size_t>(*layer) + k_ >= layers;
      roles[i] = deep ? block_role::first_order : block_role::zeroth_order;
    }
  }

 private:
  std::size_t k_;
};

// What training one layer first-order costs, in bytes, as the model reports it.
struct layer_cost {
  std::size_t activation_bytes_per_example = 0;  // kept for backprop through the layer
  std::size_t parameter_bytes = 0;
  std::size_t gradient_bytes = 0;
  std::size_t optimizer_state_bytes = 0;  // e.g. Adam's two moments
};

struct memory_cost_model {
  std::size_t fixed_bytes = 0;  // inference-time memory besides the parameters
  std::size_t batch_size = 1;
  std::vector<layer_cost> layers;  // indexed by layer, shallowest first

  // Predicted peak with the deepest k layers first-order: every parameter, the fixed part, and
  // the first-order layers' activations, gradients and optimizer state.
  std::size_t predicted_bytes(std::size_t k) const {
    std::size_t bytes = fixed_bytes;
    for (const auto& l : layers)
      bytes += l.parameter_bytes;
    for (std::size_t j = layers.size() - k; j < layers.size(); ++j) {
      bytes += batch_size * layers[j].activation_bytes_per_example + layers[j].gradient_bytes +
               layers[j].optimizer_state_bytes;
    }
    return bytes;
  }
};

// LoHO with k chosen to fit a memory budget: the largest k whose predicted bytes fit.
class memory_budget {
 public:
  memory_budget(std::size_t budget_bytes, memory_cost_model model)
      : budget_(budget_bytes), model_(std::move(model)), k_(0) {
    require(!model_.layers.empty(), "memory_budget: the cost model has no layers");
    const std::size_t minimum = model_.predicted_bytes(0);
    require(minimum <= budget_,
                    "memory_budget: even k = 0 needs " + std::to_string(minimum) +
                        " bytes, more than the budget of " + std::to_string(budget_) + " bytes");
    while (k_ < model_.layers.size() && model_.predicted_bytes(k_ + 1) <= budget_)
      ++k_;
  }

  std::size_t k() const { return k_; }
  std::size_t predicted_bytes() const { return model_.predicted_bytes(k_); }
  std::size_t budget_bytes() const { return budget_; }

  template <class Store>
  void select(std::uint64_t step, const Store& store, std::span<block_role> roles) const {
    require(layer_count(store) == model_.layers.size(), [&] {
      return "memory_budget: the cost model has " + std::to_string(model_.layers.size()) +
             " layers, the store " + std::to_string(layer_count(store));
    });
    deepest_layers(k_).select(step, store, roles);
  }

 private:
  std::size_t budget_;
  memory_cost_model model_;
  std::size_t k_;
};

namespace detail {

// Gives `chosen` to blocks of the chosen layers and to blocks without a layer, `others` to the
// rest.
template <class Store>
void assign_layers(const Store& store, const std::vector<bool>& chosen_layers, block_role chosen,
                   block_role others, std::span<block_role> roles) {
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto layer = store.block(i).layer();
    const bool picked = !layer || *layer < 0 || chosen_layers[static_cast<std::size_t>(*layer)];
    roles[i] = picked ? chosen : others;
  }
}

inline void require_layers(std::size_t per_step, std::size_t layers, const char* who) {
  require(per_step >= 1, [&] { return std::string(who) + ": layers_per_step must be at least 1"; });
  require(per_step <= layers, [&] {
    return std::string(who) + ": layers_per_step = " + std::to_string(per_step) + " exceeds the " +
           std::to_string(layers) + " layers of the store";
  });
}

}  // namespace detail

// Cycles through the layers, `layers_per_step` at a time; the others get `others` (frozen by
// default, as in layer-wise MeZO).
class round_robin_layers {
 public:
  explicit round_robin_layers(std::size_t layers_per_step,
                              block_role chosen = block_role::zeroth_order,
                              block_role others = block_role::frozen)
      : per_step_(layers_per_step), chosen_(chosen), others_(others) {}

  template <class Store>
  void select(std::uint64_t step, const Store& store, std::span<block_role> roles) const {
    const std::size_t layers = layer_count(store);
    detail::require_layers(per_step_, layers, "round_robin_layers");
    std::vector<bool> picked(layers, false);
    for (std::size_t j = 0; j < per_step_; ++j)
      picked[(step * per_step_ + j) % layers] = true;
    detail::assign_layers(store, picked, chosen_, others_, roles);
  }

 private:
  std::size_t per_step_;
  block_role chosen_, others_;
};

// A random subset of `layers_per_step` layers at every step (LeZO), drawn from the keyed
// generator so it is reproducible from (seed, step).
class random_layer_subset {
 public:
  random_layer_subset(std::size_t layers_per_step, std::uint64_t seed,
                      block_role chosen = block_role::zeroth_order,
                      block_role others = block_role::frozen)
      : per_step_(layers_per_step), seed_(seed), chosen_(chosen), others_(others) {}

  template <class Store>
  void select(std::uint64_t step, const Store& store, std::span<block_role> roles) const {
    const std::size_t layers = layer_count(store);
    detail::require_layers(per_step_, layers, "random_layer_subset");
    // Each layer gets a keyed random score; the lowest scores are chosen. The scores are the
    // selector's, not a direction's, so they keep the first generator whatever a run's is.
    direction_key key{seed_, static_cast<std::uint32_t>(step), 0, stream::mask, 0};
    key.generator = generator::philox4x32_10;
    std::vector<std::uint32_t> score(layers);
    for (std::size_t l = 0; l < layers; ++l) {
      score[l] = philox_words(key, l)[0];
    }
    std::vector<std::size_t> order(layers);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return score[a] < score[b]; });
    std::vector<bool> picked(layers, false);
    for (std::size_t j = 0; j < per_step_; ++j)
      picked[order[j]] = true;
    detail::assign_layers(store, picked, chosen_, others_, roles);
  }

 private:
  std::size_t per_step_;
  std::uint64_t seed_;
  block_role chosen_, others_;
};

}  // namespace zo
