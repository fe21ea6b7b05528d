// SPDX-License-Identifier: Apache-2.0
// A block's direction for (seed, step, sample), materialised on the host, so that a user can check,
// plot or restate a run: the values a perturbation policy's passes add per unit of alpha. They are
// computed by the policy's own pass (from a zero source, alpha 1), so they are those numbers, not
// a second implementation of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "zo/backends/cpu.hpp"
#include "zo/core/pass.hpp"
#include "zo/perturbations/low_rank.hpp"

namespace zo {

// The direction `policy` applies to `block` at (seed, step, sample) with the given generator (a
// run's zo_options::generator): rows × cols values, row-major, in the type passes compute in (a
// 16-bit block's direction is the float one, the same numbers as a float block's). Only the
// block's shape and id are read; its values are not touched.
template <class Perturbation, class Block>
std::vector<compute_t<typename Block::value_type>> materialize_direction(
    const Perturbation& policy, const Block& block, std::uint64_t seed, std::uint32_t step,
    std::size_t sample, zo::generator generator = default_generator) {
  using T = compute_t<typename Block::value_type>;
  const std::vector<T> zeros(block.size(), T(0));
  std::vector<T> direction(block.size());
  pass_type_t<Perturbation, T> sweep{};
  sweep.source = zeros.data();
  sweep.target = direction.data();
  sweep.seed = seed;
  sweep.generator = generator;
  sweep.terms.add(step, static_cast<std::uint8_t>(sample), T(1));
  scratch_arena<backends::cpu, T> scratch;
  policy.apply(backends::cpu{}, block, sweep, scratch);
  return direction;
}

// LOZO's factors of a matrix block's direction U·Vᵀ at (seed, step, sample), with the given
// generator: u (rows × rank, with the policy's 1/√r scale when it has one) and v (cols × rank),
// both row-major.
template <class T>
struct low_rank_factors {
  std::size_t rows = 0, cols = 0, rank = 0;
  std::vector<T> u, v;
};

template <class Block>
low_rank_factors<compute_t<typename Block::value_type>> materialize_factors(
    const low_rank_perturbation& policy, const Block& block, std::uint64_t seed, std::uint32_t step,
    std::size_t sample, zo::generator generator = default_generator) {
  using T = compute_t<typename Block::value_type>;
  require(low_rank_perturbation::is_matrix(block), [&] {
    return "materialize_factors: block '" + std::string(block.name()) +
           "' is a vector; its direction is dense (materialize_direction)";
  });
  policy.validate(block);
  const std::size_t r = policy.rank();
  low_rank_factors<T> f{block.rows(), block.cols(), r, std::vector<T>(block.rows() * r),
                        std::vector<T>(block.cols() * r)};
  const auto id = static_cast<std::uint32_t>(block.id());
  policy.fill_factor(backends::cpu{},
                     policy.u_key(seed, generator, step, id, static_cast<std::uint8_t>(sample)),
                     static_cast<T>(policy.u_scale()), f.rows, f.u.data(), r, 1, 0);
  policy.fill_factor(backends::cpu{}, policy.v_key(seed, generator, step, id), T(1), f.cols,
                     f.v.data(), r, 1, 0);
  return f;
}

}  // namespace zo
