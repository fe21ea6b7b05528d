// SPDX-License-Identifier: Apache-2.0
// Writes the optimizer-state seed corpus: g++ -std=c++20 -fopenmp -Iinclude -I/usr/include/eigen3
// fuzz/make_corpus_state.cpp -o /tmp/make_corpus_state && /tmp/make_corpus_state fuzz/corpus/state
// The seeds are the unframed states zo 0.1.0 saved (tests/test_resume.cpp holds the same bytes),
// each loaded and saved again in the framed format, plus a cut and a damaged one. The
// *_section_v1 seeds are framed states saved before the optimizer section named the direction
// generator (its version 1); they keep the upgrade path fuzzed and are not written here.
#include <fstream>
#include <sstream>
#include <string>
#include <zo/zo.hpp>

namespace {

std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (std::size_t k = 0; k + 1 < hex.size(); k += 2)
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(k, 2), nullptr, 16)));
  return bytes;
}

template <class Optimizer>
std::string framed(Optimizer optimizer, const std::string& unframed) {
  std::istringstream in(unframed);
  optimizer.load(in);
  std::ostringstream out;
  optimizer.save(out);
  return out.str();
}

}  // namespace

int main(int, char** argv) {
  const std::string dir = argv[1];
  const auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
  };
  const auto mezo = from_hex("65746174732d6f7a010000000500000000000000");
  const auto lozo_m = from_hex(
      "65746174732d6f7a0100000003000000000000006d6f6d2d6f7a6f6c01000000"
      "0800000003000000000000000000000000000000000000001000000000000000"
      "aea2c9da484c783faa47c9216fef843f01000000000000000000000010000000"
      "00000000d0728c2c68c0543f64adea3ecdd075bf020000000000000000000000"
      "10000000000000009e540d78bb1d6bbf171458a7705f59bf");
  const auto loho = from_hex(
      "00006469726279680100000065746174732d6f7a010000000300000000000000"
      "000000006d616461010000000800000002000000000000000000000000000000"
      "0300000000000000020000002000000000000000fd477cb10a13673f9f942a56"
      "38e780bfa6369735cead65bf4c5b48b9e5bf7f3f20000000000000008752db3b"
      "0a61983efe8b1e98c27bc83eaee5605fc391953ec94dc9e964a1c53e01000000"
      "000000000300000000000000020000001000000000000000362bf58249cf723f"
      "a07edca466ae71bf1000000000000000ba7e253c0d2fb23eea7f17b1311db03e");
  write("unframed_mezo", mezo);
  write("unframed_lozo_m", lozo_m);
  write("unframed_loho", loho);
  const auto framed_mezo =
      framed(zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2))), mezo);
  const auto framed_lozo_m =
      framed(zo::lozo_m(zo::low_rank_perturbation(1, 5), zo::central_difference(1e-3),
                        zo::low_rank_momentum(zo::constant_schedule(5e-3), 0.9, 0.01)),
             lozo_m);
  const auto framed_loho =
      framed(zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2))),
                      zo::adam(1e-2), zo::deepest_layers(1)),
             loho);
  write("mezo", framed_mezo);
  write("lozo_m", framed_lozo_m);
  write("loho", framed_loho);
  write("loho_cut", framed_loho.substr(0, framed_loho.size() / 2));
  auto damaged = framed_lozo_m;
  damaged[60] = static_cast<char>(damaged[60] ^ 4);
  write("lozo_m_damaged", damaged);
}
