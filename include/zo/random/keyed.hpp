// Keyed random directions: every element of every direction is a pure function of
// (seed, step, block id, stream, sample, element index), so it can be regenerated alone, in any
// order, by any thread, on any backend, with the same bits (DESIGN.md §2, "Random directions").
#pragma once

#include <Random123/philox.h>
#include <math.h>
#include <Random123/uniform.hpp>

#include <cstddef>
#include <cstdint>

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

// Two N(0, 1) numbers from two 32-bit words (Box-Muller), the transform of Random123's
// boxmuller.hpp written out here: that header decides between host and CUDA math by whether CUDA
// headers were included before it, which breaks host builds that include Thrust from the CUDA
// toolkit first. The device's sincospif/logf differ from the host's in the last bits.
ZO_HOST_DEVICE inline void box_muller(std::uint32_t u0, std::uint32_t u1, float& x, float& y) {
  const float angle = r123::uneg11<float>(u0);                    // in (-1, 1)
  const float radius = sqrtf(-2.f * logf(r123::u01<float>(u1)));  // u01 never returns 0
#if defined(__CUDA_ARCH__)
  sincospif(angle, &x, &y);
#else
  sincosf(3.1415926535897932f * angle, &x, &y);
#endif
  x *= radius;
  y *= radius;
}

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
};

// One element regenerated on its own; equal bit for bit to the same element of a whole pass.
template <class Distribution, class T = float>
ZO_HOST_DEVICE inline T direction_element(const direction_key& key, std::uint64_t index) {
  T values[group_width];
  Distribution::group(key, index / group_width, values);
  return values[index % group_width];
}

}  // namespace zo
