// SPDX-License-Identifier: Apache-2.0
// LOZO-M's step rule: momentum kept in factor space. For a matrix block with direction U·Vᵀ the
// momentum is N (m × r) with N·Vᵀ the momentum matrix; vector blocks keep dense momentum.
//
//   first step:      N = ḡU
//   V unchanged:     N ← βN + (1 − β)·ḡU
//   V_old → V_new:   N ← β·N·(V_oldᵀ·V_new)/n + (1 − β)·ḡU     (VᵀV ≈ n·I)
//   update:          W ← W − η(N·V_newᵀ + λW)
//
// with ḡU = (1/q) Σ_j g_j·U_j. The r × r product is formed first, O(r²(m + n)), never an m × n
// temporary; V_old is regenerated from its key instead of being stored, so the state is N alone.
// Momentum is kept for every ν, ν = 1 included (the reference silently drops it there).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <ostream>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "zo/config.hpp"
#include "zo/core/block_state.hpp"
#include "zo/core/errors.hpp"
#include "zo/core/state_io.hpp"
#include "zo/perturbations/low_rank.hpp"
#include "zo/random/keyed.hpp"
#include "zo/step_rules/schedules.hpp"

namespace zo {

namespace detail {

// out = keep · out + Σ_t coefficient_t · z_t over up to max_terms_per_pass keyed directions
// (fresh = true ignores the old contents, which may not be initialised).
template <class T>
struct momentum_accumulate_kernel {
  T* out;
  std::size_t size;
  T keep;
  bool fresh;
  direction_key keys[max_terms_per_pass];
  T coefficients[max_terms_per_pass];
  std::size_t terms;

  // One Philox group: its four words are the elements element_of(g, w), batch_groups apart.
  ZO_HOST_DEVICE void operator()(std::size_t g) const {
    const std::size_t first = element_of(g, 0);
    if (first >= size) return;
    const std::size_t lanes = words_inside(first, size);
    T value[group_width];
    for (std::size_t w = 0; w < lanes; ++w)
      value[w] = fresh ? T(0) : keep * out[first + w * batch_groups];
    for (std::size_t t = 0; t < terms; ++t) {
      T z[group_width];
      gaussian_distribution::group(keys[t], g, z);
      for (std::size_t w = 0; w < lanes; ++w)
        value[w] += coefficients[t] * z[w];
    }
    for (std::size_t w = 0; w < lanes; ++w)
      out[first + w * batch_groups] = value[w];
  }
};

// out (r × r) = Xᵀ·Y / n for X, Y (n × r) row-major; each entry is summed in index order by one
// thread, so the result does not depend on the thread count.
template <class T>
struct gram_kernel {
  const T* x;
  const T* y;
  std::size_t n, r;
  T* out;

  ZO_HOST_DEVICE void operator()(std::size_t e) const {
    const std::size_t i = e / r, j = e % r;
    double sum = 0;
    for (std::size_t b = 0; b < n; ++b)
      sum += double(x[b * r + i]) * double(y[b * r + j]);
    out[e] = static_cast<T>(sum / static_cast<double>(n));
  }
};

// out row a = keep · (in row a) · M, for in (m × r) and M (r × r).
template <class T>
struct project_rows_kernel {
  const T* in;
  const T* m;
  std::size_t r;
  T keep;
  T* out;

  ZO_HOST_DEVICE void operator()(std::size_t a) const {
    for (std::size_t j = 0; j < r; ++j) {
      T sum = 0;
      for (std::size_t i = 0; i < r; ++i)
        sum += in[a * r + i] * m[i * r + j];
      out[a * r + j] = keep * sum;
    }
  }
};

template <class T>
struct copy_kernel {
  const T* in;
  T* out;
  ZO_HOST_DEVICE void operator()(std::size_t i) const { out[i] = in[i]; }
};

}  // namespace detail

template <class Schedule = constant_schedule>
class low_rank_momentum {
 public:
  low_rank_momentum(Schedule schedule, double beta = 0.9, double weight_decay = 0)
      : schedule_(std::move(schedule)), beta_(beta), weight_decay_(weight_decay) {
    require(beta >= 0 && beta < 1,
            "low_rank_momentum: beta must be in [0, 1), got " + std::to_string(beta));
    require_non_negative_finite(weight_decay, "low_rank_momentum: weight decay");
  }

  // Constant learning rate; the LOZO reference uses 1e-7 to 1e-6 and β = 0.9.
  explicit low_rank_momentum(
      double learning_rate = 1e-6, double beta = 0.9,
      double weight_decay = 0) requires std::same_as<Schedule, constant_schedule>
      : low_rank_momentum(constant_schedule(learning_rate), beta, weight_decay) {}

  // The momentum lives in the factor space of low_rank_perturbation's directions.
  using required_perturbation = low_rank_perturbation;

  double learning_rate(std::uint64_t step) const { return schedule_(step); }
  double beta() const { return beta_; }
  double weight_decay() const { return weight_decay_; }

  template <class Update>
  void update(Update& u) {
    using T = typename Update::value_type;
    using Backend = typename Update::backend_type;
    auto& state = states_.template typed<Backend, T>();
    const double lr = learning_rate(u.step());
    const std::size_t r = u.perturbation().rank();
    u.for_each_block([&](const auto& block, auto& change) {
      auto& bs = state.blocks[block.id()];
      const bool matrix = low_rank_perturbation::is_matrix(block);
      require_momentum(bs, block, matrix ? block.rows() * r : block.size());
      if (matrix) {
        const T* v_new = matrix_momentum(u, state, bs, block);
        change.add_low_rank(Backend::data(bs.momentum), v_new, r, -lr);
      } else {
        const auto id = static_cast<std::uint32_t>(block.id());
        const auto step = static_cast<std::uint32_t>(u.step());
        accumulate(
            u.backend(), Backend::data(bs.momentum), block.size(), T(beta_), !bs.initialized,
            u.projected_gradients(), bs.initialized ? 1.0 - beta_ : 1.0, [&](std::size_t j) {
              direction_key key{u.seed(), step, id, stream::dense, static_cast<std::uint8_t>(j)};
              key.generator = u.generator();
              return key;
            });
        change.add_dense(Backend::data(bs.momentum), -lr);
      }
      bs.initialized = true;
      if (block.decay()) change.scale_by(1 - lr * weight_decay_);
    });
  }

  void save(std::ostream& out) const {
    state_io::write_tag(out, state_tag, 1);
    states_.save(out);
  }

  // The loaded momentum takes effect at the next step, when the store's element type is known.
  void load(std::istream& in) {
    state_io::read_tag(in, state_tag, 1, "low_rank_momentum");
    states_.load(in);
  }

 private:
  template <class BlockState, class Block>
  static void require_momentum(BlockState& bs, const Block& block, std::size_t count) {
    if (!bs.initialized) {
      bs.momentum.resize(count);
      return;
    }
    require(bs.momentum.size() == count, [&] {
      return "low_rank_momentum: momentum of block '" + std::string(block.name()) + "' has " +
             std::to_string(bs.momentum.size()) + " elements, the block needs " +
             std::to_string(count);
    });
  }

  // N ← β·N·(V_oldᵀ·V_new)/n + (1 − β)·ḡU when V was redrawn, else βN + (1 − β)·ḡU (N = ḡU at
  // the block's first step); returns V_new, in a buffer shared by all blocks.
  template <class Update, class State, class BlockState, class Block>
  const typename Update::value_type* matrix_momentum(Update& u, State& state, BlockState& bs,
                                                     const Block& block) const {
    using T = typename Update::value_type;
    using Backend = typename Update::backend_type;
    const low_rank_perturbation& policy = u.perturbation();
    const auto id = static_cast<std::uint32_t>(block.id());
    const auto step = static_cast<std::uint32_t>(u.step());
    const std::size_t r = policy.rank(), rows = block.rows(), cols = block.cols();
    T* momentum = Backend::data(bs.momentum);
    // Transient factors: V_new, V_old, M, projected N.
    T* v_new = state.transient(2 * cols * r + r * r + rows * r);
    T* v_old = v_new + cols * r;
    T* gram = v_old + cols * r;
    T* projected = gram + r * r;
    const auto& backend = u.backend();
    policy.fill_factor(backend, policy.v_key(u.seed(), u.generator(), step, id), T(1), cols, v_new,
                       r, 1, 0);
    double keep = beta_;
    if (bs.initialized && bs.factor_step != policy.factor_step(step)) {
      policy.fill_factor(backend, policy.v_key(u.seed(), u.generator(), bs.factor_step, id), T(1),
                         cols, v_old, r, 1, 0);
      backend.for_each_index(r * r, detail::gram_kernel<T>{v_old, v_new, cols, r, gram}, cols);
      backend.for_each_index(
          rows, detail::project_rows_kernel<T>{momentum, gram, r, T(beta_), projected}, r * r);
      backend.for_each_index(rows * r, detail::copy_kernel<T>{projected, momentum});
      keep = 1;
    }
    const double weight = bs.initialized ? 1.0 - beta_ : 1.0;
    accumulate(backend, momentum, rows * r, T(keep), !bs.initialized, u.projected_gradients(),
               weight * policy.u_scale(), [&](std::size_t j) {
                 return policy.u_key(u.seed(), u.generator(), step, id,
                                     static_cast<std::uint8_t>(j));
               });
    bs.factor_step = policy.factor_step(step);
    return v_new;
  }

  static constexpr std::uint64_t state_tag = 0x6c6f'7a6f'2d6d'6f6dull;  // "lozo-mom" in ASCII

  template <class Backend, class T>
  struct record {
    typename Backend::template buffer<T> momentum;
    std::uint32_t factor_step = 0;  // the step whose V the momentum is expressed in
    bool initialized = false;       // momentum holds a value: after a step, or loaded

    void encode(auto& out) const {
      out.u32(factor_step);
      out.buffer(momentum);
    }
    void decode(auto& in) {
      factor_step = in.u32("a momentum factor step");
      in.buffer(momentum);
      initialized = true;
    }
  };

  // momentum = keep · momentum + weight · (1/q) Σ_j g_j · z_j, with z_j keyed by key_of(j).
  template <class Backend, class T, class KeyOf>
  static void accumulate(const Backend& backend, T* momentum, std::size_t count, T keep, bool fresh,
                         std::span<const double> g, double weight, KeyOf&& key_of) {
    const double inverse_q = 1.0 / static_cast<double>(g.size());
    for (std::size_t first = 0; first < g.size(); first += max_terms_per_pass) {
      detail::momentum_accumulate_kernel<T> kernel{momentum, count, keep, fresh, {}, {}, 0};
      for (std::size_t j = first; j < g.size() && kernel.terms < max_terms_per_pass; ++j) {
        kernel.keys[kernel.terms] = key_of(j);
        kernel.coefficients[kernel.terms] = static_cast<T>(weight * g[j] * inverse_q);
        ++kernel.terms;
      }
      backend.for_each_index(groups_for(count), kernel, group_width);
      keep = T(1);  // later chunks add to what the first wrote
      fresh = false;
    }
  }

  Schedule schedule_;
  double beta_;
  double weight_decay_;
  state_io::block_state<record> states_{"low_rank_momentum"};
};

}  // namespace zo
