// SPDX-License-Identifier: Apache-2.0
// Probes: what an estimator drives. shift(j, a) moves the point the next evaluation needs by a·z_j,
// reset() returns it to the base point, evaluate() returns the loss there. An estimator states
// only its evaluation pattern; the probe decides how and whether the parameters move.
//
// `measures` tells an estimator whether evaluations are real: a distributed estimator talks to
// the other ranks only when they are, and a first_point_probe only records where the pattern
// starts.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "zo/core/pass.hpp"

namespace zo {

// Evaluates the loss at the points an estimator asks for, through an engine that moves the
// parameters there. The first non-finite loss ends the step: evaluate() returns it from then on
// without moving or evaluating again, and the caller skips the update.
template <class Engine, class Evaluate>
class measuring_probe {
 public:
  static constexpr bool measures = true;

  measuring_probe(Engine& engine, Evaluate& evaluate) : engine_(engine), evaluate_(evaluate) {}

  void shift(std::size_t sample, double alpha) { engine_.shift(sample, alpha); }
  void reset() { engine_.reset(); }
  double evaluate() {
    if (failed_) return failed_loss_;
    const double loss = measure();
    if (!std::isfinite(loss)) {
      failed_ = true;
      failed_loss_ = loss;
    }
    return loss;
  }
  // Moves and evaluates even after a non-finite loss, and leaves deciding about it to the
  // caller: a distributed estimator keeps every rank making the same moves, and a rank whose
  // shard is empty may report NaN without ending the step.
  double measure() {
    engine_.move();
    return static_cast<double>(evaluate_());
  }

  bool failed() const { return failed_; }
  double failed_loss() const { return failed_loss_; }

 private:
  Engine& engine_;
  Evaluate& evaluate_;
  bool failed_ = false;
  double failed_loss_ = 0;
};

// Stands in for the parameters while an estimator is run only to learn where it evaluates first
// (a fused step ends at the next step's first point): records the offset of the first evaluation
// and ignores everything after it.
template <class T>
class first_point_probe {
 public:
  static constexpr bool measures = false;

  explicit first_point_probe(std::uint32_t step) : step_(step) {}
  void shift(std::size_t sample, double alpha) {
    if (!done_) offset_.add(step_, static_cast<std::uint8_t>(sample), static_cast<T>(alpha));
  }
  void reset() {
    if (!done_) offset_.clear();
  }
  double evaluate() {
    done_ = true;
    return 0.0;
  }
  double measure() { return evaluate(); }
  const term_list<T>& offset() const { return offset_; }

 private:
  std::uint32_t step_;
  term_list<T> offset_;
  bool done_ = false;
};

}  // namespace zo
