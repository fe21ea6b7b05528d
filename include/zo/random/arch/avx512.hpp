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
// a ^ b ^ c in one instruction (truth table 0x96).
inline philox_lanes philox_xor3(philox_lanes a, philox_lanes b, philox_lanes c) {
  return _mm512_ternarylogic_epi32(a, b, c, 0x96);
}

// The 32 × 32 → 64-bit products of Philox on every 32-bit lane: one multiply for the even lanes,
// one for the odd lanes swapped down, then each half moved into place by a masked swap of the
// lanes within their 64 bits (one instruction where shift and blend take two). Compilers given
// the portable loop widen every lane to 64 bits and use a full 64-bit multiply instead, which on
// x86 costs about twice as much.
inline void philox_mulhilo(philox_lanes m, philox_lanes a, philox_lanes& hi, philox_lanes& lo) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_shuffle_epi32(a, _MM_PERM_CDAB), m);
  lo = _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CDAB);
  hi = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_CDAB);
}

// √x on sqrt_width floats: the instruction rounds correctly, as sqrtf does, so the bits are those
// of the portable loop.
inline constexpr std::size_t sqrt_width = 16;
inline void sqrt_lanes(float* x) {
  _mm512_storeu_ps(x, _mm512_sqrt_ps(_mm512_loadu_ps(x)));
}

}  // namespace zo::detail::avx512
