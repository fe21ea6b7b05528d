// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the trajectory-log reader (and the block values reader beside it): any
// input either parses (possibly stopping at
// a torn last record) or is refused with zo::invalid_argument; nothing may crash, leak or hit
// undefined behaviour. What parses must encode back to the bytes it came from.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <zo/io/trajectory.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto log = zo::io::read_trajectory(bytes);
    // Re-encoding what was read (in the version it was read from, with the end record of a
    // finished log) reproduces the input's complete prefix byte for byte.
    auto encoded = zo::io::encode_header(log.header, log.version);
    for (const auto& record : log.records) {
      const auto r = zo::io::encode_record(record);
      encoded.insert(encoded.end(), r.begin(), r.end());
    }
    if (log.finished) {
      const auto end = zo::io::encode_end(log.records.size());
      encoded.insert(encoded.end(), end.begin(), end.end());
    }
    const std::size_t prefix = log.complete ? size : static_cast<std::size_t>(log.stopped_at);
    if (encoded.size() != prefix || std::memcmp(encoded.data(), data, prefix) != 0) std::abort();
  } catch (const zo::invalid_argument&) {
  }
  // The block values file beside a LoHO log shares the record framing.
  try {
    const auto values = zo::io::read_block_values(bytes);
    std::size_t total = 0;
    for (const auto& r : values.records) {
      for (const auto& b : r.blocks)
        total += b.values.size();
    }
    if (total > size) std::abort();
  } catch (const zo::invalid_argument&) {
  }
  return 0;
}
