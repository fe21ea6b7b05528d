// SPDX-License-Identifier: Apache-2.0
// Bad input is rejected before any parameter changes; a non-finite loss skips the step and
// restores the parameters, and an update that would overflow is refused; an objective that throws
// leaves them at the base point.
#define BOOST_TEST_MODULE validation
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();
constexpr double infinity = std::numeric_limits<double>::infinity();

// Passes when `f` throws zo::invalid_argument whose message contains `needle`.
template <class F>
void expect_invalid(F&& f, const std::string& needle) {
  try {
    f();
    BOOST_ERROR("expected zo::invalid_argument mentioning '" << needle << "'");
  } catch (const zo::invalid_argument& e) {
    BOOST_TEST_CONTEXT(e.what()) {
      BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos);
    }
  }
}

struct fixture {
  std::vector<float> weight = std::vector<float>(24, 0.5f);
  std::vector<float> bias = std::vector<float>(6, -0.25f);
  zo::view_store<float> store;
  std::size_t calls = 0;

  fixture() {
    store.add("weight", std::span<float>(weight), 4, 6);
    store.add("bias", std::span<float>(bias), {.decay = false});
  }
  double loss() {
    ++calls;
    double s = 0;
    for (float w : weight)
      s += double(w) * w;
    for (float b : bias)
      s += 3.0 * b;
    return s;
  }
  std::vector<float> values() const { return zo_test::snapshot(store); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(epsilon_must_be_positive_and_finite) {
  for (double eps : {0.0, -1e-3, not_a_number, infinity}) {
    expect_invalid([&] { (void)zo::central_difference{eps}; }, "epsilon");
    expect_invalid([&] { (void)zo::one_sided{eps}; }, "epsilon");
  }
}

BOOST_AUTO_TEST_CASE(learning_rate_and_weight_decay_must_be_non_negative) {
  expect_invalid([] { (void)zo::sgd<>(-1e-3); }, "learning rate");
  expect_invalid([] { (void)zo::sgd<>(not_a_number); }, "learning rate");
  expect_invalid([] { (void)zo::sgd<>(1e-3, -0.1); }, "weight decay");
  expect_invalid([] { (void)zo::linear_schedule(-1.0, 10); }, "learning rate");
  expect_invalid([] { (void)zo::cosine_schedule(1.0, 0); }, "total_steps");
}

BOOST_AUTO_TEST_CASE(q_must_be_between_1_and_256) {
  expect_invalid([] { (void)zo::q_sample<>(0); }, "q must be at least 1");
  expect_invalid([] { (void)zo::q_sample<>(257); }, "q must be at most 256");
}

namespace {
// A user schedule that goes negative: caught at the step, before anything moves.
struct negative_after_two {
  double operator()(std::uint64_t step) const { return step < 2 ? 0.1 : -0.1; }
};
}  // namespace

BOOST_AUTO_TEST_CASE(a_negative_scheduled_rate_is_rejected_before_the_step) {
  fixture f;
  zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, zo::sgd<negative_after_two>>
      opt{zo::central_difference(), zo::sgd<negative_after_two>(negative_after_two{})};
  opt.optimize(
      f.store, [&] { return f.loss(); }, 2);
  const auto before = f.values();
  const auto calls = f.calls;
  expect_invalid([&] { opt.step(f.store, [&] { return f.loss(); }); }, "learning rate at step 2");
  BOOST_TEST(f.values() == before, boost::test_tools::per_element());
  BOOST_TEST(f.calls == calls);
}

BOOST_AUTO_TEST_CASE(an_empty_store_is_rejected) {
  zo::eigen_store<double> empty;
  zo::mezo opt{zo::central_difference(), zo::sgd<>()};
  expect_invalid([&] { opt.step(empty, [] { return 0.0; }); }, "no blocks");
}

BOOST_AUTO_TEST_CASE(a_shape_that_does_not_match_its_storage_is_rejected) {
  std::vector<float> storage(10);
  zo::view_store<float> store;
  expect_invalid([&] { store.add("w", std::span<float>(storage), 3, 4); },
                 "shape 3x4 (12 elements) but its storage holds 10");
  expect_invalid([&] { store.add("w", std::span<float>(storage), 0, 10); }, "empty shape");
  BOOST_TEST(store.size() == 0u);
  store.add("w", std::span<float>(storage), 2, 5);
  expect_invalid([&] { store.add("w", std::span<float>(storage), 5, 2); }, "already in the store");

  zo::eigen_store<double> owned;
  const auto id = owned.add("w", 2, 3);
  expect_invalid([&] { owned.assign(id, Eigen::MatrixXd::Ones(3, 2)); }, "cannot assign a 3x2");
}

namespace {
// A user store whose block claims a shape its size does not match: caught by the optimizer.
struct lying_block {
  using value_type = double;
  double* p;
  std::size_t id() const { return 0; }
  std::string_view name() const { return "liar"; }
  std::optional<int> layer() const { return std::nullopt; }
  std::size_t rows() const { return 3; }
  std::size_t cols() const { return 3; }
  std::size_t size() const { return 8; }
  bool decay() const { return true; }
  double* data() const { return p; }
};
struct lying_store {
  using value_type = double;
  using backend_type = zo::backends::cpu;
  double* p;
  std::size_t size() const { return 1; }
  lying_block block(std::size_t) const { return {p}; }
};
}  // namespace

BOOST_AUTO_TEST_CASE(a_user_store_with_inconsistent_shape_is_rejected_before_any_change) {
  std::vector<double> values(9, 1.0);
  lying_store store{values.data()};
  zo::mezo opt(zo::central_difference(), zo::sgd<>(0.1));
  std::size_t calls = 0;
  expect_invalid([&] { opt.step(store, [&] { return double(++calls); }); },
                 "block 'liar' has shape 3x3 but holds 8 elements");
  BOOST_TEST(calls == 0u);
  for (double v : values)
    BOOST_REQUIRE(v == 1.0);
}

namespace {
struct first_order_everywhere {
  template <class Store>
  void select(std::uint64_t, const Store&, std::span<zo::block_role> roles) const {
    for (auto& r : roles)
      r = zo::block_role::first_order;
  }
};
}  // namespace

BOOST_AUTO_TEST_CASE(a_first_order_role_is_rejected_by_a_zeroth_order_optimizer) {
  fixture f;
  zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, zo::sgd<>,
                   first_order_everywhere>
      opt{zo::central_difference(), zo::sgd<>()};
  const auto before = f.values();
  expect_invalid([&] { opt.step(f.store, [&] { return f.loss(); }); }, "first-order role");
  BOOST_TEST(f.values() == before, boost::test_tools::per_element());
}

// The non-finite loss can come at the first or the second evaluation, as NaN or ±infinity; each
// time the step is skipped and, in exact mode, every bit of every parameter is as before the step.
BOOST_AUTO_TEST_CASE(a_nonfinite_loss_skips_the_step_and_restores_every_bit) {
  for (std::size_t bad_call : {1u, 2u}) {
    for (double bad : {not_a_number, infinity, -infinity}) {
      fixture f;
      zo::mezo opt(zo::central_difference(1e-2), zo::sgd<>(0.1, 0.01), {.seed = 5});
      // A few ordinary steps first, so the values are not round numbers.
      opt.optimize(
          f.store, [&] { return f.loss(); }, 3);
      const auto before = f.values();
      std::size_t call = 0;
      const auto report = opt.step(f.store, [&] {
        ++call;
        return call == bad_call ? bad : f.loss();
      });
      BOOST_TEST_CONTEXT("bad call " << bad_call << " value " << bad) {
        BOOST_TEST(report.skipped());
        BOOST_TEST((report.status == zo::step_status::skipped_nonfinite_loss));
        BOOST_TEST(report.projected_gradients.empty());
        BOOST_TEST(call == bad_call);
        const auto after = f.values();
        BOOST_TEST(std::memcmp(after.data(), before.data(), after.size() * sizeof(float)) == 0);
        // The run goes on: the next step is an ordinary one.
        BOOST_TEST(!opt.step(f.store, [&] { return f.loss(); }).skipped());
        BOOST_TEST(f.values() != before);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(optimize_counts_skipped_steps) {
  fixture f;
  zo::mezo opt(zo::central_difference(1e-2), zo::sgd<>(0.1));
  std::size_t call = 0;
  const auto summary = opt.optimize(
      f.store, [&] { return ++call % 6 == 0 ? not_a_number : f.loss(); }, 6);
  BOOST_TEST(summary.steps == 6u);
  BOOST_TEST(summary.skipped_steps == 2u);  // calls 6 and 12 fall in steps 3 and 6
}

// A finite loss with a learning rate so large that lr·g overflows float: the update is refused
// (not applied), every weight keeps every bit, and the step and the summary say so. Before the
// refusal, every weight became infinite or NaN.
BOOST_AUTO_TEST_CASE(an_overflowing_update_is_refused_and_changes_no_bit) {
  for (const double lr : {1e300, 1e50}) {
    for (const bool fused : {false, true}) {
      for (const double decay : {0.0, 0.01}) {
        BOOST_TEST_CONTEXT("lr " << lr << " fused " << fused << " decay " << decay) {
          fixture f;
          zo::mezo opt(zo::central_difference(1e-2), zo::sgd<>(lr, decay),
                       {.seed = 5, .fused_steps = fused});
          const auto before = f.values();
          const auto report = opt.step(f.store, [&] { return f.loss(); });
          BOOST_TEST(report.skipped());
          BOOST_TEST((report.status == zo::step_status::skipped_nonfinite_update));
          BOOST_TEST(std::isfinite(report.loss));
          BOOST_TEST(report.projected_gradients.size() == 1u);
          BOOST_TEST(report.evaluations == 2u);
          BOOST_TEST(opt.step_count() == 1u);
          if (fused) opt.remove_pending_perturbation(f.store);
          const auto after = f.values();
          BOOST_TEST(std::memcmp(after.data(), before.data(), after.size() * sizeof(float)) == 0);
          const auto summary = opt.optimize(
              f.store, [&] { return f.loss(); }, 3);
          if (fused) opt.remove_pending_perturbation(f.store);
          BOOST_TEST(summary.skipped_steps == 3u);
          BOOST_TEST(summary.refused_updates == 3u);
          const auto later = f.values();
          BOOST_TEST(std::memcmp(later.data(), before.data(), later.size() * sizeof(float)) == 0);
        }
      }
    }
  }
  // LOZO's low-rank directions and the arithmetic restore mode refuse it too.
  for (const auto restore : {zo::restore_mode::exact, zo::restore_mode::arithmetic}) {
    fixture f;
    zo::lozo opt(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-2), zo::sgd<>(1e300),
                 {}, {.restore = restore});
    const auto before = f.values();
    const auto summary = opt.optimize(
        f.store, [&] { return f.loss(); }, 2);
    BOOST_TEST(summary.refused_updates == 2u);
    for (const float x : f.values())
      BOOST_TEST(std::isfinite(x));
    if (restore == zo::restore_mode::exact) BOOST_TEST(f.values() == before);
  }
}

// The largest ordinary update is applied as before: the check refuses only what could overflow.
BOOST_AUTO_TEST_CASE(a_large_finite_update_is_still_applied) {
  fixture f;
  zo::mezo opt(zo::central_difference(1e-2), zo::sgd<>(1.0));
  const auto report = opt.step(f.store, [&] { return f.loss(); });
  BOOST_TEST(!report.skipped());
  BOOST_TEST(f.values() != fixture().values());
}

BOOST_AUTO_TEST_CASE(arithmetic_mode_restores_up_to_rounding) {
  fixture f;
  zo::mezo opt(zo::central_difference(1e-2), zo::sgd<>(0.1),
               {.restore = zo::restore_mode::arithmetic});
  const auto before = f.values();
  std::size_t call = 0;
  const auto report = opt.step(f.store, [&] { return ++call == 2 ? not_a_number : f.loss(); });
  BOOST_TEST(report.skipped());
  const auto after = f.values();
  for (std::size_t i = 0; i < after.size(); ++i) {
    BOOST_TEST(std::abs(after[i] - before[i]) <=
               4 * std::numeric_limits<float>::epsilon() * std::max(1.0f, std::abs(before[i])));
  }
}

BOOST_AUTO_TEST_CASE(an_objective_that_throws_leaves_the_base_point_and_propagates) {
  fixture f;
  zo::mezo opt(zo::central_difference(1e-2), zo::sgd<>(0.1));
  const auto before = f.values();
  std::size_t call = 0;
  BOOST_CHECK_THROW(opt.step(f.store,
                             [&] {
                               if (++call == 2) throw std::runtime_error("data loader failed");
                               return f.loss();
                             }),
                    std::runtime_error);
  const auto after = f.values();
  BOOST_TEST(std::memcmp(after.data(), before.data(), after.size() * sizeof(float)) == 0);
  BOOST_TEST(opt.step_count() == 0u);  // the step did not happen
}

// Drift of repeated perturb/restore cycles (lr = 0, so every step only perturbs and restores).
// Exact mode restores from the snapshot: no drift at all. Arithmetic mode rounds in each of its
// three passes per step; docs/index.md bounds the drift after N steps by
// 3·N·u·(|θ| + 2ε·z_max), u = 2^-24 for float, z_max = 6.77 (the largest Box-Muller output
// from 32-bit uniforms, √(−2 ln 2^-33) ≈ 6.764).
BOOST_AUTO_TEST_CASE(perturb_restore_cycles_stay_within_the_documented_drift_bound) {
  const std::size_t steps = 10000;
  const double eps = 1e-3, u = std::ldexp(1.0, -24), z_max = 6.77;
  for (auto mode : {zo::restore_mode::exact, zo::restore_mode::arithmetic}) {
    std::vector<float> theta(1000);
    for (std::size_t i = 0; i < theta.size(); ++i) {
      theta[i] = i % 10 == 0 ? 0.0f : 0.05f * std::sin(float(i));  // zeros like fresh biases
    }
    const auto start = theta;
    zo::view_store<float> store;
    store.add("theta", std::span<float>(theta));
    zo::mezo opt(zo::central_difference(eps), zo::sgd<>(0.0), {.seed = 3, .restore = mode});
    opt.optimize(
        store, [] { return 1.0; }, steps);
    double worst_ratio = 0, largest = 0;
    for (std::size_t i = 0; i < theta.size(); ++i) {
      const double drift = std::abs(double(theta[i]) - double(start[i]));
      const double bound = 3.0 * steps * u * (std::abs(double(start[i])) + 2 * eps * z_max);
      worst_ratio = std::max(worst_ratio, drift / bound);
      largest = std::max(largest, drift);
    }
    BOOST_TEST_MESSAGE("restore mode " << int(mode) << ": largest drift " << largest << ", at most "
                                       << worst_ratio << " of the bound");
    if (mode == zo::restore_mode::exact) {
      BOOST_TEST(largest == 0.0);
    } else {
      BOOST_TEST(worst_ratio <= 1.0);
      BOOST_TEST(largest > 0.0);  // arithmetic mode really does round
    }
  }
}
