// SPDX-License-Identifier: Apache-2.0
// Save and resume: a run saved at step s and continued by a freshly built optimizer that loads
// the state (and the parameters) equals the uninterrupted run bit for bit, for every optimizer.
#define BOOST_TEST_MODULE resume
#include <atomic>
#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <span>
#include <sstream>
#include <string>
#include <zo/core/binary.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

// The largest single allocation while `tracking` is set: a huge size field in a state must be
// refused before anything of that size is allocated.
#include "allocation_tracking.hpp"

namespace {

using zo_test::chain;

constexpr std::uint64_t total_steps = 40, saved_at = 17;

template <class Store>
std::vector<typename Store::value_type> values_of(const Store& store) {
  return zo_test::snapshot(store);
}

template <class Store>
void restore_values(Store& store, const std::vector<typename Store::value_type>& values) {
  std::size_t offset = 0;
  for (std::size_t i = 0; i < store.size(); ++i) {
    const auto b = store.block(i);
    std::memcpy(b.data(), values.data() + offset, b.size() * sizeof(values[0]));
    offset += b.size();
  }
}

// Runs `make()` uninterrupted, and again as two processes would: s steps, save the state and
// the parameters, then a new optimizer (`make_after()`, by default make()) and a new model that
// load them and run the rest.
template <class Make, class Step, class MakeAfter>
void check_resume(Make&& make, Step&& step, MakeAfter&& make_after) {
  chain straight(3, 5, 16, 7), first(3, 5, 16, 7), second(3, 5, 16, 7);
  auto uninterrupted = make();
  for (std::uint64_t k = 0; k < total_steps; ++k)
    step(uninterrupted, straight);

  auto before = make();
  for (std::uint64_t k = 0; k < saved_at; ++k)
    step(before, first);
  std::stringstream state;
  before.save(state);
  restore_values(second.store, values_of(first.store));

  auto after = make_after();  // a new optimizer: nothing carried over but the saved bytes
  after.load(state);
  if constexpr (requires { after.options().generator; })
    BOOST_TEST((after.options().generator == before.options().generator));
  BOOST_TEST(after.step_count() == saved_at);
  for (std::uint64_t k = saved_at; k < total_steps; ++k)
    step(after, second);
  BOOST_TEST(values_of(second.store) == values_of(straight.store));
  // The run must have moved, or equality proves nothing.
  BOOST_TEST(values_of(straight.store) != values_of(chain(3, 5, 16, 7).store));
}

template <class Make, class Step>
void check_resume(Make&& make, Step&& step) {
  check_resume(make, step, make);
}

const auto zo_step = [](auto& optimizer, chain& model) {
  optimizer.step(model.store, [&] { return model.loss(); });
};
const auto hybrid_step = [](auto& optimizer, chain& model) { optimizer.step(model.store, model); };

}  // namespace

BOOST_AUTO_TEST_CASE(mezo_resumes_bit_for_bit_in_both_restore_modes) {
  for (const auto mode : {zo::restore_mode::exact, zo::restore_mode::arithmetic}) {
    check_resume(
        [&] {
          using cosine_mezo = zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference,
                                               zo::sgd<zo::cosine_schedule>>;
          return cosine_mezo(zo::central_difference(1e-3),
                             zo::sgd(zo::cosine_schedule(1e-2, total_steps), 0.01),
                             {.seed = 3, .restore = mode});
        },
        zo_step);
  }
}

BOOST_AUTO_TEST_CASE(spsa_with_q_samples_resumes_bit_for_bit) {
  using optimizer =
      zo::zo_optimizer<zo::rademacher_perturbation, zo::q_sample<zo::one_sided>, zo::sgd<>>;
  check_resume(
      [] {
        return optimizer(zo::q_sample<zo::one_sided>(3, zo::one_sided(1e-3)),
                         zo::sgd(zo::constant_schedule(1e-3)), {.seed = 4});
      },
      zo_step);
}

// A state names the generator its run drew directions with, and loading it makes the optimizer
// draw them so too: a run of the first generator resumes bit for bit in an optimizer built with
// the default one.
BOOST_AUTO_TEST_CASE(a_state_carries_its_generator_into_the_optimizer_that_loads_it) {
  using optimizer =
      zo::zo_optimizer<zo::rademacher_perturbation, zo::q_sample<zo::one_sided>, zo::sgd<>>;
  const auto make = [](zo::generator generator) {
    return optimizer(zo::q_sample<zo::one_sided>(2, zo::one_sided(1e-3)),
                     zo::sgd(zo::constant_schedule(1e-3)), {.seed = 4, .generator = generator});
  };
  check_resume([&] { return make(zo::generator::philox4x32_10); }, zo_step,
               [&] { return make(zo::default_generator); });
  check_resume(
      [&] {
        return zo::lozo_m(zo::low_rank_perturbation(2, 3), zo::central_difference(1e-3),
                          zo::low_rank_momentum<>(1e-2, 0.9), {},
                          {.seed = 6, .generator = zo::generator::philox4x32_10});
      },
      zo_step,
      [] {
        return zo::lozo_m(zo::low_rank_perturbation(2, 3), zo::central_difference(1e-3),
                          zo::low_rank_momentum<>(1e-2, 0.9), {}, {.seed = 6});
      });
}

BOOST_AUTO_TEST_CASE(lozo_and_lozo_m_resume_bit_for_bit_across_a_v_window) {
  // ν = 5: the save falls inside a window, so the resumed run must keep the same V and, for
  // LOZO-M, the same momentum factor.
  check_resume(
      [] {
        return zo::lozo(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3),
                        zo::sgd(zo::constant_schedule(5e-3)), {}, {.seed = 5});
      },
      zo_step);
  check_resume(
      [] {
        return zo::lozo_m(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3),
                          zo::low_rank_momentum(zo::constant_schedule(5e-3), 0.9, 0.01), {},
                          {.seed = 6});
      },
      zo_step);
}

BOOST_AUTO_TEST_CASE(a_fused_run_resumes_after_removing_its_pending_perturbation) {
  const auto make = [] {
    return zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)),
                    {.seed = 8, .fused_steps = true});
  };
  const auto fused_step = [](auto& optimizer, chain& model) {
    optimizer.step(model.store, [&] { return model.loss(); });
    // What a caller does before saving; the straight run does it too, so both take the same
    // passes.
    optimizer.remove_pending_perturbation(model.store);
  };
  check_resume(make, fused_step);
}

BOOST_AUTO_TEST_CASE(loho_with_adam_and_with_sgd_momentum_resumes_bit_for_bit) {
  check_resume(
      [] {
        return zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)),
                                 {.seed = 9}),
                        zo::adam(1e-2), zo::deepest_layers(1));
      },
      hybrid_step);
  using sgd_hybrid = zo::hybrid<zo::mezo, zo::fo_sgd<>, zo::round_robin_layers>;
  check_resume(
      [] {
        return sgd_hybrid(
            zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)),
                     {.seed = 10}),
            zo::fo_sgd(1e-2, 0.9, 0.01),
            zo::round_robin_layers(1, zo::block_role::first_order, zo::block_role::zeroth_order));
      },
      hybrid_step);
}

BOOST_AUTO_TEST_CASE(a_state_of_another_optimizer_or_a_truncated_one_is_refused) {
  chain model(3, 5, 16, 7);
  auto loho = zo::loho(
      zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)), {.seed = 9}),
      zo::adam(1e-2), zo::deepest_layers(1));
  for (int k = 0; k < 3; ++k)
    loho.step(model.store, model);
  std::stringstream state;
  loho.save(state);
  const std::string bytes = state.str();
  auto mezo = zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)));
  std::stringstream foreign(bytes);
  BOOST_CHECK_THROW(mezo.load(foreign), zo::invalid_argument);
  for (const std::size_t cut : {bytes.size() / 3, bytes.size() - 1}) {
    auto fresh = zo::loho(
        zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)), {.seed = 9}),
        zo::adam(1e-2), zo::deepest_layers(1));
    std::stringstream truncated(bytes.substr(0, cut));
    BOOST_CHECK_EXCEPTION(fresh.load(truncated), zo::invalid_argument,
                          [](const zo::invalid_argument& e) {
                            return std::string(e.what()).find("truncated") != std::string::npos;
                          });
  }
}

namespace {

// Small states of the three kinds, saved after a few steps on a one-layer chain.
auto small_mezo() {
  return zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)), {.seed = 3});
}
auto small_lozo_m() {
  return zo::lozo_m(zo::low_rank_perturbation(1, 5), zo::central_difference(1e-3),
                    zo::low_rank_momentum(zo::constant_schedule(5e-3), 0.9, 0.01), {}, {.seed = 6});
}
auto small_loho() {
  return zo::loho(
      zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)), {.seed = 9}),
      zo::adam(1e-2), zo::deepest_layers(1));
}

template <class Optimizer>
std::string saved_after(Optimizer optimizer, int steps) {
  chain model(1, 2, 4, 7);
  for (int k = 0; k < steps; ++k) {
    if constexpr (requires { optimizer.first_order_blocks(); }) {
      optimizer.step(model.store, model);
    } else {
      optimizer.step(model.store, [&] { return model.loss(); });
    }
  }
  std::stringstream state;
  optimizer.save(state);
  return state.str();
}

std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (std::size_t k = 0; k + 1 < hex.size(); k += 2)
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(k, 2), nullptr, 16)));
  return bytes;
}

// States as zo saved them before state files were framed (the payload alone), written by the
// code of commit c7315d0 from the three optimizers above: MeZO after 5 steps, LOZO-M after 3,
// LoHO after 3.
const std::string unframed_mezo = from_hex("65746174732d6f7a010000000500000000000000");
const std::string unframed_lozo_m = from_hex(
    "65746174732d6f7a0100000003000000000000006d6f6d2d6f7a6f6c01000000"
    "0800000003000000000000000000000000000000000000001000000000000000"
    "aea2c9da484c783faa47c9216fef843f01000000000000000000000010000000"
    "00000000d0728c2c68c0543f64adea3ecdd075bf020000000000000000000000"
    "10000000000000009e540d78bb1d6bbf171458a7705f59bf");
const std::string unframed_loho = from_hex(
    "00006469726279680100000065746174732d6f7a010000000300000000000000"
    "000000006d616461010000000800000002000000000000000000000000000000"
    "0300000000000000020000002000000000000000fd477cb10a13673f9f942a56"
    "38e780bfa6369735cead65bf4c5b48b9e5bf7f3f20000000000000008752db3b"
    "0a61983efe8b1e98c27bc83eaee5605fc391953ec94dc9e964a1c53e01000000"
    "000000000300000000000000020000001000000000000000362bf58249cf723f"
    "a07edca466ae71bf1000000000000000ba7e253c0d2fb23eea7f17b1311db03e");

// A state file as docs/io.md specifies it: "zo-stat\n" · u32 version 1 · u64 n · u64 ~n ·
// payload · u32 CRC-32, little-endian.
std::string framed(const std::string& payload) {
  std::string out = "zo-stat\n";
  const auto put = [&](std::uint64_t v, int bytes) {
    for (int k = 0; k < bytes; ++k)
      out.push_back(static_cast<char>(v >> (8 * k)));
  };
  put(1, 4);
  put(payload.size(), 8);
  put(~std::uint64_t{payload.size()}, 8);
  out += payload;
  put(zo::binary::crc32(std::as_bytes(std::span(payload.data(), payload.size()))), 4);
  return out;
}

// A state of version-1 sections as this zo writes it: the zo_optimizer section at version 2,
// naming the directions' generator (a u32 after the step index).
std::string upgraded(std::string state, zo::generator generator) {
  const auto at = state.find("etats-oz");  // zo_optimizer's tag, "zo-state" little-endian
  BOOST_REQUIRE(at != std::string::npos);
  BOOST_REQUIRE(state[at + 8] == 1);
  state[at + 8] = 2;
  std::string code(4, '\0');
  code[0] = static_cast<char>(generator);
  state.insert(at + 8 + 4 + 8, code);
  return state;
}

void put_u64(std::string& bytes, std::size_t at, std::uint64_t v) {
  for (int k = 0; k < 8; ++k)
    bytes[at + static_cast<std::size_t>(k)] = static_cast<char>(v >> (8 * k));
}

// A stream that cannot seek (a pipe, say), so the bytes left in it are not known.
class unseekable : public std::streambuf {
 public:
  explicit unseekable(std::string& bytes) {
    setg(bytes.data(), bytes.data(), bytes.data() + bytes.size());
  }
};

// Loads `bytes` into a fresh optimizer: a zo::invalid_argument is expected, and nothing else
// (no std::length_error, no std::bad_alloc) may escape; the optimizer stays at step 0.
template <class Make>
std::string refusal(Make&& make, std::string bytes, bool seekable = true) {
  auto optimizer = make();
  std::stringstream stream(bytes);
  unseekable pipe(bytes);
  std::istream in(seekable ? static_cast<std::streambuf*>(stream.rdbuf()) : &pipe);
  try {
    optimizer.load(in);
  } catch (const zo::invalid_argument& e) {
    BOOST_TEST(optimizer.step_count() == 0u);
    return e.what();
  }
  return {};
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_state_file_is_framed_and_its_payload_is_the_unframed_state) {
  // The frame adds 28 bytes before and 4 after the state as zo used to write it, which now names
  // the generator in 4 more.
  const auto mezo = saved_after(small_mezo(), 5);
  BOOST_TEST(mezo == framed(upgraded(unframed_mezo, zo::default_generator)));
  const auto lozo_m = saved_after(small_lozo_m(), 3);
  BOOST_REQUIRE(lozo_m.size() == unframed_lozo_m.size() + 36);
  BOOST_TEST(lozo_m.substr(0, 8) == "zo-stat\n");
  const auto loho = saved_after(small_loho(), 3);
  BOOST_REQUIRE(loho.size() == unframed_loho.size() + 36);
  // The payloads hold floating-point state, so only their framing and tags are compared here;
  // a saved state loads back exactly (below).
  BOOST_TEST(loho.substr(28, 12) == unframed_loho.substr(0, 12));
}

BOOST_AUTO_TEST_CASE(every_flipped_bit_of_a_state_file_is_refused_by_name) {
  const auto check = [](auto make, const std::string& bytes) {
    std::size_t refused = 0;
    for (std::size_t at = 0; at < bytes.size(); ++at) {
      for (int bit = 0; bit < 8; ++bit) {
        auto damaged = bytes;
        damaged[at] = static_cast<char>(damaged[at] ^ (1 << bit));
        const auto what = refusal(make, damaged);
        if (!what.empty()) ++refused;
        BOOST_TEST_CONTEXT("byte " << at << " bit " << bit << ": " << what) {
          BOOST_TEST(!what.empty());
          BOOST_TEST((what.find("checksum") != std::string::npos ||
                      what.find("length field") != std::string::npos ||
                      what.find("version") != std::string::npos ||
                      what.find("magic") != std::string::npos));
        }
      }
    }
    BOOST_TEST(refused == 8 * bytes.size());
    // The undamaged file loads.
    auto optimizer = make();
    std::stringstream in(bytes);
    optimizer.load(in);
    BOOST_TEST(optimizer.step_count() > 0u);
  };
  check(small_mezo, saved_after(small_mezo(), 5));
  check(small_lozo_m, saved_after(small_lozo_m(), 3));
  check(small_loho, saved_after(small_loho(), 3));
}

BOOST_AUTO_TEST_CASE(a_state_file_cut_anywhere_is_refused) {
  const auto bytes = saved_after(small_loho(), 3);
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    BOOST_TEST_CONTEXT("cut at " << cut) {
      BOOST_TEST(refusal(small_loho, bytes.substr(0, cut)).find("truncated") != std::string::npos);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_huge_size_field_is_refused_before_anything_is_allocated) {
  // Sizes and counts in a payload whose checksum is right (a file written by something else):
  // LOZO-M's momentum block count (payload offset 36) and first block size (56), LoHO's Adam
  // first buffer size (76); and the frame's own length, whose complement agrees.
  struct field {
    const std::string* payload;
    std::size_t at;
    bool loho;
  };
  const field fields[] = {
      {&unframed_lozo_m, 36, false}, {&unframed_lozo_m, 56, false}, {&unframed_loho, 76, true}};
  for (const auto& f : fields) {
    for (const std::uint64_t huge : {std::uint64_t{1} << 62, std::uint64_t{1} << 36,
                                     std::numeric_limits<std::uint64_t>::max() - 7}) {
      BOOST_TEST_CONTEXT("offset " << f.at << " set to " << huge) {
        auto payload = *f.payload;
        put_u64(payload, f.at, huge);
        largest_allocation = 0;
        tracking = true;
        const auto in_frame =
            f.loho ? refusal(small_loho, framed(payload)) : refusal(small_lozo_m, framed(payload));
        // The same field in an unframed state, which is still read: checked against the bytes
        // left in a stream that can seek, and read in bounded chunks until the stream runs out
        // from one that cannot.
        const auto unframed =
            f.loho ? refusal(small_loho, payload) : refusal(small_lozo_m, payload);
        const auto piped =
            f.loho ? refusal(small_loho, payload, false) : refusal(small_lozo_m, payload, false);
        tracking = false;
        BOOST_TEST(in_frame.find("do not fit") != std::string::npos, in_frame);
        BOOST_TEST(unframed.find("do not fit") != std::string::npos, unframed);
        BOOST_TEST(piped.find("truncated") != std::string::npos, piped);
        BOOST_TEST(largest_allocation.load() < (std::size_t{64} << 20));
      }
    }
  }
  auto header = framed(unframed_loho);
  put_u64(header, 12, std::uint64_t{1} << 40);
  put_u64(header, 20, ~(std::uint64_t{1} << 40));
  largest_allocation = 0;
  tracking = true;
  const auto what = refusal(small_loho, header);
  const auto piped = refusal(small_loho, header, false);
  tracking = false;
  BOOST_TEST(what.find("truncated") != std::string::npos, what);
  BOOST_TEST(piped.find("truncated") != std::string::npos, piped);
  BOOST_TEST(largest_allocation.load() < (std::size_t{64} << 20));
}

BOOST_AUTO_TEST_CASE(an_unframed_state_of_an_earlier_zo_still_loads) {
  // Each loads as a run of the only generator there was, and saves again as the same state, now
  // framed and naming that generator.
  const auto check = [](auto make, const std::string& unframed, std::uint64_t step) {
    auto optimizer = make();
    std::stringstream in(unframed);
    optimizer.load(in);
    BOOST_TEST(optimizer.step_count() == step);
    std::stringstream again;
    optimizer.save(again);
    BOOST_TEST(again.str() == framed(upgraded(unframed, zo::generator::philox4x32_10)));
  };
  check(small_mezo, unframed_mezo, 5u);
  check(small_lozo_m, unframed_lozo_m, 3u);
  check(small_loho, unframed_loho, 3u);
  // An unframed state of another optimizer is refused as before.
  BOOST_TEST(refusal(small_mezo, unframed_loho).find("neither") != std::string::npos);
  BOOST_TEST(refusal(small_loho, unframed_mezo).find("neither") != std::string::npos);
  // A generator this build does not know is refused by name.
  const auto unknown = framed(upgraded(unframed_mezo, static_cast<zo::generator>(9)));
  BOOST_TEST(refusal(small_mezo, unknown).find("names direction generator 9") != std::string::npos);
  // And so is a framed one.
  BOOST_TEST(refusal(small_mezo, framed(unframed_loho)).find("holds no zo_optimizer") !=
             std::string::npos);
}
