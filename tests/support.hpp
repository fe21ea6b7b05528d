// SPDX-License-Identifier: Apache-2.0
// Shared fixtures of the test suite: small problems and dense reference implementations that
// materialise every direction element by element, independent of zo's passes.
#pragma once

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <tuple>
#include <vector>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>

namespace zo_test {

// ½‖A·θ − b‖² / m over all blocks' elements concatenated, evaluated in double from the store's
// current values.
template <class Store>
struct least_squares {
  const Store* store;
  Eigen::MatrixXd a;
  Eigen::VectorXd b;

  Eigen::VectorXd flatten() const {
    Eigen::VectorXd theta(static_cast<Eigen::Index>(parameter_count()));
    Eigen::Index k = 0;
    for (std::size_t i = 0; i < store->size(); ++i) {
      const auto block = store->block(i);
      for (std::size_t e = 0; e < block.size(); ++e)
        theta[k++] = block.data()[e];
    }
    return theta;
  }
  std::size_t parameter_count() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < store->size(); ++i)
      n += store->block(i).size();
    return n;
  }
  double operator()() const { return loss(flatten()); }
  double loss(const Eigen::VectorXd& theta) const {
    return 0.5 * (a * theta - b).squaredNorm() / static_cast<double>(a.rows());
  }
};

// A dense m × n design with a planted solution and a little noise.
inline std::pair<Eigen::MatrixXd, Eigen::VectorXd> random_problem(Eigen::Index m, Eigen::Index n,
                                                                  unsigned seed) {
  std::srand(seed);
  Eigen::MatrixXd a = Eigen::MatrixXd::Random(m, n);
  Eigen::VectorXd truth = Eigen::VectorXd::Random(n);
  Eigen::VectorXd b = a * truth + 0.01 * Eigen::VectorXd::Random(m);
  return {a, b};
}

// The loss a variant leaves of the shared 30-parameter least-squares problem (a 6 × 5 float
// weight from zeros) after `steps` steps, as a fraction of the starting loss.
template <class Optimizer>
double least_squares_left(Optimizer&& optimizer, std::uint64_t steps) {
  auto [a, b] = random_problem(60, 30, 11);
  std::vector<float> values(30, 0.0f);
  zo::view_store<float> store;
  store.add("w", std::span<float>(values), 6, 5);
  least_squares<zo::view_store<float>> loss{&store, a, b};
  const double start = loss();
  optimizer.optimize(store, loss, steps);
  return loss() / start;
}

// Copies every block's elements out, for bitwise comparisons.
template <class Store>
std::vector<typename Store::value_type> snapshot(const Store& store) {
  std::vector<typename Store::value_type> out;
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto b = store.block(i);
    out.insert(out.end(), b.data(), b.data() + b.size());
  }
  return out;
}

// One zeroth-order SGD step computed the way the papers write it, with every direction
// materialised element by element through direction_element and every perturbed value rounded
// to T exactly as a pass rounds it (1·x + alpha·z in T), so the measured losses match bit for bit
// and only the update's arithmetic differs. Central differences (MeZO), or one-sided ones, over
// q directions (n-SPSA) averaged.
template <class T, class Distribution = zo::gaussian_distribution>
struct dense_reference {
  std::uint64_t seed;
  std::uint32_t step;
  double eps, lr, weight_decay;
  std::size_t q = 1;
  bool one_sided = false;

  // blocks[i] holds block i's values, decays[i] its decay flag. Returns the projected gradients.
  template <class Loss>
  std::vector<double> run(std::vector<std::vector<T>>& blocks, const std::vector<bool>& decays,
                          Loss&& loss_of) const {
    std::vector<std::vector<std::vector<T>>> z(q, blocks);
    std::vector<double> g(q);
    const double base_loss = one_sided ? loss_of(blocks) : 0.0;
    for (std::size_t j = 0; j < q; ++j) {
      auto plus = blocks, minus = blocks;
      for (std::size_t i = 0; i < blocks.size(); ++i) {
        const zo::direction_key key{seed, step, static_cast<std::uint32_t>(i), zo::stream::dense,
                                    static_cast<std::uint8_t>(j)};
        for (std::size_t e = 0; e < blocks[i].size(); ++e) {
          z[j][i][e] = zo::direction_element<Distribution, T>(key, e);
          plus[i][e] = T(1) * blocks[i][e] + T(eps) * z[j][i][e];
          minus[i][e] = T(1) * blocks[i][e] + T(-eps) * z[j][i][e];
        }
      }
      g[j] = one_sided ? (loss_of(plus) - base_loss) / eps
                       : (loss_of(plus) - loss_of(minus)) / (2 * eps);
    }
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const double decay = decays[i] ? weight_decay : 0.0;
      for (std::size_t e = 0; e < blocks[i].size(); ++e) {
        double direction = 0;
        for (std::size_t j = 0; j < q; ++j)
          direction += g[j] * double(z[j][i][e]);
        const double theta = blocks[i][e];
        blocks[i][e] = static_cast<T>(theta - lr * (direction / double(q) + decay * theta));
      }
    }
    return g;
  }
};

double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

template <class T>
std::vector<double> widen(const std::vector<std::vector<T>>& blocks) {
  std::vector<double> out;
  for (const auto& b : blocks)
    out.insert(out.end(), b.begin(), b.end());
  return out;
}

// A weight matrix (decayed) and a bias (not decayed) with a least-squares loss over both.
template <class T>
struct two_block_problem {
  Eigen::MatrixXd a;
  Eigen::VectorXd b;
  std::vector<std::vector<T>> values;

  two_block_problem() {
    auto [pa, pb] = zo_test::random_problem(60, 7 * 5 + 5, 7);
    a = pa;
    b = pb;
    values = {std::vector<T>(35), std::vector<T>(5)};
    for (std::size_t e = 0; e < 35; ++e)
      values[0][e] = T(0.1) * T(e % 7) - T(0.3);
    for (std::size_t e = 0; e < 5; ++e)
      values[1][e] = T(0.05) * T(e);
  }
  double loss(const std::vector<std::vector<T>>& blocks) const {
    const auto flat = widen(blocks);
    const Eigen::VectorXd theta = Eigen::Map<const Eigen::VectorXd>(flat.data(), flat.size());
    return 0.5 * (a * theta - b).squaredNorm() / static_cast<double>(a.rows());
  }
};

// A linear chain h_{l+1} = W_l·h_l + b_l over `layers` layers, then a head w·h_L with no layer;
// loss ½·mean((out − y)²). Block order: layers.l.weight (2l), layers.l.bias (2l + 1), head.
struct chain {
  std::size_t depth, width;
  zo::eigen_store<double> store;
  Eigen::MatrixXd x;
  Eigen::RowVectorXd y;
  std::size_t loss_calls = 0, gradient_calls = 0;

  chain(std::size_t layers, std::size_t d, std::size_t batch, unsigned seed)
      : depth(layers), width(d) {
    std::srand(seed);
    for (std::size_t l = 0; l < layers; ++l) {
      const int layer = static_cast<int>(l);
      store.add("layers." + std::to_string(l) + ".weight",
                Eigen::MatrixXd::Identity(d, d) + 0.3 * Eigen::MatrixXd::Random(d, d),
                {.layer = layer});
      store.add("layers." + std::to_string(l) + ".bias", 0.1 * Eigen::MatrixXd::Random(d, 1),
                {.layer = layer, .decay = false});
    }
    store.add("head", 0.5 * Eigen::MatrixXd::Random(d, 1));
    x = Eigen::MatrixXd::Random(d, batch);
    // Targets from a teacher: the same chain with its weights moved, so the optimum is 0.
    zo::eigen_store<double> teacher;
    for (std::size_t b = 0; b < store.size(); ++b) {
      teacher.add(std::string(store.block(b).name()),
                  store.matrix(b) + 0.3 * Eigen::MatrixXd::Random(store.matrix(b).rows(),
                                                                  store.matrix(b).cols()));
    }
    y = outputs(teacher);
  }

  Eigen::RowVectorXd outputs(const zo::eigen_store<double>& s) const {
    Eigen::MatrixXd h = x;
    for (std::size_t l = 0; l < depth; ++l) {
      h = (s.matrix(2 * l) * h).colwise() + Eigen::VectorXd(s.matrix(2 * l + 1).col(0));
    }
    return s.matrix(2 * depth).col(0).transpose() * h;
  }

  double loss() {
    ++loss_calls;
    return 0.5 * (outputs(store) - y).squaredNorm() / double(x.cols());
  }

  // Backprop from the loss down to the lowest requested layer, and no further.
  double loss_and_gradients(zo::gradient_view<double>& g) {
    ++gradient_calls;
    std::vector<Eigen::MatrixXd> h{x};
    for (std::size_t l = 0; l < depth; ++l) {
      h.push_back((store.matrix(2 * l) * h.back()).colwise() +
                  Eigen::VectorXd(store.matrix(2 * l + 1).col(0)));
    }
    const Eigen::RowVectorXd out = store.matrix(2 * depth).col(0).transpose() * h.back();
    const Eigen::RowVectorXd delta_out = (out - y) / double(x.cols());
    auto write = [&](std::size_t index, const Eigen::MatrixXd& value) {
      if (double* p = g.find(index)) {
        // Gradients are row-major like the blocks.
        Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
            p, value.rows(), value.cols()) = value;
      }
    };
    write(2 * depth, h.back() * delta_out.transpose());
    std::size_t lowest = 2 * depth;
    for (std::size_t k : g.blocks())
      lowest = std::min(lowest, k);
    Eigen::MatrixXd delta = store.matrix(2 * depth).col(0) * delta_out;
    for (std::size_t l = depth; l-- > 0 && 2 * l + 1 >= lowest;) {
      write(2 * l, delta * h[l].transpose());
      write(2 * l + 1, delta.rowwise().sum());
      delta = store.matrix(2 * l).transpose() * delta;
    }
    return 0.5 * (out - y).squaredNorm() / double(x.cols());
  }
};

// The dense-estimate rules' test problem (test_zo_adam, test_zo_momentum): a decayed 9 × 2 weight
// and a 4-element bias without decay, under one least-squares loss.
struct weight_and_bias {
  std::vector<double> weight, bias;
  zo::view_store<double> store;
  Eigen::MatrixXd a;
  Eigen::VectorXd b;

  weight_and_bias() : weight(18), bias(4) {
    for (std::size_t e = 0; e < weight.size(); ++e)
      weight[e] = 0.1 * static_cast<double>(e % 5) - 0.2;
    for (std::size_t e = 0; e < bias.size(); ++e)
      bias[e] = 0.05 * static_cast<double>(e);
    store.add("w", std::span<double>(weight), 9, 2);
    store.add("b", std::span<double>(bias), {.decay = false});
    std::tie(a, b) = random_problem(40, 22, 3);
  }
  least_squares<zo::view_store<double>> loss() { return {&store, a, b}; }
};

// ĝ of block i at `step`: (1/q) Σ_j g_j·z_j from directions materialised element by element.
inline std::vector<double> dense_estimate(const zo::view_store<double>& store, std::size_t i,
                                          std::uint64_t seed, std::uint64_t step,
                                          std::span<const double> g) {
  std::vector<double> estimate(store.block(i).size(), 0.0);
  for (std::size_t j = 0; j < g.size(); ++j) {
    const auto z =
        zo::materialize_direction(zo::gaussian_perturbation{}, store.block(i), seed, step, j);
    for (std::size_t e = 0; e < z.size(); ++e)
      estimate[e] += (g[j] / static_cast<double>(g.size())) * z[e];
  }
  return estimate;
}

}  // namespace zo_test
