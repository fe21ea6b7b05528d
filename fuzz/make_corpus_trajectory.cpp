// SPDX-License-Identifier: Apache-2.0
// Writes the trajectory seed corpus: g++ -std=c++20 -fopenmp -Iinclude -I/usr/include/eigen3
// fuzz/make_corpus_trajectory.cpp -o /tmp/make_corpus && /tmp/make_corpus fuzz/corpus/trajectory
#include <fstream>
#include <zo/io/trajectory.hpp>
#include <zo/stores/eigen_store.hpp>
#include <zo/zo.hpp>
int main(int, char** argv) {
  const std::string dir = argv[1];
  auto write = [&](const std::string& name, const std::vector<std::byte>& b, std::size_t cut = 0) {
    std::ofstream out(dir + "/" + name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()),
              static_cast<std::streamsize>(b.size() - cut));
  };
  using zo::block_role;
  auto header = zo::io::encode_header({42, 3, "mezo lr=1e-6 eps=1e-3"});
  write("header_only", header);
  auto log = header;
  for (std::uint64_t k = 0; k < 3; ++k) {
    auto r = zo::io::encode_record(
        {k,
         42,
         1e-6,
         zo::step_status::completed,
         2,
         {0.25 * double(k)},
         {block_role::zeroth_order, block_role::frozen, block_role::first_order}});
    log.insert(log.end(), r.begin(), r.end());
  }
  write("three_records", log);
  write("torn_last_record", log, 5);
  auto skipped = header;
  auto r = zo::io::encode_record({0, 42, 0.0, zo::step_status::skipped_nonfinite_loss, 1, {}, {}});
  skipped.insert(skipped.end(), r.begin(), r.end());
  write("skipped_step", skipped);
  auto q = header;
  r = zo::io::encode_record(
      {5, 42, 1e-3, zo::step_status::completed, 8, {1, -2, 3, -4}, {block_role::mixed}});
  q.insert(q.end(), r.begin(), r.end());
  write("four_samples_mixed_role", q);
  {
    const std::string path = dir + "/block_values";
    zo::io::block_values_writer values(path, 0);
    zo::eigen_store<float> store;
    store.add("w", 2, 3);
    store.add("b", 1, 3);
    const std::size_t blocks[] = {0, 1};
    values.append(0, store, blocks);
    values.append(1, store, std::span(blocks, 1));
  }
  auto damaged = log;
  damaged[damaged.size() - 9] ^= std::byte{1};
  write("damaged_checksum", damaged);
  // A finished log with a base fingerprint, and the same run in version 1 (zo 0.1.0), which has
  // neither.
  auto finished = zo::io::encode_header({42, 3, "finished", 0x0123456789abcdefull});
  finished.insert(finished.end(), log.begin() + static_cast<std::ptrdiff_t>(header.size()),
                  log.end());
  const auto end = zo::io::encode_end(3);
  finished.insert(finished.end(), end.begin(), end.end());
  write("finished_with_fingerprint", finished);
  auto version_1 = zo::io::encode_header({42, 3, "mezo lr=1e-6 eps=1e-3"}, 1);
  version_1.insert(version_1.end(), log.begin() + static_cast<std::ptrdiff_t>(header.size()),
                   log.end());
  write("version_1_three_records", version_1);
}
