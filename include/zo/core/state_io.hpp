// SPDX-License-Identifier: Apache-2.0
// Optimizer state files. An optimizer's save() writes one frame (integers little-endian):
//   "zo-stat\n" · u32 format version (1) · u64 n · u64 ~n · n bytes of payload · u32 CRC-32 of
//   the payload
// The payload is the optimizer's sections, each a u64 tag naming whose state follows and a u32
// version, then its fields, little-endian like the frame (zo/core/binary.hpp, as trajectory
// logs; zo 0.1.0 wrote native byte order, the same bytes on the little-endian hosts it ran on).
// load() checks the frame (magic, version, the complemented length, the checksum) before it parses
// anything, so a damaged byte anywhere is a zo::invalid_argument, and bounds every size and count
// field by the bytes left in the payload before it allocates. A state saved before the frame
// existed (the payload alone, starting with the optimizer's tag) still loads, with nothing to check
// damage against: its sizes are bounded by the rest of the stream where the stream can seek, and
// otherwise read in bounded pieces.
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <istream>
#include <optional>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "zo/core/binary.hpp"
#include "zo/core/errors.hpp"

namespace zo::state_io {

// Sections are written a field or a block at a time, encoded by binary::byte_writer and read back
// with binary::u32_at / u64_at, so a state file is laid out as explicitly as a trajectory log.
template <class T>
concept state_field = std::same_as<T, std::uint32_t> || std::same_as<T, std::uint64_t>;

inline void write_bytes(std::ostream& out, std::span<const std::byte> bytes) {
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

template <state_field T>
void write_value(std::ostream& out, T value) {
  binary::byte_writer field;
  if constexpr (sizeof(T) == 4) {
    field.u32(value);
  } else {
    field.u64(value);
  }
  write_bytes(out, field.bytes());
}

inline void read_bytes(std::istream& in, char* data, std::size_t count, const char* what) {
  in.read(data, static_cast<std::streamsize>(count));
  require(static_cast<std::size_t>(in.gcount()) == count,
          std::string("optimizer state is truncated (while reading ") + what + ")");
}

template <state_field T>
T read_value(std::istream& in, const char* what) {
  std::array<std::byte, sizeof(T)> field;
  read_bytes(in, reinterpret_cast<char*>(field.data()), field.size(), what);
  if constexpr (sizeof(T) == 4) {
    return binary::u32_at(field, 0);
  } else {
    return binary::u64_at(field, 0);
  }
}

// A state file's payload in memory, after its checksum was verified. It can seek, so the bytes
// left are known and each size field is checked before anything is allocated.
class state_payload : public std::streambuf {
 public:
  explicit state_payload(std::span<char> bytes) {
    setg(bytes.data(), bytes.data(), bytes.data() + bytes.size());
  }
  std::uint64_t left() const { return static_cast<std::uint64_t>(egptr() - gptr()); }

 protected:
  pos_type seekoff(off_type off, std::ios_base::seekdir dir,
                   std::ios_base::openmode which) override {
    if (!(which & std::ios_base::in)) return pos_type(off_type(-1));
    const char* from = dir == std::ios_base::beg   ? eback()
                       : dir == std::ios_base::cur ? gptr()
                                                   : egptr();
    const off_type target = (from - eback()) + off;
    if (target < 0 || target > egptr() - eback()) return pos_type(off_type(-1));
    setg(eback(), eback() + target, egptr());
    return pos_type(target);
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode which) override {
    return seekoff(off_type(pos), std::ios_base::beg, which);
  }
};

// The bytes left in a state being loaded, where the stream can tell (a state file's payload, a
// string stream, a regular file); nullopt for a stream that cannot seek, such as a pipe.
inline std::optional<std::uint64_t> state_bytes_left(std::istream& in) {
  std::streambuf* buffer = in.rdbuf();
  if (buffer == nullptr) return std::nullopt;
  const std::streampos here = buffer->pubseekoff(0, std::ios_base::cur, std::ios_base::in);
  if (here == std::streampos(-1)) return std::nullopt;
  const std::streampos end = buffer->pubseekoff(0, std::ios_base::end, std::ios_base::in);
  buffer->pubseekpos(here, std::ios_base::in);
  if (end == std::streampos(-1) || end < here) return std::nullopt;
  return static_cast<std::uint64_t>(end - here);
}

// Refuses `count` items of at least `each` bytes each when they cannot fit in what is left.
inline void require_fits(std::istream& in, std::uint64_t count, std::uint64_t each,
                         const char* what) {
  const auto left = state_bytes_left(in);
  if (!left || each == 0 || count <= *left / each) return;
  throw invalid_argument(std::string("optimizer state: ") + what + " (" + std::to_string(count) +
                         " × " + std::to_string(each) + " bytes) do not fit in the " +
                         std::to_string(*left) + " bytes left");
}

// Reads `size` bytes. The size is checked against the bytes left first; where they are not
// known, the bytes are read in chunks, so a huge size ends at the end of the stream rather than
// in the allocator.
inline std::vector<char> read_buffer(std::istream& in, std::uint64_t size, const char* what) {
  const auto left = state_bytes_left(in);
  if (left && size > *left) {
    throw invalid_argument(std::string("optimizer state: ") + what + " (" + std::to_string(size) +
                           " bytes) do not fit in the " + std::to_string(*left) + " bytes left");
  }
  constexpr std::uint64_t chunk = std::uint64_t{16} << 20;
  const bool known = left.has_value();
  std::vector<char> bytes;
  while (bytes.size() < size) {
    const std::size_t at = bytes.size();
    const auto n = static_cast<std::size_t>(known ? size - at : std::min(chunk, size - at));
    bytes.resize(at + n);
    read_bytes(in, bytes.data() + at, n, what);
  }
  return bytes;
}

// Writes and checks a section tag, so a state saved by one optimizer is not loaded into another.
inline void write_tag(std::ostream& out, std::uint64_t tag, std::uint32_t version) {
  write_value(out, tag);
  write_value(out, version);
}

inline void read_version(std::istream& in, std::uint32_t version, const char* what) {
  const auto found = read_value<std::uint32_t>(in, what);
  require(found == version, std::string(what) + " state has version " + std::to_string(found) +
                                ", this build reads version " + std::to_string(version));
}

inline void read_tag(std::istream& in, std::uint64_t tag, std::uint32_t version, const char* what) {
  require(read_value<std::uint64_t>(in, what) == tag,
          std::string("the state does not hold ") + what);
  read_version(in, version, what);
}

inline constexpr char state_magic[8] = {'z', 'o', '-', 's', 't', 'a', 't', '\n'};
inline constexpr std::uint32_t state_format_version = 1;

// Writes a state file: write_sections(payload) writes the sections, which are then framed.
template <class WriteSections>
void save_state(std::ostream& out, WriteSections&& write_sections) {
  std::ostringstream payload(std::ios::binary);
  write_sections(payload);
  require(payload.good(), "cannot serialize the optimizer state");
  const std::string_view bytes = payload.view();
  const auto span = std::as_bytes(std::span(bytes.data(), bytes.size()));
  const auto n = static_cast<std::uint64_t>(bytes.size());
  binary::byte_writer head, tail;
  head.raw(std::as_bytes(std::span(state_magic)));
  head.u32(state_format_version);
  head.u64(n);
  head.u64(~n);
  tail.u32(binary::crc32(span));
  write_bytes(out, head.bytes());
  write_bytes(out, span);
  write_bytes(out, tail.bytes());
  require(out.good(), "cannot write the optimizer state: the output stream failed");
}

// Reads a state file whose first section is tagged `tag`: checks the frame, then calls
// read_body(section) with the payload positioned after the tag, and requires it to read the
// whole payload. An unframed state (saved before the frame existed) starts with the tag itself;
// read_body then reads straight from `in`.
template <class ReadBody>
void load_state(std::istream& in, std::uint64_t tag, const char* what, ReadBody&& read_body) {
  char start[8];
  read_bytes(in, start, sizeof start, "the state file's magic");
  if (binary::u64_at(std::as_bytes(std::span(start)), 0) == tag) {
    read_body(in);
    return;
  }
  require(std::memcmp(start, state_magic, sizeof start) == 0,
          std::string("not a ") + what +
              " state: it starts with neither the zo state-file magic nor the tag of an "
              "unframed " +
              what + " state");
  char fixed_chars[20];
  read_bytes(in, fixed_chars, sizeof fixed_chars, "the state file's header");
  const auto fixed = std::as_bytes(std::span(fixed_chars));
  const std::uint32_t version = binary::u32_at(fixed, 0);
  require(version == state_format_version,
          "optimizer state file has format version " + std::to_string(version) +
              ", this build reads version " + std::to_string(state_format_version));
  const std::uint64_t n = binary::u64_at(fixed, 4), check = binary::u64_at(fixed, 12);
  require(check == ~n, "optimizer state file: length field damaged (" + std::to_string(n) +
                           " and ~" + std::to_string(~check) + " disagree)");
  // n agrees with its complement, so a stream shorter than that was cut.
  const auto left = state_bytes_left(in);
  require(!left || (*left >= 4 && n <= *left - 4),
          "optimizer state is truncated: its payload and checksum need " + std::to_string(n) +
              " + 4 bytes, the stream has " + std::to_string(left.value_or(0)));
  auto payload = read_buffer(in, n, "the state payload");
  char crc_chars[4];
  read_bytes(in, crc_chars, sizeof crc_chars, "the state checksum");
  const std::uint32_t stored = binary::u32_at(std::as_bytes(std::span(crc_chars)), 0);
  const std::uint32_t computed = binary::crc32(std::as_bytes(std::span(payload)));
  require(stored == computed, "optimizer state file: checksum mismatch (the " + std::to_string(n) +
                                  "-byte payload is damaged)");
  state_payload buffer(payload);
  std::istream section(&buffer);
  require(read_value<std::uint64_t>(section, what) == tag,
          std::string("the state file holds no ") + what + " state (another optimizer saved it)");
  read_body(section);
  require(buffer.left() == 0, "optimizer state file: " + std::to_string(buffer.left()) +
                                  " bytes beyond the fields of the " + what + " state");
}

}  // namespace zo::state_io
