// SPDX-License-Identifier: Apache-2.0
// Allocation tracking for a test binary: replaces the global operator new and delete so that
// `largest_allocation` holds the largest single allocation made while `tracking` is set.
// Include it from one translation unit of a binary only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace {
std::atomic<bool> tracking{false};
std::atomic<std::size_t> largest_allocation{0};

void* tracked_allocate(std::size_t size) {
  if (tracking.load()) {
    std::size_t seen = largest_allocation.load();
    while (size > seen && !largest_allocation.compare_exchange_weak(seen, size)) {
    }
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) {
  return tracked_allocate(size);
}
void* operator new[](std::size_t size) {
  return tracked_allocate(size);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
