// SPDX-License-Identifier: Apache-2.0
// Exceptions thrown by zo. Every message starts with "zo:" and names the offending value, so a
// user embedding zo in a larger framework can tell where an error came from.
#pragma once

#include <cmath>
#include <concepts>
#include <stdexcept>
#include <string>
#include <utility>

namespace zo {

// Bad hyperparameters, shapes or stores. Always thrown before any parameter is modified.
class invalid_argument : public std::invalid_argument {
 public:
  explicit invalid_argument(const std::string& what) : std::invalid_argument("zo: " + what) {}
};

// zo's argument checks, for policies and optimizers alike: throw zo::invalid_argument with the
// message when the condition fails.
inline void require(bool condition, const std::string& message) {
  if (!condition) throw zo::invalid_argument(message);
}

// A literal message becomes a std::string only when the check fails.
inline void require(bool condition, const char* message) {
  if (!condition) throw zo::invalid_argument(message);
}

// The message is built only when the check fails, so a check that runs every step allocates
// nothing: require(ok, [&] { return "block '" + name + "' ..."; }).
template <std::invocable Message>
void require(bool condition, Message&& message) {
  if (!condition) throw zo::invalid_argument(std::forward<Message>(message)());
}

inline void require_positive_finite(double value, const char* name) {
  require(std::isfinite(value) && value > 0, [&] {
    return std::string(name) + " must be positive and finite, got " + std::to_string(value);
  });
}

inline void require_non_negative_finite(double value, const char* name) {
  require(std::isfinite(value) && value >= 0, [&] {
    return std::string(name) + " must be non-negative and finite, got " + std::to_string(value);
  });
}
}  // namespace zo
