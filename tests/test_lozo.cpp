// SPDX-License-Identifier: Apache-2.0
// LOZO and LOZO-M: the measured projected gradient and the update along U·Vᵀ, LOZO-M against a
// dense reference with an explicit m × n momentum, no m × n temporaries, convergence, bad input,
// and bitwise save/resume.
#define BOOST_TEST_MODULE lozo
#include <Eigen/Dense>
#include <atomic>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>
#include <vector>
#include <zo/zo.hpp>

#include "support.hpp"

// ---------------------------------------------------------------------------------------------
// Allocation tracking: the largest single allocation while `tracking` is set.
#include "allocation_tracking.hpp"

namespace {

using matrix = Eigen::MatrixXd;
using row_matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A factor (rows × r) as the policy keys it: element (a, i) is element a·r + i of its key.
matrix factor(const zo::direction_key& key, std::size_t rows, std::size_t r, double scale = 1) {
  matrix f(rows, r);
  for (std::size_t a = 0; a < rows; ++a) {
    for (std::size_t i = 0; i < r; ++i) {
      f(a, i) = scale * zo::direction_element<zo::gaussian_distribution, double>(key, a * r + i);
    }
  }
  return f;
}

Eigen::VectorXd dense(const zo::direction_key& key, std::size_t n) {
  Eigen::VectorXd z(n);
  for (std::size_t i = 0; i < n; ++i) {
    z[i] = zo::direction_element<zo::gaussian_distribution, double>(key, i);
  }
  return z;
}

double relative(const matrix& a, const matrix& b) {
  return (a - b).norm() / b.norm();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 1. Linear objective: g = ⟨c, U·Vᵀ⟩ and ΔW = −η·g·U·Vᵀ, on an ordinary step and on a V redraw.
BOOST_AUTO_TEST_CASE(linear_objective_measures_and_moves_along_u_vt) {
  const std::size_t m = 7, n = 5, r = 2, interval = 4;
  const std::uint64_t seed = 99;
  const double eps = 1e-3, lr = 0.01;
  std::srand(1);
  const row_matrix c = row_matrix::Random(m, n);
  const Eigen::VectorXd cb = Eigen::VectorXd::Random(n);
  zo::eigen_store<double> store;
  const auto w = store.add("w", row_matrix::Random(m, n));
  const auto b = store.add("b", Eigen::VectorXd::Random(n), {.decay = false});
  auto loss = [&] {
    return (store.matrix(w).array() * c.array()).sum() + store.matrix(b).col(0).dot(cb);
  };
  const zo::low_rank_perturbation policy(r, interval);
  zo::lozo opt(policy, zo::central_difference(eps), zo::sgd<>(lr), {}, {.seed = seed});
  opt.optimize(store, loss, 2);  // steps 0 and 1

  for (std::uint32_t step : {2u, 3u, 4u, 5u}) {  // 4 redraws V (4 = ν), the others reuse it
    BOOST_TEST_CONTEXT("step " << step) {
      BOOST_REQUIRE_EQUAL(opt.step_count(), step);
      // Keys written out: U from this step, V from the first step of its ν-window, separate
      // streams.
      const std::uint32_t window = step < 4 ? 0u : 4u;
      const matrix u = factor({seed, step, 0, zo::stream::low_rank_u, 0}, m, r);
      const matrix v = factor({seed, window, 0, zo::stream::low_rank_v, 0}, n, r);
      const matrix z = u * v.transpose();
      const Eigen::VectorXd zb = dense({seed, step, 1, zo::stream::dense, 0}, n);
      const double expected_g = (c.array() * z.array()).sum() + cb.dot(zb);

      const row_matrix w_before = store.matrix(w);
      const Eigen::VectorXd b_before = store.matrix(b).col(0);
      const auto report = opt.step(store, loss);
      BOOST_TEST(report.projected_gradients[0] == expected_g, boost::test_tools::tolerance(1e-8));
      const double g = report.projected_gradients[0];
      const matrix moved = store.matrix(w) - w_before;
      BOOST_TEST(relative(moved, -lr * g * z) < 1e-9);
      const Eigen::VectorXd moved_b = store.matrix(b).col(0) - b_before;
      BOOST_TEST((moved_b + lr * g * zb).norm() < 1e-9 * moved_b.norm());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 2. LOZO-M against a dense reference: explicit m × n momentum, materialised U·Vᵀ, the
//    projection M ← β·M·V_new·V_newᵀ/n when V changes.
namespace {

struct lozo_m_reference {
  std::uint64_t seed;
  zo::low_rank_perturbation policy;
  double eps, lr, beta, decay;
  matrix w = {}, m_w = {};
  Eigen::VectorXd b = {}, m_b = {};
  matrix target_w = {};
  Eigen::VectorXd target_b = {};

  double loss(const matrix& w_, const Eigen::VectorXd& b_) const {
    return 0.5 * (w_ - target_w).squaredNorm() + 0.5 * (b_ - target_b).squaredNorm() +
           0.1 * std::pow((w_.array() * b_.transpose().replicate(w_.rows(), 1).array()).sum(), 2);
  }

  void step(std::uint32_t k) {
    const std::size_t r = policy.rank(), n = static_cast<std::size_t>(w.cols());
    const matrix u = factor(policy.u_key(seed, zo::default_generator, k, 0, 0),
                            static_cast<std::size_t>(w.rows()), r);
    const matrix v = factor(policy.v_key(seed, zo::default_generator, k, 0), n, r);
    const matrix z = u * v.transpose();
    const Eigen::VectorXd zb = dense({seed, k, 1, zo::stream::dense, 0}, n);
    const double g =
        (loss(w + eps * z, b + eps * zb) - loss(w - eps * z, b - eps * zb)) / (2 * eps);
    if (k == 0) {
      m_w = g * z;
      m_b = g * zb;
    } else {
      if (policy.factor_step(k) != policy.factor_step(k - 1)) {
        m_w = (m_w * v * v.transpose() / double(n)).eval();
        m_w = beta * m_w + (1 - beta) * g * z;
      } else {
        m_w = beta * m_w + (1 - beta) * g * z;
      }
      m_b = beta * m_b + (1 - beta) * g * zb;
    }
    w = w - lr * (m_w + decay * w);
    b = b - lr * m_b;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(lozo_m_matches_a_dense_momentum_reference) {
  for (std::size_t interval : {1u, 3u}) {
    for (auto mode : {zo::restore_mode::exact, zo::restore_mode::arithmetic}) {
      const std::size_t m = 6, n = 5, steps = 3 * 3 + 2;
      std::srand(4);
      lozo_m_reference ref{11, zo::low_rank_perturbation(2, interval), 1e-3, 0.02, 0.9, 0.1};
      ref.w = matrix::Random(m, n);
      ref.b = Eigen::VectorXd::Random(n);
      ref.target_w = matrix::Random(m, n);
      ref.target_b = Eigen::VectorXd::Random(n);

      zo::eigen_store<double> store;
      const auto w = store.add("w", ref.w);
      const auto b = store.add("b", ref.b, {.decay = false});
      auto loss = [&] { return ref.loss(store.matrix(w), store.matrix(b).col(0)); };
      zo::lozo_m opt(ref.policy, zo::central_difference(ref.eps),
                     zo::low_rank_momentum<>(ref.lr, ref.beta, ref.decay), {},
                     {.seed = ref.seed, .restore = mode});
      for (std::uint32_t k = 0; k < steps; ++k) {
        ref.step(k);
        opt.step(store, loss);
      }
      BOOST_TEST_CONTEXT("interval " << interval << " mode " << int(mode)) {
        BOOST_TEST(relative(store.matrix(w), ref.w) < 1e-5);
        BOOST_TEST((store.matrix(b).col(0) - ref.b).norm() / ref.b.norm() < 1e-5);
        BOOST_TEST(relative(ref.w, ref.target_w) > 1e-3);  // the comparison is not trivial
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 3. No allocation of m·n elements during a step.
BOOST_AUTO_TEST_CASE(no_step_allocates_an_m_by_n_temporary) {
  const std::size_t m = 256, n = 512;
  const std::size_t mn_bytes = m * n * sizeof(float);
  auto run = [&](auto optimizer, zo::restore_mode mode, std::size_t warmup) {
    std::vector<float> w(m * n, 0.01f), bias(n, 0.0f);
    zo::view_store<float> store;
    store.add("w", std::span<float>(w), m, n);
    store.add("bias", std::span<float>(bias), {.decay = false});
    auto loss = [&] { return double(w[0]) * w[0] + double(w[m * n - 1]) + double(bias[3]); };
    optimizer.optimize(store, loss, warmup);
    largest_allocation = 0;
    tracking = true;
    optimizer.optimize(store, loss, 6);
    tracking = false;
    BOOST_TEST_CONTEXT("mode " << int(mode) << ", warm-up " << warmup) {
      BOOST_TEST(largest_allocation.load() < mn_bytes / 16);
    }
  };
  const zo::low_rank_perturbation policy(4, 3);
  // Arithmetic mode keeps no snapshot, so even the first step must stay small.
  run(zo::lozo(policy, zo::central_difference(), zo::sgd<>(1e-3), {},
               {.restore = zo::restore_mode::arithmetic}),
      zo::restore_mode::arithmetic, 0);
  run(zo::lozo_m(policy, zo::central_difference(), zo::low_rank_momentum<>(1e-3), {},
                 {.restore = zo::restore_mode::arithmetic}),
      zo::restore_mode::arithmetic, 0);
  // Exact mode allocates its snapshot once, at the first step; after that nothing large.
  run(zo::lozo(policy, zo::central_difference(), zo::sgd<>(1e-3)), zo::restore_mode::exact, 1);
  run(zo::lozo_m(policy, zo::central_difference(), zo::low_rank_momentum<>(1e-3)),
      zo::restore_mode::exact, 1);

  // The scratch a low-rank pass asks for is the factors: (m + n)·r per direction.
  std::vector<float> w(m * n, 1.0f);
  zo::view_store<float> store;
  store.add("w", std::span<float>(w), m, n);
  zo::scratch_arena<zo::backends::cpu, float> scratch;
  zo::pass<float> sweep;
  sweep.source = sweep.target = w.data();
  sweep.terms.add(0, 0, 1e-3f);
  sweep.terms.add(1, 0, 1e-3f);
  policy.apply(zo::backends::cpu{}, store.block(0), sweep, scratch);
  BOOST_TEST(scratch.peak() == (m + n) * policy.rank() * 2);
}

// ---------------------------------------------------------------------------------------------
// 4. Convergence on a low-rank matrix regression: Y = X·W* with W* of rank 2.
namespace {

template <class Optimizer>
double fit_low_rank(Optimizer opt, std::uint64_t steps) {
  const Eigen::Index samples = 200, m = 30, n = 20;
  std::srand(8);
  const matrix x = matrix::Random(samples, m);
  const matrix truth = matrix::Random(m, 2) * matrix::Random(2, n);
  const matrix y = x * truth;
  zo::eigen_store<double> store;
  const auto w = store.add("w", static_cast<std::size_t>(m), static_cast<std::size_t>(n));
  auto loss = [&] { return 0.5 * (x * store.matrix(w) - y).squaredNorm() / double(samples); };
  const double initial = loss();
  opt.optimize(store, loss, steps);
  return loss() / initial;
}

}  // namespace

// Budget: 4,000 steps at lr 2e-3, r = 2, ν = 50, ε = 1e-3. Measured ratios (seed 3): LOZO ≈ 0.025,
// LOZO-M ≈ 0.035; the test asks for 0.2, an 80% reduction. (lr 5e-3 diverges for LOZO.)
BOOST_AUTO_TEST_CASE(lozo_and_lozo_m_fit_a_low_rank_regression) {
  const zo::low_rank_perturbation policy(2, 50);
  const double lozo_ratio = fit_low_rank(
      zo::lozo(policy, zo::central_difference(1e-3), zo::sgd<>(2e-3), {}, {.seed = 3}), 4000);
  const double lozo_m_ratio =
      fit_low_rank(zo::lozo_m(policy, zo::central_difference(1e-3),
                              zo::low_rank_momentum<>(2e-3, 0.9), {}, {.seed = 3}),
                   4000);
  BOOST_TEST_MESSAGE("loss ratio: LOZO " << lozo_ratio << ", LOZO-M " << lozo_m_ratio);
  BOOST_TEST(lozo_ratio < 0.2);
  BOOST_TEST(lozo_m_ratio < 0.2);
}

// ---------------------------------------------------------------------------------------------
// 5. Bad input, rejected before anything changes.
BOOST_AUTO_TEST_CASE(bad_low_rank_parameters_are_rejected) {
  BOOST_CHECK_THROW(zo::low_rank_perturbation(0, 50), zo::invalid_argument);
  BOOST_CHECK_THROW(zo::low_rank_perturbation(2, 0), zo::invalid_argument);
  for (double beta : {-0.1, 1.0, 1.5, std::nan("")}) {
    BOOST_CHECK_THROW(zo::low_rank_momentum<>(1e-3, beta), zo::invalid_argument);
  }
  BOOST_CHECK_NO_THROW(zo::low_rank_momentum<>(1e-3, 0.0));

  zo::eigen_store<double> store;
  store.add("w", row_matrix::Constant(3, 8, 0.5));
  std::size_t calls = 0;
  zo::lozo opt(zo::low_rank_perturbation(4, 5), zo::central_difference(), zo::sgd<>(0.1));
  try {
    opt.step(store, [&] { return double(++calls); });
    BOOST_ERROR("a rank above min(rows, cols) was accepted");
  } catch (const zo::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find("rank 4 exceeds min(rows, cols) = 3 of block 'w'") !=
               std::string::npos);
  }
  BOOST_TEST(calls == 0u);
  BOOST_TEST((store.matrix(0).array() == 0.5).all());
}

// ---------------------------------------------------------------------------------------------
// 6. Save at step s, resume in a new optimizer: bit for bit the uninterrupted run.
namespace {

template <class Make>
void check_resume(Make make, std::uint64_t total, std::uint64_t save_at) {
  std::srand(12);
  const row_matrix start = row_matrix::Random(9, 7);
  const row_matrix target = row_matrix::Random(9, 7);
  auto run = [&](zo::eigen_store<float>& store, auto& opt, std::uint64_t steps) {
    auto loss = [&] {
      return 0.5 * (store.matrix(0).template cast<double>() - target).squaredNorm() +
             double(store.matrix(1).sum());
    };
    opt.optimize(store, loss, steps);
  };
  auto fresh_store = [&] {
    zo::eigen_store<float> s;
    s.add("w", start.cast<float>());
    s.add("b", Eigen::MatrixXf::Constant(7, 1, 0.25f), {.decay = false});
    return s;
  };

  auto whole_store = fresh_store();
  auto whole = make();
  run(whole_store, whole, total);

  auto first_store = fresh_store();
  auto first = make();
  run(first_store, first, save_at);
  std::stringstream saved;
  first.save(saved);
  auto resumed = make();
  resumed.load(saved);
  BOOST_TEST(resumed.step_count() == save_at);
  run(first_store, resumed, total - save_at);

  const auto a = zo_test::snapshot(whole_store), b = zo_test::snapshot(first_store);
  BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

BOOST_AUTO_TEST_CASE(save_and_resume_is_bitwise) {
  const zo::low_rank_perturbation policy(2, 5);
  // Saved inside a V window (7) and on the step that redraws V (10).
  for (std::uint64_t save_at : {7u, 10u}) {
    check_resume(
        [&] {
          return zo::lozo_m(policy, zo::central_difference(1e-3),
                            zo::low_rank_momentum<>(1e-3, 0.9, 0.01), {}, {.seed = 21});
        },
        17, save_at);
    check_resume(
        [&] {
          return zo::lozo(policy, zo::central_difference(1e-3), zo::sgd<>(1e-3), {}, {.seed = 21});
        },
        17, save_at);
  }
}

BOOST_AUTO_TEST_CASE(a_truncated_or_foreign_state_is_rejected) {
  zo::eigen_store<double> store;
  store.add("w", row_matrix::Constant(4, 4, 1.0));
  zo::lozo_m opt(zo::low_rank_perturbation(2, 5), zo::central_difference(),
                 zo::low_rank_momentum<>(1e-3));
  opt.optimize(
      store, [&] { return store.matrix(0).squaredNorm(); }, 3);
  std::stringstream saved;
  opt.save(saved);
  const std::string bytes = saved.str();
  for (std::size_t cut : {std::size_t{0}, std::size_t{5}, bytes.size() / 2, bytes.size() - 1}) {
    std::stringstream truncated(bytes.substr(0, cut));
    zo::lozo_m other(zo::low_rank_perturbation(2, 5), zo::central_difference(),
                     zo::low_rank_momentum<>(1e-3));
    BOOST_CHECK_THROW(other.load(truncated), zo::invalid_argument);
  }
  std::stringstream garbage("not a zo state at all");
  BOOST_CHECK_THROW(opt.load(garbage), zo::invalid_argument);
}
