// SPDX-License-Identifier: Apache-2.0
// Little binary helpers for saving and loading optimizer state (native byte order; a state file
// is meant to resume a run on the same kind of machine).
#pragma once

#include <cstdint>
#include <istream>
#include <ostream>
#include <string>
#include <type_traits>

#include "zo/errors.hpp"

namespace zo::detail {

template <class T>
void write_value(std::ostream& out, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  out.write(reinterpret_cast<const char*>(&value), sizeof(T));
}

template <class T>
T read_value(std::istream& in, const char* what) {
  static_assert(std::is_trivially_copyable_v<T>);
  T value{};
  in.read(reinterpret_cast<char*>(&value), sizeof(T));
  require(static_cast<std::size_t>(in.gcount()) == sizeof(T),
          std::string("optimizer state is truncated (while reading ") + what + ")");
  return value;
}

inline void read_bytes(std::istream& in, char* data, std::size_t count, const char* what) {
  in.read(data, static_cast<std::streamsize>(count));
  require(static_cast<std::size_t>(in.gcount()) == count,
          std::string("optimizer state is truncated (while reading ") + what + ")");
}

// Writes and checks a section tag, so a state saved by one optimizer is not loaded into another.
inline void write_tag(std::ostream& out, std::uint64_t tag, std::uint32_t version) {
  write_value(out, tag);
  write_value(out, version);
}

inline void read_tag(std::istream& in, std::uint64_t tag, std::uint32_t version, const char* what) {
  require(read_value<std::uint64_t>(in, what) == tag,
          std::string("the state does not hold ") + what);
  const auto found = read_value<std::uint32_t>(in, what);
  require(found == version, std::string(what) + " state has version " + std::to_string(found) +
                                ", this build reads version " + std::to_string(version));
}

}  // namespace zo::detail
