// SPDX-License-Identifier: Apache-2.0
// Keyed random directions: every element of every direction is a pure function of
// (seed, step, block id, stream, sample, element index), so it can be regenerated alone, in any
// order, by any thread, on any backend, with the same bits (docs/index.md, "Reproducibility",
// gives the layout of the key and counter words).
#pragma once

#include <Random123/philox.h>
#include <math.h>
#include <Random123/uniform.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <type_traits>

#include "zo/config.hpp"

// Vector kernels for host passes, one header per instruction set in zo/random/arch/, picked by the
// compiler's target macros: the widest set the target has wins. They compute what the portable
// loops below compute, bit for bit, so the choice changes speed only; device code and targets
// without them run the portable loops. ZO_RANDOM_PHILOX_ISA and ZO_RANDOM_SQRT_ISA name the
// namespaces (zo::detail::<isa>) in use, and are left undefined where the portable loop runs.
#if !defined(__CUDA_ARCH__)
#if defined(__AVX512F__)
#include "zo/random/arch/avx512.hpp"
#define ZO_RANDOM_PHILOX_ISA avx512
#define ZO_RANDOM_SQRT_ISA avx512
#elif defined(__AVX2__)
#include "zo/random/arch/avx.hpp"
#include "zo/random/arch/avx2.hpp"
#define ZO_RANDOM_PHILOX_ISA avx2
#define ZO_RANDOM_SQRT_ISA avx
#elif defined(__AVX__)
#include "zo/random/arch/avx.hpp"
#define ZO_RANDOM_SQRT_ISA avx
#elif defined(__SSE2__)
#include "zo/random/arch/sse2.hpp"
#define ZO_RANDOM_SQRT_ISA sse2
#endif
#endif

namespace zo {

// Separate streams keep U, V and dense z statistically independent even when they share every
// other key field: this is what fixes the reference LOZO defect where U was regenerated from a
// different position of one shared stream.
enum class stream : std::uint8_t {
  dense = 0,
  low_rank_u = 1,
  low_rank_v = 2,
  mask = 3,
  // The random words of stochastic rounding to a 16-bit element type (zo/core/float16.hpp).
  rounding = 4,
};

// The keyed generator that turns a direction's key and counter into its entries. It is part of
// a run's identity, as the seed is: trajectory logs and optimizer states name it, and a run
// replays or resumes with the generator it was recorded with. Both draw Gaussian entries by
// Box-Muller and lay elements out alike (group_of, word_of); they differ in Philox's rounds and
// in how Rademacher entries take their signs.
enum class generator : std::uint8_t {
  // zo 0.1: Philox4x32-10; a Rademacher entry is the low bit of one 32-bit word, four per call.
  philox4x32_10 = 1,
  // Philox4x32-8, the fewest rounds Random123's authors know no statistical flaw for (their
  // header leaves "a cloud" over 7); a Rademacher entry is one of a call's 128 bits.
  philox4x32_8 = 2,
};
// What a new run uses: the faster generator (docs/benchmarks.md measures both).
inline constexpr generator default_generator = generator::philox4x32_8;

// The names logs, states and messages use.
inline constexpr const char* generator_name(generator g) {
  return g == generator::philox4x32_10  ? "philox4x32-10"
         : g == generator::philox4x32_8 ? "philox4x32-8"
                                        : "unknown";
}
inline constexpr bool known_generator(std::uint8_t code) {
  return code == static_cast<std::uint8_t>(generator::philox4x32_10) ||
         code == static_cast<std::uint8_t>(generator::philox4x32_8);
}
// The generator a name (generator_name's) stands for, for command lines and configurations.
inline std::optional<generator> generator_named(std::string_view name) {
  for (const auto g : {generator::philox4x32_10, generator::philox4x32_8}) {
    if (name == generator_name(g)) return g;
  }
  return std::nullopt;
}

// Identifies one direction of one block. Philox4x32 has a 64-bit key and a 128-bit counter;
// the seed is the key and the remaining fields share the counter with the element index, so
// distinct (step, block, stream, sample, index) tuples always reach distinct counters.
struct direction_key {
  std::uint64_t seed = 0;
  std::uint32_t step = 0;
  std::uint32_t block = 0;
  zo::stream stream = zo::stream::dense;
  std::uint8_t sample = 0;
  zo::generator generator = default_generator;
};

// Largest element index a key can address: 48 bits of the counter hold it.
inline constexpr std::uint64_t max_elements_per_block = std::uint64_t{1} << 48;
// Largest number of samples per step a key can distinguish (n-SPSA's q).
inline constexpr std::size_t max_samples_per_step = 256;

// One Philox call (a group) yields 128 bits: four 32-bit words, which make two Box-Muller pairs
// (four normals) or four sign bits, so four elements cost one call. Which elements a group's
// words become is fixed by group_of / word_of below.
inline constexpr std::size_t group_width = 4;

namespace detail {
template <unsigned Rounds>
ZO_HOST_DEVICE inline r123::Philox4x32::ctr_type philox_words_rounds(const direction_key& key,
                                                                     std::uint64_t group) {
  using philox = r123::Philox4x32_R<Rounds>;
  typename philox::key_type k = {
      {static_cast<std::uint32_t>(key.seed), static_cast<std::uint32_t>(key.seed >> 32)}};
  typename philox::ctr_type c = {{static_cast<std::uint32_t>(group),
                                  static_cast<std::uint32_t>((group >> 32) & 0xffffu) |
                                      (static_cast<std::uint32_t>(key.stream) << 16) |
                                      (static_cast<std::uint32_t>(key.sample) << 24),
                                  key.block, key.step}};
  return philox{}(c, k);
}
}  // namespace detail

// The four words of Philox counter `group` under the key, with the key's generator's rounds.
ZO_HOST_DEVICE inline r123::Philox4x32::ctr_type philox_words(const direction_key& key,
                                                              std::uint64_t group) {
  return key.generator == generator::philox4x32_10 ? detail::philox_words_rounds<10>(key, group)
                                                   : detail::philox_words_rounds<8>(key, group);
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
// words to floats, the functions above for ln and sin/cos (libm's would not vectorise, and
// differ between host and device), and the correctly rounded square root every platform has.
ZO_HOST_DEVICE inline float box_muller_radius_squared(std::uint32_t u1) {
  return -2.f * detail::log_unit(r123::u01<float>(u1));  // u01 is never 0
}
ZO_HOST_DEVICE inline void box_muller(std::uint32_t u0, std::uint32_t u1, float& x, float& y) {
  const float radius = sqrtf(box_muller_radius_squared(u1));
  detail::sincos_pi(r123::uneg11<float>(u0), x, y);  // angle in (-1, 1)
  x *= radius;
  y *= radius;
}

// Groups a host pass generates together: sixteen Philox counters side by side (64 normals)
// give the vectoriser whole registers of every width up to 512 bits and stay in L1.
inline constexpr std::size_t batch_groups = 16;
inline constexpr std::size_t batch_width = batch_groups * group_width;

// Batches a host pass generates at a time (add_scaled_direction_run): their Philox counters run
// side by side (two AVX-512 registers, four AVX2 ones), whose chains of dependent multiplies
// interleave. Four generate faster still on their own, but made the exact-restore passes slower
// (docs/benchmarks.md).
inline constexpr std::size_t run_batches = 2;

// Where each element's value comes from. Elements form batches of 64; element r of batch b is
// word r / 16 of the Philox group 16·b + r mod 16. So a batch is the four words of 16
// consecutive counters, word by word: generated side by side, they land in element order
// without a transposition, and on a device the threads of a warp, one group each, touch
// consecutive elements.
ZO_HOST_DEVICE constexpr std::uint64_t group_of(std::uint64_t element) {
  return element / batch_width * batch_groups + element % batch_groups;
}
ZO_HOST_DEVICE constexpr std::size_t word_of(std::uint64_t element) {
  return static_cast<std::size_t>(element % batch_width / batch_groups);
}
ZO_HOST_DEVICE constexpr std::uint64_t element_of(std::uint64_t group, std::size_t word) {
  return group / batch_groups * batch_width + word * batch_groups + group % batch_groups;
}
// How many of a group's four words lie inside a block of n elements, the group's first word
// being element first < n (the others follow batch_groups apart).
ZO_HOST_DEVICE constexpr std::size_t words_inside(std::uint64_t first, std::uint64_t n) {
  const std::uint64_t remaining = (n - first + batch_groups - 1) / batch_groups;
  return static_cast<std::size_t>(remaining < group_width ? remaining : group_width);
}
// Groups that cover elements [0, n): whole batches, so every group maps inside a batch.
ZO_HOST_DEVICE constexpr std::uint64_t groups_for(std::uint64_t n) {
  return (n + batch_width - 1) / batch_width * batch_groups;
}

namespace detail {

// Philox4x32-Rounds on Groups consecutive counters at once (whole batches, from a multiple of
// Groups on), written lane-wise (structure of arrays) so the multiplies become vector multiplies.
// Equal word for word to Random123's Philox4x32_R (tests/test_random.cpp checks), which
// processes one counter per call. Each round runs over every register of lanes
// before the next round starts: the rounds of one register are a chain of dependent multiplies,
// and interleaving the registers' chains keeps the multiplier busy (1.6× on AVX2 against one
// register's ten rounds after another's).
template <unsigned Rounds, std::size_t Groups>
inline void philox_batch_rounds(const direction_key& key, std::uint64_t first_group,
                                std::uint32_t (&words)[4][Groups]) {
  static_assert(Groups % batch_groups == 0 && std::has_single_bit(Groups),
                "zo: Philox batches cover whole batches, a power of two of groups");
  std::uint32_t(&c0)[Groups] = words[0];
  std::uint32_t(&c1)[Groups] = words[1];
  std::uint32_t(&c2)[Groups] = words[2];
  std::uint32_t(&c3)[Groups] = words[3];
  // first_group is a multiple of Groups, a power of two, so the counters share their upper 32
  // bits and their low words count up without a carry.
  const auto first_low = static_cast<std::uint32_t>(first_group);
  const std::uint32_t high = static_cast<std::uint32_t>((first_group >> 32) & 0xffffu) |
                             (static_cast<std::uint32_t>(key.stream) << 16) |
                             (static_cast<std::uint32_t>(key.sample) << 24);
  for (std::size_t l = 0; l < Groups; ++l) {
    c0[l] = first_low + static_cast<std::uint32_t>(l);
    c1[l] = high;
    c2[l] = key.block;
    c3[l] = key.step;
  }
  std::uint32_t k0 = static_cast<std::uint32_t>(key.seed);
  std::uint32_t k1 = static_cast<std::uint32_t>(key.seed >> 32);
#if defined(ZO_RANDOM_PHILOX_ISA)
  namespace isa = ZO_RANDOM_PHILOX_ISA;
  using lanes = isa::philox_lanes;
  constexpr std::size_t sets = Groups / isa::philox_width;
  static_assert(sets * isa::philox_width == Groups,
                "zo: a batch must fill whole registers of Philox lanes");
  const lanes m0 = isa::philox_set(0xD2511F53u), m1 = isa::philox_set(0xCD9E8D57u);
  lanes x0[sets], x1[sets], x2[sets], x3[sets];
  for (std::size_t s = 0; s < sets; ++s) {
    const std::size_t first = s * isa::philox_width;
    x0[s] = isa::philox_load(c0 + first);
    x1[s] = isa::philox_load(c1 + first);
    x2[s] = isa::philox_load(c2 + first);
    x3[s] = isa::philox_load(c3 + first);
  }
  for (unsigned round = 0; round < Rounds; ++round) {
    const lanes key0 = isa::philox_set(k0), key1 = isa::philox_set(k1);
    for (std::size_t s = 0; s < sets; ++s) {
      lanes hi0, lo0, hi1, lo1;
      isa::philox_mulhilo(m0, x0[s], hi0, lo0);
      isa::philox_mulhilo(m1, x2[s], hi1, lo1);
      x0[s] = isa::philox_xor3(hi1, x1[s], key0);
      x1[s] = lo1;
      x2[s] = isa::philox_xor3(hi0, x3[s], key1);
      x3[s] = lo0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (std::size_t s = 0; s < sets; ++s) {
    const std::size_t first = s * isa::philox_width;
    isa::philox_store(c0 + first, x0[s]);
    isa::philox_store(c1 + first, x1[s]);
    isa::philox_store(c2 + first, x2[s]);
    isa::philox_store(c3 + first, x3[s]);
  }
#else
  for (unsigned round = 0; round < Rounds; ++round) {
#if defined(_OPENMP)
#pragma omp simd
#endif
    for (std::size_t l = 0; l < Groups; ++l) {
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
#endif
}

// The words of Groups consecutive counters with the key's generator's rounds.
template <std::size_t Groups>
inline void philox_batch(const direction_key& key, std::uint64_t first_group,
                         std::uint32_t (&words)[4][Groups]) {
  if (key.generator == generator::philox4x32_10) {
    philox_batch_rounds<10>(key, first_group, words);
  } else {
    philox_batch_rounds<8>(key, first_group, words);
  }
}

// x ← √x for Count floats, correctly rounded like sqrtf, with vector instructions where the
// target has them (a loop calling sqrtf does not vectorise: it may set errno). Box-Muller's
// radii here, HiZOO's Σ^{1/2} in zo/perturbations/hessian_scaled.hpp (as zo::sqrt_in_place).
template <std::size_t Count>
inline void sqrt_in_place(float (&x)[Count]) {
#if defined(ZO_RANDOM_SQRT_ISA)
  namespace isa = ZO_RANDOM_SQRT_ISA;
  constexpr std::size_t width = isa::sqrt_width;
  for (std::size_t i = 0; i + width <= Count; i += width)
    isa::sqrt_lanes(x + i);
#else
  constexpr std::size_t width = 1;
#endif
  if constexpr (Count % width != 0 || width == 1) {
    for (std::size_t i = Count - Count % width; i < Count; ++i)
      x[i] = sqrtf(x[i]);
  }
}

}  // namespace detail

using detail::sqrt_in_place;

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

  // The batch of elements starting at group first_group (a multiple of batch_groups), in
  // element order: out[w·16 + l] is word w of group first_group + l. The same values as group().
  template <class T>
  static void batch(const direction_key& key, std::uint64_t first_group, T (&out)[batch_width]) {
    batches<1>(key, first_group, out);
  }

  // value[k] += alpha·z[k], k < Batches·batch_width, over the batches from first_group (a
  // multiple of Batches·batch_groups) on: their Philox counters run side by side, several
  // registers of lanes whose chains of multiplies interleave.
  template <std::size_t Batches, class T>
  static void add_batches(const direction_key& key, std::uint64_t first_group, T alpha, T* value) {
    T z[Batches * batch_width];
    batches<Batches>(key, first_group, z);
    for (std::size_t k = 0; k < Batches * batch_width; ++k)
      value[k] += alpha * z[k];
  }

  // Batches consecutive batches at once (Batches a power of two, first_group a multiple of
  // Batches·batch_groups), in element order.
  template <std::size_t Batches, class T>
  static void batches(const direction_key& key, std::uint64_t first_group,
                      T (&out)[Batches * batch_width]) {
    constexpr std::size_t groups = Batches * batch_groups;
    std::uint32_t w[4][groups];
    detail::philox_batch(key, first_group, w);
    float radius[2 * groups];
    for (std::size_t l = 0; l < groups; ++l) {
      radius[l] = box_muller_radius_squared(w[1][l]);
      radius[groups + l] = box_muller_radius_squared(w[3][l]);
    }
    detail::sqrt_in_place(radius);
    for (std::size_t b = 0; b < Batches; ++b) {
      T* batch_out = out + b * batch_width;
      for (std::size_t i = 0; i < batch_groups; ++i) {
        const std::size_t l = b * batch_groups + i;
        float s0, c0, s1, c1;
        detail::sincos_pi(r123::uneg11<float>(w[0][l]), s0, c0);
        detail::sincos_pi(r123::uneg11<float>(w[2][l]), s1, c1);
        batch_out[i] = static_cast<T>(s0 * radius[l]);
        batch_out[batch_groups + i] = static_cast<T>(c0 * radius[l]);
        batch_out[2 * batch_groups + i] = static_cast<T>(s1 * radius[groups + l]);
        batch_out[3 * batch_groups + i] = static_cast<T>(c1 * radius[groups + l]);
      }
    }
  }
};

namespace detail {
// value[k] += alpha·z[k] for the entries of the Batches batches from first_group on, generated
// with batch().
template <std::size_t Batches, class Distribution, class T>
inline void add_scaled_batches(const direction_key& key, std::uint64_t first_group, T alpha,
                               T* value) {
  for (std::size_t b = 0; b < Batches; ++b) {
    T z[batch_width];
    Distribution::batch(key, first_group + b * batch_groups, z);
    for (std::size_t k = 0; k < batch_width; ++k)
      value[b * batch_width + k] += alpha * z[k];
  }
}
}  // namespace detail

// Rademacher ±1 entries (SPSA). A sign needs one bit, and how many a Philox call gives depends
// on the generator: philox4x32-10 takes the low bit of each word, in the Gaussian layout, so four
// signs cost a call; philox4x32-8 takes all 128 bits, so that generating costs little next to the
// memory traffic of a pass. There element e is bit e mod 32 of word (e mod 128) / 32 of counter
// e / 128: a batch of 64 elements is two words of one call.
struct rademacher_distribution {
  static constexpr std::size_t signs_per_call = 128;

  template <class T>
  ZO_HOST_DEVICE static void group(const direction_key& key, std::uint64_t g,
                                   T (&out)[group_width]) {
    if (key.generator == generator::philox4x32_10) {
      const auto w = philox_words(key, g);
      for (std::size_t lane = 0; lane < group_width; ++lane)
        out[lane] = sign<T>(w[lane], 0);
      return;
    }
    const auto w = philox_words(key, element_of(g, 0) / signs_per_call);
    for (std::size_t lane = 0; lane < group_width; ++lane) {
      const std::uint64_t bit = element_of(g, lane) % signs_per_call;
      out[lane] = sign<T>(w[bit / 32], static_cast<unsigned>(bit % 32));
    }
  }

  template <class T>
  static void batch(const direction_key& key, std::uint64_t first_group, T (&out)[batch_width]) {
    if (key.generator == generator::philox4x32_10) {
      std::uint32_t w[4][batch_groups];
      detail::philox_batch(key, first_group, w);
      for (std::size_t word = 0; word < group_width; ++word) {
        for (std::size_t l = 0; l < batch_groups; ++l)
          out[word * batch_groups + l] = sign<T>(w[word][l], 0);
      }
      return;
    }
    const std::uint64_t first = element_of(first_group, 0);
    const auto w = philox_words(key, first / signs_per_call);
    const std::size_t first_word = first % signs_per_call / 32;
    for (std::size_t word = 0; word < batch_width / 32; ++word) {
      const std::uint32_t bits = w[first_word + word];
      for (unsigned bit = 0; bit < 32; ++bit)
        out[word * 32 + bit] = sign<T>(bits, bit);
    }
  }

  // value[k] += alpha·z[k], k < Batches·batch_width, over the batches from first_group (a
  // multiple of Batches·batch_groups) on, Batches even. With philox4x32-8 each two batches' 128
  // signs are one call's bits, and each is added as alpha with its sign bit flipped where the
  // sign is −1: the sum alpha·z[k] would round to, without storing the ±1s.
  template <std::size_t Batches, class T>
  static void add_batches(const direction_key& key, std::uint64_t first_group, T alpha, T* value) {
    if (key.generator == generator::philox4x32_10) {
      detail::add_scaled_batches<Batches, rademacher_distribution>(key, first_group, alpha, value);
      return;
    }
    static_assert(2 * batch_width == signs_per_call && Batches % 2 == 0,
                  "zo: philox4x32-8's signs come 128 (two batches) per Philox call");
    using bits_type = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr unsigned sign_bit = 8 * sizeof(T) - 1;
    const auto alpha_bits = std::bit_cast<bits_type>(alpha);
    const std::uint64_t first_call = element_of(first_group, 0) / signs_per_call;
    for (std::size_t call = 0; call < Batches / 2; ++call) {
      const auto w = philox_words(key, first_call + call);
      for (std::size_t word = 0; word < 4; ++word) {
        const std::uint32_t negative = ~w[word];
        T* out = value + call * signs_per_call + word * 32;
        for (unsigned bit = 0; bit < 32; ++bit) {
          const auto flip = static_cast<bits_type>((negative >> bit) & 1u) << sign_bit;
          out[bit] += std::bit_cast<T>(static_cast<bits_type>(alpha_bits ^ flip));
        }
      }
    }
  }

 private:
  template <class T>
  ZO_HOST_DEVICE static T sign(std::uint32_t word, unsigned bit) {
    return ((word >> bit) & 1u) ? T(1) : T(-1);
  }
};

// value[l] += alpha·z[l] for the entries z of one group.
template <class Distribution, class T>
ZO_HOST_DEVICE inline void add_scaled_direction(const direction_key& key, std::uint64_t g, T alpha,
                                                T* value) {
  T z[group_width];
  Distribution::group(key, g, z);
  for (std::size_t l = 0; l < group_width; ++l)
    value[l] += alpha * z[l];
}

// value[k] += alpha·z[k] for the entries of Batches consecutive batches (a run of a host pass),
// from group first_group (a multiple of Batches·batch_groups) on, in element order: with the
// values batch() gives, batch by batch, unless the distribution adds the run itself
// (add_batches: Gaussian batches whose Philox counters run side by side, philox4x32-8's
// Rademacher signs, 128 from one Philox call).
template <std::size_t Batches, class Distribution, class T>
inline void add_scaled_direction_run(const direction_key& key, std::uint64_t first_group, T alpha,
                                     T* value) {
  if constexpr (requires {
                  Distribution::template add_batches<Batches>(key, first_group, alpha, value);
                }) {
    Distribution::template add_batches<Batches>(key, first_group, alpha, value);
  } else {
    detail::add_scaled_batches<Batches, Distribution>(key, first_group, alpha, value);
  }
}

// One element regenerated on its own; equal bit for bit to the same element of a whole pass.
template <class Distribution, class T = float>
ZO_HOST_DEVICE inline T direction_element(const direction_key& key, std::uint64_t index) {
  T values[group_width];
  Distribution::group(key, group_of(index), values);
  return values[word_of(index)];
}

}  // namespace zo
