// SPDX-License-Identifier: Apache-2.0
// SSE2 kernels of the keyed generator. zo/random/keyed.hpp includes this header when the target
// has SSE2 but not AVX, and falls back to its portable loops for what is not here.
#pragma once

#include <immintrin.h>

#include <cstddef>

namespace zo::detail::sse2 {

// √x on sqrt_width floats: the instruction rounds correctly, as sqrtf does, so the bits are those
// of the portable loop.
inline constexpr std::size_t sqrt_width = 4;
inline void sqrt_lanes(float* x) {
  _mm_storeu_ps(x, _mm_sqrt_ps(_mm_loadu_ps(x)));
}

}  // namespace zo::detail::sse2
