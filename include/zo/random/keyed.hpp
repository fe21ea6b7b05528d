// Keyed random directions: every element of every direction is a pure function of
// (seed, step, block id, stream, sample, element index), so it can be regenerated alone, in any
// order, by any thread, on any backend, with the same bits (DESIGN.md §2, "Random directions").
#pragma once

#include <Random123/philox.h>
#include <math.h>
#include <Random123/uniform.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "zo/config.hpp"

namespace zo {

// Separate streams keep U, V and dense z statistically independent even when they share every
// other key field: this is what fixes the reference LOZO defect where U was regenerated from a
// different position of one shared stream.
enum class stream : std::uint8_t {
  dense = 0,
  low_rank_u = 1,
  low_rank_v = 2,
  mask = 3,
};

// Identifies one direction of one block. Philox4x32-10 has a 64-bit key and a 128-bit counter;
// the seed is the key and the remaining fields share the counter with the element index, so
// distinct (step, block, stream, sample, index) tuples always reach distinct counters.
struct direction_key {
  std::uint64_t seed = 0;
  std::uint32_t step = 0;
  std::uint32_t block = 0;
  zo::stream stream = zo::stream::dense;
  std::uint8_t sample = 0;
};

// Largest element index a key can address: 48 bits of the counter hold it.
inline constexpr std::uint64_t max_elements_per_block = std::uint64_t{1} << 48;
// Largest number of samples per step a key can distinguish (n-SPSA's q).
inline constexpr std::size_t max_samples_per_step = 256;

// Elements of one direction come in groups of four: one Philox call yields 128 bits, which is
// two Box-Muller pairs (four normals) or four sign bits, so a group costs one call.
inline constexpr std::size_t group_width = 4;

ZO_HOST_DEVICE inline r123::Philox4x32::ctr_type philox_words(const direction_key& key,
                                                              std::uint64_t group) {
  using philox = r123::Philox4x32;
  philox::key_type k = {
      {static_cast<std::uint32_t>(key.seed), static_cast<std::uint32_t>(key.seed >> 32)}};
  philox::ctr_type c = {{static_cast<std::uint32_t>(group),
                         static_cast<std::uint32_t>((group >> 32) & 0xffffu) |
                             (static_cast<std::uint32_t>(key.stream) << 16) |
                             (static_cast<std::uint32_t>(key.sample) << 24),
                         key.block, key.step}};
  return philox{}(c, k);
}

namespace detail {

// Bit casts that compile for host and device alike (std::bit_cast is not device code).
ZO_HOST_DEVICE inline std::uint32_t bit_cast_u32(float value) {
  std::uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  return bits;
}
ZO_HOST_DEVICE inline float bit_cast_f32(std::uint32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

// ln(u) for u in (0, 1], the u01 outputs Box-Muller feeds it (never 0, never subnormal). Cephes'
// logf: split u = m·2^e with m in [√½, √2), then a degree-9 polynomial in m − 1; about 1 ulp.
// Written without calls or table lookups so that a loop of them vectorises (libm's logf does
// not), and the same on every backend.
ZO_HOST_DEVICE inline float log_unit(float u) {
  const std::uint32_t bits = bit_cast_u32(u);
  const std::uint32_t mantissa = bits & 0x007fffffu;
  // Integer arithmetic only: compilers do not speculate floating-point operations that may trap,
  // so a conditional one would keep the loop from vectorising. low: m < √½, so m is doubled.
  const std::uint32_t low = mantissa < 0x003504f3u ? 1u : 0u;
  const float e = static_cast<float>(static_cast<std::int32_t>((bits >> 23) - low) - 126);
  const float x = bit_cast_f32(mantissa | (0x3f000000u + (low << 23))) - 1.f;
  const float z = x * x;
  float y = 7.0376836292e-2f;
  y = y * x - 1.1514610310e-1f;
  y = y * x + 1.1676998740e-1f;
  y = y * x - 1.2420140846e-1f;
  y = y * x + 1.4249322787e-1f;
  y = y * x - 1.6668057665e-1f;
  y = y * x + 2.0000714765e-1f;
  y = y * x - 2.4999993993e-1f;
  y = y * x + 3.3333331174e-1f;
  y = y * x * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return x + y + 0.693359375f * e;
}

// √x for x in [0, 46], the range of −2·ln(u01): a reciprocal square root from the exponent bits,
// two Newton steps (relative error < 5e-6) and one Heron correction of x·r (within an ulp).
// libm's sqrtf would do, but it may set errno, which keeps compilers from vectorising the loop.
ZO_HOST_DEVICE inline float sqrt_radius(float x) {
  float r = bit_cast_f32(0x5f375a86u - (bit_cast_u32(x) >> 1));
  r = r * (1.5f - 0.5f * x * r * r);
  r = r * (1.5f - 0.5f * x * r * r);
  const float s = x * r;
  return s + 0.5f * r * (x - s * s);
}

// sin(πa) and cos(πa) for a in [-1, 1]: a = j/2 + r with |r| ≤ ¼ (exact in float), Cephes'
// minimax polynomials on [-π/4, π/4], then the quarter-turn j. Branch-free for the vectoriser.
ZO_HOST_DEVICE inline void sincos_pi(float a, float& sine, float& cosine) {
  const float twice = a + a;
  // Rounds to nearest by truncating |2a| + ½ with 2a's sign (copysign, not a comparison, which
  // could trap and so would not vectorise).
  const auto j = static_cast<std::int32_t>(twice + copysignf(0.5f, twice));
  const float x = 3.14159265358979f * (a - 0.5f * static_cast<float>(j));
  const float z = x * x;
  const float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * x + x;
  const float c =
      ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z -
      0.5f * z + 1.f;
  // Quarter turns: 1 maps (sin, cos) to (cos, −sin), 2 to (−sin, −cos), 3 to (−cos, sin).
  const auto quarter = static_cast<std::uint32_t>(j) & 3u;
  const std::uint32_t odd = 0u - (quarter & 1u);  // all ones on odd quarter turns
  const std::uint32_t s_bits = bit_cast_u32(s), c_bits = bit_cast_u32(c);
  const std::uint32_t sin_r = (c_bits & odd) | (s_bits & ~odd);
  const std::uint32_t cos_r = (s_bits & odd) | (c_bits & ~odd);
  sine = bit_cast_f32(sin_r ^ ((quarter >> 1) << 31));
  cosine = bit_cast_f32(cos_r ^ ((((quarter + 1u) >> 1) & 1u) << 31));
}

}  // namespace detail

// Two N(0, 1) numbers from two 32-bit words (Box-Muller) with Random123's conversions of the
// words to floats, and the transcendental functions above in place of libm's, so that a batch of
// them vectorises and every backend runs the same arithmetic.
ZO_HOST_DEVICE inline void box_muller(std::uint32_t u0, std::uint32_t u1, float& x, float& y) {
  const float angle = r123::uneg11<float>(u0);  // in (-1, 1)
  const float radius = detail::sqrt_radius(-2.f * detail::log_unit(r123::u01<float>(u1)));
  detail::sincos_pi(angle, x, y);
  x *= radius;
  y *= radius;
}

// Groups a host pass generates together: sixteen Philox counters side by side (64 normals)
// give the vectoriser whole registers of every width up to 512 bits and stay in L1.
inline constexpr std::size_t batch_groups = 16;
inline constexpr std::size_t batch_width = batch_groups * group_width;

namespace detail {

// Philox4x32-10 on batch_groups consecutive counters at once, written lane-wise (structure of
// arrays) so the 32 × 32 → 64-bit multiplies become vector multiplies. Equal word for word to
// Random123's philox4x32 (tests/test_random.cpp checks), which processes one counter per call.
inline void philox_batch(const direction_key& key, std::uint64_t first_group,
                         std::uint32_t (&words)[4][batch_groups]) {
  std::uint32_t c0[batch_groups], c1[batch_groups], c2[batch_groups], c3[batch_groups];
  const std::uint32_t high = (static_cast<std::uint32_t>(key.stream) << 16) |
                             (static_cast<std::uint32_t>(key.sample) << 24);
  for (std::size_t l = 0; l < batch_groups; ++l) {
    const std::uint64_t g = first_group + l;
    c0[l] = static_cast<std::uint32_t>(g);
    c1[l] = static_cast<std::uint32_t>((g >> 32) & 0xffffu) | high;
    c2[l] = key.block;
    c3[l] = key.step;
  }
  std::uint32_t k0 = static_cast<std::uint32_t>(key.seed);
  std::uint32_t k1 = static_cast<std::uint32_t>(key.seed >> 32);
  for (int round = 0; round < 10; ++round) {
#if defined(_OPENMP)
#pragma omp simd
#endif
    for (std::size_t l = 0; l < batch_groups; ++l) {
      const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * c0[l];
      const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * c2[l];
      const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
      const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
      c0[l] = hi1 ^ c1[l] ^ k0;
      c1[l] = lo1;
      c2[l] = hi0 ^ c3[l] ^ k1;
      c3[l] = lo0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (std::size_t l = 0; l < batch_groups; ++l) {
    words[0][l] = c0[l];
    words[1][l] = c1[l];
    words[2][l] = c2[l];
    words[3][l] = c3[l];
  }
}

}  // namespace detail

// Standard normal N(0, 1) entries. The transform runs in float for every element type so that
// float and double stores see the same direction (rounded to their own precision).
struct gaussian_distribution {
  template <class T>
  ZO_HOST_DEVICE static void group(const direction_key& key, std::uint64_t g,
                                   T (&out)[group_width]) {
    const auto w = philox_words(key, g);
    float z[group_width];
    box_muller(w[0], w[1], z[0], z[1]);
    box_muller(w[2], w[3], z[2], z[3]);
    for (std::size_t l = 0; l < group_width; ++l)
      out[l] = static_cast<T>(z[l]);
  }

  // Groups first_group … first_group + batch_groups − 1, element (g, lane) at
  // out[(g − first_group)·group_width + lane]: the same values as group(), vectorised.
  template <class T>
  static void batch(const direction_key& key, std::uint64_t first_group, T (&out)[batch_width]) {
    std::uint32_t w[4][batch_groups];
    detail::philox_batch(key, first_group, w);
    float z[4][batch_groups];
#if defined(_OPENMP)
#pragma omp simd
#endif
    for (std::size_t l = 0; l < batch_groups; ++l) {
      box_muller(w[0][l], w[1][l], z[0][l], z[1][l]);
      box_muller(w[2][l], w[3][l], z[2][l], z[3][l]);
    }
    for (std::size_t l = 0; l < batch_groups; ++l) {
      for (std::size_t lane = 0; lane < group_width; ++lane)
        out[l * group_width + lane] = static_cast<T>(z[lane][l]);
    }
  }
};

// Rademacher ±1 entries (SPSA), one bit per element from the same call layout.
struct rademacher_distribution {
  template <class T>
  ZO_HOST_DEVICE static void group(const direction_key& key, std::uint64_t g,
                                   T (&out)[group_width]) {
    const auto w = philox_words(key, g);
    for (std::size_t lane = 0; lane < group_width; ++lane) {
      out[lane] = (w[lane] & 1u) ? T(1) : T(-1);
    }
  }

  template <class T>
  static void batch(const direction_key& key, std::uint64_t first_group, T (&out)[batch_width]) {
    std::uint32_t w[4][batch_groups];
    detail::philox_batch(key, first_group, w);
    for (std::size_t l = 0; l < batch_groups; ++l) {
      for (std::size_t lane = 0; lane < group_width; ++lane)
        out[l * group_width + lane] = (w[lane][l] & 1u) ? T(1) : T(-1);
    }
  }
};

// One element regenerated on its own; equal bit for bit to the same element of a whole pass.
template <class Distribution, class T = float>
ZO_HOST_DEVICE inline T direction_element(const direction_key& key, std::uint64_t index) {
  T values[group_width];
  Distribution::group(key, index / group_width, values);
  return values[index % group_width];
}

}  // namespace zo
