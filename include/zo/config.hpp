// SPDX-License-Identifier: Apache-2.0
// Build-wide switches shared by every zo header.
#pragma once

#define ZO_VERSION_MAJOR 0
#define ZO_VERSION_MINOR 1
#define ZO_VERSION_PATCH 0

// One macro marks every function that must run inside a kernel as well as on the host, so the
// same functor serves the CPU backend and every Thrust device system (docs/backends.md).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define ZO_HOST_DEVICE __host__ __device__
#else
#define ZO_HOST_DEVICE
#endif
