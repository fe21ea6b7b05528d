// SPDX-License-Identifier: Apache-2.0
// What zo's binary files share (the trajectory log, the block values file and optimizer state
// files): CRC-32 and the little-endian field writer and bounds-checked reader their frames and
// payloads are made of. Standard library only.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "zo/core/errors.hpp"

namespace zo::binary {

// CRC-32 as zlib and PNG compute it (reflected polynomial 0xEDB88320), eight bytes a step
// ("slicing by 8"): table[0] is the classic byte table, table[k][n] the CRC of byte n followed
// by k zero bytes.
constexpr std::array<std::array<std::uint32_t, 256>, 8> crc32_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> table{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    std::uint32_t c = n;
    for (int k = 0; k < 8; ++k)
      c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[0][n] = c;
  }
  for (std::uint32_t n = 0; n < 256; ++n) {
    for (std::size_t k = 1; k < 8; ++k)
      table[k][n] = table[0][table[k - 1][n] & 0xFFu] ^ (table[k - 1][n] >> 8);
  }
  return table;
}

// Continues a CRC-32 over more bytes: crc32(b, crc32(a)) == crc32(a followed by b).
inline std::uint32_t crc32(std::span<const std::byte> bytes, std::uint32_t previous = 0) {
  static constexpr auto table = crc32_tables();
  std::uint32_t c = previous ^ 0xFFFFFFFFu;
  const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
  std::size_t n = bytes.size();
  for (; n >= 8; n -= 8, p += 8) {
    const std::uint32_t lo = c ^ (std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 |
                                  std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24);
    c = table[7][lo & 0xFFu] ^ table[6][(lo >> 8) & 0xFFu] ^ table[5][(lo >> 16) & 0xFFu] ^
        table[4][lo >> 24] ^ table[3][p[4]] ^ table[2][p[5]] ^ table[1][p[6]] ^ table[0][p[7]];
  }
  for (; n > 0; --n, ++p)
    c = table[0][(c ^ *p) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// The one little-endian decoding of zo's files: byte_reader reads its fields with these too.
inline std::uint32_t u32_at(std::span<const std::byte> bytes, std::size_t at) {
  std::uint32_t v = 0;
  for (int k = 0; k < 4; ++k)
    v |= static_cast<std::uint32_t>(bytes[at + static_cast<std::size_t>(k)]) << (8 * k);
  return v;
}

inline std::uint64_t u64_at(std::span<const std::byte> bytes, std::size_t at) {
  return std::uint64_t{u32_at(bytes, at)} | std::uint64_t{u32_at(bytes, at + 4)} << 32;
}

// Copies elements of T (float, double), turning each from the host's byte order to
// little-endian or back, so arrays are stored like every other field; on a little-endian host
// it is a plain copy.
template <class T>
void copy_little_endian(std::span<const std::byte> from, std::span<std::byte> to) {
  if (from.empty()) return;  // memcpy must not see the null data() of an empty vector
  std::memcpy(to.data(), from.data(), from.size());
  if constexpr (std::endian::native != std::endian::little && sizeof(T) > 1) {
    for (std::size_t at = 0; at < to.size(); at += sizeof(T))
      std::reverse(to.begin() + at, to.begin() + at + sizeof(T));
  }
}

// The elements that byte_writer::elements stored in `bytes`.
template <class T>
std::vector<T> elements_from(std::span<const std::byte> bytes) {
  std::vector<T> values(bytes.size() / sizeof(T));
  copy_little_endian<T>(bytes.first(values.size() * sizeof(T)),
                        std::as_writable_bytes(std::span(values)));
  return values;
}

class byte_writer {
 public:
  void u8(std::uint8_t v) { bytes_.push_back(static_cast<std::byte>(v)); }
  void u32(std::uint32_t v) {
    for (int k = 0; k < 4; ++k)
      u8(static_cast<std::uint8_t>(v >> (8 * k)));
  }
  void u64(std::uint64_t v) {
    for (int k = 0; k < 8; ++k)
      u8(static_cast<std::uint8_t>(v >> (8 * k)));
  }
  void f64(double v) {
    std::uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    u64(bits);
  }
  template <class T>
  void elements(std::span<const T> values) {
    const std::size_t at = bytes_.size();
    bytes_.resize(at + values.size_bytes());
    copy_little_endian<T>(std::as_bytes(values), std::span(bytes_).subspan(at));
  }
  void raw(std::span<const std::byte> b) { bytes_.insert(bytes_.end(), b.begin(), b.end()); }
  std::vector<std::byte>& bytes() { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

// Reads a payload whose length and checksum were verified; running out is a malformed payload.
class byte_reader {
 public:
  byte_reader(std::span<const std::byte> bytes, std::string what)
      : bytes_(bytes), what_(std::move(what)) {}
  std::uint8_t u8() {
    need(1);
    return static_cast<std::uint8_t>(bytes_[at_++]);
  }
  std::uint32_t u32() {
    need(4);
    const std::uint32_t v = u32_at(bytes_, at_);
    at_ += 4;
    return v;
  }
  std::uint64_t u64() {
    need(8);
    const std::uint64_t v = u64_at(bytes_, at_);
    at_ += 8;
    return v;
  }
  double f64() {
    const std::uint64_t bits = u64();
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  std::span<const std::byte> raw(std::size_t n) {
    need(n);
    const auto out = bytes_.subspan(at_, n);
    at_ += n;
    return out;
  }
  std::size_t remaining() const { return bytes_.size() - at_; }
  void finish() const {
    zo::require(at_ == bytes_.size(),
                what_ + " has " + std::to_string(remaining()) + " bytes beyond its fields");
  }

 private:
  void need(std::size_t n) const {
    zo::require(bytes_.size() - at_ >= n, what_ + " is shorter than its fields");
  }
  std::span<const std::byte> bytes_;
  std::string what_;
  std::size_t at_ = 0;
};

}  // namespace zo::binary
