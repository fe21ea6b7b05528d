// SPDX-License-Identifier: Apache-2.0
// The 16-bit element types, bfloat16 and float16, and how a pass moves between them and the
// float it computes in.
//
// Each is its 16 bits and nothing else: the layout of PyTorch's at::BFloat16 / at::Half, of
// Eigen's bfloat16 / half and of safetensors' BF16 / F16, so framework-owned memory is wrapped
// without a copy. They have no arithmetic: a pass widens to float (exactly), computes, and
// narrows once when it stores, either to the nearest value (ties to even) or stochastically,
// rounding up with probability equal to the distance from the value below, so that the expected
// stored value is the float one (docs/precision.md).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "zo/config.hpp"

namespace zo {

struct bfloat16 {
  std::uint16_t bits = 0;
};
struct float16 {
  std::uint16_t bits = 0;
};

static_assert(sizeof(bfloat16) == 2 && std::is_trivially_copyable_v<bfloat16> &&
                  std::is_standard_layout_v<bfloat16>,
              "zo: bfloat16 must be exactly its 16 bits");
static_assert(sizeof(float16) == 2 && std::is_trivially_copyable_v<float16> &&
                  std::is_standard_layout_v<float16>,
              "zo: float16 must be exactly its 16 bits");

// Whether an element type is stored in 16 bits and computed in float.
template <class T>
inline constexpr bool is_16bit = std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>;

// The type a pass computes in for elements of type T: float for the 16-bit types, T otherwise.
template <class T>
using compute_t = std::conditional_t<is_16bit<T>, float, T>;

// The largest finite value of an element type.
template <class T>
constexpr double largest_finite() {
  if constexpr (std::is_same_v<T, bfloat16>) {
    return 3.3895313892515355e38;  // (2 − 2^−7)·2^127
  } else if constexpr (std::is_same_v<T, float16>) {
    return 65504.0;  // (2 − 2^−10)·2^15
  } else {
    return static_cast<double>(std::numeric_limits<T>::max());
  }
}

namespace detail {
ZO_HOST_DEVICE inline std::uint32_t float_bits(float value) {
  std::uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  return bits;
}
ZO_HOST_DEVICE inline float bits_float(std::uint32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}
}  // namespace detail

// ---- Widening: exact ----------------------------------------------------------------------------
template <class T>
ZO_HOST_DEVICE inline T widen(T x) {
  return x;
}
ZO_HOST_DEVICE inline float widen(bfloat16 x) {
  return detail::bits_float(std::uint32_t{x.bits} << 16);
}
ZO_HOST_DEVICE inline float widen(float16 x) {
  const std::uint32_t sign = std::uint32_t{x.bits & 0x8000u} << 16;
  const std::uint32_t exponent = (x.bits >> 10) & 0x1fu;
  const std::uint32_t mantissa = x.bits & 0x3ffu;
  // Every case is computed and one is selected, so that a loop of these vectorises.
  const std::uint32_t normal = sign | ((exponent + 112) << 23) | (mantissa << 13);
  const std::uint32_t special = sign | 0x7f800000u | (mantissa << 13);  // infinity or NaN
  // Zero or subnormal: mantissa · 2^−24, exact in float.
  const std::uint32_t small =
      sign | detail::float_bits(static_cast<float>(mantissa) * 5.9604644775390625e-8f);
  return detail::bits_float(exponent == 0x1f ? special : exponent == 0 ? small : normal);
}

// ---- Narrowing to the nearest value, ties to even -----------------------------------------------
// Branch-free like widen: the cases are computed side by side and selected.
template <class T>
ZO_HOST_DEVICE inline T round_nearest(compute_t<T> x) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    const std::uint32_t bits = detail::float_bits(x);
    const std::uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const std::uint32_t quiet_nan = (bits >> 16) | 0x40u;  // a NaN stays a (quiet) NaN
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
    return {static_cast<std::uint16_t>(nan ? quiet_nan : rounded)};
  } else if constexpr (std::is_same_v<T, float16>) {
    const std::uint32_t all = detail::float_bits(x);
    const std::uint32_t sign = (all >> 16) & 0x8000u;
    const std::uint32_t bits = all & 0x7fffffffu;
    const std::uint32_t special = bits > 0x7f800000u ? 0x7e00u : 0x7c00u;  // NaN, infinity
    // Below 2^−14 the result is subnormal: adding ½ aligns the 2^−24 steps with the float's
    // last mantissa bit, and the float addition rounds to nearest even.
    const std::uint32_t small = detail::float_bits(detail::bits_float(bits) + 0.5f) - 0x3f000000u;
    // Rebias the exponent (−112 · 2^23) and round half to even.
    const std::uint32_t normal = (bits + 0xc8000fffu + ((bits >> 13) & 1u)) >> 13;
    const std::uint32_t magnitude = bits >= 0x7f800000u   ? special
                                    : bits >= 0x477ff000u ? 0x7c00u  // ≥ 65520: infinity
                                    : bits < 0x38800000u  ? small
                                                          : normal;
    return {static_cast<std::uint16_t>(sign | magnitude)};
  } else {
    return x;
  }
}

// ---- Narrowing stochastically ------------------------------------------------------------------
// x rounds to one of the two values of T around it, the upper one with probability equal to its
// distance from the lower one over their spacing; `random` (a uniform 32-bit word) decides. Its
// expectation is x exactly, wherever T has a finite value on each side (in float16's subnormal
// range, to within 2^−24 of a step). Infinities and NaNs narrow as round_nearest narrows them.
template <class T>
ZO_HOST_DEVICE inline T round_stochastic(compute_t<T> x, std::uint32_t random) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    const std::uint32_t bits = detail::float_bits(x);
    // Adding 16 random bits below the kept ones carries into them with the probability the
    // dropped bits stand for (sign and magnitude: the magnitude rounds, the sign is kept).
    const std::uint32_t rounded = (bits + (random >> 16)) >> 16;
    const bool finite = (bits & 0x7f800000u) != 0x7f800000u;
    return finite ? bfloat16{static_cast<std::uint16_t>(rounded)} : round_nearest<bfloat16>(x);
  } else if constexpr (std::is_same_v<T, float16>) {
    const std::uint32_t bits = detail::float_bits(x);
    const std::uint32_t magnitude = bits & 0x7fffffffu;
    // Subnormal results are steps of 2^−24: |x|·2^24 = whole + fraction, both exact in float
    // (clamped where the result is not subnormal, so that the conversion stays defined).
    const float steps = detail::bits_float(magnitude) * 16777216.0f;
    const float clamped = steps < 2048.0f ? steps : 2048.0f;
    const float whole = static_cast<float>(static_cast<std::int32_t>(clamped));
    const bool up = static_cast<float>(random >> 8) < (clamped - whole) * 16777216.0f;
    const float small = (whole + (up ? 1.0f : 0.0f)) * 5.9604644775390625e-8f;
    // Normal results keep 10 of the float's 23 mantissa bits: 13 random bits are added below.
    const std::uint32_t normal = (magnitude + (random >> 19)) & ~0x1fffu;
    const std::uint32_t rounded = magnitude < 0x38800000u ? detail::float_bits(small) : normal;
    // Exactly representable, or at least 2^16 (infinity), which round_nearest gives too.
    const float16 narrowed =
        round_nearest<float16>(detail::bits_float((bits & 0x80000000u) | rounded));
    return magnitude < 0x7f800000u ? narrowed : round_nearest<float16>(x);
  } else {
    (void)random;
    return x;
  }
}

// How a pass narrows the base point it writes (the point a step's update reaches) to a 16-bit
// element type. Perturbed points are always rounded to nearest: exact restore returns from them
// through the snapshot, so their rounding never reaches the weights.
enum class rounding : std::uint8_t {
  // The update's expected stored value is the float update: an update far below half a unit in
  // the last place still moves the weight in expectation. Keyed like the directions, so a run
  // stays bit for bit reproducible.
  stochastic = 0,
  // Ties to even: an update below half a unit in the last place of a weight is lost.
  nearest = 1,
};

inline constexpr const char* rounding_name(rounding r) {
  return r == rounding::stochastic ? "stochastic" : r == rounding::nearest ? "nearest" : "unknown";
}

}  // namespace zo
