// SPDX-License-Identifier: Apache-2.0
// Keyed directions: distribution checks that a broken generator fails, independence of keys and
// streams, and regeneration of any element alone, in any order, from any thread.
#define BOOST_TEST_MODULE random
#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>
#include <zo/zo.hpp>

namespace {

constexpr std::size_t n = 200000;

template <class Distribution>
std::vector<double> draw(const zo::direction_key& key, std::size_t count = n) {
  std::vector<double> v(count);
  for (std::size_t i = 0; i < count; ++i)
    v[i] = zo::direction_element<Distribution>(key, i);
  return v;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v)
    s += x;
  return s / static_cast<double>(v.size());
}

double variance(const std::vector<double>& v) {
  const double m = mean(v);
  double s = 0;
  for (double x : v)
    s += (x - m) * (x - m);
  return s / static_cast<double>(v.size() - 1);
}

// Kolmogorov–Smirnov distance between the sample and N(0, 1).
double ks_statistic(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const double count = static_cast<double>(v.size());
  double d = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double cdf = 0.5 * std::erfc(-v[i] / std::sqrt(2.0));
    d = std::max({d, std::abs(cdf - static_cast<double>(i) / count),
                  std::abs(static_cast<double>(i + 1) / count - cdf)});
  }
  return d;
}

// The acceptance bounds. With n = 200,000 the standard error of the mean is 0.0022, of the
// variance 0.0032; the KS bound is the 0.1% critical value 1.95/sqrt(n).
bool looks_standard_normal(const std::vector<double>& v) {
  const double sn = std::sqrt(static_cast<double>(v.size()));
  return std::abs(mean(v)) < 4.5 / sn && std::abs(variance(v) - 1) < 4.5 * std::sqrt(2.0) / sn &&
         ks_statistic(v) < 1.95 / sn;
}

double correlation(const std::vector<double>& a, const std::vector<double>& b) {
  const double ma = mean(a), mb = mean(b);
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

// Deliberately broken generators: each passes the checks it is not meant to trip, so each check
// is shown to catch its own kind of defect.
struct shifted_gaussian {  // mean 0.02
  template <class T>
  static void group(const zo::direction_key& k, std::uint64_t g, T (&out)[zo::group_width]) {
    zo::gaussian_distribution::group(k, g, out);
    for (auto& x : out)
      x += T(0.02);
  }
};
struct narrow_gaussian {  // variance 0.95
  template <class T>
  static void group(const zo::direction_key& k, std::uint64_t g, T (&out)[zo::group_width]) {
    zo::gaussian_distribution::group(k, g, out);
    for (auto& x : out)
      x *= T(std::sqrt(0.95));
  }
};
struct uniform_unit_variance {  // mean 0, variance 1, not normal
  template <class T>
  static void group(const zo::direction_key& k, std::uint64_t g, T (&out)[zo::group_width]) {
    const auto w = zo::philox_words(k, g);
    for (std::size_t l = 0; l < zo::group_width; ++l) {
      out[l] = T(std::sqrt(3.0) * r123::uneg11<double>(w[l]));
    }
  }
};
struct reused_counter {  // every group repeats group 0
  template <class T>
  static void group(const zo::direction_key& k, std::uint64_t, T (&out)[zo::group_width]) {
    zo::gaussian_distribution::group(k, std::uint64_t{0}, out);
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(gaussian_passes_mean_variance_and_ks_for_several_keys) {
  for (std::uint64_t seed : {0ull, 1ull, 12345ull, 0xdeadbeefcafeull}) {
    for (std::uint32_t block : {0u, 7u}) {
      const auto v = draw<zo::gaussian_distribution>({seed, 3, block});
      BOOST_TEST_CONTEXT("seed " << seed << " block " << block) {
        BOOST_TEST(std::abs(mean(v)) < 4.5 / std::sqrt(double(n)));
        BOOST_TEST(std::abs(variance(v) - 1) < 4.5 * std::sqrt(2.0 / n));
        BOOST_TEST(ks_statistic(v) < 1.95 / std::sqrt(double(n)));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(broken_generators_fail_the_same_checks) {
  const zo::direction_key key{99, 1, 2};
  BOOST_TEST(looks_standard_normal(draw<zo::gaussian_distribution>(key)));
  BOOST_TEST(!looks_standard_normal(draw<shifted_gaussian>(key)));
  BOOST_TEST(!looks_standard_normal(draw<narrow_gaussian>(key)));
  BOOST_TEST(!looks_standard_normal(draw<uniform_unit_variance>(key)));
  BOOST_TEST(!looks_standard_normal(draw<reused_counter>(key)));
}

BOOST_AUTO_TEST_CASE(rademacher_is_balanced_signs) {
  const auto v = draw<zo::rademacher_distribution>({5, 0, 1});
  for (double x : v)
    BOOST_REQUIRE(std::abs(x) == 1.0);
  BOOST_TEST(std::abs(mean(v)) < 4.5 / std::sqrt(double(n)));
}

BOOST_AUTO_TEST_CASE(every_key_field_gives_an_independent_direction) {
  const zo::direction_key base{11, 4, 2, zo::stream::dense, 0};
  auto vary = base;
  std::vector<zo::direction_key> others;
  vary = base, vary.seed = 12, others.push_back(vary);
  vary = base, vary.step = 5, others.push_back(vary);
  vary = base, vary.block = 3, others.push_back(vary);
  vary = base, vary.stream = zo::stream::low_rank_u, others.push_back(vary);
  vary = base, vary.stream = zo::stream::low_rank_v, others.push_back(vary);
  vary = base, vary.sample = 1, others.push_back(vary);
  const auto a = draw<zo::gaussian_distribution>(base, 50000);
  for (const auto& k : others) {
    const auto b = draw<zo::gaussian_distribution>(k, 50000);
    BOOST_TEST(std::abs(correlation(a, b)) < 4.5 / std::sqrt(50000.0));
  }
}

BOOST_AUTO_TEST_CASE(elements_regenerate_alone_in_reverse_order_and_from_four_threads) {
  const std::size_t size = 10007;  // not a multiple of the group width
  const zo::direction_key key{2024, 17, 9};
  // The whole direction as a pass writes it: target = 0·source + 1·z.
  std::vector<float> zeros(size, 0.0f), pass_values(size);
  zo::pass<float> sweep;
  sweep.source = zeros.data();
  sweep.target = pass_values.data();
  sweep.seed = key.seed;
  sweep.terms.add(key.step, key.sample, 1.0f);
  zo::view_store<float> store;
  std::vector<float> storage(size);
  // Ten blocks, so the one applied below has id 9, the key's block.
  for (const char* name : {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}) {
    store.add(name, storage);
  }
  zo::scratch_arena<zo::backends::cpu, float> scratch;
  zo::gaussian_perturbation{}.apply(zo::backends::cpu{}, store.block(9), sweep, scratch);

  std::vector<float> reverse(size);
  for (std::size_t i = size; i-- > 0;) {
    reverse[i] = zo::direction_element<zo::gaussian_distribution>(key, i);
  }
  BOOST_TEST(std::memcmp(reverse.data(), pass_values.data(), size * sizeof(float)) == 0);

  std::vector<float> threaded(size);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = t; i < size; i += 4) {
        threaded[i] = zo::direction_element<zo::gaussian_distribution>(key, i);
      }
    });
  }
  for (auto& th : threads)
    th.join();
  BOOST_TEST(std::memcmp(threaded.data(), pass_values.data(), size * sizeof(float)) == 0);
}

BOOST_AUTO_TEST_CASE(double_directions_are_float_directions_widened) {
  const zo::direction_key key{3, 1, 4};
  for (std::uint64_t i = 0; i < 1000; ++i) {
    const float f = zo::direction_element<zo::gaussian_distribution, float>(key, i);
    const double d = zo::direction_element<zo::gaussian_distribution, double>(key, i);
    BOOST_REQUIRE(static_cast<double>(f) == d);
  }
}

// Random123's own Philox4x32 with the generator's rounds, one counter per call, as the reference
// for zo's vectorised batches.
r123::Philox4x32::ctr_type random123_words(const zo::direction_key& key, std::uint64_t group) {
  const r123::Philox4x32::key_type k = {
      {static_cast<std::uint32_t>(key.seed), static_cast<std::uint32_t>(key.seed >> 32)}};
  const r123::Philox4x32::ctr_type c = {{static_cast<std::uint32_t>(group),
                                         static_cast<std::uint32_t>((group >> 32) & 0xffffu) |
                                             (static_cast<std::uint32_t>(key.stream) << 16) |
                                             (static_cast<std::uint32_t>(key.sample) << 24),
                                         key.block, key.step}};
  return key.generator == zo::generator::philox4x32_10 ? r123::Philox4x32_R<10>{}(c, k)
                                                       : r123::Philox4x32_R<8>{}(c, k);
}

// The vectorised batch path (host passes) against Random123's one-counter Philox and against
// the one-group path (devices, direction_element), including the batches on either side of group
// 2^32, where the counter's second word takes over; for each generator.
BOOST_AUTO_TEST_CASE(batches_equal_random123_and_the_one_group_path_bit_for_bit) {
  std::vector<zo::direction_key> keys;
  for (const auto generator : {zo::generator::philox4x32_10, zo::generator::philox4x32_8}) {
    keys.push_back({0, 0, 0, zo::stream::dense, 0, generator});
    keys.push_back(
        {0xfedcba9876543210ull, 4000000000u, 77, zo::stream::low_rank_v, 255, generator});
    keys.push_back({42, 7, 3, zo::stream::dense, 9, generator});
  }
  // Batches start at multiples of batch_groups; two meet at group 2^32.
  const std::uint64_t firsts[] = {0, 123456, (std::uint64_t{1} << 32) - 16, std::uint64_t{1} << 32,
                                  std::uint64_t{3} << 40};
  for (const auto& key : keys) {
    for (const std::uint64_t first : firsts) {
      std::uint32_t words[4][zo::batch_groups];
      zo::detail::philox_batch(key, first, words);
      float gauss[zo::batch_width];
      zo::gaussian_distribution::batch(key, first, gauss);
      double signs[zo::batch_width];
      zo::rademacher_distribution::batch(key, first, signs);
      for (std::size_t g = 0; g < zo::batch_groups; ++g) {
        const auto expected = random123_words(key, first + g);
        BOOST_REQUIRE(zo::philox_words(key, first + g) == expected);
        float one_group[4];
        zo::gaussian_distribution::group(key, first + g, one_group);
        double one_group_signs[4];
        zo::rademacher_distribution::group(key, first + g, one_group_signs);
        for (std::size_t w = 0; w < 4; ++w) {
          // Word w of group first + g is element w·16 + g of the batch.
          const std::size_t element = w * zo::batch_groups + g;
          BOOST_REQUIRE_EQUAL(zo::element_of(first + g, w) - zo::element_of(first, 0), element);
          BOOST_REQUIRE_EQUAL(words[w][g], expected[w]);
          BOOST_REQUIRE(std::memcmp(&gauss[element], &one_group[w], sizeof(float)) == 0);
          BOOST_REQUIRE_EQUAL(signs[element], one_group_signs[w]);
        }
      }
    }
  }
}

// Host passes draw runs of zo::run_batches batches at a time (add_scaled_direction_run: one
// Philox call over all their counters for Gaussian entries, 128 bits of one counter for two
// batches of philox4x32-8's signs); the values must be the one-group path's, for runs of two (the
// passes' zo::run_batches) and four batches, also for the run that ends at group 2^32 and the
// one that starts there.
template <std::size_t Batches>
void check_runs_against_the_one_group_path() {
  constexpr std::size_t width = Batches * zo::batch_width;
  const std::uint64_t firsts[] = {0, 123456, (std::uint64_t{1} << 32) - 64, std::uint64_t{1} << 32,
                                  std::uint64_t{3} << 40};
  for (const auto generator : {zo::generator::philox4x32_10, zo::generator::philox4x32_8}) {
    const zo::direction_key key{0xfedcba9876543210ull, 4000000000u, 77,
                                zo::stream::dense,     255,         generator};
    for (const std::uint64_t first : firsts) {
      BOOST_REQUIRE_EQUAL(first % (Batches * zo::batch_groups), 0u);
      std::uint32_t words[4][Batches * zo::batch_groups];
      zo::detail::philox_batch(key, first, words);
      float gauss[width] = {};
      zo::add_scaled_direction_run<Batches, zo::gaussian_distribution>(key, first, 1.0f, gauss);
      double gauss_d[width] = {};
      zo::add_scaled_direction_run<Batches, zo::gaussian_distribution>(key, first, 1.0, gauss_d);
      float signs[width] = {};
      zo::add_scaled_direction_run<Batches, zo::rademacher_distribution>(key, first, 1.0f, signs);
      for (std::size_t k = 0; k < width; ++k) {
        const std::uint64_t element = zo::element_of(first, 0) + k;
        const std::uint64_t group = zo::group_of(element);
        const std::size_t word = zo::word_of(element);
        BOOST_REQUIRE_EQUAL(words[word][group - first], random123_words(key, group)[word]);
        const float expected = zo::direction_element<zo::gaussian_distribution>(key, element);
        BOOST_REQUIRE(std::memcmp(&gauss[k], &expected, sizeof(float)) == 0);
        BOOST_REQUIRE_EQUAL(
            gauss_d[k], (zo::direction_element<zo::gaussian_distribution, double>(key, element)));
        BOOST_REQUIRE_EQUAL(signs[k],
                            zo::direction_element<zo::rademacher_distribution>(key, element));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(runs_of_batches_equal_the_one_group_path_bit_for_bit) {
  check_runs_against_the_one_group_path<zo::run_batches>();
  check_runs_against_the_one_group_path<4>();
}

// The transform's own functions against libm in double: log to a relative 2 ulp over the u01
// outputs, sin/cos of πa to 2e-7 absolute; the vectorised square root equals sqrtf exactly.
BOOST_AUTO_TEST_CASE(transform_functions_are_accurate_to_float_precision) {
  double log_error = 0, trig_error = 0;
  std::vector<float> squares, roots;
  for (std::uint32_t i = 0; i < 2000000; ++i) {
    const std::uint32_t word = i * 2654435761u + (i >> 7);
    const float u = r123::u01<float>(word);
    const float l = zo::detail::log_unit(u);
    const double exact_log = std::log(static_cast<double>(u));
    if (exact_log != 0) log_error = std::max(log_error, std::abs((l - exact_log) / exact_log));
    const float a = r123::uneg11<float>(word);
    float s, c;
    zo::detail::sincos_pi(a, s, c);
    const double pa = 3.14159265358979323846 * static_cast<double>(a);
    trig_error = std::max({trig_error, std::abs(s - std::sin(pa)), std::abs(c - std::cos(pa))});
    squares.push_back(-2.f * l);
    roots.push_back(std::sqrt(-2.f * l));
  }
  for (std::size_t i = 0; i + 37 <= squares.size(); i += 37) {  // 37: a vector tail too
    float chunk[37];
    std::memcpy(chunk, squares.data() + i, sizeof chunk);
    zo::detail::sqrt_in_place(chunk);
    std::memcpy(squares.data() + i, chunk, sizeof chunk);
  }
  squares.resize(squares.size() / 37 * 37);
  roots.resize(squares.size());
  BOOST_TEST_MESSAGE("max errors: log " << log_error << ", sin/cos " << trig_error);
  BOOST_TEST(log_error < 2.4e-7);
  BOOST_TEST(trig_error < 2e-7);
  BOOST_TEST(std::memcmp(squares.data(), roots.data(), roots.size() * sizeof(float)) == 0);
}

// Where each Rademacher sign comes from, restated from Random123's words: philox4x32-10 takes the
// low bit of the element's word in the Gaussian layout, philox4x32-8 bit e mod 32 of word
// (e mod 128) / 32 of counter e / 128.
BOOST_AUTO_TEST_CASE(rademacher_signs_come_from_the_documented_bits) {
  for (const auto generator : {zo::generator::philox4x32_10, zo::generator::philox4x32_8}) {
    const zo::direction_key key{77, 3, 5, zo::stream::dense, 2, generator};
    float batch[zo::batch_width];
    for (std::uint64_t first = 0; first < 64 * zo::batch_groups; first += zo::batch_groups) {
      zo::rademacher_distribution::batch(key, first, batch);
      for (std::size_t k = 0; k < zo::batch_width; ++k) {
        const std::uint64_t e = zo::element_of(first, 0) + k;
        std::uint32_t bit;
        if (generator == zo::generator::philox4x32_10) {
          bit = random123_words(key, zo::group_of(e))[zo::word_of(e)] & 1u;
        } else {
          bit = (random123_words(key, e / 128)[e % 128 / 32] >> (e % 32)) & 1u;
        }
        BOOST_TEST_CONTEXT(zo::generator_name(generator) << " element " << e) {
          BOOST_REQUIRE_EQUAL(batch[k], bit ? 1.0f : -1.0f);
          BOOST_REQUIRE_EQUAL(zo::direction_element<zo::rademacher_distribution>(key, e), batch[k]);
        }
      }
    }
  }
}

namespace {

// A direction of `count` elements as host passes generate it, batch by batch.
template <class Distribution>
std::vector<double> draw_batches(const zo::direction_key& key, std::size_t count) {
  std::vector<double> v(count);
  float z[zo::batch_width];
  for (std::size_t first = 0; first < count; first += zo::batch_width) {
    Distribution::batch(key, first / zo::batch_width * zo::batch_groups, z);
    for (std::size_t k = 0; k < zo::batch_width && first + k < count; ++k)
      v[first + k] = z[k];
  }
  return v;
}

double excess_kurtosis(const std::vector<double>& v) {
  const double m = mean(v);
  double s2 = 0, s4 = 0;
  for (double x : v) {
    const double d = (x - m) * (x - m);
    s2 += d;
    s4 += d * d;
  }
  const double count = static_cast<double>(v.size());
  return s4 / count / ((s2 / count) * (s2 / count)) - 3;
}

// Correlation of v with itself `lag` elements later.
double lag_correlation(const std::vector<double>& v, std::size_t lag) {
  const std::vector<double> a(v.begin(), v.end() - static_cast<std::ptrdiff_t>(lag));
  const std::vector<double> b(v.begin() + static_cast<std::ptrdiff_t>(lag), v.end());
  return correlation(a, b);
}

}  // namespace

// The statistical check each generator is chosen by, over 10^7 elements as passes generate them:
// mean, variance, excess kurtosis and the Kolmogorov-Smirnov distance against N(0, 1), each
// within 4.5 standard errors (KS: its 0.1% critical value); no correlation between neighbouring
// elements (lags 1, 16 and 64: the next counter, the same counter's next word, the next batch),
// nor with the direction of the next block, step or sample. The broken generators above show
// that each of these checks can fail.
BOOST_AUTO_TEST_CASE(each_generator_passes_the_statistical_check_over_ten_million_elements) {
  constexpr std::size_t count = 10'000'000;
  const double sn = std::sqrt(static_cast<double>(count));
  for (const auto generator : {zo::generator::philox4x32_10, zo::generator::philox4x32_8}) {
    BOOST_TEST_CONTEXT(zo::generator_name(generator)) {
      const zo::direction_key key{2026, 12, 2, zo::stream::dense, 0, generator};
      const auto v = draw_batches<zo::gaussian_distribution>(key, count);
      BOOST_TEST(std::abs(mean(v)) < 4.5 / sn);
      BOOST_TEST(std::abs(variance(v) - 1) < 4.5 * std::sqrt(2.0) / sn);
      BOOST_TEST(std::abs(excess_kurtosis(v)) < 4.5 * std::sqrt(24.0) / sn);
      BOOST_TEST(ks_statistic(v) < 1.95 / sn);
      for (const std::size_t lag : {1, 16, 64})
        BOOST_TEST(std::abs(lag_correlation(v, lag)) < 4.5 / sn, "lag " << lag);
      auto next_block = key, next_step = key, next_sample = key;
      next_block.block += 1;
      next_step.step += 1;
      next_sample.sample += 1;
      for (const auto& other : {next_block, next_step, next_sample}) {
        const auto w = draw_batches<zo::gaussian_distribution>(other, count);
        BOOST_TEST(std::abs(correlation(v, w)) < 4.5 / sn);
      }
      const auto signs = draw_batches<zo::rademacher_distribution>(key, count);
      BOOST_TEST(std::abs(mean(signs)) < 4.5 / sn);
      for (const std::size_t lag : {1, 16, 32, 64, 128})
        BOOST_TEST(std::abs(lag_correlation(signs, lag)) < 4.5 / sn, "sign lag " << lag);
      BOOST_TEST(std::abs(correlation(signs, draw_batches<zo::rademacher_distribution>(
                                                 next_step, count))) < 4.5 / sn);
    }
  }
}
