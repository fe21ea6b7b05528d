// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for optimizer state files (zo/core/state_io.hpp): any input either
// loads into MeZO, LOZO-M and LoHO or is refused with zo::invalid_argument; nothing may crash,
// leak, allocate more than the input could describe, or hit undefined behaviour. A framed state
// that loads saves back to the bytes it came from when it is in the current format; one of an
// older section version is saved in the current one, which loads back and saves to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <zo/zo.hpp>

namespace {

template <class Optimizer>
std::string saved(const Optimizer& optimizer) {
  std::ostringstream out;
  optimizer.save(out);
  return out.str();
}

template <class Optimizer>
void check(Optimizer optimizer, const std::string& bytes) {
  const Optimizer fresh = optimizer;
  std::istringstream in(bytes);
  try {
    optimizer.load(in);
  } catch (const zo::invalid_argument&) {
    return;
  }
  if (bytes.compare(0, 8, "zo-stat\n") != 0) return;
  const auto consumed = static_cast<std::size_t>(in.tellg());
  const std::string once = saved(optimizer);
  if (once == bytes.substr(0, consumed)) return;
  // Not the input's bytes: the input must be an older version, whose upgrade is stable.
  Optimizer again = fresh;
  std::istringstream upgraded(once);
  again.load(upgraded);
  if (saved(again) != once) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  check(zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2))), bytes);
  check(zo::lozo_m(zo::low_rank_perturbation(1, 5), zo::central_difference(1e-3),
                   zo::low_rank_momentum(zo::constant_schedule(5e-3), 0.9, 0.01)),
        bytes);
  check(zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2))),
                 zo::adam(1e-2), zo::deepest_layers(1)),
        bytes);
  return 0;
}
