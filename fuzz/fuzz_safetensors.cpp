// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the safetensors reader: any input either parses, and then every tensor
// reads as float or is refused, or is refused at parsing; a refusal must be zo::invalid_argument
// and nothing may crash, leak or hit undefined behaviour.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>
#include <zo/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto file = zo::io::safetensors_file::parse(bytes);
    for (const auto& t : file.tensors()) {
      try {
        const std::vector<float> values = file.read_float(t.name, t.shape);
        // Touch every element so a read beyond the input would be seen by AddressSanitizer.
        volatile float sink = 0;
        for (float v : values)
          sink = sink + v;
      } catch (const zo::invalid_argument&) {
      }
    }
    (void)file.metadata().size();
  } catch (const zo::invalid_argument&) {
  }
  return 0;
}
