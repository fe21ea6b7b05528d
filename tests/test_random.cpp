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
