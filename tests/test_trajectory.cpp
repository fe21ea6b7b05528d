// SPDX-License-Identifier: Apache-2.0
// Trajectory logs: replaying a run's log on its base weights reproduces the live run bit for
// bit, and other base weights are refused by their fingerprint; a log cut anywhere in its last
// record replays the complete prefix and says where it was cut, a log cut at a record boundary
// reads as not finished; any damaged byte is an error; version-1 logs still read and replay.
#define BOOST_TEST_MODULE trajectory
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <zo/io/trajectory.hpp>
#include <zo/zo.hpp>

#include "support.hpp"

namespace {

using zo_test::chain;
namespace fs = std::filesystem;

fs::path temporary(const std::string& name) {
  return fs::temp_directory_path() / ("zo_test_" + std::to_string(::getpid()) + "_" + name);
}

std::vector<std::byte> file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

// Runs `make()` live for `steps` steps with a log (one evaluation of step 7 is NaN, so a skipped
// step is in it), then replays the log with a new optimizer on the same starting weights.
template <class Make>
void check_replay(Make&& make, std::uint64_t steps) {
  const fs::path path = temporary("replay.zotraj");
  chain live(3, 5, 16, 7), replayed(3, 5, 16, 7);
  auto optimizer = make();
  {
    zo::io::trajectory_writer log(path,
                                  zo::io::run_header(live.store, optimizer.options(), "test"));
    std::size_t calls = 0;
    const auto loss = [&](std::uint64_t step) {
      ++calls;
      return step == 7 && calls % 2 == 0 ? std::numeric_limits<double>::quiet_NaN() : live.loss();
    };
    const auto summary = optimizer.optimize(live.store, loss, steps, log);
    BOOST_TEST(summary.skipped_steps == 1u);
    log.finish();
  }
  const auto log = zo::io::read_trajectory(path);
  BOOST_TEST(log.complete);
  BOOST_TEST(log.finished);
  BOOST_TEST((log.header.base_fingerprint == zo::io::fingerprint(replayed.store)));
  BOOST_TEST(log.records.size() == steps);
  auto again = make();
  BOOST_TEST(zo::io::replay(again, replayed.store, log) == steps);
  BOOST_TEST(zo_test::snapshot(replayed.store) == zo_test::snapshot(live.store));
  BOOST_TEST(zo_test::snapshot(live.store) != zo_test::snapshot(chain(3, 5, 16, 7).store));
  BOOST_TEST_MESSAGE("log of " << steps << " steps: " << fs::file_size(path) << " bytes");
  fs::remove(path);
}

std::vector<std::byte> sample_log(std::size_t records, std::size_t& last_record_at,
                                  bool finish = false) {
  const fs::path path = temporary("sample.zotraj");
  {
    zo::io::trajectory_writer log(path, {5, 3, "sample", 0x0123'4567'89ab'cdefull}, 0);
    for (std::size_t k = 0; k < records; ++k) {
      if (k + 1 == records) last_record_at = fs::file_size(path);
      log.append(
          {k,
           5,
           1e-3,
           zo::step_status::completed,
           2,
           {0.5 * double(k), -1.0},
           {zo::block_role::zeroth_order, zo::block_role::frozen, zo::block_role::zeroth_order}});
      log.sync();
    }
    if (finish) log.finish();
  }
  auto bytes = file_bytes(path);
  fs::remove(path);
  return bytes;
}

}  // namespace

BOOST_AUTO_TEST_CASE(crc32_matches_the_standard_check_value) {
  const std::string check = "123456789";
  BOOST_TEST(zo::binary::crc32(std::as_bytes(std::span(check))) == 0xCBF43926u);
}

BOOST_AUTO_TEST_CASE(mezo_replays_bit_for_bit_in_both_restore_modes_and_fused) {
  for (const auto mode : {zo::restore_mode::exact, zo::restore_mode::arithmetic}) {
    for (const bool fused : {false, true}) {
      check_replay(
          [&] {
            return zo::mezo(zo::central_difference(1e-3),
                            zo::sgd(zo::constant_schedule(1e-2), 0.01),
                            {.seed = 11, .restore = mode, .fused_steps = fused});
          },
          40);
    }
  }
}

namespace {
// 1e-2, except at step 4: the largest double, whose update the optimizer refuses.
struct spike_schedule {
  double operator()(std::uint64_t step) const {
    return step == 4 ? std::numeric_limits<double>::max() : 1e-2;
  }
};
}  // namespace

// A refused update is logged with status 2 and its gradients, and replays as a refusal.
BOOST_AUTO_TEST_CASE(a_refused_update_is_logged_and_replayed) {
  const fs::path path = temporary("refused.zotraj");
  chain live(3, 5, 16, 7), replayed(3, 5, 16, 7);
  using optimizer_type =
      zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference, zo::sgd<spike_schedule>>;
  const auto make = [] {
    return optimizer_type({}, zo::central_difference(1e-3), zo::sgd<spike_schedule>({}), {},
                          {.seed = 11});
  };
  auto optimizer = make();
  {
    zo::io::trajectory_writer log(path,
                                  zo::io::run_header(live.store, optimizer.options(), "test"));
    const auto summary = optimizer.optimize(
        live.store, [&] { return live.loss(); }, 8, log);
    BOOST_TEST(summary.skipped_steps == 1u);
    BOOST_TEST(summary.refused_updates == 1u);
    log.finish();
  }
  const auto log = zo::io::read_trajectory(path);
  BOOST_TEST(log.records.size() == 8u);
  BOOST_TEST((log.records[4].status == zo::step_status::skipped_nonfinite_update));
  BOOST_TEST(log.records[4].projected_gradients.size() == 1u);
  auto again = make();
  BOOST_TEST(zo::io::replay(again, replayed.store, log) == 8u);
  BOOST_TEST(zo_test::snapshot(replayed.store) == zo_test::snapshot(live.store));
  for (const double x : zo_test::snapshot(live.store))
    BOOST_TEST(std::isfinite(x));
  fs::remove(path);
}

BOOST_AUTO_TEST_CASE(lozo_and_lozo_m_replay_bit_for_bit) {
  check_replay(
      [] {
        return zo::lozo(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3),
                        zo::sgd(zo::constant_schedule(5e-3)), {},
                        {.seed = 12, .restore = zo::restore_mode::arithmetic});
      },
      40);
  check_replay(
      [] {
        return zo::lozo_m(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3),
                          zo::low_rank_momentum(zo::constant_schedule(5e-3), 0.9, 0.01), {},
                          {.seed = 13});
      },
      40);
}

BOOST_AUTO_TEST_CASE(a_log_cut_anywhere_in_its_last_record_keeps_the_complete_prefix) {
  std::size_t last_at = 0;
  const auto bytes = sample_log(5, last_at);
  const auto whole = zo::io::read_trajectory(bytes);
  BOOST_TEST(whole.complete);
  BOOST_TEST(!whole.finished);  // its writer never called finish()
  BOOST_REQUIRE(whole.records.size() == 5u);
  BOOST_TEST(whole.records[3].projected_gradients[0] == 1.5);
  BOOST_TEST((whole.records[4].roles[1] == zo::block_role::frozen));
  BOOST_TEST(whole.header.description == "sample");
  for (std::size_t cut = last_at; cut < bytes.size(); ++cut) {
    const auto log = zo::io::read_trajectory(std::span(bytes).first(cut));
    BOOST_TEST_CONTEXT("cut at byte " << cut) {
      BOOST_TEST(log.records.size() == (cut == last_at ? 4u : 4u));
      BOOST_TEST(log.complete == (cut == last_at));
      if (cut > last_at) {
        BOOST_TEST(log.stopped_at == last_at);
        BOOST_TEST(log.reason.find("record 4 at byte " + std::to_string(last_at)) !=
                   std::string::npos);
      }
    }
  }
  // A header cut short is an error: there is nothing to replay against.
  BOOST_CHECK_THROW(zo::io::read_trajectory(std::span(bytes).first(20)), zo::invalid_argument);
}

BOOST_AUTO_TEST_CASE(every_flipped_byte_is_an_error_not_a_skipped_record) {
  std::size_t last_at = 0;
  const auto bytes = sample_log(3, last_at, true);  // with a fingerprint and the end record
  BOOST_TEST(zo::io::read_trajectory(bytes).finished);
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    auto damaged = bytes;
    damaged[at] ^= std::byte{0x10};
    BOOST_TEST_CONTEXT("byte " << at) {
      BOOST_CHECK_THROW(zo::io::read_trajectory(damaged), zo::invalid_argument);
    }
  }
}

BOOST_AUTO_TEST_CASE(appending_after_a_crash_cuts_the_torn_record_and_continues) {
  std::size_t last_at = 0;
  const auto bytes = sample_log(4, last_at);
  const fs::path path = temporary("append.zotraj");
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size() - 7));  // a crash mid-record
  }
  zo::io::trajectory before;
  {
    auto log = zo::io::trajectory_writer::append_to(path, before);
    log.append({3, 5, 1e-3, zo::step_status::completed, 2, {9.0}, {}});
  }
  BOOST_TEST(!before.complete);
  BOOST_TEST(before.records.size() == 3u);
  const auto after = zo::io::read_trajectory(path);
  BOOST_TEST(after.complete);
  BOOST_REQUIRE(after.records.size() == 4u);
  BOOST_TEST(after.records[3].projected_gradients[0] == 9.0);
  fs::remove(path);
}

BOOST_AUTO_TEST_CASE(replay_refuses_a_log_of_another_run) {
  std::size_t last_at = 0;
  const auto log = zo::io::read_trajectory(sample_log(2, last_at));
  chain model(3, 5, 16, 7);  // 7 blocks, the log says 3
  auto optimizer = zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2), {.seed = 5});
  BOOST_CHECK_THROW(zo::io::replay(optimizer, model.store, log), zo::invalid_argument);
}

BOOST_AUTO_TEST_CASE(loho_replays_bit_for_bit_from_its_log_and_the_first_order_values) {
  const fs::path log_path = temporary("loho.zotraj"), values_path = temporary("loho.zobval");
  const auto make = [] {
    return zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)),
                             {.seed = 14, .restore = zo::restore_mode::arithmetic}),
                    zo::adam(1e-2), zo::deepest_layers(1));
  };
  chain live(3, 5, 16, 7), replayed(3, 5, 16, 7);
  auto optimizer = make();
  {
    zo::io::trajectory_writer log(log_path,
                                  {14, static_cast<std::uint32_t>(live.store.size()), "loho"});
    zo::io::block_values_writer values(values_path);
    for (std::uint64_t k = 0; k < 30; ++k) {
      const auto report = optimizer.step(live.store, live, log);
      if (!report.skipped()) values.append(report.step, live.store, optimizer.first_order_blocks());
    }
  }
  const auto log = zo::io::read_trajectory(log_path);
  const auto values = zo::io::read_block_values(values_path);
  BOOST_TEST(values.complete);
  BOOST_TEST(values.records.size() == 30u);
  auto again = make();
  BOOST_TEST(zo::io::replay(again, replayed.store, log, values) == 30u);
  BOOST_TEST(zo_test::snapshot(replayed.store) == zo_test::snapshot(live.store));
  BOOST_TEST(zo_test::snapshot(live.store) != zo_test::snapshot(chain(3, 5, 16, 7).store));
  // Without the values file's last record, the replay says which step it lacks.
  auto cut = zo::io::read_block_values(values_path);
  cut.records.pop_back();
  chain other(3, 5, 16, 7);
  auto third = make();
  BOOST_CHECK_EXCEPTION(zo::io::replay(third, other.store, log, cut), zo::invalid_argument,
                        [](const zo::invalid_argument& e) {
                          return std::string(e.what()).find("step 29") != std::string::npos;
                        });
  // A zeroth-order rate other than the logged one is refused before anything changes.
  chain fresh(3, 5, 16, 7);
  auto faster =
      zo::loho(zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(2e-2)),
                        {.seed = 14, .restore = zo::restore_mode::arithmetic}),
               zo::adam(1e-2), zo::deepest_layers(1));
  BOOST_CHECK_EXCEPTION(zo::io::replay(faster, fresh.store, log, values), zo::invalid_argument,
                        [](const zo::invalid_argument& e) {
                          return std::string(e.what()).find("step 0 ") != std::string::npos;
                        });
  BOOST_TEST(zo_test::snapshot(fresh.store) == zo_test::snapshot(chain(3, 5, 16, 7).store));
  fs::remove(log_path);
  fs::remove(values_path);
}

BOOST_AUTO_TEST_CASE(replay_refuses_a_log_whose_learning_rates_are_not_the_step_rules) {
  // A cosine-schedule run replayed by a constant-rate optimizer: step 0's rates agree, step 1's
  // do not, and nothing is replayed.
  const fs::path path = temporary("cosine.zotraj");
  const auto cosine = [] {
    return zo::zo_optimizer<zo::gaussian_perturbation, zo::central_difference,
                            zo::sgd<zo::cosine_schedule>>(
        zo::central_difference(1e-3), zo::sgd<zo::cosine_schedule>(zo::cosine_schedule(1e-2, 10)),
        {.seed = 21});
  };
  chain live(3, 5, 16, 7);
  auto optimizer = cosine();
  {
    zo::io::trajectory_writer log(path, {21, static_cast<std::uint32_t>(live.store.size()), "t"});
    optimizer.optimize(
        live.store, [&] { return live.loss(); }, 10, log);
  }
  const auto log = zo::io::read_trajectory(path);
  chain replayed(3, 5, 16, 7);
  const auto before = zo_test::snapshot(replayed.store);
  auto constant = zo::mezo(zo::central_difference(1e-3), zo::sgd<>(1e-2), {.seed = 21});
  BOOST_CHECK_EXCEPTION(zo::io::replay(constant, replayed.store, log), zo::invalid_argument,
                        [](const zo::invalid_argument& e) {
                          const std::string what = e.what();
                          BOOST_TEST_MESSAGE(what);
                          return what.find("step 1 ") != std::string::npos &&
                                 what.find("gives 0.01:") != std::string::npos &&
                                 what.find("0.0097") != std::string::npos;
                        });
  BOOST_TEST(zo_test::snapshot(replayed.store) == before);
  BOOST_TEST(constant.step_count() == 0u);
  // With the run's schedule the same log replays bit for bit.
  auto again = cosine();
  BOOST_TEST(zo::io::replay(again, replayed.store, log) == 10u);
  BOOST_TEST(zo_test::snapshot(replayed.store) == zo_test::snapshot(live.store));
  fs::remove(path);
}

namespace {

std::vector<std::byte> concat(std::initializer_list<std::vector<std::byte>> parts) {
  std::vector<std::byte> out;
  for (const auto& p : parts)
    out.insert(out.end(), p.begin(), p.end());
  return out;
}

zo::io::trajectory_record sample_record(std::uint64_t step) {
  return {step, 5, 1e-3, zo::step_status::completed, 2, {0.25 * double(step)}, {}};
}

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> bytes;
  for (std::size_t k = 0; k + 1 < hex.size(); k += 2)
    bytes.push_back(static_cast<std::byte>(std::stoi(hex.substr(k, 2), nullptr, 16)));
  return bytes;
}

// A version-1 log as zo 0.1.0 wrote it (the writer of commit c7315d0): header {seed 5, 3
// blocks, "v1"}, a completed step 0 and a skipped step 1, each with projected gradients
// {0.5 (k + 1), -1} and roles {zeroth_order, frozen, first_order}.
const std::string version_1_log =
    "7a6f2d7472616a0a010000001200000005000000000000000300000002000000"
    "7631e86aa50d38000000c7ffffff00000000000000000500000000000000fca9"
    "f1d24d62503f000200000002000000000000000000e03f000000000000f0bf03"
    "0000000002016d1d7fdb38000000c7ffffff0100000000000000050000000000"
    "0000fca9f1d24d62503f010200000002000000000000000000f03f0000000000"
    "00f0bf030000000002016d926120";

void write_file(const fs::path& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_log_cut_at_a_record_boundary_is_not_finished) {
  // Only the end record that finish() writes tells a whole run from one cut between records.
  auto bytes = zo::io::encode_header({5, 3, "boundaries", 42});
  std::vector<std::size_t> boundaries{bytes.size()};
  for (std::uint64_t k = 0; k < 4; ++k) {
    bytes = concat({bytes, zo::io::encode_record(sample_record(k))});
    boundaries.push_back(bytes.size());
  }
  const std::size_t end_at = bytes.size();
  bytes = concat({bytes, zo::io::encode_end(4)});
  const auto whole = zo::io::read_trajectory(bytes);
  BOOST_TEST(whole.complete);
  BOOST_TEST(whole.finished);
  BOOST_TEST(whole.records.size() == 4u);
  BOOST_TEST(whole.records_end == end_at);
  for (std::size_t k = 0; k < boundaries.size(); ++k) {
    const auto log = zo::io::read_trajectory(std::span(bytes).first(boundaries[k]));
    BOOST_TEST_CONTEXT("cut after record " << k) {
      BOOST_TEST(log.complete);   // nothing torn ...
      BOOST_TEST(!log.finished);  // ... but not known to be the whole run
      BOOST_TEST(log.records.size() == k);
    }
  }
  for (std::size_t cut = end_at + 1; cut < bytes.size(); ++cut) {
    const auto log = zo::io::read_trajectory(std::span(bytes).first(cut));
    BOOST_TEST_CONTEXT("cut at byte " << cut << " of the end record") {
      BOOST_TEST(!log.complete);
      BOOST_TEST(!log.finished);
      BOOST_TEST(log.stopped_at == end_at);
      BOOST_TEST(log.records.size() == 4u);
    }
  }
  // An end record that miscounts, a record after it or one in a version-1 log is an error.
  const auto header = zo::io::encode_header({5, 3, "x"});
  const auto r0 = zo::io::encode_record(sample_record(0));
  BOOST_CHECK_EXCEPTION(zo::io::read_trajectory(concat({header, r0, zo::io::encode_end(2)})),
                        zo::invalid_argument, [](const zo::invalid_argument& e) {
                          return std::string(e.what()).find("counts 2") != std::string::npos;
                        });
  BOOST_CHECK_EXCEPTION(zo::io::read_trajectory(concat({header, zo::io::encode_end(0), r0})),
                        zo::invalid_argument, [](const zo::invalid_argument& e) {
                          return std::string(e.what()).find("follows the end record") !=
                                 std::string::npos;
                        });
  const std::vector<std::byte> torn(r0.begin(), r0.begin() + 5);
  BOOST_CHECK_EXCEPTION(zo::io::read_trajectory(concat({header, zo::io::encode_end(0), torn})),
                        zo::invalid_argument, [](const zo::invalid_argument& e) {
                          return std::string(e.what()).find("after the end record") !=
                                 std::string::npos;
                        });
  BOOST_CHECK_THROW(zo::io::read_trajectory(
                        concat({zo::io::encode_header({5, 3, "x"}, 1), zo::io::encode_end(0)})),
                    zo::invalid_argument);
}

BOOST_AUTO_TEST_CASE(a_finished_log_is_closed_and_append_to_continues_it) {
  const fs::path path = temporary("finish.zotraj");
  {
    zo::io::trajectory_writer log(path, {5, 3, "finish", 7});
    log.append(sample_record(0));
    log.finish();
    BOOST_CHECK_THROW(log.append(sample_record(1)), zo::invalid_argument);
    BOOST_CHECK_THROW(log.finish(), zo::invalid_argument);
  }
  zo::io::trajectory before;
  {
    // A resumed run continues the log: the end record is cut off and written again at its end.
    auto log = zo::io::trajectory_writer::append_to(path, before);
    log.append(sample_record(1));
    BOOST_TEST(!zo::io::read_trajectory(path).finished);
    log.finish();
  }
  BOOST_TEST(before.finished);
  BOOST_TEST(before.records.size() == 1u);
  const auto after = zo::io::read_trajectory(path);
  BOOST_TEST(after.finished);
  BOOST_REQUIRE(after.records.size() == 2u);
  BOOST_TEST(after.records[1].step == 1u);
  BOOST_TEST((after.header.base_fingerprint == std::optional<std::uint64_t>(7)));
  fs::remove(path);
}

BOOST_AUTO_TEST_CASE(replay_refuses_other_base_weights_by_their_fingerprint) {
  const fs::path path = temporary("base.zotraj");
  const auto make = [] {
    return zo::mezo(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(1e-2)),
                    {.seed = 23});
  };
  chain live(3, 5, 16, 7);
  auto optimizer = make();
  {
    zo::io::trajectory_writer log(path,
                                  zo::io::run_header(live.store, optimizer.options(), "base"));
    optimizer.optimize(
        live.store, [&] { return live.loss(); }, 10, log);
    log.finish();
  }
  const auto log = zo::io::read_trajectory(path);
  // The same shapes from another seed: block count, seed and rates all agree.
  chain other(3, 5, 16, 8);
  const auto before = zo_test::snapshot(other.store);
  char expected[17], found[17];
  std::snprintf(expected, sizeof expected, "%016llx",
                static_cast<unsigned long long>(*log.header.base_fingerprint));
  std::snprintf(found, sizeof found, "%016llx",
                static_cast<unsigned long long>(zo::io::fingerprint(other.store)));
  BOOST_TEST(std::string(expected) != std::string(found));
  auto again = make();
  BOOST_CHECK_EXCEPTION(zo::io::replay(again, other.store, log), zo::invalid_argument,
                        [&](const zo::invalid_argument& e) {
                          const std::string what = e.what();
                          BOOST_TEST_MESSAGE(what);
                          return what.find(expected) != std::string::npos &&
                                 what.find(found) != std::string::npos;
                        });
  BOOST_TEST(zo_test::snapshot(other.store) == before);
  BOOST_TEST(again.step_count() == 0u);
  // One changed value changes the fingerprint; the base itself replays.
  chain base(3, 5, 16, 7);
  const auto fingerprint = zo::io::fingerprint(base.store);
  base.store.block(2).data()[3] += 1e-12;
  BOOST_TEST(zo::io::fingerprint(base.store) != fingerprint);
  chain replayed(3, 5, 16, 7);
  BOOST_TEST(zo::io::replay(again, replayed.store, log) == 10u);
  BOOST_TEST(zo_test::snapshot(replayed.store) == zo_test::snapshot(live.store));
  fs::remove(path);
}

BOOST_AUTO_TEST_CASE(a_version_1_log_is_read_and_replays_bit_for_bit) {
  // The bytes zo 0.1.0 wrote.
  const auto old = from_hex(version_1_log);
  const auto log = zo::io::read_trajectory(old);
  BOOST_TEST(log.version == 1u);
  BOOST_TEST(log.complete);
  BOOST_TEST(!log.finished);
  BOOST_TEST(!log.header.base_fingerprint.has_value());
  BOOST_TEST(log.header.seed == 5u);
  BOOST_TEST(log.header.block_count == 3u);
  BOOST_TEST(log.header.description == "v1");
  BOOST_REQUIRE(log.records.size() == 2u);
  BOOST_TEST(log.records[1].step == 1u);
  BOOST_TEST(log.records[1].skipped());
  BOOST_TEST(log.records[1].projected_gradients[0] == 1.0);
  BOOST_TEST((log.records[0].roles[2] == zo::block_role::first_order));
  BOOST_TEST((concat({zo::io::encode_header(log.header, 1), zo::io::encode_record(log.records[0]),
                      zo::io::encode_record(log.records[1])}) == old));

  // A version-1 log of a live run, its header built here as version 1 specifies it (the records
  // are the same in both versions), replays bit for bit.
  // Version 1 knew one generator, philox4x32-10.
  const fs::path path = temporary("v1.zotraj");
  const auto make = [] {
    return zo::lozo_m(zo::low_rank_perturbation(2, 5), zo::central_difference(1e-3),
                      zo::low_rank_momentum(zo::constant_schedule(5e-3), 0.9, 0.01), {},
                      {.seed = 24, .generator = zo::generator::philox4x32_10});
  };
  chain live(3, 5, 16, 7);
  auto optimizer = make();
  {
    zo::io::trajectory_writer writer(path,
                                     zo::io::run_header(live.store, optimizer.options(), "d"));
    optimizer.optimize(
        live.store, [&] { return live.loss(); }, 12, writer);
  }
  const auto current = file_bytes(path);
  const std::size_t records_at = 8 + 4 + 4 + zo::binary::u32_at(current, 12) + 4;
  zo::binary::byte_writer payload, v1;
  payload.u64(24);
  payload.u32(static_cast<std::uint32_t>(live.store.size()));
  payload.u32(1);
  payload.u8('d');
  v1.raw(std::as_bytes(std::span("zo-traj\n", 8)));
  v1.u32(1);
  v1.u32(static_cast<std::uint32_t>(payload.bytes().size()));
  v1.raw(payload.bytes());
  v1.u32(zo::binary::crc32(payload.bytes()));
  v1.raw(std::span(current).subspan(records_at));
  write_file(path, v1.bytes());
  const auto read = zo::io::read_trajectory(path);
  BOOST_TEST(read.version == 1u);
  BOOST_TEST(read.records.size() == 12u);
  chain replayed(3, 5, 16, 7);
  auto again = make();
  BOOST_TEST(zo::io::replay(again, replayed.store, read) == 12u);
  BOOST_TEST(zo_test::snapshot(replayed.store) == zo_test::snapshot(live.store));

  // Continuing a version-1 log rewrites it in the current format, which can be finished.
  {
    zo::io::trajectory before;
    auto writer = zo::io::trajectory_writer::append_to(path, before);
    BOOST_TEST(before.version == 1u);
    writer.finish();
  }
  const auto upgraded = zo::io::read_trajectory(path);
  BOOST_TEST(upgraded.version == zo::io::detail::trajectory_version);
  BOOST_TEST(upgraded.finished);
  BOOST_TEST(upgraded.records.size() == 12u);
  chain replayed_again(3, 5, 16, 7);
  auto third = make();
  BOOST_TEST(zo::io::replay(third, replayed_again.store, upgraded) == 12u);
  BOOST_TEST(zo_test::snapshot(replayed_again.store) == zo_test::snapshot(live.store));
  fs::remove(path);
}

// A version-2 log (written before logs named the generator) is a run of philox4x32-10: it replays
// bit for bit with that generator, and an optimizer of another generator is refused by name
// before any step. A current log names its generator.
BOOST_AUTO_TEST_CASE(a_version_2_log_replays_with_the_generator_it_was_written_with) {
  const fs::path path = temporary("v2.zotraj");
  const auto make = [](zo::generator generator) {
    return zo::spsa(zo::central_difference(1e-3), zo::sgd(zo::constant_schedule(5e-3)),
                    {.seed = 31, .generator = generator});
  };
  chain live(3, 5, 16, 7);
  auto optimizer = make(zo::generator::philox4x32_10);
  zo::io::trajectory_header header;
  {
    header = zo::io::run_header(live.store, optimizer.options(), "v2");
    zo::io::trajectory_writer writer(path, header);
    optimizer.optimize(
        live.store, [&] { return live.loss(); }, 12, writer);
    writer.finish();
  }
  BOOST_TEST((zo::io::read_trajectory(path).header.generator == zo::generator::philox4x32_10));
  // The same log in version 2: its header without the generator byte, the records as they are.
  const auto current = file_bytes(path);
  const std::size_t records_at = 8 + 4 + 4 + zo::binary::u32_at(current, 12) + 4;
  auto v2 = zo::io::encode_header(header, 2);
  v2.insert(v2.end(), current.begin() + static_cast<std::ptrdiff_t>(records_at), current.end());
  write_file(path, v2);
  const auto read = zo::io::read_trajectory(path);
  BOOST_TEST(read.version == 2u);
  BOOST_TEST(read.finished);
  BOOST_TEST((read.header.generator == zo::generator::philox4x32_10));
  chain replayed(3, 5, 16, 7);
  auto same = make(zo::generator::philox4x32_10);
  BOOST_TEST(zo::io::replay(same, replayed.store, read) == 12u);
  BOOST_TEST(zo_test::snapshot(replayed.store) == zo_test::snapshot(live.store));
  BOOST_TEST(zo_test::snapshot(live.store) != zo_test::snapshot(chain(3, 5, 16, 7).store));

  chain untouched(3, 5, 16, 7);
  auto other = make(zo::default_generator);
  try {
    zo::io::replay(other, untouched.store, read);
    BOOST_FAIL("a log of another generator was replayed");
  } catch (const zo::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find("generator philox4x32-10, the optimizer uses "
                                          "philox4x32-8") != std::string::npos,
               e.what());
  }
  BOOST_TEST(zo_test::snapshot(untouched.store) == zo_test::snapshot(chain(3, 5, 16, 7).store));
  // A version-2 header cannot name a later generator.
  header.generator = zo::generator::philox4x32_8;
  BOOST_CHECK_THROW(zo::io::encode_header(header, 2), zo::invalid_argument);
  fs::remove(path);
}
