// SPDX-License-Identifier: Apache-2.0
// HiZOO (zo/optimizers/hizoo.hpp): its curvature samples average to the analytic Hessian diagonal
// of a quadratic, their smoothed magnitudes drive tr(ΣH) to about 2, its perturbation is Σ^{1/2}z
// with Σ = h⁻¹, three evaluations a step, arithmetic restore refused, a lowered loss, and resume
// and replay bit for bit.
#define BOOST_TEST_MODULE hizoo
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <sstream>
#include <vector>
#include <zo/io/trajectory.hpp>
#include <zo/optimizers/hizoo.hpp>
#include <zo/perturbations/directions.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

// f(x) = ½ Σ H_i (x_i − c_i)², its Hessian diag(H); records the points it is evaluated at.
struct quadratic {
  std::vector<double> curvature{0.25, 0.5, 1, 2, 4, 8, 16, 3};
  std::vector<double> values = std::vector<double>(8, 0.0);
  zo::view_store<double> store;
  std::vector<double> losses;
  std::vector<std::vector<double>> points;

  quadratic() { store.add("x", std::span<double>(values)); }
  double operator()() {
    double f = 0;
    for (std::size_t i = 0; i < values.size(); ++i)
      f += 0.5 * curvature[i] * (values[i] - 1.0) * (values[i] - 1.0);
    losses.push_back(f);
    points.push_back(values);
    return f;
  }
};

std::vector<double> diagonal_of(const zo::hizoo_sgd<>& rule, std::size_t n) {
  const auto& h = rule.diagonal()->at<zo::backends::cpu, double>(0).h;
  return h.empty() ? std::vector<double>(n, 1.0) : h;
}

}  // namespace

// The sign of a sample is that of z² − 1 (the second difference of a convex quadratic is
// positive), so each step's signed sample is recovered from h before and after it.
BOOST_AUTO_TEST_CASE(curvature_samples_average_to_the_hessian_diagonal_of_a_quadratic) {
  quadratic problem;
  constexpr double eps = 1e-2, alpha = 0.05;
  constexpr std::uint64_t seed = 3, steps = 40000;
  auto optimizer = zo::make_hizoo(eps, zo::hizoo_sgd<>(0.0, alpha), {.seed = seed});
  const std::size_t n = problem.values.size();
  std::vector<double> sum(n, 0.0), squares(n, 0.0);
  double largest_formula_error = 0;
  for (std::uint64_t step = 0; step < steps; ++step) {
    const auto before = diagonal_of(optimizer.step_rule(), n);
    problem.losses.clear();
    BOOST_REQUIRE(!optimizer.step(problem.store, [&] { return problem(); }).skipped());
    const auto after = diagonal_of(optimizer.step_rule(), n);
    const auto z = zo::materialize_direction(zo::gaussian_perturbation{}, problem.store.block(0),
                                             seed, static_cast<std::uint32_t>(step), 0);
    const auto& l = problem.losses;  // L0, L+, L−
    const double d = (l[1] + l[2] - 2 * l[0]) / (eps * eps);
    for (std::size_t i = 0; i < n; ++i) {
      const double magnitude = (after[i] - (1 - alpha) * before[i]) / alpha;
      const double sample = z[i] * z[i] >= 1 ? magnitude : -magnitude;
      const double formula = d / 2 * (z[i] * z[i] - 1) * before[i];
      largest_formula_error =
          std::max(largest_formula_error, std::abs(sample - formula) / (1 + std::abs(formula)));
      sum[i] += sample;
      squares[i] += sample * sample;
    }
  }
  BOOST_TEST(largest_formula_error < 1e-6);
  for (std::size_t i = 0; i < n; ++i) {
    const double mean = sum[i] / steps;
    const double standard_error = std::sqrt((squares[i] / steps - mean * mean) / steps);
    BOOST_TEST_MESSAGE("H_" << i << " = " << problem.curvature[i] << ", mean sample " << mean
                            << " ± " << standard_error);
    BOOST_TEST(std::abs(mean - problem.curvature[i]) < 4 * standard_error);
    BOOST_TEST(standard_error < 0.15 * problem.curvature[i]);
  }
}

// The samples' magnitude is that of the whole second difference, about tr(ΣH)/2 times h_i, so
// smoothing |ĥ| grows h until tr(ΣH) is about 2, whatever the dimension: h overestimates H by a
// factor of about n/2 and the steps shrink with it (docs/variants.md, HiZOO).
BOOST_AUTO_TEST_CASE(smoothing_the_magnitudes_drives_the_scaled_trace_to_about_two) {
  constexpr std::size_t n = 512;
  std::vector<double> x(n, 0.0);
  zo::view_store<double> store;
  store.add("x", std::span<double>(x));
  const auto loss = [&] {
    double f = 0;
    for (double v : x)
      f += 0.5 * (v - 1) * (v - 1);
    return f;
  };
  auto optimizer = zo::make_hizoo(1e-3, zo::hizoo_sgd<>(0.0, 1e-2), {.seed = 1});
  optimizer.optimize(store, loss, 2000);
  double trace = 0;
  for (double h : diagonal_of(optimizer.step_rule(), n))
    trace += 1 / h;  // tr(ΣH) with H = I
  BOOST_TEST_MESSAGE("tr(ΣH) = " << trace << " for n = " << n);
  BOOST_TEST(trace > 1.5);
  BOOST_TEST(trace < 3.0);
}

BOOST_AUTO_TEST_CASE(three_evaluations_along_the_scaled_direction) {
  quadratic problem;
  constexpr double eps = 1e-2;
  constexpr std::uint64_t seed = 5;
  auto optimizer = zo::make_hizoo(eps, zo::hizoo_sgd<>(1e-2, 0.3), {.seed = seed});
  for (std::uint32_t step = 0; step < 6; ++step) {
    const auto h = diagonal_of(optimizer.step_rule(), problem.values.size());
    const auto base = problem.values;
    problem.losses.clear();
    problem.points.clear();
    const auto report = optimizer.step(problem.store, [&] { return problem(); });
    BOOST_REQUIRE(!report.skipped());
    BOOST_TEST(problem.losses.size() == 3u);
    BOOST_TEST(report.loss == problem.losses[0]);
    BOOST_TEST(report.projected_gradients.size() == 2u);  // g, then the second difference
    BOOST_TEST(problem.points[0] == base);
    const auto z = zo::materialize_direction(zo::gaussian_perturbation{}, problem.store.block(0),
                                             seed, step, 0);
    for (std::size_t i = 0; i < base.size(); ++i) {
      const double expected = base[i] + eps * z[i] / std::sqrt(h[i]);
      BOOST_TEST(std::abs(problem.points[1][i] - expected) < 1e-12);
    }
  }
  // After six updates at α = 0.3 the scaling is no longer the identity.
  BOOST_TEST(diagonal_of(optimizer.step_rule(), 8) != std::vector<double>(8, 1.0));
}

// The CPU backend runs both kernels a run of batches at a time, devices (and Thrust-OMP) a group
// at a time: the two must give the same bits, on a block long enough for several runs and a
// ragged end.
template <class T>
void check_kernel_paths() {
  constexpr std::size_t n = 1000;
  std::vector<T> source(n), h(n);
  for (std::size_t e = 0; e < n; ++e) {
    source[e] = T(0.01) * T(e % 17) - T(0.05);
    h[e] = T(0.25) + T(e % 13) * T(0.5);
  }
  std::vector<T> batched(n), grouped(n), batched_base(n), grouped_base(n);
  zo::pass<T> sweep;
  sweep.source = source.data();
  sweep.scale = T(0.999);
  sweep.seed = 11;
  sweep.terms.items[sweep.terms.count++] = {4, 0, T(-0.003)};
  sweep.terms.items[sweep.terms.count++] = {5, 0, T(0.001)};  // the next perturbation
  sweep.base_terms = 1;
  const auto kernel = [&](std::vector<T>& target, std::vector<T>& base) {
    sweep.target = target.data();
    sweep.base_to = base.data();
    return zo::detail::hessian_scaled_kernel<zo::pass<T>>{sweep, h.data(), 3, n};
  };
  zo::backends::cpu{.threads = 1}.for_each_index(zo::groups_for(n), kernel(batched, batched_base));
  const auto per_group = kernel(grouped, grouped_base);
  for (std::size_t g = 0; g < zo::groups_for(n); ++g)
    per_group(g);
  BOOST_TEST(batched == grouped);
  BOOST_TEST(batched_base == grouped_base);
  BOOST_TEST(batched != source);

  auto h_batched = h, h_grouped = h;
  const zo::direction_key key{11, 4, 3, zo::stream::dense, 0, zo::default_generator};
  const auto update = [&](std::vector<T>& values) {
    return zo::detail::curvature_update<T>{values.data(), key, n, T(0.7), T(0.9), T(0.1), T(1e-8)};
  };
  zo::backends::cpu{.threads = 1}.for_each_index(zo::groups_for(n), update(h_batched));
  const auto grouped_update = update(h_grouped);
  for (std::size_t g = 0; g < zo::groups_for(n); ++g)
    grouped_update(g);
  BOOST_TEST(h_batched == h_grouped);
  BOOST_TEST(h_batched != h);
}

BOOST_AUTO_TEST_CASE(batched_and_per_group_kernels_give_the_same_bits) {
  check_kernel_paths<float>();
  check_kernel_paths<double>();
}

BOOST_AUTO_TEST_CASE(arithmetic_restore_and_a_foreign_diagonal_are_refused) {
  BOOST_CHECK_THROW(
      zo::make_hizoo(1e-3, zo::hizoo_sgd<>(1e-3), {.restore = zo::restore_mode::arithmetic}),
      zo::invalid_argument);
  BOOST_CHECK_THROW(zo::hizoo_sgd<>(1e-3, 0.0), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::hizoo_sgd<>(1e-3, 1.5), zo::invalid_argument);
  quadratic problem;
  const auto before = problem.values;
  zo::hizoo_sgd<> rule(1e-3, 0.1);
  zo::hizoo mismatched(zo::hessian_scaled_perturbation(zo::hizoo_sgd<>().diagonal()),
                       zo::curvature_difference(1e-3), rule);
  BOOST_CHECK_THROW(mismatched.step(problem.store, [&] { return problem(); }),
                    zo::invalid_argument);
  BOOST_TEST(problem.values == before);
}

BOOST_AUTO_TEST_CASE(hizoo_lowers_a_least_squares_loss) {
  BOOST_TEST(zo_test::least_squares_left(
                 zo::make_hizoo(1e-3, zo::hizoo_sgd<>(2e-2, 5e-2), {.seed = 1}), 600) < 0.5);
}

BOOST_AUTO_TEST_CASE(a_resumed_run_continues_bit_for_bit) {
  const auto make = [] {
    return zo::make_hizoo(1e-3, zo::hizoo_sgd<>(1e-3, 0.1, 0.01), {.seed = 8});
  };
  zo_test::chain whole(3, 5, 16, 7), resumed(3, 5, 16, 7);
  auto straight = make();
  straight.optimize(
      whole.store, [&] { return whole.loss(); }, 20);
  auto first = make();
  first.optimize(
      resumed.store, [&] { return resumed.loss(); }, 10);
  std::stringstream state;
  first.save(state);
  auto second = make();
  second.load(state);
  second.optimize(
      resumed.store, [&] { return resumed.loss(); }, 10);
  BOOST_TEST(zo_test::snapshot(resumed.store) == zo_test::snapshot(whole.store));
  std::stringstream again;
  second.save(again);
  std::stringstream reference;
  straight.save(reference);
  BOOST_TEST(again.str() == reference.str());
}

BOOST_AUTO_TEST_CASE(a_logged_run_replays_bit_for_bit) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("zo_test_" + std::to_string(::getpid()) + "_hizoo.zotraj");
  const auto make = [] { return zo::make_hizoo(1e-3, zo::hizoo_sgd<>(1e-3, 0.1), {.seed = 2}); };
  zo_test::chain live(3, 5, 16, 7), replayed(3, 5, 16, 7);
  auto optimizer = make();
  {
    zo::io::trajectory_writer log(path, zo::io::run_header(live.store, optimizer.options(), "t"));
    optimizer.optimize(
        live.store, [&] { return live.loss(); }, 12, log);
    log.finish();
  }
  const auto log = zo::io::read_trajectory(path);
  BOOST_TEST(log.records.at(0).projected_gradients.size() == 2u);
  auto again = make();
  BOOST_TEST(zo::io::replay(again, replayed.store, log) == 12u);
  BOOST_TEST(zo_test::snapshot(replayed.store) == zo_test::snapshot(live.store));
  BOOST_TEST(zo_test::snapshot(live.store) != zo_test::snapshot(zo_test::chain(3, 5, 16, 7).store));
  std::filesystem::remove(path);
}
