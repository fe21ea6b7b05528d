// SPDX-License-Identifier: Apache-2.0
// 16-bit parameters (docs/precision.md): the element types convert as Eigen's do, passes compute
// in float with the float directions, exact restore returns the weights bit for bit after any
// number of cycles, arithmetic restore is refused (and would drift: MeZO's fp16 failure), and
// stochastic rounding keeps in expectation the updates round-to-nearest loses.
#define BOOST_TEST_MODULE precision
#include <Eigen/Core>
#include <bit>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <span>
#include <sstream>
#include <vector>
#include <zo/io/trajectory.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

using sixteen_bit_types = boost::mpl::list<zo::bfloat16, zo::float16>;

// Eigen's type of the same format: the independent reference for the conversions.
template <class T>
using eigen_twin =
    std::conditional_t<std::is_same_v<T, zo::bfloat16>, Eigen::bfloat16, Eigen::half>;

template <class T>
std::uint16_t bits_of(T x) {
  return x.bits;
}
template <class T>
T from_bits(std::uint32_t bits) {
  return T{static_cast<std::uint16_t>(bits)};
}
template <class T>
std::uint16_t eigen_bits(float x) {
  return std::bit_cast<std::uint16_t>(eigen_twin<T>(x));
}

template <class T>
std::vector<T> filled(std::size_t n, float value) {
  return std::vector<T>(n, zo::round_nearest<T>(value));
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Weights of mixed magnitudes, like a layer's: a few thousand, odd sizes so groups end inside a
// block, well inside the 16-bit range.
template <class T>
std::vector<T> layer_weights(std::size_t n, unsigned seed) {
  std::mt19937 random(seed);
  std::normal_distribution<float> normal(0.f, 0.05f);
  std::vector<T> w(n);
  for (auto& x : w)
    x = zo::round_nearest<T>(normal(random));
  return w;
}

template <class T>
double sum_of_squares(const std::vector<T>& w) {
  double s = 0;
  for (const T x : w)
    s += double(zo::widen(x)) * zo::widen(x);
  return s;
}

}  // namespace

// ---- The element types --------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE_TEMPLATE(every_16_bit_value_widens_as_eigen_widens_it, T, sixteen_bit_types) {
  std::size_t mismatches = 0;
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const float ours = zo::widen(from_bits<T>(b));
    const float theirs = static_cast<float>(std::bit_cast<eigen_twin<T>>(std::uint16_t(b)));
    if (std::isnan(theirs)
            ? !std::isnan(ours)
            : std::bit_cast<std::uint32_t>(ours) != std::bit_cast<std::uint32_t>(theirs)) {
      ++mismatches;
    }
  }
  BOOST_TEST(mismatches == 0u);
}

// Every value, the midpoints between neighbours (the ties) and a float either side of each, and
// a spread of other floats: round_nearest gives Eigen's bits (NaNs: some NaN).
BOOST_AUTO_TEST_CASE_TEMPLATE(narrowing_to_nearest_matches_eigen_ties_included, T,
                              sixteen_bit_types) {
  std::vector<float> xs;
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const float x = zo::widen(from_bits<T>(b));
    const float next = zo::widen(from_bits<T>(b + 1 < 0x10000 ? b + 1 : b));
    xs.push_back(x);
    if (std::isfinite(x) && std::isfinite(next) && (b & 0x7fff) != 0x7fff) {
      const float mid = static_cast<float>((double(x) + double(next)) / 2);
      xs.insert(xs.end(), {mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e30f),
                           std::nextafter(mid, -1e30f)});
    }
  }
  for (std::uint64_t b = 0; b < (std::uint64_t{1} << 32); b += 65521)
    xs.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(b)));
  std::size_t mismatches = 0;
  for (const float x : xs) {
    const T ours = zo::round_nearest<T>(x);
    if (std::isnan(x) ? !std::isnan(zo::widen(ours)) : bits_of(ours) != eigen_bits<T>(x)) {
      if (++mismatches < 5) BOOST_TEST_MESSAGE("mismatch at " << x);
    }
  }
  BOOST_TEST(mismatches == 0u);
  BOOST_TEST_MESSAGE(xs.size() << " floats checked");
}

// The expectation over every random word that matters (16 bits for bfloat16; 13 for float16's
// normal range; 24 in its subnormal range) is the float itself, exactly; each outcome is one of
// the two neighbours, and a value the type holds stays as it is.
BOOST_AUTO_TEST_CASE_TEMPLATE(stochastic_rounding_is_exact_in_expectation, T, sixteen_bit_types) {
  constexpr bool bf16 = std::is_same_v<T, zo::bfloat16>;
  std::mt19937 random(5);
  std::vector<float> xs = {1.0f + 1e-4f, -3.14159f, 1e-3f, -7.77e-5f, 123.456f, 1e-6f};
  if (!bf16) xs.insert(xs.end(), {3e-6f, -1.2345e-7f, 6e-5f});  // float16's subnormal range
  std::uniform_real_distribution<float> spread(-4.f, 4.f);
  for (int k = 0; k < 40; ++k)
    xs.push_back(std::ldexp(spread(random), k % 9 - 4));
  for (const float x : xs) {
    // The nearest value is one neighbour; the other is one step (one unit of the bits) away.
    const int nearest = bits_of(zo::round_nearest<T>(x));
    const bool subnormal = !bf16 && std::abs(x) < 6.103515625e-05f;
    const int bits = bf16 ? 16 : subnormal ? 24 : 13;
    double sum = 0;
    bool neighbours_only = true;
    for (std::uint64_t r = 0; r < (std::uint64_t{1} << bits); ++r) {
      const T y = zo::round_stochastic<T>(x, static_cast<std::uint32_t>(r << (32 - bits)));
      sum += zo::widen(y);
      neighbours_only = neighbours_only && std::abs(int(bits_of(y)) - nearest) <= 1;
    }
    const double mean = sum / double(std::uint64_t{1} << bits);
    BOOST_TEST_CONTEXT("x = " << x) {
      BOOST_TEST(neighbours_only);
      // Exact in the normal range; in the subnormal one the probability is |x|·2^24's fraction
      // to within 2^−24, of a step of 2^−24.
      BOOST_TEST(std::abs(mean - double(x)) <= (subnormal ? 0x1p-48 : 0.0));
    }
    const T held = zo::round_nearest<T>(x);
    for (std::uint32_t r : {0u, 0x7fffffffu, 0xffffffffu, 0x12345678u})
      BOOST_TEST(bits_of(zo::round_stochastic<T>(zo::widen(held), r)) == bits_of(held));
  }
}

// ---- Passes ------------------------------------------------------------------------------------

// A 16-bit block's direction is the float block's, and one perturbation pass stores
// round_nearest(x + alpha·z) computed in float.
BOOST_AUTO_TEST_CASE_TEMPLATE(a_16_bit_pass_adds_the_float_direction_and_rounds_once, T,
                              sixteen_bit_types) {
  const std::size_t n = 1000;
  std::vector<T> w = layer_weights<T>(n, 1);
  std::vector<float> f(n);
  for (std::size_t i = 0; i < n; ++i)
    f[i] = zo::widen(w[i]);
  zo::view_store<T> narrow;
  narrow.add("w", std::span<T>(w), 40, 25);
  zo::view_store<float> wide;
  wide.add("w", std::span<float>(f), 40, 25);
  for (const auto generator : {zo::generator::philox4x32_10, zo::generator::philox4x32_8}) {
    const zo::gaussian_perturbation gaussian;
    const auto z16 = zo::materialize_direction(gaussian, narrow.block(0), 9, 3, 1, generator);
    const auto z32 = zo::materialize_direction(gaussian, wide.block(0), 9, 3, 1, generator);
    BOOST_TEST(z16 == z32);
    // Through the pass itself, over the whole block: the batched host path and the tail.
    const std::vector<T> before = w;
    zo::pass_type_t<zo::gaussian_perturbation, T> sweep{};
    sweep.source = w.data();
    sweep.target = w.data();
    sweep.seed = 9;
    sweep.generator = generator;
    sweep.terms.add(3, 1, 1e-3f);
    zo::scratch_arena<zo::backends::cpu, float> scratch;
    gaussian.apply(zo::backends::cpu{}, narrow.block(0), sweep, scratch);
    std::size_t wrong = 0, moved = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const T expected = zo::round_nearest<T>(1.0f * zo::widen(before[i]) + 1e-3f * z32[i]);
      wrong += bits_of(expected) != bits_of(w[i]);
      moved += bits_of(before[i]) != bits_of(w[i]);
    }
    BOOST_TEST(wrong == 0u);
    BOOST_TEST(moved > n / 2);
    w = before;
  }
}

// LOZO's low-rank pass over a 16-bit matrix: round_nearest(x + alpha·(U·Vᵀ)) per element.
BOOST_AUTO_TEST_CASE_TEMPLATE(a_16_bit_low_rank_pass_rounds_the_float_product, T,
                              sixteen_bit_types) {
  const std::size_t rows = 24, cols = 37;
  std::vector<T> w = layer_weights<T>(rows * cols, 2);
  const std::vector<T> before = w;
  zo::view_store<T> store;
  store.add("w", std::span<T>(w), rows, cols);
  const zo::low_rank_perturbation lozo(2, 5);
  const auto factors = zo::materialize_factors(lozo, store.block(0), 4, 6, 0);
  zo::pass_type_t<zo::low_rank_perturbation, T> sweep{};
  sweep.source = w.data();
  sweep.target = w.data();
  sweep.seed = 4;
  sweep.terms.add(6, 0, 2e-3f);
  zo::scratch_arena<zo::backends::cpu, float> scratch;
  lozo.apply(zo::backends::cpu{}, store.block(0), sweep, scratch);
  std::size_t far = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < cols; ++c) {
      double product = 0;
      for (std::size_t k = 0; k < 2; ++k)
        product += double(factors.u[r * 2 + k]) * factors.v[c * 2 + k];
      const double exact = double(zo::widen(before[r * cols + c])) + 2e-3 * product;
      // One rounding to 16 bits after float arithmetic: within a unit in the last place.
      const double ulp = std::abs(exact) * (std::is_same_v<T, zo::bfloat16> ? 0x1p-7 : 0x1p-10);
      far += std::abs(double(zo::widen(w[r * cols + c])) - exact) > ulp + 1e-7;
    }
  }
  BOOST_TEST(far == 0u);
}

// ---- Exact restore -----------------------------------------------------------------------------

// 10,000 steps at learning rate 0, each perturbing twice and restoring: the weights end bit for
// bit where they began, though every evaluation saw them moved.
BOOST_AUTO_TEST_CASE_TEMPLATE(ten_thousand_cycles_at_learning_rate_zero_restore_every_bit, T,
                              sixteen_bit_types) {
  std::vector<T> w = layer_weights<T>(4099, 3), bias = layer_weights<T>(67, 4);
  const auto w0 = w, bias0 = bias;
  zo::view_store<T> store;
  store.add("w", std::span<T>(w), 4099, 1);
  store.add("bias", std::span<T>(bias), {.decay = false});
  zo::mezo optimizer(zo::central_difference(1e-3), zo::sgd<>(0.0), {.seed = 21});
  std::size_t evaluations = 0, moved = 0;
  const double base = sum_of_squares(w);
  optimizer.optimize(
      store,
      [&] {
        ++evaluations;
        const double s = sum_of_squares(w);
        moved += s != base;
        return s;
      },
      10000);
  BOOST_TEST(evaluations == 20000u);
  BOOST_TEST(moved == evaluations);
  BOOST_TEST(same_bits(w, w0));
  BOOST_TEST(same_bits(bias, bias0));
}

// The choice is explicit: arithmetic restore of a 16-bit store is refused before anything moves.
BOOST_AUTO_TEST_CASE_TEMPLATE(arithmetic_restore_of_16_bit_blocks_is_refused, T,
                              sixteen_bit_types) {
  std::vector<T> w = layer_weights<T>(100, 5);
  const auto w0 = w;
  zo::view_store<T> store;
  store.add("w", std::span<T>(w));
  zo::mezo optimizer(zo::central_difference(1e-3), zo::sgd<>(1e-3),
                     {.restore = zo::restore_mode::arithmetic});
  BOOST_CHECK_EXCEPTION(optimizer.step(store, [&] { return sum_of_squares(w); }),
                        zo::invalid_argument, [](const zo::invalid_argument& e) {
                          return std::string(e.what()).find("restore_mode::exact") !=
                                 std::string::npos;
                        });
  BOOST_TEST(same_bits(w, w0));
}

// What arithmetic restore would do (MeZO's reference loop: +εz, −2εz, +εz, at learning rate 0)
// in 16 bits: the weights drift away, step after step. The figures go to docs/precision.md.
BOOST_AUTO_TEST_CASE_TEMPLATE(undoing_perturbations_arithmetically_drifts_in_16_bits, T,
                              sixteen_bit_types) {
  const std::size_t n = 4099;
  std::vector<T> w = layer_weights<T>(n, 3);
  const auto w0 = w;
  zo::view_store<T> store;
  store.add("w", std::span<T>(w), n, 1);
  const zo::gaussian_perturbation gaussian;
  zo::scratch_arena<zo::backends::cpu, float> scratch;
  auto shift = [&](std::uint32_t step, float alpha) {
    zo::pass_type_t<zo::gaussian_perturbation, T> sweep{};
    sweep.source = w.data();
    sweep.target = w.data();
    sweep.seed = 21;
    sweep.terms.add(step, 0, alpha);
    gaussian.apply(zo::backends::cpu{}, store.block(0), sweep, scratch);
  };
  for (std::uint32_t step = 0; step < 10000; ++step) {
    shift(step, 1e-3f);
    shift(step, -2e-3f);
    shift(step, 1e-3f);
    if (step + 1 == 100 || step + 1 == 10000) {
      std::size_t changed = 0;
      double drift = 0, scale = 0;
      for (std::size_t i = 0; i < n; ++i) {
        changed += bits_of(w[i]) != bits_of(w0[i]);
        drift += std::pow(double(zo::widen(w[i])) - zo::widen(w0[i]), 2);
        scale += std::pow(double(zo::widen(w0[i])), 2);
      }
      BOOST_TEST_MESSAGE((std::is_same_v<T, zo::bfloat16> ? "bf16" : "fp16")
                         << " after " << step + 1 << " arithmetic restores: " << changed << " of "
                         << n << " weights changed, relative drift " << std::sqrt(drift / scale));
      BOOST_TEST(changed > n / 10);
    }
  }
}

// ---- Stochastic rounding -----------------------------------------------------------------------

namespace {

// One MeZO step on a block of ones whose projected gradient is fixed (losses 1 then 0: g =
// 1/(2ε)), so that every update is −η·g·z, far below half a unit in the last place of 1. Returns
// the change of each weight.
template <class T>
std::vector<double> one_step_changes(std::size_t n, double learning_rate, zo::rounding rounding,
                                     std::uint64_t seed) {
  std::vector<T> w(n);
  if constexpr (zo::is_16bit<T>) {
    w = filled<T>(n, 1.0f);
  } else {
    w.assign(n, T(1));
  }
  zo::view_store<T> store;
  store.add("w", std::span<T>(w), n, 1);
  zo::mezo optimizer(zo::central_difference(1e-3), zo::sgd<>(learning_rate),
                     {.seed = seed, .rounding = rounding});
  int calls = 0;
  optimizer.step(store, [&] { return calls++ % 2 == 0 ? 1.0 : 0.0; });
  std::vector<double> change(n);
  for (std::size_t i = 0; i < n; ++i)
    change[i] = double(zo::widen(w[i])) - 1.0;
  return change;
}

}  // namespace

// At a rate where round-to-nearest loses every update, stochastic rounding's mean change along
// the direction, Σ Δθ_i·z_i, matches the float run's within its standard error (each weight moves
// one unit u_i with probability p_i = |Δ_i|/u_i, variance p_i(1 − p_i)u_i²); four standard errors
// are allowed per seed, and most seeds must land within one.
BOOST_AUTO_TEST_CASE_TEMPLATE(stochastic_rounding_keeps_updates_that_nearest_loses, T,
                              sixteen_bit_types) {
  const std::size_t n = 1 << 16;
  constexpr bool bf16 = std::is_same_v<T, zo::bfloat16>;
  // η·g = 1e-4 (bfloat16) or 2e-5 (float16): |Δ| < 6.7·η·g stays below half a unit just below 1
  // (2^−9, 2^−12), where the units are half those above it (2^−7, 2^−10).
  const double lr = bf16 ? 2e-7 : 4e-8;
  const double unit_above = bf16 ? 0x1p-7 : 0x1p-10;
  std::vector<float> unused(n);
  zo::view_store<float> shape;  // the block's shape and id, which the direction depends on
  shape.add("w", std::span<float>(unused), n, 1);
  int within_one = 0;
  const int seeds = 10;
  for (int seed = 0; seed < seeds; ++seed) {
    const auto z =
        zo::materialize_direction(zo::gaussian_perturbation{}, shape.block(0), seed, 0, 0);
    const auto nearest = one_step_changes<T>(n, lr, zo::rounding::nearest, seed);
    const auto stochastic = one_step_changes<T>(n, lr, zo::rounding::stochastic, seed);
    const auto wide = one_step_changes<float>(n, lr, zo::rounding::stochastic, seed);
    double along_stochastic = 0, along_wide = 0, variance = 0;
    std::size_t moved_by_nearest = 0, moved_in_float = 0;
    for (std::size_t i = 0; i < n; ++i) {
      moved_by_nearest += nearest[i] != 0.0;
      moved_in_float += wide[i] != 0.0;
      along_stochastic += stochastic[i] * z[i];
      along_wide += wide[i] * z[i];
      const double unit = wide[i] < 0 ? unit_above / 2 : unit_above;
      const double p = std::abs(wide[i]) / unit;
      variance += p * (1 - p) * unit * unit * double(z[i]) * z[i];
    }
    const double error = std::sqrt(variance);
    BOOST_TEST_CONTEXT("seed " << seed) {
      BOOST_TEST(moved_by_nearest == 0u);  // round-to-nearest lost every update
      BOOST_TEST(moved_in_float > n - n / 100);
      BOOST_TEST(std::abs(along_stochastic - along_wide) < 4 * error);
      BOOST_TEST(std::abs(along_wide) > 20 * error);  // the test can tell a lost update
    }
    within_one += std::abs(along_stochastic - along_wide) < error;
    if (seed == 0) {
      BOOST_TEST_MESSAGE("Σ Δθ·z: float " << along_wide << ", stochastic " << along_stochastic
                                          << " ± " << error << ", nearest 0");
    }
  }
  BOOST_TEST(within_one >= seeds / 2);
}

// ---- Reproducibility ---------------------------------------------------------------------------

namespace {
// A few steps of a 16-bit run with a real loss: the weights it ends with.
template <class T>
std::vector<T> short_run(bool fused, std::size_t steps = 12) {
  std::vector<T> w = layer_weights<T>(3001, 8), b = layer_weights<T>(33, 9);
  zo::view_store<T> store;
  store.add("w", std::span<T>(w), 3001, 1);
  store.add("b", std::span<T>(b), {.decay = false});
  zo::mezo optimizer(zo::central_difference(1e-3), zo::sgd<>(1e-3, 0.01),
                     {.seed = 31, .fused_steps = fused});
  optimizer.optimize(
      store, [&] { return sum_of_squares(w) + sum_of_squares(b); }, steps);
  w.insert(w.end(), b.begin(), b.end());
  return w;
}
}  // namespace

// A fused step stores what an update pass and the next perturbation pass store one after the
// other: the base point is rounded (stochastically, with the same words) before the
// perturbation is added.
BOOST_AUTO_TEST_CASE_TEMPLATE(fused_16_bit_steps_equal_unfused_ones_bit_for_bit, T,
                              sixteen_bit_types) {
  const auto unfused = short_run<T>(false), fused = short_run<T>(true);
  BOOST_TEST(same_bits(unfused, fused));
  BOOST_TEST(!same_bits(unfused, layer_weights<T>(3001, 8)));
}

namespace {
template <class T>
struct sixteen_bit_model {
  std::vector<T> w = layer_weights<T>(41 * 50, 11), b = layer_weights<T>(17, 12);
  zo::view_store<T> store;
  sixteen_bit_model() {
    store.add("layers.0.weight", std::span<T>(w), 41, 50, {.layer = 0});
    store.add("layers.0.bias", std::span<T>(b), {.layer = 0, .decay = false});
  }
  double loss() const {
    double s = 0;
    for (std::size_t i = 0; i < w.size(); ++i)
      s += std::pow(double(zo::widen(w[i])) - 0.01 * double(i % 7), 2);
    return s + sum_of_squares(b);
  }
  std::vector<T> values() const {
    auto v = w;
    v.insert(v.end(), b.begin(), b.end());
    return v;
  }
};

auto make_lozo_m() {
  return zo::lozo_m(zo::low_rank_perturbation(2, 4), zo::central_difference(1e-3),
                    zo::low_rank_momentum<>(1e-3, 0.9), zo::all_blocks{}, {.seed = 41});
}
}  // namespace

// Saved at step 9 and resumed by a new optimizer on the saved weights: the same bits as the run
// that never stopped, for MeZO and for LOZO-M (its momentum kept in float).
BOOST_AUTO_TEST_CASE_TEMPLATE(a_16_bit_run_resumes_bit_for_bit, T, sixteen_bit_types) {
  auto check = [](auto make) {
    sixteen_bit_model<T> straight, first, second;
    auto uninterrupted = make();
    for (int k = 0; k < 20; ++k)
      uninterrupted.step(straight.store, [&] { return straight.loss(); });
    auto before = make();
    for (int k = 0; k < 9; ++k)
      before.step(first.store, [&] { return first.loss(); });
    std::stringstream state;
    before.save(state);
    second.w = first.w;
    second.b = first.b;
    auto after = make();
    after.load(state);
    for (int k = 9; k < 20; ++k)
      after.step(second.store, [&] { return second.loss(); });
    BOOST_TEST(same_bits(second.values(), straight.values()));
    BOOST_TEST(!same_bits(straight.values(), sixteen_bit_model<T>().values()));
  };
  check([] { return zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-3), {.seed = 41}); });
  check(make_lozo_m);
}

// A trajectory log of a 16-bit run replays to the same bits on the starting weights.
BOOST_AUTO_TEST_CASE_TEMPLATE(a_16_bit_run_replays_bit_for_bit, T, sixteen_bit_types) {
  const auto path = std::filesystem::temp_directory_path() / "zo_precision_replay.zotraj";
  sixteen_bit_model<T> live, replayed;
  auto optimizer = make_lozo_m();
  {
    zo::io::trajectory_writer log(path, zo::io::run_header(live.store, optimizer.options(), "t"));
    optimizer.optimize(
        live.store, [&] { return live.loss(); }, 15, log);
    log.finish();
  }
  const auto log = zo::io::read_trajectory(path);
  auto again = make_lozo_m();
  BOOST_TEST(zo::io::replay(again, replayed.store, log) == 15u);
  BOOST_TEST(same_bits(replayed.values(), live.values()));
  BOOST_TEST(!same_bits(live.values(), sixteen_bit_model<T>().values()));
  std::filesystem::remove(path);
}

// MeZO and LOZO-M lower a loss in 16 bits with stochastic rounding at a small learning rate.
BOOST_AUTO_TEST_CASE_TEMPLATE(sixteen_bit_runs_lower_the_loss, T, sixteen_bit_types) {
  sixteen_bit_model<T> model;
  const double start = model.loss();
  zo::mezo optimizer(zo::central_difference(1e-3), zo::sgd<>(2e-4), {.seed = 3});
  optimizer.optimize(
      model.store, [&] { return model.loss(); }, 300);
  BOOST_TEST(model.loss() < 0.9 * start);
  BOOST_TEST_MESSAGE("MeZO, 300 steps: " << start << " -> " << model.loss());
}
