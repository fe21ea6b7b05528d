// SPDX-License-Identifier: Apache-2.0
// The examples' precondition check. It throws zo::invalid_argument, as the library's own checks
// do, so that an example's error and the library's read alike ("zo: ...") and a caller catches
// both as one type.
#pragma once

#include <concepts>
#include <string>
#include <utility>
#include <zo/core/errors.hpp>

namespace zo_examples {

inline void require(bool condition, const std::string& message) {
  if (!condition) throw zo::invalid_argument(message);
}

inline void require(bool condition, const char* message) {
  if (!condition) throw zo::invalid_argument(message);
}

// For checks that run every step: the message is built only when the check fails.
template <std::invocable Message>
void require(bool condition, Message&& message) {
  if (!condition) throw zo::invalid_argument(std::forward<Message>(message)());
}

}  // namespace zo_examples
