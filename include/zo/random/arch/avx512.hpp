// SPDX-License-Identifier: Apache-2.0
// AVX-512F kernels of the keyed generator: the Philox lane operations and the square roots.
// zo/random/keyed.hpp includes this header, and no other of zo/random/arch/, when the target has
// AVX-512F.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace zo::detail::avx512 {

using philox_lanes = __m512i;
inline constexpr std::size_t philox_width = sizeof(philox_lanes) / sizeof(std::uint32_t);

inline philox_lanes philox_set(std::uint32_t v) {
  return _mm512_set1_epi32(static_cast<int>(v));
}
inline philox_lanes philox_load(const std::uint32_t* p) {
  return _mm512_loadu_si512(p);
}
inline void philox_store(std::uint32_t* p, philox_lanes v) {
  _mm512_storeu_si512(p, v);
}
inline philox_lanes philox_xor(philox_lanes a, philox_lanes b) {
  return _mm512_xor_si512(a, b);
}

// The 32 × 32 → 64-bit products of Philox on every 32-bit lane: one multiply for the even lanes,
// one for the odd lanes shifted down, then the halves blended back. Compilers given the portable
// loop widen every lane to 64 bits and use a full 64-bit multiply instead, which on x86 costs
// about twice as much.
inline void philox_mulhilo(philox_lanes m, philox_lanes a, philox_lanes& hi, philox_lanes& lo) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

// √x on sqrt_width floats: the instruction rounds correctly, as sqrtf does, so the bits are those
// of the portable loop.
inline constexpr std::size_t sqrt_width = 16;
inline void sqrt_lanes(float* x) {
  _mm512_storeu_ps(x, _mm512_sqrt_ps(_mm512_loadu_ps(x)));
}

}  // namespace zo::detail::avx512
