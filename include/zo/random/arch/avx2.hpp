// SPDX-License-Identifier: Apache-2.0
// AVX2 kernels of the keyed generator: the Philox lane operations. zo/random/keyed.hpp includes
// this header when the target has AVX2 but not AVX-512F; the square roots come from
// zo/random/arch/avx.hpp.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace zo::detail::avx2 {

using philox_lanes = __m256i;
inline constexpr std::size_t philox_width = sizeof(philox_lanes) / sizeof(std::uint32_t);

inline philox_lanes philox_set(std::uint32_t v) {
  return _mm256_set1_epi32(static_cast<int>(v));
}
inline philox_lanes philox_load(const std::uint32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
inline void philox_store(std::uint32_t* p, philox_lanes v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
}
inline philox_lanes philox_xor3(philox_lanes a, philox_lanes b, philox_lanes c) {
  return _mm256_xor_si256(_mm256_xor_si256(a, b), c);
}

// The 32 × 32 → 64-bit products of Philox on every 32-bit lane: one multiply for the even lanes,
// one for the odd lanes shifted down, then the halves blended back. Compilers given the portable
// loop widen every lane to 64 bits and use a full 64-bit multiply instead, which on x86 costs
// about twice as much.
inline void philox_mulhilo(philox_lanes m, philox_lanes a, philox_lanes& hi, philox_lanes& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

}  // namespace zo::detail::avx2
