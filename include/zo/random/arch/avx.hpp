// SPDX-License-Identifier: Apache-2.0
// AVX kernels of the keyed generator. zo/random/keyed.hpp includes this header when the target has
// AVX but not AVX-512F (with AVX2, next to zo/random/arch/avx2.hpp), and falls back to its
// portable loops for what is not here.
#pragma once

#include <immintrin.h>

#include <cstddef>

namespace zo::detail::avx {

// √x on sqrt_width floats: the instruction rounds correctly, as sqrtf does, so the bits are those
// of the portable loop.
inline constexpr std::size_t sqrt_width = 8;
inline void sqrt_lanes(float* x) {
  _mm256_storeu_ps(x, _mm256_sqrt_ps(_mm256_loadu_ps(x)));
}

}  // namespace zo::detail::avx
